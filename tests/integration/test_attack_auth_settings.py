"""Attack tests for auth promises that need a stack of their own
(docs/security.md, "Promises, attacks, tests"):

* an unknown user costs what a wrong password costs (the dummy hash), and a
  login flood leaves other methods served: a development stack, whose
  argon2id (m=19 MiB, t=2) is what makes hashing dominate a login; the test
  environment's 1 MiB hash is too cheap for either to show;
* registration closed answers 403 registration_closed;
* the founder password is refused if short or breached (breached: the
  Pwned Passwords double of tests/fixtures/hibp_server.py).

Run: MAGNETAR_BUILD=$PWD/build /usr/bin/python3 -m pytest -q
tests/integration/test_attack_auth_settings.py
"""
import json
import sqlite3
import statistics
import subprocess
import threading
import time

import pytest
import requests

from conftest import BIN, Stack, wait_until
from test_breach import HibpServer

PW = "settings-attack-Pa55-19ab"
BREACHED = "P@ssw0rd"  # tests/fixtures/pwned_sample.txt, count 56789
GOOD_FOUNDER_PW = "founder-not-breached-7c1e2"


def post(stack, path, body, token=None, headers=None, timeout=30):
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    h.update(headers or {})
    return requests.post(stack.url + path, data=json.dumps(body), headers=h, timeout=timeout)


def status_of(fn):
    """The answer's status, or None when nothing listens."""
    try:
        return fn().status_code
    except requests.ConnectionError:
        return None


def code(r):
    return r.json().get("error", {}).get("code")


# ---- a development stack: real argon2id cost ---------------------------------------------


_net = [0]


def fresh_client():
    """A client address in a /24 of its own (auth throttles failures per
    account and per network: five free, then 429), set through the trusted
    proxy header."""
    _net[0] += 1
    n = _net[0]
    return {"X-Forwarded-For": f"10.{n // 256}.{n % 256}.7"}


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("attack-dev"), {
        "MAGNETAR_ENV": "development",
        "MAGNETAR_HIBP_MODE": "off",
        "MAGNETAR_TRUSTED_PROXIES": "127.0.0.1/32",
        "MAGNETAR_RATE_GLOBAL": "off",
        "MAGNETAR_RATE_LOGIN": "off",
        "MAGNETAR_RATE_REGISTER": "off",
    }).start()
    yield s
    assert s.stop() == 0, s.logs()


def timed_login(stack, name, password):
    t0 = time.perf_counter()
    r = post(stack, "/api/v1/auth/login", {"username": name, "password": password},
             headers=fresh_client())
    return time.perf_counter() - t0, r


def test_unknown_user_costs_what_a_wrong_password_costs(dev):
    assert post(dev, "/api/v1/auth/register", {"username": "timed-tom", "password": PW},
                headers=fresh_client()).status_code == 201
    unknown, wrong, nohash = [], [], []
    for i in range(10):  # interleaved, each first in turn, so load hits both alike
        pair = [(f"nobody-{i}-here", unknown), ("timed-tom", wrong)]
        for name, into in (pair if i % 2 == 0 else pair[::-1]):
            d, r = timed_login(dev, name, "wrong password!!")
            assert (r.status_code, code(r)) == (401, "invalid_credentials"), r.text
            into.append(d)
        # The same round trip to auth without any hash: a refresh.
        t0 = time.perf_counter()
        r = post(dev, "/api/v1/auth/refresh", {"refresh_token": "made-up"},
                 headers=fresh_client())
        nohash.append(time.perf_counter() - t0)
        assert r.status_code == 401
    mu, mw, mn = (statistics.median(x) for x in (unknown, wrong, nohash))
    ratio = mu / mw
    assert 0.5 <= ratio <= 2.0, f"unknown {mu * 1000:.1f} ms, wrong {mw * 1000:.1f} ms"
    # The test's power: the hash dominates a login, so a login that skipped
    # it (no dummy hash) would fall far below 0.5x.
    assert mn < 0.5 * mw, f"no-hash {mn * 1000:.1f} ms, wrong {mw * 1000:.1f} ms"


