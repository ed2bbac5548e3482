/*
 * gateway_idem_test.c — the Idempotency-Key syntax of docs/api.md (1-255
 * printable ASCII), as gateway/idem.c checks it before any handler runs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "gateway/policy.h"

static void test_keys(void **state)
{
	char k[300];
	(void)state;

	assert_true(idem_key_valid("a"));
	assert_true(idem_key_valid("5f0c6b8e-2f7e-4a55-9d1c-0a9a4b3b2c1d"));
	assert_true(idem_key_valid("with space and ~!@#$%^&*()"));
	memset(k, 'x', 255);
	k[255] = '\0';
	assert_true(idem_key_valid(k));
	k[255] = 'x';
	k[256] = '\0';
	assert_false(idem_key_valid(k));
	assert_false(idem_key_valid(""));
	assert_false(idem_key_valid(NULL));
	assert_false(idem_key_valid("tab\there"));
	assert_false(idem_key_valid("nl\n"));
	assert_false(idem_key_valid("del\x7f"));
	assert_false(idem_key_valid("caf\xc3\xa9"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
