"""magnetar-breach against a Pwned Passwords test double
(tests/fixtures/hibp_server.py): only 5-hex prefixes ever leave the service,
ranges are cached (and survive a restart), outages fail open or closed as
configured, 429/Retry-After is honoured within the caller's deadline, bad
bodies are never cached, and the offline store answers with no network."""
import hashlib
import json
import os
import pathlib
import re
import signal
import sqlite3
import subprocess
import time

import pytest
import requests

from conftest import BIN, SANDBOX, REPO, free_port, wait_until

FIXTURES = REPO / "tests" / "fixtures"
SAMPLE = FIXTURES / "pwned_sample.txt"
PYTHON = "/usr/bin/python3"
NOT_BREACHED = "magnetar-not-breached-7f3a9c"


def sha1(pw):
    return hashlib.sha1(pw.encode()).hexdigest().upper()


def sample_counts():
    return {h: int(c) for h, c in (l.split(":") for l in SAMPLE.read_text().split())}


class HibpServer:
    def __init__(self, tmp):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = pathlib.Path(tmp) / "hibp-requests.log"
        self.log.touch()
        self.proc = subprocess.Popen(
            [PYTHON, str(FIXTURES / "hibp_server.py"), "--port", str(self.port),
             "--data", str(SAMPLE), "--log", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_until(lambda: requests.get(self.url + "/control", timeout=1).ok, 10)

    def control(self, **kw):
        requests.post(self.url + "/control", data=json.dumps(kw), timeout=2).raise_for_status()

    def requests(self):
        return [json.loads(l) for l in self.log.read_text().splitlines() if l]

    def paths(self):
        return [r["path"] for r in self.requests()]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=5)


class Breach:
    """magnetar-breach started directly, with its own data and run dirs."""

    def __init__(self, tmp, hibp_url, **env):
        self.dir = pathlib.Path(tmp)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "MAGNETAR_ENV": "test",
            "MAGNETAR_SANDBOX": SANDBOX,
            "MAGNETAR_DATA_DIR": str(self.dir / "var"),
            "MAGNETAR_RUN_DIR": str(self.dir / "run"),
            "MAGNETAR_HIBP_URL": hibp_url,
        }
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS"):
            if k in os.environ:
                self.env[k] = os.environ[k]
        self.env.update(env)
        self.log_path = self.dir / "breach.log"
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(BIN / "magnetar-breach")], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir)
        assert wait_until(lambda: self.magctl("ping", "breach").returncode == 0, 10), \
            self.logs()
        return self

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=15)
        self.log.close()
        assert rc == 0, self.logs()
        assert "ERROR: AddressSanitizer" not in self.logs()
        assert "runtime error:" not in self.logs()
        assert "WARNING: ThreadSanitizer" not in self.logs()

    def logs(self):
        return self.log_path.read_text(errors="replace")

    def magctl(self, *args, stdin=None, timeout=20):
        return subprocess.run([str(BIN / "magctl"), *args], env=self.env, cwd=self.dir,
                              input=stdin, capture_output=True, text=True, timeout=timeout)

    def check(self, password, *opts):
        return self.magctl(*opts, "breach", "check", stdin=password + "\n")

    def stats(self):
        out = self.magctl("stats", "breach")
        assert out.returncode == 0, out.stdout + out.stderr
        return {k: int(v) for k, v in (line.split() for line in out.stdout.splitlines())}


@pytest.fixture(scope="module")
def hibp(tmp_path_factory):
    s = HibpServer(tmp_path_factory.mktemp("hibp"))
    yield s
    s.stop()


@pytest.fixture
def make_breach(tmp_path):
    started = []

    def make(url, sub="b", **env):
        b = Breach(tmp_path / sub if sub else tmp_path, url, **env)
        (tmp_path / sub).mkdir(exist_ok=True)
        started.append(b.start())
        return b
    yield make
    for b in started:
        b.stop()


@pytest.fixture(autouse=True)
def normal_server(hibp):
    hibp.control(mode="normal")
    yield


def parse(out):
    m = re.fullmatch(r"breached: (\w+) count: (\d+) source: (\w+)\n", out.stdout)
    assert m, out.stdout + out.stderr
    return m.group(1), int(m.group(2)), m.group(3)


