/*
 * jwt_test.c — common/jwt: a signed token verifies and round-trips its
 * claims; every attack docs/api.md and the auth issue name is refused with the
 * right reason: alg none, HS256 keyed with the public key, a swapped or
 * unknown kid, expiry, a token from the future, a tampered payload,
 * duplicate claims, trailing garbage, non-canonical base64url.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/jwt.h"
#include "services/auth/jwtsign.h"

#define NOW 1800000000

static EVP_PKEY *k1, *k2;
static struct jwt_key keys[2];

static EVP_PKEY *new_key(void)
{
	EVP_PKEY *k = NULL;
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
	assert_non_null(c);
	assert_int_equal(EVP_PKEY_keygen_init(c), 1);
	assert_int_equal(EVP_PKEY_keygen(c, &k), 1);
	EVP_PKEY_CTX_free(c);
	return k;
}

static int setup(void **state)
{
	(void)state;
	k1 = new_key();
	k2 = new_key();
	strcpy(keys[0].kid, "k1");
	keys[0].pub = k1; /* a private key object verifies too */
	strcpy(keys[1].kid, "k2");
	keys[1].pub = k2;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	EVP_PKEY_free(k1);
	EVP_PKEY_free(k2);
	return 0;
}

static struct jwt_claims claims(void)
{
	struct jwt_claims c = {0};
	strcpy(c.sub, "u1");
	strcpy(c.sid, "s1");
	strcpy(c.role, "member");
	strcpy(c.jti, "j1");
	strcpy(c.fip, "fip");
	strcpy(c.fua, "fua");
	strcpy(c.fhd, "fhd");
	c.iat = NOW - 10;
	c.exp = NOW + 900;
	return c;
}

static int verify(const char *tok, struct jwt_claims *out)
{
	return jwt_verify(keys, 2, tok, strlen(tok), NOW, 30, out);
}

/* Builds header.payload from raw JSON texts and signs it with `key`
 * (Ed25519), or with HMAC-SHA256 keyed by `hmac_key`, or not at all. */
static char *forge(const char *header, const char *payload, EVP_PKEY *key,
                   const unsigned char *hmac_key, size_t hmac_len)
{
	static char buf[8192];
	unsigned char sig[64];
	size_t n, siglen = sizeof(sig);
	unsigned int hl;

	n = jwt_b64url_encode((const unsigned char *)header, strlen(header), buf);
	buf[n++] = '.';
	n += jwt_b64url_encode((const unsigned char *)payload, strlen(payload), buf + n);
	if (key != NULL) {
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		assert_int_equal(EVP_DigestSignInit(md, NULL, NULL, NULL, key), 1);
		assert_int_equal(EVP_DigestSign(md, sig, &siglen, (unsigned char *)buf, n), 1);
		EVP_MD_CTX_free(md);
	} else if (hmac_key != NULL) {
		HMAC(EVP_sha256(), hmac_key, (int)hmac_len, (unsigned char *)buf, n, sig, &hl);
		siglen = hl;
	} else {
		siglen = 0;
	}
	buf[n++] = '.';
	jwt_b64url_encode(sig, siglen, buf + n);
	return buf;
}

static const char good_payload[] =
    "{\"sub\":\"u1\",\"sid\":\"s1\",\"role\":\"member\",\"jti\":\"j1\",\"fip\":\"a\","
    "\"fua\":\"b\",\"fhd\":\"c\",\"iat\":1799999990,\"exp\":1800000900,\"trm\":false}";

static void test_round_trip(void **state)
{
	struct jwt_claims in = claims(), out;
	char *tok;
	(void)state;
	in.terminal = 1;
	assert_int_equal(jwtsign_token(k1, "k1", &in, &tok), 0);
	assert_int_equal(verify(tok, &out), 0);
	assert_string_equal(out.sub, "u1");
	assert_string_equal(out.sid, "s1");
	assert_string_equal(out.role, "member");
	assert_string_equal(out.fhd, "fhd");
	assert_string_equal(out.kid, "k1");
	assert_int_equal(out.exp, NOW + 900);
	assert_int_equal(out.terminal, 1);
	free(tok);
	/* The hand-forged path agrees with jwt_sign. */
	assert_int_equal(
	    verify(forge("{\"alg\":\"EdDSA\",\"kid\":\"k2\"}", good_payload, k2, NULL, 0), &out),
	    0);
}

