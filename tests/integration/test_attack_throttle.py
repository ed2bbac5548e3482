"""Attacks on the brute-force limits (issue 16, items 3 and 4).

* The per-(account, network) failure count must not be resettable by other
  failed logins: not by usernames chosen to collide in auth's table (under
  the old unkeyed FNV-1a, direct-mapped into 8192 slots, two such names
  computed here reset both the account's and the network's counts), and not
  by a flood of other usernames from other networks.
* The gateway's per-IP limiter keys IPv6 by /64: rotating the low 64 bits
  (here through a trusted proxy's X-Forwarded-For) is the same client.
* A failed step-up (password, or TOTP once enrolled) counts like a failed
  login: after 5 the right secret waits too (429 too_many_attempts).

Auth allows 5 failures per account and network before a growing delay
(1 s after the 5th, doubling), 30 per network across accounts
(services/auth/throttle.c, docs/design.md "Brute force").
"""
import base64
import hashlib
import hmac
import http.client
import json
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import Stack, wait_until

PW = "owner-password-for-attack"
FREE = 5  # failures per account and network before any delay

FNV_OFFSET = 1469598103934665603
FNV_PRIME = 1099511628211
OLD_SLOTS = 8192


def old_fnv_slot(account, net):
    """The slot the unfixed throttle.c gave (account, network)."""
    h = FNV_OFFSET
    for c in account.encode() + b"\xff" + net.encode():
        h = ((h ^ c) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return (h | 1) % OLD_SLOTS


def colliding_username(account, net, avoid):
    """A valid username whose (name, net) slot is (account, net)'s under the
    old hash: what an attacker computes offline in a few milliseconds."""
    want = old_fnv_slot(account, net)
    for i in range(1 << 22):
        name = "zz%x" % i
        if name not in avoid and old_fnv_slot(name, net) == want:
            return name
    raise AssertionError("no collision found")


def request(port, method, path, body=None, token=None, headers=None, source="127.0.0.1",
            host="127.0.0.1"):
    conn = http.client.HTTPConnection(host, port, timeout=15, source_address=(source, 0))
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    h.update(headers or {})
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = conn.getresponse()
    data = r.read()
    retry = r.getheader("Retry-After")
    conn.close()
    return r.status, (json.loads(data) if data else None), retry


def login(stack, username, password, source, headers=None):
    return request(stack.port, "POST", "/api/v1/auth/login",
                   {"username": username, "password": password}, headers=headers,
                   source=source)


def register(stack, username, source="127.0.0.1"):
    status, body, _ = request(stack.port, "POST", "/api/v1/auth/register",
                              {"username": username, "password": PW}, source=source)
    assert status == 201, body


def code(body):
    return (body or {}).get("error", {}).get("code")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("attack-throttle"), {"MAGNETAR_HIBP_MODE": "off"}).start()
    yield s
    assert s.stop() == 0, s.logs()


def test_colliding_usernames_do_not_reset_the_count(stack):
    """The reported attack: before each guess, a failed login for a name
    sharing the victim's slot and one sharing the network's slot. With the
    unfixed table every guess was a first failure; now the 6th is 429 and so
    is the right password."""
    victim, source, net = "victor", "127.0.7.1", "127.0.7.0/24"
    register(stack, victim)
    c_account = colliding_username(victim, net, {victim})
    c_network = colliding_username("", net, {victim, c_account})
    answers = []
    for i in range(FREE + 3):
        answers.append(login(stack, victim, "guess-%d-password" % i, source))
        login(stack, c_account, "whatever-password", source)
        login(stack, c_network, "whatever-password", source)
    statuses = [a[0] for a in answers]
    assert statuses[:FREE] == [401] * FREE, statuses
    assert 429 in statuses[FREE:], statuses
    status, body, retry = login(stack, victim, PW, source)
    assert (status, code(body)) == (429, "too_many_attempts"), statuses
    assert retry is not None and int(retry) >= 1


def flood(stack, first, count):
    """Failed logins for `count` fresh names, 20 per /24 network (below the
    per-network limit of 30), four at a time."""
    def one(n):
        src = "127.%d.%d.1" % (20 + n // 5000, (n // 20) % 250)
        return login(stack, "flood%d" % n, "whatever-password", src)[0]
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(one, range(first, first + count)))
    assert set(statuses) == {401}, set(statuses)


def test_a_flood_of_other_names_does_not_reset_the_count(stack):
    """Wrong guesses for the victim interleaved with failed logins for
    10,000 other names from 500 networks, more keys than the table has
    slots: the victim's count survives, so the 5th wrong guess is followed
    by 429 even for the right password."""
    victim, source = "valerie", "127.0.8.1"
    register(stack, victim)
    before = stack.stats("auth").get("auth.throttle_evictions", 0)
    statuses = []
    for i in range(FREE):
        if i > 0:
            flood(stack, (i - 1) * 2500, 2500)
        statuses.append(login(stack, victim, "guess-%d-password" % i, source)[0])
    assert statuses == [401] * FREE, statuses
    status, body, _ = login(stack, victim, PW, source)
    assert (status, code(body)) == (429, "too_many_attempts")
    # The flood pushed other counts out, and the operator can see it.
    assert stack.stats("auth")["auth.throttle_evictions"] > before


