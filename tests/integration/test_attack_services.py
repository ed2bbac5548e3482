"""Attacks on the services' privilege promises (docs/security.md), through
the real stack: nng requests crafted with protoc and sent with nngcat as
another service's uid, /proc of the running processes, the data files at
rest. One stack for the module.

Each test names the promise it attacks. Every test needs root (one user per
service); without it every role is the invoking uid and nothing is refused.
"""
import ctypes
import errno
import os
import pwd
import re
import sqlite3
import subprocess
import time

import pytest
import requests

from conftest import BIN, SANDBOX, Stack, free_port, wait_until
from test_rpc_external import (decode, encode, envelope, parse_reply, require_tools,
                               scalar)

SERVICES = ["gateway", "auth", "audit", "breach", "terminal"]
ROOT = os.geteuid() == 0
pytestmark = pytest.mark.skipif(not ROOT, reason="one user per service needs root")
RECV_TIMEOUT_S = 8


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    require_tools()
    s = Stack(tmp_path_factory.mktemp("attacksvc"), {"MAGNETAR_HIBP_MODE": "off"}).start()
    yield s
    assert s.stop() == 0, s.logs()
    assert "ERROR: AddressSanitizer" not in s.full_log(), s.logs()


def uid_of(name):
    return pwd.getpwnam("magnetar-" + name).pw_uid


def as_user(name):
    """preexec_fn: become service `name`'s user with its groups (the IPC
    group), exactly as the service itself runs."""
    pw = pwd.getpwnam(name)
    groups = os.getgrouplist(name, pw.pw_gid)

    def drop():
        os.setgroups(groups)
        os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
        os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
    return drop


def nngcat_req(stack, sock, request, user=None, timeout=RECV_TIMEOUT_S, tag="req"):
    """One request through `nngcat --req` (as `user`, else root: the
    operator); the raw reply, b"" when none came in time."""
    path = stack.dir / f"{tag}-{time.monotonic_ns()}.bin"
    path.write_bytes(request)
    path.chmod(0o644)
    try:
        out = subprocess.run(["nngcat", "--req", "--dial", f"ipc://{stack.dir}/run/{sock}",
                              "--file", str(path), "--raw", "--recv-timeout", str(timeout)],
                             capture_output=True, timeout=timeout + 20,
                             preexec_fn=as_user(user) if user else None)
    finally:
        path.unlink()
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return out.stdout


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.split()
    return out


def audit_query(stack, *args):
    out = stack.magctl("audit", "query", *args)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.splitlines()


def failed_login(stack, username):
    r = requests.post(stack.url + "/api/v1/auth/login", timeout=15,
                      json={"username": username, "password": "not the password 1"})
    assert r.status_code == 401, r.text
    return r.headers["X-Request-Id"]


# ---- 15. A producer's identity is its peer uid, never the name it claims ----

def test_a_producer_cannot_append_under_another_producers_name(stack):
    """Breach's uid sends Append claiming to be auth, with auth's own outbox
    instance and the next sequences auth will use. The records must be
    breach's (source uid:<breach>), and auth's next real event must still be
    stored: audit de-duplicates by the authenticated source, so the forgery
    can neither pass for auth nor shadow auth's events."""
    db = sqlite3.connect(f"file:{stack.dir}/var/auth/auth.db?mode=ro", uri=True)
    try:
        instance = db.execute("SELECT instance FROM outbox_senders WHERE slot = 1").fetchone()[0]
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    finally:
        db.close()
    next_seq = (row[0] if row else 0) + 1
    now = int(time.time() * 1000)
    events = "".join(
        'events { sequence: %d time_unix_ms: %d action: "auth.login.success" '
        'actor: "forged-by-breach" outcome: "success" detail: "claims auth" }\n' % (s, now)
        for s in range(next_seq, next_seq + 200))
    payload = encode("magnetar.AppendRequest",
                     f'source: "auth"\ninstance: "{instance}"\n{events}', "proto/audit.proto")
    raw = nngcat_req(stack, "audit.sock", envelope("Append", payload), user="magnetar-breach")
    assert raw, "no reply to Append"
    r = parse_reply(raw)
    if r.status == "STATUS_OK":
        text = decode("magnetar.AppendReply", r.payload, "proto/audit.proto")
        assert int(scalar(text, "stored") or 0) == 200, text
    else:  # refusing the forgery outright keeps the promise too
        assert r.status == "STATUS_PERMISSION_DENIED", r.text

    # auth's next real event, under the sequence the forgery took.
    rid = failed_login(stack, "after-the-forgery")

    def stored():
        return [ln for ln in audit_query(stack, "--action", "auth.login.failure",
                                         "--limit", "100")
                if rid in ln]
    lines = wait_until(stored, 15)
    assert lines, "auth's event after the forgery was never stored"
    assert all('"source":"uid:%d"' % uid_of("auth") in ln for ln in lines), lines

    forged = audit_query(stack, "--actor", "forged-by-breach", "--limit", "1000")
    if r.status == "STATUS_OK":
        assert len(forged) == 200, forged[:3]
    for ln in forged:
        assert '"source":"uid:%d"' % uid_of("breach") in ln, ln
    assert not any('"source":"uid:%d"' % uid_of("auth") in ln for ln in forged)


