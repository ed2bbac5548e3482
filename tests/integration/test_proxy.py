"""The gateway's upstream proxy (MAGNETAR_UPSTREAMS, docs/apps.md "Proxy
headers"), attacked through the real `magnetar up`: every policy refused
without a valid token (and the upstream sees nothing), roles and step-up,
identity and forwarding headers the client cannot forge, hop-by-hop headers,
request smuggling and path traversal between prefixes, bodies and answers
streamed whole, upstream failures as JSON errors, WebSockets, a Unix-socket
upstream, docs/apps.md's example upstream run as written, and malformed
configurations refused at start. From a security review: header bytes an
upstream may read as a line break, path shapes an upstream may read as
another path (case, ';', trailing dots and blanks, raw bytes), more client
headers frameworks trust, resets that must not end an answer cleanly, 304s,
empty header values, exchanges and threads that must not outlive their
sockets (`magctl stats gateway`), a cap of 64 exchanges per client, and
WebSocket relays that end with their session.

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
import struct
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
        f"/app/admin {u} role=admin",  # under /app: the path shapes' tests
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
    "/pub/echo/~user/a=b/x,y", "/pub/echo/%25%32%65",
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
    # (a prefix in another case is the prefix: test_a_prefix_matches_in_any_case)
    for target in ("/pubx", "/pub.x", "/pu", "/apple", "/app2/echo", "/su10/echo",
                   "/x/pub/echo"):
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


# ---- path shapes an upstream may read differently -------------------------------------------------
# An upstream may route case-insensitively (Windows, many frameworks), cut a
# segment at ';' (Java's path parameters, Tomcat: /app/admin;x reads as
# /app/admin), drop a segment's trailing dots or blanks (Windows/IIS:
# "admin." and "admin%20" read as "admin"), or read a raw blank or byte a
# request line may not hold as the line's end: each is matched by the
# gateway as it reads it, or refused before the upstream.


def test_a_prefix_matches_in_any_case(stack, up, users):
    member, admin = users["member"], users["admin"]
    for target in ("/app/ADMIN/x", "/app/Admin/echo", "/APP/admin/x", "/App/aDmIn",
                   "/APP/ADMIN/x?y=1"):
        before = up.snapshot()
        check_err(get(stack, target, member["access_token"]), 403, "forbidden")
        assert up.snapshot() == before, target
        rec = seen(get(stack, target, admin["access_token"]), up)  # the admin's policy met
        assert rec.target == target
        check_identity(rec, admin)
    for target in ("/APP/x", "/App/echo", "/aPP", "/PUB/PRIVATE/echo", "/Adm/echo", "/FND/echo",
                   "/SU/echo", "/Tok/echo"):
        before = up.snapshot()
        check_err(get(stack, target), 401, "unauthorized")
        assert up.snapshot() == before, target
    for target, who in (("/APP/echo", member), ("/Pub/echo", None), ("/PUB/echo", None)):
        rec = seen(get(stack, target, who["access_token"] if who else None), up)
        assert rec.target == target
        check_identity(rec, who)


# Paths a lenient upstream reads as one under a MORE SPECIFIC prefix than
# the gateway matched (/app/admin is role=admin under /app authenticated;
# /pub/private authenticated under /pub public): ';' path parameters (Java),
# a '.' suffix (Rails' "(.:format)", Spring's suffix match), trailing dots
# and blanks (IIS), encoded control bytes ("%0a" before a regex's '$').
ALIASING = [
    "/app/admin;x/users", "/app/admin;/x", "/app/admin./x", "/app/admin../x",
    "/app/admin%20/x", "/app/admin.json", "/app/ADMIN.json", "/app/admin%20%20/x",
    "/pub/private;x/echo", "/pub/private./echo", "/pub/private%20", "/pub/private.json",
    "/pub/private.json?q=1",
    # encoded control bytes, anywhere in the path
    "/pub/echo/a%09", "/app/admin%09/x", "/pub/echo/%0a", "/pub/echo/a%1fb", "/pub/echo/a%7f",
]


@pytest.mark.parametrize("target", ALIASING)
def test_a_path_an_upstream_may_read_under_a_stricter_prefix_is_400(stack, up, users, target):
    token = users["member"]["access_token"] if target.lower().startswith("/app") else None
    before = up.snapshot()
    check_err(get(stack, target, token), 400, "invalid_request")
    assert up.snapshot() == before


# The same shapes where no more specific prefix exists pass exactly as sent:
# an Angular matrix parameter, a jsessionid, "Washington,_D.C.", a file
# named with a blank.
PLAIN_SHAPES = [
    "/pub/echo/x;jsessionid=1", "/pub/echo/heroes;id=15", "/pub/echo/a;b=c/x",
    "/pub/echo/Washington,_D.C.", "/pub/echo/a.../b", "/pub/echo/x.?q=1", "/pub/echo/a%20/x",
    "/pub/echo/report.json", "/app/echo/admin.json",
]


@pytest.mark.parametrize("target", PLAIN_SHAPES)
def test_the_same_shapes_under_no_stricter_prefix_pass_as_sent(stack, up, users, target):
    token = users["member"]["access_token"] if target.startswith("/app") else None
    rec = seen(get(stack, target, token), up)
    assert rec.target == target


@pytest.mark.parametrize("target", ["/pub;/x", "/app;x/admin/x", "/pub;jsessionid=1/echo"])
def test_a_semicolon_right_after_a_prefix_is_under_no_prefix(stack, up, users, target):
    """`/pub;x` is not `/pub` followed by a segment: no prefix matches it,
    so it is the gateway's 404 (and a Java upstream, which would cut
    `;x` off, never sees it)."""
    token = users["member"]["access_token"] if target.startswith("/app") else None
    before = up.snapshot()
    check_err(get(stack, target, token), 404, "not_found")
    assert up.snapshot() == before


RAW_TARGETS = {
    "space_inside": b"/pub/a HTTP/1.1",
    "space_in_the_query": b"/pub/echo?q=a b",
    "tab_inside": b"/pub/a\tb",
    "tab_in_the_query": b"/pub/echo?q=a\tb",
    "byte_0x80_in_the_query": b"/pub/echo?q=\x80",
    "byte_0xff_in_the_path": b"/pub/\xff/x",
    "utf8_in_the_path": b"/pub/caf\xc3\xa9",
    "byte_0x7f_in_the_path": b"/pub/a\x7fb",
    "byte_0x01_in_the_query": b"/pub/echo?q=\x01",
    "byte_0x0b_in_the_path": b"/pub/a\x0bb",
    "bare_cr_in_the_path": b"/pub/a\rb",
    "byte_0x1f_in_the_path": b"/pub/a\x1fb",
    "on_an_authenticated_prefix": b"/app/admin\x80/x",
}


@pytest.mark.parametrize("name", sorted(RAW_TARGETS))
def test_a_raw_byte_a_target_may_not_hold_is_400(stack, up, users, name):
    target = RAW_TARGETS[name]
    auth = b"Authorization: Bearer " + users["member"]["access_token"].encode() + b"\r\n"
    raw = b"GET " + target + b" HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n" + auth + \
        b"".join(f"{k}: {v}\r\n".encode() for k, v in HEADERS.items()) + b"\r\n"
    before = up.snapshot()
    with Conn(stack.port) as c:
        c.send(raw)
        r = c.response()
    check_err(r, 400, "invalid_request")
    assert up.snapshot() == before


@pytest.mark.parametrize("target", ["/pub/my%20file", "/pub/echo/a%20b%20c/x",
                                    "/pub/echo/v1.2/x", "/pub/echo/.hidden",
                                    "/pub/echo/a.b.c", "/pub/echo/%7Euser"])
def test_what_is_no_such_shape_still_passes(stack, up, target):
    rec = seen(get(stack, target), up)
    assert rec.target == target


@pytest.mark.parametrize("target", ["/pub/echo?q=hello%20", "/pub/echo?file=a.",
                                    "/pub/echo?a=1;b=2"])
def test_the_shapes_are_the_paths_not_the_querys(stack, up, target):
    """Beyond the contract's letter: the segment rules are the path's. A
    search for "hello " or a file named "a." is a query an app must get."""
    rec = seen(get(stack, target), up)
    assert rec.target == target


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


# ---- request header bytes ------------------------------------------------------------------------
# A bare CR is a line break to some servers (Python's http.server): passed on
# inside a value, "X-Foo: a\rX-Magnetar-User: evil" would reach such an
# upstream as a forged identity header. Any byte a header name or value may
# not hold (RFC 9110 5.1, 5.5) is a 400 before any route, proxied or not.

FORGED_CR = "a\rX-Magnetar-User: evil-cr\rX-Forwarded-For: 6.6.6.6"


def refused_before_upstream(stack, up, raw, why):
    before = up.snapshot()
    with Conn(stack.port) as c:
        c.send(raw)
        r = c.response()
    check_err(r, 400, "invalid_request")
    assert up.snapshot() == before, ("the upstream saw it", why)


@pytest.mark.parametrize("route,who", [("/pub", None), ("/app", "member"), ("/tok", "member")])
def test_a_bare_cr_in_a_header_value_is_400_and_never_reaches_the_upstream(stack, up, users,
                                                                           route, who):
    auth = [("Authorization", "Bearer " + users[who]["access_token"])] if who else []
    for headers, host, why in (
            (auth + [("X-Foo", FORGED_CR)], HOST, "X-Foo"),
            (auth + [("X-Foo", "a\r")], HOST, "a CR at the end of a value"),
            (auth + [("X-Foo", "\rX-Magnetar-Role: founder")], HOST, "a CR at the start"),
            (auth + [("User-Agent", "ua\rX-Magnetar-User: evil-ua")], HOST, "a known header"),
            (auth, HOST + "\rX-Magnetar-User: evil-host", "Host"),
            ([("Authorization", auth[0][1] + "\rX-Magnetar-Role: founder")] if auth else
             [("Cookie", "a=b\rX-Magnetar-User: evil-cookie")], HOST, "the credential")):
        refused_before_upstream(stack, up, request_bytes("GET", route + "/echo", headers,
                                                         host=host), why)


@pytest.mark.parametrize("byte", [0x01, 0x07, 0x08, 0x0B, 0x0C, 0x0D, 0x0E, 0x1B, 0x1F, 0x7F])
def test_a_control_byte_in_a_header_value_is_400(stack, up, users, byte):
    value = "a" + chr(byte) + "b"
    refused_before_upstream(stack, up, request_bytes("GET", "/pub/echo", [("X-Foo", value)]),
                            "public")
    refused_before_upstream(
        stack, up, request_bytes("GET", "/app/echo", [
            ("Authorization", "Bearer " + users["member"]["access_token"]),
            ("X-Foo", value)]), "authenticated")


@pytest.mark.parametrize("name", ["X-Foo(1)", "X@Foo", "X/Foo", 'X"Foo', "X[1]", "X{1}",
                                  "X=Foo", "X?Foo", "X,Foo", "X;Foo", "X<a>", "X\\Foo",
                                  "X\x80Foo", "X\xffFoo", "X\x01Foo", "X\x7fFoo",
                                  "X\rFoo", "X-Magnetar-User\r", "X-Foo\x0b"])
def test_a_header_name_byte_that_is_no_token_char_is_400(stack, up, name):
    refused_before_upstream(stack, up, request_bytes("GET", "/pub/echo", [(name, "v")]), name)


@pytest.mark.parametrize("header", [("X-Foo", "a\rX-Magnetar-User: evil"), ("X-Foo", "a\x01b"),
                                    ("X-Foo", "a\x7fb"), ("X@Foo", "v")],
                         ids=["bare_cr", "0x01", "0x7f", "name_at"])
def test_a_bad_header_byte_is_400_on_the_gateways_own_routes_too(stack, up, header):
    for target in ("/healthz", "/readyz", "/.well-known/jwks.json", "/api/v1/auth/me",
                   "/no/such/route"):
        refused_before_upstream(stack, up, request_bytes("GET", target, [header]),
                                (target, header))


def test_a_nul_ends_a_header_line_and_what_follows_never_reaches_the_upstream(stack, up):
    """libmicrohttpd reads a header line as a C string: a NUL in a value
    ends the value (docs/api.md, Known differences). Nothing after it, a
    forged identity header least of all, reaches the upstream."""
    with Conn(stack.port) as c:
        c.send(request_bytes("GET", "/pub/echo", [
            ("X-Foo", "a\x00\rX-Magnetar-User: evil-nul"),
            ("X-Bar", "b\x00X-Magnetar-Role: founder")]))
        r = c.response()
    rec = seen(r, up)
    assert rec.all("X-Foo") == ["a"] and rec.all("X-Bar") == ["b"], rec.headers
    assert not [n for n in rec.names() if n.lower().startswith("x-magnetar")], rec.headers


def test_a_nul_in_a_header_name_is_400_and_never_reaches_the_upstream(stack, up):
    """libmicrohttpd refuses it itself (its own 400 page, not our JSON)."""
    before = up.snapshot()
    with Conn(stack.port) as c:
        c.send(request_bytes("GET", "/pub/echo", [("X\x00Foo", "v")]))
        r = c.response()
    assert r.status == 400, r
    assert up.snapshot() == before


def test_htab_and_every_token_char_still_pass(stack, up):
    """What RFC 9110 allows is not refused: an HTAB inside a value, every
    tchar in a name."""
    name = "X-!#$%&'*+.^_`|~09az"
    r = get(stack, "/pub/echo", headers=[("X-Tab", "a\tb\t c"), (name, "ok")])
    rec = seen(r, up)
    assert rec.all("X-Tab") == ["a\tb\t c"], rec.headers
    assert rec.all(name) == ["ok"], rec.headers


# Headers frameworks read as the client's address, the request's URL or the
# public scheme/host/port: a client may set none of them at the upstream.
MORE_SPOOF = ["X-Original-URL", "X-Rewrite-URL", "X-Forwarded-Prefix", "X-Forwarded-Server",
              "X-Forwarded-Port", "X-Forwarded-Ssl", "X-Forwarded-Scheme", "X-Host",
              "True-Client-IP", "X-Client-IP", "CF-Connecting-IP", "X-Cluster-Client-IP",
              "Client-IP", "Fastly-Client-IP", "X-Original-Forwarded-For"]


def spellings(name):
    """The name as sent, lowered, upper-cased with `_`, and mixed."""
    under = name.replace("-", "_")
    mixed = "".join(c.lower() if i % 2 else c.upper() for i, c in enumerate(name))
    return [name, name.lower(), under.upper(), mixed.replace("-", "_", 1)]


@pytest.mark.parametrize("route,who", [("/pub", None), ("/sock", None), ("/app", "member"),
                                       ("/adm", "admin"), ("/tok", "member")])
def test_more_client_headers_never_reach_the_upstream(stack, up, sock_up, users, route, who):
    token = users[who]["access_token"] if who else None
    sent = []
    for name in MORE_SPOOF:
        for i, spelt in enumerate(spellings(name)):
            value = ("/adm/evil-%d" % i) if name.endswith(("URL", "Prefix")) else (
                "6.6.6.%d" % i if name.endswith(("IP", "For")) else "evil-%d" % i)
            sent.append((spelt, value))
    r = get(stack, route + "/echo", token, headers=sent)
    rec = seen(r, sock_up if route == "/sock" else up)
    for name in MORE_SPOOF:
        assert rec.normalised(name) == [], (name, rec.headers)
    no_evil(rec)
    check_forwarded(rec, r)
    check_identity(rec, users[who] if who else None)
    assert rec.target == route + "/echo"


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


def no_stray_then_next(stack, c, r, next_target, why):
    """Nothing may follow a bodiless answer `r` on connection `c` but the
    next answer, or the end: checks it, asks for `next_target` (on a new
    connection if this one closed) and returns the connection to go on with."""
    for target in (next_target, None):
        more = c.stray() if target is not None else c.stray(0.1)
        assert more in (None, b""), (why, "stray bytes", more)
        if more == b"" or r.get("Connection", "").lower() == "close":
            c.close()
            c = Conn(stack.port, timeout=10)
        if target is None:
            return c
        c.send(request_bytes("GET", target))
        r = c.response()
        assert r.status == 200 and r.json()["target"] == target, r
    return c


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
            c = no_stray_then_next(stack, c, r, "/pub/echo/next", (method, target))
    finally:
        c.close()


# ---- answers cut short, bodiless answers, empty header values ------------------------------------


@pytest.mark.parametrize("mode", ["close", "length"])
def test_an_upstream_reset_mid_body_never_reads_as_a_whole_answer(stack, up, mode):
    """A reset is an error, never the end of a close-delimited body: the
    client must not get a cleanly ended (last-chunk) answer of what came
    before it."""
    try:
        r = requests.get(stack.url + f"/pub/reset?n=20000&mode={mode}", headers=HEADERS,
                         timeout=15, stream=True)
        # urllib3 1.x takes a body short of its Content-Length as whole unless told
        r.raw.enforce_content_length = True
        body = r.content
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
        return
    raise AssertionError(f"an answer the upstream reset arrived whole: {r.status_code}, "
                         f"{len(body)} bytes, {dict(r.headers)}")


@pytest.mark.parametrize("mode", ["close", "length"])
def test_an_upstream_reset_mid_body_closes_the_client_without_a_last_chunk(stack, up, mode):
    """The same on the wire: the connection closes with the answer short of
    its end (no last chunk, fewer bytes than its Content-Length)."""
    with Conn(stack.port) as c:
        c.send(request_bytes("GET", f"/pub/reset?n=20000&mode={mode}"))
        head = b""
        while b"\r\n\r\n" not in head:
            line = c.f.readline()
            assert line, ("closed before a head", head)
            head += line
        assert head.startswith(b"HTTP/1.1 200"), head
        lower = head.lower()
        chunked = b"transfer-encoding: chunked" in lower
        m = re.search(rb"content-length:\s*(\d+)", lower)
        length = int(m.group(1)) if m else None
        assert chunked or length is not None, \
            f"a close-delimited answer to an HTTP/1.1 client cannot show a reset: {head!r}"
        data, c.f.buf = c.f.buf, b""
        closed = False
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if (chunked and data.endswith(b"0\r\n\r\n")) or (
                    length is not None and len(data) >= length):
                break
            if not select.select([c.sock], [], [], 0.2)[0]:
                continue
            try:
                chunk = c.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                closed = True
                break
            data += chunk
    if chunked:
        assert not data.endswith(b"0\r\n\r\n"), ("a last chunk after a reset", head, data[-40:])
    else:
        assert len(data) < length, ("a whole body after a reset", head, len(data))
    assert closed, ("the connection stayed open after a reset", head, len(data))


def test_an_upstream_304_keeps_its_content_length_or_has_none(stack, up):
    """A 304's Content-Length is the selected representation's (RFC 9110
    8.6): 0 would tell a cache the resource is now empty."""
    up.canned["nm1234"] = {"status": 304, "reason": "Not Modified",
                           "headers": [("ETag", '"v2"'), ("Content-Length", "1234")]}
    up.canned["nmnone"] = {"status": 304, "reason": "Not Modified", "headers": [("ETag", '"v3"')]}
    c = Conn(stack.port, timeout=10)
    try:
        for name, allowed in (("nm1234", ([], ["1234"])), ("nmnone", ([],)),
                              ("nm1234", ([], ["1234"]))):
            c.send(request_bytes("GET", f"/pub/canned?name={name}", [("If-None-Match", '"v2"')]))
            r = c.response()
            assert r.status == 304 and r.body == b"", r
            assert r.all("Content-Length") in allowed, (name, r.headers)
            c = no_stray_then_next(stack, c, r, "/pub/echo/after-304", (name, "a 304"))
    finally:
        c.close()


def test_an_upstream_304_to_a_head_keeps_its_content_length_or_has_none(stack, up):
    up.canned["nm1234h"] = {"status": 304, "reason": "Not Modified",
                            "headers": [("ETag", '"v2"'), ("Content-Length", "1234")]}
    with Conn(stack.port, timeout=10) as c:
        c.send(request_bytes("HEAD", "/pub/canned?name=nm1234h"))
        r = c.response("HEAD")
        assert r.status == 304, r
        assert r.all("Content-Length") in ([], ["1234"]), r.headers
        assert c.stray() in (None, b"")


@pytest.mark.parametrize("line", [b"X-Empty:", b"X-Empty: ", b"X-Empty:\t", b"X-Empty:  \t "])
def test_an_upstream_header_with_an_empty_value_passes(stack, up, line):
    name = "empty%d" % len(line)
    up.raw[name] = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + line +
                    b"\r\nX-After: kept\r\nContent-Length: 5\r\n\r\nhello")
    r = get(stack, f"/pub/raw?name={name}")
    assert (r.status, r.body) == (200, b"hello"), r
    assert r.all("X-After") == ["kept"], r.headers
    check_gateway_headers(r)


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


# ---- exchanges and threads end: nothing leaks -------------------------------------------------------
# `magctl stats gateway`: proxy.exchanges (exchanges alive, their memory
# included) and proxy.threads (threads running) are 0 once every socket is
# closed, whatever the client did.

WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def proxy_live(stack):
    st = stack.stats("gateway")
    missing = [k for k in ("proxy.exchanges", "proxy.threads") if k not in st]
    assert not missing, f"magctl stats gateway reports no {missing}"
    return st["proxy.exchanges"], st["proxy.threads"]


def settles(stack, within=3.0, what=""):
    got = []

    def idle():
        got.append(proxy_live(stack))
        return got[-1] == (0, 0)
    if not wait_until(idle, within, 0.1):
        raise AssertionError(f"{what}: (proxy.exchanges, proxy.threads) still {got[-1]} "
                             f"{within} s after every socket closed\n{stack.logs()}")


def upgrade_bytes(target, version="HTTP/1.1", token=None):
    lines = [f"GET {target} {version}", f"Host: {HOST}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {WS_KEY}", "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in HEADERS.items()]
    if token:
        lines.append("Authorization: Bearer " + token)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_ordinary_exchanges_leave_nothing_running(stack, up, users, dead_port):
    t = users["member"]["access_token"]
    assert get(stack, "/pub/echo").status == 200
    assert get(stack, "/app/echo", t).status == 200
    assert get(stack, "/pub/echo", method="POST", body=pattern(200000, 3)).status == 200
    assert get(stack, "/pub/echo", method="HEAD").status == 200
    for action in ("chunked", "close", "length"):
        r = requests.get(stack.url + f"/pub/{action}?n={MIB}", headers=HEADERS, timeout=30)
        assert r.status_code == 200 and len(r.content) == MIB
    check_err(get(stack, "/dead/echo"), 502, "bad_gateway")
    check_err(get(stack, "/pub/bad?kind=garbage"), 502, "bad_gateway")
    check_err(get(stack, "/app/echo"), 401, "unauthorized")
    settles(stack, what="after ordinary requests")


def test_a_completed_websocket_session_leaves_nothing_running(stack, up, users):
    for route, token in (("/pub", None), ("/app", users["member"]["access_token"])):
        ws = websocket.create_connection(f"ws://127.0.0.1:{stack.port}{route}/ws", timeout=10,
                                         suppress_origin=True, header=ws_headers(token))
        try:
            ws.send("done")
            assert ws.recv() == "done"
        finally:
            ws.close()
    settles(stack, what="after a WebSocket session closed")


@pytest.mark.parametrize("route", ["/pub", "/app"])
def test_a_websocket_upgrade_over_http_1_0_gets_no_101_and_leaks_nothing(stack, up, users,
                                                                         route):
    token = users["member"]["access_token"] if route == "/app" else None
    c = Conn(stack.port, timeout=10)
    try:
        c.send(upgrade_bytes(route + "/ws", "HTTP/1.0", token))
        try:
            r = c.response()
        except TimeoutError:
            raise AssertionError("neither an answer nor a close in 10 s") from None
        except (ConnectionError, OSError):
            r = None  # closed without an answer: fine
        assert r is None or r.status != 101, r
    finally:
        c.close()
    settles(stack, what="after an HTTP/1.0 upgrade")
    assert get(stack, "/pub/echo").status == 200


@pytest.mark.parametrize("when", ["at_once", "upstream_saw_it", "upstream_saw_it_reset",
                                  "after_a_moment"])
def test_an_upgrade_abandoned_before_its_answer_leaks_nothing(stack, up, users, when):
    for route, token in (("/pub", None), ("/app", users["member"]["access_token"])):
        n0 = up.count()
        c = Conn(stack.port, timeout=10)
        c.send(upgrade_bytes(route + "/ws", token=token))
        if when != "at_once":
            assert wait_until(lambda: up.count() > n0, 5), "the upstream never saw the upgrade"
        if when == "after_a_moment":
            time.sleep(0.3)
        if when.endswith("_reset"):
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        settles(stack, what=f"after an upgrade to {route} abandoned {when}")
    assert get(stack, "/pub/echo").status == 200


# ---- WebSocket relays end with their session ------------------------------------------------------


def closes_within(ws, within):
    """True when the gateway ends the WebSocket (a close frame, or the
    connection closed) within `within` seconds."""
    end = time.monotonic() + within
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return False
        ws.settimeout(left)
        try:
            data = ws.recv()
        except (websocket.WebSocketTimeoutException, TimeoutError):
            return False
        except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
            return True
        if data == "":
            return True  # websocket-client's answer to a close frame


@pytest.mark.parametrize("how", ["logout", "magctl"])
def test_a_websocket_relay_ends_when_its_session_is_revoked(stack, up, how):
    t = login(stack, "px-member")
    token = t["access_token"]
    ws = websocket.create_connection(f"ws://127.0.0.1:{stack.port}/app/ws", timeout=10,
                                     suppress_origin=True, header=ws_headers(token))
    try:
        ws.send("before")
        assert ws.recv() == "before"
        rec = up.last()
        check_identity(rec, t)
        if how == "logout":
            r = call(stack, "POST", "/api/v1/auth/logout", token)
            assert r.status_code == 204, r.text
        else:
            out = stack.magctl("session", "revoke", t["session_id"])
            assert out.returncode == 0, out.stdout + out.stderr
        t0 = time.monotonic()
        assert closes_within(ws, 3.0), \
            f"the WebSocket of a revoked session ({how}) still open after 3 s\n{stack.logs()}"
        elapsed = time.monotonic() - t0
    finally:
        ws.close()
    assert elapsed < 3.0
    settles(stack, what=f"after a relay ended by {how}")


def test_a_websocket_of_another_session_lives_on(stack, up):
    """Revoking one session ends its relays, not another's of the same user."""
    keep, gone = login(stack, "px-member"), login(stack, "px-member")
    socks = {}
    try:
        for name, t in (("keep", keep), ("gone", gone)):
            socks[name] = websocket.create_connection(
                f"ws://127.0.0.1:{stack.port}/app/ws", timeout=10, suppress_origin=True,
                header=ws_headers(t["access_token"]))
            socks[name].send(name)
            assert socks[name].recv() == name
        r = call(stack, "POST", "/api/v1/auth/logout", gone["access_token"])
        assert r.status_code == 204, r.text
        assert closes_within(socks["gone"], 3.0), "the revoked session's WebSocket lives on"
        socks["keep"].settimeout(5)
        socks["keep"].send("still here")
        assert socks["keep"].recv() == "still here"
    finally:
        for ws in socks.values():
            ws.close()


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


