"""GET /.well-known/jwks.json (docs/apps.md): a client nobody here wrote,
Debian's PyJWT 2.6 with its PyJWKClient, verifies real access tokens from
the gateway's key set, before and right after `magctl auth rotate-keys`
(no waiting: a token the gateway hands out verifies at once), and the
attacks a verifier relies on the set to stop are stopped: a token signed by
another key under a listed kid, a set with private material in it, a
cacheable answer that lags a rotation for longer than it says."""
import base64
import json
import os
import pathlib
import re
import secrets
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt import PyJWKClient

from conftest import Stack

PW = "jwks-tested-password-7"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("jwks"), {"MAGNETAR_HIBP_MODE": "off"}).start()
    yield s
    assert s.stop() == 0, s.logs()


def b64url(raw):
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))


def kid_of(token):
    return json.loads(b64url(token.split(".")[0]))["kid"]


def login(stack, name):
    r = requests.post(stack.url + "/api/v1/auth/login", timeout=15,
                      json={"username": name, "password": PW})
    assert r.status_code == 200, r.text
    return r.json()


def user(stack, name):
    r = requests.post(stack.url + "/api/v1/auth/register", timeout=15,
                      json={"username": name, "password": PW})
    assert r.status_code == 201, r.text


def jwks(stack):
    return requests.get(stack.url + "/.well-known/jwks.json", timeout=5)


def verify(client, token):
    key = client.get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["EdDSA"])


def test_the_set_is_rfc8037_public_keys_with_a_short_cache(stack):
    r = jwks(stack)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers["Cache-Control"] == "public, max-age=60"
    # Still an answer of this gateway: its security headers are all there.
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" in r.headers
    keys = r.json()["keys"]
    assert len(keys) >= 1
    for k in keys:
        assert set(k) == {"kty", "crv", "kid", "use", "alg", "x"}, k  # never "d"
        assert (k["kty"], k["crv"], k["use"], k["alg"]) == ("OKP", "Ed25519", "sig", "EdDSA")
        assert len(b64url(k["x"])) == 32 and "=" not in k["x"]
    assert len({k["kid"] for k in keys}) == len(keys)


def test_only_get(stack):
    r = requests.post(stack.url + "/.well-known/jwks.json", timeout=5)
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"


def test_pyjwt_verifies_tokens_across_a_rotation(stack):
    user(stack, "jwksuser")
    before = login(stack, "jwksuser")
    client = PyJWKClient(stack.url + "/.well-known/jwks.json")
    claims = verify(client, before["access_token"])
    assert claims["sub"] == before["user"]["id"]
    assert claims["sid"] == before["session_id"]
    assert claims["role"] == "member"

    out = stack.magctl("auth", "rotate-keys")
    assert out.returncode == 0, out.stdout + out.stderr
    # No wait: the login that follows the rotation hands out a token signed
    # by the new key, and the set the client fetches already has it.
    after = login(stack, "jwksuser")
    assert kid_of(after["access_token"]) != kid_of(before["access_token"])
    # The same client holds a cached set without the new kid: it fetches
    # again (as any JWKS client must), finds the key, verifies.
    assert verify(client, after["access_token"])["sid"] == after["session_id"]
    # The retired key stays published while its tokens live.
    assert verify(client, before["access_token"])["sid"] == before["session_id"]
    kids = {k["kid"] for k in jwks(stack).json()["keys"]}
    assert {kid_of(before["access_token"]), kid_of(after["access_token"])} <= kids
    # And the gateway itself takes the new token at once.
    me = requests.get(stack.url + "/api/v1/auth/me", timeout=5,
                      headers={"Authorization": "Bearer " + after["access_token"]})
    assert me.status_code == 200, me.text


def test_a_token_signed_by_another_key_under_a_listed_kid_is_refused(stack):
    user(stack, "jwksforger")
    real = login(stack, "jwksforger")["access_token"]
    header = json.loads(b64url(real.split(".")[0]))
    payload = json.loads(b64url(real.split(".")[1]))
    payload["role"] = "admin"
    forged = jwt.encode(payload, Ed25519PrivateKey.generate(), algorithm="EdDSA",
                        headers={"kid": header["kid"]})
    client = PyJWKClient(stack.url + "/.well-known/jwks.json")
    with pytest.raises(jwt.InvalidSignatureError):
        verify(client, forged)
    # The gateway agrees with the published set.
    me = requests.get(stack.url + "/api/v1/auth/me", timeout=5,
                      headers={"Authorization": "Bearer " + forged})
    assert me.status_code == 401


def test_a_rotation_no_event_announced_still_verifies_at_once(stack):
    """Another auth replica rotated and its keys.rotated event was lost: the
    replica here reloads signing.keys before it signs, the gateway has not
    heard. The token it hands out must still verify from its JWKS at once
    (and not only after the gateway's next minute-long refresh)."""
    user(stack, "jwkssilent")
    path = next(stack.dir.glob("var/**/signing.keys"))
    st = path.stat()
    lines = path.read_text().splitlines()
    now = int(time.time())
    kid, seed, created, _ = lines[-1].split()
    lines[-1] = f"{kid} {seed} {created} {now}"
    new_kid = secrets.token_hex(8)
    new_seed = base64.b64encode(os.urandom(32)).decode()
    lines.append(f"{new_kid} {new_seed} {now} 0")
    tmp = path.with_name("signing.keys.test.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.chown(tmp, st.st_uid, st.st_gid)
    tmp.chmod(0o600)
    tmp.replace(path)

    t = login(stack, "jwkssilent")["access_token"]
    assert kid_of(t) == new_kid
    client = PyJWKClient(stack.url + "/.well-known/jwks.json")
    assert verify(client, t)["sub"]


def test_the_example_in_docs_apps_md_runs_as_written(stack):
    """docs/apps.md's verifier, taken from the document itself (only the
    host changed), verifies a real token."""
    doc = (pathlib.Path(__file__).parents[2] / "docs" / "apps.md").read_text()
    code = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    assert "https://magnetar.example" in code
    scope = {}
    exec(code.replace("https://magnetar.example", stack.url), scope)  # noqa: S102
    user(stack, "jwksdoc")
    t = login(stack, "jwksdoc")
    assert scope["user_of"](t["access_token"]) == (t["user"]["id"], "member", t["session_id"])
