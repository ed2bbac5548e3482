"""magnetar-gateway over HTTP, alone: no service runs, so /readyz is degraded.

Starts only $MAGNETAR_BUILD/bin/magnetar-gateway (default <repo>/build) in a
temporary directory and checks the HTTP contract of docs/api.md (Conventions,
Health): JSON error shape, security headers on every answer, the size limits
decided by the gateway itself, keep-alive, and a clean exit on SIGTERM.
Run: MAGNETAR_BUILD=$PWD/build /usr/bin/python3 -m pytest -q tests/integration/test_gateway_http.py
"""

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import SANDBOX, sandbox_env

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("MAGNETAR_BUILD", REPO / "build"))
GATEWAY = BUILD / "bin" / "magnetar-gateway"

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
JSON_TYPE = "application/json; charset=utf-8"
SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
                   "runtime error:", "ThreadSanitizer")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """One magnetar-gateway process in its own temporary directory."""

    def __init__(self, tmp, env_extra=None):
        if not GATEWAY.exists():
            pytest.fail(f"{GATEWAY} is not built (set MAGNETAR_BUILD)")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tmp)
        self.log_path = self.dir / "gateway.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAGNETAR_")}
        env.update({
            "MAGNETAR_ENV": "test",
            "MAGNETAR_SANDBOX": SANDBOX,
            "MAGNETAR_DATA_DIR": str(self.dir / "var"),
            "MAGNETAR_RUN_DIR": str(self.dir / "run"),
            "MAGNETAR_HTTP_ADDR": f"127.0.0.1:{self.port}",
        })
        env.update(env_extra or {})
        sandbox_env(env)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([str(GATEWAY)], env=env, cwd=self.dir,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"gateway exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if requests.get(self.base + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"gateway did not answer /healthz:\n{self.output()}")
            time.sleep(0.05)

    def output(self):
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def output_when(self, predicate, timeout=5):
        """The output once predicate(output) holds, or at the timeout: an
        access log line reaches the log within about 150 ms (its thread's
        buffer, common/logbuf.h), not at once."""
        end = time.monotonic() + timeout
        while True:
            out = self.output()
            if predicate(out) or time.monotonic() > end:
                return out
            time.sleep(0.05)

    def stop(self):
        """SIGTERM; the gateway must exit 0 and (sanitizer builds) report nothing."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"gateway did not stop on SIGTERM:\n{self.output()}")
        self.log.close()
        out = self.output()
        assert rc == 0, f"gateway exited {rc} on SIGTERM:\n{out}"
        for mark in SANITIZER_MARKS:
            assert mark not in out, f"sanitizer report in the gateway's output:\n{out}"


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("gateway"))
    yield g
    g.stop()


# ---- helpers -------------------------------------------------------------------


def raw_exchange(port, data, timeout=10):
    """Sends raw bytes, reads one HTTP response; (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return read_response(s)


def read_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a full response: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


def check_security_headers(headers, hsts=False):
    lower = {k.lower(): v for k, v in headers.items()}
    for name, value in SECURITY_HEADERS.items():
        assert lower.get(name.lower()) == value, f"{name}: {lower.get(name.lower())!r}"
    csp = lower.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, csp
    pp = lower.get("permissions-policy", "")
    for feature in ("camera=()", "geolocation=()", "microphone=()", "payment=()", "usb=()"):
        assert feature in pp, pp
    assert re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]+", lower.get("x-request-id", "")), lower
    if hsts:
        assert lower.get("strict-transport-security") == "max-age=31536000; includeSubDomains"
    else:
        assert "strict-transport-security" not in lower


def check_error(status, headers, body, want_status, want_code, hsts=False):
    """The exact error shape of docs/api.md, with every header."""
    assert status == want_status, (status, body)
    lower = {k.lower(): v for k, v in headers.items()}
    check_security_headers(lower, hsts)
    assert lower.get("content-type") == JSON_TYPE
    doc = json.loads(body)
    assert list(doc) == ["error"], doc
    err = doc["error"]
    assert sorted(err) == ["code", "message", "request_id"], err
    assert err["code"] == want_code, err
    assert isinstance(err["message"], str) and err["message"], err
    assert "/" not in err["message"], err  # never a path
    assert err["request_id"] == lower["x-request-id"]
    return err


# ---- health --------------------------------------------------------------------


def test_healthz(gw):
    r = requests.get(gw.base + "/healthz", timeout=5)
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert r.content == b'{"status":"ok"}'
    assert r.headers["Content-Type"] == JSON_TYPE
    check_security_headers(r.headers)


def test_healthz_head_has_headers_and_no_body(gw):
    r = requests.head(gw.base + "/healthz", timeout=5)
    assert r.status_code == 200
    assert r.content == b""
    check_security_headers(r.headers)


def test_healthz_ignores_query(gw):
    r = requests.get(gw.base + "/healthz?probe=1", timeout=5)
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_degraded_without_services(gw):
    t0 = time.monotonic()
    r = requests.get(gw.base + "/readyz", timeout=10)
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0, f"/readyz took {elapsed:.2f}s"
    assert r.status_code == 503
    assert r.headers["Content-Type"] == JSON_TYPE
    check_security_headers(r.headers)
    assert r.json() == {
        "status": "degraded",
        "services": {"auth": "down", "audit": "down", "breach": "down", "terminal": "down"},
    }


def test_without_auth_the_jwks_is_503_never_an_empty_set(gw):
    """A gateway that has never reached auth has no keys: a client that
    cached an empty set would refuse every token until it expired."""
    r = requests.get(gw.base + "/.well-known/jwks.json", timeout=10)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "service_unavailable"
    assert r.headers["Cache-Control"] == "no-store"
    assert "keys" not in r.json()


def test_without_auth_introspection_is_503_not_an_answer(gw):
    r = requests.post(gw.base + "/api/v1/auth/introspect", data={"token": "x"},
                      auth=("orders", "secret"), timeout=15)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "service_unavailable"
    assert "active" not in r.text


def test_readyz_many_at_once(gw):
    """Suspended requests do not block each other or the hot path."""
    from concurrent.futures import ThreadPoolExecutor

    def one(_):
        return requests.get(gw.base + "/readyz", timeout=10).status_code

    t0 = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(one, range(64)))
    assert codes == [503] * 64
    assert time.monotonic() - t0 < 10
    assert requests.get(gw.base + "/healthz", timeout=5).status_code == 200


