"""The gateway's upstream proxy (MAGNETAR_UPSTREAMS, docs/apps.md "Proxy
headers"), attacked through the real `magnetar up`: every policy refused
without a valid token (and the upstream sees nothing), roles and step-up,
identity and forwarding headers the client cannot forge, hop-by-hop headers,
request smuggling and path traversal between prefixes, bodies and answers
streamed whole, upstream failures as JSON errors, WebSockets, a Unix-socket
upstream, docs/apps.md's example upstream run as written, and malformed
configurations refused at start.

The test upstreams (proxy_upstream.py) run in this process, on threads, and
record every request exactly as the gateway sent it.
Run: /usr/bin/python3 -m pytest -x -q tests/integration/test_proxy.py
"""
import base64
import hashlib
import http.client
import json
import pathlib
import re
import select
import socket
import subprocess
import threading
import time

import jwt
import pytest
import requests
import websocket
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import BIN, Stack, free_port, stop_or_explain, wait_until
from proxy_upstream import BAD, Upstream, pattern, sha256
from test_gateway_http import JSON_TYPE, check_security_headers

REPO = pathlib.Path(__file__).resolve().parents[2]
PW = "proxy-member-password-7"
FOUNDER, FOUNDER_PW = "founder", "founder-proxy-Pa55-31"
ORIGIN = "https://app.example.com"
HOST = "proxy-test.example:8443"
# Sent on every request, login included: the session's risk score stays 0
# whatever client library a test uses (docs/api.md "Session risk").
HEADERS = {"User-Agent": "magnetar-proxy-test/1", "Accept-Language": "en-GB",
           "Accept-Encoding": "identity"}
RID = re.compile(r"[0-9a-f]{16}-[0-9a-f]+")
MIB = 1024 * 1024
FATAL = re.compile(r"level=(fatal|error|crit)[^\n]*MAGNETAR_UPSTREAMS")


def stopped_cleanly(s):
    assert s.stop() == 0, s.logs()
    assert "ERROR: AddressSanitizer" not in s.full_log(), s.logs()
    assert "runtime error:" not in s.full_log(), s.logs()


# ---- raw HTTP: what the gateway really sends back -----------------------------------------


class Resp:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)] in order, duplicates kept
        self.body = body

    def all(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def get(self, name, default=None):
        vals = self.all(name)
        return vals[0] if vals else default

    def one(self, name):
        vals = self.all(name)
        assert len(vals) == 1, (name, self.headers)
        return vals[0]

    def hdict(self):
        return {n.lower(): v for n, v in self.headers}

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.headers} {self.body[:300]!r}>"


def read_response(f, method="GET"):
    line = f.readline(65537)
    if not line:
        raise ConnectionError("closed before a status line")
    parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    assert len(parts) >= 2 and parts[0].startswith("HTTP/") and parts[1].isdigit(), \
        f"not a status line: {line!r} (stray bytes after the previous answer?)"
    status = int(parts[1])
    headers = []
    while True:
        ln = f.readline(65537)
        if not ln:
            raise ConnectionError("closed inside the response head")
        if ln in (b"\r\n", b"\n"):
            break
        name, _, value = ln.decode("latin-1").rstrip("\r\n").partition(":")
        headers.append((name.strip(), value.strip()))
    lower = [(n.lower(), v) for n, v in headers]
    te = [v for n, v in lower if n == "transfer-encoding"]
    cl = [v for n, v in lower if n == "content-length"]
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        body = b""
    elif te:
        assert te[-1].lower() == "chunked", headers
        body = bytearray()
        while True:
            size = int(f.readline(1024).split(b";")[0].strip(), 16)
            if size == 0:
                while f.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                break
            chunk = f.read(size)
            assert len(chunk) == size, "closed inside a chunk"
            body += chunk
            f.readline(16)
        body = bytes(body)
    elif cl:
        body = f.read(int(cl[0]))
        assert len(body) == int(cl[0]), "closed inside the body"
    else:
        body = f.read()
    return Resp(status, parts[2] if len(parts) > 2 else "", headers, body)


class SockReader:
    """readline/read over a socket with a buffer of its own, so that a test
    can wait on the socket without losing what is buffered."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def readline(self, limit=65537):
        while b"\n" not in self.buf and len(self.buf) < limit:
            if not self._fill():
                break
        i = self.buf.find(b"\n")
        n = min(limit, i + 1 if i >= 0 else len(self.buf))
        line, self.buf = self.buf[:n], self.buf[n:]
        return line

    def read(self, n=None):
        while n is None or len(self.buf) < n:
            if not self._fill():
                break
        n = len(self.buf) if n is None else n
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


class Conn:
    def __init__(self, port, timeout=15):
        self.timeout = timeout
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.f = SockReader(self.sock)

    def send(self, data):
        self.sock.sendall(data)

    def response(self, method="GET"):
        return read_response(self.f, method)

    def rest(self, within=5):
        """Whatever comes until the peer closes; fails if it stays open."""
        end = time.monotonic() + within
        data = self.f.buf
        self.f.buf = b""
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"connection still open after {within} s; got {data!r}")
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                continue
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk

    def stray(self, within=0.5):
        """What arrives in `within` seconds after an answer: None (nothing,
        the connection is open), b"" (closed) or bytes no answer framed."""
        if self.f.buf:
            return self.f.buf
        r, _, _ = select.select([self.sock], [], [], within)
        if not r:
            return None
        try:
            return self.sock.recv(65536)
        except ConnectionResetError:
            return b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def request_bytes(method, target, headers=(), body=None, host=HOST, base=True):
    lines = [f"{method} {target} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    if base:
        lines += [f"{k}: {v}" for k, v in HEADERS.items()]
    lines += [f"{k}: {v}" for k, v in headers]
    names = {k.lower() for k, _ in headers}
    if body is not None and not names & {"content-length", "transfer-encoding"}:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def get(stack, target, token=None, headers=(), method="GET", body=None, host=HOST, timeout=15):
    h = list(headers)
    if token is not None:
        h.insert(0, ("Authorization", "Bearer " + token))
    with Conn(stack.port, timeout) as c:
        c.send(request_bytes(method, target, h, body, host))
        return c.response(method)


def check_err(resp, status, code):
    """The gateway's own error (docs/api.md): JSON shape, the security
    headers once each; a 502/504 names no upstream."""
    assert resp.status == status, resp
    for name in ("X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy",
                 "Content-Security-Policy", "X-Request-Id", "Cache-Control"):
        assert len(resp.all(name)) == 1, (name, resp)
    check_security_headers(resp.hdict())
    assert resp.all("Content-Type") == [JSON_TYPE], resp
    doc = json.loads(resp.body)
    assert list(doc) == ["error"], doc
    err = doc["error"]
    assert sorted(err) == ["code", "message", "request_id"], err
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"], err
    assert err["request_id"] == resp.one("X-Request-Id")
    if status >= 500:
        for leak in ("/", "127.0.0.1", "unix", "http:"):
            assert leak not in err["message"], err
    return err


def check_gateway_headers(resp, cache=None):
    """On a proxied answer: the gateway's security headers, each once."""
    assert resp.all("X-Content-Type-Options") == ["nosniff"], resp
    assert resp.all("X-Frame-Options") == ["DENY"], resp
    assert resp.all("Referrer-Policy") == ["no-referrer"], resp
    csp = resp.all("Content-Security-Policy")
    assert len(csp) == 1 and "frame-ancestors 'none'" in csp[0], resp
    rid = resp.all("X-Request-Id")
    assert len(rid) == 1 and RID.fullmatch(rid[0]), resp
    if cache is not None:
        assert resp.all("Cache-Control") == [cache], resp


# ---- accounts -----------------------------------------------------------------------------


def call(stack, method, path, token=None, body=None):
    h = dict(HEADERS, **{"Content-Type": "application/json"})
    if token:
        h["Authorization"] = "Bearer " + token
    return requests.request(method, stack.url + path, headers=h, timeout=30,
                            data=json.dumps(body) if body is not None else None)


