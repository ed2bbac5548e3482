/*
 * pairs.c — one range's (suffix, count) pairs as a single immutable,
 * reference-counted block, so the cache can hand the same block to many
 * concurrent replies without copying it or holding its lock while packing.
 */
#include <stdlib.h>

#include "lib/pwstore/pwstore.h"

struct pairs *pairs_new(uint32_t n)
{
	struct pairs *p;
	size_t size = sizeof(*p) + (size_t)n * sizeof(uint32_t) + (size_t)n * PAIRS_SUFFIX_LEN;

	if (n > PAIRS_MAX)
		return NULL;
	if ((p = malloc(size)) == NULL)
		return NULL;
	atomic_init(&p->refs, 1);
	p->n = n;
	/* counts first: uint32_t alignment comes for free after the header */
	p->counts = (uint32_t *)(p + 1);
	p->suffixes = (uint8_t *)(p->counts + n);
	return p;
}

struct pairs *pairs_ref(struct pairs *p)
{
	atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
	return p;
}

void pairs_unref(struct pairs *p)
{
	if (p != NULL && atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
		free(p);
}
