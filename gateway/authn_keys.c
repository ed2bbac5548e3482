/*
 * authn_keys.c — auth's Ed25519 public keys, fetched over RPC (PublicKeys)
 * so the gateway verifies access tokens itself, with no RPC per request.
 * Loaded at start, then by the refresher (authn.c): every minute, on
 * keys.rotated or a new auth instance, and when a token names a key not
 * fetched yet. Each load also renders the set as GET /.well-known/jwks.json
 * serves it (jwks.c).
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.pb-c.h"
#include "common/err.h"
#include "common/jwt.h"
#include "gateway/authn.h"
#include "gateway/gateway.h"

/* One load at a time (load_mu): two loads could otherwise finish in the
 * reverse order and the older set replace the newer. */
static int authn_load_keys_locked(struct authn *a)
{
	Magnetar__Empty in = MAGNETAR__EMPTY__INIT;
	struct jwt_key fresh[AUTHN_MAX_KEYS];
	struct rpc_result r;
	size_t n = 0;
	int rv;

	rv = rpc_call_sync(a->gw->client[SVC_AUTH], &magnetar__auth__descriptor, "PublicKeys",
	                   &in.base, NULL, 2000, &r);
	if (rv != 0 || r.status != MAGNETAR__STATUS__STATUS_OK) {
		rpc_result_fini(&r);
		return rv != 0 ? rv : ERR_UNAVAIL;
	}
	const Magnetar__PublicKeysReply *pk = (const Magnetar__PublicKeysReply *)r.output;
	for (size_t i = 0; i < pk->n_keys && n < AUTHN_MAX_KEYS; i++) {
		const Magnetar__PublicKey *k = pk->keys[i];
		if (k->key.len != 32 || strlen(k->kid) >= JWT_KID_MAX)
			continue;
		fresh[n].pub = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, k->key.data, 32);
		if (fresh[n].pub == NULL)
			continue;
		strcpy(fresh[n].kid, k->kid);
		n++;
	}
	rpc_result_fini(&r);
	/* Without a rendering (out of memory) the keys still verify here, and
	 * the JWKS answers 503 until the next load. */
	size_t jwks_len = 0;
	char *jwks = jwks_render(fresh, n, &jwks_len);
	pthread_rwlock_wrlock(&a->lock);
	for (size_t i = 0; i < a->nkeys; i++)
		EVP_PKEY_free(a->keys[i].pub);
	memcpy(a->keys, fresh, n * sizeof(fresh[0]));
	a->nkeys = n;
	free(a->jwks);
	a->jwks = jwks;
	a->jwks_len = jwks_len;
	pthread_rwlock_unlock(&a->lock);
	/* A failure, so the refresher tries again at its next tick. */
	return jwks == NULL ? ERR_NOMEM : 0;
}

int authn_load_keys(struct authn *a)
{
	pthread_mutex_lock(&a->load_mu);
	int rv = authn_load_keys_locked(a);
	atomic_fetch_add(&a->load_gen, 1);
	pthread_mutex_unlock(&a->load_mu);
	return rv;
}

static bool authn_kid_unknown(struct authn *a, const char *token)
{
	struct jwt_claims claims;

	pthread_rwlock_rdlock(&a->lock);
	int rv = jwt_verify(a->keys, a->nkeys, token, strlen(token), (int64_t)time(NULL),
	                    AUTHN_LEEWAY_S, &claims);
	pthread_rwlock_unlock(&a->lock);
	OPENSSL_cleanse(&claims, sizeof(claims));
	return rv == ERR_NOTFOUND;
}

/* Blocks this libmicrohttpd thread for one PublicKeys call, only right
 * after a rotation this gateway was not told of yet. The requests that
 * finish meanwhile wait for that one attempt and make none of their own,
 * whether it succeeded or not: a failing auth costs each of them one wait,
 * not one wait per thread in turn. */
void authn_issued(struct gateway *gw, const char *token)
{
	struct authn *a = gw->authn;

	if (!authn_kid_unknown(a, token))
		return;
	uint64_t gen = atomic_load(&a->load_gen);
	pthread_mutex_lock(&a->load_mu);
	if (atomic_load(&a->load_gen) == gen) { /* no attempt since we looked */
		authn_load_keys_locked(a);
		atomic_fetch_add(&a->load_gen, 1);
	}
	pthread_mutex_unlock(&a->load_mu);
}
