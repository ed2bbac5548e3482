"""The Compose deployment as an operator runs it (docs/operations.md), with
Debian 12's docker-compose 1.29 against a real Docker engine: the documented
build, `up --scale auth=3` on empty volumes, register, log in and /me
through the published port, one auth replica killed while logins go on
every 0.2 s (none may fail), a second audit refused, then `stop`, after
which every container must have exited 0 (a clean shutdown, not a SIGKILL),
and everything made is removed.

Run by .ci/run after tests/container/docker.sh (engine and base image);
skipped elsewhere unless MAGNETAR_CONTAINER_TESTS=1."""
import base64
import json
import os
import pathlib
import secrets
import shutil
import socket
import subprocess
import threading
import time

import pytest
import requests

REPO = pathlib.Path(__file__).resolve().parents[2]
PROJECT = "magnetar-ci-%d" % os.getpid()
PASSWORD = "plum-orbit-tiller-42"

pytestmark = pytest.mark.skipif(os.environ.get("MAGNETAR_CONTAINER_TESTS") != "1",
                                reason="container stages run from .ci/run "
                                       "(MAGNETAR_CONTAINER_TESTS=1)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Compose:
    def __init__(self, tmp):
        self.tmp = tmp
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        sec = tmp / "secrets"
        sec.mkdir(mode=0o700)
        key = lambda: base64.b64encode(secrets.token_bytes(32)).decode()
        for name, value in {"audit_keys": "k1:" + key(), "totp_key": key(),
                            "fingerprint_key": key(),
                            "founder_password": secrets.token_urlsafe(18)}.items():
            (sec / name).write_text(value + "\n")
            (sec / name).chmod(0o600)
        # audit re-reads its keyring as its own user (deploy/.env.example).
        os.chown(sec / "audit_keys", 0, 7103)
        (sec / "audit_keys").chmod(0o640)
        self.env_file = tmp / "env"
        self.env_file.write_text(
            "SECRETS_DIR=%s\nGATEWAY_PUBLISH=127.0.0.1:%d\nMAGNETAR_REGISTRATION=open\n"
            "MAGNETAR_HIBP_MODE=off\nIMAGE=magnetar:ci\n" % (sec, self.port))
        # The documented way to believe a TLS proxy's X-Forwarded-For
        # (docs/operations.md, "Client addresses"): the edge bridge's own
        # address, where published connections come from.
        self.override = tmp / "override.yml"
        self.override.write_text(
            "services:\n  gateway:\n    environment:\n"
            "      MAGNETAR_TRUSTED_PROXIES: 10.213.250.1/32\n")

    def run(self, *args, check=True, timeout=600):
        cmd = ["docker-compose", "--env-file", str(self.env_file), "-p", PROJECT,
               "-f", str(REPO / "docker-compose.yml"), "-f", str(self.override), *args]
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        if check:
            assert r.returncode == 0, "%s\n%s\n%s" % (" ".join(args), r.stdout, r.stderr)
        return r

    def containers(self):
        out = subprocess.run(["docker", "ps", "-aq", "--filter",
                              "label=com.docker.compose.project=" + PROJECT],
                             capture_output=True, text=True, check=True).stdout.split()
        if not out:
            return []
        return json.loads(subprocess.run(["docker", "inspect", *out], capture_output=True,
                                         text=True, check=True).stdout)

    def logs(self):
        return self.run("logs", "--no-color", "--tail", "60", check=False).stdout[-12000:]


def login(c, n, **kw):
    return requests.post(c.url + "/api/v1/auth/login", timeout=15,
                         json={"username": "alice", "password": PASSWORD},
                         headers={"X-Forwarded-For": "198.51.100.%d" % (n % 250 + 1)}, **kw)


@pytest.fixture(scope="module")
def compose(tmp_path_factory):
    c = Compose(tmp_path_factory.mktemp("compose"))
    try:
        # The documented build, from the repository root.
        c.run("build")
        c.run("up", "-d", "--scale", "auth=3")
        ok = False
        end = time.monotonic() + 90
        while time.monotonic() < end and not ok:
            try:
                ok = requests.get(c.url + "/readyz", timeout=3).status_code == 200
            except requests.RequestException:
                pass
            time.sleep(0.5)
        assert ok, c.logs()
        yield c
    finally:
        c.run("down", "-v", "--remove-orphans", "--rmi", "local", check=False)
        subprocess.run(["docker", "image", "rm", "-f", "magnetar:ci"], capture_output=True)


def test_three_auth_replicas_start_on_empty_volumes_and_none_exits(compose):
    auth = [x for x in compose.containers()
            if x["Config"]["Labels"].get("com.docker.compose.service") == "auth"]
    assert len(auth) == 3
    for x in auth:
        # The founder race would make two of them exit at their start.
        assert x["State"]["Running"] and x["RestartCount"] == 0, compose.logs()


def test_register_login_me_through_the_published_port(compose):
    r = requests.post(compose.url + "/api/v1/auth/register", timeout=15,
                      json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 201, r.text
    r = login(compose, 0)
    assert r.status_code == 200, r.text
    me = requests.get(compose.url + "/api/v1/auth/me", timeout=15,
                      headers={"Authorization": "Bearer " + r.json()["access_token"],
                               "X-Forwarded-For": "198.51.100.1"})
    assert me.status_code == 200 and me.json()["user"]["username"] == "alice", me.text
    # The client's address, not docker-proxy's, reached the session.
    assert me.json()["session"]["ip"] == "198.51.100.1", me.text


def test_logins_go_on_while_an_auth_replica_is_killed(compose):
    victim = next(x for x in compose.containers()
                  if x["Config"]["Labels"].get("com.docker.compose.service") == "auth")
    codes, stop = [], threading.Event()

    def loop():
        n = 1
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                r = login(compose, n)
                codes.append((t0, r.status_code, r.text if r.status_code != 200 else ""))
            except requests.RequestException as e:
                codes.append((t0, repr(e), ""))
            n += 1
            time.sleep(0.2)

    t = threading.Thread(target=loop)
    t.start()
    time.sleep(2)
    # A crash, not `docker kill` (which Docker takes for an operator's stop
    # and never restarts): SIGKILL to the service under the container's init.
    init = victim["State"]["Pid"]
    service = int(pathlib.Path("/proc/%d/task/%d/children" % (init, init)).read_text().split()[0])
    killed_at = time.monotonic()
    os.kill(service, 9)
    time.sleep(6)
    stop.set()
    t.join()
    bad = [(round(t0 - killed_at, 2), c, body) for t0, c, body in codes if c != 200]
    # Every login succeeds, the one in flight on the replica at the instant
    # it died too: the gateway sends it again to a live one (docs/scaling.md).
    assert len(codes) >= 20, codes
    assert not bad, (bad, compose.logs())
    # on-failure brought it back.
    again = next(x for x in compose.containers() if x["Id"] == victim["Id"])
    assert again["RestartCount"] == 1 and again["State"]["Running"], compose.logs()


def test_a_second_audit_replica_exits_and_is_not_restarted(compose):
    compose.run("up", "-d", "--no-recreate", "--scale", "auth=3", "--scale", "audit=2")
    time.sleep(5)
    audit = [x for x in compose.containers()
             if x["Config"]["Labels"].get("com.docker.compose.service") == "audit"]
    assert len(audit) == 2
    stopped = [x for x in audit if not x["State"]["Running"]]
    assert len(stopped) == 1 and stopped[0]["State"]["ExitCode"] == 0, compose.logs()
    assert stopped[0]["RestartCount"] == 0
    assert login(compose, 7).status_code == 200


def test_stop_is_clean_for_every_container(compose):
    compose.run("stop", "-t", "20")
    states = {x["Name"]: (x["State"]["Running"], x["State"]["ExitCode"])
              for x in compose.containers()}
    assert states and all(s == (False, 0) for s in states.values()), (states, compose.logs())