def register(stack, name):
    r = call(stack, "POST", "/api/v1/auth/register", body={"username": name, "password": PW})
    assert r.status_code == 201, r.text


def login(stack, name, pw=PW):
    r = call(stack, "POST", "/api/v1/auth/login", body={"username": name, "password": pw})
    assert r.status_code == 200, r.text
    return r.json()


def step_up(stack, token, pw=PW):
    return call(stack, "POST", "/api/v1/auth/step-up", token, {"password": pw})


def make_users(stack, prefix):
    founder = login(stack, FOUNDER, FOUNDER_PW)
    register(stack, prefix + "-member")
    r = call(stack, "POST", "/api/v1/users", founder["access_token"],
             {"username": prefix + "-admin", "password": PW, "role": "admin"})
    assert r.status_code == 201, r.text
    return {"member": login(stack, prefix + "-member"), "admin": login(stack, prefix + "-admin"),
            "founder": founder}


def signing_key(stack):
    """The current signing key, read as an attacker with the data dir would."""
    path = next(stack.dir.glob("var/**/signing.keys"))
    kid, seed, _, _ = path.read_text().splitlines()[-1].split()
    return kid, Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed)[:32])


def claims_of(token):
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


# ---- what the upstream saw -----------------------------------------------------------------


def seen(resp, upstream):
    """The upstream's record of the request an echo answered."""
    assert resp.status == 200, resp
    return upstream.records[resp.json()["seq"]]


def magnetar_headers(rec):
    out = {}
    for n, v in rec.headers:
        k = n.strip().lower().replace("_", "-")
        if k.startswith("x-magnetar-"):
            out.setdefault(k, []).append(v)
    return out


def check_identity(rec, who):
    """`who` a login answer (its user, role and session), or None: public."""
    got = magnetar_headers(rec)
    if who is None:
        assert got == {}, rec.headers
    else:
        assert got == {"x-magnetar-user": [who["user"]["id"]],
                       "x-magnetar-role": [who["user"]["role"]],
                       "x-magnetar-session": [who["session_id"]]}, rec.headers


def check_forwarded(rec, resp, host=HOST):
    assert rec.normalised("x-forwarded-for") == ["127.0.0.1"], rec.headers
    assert rec.normalised("x-forwarded-proto") == ["http"], rec.headers
    assert rec.normalised("x-forwarded-host") == [host], rec.headers
    assert rec.normalised("forwarded") == [], rec.headers
    assert rec.normalised("x-real-ip") == [], rec.headers
    assert rec.normalised("x-request-id") == [resp.one("X-Request-Id")], rec.headers


# ---- the main stack ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def up():
    u = Upstream().start()
    yield u
    u.stop()


@pytest.fixture(scope="module")
def sock_up(tmp_path_factory):
    u = Upstream(unix_path=tmp_path_factory.mktemp("proxysock") / "up.sock").start()
    yield u
    u.stop()


@pytest.fixture(scope="module")
def dead_port():
    return free_port()  # nothing listens there


@pytest.fixture(scope="module")
def stack(tmp_path_factory, up, sock_up, dead_port):
    u = up.url
    entries = [
        f"/pub {u} public",
        f"/pub/private {u} authenticated",
        f"/app\t{u}\tauthenticated",
        f"/mem {u} role=member",
        f"/adm {u} role=admin",
        f"/fnd {u} role=founder",
        f"/su {u} step-up",
        f"/su1 {u} step-up=1",
        f"/tok {u} authenticated token",
        f"/slow {u} public timeout=1",
        f"/dead http://127.0.0.1:{dead_port} public",
        f"/sock {sock_up.url} public",
        f"/small {u} public max-body=1000",
    ]
    # Both separators, and runs of blanks between tokens.
    value = ";".join(entries[:6]) + "\n" + "\n".join(entries[6:10]) + ";" + \
        ";".join(e.replace(" ", "  ") for e in entries[10:])
    s = Stack(tmp_path_factory.mktemp("proxy"), {
        "MAGNETAR_HIBP_MODE": "off",
        "MAGNETAR_FOUNDER_USERNAME": FOUNDER,
        "MAGNETAR_FOUNDER_PASSWORD": FOUNDER_PW,
        "MAGNETAR_MAX_SESSIONS": "100",  # the tests log the same users in many times
        "MAGNETAR_CORS_ORIGINS": ORIGIN,
        "MAGNETAR_UPSTREAMS": value,
    }).start()
    s.gateway_pid = s.service_pid("gateway")
    yield s
    stopped_cleanly(s)


@pytest.fixture(scope="module")
def users(stack):
    return make_users(stack, "px")


@pytest.fixture(scope="module")
def stepped_up_early(stack, users):
    """A session that stepped up at the start of the module; the last test
    finds its one-minute window closed (and the five-minute one open)."""
    t = login(stack, "px-member")["access_token"]
    at = time.monotonic()
    r = step_up(stack, t)
    assert r.status_code == 204, r.text
    return t, at


@pytest.fixture(scope="module")
def bad_auth(stack, users):
    """Authorization values that must never pass a policy."""
    member = users["member"]
    claims = claims_of(member["access_token"])
    kid, key = signing_key(stack)
    now = int(time.time())
    expired = jwt.encode(dict(claims, iat=now - 1000, exp=now - 100), key, algorithm="EdDSA",
                         headers={"kid": kid})
    forged = jwt.encode(dict(claims, role="founder"), Ed25519PrivateKey.generate(),
                        algorithm="EdDSA", headers={"kid": kid})
    unsigned = (base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
                + "." + member["access_token"].split(".")[1] + ".")
    out = login(stack, "px-member")
    r = call(stack, "POST", "/api/v1/auth/logout", out["access_token"])
    assert r.status_code == 204, r.text
    return {
        "none": None,
        "garbage": "Bearer garbage",
        "empty_bearer": "Bearer ",
        "basic": "Basic " + base64.b64encode(b"px-member:" + PW.encode()).decode(),
        "token_without_scheme": member["access_token"],
        "expired": "Bearer " + expired,
        "forged": "Bearer " + forged,
        "alg_none": "Bearer " + unsigned,
        "refresh_token": "Bearer " + member["refresh_token"],
        "logged_out": "Bearer " + out["access_token"],
    }


def test_the_stack_serves_every_prefix(stack, up, sock_up, users, stepped_up_early):
    t = stepped_up_early[0]
    for target, token, upstream in (("/pub/echo", None, up), ("/app/echo", t, up),
                                    ("/su/echo", t, up), ("/su1/echo", t, up),
                                    ("/sock/echo", None, sock_up)):
        r = get(stack, target, token)
        assert r.status == 200, (target, r, stack.logs())
        assert seen(r, upstream).target == target


# ---- routing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [
    "/pub", "/pub/", "/pub?only=query", "/pub/echo", "/pub/echo/a%20b/%C3%A9/%41%42",
    "/pub/echo?x=1&y=%2F%2e%2E&z=a+b&empty=&flag", "/pub/echo?q=..%2F..%2Fetc",
    "/pub/echo/~user/a;b=c/x,y", "/pub/echo/%25%32%65",
])
def test_path_and_query_reach_the_upstream_exactly_as_sent(stack, up, target):
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        body = b"payload" if method in ("POST", "PUT", "PATCH") else None
        r = get(stack, target, method=method, body=body)
        rec = seen(r, up)
        assert (rec.method, rec.target) == (method, target), r
        assert bytes(rec.body) == (body or b"")


