/*
 * jwtsign.c — minting EdDSA access tokens (jwtsign.h): header and claims as
 * compact JSON with sorted keys, base64url, signed with Ed25519 over
 * "header.payload". The matching verifier is common/jwt.c.
 */
#include "services/auth/jwtsign.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

/* Encodes a JSON object as base64url into out (cap bytes). */
static int jwtsign_part(json_t *obj, char *out, size_t cap, size_t *len)
{
	char *s = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
	size_t n;
	if (s == NULL)
		return ERR_NOMEM;
	n = strlen(s);
	if ((n + 2) / 3 * 4 + 1 > cap) {
		free(s);
		return ERR_INVAL;
	}
	*len = jwt_b64url_encode((const unsigned char *)s, n, out);
	free(s);
	return 0;
}

int jwtsign_token(EVP_PKEY *priv, const char *kid, const struct jwt_claims *c, char **out)
{
	char buf[JWT_MAX_TOKEN];
	unsigned char sig[JWT_SIG_LEN];
	size_t hlen, plen, siglen = sizeof(sig);
	json_t *header = NULL, *payload = NULL;
	EVP_MD_CTX *md = NULL;
	int rv = ERR_NOMEM;

	if (strlen(kid) == 0 || strlen(kid) >= JWT_KID_MAX)
		return ERR_INVAL;
	header = json_pack("{s:s, s:s, s:s}", "alg", "EdDSA", "kid", kid, "typ", "JWT");
	payload = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:b}", "sub", c->sub,
	                    "sid", c->sid, "role", c->role, "jti", c->jti, "fip", c->fip, "fua",
	                    c->fua, "fhd", c->fhd, "iat", (json_int_t)c->iat, "exp",
	                    (json_int_t)c->exp, "trm", c->terminal != 0);
	if (header == NULL || payload == NULL)
		goto out;
	if ((rv = jwtsign_part(header, buf, sizeof(buf), &hlen)) != 0)
		goto out;
	buf[hlen] = '.';
	if ((rv = jwtsign_part(payload, buf + hlen + 1, sizeof(buf) - hlen - 1, &plen)) != 0)
		goto out;
	rv = ERR_INTERNAL;
	if ((md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestSignInit(md, NULL, NULL, NULL, priv) != 1 ||
	    EVP_DigestSign(md, sig, &siglen, (unsigned char *)buf, hlen + 1 + plen) != 1 ||
	    siglen != JWT_SIG_LEN)
		goto out;
	if (hlen + 1 + plen + 1 + 87 + 1 > sizeof(buf)) {
		rv = ERR_INVAL;
		goto out;
	}
	buf[hlen + 1 + plen] = '.';
	jwt_b64url_encode(sig, siglen, buf + hlen + 1 + plen + 1);
	rv = (*out = strdup(buf)) != NULL ? 0 : ERR_NOMEM;
out:
	EVP_MD_CTX_free(md);
	json_decref(header);
	json_decref(payload);
	return rv;
}
