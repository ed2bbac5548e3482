"""A test upstream for test_proxy.py: a raw-socket HTTP/1.1 server (stdlib
only) that records every request exactly as the gateway sent it and answers
as each test needs, including the answers a well-behaved server never gives.

Run in-process (Upstream(...).start(), threads) or alone:
    python3 proxy_upstream.py <port>            TCP on 127.0.0.1
    python3 proxy_upstream.py unix:/abs/path    a Unix socket

Every request is recorded as soon as its head arrives (so a test can tell
"the upstream saw nothing" from "the upstream saw a request whose body never
came"), with its raw target, its raw header lines in order, and its body
bytes as they arrive. What it answers depends on the first path segment
after the route's prefix that names an action (default: echo):

    echo                  200, the recorded request as JSON
    canned?name=N         the response the test stored in .canned[N]
    chunked?n=BYTES       200, pattern(BYTES) chunked in uneven chunks
    close?n=BYTES         200, pattern(BYTES), no length: delimited by close
    length?n=BYTES        200, pattern(BYTES) with a Content-Length
    gate?name=N           200 chunked: a first chunk, then waits for
                          .gate(N) to be set (at most 20 s), then the rest
    slow?s=SECONDS        sleeps, then 200 "late" (no head before that)
    slowbody?s=S&n=BYTES  the head at once, the body in 5 pieces over S seconds
    bad?kind=K            the raw bytes BAD[K], then closes
    raw?name=N            the raw bytes the test stored in .raw[N], then closes
    reset?n=BYTES&mode=M  200 with pattern(BYTES) of a longer body, then a TCP
                          reset (SO_LINGER 0): M=close, delimited by close (no
                          length, not chunked); M=length, Content-Length 2*BYTES
    ws                    a WebSocket echo (RFC 6455 handshake)
"""
import base64
import hashlib
import json
import os
import random
import socket
import struct
import sys
import threading
import time
import urllib.parse

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD = 256 * 1024

ACTIONS = ("echo", "canned", "chunked", "close", "length", "gate", "slow", "slowbody", "bad",
           "raw", "reset", "ws")

# Malformed response heads (and one that is no head at all).
BAD = {
    "garbage": b"this is not http at all\r\n\r\n",
    "noversion": b"200 OK\r\nContent-Length: 2\r\n\r\nok",
    "nul": b"HTTP/1.1 200 OK\r\nX-Bad: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    "obsfold": b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n  continued\r\nContent-Length: 2\r\n\r\nok",
    "twocl": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
    "clte": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"2\r\nok\r\n0\r\n\r\n"),
    "empty": b"",
}


def pattern(n, seed=0):
    """n deterministic, non-periodic bytes: a reordered, repeated or lost
    block changes the digest."""
    return random.Random(seed).randbytes(n)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


class Record:
    """One request as the upstream received it."""

    def __init__(self, seq, method, target, version, headers, raw_head):
        self.seq = seq
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers  # [(name, value)], raw names, in order
        self.raw_head = raw_head
        self.body = bytearray()
        self.trailers = []  # raw trailer lines of a chunked body
        self.framing = "none"
        self.complete = False  # the whole body arrived as framed
        self.finished = threading.Event()  # body read, or the connection ended
        self.ws_messages = []

    @property
    def path(self):
        return self.target.split("?", 1)[0]

    def all(self, name):
        """Every value of a header, by its name as sent (case-insensitive)."""
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def normalised(self, name):
        """Every value of a header whose name reads as `name` once lowered
        and with `_` taken as `-` (how some frameworks read headers)."""
        want = name.lower().replace("_", "-")
        return [v for n, v in self.headers if n.lower().replace("_", "-") == want]

    def names(self):
        return [n for n, _ in self.headers]

    def as_json(self):
        body = bytes(self.body)
        out = {
            "seq": self.seq, "method": self.method, "target": self.target,
            "version": self.version, "headers": [[n, v] for n, v in self.headers],
            "framing": self.framing, "body_len": len(body), "body_sha256": sha256(body),
        }
        if len(body) <= 65536:
            out["body_b64"] = base64.b64encode(body).decode()
        return out


class Closed(Exception):
    pass


class Reader:
    """Buffered reads off one connection, counting every byte in."""

    def __init__(self, sock, up):
        self.sock = sock
        self.up = up
        self.buf = b""

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise Closed()
        with self.up.lock:
            self.up.bytes_in += len(data)
        self.buf += data

    def head(self):
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                raise Closed()
            self.fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return head

    def line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                raise Closed()
            self.fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def exactly(self, n, sink):
        while n > 0:
            if not self.buf:
                self.fill()
            take = self.buf[:n]
            self.buf = self.buf[len(take):]
            sink.extend(take)
            n -= len(take)


