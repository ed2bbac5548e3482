/*
 * breach_pwstore_test.c — the offline store (lib/pwstore/pwstore.c):
 * built from the fixture set, every fixture hash is found with its count,
 * 10^5 absent hashes are not, a range returns exactly its bucket, and bad
 * input (duplicates, miscounts, corrupt files) never yields a store.
 * Run from the repository root (as `make unit` does).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "lib/pwstore/pwstore.h"

#define SAMPLE "tests/fixtures/pwned_sample.txt"
#define MAXH 1000

static uint8_t hashes[MAXH][20];
static uint32_t counts[MAXH];
static size_t nhash;
static char dir[] = "/tmp/breach_pwstore_testXXXXXX";
static char path[PATH_MAX];

static uint32_t bucket(const uint8_t *h)
{
	return (uint32_t)h[0] << 12 | (uint32_t)h[1] << 4 | h[2] >> 4;
}

static int build(const char *out, size_t n, const uint8_t (*h)[20], const uint32_t *c)
{
	uint64_t *per = calloc(PWSTORE_BUCKETS, sizeof(*per));
	struct pwstore_writer *w;
	int rv;

	assert_non_null(per);
	for (size_t i = 0; i < n; i++)
		per[bucket(h[i])]++;
	rv = pwstore_writer_open(out, per, &w);
	free(per);
	if (rv != 0)
		return rv;
	/* reverse order: the writer must sort */
	for (size_t i = n; i-- > 0;)
		if ((rv = pwstore_writer_add(w, h[i], c[i])) != 0) {
			pwstore_writer_abort(w);
			return rv;
		}
	return pwstore_writer_commit(w);
}

static int setup(void **state)
{
	char line[128];
	FILE *f = fopen(SAMPLE, "r");
	(void)state;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL) {
		assert_true(nhash < MAXH);
		assert_int_equal(
		    hibp_import_line(line, strlen(line), -1, hashes[nhash], &counts[nhash]), 0);
		nhash++;
	}
	fclose(f);
	assert_true(nhash >= 300);
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/pwned.store", dir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(path);
	rmdir(dir);
	return 0;
}

static void test_every_fixture_hash_found(void **state)
{
	struct pwstore *s;
	uint32_t c;
	(void)state;

	assert_int_equal(build(path, nhash, (const uint8_t(*)[20])hashes, counts), 0);
	assert_int_equal(pwstore_open(path, &s), 0);
	assert_int_equal(pwstore_count(s), nhash);
	for (size_t i = 0; i < nhash; i++) {
		assert_int_equal(pwstore_lookup(s, hashes[i], &c), 0);
		assert_int_equal(c, counts[i]);
	}
	pwstore_unref(s);
}

static void test_absent_hashes_not_found(void **state)
{
	struct pwstore *s;
	uint64_t x = 0x9E3779B97F4A7C15ull;
	uint32_t c;
	(void)state;

	assert_int_equal(pwstore_open(path, &s), 0);
	for (int i = 0; i < 100000; i++) {
		uint8_t h[20];
		for (int k = 0; k < 20; k++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			h[k] = (uint8_t)x;
		}
		if (i % 2 == 0) { /* half share a fixture hash's bucket and 19 bytes */
			memcpy(h, hashes[(size_t)i % nhash], 19);
			h[19] = (uint8_t)(hashes[(size_t)i % nhash][19] ^ (1 + x % 255));
		}
		assert_int_equal(pwstore_lookup(s, h, &c), ERR_NOTFOUND);
	}
	/* the first nibble after the prefix matters too */
	{
		uint8_t h[20];
		memcpy(h, hashes[0], 20);
		h[2] ^= 0x01;
		assert_int_equal(pwstore_lookup(s, h, &c), ERR_NOTFOUND);
	}
	pwstore_unref(s);
}

