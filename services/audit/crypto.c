/*
 * crypto.c — field encryption (AES-256-GCM, associated data = key id,
 * record id, field name), blind indexes and record content hashes, on
 * reused OpenSSL contexts: a context per thread at a time, kept keyed, so
 * a field costs one IV set-up instead of a fetch and a key schedule.
 */
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "services/audit/audit.h"

const char *const crypto_field_names[AUDIT_NFIELDS] = {
    "action", "actor", "target", "ip", "request_id", "outcome", "detail",
};

/* Fetched once: an implicit fetch per call is what makes one-shot calls slow. */
static pthread_once_t crypto_once = PTHREAD_ONCE_INIT;
static EVP_CIPHER *crypto_gcm;
static EVP_MAC *crypto_hmac;
static EVP_MD *crypto_sha;

static void crypto_fetch(void)
{
	crypto_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	crypto_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	crypto_sha = EVP_MD_fetch(NULL, "SHA256", NULL);
}

struct crypto {
	struct crypto *next; /* free list */
	EVP_CIPHER_CTX *enc, *dec;
	EVP_MAC_CTX *ix;
	EVP_MD_CTX *md;
	/* Which key each context holds (id and bytes: a key struct at a reused
	 * address must not be mistaken for the one before it). */
	struct audit_key enc_key, dec_key, ix_key;
	bool enc_set, dec_set, ix_set;
};

struct crypto_pool {
	pthread_mutex_t mu;
	struct crypto *free;
};

static void crypto_free_one(struct crypto *c)
{
	EVP_CIPHER_CTX_free(c->enc);
	EVP_CIPHER_CTX_free(c->dec);
	EVP_MAC_CTX_free(c->ix);
	EVP_MD_CTX_free(c->md);
	OPENSSL_cleanse(c, sizeof(*c));
	free(c);
}

int crypto_pool_new(struct crypto_pool **out)
{
	struct crypto_pool *p;

	pthread_once(&crypto_once, crypto_fetch);
	if (crypto_gcm == NULL || crypto_hmac == NULL || crypto_sha == NULL)
		return ERR_INTERNAL;
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return ERR_NOMEM;
	pthread_mutex_init(&p->mu, NULL);
	*out = p;
	return 0;
}

void crypto_pool_free(struct crypto_pool *p)
{
	if (p == NULL)
		return;
	while (p->free != NULL) {
		struct crypto *c = p->free;
		p->free = c->next;
		crypto_free_one(c);
	}
	pthread_mutex_destroy(&p->mu);
	free(p);
}

struct crypto *crypto_get(struct crypto_pool *p)
{
	struct crypto *c;

	pthread_mutex_lock(&p->mu);
	c = p->free;
	if (c != NULL)
		p->free = c->next;
	pthread_mutex_unlock(&p->mu);
	if (c != NULL)
		return c;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->enc = EVP_CIPHER_CTX_new();
	c->dec = EVP_CIPHER_CTX_new();
	c->ix = EVP_MAC_CTX_new(crypto_hmac);
	c->md = EVP_MD_CTX_new();
	if (c->enc == NULL || c->dec == NULL || c->ix == NULL || c->md == NULL) {
		crypto_free_one(c);
		return NULL;
	}
	return c;
}

void crypto_put(struct crypto_pool *p, struct crypto *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	c->next = p->free;
	p->free = c;
	pthread_mutex_unlock(&p->mu);
}

static bool crypto_same_key(const struct audit_key *held, bool set, const struct audit_key *k)
{
	return set && strcmp(held->id, k->id) == 0 &&
	       CRYPTO_memcmp(held->key, k->key, AUDIT_KEY) == 0;
}

/* Associated data: version, key id, record id, field name. Moving a
 * ciphertext to another row, column or key id changes it, and the tag fails. */
