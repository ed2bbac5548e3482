"""Fault injection under load (issue 10): each service SIGKILLed in turn,
audit stopped for 30 s, audit's disk full, SQLite I/O errors, lock
contention and allocation failures (SQLite's and our own code's). After each: every process is back,
nothing hung past its deadline, no revoked session is accepted, every audit
event any producer emitted is stored exactly once, and the chain verifies
(faults.py)."""
import os
import re
import signal
import subprocess
import time

import pytest
import requests

from conftest import Stack, wait_until
from faults import Load, check_invariants, pids

BASE = {"MAGNETAR_HIBP_MODE": "off"}
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs")


def start(tmp, **extra):
    """The stack with `extra`, started once more if the first start never
    becomes ready: a service has stopped reading its RPC socket at start
    (nng 1.5, docs/reliability.md), which is not the fault under test here."""
    env = dict(BASE)
    env.update(extra)
    try:
        return Stack(tmp, env).start()
    except AssertionError as first:
        print(f"faults.start: the stack did not become ready; starting it once more "
              f"(docs/reliability.md, nng 1.5 stall): {str(first)[:300]}")
        return Stack(tmp, env).start()


def test_each_service_killed_in_turn(tmp_path):
    stack = start(tmp_path)
    try:
        with Load(stack) as load:
            time.sleep(1)
            for name in ("auth", "audit", "breach", "terminal", "gateway"):
                before = pids(stack)[name]
                os.kill(before, signal.SIGKILL)
                assert wait_until(lambda: pids(stack).get(name, before) != before, 30), \
                    stack.logs()
                time.sleep(1)
        check_invariants(stack, load)
    finally:
        assert stack.stop() == 0, stack.logs()


def test_audit_stopped_for_30_seconds(tmp_path):
    stack = start(tmp_path)
    try:
        with Load(stack) as load:
            audit = pids(stack)["audit"]
            os.kill(audit, signal.SIGSTOP)
            try:
                time.sleep(30)
            finally:
                os.kill(audit, signal.SIGCONT)
            time.sleep(2)
        check_invariants(stack, load)
        # It was stopped, not replaced: only its own watchdog may have
        # restarted it, on nng's stall after a SIGCONT (docs/reliability.md).
        if pids(stack)["audit"] != audit:
            log = stack.log_path.read_text(errors="replace")
            assert re.search(r"\[audit\] .*stopped answering \(nng's stall", log), stack.logs()
    finally:
        assert stack.stop() == 0, stack.logs()


@needs_root
def test_audit_disk_full(tmp_path):
    audit_dir = tmp_path / "var" / "audit"
    audit_dir.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs",
                    str(audit_dir)], check=True)
    try:
        stack = start(tmp_path)
        try:
            with Load(stack) as load:
                # Fill what is left: appends fail, producers keep their rows.
                filler = audit_dir / "filler"
                subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"],
                               capture_output=True)
                time.sleep(5)
                stuck = stack.stats("gateway").get("outbox.pending", 0) + \
                    stack.stats("auth").get("outbox.pending", 0)
                filler.unlink()
                time.sleep(2)
            assert stuck > 0, "the disk never filled: nothing waited"
            check_invariants(stack, load)
        finally:
            assert stack.stop() == 0, stack.logs()
    finally:
        subprocess.run(["umount", "-l", str(audit_dir)])


def stats(stack, name):
    """Stats, asked again while an injected fault answers it (with an error:
    MAGNETAR_FAULT_ALLOC can fail the Stats or Ping handler itself)."""
    for _ in range(20):
        out = stack.magctl("stats", name)
        if out.returncode == 0:
            return {k: int(v) for k, v in (line.split() for line in out.stdout.splitlines())}
    raise AssertionError(out.stdout + out.stderr)


def all_pids(stack):
    """Every service's pid; a ping that met an injected fault is asked again."""
    def five():
        p = pids(stack)
        return p if len(p) == 5 else None
    return wait_until(five, 15) or pids(stack)


def run_under_faults(tmp_path, fault):
    """8 s of load with `fault` armed, then the invariants without it."""
    stack = start(tmp_path, **fault)
    try:
        first = all_pids(stack)
        with Load(stack) as load:
            time.sleep(8)
        injected = sum(stats(stack, s).get("faults.injected", 0) for s in first)
        assert injected > 0, "no fault was injected"
        # A failed write is an error answer, never a crash: nobody restarted.
        assert all_pids(stack) == first, stack.logs()
        codes = set(load.codes)
        assert codes <= {200, 204, 401, 429, 500, 503, 504}, codes
    finally:
        assert stack.stop() == 0, stack.logs()
    # The invariants are read without the faults (verify itself would meet
    # them): the same data, started clean.
    stack = start(tmp_path)
    try:
        check_invariants(stack, load)
    finally:
        assert stack.stop() == 0, stack.logs()
    return injected


@pytest.mark.parametrize("fault", [
    {"MAGNETAR_FAULT_SQLITE_IOERR": "97"},
    {"MAGNETAR_FAULT_SQLITE_BUSY": "13"},
    {"MAGNETAR_FAULT_SQLITE_NOMEM": "1009"},
], ids=["ioerr", "busy", "nomem"])
def test_sqlite_faults(tmp_path, fault):
    run_under_faults(tmp_path, fault)


@pytest.mark.parametrize("fault", [
    {"MAGNETAR_FAULT_ALLOC": "2003"},
], ids=["alloc"])
def test_allocation_faults(tmp_path, fault):
    """Every Nth malloc/calloc/realloc/strdup/strndup/asprintf of our own
    code fails (common/fault_alloc.c): an error answer, never a crash."""
    print("faults injected:", run_under_faults(tmp_path, fault))


@pytest.mark.parametrize("var", ["MAGNETAR_FAULT_SQLITE_IOERR", "MAGNETAR_FAULT_ALLOC"])
def test_fault_variables_are_refused_outside_test(tmp_path, var):
    env = Stack(tmp_path, {"MAGNETAR_ENV": "development", var: "5"}).env
    from conftest import BIN
    p = subprocess.run([str(BIN / "magnetar-auth"), "-n"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=20)
    assert p.returncode != 0
    assert "MAGNETAR_FAULT_* is for MAGNETAR_ENV=test only" in p.stdout + p.stderr
