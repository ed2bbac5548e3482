"""Terminals end to end (issue 7): open over HTTP, talk to a real shell over a
real WebSocket (python3-websocket), and every refusal: shells and working
directories outside the policy, bad tickets and origins before any upgrade,
limits, roles, the shell's environment, the idle timeout, the audit trail.
"""
import json
import os
import pathlib
import pwd
import re
import shutil
import tempfile
import time

import pytest
import requests
import websocket

from conftest import Stack, wait_until

PASSWORD = "terminal founder password 7"
ORIGIN = "https://app.example.com"


def make_root():
    # Under /tmp with traversable parents: shells run as other uids and must
    # be able to enter it. 1777, as deployments before the private homes had
    # it (and Compose's terminal-home volume may still have): every shell
    # uid may create anything at the top, the worst case for the homes.
    root = pathlib.Path(tempfile.mkdtemp(prefix="magterm-", dir="/tmp"))
    root.chmod(0o1777)
    (root / "work").mkdir()
    (root / "work").chmod(0o777)
    (root / "afile").write_text("x")
    os.symlink("/etc", root / "escape")
    os.symlink("/bin/bash", root / "bash-link")
    return root


def start(tmp, root, **extra):
    env = {
        "MAGNETAR_TERMINAL_ROOTS": str(root),
        "MAGNETAR_FOUNDER_USERNAME": "founder",
        "MAGNETAR_FOUNDER_PASSWORD": PASSWORD,
        "MAGNETAR_HIBP_MODE": "off",
        "MAGNETAR_CORS_ORIGINS": ORIGIN,
    }
    env.update(extra)
    return Stack(tmp, env).start()


# What websocket-client sends: a token used on the upgrade must come from a
# login with the same User-Agent and fingerprint headers (session risk).
WS_LIKE = {"User-Agent": "magterm-test", "Accept-Encoding": None}


def login(stack, username="founder", password=PASSWORD, headers=None):
    # A 503 just after start (a sanitizer build's auth still connecting) is
    # retried; any other answer is final.
    for _ in range(20):
        r = requests.post(stack.url + "/api/v1/auth/login", headers=headers,
                          json={"username": username, "password": password}, timeout=15)
        if r.status_code != 503:
            break
        time.sleep(0.25)
    assert r.status_code == 200, r.text
    return {"Authorization": "Bearer " + r.json()["access_token"]}


def add_admin(stack, headers, username, password):
    """Creates an admin (who may open terminals) as `headers`' user, and
    returns the new admin's own login headers."""
    r = requests.post(stack.url + "/api/v1/users", headers=headers, timeout=15,
                      json={"username": username, "password": password, "role": "admin"})
    assert r.status_code == 201, r.text
    return login(stack, username, password)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = make_root()
    s = start(tmp_path_factory.mktemp("term"), root)
    yield s, root
    rc = s.stop()
    shutil.rmtree(root, ignore_errors=True)
    assert rc == 0, s.logs()
    assert "ERROR: AddressSanitizer" not in s.full_log(), s.logs()
    assert "runtime error:" not in s.full_log(), s.logs()


@pytest.fixture
def founder(env):
    stack, _ = env
    h = login(stack)
    yield h
    # Every test leaves no terminal behind (limits are per user).
    r = requests.get(stack.url + "/api/v1/terminal/sessions", headers=h, timeout=5)
    for t in r.json().get("terminals", []):
        requests.delete(stack.url + "/api/v1/terminal/sessions/" + t["id"], headers=h, timeout=5)


def open_term(stack, headers, shell="/bin/bash", cwd=None, cols=80, rows=24):
    body = {"shell": shell, "cols": cols, "rows": rows}
    if cwd is not None:
        body["cwd"] = cwd
    return requests.post(stack.url + "/api/v1/terminal/sessions", json=body, headers=headers,
                         timeout=10)


def connect(stack, t, ticket=None, **kw):
    url = "ws://127.0.0.1:%d%s?ticket=%s" % (stack.port, t["ws_url"],
                                             ticket if ticket is not None else t["ws_ticket"])
    if "origin" not in kw:
        kw["suppress_origin"] = True
    return websocket.create_connection(url, timeout=10, **kw)


def refused(stack, t, ticket=None, **kw):
    """The status of an upgrade that must fail before any 101."""
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        connect(stack, t, ticket, **kw)
    return e.value.status_code


