"""Calling a Magnetar service with no Magnetar code (docs/rpc.md): the
request envelope and its payload are built with `protoc --encode` from the
contracts in proto/, sent with `nngcat` (Debian nng-utils), and the reply is
read back with `protoc --decode`, exactly as a shell, Python or Go tool
would. The callee is magnetar-breach started on its own (fast, and its
methods cover every permission case): Ping, Stats, Range with real offline
data (binary `bytes` through text format both ways), the operator's Reload,
the envelope's error answers, and, as root, the uid allow-lists: a method the
caller's uid may not call is permission_denied, a uid the socket does not
admit is peer_refused, and a uid outside the IPC group cannot even connect.

Only the offline store's file (Magnetar's own format) is written with
`magctl breach import -R`; loading it is our own Reload call.

protoc and nngcat are required (`make deps`): missing, the tests fail.
"""
import codecs
import collections
import os
import pwd
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import BIN, REPO, SANDBOX, wait_until

PROTO = REPO / "proto"
SAMPLE = REPO / "tests" / "fixtures" / "pwned_sample.txt"
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not ROOT, reason="without root every role is the invoking uid: nothing is refused")

# Generous: a loaded 2-core machine, or a sanitizer build, is slow to answer.
RECV_TIMEOUT_S = 10
PREFIX = "5BAA6"  # SHA-1("password")[:5]; 4 entries of tests/fixtures/pwned_sample.txt

Reply = collections.namedtuple("Reply", "status code message payload text")


def require_tools():
    missing = [t for t in ("protoc", "nngcat") if shutil.which(t) is None]
    assert not missing, (f"{' and '.join(missing)} not found: `make deps` installs "
                         "protobuf-compiler and nng-utils")


# ---- protoc: text format <-> wire -------------------------------------------

def protoc(mode, msg_type, data, proto, includes=()):
    """`protoc --encode|--decode=<type> -I proto [-I ...] <file>`, run from the
    repository like the examples in docs/rpc.md; bytes in, bytes out."""
    args = ["protoc", f"--{mode}={msg_type}", "-I", "proto"]
    for inc in includes:
        args += ["-I", str(inc)]
    args.append(str(proto))
    out = subprocess.run(args, input=data, capture_output=True, cwd=REPO, timeout=30)
    assert out.returncode == 0, (args, out.stderr.decode(errors="replace"))
    return out.stdout


def encode(msg_type, text, proto="proto/common.proto", includes=()):
    return protoc("encode", msg_type, text.encode(), proto, includes)


def decode(msg_type, data, proto="proto/common.proto", includes=()):
    return protoc("decode", msg_type, data, proto, includes)


def text_bytes(b):
    """A bytes value as a text-format string literal: every byte octal-escaped."""
    return '"' + "".join("\\%03o" % c for c in b) + '"'


def unescape(literal):
    """The inside of a string literal protoc printed (C escapes: \\NNN octal,
    \\n, \\", \\\\ ...) back to bytes."""
    return codecs.escape_decode(literal)[0]


def scalar(text, name):
    """The first `name: value` line at any depth; strings unquoted to bytes."""
    m = re.search(rb"^\s*" + name.encode() + rb": (.*)$", text, re.M)
    if m is None:
        return None
    v = m.group(1)
    return unescape(v[1:-1]) if v.startswith(b'"') else v.decode()


def scalars(text, name):
    return [m.group(1).decode()
            for m in re.finditer(rb"^\s*" + name.encode() + rb": (.*)$", text, re.M)]


_ids = iter(range(1, 1 << 30))


def envelope(method, payload=b"", request_id=None, deadline_ms=None, context=None):
    """An RpcRequest (proto/common.proto). The payload is the method's input,
    packed by protoc first and embedded as an escaped bytes literal."""
    if request_id is None:
        request_id = f"ext-{os.getpid()}-{next(_ids)}"
    if deadline_ms is None:
        deadline_ms = int(time.time() * 1000) + 30_000
    lines = [f'method: "{method}"', f'request_id: "{request_id}"']
    if deadline_ms:
        lines.append(f"deadline_unix_ms: {deadline_ms}")
    if context:
        lines.append("context { %s }" % " ".join(f'{k}: "{v}"' for k, v in context.items()))
    if payload:
        lines.append(f"payload: {text_bytes(payload)}")
    return encode("magnetar.RpcRequest", "\n".join(lines) + "\n")


