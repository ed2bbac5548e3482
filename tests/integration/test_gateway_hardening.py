"""Gateway hardening (issue 6): security headers on every status, CORS, rate
limits, the header deadline (slowloris), trusted proxies, the access log,
/metrics and Idempotency-Key.

Starts magnetar-gateway alone (test_gateway_http.Gateway) where no service is
needed, and the whole stack (conftest.Stack) for idempotent registration.
Run: MAGNETAR_BUILD=$PWD/build /usr/bin/python3 -m pytest -q tests/integration/test_gateway_hardening.py
"""

import json
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import Stack, free_port
from test_gateway_http import GATEWAY, Gateway, check_security_headers


def body_code(r):
    return r.json()["error"]["code"]


# ---- security headers on every status --------------------------------------------


def test_security_headers_on_every_status(tmp_path):
    g = Gateway(tmp_path, {"MAGNETAR_RATE_LOGIN": "1/60"})
    try:
        seen = {}
        r = requests.get(g.base + "/healthz", timeout=5)
        seen[r.status_code] = r
        r = requests.get(g.base + "/api/v1/auth/me", timeout=5)  # no token
        seen[r.status_code] = r
        assert r.headers.get("WWW-Authenticate") == "Bearer"
        r = requests.get(g.base + "/nope", timeout=5)
        seen[r.status_code] = r
        r = requests.post(g.base + "/healthz", timeout=5)
        seen[r.status_code] = r
        r = requests.post(g.base + "/api/v1/auth/register", data=b"x" * 70000,
                          headers={"Content-Type": "application/json"}, timeout=5)
        seen[r.status_code] = r
        # The login class allows one request a minute: the first is a 400
        # (bad body), the second is refused by the limit before the body.
        requests.post(g.base + "/api/v1/auth/login", data=b"{", timeout=5,
                      headers={"Content-Type": "application/json"})
        r = requests.post(g.base + "/api/v1/auth/login", data=b"{", timeout=5,
                          headers={"Content-Type": "application/json"})
        seen[r.status_code] = r
        r = requests.get(g.base + "/readyz", timeout=5)  # no service runs
        seen[r.status_code] = r
        assert set(seen) >= {200, 401, 404, 405, 413, 429, 503}, sorted(seen)
        for status, resp in seen.items():
            check_security_headers(resp.headers)
            assert resp.headers["Content-Type"].startswith("application/json"), status
            if status >= 400 and status != 503:  # /readyz's 503 has its own shape
                assert body_code(resp), status
        assert body_code(seen[429]) == "rate_limited"
        assert int(seen[429].headers["Retry-After"]) >= 1
    finally:
        g.stop()


def test_csp_relaxed_only_in_development(tmp_path):
    g = Gateway(tmp_path, {"MAGNETAR_ENV": "development", "MAGNETAR_SANDBOX": "off"})
    try:
        csp = requests.get(g.base + "/healthz", timeout=5).headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp, csp
        assert "unsafe-eval" not in csp and "*" not in csp.replace("ws:", ""), csp
    finally:
        g.stop()


def test_csp_and_permissions_overrides(tmp_path):
    g = Gateway(tmp_path, {"MAGNETAR_CSP": "default-src 'none'; img-src 'self'",
                           "MAGNETAR_PERMISSIONS_POLICY": "camera=(), usb=()"})
    try:
        h = requests.get(g.base + "/nope", timeout=5).headers
        # frame-ancestors 'none' is added to an override that lacks it.
        assert h["Content-Security-Policy"] == (
            "default-src 'none'; img-src 'self'; frame-ancestors 'none'")
        assert h["Permissions-Policy"] == "camera=(), usb=()"
    finally:
        g.stop()


@pytest.mark.parametrize("csp,sent", [
    # The words inside another directive's value are not the directive: the
    # real one is still added.
    ("default-src https://x.example frame-ancestors 'none'",
     "default-src https://x.example frame-ancestors 'none'; frame-ancestors 'none'"),
    # The real one, in any case and spacing, is kept as written.
    ("default-src 'none' ;  Frame-Ancestors   'NONE' ", None),
])
def test_csp_override_frame_ancestors_is_a_directive(tmp_path, csp, sent):
    g = Gateway(tmp_path, {"MAGNETAR_CSP": csp})
    try:
        h = requests.get(g.base + "/nope", timeout=5).headers
        assert h["Content-Security-Policy"] == (sent or csp)
    finally:
        g.stop()


