"""The newcomer's path on a machine that has nothing yet: a fresh Debian 12
container (the offline minbase image of tests/container/docker.sh: no make,
no git, no compiler, no library), a clean clone under /root (0700, closed
to the service users), then exactly the README's lines: install make and
git, `make run` until /readyz answers 200, stop it, `make test` to green.

With every capability and no Docker seccomp profile, only for what the
suites themselves do as root (network namespaces, seccomp and Landlock,
unshare); nothing is installed into the container but what the README and
`make` install.

Run by .ci/run after tests/container/docker.sh; skipped elsewhere unless
MAGNETAR_CONTAINER_TESTS=1. MAGNETAR_FRESH_TEST=unit runs `make unit`
instead of `make test` there (docs/testing.md says when)."""
import os
import pathlib
import re
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
NAME = "magnetar-fresh-%d" % os.getpid()
IMAGE = os.environ.get("MAGNETAR_BASE_IMAGE", "debian:12")

pytestmark = pytest.mark.skipif(os.environ.get("MAGNETAR_CONTAINER_TESTS") != "1",
                                reason="container stages run from .ci/run "
                                       "(MAGNETAR_CONTAINER_TESTS=1)")


def sh(script, timeout, check=True):
    r = subprocess.run(["docker", "exec", NAME, "bash", "-c", script], capture_output=True,
                       text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, "%s\n--- stdout\n%s\n--- stderr\n%s" % (
            script, r.stdout[-8000:], r.stderr[-4000:])
    return r


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    clone = tmp_path_factory.mktemp("fresh") / "magnetar"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(clone)], check=True)
    # Every capability this host has (it lacks SYS_RESOURCE, so --privileged
    # itself is refused here) and no seccomp or AppArmor profile of Docker's.
    # --init: an init that reaps, as on a real machine; under `sleep` as
    # PID 1 every process that outlived its docker exec stayed a zombie.
    subprocess.run(["docker", "run", "-d", "--init", "--cap-add=ALL", "--cap-drop=SYS_RESOURCE",
                    "--security-opt", "seccomp=unconfined",
                    "--security-opt", "apparmor=unconfined", "--name", NAME, IMAGE,
                    "sleep", "infinity"], check=True, capture_output=True)
    try:
        subprocess.run(["docker", "cp", str(clone), NAME + ":/root/magnetar"], check=True)
        yield
    finally:
        subprocess.run(["docker", "rm", "-f", NAME], capture_output=True)


def test_fresh_debian12_make_run_then_make_test(machine):
    # What the container starts with: the README's premise.
    bare = sh("command -v make git cc curl python3 pkg-config; stat -c %a /root", 30,
              check=False)
    assert bare.stdout.split() == ["700"], bare.stdout
    sh("apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
       "apt-get install -y -qq make git >/dev/null", 600)
    # The README's first command, from another directory than the checkout's
    # parent, as root.
    # In a session of its own, so that its whole process group can be
    # stopped like a Ctrl-C would (minbase has no pgrep/pkill).
    sh("cd /root/magnetar && (setsid make run >/root/run.log 2>&1 </dev/null & "
       "echo $! >/root/run.pgid)", 30)
    end, code = time.monotonic() + 1500, ""
    while time.monotonic() < end:
        r = sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/readyz", 30,
               check=False)
        code = r.stdout.strip()
        if code == "200":
            break
        if sh("kill -0 -$(cat /root/run.pgid)", 30, check=False).returncode != 0:
            break  # make run ended: it failed
        time.sleep(3)
    log = sh("tail -c 6000 /root/run.log", 30, check=False).stdout
    assert code == "200", log
    # The state lives where the service users reach it, and the run says so.
    assert "/var/lib/magnetar-dev/" in log and "/run/magnetar-dev/" in log, log
    sh("g=$(cat /root/run.pgid); kill -INT -$g; for i in $(seq 100); do "
       "kill -0 -$g 2>/dev/null || exit 0; sleep 0.2; done; exit 1", 60)
    target = os.environ.get("MAGNETAR_FRESH_TEST", "test")
    r = sh("set -o pipefail; cd /root/magnetar && make %s 2>&1 | tail -c 20000" % target, 3000,
           check=False)
    assert r.returncode == 0, r.stdout
    # pytest's closing line, somewhere above make's own last lines.
    summary = [ln for ln in r.stdout.splitlines() if re.search(r"\d+ passed", ln)]
    assert target == "unit" or (summary and " failed" not in summary[-1]), r.stdout
