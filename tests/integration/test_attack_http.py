"""Attacks on the gateway's HTTP framing at the raw socket level (issue 16,
items 7 and 8): bodies dripped past the request deadline, and framing
headers that libmicrohttpd and the gateway's own checks could read
differently (request smuggling).

Starts magnetar-gateway alone (test_gateway_http.Gateway).
Run: MAGNETAR_BUILD=$PWD/build /usr/bin/python3 -m pytest -q tests/integration/test_attack_http.py
"""

import re
import socket
import time

import pytest
import requests

from test_gateway_http import Gateway, check_error


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("attack-http"))
    yield g
    g.stop()


def read_one(s):
    """Reads one response; (status, headers, body, bytes after it)."""
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
    return status, headers, rest[:length], rest[length:]


def read_to_eof(s, within):
    """Everything the gateway still sends until it closes; fails if it keeps
    the connection open longer than `within` seconds."""
    data = b""
    end = time.monotonic() + within
    while True:
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"connection still open after {within} s; got {data!r}")
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


# ---- item 8: framing headers read differently (smuggling) -----------------------

# Each is the head of a POST whose framing the gateway must refuse. After it
# comes a body as the first framing header would have it, then a pipelined
# GET /healthz that must never be answered as a request of its own.
SMUGGLE = {
    "content_length_twice_same": (
        b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
    "content_length_twice_different": (
        b"Content-Length: 5\r\nContent-Length: 40\r\n", b"hello"),
    "content_length_twice_case_variant": (
        b"Content-Length: 5\r\ncontent-LENGTH: 5\r\n", b"hello"),
    "transfer_encoding_gzip_then_chunked": (
        b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
    "transfer_encoding_chunked_twice": (
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        b"5\r\nhello\r\n0\r\n\r\n"),
    "transfer_encoding_chunked_twice_case_variant": (
        b"transfer-encoding: Chunked\r\nTRANSFER-ENCODING: chunked\r\n",
        b"5\r\nhello\r\n0\r\n\r\n"),
    "transfer_encoding_list": (
        b"Transfer-Encoding: gzip, chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
    "transfer_encoding_chunked_listed_twice": (
        b"Transfer-Encoding: chunked, chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
    "transfer_encoding_then_content_length": (
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
    "content_length_then_transfer_encoding": (
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"hello"),
    # A space before the colon: libmicrohttpd keeps "Transfer-Encoding " as
    # the name and frames nothing, a lenient proxy reads a chunked body.
    "transfer_encoding_space_before_colon": (
        b"Transfer-Encoding : chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
    "content_length_tab_before_colon": (
        b"Content-Length\t: 5\r\n", b"hello"),
}

PIPELINED = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("name", sorted(SMUGGLE))
def test_ambiguous_framing_is_400_and_closes(gw, name):
    framing, body = SMUGGLE[name]
    req = b"POST /healthz HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n" + body + PIPELINED
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(req)
        status, headers, rbody, rest = read_one(s)
        check_error(status, headers, rbody, 400, "invalid_request")
        assert headers.get("connection", "").lower() == "close", headers
        # Closed after the answer: the pipelined GET is never answered.
        rest += read_to_eof(s, 5)
    assert b"HTTP/1." not in rest, rest


def test_single_framing_headers_still_work(gw):
    """The refusals above leave ordinary framing alone: one Content-Length,
    one chunked, each followed by a pipelined request that is answered."""
    for framing, body in ((b"Content-Length: 5\r\n", b"hello"),
                          (b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n")):
        req = b"POST /healthz HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n" + body + PIPELINED
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
            s.sendall(req)
            status, headers, rbody, rest = read_one(s)
            assert status == 405, rbody  # POST /healthz: routed, not refused
            assert headers.get("connection", "").lower() != "close", headers
            # The rest of the bytes may already be in `rest`.
            s.settimeout(5)
            while b"\r\n\r\n" not in rest:
                rest += s.recv(65536)
            assert rest.startswith(b"HTTP/1.1 200"), rest



# ---- item 7: a body dripped past the request deadline (slowloris) ---------------

BODY_TIMEOUT_S = 2


@pytest.fixture(scope="module")
def gw_deadline(tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("attack-http-deadline"),
                {"MAGNETAR_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)})
    yield g
    g.stop()


def drip(s, pieces, every):
    """Sends `pieces` one at a time, `every` seconds apart, until the gateway
    answers or closes; (seconds since the first piece, what it sent)."""
    start = time.monotonic()
    for piece in pieces:
        try:
            s.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            break
        s.settimeout(every)
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            break
        s.settimeout(5)
        if data:  # the answer: read the rest of it up to the close
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except ConnectionResetError:
                pass
        return time.monotonic() - start, data
    return time.monotonic() - start, b""


def answer_of(data):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("framing,pieces", [
    # One body byte every 0.25 s: each resets libmicrohttpd's idle timeout.
    (b"Content-Length: 100\r\n", [b"x"] * 40),
    # Chunk-size digits that never reach the access handler: only a
    # deadline kept outside the handler sees them.
    (b"Transfer-Encoding: chunked\r\n", [b"0"] * 40),
], ids=["content_length", "chunked"])
def test_slow_body_is_answered_408_at_the_deadline(gw_deadline, framing, pieces):
    g = gw_deadline
    with socket.create_connection(("127.0.0.1", g.port), timeout=5) as s:
        s.sendall(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\n" + framing + b"\r\n")
        took, data = drip(s, pieces, 0.25)
    assert data, f"the slow body was never answered nor cut ({took:.1f} s)"
    status, headers, body = answer_of(data)
    check_error(status, headers, body, 408, "request_timeout")
    assert headers.get("connection", "").lower() == "close", headers
    assert BODY_TIMEOUT_S - 0.5 <= took <= BODY_TIMEOUT_S + 1.5, took
    # The access log has the request with its 408.
    out = g.output_when(lambda o: "status=408" in o)
    assert any("path=/api/v1/auth/login" in ln and "status=408" in ln
               for ln in out.splitlines()), out[-2000:]
    m = requests.get(g.base + "/metrics", timeout=5).text
    assert re.search(r"^magnetar_body_deadline_closed_total [1-9]", m, re.M), m


def test_body_at_a_normal_speed_is_served(gw_deadline):
    """A 60 KiB body (near the 64 KiB limit) sent in pieces over about 1 s
    (half the deadline) is read and routed; the connection stays open and
    the next request on it is served too."""
    g = gw_deadline
    body = b"x" * (60 * 1024)
    with socket.create_connection(("127.0.0.1", g.port), timeout=5) as s:
        s.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        for i in range(0, len(body), 6 * 1024):
            s.sendall(body[i:i + 6 * 1024])
            time.sleep(0.1)
        status, headers, rbody, rest = read_one(s)
        assert status == 405, rbody  # POST /healthz: the whole body read, then routed
        assert headers.get("connection", "").lower() != "close", headers
        # Past the deadline of the first request, the same connection works:
        # the body deadline ended with its request.
        time.sleep(BODY_TIMEOUT_S + 0.5)
        s.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        status, headers, rbody, rest = read_one(s)
        assert status == 405, rbody


def test_slow_body_does_not_hold_other_clients(gw_deadline):
    """While bodies drip, other clients are served, and every dripping
    connection is gone after the deadline."""
    g = gw_deadline
    slow = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        s.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nx")
        slow.append(s)
    try:
        with socket.create_connection(("127.0.0.1", g.port), timeout=5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_one(s)[0] == 200
        time.sleep(BODY_TIMEOUT_S + 1)
        for s in slow:
            s.settimeout(2)
            data = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except ConnectionResetError:
                pass
            assert data.startswith(b"HTTP/1.1 408"), data
    finally:
        for s in slow:
            s.close()


def test_slow_body_over_tls_is_cut_at_the_deadline(tmp_path):
    """Over TLS the session is libmicrohttpd's, so the sweeper cannot write
    the 408: the dripping connection is still closed at the deadline."""
    import ssl
    from unittest import mock

    from test_gateway_tls import make_cert

    cert, key = make_cert(tmp_path)
    real_get = requests.get

    def get_tls(url, timeout):  # Gateway's readiness probe, over https
        return real_get(url.replace("http://", "https://"), timeout=timeout, verify=str(cert))

    with mock.patch("test_gateway_http.requests.get", get_tls):
        g = Gateway(tmp_path, {"MAGNETAR_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
                               "MAGNETAR_TLS_CERT": str(cert),
                               "MAGNETAR_TLS_KEY": str(key)})
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        raw = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: 100\r\n\r\n")
            start = time.monotonic()
            closed_at = None
            for _ in range(40):
                try:
                    s.sendall(b"x")
                    s.settimeout(0.25)
                    if s.recv(65536) == b"":
                        closed_at = time.monotonic() - start
                        break
                except (socket.timeout, ssl.SSLWantReadError):
                    continue
                except (OSError, ssl.SSLError):
                    closed_at = time.monotonic() - start
                    break
        assert closed_at is not None, "the slow TLS body was never cut"
        assert BODY_TIMEOUT_S - 0.5 <= closed_at <= BODY_TIMEOUT_S + 1.5, closed_at
    finally:
        g.stop()