static void test_alg_confusion(void **state)
{
	struct jwt_claims out;
	unsigned char pub[32];
	size_t publen = sizeof(pub);
	(void)state;
	/* alg none with no signature, and with a 64-byte one. */
	assert_int_not_equal(
	    verify(forge("{\"alg\":\"none\",\"kid\":\"k1\"}", good_payload, NULL, NULL, 0), &out),
	    0);
	assert_int_equal(
	    verify(forge("{\"alg\":\"none\",\"kid\":\"k1\"}", good_payload, k1, NULL, 0), &out),
	    ERR_PERM);
	/* HS256 keyed with the public key (the classic confusion). */
	assert_int_equal(EVP_PKEY_get_raw_public_key(k1, pub, &publen), 1);
	assert_int_not_equal(
	    verify(forge("{\"alg\":\"HS256\",\"kid\":\"k1\"}", good_payload, NULL, pub, publen),
	           &out),
	    0);
	assert_int_equal(
	    verify(forge("{\"alg\":\"HS512\",\"kid\":\"k1\"}", good_payload, k1, NULL, 0), &out),
	    ERR_PERM);
	assert_int_equal(
	    verify(forge("{\"alg\":\"RS256\",\"kid\":\"k1\"}", good_payload, k1, NULL, 0), &out),
	    ERR_PERM);
	assert_int_equal(
	    verify(forge("{\"alg\":\"eddsa\",\"kid\":\"k1\"}", good_payload, k1, NULL, 0), &out),
	    ERR_PERM);
	assert_int_equal(
	    verify(forge("{\"alg\":\"EdDSA\\u0000\",\"kid\":\"k1\"}", good_payload, k1, NULL, 0),
	           &out),
	    ERR_PROTO);
	/* No alg, or a duplicated alg. */
	assert_int_equal(verify(forge("{\"kid\":\"k1\"}", good_payload, k1, NULL, 0), &out),
	                 ERR_PROTO);
	assert_int_equal(verify(forge("{\"alg\":\"EdDSA\",\"alg\":\"EdDSA\",\"kid\":\"k1\"}",
	                              good_payload, k1, NULL, 0),
	                        &out),
	                 ERR_PROTO);
	/* A critical extension we do not understand. */
	assert_int_equal(verify(forge("{\"alg\":\"EdDSA\",\"kid\":\"k1\",\"crit\":[\"x\"]}",
	                              good_payload, k1, NULL, 0),
	                        &out),
	                 ERR_PROTO);
}

static void test_kid(void **state)
{
	struct jwt_claims out;
	(void)state;
	/* Signed by k1 but claiming k2: the signature does not hold. */
	assert_int_equal(
	    verify(forge("{\"alg\":\"EdDSA\",\"kid\":\"k2\"}", good_payload, k1, NULL, 0), &out),
	    ERR_INVAL);
	assert_int_equal(
	    verify(forge("{\"alg\":\"EdDSA\",\"kid\":\"k9\"}", good_payload, k1, NULL, 0), &out),
	    ERR_NOTFOUND);
	assert_int_equal(
	    verify(forge("{\"alg\":\"EdDSA\",\"kid\":7}", good_payload, k1, NULL, 0), &out),
	    ERR_PROTO);
}

static void test_time(void **state)
{
	struct jwt_claims c = claims(), out;
	char *tok;
	(void)state;
	c.exp = NOW - 31; /* past the 30 s leeway */
	assert_int_equal(jwtsign_token(k1, "k1", &c, &tok), 0);
	assert_int_equal(verify(tok, &out), ERR_TIMEOUT);
	free(tok);
	c = claims();
	c.iat = NOW + 120; /* issued in the future */
	c.exp = NOW + 900;
	assert_int_equal(jwtsign_token(k1, "k1", &c, &tok), 0);
	assert_int_equal(verify(tok, &out), ERR_TIMEOUT);
	free(tok);
	assert_int_equal(
	    verify(forge("{\"alg\":\"EdDSA\",\"kid\":\"k1\"}",
	                 "{\"sub\":\"u1\",\"sid\":\"s1\",\"role\":\"member\",\"jti\":\"j1\","
	                 "\"fip\":\"a\",\"fua\":\"b\",\"fhd\":\"c\",\"iat\":1799999990,"
	                 "\"exp\":1800000900,\"trm\":false,\"nbf\":1800000500}",
	                 k1, NULL, 0),
	           &out),
	    ERR_TIMEOUT);
}

