"""Revocation under attack (issue 16, items 1 and 9): a gateway whose view of
revoked sessions is stale or incomplete must not open shells or read the
audit log for a logged-out token, a huge revoked set must still load, and a
gateway (or anything that can reach auth as the gateway) must not act as an
administrator with a bare session reference instead of that user's token.
"""
import os
import pathlib
import pwd
import shutil
import sqlite3
import subprocess
import tempfile
import time

import pytest
import requests
import websocket

from conftest import BIN, Stack, free_port, wait_until

PASSWORD = "revocation founder password 5"


def make_root():
    # 1777, as test_terminal's: shells of the range's uids start in their
    # private homes beneath it.
    root = pathlib.Path(tempfile.mkdtemp(prefix="magrev-", dir="/tmp"))
    root.chmod(0o1777)
    return root


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = make_root()
    s = Stack(tmp_path_factory.mktemp("revoke"), {
        "MAGNETAR_TERMINAL_ROOTS": str(root),
        "MAGNETAR_FOUNDER_USERNAME": "founder",
        "MAGNETAR_FOUNDER_PASSWORD": PASSWORD,
        "MAGNETAR_HIBP_MODE": "off",
        "MAGNETAR_MAX_SESSIONS": "1000",
    }).start()
    s.root = root
    yield s
    rc = s.stop()
    shutil.rmtree(root, ignore_errors=True)
    assert rc == 0, s.logs()
    assert "ERROR: AddressSanitizer" not in s.full_log(), s.logs()
    assert "runtime error:" not in s.full_log(), s.logs()


def login(url):
    for _ in range(40):
        r = requests.post(url + "/api/v1/auth/login", timeout=15,
                          json={"username": "founder", "password": PASSWORD})
        if r.status_code != 503:
            break
        time.sleep(0.25)
    assert r.status_code == 200, r.text
    return r.json()


def bearer(body):
    return {"Authorization": "Bearer " + body["access_token"]}


def attempts(url, headers, root):
    """What a logged-out admin token tries: open a shell, list shells, read
    and verify the audit log, list the user's sessions. Status codes by
    name."""
    return {
        # HEAD is GET without the body: its Content-Length alone would say
        # how many events match a filter (and HEAD verify walks the log).
        # First: a route that looks at the revoked set asks for a reload
        # when the set is stale, and the reloaded set would refuse these
        # without auth being asked.
        "events_head": requests.head(url + "/api/v1/audit/events?action=auth.login",
                                     headers=headers, timeout=10).status_code,
        "verify_head": requests.head(url + "/api/v1/audit/verify", headers=headers,
                                     timeout=30).status_code,
        # Then: the set may be reloaded by what follows (a 503 asks for it).
        "sessions": requests.get(url + "/api/v1/auth/sessions", headers=headers,
                                 timeout=10).status_code,
        "open": requests.post(url + "/api/v1/terminal/sessions", headers=headers, timeout=10,
                              json={"shell": "/bin/sh", "cwd": str(root)}).status_code,
        "list": requests.get(url + "/api/v1/terminal/sessions", headers=headers,
                             timeout=10).status_code,
        "events": requests.get(url + "/api/v1/audit/events", headers=headers,
                               timeout=10).status_code,
        "verify": requests.get(url + "/api/v1/audit/verify", headers=headers,
                               timeout=30).status_code,
    }


