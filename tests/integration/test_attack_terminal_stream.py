"""Attacks on the terminal's limits and its stream socket (docs/terminal.md,
docs/security.md): the global terminal cap across users over HTTP; another
service's uid connecting to the stream socket with a stolen key; a wrong
key, a spent key, a malformed hello and a broken frame length. One stack
for the module.
"""
import os
import pwd
import shutil
import subprocess
import sys
import time

import pytest
import requests
import websocket

from conftest import wait_until
from test_attack_services import as_user, nngcat_req
from test_rpc_external import decode, encode, envelope, parse_reply, require_tools, scalar
from test_terminal import add_admin, connect, login, make_root, open_term, start

ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    require_tools()
    root = make_root()
    # Per user higher than in all: a 429 below it is the global cap's.
    s = start(tmp_path_factory.mktemp("attackterm"), root, MAGNETAR_TERMINAL_MAX="2",
              MAGNETAR_TERMINAL_MAX_PER_USER="3")
    yield s, root
    rc = s.stop()
    shutil.rmtree(root, ignore_errors=True)
    assert rc == 0, s.logs()
    assert "ERROR: AddressSanitizer" not in s.full_log(), s.logs()


def close_all(stack, headers):
    r = requests.get(stack.url + "/api/v1/terminal/sessions", headers=headers, timeout=5)
    for t in r.json().get("terminals", []):
        requests.delete(stack.url + "/api/v1/terminal/sessions/" + t["id"], headers=headers,
                        timeout=5)


def test_at_most_terminal_max_terminals_in_all(env):
    """MAGNETAR_TERMINAL_MAX=2, 3 per user: the founder and an admin open
    one each, then either one's next is 429 too_many_terminals although
    each is under their own limit; closing one frees a place."""
    stack, _ = env
    founder = login(stack)
    admin = add_admin(stack, founder, "admin2", "admin two password 1")
    try:
        first = open_term(stack, founder)
        assert first.status_code == 201, first.text
        assert open_term(stack, admin).status_code == 201
        for who in (founder, admin):
            r = open_term(stack, who)
            assert r.status_code == 429, r.text
            assert r.json()["error"]["code"] == "too_many_terminals", r.text
        requests.delete(stack.url + "/api/v1/terminal/sessions/" + first.json()["id"],
                        headers=founder, timeout=5)
        assert open_term(stack, admin).status_code == 201
    finally:
        close_all(stack, founder)
        close_all(stack, admin)


# What the gateway's side of a terminal stream sends: length-prefixed
# frames (common/lenframe.h), the hello first (docs/terminal.md).
STREAM_CLIENT = r"""
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
try:
    s.sendall(bytes.fromhex(sys.argv[2]))
except (BrokenPipeError, ConnectionResetError):
    pass  # hung up on before it read: what a refusal looks like
s.settimeout(1.5)
got = b""
try:
    while True:
        b = s.recv(65536)
        if not b:
            break
        got += b
except (socket.timeout, ConnectionResetError):
    pass
sys.stdout.write(got.hex())
"""


def frame(body):
    return len(body).to_bytes(4, "big") + body


def stream_send(path, data, user=None):
    """Connects to the stream socket (as `user`, else the test's own uid),
    sends `data`, and returns what came back within 1.5 s."""
    r = subprocess.run([sys.executable, "-c", STREAM_CLIENT, path, data.hex()],
                       capture_output=True, timeout=20, text=True,
                       preexec_fn=as_user(user) if user else None)
    assert r.returncode == 0, r.stderr
    return bytes.fromhex(r.stdout)


def attach(stack, t):
    """The terminal's own Attach call as the operator: consumes the ticket,
    returns (stream socket path, stream key); nobody has connected yet."""
    payload = encode("magnetar.TerminalAttachRequest",
                     f'id: "{t["id"]}" ticket: "{t["ws_ticket"]}"', "proto/terminal.proto")
    r = parse_reply(nngcat_req(stack, "terminal.sock", envelope("Attach", payload)))
    assert r.status == "STATUS_OK", r.text
    reply = decode("magnetar.TerminalAttachReply", r.payload, "proto/terminal.proto")
    path = scalar(reply, "stream_path").decode()
    key = scalar(reply, "stream_key")
    assert os.path.exists(path) and len(key) == 32
    return path, key


def open_attached(stack, headers, root):
    """A terminal opened over HTTP and attached by the operator: (its
    JSON, stream socket path, stream key)."""
    t = open_term(stack, headers, cwd=str(root / "work"))
    assert t.status_code == 201, t.text
    t = t.json()
    return (t, *attach(stack, t))


def hello(t, key):
    return frame(b"H" + t["id"].encode() + key)


def refusals(stack):
    """How many stream connections the terminal hung up on (its log says
    so at most once a second, so the count is what tests look at)."""
    return stack.stats("terminal")["terminal.stream_refused"]


