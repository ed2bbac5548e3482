"""Attacks of one terminal user on another (issue 16, item 2), through the
real interface: two users open shells over HTTP + WebSocket, and from user
B's shell: B's uid is not A's, B cannot write into A's PTY, cannot ptrace
A's shell or read its memory, and B exhausting its processes does not stop
A from opening a shell. Each user's HOME is private (a login script A
plants is never run by B's shells), no shell makes a user namespace, and a
process left behind by B cannot stop the spawner for everyone. Closing B's last terminal ends B's processes (even
one that left the session) and no other process of B's uid. The uid range
(MAGNETAR_TERMINAL_UIDS): one uid per user, recorded, stable across a
restart, exhausted with a clear 429, refused at start when it holds an
account.
"""
import os
import re
import shutil
import signal
import subprocess
import time

import pytest
import requests

from conftest import BIN, Stack, wait_until
from test_terminal import (ORIGIN, PASSWORD, children_named, connect, login, make_root,
                           open_term, read_until, start)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="shells of several uids need root")

ADMIN2 = ("admin2", "admin two password 1")
TERMINAL_KILL_GRACE_S = 2  # SIGHUP, then SIGKILL after this (terminal.h)
MARK = 0


def sh(ws, cmd, timeout=15):
    """Runs `cmd` in the shell; what it printed (between two marks, without
    the echoed command line or terminal escapes)."""
    global MARK
    MARK += 1
    ws.send_binary(b"0echo @@B''EGIN%d@@; " % MARK + cmd.encode() +
                   b"; echo @@E''ND%d@@\r" % MARK)
    out = read_until(ws, b"@@END%d@@\r\n" % MARK, timeout).decode(errors="replace")
    out = out.split("@@BEGIN%d@@" % MARK)[-1].split("@@END%d@@" % MARK)[0]
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)


def add_admin(stack, founder, user=ADMIN2):
    r = requests.post(stack.url + "/api/v1/users", headers=founder, timeout=15,
                      json={"username": user[0], "password": user[1], "role": "admin"})
    assert r.status_code == 201, r.text
    return login(stack, *user)


def shell_uid(ws):
    return int(sh(ws, "id -u").split()[0])


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    root = make_root()
    stack = start(tmp_path_factory.mktemp("attack"), root)
    a = login(stack)
    b = add_admin(stack, a)
    ta = open_term(stack, a).json()
    wa = connect(stack, ta)
    tb = open_term(stack, b).json()
    wb = connect(stack, tb)
    yield stack, a, b, wa, wb, tb
    for ws in (wa, wb):
        ws.close()
    rc = stack.stop()
    shutil.rmtree(root, ignore_errors=True)
    assert rc == 0, stack.logs()


def test_two_users_never_share_a_uid(two):
    _, _, _, wa, wb, _ = two
    ua, ub = shell_uid(wa), shell_uid(wb)
    assert ua != ub, (ua, ub)
    assert 0 not in (ua, ub)
    assert "uid=%d" % ub in sh(wb, "id") and "gid=%d" % ub in sh(wb, "id")


def home_of(ws):
    return sh(ws, "echo $HOME").split()[0]


