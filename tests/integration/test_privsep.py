"""
Privilege boundaries (docs/architecture.md, "Processes" and "Security model"; docs/security.md): as root,
each service runs as its own user inside its sandbox (seccomp, Landlock).
From each service's side: another service's database cannot be opened, a
socket it is not allowed to reach hangs up at the pipe level, a method it
is not permitted answers permission_denied, exec is killed, outbound TCP
fails (but for breach's own endpoint), and --sandbox-selftest passes.

The self-test runs without root too; the rest needs root (CI runs as root).
"""
import grp
import os
import pwd
import re
import subprocess

import pytest

from conftest import BIN, SANDBOX, Stack, reachable_bin, wait_until

SERVICES = ["gateway", "auth", "audit", "breach", "terminal"]
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="one user per service needs root")
needs_enforce = pytest.mark.skipif(SANDBOX != "enforce",
                                   reason="MAGNETAR_TEST_SANDBOX is not enforce")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("privsep"), {"MAGNETAR_HIBP_MODE": "off"}).start()
    yield s
    assert s.stop() == 0, s.logs()


def user(name):
    return pwd.getpwnam("magnetar-" + name)


def as_user(name):
    """preexec_fn: become service `name`'s user, as the service itself does
    (its own group plus the IPC group), so what fails fails for that user."""
    pw = pwd.getpwnam(name)
    group = [g for g in os.getgrouplist(name, pw.pw_gid) if g != pw.pw_gid]

    def drop():
        os.setgroups(group)
        os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
        os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
    return drop


def magctl_as(stack, name, *args, timeout_ms=1500):
    return subprocess.run([str(reachable_bin("magctl")), "-t", str(timeout_ms), *args],
                          env=stack.env,
                          cwd="/", capture_output=True, text=True, timeout=20,
                          preexec_fn=as_user(name))


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.split()
    return out


@needs_enforce
@pytest.mark.parametrize("name", SERVICES)
def test_sandbox_selftest_passes(stack, name):
    out = subprocess.run([str(BIN / f"magnetar-{name}"), "--sandbox-selftest"],
                         env=stack.env, cwd=stack.dir, capture_output=True, text=True,
                         timeout=60)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "ok: every forbidden operation was refused" in out.stdout, text
    # A world-readable file outside its dirs: only Landlock is in the way.
    assert re.search(r"open \S+/\.sandbox-probe-%s\s+refused" % name, out.stdout), text
    # Every other service's database, which the running stack has created.
    for other in SERVICES:
        if other != name:
            assert re.search(r"open \S+/%s/%s\.db\s+refused" % (other, other),
                             out.stdout), text
    assert re.search(r"connect tcp 127\.0\.0\.1:\d+\s+refused", out.stdout), text
    # seccomp kills exec outright, in every service (the terminal's shells are
    # started by its spawner, forked before the sandbox).
    assert re.search(r"execve /bin/sh\s+refused \(killed by SIGSYS\)", out.stdout), text
    if ROOT:
        assert f"as magnetar-{name}" in out.stdout, text


@needs_root
def test_each_service_runs_as_its_own_user_in_its_sandbox(stack):
    ipc_gid = grp.getgrnam("magnetar").gr_gid
    uids = set()
    for name in SERVICES:
        st = status(stack.service_pid(name))
        pw = user(name)
        assert st["Uid"] == [str(pw.pw_uid)] * 4, (name, st["Uid"])
        assert st["Gid"] == [str(pw.pw_gid)] * 4, (name, st["Gid"])
        assert st["Groups"] == [str(ipc_gid)], (name, st["Groups"])
        assert int(st["CapEff"][0], 16) == 0 and int(st["CapPrm"][0], 16) == 0, name
        assert st["NoNewPrivs"] == ["1"], name
        if SANDBOX == "enforce":
            assert st["Seccomp"] == ["2"], name  # filter mode
        uids.add(pw.pw_uid)
    assert len(uids) == len(SERVICES) and 0 not in uids
    # The shell user is none of them and not in the IPC group.
    shell = pwd.getpwnam("magnetar-shell")
    assert shell.pw_uid not in uids and shell.pw_uid != 0
    assert ipc_gid not in os.getgrouplist("magnetar-shell", shell.pw_gid)


@needs_root
def test_data_dirs_and_databases_are_their_services_alone(stack):
    var = stack.dir / "var"
    for name in SERVICES:
        d = var / name
        st = d.stat()
        assert st.st_uid == user(name).pw_uid and st.st_mode & 0o777 == 0o700, name
        db = d / f"{name}.db"
        st = db.stat()
        assert st.st_uid == user(name).pw_uid and st.st_mode & 0o777 == 0o600, name