def test_a_prefix_matches_whole_segments_and_the_longest_wins(stack, up, users):
    t = users["member"]
    for target in ("/pub/privateer", "/pub/private-not/x", "/pub/x/private", "/pub/privat"):
        r = get(stack, target)
        rec = seen(r, up)
        assert rec.target == target
        check_identity(rec, None)
    for target in ("/pubx", "/pub.x", "/pu", "/apple", "/app2/echo", "/su10/echo",
                   "/APP/echo", "/Pub/echo", "/x/pub/echo"):
        before = up.snapshot()
        r = get(stack, target, t["access_token"])
        check_err(r, 404, "not_found")
        assert up.snapshot() == before, target
    for target in ("/pub/private", "/pub/private/", "/pub/private/echo", "/pub/private?x=1"):
        before = up.snapshot()
        check_err(get(stack, target), 401, "unauthorized")
        assert up.snapshot() == before, target
        rec = seen(get(stack, target, t["access_token"]), up)
        assert rec.target == target
        check_identity(rec, t)


@pytest.mark.parametrize("target", ["/pub/%70rivate/echo", "/pub/privat%65/echo",
                                    "/%61pp/echo", "/ap%70/echo", "/%73u/echo"])
def test_a_percent_encoded_prefix_does_not_slip_past_its_policy(stack, up, target):
    """Decoded, these name a protected prefix: matched on the raw bytes they
    would reach the upstream (which decodes them) without its policy."""
    before = up.snapshot()
    r = get(stack, target)
    assert r.status in (400, 401, 404), r
    assert up.snapshot() == before


@pytest.mark.parametrize("target", ["http://proxy-test.example/app/echo",
                                    "http://127.0.0.1/adm/echo", "HTTP://x/su/echo",
                                    "//evil.example/app/echo"])
def test_an_absolute_form_target_does_not_slip_past_a_policy(stack, up, target):
    before = up.snapshot()
    r = get(stack, target)
    assert r.status in (400, 401, 404), r
    assert up.snapshot() == before


TRAVERSAL = [
    "/pub/../app/echo", "/pub/./echo", "/pub/echo/..", "/pub/echo/.", "/pub/..", "/pub/.",
    "/pub/x/../../app/echo", "/pub/%2e%2e/app/echo",
    "/pub/%2E%2E/app/echo", "/pub/.%2e/app/echo", "/pub/%2e./app/echo", "/pub/%2e/echo",
    "/pub/%2E/echo", "/pub/echo/%2e%2e", "/pub/echo%2f..%2fapp", "/pub/echo%2Fx",
    "/pub/%2fapp/echo", "/pub/echo%5cx", "/pub/echo%5C..%5Capp", "/pub/echo\\x",
    "/pub/..\\app/echo", "/pub/echo%00", "/pub/echo%00.json", "/pub/%00/echo",
    "/pub/../app/echo?x=1", "/pub/%2e%2e?x=1",
]


@pytest.mark.parametrize("target", TRAVERSAL)
def test_traversal_shapes_are_refused_before_the_upstream(stack, up, target):
    before = up.snapshot()
    check_err(get(stack, target), 400, "invalid_request")
    assert up.snapshot() == before


def test_traversal_is_refused_on_a_route_whose_policy_is_met(stack, up, users):
    member = users["member"]["access_token"]
    for target in ("/app/../adm/echo", "/app/%2e%2e/adm/echo", "/app/echo%2f..%2f..%2fadm",
                   "/app/.%2E/fnd/echo", "/app/echo%5c..%5cadm", "/tok/%00",
                   "/pub/private/../echo", "/pub/private/%2e%2e/echo"):
        before = up.snapshot()
        check_err(get(stack, target, member), 400, "invalid_request")
        assert up.snapshot() == before, target
    for target in ("/adm/../app/echo", "/adm/%2e%2e/app/echo", "/pub%2f..%2fapp/echo",
                   "/pub%2F..%2Fadm/echo", "/pub%5c..%5cadm/echo"):
        before = up.snapshot()
        r = get(stack, target, member)
        assert r.status in (400, 403, 404), (target, r)
        assert up.snapshot() == before, target


# ---- identity and forwarding headers -------------------------------------------------------------


def test_forwarding_and_identity_headers(stack, up, users):
    r = get(stack, "/pub/echo")
    rec = seen(r, up)
    check_forwarded(rec, r)
    check_identity(rec, None)
    for route, who in (("/app", "member"), ("/mem", "member"), ("/adm", "admin"),
                       ("/fnd", "founder"), ("/tok", "member"), ("/pub/private", "admin")):
        r = get(stack, route + "/echo", users[who]["access_token"])
        rec = seen(r, up)
        check_forwarded(rec, r)
        check_identity(rec, users[who])
    # requests' own Host: the gateway's address as the client wrote it
    r = requests.get(stack.url + "/pub/echo", headers=HEADERS, timeout=15)
    rec = up.records[r.json()["seq"]]
    assert rec.normalised("x-forwarded-host") == [f"127.0.0.1:{stack.port}"]
    assert rec.normalised("x-request-id") == [r.headers["X-Request-Id"]]


def test_a_valid_token_on_a_public_route_adds_no_identity(stack, up, users):
    rec = seen(get(stack, "/pub/echo", users["admin"]["access_token"]), up)
    check_identity(rec, None)
    assert rec.normalised("authorization") == []


