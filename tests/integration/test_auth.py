"""The /api/v1/auth routes through the real gateway and auth service:
docs/api.md's status codes, error codes and shapes; refresh rotation and re-use;
the session limit; logout reaching a second gateway at once; JWT attacks;
and no password or token in any log line."""
import base64
import json
import subprocess
import time

import pytest
import requests

from conftest import BIN, Stack, free_port, wait_until

PASSWORD = "canary-Pa55word-7f3a"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # Breach checks are covered by test_password_breach.py; here they are off.
    s = Stack(tmp_path_factory.mktemp("auth"), {"MAGNETAR_HIBP_MODE": "off"}).start()
    yield s
    assert s.stop() == 0, s.logs()


def post(stack, path, body, token=None, headers=None):
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    h.update(headers or {})
    return requests.post(stack.url + path, data=json.dumps(body), headers=h, timeout=15)


def get(stack, path, token=None, headers=None):
    h = dict(headers or {})
    if token:
        h["Authorization"] = "Bearer " + token
    return requests.get(stack.url + path, headers=h, timeout=15)


def register(stack, name, password=PASSWORD):
    return post(stack, "/api/v1/auth/register", {"username": name, "password": password})


def login(stack, name, password=PASSWORD, headers=None):
    return post(stack, "/api/v1/auth/login", {"username": name, "password": password},
                headers=headers)


def error_code(r):
    return r.json()["error"]["code"]


def test_register_contract(stack):
    r = register(stack, "Alice")
    assert r.status_code == 201
    user = r.json()["user"]
    assert set(user) == {"id", "username", "role"}
    assert user["username"] == "alice" and user["role"] == "member"
    # Alice and alice are one account.
    r = register(stack, "ALICE")
    assert (r.status_code, error_code(r)) == (409, "username_taken")
    r = register(stack, "bob", "1234567")
    assert (r.status_code, error_code(r)) == (422, "password_too_short")
    r = register(stack, "bob", "x" * 129)
    assert (r.status_code, error_code(r)) == (422, "password_too_long")
    assert register(stack, "bob", "é" * 64).status_code == 201  # 128 bytes of UTF-8


def test_bodies_are_parsed_strictly(stack):
    url = stack.url + "/api/v1/auth/register"
    cases = [
        ({"Content-Type": "text/plain"}, b'{"username":"carl","password":"long enough"}', 415),
        ({}, b'{"username":"carl","password":"long enough"}', 415),
        ({"Content-Type": "application/json"}, b'{"username":"carl",', 400),
        ({"Content-Type": "application/json"},
         b'{"username":"carl","username":"root","password":"long enough"}', 400),
        ({"Content-Type": "application/json"},
         b'{"username":"carl","password":"long enough","role":"founder"}', 400),
        ({"Content-Type": "application/json"}, b'{"username":7,"password":"long enough"}', 400),
        ({"Content-Type": "application/json"}, b'["carl"]', 400),
        ({"Content-Type": "application/json"}, b'{"username":"carl","password":"long enough"}x',
         400),
    ]
    for headers, body, status in cases:
        r = requests.post(url, data=body, headers=headers, timeout=5)
        assert r.status_code == status, (body, r.text)
        want = "unsupported_media_type" if status == 415 else "invalid_request"
        assert error_code(r) == want
    r = requests.post(url, data=b'{"username":"carl","password":"long enough"}',
                      headers={"Content-Type": "application/json; charset=utf-8"}, timeout=5)
    assert r.status_code == 201


def test_login_shape_and_me(stack):
    register(stack, "dora")
    r = login(stack, "Dora", headers={"User-Agent": "pytest-agent/1",
                                      "Accept-Language": "en"})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token",
                         "session_id", "user"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    # 256-bit refresh token, base64url.
    assert len(base64.urlsafe_b64decode(body["refresh_token"] + "=")) == 32
    me = get(stack, "/api/v1/auth/me", body["access_token"],
             {"User-Agent": "pytest-agent/1"})
    assert me.status_code == 200, (me.text, stack.logs()[-3000:])
    m = me.json()
    assert set(m["user"]) == {"id", "username", "role", "totp_enabled"}
    assert set(m["session"]) == {"id", "created_at", "last_seen_at", "ip", "user_agent",
                                 "risk_score"}
    assert m["session"]["id"] == body["session_id"]
    assert m["session"]["ip"] == "127.0.0.1"
    assert m["session"]["user_agent"] == "pytest-agent/1"
    assert m["session"]["created_at"].endswith("Z")
    assert me.headers["Cache-Control"] == "no-store"