static size_t crypto_ad(const struct audit_key *k, uint64_t id, enum audit_field f,
                        unsigned char *ad)
{
	static const char ver[] = "magnetar-audit field v1";
	size_t n = 0, l;

	memcpy(ad, ver, sizeof(ver)); /* with its NUL: a separator */
	n += sizeof(ver);
	l = strlen(k->id);
	ad[n++] = (unsigned char)l;
	memcpy(ad + n, k->id, l);
	n += l;
	for (int i = 7; i >= 0; i--)
		ad[n++] = (unsigned char)(id >> (i * 8));
	l = strlen(crypto_field_names[f]);
	memcpy(ad + n, crypto_field_names[f], l);
	return n + l;
}

int crypto_seal(struct crypto *c, const struct audit_key *k, const unsigned char nonce[AUDIT_NONCE],
                uint64_t id, enum audit_field f, const void *pt, size_t len, unsigned char *out)
{
	unsigned char ad[96];
	size_t adlen = crypto_ad(k, id, f, ad);
	int l1 = 0, l2 = 0;

	if (len > AUDIT_FIELD_MAX)
		return ERR_INVAL;
	if (!crypto_same_key(&c->enc_key, c->enc_set, k)) {
		if (EVP_EncryptInit_ex2(c->enc, crypto_gcm, k->key, NULL, NULL) != 1)
			return ERR_INTERNAL;
		c->enc_key = *k;
		c->enc_set = true;
	}
	if (EVP_EncryptInit_ex2(c->enc, NULL, NULL, nonce, NULL) != 1 ||
	    EVP_EncryptUpdate(c->enc, NULL, &l1, ad, (int)adlen) != 1 ||
	    EVP_EncryptUpdate(c->enc, out + AUDIT_NONCE, &l1, pt, (int)len) != 1 ||
	    EVP_EncryptFinal_ex(c->enc, out + AUDIT_NONCE + l1, &l2) != 1 ||
	    (size_t)(l1 + l2) != len ||
	    EVP_CIPHER_CTX_ctrl(c->enc, EVP_CTRL_GCM_GET_TAG, AUDIT_TAG, out + AUDIT_NONCE + len) !=
	        1)
		return ERR_INTERNAL;
	memcpy(out, nonce, AUDIT_NONCE);
	return 0;
}

int crypto_open(struct crypto *c, const struct audit_key *k, uint64_t id, enum audit_field f,
                const unsigned char *in, size_t len, char *out)
{
	unsigned char ad[96], tag[AUDIT_TAG];
	size_t adlen = crypto_ad(k, id, f, ad), n;
	int l1 = 0, l2 = 0;

	if (in == NULL || len < AUDIT_SEALED(0) || len > AUDIT_SEALED(AUDIT_FIELD_MAX))
		return ERR_PERM;
	n = len - AUDIT_SEALED(0);
	if (!crypto_same_key(&c->dec_key, c->dec_set, k)) {
		if (EVP_DecryptInit_ex2(c->dec, crypto_gcm, k->key, NULL, NULL) != 1)
			return ERR_INTERNAL;
		c->dec_key = *k;
		c->dec_set = true;
	}
	memcpy(tag, in + AUDIT_NONCE + n, AUDIT_TAG);
	if (EVP_DecryptInit_ex2(c->dec, NULL, NULL, in, NULL) != 1 ||
	    EVP_DecryptUpdate(c->dec, NULL, &l1, ad, (int)adlen) != 1 ||
	    EVP_DecryptUpdate(c->dec, (unsigned char *)out, &l1, in + AUDIT_NONCE, (int)n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(c->dec, EVP_CTRL_GCM_SET_TAG, AUDIT_TAG, tag) != 1)
		return ERR_INTERNAL;
	if (EVP_DecryptFinal_ex(c->dec, (unsigned char *)out + l1, &l2) != 1) {
		OPENSSL_cleanse(out, n); /* never hand out unauthenticated plaintext */
		return ERR_PERM;
	}
	out[n] = '\0';
	return 0;
}

int crypto_index(struct crypto *c, const struct audit_key *k, enum audit_field f, const char *value,
                 unsigned char out[AUDIT_IX])
{
	unsigned char full[AUDIT_HASH];
	const char *name = crypto_field_names[f];
	size_t outl = 0;
	int ok;

	if (!crypto_same_key(&c->ix_key, c->ix_set, k)) {
		OSSL_PARAM params[] = {
		    OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
		    OSSL_PARAM_construct_end(),
		};
		ok = EVP_MAC_init(c->ix, k->ix, AUDIT_KEY, params);
		c->ix_key = *k;
		c->ix_set = ok == 1;
	} else {
		ok = EVP_MAC_init(c->ix, NULL, 0, NULL); /* same key, fresh state */
	}
	if (ok != 1 || EVP_MAC_update(c->ix, (const unsigned char *)name, strlen(name) + 1) != 1 ||
	    EVP_MAC_update(c->ix, (const unsigned char *)(value != NULL ? value : ""),
	                   value != NULL ? strlen(value) : 0) != 1 ||
	    EVP_MAC_final(c->ix, full, &outl, sizeof(full)) != 1)
		return ERR_INTERNAL;
	memcpy(out, full, AUDIT_IX);
	return 0;
}

static int crypto_u64(EVP_MD_CTX *md, uint64_t v)
{
	unsigned char b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (56 - 8 * i));
	return EVP_DigestUpdate(md, b, 8);
}

