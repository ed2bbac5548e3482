"""TOTP (RFC 6238) through the gateway: enrolment needs the current
password, enabling needs a valid code, login then asks for a code only
after a correct password, each code works once, step-up accepts a code,
and disabling needs both the password and a code."""
import base64
import hashlib
import hmac
import json
import struct
import time

import pytest
import requests

from conftest import Stack

PW = "totp-user-password-77"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("totp"), {"MAGNETAR_HIBP_MODE": "off"}).start()
    yield s
    assert s.stop() == 0, s.logs()


def code_at(secret, step):
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    off = mac[-1] & 15
    return "%06d" % ((struct.unpack(">I", mac[off:off + 4])[0] & 0x7FFFFFFF) % 1000000)


def call(stack, method, path, body=None, token=None):
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    return requests.request(method, stack.url + path, headers=h, timeout=15,
                            data=json.dumps(body) if body is not None else None)


def err(r):
    return r.status_code, r.json()["error"]["code"]


def test_totp_lifecycle(stack):
    call(stack, "POST", "/api/v1/auth/register", {"username": "vera", "password": PW})
    t = call(stack, "POST", "/api/v1/auth/login", {"username": "vera", "password": PW}).json()
    token = t["access_token"]
    assert err(call(stack, "POST", "/api/v1/auth/totp/setup", {"current_password": "wrong!!"},
                    token)) == (401, "invalid_credentials")
    assert call(stack, "POST", "/api/v1/auth/totp/setup", {}, token).status_code == 400
    r = call(stack, "POST", "/api/v1/auth/totp/setup", {"current_password": PW}, token)
    assert r.status_code == 200
    secret = r.json()["secret"]
    assert r.json()["otpauth_uri"].startswith("otpauth://totp/")
    assert "secret=" + secret in r.json()["otpauth_uri"]
    assert err(call(stack, "POST", "/api/v1/auth/totp/enable", {"code": "000000"},
                    token)) == (400, "invalid_totp")
    step = int(time.time()) // 30
    assert call(stack, "POST", "/api/v1/auth/totp/enable", {"code": code_at(secret, step - 1)},
                token).status_code == 204
    assert call(stack, "GET", "/api/v1/auth/me", None, token).json()["user"]["totp_enabled"]

    # Login: a wrong password says nothing about TOTP; a right one asks for it.
    assert err(call(stack, "POST", "/api/v1/auth/login",
                    {"username": "vera", "password": "wrong password"})) == (
        401, "invalid_credentials")
    assert err(call(stack, "POST", "/api/v1/auth/login",
                    {"username": "vera", "password": PW})) == (401, "totp_required")
    assert err(call(stack, "POST", "/api/v1/auth/login",
                    {"username": "vera", "password": PW, "totp": "123456"})) == (
        401, "invalid_totp")
    now_code = code_at(secret, step)
    r = call(stack, "POST", "/api/v1/auth/login",
             {"username": "vera", "password": PW, "totp": now_code})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    # The same code again: refused (single use within its window).
    assert err(call(stack, "POST", "/api/v1/auth/login",
                    {"username": "vera", "password": PW, "totp": now_code})) == (
        401, "invalid_totp")
    # Step-up takes a code, not the password, once TOTP is on.
    assert err(call(stack, "POST", "/api/v1/auth/step-up", {"password": PW}, token)) == (
        401, "invalid_totp")
    assert call(stack, "POST", "/api/v1/auth/step-up", {"totp": code_at(secret, step + 1)},
                token).status_code == 204
    # Disabling needs both.
    assert err(call(stack, "DELETE", "/api/v1/auth/totp",
                    {"current_password": "nope nope", "code": "000000"}, token)) == (
        401, "invalid_credentials")
    assert err(call(stack, "DELETE", "/api/v1/auth/totp",
                    {"current_password": PW, "code": "000000"}, token)) == (401, "invalid_totp")
    # The secret is nowhere in the logs.
    assert secret not in stack.log_path.read_text(errors="replace")