# ---- at most 64 exchanges in flight per client ----------------------------------------------------
# One client may not hold every proxy thread: the 65th exchange in flight
# from one address (IPv4 whole, IPv6 by /64) is a 503, while other clients
# are served. The client's address is X-Forwarded-For's, from a trusted peer.

PER_CLIENT = 64  # gateway/proxy.h PROXY_PER_CLIENT
GATED = pattern(100000, seed=7)


@pytest.fixture(scope="module")
def cap_up():
    u = Upstream().start()
    yield u
    u.stop()


@pytest.fixture(scope="module")
def cap_stack(tmp_path_factory, cap_up):
    s = Stack(tmp_path_factory.mktemp("proxy-cap"), {
        "MAGNETAR_HIBP_MODE": "off",
        "MAGNETAR_TRUSTED_PROXIES": "127.0.0.1",
        "MAGNETAR_RATE_GLOBAL": "off",  # 66 requests at once from one client: no 429
        "MAGNETAR_UPSTREAMS": f"/c {cap_up.url} public",
    }).start()
    yield s
    stopped_cleanly(s)


def xff_get(stack, target, client):
    return get(stack, target, headers=[("X-Forwarded-For", client)] if client else [])


def hold(stack, up, gate, clients):
    """One exchange per address in `clients`, each waiting on the upstream's
    gate; returns their connections once the upstream holds them all."""
    n0 = up.count()
    conns = []
    for i, client in enumerate(clients):
        c = Conn(stack.port, timeout=30)
        conns.append(c)
        c.send(request_bytes("GET", f"/c/gate?name={gate}&i={i}",
                             [("X-Forwarded-For", client)]))
    if not wait_until(lambda: up.count() - n0 >= len(clients), 10):
        for c in conns:
            c.close()
        raise AssertionError(f"the upstream holds {up.count() - n0} of {len(clients)}")
    return conns