def run_refused(tmp_path, env):
    """Starts the gateway expecting a refusal; returns its output."""
    full = {"PATH": "/usr/bin:/bin", "MAGNETAR_ENV": "test",
            "MAGNETAR_DATA_DIR": str(tmp_path / "var"), "MAGNETAR_RUN_DIR": str(tmp_path / "run"),
            "MAGNETAR_HTTP_ADDR": f"127.0.0.1:{free_port()}"}
    full.update(env)
    p = subprocess.run([str(GATEWAY)], env=full, cwd=tmp_path, capture_output=True, text=True,
                       timeout=20)
    assert p.returncode != 0, p.stdout + p.stderr
    return p.stdout + p.stderr


@pytest.mark.parametrize("env,needle", [
    ({"MAGNETAR_CSP": "default-src 'none'; frame-ancestors *"}, "MAGNETAR_CSP"),
    ({"MAGNETAR_CSP": "default-src 'none';  FRAME-ANCESTORS 'none' https://evil.example"},
     "MAGNETAR_CSP"),
    ({"MAGNETAR_TRUSTED_PROXIES": "10.0.0.0/33"}, "MAGNETAR_TRUSTED_PROXIES"),
    ({"MAGNETAR_ACCESS_LOG": "none"}, "MAGNETAR_ACCESS_LOG"),
    ({"MAGNETAR_CORS_ORIGINS": "null"}, "MAGNETAR_CORS_ORIGINS"),
    ({"MAGNETAR_CORS_ORIGINS": "https://a.example/"}, "MAGNETAR_CORS_ORIGINS"),
    ({"MAGNETAR_RATE_LOGIN": "ten"}, "MAGNETAR_RATE_LOGIN"),
    ({"MAGNETAR_ENV": "production", "MAGNETAR_FINGERPRINT_KEY": "k" * 32,
      "MAGNETAR_CORS_ORIGINS": ""}, "MAGNETAR_CORS_ORIGINS"),
    ({"MAGNETAR_ENV": "production", "MAGNETAR_FINGERPRINT_KEY": "k" * 32,
      "MAGNETAR_CORS_ORIGINS": "*"}, "MAGNETAR_CORS_ORIGINS"),
])
def test_bad_settings_are_refused(tmp_path, env, needle):
    assert needle in run_refused(tmp_path, env)


# ---- CORS -------------------------------------------------------------------------

ALLOWED = "https://app.example.com"
CORS_ENV = {"MAGNETAR_CORS_ORIGINS": f"{ALLOWED}, http://localhost:3000"}


@pytest.fixture(scope="module")
def cors_gw(tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("cors"), CORS_ENV)
    yield g
    g.stop()


@pytest.mark.parametrize("origin", [
    ALLOWED, "HTTPS://APP.EXAMPLE.COM", "https://app.example.com:443", "http://localhost:3000",
])
def test_cors_listed_origin(cors_gw, origin):
    r = requests.get(cors_gw.base + "/healthz", headers={"Origin": origin}, timeout=5)
    assert r.headers.get("Access-Control-Allow-Origin") == origin
    assert r.headers.get("Access-Control-Allow-Credentials") == "true"
    assert "Origin" in r.headers.get("Vary", "")
    check_security_headers(r.headers)


@pytest.mark.parametrize("origin", [
    "null", "https://app.example.com.evil.net", "https://evilapp.example.com",
    "https://evil.com/https://app.example.com", "http://app.example.com",
    "https://app.example.com:8443", "https://app.example.com/", "https://app.example.com/x",
    "https://app.example.com.", "https://user@app.example.com", "https://app.example.com?x",
    "https://app.example.co", "wss://app.example.com", "http://localhost:3001",
    "http://localhost", "https://localhost:3000", "*", "",
])
def test_cors_lookalikes_never_match(cors_gw, origin):
    r = requests.get(cors_gw.base + "/healthz", headers={"Origin": origin}, timeout=5)
    assert r.status_code == 200
    assert "Access-Control-Allow-Origin" not in r.headers, origin
    assert "Access-Control-Allow-Credentials" not in r.headers, origin
    assert "Origin" in r.headers.get("Vary", "")