@needs_root
@pytest.mark.parametrize("name", SERVICES)
def test_another_services_database_cannot_be_opened(stack, name):
    others = [o for o in SERVICES if o != name]
    paths = [str(stack.dir / "var" / o / f"{o}.db") for o in others]
    code = ("import sys\n"
            "for p in sys.argv[1:]:\n"
            "    try:\n"
            "        open(p, 'rb').close(); print('OPENED', p)\n"
            "    except PermissionError:\n"
            "        print('refused', p)\n")
    out = subprocess.run(["/usr/bin/python3", "-c", code, *paths], capture_output=True,
                         text=True, timeout=20, preexec_fn=as_user("magnetar-" + name))
    assert out.returncode == 0, out.stderr
    assert "OPENED" not in out.stdout, out.stdout
    assert out.stdout.count("refused") == len(paths), out.stdout


@needs_root
@pytest.mark.parametrize("caller,callee", [
    ("breach", "auth"),      # only the gateway (and the operator) reach auth
    ("audit", "auth"),
    ("audit", "breach"),     # breach is auth's
    ("terminal", "breach"),
    ("auth", "terminal"),    # the terminal is the gateway's
    ("breach", "gateway"),   # the gateway's own socket is the operator's
    ("audit", "gateway"),
])
def test_a_peer_off_the_allow_list_is_refused(stack, caller, callee):
    needle = "refused a peer uid=%d" % user(caller).pw_uid

    def refusals():  # the whole log: stack.logs() is only its tail
        lines = stack.log_path.read_text(errors="replace").splitlines()
        return sum(1 for l in lines if l.startswith(f"[{callee}] ") and needle in l)
    before = refusals()
    out = magctl_as(stack, "magnetar-" + caller, "ping", callee)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.startswith(f"{callee}: refused (peer_refused"), out.stdout
    assert wait_until(lambda: refusals() > before, 2)


def test_refused_peers_never_wedge_the_listener(stack):
    """nng 1.5 leaked the descriptor of a pipe closed from its pipe-add
    callback now and then, and the listener then stopped accepting: the
    refusal is per request instead, and a flood of refused peers leaves the
    socket serving its allowed callers."""
    for _ in range(30):
        magctl_as(stack, "magnetar-breach", "ping", "auth")
    out = magctl_as(stack, "magnetar-gateway", "ping", "auth", timeout_ms=8000)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_root
@pytest.mark.parametrize("caller,callee", [
    ("gateway", "auth"), ("gateway", "terminal"), ("gateway", "audit"),
    ("auth", "breach"), ("breach", "audit"), ("terminal", "audit"),
    ("terminal", "auth"),  # Revoked: a revoked session closes its terminals
])
def test_allowed_peers_get_through(stack, caller, callee):
    # A generous deadline: a sanitizer build under load is slow to answer.
    out = magctl_as(stack, "magnetar-" + caller, "ping", callee, timeout_ms=8000)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_root
def test_the_shell_user_cannot_even_reach_a_socket(stack):
    for callee in SERVICES:
        out = magctl_as(stack, "magnetar-shell", "ping", callee)
        assert out.returncode == 1 and f"{callee}: down" in out.stdout, out.stdout


@needs_root
@pytest.mark.parametrize("caller,args", [
    ("gateway", ["audit", "rotate-key"]),    # the operator's alone
    ("breach", ["audit", "query"]),          # a producer may only Append
    ("terminal", ["audit", "verify"]),
    ("gateway", ["breach", "range", "5BAA6"]),  # Range is auth's
    ("auth", ["breach", "reload"]),           # Reload is the operator's
    ("terminal", ["user", "list"]),           # the terminal may only ask Revoked
    # auth's Op* methods are magctl's: a gateway may not mint users,
    # read every session or rotate the signing keys.
    ("gateway", ["user", "list"]),
    ("gateway", ["user", "set-role", "mallory", "founder"]),
    ("gateway", ["session", "list", "mallory"]),
    ("gateway", ["auth", "rotate-keys"]),
])
def test_an_unpermitted_method_is_permission_denied(stack, caller, args):
    out = magctl_as(stack, "magnetar-" + caller, *args, timeout_ms=8000)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "refused (permission_denied" in out.stdout, out.stdout
    # The operator (root) may.
    if args[1] in ("query", "verify") or args == ["user", "list"]:
        ok = stack.magctl(*args)
        assert ok.returncode == 0, ok.stdout + ok.stderr


@needs_root
def test_audit_sources_are_the_producers_uids(stack):
    out = stack.magctl("audit", "query", "--action", "service.started", "--limit", "50")
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("gateway", "auth", "breach", "terminal"):
        assert '"source":"uid:%d"' % user(name).pw_uid in out.stdout, (name, out.stdout)
    assert '"source":"uid:0"' not in out.stdout
