/*
 * jwt.h — the one JWT profile Magnetar uses: compact JWS, Ed25519
 * (`alg` exactly "EdDSA"), a `kid` naming the signing key, and a fixed claim
 * set. Written by hand on OpenSSL EVP because Debian 12's libjwt has no
 * EdDSA; kept small on purpose (docs/design.md "JWT").
 *
 * Verification is strict: three base64url parts without padding, header
 * and payload JSON objects with no duplicate keys and nothing after them,
 * alg exactly "EdDSA", a known kid, a valid 64-byte signature, every claim
 * present with its type, and exp/nbf/iat against the caller's clock.
 */
#ifndef MAGNETAR_JWT_H
#define MAGNETAR_JWT_H

#include <stddef.h>
#include <stdint.h>

#define JWT_MAX_TOKEN 4096
/* An Ed25519 signature. */
#define JWT_SIG_LEN 64
#define JWT_KID_MAX 32
#define JWT_CLAIM_MAX 128

typedef struct evp_pkey_st EVP_PKEY;

struct jwt_claims {
	char sub[JWT_CLAIM_MAX];  /* user id */
	char sid[JWT_CLAIM_MAX];  /* session id */
	char role[JWT_CLAIM_MAX]; /* founder, admin, member */
	char jti[JWT_CLAIM_MAX];  /* token id */
	char fip[JWT_CLAIM_MAX];  /* keyed hash of the client IP at login */
	char fua[JWT_CLAIM_MAX];  /* keyed hash of the User-Agent */
	char fhd[JWT_CLAIM_MAX];  /* keyed hash of the fingerprint headers */
	int64_t iat, exp;         /* unix seconds */
	int terminal;             /* 1 when the user holds the terminal grant */
	char kid[JWT_KID_MAX];    /* the key that signed it */
};

/* A verification key. */
struct jwt_key {
	char kid[JWT_KID_MAX];
	EVP_PKEY *pub; /* Ed25519 public key, owned by the caller */
};

/*
 * Verifies `token` (len bytes) against `keys` at time `now` (unix seconds;
 * `leeway` seconds of clock skew allowed for iat and exp). Fills *claims on
 * success. Returns 0, or one of:
 *   ERR_PROTO    malformed: parts, base64url, JSON, types, duplicate keys
 *   ERR_PERM     alg is not exactly EdDSA
 *   ERR_NOTFOUND unknown kid
 *   ERR_INVAL    bad signature
 *   ERR_TIMEOUT  expired, or issued in the future
 */
int jwt_verify(const struct jwt_key *keys, size_t nkeys, const char *token, size_t len, int64_t now,
               int64_t leeway, struct jwt_claims *claims);

/* Strict base64url without padding: for tests and the fuzz target.
 * Returns the decoded length, or -1 on any non-alphabet byte, a length of
 * 1 mod 4, or non-zero unused bits (so each value has one encoding). */
long jwt_b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap);
size_t jwt_b64url_encode(const unsigned char *in, size_t len, char *out);

#endif