SPOOF = [
    ("X-Magnetar-User", "evil-user"), ("X-Magnetar-User", "evil-user-again"),
    ("x-magnetar-user", "evil-lower"), ("X-MAGNETAR-ROLE", "founder"),
    ("x-MaGnEtAr-SeSsIoN", "evil-session"), ("X_Magnetar_User", "evil-underscore"),
    ("X_MAGNETAR_ROLE", "founder"), ("x-magnetar_session", "evil-mixed"),
    ("X-Magnetar-Admin", "evil-true"), ("X-Magnetar-", "evil-empty-suffix"),
    ("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "7.7.7.7, 6.6.6.6"),
    ("x-forwarded-proto", "https-evil"), ("X-Forwarded-Host", "evil.example"),
    ("X_Forwarded_For", "6.6.6.7"), ("X-Forwarded_Host", "evil2.example"),
    ("x_forwarded_proto", "evil-proto"), ("Forwarded", "for=6.6.6.6;proto=https;host=evil.example"),
    ("FORWARDED", "for=6.6.6.8"), ("X-Real-IP", "6.6.6.9"), ("x_real_ip", "6.6.6.10"),
    ("X-REAL-IP", "6.6.6.11"),
]
EVIL = ("evil", "6.6.6", "7.7.7")


def no_evil(rec):
    for n, v in rec.headers:
        assert not any(e in v for e in EVIL), (n, v, rec.headers)


@pytest.mark.parametrize("route,who", [("/pub", None), ("/sock", None), ("/app", "member"),
                                       ("/adm", "admin"), ("/fnd", "founder"),
                                       ("/tok", "member"), ("/pub/private", "member")])
def test_spoofed_identity_and_forwarding_headers_never_reach_the_upstream(
        stack, up, sock_up, users, route, who):
    token = users[who]["access_token"] if who else None
    r = get(stack, route + "/echo", token, headers=SPOOF)
    rec = seen(r, sock_up if route == "/sock" else up)
    check_forwarded(rec, r)
    check_identity(rec, users[who] if who else None)
    no_evil(rec)
    # The spoofed values alone, without a token, are refused where a token is needed.
    if who:
        before = up.snapshot()
        check_err(get(stack, route + "/echo", headers=SPOOF), 401, "unauthorized")
        assert up.snapshot() == before


def test_identity_headers_in_a_chunked_bodys_trailers_never_reach_the_upstream(stack, up,
                                                                              users):
    member = users["member"]
    body = (b"5\r\nhello\r\n0\r\nX-Magnetar-User: evil-trailer\r\n"
            b"X-Forwarded-For: 6.6.6.6\r\nX_Magnetar_Role: founder\r\n\r\n")
    for route, who in (("/pub", None), ("/app", member)):
        before = up.snapshot()
        r = get(stack, route + "/echo", who["access_token"] if who else None, method="POST",
                body=body, headers=[("Transfer-Encoding", "chunked"),
                                    ("Trailer", "X-Magnetar-User")])
        if r.status == 400:  # refusing trailers is fine, if nothing went on
            assert up.snapshot() == before
            continue
        rec = seen(r, up)
        assert bytes(rec.body) == b"hello"
        check_identity(rec, who)
        no_evil(rec)
        assert not any(b"evil" in t or b"6.6.6" in t or b"agnetar" in t.lower()
                       for t in rec.trailers), rec.trailers


def test_an_obs_folded_request_header_cannot_carry_an_identity_header(stack, up):
    before = up.snapshot()
    with Conn(stack.port) as c:
        c.send(b"GET /pub/echo HTTP/1.1\r\nHost: x\r\nX-Foo: a\r\n X-Magnetar-User: evil-fold\r\n"
               b"X-Bar: b\r\n\tX-Forwarded-For: 6.6.6.6\r\n\r\n")
        r = c.response()
    if r.status == 400:
        assert up.snapshot() == before
        return
    rec = seen(r, up)
    assert b"\r\n " not in rec.raw_head and b"\r\n\t" not in rec.raw_head, rec.raw_head
    assert magnetar_headers(rec) == {}
    assert rec.normalised("x-forwarded-for") == ["127.0.0.1"], rec.headers


def test_a_client_x_request_id_is_not_what_the_upstream_gets(stack, up):
    r = get(stack, "/pub/echo", headers=[("X-Request-Id", "evil-request-id"),
                                         ("x-request-id", "evil-2")])
    rec = seen(r, up)
    assert rec.normalised("x-request-id") == [r.one("X-Request-Id")], rec.headers
    assert RID.fullmatch(r.one("X-Request-Id"))
    no_evil(rec)


def test_authorization_reaches_only_a_route_with_the_token_option(stack, up, users):
    t = users["member"]["access_token"]
    rec = seen(get(stack, "/tok/echo", t, headers=[("Proxy-Authorization", "Basic ZXZpbDpldmls")]),
               up)
    assert rec.normalised("authorization") == ["Bearer " + t], rec.headers
    assert rec.normalised("proxy-authorization") == []
    for route in ("/app", "/mem", "/pub/private"):
        rec = seen(get(stack, route + "/echo", t), up)
        assert rec.normalised("authorization") == [], (route, rec.headers)
    rec = seen(get(stack, "/pub/echo", headers=[("Authorization", "Basic ZXZpbDpldmls")]), up)
    assert rec.normalised("authorization") == []


# ---- policies -------------------------------------------------------------------------------------

PROTECTED = ["/app/echo", "/mem/echo", "/adm/echo", "/fnd/echo", "/su/echo", "/su1/echo",
             "/tok/echo", "/pub/private/echo"]


@pytest.mark.parametrize("target", PROTECTED)
def test_without_a_valid_token_every_policy_is_401_and_the_upstream_sees_nothing(
        stack, up, bad_auth, target):
    for kind, value in bad_auth.items():
        before = up.snapshot()
        r = get(stack, target, headers=[("Authorization", value)] if value is not None else [])
        assert r.status == 401, (kind, r)
        check_err(r, 401, "unauthorized")
        assert up.snapshot() == before, kind


def test_roles_at_least_that_high_pass_and_lower_ones_are_403(stack, up, users):
    cases = [("/mem", "member", 200), ("/mem", "admin", 200), ("/mem", "founder", 200),
             ("/adm", "member", 403), ("/adm", "admin", 200), ("/adm", "founder", 200),
             ("/fnd", "member", 403), ("/fnd", "admin", 403), ("/fnd", "founder", 200)]
    for route, who, want in cases:
        before = up.snapshot()
        r = get(stack, route + "/echo", users[who]["access_token"])
        if want == 403:
            check_err(r, 403, "forbidden")
            assert up.snapshot() == before, (route, who)
        else:
            check_identity(seen(r, up), users[who])


def test_a_token_claiming_a_higher_role_with_a_foreign_key_is_refused(stack, up, users):
    claims = claims_of(users["member"]["access_token"])
    kid = json.loads(base64.urlsafe_b64decode(users["member"]["access_token"].split(".")[0]
                                              + "=="))["kid"]
    forged = jwt.encode(dict(claims, role="founder"), Ed25519PrivateKey.generate(),
                        algorithm="EdDSA", headers={"kid": kid})
    for route in ("/adm", "/fnd"):
        before = up.snapshot()
        check_err(get(stack, route + "/echo", forged), 401, "unauthorized")
        assert up.snapshot() == before


def test_step_up_policy_needs_a_step_up(stack, up, users):
    t = login(stack, "px-member")
    token = t["access_token"]
    for route in ("/su", "/su1"):
        before = up.snapshot()
        check_err(get(stack, route + "/echo", token), 401, "step_up_required")
        assert up.snapshot() == before
    # Other policies are not affected by it.
    check_identity(seen(get(stack, "/app/echo", token), up), t)
    # A wrong password is no step-up.
    r = step_up(stack, token, "not-the-password-1")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials", r.text
    before = up.snapshot()
    check_err(get(stack, "/su/echo", token), 401, "step_up_required")
    assert up.snapshot() == before
    r = step_up(stack, token)
    assert r.status_code == 204, r.text
    for route in ("/su", "/su1"):
        r = get(stack, route + "/echo", token)
        rec = seen(r, up)
        check_identity(rec, t)
        check_forwarded(rec, r)
    # The step-up belongs to that session, not to the user.
    other = login(stack, "px-member")
    before = up.snapshot()
    check_err(get(stack, "/su/echo", other["access_token"]), 401, "step_up_required")
    assert up.snapshot() == before


def test_a_logged_out_session_is_refused_at_once_on_every_policy(stack, up, users):
    a = login(stack, "px-admin")
    token = a["access_token"]
    assert step_up(stack, token).status_code == 204
    for route in ("/app", "/adm", "/su", "/tok", "/pub/private"):
        assert get(stack, route + "/echo", token).status == 200, route
    r = call(stack, "POST", "/api/v1/auth/logout", token)
    assert r.status_code == 204, r.text
    for route in ("/app", "/adm", "/su", "/tok", "/pub/private"):
        before = up.snapshot()
        check_err(get(stack, route + "/echo", token), 401, "unauthorized")
        assert up.snapshot() == before, route


def test_a_session_revoked_by_magctl_is_refused(stack, up):
    t = login(stack, "px-member")
    assert get(stack, "/app/echo", t["access_token"]).status == 200
    out = stack.magctl("session", "revoke", t["session_id"])
    assert out.returncode == 0, out.stdout + out.stderr
    # auth tells the gateway by its event stream: asynchronous by nature.
    assert wait_until(lambda: get(stack, "/app/echo", t["access_token"]).status == 401, 5)
    before = up.snapshot()
    check_err(get(stack, "/app/echo", t["access_token"]), 401, "unauthorized")
    assert up.snapshot() == before


# ---- hop-by-hop ------------------------------------------------------------------------------------

HOP_REQUESTS = {
    "connection_close_names_a_header": [("Connection", "close, X-Secret"),
                                        ("X-Secret", "s3cr3t")],
    "connection_keep_alive_names_two": [("Connection", "keep-alive, X-Secret,x-other"),
                                        ("X-Secret", "s3cr3t"), ("X-Other", "s3cr3t-2"),
                                        ("Keep-Alive", "timeout=5")],
    "connection_twice": [("Connection", "X-Secret"), ("Connection", "X-Other"),
                         ("X-Other", "s3cr3t-2"), ("X-Secret", "s3cr3t")],
    "fixed_hop_by_hop": [("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"),
                         ("TE", "trailers"), ("Trailer", "X-Trail"), ("Upgrade", "h2c"),
                         ("Proxy-Authorization", "Basic czNjcjN0OnMzY3IzdA==")],
    "h2c_upgrade_attempt": [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
                            ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")],
    "names_a_forwarding_header": [("Connection", "X-Forwarded-For, X-Magnetar-User")],
}
HOP_NAMES = {"keep-alive", "proxy-connection", "te", "trailer", "upgrade", "proxy-authorization",
             "x-secret", "x-other", "http2-settings"}


@pytest.mark.parametrize("case", sorted(HOP_REQUESTS))
@pytest.mark.parametrize("route", ["/pub", "/app"])
def test_hop_by_hop_request_headers_stay_with_the_gateway(stack, up, users, case, route):
    token = users["member"]["access_token"] if route == "/app" else None
    r = get(stack, route + "/echo", token, headers=HOP_REQUESTS[case] + [("X-Kept", "yes")])
    rec = seen(r, up)
    names = {n.lower() for n in rec.names()}
    assert not names & HOP_NAMES, rec.headers
    for v in rec.normalised("connection"):
        assert not {t.strip().lower() for t in v.split(",")} & (HOP_NAMES | {"x-forwarded-for",
                                                                             "x-magnetar-user"}), v
    for n, v in rec.headers:
        assert "s3cr3t" not in v and "czNjcjN0" not in v and "timeout=5" not in v, (n, v)
    assert rec.all("X-Kept") == ["yes"]
    # The gateway's own forwarding headers are not lost by being named.
    check_forwarded(rec, r)
    check_identity(rec, users["member"] if token else None)


def test_hop_by_hop_response_headers_stay_with_the_gateway(stack, up):
    up.canned["hop"] = {"status": 200, "body": b"hop", "headers": [
        ("Connection", "X-Up-Secret, x-up-other"), ("X-Up-Secret", "s3cr3t"),
        ("X-Up-Other", "s3cr3t-2"), ("Keep-Alive", "timeout=99, max=7"),
        ("Proxy-Connection", "keep-alive"), ("Upgrade", "h2c"), ("Trailer", "X-Up-Trailer"),
        ("TE", "trailers"), ("Proxy-Authorization", "Basic czNjcjN0OnMzY3IzdA=="),
        ("X-Up-Kept", "kept"), ("Content-Type", "text/plain")]}
    r = get(stack, "/pub/canned?name=hop")
    assert r.status == 200 and r.body == b"hop", r
    names = {n.lower() for n, _ in r.headers}
    assert not names & {"x-up-secret", "x-up-other", "keep-alive", "proxy-connection", "upgrade",
                        "trailer", "te", "proxy-authorization"}, r.headers
    for v in r.all("Connection"):
        assert "x-up" not in v.lower(), r.headers
    for n, v in r.headers:
        assert "s3cr3t" not in v and "timeout=99" not in v and "czNjcjN0" not in v, (n, v)
    assert r.all("X-Up-Kept") == ["kept"]


def test_a_long_upstream_connection_header_still_hides_what_it_names(stack, up):
    names = ", ".join(f"x-pad-{i:04d}" for i in range(200))  # about 2.4 KB
    up.canned["hoplong"] = {"status": 200, "body": b"hop", "headers": [
        ("Connection", names + ", X-Up-Secret"), ("X-Up-Secret", "s3cr3t"),
        ("X-Pad-0000", "s3cr3t-pad"), ("X-Up-Kept", "kept")]}
    r = get(stack, "/pub/canned?name=hoplong")
    assert r.status == 200 and r.body == b"hop", r
    for n, v in r.headers:
        assert "s3cr3t" not in v, (n, v)
    assert r.all("X-Up-Kept") == ["kept"]


def test_an_upstream_switching_protocols_unasked_is_a_bad_gateway(stack, up):
    """A 101 to a request that asked for no upgrade would turn the client's
    connection into a tunnel to the upstream, past every later policy check."""
    up.canned["switch"] = {"status": 101, "reason": "Switching Protocols", "headers": [
        ("Upgrade", "h2c"), ("Connection", "Upgrade")]}
    with Conn(stack.port) as c:
        c.send(request_bytes("GET", "/pub/canned?name=switch"))
        r = c.response()
        assert r.status != 101, r
        check_err(r, 502, "bad_gateway")
    assert requests.get(stack.url + "/healthz", timeout=5).status_code == 200


# ---- framing ----------------------------------------------------------------------------------------

SMUGGLE = {
    "content_length_and_transfer_encoding": (
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
    "transfer_encoding_and_content_length": (
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
    "content_length_twice_same": (b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
    "content_length_twice_different": (b"Content-Length: 5\r\nContent-Length: 40\r\n", b"hello"),
    "transfer_encoding_gzip_chunked": (b"Transfer-Encoding: gzip, chunked\r\n",
                                       b"5\r\nhello\r\n0\r\n\r\n"),
    "transfer_encoding_gzip_then_chunked": (
        b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
    "transfer_encoding_chunked_twice": (
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        b"5\r\nhello\r\n0\r\n\r\n"),
    "transfer_encoding_space_before_colon": (b"Transfer-Encoding : chunked\r\n",
                                             b"5\r\nhello\r\n0\r\n\r\n"),
    "content_length_tab_before_colon": (b"Content-Length\t: 5\r\n", b"hello"),
}


@pytest.mark.parametrize("name", sorted(SMUGGLE))
def test_smuggling_shapes_are_400_and_never_reach_the_upstream(stack, up, name):
    framing, body = SMUGGLE[name]
    pipelined = b"GET /pub/echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    before = up.snapshot()
    with Conn(stack.port) as c:
        c.send(b"POST /pub/echo HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n" + body + pipelined)
        check_err(c.response(), 400, "invalid_request")
        c.rest(5)  # closed after the refusal: the pipelined GET is never read as a request
    assert up.snapshot() == before


def test_a_request_inside_a_body_stays_a_body(stack, up):
    inner = (b"GET /pub/echo/admin HTTP/1.1\r\nHost: x\r\nX-Smuggled: 1\r\n\r\n"
             b"GET /app/echo HTTP/1.1\r\nHost: x\r\n\r\n")
    n0 = up.count()
    c = Conn(stack.port)
    try:
        c.send(request_bytes("POST", "/pub/echo", [("Content-Type", "text/plain")], inner))
        r = c.response()
        rec = seen(r, up)
        assert rec.target == "/pub/echo" and bytes(rec.body) == inner
        if r.get("Connection", "").lower() == "close":
            c.close()
            c = Conn(stack.port)
        c.send(request_bytes("GET", "/pub/echo/after"))
        assert c.response().status == 200
    finally:
        c.close()
    assert [x.target for x in up.since(n0)] == ["/pub/echo", "/pub/echo/after"]


def test_a_chunked_body_reaches_the_upstream_with_the_same_bytes(stack, up):
    parts = [b"a", b"0\r\n\r\nGET /pub/echo/admin HTTP/1.1\r\nHost: x\r\n\r\n", pattern(4096, 5),
             b"xyz", pattern(70000, 6), b"\r\n"]
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    n0 = up.count()
    r = get(stack, "/pub/echo", method="POST", body=body,
            headers=[("Transfer-Encoding", "chunked")])
    rec = seen(r, up)
    assert bytes(rec.body) == b"".join(parts)
    assert [x.target for x in up.since(n0)] == ["/pub/echo"]


# ---- bodies and streaming ---------------------------------------------------------------------------


def test_a_5mb_request_body_arrives_whole(stack, up, users):
    body = pattern(5 * MIB, 11)
    for route, token in (("/pub", None), ("/app", users["member"]["access_token"])):
        h = dict(HEADERS, **({"Authorization": "Bearer " + token} if token else {}))
        r = requests.post(stack.url + route + "/echo", data=body, headers=h, timeout=60)
        assert r.status_code == 200, r.text[:500]
        assert (r.json()["body_len"], r.json()["body_sha256"]) == (len(body), sha256(body))
    # chunked by the client (no Content-Length)
    r = requests.post(stack.url + "/pub/echo", headers=HEADERS, timeout=60,
                      data=(body[i:i + 100000] for i in range(0, len(body), 100000)))
    assert r.status_code == 200, r.text[:500]
    assert (r.json()["body_len"], r.json()["body_sha256"]) == (len(body), sha256(body))


def test_the_default_body_limit_is_10_mib(stack, up):
    body = pattern(10 * MIB, 12)
    r = requests.post(stack.url + "/pub/echo", data=body, headers=HEADERS, timeout=60)
    assert r.status_code == 200, r.text[:500]
    assert r.json()["body_sha256"] == sha256(body)
    before = up.snapshot()
    with Conn(stack.port) as c:  # announced, not sent: refused at once
        c.send(request_bytes("POST", "/pub/echo", [("Content-Length", str(10 * MIB + 1))]))
        check_err(c.response(), 413, "payload_too_large")
    assert up.snapshot() == before


def test_max_body_is_per_route(stack, up):
    r = get(stack, "/small/echo", method="POST", body=pattern(1000, 13))
    assert bytes(seen(r, up).body) == pattern(1000, 13)
    before = up.snapshot()
    check_err(get(stack, "/small/echo", method="POST", body=pattern(1001, 13)), 413,
              "payload_too_large")
    assert up.snapshot() == before
    # A 5000-byte body is nothing to /pub.
    r = get(stack, "/pub/echo", method="POST", body=pattern(5000, 13))
    assert seen(r, up).body == pattern(5000, 13)


def test_a_chunked_body_over_max_body_never_reaches_the_upstream_whole(stack, up):
    n0 = up.count()
    chunk = b"q" * 500
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(6)) + b"0\r\n\r\n"
    with Conn(stack.port) as c:
        try:
            c.send(request_bytes("POST", "/small/echo", [("Transfer-Encoding", "chunked")],
                                 body))
            r = c.response()
        except (ConnectionError, OSError):
            r = None  # closed on us: allowed
        if r is not None:
            check_err(r, 413, "payload_too_large")
    for rec in up.since(n0):
        # the gateway's connection to the upstream ends: asynchronous by nature
        assert rec.finished.wait(10), "the upstream's request never ended"
        assert len(rec.body) <= 1000, (len(rec.body), rec.complete)


@pytest.mark.parametrize("action", ["chunked", "close", "length"])
def test_a_20mb_response_arrives_whole(stack, up, action):
    n = 20 * MIB
    r = requests.get(stack.url + f"/pub/{action}?n={n}", headers=HEADERS, stream=True,
                     timeout=60)
    assert r.status_code == 200
    h = hashlib.sha256()
    got = 0
    for block in r.iter_content(1 << 16):
        h.update(block)
        got += len(block)
    assert (got, h.hexdigest()) == (n, sha256(pattern(n))), action
    assert r.headers["X-Frame-Options"] == "DENY"


def test_a_response_streams_while_the_upstream_is_still_sending(stack, up):
    gate = up.gate("g1")
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    try:
        conn.request("GET", "/pub/gate?name=g1", headers=HEADERS)
        first = b"first-chunk:g1\n"
        try:
            resp = conn.getresponse()
            got = resp.read(len(first))
        except socket.timeout:
            raise AssertionError("nothing reached the client while the upstream held the rest "
                                 "of its answer: the gateway buffers responses") from None
        assert got == first
        assert not gate.is_set()
        gate.set()
        assert resp.read() == pattern(100000, seed=7)
    finally:
        gate.set()
        conn.close()
    assert up.last().gate_held is False


# ---- answers --------------------------------------------------------------------------------------


def test_status_headers_cookies_and_body_pass_through(stack, up):
    up.canned["made"] = {"status": 201, "reason": "Created", "body": b"created!", "headers": [
        ("Set-Cookie", "a=1; Path=/; HttpOnly"), ("Set-Cookie", "b=2; Secure; SameSite=Strict"),
        ("Set-Cookie", "c=3"), ("X-Custom", "v1"), ("X-Custom", "v2"),
        ("Content-Type", "text/plain; charset=utf-8"), ("ETag", '"abc"'),
        ("Location", "/pub/elsewhere")]}
    r = get(stack, "/pub/canned?name=made")
    assert (r.status, r.body) == (201, b"created!"), r
    assert r.all("Set-Cookie") == ["a=1; Path=/; HttpOnly", "b=2; Secure; SameSite=Strict",
                                   "c=3"], r.headers
    assert ", ".join(r.all("X-Custom")) == "v1, v2"
    assert r.all("Content-Type") == ["text/plain; charset=utf-8"]
    assert r.all("ETag") == ['"abc"'] and r.all("Location") == ["/pub/elsewhere"]
    check_gateway_headers(r)
    # The upstream's own errors are its answers, not the gateway's.
    for status, body in ((302, b""), (404, b"upstream says no"), (418, b"teapot"),
                         (500, b"upstream broke"), (503, b"upstream busy")):
        up.canned[f"s{status}"] = {"status": status, "body": body,
                                   "headers": [("Content-Type", "text/plain"),
                                               ("Location", "/pub/x")]}
        r = get(stack, f"/pub/canned?name=s{status}")
        assert (r.status, r.body) == (status, body), r
        assert r.all("Content-Type") == ["text/plain"]


def test_the_gateways_security_and_cors_headers_win_once(stack, up, users):
    up.canned["sec"] = {"status": 200, "body": b"sec", "headers": [
        ("Content-Security-Policy", "default-src *"), ("X-Content-Type-Options", "sniff"),
        ("X-Frame-Options", "ALLOWALL"), ("Referrer-Policy", "unsafe-url"),
        ("X-Request-Id", "upstream-request-id"), ("Access-Control-Allow-Origin", "*"),
        ("Access-Control-Allow-Credentials", "true"),
        ("Access-Control-Expose-Headers", "X-Upstream-Secret"),
        ("Access-Control-Allow-Methods", "PUT, DELETE"),
        ("Cache-Control", "public, max-age=60"), ("Content-Type", "text/plain")]}

    def cors(r):
        return [(n.lower(), v) for n, v in r.headers if n.lower().startswith("access-control-")]

    r = get(stack, "/pub/canned?name=sec", headers=[("Origin", ORIGIN)])
    assert r.body == b"sec"
    check_gateway_headers(r, "public, max-age=60")
    assert "default-src *" not in r.one("Content-Security-Policy")
    got = cors(r)
    assert sorted(n for n, _ in got) == ["access-control-allow-credentials",
                                         "access-control-allow-origin",
                                         "access-control-expose-headers"], r.headers
    assert r.all("Access-Control-Allow-Origin") == [ORIGIN]
    assert r.all("Access-Control-Allow-Credentials") == ["true"]
    assert "X-Upstream-Secret" not in r.one("Access-Control-Expose-Headers")
    for origin in ("https://evil.example", None):
        r = get(stack, "/pub/canned?name=sec", headers=[("Origin", origin)] if origin else [])
        assert cors(r) == [], (origin, r.headers)
        check_gateway_headers(r, "public, max-age=60")
    # Any other policy: no-store, whatever the upstream says.
    for route, who in (("/app", "member"), ("/adm", "admin"), ("/pub/private", "member")):
        r = get(stack, route + "/canned?name=sec", users[who]["access_token"],
                headers=[("Origin", ORIGIN)])
        assert r.body == b"sec", r
        check_gateway_headers(r, "no-store")
        assert r.all("Access-Control-Allow-Origin") == [ORIGIN]


def test_head_and_bodiless_answers(stack, up):
    up.canned["hello"] = {"status": 200, "body": b"hello", "headers": [("Content-Type",
                                                                        "text/plain")]}
    up.canned["nocontent"] = {"status": 204, "headers": [("X-Up", "204")]}
    up.canned["notmod"] = {"status": 304, "headers": [("ETag", '"v1"'), ("X-Up", "304")]}
    steps = [("HEAD", "/pub/canned?name=hello", 200), ("HEAD", "/pub/echo", 200),
             ("HEAD", "/pub/chunked?n=5000", 200), ("HEAD", "/pub/length?n=5000", 200),
             ("GET", "/pub/canned?name=nocontent", 204), ("GET", "/pub/canned?name=notmod", 304),
             ("DELETE", "/pub/canned?name=nocontent", 204)]
    c = Conn(stack.port, timeout=10)
    try:
        for method, target, status in steps:
            n0 = up.count()
            c.send(request_bytes(method, target, [("If-None-Match", '"v1"')]))
            r = c.response(method)
            assert r.status == status and r.body == b"", (method, target, r)
            # (a HEAD may go on as a GET whose body the gateway drops)
            assert [(x.method if x.method != "GET" or method != "HEAD" else "HEAD", x.target)
                    for x in up.since(n0)] == [(method, target)]
            if status == 304:
                assert r.all("ETag") == ['"v1"']
            # Nothing may follow a bodiless answer but the next answer, or the end.
            more = c.stray()
            assert more in (None, b""), (method, target, "stray bytes", more)
            if more == b"" or r.get("Connection", "").lower() == "close":
                c.close()
                c = Conn(stack.port, timeout=10)
            c.send(request_bytes("GET", "/pub/echo/next"))
            r = c.response()
            assert r.status == 200 and r.json()["target"] == "/pub/echo/next", r
            more = c.stray(0.1)
            assert more in (None, b""), more
            if more == b"" or r.get("Connection", "").lower() == "close":
                c.close()
                c = Conn(stack.port, timeout=10)
    finally:
        c.close()


# ---- upstream failures -------------------------------------------------------------------------------


def test_nothing_listening_is_502(stack, dead_port):
    r = get(stack, "/dead/echo")
    err = check_err(r, 502, "bad_gateway")
    assert str(dead_port) not in err["message"]


def test_no_head_within_the_timeout_is_504(stack, up):
    t0 = time.monotonic()
    r = get(stack, "/slow/slow?s=4")
    elapsed = time.monotonic() - t0
    check_err(r, 504, "gateway_timeout")
    assert 0.8 < elapsed < 3.5, elapsed


def test_the_timeout_is_for_the_head_not_the_whole_answer(stack, up):
    """Head at once, then the body in five pieces 0.5 s apart: 2.5 s in all
    on a route with timeout=1, never silent for a whole second."""
    r = get(stack, "/slow/slowbody?s=2.5&n=5000")
    assert r.status == 200 and r.body == pattern(5000, seed=3), r


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_malformed_response_head_is_502(stack, up, kind):
    r = get(stack, f"/pub/bad?kind={kind}")
    check_err(r, 502, "bad_gateway")
    assert requests.get(stack.url + "/healthz", timeout=5).status_code == 200


def test_the_gateway_survived_every_upstream_failure(stack):
    assert requests.get(stack.url + "/healthz", timeout=5).status_code == 200
    assert requests.get(stack.url + "/readyz", timeout=5).status_code == 200
    assert stack.service_pid("gateway") == stack.gateway_pid, stack.logs()


# ---- WebSocket -----------------------------------------------------------------------------------------


def ws_headers(token=None, extra=()):
    h = [f"{k}: {v}" for k, v in HEADERS.items()] + list(extra)
    if token:
        h.append("Authorization: Bearer " + token)
    return h


def test_a_websocket_upgrade_passes_through_with_its_identity(stack, up, users):
    member = users["member"]
    n0 = up.count()
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{stack.port}/app/ws", timeout=10, suppress_origin=True,
        header=ws_headers(member["access_token"], ["X-Magnetar-User: evil-ws",
                                                   "X-Forwarded-For: 6.6.6.6"]))
    try:
        assert ws.getstatus() == 101
        ws.send("hello")
        assert ws.recv() == "hello"
        ws.send_binary(b"\x00\x01\x02binary\xff")
        assert ws.recv() == b"\x00\x01\x02binary\xff"
        big = "x" * 100000
        ws.send(big)
        assert ws.recv() == big
    finally:
        ws.close()
    recs = up.since(n0)
    assert len(recs) == 1, [r.target for r in recs]
    rec = recs[0]
    assert rec.target == "/app/ws"
    assert [v.lower() for v in rec.all("Upgrade")] == ["websocket"]
    check_identity(rec, member)
    assert rec.normalised("authorization") == []
    assert rec.normalised("x-forwarded-for") == ["127.0.0.1"]
    no_evil(rec)
    assert [(op, p) for op, p, _ in rec.ws_messages[:3]] == [
        (1, b"hello"), (2, b"\x00\x01\x02binary\xff"), (1, big.encode())]


def test_a_websocket_upgrade_on_a_public_route(stack, up):
    ws = websocket.create_connection(f"ws://127.0.0.1:{stack.port}/pub/ws", timeout=10,
                                     suppress_origin=True, header=ws_headers())
    try:
        ws.send("public")
        assert ws.recv() == "public"
    finally:
        ws.close()
    check_identity(up.last(), None)


@pytest.mark.parametrize("auth", [None, "Bearer garbage"])
@pytest.mark.parametrize("route", ["/app", "/adm", "/su"])
def test_a_websocket_upgrade_without_a_valid_token_is_401(stack, up, auth, route):
    before = up.snapshot()
    extra = [f"Authorization: {auth}"] if auth else []
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        websocket.create_connection(f"ws://127.0.0.1:{stack.port}{route}/ws", timeout=10,
                                    suppress_origin=True, header=ws_headers(extra=extra))
    assert e.value.status_code == 401
    assert up.snapshot() == before


def test_a_websocket_upgrade_by_a_member_on_an_admin_route_is_403(stack, up, users):
    before = up.snapshot()
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        websocket.create_connection(f"ws://127.0.0.1:{stack.port}/adm/ws", timeout=10,
                                    suppress_origin=True,
                                    header=ws_headers(users["member"]["access_token"]))
    assert e.value.status_code == 403
    assert up.snapshot() == before


# ---- Unix socket ---------------------------------------------------------------------------------------


def test_a_unix_socket_upstream(stack, sock_up):
    body = pattern(300000, 21)
    r = get(stack, "/sock/echo/x?y=%2F", method="POST", body=body)
    rec = seen(r, sock_up)
    assert rec.target == "/sock/echo/x?y=%2F" and bytes(rec.body) == body
    check_forwarded(rec, r)
    check_identity(rec, None)
    r = requests.get(stack.url + f"/sock/chunked?n={3 * MIB}", headers=HEADERS, timeout=30)
    assert r.status_code == 200 and r.content == pattern(3 * MIB)


# ---- docs/apps.md's example, as written ----------------------------------------------------------------


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    d = tmp_path_factory.mktemp("example")
    doc = (REPO / "docs" / "apps.md").read_text()
    m = re.search(r"^<!-- example: upstream\.py -->\n```python\n(.*?)^```\s*$", doc, re.S | re.M)
    assert m, "docs/apps.md has no ```python block after <!-- example: upstream.py -->"
    (d / "upstream.py").write_text(m.group(1))
    port = free_port()
    log_path = d / "upstream.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(["/usr/bin/python3", "upstream.py", str(port)], cwd=d, stdout=log,
                            stderr=subprocess.STDOUT)

    def listening():
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    assert wait_until(listening, 10), log_path.read_text()
    yield {"port": port, "log": log_path}
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def example_hits(example):
    """Requests the example served: BaseHTTPRequestHandler logs each one."""
    return example["log"].read_text().count('"GET ')


@pytest.fixture(scope="module")
def doc_stack(tmp_path_factory, example):
    d = tmp_path_factory.mktemp("proxy-doc")
    u = f"http://127.0.0.1:{example['port']}"
    conf = d / "upstreams.conf"
    conf.write_text("# docs/apps.md's example upstream, behind each policy\n"
                    f"/app {u} authenticated\n"
                    "\n"
                    "# the same service, public\n"
                    f"/pubex {u} public\n"
                    f"/admex {u} role=admin\n"
                    f"/suex {u} step-up\n")
    conf.chmod(0o644)
    s = Stack(d, {
        "MAGNETAR_HIBP_MODE": "off",
        "MAGNETAR_FOUNDER_USERNAME": FOUNDER,
        "MAGNETAR_FOUNDER_PASSWORD": FOUNDER_PW,
        "MAGNETAR_MAX_SESSIONS": "100",  # the tests log the same users in many times
        "MAGNETAR_UPSTREAMS": str(conf),
    }).start()
    yield s
    stopped_cleanly(s)


@pytest.fixture(scope="module")
def doc_users(doc_stack):
    return make_users(doc_stack, "ex")


def example_get(stack, path, token=None, extra=None):
    h = dict(HEADERS, **(extra or {}))
    if token:
        h["Authorization"] = "Bearer " + token
    return requests.get(stack.url + path, headers=h, timeout=15)


def example_refused(stack, example, path, token, status, code):
    hits = example_hits(example)
    r = example_get(stack, path, token)
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    assert example_hits(example) == hits, "the example upstream saw the refused request"


def test_the_docs_example_behind_authenticated(doc_stack, example, doc_users):
    m = doc_users["member"]
    r = example_get(doc_stack, "/app/anything", m["access_token"])
    assert r.status_code == 200, r.text
    assert r.json() == {"hello": m["user"]["id"], "role": "member"}
    assert r.headers["Cache-Control"] == "no-store"
    example_refused(doc_stack, example, "/app/anything", None, 401, "unauthorized")
    example_refused(doc_stack, example, "/app/anything", "garbage", 401, "unauthorized")


def test_the_docs_example_behind_public(doc_stack, example, doc_users):
    for token in (None, doc_users["admin"]["access_token"]):
        r = example_get(doc_stack, "/pubex/anything", token,
                        {"X-Magnetar-User": "evil", "X-Magnetar-Role": "founder"})
        assert r.status_code == 200, r.text
        assert r.json() == {"hello": None, "role": None}


def test_the_docs_example_behind_role_admin(doc_stack, example, doc_users):
    example_refused(doc_stack, example, "/admex/anything", doc_users["member"]["access_token"],
                    403, "forbidden")
    a = doc_users["admin"]
    r = example_get(doc_stack, "/admex/anything", a["access_token"])
    assert r.status_code == 200, r.text
    assert r.json() == {"hello": a["user"]["id"], "role": "admin"}


def test_the_docs_example_behind_step_up(doc_stack, example, doc_users):
    t = login(doc_stack, "ex-member")
    example_refused(doc_stack, example, "/suex/anything", t["access_token"], 401,
                    "step_up_required")
    r = step_up(doc_stack, t["access_token"])
    assert r.status_code == 204, r.text
    r = example_get(doc_stack, "/suex/anything", t["access_token"])
    assert r.status_code == 200, r.text
    assert r.json() == {"hello": t["user"]["id"], "role": "member"}


# ---- the gateway's own routes win -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ov_up():
    u = Upstream().start()
    yield u
    u.stop()


@pytest.fixture(scope="module")
def ov_stack(tmp_path_factory, ov_up):
    u = ov_up.url
    s = Stack(tmp_path_factory.mktemp("proxy-overlap"), {
        "MAGNETAR_HIBP_MODE": "off",
        "MAGNETAR_UPSTREAMS": f"/api {u} public;/healthz {u} public;/readyz {u} public;"
                              f"/.well-known {u} public",
    }).start()
    yield s
    stopped_cleanly(s)


def test_the_gateways_own_routes_win_over_any_prefix(ov_stack, ov_up):
    s = ov_stack
    before = ov_up.snapshot()
    r = requests.get(s.url + "/healthz", headers=HEADERS, timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text
    r = requests.get(s.url + "/readyz", headers=HEADERS, timeout=10)
    assert r.status_code == 200 and "seq" not in r.json(), r.text
    r = requests.get(s.url + "/.well-known/jwks.json", headers=HEADERS, timeout=10)
    assert r.status_code == 200 and "keys" in r.json(), r.text
    register(s, "ov-member")
    t = login(s, "ov-member")
    r = call(s, "GET", "/api/v1/auth/me", t["access_token"])
    assert r.status_code == 200 and "seq" not in r.json(), r.text
    r = call(s, "GET", "/api/v1/auth/me")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", r.text
    r = call(s, "GET", "/api/v1/auth/login")
    assert r.status_code == 405, r.text
    assert ov_up.snapshot() == before
    # What is not a gateway route is still the prefix's.
    for target in ("/api/v2/echo", "/.well-known/echo/security.txt"):
        rec = seen(get(s, target), ov_up)
        assert rec.target == target


# ---- malformed configurations -------------------------------------------------------------------------------

MALFORMED = {
    "prefix_without_slash": "app http://127.0.0.1:9 public",
    "no_policy": "/app http://127.0.0.1:9",
    "no_upstream": "/app public",
    "a_lone_prefix_is_a_missing_file": "/app",
    "missing_file": "/nonexistent/magnetar/upstreams.conf",
    "other_scheme": "/app ftp://127.0.0.1:9 public",
    "port_out_of_range": "/app http://127.0.0.1:99999 public",
    "port_not_a_number": "/app http://127.0.0.1:port public",
    "relative_unix_path": "/app unix:relative.sock public",
    "unknown_policy": "/app http://127.0.0.1:9 everyone",
    "unknown_role": "/app http://127.0.0.1:9 role=superuser",
    "step_up_not_a_number": "/app http://127.0.0.1:9 step-up=soon",
    "step_up_negative": "/app http://127.0.0.1:9 step-up=-5",
    "timeout_not_a_number": "/app http://127.0.0.1:9 public timeout=never",
    "timeout_negative": "/app http://127.0.0.1:9 public timeout=-1",
    "max_body_not_a_number": "/app http://127.0.0.1:9 public max-body=lots",
    "max_body_negative": "/app http://127.0.0.1:9 public max-body=-1",
    "unknown_option": "/app http://127.0.0.1:9 public tokens",
    "one_bad_entry_among_good": "/ok http://127.0.0.1:9 public;/app http://127.0.0.1:9 bogus",
    "file_with_a_bad_line": "FILE:# upstreams\n/ok http://127.0.0.1:9 public\n"
                            "/app http://127.0.0.1:9 authenticated nonsense\n",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_value_refuses_the_start(tmp_path, name):
    value = MALFORMED[name]
    if value.startswith("FILE:"):
        conf = tmp_path / "upstreams.conf"
        conf.write_text(value[5:])
        conf.chmod(0o644)
        value = str(conf)
    s = Stack(tmp_path, {"MAGNETAR_HIBP_MODE": "off", "MAGNETAR_UPSTREAMS": value})
    log = open(s.log_path, "wb")
    proc = subprocess.Popen([str(BIN / "magnetar"), "up"], env=s.env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        # The refusal is logged by the supervisor or by the gateway it starts.
        wait_until(lambda: proc.poll() is not None or FATAL.search(s.full_log()), 20)
        text = s.full_log()
        try:
            served = requests.get(s.url + "/readyz", timeout=2).status_code
        except requests.RequestException:
            served = None
    finally:
        stop_or_explain(proc, s.full_log)
        log.close()
    assert FATAL.search(text), text[-4000:]
    assert served != 200, text[-4000:]


# ---- last: the step-up window closes -----------------------------------------------------------------------


def test_a_step_up_older_than_its_window_no_longer_passes(stack, up, stepped_up_early):
    token, at = stepped_up_early
    left = at + 62 - time.monotonic()
    if left > 0:
        time.sleep(left)
    before = up.snapshot()
    check_err(get(stack, "/su1/echo", token), 401, "step_up_required")
    assert up.snapshot() == before
    assert get(stack, "/su/echo", token).status == 200  # five minutes: still open
