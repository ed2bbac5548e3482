/*
 * nonce.c — GCM nonces that never repeat under a key: a per-key 64-bit
 * counter whose high-water mark is reserved in blocks, each block durably
 * committed to audit.db BEFORE any of its counters is used (docs/audit.md,
 * "Nonces"). Nonce = 4-byte salt drawn per block || 8-byte counter.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/ids.h"
#include "services/audit/audit.h"

struct nonce_block {
	char key_id[AUDIT_KEY_ID_MAX + 1];
	uint64_t next, end; /* [next, end) still unused in the reserved block */
	unsigned char salt[4];
};

struct nonce_alloc {
	struct pool *pool;
	uint64_t block;
	pthread_mutex_t mu;
	struct nonce_block blocks[AUDIT_KEYS_MAX];
	size_t n;
};

int nonce_new(struct pool *pool, uint64_t block, struct nonce_alloc **out)
{
	struct nonce_alloc *a;

	if ((a = calloc(1, sizeof(*a))) == NULL)
		return ERR_NOMEM;
	a->pool = pool;
	a->block = block != 0 ? block : AUDIT_NONCE_BLOCK;
	pthread_mutex_init(&a->mu, NULL);
	*out = a;
	return 0;
}

void nonce_free(struct nonce_alloc *a)
{
	if (a == NULL)
		return;
	pthread_mutex_destroy(&a->mu);
	free(a);
}

static void nonce_put(unsigned char out[AUDIT_NONCE], const unsigned char salt[4], uint64_t ctr)
{
	memcpy(out, salt, 4);
	for (int i = 0; i < 8; i++)
		out[4 + i] = (unsigned char)(ctr >> (56 - 8 * i));
}

int nonce_take(struct nonce_alloc *a, const char *key_id, uint64_t count,
               unsigned char base[AUDIT_NONCE])
{
	struct nonce_block *b = NULL;
	int rv = 0;

	if (count == 0 || count > UINT32_MAX || strlen(key_id) > AUDIT_KEY_ID_MAX)
		return ERR_INVAL;
	pthread_mutex_lock(&a->mu);
	for (size_t i = 0; i < a->n; i++)
		if (strcmp(a->blocks[i].key_id, key_id) == 0)
			b = &a->blocks[i];
	if (b == NULL) {
		if (a->n == AUDIT_KEYS_MAX) {
			rv = ERR_INVAL;
			goto out;
		}
		b = &a->blocks[a->n++];
		memset(b, 0, sizeof(*b));
		strcpy(b->key_id, key_id);
	}
	/* A take never spans blocks, so base + i stays in one salt's range; the
	 * rest of a block that cannot hold `count` is skipped, never reused. */
	if (b->end - b->next < count) {
		uint64_t start, size = count > a->block ? count : a->block;
		unsigned char salt[4];
		if ((rv = ids_random(salt, sizeof(salt))) != 0)
			goto out;
		if ((rv = store_nonce_reserve(a->pool, key_id, size, &start)) != 0)
			goto out;
		b->next = start;
		b->end = start + size;
		memcpy(b->salt, salt, 4);
	}
	nonce_put(base, b->salt, b->next);
	b->next += count;
out:
	pthread_mutex_unlock(&a->mu);
	return rv;
}

void nonce_at(const unsigned char base[AUDIT_NONCE], uint64_t i, unsigned char out[AUDIT_NONCE])
{
	uint64_t ctr = 0;
	for (int k = 0; k < 8; k++)
		ctr = (ctr << 8) | base[4 + k];
	nonce_put(out, base, ctr + i);
}