def test_a_cannot_plant_a_login_script_for_b(two):
    """The shells' root is shared (1777 here, as deployments had it): with one
    HOME for every uid, what A writes to ~/.bash_profile ran as B in B's next
    login shell. Each user has a private HOME now, which no other user can
    enter or make in advance."""
    stack, a, b, wa, wb, _ = two
    root = stack.env["MAGNETAR_TERMINAL_ROOTS"]
    ua, ub = shell_uid(wa), shell_uid(wb)
    payload = "touch %s/pwned_$(id -u)" % root
    out = sh(wa, "for f in .bash_profile .bash_login .profile .bashrc; do "
                 "printf '%%s\\n' '%s' > ~/$f && chmod 644 ~/$f; done; "
                 "mkdir -p ~/.config && chmod 755 ~/.config; echo PLAN''TED" % payload)
    assert "PLANTED" in out, out
    r = open_term(stack, b)
    assert r.status_code == 201, r.text
    ws = connect(stack, r.json())
    try:
        home_b = home_of(ws)
        assert sh(ws, "pwd").split()[0] == home_b  # a terminal starts at home
        assert not os.path.exists("%s/pwned_%d" % (root, ub)), "A's login script ran as B"
    finally:
        ws.close()
        requests.delete(stack.url + "/api/v1/terminal/sessions/" + r.json()["id"], headers=b,
                        timeout=5)
    home_a = home_of(wa)
    assert home_a != home_b and home_b == home_of(wb)
    for home, uid in ((home_a, ua), (home_b, ub)):
        st = os.lstat(home)
        assert st.st_mode & 0o7777 == 0o770 and st.st_gid == uid, (home, oct(st.st_mode))
        assert os.path.realpath(home).startswith(os.path.realpath(root) + "/"), home
    # A can neither enter B's home nor make, rename or remove one beside it.
    parent = os.path.dirname(home_b)
    out = sh(wa, "ls %s >/dev/null 2>&1 && echo LIS''TED; cd %s 2>/dev/null && echo ENT''ERED; "
                 "mkdir %s/%d 2>/dev/null && echo MA''DE; mv %s %s/x 2>/dev/null && echo MO''VED; "
                 "echo DO''NE" % (home_b, home_b, parent, ub + 1, home_b, parent))
    assert "DONE" in out and not any(w in out for w in ("LISTED", "ENTERED", "MADE", "MOVED")), out
    r = open_term(stack, a, cwd=home_b)
    assert r.status_code == 400 and r.json()["error"]["code"] == "cwd_not_allowed", r.text
    # Each shell has its own TMPDIR, inside its home.
    assert sh(wa, "echo $TMPDIR").split()[0] == home_a + "/tmp"


def test_no_user_namespace_from_a_shell(two):
    """A user namespace would map a shell's uid to any other: unshare, setns
    and clone(CLONE_NEWUSER) are refused, clone3 is ENOSYS (so the C
    library falls back to clone, whose flags the filter can see)."""
    _, _, _, wa, _, _ = two
    out = sh(wa, "unshare -U true 2>/dev/null && echo MA''DE || echo REFU''SED")
    assert "REFUSED" in out and "MADE" not in out, out
    out = sh(wa, "python3 -c \"import ctypes,os\n"
                 "l=ctypes.CDLL(None,use_errno=True)\n"
                 "r=l.syscall(56,0x10000000|17,0,0,0,0)\n"
                 "if r==0: os._exit(0)\n"
                 "e=ctypes.get_errno()\n"
                 "r>0 and os.waitpid(r,0)\n"
                 "print('CLONE',r,e)\n"
                 "print('CLONE3',l.syscall(435,0,0),ctypes.get_errno())\n"
                 "print('SETNS',l.syscall(308,0,0x10000000),ctypes.get_errno())\"")
    assert "CLONE -1 1\r" in out, out
    assert "CLONE3 -1 38\r" in out, out
    assert "SETNS -1 1\r" in out, out


def test_b_cannot_write_into_as_pty(two):
    _, _, _, wa, wb, _ = two
    tty = sh(wa, "tty").split()[0]
    assert tty.startswith("/dev/pts/"), tty
    out = sh(wb, "echo PWNED > %s && echo WRO''TE || echo REFU''SED" % tty)
    assert "REFUSED" in out and "WROTE" not in out, out
    # Nothing reached A's screen.
    assert "PWNED" not in sh(wa, "true")