# ---- the gateway's per-IP limiter: IPv6 by /64 ---------------------------------

@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("attack-v6"),
              {"MAGNETAR_HIBP_MODE": "off", "MAGNETAR_TRUSTED_PROXIES": "127.0.0.1",
               "MAGNETAR_RATE_LOGIN": "3/60"}).start()
    yield s
    assert s.stop() == 0, s.logs()


def test_rotating_inside_one_ipv6_64_is_one_client(proxied):
    """Every request from a fresh address of 2001:db8:aa:bb::/64: after the
    login class's burst of 3 the limiter answers 429, as it would for one
    address."""
    statuses = []
    for i in range(6):
        xff = {"X-Forwarded-For": "2001:db8:aa:bb:%x:%x:%x:%x" % (i + 1, 7 * i, 3 * i, i)}
        status, body, _ = login(proxied, "nobody", "whatever-password", "127.0.0.1", xff)
        statuses.append((status, code(body)))
    assert statuses[:3] == [(401, "invalid_credentials")] * 3, statuses
    assert statuses[3:] == [(429, "rate_limited")] * 3, statuses
    # Another /64 is another client; IPv4 clients stay one per address.
    for xff in ("2001:db8:aa:bc::1", "192.0.2.1", "192.0.2.2"):
        status, body, _ = login(proxied, "nobody", "whatever-password", "127.0.0.1",
                                {"X-Forwarded-For": xff})
        assert (status, code(body)) == (401, "invalid_credentials"), xff


# ---- step-up guesses ---------------------------------------------------------------

BASE = {"User-Agent": "agent-A", "Accept-Language": "en-GB"}
MOVED = {"User-Agent": "agent-C", "Accept-Language": "de"}  # 0.5 + 0.2: step-up band


def session_in_step_up_band(stack, name, source):
    register(stack, name, source)
    status, body, _ = login(stack, name, PW, source, BASE)
    assert status == 200, body
    token = body["access_token"]
    status, body, _ = request(stack.port, "GET", "/api/v1/auth/me", token=token,
                              headers=MOVED, source=source)
    assert (status, code(body)) == (401, "step_up_required")
    return token


def step_up(stack, token, body, source):
    return request(stack.port, "POST", "/api/v1/auth/step-up", body, token, MOVED, source)


def test_step_up_password_guesses_are_counted(stack):
    source = "127.0.9.1"
    token = session_in_step_up_band(stack, "stella", source)
    for i in range(FREE):
        status, body, _ = step_up(stack, token, {"password": "guess-%d-password" % i}, source)
        assert (status, code(body)) == (401, "invalid_credentials"), i
    status, body, retry = step_up(stack, token, {"password": PW}, source)
    assert (status, code(body)) == (429, "too_many_attempts")
    assert retry is not None and int(retry) >= 1


def totp_code(secret, step):
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    off = mac[-1] & 15
    return "%06d" % ((struct.unpack(">I", mac[off:off + 4])[0] & 0x7FFFFFFF) % 1000000)


def test_step_up_totp_guesses_are_counted(stack):
    source = "127.0.10.1"
    register(stack, "tobias", source)
    status, body, _ = login(stack, "tobias", PW, source, BASE)
    assert status == 200, body
    token = body["access_token"]
    status, body, _ = request(stack.port, "POST", "/api/v1/auth/totp/setup",
                              {"current_password": PW}, token, BASE, source)
    assert status == 200, body
    secret = body["secret"]
    step = int(time.time()) // 30
    status, body, _ = request(stack.port, "POST", "/api/v1/auth/totp/enable",
                              {"code": totp_code(secret, step - 1)}, token, BASE, source)
    assert status == 204, body
    status, body, _ = request(stack.port, "GET", "/api/v1/auth/me", token=token,
                              headers=MOVED, source=source)
    assert (status, code(body)) == (401, "step_up_required")
    valid = {totp_code(secret, s) for s in range(step - 3, step + 4)}
    wrong = [c for c in ("%06d" % i for i in range(100)) if c not in valid][:FREE]
    for c in wrong:
        status, body, _ = step_up(stack, token, {"totp": c}, source)
        assert (status, code(body)) == (401, "invalid_totp"), c
    status, body, retry = step_up(stack, token,
                                  {"totp": totp_code(secret, int(time.time()) // 30)}, source)
    assert (status, code(body)) == (429, "too_many_attempts")
    assert retry is not None and int(retry) >= 1
