"""Attack on the audit log's forward security (docs/audit.md "Epochs and
forward security"): whoever holds epoch j's secrets (audit.chain: the chain
key k_j and signing seed s_j), the keyring and audit.db cannot rewrite an
epoch sealed before j.

The attacker here is a faithful re-implementation of what audit computes
(record content hash, hash link, HMAC, head body, Ed25519 signature), in
Python from docs/audit.md and services/audit/{chain,crypto}.c. It rewrites
a record's `source` (who produced it) and everything that depends on it,
re-MACing with k_j and re-signing the sealed head with s_j, the only seed
it has. In the open epoch that forgery verifies (the documented limit, and
the proof that the forger computes exactly what audit does); in a sealed
epoch it does not.
"""
import hashlib
import hmac
import json
import sqlite3
import subprocess
import time

import pytest
from test_audit import Audit
from test_rpc_external import encode, envelope, parse_reply, require_tools

U64_MAX = (1 << 64) - 1


def u64(v):
    return v.to_bytes(8, "big")


def blob(b):
    """crypto_bytes: a NULL (or, read back through SQLite, empty) blob is
    the length UINT64_MAX, else the length then the bytes."""
    return u64(U64_MAX) if not b else u64(len(b)) + bytes(b)


def text(s):
    return u64(U64_MAX) if s is None else u64(len(s.encode())) + s.encode()


COLS = ("id, kind, epoch, time_ms, received_ms, source, producer, instance, seq, key_id, "
        "action, actor, target, ip, request_id, outcome, detail, action_ix, actor_ix, body, "
        "sig, hash, mac")


def content(r):
    h = hashlib.sha256(b"magnetar-audit record v1\0")
    h.update(u64(r["id"]) + u64(r["kind"]) + u64(r["epoch"]) + u64(r["time_ms"]) +
             u64(r["received_ms"]))
    if r["kind"] == 0:
        h.update(text(r["source"]) + text(r["producer"]) + text(r["instance"]) +
                 u64(r["seq"]) + text(r["key_id"]))
        for f in ("action", "actor", "target", "ip", "request_id", "outcome", "detail"):
            h.update(blob(r[f]))
        h.update(blob(r["action_ix"]) + blob(r["actor_ix"]))
    h.update(blob(r["body"]) + blob(r["sig"]))
    return h.digest()


def link(prev, c):
    return hashlib.sha256(b"magnetar-audit chain v1\0" + prev + c).digest()


def mac(key, tag, rid, h):
    return hmac.new(key, tag + b"\0" + u64(rid) + h, hashlib.sha256).digest()


def ed25519_sign(seed, msg, tmp):
    """RFC 8032 signature with a raw 32-byte seed, through the openssl CLI
    (the seed wrapped as PKCS#8 DER), as chain_sign does with EVP."""
    key, body, sig = tmp / "seed.der", tmp / "body.bin", tmp / "sig.bin"
    key.write_bytes(bytes.fromhex("302e020100300506032b657004220420") + seed)
    body.write_bytes(msg)
    out = subprocess.run(["openssl", "pkeyutl", "-sign", "-rawin", "-keyform", "DER",
                          "-inkey", str(key), "-in", str(body), "-out", str(sig)],
                         capture_output=True, text=True, timeout=30)
    key.unlink()
    assert out.returncode == 0, out.stderr
    return sig.read_bytes()


def ed25519_public(seed, tmp):
    key = tmp / "seed.der"
    key.write_bytes(bytes.fromhex("302e020100300506032b657004220420") + seed)
    out = subprocess.run(["openssl", "pkey", "-inform", "DER", "-in", str(key), "-pubout",
                          "-outform", "DER"], capture_output=True, timeout=30)
    key.unlink()
    assert out.returncode == 0, out.stderr
    return out.stdout[-32:]


def read_chain(path):
    lines = path.read_text().split("\n")
    assert lines[0] == "magnetar-audit chain v1", lines[0]
    kv = dict(ln.split(" ", 1) for ln in lines[1:] if ln)
    return int(kv["epoch"]), bytes.fromhex(kv["mac_key"]), bytes.fromhex(kv["sign_seed"])