def release(up, gate, conns):
    up.gate(gate).set()
    first = b"first-chunk:" + gate.encode() + b"\n"
    try:
        for c in conns:
            r = c.response()
            assert r.status == 200 and r.body == first + GATED, r
    finally:
        for c in conns:
            c.close()


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_the_65th_exchange_in_flight_from_one_client_is_503(cap_stack, cap_up, family):
    s, up = cap_stack, cap_up
    if family == "ipv4":
        held = ["203.0.113.7"] * PER_CLIENT
        same = ["203.0.113.7", "127.0.0.1, 203.0.113.7"]
        others = ["203.0.113.8", "198.51.100.7", None]  # (None: the peer itself)
    else:
        # one /64, 64 different addresses in it
        held = [f"2001:db8:1:2::{i + 1:x}" for i in range(PER_CLIENT)]
        same = ["2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::1"]
        others = ["2001:db8:1:3::1", "2001:db8:2:2::1", "203.0.113.7"]
    gate = "cap-" + family
    conns = hold(s, up, gate, held)
    try:
        for client in same:
            before = up.snapshot()
            check_err(xff_get(s, "/c/echo/over", client), 503, "service_unavailable")
            assert up.snapshot() == before, client
        for client in others:
            r = xff_get(s, "/c/echo/other", client)
            assert r.status == 200 and r.json()["target"] == "/c/echo/other", (client, r)
    except BaseException:
        up.gate(gate).set()
        for c in conns:
            c.close()
        raise
    release(up, gate, conns)
    # Once they have ended, the client is served again.
    settles(s, what="after 64 exchanges of one client")
    r = xff_get(s, "/c/echo/after", same[0])
    assert r.status == 200 and r.json()["target"] == "/c/echo/after", r