def parse_reply(raw):
    """An RpcReply through `protoc --decode`. proto3 prints no default: a
    missing status is STATUS_OK, a missing payload is empty."""
    text = decode("magnetar.RpcReply", raw)
    status = re.search(rb"^status: (\w+)$", text, re.M)
    payload = re.search(rb'^payload: "(.*)"$', text, re.M)
    code, message = scalar(text, "code"), scalar(text, "message")
    return Reply(status=status.group(1).decode() if status else "STATUS_OK",
                 code=code.decode() if code is not None else "",
                 message=message.decode() if message is not None else "",
                 payload=unescape(payload.group(1)) if payload else b"",
                 text=text)


def as_user(name):
    """preexec_fn: become `name` with its supplementary groups (a service
    user is in the IPC group), so the socket sees that uid."""
    pw = pwd.getpwnam(name)
    groups = os.getgrouplist(name, pw.pw_gid)

    def drop():
        os.setgroups(groups)
        os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
        os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
    return drop


class Breach:
    """magnetar-breach on its own, reached only through nngcat."""

    def __init__(self, tmp):
        self.dir = tmp
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "MAGNETAR_ENV": "test",
            "MAGNETAR_SANDBOX": SANDBOX,
            "MAGNETAR_DATA_DIR": str(tmp / "var"),
            "MAGNETAR_RUN_DIR": str(tmp / "run"),
            "MAGNETAR_HIBP_MODE": "offline",
        }
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS"):
            if k in os.environ:
                self.env[k] = os.environ[k]
        # The default URL: ipc://<MAGNETAR_RUN_DIR>/<service>.sock
        self.url = f"ipc://{tmp}/run/breach.sock"
        self.log_path = tmp / "breach.log"
        self.calls = 0
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(BIN / "magnetar-breach")], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir)
        return self

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        return rc

    def logs(self):
        return self.log_path.read_text(errors="replace")

    def nngcat(self, request, user=None, fmt="--raw"):
        """`nngcat --req --dial <url> --file <req> --raw --recv-timeout N`.
        The request goes in a file (binary: --data cannot carry a NUL)."""
        self.calls += 1
        req = self.dir / f"req-{self.calls}.bin"
        req.write_bytes(request)
        req.chmod(0o644)  # readable by the uid we may become
        return subprocess.run(
            ["nngcat", "--req", "--dial", self.url, "--file", str(req), fmt,
             "--recv-timeout", str(RECV_TIMEOUT_S)],
            capture_output=True, timeout=RECV_TIMEOUT_S + 20,
            preexec_fn=as_user(user) if user else None)

    def call(self, method, payload=b"", user=None, **kw):
        out = self.nngcat(envelope(method, payload, **kw), user=user)
        assert out.returncode == 0, out.stderr.decode(errors="replace")
        # nngcat exits 0 and prints nothing when no reply came in time.
        assert out.stdout, f"no reply to {method} within {RECV_TIMEOUT_S} s\n" + self.logs()
        return parse_reply(out.stdout)

    def call_ok(self, method, payload=b"", out_type=None, proto="proto/common.proto", **kw):
        r = self.call(method, payload, **kw)
        assert r.status == "STATUS_OK", r.text.decode(errors="replace")
        return decode(out_type, r.payload, proto) if out_type else r

    def answers(self):
        try:
            out = self.nngcat(envelope("Ping"))
            return out.returncode == 0 and parse_reply(out.stdout).status == "STATUS_OK" \
                if out.stdout else False
        except (subprocess.TimeoutExpired, AssertionError):
            return False


def reload_store(b):
    """Reload (the operator's alone) through nngcat: the service opens the
    store `magctl breach import -R` wrote into its data dir."""
    text = b.call_ok("Reload", encode("magnetar.ReloadRequest", "", "proto/breach.proto"),
                     "magnetar.ReloadReply", "proto/breach.proto")
    return int(scalar(text, "records") or 0), scalar(text, "mode").decode()


