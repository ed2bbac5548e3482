/*
 * breach_check.c — local SHA-1, prefix, and the constant-time suffix search
 * for Pwned Passwords range replies (see breach_check.h).
 */
#include "common/breach_check.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>

#include "common/err.h"

int breach_check_init(struct breach_check *bc, const void *password, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	unsigned int mdlen = 0;

	memset(bc, 0, sizeof(*bc));
	/* EVP, not SHA1(): the one-shot is deprecated in OpenSSL 3 */
	if (EVP_Digest(password, len, bc->hash, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20) {
		OPENSSL_cleanse(bc->hash, sizeof(bc->hash));
		return ERR_INTERNAL;
	}
	bc->prefix[0] = hex[bc->hash[0] >> 4];
	bc->prefix[1] = hex[bc->hash[0] & 0xf];
	bc->prefix[2] = hex[bc->hash[1] >> 4];
	bc->prefix[3] = hex[bc->hash[1] & 0xf];
	bc->prefix[4] = hex[bc->hash[2] >> 4];
	bc->prefix[5] = '\0';
	return 0;
}

int breach_check_count(const struct breach_check *bc, const uint8_t *suffixes, size_t suffixes_len,
                       const uint32_t *counts, size_t n, uint64_t *count)
{
	uint8_t key[BREACH_CHECK_SUFFIX_LEN];
	uint64_t total = 0;

	*count = 0;
	if (n > SIZE_MAX / BREACH_CHECK_SUFFIX_LEN || suffixes_len != n * BREACH_CHECK_SUFFIX_LEN ||
	    (n > 0 && (suffixes == NULL || counts == NULL)))
		return ERR_INVAL;
	memcpy(key, bc->hash + 2, sizeof(key));
	key[0] &= 0x0f;
	for (size_t i = 0; i < n; i++) {
		const uint8_t *s = suffixes + i * BREACH_CHECK_SUFFIX_LEN;
		unsigned diff = 0;
		uint64_t mask;
		for (size_t k = 0; k < BREACH_CHECK_SUFFIX_LEN; k++)
			diff |= (unsigned)(s[k] ^ key[k]);
		/* diff in 0..255: (diff - 1) >> 8 is all ones only for diff == 0 */
		mask = (uint64_t)0 - (((diff - 1u) >> 8) & 1u);
		total += (uint64_t)counts[i] & mask;
	}
	OPENSSL_cleanse(key, sizeof(key));
	*count = total;
	return 0;
}

int breach_check_reply(const struct breach_check *bc, const Magnetar__RangeReply *r,
                       uint64_t *count)
{
	return breach_check_count(bc, r->suffixes.data, r->suffixes.len, r->counts, r->n_counts,
	                          count);
}

void breach_check_fini(struct breach_check *bc)
{
	OPENSSL_cleanse(bc, sizeof(*bc));
}