def test_b_cannot_ptrace_or_read_as_shell(two):
    _, _, _, wa, wb, _ = two
    pid = int(sh(wa, "echo $$").split()[0])
    script = ("import ctypes,os;l=ctypes.CDLL(None,use_errno=True);"
              "r=l.ptrace(16,%d,0,0);print('PTRACE',r,ctypes.get_errno())" % pid)
    out = sh(wb, "python3 -c \"%s\"" % script)
    assert "PTRACE -1 " in out, out
    out = sh(wb, "python3 -c \"import os;l=__import__('ctypes').CDLL(None,use_errno=True);"
                 "print('VMREAD',l.syscall(310,%d,0,0,0,0,0),__import__('ctypes').get_errno())\""
             % pid)
    assert "VMREAD -1 1" in out, out  # EPERM: refused before any address is read
    out = sh(wb, "head -c 1 /proc/%d/environ >/dev/null 2>&1 && echo REA''D || echo DEN''IED;"
                 "head -c 1 /proc/%d/mem >/dev/null 2>&1 && echo REA''D || echo DEN''IED"
             % (pid, pid))
    assert "READ" not in out and out.count("DENIED") == 2, out
    # B may not even trace its own children (no debugger in a shell).
    out = sh(wb, "python3 -c \"import ctypes,os\n"
                 "l=ctypes.CDLL(None,use_errno=True)\n"
                 "p=os.fork()\n"
                 "if p==0: import time; time.sleep(5); os._exit(0)\n"
                 "print('SELF',l.ptrace(16,p,0,0),ctypes.get_errno()); os.kill(p,9)\"")
    assert "SELF -1 1" in out, out


def test_b_exhausting_its_processes_does_not_stop_a(two):
    stack, a, b, _, _, _ = two
    tb2 = open_term(stack, b).json()
    wb2 = connect(stack, tb2)
    try:
        ub = shell_uid(wb2)
        out = sh(wb2, "python3 -c \"import subprocess\n"
                      "n=0\n"
                      "try:\n"
                      "  while n<5000: subprocess.Popen(['sleep','120']); n+=1\n"
                      "except OSError as e: print('STOPPED',n,e.errno)\"", timeout=60)
        assert "STOPPED" in out, out  # B met its own limit
        r = open_term(stack, a)
        assert r.status_code == 201, r.text
        ws = connect(stack, r.json())
        try:
            # Commands that fork: A's processes are not counted with B's.
            assert "alive" in sh(ws, "/bin/echo al''ive; (true)", timeout=30)
        finally:
            ws.close()
            requests.delete(stack.url + "/api/v1/terminal/sessions/" + r.json()["id"],
                            headers=a, timeout=5)
    finally:
        wb2.close()
        requests.delete(stack.url + "/api/v1/terminal/sessions/" + tb2["id"], headers=b,
                        timeout=5)
    # The sleeps python left behind end with their terminal.
    assert wait_until(lambda: not procs(ub, b"sleep\x00120\x00"), 10), "B's sleeps live"


def procs(uid, cmdline):
    found = []
    for p in os.listdir("/proc"):
        try:
            if (p.isdigit() and os.stat(f"/proc/{p}").st_uid == uid and
                    open(f"/proc/{p}/cmdline", "rb").read() == cmdline):
                found.append(int(p))
        except OSError:
            pass
    return found


def test_closing_bs_last_terminal_ends_its_processes_and_no_other(two):
    stack, a, b, wa, wb, tb = two
    ub = shell_uid(wb)
    # A process of B's uid that is not this service's (another Magnetar on
    # the host, an operator's): it must live on.
    other = subprocess.Popen(["setpriv", "--reuid=%d" % ub, "--regid=%d" % ub, "--clear-groups",
                              "sleep", "4244"])
    try:
        # B's own escapee: out of its session and its process group.
        sh(wb, "setsid sleep 4243 </dev/null >/dev/null 2>&1 & true")
        assert wait_until(lambda: procs(ub, b"sleep\x004243\x00"), 5)
        r = requests.delete(stack.url + "/api/v1/terminal/sessions/" + tb["id"], headers=b,
                            timeout=5)
        assert r.status_code == 204
        assert wait_until(lambda: not procs(ub, b"sleep\x004243\x00"), 10), "escapee lives"
        time.sleep(1)
        assert other.poll() is None, "a process of B's uid not started by the service died"
        # A's shell is untouched.
        assert "still" in sh(wa, "echo st''ill")
        # Nor when the service's very last terminal closes.
        wa.close()
        for t in requests.get(stack.url + "/api/v1/terminal/sessions", headers=a,
                              timeout=5).json()["terminals"]:
            requests.delete(stack.url + "/api/v1/terminal/sessions/" + t["id"], headers=a,
                            timeout=5)
        spawner = children_named(stack.service_pid("terminal"), "magnetar-spawn")[0]
        assert wait_until(lambda: not children_named(spawner, "bash"), 10)
        time.sleep(1)
        assert other.poll() is None, "the last terminal's close killed a process of B's uid"
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()