def test_same_answer_for_unknown_user_and_wrong_password(stack):
    register(stack, "erin")
    a = login(stack, "erin", "wrong password!!")
    b = login(stack, "nobody-here", "wrong password!!")
    assert a.status_code == b.status_code == 401
    assert error_code(a) == error_code(b) == "invalid_credentials"
    assert a.json()["error"]["message"] == b.json()["error"]["message"]


def test_missing_and_bad_tokens_are_401(stack):
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "},
                    {"Authorization": "Bearer not.a.token"}):
        r = requests.get(stack.url + "/api/v1/auth/me", headers=headers, timeout=5)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert error_code(r) == "unauthorized"


def b64(obj):
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_jwt_attacks(stack):
    register(stack, "frank")
    token = login(stack, "frank").json()["access_token"]
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    header = json.loads(base64.urlsafe_b64decode(head + "=="))
    forged_admin = dict(claims, role="founder")
    attacks = [
        # alg none, unsigned
        b64({"alg": "none", "kid": header["kid"]}) + "." + payload + ".",
        # alg none keeping the signature
        b64({"alg": "none", "kid": header["kid"]}) + "." + payload + "." + sig,
        # HS256 "signed" with anything
        b64({"alg": "HS256", "kid": header["kid"]}) + "." + payload + "." + sig,
        # tampered payload (role escalation) with the original signature
        head + "." + b64(forged_admin) + "." + sig,
        # unknown kid
        b64({"alg": "EdDSA", "kid": "nope"}) + "." + payload + "." + sig,
        # trailing garbage
        token + "x",
        token + ".e30",
        # expired claims (signature no longer matches either)
        head + "." + b64(dict(claims, exp=claims["iat"] - 1)) + "." + sig,
    ]
    for bad in attacks:
        r = get(stack, "/api/v1/auth/me", bad)
        assert r.status_code == 401, bad
    assert get(stack, "/api/v1/auth/me", token).status_code == 200


