"""Attacks on the audit log at rest, through the real stack (issue 16, items
5 and 6): rows cut from the end of audit.db while the stack is down must
stay a reported `truncated` finding across restarts (never healed by
continuing the chain over the cut, never re-using ids), and a producer
database restored from an older copy must not have its new events dropped
as "duplicates" of the events its old sequence numbers named."""
import json
import shutil
import sqlite3
import time

import pytest
import requests

from conftest import Stack, wait_until

FOUNDER, FOUNDER_PW = "founder", "founder-Pa55-audit-attack-7"
ENV = {
    "MAGNETAR_HIBP_MODE": "off",
    "MAGNETAR_FOUNDER_USERNAME": FOUNDER,
    "MAGNETAR_FOUNDER_PASSWORD": FOUNDER_PW,
}


def call(stack, method, path, token=None, body=None):
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    return requests.request(method, stack.url + path, headers=h, timeout=30,
                            data=json.dumps(body) if body is not None else None)


def login(stack):
    r = call(stack, "POST", "/api/v1/auth/login",
             body={"username": FOUNDER, "password": FOUNDER_PW})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def events(stack, token, action):
    r = call(stack, "GET", "/api/v1/audit/events?limit=1000&action=" + action, token)
    assert r.status_code == 200, r.text
    return r.json()["events"]


def wait_logins(stack, token, n):
    """Waits until audit holds n auth.login.success events; returns them."""
    got = wait_until(lambda: (lambda e: len(e) >= n and e)(
        events(stack, token, "auth.login.success")), 15)
    return got or events(stack, token, "auth.login.success")


def verify_http(stack, token):
    r = call(stack, "GET", "/api/v1/audit/verify", token)
    assert r.status_code == 200, r.text
    return r.json()


def verify_magctl(stack):
    out = stack.magctl("audit", "verify", timeout=60)
    return out.returncode, json.loads(out.stdout)


def audit_db(stack):
    return stack.dir / "var" / "audit" / "audit.db"


def record_ids(stack):
    db = sqlite3.connect(str(audit_db(stack)))
    try:
        return [r[0] for r in db.execute("SELECT id FROM records ORDER BY id")]
    finally:
        db.close()


def test_truncated_log_stays_reported_across_restarts(tmp_path):
    stack = Stack(tmp_path, ENV).start()
    try:
        for _ in range(5):
            token = login(stack)  # sessions are capped: keep the newest
        assert len(wait_logins(stack, token, 5)) == 5
        assert verify_http(stack, token)["ok"] is True
        assert stack.stop() == 0, stack.logs()

        # The attacker: write access to audit.db, not to the keys.
        ids = record_ids(stack)
        last = ids[-1]
        cut = 3
        db = sqlite3.connect(str(audit_db(stack)))
        db.execute("DELETE FROM records WHERE id > ?", (last - cut,))
        db.commit()
        db.close()
        first_bad = last - cut + 1

        stack.start()
        login(stack)
        token = login(stack)
        wait_logins(stack, token, 5 - cut + 2)  # only what survived, plus the new
        v = verify_http(stack, token)
        assert v["ok"] is False, v
        assert v["reason"] == "truncated" and v["first_bad_id"] == first_bad, v
        rc, body = verify_magctl(stack)
        assert rc == 1 and body["reason"] == "truncated", body
        assert body["first_bad_id"] == first_bad and body["breaks"] == 1, body
        assert stack.stats("audit")["audit.integrity_breaks"] == 1
        # The finding is itself an audit event, readable through the API.
        found = events(stack, token, "audit.integrity.truncated")
        assert len(found) == 1, found
        assert str(first_bad) in found[0]["detail"], found
        assert stack.stop() == 0, stack.logs()

        # No deleted id was used again: everything new lies past the old end.
        ids2 = record_ids(stack)
        assert [i for i in ids2 if i > last - cut] and \
            min(i for i in ids2 if i > last - cut) > last, (last, cut, ids2)

        # A second restart (and more events) does not heal the finding.
        stack.start()
        token = login(stack)
        v = verify_http(stack, token)
        assert v["ok"] is False and v["reason"] == "truncated", v
        assert v["first_bad_id"] == first_bad, v
        rc, body = verify_magctl(stack)
        assert rc == 1 and body["reason"] == "truncated" and body["first_bad_id"] == first_bad
        assert len(events(stack, token, "audit.integrity.truncated")) == 1
        assert "truncated" in stack.full_log(), stack.logs()
        assert stack.stop() == 0, stack.logs()

        # Deleting the recorded break (and what follows) is one more cut
        # from the end: still reported, at the same first bad id.
        ids3 = record_ids(stack)
        db = sqlite3.connect(str(audit_db(stack)))
        db.execute("DELETE FROM records WHERE id > ?", (last - cut,))
        db.commit()
        db.close()
        stack.start()
        token = login(stack)
        v = verify_http(stack, token)
        assert v["ok"] is False and v["reason"] == "truncated", v
        assert v["first_bad_id"] == first_bad, v
        assert min(i for i in record_ids(stack) if i > last - cut) > ids3[-1]
    finally:
        stack.stop()


def copy_db(src, dst):
    s = sqlite3.connect(str(src))
    d = sqlite3.connect(str(dst))
    try:
        s.backup(d)
    finally:
        d.close()
        s.close()


def test_restored_producer_database_loses_no_event(tmp_path):
    stack = Stack(tmp_path, ENV).start()
    auth_db = stack.dir / "var" / "auth" / "auth.db"
    saved = tmp_path / "auth-backup.db"
    try:
        token = login(stack)
        assert len(wait_logins(stack, token, 1)) == 1
        assert stack.stop() == 0, stack.logs()
        copy_db(auth_db, saved)  # the backup

        stack.start()
        for _ in range(3):
            token = login(stack)
        assert len(wait_logins(stack, token, 4)) == 4
        assert stack.stop() == 0, stack.logs()

        # Restore the older copy, the way docs/operations.md says.
        for suffix in ("", "-wal", "-shm"):
            p = auth_db.with_name(auth_db.name + suffix)
            if p.exists():
                p.unlink()
        shutil.copy(saved, auth_db)

        stack.start()
        for _ in range(3):
            token = login(stack)
        # Every new event is stored: 4 before the restore, 3 after.
        got = wait_logins(stack, token, 7)
        assert len(got) == 7, (len(got), stack.logs())
        time.sleep(0.5)
        assert len(events(stack, token, "auth.login.success")) == 7
        # The collisions were refused (not acknowledged), counted, logged,
        # and the producer moved to a fresh instance id.
        a = stack.stats("audit")
        assert a.get("audit.refused", 0) >= 1, a
        logs = stack.full_log()
        assert "sequence_conflict" in logs and "went backwards" in logs, stack.logs()
        assert stack.stats("auth").get("outbox.rekeyed", 0) >= 1
        v = verify_http(stack, token)
        assert v["ok"] is True, v
    finally:
        stack.stop()
