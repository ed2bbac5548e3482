"""`magctl backup` (issue 9): a consistent copy of each service's database
taken while the service runs and writes, never over an existing file, and a
restore that brings back exactly the state of the copy."""
import json
import os
import sqlite3
import subprocess
import threading

import pytest
import requests

from conftest import BIN, Stack

PW = "backup-test-password-5"
SERVICES = ("gateway", "auth", "audit", "breach", "terminal")


def magctl(stack, *args, stdin=None):
    return subprocess.run([str(BIN / "magctl"), *args], env=stack.env, cwd=stack.dir,
                          input=stdin, capture_output=True, text=True, timeout=60)


def login(stack, name):
    return requests.post(stack.url + "/api/v1/auth/login", timeout=15,
                         data=json.dumps({"username": name, "password": PW}),
                         headers={"Content-Type": "application/json"})


def users_in(path):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {r[0] for r in db.execute("SELECT username FROM users")}
    finally:
        db.close()


def test_backup_while_writing_then_restore(tmp_path):
    d = tmp_path / "stack"
    d.mkdir()
    env = {"MAGNETAR_HIBP_MODE": "off"}
    stack = Stack(d, env).start()
    out_dir = tmp_path / "backups"
    out_dir.mkdir()
    try:
        assert magctl(stack, "user", "create", "before", "member", stdin=PW + "\n").returncode == 0
        # Writers while the copies are taken: logins write sessions and audit.
        stop = threading.Event()
        codes = []

        def load():
            while not stop.is_set():
                codes.append(login(stack, "before").status_code)
        t = threading.Thread(target=load)
        t.start()
        try:
            for svc in SERVICES:
                dest = out_dir / f"{svc}.db"
                out = magctl(stack, "backup", svc, str(dest))
                assert out.returncode == 0, out.stdout + out.stderr
                assert f"{svc}: backed up" in out.stdout
                assert dest.stat().st_mode & 0o777 == 0o600
                db = sqlite3.connect(f"file:{dest}?mode=ro", uri=True)
                assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                db.close()
        finally:
            stop.set()
            t.join()
        assert codes and set(codes) <= {200, 429}, set(codes)
        # Never over an existing file; the good copy is untouched.
        size = (out_dir / "auth.db").stat().st_size
        again = magctl(stack, "backup", "auth", str(out_dir / "auth.db"))
        assert again.returncode == 1 and "cannot create" in again.stdout
        assert (out_dir / "auth.db").stat().st_size == size
        assert magctl(stack, "backup", "nope", str(out_dir / "x.db")).returncode == 2
        assert "before" in users_in(out_dir / "auth.db")
        # State after the copy, which a restore must undo.
        assert magctl(stack, "user", "create", "after", "member", stdin=PW + "\n").returncode == 0
        assert login(stack, "after").status_code == 200
    finally:
        assert stack.stop() == 0, stack.logs()

    # Restore: the service stopped, the copy in place of the database (and
    # no WAL of the newer state beside it).
    auth_dir = d / "var" / "auth"
    for suffix in ("-wal", "-shm"):
        p = auth_dir / f"auth.db{suffix}"
        if p.exists():
            p.unlink()
    (out_dir / "auth.db").replace(auth_dir / "auth.db")
    stack = Stack(d, env).start()
    try:
        assert login(stack, "before").status_code == 200
        assert login(stack, "after").status_code == 401
    finally:
        assert stack.stop() == 0, stack.logs()
