"""HTTPS on the gateway (MAGNETAR_TLS_CERT/MAGNETAR_TLS_KEY, gateway/tls.c):
served with the configured certificate, TLS 1.2 and 1.3 only, HSTS on every
answer, no plaintext on the TLS port, and the PEM key not left in the
gateway's memory after libmicrohttpd has loaded it."""
import re
import socket
import subprocess
import time

import pytest
import requests

from conftest import BIN, Stack, free_port, wait_until


def make_cert(d):
    key, cert = d / "tls.key", d / "tls.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    key.chmod(0o600)  # the gateway reads it as root, before it drops
    return cert, key


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = make_cert(d)
    redirect_port = free_port()
    s = Stack(d, {"MAGNETAR_TLS_CERT": str(cert), "MAGNETAR_TLS_KEY": str(key),
                  "MAGNETAR_HTTP_REDIRECT_ADDR": f"127.0.0.1:{redirect_port}"}).start()
    s.cert, s.key, s.redirect_port = cert, key, redirect_port
    yield s
    assert s.stop() == 0, s.logs()


def s_client(port, *flags):
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *flags],
                          input="", capture_output=True, text=True, timeout=20)


def test_https_with_the_configured_certificate_and_hsts(tls_stack):
    for path in ("/healthz", "/readyz", "/no/such/route"):
        r = requests.get(tls_stack.url + path, verify=str(tls_stack.cert), timeout=5)
        assert r.status_code in (200, 404), (path, r.status_code)
        assert r.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "listening on https://" in tls_stack.full_log(), tls_stack.logs()


def test_tls_1_2_and_1_3_only(tls_stack):
    port = tls_stack.port
    for version in ("-tls1_3", "-tls1_2"):
        out = s_client(port, version, "-CAfile", str(tls_stack.cert))
        assert "Verify return code: 0 (ok)" in out.stdout, (version, out.stdout[-800:])
        assert "Cipher is (NONE)" not in out.stdout, (version, out.stdout[-800:])
    # TLS 1.1 and 1.0 are refused. The client is made willing (security
    # level 0), and shown willing against a reference server that accepts
    # 1.1, so the refusal is the gateway's.
    old = ["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]
    ref_port = free_port()
    ref = subprocess.Popen(["openssl", "s_server", "-accept", str(ref_port), "-www",
                            "-cert", str(tls_stack.cert), "-key", str(tls_stack.key), *old],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: socket.create_connection(("127.0.0.1", ref_port), 1), 5)
        accepted = s_client(ref_port, *old)
        assert re.search(r"New, TLSv1(\.0)?, Cipher is ECDHE", accepted.stdout), \
            accepted.stdout[-800:]
    finally:
        ref.kill()
        ref.wait()
    for version in ("-tls1_1", "-tls1"):
        out = s_client(port, version, "-cipher", "DEFAULT:@SECLEVEL=0")
        assert "Cipher is (NONE)" in out.stdout, out.stdout[-800:]


def raw_http(port, request):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(request)
        data = b""
        while chunk := c.recv(4096):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
    return int(head[0].split()[1]), headers


def test_http_redirect_listener_sends_everything_to_https(tls_stack):
    port, tls = tls_stack.redirect_port, tls_stack.port
    base = f"http://127.0.0.1:{port}"
    r = requests.get(base + "/api/v1/auth/me?ticket=SECRET", allow_redirects=False, timeout=5)
    assert r.status_code == 301
    # Same host, our TLS port, the path; the query (maybe a secret) is dropped.
    assert r.headers["Location"] == f"https://127.0.0.1:{tls}/api/v1/auth/me"
    # A POST keeps its method: 308.
    r = requests.post(base + "/api/v1/auth/login", json={}, allow_redirects=False, timeout=5)
    assert r.status_code == 308, r.status_code
    assert r.headers["Location"] == f"https://127.0.0.1:{tls}/api/v1/auth/login"
    # Followed, it lands on the gateway over TLS.
    r = requests.get(base + "/healthz", verify=str(tls_stack.cert), timeout=5)
    assert r.status_code == 200 and r.url == f"https://127.0.0.1:{tls}/healthz"
    # The host is the client's, its port replaced; a bracketed IPv6 literal too.
    code, h = raw_http(port, b"GET /x HTTP/1.1\r\nHost: app.example.com:80\r\n\r\n")
    assert (code, h["location"]) == (301, f"https://app.example.com:{tls}/x")
    code, h = raw_http(port, b"GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n")
    assert (code, h["location"]) == (301, f"https://[::1]:{tls}/")
    # Bytes that would break out of the Location are percent-encoded.
    code, h = raw_http(port, b"GET /a%0d%0aSet-Cookie:%20x=1/%3Cb%3E HTTP/1.1\r\nHost: h\r\n\r\n")
    assert code == 301 and "set-cookie" not in h, h
    assert h["location"] == f"https://h:{tls}/a%0D%0ASet-Cookie:%20x=1/%3Cb%3E", h
    # A Host that is not a host name is refused, not echoed.
    for bad in (b"evil.example/path", b"user@evil.example", b"a b", b"", b"[zz]", b"h:99999x"):
        code, h = raw_http(port, b"GET / HTTP/1.1\r\nHost: " + bad + b"\r\n\r\n")
        assert code == 400 and "location" not in h, (bad, code, h)


def test_redirect_listener_without_tls_is_refused(tmp_path):
    env = Stack(tmp_path, {"MAGNETAR_HTTP_REDIRECT_ADDR": f"127.0.0.1:{free_port()}"}).env
    p = subprocess.run([str(BIN / "magnetar-gateway"), "-n"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=20)
    assert p.returncode != 0
    assert "MAGNETAR_HTTP_REDIRECT_ADDR redirects to https" in p.stdout + p.stderr


def test_aead_ciphers_with_forward_secrecy_only(tls_stack):
    port = tls_stack.port
    for cipher in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                   "ECDHE-ECDSA-CHACHA20-POLY1305"):
        out = s_client(port, "-tls1_2", "-cipher", cipher)
        assert f"Cipher is {cipher}" in out.stdout, (cipher, out.stdout[-600:])
    # CBC with HMAC (the client offers nothing else) is refused in 1.2.
    for cipher in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES128-SHA256",
                   "ECDHE-ECDSA-AES256-SHA384"):
        out = s_client(port, "-tls1_2", "-cipher", cipher)
        assert "Cipher is (NONE)" in out.stdout, (cipher, out.stdout[-600:])
    out = s_client(port, "-tls1_3")
    assert re.search(r"Cipher is TLS_(AES_\d+_GCM_SHA\d+|CHACHA20_POLY1305_SHA256)", out.stdout), \
        out.stdout[-600:]


