/*
 * cache.c — the in-memory range cache: at most `capacity` ranges, least
 * recently used evicted first, each valid for `ttl_ms` after it was
 * fetched. Ranges rather than single hashes are cached because that is
 * what the API returns and what every caller with the same prefix needs.
 * The clock is a parameter of every call, so tests inject time.
 *
 * One mutex guards the table: a hit is a hash probe and two list splices
 * (well under a microsecond), far below the RPC round trip, so finer
 * locking would buy nothing measurable.
 */
#include <pthread.h>
#include <stdlib.h>

#include "common/err.h"
#include "services/breach/breach.h"

#define CACHE_NONE UINT32_MAX

struct cache_entry {
	uint32_t prefix;
	uint32_t prev, next; /* LRU list: head = most recent */
	uint32_t chain;      /* next entry in the same hash bucket */
	uint64_t fetched_ms;
	struct pairs *pairs; /* NULL: the slot is free */
};

struct cache {
	pthread_mutex_t mu;
	uint32_t capacity, used, mask;
	uint64_t ttl_ms;
	uint32_t head, tail, free_list; /* free slots chained through .next */
	uint32_t *buckets;
	struct cache_entry *e;
	struct cache_stats st;
};

static uint32_t cache_hash(const struct cache *c, uint32_t prefix)
{
	/* prefixes are already uniform (SHA-1 bits); a multiply spreads the
	 * sequential ones tests use */
	return (prefix * 2654435761u) & c->mask;
}

int cache_new(uint32_t capacity, uint64_t ttl_ms, struct cache **out)
{
	struct cache *c;
	uint32_t nb = 1;

	if (capacity == 0 || capacity > (1u << 20))
		return ERR_INVAL;
	while (nb < 2 * capacity)
		nb <<= 1;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return ERR_NOMEM;
	c->buckets = malloc(nb * sizeof(*c->buckets));
	c->e = calloc(capacity, sizeof(*c->e));
	if (c->buckets == NULL || c->e == NULL) {
		free(c->buckets);
		free(c->e);
		free(c);
		return ERR_NOMEM;
	}
	pthread_mutex_init(&c->mu, NULL);
	c->capacity = capacity;
	c->mask = nb - 1;
	c->ttl_ms = ttl_ms;
	c->head = c->tail = CACHE_NONE;
	for (uint32_t i = 0; i < nb; i++)
		c->buckets[i] = CACHE_NONE;
	for (uint32_t i = 0; i < capacity; i++)
		c->e[i].next = i + 1 < capacity ? i + 1 : CACHE_NONE;
	c->free_list = 0;
	*out = c;
	return 0;
}

void cache_free(struct cache *c)
{
	if (c == NULL)
		return;
	for (uint32_t i = 0; i < c->capacity; i++)
		pairs_unref(c->e[i].pairs);
	pthread_mutex_destroy(&c->mu);
	free(c->buckets);
	free(c->e);
	free(c);
}

static void cache_unlink(struct cache *c, uint32_t i)
{
	struct cache_entry *x = &c->e[i];
	if (x->prev != CACHE_NONE)
		c->e[x->prev].next = x->next;
	else
		c->head = x->next;
	if (x->next != CACHE_NONE)
		c->e[x->next].prev = x->prev;
	else
		c->tail = x->prev;
}

static void cache_push_front(struct cache *c, uint32_t i)
{
	struct cache_entry *x = &c->e[i];
	x->prev = CACHE_NONE;
	x->next = c->head;
	if (c->head != CACHE_NONE)
		c->e[c->head].prev = i;
	c->head = i;
	if (c->tail == CACHE_NONE)
		c->tail = i;
}

static uint32_t cache_find(const struct cache *c, uint32_t prefix)
{
	uint32_t i = c->buckets[cache_hash(c, prefix)];
	while (i != CACHE_NONE && c->e[i].prefix != prefix)
		i = c->e[i].chain;
	return i;
}

/* Removes entry i from its bucket and the LRU list, frees its slot. */
static void cache_drop(struct cache *c, uint32_t i)
{
	uint32_t *pp = &c->buckets[cache_hash(c, c->e[i].prefix)];
	while (*pp != i)
		pp = &c->e[*pp].chain;
	*pp = c->e[i].chain;
	cache_unlink(c, i);
	pairs_unref(c->e[i].pairs);
	c->e[i].pairs = NULL;
	c->e[i].next = c->free_list;
	c->free_list = i;
	c->used--;
}

static bool cache_expired(const struct cache *c, const struct cache_entry *x, uint64_t now_ms)
{
	/* a fetch time in the future (wall clock stepped back) is not trusted
	 * either: refetching costs one request, serving stale data forever is
	 * worse */
	return now_ms >= x->fetched_ms + c->ttl_ms || x->fetched_ms > now_ms + c->ttl_ms;
}

struct pairs *cache_get(struct cache *c, uint32_t prefix, uint64_t now_ms)
{
	struct pairs *p = NULL;
	uint32_t i;

	pthread_mutex_lock(&c->mu);
	i = cache_find(c, prefix);
	if (i != CACHE_NONE && cache_expired(c, &c->e[i], now_ms)) {
		cache_drop(c, i);
		c->st.expired++;
		i = CACHE_NONE;
	}
	if (i != CACHE_NONE) {
		cache_unlink(c, i);
		cache_push_front(c, i);
		p = pairs_ref(c->e[i].pairs);
		c->st.hits++;
	} else {
		c->st.misses++;
	}
	pthread_mutex_unlock(&c->mu);
	return p;
}

void cache_put(struct cache *c, uint32_t prefix, struct pairs *p, uint64_t fetched_ms,
               uint64_t now_ms)
{
	uint32_t i, b;

	if (cache_expired(c, &(struct cache_entry){.fetched_ms = fetched_ms}, now_ms))
		return;
	pthread_mutex_lock(&c->mu);
	if ((i = cache_find(c, prefix)) != CACHE_NONE)
		cache_drop(c, i);
	if (c->free_list == CACHE_NONE) {
		cache_drop(c, c->tail);
		c->st.evictions++;
	}
	i = c->free_list;
	c->free_list = c->e[i].next;
	c->e[i].prefix = prefix;
	c->e[i].fetched_ms = fetched_ms;
	c->e[i].pairs = pairs_ref(p);
	b = cache_hash(c, prefix);
	c->e[i].chain = c->buckets[b];
	c->buckets[b] = i;
	cache_push_front(c, i);
	c->used++;
	pthread_mutex_unlock(&c->mu);
}

void cache_get_stats(struct cache *c, struct cache_stats *st)
{
	pthread_mutex_lock(&c->mu);
	*st = c->st;
	st->entries = c->used;
	pthread_mutex_unlock(&c->mu);
}
