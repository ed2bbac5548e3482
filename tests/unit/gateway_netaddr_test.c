/*
 * gateway_netaddr_test.c — gateway/netaddr.c: address and CIDR parsing, and
 * the client address behind trusted proxies (right-most untrusted hop).
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

static void fmt(const struct netaddr *a, char *out)
{
	netaddr_format(a, out);
}

static void test_parse(void **state)
{
	struct netaddr a;
	char s[NETADDR_STRLEN];
	(void)state;

	assert_int_equal(netaddr_parse("192.0.2.1", 9, &a), 0);
	fmt(&a, s);
	assert_string_equal(s, "192.0.2.1");
	assert_int_equal(netaddr_parse("2001:DB8::1", 11, &a), 0);
	fmt(&a, s);
	assert_string_equal(s, "2001:db8::1");
	assert_int_equal(netaddr_parse("::ffff:192.0.2.1", 16, &a), 0);
	fmt(&a, s);
	assert_string_equal(s, "192.0.2.1"); /* one key for both spellings */
	const char *bad[] = {"",         "1.2.3",   "1.2.3.4.5",    "256.1.1.1", "01.2.3.4",
	                     "1.2.3.4 ", "unknown", "fe80::1%eth0", "::g",       "1.2.3.4/8"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(netaddr_parse(bad[i], strlen(bad[i]), &a), ERR_INVAL);
	/* A NUL inside the span is not a literal. */
	assert_int_equal(netaddr_parse("1.2.3.4\0", 8, &a), ERR_INVAL);
}

static void test_parse_hop(void **state)
{
	struct netaddr a;
	char s[NETADDR_STRLEN];
	(void)state;

	const char *ok[][2] = {{"192.0.2.1:8080", "192.0.2.1"},
	                       {"[2001:db8::1]:4711", "2001:db8::1"},
	                       {"[2001:db8::1]", "2001:db8::1"},
	                       {"2001:db8::1", "2001:db8::1"}};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		assert_int_equal(netaddr_parse_hop(ok[i][0], strlen(ok[i][0]), &a), 0);
		fmt(&a, s);
		assert_string_equal(s, ok[i][1]);
	}
	const char *bad[] = {"[192.0.2.1]",    "192.0.2.1:",     "192.0.2.1:0", "192.0.2.1:70000",
	                     "[2001:db8::1]x", "[2001:db8::1]:", "[::1",        "_hidden",
	                     "unknown"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(netaddr_parse_hop(bad[i], strlen(bad[i]), &a), ERR_INVAL);
}