# ---- errors --------------------------------------------------------------------


def test_not_found_shape(gw):
    r = requests.get(gw.base + "/nope", timeout=5)
    err = check_error(r.status_code, r.headers, r.content, 404, "not_found")
    assert "nope" not in err["message"]


def test_method_not_allowed_lists_allow(gw):
    r = requests.post(gw.base + "/healthz", timeout=5)
    check_error(r.status_code, r.headers, r.content, 405, "method_not_allowed")
    allow = {m.strip() for m in r.headers["Allow"].split(",")}
    assert allow == {"GET", "HEAD"}


def test_unknown_method_is_405_on_known_path(gw):
    status, headers, body = raw_exchange(
        gw.port, b"BREW /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    check_error(status, headers, body, 405, "method_not_allowed")


def test_request_id_is_ours_and_unique(gw):
    ids = set()
    for _ in range(5):
        r = requests.get(gw.base + "/nope", headers={"X-Request-Id": "client-chosen"}, timeout=5)
        assert r.headers["X-Request-Id"] != "client-chosen"
        assert r.json()["error"]["request_id"] == r.headers["X-Request-Id"]
        ids.add(r.headers["X-Request-Id"])
    assert len(ids) == 5


def test_body_over_limit_with_content_length(gw):
    r = requests.post(gw.base + "/healthz", data=b"x" * (70 * 1024), timeout=10)
    check_error(r.status_code, r.headers, r.content, 413, "payload_too_large")


def test_body_over_limit_announced_but_not_sent(gw):
    """413 at once, before any body byte (no waiting for 70 KiB that never come)."""
    status, headers, body = raw_exchange(
        gw.port, b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 71680\r\n\r\n", timeout=5)
    check_error(status, headers, body, 413, "payload_too_large")


def test_body_over_limit_chunked_generator(gw):
    def chunks():
        for _ in range(20):
            yield b"y" * 4096  # 80 KiB in all, no Content-Length

    r = requests.post(gw.base + "/nope", data=chunks(), timeout=10)
    check_error(r.status_code, r.headers, r.content, 413, "payload_too_large")


def test_body_over_limit_chunked_raw(gw):
    chunk = b"z" * 8192
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(9)) + b"0\r\n\r\n"
    status, headers, resp = raw_exchange(
        gw.port, b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    check_error(status, headers, resp, 413, "payload_too_large")


def test_body_under_limit_chunked_is_routed(gw):
    """A chunked body under 64 KiB is not refused: the route decides (405 here)."""
    def chunks():
        for _ in range(15):
            yield b"y" * 4096  # 60 KiB

    r = requests.post(gw.base + "/healthz", data=chunks(), timeout=10)
    check_error(r.status_code, r.headers, r.content, 405, "method_not_allowed")


def test_uri_too_long(gw):
    r = requests.get(gw.base + "/healthz?q=" + "a" * (9 * 1024), timeout=5)
    check_error(r.status_code, r.headers, r.content, 414, "uri_too_long")


def test_uri_limit_is_8192_bytes_of_target(gw):
    prefix = "/healthz?q="
    ok = requests.get(gw.base + prefix + "a" * (8192 - len(prefix)), timeout=5)
    assert ok.status_code == 200
    over = requests.get(gw.base + prefix + "a" * (8193 - len(prefix)), timeout=5)
    assert over.status_code == 414


def test_headers_too_large(gw):
    r = requests.get(gw.base + "/healthz", headers={"X-Big": "b" * (17 * 1024)}, timeout=5)
    check_error(r.status_code, r.headers, r.content, 431, "headers_too_large")


def test_headers_under_limit_pass(gw):
    r = requests.get(gw.base + "/healthz", headers={"X-Big": "b" * (15 * 1024)}, timeout=5)
    assert r.status_code == 200


def test_content_length_with_transfer_encoding(gw):
    req = (b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    status, headers, body = raw_exchange(gw.port, req)
    check_error(status, headers, body, 400, "invalid_request")
    assert headers.get("connection", "").lower() == "close"


def test_errors_do_not_break_the_gateway(gw):
    r = requests.get(gw.base + "/healthz", timeout=5)
    assert r.status_code == 200


# ---- connections ---------------------------------------------------------------


def test_keep_alive_session(gw):
    with requests.Session() as s:
        r1 = s.get(gw.base + "/healthz", timeout=5)
        sock1 = r1.raw._connection.sock if r1.raw._connection else None
        r2 = s.get(gw.base + "/healthz", timeout=5)
        r3 = s.get(gw.base + "/nope", timeout=5)
        for r in (r1, r2, r3):
            assert r.headers.get("Connection", "").lower() != "close", r.headers
        assert r1.status_code == r2.status_code == 200 and r3.status_code == 404
        pool = s.get_adapter(gw.base).poolmanager.connection_from_url(gw.base)
        assert pool.num_connections == 1, "the second request opened a new connection"
        del sock1


def test_keep_alive_raw_socket(gw):
    """Requests on one TCP connection: every answer arrives on it, each with
    its own request id (the connection re-uses its /healthz response)."""
    ids = []
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        for path, want in ((b"/healthz", 200), (b"/nope", 404), (b"/healthz", 200),
                           (b"/healthz", 200), (b"/readyz", 503), (b"/healthz", 200)):
            s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = read_response(s)
            assert status == want
            assert headers.get("connection", "").lower() != "close"
            check_security_headers(headers)
            if want == 200:
                assert body == b'{"status":"ok"}'
            ids.append(headers["x-request-id"])
    assert len(set(ids)) == len(ids), ids


# ---- environments --------------------------------------------------------------


def test_no_hsts_in_test_env(gw):
    for path in ("/healthz", "/nope"):
        r = requests.get(gw.base + path, timeout=5)
        assert "Strict-Transport-Security" not in r.headers


def test_hsts_in_production(tmp_path):
    prod = Gateway(tmp_path, {"MAGNETAR_ENV": "production",
                              "MAGNETAR_FINGERPRINT_KEY": "integration-test-fingerprint-key"})
    try:
        r = requests.get(prod.base + "/healthz", timeout=5)
        assert r.status_code == 200
        check_security_headers(r.headers, hsts=True)
        r = requests.get(prod.base + "/nope", timeout=5)
        check_error(r.status_code, r.headers, r.content, 404, "not_found", hsts=True)
    finally:
        prod.stop()