def read_until(ws, needle, timeout=10):
    out = b""
    end = time.monotonic() + timeout
    while needle not in out:
        assert time.monotonic() < end, out[-500:]
        opcode, data = ws.recv_data()
        assert opcode == websocket.ABNF.OPCODE_BINARY, (opcode, data)
        assert data[:1] == b"0", data
        out += data[1:]
    return out


def read_exit(ws, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            pytest.fail("closed before the exit frame")
        if data[:1] == b"2":
            return json.loads(data[1:])["code"]
    pytest.fail("no exit frame")


def test_echo_resize_exit(env, founder):
    stack, root = env
    r = open_term(stack, founder, cwd=str(root / "work"))
    assert r.status_code == 201, r.text
    t = r.json()
    assert set(t) >= {"id", "shell", "cwd", "ws_url", "ws_ticket"}
    assert t["shell"] == "/bin/bash" and t["cwd"] == str(root / "work")
    assert t["ws_url"] == "/api/v1/terminal/sessions/%s/ws" % t["id"]
    assert t["ws_ticket"] not in t["ws_url"]
    ws = connect(stack, t)
    ws.send_binary(b"0echo h''i\r")
    assert b"hi\r\n" in read_until(ws, b"hi\r\n")
    ws.send_binary(b'1{"cols":123,"rows":45}')
    ws.send_binary(b"0stty size\r")
    read_until(ws, b"45 123")
    ws.send_binary(b"0pwd\r")
    read_until(ws, str(root / "work").encode())
    ws.send_binary(b"0exit 3\r")
    assert read_exit(ws) == 3
    # Then the server closes.
    opcode, _ = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    ws.close()
    assert wait_until(lambda: all(x["id"] != t["id"] for x in requests.get(
        stack.url + "/api/v1/terminal/sessions", headers=founder).json()["terminals"]), 10)


def test_signal_death_is_128_plus_signal(env, founder):
    stack, _ = env
    t = open_term(stack, founder).json()
    ws = connect(stack, t)
    ws.send_binary(b"0kill -KILL $$\r")
    assert read_exit(ws) == 128 + 9
    ws.close()


@pytest.mark.parametrize("shell", [
    "/bin/bash;id", "bash", "/bin/../bin/bash", "/bin//bash", "/usr/bin/python3", "/bin/rbash",
    "", "/bin/bash ", "/BIN/BASH",
])
def test_shell_refused(env, founder, shell):
    stack, _ = env
    r = open_term(stack, founder, shell=shell)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "shell_not_allowed"


def test_shell_symlink_and_nul_refused(env, founder):
    stack, root = env
    r = open_term(stack, founder, shell=str(root / "bash-link"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "shell_not_allowed"
    # A NUL inside the string: never truncated into an allowed path.
    r = requests.post(stack.url + "/api/v1/terminal/sessions", headers={
        **founder, "Content-Type": "application/json"},
        data=b'{"shell":"/bin/bash\\u0000x","cols":80,"rows":24}', timeout=5)
    assert r.status_code == 400, r.text


def test_cwd_refused(env, founder):
    stack, root = env
    for cwd in ["../../etc", str(root / "work" / ".." / ".." / ".." / "etc"), str(root / "escape"),
                str(root / "nope"), str(root / "afile"), "/etc", "work", str(root) + "\n"]:
        r = open_term(stack, founder, cwd=cwd)
        assert r.status_code == 400, (cwd, r.text)
        assert r.json()["error"]["code"] == "cwd_not_allowed", cwd


def test_size_bounds(env, founder):
    stack, _ = env
    for cols, rows in [(0, 24), (80, 0), (1001, 24), (80, 100000), (-1, 5)]:
        r = open_term(stack, founder, cols=cols, rows=rows)
        assert r.status_code == 400, r.text
    r = requests.post(stack.url + "/api/v1/terminal/sessions", headers=founder,
                      json={"shell": "/bin/bash", "extra": 1}, timeout=5)
    assert r.status_code == 400


def test_tickets(env, founder):
    stack, _ = env
    a = open_term(stack, founder).json()
    b = open_term(stack, founder).json()
    assert refused(stack, a, ticket="x" * 43) == 401
    assert refused(stack, a, ticket="") == 401
    # A's ticket is not B's.
    assert refused(stack, b, ticket=a["ws_ticket"]) == 401
    ws = connect(stack, a)
    ws.close()
    # Single use, even after the first socket is gone.
    assert refused(stack, a) == 401
    # Not a WebSocket at all: a plain GET is refused, not upgraded.
    r = requests.get(stack.url + b["ws_url"] + "?ticket=" + b["ws_ticket"], timeout=5)
    assert r.status_code == 400
    ws = connect(stack, b)  # the failed attempts did not burn B's ticket
    ws.close()


def test_origin(env, founder):
    stack, _ = env
    t = open_term(stack, founder).json()
    assert refused(stack, t, origin="https://evil.example.net") == 403
    assert refused(stack, t, origin="null") == 403
    assert refused(stack, t, origin=ORIGIN + ".evil.net") == 403
    ws = connect(stack, t, origin=ORIGIN)  # the foreign tries did not burn it
    ws.send_binary(b"0echo ok\r")
    read_until(ws, b"ok\r\n")
    ws.close()


def test_other_users(env, founder):
    stack, _ = env
    r = requests.post(stack.url + "/api/v1/users", headers=founder, timeout=15,
                      json={"username": "admin2", "password": "admin two password 1",
                            "role": "admin"})
    assert r.status_code == 201, r.text
    admin = login(stack, "admin2", "admin two password 1", WS_LIKE)
    r = requests.post(stack.url + "/api/v1/auth/register", timeout=15,
                      json={"username": "member1", "password": "member one password 1"})
    assert r.status_code == 201, r.text
    member = login(stack, "member1", "member one password 1")

    t = open_term(stack, founder).json()
    # A member without the grant may do nothing with terminals.
    assert open_term(stack, member).status_code == 403
    assert requests.get(stack.url + "/api/v1/terminal/sessions", headers=member).status_code == 403
    assert requests.delete(stack.url + "/api/v1/terminal/sessions/" + t["id"],
                           headers=member).status_code == 403
    # An admin sees only their own, and cannot close or attach to the founder's.
    plain = dict(WS_LIKE, **admin)
    assert requests.get(stack.url + "/api/v1/terminal/sessions",
                        headers=plain).json()["terminals"] == []
    assert requests.delete(stack.url + "/api/v1/terminal/sessions/" + t["id"],
                           headers=plain).status_code == 404
    ua = "User-Agent: " + WS_LIKE["User-Agent"]
    assert refused(stack, t, header=[ua, "Authorization: " + admin["Authorization"]]) == 403
    assert refused(stack, t, header=["Authorization: Bearer nonsense"]) == 401
    assert requests.get(stack.url + "/api/v1/terminal/sessions").status_code == 401
    # The founder's own still works.
    mine = login(stack, headers=WS_LIKE)
    ws = connect(stack, t, header=[ua, "Authorization: " + mine["Authorization"]])
    ws.close()


def test_delete_closes_the_socket(env, founder):
    stack, _ = env
    t = open_term(stack, founder).json()
    ws = connect(stack, t)
    ws.send_binary(b"0echo ready\r")
    read_until(ws, b"ready\r\n")
    r = requests.delete(stack.url + "/api/v1/terminal/sessions/" + t["id"], headers=founder)
    assert r.status_code == 204
    end = time.monotonic() + 10
    while True:
        assert time.monotonic() < end
        try:
            opcode, data = ws.recv_data(control_frame=True)
        except websocket.WebSocketConnectionClosedException:
            break
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
        # The terminal's "stream ended" frame is the gateway's, not ours.
        assert data[:1] == b"0", data
    assert requests.delete(stack.url + "/api/v1/terminal/sessions/" + t["id"],
                           headers=founder).status_code == 404


def test_per_user_limit(env, founder):
    stack, _ = env
    ids = [open_term(stack, founder).json()["id"] for _ in range(3)]
    r = open_term(stack, founder)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "too_many_terminals"
    listed = {x["id"] for x in requests.get(stack.url + "/api/v1/terminal/sessions",
                                            headers=founder).json()["terminals"]}
    assert listed == set(ids)
    requests.delete(stack.url + "/api/v1/terminal/sessions/" + ids[0], headers=founder)
    assert open_term(stack, founder).status_code == 201


def test_environment_is_fresh(env, founder):
    stack, root = env
    t = open_term(stack, founder).json()
    ws = connect(stack, t)
    ws.send_binary(b"0env | sort | sed 's/^/ENV:/'; echo END''MARK\r")
    out = read_until(ws, b"ENDMARK").decode(errors="replace")
    ws.close()
    names = {line.split("=", 1)[0][4:] for line in out.splitlines() if line.startswith("ENV:")}
    assert not any(n.startswith("MAGNETAR") for n in names), names
    assert {"TERM", "HOME", "USER", "SHELL", "PATH", "LANG"} <= names, names
    for leaked in ("ASAN_OPTIONS", "MAGNETAR_FOUNDER_PASSWORD", "MAGNETAR_DATA_DIR"):
        assert leaked not in names
    if os.geteuid() == 0:
        # A uid of MAGNETAR_TERMINAL_UIDS, which no account has: its own
        # home under the first root, its own TMPDIR in it.
        home = re.search(r"ENV:HOME=(%s/\.home/\d+)\r" % re.escape(str(root)), out)
        assert "ENV:USER=shell\r" in out and home, out
        assert "ENV:TMPDIR=%s/tmp\r" % home.group(1) in out, out
        assert t["cwd"] == home.group(1), t  # where a terminal starts by default


def test_ticket_never_logged(env, founder):
    stack, _ = env
    t = open_term(stack, founder).json()
    refused(stack, t, origin="https://evil.example.net")
    ws = connect(stack, t)
    ws.close()
    refused(stack, t)
    time.sleep(0.5)
    logs = pathlib.Path(stack.log_path).read_text(errors="replace")
    assert t["ws_ticket"] not in logs
    # A query may be logged only redacted.
    assert all(rest.startswith("<redacted>") for rest in logs.split("ticket=")[1:])


def test_magctl(env, founder):
    stack, _ = env
    t = open_term(stack, founder).json()
    out = stack.magctl("terminal", "list")
    assert out.returncode == 0 and t["id"] in out.stdout, out.stdout + out.stderr
    out = stack.magctl("terminal", "kill", t["id"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert t["id"] not in stack.magctl("terminal", "list").stdout
    assert stack.magctl("terminal", "kill", t["id"]).returncode == 1
    assert stack.stats("terminal")["terminal.opened"] >= 1


def test_audit_trail(env, founder):
    stack, _ = env

    # One of each, whatever ran before.
    assert open_term(stack, founder, shell="/bin/nope").status_code == 400
    t = open_term(stack, founder).json()
    ws = connect(stack, t)
    ws.send_binary(b"0exit 0\r")
    assert read_exit(ws) == 0
    ws.close()

    def seen(action):
        r = requests.get(stack.url + "/api/v1/audit/events?limit=20&action=" + action,
                         headers=founder, timeout=10)
        return r.status_code == 200 and any(
            e["action"] == action and e["actor"] for e in r.json()["events"])

    for action in ("terminal.opened", "terminal.denied", "terminal.exited", "terminal.closed"):
        assert wait_until(lambda: seen(action), 15), action


def test_expired_ticket(env, founder):
    stack, _ = env
    t = open_term(stack, founder).json()
    time.sleep(31)  # the ticket lives 30 s
    assert refused(stack, t) == 401


def test_idle_timeout(tmp_path_factory):
    root = make_root()
    stack = start(tmp_path_factory.mktemp("idle"), root, MAGNETAR_TERMINAL_IDLE_S="2")
    try:
        h = login(stack)
        t = open_term(stack, h).json()
        ws = connect(stack, t)
        # The last activity comes after this send (the echo, the prompt),
        # however late a loaded machine relays it back.
        start_t = time.monotonic()
        ws.send_binary(b"0echo alive\r")
        read_until(ws, b"alive\r\n")
        end = start_t + 15
        while True:
            assert time.monotonic() < end, "idle terminal still open"
            try:
                opcode, _ = ws.recv_data(control_frame=True)
            except websocket.WebSocketConnectionClosedException:
                break
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
        assert time.monotonic() - start_t >= 1.9
        assert requests.get(stack.url + "/api/v1/terminal/sessions",
                            headers=h).json()["terminals"] == []
    finally:
        rc = stack.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert rc == 0, stack.logs()


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the spawner drops privileges as root")
CAP_SETGID, CAP_SETUID = 6, 7


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.split()
    return out


def children_named(ppid, comm):
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            stat = open(f"/proc/{p}/stat").read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        parent = int(stat[stat.rindex(")") + 2:].split()[1])
        if name == comm and parent == ppid:
            found.append(int(p))
    return found


@needs_root
def test_spawner_is_the_services_user_with_two_capabilities(env):
    stack, _ = env
    spawners = children_named(stack.service_pid("terminal"), "magnetar-spawn")
    assert len(spawners) == 1, spawners
    st = proc_status(spawners[0])
    uid = pwd.getpwnam("magnetar-terminal").pw_uid
    assert st["Uid"] == [str(uid)] * 4, st["Uid"]
    assert st["Groups"] == [], st["Groups"]
    two = (1 << CAP_SETUID) | (1 << CAP_SETGID)
    for field in ("CapEff", "CapPrm", "CapBnd"):
        assert int(st[field][0], 16) == two, (field, st[field])
    assert int(st["CapAmb"][0], 16) == 0
    assert st["NoNewPrivs"] == ["1"] and st["Seccomp"] == ["2"]


@needs_root
def test_the_shell_has_no_capability(env, founder):
    stack, _ = env
    t = open_term(stack, founder).json()
    ws = connect(stack, t)
    ws.send_binary(b"0grep -E '^Cap(Eff|Prm|Amb)' /proc/self/status; echo DONE''MARK\r")
    out = read_until(ws, b"DONEMARK").decode(errors="replace")
    ws.close()
    for field in ("CapEff", "CapPrm", "CapAmb"):
        assert f"{field}:\t0000000000000000" in out, out


@needs_root
def test_a_process_that_left_the_session_dies_with_its_terminal(env, founder):
    """The shell is the subreaper of all it starts: what left its session
    ends with its terminal, while another terminal of the same user (the
    same uid) stays open."""
    stack, _ = env

    other = open_term(stack, founder).json()
    t = open_term(stack, founder).json()
    ws = connect(stack, t)
    ws.send_binary(b"0echo UID=$(id -u)=EN''D\r")
    out = read_until(ws, b"=END").decode(errors="replace")
    shell_uid = int(out.rsplit("UID=", 1)[1].split("=")[0])

    def escapees():
        found = []
        for p in os.listdir("/proc"):
            try:
                if (p.isdigit() and os.stat(f"/proc/{p}").st_uid == shell_uid and
                        open(f"/proc/{p}/cmdline", "rb").read() == b"sleep\x004242\x00"):
                    found.append(int(p))
            except OSError:
                pass
        return found

    ws.send_binary(b"0setsid sleep 4242 </dev/null >/dev/null 2>&1 & echo STAR''TED\r")
    read_until(ws, b"STARTED")
    pids = wait_until(escapees, 5)
    assert pids, "the escapee did not start"
    assert all(os.getsid(p) == p for p in pids)  # its own session: out of the shell's
    ws.close()
    requests.delete(stack.url + "/api/v1/terminal/sessions/" + t["id"], headers=founder,
                    timeout=5)
    assert wait_until(lambda: not escapees(), 10), escapees()
    assert other["id"] in {x["id"] for x in requests.get(
        stack.url + "/api/v1/terminal/sessions", headers=founder).json()["terminals"]}


def terminal_closes(ws, timeout=5):
    """True when the server ends the WebSocket (close frame or EOF)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            opcode, _ = ws.recv_data(control_frame=True)
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            return True
        except websocket.WebSocketTimeoutException:
            continue
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return True
    return False


def test_logout_closes_the_sessions_terminals_and_no_other(env, founder):
    """A revoked session's terminals close (auth's session.revoked reaches
    the terminal service); a terminal of another session of the same user
    stays."""
    stack, _ = env
    doomed = login(stack)
    mine = open_term(stack, doomed).json()
    other = open_term(stack, founder).json()
    ws = connect(stack, mine)
    ws_other = connect(stack, other)
    ws.send_binary(b"0echo up\r")
    read_until(ws, b"up\r\n")
    t0 = time.monotonic()
    r = requests.post(stack.url + "/api/v1/auth/logout", json={}, headers=doomed, timeout=5)
    assert r.status_code == 204
    assert terminal_closes(ws), "the revoked session's terminal stayed open"
    assert time.monotonic() - t0 < 3
    listed = {t["id"] for t in requests.get(stack.url + "/api/v1/terminal/sessions",
                                            headers=founder).json()["terminals"]}
    assert mine["id"] not in listed and other["id"] in listed
    ws_other.send_binary(b"0echo still\r")
    read_until(ws_other, b"still\r\n")
    ws_other.close()
    # The WebSocket may close (the terminal's frame) a moment before the
    # terminal logs the close.
    assert wait_until(lambda: 'reason=revoked' in stack.log_path.read_text(errors="replace") or
                      "revoked session" in stack.log_path.read_text(errors="replace"), 5)
