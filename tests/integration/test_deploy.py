"""The deployment files (issue 9): deploy/Dockerfile, deploy/docker-compose.yml,
deploy/.env.example, deploy/systemd/ and docs/operations.md.

No Docker engine runs here, so the Compose file is checked as data (python3-
yaml, and `docker-compose config -q` when a Compose client is installed), and
what it relies on is checked by running the real binaries: the capability set
it (and every systemd unit) gives a service boots the whole stack in
production mode with no_new_privs (as root). The units are checked with
`systemd-analyze verify` and as data; their coarse system call filter is
checked against each service's own allow-list in common/sandbox.c.
"""
import base64
import hashlib
import os
import pathlib
import re
import secrets
import shutil
import signal
import stat
import subprocess

import pytest
import requests
import yaml

from conftest import BIN, REPO, free_port, sandbox_env, wait_until

DEPLOY = REPO / "deploy"
# At the root, where both Compose clients find it (and its override) alone.
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILE = DEPLOY / "Dockerfile"
SYSTEMD = DEPLOY / "systemd"
OPERATIONS = REPO / "docs" / "operations.md"
CONFIG_C = REPO / "common" / "config.c"
SANDBOX_C = REPO / "common" / "sandbox.c"

SERVICES = ["gateway", "auth", "audit", "breach", "terminal"]
# Start order: audit first (everyone sends it events), the gateway last.
START_ORDER = ["audit", "breach", "auth", "terminal", "gateway"]
# Services that scale with `--scale` (docs/scaling.md): their URLs are lists.
# audit is one writer (one chain): its list has one entry (docs/scaling.md).
SCALED = ["auth", "breach"]
# What a service started as root needs until it drops to its own user
# (docs/operations.md). The terminal needs no more: its spawner keeps SETUID
# and SETGID of these (services/terminal/spawner.c).
START_CAPS = {"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETGID", "SETUID"}
CAPS = {s: START_CAPS for s in SERVICES}
# Compose adds KILL for the container's init (tini), which forwards SIGTERM to
# a service that runs as another uid by then; systemd signals them itself.
INIT_CAPS = {"KILL"}
RUNTIME_PACKAGES = {"libnng1", "libprotobuf-c1", "libsqlite3-0", "libssl3", "libcurl4",
                    "libmicrohttpd12", "libwslay1", "libjansson4", "libargon2-1", "liboath0",
                    "libseccomp2"}
NAME_RE = re.compile(r"MAGNETAR_[A-Z0-9_]*[A-Z0-9]")


# ---- the variable tables (`magnetar vars`) ------------------------------------

