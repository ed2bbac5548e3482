"""Password change, the administrators' user routes and the audit routes,
through the gateway: roles checked (401/403), a founder protected from
admins, every session revoked by a password change, deletion and session
revocation reaching the gateway, and the audit log readable and verified."""
import json

import pytest
import requests

from conftest import Stack, wait_until

FOUNDER, FOUNDER_PW = "founder", "founder-Pa55-canary-91"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("admin"), {
        "MAGNETAR_HIBP_MODE": "off",
        "MAGNETAR_FOUNDER_USERNAME": FOUNDER,
        "MAGNETAR_FOUNDER_PASSWORD": FOUNDER_PW,
    }).start()
    yield s
    assert s.stop() == 0, s.logs()


def call(stack, method, path, token=None, body=None):
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    return requests.request(method, stack.url + path, headers=h, timeout=30,
                            data=json.dumps(body) if body is not None else None)


def login(stack, name, pw):
    r = call(stack, "POST", "/api/v1/auth/login", body={"username": name, "password": pw})
    assert r.status_code == 200, r.text
    return r.json()


def me(stack, token):
    return call(stack, "GET", "/api/v1/auth/me", token)


@pytest.fixture(scope="module")
def founder(stack):
    return login(stack, FOUNDER, FOUNDER_PW)


def test_founder_bootstrapped(founder):
    assert founder["user"]["role"] == "founder"


def test_members_get_403_and_strangers_401(stack, founder):
    call(stack, "POST", "/api/v1/auth/register",
         body={"username": "mia", "password": "mia's long password"})
    mia = login(stack, "mia", "mia's long password")["access_token"]
    for method, path in (("GET", "/api/v1/users"), ("POST", "/api/v1/users"),
                         ("DELETE", "/api/v1/users/abc"),
                         ("POST", "/api/v1/users/abc/revoke-sessions"),
                         ("GET", "/api/v1/audit/events"), ("GET", "/api/v1/audit/verify")):
        r = call(stack, method, path, mia, {} if method == "POST" else None)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden"), path
        r = call(stack, method, path, None, {} if method == "POST" else None)
        assert r.status_code == 401, path


def test_create_list_delete_users(stack, founder):
    t = founder["access_token"]
    r = call(stack, "POST", "/api/v1/users", t,
             {"username": "nadia", "password": "nadia's password!", "role": "admin"})
    assert r.status_code == 201, r.text
    nadia_id = r.json()["user"]["id"]
    r = call(stack, "POST", "/api/v1/users", t,
             {"username": "nadia", "password": "another password", "role": "member"})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "username_taken")
    r = call(stack, "POST", "/api/v1/users", t,
             {"username": "omar", "password": "omar's password", "role": "founder"})
    assert r.status_code == 400
    users = call(stack, "GET", "/api/v1/users", t).json()["users"]
    assert {"founder", "nadia"} <= {u["username"] for u in users}
    # An admin may manage members but not touch a founder or make admins.
    nadia = login(stack, "nadia", "nadia's password!")["access_token"]
    founder_id = founder["user"]["id"]
    r = call(stack, "DELETE", "/api/v1/users/" + founder_id, nadia)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
    r = call(stack, "POST", "/api/v1/users/" + founder_id + "/revoke-sessions", nadia)
    assert r.status_code == 403
    r = call(stack, "POST", "/api/v1/users", nadia,
             {"username": "pam", "password": "pam's password!", "role": "admin"})
    assert r.status_code == 403
    r = call(stack, "POST", "/api/v1/users", nadia,
             {"username": "pam", "password": "pam's password!", "role": "member"})
    assert r.status_code == 201
    pam_id = r.json()["user"]["id"]
    pam = login(stack, "pam", "pam's password!")["access_token"]
    # Revoking a user's sessions ends them at once; deleting ends the account.
    assert call(stack, "POST", f"/api/v1/users/{pam_id}/revoke-sessions", nadia).status_code == 204
    assert wait_until(lambda: me(stack, pam).status_code == 401, 2)
    assert call(stack, "DELETE", "/api/v1/users/" + pam_id, nadia).status_code == 204
    r = call(stack, "POST", "/api/v1/auth/login",
             body={"username": "pam", "password": "pam's password!"})
    assert r.status_code == 401
    assert call(stack, "DELETE", "/api/v1/users/" + pam_id, nadia).status_code == 404
    assert call(stack, "DELETE", "/api/v1/users/" + nadia_id, t).status_code == 204


def test_password_change_revokes_every_other_session(stack):
    call(stack, "POST", "/api/v1/auth/register",
         body={"username": "quinn", "password": "quinn's old password"})
    a = login(stack, "quinn", "quinn's old password")
    b = login(stack, "quinn", "quinn's old password")
    r = call(stack, "POST", "/api/v1/auth/password", a["access_token"],
             {"current_password": "wrong one here", "new_password": "quinn's new password"})
    assert (r.status_code, r.json()["error"]["code"]) == (401, "invalid_credentials")
    r = call(stack, "POST", "/api/v1/auth/password", a["access_token"],
             {"current_password": "quinn's old password", "new_password": "short"})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "password_too_short")
    r = call(stack, "POST", "/api/v1/auth/password", a["access_token"],
             {"current_password": "quinn's old password", "new_password": "quinn's new password"})
    assert r.status_code == 200, r.text
    fresh = r.json()
    assert set(fresh) == {"access_token", "token_type", "expires_in", "refresh_token",
                          "session_id", "user"}
    assert fresh["session_id"] not in (a["session_id"], b["session_id"])
    for old in (a, b):
        assert wait_until(lambda: me(stack, old["access_token"]).status_code == 401, 2)
        r = call(stack, "POST", "/api/v1/auth/refresh",
                 body={"refresh_token": old["refresh_token"]})
        assert r.status_code == 401
    assert me(stack, fresh["access_token"]).status_code == 200
    assert login(stack, "quinn", "quinn's new password")["user"]["username"] == "quinn"


def test_audit_events_and_verify(stack, founder):
    t = founder["access_token"]
    # The outboxes deliver asynchronously: wait for the logins above.
    def logins():
        r = call(stack, "GET", "/api/v1/audit/events?action=auth.login.success&limit=5", t)
        return r.status_code == 200 and len(r.json()["events"]) > 0 and r
    r = wait_until(logins, 10)
    assert r, "no auth.login.success event reached audit"
    body = r.json()
    assert set(body) >= {"events"}
    ev = body["events"][0]
    assert set(ev) == {"id", "time", "action", "actor", "target", "ip", "request_id",
                       "outcome", "detail"}
    assert ev["action"] == "auth.login.success"
    assert ev["time"].endswith("Z")
    assert len(body["events"]) <= 5
    page = call(stack, "GET", "/api/v1/audit/events?limit=1", t).json()
    assert len(page["events"]) == 1 and page.get("next_cursor")
    nxt = call(stack, "GET", "/api/v1/audit/events?limit=1&cursor=" + page["next_cursor"],
               t).json()
    assert nxt["events"][0]["id"] != page["events"][0]["id"]
    for bad in ("limit=0", "limit=abc", "since=yesterday"):
        assert call(stack, "GET", "/api/v1/audit/events?" + bad, t).status_code == 400
    v = call(stack, "GET", "/api/v1/audit/verify", t)
    assert v.status_code == 200
    assert v.json()["ok"] is True and v.json()["records"] > 0
    # No password reached an audit record.
    everything = json.dumps(call(stack, "GET", "/api/v1/audit/events?limit=1000", t).json())
    assert FOUNDER_PW not in everything and "quinn's" not in everything
