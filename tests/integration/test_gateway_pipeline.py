"""The gateway's request pipeline (issue 20, docs/gateway.md "Files"): the
order of its stages and the one answer path, pinned through the real
interface (HTTP on a socket).

- A stage never runs for a request an earlier one has answered, and the
  answer of every stage, a refusal before the body included, leaves by the
  same path (security headers, X-Request-Id, CORS).
- libmicrohttpd's edges the driver must respect: Expect: 100-continue, HTTP/1.0,
  pipelined requests.
- The Idempotency-Key stage claims a key before the handler runs; an answer
  given before the handler's RPCs (a malformed body) frees it again.

Run: MAGNETAR_BUILD=$PWD/build /usr/bin/python3 -m pytest -q tests/integration/test_gateway_pipeline.py
"""

import json
import re
import socket
import time

import pytest
import requests

from conftest import Stack
from test_gateway_http import Gateway, check_security_headers

ORIGIN = "https://app.example"


def body_code(r):
    return r.json()["error"]["code"]


def raw(port, data, read_until_close=True, timeout=5):
    """Sends `data` on a fresh connection; what came back until the peer
    closed (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
                if not read_until_close and out.count(b"\r\n\r\n") >= 1:
                    break
        except socket.timeout:
            pass
    return out


def statuses(data):
    # Not anchored: a body without a final newline runs into the next status line.
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3}) ", data)]


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("pipeline"),
                {"MAGNETAR_CORS_ORIGINS": ORIGIN, "MAGNETAR_ACCESS_LOG": "all"})
    yield g
    g.stop()


# ---- order of the stages -----------------------------------------------------------


def test_a_method_the_route_does_not_take_is_405_before_authentication(gw):
    # /me asks for a token, but only for the methods it takes: a DELETE
    # without one is the route stage's 405, not the authentication stage's 401.
    r = requests.delete(gw.base + "/api/v1/auth/me", timeout=5)
    assert r.status_code == 405 and body_code(r) == "method_not_allowed", r.text
    assert r.headers["Allow"] == "GET, HEAD"
    assert "WWW-Authenticate" not in r.headers
    check_security_headers(r.headers)


def test_a_preflight_is_answered_before_authentication(gw):
    r = requests.options(gw.base + "/api/v1/auth/me", timeout=5,
                         headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET",
                                  "Access-Control-Request-Headers": "Authorization"})
    assert r.status_code == 204, r.text
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "GET" in r.headers["Access-Control-Allow-Methods"]
    check_security_headers(r.headers)


def test_a_token_route_without_a_token_is_401_with_the_whole_answer_path(gw):
    r = requests.get(gw.base + "/api/v1/auth/me", headers={"Origin": ORIGIN}, timeout=5)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in r.headers["Vary"]
    check_security_headers(r.headers)


def test_a_refusal_before_the_cors_stage_still_carries_cors(gw):
    # 413 is decided by framing, on the first call, before the CORS stage
    # has run: the answer path looks at the Origin itself.
    r = requests.post(gw.base + "/api/v1/auth/login", data=b"x" * 70000, timeout=5,
                      headers={"Origin": ORIGIN, "Content-Type": "application/json"})
    assert r.status_code == 413 and body_code(r) == "payload_too_large"
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in r.headers["Vary"]
    check_security_headers(r.headers)
    rid = r.headers["X-Request-Id"]
    assert r.json()["error"]["request_id"] == rid


def test_every_answer_is_logged_once(gw):
    r = requests.get(gw.base + "/nope", timeout=5)
    rid = r.headers["X-Request-Id"]
    # The access log is buffered per thread (100 ms at most).
    deadline = time.monotonic() + 5
    lines = []
    while time.monotonic() < deadline:
        lines = [ln for ln in gw.output().splitlines() if f"request_id={rid}" in ln]
        if lines:
            break
        time.sleep(0.05)
    assert len(lines) == 1 and "status=404" in lines[0], lines


# ---- libmicrohttpd's edges -------------------------------------------------------------


def test_expect_100_continue_then_the_answer(gw):
    body = b'{"refresh_token":"not-a-token"}'
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(b"POST /api/v1/auth/refresh HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 100 Continue"), first
        s.sendall(body)
        rest = b""
        while b"\r\n\r\n" not in rest:
            rest += s.recv(65536)
    # No auth service runs: the refresh's RPC fails within its 500 ms deadline.
    assert statuses(rest) and statuses(rest)[0] in (503, 504), rest[:200]


def test_expect_100_continue_refused_body_is_never_invited(gw):
    out = raw(gw.port, b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
              b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
              b"Content-Length: 999999\r\n\r\n")
    assert statuses(out) == [413], out[:300]
    assert b"100 Continue" not in out


def test_http_1_0_is_answered_and_closed(gw):
    out = raw(gw.port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert statuses(out) == [200], out[:300]
    assert b"X-Content-Type-Options: nosniff" in out


def test_pipelined_requests_get_one_answer_each_in_order(gw):
    req = (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    out = raw(gw.port, req)
    assert statuses(out) == [200, 404, 200], out[:600]
    ids = re.findall(rb"X-Request-Id: (\S+)", out)
    assert len(ids) == 3 and len(set(ids)) == 3, ids


def test_head_has_the_get_headers_and_no_body(gw):
    out = raw(gw.port, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert statuses(head) == [200] and body == b"", out[:300]
    assert b"Content-Security-Policy:" in head


# ---- the Idempotency-Key stage ------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("pipeline-stack"), {"MAGNETAR_HIBP_MODE": "off"}).start()
    yield s
    assert s.stop() == 0, s.logs()


def post_register(stack, body, key):
    return requests.post(stack.url + "/api/v1/auth/register",
                         data=body if isinstance(body, bytes) else json.dumps(body),
                         headers={"Content-Type": "application/json", "Idempotency-Key": key},
                         timeout=30)


def test_a_malformed_body_frees_the_key_for_a_corrected_retry(stack):
    # The key is claimed before the handler runs; the handler refuses the
    # body before any RPC, and that refusal must not be what the key replays.
    key = "fix-and-retry"
    r = post_register(stack, {"username": "pipe-erin"}, key)  # no password
    assert r.status_code == 400 and body_code(r) == "invalid_request", r.text
    r = post_register(stack, b"{not json", key)
    assert r.status_code == 400 and "Idempotent-Replayed" not in r.headers
    good = {"username": "pipe-erin", "password": "a long enough passphrase 5"}
    r1 = post_register(stack, good, key)
    assert r1.status_code == 201, r1.text
    assert "Idempotent-Replayed" not in r1.headers
    r2 = post_register(stack, good, key)
    assert r2.status_code == 201 and r2.headers.get("Idempotent-Replayed") == "true"
    assert r2.json() == r1.json()


def test_an_answer_from_auth_is_what_the_key_replays(stack):
    # A 4xx from the service (after the RPC) is stored: the same request
    # with the same key gets the same answer, marked as a replay.
    good = {"username": "pipe-frank", "password": "a long enough passphrase 6"}
    assert post_register(stack, good, "first-frank").status_code == 201
    r1 = post_register(stack, good, "second-frank")  # the name is taken now
    assert r1.status_code == 409, r1.text
    r2 = post_register(stack, good, "second-frank")
    assert r2.status_code == 409 and r2.headers.get("Idempotent-Replayed") == "true"
    assert r2.json()["error"]["code"] == r1.json()["error"]["code"]