def conf_rows():
    """Every variable, as the supervisor lists them (`magnetar vars`: common's
    table and each program's): (name, readers, secret, file_alias). A name in
    two programs' tables is one row with both readers."""
    out = subprocess.run([str(BIN / "magnetar"), "vars"], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    rows = {}
    for line in out.splitlines():
        name, readers, secret, alias = line.split("\t")
        who = set() if readers == "-" else set(readers.split(","))
        assert who <= set(SERVICES), "unknown reader in %r" % line
        prev = rows.get(name)
        if prev is not None:
            assert prev[2] == (secret == "1") and prev[3] == (None if alias == "-" else alias), \
                "%s declared differently by two programs" % name
            who |= prev[1]
        rows[name] = (name, who, secret == "1", None if alias == "-" else alias)
    assert len(rows) > 40, "magnetar vars listed %d variables" % len(rows)
    return list(rows.values())


def config_names():
    """Every MAGNETAR_* name the tables' sources spell (common/config.c and
    each program's vars.c: rows, aliases, messages)."""
    names = set(NAME_RE.findall(CONFIG_C.read_text()))
    for f in [REPO / "gateway" / "vars.c", *(REPO / "services").glob("*/vars.c")]:
        names |= set(NAME_RE.findall(f.read_text()))
    return names


def getenv_names():
    """MAGNETAR_* names the programs read with getenv() outside the table."""
    names = set()
    for d in ("common", "gateway", "services", "tools"):
        for f in (REPO / d).rglob("*.c"):
            names |= set(re.findall(r'getenv\("(MAGNETAR_[A-Z0-9_]+)"\)', f.read_text()))
    return names


def allowed_names():
    rows = conf_rows()
    files = {n + "_FILE" for n, _, secret, _ in rows if secret}
    files |= {alias for _, _, _, alias in rows if alias}
    return config_names() | files | getenv_names()


def secret_names():
    return {n for n, _, secret, _ in conf_rows() if secret}


# ---- compose -------------------------------------------------------------------

def compose():
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(value):
    """Compose's ${VAR:-default} / ${VAR-default} / ${VAR}, with the defaults."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", str(value))


def environment(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: interpolate(v) for k, v in env.items()}


def mounts(svc):
    out = []
    for v in svc.get("volumes") or []:
        if isinstance(v, dict):
            out.append((v.get("source"), v["target"]))
        else:
            parts = v.split(":")
            out.append((parts[0], parts[1]) if len(parts) > 1 else (None, parts[0]))
    return out


def size_bytes(s):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)b?", str(s).strip().lower())
    assert m, "cannot read the size %r" % s
    return float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " ")


def has_egress(doc, svc):
    """Whether a container gets a route out: any network mode but none, or a
    network that is neither internal nor without NAT."""
    mode = svc.get("network_mode")
    if mode is not None:
        return mode != "none"
    nets = svc.get("networks") or ["default"]
    declared = doc.get("networks") or {}
    for name in nets:
        net = declared.get(name) or {}
        if name not in declared and name != "default":
            return True
        if net.get("internal") is True:
            continue
        opts = net.get("driver_opts") or {}
        if str(opts.get("com.docker.network.bridge.enable_ip_masquerade", "")).lower() == "false":
            continue
        return True
    return False


def test_compose_has_one_hardened_container_per_service():
    doc = compose()
    services = doc["services"]
    assert set(services) == set(SERVICES), "exactly one container per service"
    top_volumes = doc.get("volumes") or {}
    data_volumes = {}
    run_volumes = set()
    for name in SERVICES:
        svc = services[name]
        where = "service %s: " % name
        # Its own binary, directly: not the supervisor, not a shell.
        cmd = svc.get("command")
        assert cmd == ["/usr/local/bin/magnetar-%s" % name], where + "command %r" % cmd
        assert "entrypoint" not in svc, where + "no entrypoint wrapper"
        assert svc.get("read_only") is True, where + "read_only: true"
        assert svc.get("cap_drop") == ["ALL"], where + "cap_drop: [ALL]"
        assert set(svc.get("cap_add") or []) == CAPS[name] | INIT_CAPS, \
            where + "cap_add %r" % svc.get("cap_add")
        assert svc.get("init") is True, where + "init: true (reaps, forwards signals)"
        assert "no-new-privileges:true" in (svc.get("security_opt") or []), where + "no-new-privileges"
        # Started as uid 0 so that the service separates itself (operations.md).
        assert str(svc.get("user")) in ("0", "0:0"), where + "user %r" % svc.get("user")
        assert not svc.get("privileged"), where + "privileged"
        # on-failure: a replica with no entry left exits 0 and stays down.
        assert svc.get("restart") == "on-failure", where + "restart"
        hc = svc.get("healthcheck") or {}
        test = hc.get("test") or []
        assert not hc.get("disable") and test[:1] == ["CMD"], where + "healthcheck %r" % hc
        # A service that scales asks its own replica (magctl ping --here).
        want = ["ping", name, "--here"] if name in SCALED else ["ping", name]
        assert os.path.basename(test[1]) == "magctl" and test[-len(want):] == want, \
            where + "healthcheck must be magctl %s: %r" % (" ".join(want), test)
        # Resource limits, in either spelling.
        limits = ((svc.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        mem = svc.get("mem_limit") or limits.get("memory")
        cpus = svc.get("cpus") or limits.get("cpus")
        pids = svc.get("pids_limit") or limits.get("pids")
        assert mem and size_bytes(mem) > 0, where + "memory limit"
        assert cpus and float(cpus) > 0, where + "cpu limit"
        assert pids and int(pids) > 0, where + "pids limit"
        # Environment: production, the shared run dir, the sockets in it.
        env = environment(svc)
        assert env.get("MAGNETAR_ENV") == "production", where + "MAGNETAR_ENV"
        assert env.get("MAGNETAR_SANDBOX", "enforce") == "enforce", where + "MAGNETAR_SANDBOX"
        data_dir, run_dir = env.get("MAGNETAR_DATA_DIR"), env.get("MAGNETAR_RUN_DIR")
        assert data_dir and run_dir and run_dir.startswith("/"), where + "data and run dirs"
        for k, v in env.items():
            if re.fullmatch(r"MAGNETAR_\w+_URL", k) and k != "MAGNETAR_HIBP_URL":
                for url in v.split(","):
                    assert url.startswith("ipc://%s/" % run_dir), \
                        where + "%s=%s is not in the shared run dir" % (k, v)
        # Volumes: its own data volume, and the shared socket volume.
        m = dict((dst, src) for src, dst in mounts(svc))
        src = m.get("%s/%s" % (data_dir, name))
        assert src in top_volumes, where + "a named volume at %s/%s" % (data_dir, name)
        data_volumes[name] = src
        assert m.get(run_dir) in top_volumes, where + "the shared volume at %s" % run_dir
        run_volumes.add(m[run_dir])
    assert len(set(data_volumes.values())) == len(SERVICES), "data volumes are per service"
    assert len(run_volumes) == 1, "one socket volume shared by all: %r" % run_volumes
    assert not run_volumes & set(data_volumes.values())
    # The terminal's shells need a scratch dir on a read-only root.
    assert any(t.split(":")[0] == "/tmp" for t in services["terminal"].get("tmpfs") or [])


def test_compose_scaled_services_list_one_entry_per_replica():
    """`docker compose up --scale auth=3`: every replica gets the same
    environment and takes an entry of the lists (common/replica.c), so a
    scaled service's URL and events URL list the same number of entries,
    more than one; the others have one."""
    for name, svc in compose()["services"].items():
        env = environment(svc)
        n = len(env["MAGNETAR_%s_URL" % name.upper()].split(","))
        assert (n > 1) == (name in SCALED), "%s: %d entries" % (name, n)
        events = env.get("MAGNETAR_%s_EVENTS_URL" % name.upper())
        if name in SCALED and events:
            assert len(events.split(",")) == n, name
        assert not svc.get("hostname") and not svc.get("container_name"), \
            name + ": replicas need their own names (ping --here tells them by host name)"


def test_compose_ports_and_networks():
    doc = compose()
    services = doc["services"]
    published = {n for n in SERVICES if services[n].get("ports")}
    assert published == {"gateway"}, "only the gateway publishes a port: %r" % published
    port = environment(services["gateway"])["MAGNETAR_HTTP_ADDR"].rsplit(":", 1)[1]
    targets = [str(p).rsplit(":", 1)[-1] for p in services["gateway"]["ports"]]
    assert targets == [port], "the published port is the gateway's MAGNETAR_HTTP_ADDR"
    egress = {n for n in SERVICES if has_egress(doc, services[n])}
    assert egress == {"breach"}, "only breach may reach out: %r" % egress


def test_compose_secrets_are_files_and_complete():
    doc = compose()
    declared = doc.get("secrets") or {}
    for name, spec in declared.items():
        assert set(spec) == {"file"}, "secret %s must come from a file: %r" % (name, spec)
    sec = secret_names()
    for n, readers, secret, alias in conf_rows():
        for svc_name in SERVICES:
            svc = doc["services"][svc_name]
            env = environment(svc)
            assert n not in env or not secret, "%s: %s set inline" % (svc_name, n)
            if not secret or svc_name not in readers or n == "MAGNETAR_FOUNDER_PASSWORD":
                continue
            # Production refuses to start without it (common/config.c).
            path = env.get(n + "_FILE") or (env.get(alias) if alias else None)
            assert path, "%s needs %s_FILE in production" % (svc_name, n)
    for svc_name in SERVICES:
        svc = doc["services"][svc_name]
        for k, v in environment(svc).items():
            if k.endswith("_FILE") and k[:-5] in sec | {"MAGNETAR_AUDIT_KEYS"}:
                assert v.startswith("/run/secrets/"), "%s: %s=%s" % (svc_name, k, v)
                name = v[len("/run/secrets/"):]
                assert name in (svc.get("secrets") or []) and name in declared, \
                    "%s: secret %s not given to it" % (svc_name, name)


def looks_secret(text):
    """Tokens that look like key material: long base64 or hex, keyring entries."""
    hits = []
    for tok in re.findall(r"[A-Za-z0-9+/_-]{32,}={0,2}", text):
        if re.fullmatch(r"[0-9a-fA-F]{32,}", tok):
            hits.append(tok)
        elif re.search(r"[A-Z]", tok) and re.search(r"[a-z]", tok) \
                and (re.search(r"[\d+/]", tok) or len(tok) >= 40) \
                and not re.fullmatch(r"(/[\w.-]+)+/?", tok):
            hits.append(tok)
    hits += re.findall(r"\b[\w.-]{1,32}:[A-Za-z0-9+/]{43}=", text)
    return hits


def test_no_secret_value_is_committed():
    for path in (COMPOSE, ENV_EXAMPLE):
        text = path.read_text()
        assert not looks_secret(text), "%s holds what looks like a key: %r" % (
            path.name, looks_secret(text))
    sec = secret_names()
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), "bad line in .env.example: %r" % line
        assert key not in sec, ".env.example must not carry %s (a secret): use its file" % key
        assert not re.search(r"PASSWORD|SECRET$|_KEY$|TOKEN", key), \
            ".env.example: %s looks like a secret" % key
    # Every variable the Compose file interpolates is documented there.
    documented = {l.split("=", 1)[0] for l in ENV_EXAMPLE.read_text().splitlines()
                  if re.match(r"[A-Z_][A-Z0-9_]*=", l)}
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    assert used <= documented, "not in .env.example: %r" % (used - documented)


def test_looks_secret_catches_keys():
    # The detector above must fire on what the .env.example commands produce.
    for raw in (bytes(range(32)), bytes(range(255, 223, -1)), hashlib.sha256(b"k").digest()):
        key = base64.b64encode(raw).decode()
        assert looks_secret("k1:" + key), key
        assert looks_secret("MAGNETAR_TOTP_KEY=" + key), key
        assert looks_secret("MAGNETAR_TOTP_KEY=" + key.rstrip("=")), key
    assert looks_secret(bytes(range(32)).hex())
    assert not looks_secret("ipc:///run/magnetar/audit-events.sock /usr/local/bin/magctl")


def compose_cli():
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(
            ["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


def test_compose_client_accepts_the_file():
    cli = compose_cli()
    # make deps installs Debian's docker-compose (v1), which validates offline.
    assert cli is not None, "no Compose client (Debian package docker-compose; make deps)"
    r = subprocess.run(cli + ["-f", str(COMPOSE), "config", "-q"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warn" not in r.stderr.lower(), r.stderr


# ---- Dockerfile ------------------------------------------------------------------

def dockerfile_stages():
    """[(from_line, [(instruction, args)])], continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            stages.append((args.strip(), []))
        elif stages:
            stages[-1][1].append((instr, args.strip()))
    return stages


def test_dockerfile_builds_on_debian_and_runs_slim_as_non_root():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage"
    assert re.match(r"debian:12\s+AS\s+\w+", stages[0][0], re.I), stages[0][0]
    final_from, final = stages[-1]
    assert final_from.split()[0] == "debian:12-slim", final_from
    build_runs = " ".join(a for i, a in stages[0][1] if i == "RUN")
    assert re.search(r"\bmake\b[^&]*\ball\b", build_runs), "the build stage runs make all"
    users = [a for i, a in final if i == "USER"]
    assert users, "the final stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0", ""), "the final stage's USER is root: %r" % users[-1]
    # Only the runtime libraries: no -dev package, no compiler in the image.
    installs = [a for i, a in final if i == "RUN" and "apt-get install" in a]
    assert installs, "the final stage installs the runtime libraries"
    pkgs = set()
    for run in installs:
        for cmd in run.split("&&"):
            if "apt-get install" in cmd:
                pkgs |= {t for t in cmd.split("install", 1)[1].split() if not t.startswith("-")}
    assert pkgs >= RUNTIME_PACKAGES, "missing: %r" % (RUNTIME_PACKAGES - pkgs)
    assert pkgs - RUNTIME_PACKAGES <= {"ca-certificates"}, "extra: %r" % (pkgs - RUNTIME_PACKAGES)
    assert any(i == "COPY" and a.startswith("--from=") for i, a in final), "binaries from the build"