def test_cors_preflight_lists_the_routes_methods(cors_gw):
    r = requests.options(cors_gw.base + "/api/v1/users",
                         headers={"Origin": ALLOWED, "Access-Control-Request-Method": "POST",
                                  "Access-Control-Request-Headers": "authorization,content-type"},
                         timeout=5)
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert r.headers["Access-Control-Allow-Credentials"] == "true"
    methods = {m.strip() for m in r.headers["Access-Control-Allow-Methods"].split(",")}
    assert methods == {"GET", "HEAD", "POST"}
    allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key", "sec-ch-ua",
            "accept-language"} <= allowed
    assert "Origin" in r.headers["Vary"]
    check_security_headers(r.headers)
    r = requests.options(cors_gw.base + "/api/v1/auth/login",
                         headers={"Origin": ALLOWED, "Access-Control-Request-Method": "DELETE"},
                         timeout=5)
    assert r.headers["Access-Control-Allow-Methods"] == "POST"


def test_cors_preflight_from_unlisted_origin_is_refused(cors_gw):
    r = requests.options(cors_gw.base + "/api/v1/auth/login",
                         headers={"Origin": "https://app.example.com.evil.net",
                                  "Access-Control-Request-Method": "POST"}, timeout=5)
    assert r.status_code == 403
    assert "Access-Control-Allow-Origin" not in r.headers
    assert "Access-Control-Allow-Methods" not in r.headers
    check_security_headers(r.headers)


def test_no_cors_headers_when_cors_is_off(tmp_path):
    g = Gateway(tmp_path)
    try:
        r = requests.get(g.base + "/healthz", headers={"Origin": ALLOWED}, timeout=5)
        assert "Access-Control-Allow-Origin" not in r.headers
        r = requests.options(g.base + "/api/v1/auth/login",
                             headers={"Origin": ALLOWED, "Access-Control-Request-Method": "POST"},
                             timeout=5)
        assert r.status_code == 405  # no preflight answered without CORS
    finally:
        g.stop()


# ---- rate limits -------------------------------------------------------------------