def test_uid_range_is_recorded_stable_and_exhausts_clearly(tmp_path_factory):
    root = make_root()
    tmp = tmp_path_factory.mktemp("range")
    first = 2000123400
    stack = start(tmp, root, MAGNETAR_TERMINAL_UIDS="%d-%d" % (first, first + 1))
    try:
        a = login(stack)
        b = add_admin(stack, a)
        c = add_admin(stack, a, ("admin3", "admin three password 1"))
        uids = {}
        for name, h in (("a", a), ("b", b)):
            t = open_term(stack, h).json()
            ws = connect(stack, t)
            uids[name] = shell_uid(ws)
            ws.close()
        assert sorted(uids.values()) == [first, first + 1], uids
        r = open_term(stack, c)
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "shell_uids_exhausted", r.text
        stack.stop()
        stack.start()
        a = login(stack)
        t = open_term(stack, a).json()
        ws = connect(stack, t)
        assert shell_uid(ws) == uids["a"]  # the same uid after a restart
        ws.close()
    finally:
        rc = stack.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert rc == 0, stack.logs()


@pytest.mark.parametrize("rng", ["0-5", "1-2000", "65534-65534"])
def test_a_range_holding_an_account_is_refused_at_start(tmp_path, rng):
    env = {"MAGNETAR_TERMINAL_UIDS": rng, "MAGNETAR_FOUNDER_USERNAME": "founder",
           "MAGNETAR_FOUNDER_PASSWORD": PASSWORD, "MAGNETAR_HIBP_MODE": "off",
           "MAGNETAR_CORS_ORIGINS": ORIGIN}
    s = Stack(tmp_path, env)
    out = subprocess.run([str(BIN / "magnetar-terminal")], env=s.env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=20)
    assert out.returncode != 0, out.stderr
    assert "MAGNETAR_TERMINAL_UIDS" in out.stderr, out.stderr


def kill_uid(uid):
    """Test cleanup only: SIGKILLs what runs as the test's own range uid."""
    for p in os.listdir("/proc"):
        try:
            if p.isdigit() and os.stat(f"/proc/{p}").st_uid == uid:
                os.kill(int(p), signal.SIGKILL)
        except OSError:
            pass


WEDGE = """import os, signal, sys, time
# Four of them, one process group. From the test's signal on, for 20 s: stop
# every process of this uid that was just started (the newest pids), but
# not one of the group.
for _ in range(3):
    if os.fork() == 0:
        break
group = os.getpgrp()
while not os.path.exists(sys.argv[1]):
    time.sleep(0.002)
end = time.time() + 20
while time.time() < end:
    with open("/proc/loadavg") as f:
        last = int(f.read().split()[4])
    for pid in range(last - 3, last + 8):
        try:
            if os.getpgid(pid) != group:
                os.kill(pid, signal.SIGSTOP)
        except OSError:
            pass
"""