def test_known_breached_password_has_its_count(hibp, make_breach):
    b = make_breach(hibp.url)
    counts = sample_counts()
    for pw in ("password", "123456", "P@ssw0rd"):
        assert parse(b.check(pw)) == ("yes", counts[sha1(pw)], "online")
    assert parse(b.check(NOT_BREACHED)) == ("no", 0, "online")


def test_only_the_prefix_ever_leaves(hibp, make_breach):
    b = make_breach(hibp.url)
    passwords = ["password", "123456", "P@ssw0rd", NOT_BREACHED, "correct horse battery staple"]
    before = len(hibp.requests())
    for pw in passwords:
        assert b.check(pw).returncode == 0
    reqs = hibp.requests()[before:]
    assert {r["path"] for r in reqs} == {"/range/" + sha1(pw)[:5] for pw in passwords}
    hashes = [sha1(pw) for pw in passwords] + list(sample_counts())
    for r in reqs:
        assert re.fullmatch(r"/range/[0-9A-F]{5}", r["path"])
        assert r["headers"].get("Add-Padding") == "true"
        assert r["headers"]["User-Agent"].startswith("Magnetar/")
        texts = [r["path"]] + [f"{k}: {v}" for k, v in r["headers"].items()]
        for t in texts:
            up = t.upper()
            for pw in passwords:
                assert pw.upper() not in up
            for h in hashes:  # no 6 consecutive hex digits of any hash
                assert not any(h[i:i + 6] in up for i in range(0, 35)), (t, h)
    # nor does the service log them
    logs = b.logs().upper()
    for pw in passwords:
        assert sha1(pw) not in logs and sha1(pw)[5:] not in logs


def test_cache_hit_does_not_contact_the_server_and_survives_restart(hibp, make_breach,
                                                                     tmp_path):
    b = make_breach(hibp.url)
    path = "/range/" + sha1("letmein")[:5]
    assert parse(b.check("letmein"))[2] == "online"
    assert parse(b.check("letmein"))[2] == "cache"
    assert hibp.paths().count(path) == 1
    assert b.stats()["breach.range.cache"] == 1
    b.stop()
    b2 = make_breach(hibp.url)  # same dirs: breach.db keeps the range
    assert parse(b2.check("letmein")) == ("yes", sample_counts()[sha1("letmein")], "cache")
    assert hibp.paths().count(path) == 1


def test_server_down_fails_open_with_log_metric_and_audit_event(make_breach):
    b = make_breach(f"http://127.0.0.1:{free_port()}")
    t0 = time.monotonic()
    assert parse(b.check("password")) == ("unknown", 0, "unavailable")
    assert time.monotonic() - t0 < 2.5
    assert b.stats()["breach.range.unavailable"] == 1
    assert "breach check unavailable" in b.logs()
    # the audit event waits in breach's outbox (no audit service runs here)
    db = sqlite3.connect(b.dir / "var" / "breach" / "breach.db")
    rows = db.execute("SELECT actor, outcome FROM outbox WHERE action = 'breach.unavailable'")
    assert rows.fetchall() == [("breach", "fail_open")]
    db.close()
    # an outage is counted every time but logged and audited once a minute
    assert parse(b.check("123456"))[2] == "unavailable"
    assert b.stats()["breach.range.unavailable"] == 2
    assert b.logs().count("breach check unavailable") == 1


def test_server_down_fails_closed_as_a_refusal(make_breach):
    b = make_breach(f"http://127.0.0.1:{free_port()}", MAGNETAR_BREACH_FAIL="closed")
    out = b.check("password")
    assert out.returncode == 1
    assert "breach_unavailable" in out.stdout
    assert b.stats()["breach.range.unavailable"] == 1


def test_429_with_retry_after_is_honoured(hibp, make_breach):
    b = make_breach(hibp.url)
    pw = "qwerty"
    path = "/range/" + sha1(pw)[:5]
    hibp.control(mode="429", times=1, retry_after=1)
    before = len(hibp.requests())
    assert parse(b.check(pw, "-t", "3000"))[2] == "online"
    reqs = [r for r in hibp.requests()[before:] if r["path"] == path]
    assert len(reqs) == 2
    assert reqs[1]["time"] - reqs[0]["time"] >= 0.95
    assert b.stats()["breach.api.throttled"] == 1


