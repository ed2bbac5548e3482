/*
 * lenframe_test.c — common/lenframe over a real socket pair: messages cut
 * anywhere by the stream come out whole and in order, a zero or too long
 * length is refused (the caller hangs up), the peer's end is seen, and a
 * reader holding a whole message reads nothing more until it is taken;
 * the terminal stream's hello, as the gateway writes it and the terminal
 * service checks it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/err.h"
#include "common/lenframe.h"

static void put(int fd, const char *msg)
{
	uint8_t hdr[LENFRAME_HDR];
	lenframe_header(hdr, (uint32_t)strlen(msg));
	assert_int_equal(write(fd, hdr, sizeof(hdr)), (ssize_t)sizeof(hdr));
	assert_int_equal(write(fd, msg, strlen(msg)), (ssize_t)strlen(msg));
}

static void test_messages_cut_anywhere_come_out_whole(void **state)
{
	struct lenframe_reader r;
	uint8_t stream[64];
	const uint8_t *msg;
	size_t len, n = 0;
	char seen[64] = "";
	(void)state;

	/* "ab", "c", "defg" as one stream, fed a byte at a time. */
	lenframe_header(stream, 2);
	memcpy(stream + 4, "ab", 2);
	lenframe_header(stream + 6, 1);
	stream[10] = 'c';
	lenframe_header(stream + 11, 4);
	memcpy(stream + 15, "defg", 4);
	assert_int_equal(lenframe_reader_init(&r, 16), 0);
	for (size_t i = 0; i < 19; i++) {
		assert_int_equal(lenframe_add(&r, stream + i, 1), 1);
		while (lenframe_next(&r, &msg, &len) == 1) {
			memcpy(seen + n, msg, len);
			n += len;
			seen[n++] = '|';
		}
	}
	seen[n] = '\0';
	assert_string_equal(seen, "ab|c|defg|");
	assert_int_equal(lenframe_next(&r, &msg, &len), 0);
	lenframe_reader_fini(&r);
}

static void test_zero_and_too_long_lengths_are_refused(void **state)
{
	struct lenframe_reader r;
	uint8_t hdr[LENFRAME_HDR];
	const uint8_t *msg;
	size_t len;
	(void)state;

	assert_int_equal(lenframe_reader_init(&r, 16), 0);
	lenframe_header(hdr, 0);
	lenframe_add(&r, hdr, sizeof(hdr));
	assert_int_equal(lenframe_next(&r, &msg, &len), ERR_INVAL);
	lenframe_reader_fini(&r);

	assert_int_equal(lenframe_reader_init(&r, 16), 0);
	lenframe_header(hdr, 17);
	lenframe_add(&r, hdr, sizeof(hdr));
	assert_int_equal(lenframe_next(&r, &msg, &len), ERR_INVAL);
	lenframe_reader_fini(&r);
}

static void test_over_a_socket_with_the_peers_end(void **state)
{
	struct lenframe_reader r;
	const uint8_t *msg;
	size_t len;
	int sv[2];
	(void)state;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(lenframe_reader_init(&r, 8), 0);
	put(sv[1], "12345678"); /* exactly the maximum */
	put(sv[1], "x");
	close(sv[1]);
	/* The buffer holds one header and one largest message: the first
	 * fill stops there, and fills again only once it is taken. */
	assert_true(lenframe_fill(&r, sv[0]) > 0);
	assert_int_equal(lenframe_next(&r, &msg, &len), 1);
	assert_int_equal(len, 8);
	assert_memory_equal(msg, "12345678", 8);
	assert_int_equal(lenframe_next(&r, &msg, &len), 0);
	assert_true(lenframe_fill(&r, sv[0]) > 0);
	assert_int_equal(lenframe_next(&r, &msg, &len), 1);
	assert_int_equal(len, 1);
	assert_int_equal(msg[0], 'x');
	assert_int_equal(lenframe_fill(&r, sv[0]), 0); /* the peer's end */
	lenframe_reader_fini(&r);
	close(sv[0]);
}

static void test_a_waiting_whole_message_stops_reading(void **state)
{
	struct lenframe_reader r;
	uint8_t buf[LENFRAME_HDR + 4];
	const uint8_t *msg;
	size_t len;
	int sv[2];
	(void)state;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(lenframe_reader_init(&r, 4), 0);
	lenframe_header(buf, 4);
	memcpy(buf + LENFRAME_HDR, "abcd", 4);
	assert_int_equal(lenframe_add(&r, buf, sizeof(buf)), sizeof(buf));
	/* Full: a fill reads nothing, whatever the socket holds. */
	put(sv[1], "z");
	errno = 0;
	assert_int_equal(lenframe_fill(&r, sv[0]), -1);
	assert_int_equal(errno, ENOBUFS);
	assert_int_equal(lenframe_next(&r, &msg, &len), 1);
	assert_true(lenframe_fill(&r, sv[0]) > 0);
	assert_int_equal(lenframe_next(&r, &msg, &len), 1);
	assert_int_equal(msg[0], 'z');
	lenframe_reader_fini(&r);
	close(sv[0]);
	close(sv[1]);
}

static void test_the_hello_both_ends_share(void **state)
{
	static const char hex[] = "0123456789abcdef0123456789abcdef";
	uint8_t key[LENFRAME_HELLO_KEY], hello[LENFRAME_HELLO];
	char id[LENFRAME_HELLO_ID + 1];
	const uint8_t *got;
	(void)state;

	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t)(i * 7);
	lenframe_hello(hello, hex, key);
	assert_int_equal(lenframe_hello_parse(hello, id, &got), 0);
	assert_string_equal(id, hex);
	assert_memory_equal(got, key, sizeof(key));
	/* Anything else is refused: another kind, an id not lowercase hex, a
	 * length that is not the hello's. */
	hello[LENFRAME_HDR] = '0';
	assert_int_equal(lenframe_hello_parse(hello, id, &got), ERR_INVAL);
	lenframe_hello(hello, hex, key);
	hello[LENFRAME_HDR + 1] = 'A';
	assert_int_equal(lenframe_hello_parse(hello, id, &got), ERR_INVAL);
	lenframe_hello(hello, hex, key);
	hello[LENFRAME_HDR - 1]++;
	assert_int_equal(lenframe_hello_parse(hello, id, &got), ERR_INVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_messages_cut_anywhere_come_out_whole),
	    cmocka_unit_test(test_zero_and_too_long_lengths_are_refused),
	    cmocka_unit_test(test_over_a_socket_with_the_peers_end),
	    cmocka_unit_test(test_a_waiting_whole_message_stops_reading),
	    cmocka_unit_test(test_the_hello_both_ends_share),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
