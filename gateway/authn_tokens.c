/*
 * authn_tokens.c — the access tokens already verified, with their claims:
 * Ed25519 costs tens of µs, so each token is verified once and its claims
 * kept until it expires.
 */
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/fingerprint.h"
#include "common/jwt.h"
#include "common/siphash.h"
#include "gateway/authn.h"
#include "gateway/gateway.h"

/* The token cache's slot of a token: keyed, so no one can aim tokens at
 * one slot to evict another's. Only the token's tail is hashed: it is the
 * Ed25519 signature, different in every token auth signs, and a slot only
 * spreads tokens (a hit compares the whole token). Hashing all ~600 bytes
 * was 5 % of the gateway's /me profile. */
#define AUTHN_TOK_HASHED 48
static struct authn_tok *authn_tok_slot(struct authn *a, const char *token, size_t len)
{
	size_t n = len < AUTHN_TOK_HASHED ? len : AUTHN_TOK_HASHED;
	return &a->tok[siphash24(a->sk, token + len - n, n) % AUTHN_TOK_SLOTS];
}

/* jwt_verify, once per token: a verified token's claims are kept until it
 * expires. Called with a->lock held shared (the keys). */
int authn_verify(struct authn *a, const char *token, size_t len, int64_t now,
                 struct jwt_claims *claims, char tag[33])
{
	struct authn_tok *t = authn_tok_slot(a, token, len);
	char *copy;
	int rv;

	pthread_mutex_lock(&a->tok_mu);
	if (t->token != NULL && t->len == len && CRYPTO_memcmp(t->token, token, len) == 0 &&
	    t->claims.exp > now - AUTHN_LEEWAY_S) {
		*claims = t->claims;
		memcpy(tag, t->tag, 33);
		pthread_mutex_unlock(&a->tok_mu);
		return 0;
	}
	pthread_mutex_unlock(&a->tok_mu);
	if ((rv = jwt_verify(a->keys, a->nkeys, token, len, now, AUTHN_LEEWAY_S, claims)) != 0)
		return rv;
	fingerprint_hash(a->fp_key, "sid", claims->sid, tag);
	if ((copy = malloc(len)) == NULL)
		return 0; /* verified; only not remembered */
	memcpy(copy, token, len);
	pthread_mutex_lock(&a->tok_mu);
	free(t->token);
	memset(t, 0, sizeof(*t));
	t->token = copy;
	t->len = len;
	t->claims = *claims;
	memcpy(t->tag, tag, 33);
	pthread_mutex_unlock(&a->tok_mu);
	return 0;
}
