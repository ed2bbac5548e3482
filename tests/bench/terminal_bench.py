"""Terminal benchmark (docs/architecture.md, "Performance budget"): key-echo round trip p50/p99 and
output throughput through the whole path (WebSocket → gateway → Unix stream
socket → terminal → PTY → back) against a direct PTY loop in the same run, the same
shell and the same Python client code on both sides.

    MAGNETAR_BUILD=$PWD/build /usr/bin/python3 tests/bench/terminal_bench.py [keys] [MB]

Not run by `make test`. Prints one line per figure and the ratios.
"""
import os
import pathlib
import pty
import select
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "integration"))
import requests  # noqa: E402
import websocket  # noqa: E402
from conftest import Stack  # noqa: E402

KEYS = int(sys.argv[1]) if len(sys.argv) > 1 else 500
MB = int(sys.argv[2]) if len(sys.argv) > 2 else 20
PASSWORD = "terminal bench password 1"
# `stty raw -echo` would hide the echo; the shell's line editor echoes each key.
SETUP = b"stty -echoctl; PS1=; export PS1\r"
FLOOD = ("head -c %d /dev/zero | tr '\\0' x; echo; echo DO''NE\r" % (MB << 20)).encode()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


class Scanner:
    """Counts bytes until a needle, keeping only a short tail (O(n))."""

    def __init__(self, read):
        self.read = read  # read(timeout) -> bytes or b"" on timeout
        self.tail = b""

    def until(self, needle, timeout):
        end = time.monotonic() + timeout
        total = 0
        while True:
            if needle is not None and needle in self.tail:
                i = self.tail.index(needle) + len(needle)
                self.tail = self.tail[i:]
                return total
            left = end - time.monotonic()
            if left <= 0:
                if needle is None:
                    self.tail = b""
                    return total
                raise TimeoutError(needle)
            d = self.read(left)
            total += len(d)
            keep = 64 if needle is None else len(needle) + 64
            self.tail = (self.tail + d)[-max(keep, len(d) + len(needle or b"")):]


def run(send, recv_until):
    send(SETUP)
    recv_until(b"\n", 5)
    time.sleep(0.3)
    recv_until(None, 0.3)  # drain the prompt
    lat = []
    for i in range(KEYS):
        k = b"abcdefghij"[i % 10:i % 10 + 1]
        t0 = time.perf_counter()
        send(k)
        recv_until(k, 5)
        lat.append(time.perf_counter() - t0)
    send(b"\x15")  # ^U: drop the typed line
    recv_until(None, 0.3)
    t0 = time.perf_counter()
    send(FLOOD)
    n = recv_until(b"DONE\r\n", 120)
    secs = time.perf_counter() - t0
    return statistics.median(lat) * 1e6, pct(lat, 0.99) * 1e6, n / secs / 1e6


def direct():
    pid, fd = pty.fork()
    if pid == 0:
        os.execve("/bin/bash", ["/bin/bash", "--norc", "--noprofile", "-i"],
                  {"TERM": "xterm-256color", "PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    def send(b):
        os.write(fd, b)

    def read(timeout):
        r, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 65536) if r else b""

    recv_until = Scanner(read).until
    try:
        return run(send, recv_until)
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def through(stack):
    r = requests.post(stack.url + "/api/v1/auth/login",
                      json={"username": "founder", "password": PASSWORD}, timeout=15)
    h = {"Authorization": "Bearer " + r.json()["access_token"]}
    t = requests.post(stack.url + "/api/v1/terminal/sessions", headers=h, timeout=10,
                      json={"shell": "/bin/bash", "cols": 200, "rows": 50})
    assert t.status_code == 201, t.text
    t = t.json()
    ws = websocket.create_connection("ws://127.0.0.1:%d%s?ticket=%s" % (
        stack.port, t["ws_url"], t["ws_ticket"]), suppress_origin=True, timeout=120)
    def send(b):
        ws.send_binary(b"0" + b)

    def read(timeout):
        ws.sock.settimeout(timeout)
        try:
            _, d = ws.recv_data()
        except websocket.WebSocketTimeoutException:
            return b""
        return d[1:] if d[:1] == b"0" else b""

    recv_until = Scanner(read).until
    try:
        return run(send, recv_until)
    finally:
        ws.close()


def main():
    root = tempfile.mkdtemp(prefix="magbench-", dir="/tmp")
    os.chmod(root, 0o1777)  # as make_root in tests/integration/test_terminal.py: homes go here
    # As root the services run as their own users: the stack's dir must be
    # one they can traverse (mkdtemp makes it 0700).
    stack_dir = tempfile.mkdtemp(prefix="magbench-stack-")
    os.chmod(stack_dir, 0o755)
    stack = Stack(stack_dir, {
        "MAGNETAR_TERMINAL_ROOTS": root, "MAGNETAR_FOUNDER_USERNAME": "founder",
        "MAGNETAR_FOUNDER_PASSWORD": PASSWORD, "MAGNETAR_HIBP_MODE": "off"}).start()
    try:
        # Alternate, best of two each, so machine noise hits both sides.
        d = [direct(), None]
        s = [through(stack), None]
        d[1], s[1] = direct(), through(stack)
    finally:
        stack.stop()
    dp50 = min(x[0] for x in d)
    dp99 = min(x[1] for x in d)
    dmb = max(x[2] for x in d)
    sp50 = min(x[0] for x in s)
    sp99 = min(x[1] for x in s)
    smb = max(x[2] for x in s)
    print("direct PTY   : key echo p50 %.0f us p99 %.0f us; output %.1f MB/s" % (dp50, dp99, dmb))
    print("via gateway  : key echo p50 %.0f us p99 %.0f us; output %.1f MB/s" % (sp50, sp99, smb))
    print("ratios       : p50 %.2fx (budget <= 8x), p99 %.2fx, throughput %.2fx (budget >= 0.6x)"
          % (sp50 / dp50, sp99 / dp99, smb / dmb))


if __name__ == "__main__":
    main()