def test_login_flood_leaves_other_methods_served(dev):
    assert post(dev, "/api/v1/auth/register", {"username": "flood-fay", "password": PW},
                headers=fresh_client()).status_code == 201
    fay = post(dev, "/api/v1/auth/login", {"username": "flood-fay", "password": PW},
               headers={"X-Forwarded-For": "10.250.0.7"}).json()["access_token"]
    fay_headers = {"X-Forwarded-For": "10.250.0.7"}
    n_flood = 150
    statuses = []
    lock = threading.Lock()
    clients = [fresh_client() for _ in range(n_flood)]
    start = threading.Barrier(n_flood + 1)

    def flood(i):
        start.wait()
        try:
            r = post(dev, "/api/v1/auth/login",
                     {"username": f"flood-{i}", "password": "wrong password!!"},
                     headers=clients[i], timeout=60)
            s = r.status_code
        except requests.RequestException as e:
            s = repr(e)
        with lock:
            statuses.append(s)

    threads = [threading.Thread(target=flood, args=(i,)) for i in range(n_flood)]
    for t in threads:
        t.start()
    start.wait()
    time.sleep(0.3)  # the logins are at auth now
    # Meanwhile: the gateway itself, and auth methods that hash nothing.
    lat = {}
    for name, fn in (
        ("healthz", lambda: requests.get(dev.url + "/healthz", timeout=30).status_code),
        ("me", lambda: requests.get(
            dev.url + "/api/v1/auth/me", timeout=30,
            headers=dict(fay_headers, Authorization="Bearer " + fay)).status_code),
        ("sessions", lambda: requests.get(
            dev.url + "/api/v1/auth/sessions", timeout=30,
            headers=dict(fay_headers, Authorization="Bearer " + fay)).status_code),
        ("refresh", lambda: post(dev, "/api/v1/auth/refresh", {"refresh_token": "made-up"},
                                 headers=fresh_client()).status_code),
    ):
        t0 = time.perf_counter()
        status = fn()
        lat[name] = (status, round(time.perf_counter() - t0, 3))
    busy = sum(t.is_alive() for t in threads)  # the flood was still running
    for t in threads:
        t.join()
    assert busy > 0, "the flood ended before the other calls: no overlap to judge"
    assert lat["healthz"][0] == lat["me"][0] == lat["sessions"][0] == 200, lat
    assert lat["refresh"][0] == 401, lat
    # Generous: one RPC to auth, not a place in a queue behind the flood.
    assert max(v[1] for v in lat.values()) < 1.0, (lat, busy)
    # Every login was answered: refused (401) or turned away at the bound (429).
    assert set(statuses) <= {401, 429}, sorted(map(str, statuses))
    # ...and the bound did turn some away: 150 at once is past it.
    assert 429 in statuses, sorted(map(str, statuses))


# ---- registration closed, and a founder that is allowed (the control) ------------------------


@pytest.fixture(scope="module")
def hibp(tmp_path_factory):
    server = HibpServer(tmp_path_factory.mktemp("attack-hibp"))
    yield server
    server.stop()


def test_registration_closed_is_403(tmp_path, hibp):
    s = Stack(tmp_path, {"MAGNETAR_REGISTRATION": "closed", "MAGNETAR_HIBP_URL": hibp.url,
                         "MAGNETAR_FOUNDER_USERNAME": "founder",
                         "MAGNETAR_FOUNDER_PASSWORD": GOOD_FOUNDER_PW}).start()
    try:
        for headers in ({}, {"Idempotency-Key": "closed-1"}):
            r = post(s, "/api/v1/auth/register", {"username": "closed-carl", "password": PW},
                     headers=headers)
            assert (r.status_code, code(r)) == (403, "registration_closed"), r.text
        # Control for the founder tests below: a good password is accepted,
        # against the same Pwned Passwords double.
        r = post(s, "/api/v1/auth/login", {"username": "founder", "password": GOOD_FOUNDER_PW})
        assert r.status_code == 200, r.text
        t = r.json()["access_token"]
        # The founder still adds accounts, and nobody gets in by the closed door.
        r = post(s, "/api/v1/users", {"username": "closed-carl", "password": PW,
                                      "role": "member"}, t)
        assert r.status_code == 201, r.text
        r = post(s, "/api/v1/auth/register", {"username": "closed-dan", "password": PW})
        assert r.status_code == 403
        db = sqlite3.connect(f"file:{tmp_path / 'var' / 'auth' / 'auth.db'}?mode=ro", uri=True)
        try:
            names = {n for (n,) in db.execute("SELECT username FROM users")}
        finally:
            db.close()
        assert names == {"founder", "closed-carl"}
    finally:
        assert s.stop() == 0, s.logs()


# ---- founder password refused ---------------------------------------------------------------


@pytest.mark.parametrize("password,line", [
    ("Sh0rt!x", "MAGNETAR_FOUNDER_PASSWORD must be 8..128 bytes"),
    (BREACHED, "MAGNETAR_FOUNDER_PASSWORD appears in 56789 breaches"),
])
def test_founder_password_refused_if_short_or_breached(tmp_path, hibp, password, line):
    s = Stack(tmp_path, {"MAGNETAR_HIBP_URL": hibp.url, "MAGNETAR_FOUNDER_USERNAME": "founder",
                         "MAGNETAR_FOUNDER_PASSWORD": password})
    # Not Stack.start: that waits for ready, which auth never becomes.
    s.log = open(s.log_path, "wb")
    s.proc = subprocess.Popen([str(BIN / "magnetar"), "up"], env=s.env, stdout=s.log,
                              stderr=subprocess.STDOUT, cwd=s.dir)
    try:
        assert wait_until(lambda: line in s.log_path.read_text(errors="replace"), 20), s.logs()
        # Never ready, and no founder to log in as (the gateway may not even
        # listen yet: it starts once auth answers).
        assert status_of(lambda: requests.get(s.url + "/readyz", timeout=5)) != 200
        assert status_of(lambda: post(s, "/api/v1/auth/login",
                                      {"username": "founder", "password": password},
                                      timeout=10)) != 200
        assert password not in s.log_path.read_text(errors="replace")
    finally:
        s.stop()
    db = sqlite3.connect(f"file:{tmp_path / 'var' / 'auth' / 'auth.db'}?mode=ro", uri=True)
    try:
        (n,) = db.execute("SELECT count(*) FROM users").fetchone()
    finally:
        db.close()
    assert n == 0  # no founder was made with it