# ---- 25. Event publishers close a refused subscriber's pipe -------------------

def test_event_streams_refuse_other_subscribers(stack):
    """audit.events is the operator's alone, auth.events the gateway's and
    the terminal's: a service uid outside the list subscribes with nngcat
    and receives nothing (not even the 1 s heartbeats), while root (the
    operator), subscribing alongside, receives them."""
    subs = [("audit-events.sock", "magnetar-breach"), ("audit-events.sock", "magnetar-gateway"),
            ("audit-events.sock", "magnetar-auth"), ("auth-events.sock", "magnetar-breach"),
            ("auth-events.sock", "magnetar-audit"),
            ("audit-events.sock", None), ("auth-events.sock", None)]
    procs = [(sock, user, subprocess.Popen(
        ["nngcat", "--sub", "--subscribe", "", "--dial", f"ipc://{stack.dir}/run/{sock}",
         "--hex"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=as_user(user) if user else None)) for sock, user in subs]
    # Events to publish meanwhile: audit.appended carries them.
    time.sleep(0.5)
    rids = [failed_login(stack, f"while-subscribed-{i}") for i in range(3)]
    time.sleep(3)  # three heartbeats at least
    got = {}
    for sock, user, p in procs:
        p.terminate()
        out, err = p.communicate(timeout=10)
        got[(sock, user)] = out.decode().splitlines()
    for (sock, user), lines in got.items():
        if user is None:
            assert lines, f"the operator received nothing on {sock}"
        else:
            assert lines == [], f"{user} received {len(lines)} messages on {sock}"
    # The audit events did go out: the operator saw the appended records.
    assert any(rids[0] in bytes.fromhex(ln.strip('"').replace("\\x", ""))
               .decode(errors="replace") for ln in got[("audit-events.sock", None)])


# ---- 26. RPC messages are capped at 1 MiB ---------------------------------------

def ping_with_padding(size):
    """A valid Ping envelope of about `size` bytes: its payload carries an
    unknown length-delimited field 15, which a decoder skips."""
    blob = b"\x00" * size
    n, varint = len(blob), b""
    while True:
        b = n & 0x7F
        n >>= 7
        varint += bytes([b | (0x80 if n else 0)])
        if not n:
            break
    return envelope("Ping", b"\x7a" + varint + blob)


def test_an_rpc_message_over_1_mib_is_dropped_and_the_service_keeps_serving(stack):
    """As the gateway's uid (admitted to auth), a 2 MiB Ping gets no answer:
    the socket drops it unread. The same Ping at 900 KiB is answered, so it
    is the size alone; and auth answers a plain Ping afterwards."""
    small = parse_reply(nngcat_req(stack, "auth.sock", ping_with_padding(900 * 1024),
                                   user="magnetar-gateway"))
    assert small.status == "STATUS_OK", small.text
    t0 = time.monotonic()
    assert nngcat_req(stack, "auth.sock", ping_with_padding(2 << 20),
                      user="magnetar-gateway", timeout=3) == b""
    assert time.monotonic() - t0 >= 2.5
    after = parse_reply(nngcat_req(stack, "auth.sock", envelope("Ping"), user="magnetar-gateway"))
    assert after.status == "STATUS_OK", after.text
    assert stack.magctl("ping", "auth").returncode == 0


def pb_varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def pb_bytes(num, value):
    return pb_varint(num << 3 | 2) + pb_varint(len(value)) + value


def revocation(publisher, session_id, padding):
    """topic "session.revoked", NUL, EventEnvelope {publisher, sequence 1,
    topic, payload: SessionEvent {session_id} plus an unknown field 15 of
    `padding` bytes, which a decoder skips}."""
    event = pb_bytes(1, session_id.encode()) + pb_bytes(15, b"\x00" * padding)
    env = (pb_bytes(1, publisher.encode()) + pb_varint(2 << 3) + pb_varint(1) +
           pb_bytes(3, b"session.revoked") + pb_bytes(5, event))
    return b"session.revoked\0" + env


def test_an_event_over_256_kib_is_dropped_by_the_subscriber(stack, tmp_path):
    """A gateway subscribed to a fake auth.events (nngcat --pub): a
    session.revoked event padded to 200 KiB is applied (that session's token
    is refused at once), the same event at 300 KiB for another session is
    dropped unread (its token still works), and the gateway keeps serving."""
    # In the run dir: the gateway's Landlock lets it reach sockets there only.
    fake = stack.dir / "run" / "fake-auth-events.sock"
    port = free_port()
    env = dict(stack.env, MAGNETAR_HTTP_ADDR=f"127.0.0.1:{port}",
               MAGNETAR_GATEWAY_URL="ipc://" + str(tmp_path / "gw-big.sock"),
               MAGNETAR_AUTH_EVENTS_URL=f"ipc://{fake}")
    url = f"http://127.0.0.1:{port}"
    for name in ("big-a", "big-b"):
        r = requests.post(stack.url + "/api/v1/auth/register", timeout=15,
                          json={"username": name, "password": "a long password 1"})
        assert r.status_code == 201, r.text
    a, b = (requests.post(stack.url + "/api/v1/auth/login", timeout=15,
                          json={"username": n, "password": "a long password 1"}).json()
            for n in ("big-a", "big-b"))

    def me(token):
        return requests.get(url + "/api/v1/auth/me", timeout=5,
                            headers={"Authorization": "Bearer " + token}).status_code

    def publish(msg):
        path = tmp_path / f"ev-{len(msg)}.bin"
        path.write_bytes(msg)
        return subprocess.Popen(["nngcat", "--pub", "--listen", f"ipc://{fake}", "--file",
                                 str(path), "--interval", "1"], preexec_fn=lambda: os.umask(0),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = open(tmp_path / "gw-big.log", "wb")
    pub = publish(revocation("fake-auth-small", a["session_id"], 200 * 1024))
    gw = subprocess.Popen([str(BIN / "magnetar-gateway")], env=env, stdout=log,
                          stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: requests.get(url + "/readyz", timeout=2).status_code == 200,
                          10), (tmp_path / "gw-big.log").read_text(errors="replace")
        assert wait_until(lambda: me(a["access_token"]) == 401, 5), "200 KiB event not applied"
        pub.kill()
        pub.wait()
        fake.unlink(missing_ok=True)
        pub = publish(revocation("fake-auth-big", b["session_id"], 300 * 1024))
        time.sleep(3.5)  # three sends at least, each dropped at the size cap
        assert me(b["access_token"]) == 200
        assert requests.get(url + "/readyz", timeout=2).status_code == 200
    finally:
        pub.kill()
        pub.wait()
        gw.terminate()
        assert gw.wait(timeout=10) == 0
        log.close()


# ---- 23. After the drop no service regains root --------------------------------

libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH, PTRACE_DETACH = 16, 17


def ptrace_as(user, pid):
    """In a child that became `user`: PTRACE_ATTACH to pid. 0 when it
    attached (then detached), else the errno."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(r)
        try:
            as_user(user)()
            rc = libc.ptrace(PTRACE_ATTACH, pid, None, None)
            err = 0 if rc == 0 else ctypes.get_errno()
            if rc == 0:
                os.waitpid(pid, 0)
                libc.ptrace(PTRACE_DETACH, pid, None, None)
            os.write(w, str(err).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = os.read(r, 64)
    os.close(r)
    os.waitpid(child, 0)
    return int(data)


def spawner_pid(stack):
    tpid = stack.service_pid("terminal")
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = open(f"/proc/{p}/stat").read()
            except OSError:
                continue
            parent = int(stat[stat.rindex(")") + 2:].split()[1])
            if parent == tpid and "(magnetar-spawn)" in stat:
                return int(p)
    return None


def test_no_service_can_regain_root(stack):
    """Every service: real, effective, saved and file-system uids and gids
    non-zero, no capability in any set (the spawner: CAP_SETUID and
    CAP_SETGID only, as documented), no_new_privs, seccomp. Then the attack:
    a process of the service's own uid, and one of another service's uid,
    PTRACE_ATTACH it (the way to act as the service outside its sandbox, or
    to use the spawner's capabilities): both fail. A same-uid process that
    is not locked down (a sleep as magnetar-breach) can be attached, so the
    probe itself works."""
    pids = {name: stack.service_pid(name) for name in SERVICES}
    spawner = spawner_pid(stack)
    assert spawner is not None
    setid = (1 << 6) | (1 << 7)  # CAP_SETGID, CAP_SETUID
    for name, pid in [*pids.items(), ("terminal", spawner)]:
        st = status(pid)
        assert all(int(u) != 0 for u in st["Uid"]), (name, st["Uid"])
        assert all(int(g) != 0 for g in st["Gid"]), (name, st["Gid"])
        caps = setid if pid == spawner else 0
        for k in ("CapEff", "CapPrm"):
            assert int(st[k][0], 16) == caps, (name, pid, k, st[k])
        assert int(st["CapInh"][0], 16) == 0 and int(st["CapAmb"][0], 16) == 0, name
        assert st["NoNewPrivs"] == ["1"], name
        if SANDBOX == "enforce":
            assert st["Seccomp"] == ["2"], name

    control = subprocess.Popen(["sleep", "60"], preexec_fn=as_user("magnetar-breach"))
    try:
        assert ptrace_as("magnetar-breach", control.pid) == 0
    finally:
        control.kill()
        control.wait()
    for name, pid in [*pids.items(), ("terminal", spawner)]:
        for attacker in ("magnetar-" + name, "magnetar-breach" if name != "breach"
                         else "magnetar-auth"):
            err = ptrace_as(attacker, pid)
            assert err == errno.EPERM, (attacker, name, pid, err)


# ---- 28. Services turn core dumps off ------------------------------------------

def test_core_dumps_are_off_and_no_service_is_dumpable(stack):
    """For the supervisor and each service (and the spawner):
    /proc/<pid>/limits says a core of 0 bytes, soft and hard; and the
    process is not dumpable, which the kernel shows in two ways: its /proc
    files belong to root, not to the process's uid, and a process of the
    same uid may not read its environ (ptrace read access)."""
    pids = {name: stack.service_pid(name) for name in SERVICES}
    pids["spawner"] = spawner_pid(stack)
    pids["supervisor"] = stack.proc.pid
    for name, pid in pids.items():
        limits = open(f"/proc/{pid}/limits").read()
        m = re.search(r"^Max core file size\s+(\S+)\s+(\S+)", limits, re.M)
        assert m and m.groups() == ("0", "0"), (name, limits)
    for name in SERVICES:
        pid = pids[name]
        assert os.stat(f"/proc/{pid}/environ").st_uid == 0, name
        assert os.stat(f"/proc/{pid}/mem").st_uid == 0, name
        code = ("import sys\ntry:\n    open(sys.argv[1],'rb').read(1)\n    print('READ')\n"
                "except PermissionError:\n    print('refused')\n")
        out = subprocess.run(["/usr/bin/python3", "-c", code, f"/proc/{pid}/environ"],
                             capture_output=True, text=True, timeout=20,
                             preexec_fn=as_user("magnetar-" + name))
        assert out.stdout.strip() == "refused", (name, out.stdout, out.stderr)
    # The probe can tell: a dumpable process of that uid has its own files.
    control = subprocess.Popen(["sleep", "60"], preexec_fn=as_user("magnetar-breach"))
    try:
        time.sleep(0.1)
        assert os.stat(f"/proc/{control.pid}/environ").st_uid == uid_of("breach")
    finally:
        control.kill()
        control.wait()


def test_a_service_started_alone_turns_core_dumps_off_itself(tmp_path):
    """Under the supervisor a service inherits its RLIMIT_CORE of 0, so the
    test above would not see a service that forgot its own. Started alone
    with core dumps allowed (unlimited), breach still runs with 0."""
    import resource

    def unlimited_core():
        resource.setrlimit(resource.RLIMIT_CORE,
                           (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MAGNETAR_ENV": "test",
           "MAGNETAR_SANDBOX": SANDBOX, "MAGNETAR_HIBP_MODE": "off",
           "MAGNETAR_DATA_DIR": str(tmp_path / "var"), "MAGNETAR_RUN_DIR": str(tmp_path / "run")}
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    log = open(tmp_path / "breach.log", "wb")
    p = subprocess.Popen([str(BIN / "magnetar-breach")], env=env, cwd=tmp_path, stdout=log,
                         stderr=subprocess.STDOUT, preexec_fn=unlimited_core)
    try:
        assert wait_until(lambda: subprocess.run(
            [str(BIN / "magctl"), "ping", "breach"], env=env, capture_output=True,
            timeout=10).returncode == 0, 15), (tmp_path / "breach.log").read_text()
        limits = open(f"/proc/{p.pid}/limits").read()
        m = re.search(r"^Max core file size\s+(\S+)\s+(\S+)", limits, re.M)
        assert m and m.groups() == ("0", "0"), limits
        assert os.stat(f"/proc/{p.pid}/environ").st_uid == 0
    finally:
        p.send_signal(15)
        assert p.wait(timeout=15) == 0, (tmp_path / "breach.log").read_text()
        log.close()


# ---- 27. The supervisor keeps only its listed capabilities ---------------------

# docs/security.md "The supervisor": chown, dac_override, dac_read_search,
# fowner, fsetid, kill, setuid, setgid, setpcap, net_bind_service.
SUPERVISOR_CAPS = {0, 1, 2, 3, 4, 5, 6, 7, 8, 10}


def test_the_supervisor_keeps_only_its_listed_capabilities(stack):
    """Its effective, permitted and bounding sets are exactly the list; no
    inheritable or ambient capability. An attack from outside cannot make
    it use a capability; reading them is what shows CAP_SYS_ADMIN,
    CAP_SYS_PTRACE, CAP_NET_ADMIN... are gone for good (the bounding set)."""
    want = sum(1 << c for c in SUPERVISOR_CAPS)
    st = status(stack.proc.pid)
    assert st["Uid"][0] == "0"
    for k in ("CapEff", "CapPrm", "CapBnd"):
        got = int(st[k][0], 16)
        assert got == want, (k, hex(got), "extra:", [c for c in range(64)
                                                      if got >> c & 1 and c not in SUPERVISOR_CAPS])
    assert int(st["CapInh"][0], 16) == 0 and int(st["CapAmb"][0], 16) == 0


# ---- 24. Socket families other than the service's get EACCES -------------------

@pytest.mark.skipif(SANDBOX != "enforce", reason="MAGNETAR_TEST_SANDBOX is not enforce")
@pytest.mark.parametrize("name", ["auth", "audit", "terminal"])
def test_a_service_without_inet_gets_eacces_for_an_inet_socket(stack, name):
    """The service's own --sandbox-selftest takes the whole lock-down, then
    tries socket(AF_INET) for its connect probe: for a service with no TCP
    (auth, audit, terminal) seccomp answers EACCES to the socket call itself,
    before Landlock would refuse the connect (gateway and breach may open
    AF_INET; their connect is refused by Landlock instead)."""
    out = subprocess.run([str(BIN / f"magnetar-{name}"), "--sandbox-selftest"],
                         env=stack.env, cwd=stack.dir, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "selftest: socket(AF_INET): Permission denied" in out.stderr, out.stderr
    assert re.search(r"connect tcp 127\.0\.0\.1:\d+\s+refused \(failed\)", out.stdout), \
        out.stdout
    # Signals go to itself only: signal 0 to another pid kills the prober.
    assert re.search(r"kill another process\s+refused \(killed by SIGSYS\)", out.stdout), \
        out.stdout
