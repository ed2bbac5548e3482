"""magnetar-audit as a process: lossless, exactly-once delivery from real
producers (common/outbox -> Append) while audit is killed with SIGKILL and
restarted five times; Verify, Query, export and tail through magctl (output
escaped so a field cannot forge a line or drive a terminal); tampering
found by `magctl audit verify`; and refusing to start in production
without a usable key."""
import json
import os
import random
import signal
import sqlite3
import subprocess
import time

import pytest

from conftest import BIN, SANDBOX, BUILD, stop_or_explain, thread_stacks, wait_until

PRODUCER = BUILD / "tests" / "audit_producer"


class Audit:
    """magnetar-audit started directly, in its own data and run dirs."""

    def __init__(self, tmp, extra=None):
        self.dir = tmp
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "MAGNETAR_ENV": "test",
            "MAGNETAR_SANDBOX": SANDBOX,
            "MAGNETAR_DATA_DIR": str(tmp / "var"),
            "MAGNETAR_RUN_DIR": str(tmp / "run"),
        }
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS"):
            if k in os.environ:
                self.env[k] = os.environ[k]
        self.env.update(extra or {})
        self.url = "ipc://%s/run/audit.sock" % tmp
        self.proc = None
        self.starts = 0

    def start(self):
        self.starts += 1
        log = open(self.dir / ("audit.%d.log" % self.starts), "wb")
        self.proc = subprocess.Popen([str(BIN / "magnetar-audit")], env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT)
        assert wait_until(lambda: self.magctl("ping", "audit").returncode == 0, 10), \
            self.logs()
        return self

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc:
            assert stop_or_explain(self.proc, self.logs) == 0, self.logs()

    def logs(self):
        return "\n".join((self.dir / ("audit.%d.log" % i)).read_text(errors="replace")[-3000:]
                         for i in range(1, self.starts + 1))

    def magctl(self, *args, timeout=60):
        return subprocess.run([str(BIN / "magctl"), "-t", "20000", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def producer(self, name, count, rate):
        env = dict(self.env, MAGNETAR_AUDIT_URL=self.url)
        return subprocess.Popen([str(PRODUCER), str(self.dir / (name + ".db")), str(count),
                                 str(rate), name], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)

    def export(self):
        out = self.magctl("audit", "export")
        assert out.returncode == 0, out.stdout + out.stderr
        return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.fixture
def audit(tmp_path):
    a = Audit(tmp_path).start()
    yield a
    a.stop()


def test_kill9_five_times_loses_nothing_and_stores_nothing_twice(tmp_path):
    a = Audit(tmp_path, {"MAGNETAR_AUDIT_URL": "ipc://%s/run/audit.sock" % tmp_path}).start()
    per, names = 15000, ["alpha", "beta"]
    procs = {n: a.producer(n, per, 3000) for n in names}
    rng = random.Random(3)
    for i in range(5):
        time.sleep(rng.uniform(0.3, 0.9))
        a.kill9()
        if i == 2:  # a producer dies too, mid-stream, and comes back
            procs["beta"].send_signal(signal.SIGKILL)
            procs["beta"].wait()
            procs["beta"] = a.producer("beta", per, 3000)
        time.sleep(rng.uniform(0.05, 0.4))
        a.start()
    for n, p in procs.items():
        try:
            out, _ = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            raise AssertionError("producer %s stuck:\n%s\naudit:\n%s\n%s\n%s" % (
                n, thread_stacks(p.pid), thread_stacks(a.proc.pid),
                a.magctl("stats", "audit", timeout=10).stdout, a.logs())) from None
        assert p.returncode == 0, n
        assert out.decode().strip() == "emitted=%d" % per
    events = a.export()
    assert len(events) == per * len(names), a.logs()
    keys = {(e["producer"], e["sequence"]) for e in events}
    assert len(keys) == len(events)  # no duplicates
    for n in names:
        assert {s for p, s in keys if p == n} == set(range(1, per + 1))
    v = a.magctl("audit", "verify")
    assert v.returncode == 0, v.stdout + a.logs()
    body = json.loads(v.stdout)
    assert body["ok"] is True and body["events"] == per * len(names)
    stats = dict(line.split() for line in a.magctl("stats", "audit").stdout.splitlines())
    assert int(stats["audit.events_stored"]) == per * len(names)
    a.stop()


def test_a_v1_plaintext_log_is_imported_into_the_chain(tmp_path):
    """An audit.db of schema v1 (plaintext `events`): the first start
    re-ingests every row into the encrypted chain (same producer, instance
    and sequence), drops the plaintext table, and the chain verifies."""
    db_dir = tmp_path / "var" / "audit"
    db_dir.mkdir(parents=True)
    db = sqlite3.connect(db_dir / "audit.db")
    db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, source TEXT NOT NULL,"
               " producer TEXT NOT NULL, instance TEXT NOT NULL, seq INTEGER NOT NULL,"
               " time_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL,"
               " action TEXT NOT NULL, actor TEXT NOT NULL, target TEXT NOT NULL,"
               " ip TEXT NOT NULL, request_id TEXT NOT NULL, outcome TEXT NOT NULL,"
               " detail TEXT NOT NULL, UNIQUE (source, instance, seq))")
    now = int(time.time() * 1000)
    db.executemany("INSERT INTO events (source, producer, instance, seq, time_ms, received_ms,"
                   " action, actor, target, ip, request_id, outcome, detail)"
                   " VALUES ('auth', 'auth', ?, ?, ?, ?, 'auth.login', ?, '', '192.0.2.7',"
                   " ?, 'success', ?)",
                   [("a" * 32, i, now + i, now + i, "user-%d" % i, "req-%d" % i,
                     "v1-plaintext-marker-%d" % i) for i in range(1, 6)])
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    a = Audit(tmp_path).start()
    try:
        events = sorted(a.export(), key=lambda e: e["sequence"])
        assert [(e["sequence"], e["actor"], e["request_id"], e["detail"]) for e in events] == \
            [(i, "user-%d" % i, "req-%d" % i, "v1-plaintext-marker-%d" % i)
             for i in range(1, 6)], events
        assert all(e["producer"] == "auth" and e["ip"] == "192.0.2.7" for e in events)
        v = a.magctl("audit", "verify")
        assert v.returncode == 0 and json.loads(v.stdout)["ok"] is True, v.stdout
    finally:
        a.stop()
    db = sqlite3.connect(db_dir / "audit.db")
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert "legacy_events" not in tables and "events" not in tables, tables
    for f in db_dir.iterdir():
        if f.name.startswith("audit.db"):
            assert b"v1-plaintext-marker" not in f.read_bytes(), f


def test_query_export_tail_are_escaped(audit):
    tail = subprocess.Popen([str(BIN / "magctl"), "audit", "tail", "--count", "40"],
                            env=audit.env, stdout=subprocess.PIPE)
    time.sleep(0.5)
    p = audit.producer("gamma", 40, 0)
    assert p.wait(timeout=30) == 0
    raw, _ = tail.communicate(timeout=30)
    lines = raw.decode("ascii").splitlines()  # ASCII only: no raw escapes
    events = [json.loads(line) for line in lines if '"action"' in line]
    assert len(events) == 40
    assert events[0]["detail"].startswith("n=1\n\x1b")  # the field survives, escaped
    assert b"\x1b" not in raw and all("\\u001b" in line for line in lines if '"action"' in line)
    q = audit.magctl("audit", "query", "--actor", "producer-3", "--limit", "3")
    assert q.returncode == 0, q.stdout + q.stderr
    got = [json.loads(line) for line in q.stdout.splitlines()]
    assert len(got) == 3 and all(e["actor"] == "producer-3" for e in got)
    assert got[0]["id"] > got[1]["id"]  # newest first
    assert "next_cursor" in q.stderr
    exp = audit.export()
    assert [e["sequence"] for e in exp] == list(range(1, 41))
    r = audit.magctl("audit", "rotate-key", "--generate")
    assert r.returncode == 0 and "current_key=k2" in r.stdout, r.stdout
    assert audit.producer("gamma2", 5, 0).wait(timeout=30) == 0
    exp = audit.export()
    assert {e["key_id"] for e in exp} == {"k1", "k2"}
    assert audit.magctl("audit", "verify").returncode == 0


def test_verify_finds_tampering(audit):
    assert audit.producer("delta", 30, 0).wait(timeout=30) == 0
    audit.stop()
    db = sqlite3.connect(str(audit.dir / "var" / "audit" / "audit.db"))
    row = db.execute("SELECT id, detail FROM records WHERE kind = 0 ORDER BY id LIMIT 1 "
                     "OFFSET 9").fetchone()
    flipped = bytearray(row[1])
    flipped[14] ^= 1
    db.execute("UPDATE records SET detail = ? WHERE id = ?", (bytes(flipped), row[0]))
    db.commit()
    db.close()
    audit.start()
    v = audit.magctl("audit", "verify")
    assert v.returncode == 1
    body = json.loads(v.stdout)
    assert body["ok"] is False and body["first_bad_id"] == row[0]
    assert body["reason"] == "decrypt_failed"
    # The anchor kept off the box: a different genesis is a different log.
    v = audit.magctl("audit", "verify", "--anchor", "00" * 32)
    assert json.loads(v.stdout)["reason"] in ("anchor_mismatch", "decrypt_failed")


def run_audit(tmp_path, env):
    full = {"PATH": "/usr/bin:/bin", "MAGNETAR_DATA_DIR": str(tmp_path / "var"),
            "MAGNETAR_RUN_DIR": str(tmp_path / "run")}
    full.update(env)
    return subprocess.run([str(BIN / "magnetar-audit")], env=full, capture_output=True,
                          text=True, timeout=20)


def test_production_without_a_key_refuses(tmp_path):
    out = run_audit(tmp_path, {"MAGNETAR_ENV": "production"})
    assert out.returncode != 0
    assert "MAGNETAR_AUDIT_KEYS" in out.stderr and "production" in out.stderr
    assert not (tmp_path / "var" / "audit" / "audit.keys").exists()
    out = run_audit(tmp_path, {"MAGNETAR_ENV": "production",
                               "MAGNETAR_AUDIT_KEYS": "k1:not-base64"})
    assert out.returncode != 0
    assert "MAGNETAR_AUDIT_KEYS" in out.stderr and "base64" in out.stderr
    assert "not-base64" not in out.stderr  # never echo key material