def test_refresh_rotates_and_reuse_revokes(stack):
    register(stack, "gina")
    first = login(stack, "gina").json()
    r = post(stack, "/api/v1/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert r.status_code == 200
    second = r.json()
    assert second["session_id"] == first["session_id"]
    assert second["refresh_token"] != first["refresh_token"]
    # The spent token again: 401 refresh_token_reused, and the session is gone.
    r = post(stack, "/api/v1/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert (r.status_code, error_code(r)) == (401, "refresh_token_reused")
    r = post(stack, "/api/v1/auth/refresh", {"refresh_token": second["refresh_token"]})
    assert (r.status_code, error_code(r)) == (401, "invalid_refresh_token")
    assert wait_until(lambda: get(stack, "/api/v1/auth/me",
                                  second["access_token"]).status_code == 401, 2)
    r = post(stack, "/api/v1/auth/refresh", {"refresh_token": "made-up"})
    assert (r.status_code, error_code(r)) == (401, "invalid_refresh_token")


def test_fourth_login_revokes_the_oldest(stack):
    register(stack, "hank")
    logins = [login(stack, "hank").json() for _ in range(4)]
    assert wait_until(lambda: get(stack, "/api/v1/auth/me",
                                  logins[0]["access_token"]).status_code == 401, 2)
    r = get(stack, "/api/v1/auth/sessions", logins[3]["access_token"])
    assert r.status_code == 200
    sessions = r.json()["sessions"]
    assert len(sessions) == 3
    ids = {s["id"] for s in sessions}
    assert logins[0]["session_id"] not in ids
    assert [s["current"] for s in sessions if s["id"] == logins[3]["session_id"]] == [True]
    assert set(sessions[0]) == {"id", "created_at", "last_seen_at", "ip", "user_agent",
                                "current"}


def test_revoke_own_session_and_not_others(stack):
    register(stack, "ivy")
    register(stack, "jack")
    a1 = login(stack, "ivy").json()
    a2 = login(stack, "ivy").json()
    j = login(stack, "jack").json()
    r = requests.delete(stack.url + "/api/v1/auth/sessions/" + j["session_id"],
                        headers={"Authorization": "Bearer " + a1["access_token"]}, timeout=5)
    assert (r.status_code, error_code(r)) == (404, "not_found")
    assert get(stack, "/api/v1/auth/me", j["access_token"]).status_code == 200
    r = requests.delete(stack.url + "/api/v1/auth/sessions/" + a2["session_id"],
                        headers={"Authorization": "Bearer " + a1["access_token"]}, timeout=5)
    assert r.status_code == 204
    assert wait_until(lambda: get(stack, "/api/v1/auth/me",
                                  a2["access_token"]).status_code == 401, 2)
    # A path parameter that is not an id is no route at all.
    r = requests.delete(stack.url + "/api/v1/auth/sessions/..%2F..", timeout=5)
    assert r.status_code == 404


def test_logout_reaches_a_second_gateway_within_100ms(stack, tmp_path):
    """Two gateways: a logout through one is refused by the other at once,
    from its own revocation set (auth.events), not by asking auth."""
    port = free_port()
    env = dict(stack.env, MAGNETAR_HTTP_ADDR=f"127.0.0.1:{port}",
               MAGNETAR_GATEWAY_URL="ipc://" + str(tmp_path / "gw2.sock"))
    log = open(tmp_path / "gw2.log", "wb")
    gw2 = subprocess.Popen([str(BIN / "magnetar-gateway")], env=env, stdout=log,
                           stderr=subprocess.STDOUT)
    url2 = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: requests.get(url2 + "/readyz", timeout=2).status_code == 200,
                          10)
        register(stack, "kate")
        t = login(stack, "kate").json()["access_token"]
        me2 = lambda: requests.get(url2 + "/api/v1/auth/me", timeout=5,  # noqa: E731
                                   headers={"Authorization": "Bearer " + t})
        assert wait_until(lambda: me2().status_code == 200, 5)
        assert post(stack, "/api/v1/auth/logout", {}, t).status_code == 204
        t0 = time.monotonic()
        assert wait_until(lambda: me2().status_code == 401, 2, interval=0.005)
        assert time.monotonic() - t0 < 0.1 + 0.05  # 100 ms, plus our own polling
        # And the second gateway learnt it from auth.events (its own set), not
        # only by asking auth: its refusal message says so.
        assert wait_until(lambda: me2().json()["error"]["message"] ==
                          "The session has been revoked.", 2)
    finally:
        gw2.terminate()
        assert gw2.wait(timeout=10) == 0
        log.close()


def heartbeat(publisher):
    """A heartbeat of common/events.h, packed by hand: topic, NUL, and an
    EventEnvelope {publisher = 1, topic = 3} (sequence 0, empty payload)."""
    def field(num, value):
        return bytes([num << 3 | 2, len(value)]) + value
    return b"heartbeat\0" + field(1, publisher.encode()) + field(3, b"heartbeat")


def test_own_logout_is_refused_at_once_even_when_auths_event_is_lost(stack, tmp_path):
    """A gateway whose auth.events carry heartbeats but never a revocation
    (an event lost, unnoticed until a later heartbeat): the logout and the
    session revocation it answered itself with 204 are refused at once, and
    the cached /me is not served again."""
    fake = tmp_path / "fake-events.sock"
    # Auth's own instance id: the gateway trusts its revoked set only while
    # it hears the publisher it loaded the set from.
    instance = stack.magctl("ping", "auth").stdout.split("instance=")[1].split()[0]
    (tmp_path / "hb.bin").write_bytes(heartbeat(instance))
    pub = subprocess.Popen(["nngcat", "--pub", "--listen", f"ipc://{fake}", "--file",
                            str(tmp_path / "hb.bin"), "--interval", "1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # The gateway runs as its own user: let it connect to root's socket.
    assert wait_until(fake.exists, 5)
    fake.chmod(0o666)
    port = free_port()
    env = dict(stack.env, MAGNETAR_HTTP_ADDR=f"127.0.0.1:{port}",
               MAGNETAR_GATEWAY_URL="ipc://" + str(tmp_path / "gw3.sock"),
               MAGNETAR_AUTH_EVENTS_URL=f"ipc://{fake}")
    log = open(tmp_path / "gw3.log", "wb")
    gw = subprocess.Popen([str(BIN / "magnetar-gateway")], env=env, stdout=log,
                          stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def me(token):
        return requests.get(url + "/api/v1/auth/me", timeout=5,
                            headers={"Authorization": "Bearer " + token})
    try:
        assert wait_until(lambda: requests.get(url + "/readyz", timeout=2).status_code == 200,
                          10)
        register(stack, "olga")
        first, second = (login(stack, "olga").json() for _ in range(2))
        calls = lambda: stack.stats("auth")["rpc.Me.calls"]  # noqa: E731
        # The cache fills once the fake publisher's heartbeats made the
        # revocation set current: two answers without a Me call between.
        def cached():
            before = calls()
            return me(first["access_token"]).status_code == 200 and \
                me(first["access_token"]).status_code == 200 and calls() == before
        assert wait_until(cached, 10), (tmp_path / "gw3.log").read_text(errors="replace")
        r = requests.post(url + "/api/v1/auth/logout", json={}, timeout=5,
                          headers={"Authorization": "Bearer " + first["access_token"]})
        assert r.status_code == 204
        r = me(first["access_token"])
        assert r.status_code == 401, r.text  # not the cached 200
        assert error_code(r) == "unauthorized"
        assert me(second["access_token"]).status_code == 200
        r = requests.delete(url + "/api/v1/auth/sessions/" + second["session_id"], timeout=5,
                            headers={"Authorization": "Bearer " + second["access_token"]})
        assert r.status_code == 204
        r = me(second["access_token"])
        assert r.status_code == 401, r.text
    finally:
        gw.terminate()
        assert gw.wait(timeout=10) == 0
        pub.kill()
        pub.wait()
        log.close()


def test_no_secret_in_logs(stack):
    register(stack, "leo")
    body = login(stack, "leo").json()
    post(stack, "/api/v1/auth/refresh", {"refresh_token": body["refresh_token"]})
    login(stack, "leo", "wrong-" + PASSWORD)
    time.sleep(0.3)
    logs = stack.log_path.read_text(errors="replace")
    for secret in (PASSWORD, body["access_token"], body["refresh_token"],
                   body["access_token"].split(".")[2]):
        assert secret not in logs


def test_me_is_answered_without_an_rpc_and_invalidated_by_events(stack):
    register(stack, "nina")
    t = login(stack, "nina").json()["access_token"]
    before = stack.stats("auth")["rpc.Me.calls"]
    for _ in range(50):
        assert get(stack, "/api/v1/auth/me", t).status_code == 200
    # One RPC filled the gateway's cache; the other 49 needed none.
    assert stack.stats("auth")["rpc.Me.calls"] - before <= 2
    # Logout reaches the cache through auth.events: no stale 200.
    heard = stack.stats("gateway")["auth_events.events"]
    assert post(stack, "/api/v1/auth/logout", {}, t).status_code == 204
    assert wait_until(lambda: get(stack, "/api/v1/auth/me", t).status_code == 401, 1)
    # The gateway counts what its subscription heard (magctl stats).
    assert wait_until(lambda: stack.stats("gateway")["auth_events.events"] > heard, 2)
    assert wait_until(lambda: stack.stats("gateway")["auth_events.heartbeats"] > 0, 3)
