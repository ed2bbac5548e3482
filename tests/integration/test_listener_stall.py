"""nng 1.5.2's listener stall (nng issue 1518, docs/dependencies.md): a peer
that hangs up before the server has written its 8-byte SP handshake made
the listener stop accepting for good, while the kernel kept accepting. Any
process that may connect to a service's socket (the magnetar group) could
silence that service this way; `magctl ping -t` giving up on a stopped
service did the same by accident. The services notice it within a second
(svc_watch_main) and listen again instead of exiting (docs/reliability.md).

The attack through the real interface: a raw AF_UNIX client connects to
each service's RPC socket and closes at once, 100 times; a real Ping must
still be answered within 2 s, and no service may be restarted. The same on
the event publishers' sockets: a new subscriber must still hear them.
"""
import os
import pathlib
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import requests

from conftest import BIN, Stack, free_port, make_passable, wait_until

SERVICES = ("gateway", "auth", "audit", "breach", "terminal")
PROBES = 100
PING_EVERY = 10


def restarts(stack, svc):
    text = stack.log_path.read_text(errors="replace")
    return len(re.findall(rf"started {svc} pid=\d+ \(restart\)", text))


def ping(stack, svc, timeout_ms=2000):
    """(answered, pid or magctl's output, seconds) of one `magctl ping`."""
    t0 = time.monotonic()
    out = stack.magctl("-t", str(timeout_ms), "ping", svc, timeout=15)
    took = time.monotonic() - t0
    if out.returncode != 0:
        return False, out.stdout + out.stderr, took
    return True, int(out.stdout.split("pid=")[1].split()[0]), took


def answered_within(stack, svc, budget=2.0):
    """The pid of one `magctl ping` answered within `budget` seconds, or
    None. A call that reached the service during a stall (at most 1 s) is
    taken by nng's transport and never read; the re-listen closes that
    connection and magctl sends the Ping again on its new one (Ping is safe
    to run twice: rpc_client_resend_on_reset). On the unfixed code the
    service stays silent for about 15 s and is then restarted."""
    ok, pid, took = ping(stack, svc, timeout_ms=int(budget * 1000))
    return pid if ok and took < budget + 0.5 else None


