"""Brute force (docs/api.md "Limits"): failed logins are limited per account and
client network with growing delays (429 too_many_attempts + Retry-After),
and an attacker's failures never lock the owner out from another network."""
import http.client
import json

import pytest

from conftest import Stack

PW = "owner-password-for-bf"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("bf"), {"MAGNETAR_HIBP_MODE": "off"}).start()
    yield s
    assert s.stop() == 0, s.logs()


def login(stack, password, source):
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=15,
                                      source_address=(source, 0))
    conn.request("POST", "/api/v1/auth/login",
                 body=json.dumps({"username": "wendy", "password": password}),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    body = json.loads(r.read())
    retry = r.getheader("Retry-After")
    conn.close()
    return r.status, body, retry


def test_attacker_is_slowed_and_owner_is_not_locked_out(stack):
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=15)
    conn.request("POST", "/api/v1/auth/register",
                 body=json.dumps({"username": "wendy", "password": PW}),
                 headers={"Content-Type": "application/json"})
    assert conn.getresponse().status == 201
    conn.close()
    answers = [login(stack, "guess-%d-password" % i, "127.0.0.1") for i in range(101)]
    statuses = [a[0] for a in answers]
    assert statuses[:5] == [401] * 5
    limited = [a for a in answers if a[0] == 429]
    assert len(limited) >= 90, statuses
    for status, body, retry in limited:
        assert body["error"]["code"] == "too_many_attempts"
        assert retry is not None and int(retry) >= 1
    # Even the right password waits on the attacker's network...
    assert login(stack, PW, "127.0.0.1")[0] == 429
    # ...but the owner, elsewhere, logs in at once.
    status, body, _ = login(stack, PW, "127.0.1.1")
    assert status == 200, body
