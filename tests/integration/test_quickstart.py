"""What a newcomer does after `make run`: the README's curl lines work as
printed, and in development a founder account is created on first start
with a random password shown exactly once."""
import pathlib
import re
import subprocess

from conftest import REPO, Stack


def readme_quickstart():
    text = (REPO / "README.md").read_text()
    block = text.split("After `make run`", 1)[1].split("\n\n", 2)[1]
    return "\n".join(line[4:] for line in block.splitlines())


def test_dev_founder_and_readme_curl_lines(tmp_path):
    stack = Stack(tmp_path, {"MAGNETAR_ENV": "development", "MAGNETAR_HIBP_MODE": "off"})
    stack.start()
    try:
        logs = stack.full_log()
        found = re.findall(r"password: (\S+)", logs)
        assert len(found) == 1, stack.logs()
        script = readme_quickstart().replace("localhost:8080", f"127.0.0.1:{stack.port}")
        out = subprocess.run(["bash", "-c", "set -e\n" + script], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert '"username":"alice"' in out.stdout
        assert '"session":' in out.stdout  # the /me answer
        login = subprocess.run(
            ["curl", "-s", f"{stack.url}/api/v1/auth/login", "-H",
             "Content-Type: application/json", "-d",
             '{"username":"founder","password":"%s"}' % found[0]],
            capture_output=True, text=True, timeout=30)
        assert '"role":"founder"' in login.stdout
    finally:
        assert stack.stop() == 0
    # A second start of the same data dir creates and shows nothing.
    again = Stack(tmp_path, {"MAGNETAR_ENV": "development", "MAGNETAR_HIBP_MODE": "off"})
    again.port, again.url = stack.port, stack.url
    again.env["MAGNETAR_HTTP_ADDR"] = f"127.0.0.1:{stack.port}"
    again.log_path = pathlib.Path(tmp_path) / "magnetar2.log"
    again.start()
    try:
        assert "password:" not in again.log_path.read_text()
    finally:
        assert again.stop() == 0