class Upstream:
    """The server. `url` is what MAGNETAR_UPSTREAMS names."""

    def __init__(self, unix_path=None):
        self.unix_path = unix_path
        self.lock = threading.Lock()
        self.records = []
        self.bytes_in = 0
        self.connections = 0
        self.canned = {}
        self.raw = {}  # name -> the exact bytes of an answer (raw?name=N)
        self._gates = {}
        self._sock = None
        self._stopping = False
        self.port = None

    # ---- the test's view ------------------------------------------------------

    @property
    def url(self):
        if self.unix_path:
            return "unix:" + str(self.unix_path)
        return f"http://127.0.0.1:{self.port}"

    def count(self):
        with self.lock:
            return len(self.records)

    def snapshot(self):
        """(requests seen, bytes received): both unchanged means the upstream
        saw nothing at all."""
        with self.lock:
            return len(self.records), self.bytes_in

    def since(self, n):
        with self.lock:
            return list(self.records[n:])

    def last(self):
        with self.lock:
            return self.records[-1]

    def gate(self, name):
        with self.lock:
            return self._gates.setdefault(name, threading.Event())

    # ---- life -----------------------------------------------------------------

    def start(self):
        if self.unix_path:
            try:
                os.unlink(self.unix_path)
            except FileNotFoundError:
                pass
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(str(self.unix_path))
            os.chmod(self.unix_path, 0o777)  # the gateway runs as its own user
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", self.port or 0))
            self.port = s.getsockname()[1]
        s.listen(128)
        self._sock = s
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self):
        self._stopping = True
        for g in list(self._gates.values()):
            g.set()
        try:
            self._sock.close()
        except OSError:
            pass
        if self.unix_path:
            try:
                os.unlink(self.unix_path)
            except OSError:
                pass

    def _accept(self):
        while not self._stopping:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    # ---- one connection ---------------------------------------------------------

    def _serve(self, conn):
        conn.settimeout(60)
        r = Reader(conn, self)
        rec = None
        try:
            while True:
                rec = None
                head = r.head()
                rec = self._record(head)
                if rec is None:
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                    return
                if not self._read_body(r, rec):
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                    return
                rec.complete = True
                rec.finished.set()
                keep = self._answer(conn, r, rec)
                conn_tokens = {t.strip().lower() for v in rec.all("Connection")
                               for t in v.split(",")}
                if not keep or "close" in conn_tokens or (
                        rec.version == "HTTP/1.0" and "keep-alive" not in conn_tokens):
                    return
        except (Closed, OSError):
            return
        finally:
            if rec is not None:
                rec.finished.set()
            try:
                conn.close()
            except OSError:
                pass

    def _record(self, head):
        try:
            text = head.decode("latin-1")
        except UnicodeDecodeError:
            return None
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return None
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                return None
            headers.append((name, value.strip(" \t")))
        with self.lock:
            rec = Record(len(self.records), parts[0], parts[1], parts[2], headers, head)
            self.records.append(rec)
        return rec

    def _read_body(self, r, rec):
        te = rec.all("Transfer-Encoding")
        cl = rec.all("Content-Length")
        if te and cl or len(cl) > 1 or len(te) > 1:
            rec.framing = "ambiguous"
            return False
        if te:
            if te[0].strip().lower() != "chunked":
                rec.framing = "te:" + te[0]
                return False
            rec.framing = "chunked"
            while True:
                size_line = r.line().split(b";", 1)[0].strip()
                size = int(size_line, 16)
                if size == 0:
                    while (line := r.line()) != b"":
                        rec.trailers.append(line)
                    return True
                r.exactly(size, rec.body)
                if r.line() != b"":
                    return False
        if cl:
            rec.framing = "length"
            r.exactly(int(cl[0]), rec.body)
        return True

    # ---- answers ------------------------------------------------------------------

    def _action(self, rec):
        segments = rec.path.split("/")
        for seg in segments[2:]:
            if seg in ACTIONS:
                return seg
        return "echo"

    @staticmethod
    def _query(rec):
        q = rec.target.split("?", 1)[1] if "?" in rec.target else ""
        return {k: v[-1] for k, v in urllib.parse.parse_qs(q).items()}

    @staticmethod
    def _head(status, reason, headers):
        lines = [f"HTTP/1.1 {status} {reason}"] + [f"{n}: {v}" for n, v in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _answer(self, conn, r, rec):
        """Writes the answer; False when the connection must close after it."""
        action = self._action(rec)
        q = self._query(rec)
        head_only = rec.method == "HEAD"
        if action == "echo":
            body = json.dumps(rec.as_json()).encode()
            conn.sendall(self._head(200, "OK", [("Content-Type", "application/json"),
                                                ("Content-Length", str(len(body)))])
                         + (b"" if head_only else body))
            return True
        if action == "canned":
            c = self.canned[q["name"]]
            status, headers, body = c["status"], list(c.get("headers", [])), c.get("body", b"")
            if status not in (101, 204, 304) and not any(n.lower() in ("content-length",
                                                                  "transfer-encoding")
                                                     for n, _ in headers):
                headers.append(("Content-Length", str(len(body))))
            nobody = head_only or status in (101, 204, 304)
            conn.sendall(self._head(status, c.get("reason", "Whatever"), headers)
                         + (b"" if nobody else body))
            return True
        if action in ("chunked", "close", "length"):
            n = int(q.get("n", "1000"))
            data = pattern(n)
            if action == "length":
                conn.sendall(self._head(200, "OK", [("Content-Type", "application/octet-stream"),
                                                    ("Content-Length", str(n))]))
                if not head_only:
                    conn.sendall(data)
                return True
            if action == "close":
                conn.sendall(self._head(200, "OK", [("Content-Type", "application/octet-stream"),
                                                    ("Connection", "close")]))
                if not head_only:
                    view = memoryview(data)
                    for i in range(0, n, 65536):
                        conn.sendall(view[i:i + 65536])
                return False
            conn.sendall(self._head(200, "OK", [("Content-Type", "application/octet-stream"),
                                                ("Transfer-Encoding", "chunked")]))
            if head_only:
                return True
            rnd = random.Random(1)
            view = memoryview(data)
            i = 0
            while i < n:
                step = min(n - i, rnd.randint(1, 100000))
                conn.sendall(b"%x\r\n" % step + view[i:i + step] + b"\r\n")
                i += step
            conn.sendall(b"0\r\n\r\n")
            return True
        if action == "gate":
            name = q["name"]
            gate = self.gate(name)
            first = b"first-chunk:" + name.encode() + b"\n"
            conn.sendall(self._head(200, "OK", [("Content-Type", "application/octet-stream"),
                                                ("Transfer-Encoding", "chunked")])
                         + b"%x\r\n%s\r\n" % (len(first), first))
            rec.gate_held = not gate.wait(20)
            rest = pattern(100000, seed=7)
            conn.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
            return True
        if action == "slow":
            time.sleep(float(q.get("s", "3")))
            conn.sendall(self._head(200, "OK", [("Content-Length", "4")]) + b"late")
            return True
        if action == "slowbody":
            n = int(q.get("n", "1000"))
            conn.sendall(self._head(200, "OK", [("Content-Type", "application/octet-stream"),
                                                ("Content-Length", str(n))]))
            data, pause = pattern(n, seed=3), float(q.get("s", "2")) / 5
            for i in range(5):
                time.sleep(pause)
                conn.sendall(data[i * n // 5:(i + 1) * n // 5])
            return True
        if action == "bad":
            conn.sendall(BAD[q["kind"]])
            return False
        if action == "raw":
            conn.sendall(self.raw[q["name"]])
            return False
        if action == "reset":
            n = int(q.get("n", "1000"))
            headers = [("Content-Type", "application/octet-stream")]
            if q.get("mode", "close") == "length":
                headers.append(("Content-Length", str(2 * n)))
            else:
                headers.append(("Connection", "close"))
            conn.sendall(self._head(200, "OK", headers) + pattern(2 * n)[:n])
            time.sleep(float(q.get("pause", "0.3")))  # the gateway has read it all
            # A reset, not a FIN: the close that follows sends an RST.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if action == "ws":
            return self._websocket(conn, r, rec)
        raise AssertionError(action)

    def _websocket(self, conn, r, rec):
        key = rec.all("Sec-WebSocket-Key")
        upgrade = [v.lower() for v in rec.all("Upgrade")]
        if len(key) != 1 or upgrade != ["websocket"]:
            body = b"not a websocket upgrade"
            conn.sendall(self._head(426, "Upgrade Required",
                                    [("Content-Length", str(len(body)))]) + body)
            return True
        accept = base64.b64encode(hashlib.sha1(key[0].encode() + WS_GUID).digest()).decode()
        conn.sendall(self._head(101, "Switching Protocols", [
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept)]))
        while True:
            b0, b1 = self._ws_read(r, 2)
            opcode, masked, n = b0 & 0x0F, b1 & 0x80, b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._ws_read(r, 2), "big")
            elif n == 127:
                n = int.from_bytes(self._ws_read(r, 8), "big")
            mask = self._ws_read(r, 4) if masked else b"\0\0\0\0"
            payload = bytes(c ^ mask[i % 4] for i, c in enumerate(self._ws_read(r, n)))
            rec.ws_messages.append((opcode, payload, bool(masked)))
            if opcode == 0x8:  # close: answer it and end
                conn.sendall(self._ws_frame(0x8, payload[:125]))
                return False
            if opcode == 0x9:
                conn.sendall(self._ws_frame(0xA, payload))
            elif opcode in (0x1, 0x2):
                conn.sendall(self._ws_frame(opcode, payload))

    @staticmethod
    def _ws_read(r, n):
        out = bytearray()
        r.exactly(n, out)
        return bytes(out)

    @staticmethod
    def _ws_frame(opcode, payload):
        n = len(payload)
        if n < 126:
            head = bytes([0x80 | opcode, n])
        elif n < 65536:
            head = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
        else:
            head = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
        return head + payload


if __name__ == "__main__":
    arg = sys.argv[1]
    if arg.startswith("unix:"):
        up = Upstream(unix_path=arg[5:])
    else:
        up = Upstream()
        up.port = int(arg)
    up.start()
    print(up.url, flush=True)
    while True:
        time.sleep(3600)