static void test_tampering_and_shape(void **state)
{
	struct jwt_claims c = claims(), out;
	char *tok, bad[JWT_MAX_TOKEN + 8];
	char *dot;
	(void)state;
	assert_int_equal(jwtsign_token(k1, "k1", &c, &tok), 0);
	/* Flip one payload character. */
	strcpy(bad, tok);
	dot = strchr(bad, '.');
	dot[5] = dot[5] == 'A' ? 'B' : 'A';
	assert_int_not_equal(verify(bad, &out), 0);
	/* Trailing garbage in every form. */
	snprintf(bad, sizeof(bad), "%sx", tok);
	assert_int_not_equal(verify(bad, &out), 0);
	snprintf(bad, sizeof(bad), "%s.", tok);
	assert_int_not_equal(verify(bad, &out), 0);
	snprintf(bad, sizeof(bad), "%s.e30", tok);
	assert_int_not_equal(verify(bad, &out), 0);
	snprintf(bad, sizeof(bad), "%s=", tok);
	assert_int_not_equal(verify(bad, &out), 0);
	snprintf(bad, sizeof(bad), " %s", tok);
	assert_int_not_equal(verify(bad, &out), 0);
	/* Non-canonical base64url: change the unused low bits of the last char. */
	strcpy(bad, tok);
	size_t n = strlen(bad);
	bad[n - 1] = bad[n - 1] == 'A' ? 'B' : (char)(bad[n - 1] ^ 1);
	assert_int_not_equal(verify(bad, &out), 0);
	/* Empty, two parts, NUL inside. */
	assert_int_not_equal(verify("", &out), 0);
	assert_int_not_equal(verify("a.b", &out), 0);
	assert_int_not_equal(jwt_verify(keys, 2, "a\0b.c.d", 7, NOW, 30, &out), 0);
	free(tok);
}

static void test_claims_strict(void **state)
{
	struct jwt_claims out;
	(void)state;
	/* A duplicated claim: the second "sub" would otherwise win silently. */
	assert_int_equal(
	    verify(forge("{\"alg\":\"EdDSA\",\"kid\":\"k1\"}",
	                 "{\"sub\":\"u1\",\"sub\":\"admin\",\"sid\":\"s1\",\"role\":\"member\","
	                 "\"jti\":\"j1\",\"fip\":\"a\",\"fua\":\"b\",\"fhd\":\"c\","
	                 "\"iat\":1799999990,\"exp\":1800000900,\"trm\":false}",
	                 k1, NULL, 0),
	           &out),
	    ERR_PROTO);
	/* Wrong type, missing claim, trailing JSON, not an object. */
	assert_int_equal(
	    verify(forge("{\"alg\":\"EdDSA\",\"kid\":\"k1\"}",
	                 "{\"sub\":1,\"sid\":\"s1\",\"role\":\"member\",\"jti\":\"j1\","
	                 "\"fip\":\"a\",\"fua\":\"b\",\"fhd\":\"c\",\"iat\":1799999990,"
	                 "\"exp\":1800000900,\"trm\":false}",
	                 k1, NULL, 0),
	           &out),
	    ERR_PROTO);
	assert_int_equal(
	    verify(forge("{\"alg\":\"EdDSA\",\"kid\":\"k1\"}",
	                 "{\"sub\":\"u1\",\"iat\":1799999990,\"exp\":1800000900}", k1, NULL, 0),
	           &out),
	    ERR_PROTO);
	char trailing[sizeof(good_payload) + 4];
	snprintf(trailing, sizeof(trailing), "%s{}", good_payload);
	assert_int_equal(
	    verify(forge("{\"alg\":\"EdDSA\",\"kid\":\"k1\"}", trailing, k1, NULL, 0), &out),
	    ERR_PROTO);
	assert_int_equal(
	    verify(forge("{\"alg\":\"EdDSA\",\"kid\":\"k1\"}", "[1]", k1, NULL, 0), &out),
	    ERR_PROTO);
	assert_string_equal(out.sub, ""); /* nothing leaks out of a refusal */
}

static void test_b64url(void **state)
{
	unsigned char out[16];
	char enc[32];
	(void)state;
	assert_int_equal(jwt_b64url_encode((const unsigned char *)"ab", 2, enc), 3);
	assert_string_equal(enc, "YWI");
	assert_int_equal(jwt_b64url_decode("YWI", 3, out, sizeof(out)), 2);
	assert_int_equal(jwt_b64url_decode("YWJ", 3, out, sizeof(out)), -1); /* stray bits */
	assert_int_equal(jwt_b64url_decode("YWI=", 4, out, sizeof(out)), -1);
	assert_int_equal(jwt_b64url_decode("Y", 1, out, sizeof(out)), -1);
	assert_int_equal(jwt_b64url_decode("a+b/", 4, out, sizeof(out)), -1);
	assert_int_equal(jwt_b64url_decode("AAAAAAAA", 8, out, 5), -1); /* too long for cap */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_alg_confusion),
	    cmocka_unit_test(test_kid),
	    cmocka_unit_test(test_time),
	    cmocka_unit_test(test_tampering_and_shape),
	    cmocka_unit_test(test_claims_strict),
	    cmocka_unit_test(test_b64url),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
