"""Issue 6, item 9: with TLS on, the MDN HTTP Observatory scanner grades the
gateway A+. tests/header_grade/run.sh does the work (installs the pinned
scanner into build/observatory/, makes a throwaway CA, starts
magnetar-gateway alone in production with TLS on 127.0.0.1:443 in a network
namespace of its own, scans https://localhost/); this runs it and fails on
anything but A+.

Skipped only when the scanner is not installed yet and the npm registry
cannot be reached to install it.
Run: MAGNETAR_BUILD=$PWD/build /usr/bin/python3 -m pytest -q tests/integration/test_header_grade.py
"""
import hashlib
import os
import pathlib
import shutil
import signal
import subprocess

import pytest

from conftest import BIN, BUILD, REPO

HERE = REPO / "tests" / "header_grade"
OBS = pathlib.Path(os.environ.get("OBSERVATORY_DIR", REPO / "build" / "observatory"))
TIMEOUT = 900  # an install (~15 s here) and a scan (~10 s), with a wide margin


def installed():
    """The install run.sh would reuse: its stamp matches the pinned lock."""
    want = hashlib.sha256((HERE / "package.json").read_bytes() +
                          (HERE / "package-lock.json").read_bytes()).hexdigest()
    stamp = OBS / ".installed"
    return (stamp.is_file() and stamp.read_text().strip() == want and
            (OBS / "node_modules/@mdn/mdn-http-observatory/package.json").is_file())


def registry_unreachable():
    """None when `npm ping` answers, else why not."""
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed"
    try:
        p = subprocess.run([npm, "ping", "--fetch-retries=0", "--fetch-timeout=30000"],
                           capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "`npm ping` timed out after 60 s"
    if p.returncode != 0:
        return "`npm ping` failed: " + (p.stderr or p.stdout).strip()[-300:]
    return None


def test_the_tls_gateway_grades_a_plus():
    assert (BIN / "magnetar-gateway").exists(), f"no {BIN}/magnetar-gateway: run `make all`"
    if not installed():
        why = registry_unreachable()
        if why is not None:
            pytest.skip(f"the npm registry is unreachable ({why}) and the scanner "
                        f"(@mdn/mdn-http-observatory) is not installed in {OBS}")
    env = dict(os.environ, MAGNETAR_BUILD=str(BUILD), OBSERVATORY_DIR=str(OBS))
    # Its own process group: on a timeout the whole run (the script, node,
    # the gateway) is told to stop, and run.sh's trap stops the gateway.
    p = subprocess.Popen(["bash", str(HERE / "run.sh")], env=env, cwd=REPO,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            stdout, stderr = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            stdout, stderr = p.communicate()
        pytest.fail(f"run.sh did not finish within {TIMEOUT} s:\n" + (stdout + stderr)[-12000:])
    out = stdout + stderr
    assert p.returncode == 0, "the gateway is not graded A+:\n" + out[-12000:]
    assert "grade: A+" in stdout, out[-12000:]
    print("\n".join(l for l in stdout.splitlines() if l.startswith(("grade:", "  PASS", "  FAIL"))))