def test_retry_after_beyond_the_deadline_answers_in_time(hibp, make_breach):
    b = make_breach(hibp.url)
    hibp.control(mode="429", retry_after=30)
    t0 = time.monotonic()
    assert parse(b.check("qwerty", "-t", "1000"))[2] == "unavailable"
    assert time.monotonic() - t0 < 1.0


def test_slow_server_never_answers_after_the_deadline(hibp, make_breach):
    b = make_breach(hibp.url)
    hibp.control(mode="slow", delay=3)
    t0 = time.monotonic()
    out = b.check("letmein", "-t", "800")
    assert parse(out)[2] == "unavailable"  # an answer, not a client timeout
    assert time.monotonic() - t0 < 1.0


@pytest.mark.parametrize("fault", ["garbage", "truncate", "500"])
def test_bad_answers_are_never_cached(hibp, make_breach, fault):
    b = make_breach(hibp.url)
    path = "/range/" + sha1("P@ssw0rd")[:5]
    hibp.control(mode=fault)
    assert parse(b.check("P@ssw0rd")) == ("unknown", 0, "unavailable")
    hibp.control(mode="normal")
    before = hibp.paths().count(path)
    assert parse(b.check("P@ssw0rd"))[2] == "online"
    assert hibp.paths().count(path) == before + 1


def test_offline_import_and_check_without_network(hibp, make_breach, tmp_path):
    b = make_breach(hibp.url, MAGNETAR_HIBP_MODE="offline")
    # before any import: nothing to answer with (fail open)
    assert parse(b.check("password"))[2] == "unavailable"
    # downloader layout: one file per prefix, SUFFIX:COUNT lines
    d = tmp_path / "ranges"
    d.mkdir()
    by_prefix = {}
    for h, c in sample_counts().items():
        by_prefix.setdefault(h[:5], []).append(f"{h[5:]}:{c}\r\n")
    for p, rows in by_prefix.items():
        (d / f"{p}.txt").write_text("".join(rows))
    before = len(hibp.requests())
    out = b.magctl("breach", "import", str(d))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "imported 300 hashes" in out.stdout
    assert "reloaded records=300 mode=offline" in out.stdout
    counts = sample_counts()
    for pw in ("password", "123456", "P@ssw0rd"):
        assert parse(b.check(pw)) == ("yes", counts[sha1(pw)], "offline")
    assert parse(b.check(NOT_BREACHED)) == ("no", 0, "offline")
    # the whole-hash format gives the same store
    out = b.magctl("breach", "import", str(SAMPLE))
    assert out.returncode == 0, out.stdout + out.stderr
    assert parse(b.check("password"))[2] == "offline"
    assert len(hibp.requests()) == before  # never the network
    assert b.stats()["breach.store.records"] == 300


def test_import_refuses_malformed_input_and_keeps_the_old_store(hibp, make_breach, tmp_path):
    b = make_breach(hibp.url, MAGNETAR_HIBP_MODE="offline")
    assert b.magctl("breach", "import", str(SAMPLE)).returncode == 0
    bad = tmp_path / "bad.txt"
    bad.write_text(SAMPLE.read_text() + "NOTAHASH:12\n")
    out = b.magctl("breach", "import", str(bad))
    assert out.returncode == 1
    assert "bad.txt:301" in out.stderr
    assert parse(b.check("password"))[2] == "offline"
    assert not [p for p in (b.dir / "var" / "breach").iterdir() if ".tmp." in p.name]


def test_off_mode_checks_nothing(hibp, make_breach):
    b = make_breach(hibp.url, MAGNETAR_HIBP_MODE="off", MAGNETAR_BREACH_FAIL="closed")
    before = len(hibp.requests())
    assert parse(b.check("password")) == ("unknown", 0, "off")
    assert len(hibp.requests()) == before


def test_range_command_and_prefix_validation(hibp, make_breach):
    b = make_breach(hibp.url)
    out = b.magctl("breach", "range", sha1("password")[:5].lower())
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "source: online pairs: 4"
    assert sha1("password")[5:] + ":" + str(sample_counts()[sha1("password")]) in lines
    assert b.magctl("breach", "range", "5BAA").returncode == 2
    assert b.magctl("breach", "range", "5BAAG").returncode == 2
    assert b.magctl("breach", "check", stdin="").returncode == 2
