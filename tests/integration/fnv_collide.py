"""Finds two request contexts whose unkeyed FNV-1a-64 hashes collide, as the
gateway's risk-score cache once keyed them (gateway/authn.c before issue 16,
item 10): the client IP, NUL, the User-Agent, NUL, then the fingerprint
headers, Accept-Language first. Used once to make the pair that
tests/integration/test_attack_risk_cache.py hard-codes (about a minute).

FNV-1a steps s' = (s ^ c) * P. Writing s ^ c = s + e (|e| < 256, set by the
low byte of s and c), two inputs of one length from one state end in states
whose difference is sum(d_i * P^(k-i)) with d_i = e_i - e'_i. LLL finds small
d with that sum 0 mod 2^64; the bytes are then picked, one position at a
time, so that each position's e - e' is d_i (a NUL between User-Agent and
Accept-Language is the same in both: d = 0 there).

    python3 tests/integration/fnv_collide.py [ua_bytes] [al_bytes]
"""
import itertools
import sys
from fractions import Fraction

M = 1 << 64
P = 0x100000001B3
OFF = 1469598103934665603
# Visible ASCII a header value keeps as it is (no quote, backslash, comma, semicolon).
ALLOWED = [c for c in range(0x21, 0x7F) if chr(c) not in '"\\,;']


def fnv(h, data):
    for c in data:
        h = ((h ^ c) * P) % M
    return h


def lll(b, delta=Fraction(3, 4)):
    """Textbook LLL over the rationals: slow, but the lattice is small."""
    b = [list(map(int, r)) for r in b]
    n = len(b)

    def dot(u, v):
        return sum(x * y for x, y in zip(u, v))

    def gram_schmidt():
        bs, mu = [], [[Fraction(0)] * n for _ in range(n)]
        for i in range(n):
            v = [Fraction(x) for x in b[i]]
            for j in range(i):
                mu[i][j] = dot(b[i], bs[j]) / dot(bs[j], bs[j])
                v = [x - mu[i][j] * y for x, y in zip(v, bs[j])]
            bs.append(v)
        return bs, mu

    bs, mu = gram_schmidt()
    k = 1
    while k < n:
        for j in range(k - 1, -1, -1):
            q = round(mu[k][j])
            if q:
                b[k] = [x - q * y for x, y in zip(b[k], b[j])]
                bs, mu = gram_schmidt()
        if dot(bs[k], bs[k]) >= (delta - mu[k][k - 1] ** 2) * dot(bs[k - 1], bs[k - 1]):
            k += 1
        else:
            b[k], b[k - 1] = b[k - 1], b[k]
            bs, mu = gram_schmidt()
            k = max(k - 1, 1)
    return b


def differences(k, fixed):
    """Small d (d_i = 0 at fixed positions) with sum d_i P^(k-i) = 0 mod 2^64."""
    free = [i for i in range(k) if i not in fixed]
    n, weight = len(free), 1 << 20
    rows = []
    for j, i in enumerate(free):
        r = [0] * (n + 1)
        r[j], r[n] = 1, weight * pow(P, k - i, M)
        rows.append(r)
    rows.append([0] * n + [weight * M])
    out = []
    for r in lll(rows):
        if r[n] == 0:
            d = [0] * k
            for j, i in enumerate(free):
                d[i] = r[j]
            out.append(d)
    return out


def realize(s0, d, fixed):
    """Bytes a, b per position with (L ^ a) - L - ((L' ^ b) - L') = d_i."""
    k = len(d)

    def dfs(i, s, t, a_acc, b_acc):
        if i == k:
            return (a_acc, b_acc) if s == t else None
        if i in fixed:
            c = fixed[i]
            return dfs(i + 1, ((s ^ c) * P) % M, ((t ^ c) * P) % M, a_acc + [c], b_acc + [c])
        lo, lo2, tries = s & 0xFF, t & 0xFF, 0
        for a in ALLOWED:
            for b in ALLOWED:
                if (lo ^ a) - lo - ((lo2 ^ b) - lo2) == d[i]:
                    r = dfs(i + 1, ((s ^ a) * P) % M, ((t ^ b) * P) % M, a_acc + [a],
                            b_acc + [b])
                    if r:
                        return r
                    tries += 1
                    if tries > 3:
                        return None
        return None

    return dfs(0, s0, s0, [], [])


def main():
    prefix = b"127.0.0.1\0magnetar-test/"
    ua_len = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    al_len = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    k, fixed = ua_len + 1 + al_len, {ua_len: 0}
    s0 = fnv(OFF, prefix)
    vecs = sorted(differences(k, fixed), key=lambda d: max(abs(x) for x in d))
    cands = list(vecs)
    for a, b in itertools.combinations(vecs[:8], 2):
        cands += [[x + y for x, y in zip(a, b)], [x - y for x, y in zip(a, b)]]
    for d in cands:
        if not any(d) or max(abs(x) for x in d) > 90:
            continue
        for sign in (1, -1):
            r = realize(s0, [sign * x for x in d], fixed)
            if r and r[0] != r[1] and fnv(s0, bytes(r[0])) == fnv(s0, bytes(r[1])):
                a, b = bytes(r[0]), bytes(r[1])
                print("owner: UA magnetar-test/%r AL %r" % (a[:ua_len], a[ua_len + 1:]))
                print("thief: UA magnetar-test/%r AL %r" % (b[:ua_len], b[ua_len + 1:]))
                return 0
    print("no pair found: try other lengths")
    return 1


if __name__ == "__main__":
    sys.exit(main())
