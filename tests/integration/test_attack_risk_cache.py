"""The risk-score cache under attack (issue 16, item 10): the gateway keeps
the score it computed for a request context (IP, User-Agent, fingerprint
headers) and a session's binding, found again by a hash of that context
(gateway/authn_risk.c). With an unkeyed hash (FNV-1a) a thief holding a stolen token can
send a User-Agent and Accept-Language of their own that hash like the
owner's, and be served on the owner's cached score of 0 instead of having
to step up. The pair below collides under FNV-1a-64 (found offline by
tests/integration/fnv_collide.py); under a keyed hash it is just two contexts."""
import http.client
import json

import pytest

from conftest import Stack

PW = "risk-cache-password-4"
OWNER = {"User-Agent": "magnetar-test/&!!@!!!!!!", "Accept-Language": "!!!#!!@!"}
THIEF = {"User-Agent": "magnetar-test/'a&Ae$=~.f", "Accept-Language": "&-c#|.D'"}
M, P, OFF = 1 << 64, 0x100000001B3, 1469598103934665603


def fnv(data):
    h = OFF
    for c in data:
        h = ((h ^ c) * P) % M
    return h


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("riskcache"), {"MAGNETAR_HIBP_MODE": "off"}).start()
    yield s
    assert s.stop() == 0, s.logs()


def request(stack, method, path, body=None, token=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=15)
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    h.update(headers or {})
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, (json.loads(data) if data else None)


def test_the_pair_collides_under_the_old_hash():
    """What the old cache hashed: IP, NUL, User-Agent, NUL, the fingerprint
    headers joined by newlines (whatever follows Accept-Language is the same
    for both, so equal states stay equal)."""
    def ctx(h):
        return fnv(b"127.0.0.1\0" + h["User-Agent"].encode() + b"\0" +
                   h["Accept-Language"].encode() + b"\nidentity\n\n\n")
    assert OWNER != THIEF and ctx(OWNER) == ctx(THIEF)


def test_a_colliding_context_does_not_inherit_the_owners_score(stack):
    request(stack, "POST", "/api/v1/auth/register", {"username": "owner", "password": PW},
            headers=OWNER)
    status, body = request(stack, "POST", "/api/v1/auth/login",
                           {"username": "owner", "password": PW}, headers=OWNER)
    assert status == 200, body
    token = body["access_token"]
    # The owner's request: scored 0 and cached for this token.
    status, _ = request(stack, "GET", "/api/v1/auth/me", token=token, headers=OWNER)
    assert status == 200
    # The thief, with the stolen token: another User-Agent (50) and
    # Accept-Language (20) is 70, a step-up, however the hashes fall.
    status, body = request(stack, "GET", "/api/v1/auth/me", token=token, headers=THIEF)
    assert status == 401 and body["error"]["code"] == "step_up_required", (status, body)