def second_gateway(stack, tmp_path, events_url):
    port = free_port()
    env = dict(stack.env, MAGNETAR_HTTP_ADDR=f"127.0.0.1:{port}",
               MAGNETAR_GATEWAY_URL="ipc://" + str(tmp_path / "gw2.sock"),
               MAGNETAR_AUTH_EVENTS_URL=events_url)
    log = open(tmp_path / "gw2.log", "wb")
    gw = subprocess.Popen([str(BIN / "magnetar-gateway")], env=env, stdout=log,
                          stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    assert wait_until(lambda: requests.get(url + "/readyz", timeout=2).status_code == 200, 15), \
        (tmp_path / "gw2.log").read_text(errors="replace")
    return gw, log, url


def test_dead_events_never_let_a_logged_out_token_open_a_shell(stack, tmp_path):
    """A gateway whose auth.events subscription is dead (nothing listens at
    its URL): it loaded the revoked set once, then hears nothing. A token
    logged out through another gateway must not open a shell, list shells
    or read the audit log there, before or after the 3 s silence. A live
    session is not refused there meanwhile: auth vouches for it."""
    gw, log, url = second_gateway(stack, tmp_path,
                                  "ipc://" + str(tmp_path / "nobody-publishes.sock"))
    try:
        body = login(stack.url)
        h = bearer(body)
        # Works while the session is live (through the confirming routes),
        # and so does listing terminals once the set is stale: auth is asked.
        assert requests.get(url + "/api/v1/audit/events", headers=h,
                            timeout=10).status_code == 200
        time.sleep(3.5)
        r = requests.get(url + "/api/v1/terminal/sessions", headers=h, timeout=10)
        assert r.status_code == 200, r.text
        # An upgrade that carries the token asks auth too, then attaches:
        # the terminal's answer, not auth's, decides (a bogus ticket got
        # 101 when the upgrade read auth's answer as Attach's). The 101 of
        # a good ticket is not tried here: its bridge's nng pair socket can
        # hang this gateway's stop (nng #1543, seen in CI; docs/reliability.md).
        r = requests.post(url + "/api/v1/terminal/sessions", headers=h, timeout=10,
                          json={"shell": "/bin/sh"})
        assert r.status_code == 201, r.text
        t = r.json()
        ws_url = f"ws://{url[len('http://'):]}{t['ws_url']}?ticket="
        # The token's own client, as the risk score sees it (docs/api.md).
        bearer_hdr = ["Authorization: " + h["Authorization"],
                      "User-Agent: " + requests.utils.default_user_agent(),
                      "Accept-Encoding: " + requests.utils.default_headers()["Accept-Encoding"]]
        with pytest.raises(websocket.WebSocketBadStatusException) as e:
            websocket.create_connection(ws_url + "x" * 43, header=bearer_hdr,
                                        suppress_origin=True, timeout=10)
        assert e.value.status_code in (401, 403), e.value
        r = requests.post(stack.url + "/api/v1/auth/logout", json={}, headers=h, timeout=5)
        assert r.status_code == 204
        for when in ("at once", "after the silence"):
            got = attempts(url, h, stack.root)
            bad = {k: v for k, v in got.items() if v != 401}
            assert not bad, f"{when}: {got}"
            time.sleep(3.5)
    finally:
        gw.terminate()
        assert gw.wait(timeout=10) == 0
        log.close()


def heartbeat(publisher, seq=0):
    """A heartbeat of common/events.h packed by hand: topic, NUL, and an
    EventEnvelope {publisher = 1, sequence = 2, topic = 3}."""
    def field(num, value):
        return bytes([num << 3 | 2, len(value)]) + value
    body = field(1, publisher.encode())
    if seq:
        body += bytes([2 << 3]) + varint(seq)
    return b"heartbeat\0" + body + field(3, b"heartbeat")


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def test_a_fake_publisher_does_not_make_the_set_current(stack, tmp_path):
    """The subscription hears heartbeats, but not from the auth whose list
    was loaded (a stray or spoofed publisher): still not current, so the
    logged-out token is refused everywhere."""
    fake = tmp_path / "fake-events.sock"
    (tmp_path / "hb.bin").write_bytes(heartbeat("someone-else"))
    pub = subprocess.Popen(["nngcat", "--pub", "--listen", f"ipc://{fake}", "--file",
                            str(tmp_path / "hb.bin"), "--interval", "1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The gateway runs as its own user: let it connect to root's socket.
        assert wait_until(fake.exists, 5)
        fake.chmod(0o666)
        gw, log, url = second_gateway(stack, tmp_path, f"ipc://{fake}")
        try:
            body = login(stack.url)
            h = bearer(body)
            r = requests.post(stack.url + "/api/v1/auth/logout", json={}, headers=h, timeout=5)
            assert r.status_code == 204
            time.sleep(0.5)
            got = attempts(url, h, stack.root)
            assert all(v == 401 for v in got.values()), got
        finally:
            gw.terminate()
            assert gw.wait(timeout=10) == 0
            log.close()
    finally:
        pub.kill()
        pub.wait()


# ---- a huge revoked set ------------------------------------------------------

def test_a_huge_revoked_set_still_loads(tmp_path_factory):
    """40,000 revoked sessions (past the 1 MiB reply limit of one RPC), put
    in auth.db at rest, and the token under test revoked the same way (so no
    event ever tells of it): a gateway starting afterwards must load the
    whole set and refuse the token on a route that trusts its local set."""
    root = make_root()
    tmp = tmp_path_factory.mktemp("huge")
    env = {"MAGNETAR_TERMINAL_ROOTS": str(root), "MAGNETAR_FOUNDER_USERNAME": "founder",
           "MAGNETAR_FOUNDER_PASSWORD": PASSWORD, "MAGNETAR_HIBP_MODE": "off"}
    s = Stack(tmp, env).start()
    try:
        body = login(s.url)
        h = bearer(body)
        assert requests.get(s.url + "/api/v1/terminal/sessions", headers=h,
                            timeout=10).status_code == 200
    finally:
        assert s.stop() == 0, s.logs()
    db = sqlite3.connect(tmp / "var" / "auth" / "auth.db")
    now = int(time.time() * 1000)
    uid = body["user"]["id"]
    db.executemany(
        "INSERT INTO sessions (id, user_id, created_ms, last_seen_ms, refreshed_ms, revoked_ms,"
        " ip, user_agent, fingerprint) VALUES (?, ?, ?, ?, ?, ?, '127.0.0.1', 'x', '')",
        ((os.urandom(16).hex(), uid, now - 1000, now - 1000, now - 1000, now - 500)
         for _ in range(40000)))
    db.execute("UPDATE sessions SET revoked_ms = ? WHERE id = ?", (now, body["session_id"]))
    db.commit()
    db.close()
    s = Stack(tmp, env)
    s.port, s.url = free_port(), None
    s.url = f"http://127.0.0.1:{s.port}"
    s.env["MAGNETAR_HTTP_ADDR"] = f"127.0.0.1:{s.port}"
    s.start()
    try:
        # The route that rests on the local set answers a live session (auth
        # vouches for it while the set is still loading)...
        fresh = bearer(login(s.url))
        r = requests.get(s.url + "/api/v1/terminal/sessions", headers=fresh, timeout=10)
        assert r.status_code == 200, r.text
        # ... the whole set loads and becomes current (40,001 sessions in 10
        # pages; a fresh-machine CI run once took longer than 10 s: the
        # figures say where it stood) ...
        if not wait_until(lambda: s.stats("gateway")["revoked.current"] == 1, 30):
            st = s.stats("gateway")
            raise AssertionError({k: v for k, v in st.items()
                                  if k.startswith(("revoked.", "auth_events.", "rpc_client.auth"))})
        assert s.stats("gateway")["revoked.sessions"] >= 40001
        # ... and, resting on it alone now, refuses the revoked one, which no
        # event ever announced.
        confirms = s.stats("gateway")["revoked.confirms"]
        r = requests.get(s.url + "/api/v1/terminal/sessions", headers=h, timeout=10)
        assert r.status_code == 401, r.text
        r = requests.delete(s.url + "/api/v1/terminal/sessions/x", headers=h, timeout=10)
        assert r.status_code == 401, r.text
        st = s.stats("gateway")
        assert st["revoked.confirms"] == confirms or st["revoked.current"] == 0, st
        assert requests.post(s.url + "/api/v1/terminal/sessions", headers=h, timeout=10,
                             json={"shell": "/bin/sh", "cwd": str(root)}).status_code == 401
        if os.geteuid() == 0:
            # The terminal's one-call Revoked: as much as fits (24576 ids),
            # never one reply past the RPC limit.
            status, reply = auth_call(s, "Revoked", b"", user="magnetar-terminal")
            assert status == 0 and 800_000 < len(reply) < 1 << 20, (status, len(reply))
    finally:
        assert s.stop() == 0, s.logs()
        shutil.rmtree(root, ignore_errors=True)


# ---- admin methods need the user's own token ---------------------------------

def as_user(name):
    pw = pwd.getpwnam(name)
    group = [g for g in os.getgrouplist(name, pw.pw_gid) if g != pw.pw_gid]

    def drop():
        os.setgroups(group)
        os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
        os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
    return drop


def ld(num, value):
    if isinstance(value, str):
        value = value.encode()
    return varint(num << 3 | 2) + varint(len(value)) + value


def auth_call(stack, method, payload, user="magnetar-gateway"):
    """One RpcRequest {method = 1, request_id = 2, payload = 5} to auth, sent
    as the gateway's user would (nngcat under its uid); the RpcReply's
    status (field 1, 0 when absent) and raw bytes."""
    req = ld(1, method) + ld(2, os.urandom(8).hex()) + ld(5, payload)
    path = pathlib.Path(tempfile.mkdtemp(prefix="magrev-rpc-")) / "req.bin"
    path.parent.chmod(0o755)
    path.write_bytes(req)
    path.chmod(0o644)
    try:
        out = subprocess.run(
            ["nngcat", "--req", "--dial", "ipc://" + str(stack.dir / "run" / "auth.sock"),
             "--file", str(path), "--raw", "--recv-timeout", "10"],
            capture_output=True, timeout=20, preexec_fn=as_user(user))
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
    reply = out.stdout
    assert reply, out.stderr
    status = reply[1] if reply[0] == 0x08 else 0
    return status, reply


@pytest.mark.skipif(os.geteuid() != 0, reason="the gateway's uid needs root")
def test_a_bare_session_reference_is_not_an_admin(stack):
    """auth's admin methods, called by the gateway's uid with the founder's
    live (user id, session id), as a compromised gateway could from the
    events it hears, and with no valid access token: refused."""
    body = login(stack.url)
    caller = ld(1, body["user"]["id"]) + ld(2, body["session_id"])
    for method, payload in (
            ("ListUsers", ld(1, caller)),
            ("ListUsers", ld(1, caller) + ld(3, "eyJhbGciOiJFZERTQSJ9.e30.AAAA")),
            ("CreateUser", ld(1, caller) + ld(2, "mallory2") + ld(3, "a long password 12345")
             + ld(4, "admin")),
            ("DeleteUser", ld(1, caller) + ld(2, body["user"]["id"]))):
        status, reply = auth_call(stack, method, payload)
        assert status == 3, (method, status, reply)  # STATUS_UNAUTHENTICATED
    # Through the gateway, with the founder's token, it still works.
    r = requests.get(stack.url + "/api/v1/users", headers=bearer(body), timeout=10)
    assert r.status_code == 200, r.text
    assert "mallory2" not in r.text


# ---- no live session id leaves auth ----------------------------------------

HOME_HEADERS = {"User-Agent": "agent-A", "Accept-Language": "en"}
MOVED_HEADERS = {"User-Agent": "agent-C", "Accept-Language": "de"}  # 0.5 + 0.2: step up


@pytest.mark.skipif(os.geteuid() != 0, reason="the gateway's uid needs root")
def test_a_stepped_up_session_is_never_named_to_gateways(stack, tmp_path):
    """What a gateway hears (session.rebound) and loads (RevokedPage) about a
    session re-bound by a step-up: never its id, which a compromised gateway
    could present to auth as that user's. A gateway started afterwards still
    knows the new binding (by the session's keyed tag)."""
    r = requests.post(stack.url + "/api/v1/auth/login", headers=HOME_HEADERS, timeout=15,
                      json={"username": "founder", "password": PASSWORD})
    assert r.status_code == 200, r.text
    body = r.json()
    sid = body["session_id"].encode()
    moved = dict(MOVED_HEADERS, **bearer(body))
    heard = open(tmp_path / "events.bin", "wb")
    sub = subprocess.Popen(
        ["nngcat", "--sub", "--dial", "ipc://" + str(stack.dir / "run" / "auth-events.sock"),
         "--subscribe", "session.", "--raw"],
        stdout=heard, stderr=subprocess.DEVNULL, preexec_fn=as_user("magnetar-gateway"))
    try:
        time.sleep(0.5)  # subscribed before the step-up
        r = requests.get(stack.url + "/api/v1/auth/me", headers=moved, timeout=10)
        assert r.status_code == 401 and r.json()["error"]["code"] == "step_up_required", r.text
        r = requests.post(stack.url + "/api/v1/auth/step-up", headers=moved, timeout=15,
                          json={"password": PASSWORD})
        assert r.status_code == 204, r.text
        assert wait_until(lambda: b"step_up" in (tmp_path / "events.bin").read_bytes(), 5)
    finally:
        sub.kill()
        sub.wait()
        heard.close()
    assert sid not in (tmp_path / "events.bin").read_bytes()
    status, reply = auth_call(stack, "RevokedPage", b"")
    assert status == 0 and b"step_up" in reply, reply
    assert sid not in reply
    # A gateway that learns the binding from the list alone.
    gw, log, url = second_gateway(stack, tmp_path, "ipc://" + str(stack.dir / "run" /
                                                                   "auth-events.sock"))
    try:
        assert requests.get(url + "/api/v1/auth/me", headers=moved, timeout=10).status_code == 200
        r = requests.get(url + "/api/v1/auth/me", headers=dict(HOME_HEADERS, **bearer(body)),
                         timeout=10)
        assert r.json()["error"]["code"] == "step_up_required", r.text
    finally:
        gw.terminate()
        assert gw.wait(timeout=10) == 0
        log.close()
