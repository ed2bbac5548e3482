"""A newcomer's first `magnetar up` as root from a checkout that other users
cannot traverse (a clone under /root, mode 0700 on Debian, or a mktemp -d
dir): with the default data and run dirs it must come up and say where it
keeps them; a dir set explicitly that the services cannot reach is refused
in one line, never a restart loop."""
import os
import re
import shutil
import signal
import subprocess

import pytest
import requests

from conftest import BIN, free_port, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the service users exist only as root")


@pytest.fixture
def closed_checkout(tmp_path):
    """A copy of the build's programs inside a 0700 dir, as a clone under
    /root would have them."""
    home = tmp_path / "root-home"
    home.mkdir(mode=0o700)
    home.chmod(0o700)
    bindir = home / "magnetar" / "build" / "bin"
    shutil.copytree(BIN, bindir, symlinks=True)
    return home / "magnetar", bindir


def env_for(port, extra=None):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/root",
           "MAGNETAR_ENV": "test", "MAGNETAR_HIBP_MODE": "off",
           "MAGNETAR_HTTP_ADDR": "127.0.0.1:%d" % port,
           "MAGNETAR_SANDBOX": os.environ.get("MAGNETAR_TEST_SANDBOX", "enforce")}
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    if env["MAGNETAR_SANDBOX"] == "enforce" and "ASAN_OPTIONS" in env:
        env["ASAN_OPTIONS"] += ":detect_leaks=0"
    env.update(extra or {})
    return env


def test_up_as_root_from_a_closed_dir_serves_and_says_where(closed_checkout, tmp_path):
    checkout, bindir = closed_checkout
    port = free_port()
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(bindir / "magnetar"), "up"], cwd=checkout,
                                env=env_for(port), stdout=out, stderr=subprocess.STDOUT)
    data = run = None
    try:
        ready = wait_until(lambda: requests.get("http://127.0.0.1:%d/readyz" % port,
                                                timeout=2).status_code == 200, 40)
        text = log.read_text(errors="replace")
        assert ready, text[-6000:]
        data = re.search(r"MAGNETAR_DATA_DIR defaults to (/var/lib/magnetar-dev/[0-9a-f]{12})",
                         text)
        run = re.search(r"MAGNETAR_RUN_DIR defaults to (/run/magnetar-dev/[0-9a-f]{12})", text)
        assert data and run, text[-6000:]
        assert not (checkout / "var").exists()
        # Up for good: no service restarted on its way there.
        assert "restarting" not in text and "exited" not in text, text[-6000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        for m in (data, run):
            if m:
                shutil.rmtree(m.group(1), ignore_errors=True)
    assert rc == 0, log.read_text(errors="replace")[-4000:]


def test_explicit_dir_the_services_cannot_reach_is_refused_in_one_line(closed_checkout):
    checkout, bindir = closed_checkout
    r = subprocess.run([str(bindir / "magnetar"), "up"], cwd=checkout, capture_output=True,
                       text=True, timeout=20,
                       env=env_for(free_port(), {"MAGNETAR_DATA_DIR": str(checkout / "var")}))
    assert r.returncode != 0
    err = [ln for ln in r.stderr.splitlines() if ln]
    assert len(err) == 1 and "MAGNETAR_DATA_DIR" in err[0] and "closed" in err[0], r.stderr
    assert not (checkout / "var").exists()


def test_a_dir_the_ipc_group_may_traverse_is_not_refused(closed_checkout, tmp_path):
    """0710 root:magnetar lets every service user through (each is in the
    IPC group): an explicit data dir under it is accepted and served."""
    import grp
    try:
        gid = grp.getgrnam("magnetar").gr_gid
    except KeyError:
        pytest.skip("the magnetar group does not exist yet (made by the first stack)")
    checkout, bindir = closed_checkout
    shared = tmp_path / "group-only"
    shared.mkdir()
    os.chown(shared, 0, gid)
    shared.chmod(0o710)
    port = free_port()
    log = tmp_path / "group.log"
    env = env_for(port, {"MAGNETAR_DATA_DIR": str(shared / "var"),
                         "MAGNETAR_RUN_DIR": str(tmp_path / "run-g")})
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(bindir / "magnetar"), "up"], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        ready = wait_until(lambda: requests.get("http://127.0.0.1:%d/readyz" % port,
                                                timeout=2).status_code == 200, 40)
        assert ready, log.read_text(errors="replace")[-6000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text(errors="replace")[-4000:]
