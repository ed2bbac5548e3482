"""sqlmap against login and register (issue 5): every JSON value tried as an
injection point with sqlmap's SQLite payloads (level 3, risk 2). The scan
itself is tests/bench/sqlmap.sh, runnable by hand with other levels; here it
must report nothing injectable on either route."""
import os
import shutil
import subprocess
from pathlib import Path

from conftest import BIN

REPO = Path(__file__).resolve().parents[2]


def test_sqlmap_finds_nothing_injectable():
    assert shutil.which("sqlmap"), "sqlmap is missing (Debian package sqlmap; make deps)"
    env = dict(os.environ, BUILD=str(BIN.parent), LEVEL="3", RISK="2")
    p = subprocess.run(["bash", str(REPO / "tests/bench/sqlmap.sh")], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    for route in ("login", "register"):
        line = next(ln for ln in p.stdout.splitlines() if ln.startswith(route + ":"))
        assert "nothing injectable" in line, line
        # The scan really ran its payloads (not a refused connection).
        tried = int(line.split("(")[1].split()[0])
        assert tried >= 40, line
