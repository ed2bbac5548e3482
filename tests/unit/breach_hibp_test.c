/*
 * breach_hibp_test.c — the strict Pwned Passwords parsers (lib/pwstore/
 * hibp.c): a range body is taken whole or not at all, padding never counts,
 * and import lines and prefixes accept exactly their formats.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "lib/pwstore/pwstore.h"

#define S1 "1E4C9B93F3F0682250B6CF8331B7EE68FD8" /* "password" after 5BAA6 */
#define S2 "00000000000000000000000000000000001"
#define PAD "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"

static int parse(const char *body, struct pairs **p, uint32_t *pad)
{
	return hibp_parse(body, strlen(body), p, pad);
}

static void test_good_body(void **state)
{
	struct pairs *p;
	uint32_t pad = 99;
	(void)state;

	assert_int_equal(parse(S1 ":9545824\r\n" S2 ":3", &p, &pad), 0);
	assert_int_equal(p->n, 2);
	assert_int_equal(pad, 0);
	assert_int_equal(p->counts[0], 9545824);
	assert_int_equal(p->counts[1], 3);
	/* 35 hex digits sit in 18 bytes: the first byte holds one nibble */
	assert_int_equal(p->suffixes[0], 0x01);
	assert_int_equal(p->suffixes[1], 0xE4);
	assert_int_equal(p->suffixes[17], 0xD8);
	assert_int_equal(p->suffixes[PAIRS_SUFFIX_LEN + 17], 0x01);
	pairs_unref(p);
	/* LF only, trailing terminator, lower case */
	assert_int_equal(parse("1e4c9b93f3f0682250b6cf8331b7ee68fd8:1\n", &p, NULL), 0);
	assert_int_equal(p->n, 1);
	assert_int_equal(p->suffixes[1], 0xE4);
	pairs_unref(p);
}

static void test_padding_dropped(void **state)
{
	struct pairs *p;
	uint32_t pad;
	(void)state;

	assert_int_equal(parse(S2 ":0\r\n" S1 ":12\r\n" PAD ":0\r\n", &p, &pad), 0);
	assert_int_equal(p->n, 1);
	assert_int_equal(pad, 2);
	assert_int_equal(p->counts[0], 12);
	pairs_unref(p);
	/* only padding: a valid range in which nothing is breached */
	assert_int_equal(parse(PAD ":0", &p, &pad), 0);
	assert_int_equal(p->n, 0);
	assert_int_equal(pad, 1);
	pairs_unref(p);
}

static void expect_bad(const char *body)
{
	struct pairs *p = (struct pairs *)1;
	assert_int_equal(hibp_parse(body, strlen(body), &p, NULL), ERR_INVAL);
	assert_null(p);
}

