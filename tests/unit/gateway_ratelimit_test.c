/*
 * gateway_ratelimit_test.c — gateway/ratelimit.c: rule syntax, bursts,
 * refill and Retry-After, independent classes and clients, and a table that
 * stays bounded (and correct for the active clients) under address floods.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common/err.h"
#include "gateway/policy.h"

static struct netaddr addr(uint32_t n)
{
	struct netaddr a = {{0}};
	a.b[10] = a.b[11] = 0xff;
	memcpy(a.b + 12, &n, 4);
	return a;
}

static void test_rules(void **state)
{
	struct ratelimit_rule r;
	(void)state;
	assert_int_equal(ratelimit_rule_parse("10/60", &r), 0);
	assert_int_equal(r.burst, 10);
	assert_int_equal(r.period_ms, 60000);
	assert_int_equal(ratelimit_rule_parse("off", &r), 0);
	assert_int_equal(r.burst, 0);
	const char *bad[] = {"",     "0/1",  "1/0",  "10",  "10/",        "/1",
	                     "-1/1", "1/1s", "1 /1", "x/1", "10/99999999"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(ratelimit_rule_parse(bad[i], &r), ERR_INVAL);
}

static void test_bucket(void **state)
{
	struct ratelimit *rl;
	struct ratelimit_rule r = {.burst = 3, .period_ms = 3000}; /* one per second */
	struct netaddr a = addr(1), b = addr(2);
	uint64_t t = 1000000;
	(void)state;

	assert_int_equal(ratelimit_new(1024, &rl), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(ratelimit_take(rl, 0, &r, &a, t), 0);
	assert_int_equal(ratelimit_take(rl, 0, &r, &a, t), 1); /* Retry-After 1 s */
	assert_int_equal(ratelimit_take(rl, 0, &r, &b, t), 0); /* another client */
	assert_int_equal(ratelimit_take(rl, 1, &r, &a, t), 0); /* another class */
	assert_int_equal(ratelimit_take(rl, 0, &r, &a, t + 999), 1);
	assert_int_equal(ratelimit_take(rl, 0, &r, &a, t + 1000), 0); /* one token back */
	assert_int_equal(ratelimit_take(rl, 0, &r, &a, t + 1000), 1);
	/* A long rule: the wait is reported in whole seconds, rounded up. */
	struct ratelimit_rule slow = {.burst = 2, .period_ms = 60000};
	assert_int_equal(ratelimit_take(rl, 2, &slow, &a, t), 0);
	assert_int_equal(ratelimit_take(rl, 2, &slow, &a, t), 0);
	assert_int_equal(ratelimit_take(rl, 2, &slow, &a, t), 30);
	/* "off" never refuses. */
	struct ratelimit_rule off = {.burst = 0, .period_ms = 1000};
	for (int i = 0; i < 100; i++)
		assert_int_equal(ratelimit_take(rl, 3, &off, &a, t), 0);
	ratelimit_free(rl);
}

static void test_flood_is_bounded(void **state)
{
	struct ratelimit *rl;
	struct ratelimit_rule r = {.burst = 2, .period_ms = 60000};
	struct netaddr victim = addr(7);
	uint64_t t = 5000000;
	unsigned refused = 0;
	(void)state;

	/* 64 buckets; the victim is limited, then 100,000 other addresses come.
	 * Memory does not grow; evictions are counted. */
	assert_int_equal(ratelimit_new(64, &rl), 0);
	ratelimit_take(rl, 0, &r, &victim, t);
	ratelimit_take(rl, 0, &r, &victim, t);
	assert_true(ratelimit_take(rl, 0, &r, &victim, t) > 0);
	for (uint32_t i = 100; i < 100100; i++) {
		struct netaddr a = addr(i);
		refused += ratelimit_take(rl, 0, &r, &a, t) > 0;
	}
	assert_int_equal(refused, 0); /* every newcomer got a bucket */
	assert_true(ratelimit_evictions(rl) > 0);
	/* Once refilled, an entry is free, not an eviction. */
	uint64_t before = ratelimit_evictions(rl);
	for (uint32_t i = 200000; i < 200064; i++) {
		struct netaddr a = addr(i);
		ratelimit_take(rl, 0, &r, &a, t + 120000);
	}
	assert_true(ratelimit_evictions(rl) - before < 64);
	ratelimit_free(rl);
}

static struct netaddr v6(const char *s)
{
	struct netaddr a;
	assert_int_equal(netaddr_parse(s, strlen(s), &a), 0);
	return a;
}

/* Issue 16: a client rotating the low 64 bits of its IPv6 address is one
 * client; another /64 is another; IPv4 addresses (held inside ::/64 as
 * ::ffff:a.b.c.d) stay one client each, and apart from ::1. */
static void test_ipv6_by_64(void **state)
{
	struct ratelimit *rl;
	struct ratelimit_rule r = {.burst = 3, .period_ms = 60000};
	uint64_t t = 1000000;
	char s[64];
	(void)state;

	assert_int_equal(ratelimit_new(1024, &rl), 0);
	for (int i = 0; i < 3; i++) {
		snprintf(s, sizeof(s), "2001:db8:aa:bb:%x:%x::%x", i + 1, 77 * i, i);
		struct netaddr a = v6(s);
		assert_int_equal(ratelimit_take(rl, 0, &r, &a, t), 0);
	}
	for (int i = 0; i < 100; i++) {
		snprintf(s, sizeof(s), "2001:db8:aa:bb:%x:%x:%x:%x", 1000 + i, i, 3 * i, 5 * i);
		struct netaddr a = v6(s);
		assert_true(ratelimit_take(rl, 0, &r, &a, t) > 0);
	}
	struct netaddr other = v6("2001:db8:aa:bc::1"), lo = v6("::1"), v4a = v6("192.0.2.1"),
	               v4b = v6("192.0.2.2");
	assert_int_equal(ratelimit_take(rl, 0, &r, &other, t), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(ratelimit_take(rl, 1, &r, &v4a, t), 0);
		assert_int_equal(ratelimit_take(rl, 1, &r, &lo, t), 0);
	}
	assert_true(ratelimit_take(rl, 1, &r, &v4a, t) > 0);
	assert_int_equal(ratelimit_take(rl, 1, &r, &v4b, t), 0);
	ratelimit_free(rl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rules),
	    cmocka_unit_test(test_bucket),
	    cmocka_unit_test(test_flood_is_bounded),
	    cmocka_unit_test(test_ipv6_by_64),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