static void test_range_is_the_bucket(void **state)
{
	struct pwstore *s;
	struct pairs *p;
	uint32_t b = bucket(hashes[0]);
	size_t want = 0;
	(void)state;

	assert_int_equal(pwstore_open(path, &s), 0);
	for (size_t i = 0; i < nhash; i++)
		want += bucket(hashes[i]) == b;
	assert_int_equal(pwstore_range(s, b, &p), 0);
	assert_int_equal(p->n, want);
	for (uint32_t i = 0; i < p->n; i++) {
		bool found = false;
		for (size_t k = 0; k < nhash && !found; k++) {
			uint8_t key[18];
			memcpy(key, hashes[k] + 2, 18);
			key[0] &= 0x0f;
			found = bucket(hashes[k]) == b &&
			        memcmp(key, p->suffixes + i * 18, 18) == 0 &&
			        counts[k] == p->counts[i];
		}
		assert_true(found);
	}
	pairs_unref(p);
	assert_int_equal(pwstore_range(s, 0xFFFFF, &p), 0); /* an empty bucket */
	pairs_unref(p);
	assert_int_equal(pwstore_range(s, 0x100000, &p), ERR_INVAL);
	pwstore_unref(s);
}

static void test_bad_input_leaves_no_store(void **state)
{
	char other[PATH_MAX], tmp[PATH_MAX + 32];
	uint8_t two[2][20];
	uint32_t c2[2] = {1, 2};
	uint64_t *per = calloc(PWSTORE_BUCKETS, sizeof(*per));
	struct pwstore_writer *w;
	struct pwstore *s;
	(void)state;

	snprintf(other, sizeof(other), "%s/other.store", dir);
	memcpy(two[0], hashes[0], 20);
	memcpy(two[1], hashes[0], 20);
	assert_int_equal(build(other, 2, (const uint8_t(*)[20])two, c2), ERR_EXISTS);
	/* fewer than counted */
	per[bucket(hashes[0])] = 2;
	assert_int_equal(pwstore_writer_open(other, per, &w), 0);
	assert_int_equal(pwstore_writer_add(w, hashes[0], 1), 0);
	assert_int_equal(pwstore_writer_commit(w), ERR_INVAL);
	/* more than counted */
	per[bucket(hashes[0])] = 1;
	assert_int_equal(pwstore_writer_open(other, per, &w), 0);
	assert_int_equal(pwstore_writer_add(w, hashes[0], 1), 0);
	assert_int_equal(pwstore_writer_add(w, hashes[0], 1), ERR_INVAL);
	pwstore_writer_abort(w);
	free(per);
	assert_int_equal(access(other, F_OK), -1);
	snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", other, (long)getpid());
	assert_int_equal(access(tmp, F_OK), -1);
	assert_int_equal(pwstore_open(other, &s), ERR_NOTFOUND);
}

static void test_corrupt_file_refused(void **state)
{
	char bad[PATH_MAX];
	struct pwstore *s;
	int fd;
	(void)state;

	snprintf(bad, sizeof(bad), "%s/bad.store", dir);
	/* truncated copy of a good store */
	assert_int_equal(build(bad, nhash, (const uint8_t(*)[20])hashes, counts), 0);
	assert_int_equal(truncate(bad, 64 + 8 * (PWSTORE_BUCKETS + 1) + 10), 0);
	assert_int_equal(pwstore_open(bad, &s), ERR_INVAL);
	/* a bucket offset out of order */
	assert_int_equal(build(bad, nhash, (const uint8_t(*)[20])hashes, counts), 0);
	fd = open(bad, O_WRONLY);
	assert_true(fd >= 0);
	{
		uint64_t huge = 1u << 30;
		assert_int_equal(pwrite(fd, &huge, 8, 64 + 8 * 1000), 8);
	}
	close(fd);
	assert_int_equal(pwstore_open(bad, &s), ERR_INVAL);
	/* not a store at all */
	fd = open(bad, O_WRONLY | O_TRUNC);
	assert_int_equal(write(fd, "hello", 5), 5);
	close(fd);
	assert_int_equal(pwstore_open(bad, &s), ERR_INVAL);
	unlink(bad);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_fixture_hash_found),
	    cmocka_unit_test(test_absent_hashes_not_found),
	    cmocka_unit_test(test_range_is_the_bucket),
	    cmocka_unit_test(test_bad_input_leaves_no_store),
	    cmocka_unit_test(test_corrupt_file_refused),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