def test_no_plaintext_http_on_the_tls_port(tls_stack):
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{tls_stack.port}/healthz", timeout=5)


@pytest.mark.skipif("sanitize" in str(BIN), reason="ASan reserves terabytes of rw memory: "
                    "the scan is for the release build")
def test_the_pem_key_is_not_left_in_the_gateways_memory(tls_stack):
    # The base64 body of the key file as our buffer held it (lines and all).
    body = "\n".join(l for l in tls_stack.key.read_text().splitlines() if "-----" not in l)
    needle = body.encode()
    assert len(needle) >= 80
    pid = tls_stack.service_pid("gateway")
    requests.get(tls_stack.url + "/healthz", verify=str(tls_stack.cert), timeout=5)
    found, scanned = False, 0
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            addr, perms = line.split()[:2]
            if not perms.startswith("rw"):
                continue
            lo, hi = (int(x, 16) for x in addr.split("-"))
            if hi - lo > 1 << 30:
                continue  # a reservation, not a heap
            try:
                mem.seek(lo)
                chunk = mem.read(hi - lo)
            except (OSError, ValueError, OverflowError):
                continue
            scanned += len(chunk)
            if needle in chunk:
                found = True
                break
    assert scanned > 1 << 20
    assert not found, "the PEM private key is still in the gateway's memory"


def test_a_missing_key_file_is_a_clear_refusal(tmp_path):
    cert, key = make_cert(tmp_path)
    env = Stack(tmp_path, {"MAGNETAR_TLS_CERT": str(cert),
                           "MAGNETAR_TLS_KEY": str(tmp_path / "missing.key")}).env
    p = subprocess.run([str(BIN / "magnetar-gateway")], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=20)
    assert p.returncode != 0
    assert "missing.key" in p.stderr + p.stdout
    assert "BEGIN" not in p.stderr + p.stdout
