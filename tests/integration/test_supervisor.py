"""
The supervisor `magnetar up`, run against dummy services.

Each test copies the built `magnetar` into a temporary bin/ beside five small
Python scripts named magnetar-audit, magnetar-breach, ... that record their
environment and pid, print lines and, depending on a per-test mode file, stay
up, crash, or ignore SIGTERM. So these tests do not depend on the real services
and check only what the supervisor owes them: the environment each one gets,
whole prefixed lines, prompt restarts with back-off, and a clean stop.

Run: MAGNETAR_BUILD=<build dir> /usr/bin/python3 -m pytest -q tests/integration/test_supervisor.py
"""

import grp
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES = ["audit", "breach", "auth", "terminal", "gateway"]
SANITIZER_VARS = ["ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS"]

# One script for all five dummies; it learns its name from argv[0] (the
# supervisor passes the absolute path) and its behaviour from <out>/<name>.mode.
DUMMY = r'''#!/usr/bin/python3 -S
import os, signal, sys, time

NAME = os.path.basename(sys.argv[0])[len("magnetar-"):]
OUT = @OUT@


def path(ext):
    return os.path.join(OUT, NAME + ext)


def put(fd, s):
    os.write(fd, s.encode())


try:
    with open(path(".mode")) as f:
        MODE = f.read().strip()
except FileNotFoundError:
    MODE = "serve"

with open(path(".env.tmp"), "w") as f:
    for k in sorted(os.environ):
        f.write(k + "=" + os.environ[k] + "\n")
os.replace(path(".env.tmp"), path(".env"))
with open("/proc/self/status") as f, open(path(".sig"), "w") as out:
    for line in f:
        if line.startswith(("SigIgn:", "SigBlk:")):
            out.write(line)
fds = {}
for fd in os.listdir("/proc/self/fd"):
    try:
        fds[fd] = os.readlink("/proc/self/fd/" + fd)
    except OSError:
        pass  # the directory listing's own fd, already closed
with open(path(".fds"), "w") as f:
    for fd in sorted(fds, key=int):
        f.write(fd + " " + fds[fd] + "\n")
with open(path(".starts"), "a") as f:
    f.write("%d %.6f\n" % (os.getpid(), time.monotonic()))

if MODE == "crash":
    put(2, "crashing on purpose\n")
    os._exit(3)
if MODE == "lastwords":
    put(1, "last words without a newline")
    os._exit(3)


def bye(sig, frame):
    put(1, "bye from %s on signal %d\n" % (NAME, sig))
    os._exit(0)


signal.signal(signal.SIGTERM, signal.SIG_IGN if MODE == "stubborn" else bye)
signal.signal(signal.SIGINT, bye)

put(1, "hello from %s\n" % NAME)
put(2, "stderr from %s\n" % NAME)
if MODE == "chatty":
    put(1, "part-one ")
    time.sleep(0.2)
    put(2, "between the parts\n")
    time.sleep(0.2)
    put(1, "part-two\n")
    put(1, "x" * 20000 + "TAIL\n")
    put(1, "esc\x1b[31mred\r\n")
    for i in range(300):
        line = "%s seq %d %s\n" % (NAME, i, "z" * (i % 97))
        cut = i % len(line)
        # Two writes per line: whole lines depend on the supervisor's buffering.
        put(1, line[:cut])
        put(1, line[cut:])
    put(1, "chatty done\n")
while True:
    signal.pause()
'''


def magnetar_binary():
    build = Path(os.environ.get("MAGNETAR_BUILD", REPO / "build"))
    binary = build / "bin" / "magnetar"
    if not binary.is_file():
        pytest.fail(f"{binary} not found: build it first (make {build}/bin/magnetar)")
    return binary


