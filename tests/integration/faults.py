"""Shared pieces of the reliability suite (test_faults.py): a bounded load of
real HTTP clients, and the invariants every fault scenario must keep."""
import json
import sqlite3
import subprocess
import threading
import time

import requests

from conftest import BIN, wait_until

PW = "fault-suite-password-8"
PRODUCERS = ("gateway", "auth", "breach", "terminal")
HANG_S = 12  # above every RPC deadline the gateway sets, far below the client's


def magctl(stack, *args, stdin=None, timeout=60):
    return subprocess.run([str(BIN / "magctl"), *args], env=stack.env, cwd=stack.dir,
                          input=stdin, capture_output=True, text=True, timeout=timeout)


class Load:
    """Threads that log in, read /me and log out as their own user, until
    stopped; every answer and its latency is kept."""

    def __init__(self, stack, threads=3):
        self.stack = stack
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.codes, self.latencies, self.revoked, self.hung = [], [], [], []
        self.misleading = []  # 503s saying "shutting down" while nothing was
        self.users = [f"load{i}" for i in range(threads)]
        for u in self.users:
            self.create_user(u)
        self.threads = [threading.Thread(target=self.run, args=(u,)) for u in self.users]

    def create_user(self, user):
        """Faults are armed from the start, so the creation itself may meet
        one: that is an error answer (and a rolled-back change), retried."""
        for _ in range(20):
            out = magctl(self.stack, "user", "create", user, "member", stdin=PW + "\n")
            if out.returncode == 0 or "username_taken" in out.stdout + out.stderr:
                return
            assert "internal" in out.stdout + out.stderr, out.stdout + out.stderr
        raise AssertionError(f"could not create {user}: {out.stdout + out.stderr}")

    def call(self, method, path, **kw):
        t0 = time.monotonic()
        try:
            r = requests.request(method, self.stack.url + path, timeout=30, **kw)
            code = r.status_code
        except requests.RequestException as e:
            r, code = None, type(e).__name__
        took = time.monotonic() - t0
        with self.lock:
            self.codes.append(code)
            self.latencies.append(took)
            if took > HANG_S:
                self.hung.append((method, path, code, round(took, 1)))
            if code == 503 and "shutting down" in r.text:
                self.misleading.append((method, path, r.text[:200]))
        return r

    def run(self, user):
        while not self.stop_ev.is_set():
            r = self.call("POST", "/api/v1/auth/login",
                          data=json.dumps({"username": user, "password": PW}),
                          headers={"Content-Type": "application/json"})
            if r is None or r.status_code != 200:
                time.sleep(0.05)
                continue
            h = {"Authorization": "Bearer " + r.json()["access_token"]}
            self.call("GET", "/api/v1/auth/me", headers=h)
            out = self.call("POST", "/api/v1/auth/logout", json={}, headers=h)
            if out is not None and out.status_code == 204:
                with self.lock:
                    self.revoked.append(h)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        for t in self.threads:
            t.join(60)

    def ok(self):
        return sum(1 for c in self.codes if c == 200)


PING_ERRORS = {}


def pids(stack):
    out = {}
    for name in ("gateway",) + PRODUCERS[1:] + ("audit",):
        p = magctl(stack, "ping", name, timeout=15)
        if p.returncode == 0:
            out[name] = int(p.stdout.split("pid=")[1].split()[0])
        else:
            PING_ERRORS[name] = (p.stdout + p.stderr).strip()[-300:]
    return out


def outbox_state(path):
    """(every sender slot's instance id, highest sequence ever assigned,
    rows still waiting)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        insts = [r[0] for r in db.execute("SELECT instance FROM outbox_senders ORDER BY slot")]
        top = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        waiting = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
    finally:
        db.close()
    return insts, (top[0] if top else 0), waiting


def check_invariants(stack, load):
    """What must hold after any fault: every process back, nothing hung,
    no revoked session accepted, every audit event stored exactly once, and
    the chain verifies."""
    assert wait_until(lambda: requests.get(stack.url + "/readyz", timeout=5).status_code == 200,
                      60), stack.logs()
    # A ping waits behind a backlog (audit after a stop): give it time.
    seen = {}
    assert wait_until(lambda: len(seen.update(pids=pids(stack)) or seen["pids"]) == 5, 60), \
        f"answering magctl ping: {sorted(seen['pids'])}, last errors {PING_ERRORS}\n" + \
        stack.logs()
    assert not load.hung, load.hung
    # The gateway never stops during the load: a 503 says what it was.
    assert not load.misleading, load.misleading
    assert load.ok() > 0, load.codes[-20:]
    for h in load.revoked[-50:]:
        assert requests.get(stack.url + "/api/v1/auth/me", headers=h, timeout=10) \
            .status_code == 401
    var = stack.dir / "var"

    def drained():
        return all(outbox_state(var / p / f"{p}.db")[2] == 0 for p in PRODUCERS)
    assert wait_until(drained, 90), [outbox_state(var / p / f"{p}.db") for p in PRODUCERS]
    audit = sqlite3.connect(f"file:{var / 'audit' / 'audit.db'}?mode=ro", uri=True, timeout=10)
    try:
        for p in PRODUCERS:
            insts, top, _ = outbox_state(var / p / f"{p}.db")
            if not insts:
                continue
            seqs = sorted(r[0] for inst in insts for r in audit.execute(
                "SELECT seq FROM records WHERE kind = 0 AND instance = ?", (inst,)))
            # Exactly once: 1..top, each once over every sender slot's id
            # (UNIQUE forbids a second copy under one id; claims, one under two).
            assert seqs == list(range(1, top + 1)), (p, top, len(seqs),
                                                     sorted(set(range(1, top + 1)) - set(seqs))[:10])
    finally:
        audit.close()
    out = magctl(stack, "audit", "verify", timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