@pytest.mark.skipif(not ROOT, reason="one user per service needs root")
def test_a_stream_socket_admits_only_the_gateway_or_the_operator(env):
    """A terminal is opened over HTTP; its ticket is consumed with the
    terminal's own Attach call as the operator (root), which gets the
    stream key. magnetar-breach, a member of the IPC group that can reach
    the socket file, connects with that very key and sends a command: hung
    up on before a byte is read, the command never runs, and the key is not
    spent. The operator then connects with the same key: admitted, its
    command runs. A second connection with the spent key is refused."""
    stack, root = env
    founder = login(stack)
    try:
        t, path, key = open_attached(stack, founder, root)

        breach_file = root / "work" / "by-breach"
        before = refusals(stack)
        stream_send(path, hello(t, key) + frame(f"0touch {breach_file}\n".encode()),
                    user="magnetar-breach")
        uid = pwd.getpwnam("magnetar-breach").pw_uid
        assert refusals(stack) == before + 1
        # The module's first refusal: logged (later ones at most once a second).
        assert f"refused a stream peer id=- uid={uid} " in \
            stack.log_path.read_text(errors="replace")

        operator_file = root / "work" / "by-operator"
        out = stream_send(path, hello(t, key) + frame(f"0touch {operator_file}\n".encode()))
        assert wait_until(operator_file.exists, 10), stack.logs()
        assert out[4:5] == b"0", out  # the shell's output, framed
        time.sleep(0.5)  # the shell ran the operator's line; breach's would be before it
        assert not breach_file.exists()

        # One connection per consumed ticket: the key is spent.
        again = root / "work" / "second-stream"
        before = refusals(stack)
        stream_send(path, hello(t, key) + frame(f"0touch {again}\n".encode()))
        assert refusals(stack) == before + 1
        time.sleep(0.5)
        assert not again.exists()
    finally:
        close_all(stack, founder)


def test_a_wrong_key_or_a_broken_frame_gets_nothing(env):
    """The stream key is the credential on the socket: a wrong one (or
    another terminal's id) is refused without spending the right one; a
    length no frame may have, after a good hello, hangs up the stream and
    the terminal service keeps serving."""
    stack, root = env
    founder = login(stack)
    try:
        t, path, key = open_attached(stack, founder, root)
        wrong = root / "work" / "by-wrong-key"
        before = refusals(stack)
        out = stream_send(path, hello(t, bytes(32)) + frame(f"0touch {wrong}\n".encode()))
        assert out == b""
        assert refusals(stack) == before + 1
        # A hello that is not one: an id that is not hex; two bytes, then
        # the end; nothing at all for longer than the hello's second.
        assert stream_send(path, frame(b"H" + b"z" * 64)) == b""
        assert stream_send(path, b"\x00\x00") == b""
        assert stream_send(path, b"") == b""
        assert refusals(stack) == before + 4

        # The right key still works, then a zero length breaks the stream.
        out = stream_send(path, hello(t, key) + frame(b"0echo ok\n") + b"\x00\x00\x00\x00")
        # The service's line reaches the stack's log through the
        # supervisor's pipe, after the hang-up stream_send saw.
        broken = b"broken stream framing id=" + t["id"].encode()
        assert wait_until(lambda: broken in stack.log_path.read_bytes(), 5), stack.logs()
        time.sleep(0.5)
        assert not wrong.exists()
        r = requests.get(stack.url + "/readyz", timeout=5)
        assert r.status_code == 200, r.text
        # The stream lost, the terminal closes after the detach grace.
        assert wait_until(lambda: all(
            x["id"] != t["id"] for x in requests.get(
                stack.url + "/api/v1/terminal/sessions", headers=founder,
                timeout=5).json()["terminals"]), 10)
    finally:
        close_all(stack, founder)


SQUATTER = r"""
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)  # anyone may connect: the gateway will
s.listen(4)
print("listening", flush=True)
s.settimeout(8)
got = b""
try:
    c, _ = s.accept()
    c.settimeout(3)
    while True:
        b = c.recv(4096)
        if not b:
            break
        got += b
except OSError:
    pass
print("got", got.hex(), flush=True)
"""


@pytest.mark.skipif(not ROOT, reason="one user per service needs root")
def test_the_gateway_tells_a_squatter_nothing(env):
    """The name of the stream socket is free while the terminal service is
    down; magnetar-breach, a member of the IPC group, binds it (here: the
    real socket is moved aside, as a restart would leave the name free).
    A user then opens a terminal and its WebSocket: the gateway connects
    to the squatter, sees that its listener is not the terminal's uid, and
    sends it nothing: neither the stream key nor a keystroke."""
    stack, root = env
    founder = login(stack)
    path = str(stack.dir / "run" / "terminal.stream-1.sock")
    assert os.path.exists(path)
    os.rename(path, path + ".real")
    squatter = subprocess.Popen([sys.executable, "-c", SQUATTER, path], stdout=subprocess.PIPE,
                                text=True, preexec_fn=as_user("magnetar-breach"))
    try:
        assert squatter.stdout.readline().strip() == "listening"
        t = open_term(stack, founder, cwd=str(root / "work"))
        assert t.status_code == 201, t.text
        ws = connect(stack, t.json())
        try:
            ws.send_binary(b"0echo secret typed\r")
        except websocket.WebSocketException:
            pass
        with pytest.raises((websocket.WebSocketException, OSError)):
            for _ in range(10):  # the close frame, then nothing
                ws.recv_data(control_frame=True)
        out, _ = squatter.communicate(timeout=15)
        assert out.strip() == "got", out  # not one byte
        uid = pwd.getpwnam("magnetar-breach").pw_uid
        assert f"refused a terminal stream served by uid {uid}" in \
            stack.log_path.read_text(errors="replace"), stack.logs()
    finally:
        squatter.kill()
        squatter.wait()
        os.unlink(path)
        os.rename(path + ".real", path)
        close_all(stack, founder)
