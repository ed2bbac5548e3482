/*
 * audit_escape_test.c — how audit fields reach a terminal (common/jsonesc,
 * used by magctl audit query/export/tail): a newline cannot start a second
 * JSON line, ESC and C1 controls (the CSI of ANSI sequences) and DEL come
 * out as \u escapes, invalid UTF-8 as \ufffd, and the output is printable
 * ASCII whatever the input. A NUL cannot be inside a field at all: the
 * protobuf-c C strings end there.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "common/jsonesc.h"

static void check(const char *in, const char *want)
{
	char out[256];
	size_t n = jsonesc_str(out, sizeof(out), in);
	assert_int_equal(n, strlen(want));
	assert_string_equal(out, want);
}

static void test_escapes(void **state)
{
	(void)state;
	check("plain text", "\"plain text\"");
	check(NULL, "\"\"");
	check("a\nb", "\"a\\nb\"");
	check("x\"}\n{\"action\":\"forged", "\"x\\\"}\\n{\\\"action\\\":\\\"forged\"");
	check("\x1b[2J\x1b]0;title\x07", "\"\\u001b[2J\\u001b]0;title\\u0007\"");
	check("cr\rdel\x7f", "\"cr\\u000ddel\\u007f\"");
	check("back\\slash\ttab", "\"back\\\\slash\\ttab\"");
	check("\xc2\x9b"
	      "31m",
	      "\"\\u009b31m\""); /* C1 CSI */
	check("caf\xc3\xa9", "\"caf\\u00e9\"");
	check("\xf0\x9f\x94\x91", "\"\\ud83d\\udd11\"");    /* outside the BMP */
	check("\xff\xc0\xaf", "\"\\ufffd\\ufffd\\ufffd\""); /* invalid, overlong */
	check("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""); /* a UTF-16 surrogate */
	check("\xe2\x82", "\"\\ufffd\\ufffd\"");            /* cut short */
}

static void test_output_is_printable_ascii(void **state)
{
	char in[256], out[2048];
	(void)state;
	for (int i = 0; i < 255; i++)
		in[i] = (char)(i + 1);
	in[255] = '\0';
	jsonesc_str(out, sizeof(out), in);
	for (char *p = out; *p != '\0'; p++)
		assert_true(*p >= 0x20 && *p < 0x7f);
	/* Truncation keeps a terminated string and reports the full need. */
	assert_int_equal(jsonesc_str(out, 4, "abcdef"), 8);
	assert_string_equal(out, "\"ab");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_escapes),
	    cmocka_unit_test(test_output_is_printable_ascii),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