def hang_up(path):
    """Connect and close before reading the server's handshake."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
    finally:
        s.close()


def socket_path(stack, svc):
    path = stack.dir / "run" / f"{svc}.sock"
    assert path.exists(), f"{path} missing: " + ", ".join(
        os.listdir(stack.dir / "run"))
    return path


def test_raw_hang_ups_do_not_stall_a_listener(stack):
    for svc in SERVICES:
        path = socket_path(stack, svc)
        ok, pid, _ = ping(stack, svc)
        assert ok, f"{svc} did not answer before the probes:\n" + stack.logs()
        before = restarts(stack, svc)
        for i in range(1, PROBES + 1):
            hang_up(path)
            if i % PING_EVERY:
                continue
            now = answered_within(stack, svc)
            assert now is not None, (f"{svc} answered no ping within 2 s after {i} "
                                     f"raw hang-ups (nng 1518):\n" + stack.logs())
            assert now == pid, f"{svc} was restarted (pid {pid} -> {now})"
        assert restarts(stack, svc) == before, stack.logs()
        print(f"{svc}: rpc.relisten={stack.stats(svc).get('rpc.relisten')}")


def heard_within(stack, sock, budget=4.0):
    """Whether a new subscriber to `sock` (as root, the operator) hears
    anything within `budget` s: a stall is noticed within 1 s, then the
    subscriber dials again and the next heartbeat (one a second) comes."""
    p = subprocess.Popen(["nngcat", "--sub", "--subscribe", "", "--dial",
                          f"ipc://{stack.dir / 'run' / sock}", "--raw"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        ready, _, _ = select.select([p.stdout], [], [], budget)
        return bool(ready) and len(os.read(p.stdout.fileno(), 1)) == 1
    finally:
        p.kill()
        p.wait()


def test_raw_hang_ups_do_not_stall_a_publisher(stack):
    """The same attack on the event publishers (auth's revocations,
    audit's tail): a stalled publisher would take no new subscriber, so a
    gateway or terminal service started after it would never hear a
    revocation. Each publisher checks its own listener with every
    heartbeat and listens again (`events.relisten`)."""
    for svc, sock in (("auth", "auth-events.sock"), ("audit", "audit-events.sock")):
        path = stack.dir / "run" / sock
        assert path.exists(), os.listdir(stack.dir / "run")
        ok, pid, _ = ping(stack, svc)
        assert ok, stack.logs()
        before = restarts(stack, svc)
        for i in range(1, PROBES + 1):
            hang_up(path)
            if i % (PROBES // 4):
                continue
            assert heard_within(stack, sock), \
                f"a new subscriber to {sock} heard nothing within 4 s after {i} " \
                "raw hang-ups (nng 1518):\n" + stack.logs()
        assert answered_within(stack, svc) == pid
        assert restarts(stack, svc) == before, stack.logs()
        print(f"{sock}: events.relisten={stack.stats(svc).get('events.relisten')}")


def test_a_ping_given_up_on_a_stopped_service_does_not_stall_it(stack):
    for svc in ("auth", "breach"):
        ok, pid, _ = ping(stack, svc)
        assert ok, stack.logs()
        before = restarts(stack, svc)
        os.kill(pid, signal.SIGSTOP)
        try:
            # Connected, the handshake unread: magctl gives up and closes.
            ok, _, _ = ping(stack, svc, timeout_ms=300)
            assert not ok, f"{svc} answered while stopped"
        finally:
            os.kill(pid, signal.SIGCONT)
        now = answered_within(stack, svc)
        assert now is not None, f"{svc} silent after SIGCONT:\n" + stack.logs()
        assert now == pid and restarts(stack, svc) == before, stack.logs()


# ---- a process that holds a service's socket name ---------------------------

def squatter(tmp, user):
    """An nng rep socket bound by `user` (not the service's user, not root)
    at a path of its own, answering anything and printing what it got: what
    a process of the magnetar group could bind while a service's name is
    free (the service down, or between a re-listen's close and bind)."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="magsquat-", dir="/tmp"))
    d.chmod(0o1777)
    path = d / "auth.sock"
    out = open(tmp / "squatter.out", "wb")
    p = subprocess.Popen(
        ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "sh", "-c",
         'umask 0; exec nngcat --rep --listen "$0" --data x --ascii', f"ipc://{path}"],
        stdout=out, stderr=subprocess.STDOUT)
    assert wait_until(path.exists, 5)
    return p, out, d, path


@pytest.mark.skipif(os.geteuid() != 0, reason="one uid per service needs root")
def test_a_squatter_on_a_socket_name_receives_nothing(stack, tmp_path):
    """magctl (as root) and a gateway, each pointed at a socket bound by
    magnetar-breach instead of auth: they refuse the connection before
    sending (rpc_client_open_for), so the password of `magctl user add` and
    of a login never reaches it, and the callers answer unavailable."""
    p, out, d, path = squatter(tmp_path, "magnetar-breach")
    try:
        env = dict(stack.env, MAGNETAR_AUTH_URL=f"ipc://{path}")
        r = subprocess.run([str(BIN / "magctl"), "-t", "1500", "user", "create", "mallory",
                            "member"], env=env, input="squatted password 1234\n",
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 1 and "auth: down" in r.stdout, r.stdout + r.stderr
        port = free_port()
        genv = dict(stack.env, MAGNETAR_AUTH_URL=f"ipc://{path}",
                    MAGNETAR_HTTP_ADDR=f"127.0.0.1:{port}",
                    MAGNETAR_GATEWAY_URL=f"ipc://{tmp_path}/gw2.sock")
        make_passable(tmp_path)
        with open(tmp_path / "gw2.log", "wb") as log:
            gw = subprocess.Popen([str(BIN / "magnetar-gateway")], env=genv, stdout=log,
                                  stderr=subprocess.STDOUT)
            try:
                url = f"http://127.0.0.1:{port}"
                assert wait_until(lambda: requests.get(url + "/healthz", timeout=2)
                                  .status_code == 200, 15)
                r = requests.post(url + "/api/v1/auth/login", timeout=15, json={
                    "username": "founder", "password": "squatted password 5678"})
                assert r.status_code == 503, r.text
            finally:
                gw.terminate()
                gw.wait(timeout=10)
        log_text = (tmp_path / "gw2.log").read_text(errors="replace")
        assert "not the service's user" in log_text, log_text
    finally:
        p.kill()
        p.wait()
        out.close()
        shutil.rmtree(d, ignore_errors=True)
    got = (tmp_path / "squatter.out").read_text(errors="replace")
    assert "squatted" not in got, got


@pytest.mark.skipif(os.geteuid() != 0, reason="one uid per service needs root")
def test_a_squatting_publisher_is_not_heard(stack, tmp_path):
    """A publisher bound by magnetar-breach where audit's events should be
    (the name free while audit is down or between a re-listen's close and
    bind): a subscriber that heard it would take its heartbeats for the
    service's (a gateway would think its revoked set current) and its
    events for real. `magctl audit tail` pointed at it hangs up before a
    message is read (events_sub_open's server roles)."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="magsquat-", dir="/tmp"))
    d.chmod(0o1777)
    path = d / "audit-events.sock"
    p = subprocess.Popen(
        ["setpriv", "--reuid=magnetar-breach", "--regid=magnetar-breach", "--clear-groups",
         "sh", "-c", 'umask 0; exec nngcat --pub --listen "$0" --data fake --interval 1',
         f"ipc://{path}"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        assert wait_until(path.exists, 5)
        env = dict(stack.env, MAGNETAR_AUDIT_EVENTS_URL=f"ipc://{path}")
        tail = subprocess.Popen([str(BIN / "magctl"), "audit", "tail"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(2.5)
        tail.send_signal(signal.SIGINT)
        out, _ = tail.communicate(timeout=10)
        assert "publisher is not the service's user" in out, out
        assert "fake" not in out and "malformed" not in out, out
    finally:
        p.kill()
        p.wait()
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="one uid per service needs root")
def test_the_watchdogs_last_resort_exit_is_counted_in_metrics(tmp_path):
    """Where the re-listen cannot help, the watchdog exits for a restart,
    and that exit is counted where operators look. A replicated service's
    entries sit in a root-owned dir where it may not bind (a squatter
    could not either), so a stall there ends in the watchdog's exit: raw
    hang-ups on breach's entry until it exits, then the restarted breach
    reports `svc.watchdog_exits` 1 in Stats and in the gateway's /metrics."""
    tmp_path.chmod(0o755)
    run = tmp_path / "run"
    s = Stack(tmp_path, {"MAGNETAR_BREACH_URL": f"ipc://{run}/breach/1.sock,"
                                                 f"ipc://{run}/breach/2.sock"}).start()
    try:
        path = run / "breach" / "1.sock"
        ok, pid, _ = ping(s, "breach")
        assert ok, s.logs()
        assert s.stats("breach")["svc.watchdog_exits"] == 0
        for _ in range(200):
            try:
                hang_up(path)
            except (ConnectionRefusedError, FileNotFoundError):
                break  # it exited: nothing listens until its restart
            time.sleep(0.05)
        assert wait_until(lambda: restarts(s, "breach") == 1, 10), s.logs()
        assert "cannot listen on it again" in s.log_path.read_text(errors="replace")
        assert wait_until(lambda: ping(s, "breach")[0], 10), s.logs()
        assert ping(s, "breach")[1] != pid
        assert s.stats("breach")["svc.watchdog_exits"] == 1
        line = 'magnetar_service_stat{service="breach",name="svc.watchdog_exits"} 1'
        # The gateway's connection to breach comes back within a second.
        assert wait_until(lambda: line in requests.get(s.url + "/metrics", timeout=5).text,
                          10), requests.get(s.url + "/metrics", timeout=5).text[-3000:]
    finally:
        assert s.stop() == 0, s.logs()
