"""The operator's account commands (magctl user / session) against the real
auth service: the password comes on stdin, a role or grant change revokes
the user's sessions, a session can be revoked by id, a deleted user cannot
log in."""
import json
import subprocess

import pytest
import requests

from conftest import BIN, Stack, wait_until

PW = "operator-made-password-3"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("ops"), {"MAGNETAR_HIBP_MODE": "off"}).start()
    yield s
    assert s.stop() == 0, s.logs()


def magctl(stack, *args, stdin=None):
    return subprocess.run([str(BIN / "magctl"), *args], env=stack.env, cwd=stack.dir,
                          input=stdin, capture_output=True, text=True, timeout=30)


def login(stack, name, pw=PW):
    return requests.post(stack.url + "/api/v1/auth/login",
                         data=json.dumps({"username": name, "password": pw}),
                         headers={"Content-Type": "application/json"}, timeout=15)


def me(stack, token):
    return requests.get(stack.url + "/api/v1/auth/me", timeout=15,
                        headers={"Authorization": "Bearer " + token})


def test_operator_commands(stack):
    out = magctl(stack, "user", "create", "xena", "member", stdin=PW + "\n")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "xena role=member" in out.stdout
    assert PW not in out.stdout + out.stderr
    # No password on stdin: refused, nothing created.
    assert magctl(stack, "user", "create", "yuri", "member", stdin="").returncode == 2
    assert magctl(stack, "user", "create", "xena", "member", stdin=PW + "\n").returncode == 1
    assert "xena" in magctl(stack, "user", "list").stdout
    t = login(stack, "xena").json()["access_token"]
    assert me(stack, t).json()["user"]["role"] == "member"

    # A role change revokes the sessions: no token keeps the old role.
    assert magctl(stack, "user", "set-role", "xena", "admin").returncode == 0
    assert wait_until(lambda: me(stack, t).status_code == 401, 2)
    t = login(stack, "xena").json()
    assert t["user"]["role"] == "admin"
    assert magctl(stack, "user", "set-role", "xena", "root").returncode == 1
    assert magctl(stack, "user", "grant-terminal", "xena", "on").returncode == 0
    assert "terminal=yes" in magctl(stack, "user", "list").stdout

    t = login(stack, "xena").json()
    out = magctl(stack, "session", "list", "xena")
    assert t["session_id"] in out.stdout
    assert magctl(stack, "session", "revoke", t["session_id"]).returncode == 0
    assert wait_until(lambda: me(stack, t["access_token"]).status_code == 401, 2)
    assert magctl(stack, "session", "revoke", t["session_id"]).returncode == 1

    assert magctl(stack, "user", "reset-totp", "xena").returncode == 0
    assert magctl(stack, "user", "delete", "xena").returncode == 0
    assert login(stack, "xena").status_code == 401
    assert magctl(stack, "user", "delete", "xena").returncode == 1
    assert magctl(stack, "user", "bogus").returncode == 2


def test_rotate_keys_old_tokens_still_verify(stack):
    magctl(stack, "user", "create", "zoe", "member", stdin=PW + "\n")
    old = login(stack, "zoe").json()["access_token"]
    out = magctl(stack, "auth", "rotate-keys")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "(signing)" in out.stdout and "(verifying)" in out.stdout
    new = login(stack, "zoe").json()["access_token"]
    kid = lambda t: json.loads(__import__("base64").urlsafe_b64decode(  # noqa: E731
        t.split(".")[0] + "=="))["kid"]
    assert kid(old) != kid(new)
    # The gateway fetches the new key on first sight; the old one still verifies.
    assert wait_until(lambda: me(stack, new).status_code == 200, 2)
    assert me(stack, old).status_code == 200
