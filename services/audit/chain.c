/*
 * chain.c — the tamper-evident chain's secrets and primitives: the
 * audit.chain file (the open epoch's chain key and signing seed, evolved
 * one-way at every seal and overwritten on disk), Ed25519 signing of epoch
 * heads, the SHA-256 link and the HMAC over each record (docs/audit.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/ids.h"
#include "services/audit/audit.h"

#define CHAIN_MAGIC "magnetar-audit chain v1"

static int chain_unhex(const char *hex, unsigned char *out, size_t n)
{
	if (strlen(hex) != 2 * n)
		return ERR_INVAL;
	for (size_t i = 0; i < n; i++) {
		unsigned v = 0;
		for (int j = 0; j < 2; j++) {
			char c = hex[2 * i + (size_t)j];
			v <<= 4;
			if (c >= '0' && c <= '9')
				v |= (unsigned)(c - '0');
			else if (c >= 'a' && c <= 'f')
				v |= (unsigned)(c - 'a' + 10);
			else
				return ERR_INVAL;
		}
		out[i] = (unsigned char)v;
	}
	return 0;
}

int chain_file_read(const char *path, struct chain_secrets *s)
{
	char buf[512], mac[80], seed[80];
	unsigned long long epoch;
	ssize_t n;
	int fd, rv = ERR_INVAL;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return errno == ENOENT ? ERR_NOTFOUND : ERR_IO;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return ERR_IO;
	buf[n] = '\0';
	if (sscanf(buf, CHAIN_MAGIC "\nepoch %llu\nmac_key %70s\nsign_seed %70s\n", &epoch, mac,
	           seed) == 3 &&
	    chain_unhex(mac, s->mac_key, AUDIT_KEY) == 0 &&
	    chain_unhex(seed, s->sign_seed, AUDIT_KEY) == 0) {
		s->epoch = epoch;
		rv = 0;
	}
	OPENSSL_cleanse(buf, sizeof(buf));
	OPENSSL_cleanse(mac, sizeof(mac));
	OPENSSL_cleanse(seed, sizeof(seed));
	return rv;
}

static int chain_fsync_dir(const char *path)
{
	char copy[600];
	int fd, rv;

	snprintf(copy, sizeof(copy), "%s", path);
	if ((fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return ERR_IO;
	rv = fsync(fd) == 0 ? 0 : ERR_IO;
	close(fd);
	return rv;
}

int chain_file_write(const char *path, const struct chain_secrets *s)
{
	char buf[300], mac[2 * AUDIT_KEY + 1], seed[2 * AUDIT_KEY + 1], tmp[600];
	int fd, old, len, rv = ERR_IO;
	bool ok;

	ids_hex(mac, s->mac_key, AUDIT_KEY);
	ids_hex(seed, s->sign_seed, AUDIT_KEY);
	len = snprintf(buf, sizeof(buf), CHAIN_MAGIC "\nepoch %llu\nmac_key %s\nsign_seed %s\n",
	               (unsigned long long)s->epoch, mac, seed);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	/* Keep the old inode open: after the rename its bytes are still on
	 * disk, and we overwrite them in place (forward security). */
	old = open(path, O_WRONLY | O_CLOEXEC);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
		goto out;
	ok = write(fd, buf, (size_t)len) == len && fsync(fd) == 0;
	if (close(fd) != 0 || !ok || rename(tmp, path) != 0 || chain_fsync_dir(path) != 0) {
		unlink(tmp);
		goto out;
	}
	if (old >= 0) {
		struct stat st;
		static const unsigned char zeros[512];
		if (fstat(old, &st) == 0 && st.st_size > 0 && (size_t)st.st_size <= sizeof(zeros) &&
		    pwrite(old, zeros, (size_t)st.st_size, 0) == st.st_size)
			fsync(old);
	}
	rv = 0;
out:
	if (old >= 0)
		close(old);
	OPENSSL_cleanse(buf, sizeof(buf));
	OPENSSL_cleanse(mac, sizeof(mac));
	OPENSSL_cleanse(seed, sizeof(seed));
	return rv;
}

int chain_genesis_secrets(struct chain_secrets *s)
{
	s->epoch = 0;
	if (ids_random(s->mac_key, AUDIT_KEY) != 0 || ids_random(s->sign_seed, AUDIT_KEY) != 0)
		return ERR_IO;
	return 0;
}

static int chain_step(const unsigned char in[AUDIT_KEY], const char *label,
                      unsigned char out[AUDIT_KEY])
{
	unsigned int len = 0;
	return HMAC(EVP_sha256(), in, AUDIT_KEY, (const unsigned char *)label, strlen(label), out,
	            &len) != NULL &&
	               len == AUDIT_KEY
	           ? 0
	           : ERR_INTERNAL;
}