def test_image_ids_match_the_compose_file():
    # The socket volume is made root:<magnetar gid> and the secrets' owners
    # name audit's uid: both must be the image's.
    text = DOCKERFILE.read_text()
    gid = re.search(r"groupadd --gid (\d+) magnetar\b", text).group(1)
    opts = compose()["volumes"]["run"]["driver_opts"]["o"]
    assert "gid=%s" % gid in opts.split(","), (gid, opts)
    audit_uid = re.search(r"audit:(\d+)", text).group(1)
    assert "chown 0:%s audit_keys" % audit_uid in ENV_EXAMPLE.read_text()


# ---- systemd -------------------------------------------------------------------------

def unit(path):
    """{section: {key: [values]}}; repeated keys accumulate as systemd does."""
    out, section = {}, None
    for line in re.sub(r"\\\n", " ", path.read_text()).splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = out.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return out


def words(values):
    return {w for v in values for w in v.split()}


def unit_files():
    return [SYSTEMD / ("magnetar-%s.service" % s) for s in SERVICES] + [SYSTEMD / "magnetar.target"]


def test_systemd_analyze_verify_passes(tmp_path):
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing (Debian package systemd)"
    for f in unit_files():
        text = f.read_text()
        # verify wants ExecStart's binary to exist: point it at this build.
        text = text.replace("ExecStart=/usr/local/bin/", "ExecStart=%s/" % BIN)
        (tmp_path / f.name).write_text(text)
    for s in SERVICES:
        assert (BIN / ("magnetar-" + s)).exists(), "build first: make all"
    r = subprocess.run([tool, "verify", "--man=no"] + [f.name for f in unit_files()],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    # A misspelt key or a bad value is only a warning: none is accepted.
    noise = [l for l in out.splitlines() if "magnetar" in l]
    assert not noise, out


def test_systemd_units_are_hardened_and_ordered():
    compose_caps = {n: set(compose()["services"][n]["cap_add"]) for n in SERVICES}
    for name in SERVICES:
        u = unit(SYSTEMD / ("magnetar-%s.service" % name))
        s, un = u["Service"], u["Unit"]
        where = "magnetar-%s.service: " % name
        assert s["ExecStart"] == ["/usr/local/bin/magnetar-%s" % name], where + "ExecStart"
        # Started as root: each service drops to its own user (operations.md).
        assert "User" not in s and s.get("DynamicUser", ["no"]) == ["no"], where + "User="
        assert s.get("Group") == ["magnetar"], where + "Group=magnetar"
        assert s.get("NoNewPrivileges") == ["yes"], where + "NoNewPrivileges"
        assert s.get("ProtectSystem") == ["strict"], where + "ProtectSystem"
        assert s.get("EnvironmentFile") == ["/etc/magnetar/magnetar.env"], where + "EnvironmentFile"
        env = dict(kv.split("=", 1) for kv in words(s.get("Environment", [])))
        assert env.get("MAGNETAR_DATA_DIR") == "/var/lib/" + s["StateDirectory"][0], where
        assert env.get("MAGNETAR_RUN_DIR") == "/run/" + s["RuntimeDirectory"][0], where
        assert s["StateDirectory"] == ["magnetar"] and s["RuntimeDirectory"] == ["magnetar"], where
        assert s.get("RuntimeDirectoryPreserve") == ["yes"], where + "shared socket dir kept"
        caps = words(s.get("CapabilityBoundingSet", []))
        assert caps == {"CAP_" + c for c in CAPS[name]}, where + "CapabilityBoundingSet %r" % caps
        assert caps == {"CAP_" + c for c in compose_caps[name] - INIT_CAPS}, \
            where + "same set as Compose, but its init's"
        assert not words(s.get("AmbientCapabilities", [])), where + "no ambient capabilities"
        families = words(s.get("RestrictAddressFamilies", []))
        allowed = {"gateway": {"AF_UNIX", "AF_INET", "AF_INET6"},
                   "breach": {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}}.get(name, {"AF_UNIX"})
        assert "AF_UNIX" in families and families <= allowed, where + "families %r" % families
        assert s.get("SystemCallFilter"), where + "SystemCallFilter"
        assert s.get("Restart", ["no"]) != ["no"], where + "Restart"
        assert s.get("MemoryMax") and s.get("TasksMax"), where + "resource limits"
        assert un.get("PartOf") == ["magnetar.target"], where + "PartOf"
        assert u["Install"].get("WantedBy") == ["magnetar.target"], where + "WantedBy"
        after = words(un.get("After", []))
        if name != "audit":
            assert "magnetar-audit.service" in after, where + "after audit"
    gw = words(unit(SYSTEMD / "magnetar-gateway.service")["Unit"]["After"])
    assert {"magnetar-auth.service", "magnetar-audit.service"} <= gw
    assert "magnetar-breach.service" in words(unit(SYSTEMD / "magnetar-auth.service")["Unit"]["After"])
    target = unit(SYSTEMD / "magnetar.target")
    assert words(target["Unit"]["Wants"]) == {"magnetar-%s.service" % s for s in SERVICES}


def test_sysusers_make_the_users_the_services_drop_to():
    lines = [l.split() for l in (SYSTEMD / "magnetar.sysusers").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    users = {l[1] for l in lines if l[0] == "u"}
    members = {(l[1], l[2]) for l in lines if l[0] == "m"}
    assert {l[1] for l in lines if l[0] == "g"} == {"magnetar"}
    for s in SERVICES:
        assert "magnetar-" + s in users and ("magnetar-" + s, "magnetar") in members, s
    # Shells reach no socket: their user is in no group of ours.
    assert "magnetar-shell" in users and not any(u == "magnetar-shell" for u, _ in members)


_groups = {}


def syscall_group(group):
    """The system calls of a systemd group, nested groups expanded."""
    if group not in _groups:
        out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager", group],
                             capture_output=True, text=True, check=True).stdout
        names = set()
        for line in out.splitlines()[1:]:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            names |= syscall_group(line) if line.startswith("@") else {line}
        _groups[group] = names
    return _groups[group]


def unit_syscalls(values):
    allow, deny = set(), set()
    for v in values:
        target = deny if v.startswith("~") else allow
        for w in v.lstrip("~").split():
            target |= syscall_group(w) if w.startswith("@") else {w}
    return allow - deny


def sandbox_allow_list(name):
    """The service's own seccomp allow-list: every service's (sc_allow[] in
    common/sandbox.c) and what its main.c's sandbox hook adds
    (sandbox_allow_syscall)."""
    src = SANDBOX_C.read_text()
    block = src[src.index("sc_allow[] = {"):]
    block = block[:block.index("\n};")]
    names = set(re.findall(r'^\s*"(\w+)",', block, re.M))
    assert len(names) > 50, "sc_allow[] not found or changed shape"
    main = (REPO / "gateway" if name == "gateway" else REPO / "services" / name) / "main.c"
    names |= set(re.findall(r'sandbox_allow_syscall\(r, "(\w+)"\)', main.read_text()))
    # Added by rules with arguments beside the table.
    return names | {"clone", "socket", "kill", "tgkill"}


# What a service does before its own filter: the uid drop, the sandbox
# itself, binding its sockets; the terminal's spawner starts shells.
START_SYSCALLS = {"execve", "setresuid", "setresgid", "setgroups", "fchown", "fchownat", "chown",
                  "lchown", "fchmod", "capget", "capset", "prctl", "seccomp",
                  "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
                  "socket", "bind", "listen", "connect", "getsockopt", "setsockopt"}
SPAWNER_SYSCALLS = {"fork", "clone", "execve", "setsid", "socketpair", "sendmsg", "recvmsg",
                    "ioctl", "wait4", "kill", "close_range", "setpgid", "dup2"}


def test_unit_syscall_filters_admit_the_services_own_allow_lists():
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing (Debian package systemd)"
    for name in SERVICES:
        u = unit(SYSTEMD / ("magnetar-%s.service" % name))
        allowed = unit_syscalls(u["Service"]["SystemCallFilter"])
        need = sandbox_allow_list(name) | START_SYSCALLS
        if name == "terminal":
            need |= SPAWNER_SYSCALLS
        missing = need - allowed
        assert not missing, "magnetar-%s.service's SystemCallFilter= denies %s" % (
            name, sorted(missing))


# ---- docs/operations.md --------------------------------------------------------------

def test_operations_documents_every_variable_and_no_other():
    doc = OPERATIONS.read_text()
    table = set(re.findall(r"^\| `(MAGNETAR_[A-Z0-9_]+)` \|", doc, re.M))
    rows = {n for n, _, _, _ in conf_rows()}
    assert rows - table == set(), "no row in docs/operations.md for %r" % sorted(rows - table)
    in_doc = set(NAME_RE.findall(doc))
    assert config_names() - in_doc == set(), "not in docs/operations.md: %r" % sorted(
        config_names() - in_doc)
    unknown = in_doc - allowed_names()
    assert not unknown, "docs/operations.md names what the code does not read: %r" % sorted(unknown)
    assert table <= rows, "table rows no program declares (magnetar vars): %r" % sorted(table - rows)


def test_deploy_files_name_only_real_variables():
    ok = allowed_names()
    for path in [COMPOSE, ENV_EXAMPLE, DOCKERFILE, *SYSTEMD.iterdir()]:
        unknown = set(NAME_RE.findall(path.read_text())) - ok
        assert not unknown, "%s names %r, which no program reads" % (path.name, sorted(unknown))


def test_operations_sections():
    doc = OPERATIONS.read_text()
    heads = re.findall(r"^## (.+)$", doc, re.M)
    for h in ("Images", "Install with Docker Compose", "Install with systemd", "Configuration",
              "Backup and restore", "Key rotation", "Upgrading, and migrations", "Metrics",
              "Scaling", "Beyond one machine"):
        assert h in heads, "docs/operations.md has no section %r" % h
    scaling = doc.split("## Scaling", 1)[1].split("\n## ", 1)[0]
    assert "See docs/scaling.md" in scaling
    for cmd in ("magctl backup", "magctl auth rotate-keys", "magctl audit rotate-key"):
        assert cmd in doc, cmd


# ---- the capability set, for real ----------------------------------------------------------

def caps_arg(caps):
    return "--bounding-set=-all," + ",".join("+" + c.lower() for c in sorted(caps))


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a service as root with a capability set "
                    "needs root")
