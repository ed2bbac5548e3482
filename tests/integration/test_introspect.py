"""POST /api/v1/auth/introspect (RFC 7662, docs/apps.md), through the real
gateway and auth: a client registered with `magctl client create` learns
whether a token's session is alive; logged-out, revoked, expired (validly
signed) and forged tokens read `{"active": false}`; unknown, wrong,
rotated-away and deleted clients are refused as `invalid_client` and
throttled; every call is audited under the client's name; no secret
reaches the log."""
import base64
import json
import os
import pathlib
import re
import subprocess
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import Stack, wait_until

PW = "introspection-password-4"
URL = "/api/v1/auth/introspect"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("introspect"), {"MAGNETAR_HIBP_MODE": "off"}).start()
    yield s
    assert s.stop() == 0, s.logs()
    assert "ERROR: AddressSanitizer" not in s.full_log(), s.logs()
    assert "runtime error:" not in s.full_log(), s.logs()


def client(stack, verb, name):
    out = stack.magctl("client", verb, name)
    assert out.returncode == 0, out.stdout + out.stderr
    fields = dict(line.split("=", 1) for line in out.stdout.splitlines())
    assert fields["client_id"] == name
    return fields["client_secret"]


def user(stack, name):
    r = requests.post(stack.url + "/api/v1/auth/register", timeout=15,
                      json={"username": name, "password": PW})
    assert r.status_code == 201, r.text
    r = requests.post(stack.url + "/api/v1/auth/login", timeout=15,
                      json={"username": name, "password": PW})
    assert r.status_code == 200, r.text
    return r.json()


def introspect(stack, token, auth, **kw):
    return requests.post(stack.url + URL, data={"token": token, **kw}, auth=auth, timeout=15)


@pytest.fixture(scope="module")
def svc(stack):
    return ("orders", client(stack, "create", "orders"))


def test_a_live_token_reads_its_user_session_expiry_and_risk(stack, svc):
    t = user(stack, "intro-live")
    r = introspect(stack, t["access_token"], svc, token_type_hint="access_token")
    assert r.status_code == 200, r.text
    assert r.headers["Cache-Control"] == "no-store"
    body = r.json()
    assert body["active"] is True
    assert body["sub"] == t["user"]["id"]
    assert body["username"] == "intro-live"
    assert body["role"] == "member"
    assert body["session_id"] == body["sid"] == t["session_id"]
    assert body["token_type"] == "Bearer"
    assert body["exp"] - body["iat"] == 900
    assert abs(body["iat"] - time.time()) < 60
    assert body["risk_band"] == "low" and body["risk_score"] == 0


def test_logged_out_and_revoked_tokens_are_inactive_at_once(stack, svc):
    a = user(stack, "intro-out")
    r = requests.post(stack.url + "/api/v1/auth/logout", timeout=15,
                      headers={"Authorization": "Bearer " + a["access_token"]})
    assert r.status_code == 204, r.text
    r = introspect(stack, a["access_token"], svc)
    assert r.status_code == 200 and r.json() == {"active": False}, r.text

    b = user(stack, "intro-revoked")
    assert introspect(stack, b["access_token"], svc).json()["active"] is True
    out = stack.magctl("session", "revoke", b["session_id"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert introspect(stack, b["access_token"], svc).json() == {"active": False}


def signing_key(stack):
    """The current signing key, read as an attacker with the data dir would."""
    path = next(stack.dir.glob("var/**/signing.keys"))
    kid, seed, _, _ = path.read_text().splitlines()[-1].split()
    return kid, Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed)[:32])


def test_an_expired_token_with_a_valid_signature_is_inactive(stack, svc):
    t = user(stack, "intro-expired")
    claims = json.loads(base64.urlsafe_b64decode(t["access_token"].split(".")[1] + "=="))
    kid, key = signing_key(stack)
    now = int(time.time())
    claims.update(iat=now - 1000, exp=now - 100)
    expired = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})
    # Same key, same session, only the time changed: the signature is good.
    claims.update(iat=now, exp=now + 900)
    fresh = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})
    assert introspect(stack, fresh, svc).json()["active"] is True
    assert introspect(stack, expired, svc).json() == {"active": False}


