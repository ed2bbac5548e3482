/*
 * auth_throttle_test.c — services/auth/throttle.c under table pressure
 * (issue 16 item 3). Other keys must never reset a count: not names chosen
 * to collide with the victim's slot under the old unkeyed FNV-1a (8192
 * direct-mapped slots), not keys aimed at the victim's set (found here with
 * the start's key, which an attacker does not have), not a flood of more
 * distinct keys than the table has slots, not keys with as many failures
 * as the victim's. A check takes no slot.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "services/auth/auth.h"

#define FREE 5 /* failures per account and network before any delay */

static int setup(void **state)
{
	(void)state;
	return throttle_init();
}

/* The slot the unfixed throttle.c gave (account, network). */
static unsigned old_fnv_slot(const char *account, const char *net)
{
	uint64_t h = 1469598103934665603ull;
	for (const char *p = account; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	h = (h ^ 0xff) * 1099511628211ull;
	for (const char *p = net; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	return (unsigned)((h | 1) % 8192);
}

/* A username sharing (account, net)'s old slot: an offline computation. */
static void old_collider(const char *account, const char *net, const char *avoid, char out[32])
{
	unsigned want = old_fnv_slot(account, net);
	for (unsigned i = 0;; i++) {
		snprintf(out, 32, "zz%x", i);
		if (strcmp(out, account) != 0 && strcmp(out, avoid) != 0 &&
		    old_fnv_slot(out, net) == want)
			return;
	}
}

/* The login handler's order: check, then count the failure if allowed. */
static uint32_t guess(const char *account, const char *ip)
{
	uint32_t wait = throttle_check(account, ip);
	if (wait == 0)
		throttle_failed(account, ip);
	return wait;
}

static void test_limit_then_success_resets(void **state)
{
	(void)state;
	for (int i = 0; i < FREE; i++)
		assert_int_equal(guess("alice", "192.0.2.10"), 0);
	assert_true(throttle_check("alice", "192.0.2.10") >= 1);
	/* Same /24: same budget; another network: its own. */
	assert_true(throttle_check("alice", "192.0.2.99") >= 1);
	assert_int_equal(throttle_check("alice", "192.0.3.10"), 0);
	/* IPv6 by /64. */
	for (int i = 0; i < FREE; i++)
		assert_int_equal(guess("alice", i % 2 ? "2001:db8:1:2::1" : "2001:db8:1:2:ffff::9"),
		                 0);
	assert_true(throttle_check("alice", "2001:db8:1:2:abcd::1") >= 1);
	assert_int_equal(throttle_check("alice", "2001:db8:1:3::1"), 0);
	throttle_succeeded("alice", "192.0.2.10");
	assert_int_equal(throttle_check("alice", "192.0.2.10"), 0);
}

/* The reported attack, replayed on the table: before each guess, a failure
 * for a name in the victim's old slot and one in the network's old slot.
 * The old table restarted both counts each round (40 guesses, no 429). */
static void test_old_fnv_colliders_do_not_reset(void **state)
{
	const char *victim = "victor", *ip = "198.51.100.7", *net = "198.51.100.0/24";
	char c_account[32], c_network[32];
	int limited_at = -1;
	(void)state;

	old_collider(victim, net, "", c_account);
	old_collider("", net, c_account, c_network);
	assert_int_equal(old_fnv_slot(c_account, net), old_fnv_slot(victim, net));
	assert_int_equal(old_fnv_slot(c_network, net), old_fnv_slot("", net));
	for (int round = 0; round < 40 && limited_at < 0; round++) {
		if (guess(victim, ip) != 0)
			limited_at = round;
		guess(c_account, ip);
		guess(c_network, ip);
	}
	assert_int_equal(limited_at, FREE);
}

/* Keys aimed at the victim's set (more than its ways), then more distinct
 * keys than the table has slots: the victim's count, being the largest in
 * its set, is never the one evicted; the evictions are counted. Every key
 * comes from its own network so that no network limit hides a reset. */
static void test_set_pressure_keeps_the_count(void **state)
{
	const char *victim = "valerie", *ip = "203.0.113.5";
	unsigned set = throttle_set_of(victim, ip), mates = 0;
	struct throttle_stats before, after;
	char name[32], addr[64];
	(void)state;

	throttle_stats(&before);
	/* 7 failures (as if the attacker waited out the delays): a 4 s
	 * delay now, far longer than this test runs. */
	for (int i = 0; i < FREE + 2; i++)
		throttle_failed(victim, ip);
	assert_true(throttle_check(victim, ip) >= 1);
	/* 3 x 8 keys in the victim's set, FREE failures each. */
	for (unsigned i = 0; mates < 24; i++) {
		snprintf(name, sizeof(name), "mate%u", i);
		snprintf(addr, sizeof(addr), "10.%u.%u.1", (i >> 8) & 255, i & 255);
		if (throttle_set_of(name, addr) != set)
			continue;
		for (int k = 0; k < FREE; k++)
			guess(name, addr);
		mates++;
		assert_true(throttle_check(victim, ip) >= 1);
	}
	/* 3 x THROTTLE_SLOTS more keys, one failure each, each from its own
	 * network: no flood key counts more than the victim, so its eviction
	 * would be a reset, not chance (networks sharing flood keys would give
	 * counts above the victim's, and 8 of those in its set do evict it). */
	for (unsigned i = 0; i < 3 * THROTTLE_SLOTS; i++) {
		snprintf(name, sizeof(name), "flood%u", i);
		snprintf(addr, sizeof(addr), "11.%u.%u.1", (i >> 8) & 255, i & 255);
		guess(name, addr);
	}
	assert_true(throttle_check(victim, ip) >= 1);
	throttle_stats(&after);
	assert_true(after.evictions > before.evictions);
	assert_true(after.counting <= THROTTLE_SLOTS);
}

/* A flood of keys with as many failures as the victim's count churns its
 * own slots: among equal counts the newest goes. Observable: the victim's
 * 5th failure still finds its first 4 and starts the delay. */
static void test_equal_counts_evict_the_newest(void **state)
{
	const char *victim = "vincent", *ip = "192.0.2.200";
	unsigned set = throttle_set_of(victim, ip), mates = 0;
	char name[32], addr[64];
	(void)state;

	for (int i = 0; i < FREE - 1; i++)
		assert_int_equal(guess(victim, ip), 0);
	for (unsigned i = 0; mates < 40; i++) {
		snprintf(name, sizeof(name), "peer%u", i);
		snprintf(addr, sizeof(addr), "10.%u.%u.1", (i >> 8) & 255, i & 255);
		if (throttle_set_of(name, addr) != set)
			continue;
		for (int k = 0; k < FREE - 1; k++)
			guess(name, addr);
		mates++;
	}
	assert_int_equal(guess(victim, ip), 0);
	assert_true(throttle_check(victim, ip) >= 1);
}

/* Checking takes no slot: only failures fill the table. */
static void test_check_takes_no_slot(void **state)
{
	struct throttle_stats before, after;
	char name[32];
	(void)state;
	throttle_stats(&before);
	for (unsigned i = 0; i < 2 * THROTTLE_SLOTS; i++) {
		snprintf(name, sizeof(name), "probe%u", i);
		assert_int_equal(throttle_check(name, "100.64.0.1"), 0);
	}
	throttle_stats(&after);
	assert_true(after.counting == before.counting);
	assert_true(after.evictions == before.evictions);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_limit_then_success_resets, setup),
	    cmocka_unit_test_setup(test_old_fnv_colliders_do_not_reset, setup),
	    cmocka_unit_test_setup(test_set_pressure_keeps_the_count, setup),
	    cmocka_unit_test_setup(test_equal_counts_evict_the_newest, setup),
	    cmocka_unit_test_setup(test_check_takes_no_slot, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
