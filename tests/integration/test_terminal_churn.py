"""Terminal churn (issue 19, docs/reliability.md): two clients each open a
terminal, attach its WebSocket, echo a line, `exit`, read the exit frame and
delete it,
as fast as they can, while the stream is a plain Unix socket. With nng
1.5.2's pair sockets this loop stalled a close for good within a few
dozen cycles (nanomsg/nng#1543): the terminal then answered nothing and
the gateway never finished stopping. Here every cycle must complete, no
service may restart, nothing may be left open, and the stack must stop
cleanly. MAGNETAR_CHURN_CYCLES sets the cycles per client (CI: 1000, so
2,000 in all; tests/bench/terminal_churn.sh runs 5,000 each, 10,000 in all).
"""
import os
import shutil
import threading
import time

import requests
import websocket

from conftest import wait_until
from test_terminal import (add_admin, connect, login, make_root, open_term, read_exit,
                           read_until, start)

CYCLES = int(os.environ.get("MAGNETAR_CHURN_CYCLES", "1000"))


def churn(stack, headers, cycles, errors, done):
    for i in range(cycles):
        try:
            r = open_term(stack, headers)
            assert r.status_code == 201, r.text
            t = r.json()
            ws = connect(stack, t)
            ws.send_binary(b"0echo c''%d\r" % i)
            read_until(ws, b"c%d\r\n" % i)
            ws.send_binary(b"0exit 7\r")
            assert read_exit(ws) == 7
            ws.close()
            r = requests.delete(stack.url + "/api/v1/terminal/sessions/" + t["id"],
                                headers=headers, timeout=10)
            # Gone by itself after the exit frame, or deleted now.
            assert r.status_code in (204, 404), r.text
            done.append(i)
        except Exception as e:  # noqa: BLE001 - reported with its cycle below
            errors.append(f"cycle {i}: {e!r}")
            return


def test_open_attach_exit_delete_churn_from_two_clients(tmp_path):
    root = make_root()
    stack = start(tmp_path, root, MAGNETAR_TERMINAL_MAX_PER_USER="4")
    try:
        first = login(stack)
        second = add_admin(stack, first, "churn2", "churn two password 19")
        pids = {name: stack.service_pid(name) for name in ("terminal", "gateway")}
        errors, done = [], []
        started = time.monotonic()
        threads = [threading.Thread(target=churn, args=(stack, h, CYCLES, errors, done))
                   for h in (first, second)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60 + CYCLES * 2)
        elapsed = time.monotonic() - started
        assert not any(th.is_alive() for th in threads), "a client hung: " + stack.logs()
        assert not errors, "\n".join(errors) + "\n" + stack.logs()
        assert len(done) == 2 * CYCLES
        print(f"{2 * CYCLES} cycles in {elapsed:.1f} s")
        # Nothing restarted, nothing left open, every close recorded.
        assert {name: stack.service_pid(name) for name in pids} == pids
        assert wait_until(lambda: stack.stats("terminal")["terminal.open"] == 0, 10), \
            stack.stats("terminal")
        stats = stack.stats("terminal")
        assert stats["terminal.opened"] == 2 * CYCLES, stats
        assert wait_until(lambda: stack.stats("terminal")["terminal.closed"] == 2 * CYCLES,
                          10), stack.stats("terminal")
        assert stats["terminal.stream_refused"] == 0, stats
        ws_left = [ln for ln in stack.log_path.read_text(errors="replace").splitlines()
                   if "cannot reach the terminal stream" in ln]
        assert not ws_left, ws_left
    finally:
        rc = stack.stop()
        shutil.rmtree(root, ignore_errors=True)
    # A stalled close would keep a process from stopping: SIGTERM must do.
    assert rc == 0, stack.logs()
    assert "ERROR: AddressSanitizer" not in stack.full_log(), stack.logs()
