"""Attacks on breach's online client (docs/breach.md "Online client"): a
hostile Pwned Passwords server answers with redirects and with bodies over
the 1 MiB cap. magnetar-breach runs on its own against a local server
(MAGNETAR_HIBP_URL), as test_breach.py does; one breach for the module.
"""
import hashlib
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import free_port
from test_breach import Breach, parse

MIB = 1 << 20


def sha1(pw):
    return hashlib.sha1(pw.encode()).hexdigest().upper()


class Hostile:
    """A range server whose answer is set per test: `redirect` (a 302 to
    `location`), or `body` (a valid range of about `size` bytes holding
    `suffix` with `count`, padded with count-0 rows). Every request path is
    recorded."""

    def __init__(self):
        self.paths = []
        self.mode, self.location, self.size, self.hit = "body", "", 0, {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.paths.append(self.path)
                if outer.mode == "redirect" and self.path.startswith("/range/"):
                    self.send_response(302)
                    self.send_header("Location", outer.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = outer.range_body(self.path.rsplit("/", 1)[-1])
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def range_body(self, prefix):
        rows = []
        if prefix in self.hit:
            rows.append("%s:%d" % self.hit[prefix])
        rng = random.Random(prefix)
        size = max(self.size, 64)
        n = sum(len(r) + 2 for r in rows)
        while n < size:
            row = "%035X:0" % rng.getrandbits(140)
            rows.append(row)
            n += len(row) + 2
        return ("\r\n".join(rows) + "\r\n").encode()

    def serve(self, password, count, size):
        h = sha1(password)
        self.mode, self.size = "body", size
        self.hit[h[:5]] = (h[5:], count)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def servers():
    a, b = Hostile(), Hostile()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture(scope="module")
def breach(servers, tmp_path_factory):
    b = Breach(tmp_path_factory.mktemp("attackhibp"), servers[0].url).start()
    yield b
    b.stop()


@pytest.mark.parametrize("where", ["same-server", "another-server"])
def test_a_redirect_is_never_followed(servers, breach, where):
    """The range answer is a 302 to a path that would serve a valid range,
    on the same server (which breach may reach) or on another local one.
    breach answers unavailable and the target never sees a request; a
    client that followed would have answered `online` with the count."""
    hibp, other = servers
    pw = f"redirected to {where}"
    target = hibp if where == "same-server" else other
    target.serve(pw, 4242, 100)
    hibp.mode = "redirect"
    hibp.location = f"{target.url}/elsewhere/{sha1(pw)[:5]}"
    before = list(target.paths)
    try:
        assert parse(breach.check(pw)) == ("unknown", 0, "unavailable")
    finally:
        hibp.mode = "body"
    assert [p for p in target.paths[len(before):] if p.startswith("/elsewhere/")] == []
    assert f"/range/{sha1(pw)[:5]}" in hibp.paths


def test_a_body_over_1_mib_is_refused_and_breach_keeps_serving(servers, breach):
    """A well-formed range of 1.5 MiB (about 40,000 rows, under the parser's
    row limit) holding the password's suffix: refused as unavailable, not
    read. The same answer at 900 KiB is accepted with its count, so the size
    alone decides; breach then still answers."""
    hibp, _ = servers
    hibp.serve("under the cap", 777, 900 * 1024)
    assert parse(breach.check("under the cap")) == ("yes", 777, "online")
    hibp.serve("over the cap", 888, MIB + MIB // 2)
    assert parse(breach.check("over the cap")) == ("unknown", 0, "unavailable")
    assert breach.magctl("ping", "breach").returncode == 0
    hibp.serve("after the big body", 999, 1000)
    assert parse(breach.check("after the big body")) == ("yes", 999, "online")