int chain_evolve(const struct chain_secrets *cur, struct chain_secrets *next)
{
	struct chain_secrets n;
	n.epoch = cur->epoch + 1;
	if (chain_step(cur->mac_key, "magnetar-audit next chain key", n.mac_key) != 0 ||
	    chain_step(cur->sign_seed, "magnetar-audit next signing seed", n.sign_seed) != 0) {
		OPENSSL_cleanse(&n, sizeof(n));
		return ERR_INTERNAL;
	}
	*next = n;
	OPENSSL_cleanse(&n, sizeof(n));
	return 0;
}

/* The epoch's Ed25519 private key is its signing seed (RFC 8032). */
static EVP_PKEY *chain_pkey(const unsigned char seed[AUDIT_KEY])
{
	return EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, AUDIT_KEY);
}

int chain_public_key(const unsigned char seed[AUDIT_KEY], unsigned char pub[AUDIT_PUB])
{
	EVP_PKEY *k = chain_pkey(seed);
	size_t len = AUDIT_PUB;
	int rv = k != NULL && EVP_PKEY_get_raw_public_key(k, pub, &len) == 1 && len == AUDIT_PUB
	             ? 0
	             : ERR_INTERNAL;
	EVP_PKEY_free(k);
	return rv;
}

int chain_sign(const unsigned char seed[AUDIT_KEY], const void *msg, size_t len,
               unsigned char sig[AUDIT_SIG])
{
	EVP_PKEY *k = chain_pkey(seed);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	size_t siglen = AUDIT_SIG;
	int rv = ERR_INTERNAL;

	if (k != NULL && md != NULL && EVP_DigestSignInit(md, NULL, NULL, NULL, k) == 1 &&
	    EVP_DigestSign(md, sig, &siglen, msg, len) == 1 && siglen == AUDIT_SIG)
		rv = 0;
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(k); /* OpenSSL wipes the private key as it frees it */
	return rv;
}

bool chain_sig_ok(const unsigned char pub[AUDIT_PUB], const void *msg, size_t len,
                  const unsigned char *sig, size_t siglen)
{
	EVP_PKEY *k = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, AUDIT_PUB);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	bool ok = k != NULL && md != NULL && sig != NULL && siglen == AUDIT_SIG &&
	          EVP_DigestVerifyInit(md, NULL, NULL, NULL, k) == 1 &&
	          EVP_DigestVerify(md, sig, siglen, msg, len) == 1;
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(k);
	return ok;
}

struct chain_ctx {
	EVP_MAC_CTX *mac;
	EVP_MD_CTX *md;
	EVP_MD *sha;
};

int chain_ctx_new(const unsigned char mac_key[AUDIT_KEY], struct chain_ctx **out)
{
	OSSL_PARAM params[] = {
	    OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
	    OSSL_PARAM_construct_end(),
	};
	struct chain_ctx *c;
	EVP_MAC *hmac;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return ERR_NOMEM;
	hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	c->sha = EVP_MD_fetch(NULL, "SHA256", NULL);
	c->mac = hmac != NULL ? EVP_MAC_CTX_new(hmac) : NULL;
	c->md = EVP_MD_CTX_new();
	EVP_MAC_free(hmac); /* the context holds its own reference */
	if (c->sha == NULL || c->mac == NULL || c->md == NULL ||
	    EVP_MAC_init(c->mac, mac_key, AUDIT_KEY, params) != 1) {
		chain_ctx_free(c);
		return ERR_INTERNAL;
	}
	*out = c;
	return 0;
}

void chain_ctx_free(struct chain_ctx *c)
{
	if (c == NULL)
		return;
	EVP_MAC_CTX_free(c->mac); /* the HMAC provider cleanses its key */
	EVP_MD_CTX_free(c->md);
	EVP_MD_free(c->sha);
	free(c);
}

int chain_link(struct chain_ctx *c, const unsigned char prev[AUDIT_HASH],
               const unsigned char content[AUDIT_HASH], unsigned char out[AUDIT_HASH])
{
	static const char ver[] = CHAIN_MAGIC;
	unsigned int len = 0;
	return EVP_DigestInit_ex2(c->md, c->sha, NULL) == 1 &&
	               EVP_DigestUpdate(c->md, ver, sizeof(ver)) == 1 &&
	               EVP_DigestUpdate(c->md, prev, AUDIT_HASH) == 1 &&
	               EVP_DigestUpdate(c->md, content, AUDIT_HASH) == 1 &&
	               EVP_DigestFinal_ex(c->md, out, &len) == 1
	           ? 0
	           : ERR_INTERNAL;
}

int chain_mac(struct chain_ctx *c, const char *tag, uint64_t id,
              const unsigned char hash[AUDIT_HASH], unsigned char out[AUDIT_HASH])
{
	unsigned char b[8];
	size_t len = 0;

	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(id >> (56 - 8 * i));
	return EVP_MAC_init(c->mac, NULL, 0, NULL) == 1 &&
	               EVP_MAC_update(c->mac, (const unsigned char *)tag, strlen(tag) + 1) == 1 &&
	               EVP_MAC_update(c->mac, b, 8) == 1 &&
	               EVP_MAC_update(c->mac, hash, AUDIT_HASH) == 1 &&
	               EVP_MAC_final(c->mac, out, &len, AUDIT_HASH) == 1 && len == AUDIT_HASH
	           ? 0
	           : ERR_INTERNAL;
}

