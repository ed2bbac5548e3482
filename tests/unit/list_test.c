/*
 * list_test.c — common/list: how every comma-separated list of the project
 * (environment values, header values) is read.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "common/list.h"

/* The items of `list`, each in [], for one comparison. */
static void items(const char *list, char *out, size_t cap)
{
	const char *item;
	size_t len, used = 0;

	out[0] = '\0';
	while (list_next(&list, &item, &len)) {
		assert_true(used + len + 3 <= cap);
		out[used++] = '[';
		memcpy(out + used, item, len);
		used += len;
		out[used++] = ']';
		out[used] = '\0';
	}
}

static void test_items_are_trimmed_and_empty_ones_skipped(void **state)
{
	char buf[128];
	(void)state;
	items("a, b,,c ", buf, sizeof(buf));
	assert_string_equal(buf, "[a][b][c]");
	items("\t keep-alive ,\tUpgrade\t", buf, sizeof(buf));
	assert_string_equal(buf, "[keep-alive][Upgrade]");
	items("one", buf, sizeof(buf));
	assert_string_equal(buf, "[one]");
	items("a b, c", buf, sizeof(buf)); /* inner blanks stay */
	assert_string_equal(buf, "[a b][c]");
}

static void test_empty_lists(void **state)
{
	char buf[16];
	(void)state;
	items("", buf, sizeof(buf));
	assert_string_equal(buf, "");
	items(" , ,\t,", buf, sizeof(buf));
	assert_string_equal(buf, "");
	assert_int_equal(list_count(NULL), 0);
	assert_int_equal(list_count(",,"), 0);
	assert_int_equal(list_count("x,,y, z"), 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_items_are_trimmed_and_empty_ones_skipped),
	    cmocka_unit_test(test_empty_lists),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