def forge(data_dir, target_id, new_source):
    """What the holder of audit.chain can do: rewrite record target_id's
    source, then relink every later record, fix the heads' `prev` and
    re-sign them with the seed it holds, re-MAC the open epoch's records
    with its chain key, and rewrite the MAC'ed tip."""
    epoch, k, seed = read_chain(data_dir / "audit.chain")
    db = sqlite3.connect(str(data_dir / "audit.db"))
    db.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in db.execute(f"SELECT {COLS} FROM records ORDER BY id")]
        by_id = {r["id"]: r for r in rows}
        assert by_id[target_id]["kind"] == 0
        by_id[target_id]["source"] = new_source
        prev = by_id[target_id - 1]["hash"]
        for r in rows[target_id - 1:]:
            if r["kind"] == 1:  # a head: its body names the hash before it
                body = bytearray(r["body"])
                body[40:72] = prev
                r["body"] = bytes(body)
                r["sig"] = ed25519_sign(seed, r["body"], data_dir.parent.parent)
            r["hash"] = link(prev, content(r))
            if r["epoch"] == epoch:
                r["mac"] = mac(k, b"rec", r["id"], r["hash"])
            db.execute("UPDATE records SET source = ?, body = ?, sig = ?, hash = ?, mac = ? "
                       "WHERE id = ?", (r["source"], r["body"], r["sig"], r["hash"], r["mac"],
                                        r["id"]))
            prev = r["hash"]
        last = rows[-1]
        db.execute("UPDATE chain_tip SET hash = ?, mac = ? WHERE id = 1",
                   (last["hash"], mac(k, b"tip", last["id"], last["hash"])))
        db.commit()
        return rows
    finally:
        db.close()


def append(audit, first_seq, n):
    now = int(time.time() * 1000)
    events = "".join('events { sequence: %d time_unix_ms: %d action: "forward.test" '
                     'actor: "alice" outcome: "ok" detail: "event %d" }\n' % (s, now, s)
                     for s in range(first_seq, first_seq + n))
    payload = encode("magnetar.AppendRequest", f'source: "fwd"\ninstance: "i1"\n{events}',
                     "proto/audit.proto")
    req = audit.dir / f"append-{first_seq}.bin"
    req.write_bytes(envelope("Append", payload))
    out = subprocess.run(["nngcat", "--req", "--dial", audit.url, "--file", str(req), "--raw",
                          "--recv-timeout", "10"], capture_output=True, timeout=30)
    assert out.stdout, out.stderr
    r = parse_reply(out.stdout)
    assert r.status == "STATUS_OK", r.text


def verify(audit):
    out = audit.magctl("audit", "verify")
    return json.loads(out.stdout)


def sources(audit):
    out = audit.magctl("audit", "export")
    assert out.returncode == 0, out.stdout + out.stderr
    return {json.loads(ln)["id"]: json.loads(ln)["source"] for ln in out.stdout.splitlines()}


@pytest.fixture
def audit(tmp_path):
    require_tools()
    a = Audit(tmp_path).start()
    yield a
    a.stop()


def test_the_holder_of_the_current_epoch_cannot_rewrite_a_sealed_one(audit):
    data = audit.dir / "var" / "audit"
    append(audit, 1, 5)                       # epoch 0
    r = audit.magctl("audit", "rotate-key", "--generate")
    assert r.returncode == 0, r.stdout + r.stderr  # seals epoch 0
    append(audit, 6, 5)                       # epoch 1, open
    v = verify(audit)
    assert v["ok"] and v["sealed_epochs"] == 1 and v["current_epoch"] == 1, v
    audit.stop()

    db = sqlite3.connect(str(data / "audit.db"))
    events = dict(db.execute("SELECT id, epoch FROM records WHERE kind = 0 ORDER BY id"))
    head = db.execute("SELECT id FROM records WHERE kind = 1 AND epoch = 0").fetchone()[0]
    head_body = db.execute("SELECT body FROM records WHERE id = ?", (head,)).fetchone()[0]
    db.close()
    sealed = [i for i, e in events.items() if e == 0]
    open_ = [i for i, e in events.items() if e == 1]
    epoch, _, seed = read_chain(data / "audit.chain")
    assert sealed and open_ and epoch == 1
    # The attacker reads its seed right: epoch 0's head certifies pub(s_1).
    assert ed25519_public(seed, audit.dir) == head_body[72:104]

    # Control: the open epoch is forgeable (documented), and the forger's
    # arithmetic is audit's own: the rewritten log verifies.
    forge(data, open_[0], "uid:4242")
    audit.start()
    v = verify(audit)
    assert v["ok"], v
    assert sources(audit)[open_[0]] == "uid:4242"
    audit.stop()

    # The attack: the same rewrite in the sealed epoch 0.
    forge(data, sealed[1], "uid:4242")
    audit.start()
    v = verify(audit)
    assert not v["ok"], v
    assert (v["reason"], v["first_bad_id"]) == ("bad_signature", head), v