def test_rate_limit_triggers_and_recovers(tmp_path):
    g = Gateway(tmp_path, {"MAGNETAR_RATE_GLOBAL": "3/3"})
    try:
        time.sleep(3.1)  # the start-up polls spent tokens: a full bucket
        s = requests.Session()
        codes = [s.get(g.base + "/healthz", timeout=5).status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        r = s.get(g.base + "/healthz", timeout=5)
        assert r.status_code == 429
        assert body_code(r) == "rate_limited"
        wait = int(r.headers["Retry-After"])
        assert 1 <= wait <= 3
        check_security_headers(r.headers)
        time.sleep(wait + 0.1)
        assert s.get(g.base + "/healthz", timeout=5).status_code == 200
        m = s.get(g.base + "/metrics", timeout=5)
        assert m.status_code in (200, 429)
    finally:
        g.stop()


def test_route_class_limit_leaves_other_routes_alone(tmp_path):
    g = Gateway(tmp_path, {"MAGNETAR_RATE_PASSWORD_CHECK": "2/60"})
    try:
        hdr = {"Content-Type": "application/json"}
        url = g.base + "/api/v1/auth/password-check"
        codes = [requests.post(url, data=b"[]", headers=hdr, timeout=5).status_code
                 for _ in range(3)]
        assert codes == [400, 400, 429]
        assert requests.get(g.base + "/healthz", timeout=5).status_code == 200
        # GET on the route is a 405, and is not charged to the class.
        assert requests.get(url, timeout=5).status_code == 405
    finally:
        g.stop()


# ---- client IP and trusted proxies ---------------------------------------------------


def test_xff_honoured_only_from_a_trusted_peer(tmp_path):
    env = {"MAGNETAR_RATE_GLOBAL": "2/60", "MAGNETAR_TRUSTED_PROXIES": "127.0.0.1/32, ::1"}
    g = Gateway(tmp_path, env)
    try:
        def get(xff):
            return requests.get(g.base + "/nope", headers={"X-Forwarded-For": xff}, timeout=5)
        assert [get("203.0.113.1").status_code for _ in range(2)] == [404, 404]
        assert get("203.0.113.1").status_code == 429
        # Another client behind the same proxy has its own bucket ...
        assert get("203.0.113.2").status_code == 404
        # ... and the right-most untrusted hop counts: a forged left part
        # does not buy a fresh bucket.
        assert get("198.51.100.77, 203.0.113.1").status_code == 429
        assert get("203.0.113.1, 127.0.0.1").status_code == 429  # trusted hops skipped
        log = g.output_when(lambda o: "ip=203.0.113.1 " in o and "ip=203.0.113.2 " in o)
        assert "ip=203.0.113.1 " in log and "ip=203.0.113.2 " in log, log[-2000:]
    finally:
        g.stop()


def test_xff_ignored_from_an_untrusted_peer(tmp_path):
    g = Gateway(tmp_path, {"MAGNETAR_RATE_GLOBAL": "2/60",
                           "MAGNETAR_TRUSTED_PROXIES": "10.0.0.0/8"})
    try:
        time.sleep(0.1)
        codes = [requests.get(g.base + "/nope", headers={"X-Forwarded-For": f"203.0.113.{i}"},
                              timeout=5).status_code for i in range(4)]
        assert codes[-1] == 429, codes  # all were 127.0.0.1
        # Once the four requests' lines are in, none may name a forged hop.
        log = g.output_when(lambda o: o.count("path=/nope ") >= 4)
        assert log.count("path=/nope ") >= 4, log[-2000:]
        assert "ip=203.0.113." not in log
    finally:
        g.stop()


def test_forwarded_header_when_configured(tmp_path):
    g = Gateway(tmp_path, {"MAGNETAR_TRUSTED_PROXIES": "127.0.0.0/8",
                           "MAGNETAR_PROXY_HEADER": "forwarded"})
    try:
        requests.get(g.base + "/nope", headers={
            "Forwarded": 'for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711"',
            "X-Forwarded-For": "198.51.100.9"}, timeout=5)
        log = g.output_when(lambda o: "ip=2001:db8:cafe::17 " in o)
        assert "ip=2001:db8:cafe::17 " in log, log[-1500:]
        assert "198.51.100.9" not in log
    finally:
        g.stop()


# ---- access log ----------------------------------------------------------------------


def test_access_log_redacts_query_secrets(tmp_path):
    g = Gateway(tmp_path)
    try:
        r = requests.get(g.base + "/nope?ticket=SECRETTICKET&access_token=SECRETTOKEN&page=2",
                         timeout=5)
        rid = r.headers["X-Request-Id"]
        out = g.output_when(lambda o: rid in o)
        line = next(ln for ln in out.splitlines() if rid in ln and "http method" in ln)
        assert "SECRET" not in g.output()
        assert "ticket=<redacted>" in line and "page=2" in line, line
        assert "path=/nope " in line and "status=404" in line and "bytes=" in line, line
        assert re.search(r" us=\d+ ", line) and "user=-" in line, line
    finally:
        g.stop()


@pytest.mark.parametrize("setting,logged", [(None, True), ("all", True), ("errors", False)])
def test_access_log_has_a_line_per_request(tmp_path, setting, logged):
    g = Gateway(tmp_path, {"MAGNETAR_ACCESS_LOG": setting} if setting else {})
    try:
        # One connection, so one gateway thread and one buffer: the 404's
        # line cannot come out before the 200's would have.
        with requests.Session() as sess:
            ok = sess.get(g.base + "/healthz", timeout=5).headers["X-Request-Id"]
            bad = sess.get(g.base + "/nope", timeout=5).headers["X-Request-Id"]
        out = g.output_when(lambda o: bad in o and (ok in o or not logged))
        lines = [ln for ln in out.splitlines() if "http method" in ln]
        assert any(bad in ln and "status=404" in ln for ln in lines), lines
        assert any(ok in ln and "status=200" in ln and "path=/healthz " in ln
                   for ln in lines) == logged, lines
    finally:
        g.stop()


def test_access_log_line_is_written_within_a_second(tmp_path):
    """Buffered, but not held: a lone request's line is in the log well
    within a second, while the gateway keeps running."""
    g = Gateway(tmp_path)
    try:
        time.sleep(0.5)  # the start-up's own lines are out
        rid = requests.get(g.base + "/nope", timeout=5).headers["X-Request-Id"]
        start = time.monotonic()
        out = g.output_when(lambda o: rid in o, timeout=3)
        took = time.monotonic() - start
        assert rid in out, out[-1500:]
        assert took < 1.0, took
    finally:
        g.stop()


def test_access_log_loses_nothing_on_sigterm(tmp_path):
    """The access log goes through per-thread buffers (common/logbuf.h);
    a SIGTERM right after a burst of requests on several connections must
    still leave every request's line in the log, each exactly once."""
    g = Gateway(tmp_path)
    ids, lock = [], threading.Lock()

    def client(n):
        with requests.Session() as sess:
            for i in range(n):
                r = sess.get(g.base + ("/healthz" if i % 2 else "/nope"), timeout=5)
                with lock:
                    ids.append(r.headers["X-Request-Id"])

    try:
        threads = [threading.Thread(target=client, args=(150,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        g.stop()  # at once: lines still buffered must be written on the way out
    lines = [ln for ln in g.output().splitlines() if "http method=" in ln]
    assert len(ids) == 600
    for rid in ids:
        assert sum(1 for ln in lines if 'request_id=%s"' % rid in ln) == 1, rid


# ---- slowloris -----------------------------------------------------------------------


def test_slow_header_block_is_cut_at_the_deadline(tmp_path):
    g = Gateway(tmp_path, {"MAGNETAR_HEADER_TIMEOUT_S": "2"})
    try:
        slow = socket.create_connection(("127.0.0.1", g.port), timeout=10)
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        closed_at = None
        served = 0
        # One header byte every 0.25 s: libmicrohttpd's own timeout would
        # never fire. Meanwhile another client keeps being served.
        while time.monotonic() - start < 6:
            try:
                slow.sendall(b"X")
                slow.settimeout(0.25)
                data = slow.recv(4096)
                if data == b"":
                    closed_at = time.monotonic() - start
                    break
            except socket.timeout:
                pass
            except (BrokenPipeError, ConnectionResetError):
                closed_at = time.monotonic() - start
                break
            assert requests.get(g.base + "/healthz", timeout=2).status_code == 200
            served += 1
        slow.close()
        assert closed_at is not None, "the slow connection was never cut"
        assert 1.5 <= closed_at <= 3.5, closed_at
        assert served >= 3
        m = requests.get(g.base + "/metrics", timeout=5).text
        assert re.search(r"^magnetar_header_deadline_closed_total [1-9]", m, re.M), m
    finally:
        g.stop()


def test_keep_alive_requests_within_the_deadline_are_served(tmp_path):
    g = Gateway(tmp_path, {"MAGNETAR_HEADER_TIMEOUT_S": "2"})
    try:
        s = requests.Session()
        for _ in range(3):
            assert s.get(g.base + "/healthz", timeout=5).status_code == 200
            time.sleep(0.8)  # idle, but each request comes within the deadline
    finally:
        g.stop()


# ---- /metrics -------------------------------------------------------------------------


def check_prometheus_text(text):
    """promtool (make deps installs Debian's prometheus), lints included,
    and a format check of 0.0.4 of our own."""
    assert shutil.which("promtool"), "promtool is missing (Debian package prometheus; make deps)"
    p = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                       capture_output=True, timeout=30)
    assert p.returncode == 0 and p.stdout.strip() == "" and p.stderr.strip() == "", \
        p.stdout + p.stderr
    families = {}
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*"'
                        r'(,[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")*)\})? (-?[0-9.e+-]+|\+Inf|NaN)$')
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in families, f"{name} typed twice"
            families[name] = kind
        elif line.startswith("#"):
            assert line.startswith("# HELP "), line
        else:
            assert sample.match(line), f"bad sample line: {line!r}"
    return families


def test_metrics_format_and_content(tmp_path):
    g = Gateway(tmp_path)
    try:
        requests.get(g.base + "/healthz", timeout=5)
        requests.get(g.base + "/nope", timeout=5)
        r = requests.get(g.base + "/metrics", timeout=5)
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        check_security_headers(r.headers)
        fam = check_prometheus_text(r.text)
        assert fam["magnetar_http_requests_total"] == "counter"
        assert fam["magnetar_http_request_duration_seconds"] == "histogram"
        assert fam["magnetar_rpc_duration_seconds"] == "histogram"
        assert 'magnetar_http_requests_total{route="/healthz",status="200"}' in r.text
        assert 'magnetar_http_requests_total{route="unmatched",status="404"}' in r.text
        assert 'magnetar_http_request_duration_seconds_bucket{route="/healthz",le="+Inf"}' in r.text
        assert "magnetar_http_inflight " in r.text
        assert 'magnetar_rate_limited_total{class="login"}' in r.text
        assert 'magnetar_service_up{service="auth"} 0' in r.text  # no service runs
        assert 'magnetar_service_stat{service="gateway",name="http.requests"}' in r.text
    finally:
        g.stop()


def test_metrics_only_on_the_private_listener_in_production(tmp_path):
    mport = free_port()
    g = Gateway(tmp_path, {"MAGNETAR_ENV": "production",
                           "MAGNETAR_FINGERPRINT_KEY": "integration-test-fingerprint-key",
                           "MAGNETAR_METRICS_ADDR": f"127.0.0.1:{mport}"})
    try:
        r = requests.get(g.base + "/metrics", timeout=5)
        assert r.status_code == 404 and body_code(r) == "not_found"
        r = requests.get(f"http://127.0.0.1:{mport}/metrics", timeout=5)
        assert r.status_code == 200 and "magnetar_http_requests_total" in r.text
        check_prometheus_text(r.text)
        # The private listener serves nothing else.
        assert requests.get(f"http://127.0.0.1:{mport}/healthz", timeout=5).status_code == 404
    finally:
        g.stop()


# ---- Idempotency-Key ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def idem_stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("idem"), {"MAGNETAR_HIBP_MODE": "off"}).start()
    yield s
    assert s.stop() == 0, s.logs()


def register(stack, body, key=None, **kw):
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return requests.post(stack.url + "/api/v1/auth/register", data=json.dumps(body),
                         headers=headers, timeout=30, **kw)


def test_idempotent_replay_and_mismatch(idem_stack):
    body = {"username": "idem-alice", "password": "a long enough passphrase 1"}
    r1 = register(idem_stack, body, key="key-alice-1")
    assert r1.status_code == 201, r1.text
    assert "Idempotent-Replayed" not in r1.headers
    r2 = register(idem_stack, body, key="key-alice-1")
    assert r2.status_code == 201
    assert r2.headers.get("Idempotent-Replayed") == "true"
    assert r2.json() == r1.json()
    check_security_headers(r2.headers)
    assert r2.headers["X-Request-Id"] != r1.headers["X-Request-Id"]
    # Without the key the same body is a new request: the name is taken.
    assert register(idem_stack, body).status_code == 409
    other = dict(body, username="idem-alice-2")
    r3 = register(idem_stack, other, key="key-alice-1")
    assert r3.status_code == 422 and body_code(r3) == "idempotency_key_reused"
    check_security_headers(r3.headers)


def test_idempotency_key_syntax(idem_stack):
    body = {"username": "idem-bob", "password": "a long enough passphrase 2"}
    for bad in ("x" * 256, ""):
        r = register(idem_stack, body, key=bad)
        if bad == "":
            continue  # an empty header may be dropped on the way: not a key
        assert r.status_code == 400 and body_code(r) == "invalid_request", bad
    assert register(idem_stack, body, key="k" * 255).status_code == 201


def test_token_routes_ignore_idempotency_key(idem_stack):
    body = {"username": "idem-carol", "password": "a long enough passphrase 3"}
    assert register(idem_stack, body).status_code == 201
    hdr = {"Content-Type": "application/json", "Idempotency-Key": "login-key"}
    r1 = requests.post(idem_stack.url + "/api/v1/auth/login", data=json.dumps(body),
                       headers=hdr, timeout=30)
    r2 = requests.post(idem_stack.url + "/api/v1/auth/login", data=json.dumps(body),
                       headers=hdr, timeout=30)
    assert r1.status_code == 200 and r2.status_code == 200, r2.text
    assert "Idempotent-Replayed" not in r2.headers
    assert r1.json()["access_token"] != r2.json()["access_token"]
    # No token ever reaches gateway.db.
    db = (idem_stack.dir / "var" / "gateway" / "gateway.db").read_bytes()
    assert r1.json()["refresh_token"].encode() not in db


def test_idempotency_key_in_progress_is_409(tmp_path):
    # The gateway alone: auth does not answer, so the first registration
    # holds its key until the RPC deadline while the second one arrives.
    g = Gateway(tmp_path)
    try:
        body = json.dumps({"username": "idem-dave", "password": "a long enough passphrase 4"})
        hdr = {"Content-Type": "application/json", "Idempotency-Key": "slow-key"}
        first = {}

        def run():
            first["r"] = requests.post(g.base + "/api/v1/auth/register", data=body, headers=hdr,
                                       timeout=30)

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.5)
        r = requests.post(g.base + "/api/v1/auth/register", data=body, headers=hdr, timeout=30)
        assert r.status_code == 409 and body_code(r) == "idempotency_key_in_progress"
        check_security_headers(r.headers)
        t.join()
        assert first["r"].status_code in (503, 504)
        # A 5xx is not stored: the key is free again (same body: runs again,
        # so the answer is not a replay).
        assert "Idempotent-Replayed" not in first["r"].headers
    finally:
        g.stop()