def test_capability_set_boots_the_stack(tmp_path):
    """Each service started as Compose (and its unit) start it: uid 0, only the
    capabilities Compose gives it, no_new_privs, production, the Compose
    environment with its paths moved under tmp_path. Twice: from empty dirs,
    then again on the data the first round left (owned by the services'
    users). Before each start the shared dirs are reset to root:root 0755, so
    every service must be able to set them right by itself. All five serve,
    drop to their users and find each other."""
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is missing"
    services = compose()["services"]
    caps = {n: set(services[n]["cap_add"]) for n in SERVICES}  # as Compose gives them
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(mode=0o700)
    key = lambda: base64.b64encode(secrets.token_bytes(32)).decode()
    files = {"audit_keys": "k1:" + key(), "totp_key": key(), "fingerprint_key": key(),
             "founder_password": secrets.token_urlsafe(18)}
    for n, v in files.items():
        (secrets_dir / n).write_text(v + "\n")
        (secrets_dir / n).chmod(0o600)
    (tmp_path / "home").mkdir()
    run_dir, data_dir = tmp_path / "run", tmp_path / "var"
    http, metrics = free_port(), free_port()
    moves = [("/var/lib/magnetar", str(data_dir)), ("/run/magnetar", str(run_dir)),
             ("/run/secrets", str(secrets_dir)), ("/home/magnetar-shell", str(tmp_path / "home"))]

    def env_of(name):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/root"}
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            if k in os.environ:
                env[k] = os.environ[k]
        for k, v in environment(services[name]).items():
            for old, new in moves:
                v = v.replace(old, new)
            env[k] = v
        if name == "gateway":
            env["MAGNETAR_HTTP_ADDR"] = "127.0.0.1:%d" % http
            env["MAGNETAR_METRICS_ADDR"] = "127.0.0.1:%d" % metrics
        if name == "breach":
            env["MAGNETAR_HIBP_MODE"] = "off"  # no network here
        return sandbox_env(env)

    def confined(name, *argv):
        return [setpriv, caps_arg(caps[name]), "--inh-caps=-all", "--no-new-privs", *argv]

    def ping(name):
        """The container's own health check, as Compose runs it."""
        test = services[name]["healthcheck"]["test"][1:]
        test[0] = str(BIN / "magctl")
        r = subprocess.run(confined(name, *test), env=env_of(name), capture_output=True,
                           text=True, timeout=10)
        return r.returncode == 0 and (name + ": up") in r.stdout

    procs, logs = {}, {}

    def all_logs():
        return "\n".join("== %s\n%s" % (n, p.read_text(errors="replace")[-3000:])
                         for n, p in logs.items())

    def stop_all():
        for name in reversed(START_ORDER):
            p = procs.get(name)
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = {}
        for name, p in procs.items():
            try:
                codes[name] = p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[name] = p.wait()
        procs.clear()
        return codes

    magnetar_gid = None
    try:
        for rnd in (1, 2):
            for name in START_ORDER:
                for d in (run_dir, data_dir):
                    if d.exists():
                        os.chown(d, 0, 0)
                        d.chmod(0o755)
                logs[name] = tmp_path / ("%s-%d.log" % (name, rnd))
                with open(logs[name], "wb") as out:
                    procs[name] = subprocess.Popen(
                        confined(name, str(BIN / ("magnetar-" + name))), env=env_of(name),
                        stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
                assert wait_until(lambda: ping(name), 30, 0.1), \
                    "%s does not answer magctl ping\n%s" % (name, all_logs())
                # It answers as soon as its socket is bound, a moment before the drop.
                assert wait_until(lambda: "privileges dropped" in logs[name].read_text(), 10), \
                    all_logs()
                # It set the shared dirs right itself: chown and the setgid bit.
                st_run, st_data = run_dir.stat(), data_dir.stat()
                magnetar_gid = magnetar_gid or st_run.st_gid
                assert st_run.st_gid == magnetar_gid != 0, (name, st_run)
                assert stat.S_IMODE(st_run.st_mode) == 0o3770, (name, oct(st_run.st_mode))
                assert (st_data.st_gid, stat.S_IMODE(st_data.st_mode)) == (magnetar_gid, 0o710), name
                # Its socket: the first entry of its URL (replicas: in its
                # own root-owned dir, docs/scaling.md).
                url = env_of(name)["MAGNETAR_%s_URL" % name.upper()].split(",")[0]
                sock = pathlib.Path(url[len("ipc://"):]).stat()
                assert (sock.st_gid, stat.S_IMODE(sock.st_mode)) == (magnetar_gid, 0o660), name
                if name in SCALED:
                    own = pathlib.Path(url[len("ipc://"):]).parent.stat()
                    assert (own.st_uid, own.st_gid, stat.S_IMODE(own.st_mode)) == \
                        (0, magnetar_gid, 0o2750), name
            assert wait_until(lambda: requests.get("http://127.0.0.1:%d/readyz" % http,
                                                   timeout=2).status_code == 200, 30, 0.25), \
                all_logs()
            codes = stop_all()
            assert all(c == 0 for c in codes.values()), "%r\n%s" % (codes, all_logs())
    finally:
        stop_all()
