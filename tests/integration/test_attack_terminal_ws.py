"""Hostile terminal WebSocket clients (docs/terminal.md "Backpressure",
docs/security.md): a client that stops reading while its terminal floods
output and is then deleted must not make the gateway spin, and its bridge
must end; a slow client still gets all of the output and the exit frame;
a client that floods pings and reads no pong must not grow the gateway's
memory. One stack for the module (test_terminal's `env`).
"""
import os
import socket
import time

import requests
import websocket

from conftest import wait_until
from test_terminal import connect, env, login, open_term  # noqa: F401 (env: the stack)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


SMALL = ((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),)


def test_a_client_that_stops_reading_does_not_make_the_gateway_spin(env):
    """`yes` floods the terminal; the client reads nothing, so the bridge
    stops reading the stream; then the terminal is deleted. The gateway
    must stay idle (poll reports the stream's hang-up even when it is
    polled for nothing: this spun at a full core) and, the terminal gone,
    drop a client that takes nothing within its stall limit (10 s)."""
    stack, _ = env
    h = login(stack)
    t = open_term(stack, h).json()
    ws = connect(stack, t, sockopt=SMALL)
    ws.send_binary(b"0yes\r")
    time.sleep(2)  # the queues fill
    r = requests.delete(stack.url + "/api/v1/terminal/sessions/" + t["id"], headers=h,
                        timeout=10)
    assert r.status_code == 204, r.text
    gw = stack.service_pid("gateway")
    time.sleep(0.5)
    before = cpu_seconds(gw)
    time.sleep(3)
    spent = cpu_seconds(gw) - before
    assert spent < 0.5, f"the gateway used {spent:.2f} s of CPU in 3 s, idle"
    # Then the bridge gives up on the client: the connection is closed.
    sock = ws.sock
    sock.setblocking(False)
    end = time.monotonic() + 20
    closed = False
    while time.monotonic() < end and not closed:
        try:
            closed = sock.recv(1 << 20) == b""
        except BlockingIOError:
            time.sleep(0.2)
        except OSError:
            closed = True
    assert closed, "the bridge kept a client that took nothing after its terminal went"
    ws.close()


def test_a_slow_client_still_gets_all_output_and_the_exit_frame(env):
    """The shell writes 533,336 bytes and exits; the client reads at about
    100 KB/s, so when the exit frame is queued some 300 KiB still wait for
    it. Every byte, then the exit frame, then the close: the close's grace
    starts when the close frame is queued, not when the exit frame is
    (which cut a slow client off before its last bytes, the exit frame and
    the close)."""
    stack, _ = env
    h = login(stack)
    t = open_term(stack, h).json()
    ws = connect(stack, t, sockopt=SMALL)
    ws.send_binary(b"0stty -echo; head -c 400000 /dev/zero | base64 -w0; exit 7\r")
    got, code = 0, None
    ws.settimeout(15)
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
        if data[:1] == b"0":
            got += data[1:].count(b"A")
        elif data[:1] == b"2":
            code = data
        time.sleep(len(data) / 100_000)
    assert got == 533334, got  # all but the padding "=="
    assert code == b'2{"code":7}', code
    ws.close()


def test_a_ping_flood_does_not_grow_the_gateway(env):
    """A client sends pings and reads no pong: wslay queues a pong for each
    ping, so the bridge must stop reading such a client (before: 2 million
    pings took the gateway from 13 to 450 MiB)."""
    stack, _ = env
    h = login(stack)
    t = open_term(stack, h).json()
    gw = stack.service_pid("gateway")
    before = rss_mib(gw)
    ws = connect(stack, t, sockopt=SMALL)
    ws.settimeout(2)
    sent = 0
    payload = b"p" * 125
    try:
        for sent in range(300000):
            ws.ping(payload)
    except (websocket.WebSocketTimeoutException, socket.timeout, OSError):
        pass  # the gateway stopped reading us: what we want
    grown = rss_mib(gw) - before
    assert grown < 40, f"{sent} pings grew the gateway by {grown:.0f} MiB"
    ws.close()
    requests.delete(stack.url + "/api/v1/terminal/sessions/" + t["id"], headers=h, timeout=10)
    assert wait_until(lambda: requests.get(stack.url + "/readyz", timeout=2).status_code == 200,
                      5)
