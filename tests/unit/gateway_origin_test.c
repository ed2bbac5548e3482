/*
 * gateway_origin_test.c — gateway/origin.c: serialised origins and the CORS
 * allow-list; look-alikes, other schemes or ports, paths never match.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "common/err.h"
#include "gateway/policy.h"

static bool listed(const struct origin_list *l, const char *o)
{
	return origin_listed(l, o, strlen(o));
}

static void test_parse(void **state)
{
	struct origin o;
	(void)state;

	assert_int_equal(origin_parse("HTTPS://App.Example.COM", 23, &o), 0);
	assert_true(o.https);
	assert_string_equal(o.host, "app.example.com");
	assert_int_equal(o.port, 443);
	assert_int_equal(origin_parse("http://localhost:3000", 21, &o), 0);
	assert_false(o.https);
	assert_int_equal(o.port, 3000);
	assert_int_equal(origin_parse("http://[::1]:8080", 17, &o), 0);
	assert_string_equal(o.host, "[::1]");
	const char *bad[] = {"null",
	                     "",
	                     "https://",
	                     "https://a/",
	                     "https://a/x",
	                     "https://a?x",
	                     "https://a#x",
	                     "https://u@a",
	                     "https://a:",
	                     "https://a:0",
	                     "https://a:65536",
	                     "https://a:080",
	                     "https://a:+80",
	                     "ftp://a",
	                     "wss://a",
	                     "https:/a",
	                     "https://a b",
	                     " https://a",
	                     "https://.a",
	                     "https://[]",
	                     "https://[::1",
	                     "https://a\\@b"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(origin_parse(bad[i], strlen(bad[i]), &o), ERR_INVAL);
}

static void test_list(void **state)
{
	struct origin_list l;
	(void)state;

	assert_int_equal(origin_list_parse("https://app.example.com, http://localhost:3000", &l),
	                 0);
	assert_true(l.enabled);
	assert_int_equal(l.n, 2);
	assert_true(listed(&l, "https://app.example.com"));
	assert_true(listed(&l, "https://APP.example.com"));
	assert_true(listed(&l, "HTTPS://app.example.com:443"));
	assert_true(listed(&l, "http://localhost:3000"));
	const char *no[] = {"null",
	                    "https://app.example.com.evil.net",
	                    "https://evilapp.example.com",
	                    "https://app.example.co",
	                    "https://app.example.com.",
	                    "http://app.example.com",
	                    "https://app.example.com:8443",
	                    "https://app.example.com/",
	                    "https://app.example.com/path",
	                    "https://evil.net/https://app.example.com",
	                    "https://app.example.com@evil.net",
	                    "http://localhost",
	                    "http://localhost:30000",
	                    "https://localhost:3000",
	                    "*"};
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		assert_false(listed(&l, no[i]));
	origin_list_fini(&l);

	/* "*" is noted, but matches nothing itself (cors.c decides). */
	assert_int_equal(origin_list_parse("*", &l), 0);
	assert_true(l.any);
	assert_false(listed(&l, "https://a.example"));
	origin_list_fini(&l);
	/* Unset: off. Set but empty: on with nothing listed. */
	assert_int_equal(origin_list_parse(NULL, &l), 0);
	assert_false(l.enabled);
	assert_int_equal(origin_list_parse("", &l), 0);
	assert_true(l.enabled);
	assert_int_equal(l.n, 0);
	origin_list_fini(&l);
	assert_int_equal(origin_list_parse("https://a.example, null", &l), ERR_INVAL);
	assert_int_equal(origin_list_parse("https://a.example/", &l), ERR_INVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse),
	    cmocka_unit_test(test_list),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
