"""Session risk (docs/api.md "Session risk"): a session is bound at login to the
client IP, User-Agent and fingerprint headers; requests that differ are
scored IP 0.3 + UA 0.5 + headers 0.2 in integer hundredths. ≥ 0.5 is an
anomaly (served, audited), ≥ 0.7 needs a step-up, ≥ 0.9 ends the session.
A different client IP is a second loopback address (127.0.0.2)."""
import http.client
import json

import pytest

from conftest import Stack, wait_until

PW = "risky-business-password-1"
BASE_HEADERS = {"User-Agent": "agent-A", "Accept-Language": "en-GB"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("risk"), {"MAGNETAR_HIBP_MODE": "off"}).start()
    yield s
    assert s.stop() == 0, s.logs()


def request(stack, method, path, body=None, token=None, headers=None, source="127.0.0.1"):
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=15,
                                      source_address=(source, 0))
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    h.update(headers or {})
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, (json.loads(data) if data else None)


def new_session(stack, name):
    request(stack, "POST", "/api/v1/auth/register", {"username": name, "password": PW},
            headers=BASE_HEADERS)
    status, body = request(stack, "POST", "/api/v1/auth/login",
                           {"username": name, "password": PW}, headers=BASE_HEADERS)
    assert status == 200, body
    return body["access_token"]


def me(stack, token, headers=None, source="127.0.0.1"):
    h = dict(BASE_HEADERS)
    h.update(headers or {})
    return request(stack, "GET", "/api/v1/auth/me", token=token, headers=h, source=source)


def code(body):
    return body["error"]["code"]


def test_same_client_scores_zero(stack):
    t = new_session(stack, "rita")
    status, body = me(stack, t)
    assert status == 200 and body["session"]["risk_score"] == 0


def test_anomaly_band_is_served_and_recorded(stack):
    t = new_session(stack, "sam")
    status, _ = me(stack, t, {"User-Agent": "agent-B"})  # 0.5
    assert status == 200
    status, _ = me(stack, t, {"Accept-Language": "fr"}, source="127.0.0.2")  # 0.3 + 0.2
    assert status == 200
    # Recorded on the session: /me shows the last score.
    assert wait_until(lambda: me(stack, t)[1]["session"]["risk_score"] in (0.5,), 2)


def test_step_up_band_then_step_up_rebinds(stack):
    t = new_session(stack, "tina")
    moved = {"User-Agent": "agent-C", "Accept-Language": "de"}  # 0.5 + 0.2 = 0.7
    status, body = me(stack, t, moved)
    assert (status, code(body)) == (401, "step_up_required")
    status, body = me(stack, t, {"User-Agent": "agent-C"}, source="127.0.0.2")  # 0.8
    assert (status, code(body)) == (401, "step_up_required")
    # A wrong password does not step up.
    h = dict(BASE_HEADERS, **moved)
    status, body = request(stack, "POST", "/api/v1/auth/step-up", {"password": "nope-nope"},
                           t, h)
    assert (status, code(body)) == (401, "invalid_credentials")
    status, body = request(stack, "POST", "/api/v1/auth/step-up", {"password": PW, "totp": "1"},
                           t, h)
    assert status == 400
    status, _ = request(stack, "POST", "/api/v1/auth/step-up", {"password": PW}, t, h)
    assert status == 204
    # Re-bound to the new values: they now score 0; the old ones 0.7.
    assert wait_until(lambda: me(stack, t, moved)[0] == 200, 2)
    status, body = me(stack, t)
    assert (status, code(body)) == (401, "step_up_required")


def test_terminate_band_revokes_everywhere(stack):
    t = new_session(stack, "uma")
    status, body = me(stack, t, {"User-Agent": "agent-X", "Accept-Language": "ja"},
                      source="127.0.0.2")  # 1.0
    assert (status, code(body)) == (401, "session_terminated")
    # The legitimate client is refused too: the session is gone.
    assert wait_until(lambda: me(stack, t)[0] == 401, 2)
    status, body = request(stack, "GET", "/api/v1/auth/sessions", token=t,
                           headers=BASE_HEADERS)
    assert status == 401


def test_decisions_are_audited(stack):
    def seen():
        o = stack.magctl("audit", "query", "--action", "session.anomaly")
        return o.returncode == 0 and "session.anomaly" in o.stdout
    assert wait_until(seen, 10), stack.magctl("audit", "query").stdout[-2000:]


def test_risk_score_is_written_in_hundredths(stack):
    """Scores are integer hundredths; /me shows 0.3, not the nearest double
    printed in full (0.29999999999999999)."""
    t = new_session(stack, "ursula")
    me(stack, t, source="127.0.0.2")  # the IP alone: 0.3
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=15,
                                      source_address=("127.0.0.2", 0))
    h = dict(BASE_HEADERS)
    h["Authorization"] = "Bearer " + t
    conn.request("GET", "/api/v1/auth/me", headers=h)
    raw = conn.getresponse().read().decode()
    conn.close()
    assert '"risk_score":0.3}' in raw or '"risk_score":0.3,' in raw, raw
