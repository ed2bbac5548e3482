/*
 * breach_cache_test.c — the range cache (services/breach/cache.c): least
 * recently used evicted first, a hit refreshes recency, entries expire
 * after the TTL on an injected clock, and concurrent use is safe (run under
 * TSan).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>

#include "common/err.h"
#include "services/breach/breach.h"

#define TTL 1000

static struct pairs *mk(uint32_t tag)
{
	struct pairs *p = pairs_new(1);
	assert_non_null(p);
	p->counts[0] = tag;
	return p;
}

static void put(struct cache *c, uint32_t prefix, uint64_t now)
{
	struct pairs *p = mk(prefix);
	cache_put(c, prefix, p, now, now);
	pairs_unref(p); /* the cache holds its own reference */
}

static bool has(struct cache *c, uint32_t prefix, uint64_t now)
{
	struct pairs *p = cache_get(c, prefix, now);
	if (p == NULL)
		return false;
	assert_int_equal(p->counts[0], prefix);
	pairs_unref(p);
	return true;
}

static void test_lru_eviction_order(void **state)
{
	struct cache *c;
	struct cache_stats st;
	(void)state;

	assert_int_equal(cache_new(3, TTL, &c), 0);
	put(c, 1, 0);
	put(c, 2, 0);
	put(c, 3, 0);
	assert_true(has(c, 1, 1)); /* 1 is now the most recent: 2 is the oldest */
	put(c, 4, 2);              /* evicts 2 */
	assert_false(has(c, 2, 3));
	assert_true(has(c, 3, 3)); /* order now (old→new): 1 4 3 */
	put(c, 5, 4);              /* evicts 1 */
	assert_false(has(c, 1, 5));
	assert_true(has(c, 4, 5));
	assert_true(has(c, 5, 5));
	assert_true(has(c, 3, 5));
	put(c, 3, 6); /* replacing an entry is not an eviction */
	cache_get_stats(c, &st);
	assert_int_equal(st.entries, 3);
	assert_int_equal(st.evictions, 2);
	assert_int_equal(st.misses, 2);
	cache_free(c);
}

static void test_ttl_expiry(void **state)
{
	struct cache *c;
	struct cache_stats st;
	struct pairs *p;
	(void)state;

	assert_int_equal(cache_new(10, TTL, &c), 0);
	put(c, 7, 5000);
	assert_true(has(c, 7, 5000 + TTL - 1));
	assert_false(has(c, 7, 5000 + TTL)); /* expired exactly at the TTL, then dropped */
	cache_get_stats(c, &st);
	assert_int_equal(st.expired, 1);
	assert_int_equal(st.entries, 0);
	/* a hit does not extend the TTL: it runs from the fetch */
	put(c, 8, 0);
	assert_true(has(c, 8, 900));
	assert_false(has(c, 8, 1000));
	/* an entry already expired when stored (a stale persisted row) is ignored */
	p = mk(9);
	cache_put(c, 9, p, 0, 2 * TTL);
	pairs_unref(p);
	assert_false(has(c, 9, 2 * TTL));
	/* a fetch time far in the future (clock stepped back) is not trusted */
	p = mk(10);
	cache_put(c, 10, p, 10 * TTL, 10 * TTL);
	pairs_unref(p);
	assert_false(has(c, 10, 5 * TTL));
	cache_free(c);
}

static void test_many_and_bad_capacity(void **state)
{
	struct cache *c;
	(void)state;

	assert_int_equal(cache_new(0, TTL, &c), ERR_INVAL);
	assert_int_equal(cache_new(1000, TTL, &c), 0);
	for (uint32_t i = 0; i < 5000; i++)
		put(c, i * 211 % 0x100000, 0);
	for (uint32_t i = 0; i < 4000; i++)
		assert_false(has(c, i * 211 % 0x100000, 1));
	for (uint32_t i = 4000; i < 5000; i++)
		assert_true(has(c, i * 211 % 0x100000, 1));
	cache_free(c);
}

static struct cache *shared;

static void *worker(void *arg)
{
	uint32_t seed = (uint32_t)(uintptr_t)arg;
	for (int i = 0; i < 20000; i++) {
		uint32_t prefix;
		seed = seed * 1103515245u + 12345u;
		prefix = (seed >> 8) % 64;
		struct pairs *p = cache_get(shared, prefix, (uint64_t)i);
		if (p != NULL) {
			assert_int_equal(p->counts[0], prefix);
			pairs_unref(p);
		} else {
			put(shared, prefix, (uint64_t)i);
		}
	}
	return NULL;
}

static void test_concurrent(void **state)
{
	pthread_t t[4];
	(void)state;

	assert_int_equal(cache_new(32, 5000, &shared), 0);
	for (uintptr_t i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, worker, (void *)(i + 1)), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	cache_free(shared);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lru_eviction_order),
	    cmocka_unit_test(test_ttl_expiry),
	    cmocka_unit_test(test_many_and_bad_capacity),
	    cmocka_unit_test(test_concurrent),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
