"""Replicas (issue 9): three auth processes behind one gateway. Each
replica listens on its own socket (the first entry of its MAGNETAR_AUTH_URL)
and shares auth's data dir (SQLite WAL); the gateway dials every entry of
the list, nng spreads requests over the live pipes, and a killed replica is
routed around. Run without Docker: the processes are started by hand."""
import os
import signal
import subprocess
import time

import pytest
import requests

from conftest import BIN, Stack, wait_until

PASSWORD = "scaling founder password 9"
REPLICAS = 3


def urls(run, stem):
    return ",".join(f"ipc://{run}/{stem}{'' if i == 0 else '-%d' % (i + 1)}.sock"
                    for i in range(REPLICAS))


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    d = tmp_path_factory.mktemp("scale")
    run = d / "run"
    env = {
        "MAGNETAR_AUTH_URL": urls(run, "auth"),
        "MAGNETAR_AUTH_EVENTS_URL": urls(run, "auth-events"),
        "MAGNETAR_FOUNDER_USERNAME": "founder",
        "MAGNETAR_FOUNDER_PASSWORD": PASSWORD,
        "MAGNETAR_HIBP_MODE": "off",
    }
    stack = Stack(d, env).start()
    extra = []
    try:
        # Replicas 2 and 3: the same environment, their own first entries.
        for i in range(2, REPLICAS + 1):
            renv = dict(stack.env)
            renv["MAGNETAR_AUTH_URL"] = f"ipc://{run}/auth-{i}.sock"
            renv["MAGNETAR_AUTH_EVENTS_URL"] = f"ipc://{run}/auth-events-{i}.sock"
            log = open(d / f"auth-{i}.log", "wb")
            p = subprocess.Popen([str(BIN / "magnetar-auth")], env=renv, cwd=d,
                                 stdout=log, stderr=subprocess.STDOUT)
            extra.append((p, log, renv))
        for i, (p, _, renv) in enumerate(extra, start=2):
            assert wait_until(lambda: replica_stats(stack, renv) is not None, 20), \
                (d / f"auth-{i}.log").read_text()
        yield stack, extra
    finally:
        for p, log, _ in extra:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
            log.close()
        assert stack.stop() == 0, stack.logs()


def replica_stats(stack, env):
    """Stats of the one replica at env's MAGNETAR_AUTH_URL (its own socket)."""
    out = subprocess.run([str(BIN / "magctl"), "stats", "auth"], env=env, capture_output=True,
                         text=True, timeout=10)
    if out.returncode != 0:
        return None
    return {k: int(v) for k, v in (line.split() for line in out.stdout.splitlines())}


def own_env(stack, i):
    env = dict(stack.env)
    run = stack.dir / "run"
    env["MAGNETAR_AUTH_URL"] = f"ipc://{run}/auth.sock" if i == 1 else f"ipc://{run}/auth-{i}.sock"
    return env


def logins(stack, n):
    codes = []
    for _ in range(n):
        r = requests.post(stack.url + "/api/v1/auth/login", timeout=10,
                          json={"username": "founder", "password": PASSWORD})
        codes.append(r.status_code)
        if r.status_code == 200:  # the session limit keeps the table small
            requests.post(stack.url + "/api/v1/auth/logout", json={}, timeout=10,
                          headers={"Authorization": "Bearer " + r.json()["access_token"]})
    return codes


def test_every_replica_serves(scaled):
    stack, _ = scaled
    before = [replica_stats(stack, own_env(stack, i))["rpc.Login.calls"]
              for i in range(1, REPLICAS + 1)]
    assert logins(stack, 30) == [200] * 30
    after = [replica_stats(stack, own_env(stack, i))["rpc.Login.calls"]
             for i in range(1, REPLICAS + 1)]
    served = [a - b for a, b in zip(after, before)]
    assert sum(served) == 30, served
    assert all(n > 0 for n in served), served  # spread over all three


def test_a_logout_on_any_replica_reaches_the_gateway(scaled):
    """Revocations come from whichever replica served the logout: the
    gateway subscribes to every replica's event publisher."""
    stack, _ = scaled
    for _ in range(6):
        r = requests.post(stack.url + "/api/v1/auth/login", timeout=10,
                          json={"username": "founder", "password": PASSWORD})
        assert r.status_code == 200
        h = {"Authorization": "Bearer " + r.json()["access_token"]}
        assert requests.get(stack.url + "/api/v1/auth/me", headers=h).status_code == 200
        assert requests.post(stack.url + "/api/v1/auth/logout", json={}, headers=h,
                             timeout=10).status_code == 204
        assert wait_until(lambda: requests.get(stack.url + "/api/v1/auth/me", headers=h)
                          .status_code == 401, 1)


def test_a_killed_replica_is_routed_around(scaled):
    stack, extra = scaled
    victim, _, venv = extra[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    t0 = time.monotonic()
    codes = logins(stack, 20)
    assert codes == [200] * 20, codes
    assert time.monotonic() - t0 < 20
    assert replica_stats(stack, venv) is None  # gone, and nobody noticed