def proc_alive(pid, marker):
    """True while pid runs (not a zombie) and its command line holds marker,
    so a recycled pid is not taken for one of ours."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat_line.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X") and marker.encode() in cmdline


class Stack:
    def __init__(self, root):
        self.root = root
        self.bin = root / "bin"
        self.out = root / "out"
        self.bin.mkdir()
        self.out.mkdir()
        shutil.copy2(magnetar_binary(), self.bin / "magnetar")
        script = DUMMY.replace("@OUT@", repr(str(self.out)))
        for name in SERVICES:
            p = self.bin / f"magnetar-{name}"
            p.write_text(script)
            p.chmod(0o755)
        self.proc = None
        self.logf = None

    def set_mode(self, name, mode):
        (self.out / f"{name}.mode").write_text(mode)

    def env(self, extra=None):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root)}
        for v in SANITIZER_VARS:
            if v in os.environ:
                env[v] = os.environ[v]
        env.update(extra or {})
        return env

    def start(self, extra=None, pass_fds=(), preexec_fn=None):
        self.logf = open(self.root / "sup.log", "wb")
        self.proc = subprocess.Popen(
            [str(self.bin / "magnetar"), "up"],
            cwd=self.root,
            env=self.env(extra),
            stdin=subprocess.DEVNULL,
            stdout=self.logf,
            stderr=subprocess.STDOUT,
            pass_fds=pass_fds,
            preexec_fn=preexec_fn,
        )

    def run(self, args, extra=None):
        return subprocess.run(
            [str(self.bin / "magnetar"), *args],
            cwd=self.root,
            env=self.env(extra),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=20,
        )

    def log(self):
        path = self.root / "sup.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def starts(self, name):
        path = self.out / f"{name}.starts"
        if not path.exists():
            return []
        rows = []
        for line in path.read_text().splitlines():
            pid, t = line.split()
            rows.append((int(pid), float(t)))
        return rows

    def child_env(self, name):
        env = {}
        for line in (self.out / f"{name}.env").read_text().splitlines():
            k, _, v = line.partition("=")
            env[k] = v
        return env

    def all_pids(self):
        return [pid for name in SERVICES for pid, _ in self.starts(name)]

    def alive(self, pid):
        return proc_alive(pid, str(self.bin))

    def wait_for(self, cond, timeout, what, supervisor_may_exit=False):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            if (not supervisor_may_exit and self.proc is not None and
                    self.proc.poll() is not None and not cond()):
                pytest.fail(f"magnetar exited ({self.proc.returncode}) while waiting for "
                            f"{what}\n{self.log()[-4000:]}")
            time.sleep(0.02)
        pytest.fail(f"timed out waiting for {what}\n{self.log()[-4000:]}")

    def wait_all_started(self, timeout=10):
        self.wait_for(lambda: all(self.starts(n) for n in SERVICES), timeout,
                      "all five services to start")

    def stop(self, sig=signal.SIGTERM, timeout=10):
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.all_pids():
            if self.alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.logf is not None:
            self.logf.close()


@pytest.fixture
def stack(tmp_path):
    s = Stack(tmp_path)
    yield s
    s.cleanup()


def supervisor_lines(log):
    return [l for l in log.splitlines() if l.startswith("ts=")]


def test_each_service_gets_only_what_it_reads(stack, tmp_path):
    secret_file = tmp_path / "founder-password"
    secret_file.write_text("correct horse battery staple\n")
    user_env = {
        "FOO": "bar",
        "MAGNETAR_NOT_A_VARIABLE": "1",
        "MAGNETAR_AUDIT_KEYS": "k1:c2VjcmV0LWF1ZGl0LWtleS1ieXRlcy0zMi1sb25nISE=",
        "MAGNETAR_HTTP_ADDR": "127.0.0.1:18080",
        "MAGNETAR_FINGERPRINT_KEY": "fingerprint-secret-value",
        "MAGNETAR_FOUNDER_USERNAME": "founder",
        "MAGNETAR_FOUNDER_PASSWORD_FILE": str(secret_file),
        "MAGNETAR_HIBP_MODE": "off",
        "MAGNETAR_TERMINAL_ROOTS": "/tmp",
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "MAGNETAR_DEBUG": "1",
    }
    # An fd leaked to the supervisor by whoever started it (no CLOEXEC) must
    # not reach the services either.
    leaked = os.open(secret_file, os.O_RDONLY)

    def like_nohup_in_background():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    try:
        stack.start(user_env, pass_fds=(leaked,), preexec_fn=like_nohup_in_background)
    finally:
        os.close(leaked)
    stack.wait_all_started()

    # Written out independently of common/config.c's table, as the contract
    # of docs/architecture.md, "Security model" and "Environment": what each service reads of what was set.
    own = {
        "audit": {"MAGNETAR_AUDIT_KEYS"},
        "auth": {"MAGNETAR_FINGERPRINT_KEY", "MAGNETAR_FOUNDER_USERNAME",
                 "MAGNETAR_FOUNDER_PASSWORD_FILE"},
        "gateway": {"MAGNETAR_HTTP_ADDR", "MAGNETAR_FINGERPRINT_KEY"},
        "breach": {"MAGNETAR_HIBP_MODE"},
        "terminal": {"MAGNETAR_TERMINAL_ROOTS"},
    }
    common = {"PATH", "HOME", "LANG", "TZ", "MAGNETAR_DEBUG", "MAGNETAR_DATA_DIR",
              "MAGNETAR_RUN_DIR"} | {v for v in SANITIZER_VARS if v in os.environ}
    data_dir = os.path.realpath(tmp_path / "var")
    run_dir = os.path.realpath(tmp_path / "run")
    for name in SERVICES:
        env = stack.child_env(name)
        # Exactly these: nothing unrelated (FOO), no other service's secret,
        # and no default invented for a variable nobody set.
        assert set(env) == own[name] | common, name
        assert env["MAGNETAR_DATA_DIR"] == data_dir
        assert env["MAGNETAR_RUN_DIR"] == run_dir
        for k in own[name]:
            assert env[k] == user_env[k]
    # The secret file's path is passed on, never its content.
    assert "MAGNETAR_FOUNDER_PASSWORD" not in stack.child_env("auth")

    # stdin is /dev/null, stdout and stderr two pipes, and no other fd of the
    # supervisor (signalfd, other services' pipes, the leaked one) reached it.
    pipes = set()
    for name in SERVICES:
        fds = dict(l.split(" ", 1) for l in (stack.out / f"{name}.fds").read_text().splitlines())
        assert set(fds) == {"0", "1", "2"}, (name, fds)
        assert fds["0"] == "/dev/null"
        assert fds["1"].startswith("pipe:") and fds["2"].startswith("pipe:")
        assert fds["1"] != fds["2"]
        pipes |= {fds["1"], fds["2"]}
    assert len(pipes) == 2 * len(SERVICES)

    # No signal blocked, none ignored but the two Python itself ignores at
    # start: not the supervisor's SIGPIPE, nor the SIGINT/SIGHUP it inherited.
    python_ignores = (1 << (signal.SIGPIPE - 1)) | (1 << (signal.SIGXFSZ - 1))
    for name in SERVICES:
        sig = dict(l.split(":") for l in (stack.out / f"{name}.sig").read_text().splitlines())
        assert int(sig["SigBlk"], 16) == 0, name
        # Signals 32 and 33 are glibc's own (NPTL): signal(2) cannot reset them,
        # and whatever started the test may have left them ignored.
        standard = (1 << 31) - 1
        assert int(sig["SigIgn"], 16) & standard & ~python_ignores == 0, (name, sig)

    log = stack.log()
    if os.geteuid() == 0:
        # Root: one user per service (common/privsep.c). The data dir lets
        # only the services' group pass (not list); the run dir is theirs to
        # enter, sticky (none removes another's socket), setgid (sockets get
        # the group); each service's own dir is its user's alone.
        group = grp.getgrnam("magnetar").gr_gid
        st = os.stat(data_dir)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o710, 0, group)
        st = os.stat(run_dir)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o3770, 0, group)
        for name in SERVICES:
            st = os.stat(os.path.join(data_dir, name))
            assert stat.S_IMODE(st.st_mode) == 0o700
            assert st.st_uid == pwd.getpwnam("magnetar-" + name).pw_uid
        assert re.search(r"running as root: each service drops to its own user", log)
    else:
        assert stat.S_IMODE(os.stat(data_dir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o755
        assert re.search(r"running as uid \d+.*every service runs as this user", log)
    assert "gateway URL: http://127.0.0.1:18080/" in log
    for v in ("fingerprint-secret-value", "c2VjcmV0LWF1ZGl0", "correct horse"):
        assert v not in log

    # Once handed out, the secrets are wiped from the supervisor's own
    # environment. (Readable here only with the privilege to read it.)
    try:
        environ = Path(f"/proc/{stack.proc.pid}/environ").read_bytes()
    except PermissionError:
        environ = None
    if environ is not None:
        assert b"fingerprint-secret-value" not in environ
        assert b"c2VjcmV0LWF1ZGl0" not in environ
        assert b"FOO=bar" in environ  # the read itself works

    assert stack.stop() == 0


def test_secret_file_alias_reaches_only_its_reader(stack, tmp_path):
    keyfile = tmp_path / "audit-keys"
    keyfile.write_text("k1:c2VjcmV0LWF1ZGl0LWtleS1ieXRlcy0zMi1sb25nISE=\n")
    stack.start({"MAGNETAR_AUDIT_KEY_FILE": str(keyfile)})
    stack.wait_all_started()
    for name in SERVICES:
        env = stack.child_env(name)
        assert (env.get("MAGNETAR_AUDIT_KEY_FILE") == str(keyfile)) == (name == "audit"), name
        assert "MAGNETAR_AUDIT_KEYS" not in env
    assert stack.stop() == 0


def test_lines_are_prefixed_whole(stack):
    for name in SERVICES:
        stack.set_mode(name, "chatty")
    stack.start()
    stack.wait_for(lambda: all(f"[{n}] chatty done" in stack.log() for n in SERVICES), 10,
                   "every service's output")
    assert stack.stop() == 0
    lines = stack.log().splitlines()

    for name in SERVICES:
        p = f"[{name}] "
        assert p + f"hello from {name}" in lines
        assert p + f"stderr from {name}" in lines
        # A line written in two parts with a stderr line between them.
        assert p + "part-one part-two" in lines
        assert p + "between the parts" in lines
        # Cut at 8 KiB, the rest of that line dropped; control bytes defused.
        assert p + "x" * 8192 + " [cut]" in lines
        assert p + "esc?[31mred" in lines
        seqs = [l for l in lines if l.startswith(p + f"{name} seq ")]
        assert seqs == [p + "%s seq %d %s" % (name, i, "z" * (i % 97)) for i in range(300)]
        assert p + f"bye from {name} on signal {signal.SIGTERM.value}" in lines
    assert not any("TAIL" in l for l in lines)
    # Every line is the supervisor's own or one child's, prefixed.
    prefixes = tuple(f"[{n}] " for n in SERVICES)
    for l in lines:
        assert l.startswith("ts=") or l.startswith(prefixes), repr(l[:120])
        if l.startswith(prefixes) and " seq " in l:
            assert l.startswith(f"[{l.split()[1]}] ")  # content matches its prefix


def test_last_partial_line_is_flushed_before_the_exit_is_logged(stack):
    stack.set_mode("audit", "lastwords")
    stack.start()
    stack.wait_for(lambda: "audit exited: exit status 3" in stack.log(), 5, "audit's exit")
    lines = stack.log().splitlines()
    i = lines.index("[audit] last words without a newline")
    j = next(k for k, l in enumerate(lines) if "audit exited: exit status 3" in l)
    assert i < j
    assert stack.stop() == 0


def test_sigkilled_service_restarts_promptly(stack):
    stack.start()
    stack.wait_all_started()
    (pid, _), = stack.starts("audit")
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    stack.wait_for(lambda: len(stack.starts("audit")) >= 2, 2, "audit to restart")
    new_pid, started_at = stack.starts("audit")[1]
    assert started_at - killed_at < 2.0
    assert new_pid != pid and stack.alive(new_pid)
    log = stack.log()
    assert "audit exited: killed by signal 9 (SIGKILL)" in log
    assert "restarting in 100 ms" in log
    for name in SERVICES[1:]:
        assert len(stack.starts(name)) == 1, name
    assert stack.stop() == 0


def test_crashing_service_backs_off(stack):
    stack.set_mode("terminal", "crash")
    stack.start()
    stack.wait_for(lambda: len(stack.starts("terminal")) >= 5, 8, "five starts of terminal")
    times = [t for _, t in stack.starts("terminal")]
    gaps = [b - a for a, b in zip(times, times[1:])]
    log = stack.log()
    delays = [int(ms) for ms in re.findall(
        r"terminal exited: exit status 3 after \d+ ms; restarting in (\d+) ms", log)]
    assert delays[:4] == [100, 200, 400, 800]
    # Each start waited at least the announced delay (an upper bound would
    # only measure how busy the machine is), and the first came promptly.
    for gap, ms in zip(gaps, delays):
        assert gap >= ms / 1000 - 0.01, (gaps, delays)
    assert gaps[0] < 1.0
    assert "[terminal] crashing on purpose" in log
    # The others are untouched.
    for name in ("audit", "breach", "auth", "gateway"):
        assert len(stack.starts(name)) == 1, name
    assert stack.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_every_service(stack, sig):
    stack.set_mode("breach", "crash")  # one waiting for its restart
    stack.start()
    stack.wait_all_started()
    stack.wait_for(lambda: "breach exited" in stack.log(), 5, "breach's first crash")
    pids = stack.all_pids()
    t0 = time.monotonic()
    assert stack.stop(sig) == 0
    assert time.monotonic() - t0 < 4
    assert not [p for p in pids if stack.alive(p)]
    assert not [p for p in stack.all_pids() if stack.alive(p)]
    log = stack.log()
    for name in ("audit", "auth", "terminal", "gateway"):
        # Output written while stopping is drained before the supervisor exits.
        assert f"[{name}] bye from {name} on signal 15" in log
        assert f"{name} stopped:" in log
    assert "every service stopped" in log


def test_service_ignoring_sigterm_is_killed_after_the_grace_period(stack):
    stack.set_mode("gateway", "stubborn")
    stack.start()
    stack.wait_all_started()
    (pid, _), = stack.starts("gateway")
    t0 = time.monotonic()
    assert stack.stop(timeout=15) == 0
    elapsed = time.monotonic() - t0
    assert 4.5 < elapsed < 8
    assert not stack.alive(pid)
    log = stack.log()
    assert f"gateway pid={pid} did not stop: sending SIGKILL" in log
    assert "gateway stopped: killed by signal 9 (SIGKILL)" in log


def test_services_do_not_outlive_a_killed_supervisor(stack):
    stack.start()
    stack.wait_all_started()
    pids = stack.all_pids()
    stack.proc.kill()
    stack.proc.wait()
    stack.wait_for(lambda: not [p for p in pids if stack.alive(p)], 3,
                   "the services to die with their supervisor", supervisor_may_exit=True)


def test_bad_configuration_is_refused_in_one_line(stack):
    r = stack.run(["up"], {"MAGNETAR_ENV": "bogus"})
    assert r.returncode != 0
    err = [l for l in r.stderr.splitlines() if l]
    assert len(err) == 1 and "MAGNETAR_ENV" in err[0], r.stderr
    assert not stack.all_pids()
    assert not (stack.root / "var").exists()


def test_missing_service_is_refused_before_anything_starts(stack):
    (stack.bin / "magnetar-breach").unlink()
    r = stack.run(["up"])
    assert r.returncode != 0
    assert "magnetar-breach" in r.stderr and "not found" in r.stderr
    assert not stack.all_pids()


def test_check_usage_and_unknown_command(stack):
    r = stack.run(["-n"], {"MAGNETAR_AUDIT_KEYS": "k1:c2VjcmV0"})
    assert r.returncode == 0, r.stderr
    assert "configuration ok" in r.stderr
    assert "MAGNETAR_AUDIT_KEYS=<redacted>" in r.stderr and "c2VjcmV0" not in r.stderr
    assert not (stack.root / "var").exists()  # a check creates nothing
    assert not stack.all_pids()

    r = stack.run(["-h"])
    assert r.returncode == 0 and "usage: magnetar" in r.stdout

    r = stack.run(["frobnicate"])
    assert r.returncode == 2 and "usage: magnetar" in r.stderr
    r = stack.run([])
    assert r.returncode == 2 and "usage: magnetar" in r.stderr
