/*
 * jwt.c — verifying EdDSA JWTs on OpenSSL EVP (jwt.h). Parsing is done in
 * the order that rejects cheapest first: shape, base64url, header (alg,
 * kid), the signature, and only then the payload's claims, so an unsigned
 * payload is never interpreted. Signing is auth's alone
 * (services/auth/jwtsign.c): no other program links code that mints.
 */
#include "common/jwt.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

#define JWT_JSON_MAX 2048

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

size_t jwt_b64url_encode(const unsigned char *in, size_t len, char *out)
{
	size_t o = 0, i = 0;
	for (; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = b64url_alphabet[v >> 18];
		out[o++] = b64url_alphabet[(v >> 12) & 63];
		out[o++] = b64url_alphabet[(v >> 6) & 63];
		out[o++] = b64url_alphabet[v & 63];
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		out[o++] = b64url_alphabet[v >> 18];
		out[o++] = b64url_alphabet[(v >> 12) & 63];
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = b64url_alphabet[v >> 18];
		out[o++] = b64url_alphabet[(v >> 12) & 63];
		out[o++] = b64url_alphabet[(v >> 6) & 63];
	}
	out[o] = '\0';
	return o;
}

long jwt_b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
	size_t o = 0, i = 0;
	uint32_t acc = 0;
	int bits = 0;

	if (len % 4 == 1)
		return -1;
	for (; i < len; i++) {
		int v = b64url_value((unsigned char)in[i]);
		if (v < 0)
			return -1;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o >= cap)
				return -1;
			out[o++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	/* Left-over bits must be zero: one value, one encoding. */
	if (acc != 0)
		return -1;
	return (long)o;
}

/* Decodes one base64url part holding a JSON object, rejecting duplicate
 * keys and anything after the object. */
static json_t *jwt_json_part(const char *p, size_t len)
{
	unsigned char raw[JWT_JSON_MAX];
	long n = jwt_b64url_decode(p, len, raw, sizeof(raw));
	json_t *obj;
	if (n <= 0)
		return NULL;
	obj = json_loadb((const char *)raw, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
	if (obj != NULL && !json_is_object(obj)) {
		json_decref(obj);
		return NULL;
	}
	return obj;
}

static int jwt_copy_string(json_t *obj, const char *key, char *out, size_t cap)
{
	json_t *v = json_object_get(obj, key);
	const char *s;
	size_t n;
	if (!json_is_string(v))
		return ERR_PROTO;
	s = json_string_value(v);
	n = json_string_length(v);
	if (n == 0 || n >= cap || memchr(s, '\0', n) != NULL)
		return ERR_PROTO;
	memcpy(out, s, n + 1);
	return 0;
}

static int jwt_claims_from(json_t *p, struct jwt_claims *c)
{
	json_t *iat = json_object_get(p, "iat"), *exp = json_object_get(p, "exp");
	json_t *trm = json_object_get(p, "trm");
	if (jwt_copy_string(p, "sub", c->sub, sizeof(c->sub)) != 0 ||
	    jwt_copy_string(p, "sid", c->sid, sizeof(c->sid)) != 0 ||
	    jwt_copy_string(p, "role", c->role, sizeof(c->role)) != 0 ||
	    jwt_copy_string(p, "jti", c->jti, sizeof(c->jti)) != 0 ||
	    jwt_copy_string(p, "fip", c->fip, sizeof(c->fip)) != 0 ||
	    jwt_copy_string(p, "fua", c->fua, sizeof(c->fua)) != 0 ||
	    jwt_copy_string(p, "fhd", c->fhd, sizeof(c->fhd)) != 0 || !json_is_integer(iat) ||
	    !json_is_integer(exp) || !json_is_boolean(trm))
		return ERR_PROTO;
	c->iat = json_integer_value(iat);
	c->exp = json_integer_value(exp);
	c->terminal = json_is_true(trm);
	return 0;
}

int jwt_verify(const struct jwt_key *keys, size_t nkeys, const char *token, size_t len, int64_t now,
               int64_t leeway, struct jwt_claims *claims)
{
	const char *dot1, *dot2;
	unsigned char sig[JWT_SIG_LEN + 3];
	json_t *header = NULL, *payload = NULL, *alg;
	const struct jwt_key *key = NULL;
	char kid[JWT_KID_MAX];
	EVP_MD_CTX *md = NULL;
	long siglen;
	int rv = ERR_PROTO;

	memset(claims, 0, sizeof(*claims));
	if (len == 0 || len > JWT_MAX_TOKEN || memchr(token, '\0', len) != NULL)
		return ERR_PROTO;
	if ((dot1 = memchr(token, '.', len)) == NULL)
		return ERR_PROTO;
	if ((dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token))) == NULL)
		return ERR_PROTO;
	/* A third dot is invalid base64url in the signature part: refused there. */
	siglen = jwt_b64url_decode(dot2 + 1, len - (size_t)(dot2 + 1 - token), sig, sizeof(sig));
	if (siglen != JWT_SIG_LEN)
		return ERR_PROTO;
	if ((header = jwt_json_part(token, (size_t)(dot1 - token))) == NULL)
		goto out;
	alg = json_object_get(header, "alg");
	if (!json_is_string(alg)) {
		rv = ERR_PROTO;
		goto out;
	}
	/* Exactly "EdDSA": not "none", not HS256 keyed with our public key. */
	if (strcmp(json_string_value(alg), "EdDSA") != 0 || json_string_length(alg) != 5) {
		rv = ERR_PERM;
		goto out;
	}
	if (json_object_get(header, "crit") != NULL ||
	    jwt_copy_string(header, "kid", kid, sizeof(kid)) != 0) {
		rv = ERR_PROTO;
		goto out;
	}
	for (size_t i = 0; i < nkeys; i++)
		if (strcmp(keys[i].kid, kid) == 0)
			key = &keys[i];
	if (key == NULL) {
		rv = ERR_NOTFOUND;
		goto out;
	}
	rv = ERR_INVAL;
	if ((md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestVerifyInit(md, NULL, NULL, NULL, key->pub) != 1 ||
	    EVP_DigestVerify(md, sig, JWT_SIG_LEN, (const unsigned char *)token,
	                     (size_t)(dot2 - token)) != 1)
		goto out;
	rv = ERR_PROTO;
	if ((payload = jwt_json_part(dot1 + 1, (size_t)(dot2 - dot1 - 1))) == NULL ||
	    jwt_claims_from(payload, claims) != 0)
		goto out;
	snprintf(claims->kid, sizeof(claims->kid), "%s", kid);
	rv = ERR_TIMEOUT;
	if (claims->exp <= now - leeway || claims->iat > now + leeway || claims->iat > claims->exp)
		goto out;
	json_t *nbf = json_object_get(payload, "nbf");
	if (nbf != NULL && (!json_is_integer(nbf) || json_integer_value(nbf) > now + leeway))
		goto out;
	rv = 0;
out:
	if (rv != 0)
		memset(claims, 0, sizeof(*claims));
	EVP_MD_CTX_free(md);
	json_decref(header);
	json_decref(payload);
	return rv;
}
