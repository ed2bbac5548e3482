"""Breached passwords through the whole stack: register refuses them with
docs/api.md's exact message and breach_count, POST /api/v1/auth/password-check
answers {"breached","count"}, and only a 5-hex SHA-1 prefix ever reaches
the Pwned Passwords server (the fixture in tests/fixtures/hibp_server.py)."""
import hashlib
import json

import pytest
import requests

from conftest import Stack
from test_breach import HibpServer

BREACHED = "P@ssw0rd"  # in tests/fixtures/pwned_sample.txt with count 56789
SAFE = "magnetar-not-breached-7f3a9c"


@pytest.fixture(scope="module")
def hibp(tmp_path_factory):
    server = HibpServer(tmp_path_factory.mktemp("hibp"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, hibp):
    s = Stack(tmp_path_factory.mktemp("pwstack"), {"MAGNETAR_HIBP_URL": hibp.url}).start()
    yield s
    assert s.stop() == 0, s.logs()


def post(stack, path, body):
    return requests.post(stack.url + path, data=json.dumps(body),
                         headers={"Content-Type": "application/json"}, timeout=15)


def test_register_refuses_a_breached_password(stack):
    r = post(stack, "/api/v1/auth/register", {"username": "mallory", "password": BREACHED})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "password_breached"
    assert err["breach_count"] == 56789
    assert err["message"] == ("This password has been exposed in 56789 data breach(es). "
                              "Please choose a different password.")
    assert post(stack, "/api/v1/auth/register",
                {"username": "mallory", "password": SAFE}).status_code == 201


def test_password_check_route(stack):
    r = post(stack, "/api/v1/auth/password-check", {"password": BREACHED})
    assert r.status_code == 200
    assert r.json() == {"breached": True, "count": 56789}
    r = post(stack, "/api/v1/auth/password-check", {"password": SAFE})
    assert r.json() == {"breached": False, "count": 0}
    r = post(stack, "/api/v1/auth/password-check", {"password": 5})
    assert r.status_code == 400


def test_only_the_prefix_left_the_box(stack, hibp):
    post(stack, "/api/v1/auth/password-check", {"password": BREACHED})
    full = hashlib.sha1(BREACHED.encode()).hexdigest().upper()
    sent = json.dumps(hibp.requests())
    assert "/range/" + full[:5] in hibp.paths()
    assert full[5:] not in sent.upper()
    assert BREACHED not in sent
    for path in hibp.paths():
        assert len(path.rsplit("/", 1)[1]) == 5
    assert BREACHED not in stack.log_path.read_text(errors="replace")