static void test_cidrs(void **state)
{
	struct netaddr_cidr c[8];
	struct netaddr a;
	size_t n;
	(void)state;

	assert_int_equal(netaddr_cidrs_parse(" 10.0.0.0/8, 192.0.2.7 ,2001:db8::/32,", c, 8, &n),
	                 0);
	assert_int_equal(n, 3);
	netaddr_parse("10.255.1.2", 10, &a);
	assert_true(netaddr_cidrs_match(c, n, &a));
	netaddr_parse("11.0.0.1", 8, &a);
	assert_false(netaddr_cidrs_match(c, n, &a));
	netaddr_parse("192.0.2.7", 9, &a);
	assert_true(netaddr_cidrs_match(c, n, &a));
	netaddr_parse("192.0.2.8", 9, &a);
	assert_false(netaddr_cidrs_match(c, n, &a));
	netaddr_parse("2001:db8:ffff::1", 16, &a);
	assert_true(netaddr_cidrs_match(c, n, &a));
	netaddr_parse("2001:db9::1", 11, &a);
	assert_false(netaddr_cidrs_match(c, n, &a));
	/* An IPv4 /0 is all of IPv4, not all of IPv6. */
	assert_int_equal(netaddr_cidrs_parse("0.0.0.0/0", c, 8, &n), 0);
	netaddr_parse("2001:db8::1", 11, &a);
	assert_false(netaddr_cidrs_match(c, n, &a));
	assert_int_equal(netaddr_cidrs_parse("", c, 8, &n), 0);
	assert_int_equal(n, 0);
	const char *bad[] = {"10.0.0.0/33", "::/129",      "10.0.0.0/", "10.0.0.0/x",
	                     "host",        "1.2.3.4/8/8", "1,2"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(netaddr_cidrs_parse(bad[i], c, 8, &n), ERR_INVAL);
	assert_int_equal(netaddr_cidrs_parse("1.1.1.1,2.2.2.2,3.3.3.3", c, 2, &n), ERR_INVAL);
}

/* The client for `peer` with header `v` under trusted 10.0.0.0/8 + ::1. */
static void client(const char *peer, enum netaddr_header kind, const char *v, const char *want)
{
	struct netaddr_cidr c[4];
	struct netaddr p, out;
	char s[NETADDR_STRLEN];
	size_t n;

	assert_int_equal(netaddr_cidrs_parse("10.0.0.0/8, ::1", c, 4, &n), 0);
	assert_int_equal(netaddr_parse(peer, strlen(peer), &p), 0);
	netaddr_client(&p, c, n, kind, v, v != NULL ? strlen(v) : 0, &out);
	fmt(&out, s);
	assert_string_equal(s, want);
}

static void test_client_xff(void **state)
{
	(void)state;
	/* Untrusted peer: the header is never read. */
	client("192.0.2.1", NETADDR_XFF, "203.0.113.9", "192.0.2.1");
	/* Trusted peer, no header: the proxy itself. */
	client("10.0.0.1", NETADDR_XFF, NULL, "10.0.0.1");
	client("10.0.0.1", NETADDR_XFF, "203.0.113.9", "203.0.113.9");
	/* The right-most untrusted hop; what a client forged on the left is ignored. */
	client("10.0.0.1", NETADDR_XFF, "1.1.1.1, 203.0.113.9", "203.0.113.9");
	client("10.0.0.1", NETADDR_XFF, "1.1.1.1, 203.0.113.9, 10.0.0.2", "203.0.113.9");
	client("10.0.0.1", NETADDR_XFF, "203.0.113.9,10.1.1.1,10.0.0.2", "203.0.113.9");
	/* Every hop trusted: the left-most. */
	client("10.0.0.1", NETADDR_XFF, "10.9.9.9, 10.0.0.2", "10.9.9.9");
	/* An unreadable hop ends the walk at the trusted proxy in hand. */
	client("10.0.0.1", NETADDR_XFF, "203.0.113.9, garbage", "10.0.0.1");
	client("10.0.0.1", NETADDR_XFF, "203.0.113.9, garbage, 10.0.0.3", "10.0.0.3");
	client("10.0.0.1", NETADDR_XFF, "", "10.0.0.1");
	client("10.0.0.1", NETADDR_XFF, "203.0.113.9,,", "10.0.0.1");
	client("::1", NETADDR_XFF, "2001:db8::5", "2001:db8::5");
	client("10.0.0.1", NETADDR_XFF, "[2001:db8::5]:443", "2001:db8::5");
}

static void test_client_forwarded(void **state)
{
	(void)state;
	client("10.0.0.1", NETADDR_FORWARDED, "for=192.0.2.60;proto=http;by=203.0.113.43",
	       "192.0.2.60");
	client("10.0.0.1", NETADDR_FORWARDED, "for=192.0.2.43, for=\"[2001:db8:cafe::17]:4711\"",
	       "2001:db8:cafe::17");
	client("10.0.0.1", NETADDR_FORWARDED, "For=\"1.1.1.1\", for=10.0.0.9", "1.1.1.1");
	/* Obfuscated or unknown nodes, elements without for=, bad quoting. */
	client("10.0.0.1", NETADDR_FORWARDED, "for=_hidden", "10.0.0.1");
	client("10.0.0.1", NETADDR_FORWARDED, "for=unknown", "10.0.0.1");
	client("10.0.0.1", NETADDR_FORWARDED, "proto=https", "10.0.0.1");
	client("10.0.0.1", NETADDR_FORWARDED, "for=\"1.1.1.1", "10.0.0.1");
	client("10.0.0.1", NETADDR_FORWARDED, "for=\"1.1.\\1.1\"", "10.0.0.1");
	/* A comma inside quotes does not split elements. */
	client("10.0.0.1", NETADDR_FORWARDED, "for=1.2.3.4;x=\"a,b\"", "1.2.3.4");
}

static void test_many_hops(void **state)
{
	char v[4096];
	size_t used = 0;
	(void)state;
	/* More hops than kept: only the right-most NETADDR_MAX_HOPS are looked at. */
	for (int i = 0; i < 200; i++)
		used += (size_t)snprintf(v + used, sizeof(v) - used, "%s10.0.%d.%d", i ? "," : "",
		                         i / 250, i % 250);
	client("10.0.0.1", NETADDR_XFF, v, "10.0.0.136");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse),
	    cmocka_unit_test(test_parse_hop),
	    cmocka_unit_test(test_cidrs),
	    cmocka_unit_test(test_client_xff),
	    cmocka_unit_test(test_client_forwarded),
	    cmocka_unit_test(test_many_hops),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