def test_forged_and_garbage_tokens_are_inactive(stack, svc):
    t = user(stack, "intro-forged")
    claims = json.loads(base64.urlsafe_b64decode(t["access_token"].split(".")[1] + "=="))
    kid = json.loads(base64.urlsafe_b64decode(t["access_token"].split(".")[0] + "=="))["kid"]
    claims["role"] = "admin"
    forged = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA",
                        headers={"kid": kid})
    for token in (forged, "garbage", "a.b.c", t["refresh_token"], "x" * 5000):
        r = introspect(stack, token, svc)
        assert r.status_code == 200 and r.json() == {"active": False}, (token[:20], r.text)


def test_unknown_wrong_rotated_and_deleted_clients_are_refused(stack, svc):
    t = user(stack, "intro-clients")["access_token"]
    secret = client(stack, "create", "billing")

    def refused(auth, **kw):
        r = introspect(stack, t, auth, **kw) if auth is not None else \
            requests.post(stack.url + URL, data={"token": t}, timeout=15, **kw)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "invalid_client"
        assert r.headers["WWW-Authenticate"].startswith("Basic")
        assert "active" not in r.text

    assert introspect(stack, t, ("billing", secret)).status_code == 200
    refused(("nobody", secret))
    refused(("billing", secret[:-1] + ("A" if secret[-1] != "A" else "B")))
    refused(None)
    refused(None, headers={"Authorization": "Bearer " + t})
    refused(None, headers={"Authorization": "Basic !!!!"})
    refused(None, headers={"Authorization": "Basic " + base64.b64encode(b"billing").decode()})

    fresh = client(stack, "rotate", "billing")
    assert fresh != secret
    refused(("billing", secret))  # the memo of the old secret must not survive
    assert introspect(stack, t, ("billing", fresh)).json()["active"] is True

    assert stack.magctl("client", "delete", "billing").returncode == 0
    refused(("billing", fresh))
    assert stack.magctl("client", "delete", "billing").returncode == 1
    listed = stack.magctl("client", "list").stdout
    assert "orders" in listed and "billing" not in listed


def test_a_taken_name_and_a_bad_name_are_refused(stack, svc):
    out = stack.magctl("client", "create", "orders")
    assert out.returncode == 1 and "client_secret" not in out.stdout
    out = stack.magctl("client", "create", "Bad Name!")
    assert out.returncode == 1 and "client_secret" not in out.stdout
    assert stack.magctl("client", "rotate", "no-such-client").returncode == 1