/* Length-prefixed, so no two different records encode alike; NULL is
 * distinct from empty. */
static int crypto_bytes(EVP_MD_CTX *md, const void *p, size_t n)
{
	if (p == NULL)
		return crypto_u64(md, UINT64_MAX);
	return crypto_u64(md, n) == 1 && (n == 0 || EVP_DigestUpdate(md, p, n) == 1) ? 1 : 0;
}

static int crypto_str(EVP_MD_CTX *md, const char *s)
{
	return crypto_bytes(md, s, s != NULL ? strlen(s) : 0);
}

int crypto_content(struct crypto *c, struct audit_rec *r)
{
	static const char ver[] = "magnetar-audit record v1";
	EVP_MD_CTX *md = c->md;
	unsigned int outl = 0;
	bool ev = r->kind == AUDIT_KIND_EVENT;
	int ok;

	ok = EVP_DigestInit_ex2(md, crypto_sha, NULL) == 1 &&
	     EVP_DigestUpdate(md, ver, sizeof(ver)) == 1 && crypto_u64(md, r->id) == 1 &&
	     crypto_u64(md, (uint64_t)r->kind) == 1 && crypto_u64(md, r->epoch) == 1 &&
	     crypto_u64(md, r->time_ms) == 1 && crypto_u64(md, r->received_ms) == 1;
	if (ok && ev) {
		ok = crypto_str(md, r->source) == 1 && crypto_str(md, r->producer) == 1 &&
		     crypto_str(md, r->instance) == 1 && crypto_u64(md, r->seq) == 1 &&
		     crypto_str(md, r->key_id) == 1;
		for (int f = 0; ok && f < AUDIT_NFIELDS; f++)
			ok = crypto_bytes(md, r->field[f], r->field_len[f]) == 1;
		ok = ok && crypto_bytes(md, r->action_ix, AUDIT_IX) == 1 &&
		     crypto_bytes(md, r->actor_ix, AUDIT_IX) == 1;
	}
	ok = ok && crypto_bytes(md, r->body, r->body_len) == 1 &&
	     crypto_bytes(md, r->sig, r->sig_len) == 1 &&
	     EVP_DigestFinal_ex(md, r->content, &outl) == 1;
	return ok ? 0 : ERR_INTERNAL;
}

int crypto_sha256(const void *buf, size_t len, unsigned char out[AUDIT_HASH])
{
	unsigned int outl = 0;
	return EVP_Digest(buf, len, out, &outl, EVP_sha256(), NULL) == 1 ? 0 : ERR_INTERNAL;
}