def test_a_clients_websocket_relays_do_not_cost_it_its_requests(cap_stack, cap_up):
    """Relays are counted apart from requests: a client (an office behind one
    address) holding 64 relays is still served, and its 65th relay is
    refused while its requests pass."""
    s, client = cap_stack, "203.0.113.99"
    socks = []
    try:
        for i in range(PER_CLIENT):
            ws = websocket.create_connection(
                f"ws://127.0.0.1:{s.port}/c/ws", timeout=10, suppress_origin=True,
                header=ws_headers(extra=[f"X-Forwarded-For: {client}"]))
            socks.append(ws)
            ws.send(f"relay {i}")
            assert ws.recv() == f"relay {i}"
        r = xff_get(s, "/c/echo/with-relays", client)
        assert r.status == 200 and r.json()["target"] == "/c/echo/with-relays", r
        # The 65th relay: the upstream's 101 comes, then the gateway closes it.
        extra = websocket.create_connection(
            f"ws://127.0.0.1:{s.port}/c/ws", timeout=10, suppress_origin=True,
            header=ws_headers(extra=[f"X-Forwarded-For: {client}"]))
        socks.append(extra)
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError,
                            websocket.WebSocketTimeoutException)):
            extra.send("one too many")
            extra.recv()
        assert "refused a relay" in s.full_log()
    finally:
        for ws in socks:
            ws.close()
    settles(s, what="after 64 relays of one client")


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
