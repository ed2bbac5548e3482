"""Shared fixtures for the integration suites: start the real binaries in a
temporary directory and talk to them over HTTP and magctl.

The binaries come from $MAGNETAR_BUILD/bin (default: <repo>/build/bin), so
`make SANITIZE=address,undefined test` runs these same tests against the
sanitizer build.
"""
import atexit
import os
import re
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import requests

REPO = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("MAGNETAR_BUILD", REPO / "build"))
BIN = BUILD / "bin"
# The services run inside their sandbox (seccomp, Landlock) unless told
# otherwise: a sanitizer run sets MAGNETAR_TEST_SANDBOX=log (.ci/run), since
# LeakSanitizer cannot work under a seccomp allow-list.
SANDBOX = os.environ.get("MAGNETAR_TEST_SANDBOX", "enforce")


def sandbox_env(env):
    """Production accepts no sandbox but enforce. A process under enforce
    (production, or set so explicitly, as the Compose file does) runs
    without LeakSanitizer in a sanitizer run: its exit scan (ptrace, a
    clone) is outside every seccomp allow-list and would be killed."""
    if env.get("MAGNETAR_ENV") == "production":
        env["MAGNETAR_SANDBOX"] = "enforce"
    if env.get("MAGNETAR_SANDBOX") == "enforce" and "ASAN_OPTIONS" in env:
        env["ASAN_OPTIONS"] += ":detect_leaks=0"
    return env


def make_passable(path):
    """As root, each service runs as its own user (common/privsep.c) and must
    reach its dirs under pytest's temporary dirs, which pytest makes 0700:
    let others traverse (x, not r) every root-owned dir on the way."""
    if os.geteuid() != 0:
        return
    p = pathlib.Path(path).resolve()
    for d in [p, *p.parents]:
        st = d.stat()
        if st.st_uid == 0 and not st.st_mode & 0o001:
            d.chmod(st.st_mode & 0o7777 | 0o001)


if os.geteuid() == 0:
    from _pytest.tmpdir import TempPathFactory

    _mktemp = TempPathFactory.mktemp

    def _mktemp_passable(self, *args, **kwargs):
        path = _mktemp(self, *args, **kwargs)
        make_passable(path)
        return path

    TempPathFactory.mktemp = _mktemp_passable


def closed_ancestor(path):
    """The first dir at or above path that other users may not traverse."""
    for d in [pathlib.Path(path).resolve(), *pathlib.Path(path).resolve().parents]:
        if d.exists() and not d.stat().st_mode & 0o001:
            return d
    return None


_reachable_dir = None


def reachable_bin(name):
    """BIN/name where a service user can execute it. A checkout under /root
    (0700) is closed to them, so tests that run one of our programs as a
    service user run a copy in a dir of their own that every user may
    traverse; the copy is made once per run and removed at exit."""
    global _reachable_dir
    if closed_ancestor(BIN) is None:
        return BIN / name
    if _reachable_dir is None:
        _reachable_dir = pathlib.Path(tempfile.mkdtemp(prefix="magnetar-bin-"))
        _reachable_dir.chmod(0o755)
        atexit.register(shutil.rmtree, _reachable_dir, True)
    copy = _reachable_dir / name
    if not copy.exists():
        shutil.copy2(BIN / name, copy)
        copy.chmod(0o755)
    return copy


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout, interval=0.05):
    """Polls predicate until it returns a truthy value or timeout passes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = predicate()
        except (requests.RequestException, OSError):
            value = None
        if value:
            return value
        time.sleep(interval)
    return None


def thread_stacks(pid):
    """Every thread's backtrace of a live process (gdb), for the message of a
    test that found it hung: a hang is a bug to explain, not to retry."""
    try:
        out = subprocess.run(["gdb", "-batch", "-p", str(pid), "-ex", "thread apply all bt"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "(no backtrace: %s)" % e
    return "\n".join(ln for ln in out.stdout.splitlines()
                     if ln.startswith(("Thread ", "#")))


def stop_or_explain(proc, logs, timeout=20):
    """SIGTERM, then the exit status; a process still running after
    `timeout` fails the test with its threads' backtraces and its logs."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stacks = thread_stacks(proc.pid)
        proc.kill()
        proc.wait()
        raise AssertionError("pid %d did not exit within %d s of SIGTERM:\n%s\n%s"
                             % (proc.pid, timeout, stacks, logs())) from None


class Stack:
    """A running `magnetar up` with its own data and run dirs."""

    def __init__(self, tmp, extra_env=None):
        self.dir = pathlib.Path(tmp)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "MAGNETAR_ENV": "test",
            "MAGNETAR_SANDBOX": SANDBOX,
            "MAGNETAR_HTTP_ADDR": f"127.0.0.1:{self.port}",
            "MAGNETAR_DATA_DIR": str(self.dir / "var"),
            "MAGNETAR_RUN_DIR": str(self.dir / "run"),
        }
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS"):
            if k in os.environ:
                self.env[k] = os.environ[k]
        self.env.update(extra_env or {})
        # With MAGNETAR_TLS_CERT the gateway speaks only HTTPS; requests
        # then checks the test's own certificate (self.verify).
        self.verify = self.env.get("MAGNETAR_TLS_CERT", True)
        if "MAGNETAR_TLS_CERT" in self.env:
            self.url = f"https://127.0.0.1:{self.port}"
        sandbox_env(self.env)
        self.log_path = self.dir / "magnetar.log"
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([str(BIN / "magnetar"), "up"], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=self.dir)
        ready = wait_until(lambda: requests.get(self.url + "/readyz", timeout=2,
                                                verify=self.verify)
                           .status_code == 200, 30)
        if not ready:
            logs = self.logs()
            self.stop()  # a fixture that fails here never reaches its teardown
            assert ready, "stack did not become ready:\n" + logs
        return self

    def stop(self):
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def full_log(self):
        """The whole log of the stack's last start: what a test searches. A
        line logged early at start-up can be followed by 8 KB of other
        services' start-up lines, out of logs()' tail."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def logs(self):
        """The end of the stack's log, for a failure message, without the
        access log's lines for answers below 400 (a line per request would
        push out what matters). Search full_log(), never this tail."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        keep = [ln for ln in text.splitlines()
                if not re.search(r'msg="http method=\S+ path=\S+ query=\S+ status=[123]\d\d ', ln)]
        return "\n".join(keep)[-8000:]

    def magctl(self, *args, timeout=10):
        return subprocess.run([str(BIN / "magctl"), *args], env=self.env, cwd=self.dir,
                              capture_output=True, text=True, timeout=timeout)

    def service_pid(self, name):
        out = self.magctl("ping", name)
        assert out.returncode == 0, out.stdout + out.stderr
        return int(out.stdout.split("pid=")[1].split()[0])

    def stats(self, name):
        out = self.magctl("stats", name)
        assert out.returncode == 0, out.stdout + out.stderr
        return {k: int(v) for k, v in (line.split() for line in out.stdout.splitlines())}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("stack")).start()
    yield s
    rc = s.stop()
    assert rc == 0, "supervisor did not stop cleanly:\n" + s.logs()
    assert "ERROR: AddressSanitizer" not in s.full_log(), s.logs()
    assert "runtime error:" not in s.full_log(), s.logs()