def test_a_bad_body_is_a_clear_error(stack, svc):
    t = user(stack, "intro-body")["access_token"]
    r = requests.post(stack.url + URL, json={"token": t}, auth=svc, timeout=15)
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    for body in ("", "token_type_hint=access_token", f"token={t}&token={t}"):
        r = requests.post(stack.url + URL, data=body, auth=svc, timeout=15,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 400, (body[:30], r.text)
        assert r.json()["error"]["code"] == "invalid_request"
    assert requests.get(stack.url + URL, timeout=15).status_code == 405


def test_every_call_is_audited_by_client_and_no_secret_is_logged(stack, svc):
    t = user(stack, "intro-audit")
    r = introspect(stack, t["access_token"], svc)
    assert r.status_code == 200

    def audited():
        out = stack.magctl("audit", "query", "--actor", "client:orders", "--limit", "1000")
        return [ln for ln in out.stdout.splitlines() if t["session_id"] in ln]
    lines = wait_until(audited, 15)
    assert lines and "auth.introspect" in lines[0], lines

    def refused():
        out = stack.magctl("audit", "query", "--actor", "client:nobody", "--limit", "10")
        return [ln for ln in out.stdout.splitlines() if "auth.introspect" in ln]
    assert wait_until(refused, 15)
    log = stack.full_log()
    assert svc[1] not in log
    assert t["access_token"] not in log


def test_the_curl_example_in_docs_apps_md_runs_as_written(stack, svc):
    """docs/apps.md's call, taken from the document (only the host
    changed), with its $SECRET and $ACCESS_TOKEN from a real client and
    session."""
    doc = (pathlib.Path(__file__).parents[2] / "docs" / "apps.md").read_text()
    block = re.search(r"\n    (curl -u orders:.*?)\n\n", doc, re.S).group(1)
    cmd = block.replace("\\\n", " ").replace("https://magnetar.example", stack.url)
    t = user(stack, "intro-doc")
    env = dict(os.environ, SECRET=svc[1],
               ACCESS_TOKEN=t["access_token"])
    out = subprocess.run(["bash", "-c", cmd + " -s"], env=env, capture_output=True,
                         text=True, timeout=30)
    body = json.loads(out.stdout)
    assert body["active"] is True and body["session_id"] == t["session_id"], out


def test_a_deleted_users_token_is_inactive(stack, svc):
    t = user(stack, "intro-deleted")
    assert introspect(stack, t["access_token"], svc).json()["active"] is True
    assert stack.magctl("user", "delete", "intro-deleted").returncode == 0
    assert introspect(stack, t["access_token"], svc).json() == {"active": False}


def test_a_nul_inside_the_token_is_not_cut_short(stack, svc):
    """`token=<valid>%00junk` must be judged whole (inactive), not as the
    valid token before the NUL."""
    t = user(stack, "intro-nul")["access_token"]
    r = requests.post(stack.url + URL, data=f"token={t}%00junk", auth=svc, timeout=15,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json() == {"active": False}, r.text


def test_the_risk_band_follows_what_the_gateway_reported(stack, svc):
    """The session's recorded score and band, as docs/api.md's weights make
    them: another User-Agent 0.5 (elevated), and other headers too 0.7
    (step_up); printed as /me prints them."""
    ua = {"User-Agent": "intro-risk/1"}
    r = requests.post(stack.url + "/api/v1/auth/register", timeout=15, headers=ua,
                      json={"username": "intro-risk", "password": PW})
    assert r.status_code == 201, r.text
    t = requests.post(stack.url + "/api/v1/auth/login", timeout=15, headers=ua,
                      json={"username": "intro-risk", "password": PW}).json()
    bearer = {"Authorization": "Bearer " + t["access_token"]}

    def band(score, name):
        def seen():
            r = introspect(stack, t["access_token"], svc)
            return r.json().get("risk_band") == name and f'"risk_score":{score}' in r.text
        return wait_until(seen, 5)

    me = requests.get(stack.url + "/api/v1/auth/me", timeout=15,
                      headers={**bearer, "User-Agent": "someone-else/2"})
    assert me.status_code == 200, me.text
    assert band("0.5", "elevated")
    me = requests.get(stack.url + "/api/v1/auth/me", timeout=15,
                      headers={**bearer, "User-Agent": "someone-else/2",
                               "Accept-Language": "xx"})
    assert me.status_code == 401 and me.json()["error"]["code"] == "step_up_required"
    assert band("0.7", "step_up")


@pytest.fixture
def own_stack(tmp_path):
    """A stack of its own: the throttle counts failures per network too, and
    this test's would throttle the module's other tests from 127.0.0.1."""
    s = Stack(tmp_path, {"MAGNETAR_HIBP_MODE": "off"}).start()
    yield s
    assert s.stop() == 0, s.logs()
    assert "ERROR: AddressSanitizer" not in s.full_log(), s.logs()
    assert "runtime error:" not in s.full_log(), s.logs()


def test_malformed_credentials_are_throttled_and_audited_without_their_bytes(own_stack):
    stack = own_stack
    codes = [introspect(stack, "x", ("Bad\x01Name\nX", "s")).status_code for _ in range(8)]
    assert codes[:5] == [401] * 5 and 429 in codes, codes
    # Every malformed id shares that one count: an oversized one is throttled at once.
    assert introspect(stack, "x", ("x" * 33, "s")).status_code == 429
    # A well-formed name with a malformed (oversized) secret counts for that name.
    codes = [introspect(stack, "x", ("toolong", "s" * 129)).status_code for _ in range(8)]
    assert codes[:5] == [401] * 5 and 429 in codes, codes

    def audited(actor):
        out = stack.magctl("audit", "query", "--actor", actor, "--limit", "100")
        return [ln for ln in out.stdout.splitlines() if "auth.introspect" in ln]
    assert wait_until(lambda: len(audited("client:?")) >= 5, 15), audited("client:?")
    assert wait_until(lambda: len(audited("client:toolong")) >= 5, 15)
    assert not any("toolong" in ln for ln in audited("client:?"))
    out = stack.magctl("audit", "query", "--limit", "1000").stdout
    assert "Bad" not in out and "\x01" not in out and "x" * 33 not in out


def test_guessing_a_clients_secret_is_throttled(own_stack):
    stack = own_stack
    client(stack, "create", "guessed")
    codes = [introspect(stack, "x", ("guessed", "guess-%d" % i)).status_code
             for i in range(12)]
    assert codes[:5] == [401] * 5, codes
    assert 429 in codes, codes
