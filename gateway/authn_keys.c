/*
 * authn_keys.c — auth's Ed25519 public keys, fetched over RPC (PublicKeys)
 * so the gateway verifies access tokens itself, with no RPC per request.
 * Loaded at start, then by the refresher (authn.c): every minute, on
 * keys.rotated or a new auth instance, and when a token names a key not
 * fetched yet. Each load also renders the set as GET /.well-known/jwks.json
 * serves it (jwks.c).
 */
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.pb-c.h"
#include "common/err.h"
#include "common/jwt.h"
#include "gateway/authn.h"
#include "gateway/gateway.h"

int authn_load_keys(struct authn *a)
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
	size_t jwks_len = 0;
	char *jwks = jwks_render(fresh, n, &jwks_len);
	if (jwks == NULL) {
		for (size_t i = 0; i < n; i++)
			EVP_PKEY_free(fresh[i].pub);
		return ERR_NOMEM;
	}
	pthread_rwlock_wrlock(&a->lock);
	for (size_t i = 0; i < a->nkeys; i++)
		EVP_PKEY_free(a->keys[i].pub);
	memcpy(a->keys, fresh, n * sizeof(fresh[0]));
	a->nkeys = n;
	free(a->jwks);
	a->jwks = jwks;
	a->jwks_len = jwks_len;
	pthread_rwlock_unlock(&a->lock);
	return 0;
}

void authn_issued(struct gateway *gw, const char *token)
{
	struct authn *a = gw->authn;
	struct jwt_claims claims;

	pthread_rwlock_rdlock(&a->lock);
	int rv = jwt_verify(a->keys, a->nkeys, token, strlen(token), (int64_t)time(NULL),
	                    AUTHN_LEEWAY_S, &claims);
	pthread_rwlock_unlock(&a->lock);
	if (rv == ERR_NOTFOUND)
		authn_load_keys(a);
}