def test_an_escapee_cannot_wedge_the_spawner(tmp_path_factory):
    """B leaves processes that leave their session and stop every new
    process of B's uid in a loop, while B opens and closes terminals. The
    spawner, which signals B's processes as B, and the child it waits for
    until B's shell runs, must not be among what they stop: B and A still
    open terminals at once, and the escapees die with B's last terminal."""
    root = make_root()
    stack = start(tmp_path_factory.mktemp("wedge"), root)
    ub = None
    try:
        a = login(stack)
        b = add_admin(stack, a)
        tb = [open_term(stack, b).json() for _ in range(2)]
        wb = [connect(stack, t) for t in tb]
        ub = shell_uid(wb[0])
        script = root / "wedge.py"
        script.write_text(WEDGE)
        script.chmod(0o644)
        go = root / "go"
        sh(wb[0], "setsid python3 %s %s </dev/null >/dev/null 2>&1 & true" % (script, go))
        cmd = b"python3\x00%s\x00%s\x00" % (str(script).encode(), str(go).encode())
        assert wait_until(lambda: len(procs(ub, cmd)) == 4, 5)
        go.write_text("")
        time.sleep(0.2)
        # B's next shells: the spawner waits for each child it forks until
        # the shell runs, and the escapees look for the newest processes.
        for _ in range(3):
            t0 = time.monotonic()
            r = open_term(stack, b)
            assert r.status_code == 201, r.text
            assert time.monotonic() - t0 < 5
            requests.delete(stack.url + "/api/v1/terminal/sessions/" + r.json()["id"],
                            headers=b, timeout=5)
        # Each close signals B's processes (hang-up, then kill, then what
        # the shell left): the first leaves the escapees' shell running.
        for t, ws in zip(reversed(tb), reversed(wb)):
            r = requests.delete(stack.url + "/api/v1/terminal/sessions/" + t["id"], headers=b,
                                timeout=5)
            assert r.status_code == 204
            ws.close()
            time.sleep(TERMINAL_KILL_GRACE_S + 1)
        t0 = time.monotonic()
        r = open_term(stack, a)
        assert r.status_code == 201, r.text
        assert time.monotonic() - t0 < 5
        assert wait_until(lambda: not procs(ub, cmd), 5), "the escapees live"
        ws = connect(stack, r.json())
        assert "alive" in sh(ws, "echo al''ive")
        ws.close()
    finally:
        if ub is not None:
            kill_uid(ub)  # what an unfixed spawner left stopped
        rc = stack.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert rc == 0, stack.logs()


def test_a_refused_open_takes_no_shell_uid(tmp_path_factory):
    """An Open refused by a limit must not use up a uid of the range."""
    root = make_root()
    first = 2000123500
    stack = start(tmp_path_factory.mktemp("uidleak"), root,
                  MAGNETAR_TERMINAL_UIDS="%d-%d" % (first, first + 1), MAGNETAR_TERMINAL_MAX="1")
    try:
        a = login(stack)
        b = add_admin(stack, a)
        c = add_admin(stack, a, ("admin3", "admin three password 1"))
        ta = open_term(stack, a)
        assert ta.status_code == 201, ta.text
        for h in (b, c, b, c):
            r = open_term(stack, h)
            assert r.status_code == 429, r.text
            assert r.json()["error"]["code"] == "too_many_terminals", r.text
        requests.delete(stack.url + "/api/v1/terminal/sessions/" + ta.json()["id"], headers=a,
                        timeout=5)
        r = None
        end = time.monotonic() + 10
        while time.monotonic() < end:
            r = open_term(stack, b)
            if r.status_code != 429 or r.json()["error"]["code"] != "too_many_terminals":
                break
            time.sleep(0.2)
        assert r.status_code == 201, r.text
        ws = connect(stack, r.json())
        assert shell_uid(ws) == first + 1
        ws.close()
    finally:
        rc = stack.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert rc == 0, stack.logs()


def test_a_home_parent_made_by_someone_else_is_refused(tmp_path_factory):
    """In a 1777 root any shell uid could make .home before the spawner
    does (an older release's shells ran there): one that is not the
    terminal's is refused, never used, and nothing is made in it."""
    root = make_root()
    planted = root / ".home"
    planted.mkdir()
    os.chown(planted, 65534, 65534)
    planted.chmod(0o777)
    stack = start(tmp_path_factory.mktemp("foreignhome"), root)
    try:
        a = login(stack)
        r = open_term(stack, a)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "cwd_not_allowed", r.text
        assert os.listdir(planted) == []
        assert "belongs to uid 65534" in stack.full_log(), stack.logs()
    finally:
        rc = stack.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert rc == 0, stack.logs()
