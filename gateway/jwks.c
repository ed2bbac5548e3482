/*
 * jwks.c — GET /.well-known/jwks.json: auth's public keys as a JSON Web Key
 * Set (RFC 7517; Ed25519 as an OKP key, RFC 8037), so an app's own services
 * verify a Magnetar access token with any JOSE library and no call to us.
 *
 * The set is the gateway's own (authn_keys.c): every key auth still
 * verifies with, the signing one and the ones retired less than an access
 * token's lifetime ago. It is rendered once per key load and served as a
 * copy; a client may keep it JWKS_CACHE_CONTROL long and must fetch it
 * again when a token names a kid it does not hold (docs/apps.md).
 */
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/jwt.h"
#include "gateway/authn.h"
#include "gateway/gateway.h"

/* An Ed25519 public key, and its base64url text (43 characters). */
#define JWKS_RAW_LEN 32
#define JWKS_X_LEN 44

static json_t *jwks_key(const struct jwt_key *k)
{
	unsigned char raw[JWKS_RAW_LEN];
	char x[JWKS_X_LEN];
	size_t len = sizeof(raw);

	if (EVP_PKEY_get_raw_public_key(k->pub, raw, &len) != 1 || len != sizeof(raw))
		return NULL;
	jwt_b64url_encode(raw, len, x);
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "OKP", "crv", "Ed25519", "kid",
	                 k->kid, "use", "sig", "alg", "EdDSA", "x", x);
}

char *jwks_render(const struct jwt_key *keys, size_t n, size_t *len)
{
	json_t *set = json_array(), *root;
	char *text;

	for (size_t i = 0; set != NULL && i < n; i++) {
		json_t *k = jwks_key(&keys[i]);
		if (k == NULL || json_array_append_new(set, k) != 0) {
			json_decref(set);
			set = NULL;
		}
	}
	if ((root = json_pack("{s:o}", "keys", set)) == NULL)
		return NULL;
	text = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	if (text != NULL)
		*len = strlen(text);
	return text;
}

int jwks_serve(struct http_request *req)
{
	struct authn *a = req->gw->authn;
	struct MHD_Response *resp;
	char *copy = NULL;
	size_t len = 0;

	/* A copy of its own: the set may be replaced before the answer is sent. */
	pthread_rwlock_rdlock(&a->lock);
	bool loaded = a->jwks != NULL && a->nkeys > 0;
	if (loaded && (copy = malloc(a->jwks_len)) != NULL)
		memcpy(copy, a->jwks, len = a->jwks_len);
	pthread_rwlock_unlock(&a->lock);
	/* Never an empty set: a client would keep it and refuse every token. */
	if (!loaded)
		return respond_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "service_unavailable",
		                     "The signing keys are not loaded yet; try again shortly.");
	if (copy == NULL)
		return ERR_NOMEM;
	resp = respond_new(req, copy, len, MHD_RESPMEM_MUST_FREE, true);
	if (resp != NULL && MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL,
	                                            JWKS_CACHE_CONTROL) != MHD_YES) {
		MHD_destroy_response(resp);
		resp = NULL;
	}
	return http_queue(req, MHD_HTTP_OK, resp);
}
