/*
 * breach_check_test.c — the caller's helper (common/breach_check.c): the
 * SHA-1 prefix, the suffix search that finds a match wherever it sits and
 * only an exact one, length checks, and the wipe.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "common/breach_check.h"
#include "common/err.h"

#define N 64

/* "password" = 5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8 */
static const uint8_t pw_suffix[18] = {0x01, 0xE4, 0xC9, 0xB9, 0x3F, 0x3F, 0x06, 0x82, 0x25,
                                      0x0B, 0x6C, 0xF8, 0x33, 0x1B, 0x7E, 0xE6, 0x8F, 0xD8};

static void fill(uint8_t *suf, uint32_t *counts)
{
	for (int i = 0; i < N; i++) {
		memcpy(suf + i * 18, pw_suffix, 18);
		suf[i * 18 + 17] ^= (uint8_t)(i + 1); /* near misses: differ in the last byte */
		counts[i] = 1000 + (uint32_t)i;
	}
}

static void test_prefix_and_hash(void **state)
{
	struct breach_check bc;
	(void)state;

	assert_int_equal(breach_check_init(&bc, "password", 8), 0);
	assert_string_equal(bc.prefix, "5BAA6");
	assert_int_equal(bc.hash[0], 0x5B);
	assert_int_equal(bc.hash[19], 0xD8);
	breach_check_fini(&bc);
	for (size_t i = 0; i < sizeof(bc); i++)
		assert_int_equal(((unsigned char *)&bc)[i], 0);
	/* the empty password hashes too (the caller decides whether it is allowed) */
	assert_int_equal(breach_check_init(&bc, "", 0), 0);
	assert_string_equal(bc.prefix, "DA39A");
	breach_check_fini(&bc);
}

static void test_found_at_every_position(void **state)
{
	struct breach_check bc;
	uint8_t suf[N * 18];
	uint32_t counts[N];
	uint64_t count;
	(void)state;

	assert_int_equal(breach_check_init(&bc, "password", 8), 0);
	for (int at = 0; at < N; at++) {
		fill(suf, counts);
		memcpy(suf + at * 18, pw_suffix, 18);
		counts[at] = 9545824;
		assert_int_equal(breach_check_count(&bc, suf, sizeof(suf), counts, N, &count), 0);
		assert_int_equal(count, 9545824);
	}
	fill(suf, counts);
	assert_int_equal(breach_check_count(&bc, suf, sizeof(suf), counts, N, &count), 0);
	assert_int_equal(count, 0);
	/* each single byte differing is a miss, including the first nibble */
	for (int k = 0; k < 18; k++) {
		uint8_t one[18];
		uint32_t c1 = 5;
		memcpy(one, pw_suffix, 18);
		one[k] ^= k == 0 ? 0x08 : 0x80;
		assert_int_equal(breach_check_count(&bc, one, 18, &c1, 1, &count), 0);
		assert_int_equal(count, 0);
	}
	/* an empty range: nothing breached */
	assert_int_equal(breach_check_count(&bc, NULL, 0, NULL, 0, &count), 0);
	assert_int_equal(count, 0);
	breach_check_fini(&bc);
}

static void test_lengths_must_agree(void **state)
{
	struct breach_check bc;
	uint8_t suf[2 * 18] = {0};
	uint32_t counts[2] = {1, 2};
	uint64_t count = 77;
	(void)state;

	assert_int_equal(breach_check_init(&bc, "password", 8), 0);
	assert_int_equal(breach_check_count(&bc, suf, 35, counts, 2, &count), ERR_INVAL);
	assert_int_equal(count, 0);
	assert_int_equal(breach_check_count(&bc, suf, 36, counts, 3, &count), ERR_INVAL);
	assert_int_equal(breach_check_count(&bc, NULL, 18, counts, 1, &count), ERR_INVAL);
	breach_check_fini(&bc);
}

static void test_reply(void **state)
{
	Magnetar__RangeReply r = MAGNETAR__RANGE_REPLY__INIT;
	struct breach_check bc;
	uint8_t suf[18];
	uint32_t counts[1] = {42};
	uint64_t count;
	(void)state;

	memcpy(suf, pw_suffix, 18);
	r.source = "cache";
	r.suffixes.data = suf;
	r.suffixes.len = 18;
	r.counts = counts;
	r.n_counts = 1;
	assert_int_equal(breach_check_init(&bc, "password", 8), 0);
	assert_int_equal(breach_check_reply(&bc, &r, &count), 0);
	assert_int_equal(count, 42);
	breach_check_fini(&bc);
	assert_int_equal(breach_check_init(&bc, "Password", 8), 0);
	assert_int_equal(breach_check_reply(&bc, &r, &count), 0);
	assert_int_equal(count, 0);
	breach_check_fini(&bc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_prefix_and_hash),
	    cmocka_unit_test(test_found_at_every_position),
	    cmocka_unit_test(test_lengths_must_agree),
	    cmocka_unit_test(test_reply),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
