"""The whole stack under the supervisor: readiness, a service killed and
restarted, a frozen service answered with 503/504 instead of a hang, the
error format and security headers on the stack's gateway, magctl, and the
audit outbox path from every producer to audit."""
import os
import signal
import time

import requests

from conftest import wait_until

SERVICES = ("auth", "audit", "breach", "terminal")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def readyz(stack, timeout=3):
    return requests.get(stack.url + "/readyz", timeout=timeout)


def test_ready_with_every_service_up(stack):
    r = readyz(stack)
    assert r.status_code == 200
    assert r.json() == {"status": "ready",
                        "services": {s: "up" for s in SERVICES}}
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"


def test_a_burst_of_readyz_costs_no_ping(stack):
    """/readyz answers from the gateway's shared probe (a round of Pings
    every 200 ms): 200 probes in a row cost auth at most a round per 200 ms
    of their duration, not a Ping each."""
    before = stack.stats("auth")["rpc.Ping.calls"]
    t0 = time.monotonic()
    with requests.Session() as http:
        codes = [http.get(stack.url + "/readyz", timeout=3).status_code for _ in range(200)]
    took = time.monotonic() - t0
    pings = stack.stats("auth")["rpc.Ping.calls"] - before
    assert codes == [200] * 200
    assert pings <= took / 0.2 + 3, (pings, took)


def test_a_stack_at_rest_replaces_no_dialer(stack):
    """Every peer up: no service keeps replacing dialers (rpc_dials_renew_idle
    acts only on one without a pipe for 1.5 s). Start-up may legitimately
    renew a dialer whose peer came up late, so the counts are first let
    settle (2 s unchanged), then must stay put for 4 s. The re-dial after
    the privilege drop once left connected dialers counted as pipeless:
    tests/unit/rpc_dial_test.c holds that regression test."""
    names = SERVICES + ("gateway",)

    def renewed():
        return {n: stack.stats(n)["rpc.dialers_renewed"] for n in names}

    before, still_since = renewed(), time.monotonic()
    end = still_since + 15
    while time.monotonic() < end and time.monotonic() - still_since < 2:
        time.sleep(0.25)
        now = renewed()
        if now != before:
            before, still_since = now, time.monotonic()
    assert time.monotonic() - still_since >= 2, ("never settled", before)
    time.sleep(4)
    assert renewed() == before


def test_magctl_ping_and_stats(stack):
    for name in SERVICES + ("gateway",):
        out = stack.magctl("ping", name)
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.startswith(f"{name}: up ")
    stats = stack.stats("audit")
    assert stats["rpc.Ping.calls"] >= 1
    # An unknown service is a usage error, not a crash.
    assert stack.magctl("ping", "nope").returncode == 2


def test_producers_reach_audit_through_their_outboxes(stack):
    # Every producer records service.started in its outbox at start; the
    # sender ships it to audit and deletes it only after the ack.
    def delivered():
        return all(stack.stats(s)["outbox.pending"] == 0 and stack.stats(s)["outbox.sent"] >= 1
                   for s in ("auth", "breach", "terminal"))
    assert wait_until(delivered, 10), stack.logs()
    assert stack.stats("audit")["audit.events_stored"] >= 3


def test_killed_service_is_reported_then_restarted(stack):
    old_pid = stack.service_pid("audit")
    os.kill(old_pid, signal.SIGKILL)
    t0 = time.monotonic()
    # /readyz names audit as down within 2 s...
    # (A list: a 503 Response is falsy, bool() is its .ok.)
    down = wait_until(lambda: (lambda r: r.status_code == 503 and [r])(readyz(stack)), 2,
                      interval=0.02)
    if down:
        down = down[0]
        assert time.monotonic() - t0 < 2.5
        body = down.json()
        assert body["status"] == "degraded"
        assert body["services"]["audit"] == "down"
        assert body["services"]["auth"] == "up"
    else:
        # The supervisor may have brought audit back before we looked: the
        # restart below is then what proves it; the frozen-service test
        # covers the 503 shape.
        pass
    # ...the supervisor restarts it, and the stack is ready again (20 s: a
    # restart that meets nng's start-up stall exits after its 3 s
    # self-check and is restarted again, docs/reliability.md).
    assert wait_until(lambda: readyz(stack).status_code == 200, 20), stack.logs()
    assert stack.service_pid("audit") != old_pid
    # The supervisor said so (the whole log: a restarted service's start-up
    # lines can push it out of logs()' tail).
    assert "audit exited: killed by signal 9" in stack.log_path.read_text(errors="replace"), \
        stack.logs()


def test_frozen_service_gets_503_not_a_hang(stack):
    pid = stack.service_pid("breach")
    os.kill(pid, signal.SIGSTOP)
    try:
        # /readyz answers from the gateway's probe at once, and says
        # breach is down within 2 s of the freeze (docs/api.md).
        t0 = time.monotonic()
        # (A list: a 503 Response is falsy, bool() is its .ok.)
        seen = []
        got = wait_until(lambda: (lambda r: seen.append(r.status_code) or
                                  (r.status_code == 503 and [r]))(readyz(stack, timeout=1)),
                         2, interval=0.02)
        took = time.monotonic() - t0
        assert got, f"no 503 two seconds after breach froze: {seen}"
        r = got[0]
        assert r.json()["services"]["breach"] == "down"
        assert r.json()["status"] == "degraded"
        assert took < 2.0, f"readyz took {took:.2f}s"
        for k, v in SECURITY_HEADERS.items():
            assert r.headers[k] == v
        # magctl gives up with a non-zero status instead of waiting forever.
        t0 = time.monotonic()
        out = stack.magctl("-t", "300", "ping", "breach")
        assert out.returncode == 1
        assert time.monotonic() - t0 < 3
    finally:
        os.kill(pid, signal.SIGCONT)
    assert wait_until(lambda: readyz(stack).status_code == 200, 10), stack.logs()


def test_errors_carry_json_and_security_headers(stack):
    cases = [
        requests.get(stack.url + "/no/such/route", timeout=3),
        requests.post(stack.url + "/healthz", timeout=3),
        requests.post(stack.url + "/healthz", data=b"x" * (70 * 1024),
                      headers={"Content-Type": "application/json"}, timeout=3),
        requests.get(stack.url + "/healthz", headers={"X-Big": "a" * (17 * 1024)}, timeout=3),
        requests.get(stack.url + "/" + "a" * 9000, timeout=3),
    ]
    assert [r.status_code for r in cases] == [404, 405, 413, 431, 414]
    codes = ["not_found", "method_not_allowed", "payload_too_large", "headers_too_large",
             "uri_too_long"]
    for r, code in zip(cases, codes):
        err = r.json()["error"]
        assert err["code"] == code
        assert err["message"]
        assert err["request_id"] == r.headers["X-Request-Id"]
        for k, v in SECURITY_HEADERS.items():
            assert r.headers[k] == v, (r.status_code, k)
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert "GET" in cases[1].headers["Allow"]


def test_healthz(stack):
    r = requests.get(stack.url + "/healthz", timeout=3)
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert r.headers["X-Request-Id"]