@pytest.fixture(scope="module")
def breach(tmp_path_factory):
    require_tools()
    b = Breach(tmp_path_factory.mktemp("rpcext")).start()
    try:
        assert wait_until(lambda: b.proc.poll() is None and b.answers(), 30, 0.1), \
            "breach never answered Ping over nngcat:\n" + b.logs()
        out = subprocess.run([str(BIN / "magctl"), "breach", "import", "-R", str(SAMPLE)],
                             env=b.env, cwd=b.dir, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert reload_store(b) == (300, "offline")
        yield b
    finally:
        rc = b.stop()
    logs = b.logs()
    assert rc == 0, logs
    assert "ERROR: AddressSanitizer" not in logs and "runtime error:" not in logs, logs


def sample_entries(prefix):
    entries = (line.split(":") for line in SAMPLE.read_text().split())
    return {h: int(c) for h, c in entries if h.startswith(prefix)}


def range_payload(prefix):
    return encode("magnetar.RangeRequest", f'prefix: "{prefix}"', "proto/breach.proto")


# ---- the calls ----------------------------------------------------------------

def test_protoc_and_nngcat_are_installed():
    require_tools()


def test_ping_answers_with_the_services_identity(breach):
    payload = encode("magnetar.PingRequest", "")
    assert payload == b""  # an empty message: the envelope then has no payload field
    text = breach.call_ok("Ping", payload, "magnetar.PingReply",
                          context={"request_id": "ext-ping", "actor": "external-tool"})
    assert scalar(text, "service") == b"breach"
    assert int(scalar(text, "pid")) == breach.proc.pid
    assert re.fullmatch(rb"\d+\.\d+\.\d+", scalar(text, "version"))
    instance = scalar(text, "instance").decode()
    assert re.fullmatch(r"[0-9a-f]{32}", instance)
    # The same process instance the service announced when it started.
    assert f"instance={instance}" in breach.logs()


def test_range_returns_the_offline_stores_suffixes_and_counts(breach):
    # Either case is accepted; the binary `suffixes` field survives protoc's
    # text escaping on the way back.
    text = breach.call_ok("Range", range_payload(PREFIX.lower()), "magnetar.RangeReply",
                          "proto/breach.proto")
    assert scalar(text, "source") == b"offline"
    suffixes = scalar(text, "suffixes")
    counts = [int(c) for c in scalars(text, "counts")]
    assert len(suffixes) == 18 * len(counts)
    got = {}
    for i, count in enumerate(counts):
        row = suffixes[18 * i:18 * i + 18].hex().upper()
        assert row[0] == "0", row  # the high nibble is the prefix's
        got[PREFIX + row[1:]] = count
    assert got == sample_entries(PREFIX) and len(got) == 4


def test_a_typed_view_of_the_envelope_needs_one_protoc_each_way(breach, tmp_path):
    """docs/rpc.md's shell shortcut: a local .proto whose payload field is the
    method's message (bytes and an embedded message are the same on the
    wire), so one --encode and one --decode read like plain text."""
    (tmp_path / "breach_call.proto").write_text("""\
syntax = "proto3";
package ext;
import "common.proto";
import "breach.proto";
message RangeCall {
  string method = 1;
  string request_id = 2;
  uint64 deadline_unix_ms = 3;
  magnetar.RequestContext context = 4;
  magnetar.RangeRequest payload = 5;
}
message RangeAnswer {
  magnetar.Status status = 1;
  magnetar.Error error = 2;
  magnetar.RangeReply payload = 3;
}
""")
    proto, inc = tmp_path / "breach_call.proto", [tmp_path]
    deadline = int(time.time() * 1000) + 30_000
    req = encode("ext.RangeCall", f'method: "Range" request_id: "ext-typed" '
                 f'deadline_unix_ms: {deadline} payload {{ prefix: "{PREFIX}" }}', proto, inc)
    # Byte for byte what the two-step build makes.
    assert req == envelope("Range", range_payload(PREFIX), request_id="ext-typed",
                           deadline_ms=deadline)
    out = breach.nngcat(req)
    assert out.returncode == 0 and out.stdout, out.stderr
    text = decode("ext.RangeAnswer", out.stdout, proto, inc)
    # STATUS_OK is proto3's default: neither it nor an error is printed.
    assert not re.search(rb"^(status|error)\b", text, re.M), text
    assert re.search(rb'^payload \{\n  source: "offline"$', text, re.M), text
    assert sorted(int(c) for c in scalars(text, "counts")) == \
        sorted(sample_entries(PREFIX).values())


def test_nngcat_hex_output_is_the_same_reply(breach):
    """--hex prints one quoted line of \\xNN per reply (`""` for an empty
    one), so an OK reply with an empty output message, which is zero bytes,
    is told from a timeout, where nngcat prints nothing and exits 0."""
    req = envelope("Range", range_payload(PREFIX), request_id="ext-hex", deadline_ms=0)
    raw = breach.nngcat(req)
    hexed = breach.nngcat(req, fmt="--hex")
    assert raw.returncode == 0 and hexed.returncode == 0, hexed.stderr
    line = hexed.stdout.decode().strip()
    assert line.startswith('"') and line.endswith('"'), line
    back = bytes.fromhex(line[1:-1].replace("\\x", ""))
    assert back and back == raw.stdout


def test_reload_is_the_operators_and_root_is_the_operator(breach):
    # magctl's role is uid 0's: root may call every method of every service.
    assert reload_store(breach) == (300, "offline")


@pytest.mark.parametrize("method,payload,kw,status,code", [
    ("Nope", b"", {}, "STATUS_UNIMPLEMENTED", "unknown_method"),
    # The method is the bare name of the service block's rpc, case-sensitive.
    ("range", "prefix:" + PREFIX, {}, "STATUS_UNIMPLEMENTED", "unknown_method"),
    ("magnetar.Breach.Range", "prefix:" + PREFIX, {}, "STATUS_UNIMPLEMENTED", "unknown_method"),
    ("", b"", {}, "STATUS_INVALID", "malformed_request"),
    ("Range", b"\xff\xff\xff", {}, "STATUS_INVALID", "malformed_request"),
    ("Range", "prefix:xyz", {}, "STATUS_INVALID", "invalid_prefix"),
    # A deadline already past when a worker picks the call up: not run.
    ("Range", "prefix:" + PREFIX, {"deadline_ms": 1}, "STATUS_DEADLINE_EXCEEDED",
     "deadline_exceeded"),
])
def test_envelope_errors_answer_a_status_and_a_stable_code(breach, method, payload, kw,
                                                           status, code):
    if isinstance(payload, str):  # protoc runs in the test, not at collection
        payload = range_payload(payload.split(":", 1)[1])
    r = breach.call(method, payload, **kw)
    assert (r.status, r.code) == (status, code), r.text
    assert r.message and r.payload == b""


def test_bytes_that_are_no_envelope_are_malformed(breach):
    out = breach.nngcat(b"\xff\xff\xff\xff")
    assert out.returncode == 0 and out.stdout, out.stderr
    r = parse_reply(out.stdout)
    assert (r.status, r.code) == ("STATUS_INVALID", "malformed_request"), r.text


def test_stats_count_these_calls(breach):
    assert breach.call("Nope").code == "unknown_method"
    text = breach.call_ok("Stats", b"", "magnetar.StatsReply")
    assert scalar(text, "service") == b"breach"
    counters = {}
    for m in re.finditer(rb"counters \{\n(.*?)\n\}", text, re.S):
        name = scalar(m.group(1), "name").decode()
        counters[name] = int(scalar(m.group(1), "value") or 0)  # 0 is not printed
    assert counters["rpc.Ping.calls"] >= 1, counters  # the fixture's readiness Ping
    assert counters["rpc.Reload.calls"] >= 1, counters
    assert counters["rpc.unknown_method"] >= 1, counters
    assert "rpc.refused" in counters and "rpc.expired" in counters, counters


# ---- who may call what (as root: one user per service) -----------------------

@needs_root
def test_a_method_the_callers_uid_may_not_call_is_permission_denied(breach):
    # The gateway is admitted to breach (its readiness Ping) ...
    text = breach.call_ok("Ping", user="magnetar-gateway", out_type="magnetar.PingReply")
    assert scalar(text, "service") == b"breach"
    # ... but Range is auth's (and the operator's), Reload the operator's.
    for method, payload in (("Range", range_payload(PREFIX)), ("Reload", b"")):
        r = breach.call(method, payload, user="magnetar-gateway")
        assert (r.status, r.code) == ("STATUS_PERMISSION_DENIED", "permission_denied"), r.text
        assert r.payload == b""
    # Auth may ask Range, never Reload.
    r = breach.call("Range", range_payload(PREFIX), user="magnetar-auth")
    assert r.status == "STATUS_OK", r.text
    r = breach.call("Reload", user="magnetar-auth")
    assert (r.status, r.code) == ("STATUS_PERMISSION_DENIED", "permission_denied"), r.text
    # A refused caller learns nothing about its payload: bytes that are no
    # RangeRequest get permission_denied too, not malformed_request.
    r = breach.call("Range", b"\xff\xff\xff", user="magnetar-gateway")
    assert (r.status, r.code) == ("STATUS_PERMISSION_DENIED", "permission_denied"), r.text


@needs_root
def test_a_uid_off_the_sockets_allow_list_is_peer_refused(breach):
    # Audit's user is in the IPC group (it can connect) but breach admits
    # only auth, the gateway and the operator: refused before decoding.
    r = breach.call("Ping", user="magnetar-audit")
    assert (r.status, r.code) == ("STATUS_PERMISSION_DENIED", "peer_refused"), r.text
    uid = pwd.getpwnam("magnetar-audit").pw_uid
    assert wait_until(lambda: f"refused a peer uid={uid}" in breach.logs(), 5)
    text = breach.call_ok("Stats", b"", "magnetar.StatsReply")
    m = re.search(rb'name: "rpc.refused"\n\s*value: (\d+)', text)
    assert m and int(m.group(1)) >= 1, text


@needs_root
def test_a_uid_outside_the_ipc_group_cannot_connect(breach):
    # The run dir is root:magnetar 03770: the shell user cannot reach the socket.
    out = breach.nngcat(envelope("Ping"), user="magnetar-shell")
    assert out.returncode != 0 and out.stdout == b""
    assert b"Permission denied" in out.stderr, out.stderr
