/*
 * jwt_fuzz.c — the access-token parser every authenticated request runs:
 * common/jwt.c's jwt_verify on arbitrary bytes, against two real Ed25519
 * keys (kids "k1", "k2"), plus the strict base64url decoder on its own.
 */
#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/jwt.h"

static struct jwt_key keys[2];

static EVP_PKEY *fuzz_key(unsigned char seed)
{
	unsigned char raw[32];
	memset(raw, seed, sizeof(raw));
	return EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, raw, sizeof(raw));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct jwt_claims c;
	unsigned char out[JWT_MAX_TOKEN];

	if (keys[0].pub == NULL) {
		strcpy(keys[0].kid, "k1");
		keys[0].pub = fuzz_key(1);
		strcpy(keys[1].kid, "k2");
		keys[1].pub = fuzz_key(2);
	}
	if (jwt_verify(keys, 2, (const char *)data, size, 1800000000, 30, &c) == 0 &&
	    (c.sub[0] == '\0' || c.exp <= c.iat - 1))
		__builtin_trap(); /* a verified token always has its claims */
	if (jwt_b64url_decode((const char *)data, size, out, sizeof(out)) > (long)sizeof(out))
		__builtin_trap();
	return 0;
}