static void chain_put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (56 - 8 * i));
}

static uint64_t chain_get64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

/* "MAGHEAD1" epoch first_id records time prev[32] next_pub[32] */
void chain_head_encode(const struct chain_head *h, unsigned char out[CHAIN_HEAD_LEN])
{
	memcpy(out, "MAGHEAD1", 8);
	chain_put64(out + 8, h->epoch);
	chain_put64(out + 16, h->first_id);
	chain_put64(out + 24, h->records);
	chain_put64(out + 32, h->time_ms);
	memcpy(out + 40, h->prev, AUDIT_HASH);
	memcpy(out + 72, h->next_pub, AUDIT_PUB);
}

int chain_head_decode(const unsigned char *in, size_t len, struct chain_head *h)
{
	if (in == NULL || len != CHAIN_HEAD_LEN || memcmp(in, "MAGHEAD1", 8) != 0)
		return ERR_INVAL;
	h->epoch = chain_get64(in + 8);
	h->first_id = chain_get64(in + 16);
	h->records = chain_get64(in + 24);
	h->time_ms = chain_get64(in + 32);
	memcpy(h->prev, in + 40, AUDIT_HASH);
	memcpy(h->next_pub, in + 72, AUDIT_PUB);
	return 0;
}

/* "MAGGEN01" time epoch_ms epoch_events pub[32] */
void chain_genesis_encode(const struct chain_genesis *g, unsigned char out[CHAIN_GENESIS_LEN])
{
	memcpy(out, "MAGGEN01", 8);
	chain_put64(out + 8, g->time_ms);
	chain_put64(out + 16, g->epoch_ms);
	chain_put64(out + 24, g->epoch_events);
	memcpy(out + 32, g->pub, AUDIT_PUB);
}

int chain_genesis_decode(const unsigned char *in, size_t len, struct chain_genesis *g)
{
	if (in == NULL || len != CHAIN_GENESIS_LEN || memcmp(in, "MAGGEN01", 8) != 0)
		return ERR_INVAL;
	g->time_ms = chain_get64(in + 8);
	g->epoch_ms = chain_get64(in + 16);
	g->epoch_events = chain_get64(in + 24);
	memcpy(g->pub, in + 32, AUDIT_PUB);
	return 0;
}

/* "MAGBRK01" reason first_bad skipped tip_id tip_epoch time from_epoch
 * to_epoch tip_hash[32] pub[32] */
void chain_break_encode(const struct chain_break *b, unsigned char out[CHAIN_BREAK_LEN])
{
	memcpy(out, "MAGBRK01", 8);
	chain_put64(out + 8, b->reason);
	chain_put64(out + 16, b->first_bad);
	chain_put64(out + 24, b->skipped);
	chain_put64(out + 32, b->tip_id);
	chain_put64(out + 40, b->tip_epoch);
	chain_put64(out + 48, b->time_ms);
	chain_put64(out + 56, b->from_epoch);
	chain_put64(out + 64, b->to_epoch);
	memcpy(out + 72, b->tip_hash, AUDIT_HASH);
	memcpy(out + 104, b->pub, AUDIT_PUB);
}

int chain_break_decode(const unsigned char *in, size_t len, struct chain_break *b)
{
	if (in == NULL || len != CHAIN_BREAK_LEN || memcmp(in, "MAGBRK01", 8) != 0)
		return ERR_INVAL;
	b->reason = chain_get64(in + 8);
	b->first_bad = chain_get64(in + 16);
	b->skipped = chain_get64(in + 24);
	b->tip_id = chain_get64(in + 32);
	b->tip_epoch = chain_get64(in + 40);
	b->time_ms = chain_get64(in + 48);
	b->from_epoch = chain_get64(in + 56);
	b->to_epoch = chain_get64(in + 64);
	memcpy(b->tip_hash, in + 72, AUDIT_HASH);
	memcpy(b->pub, in + 104, AUDIT_PUB);
	if (b->reason < CHAIN_BREAK_TRUNCATED || b->reason > CHAIN_BREAK_AFTER_TIP ||
	    b->to_epoch < b->from_epoch)
		return ERR_INVAL;
	return 0;
}

const char *chain_break_reason(uint64_t reason)
{
	static const char *const names[] = {
	    "", "truncated", "missing_tip", "tip_mismatch", "bad_tip_mac", "after_tip"};
	return reason >= CHAIN_BREAK_TRUNCATED && reason <= CHAIN_BREAK_AFTER_TIP ? names[reason]
	                                                                          : "bad_break";
}