static void test_malformed(void **state)
{
	(void)state;
	expect_bad("");                      /* empty */
	expect_bad("\r\n");                  /* empty line */
	expect_bad(S1 ":1\r\n\r\n" S2 ":1"); /* empty line inside */
	expect_bad(S1 ":1\r\n"
	              "1E4C9B93F3F0682250B6CF");             /* truncated in a suffix */
	expect_bad(S1 ":1\r\n" S2 ":");                      /* truncated before the count */
	expect_bad(S1 ":1\r\n" S2);                          /* truncated at the colon */
	expect_bad(S1 "9545824");                            /* missing colon */
	expect_bad(S1 ";9545824");                           /* wrong separator */
	expect_bad("1E4C9B93F3F0682250B6CF8331B7EE68FDG:1"); /* non-hex */
	expect_bad("1E4C9B93F3F0682250B6CF8331B7EE68FD:1");  /* 34 digits */
	expect_bad(S1 "8:1");                                /* 36 digits */
	expect_bad(S1 ":12345678901");                       /* 11 digits */
	expect_bad(S1 ":4294967296");                        /* > UINT32_MAX */
	expect_bad(S1 ":99999999999999999999999999");        /* huge */
	expect_bad(S1 ":-1");
	expect_bad(S1 ":+1");
	expect_bad(S1 ": 1");
	expect_bad(S1 ":1 ");
	expect_bad(S1 ":1\r");    /* lone CR at the end */
	expect_bad(S1 ":1\rX\n"); /* lone CR inside */
	expect_bad("<html>this is not a range</html>\r\n");
	{
		/* an over-long line: valid prefix, then far too much */
		char big[200];
		memset(big, '1', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		memcpy(big, S1 ":", 36);
		expect_bad(big);
	}
	{
		/* embedded NUL is not a digit */
		static const char body[] = S1 ":1\0"
		                              "2";
		struct pairs *p;
		assert_int_equal(hibp_parse(body, sizeof(body) - 1, &p, NULL), ERR_INVAL);
	}
}

static void test_max_count_and_limit(void **state)
{
	struct pairs *p;
	char *body;
	size_t line = 35 + 2 + 2, n = PAIRS_MAX + 1;
	(void)state;

	assert_int_equal(parse(S1 ":4294967295", &p, NULL), 0);
	assert_int_equal(p->counts[0], UINT32_MAX);
	pairs_unref(p);
	/* more lines than any real range: refused, not allocated */
	body = malloc(n * line + 1);
	assert_non_null(body);
	for (size_t i = 0; i < n; i++)
		snprintf(body + i * line, line + 1, "%035zX:1\r\n", i);
	assert_int_equal(hibp_parse(body, n * line, &p, NULL), ERR_INVAL);
	assert_int_equal(hibp_parse(body, (n - 1) * line, &p, NULL), 0);
	assert_int_equal(p->n, PAIRS_MAX);
	pairs_unref(p);
	free(body);
}

static void test_import_line(void **state)
{
	uint8_t h[20];
	uint32_t c;
	(void)state;

	assert_int_equal(
	    hibp_import_line("5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8:9545824\r\n", 50, -1, h, &c),
	    0);
	assert_int_equal(c, 9545824);
	assert_int_equal(h[0], 0x5B);
	assert_int_equal(h[2], 0x61);
	assert_int_equal(h[19], 0xD8);
	memset(h, 0, sizeof(h));
	assert_int_equal(hibp_import_line(S1 ":7\n", 38, 0x5BAA6, h, &c), 0);
	assert_int_equal(c, 7);
	assert_int_equal(h[0], 0x5B);
	assert_int_equal(h[1], 0xAA);
	assert_int_equal(h[2], 0x61);
	assert_int_equal(h[3], 0xE4);
	assert_int_equal(h[19], 0xD8);
	/* the wrong form for the file, or garbage */
	assert_int_equal(hibp_import_line(S1 ":7", 37, -1, h, &c), ERR_INVAL);
	assert_int_equal(
	    hibp_import_line("5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8:1", 42, 0x5BAA6, h, &c),
	    ERR_INVAL);
	assert_int_equal(
	    hibp_import_line("5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8", 40, -1, h, &c), ERR_INVAL);
	assert_int_equal(hibp_import_line(S1 ":7", 37, 0x100000, h, &c), ERR_INVAL);
}

static void test_prefix(void **state)
{
	uint32_t p;
	(void)state;

	assert_int_equal(hibp_prefix("5BAA6", 5, &p), 0);
	assert_int_equal(p, 0x5BAA6);
	assert_int_equal(hibp_prefix("5baa6", 5, &p), 0);
	assert_int_equal(p, 0x5BAA6);
	assert_int_equal(hibp_prefix("5BAA", 4, &p), ERR_INVAL);
	assert_int_equal(hibp_prefix("5BAA61", 6, &p), ERR_INVAL);
	assert_int_equal(hibp_prefix("5BAAG", 5, &p), ERR_INVAL);
	assert_int_equal(hibp_prefix("5BA\0"
	                             "6",
	                             5, &p),
	                 ERR_INVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good_body),   cmocka_unit_test(test_padding_dropped),
	    cmocka_unit_test(test_malformed),   cmocka_unit_test(test_max_count_and_limit),
	    cmocka_unit_test(test_import_line), cmocka_unit_test(test_prefix),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
