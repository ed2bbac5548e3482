"""Attacks on the start-up identity rules (docs/security.md "Users, group,
dirs, sockets"): two services configured onto one user, or a service onto
root, refuse to start, through the supervisor and a service started alone,
with one clear line and no service left serving.
"""
import os
import subprocess

import pytest

from conftest import BIN, Stack

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="without root every service is the invoking uid")


def run(tmp, program, **env):
    s = Stack(tmp, env)
    out = subprocess.run([str(BIN / program), *(["up"] if program == "magnetar" else [])],
                         env=s.env, cwd=tmp, capture_output=True, text=True, timeout=30)
    return out.returncode, out.stdout + out.stderr, s


@pytest.mark.parametrize("program", ["magnetar", "magnetar-auth", "magnetar-breach"])
@pytest.mark.parametrize("var,user,line", [
    ("MAGNETAR_AUTH_USER", "magnetar-audit", "are the same uid: each service needs its own user"),
    ("MAGNETAR_TERMINAL_USER", "magnetar-gateway",
     "are the same uid: each service needs its own user"),
    ("MAGNETAR_BREACH_USER", "root", "user root is root: a service may not run as root"),
    ("MAGNETAR_GATEWAY_USER", "root", "user root is root: a service may not run as root"),
])
def test_shared_or_root_service_users_refuse_the_start(tmp_path, program, var, user, line):
    rc, text, s = run(tmp_path, program, **{var: user})
    assert rc != 0, text
    assert line in text, text
    # Refused before anything serves: no socket was bound.
    run_dir = tmp_path / "run"
    socks = list(run_dir.glob("*.sock")) if run_dir.exists() else []
    assert socks == [], (socks, text)
