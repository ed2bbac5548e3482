/*
 * siphash_test.c — common/siphash: SipHash-2-4 against the reference
 * vectors (key 00 01 … 0f, message 00 01 … n-1, output bytes as the
 * reference's vectors.h lists them, little-endian): the paper's appendix
 * example (n = 15, 0xa129ca6149be45e5) and lengths around each 8-byte block
 * boundary; and a different key gives a different hash.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "common/siphash.h"

static const struct {
	size_t len;
	uint8_t out[8];
} vectors[] = {
    {0, {0x31, 0x0e, 0x0e, 0xdd, 0x47, 0xdb, 0x6f, 0x72}},
    {1, {0xfd, 0x67, 0xdc, 0x93, 0xc5, 0x39, 0xf8, 0x74}},
    {2, {0x5a, 0x4f, 0xa9, 0xd9, 0x09, 0x80, 0x6c, 0x0d}},
    {3, {0x2d, 0x7e, 0xfb, 0xd7, 0x96, 0x66, 0x67, 0x85}},
    {7, {0x37, 0xd1, 0x01, 0x8b, 0xf5, 0x00, 0x02, 0xab}},
    {8, {0x62, 0x24, 0x93, 0x9a, 0x79, 0xf5, 0xf5, 0x93}},
    {9, {0xb0, 0xe4, 0xa9, 0x0b, 0xdf, 0x82, 0x00, 0x9e}},
    {15, {0xe5, 0x45, 0xbe, 0x49, 0x61, 0xca, 0x29, 0xa1}},
    {16, {0xdb, 0x9b, 0xc2, 0x57, 0x7f, 0xcc, 0x2a, 0x3f}},
    {17, {0x94, 0x47, 0xbe, 0x2c, 0xf5, 0xe9, 0x9a, 0x69}},
    {63, {0x72, 0x45, 0x06, 0xeb, 0x4c, 0x32, 0x8a, 0x95}},
};

static void test_reference_vectors(void **state)
{
	uint8_t key[SIPHASH_KEY_LEN], msg[64];
	(void)state;

	for (int i = 0; i < SIPHASH_KEY_LEN; i++)
		key[i] = (uint8_t)i;
	for (int i = 0; i < 64; i++)
		msg[i] = (uint8_t)i;
	/* The paper's example, as a number. */
	assert_true(siphash24(key, msg, 15) == 0xa129ca6149be45e5ull);
	for (size_t v = 0; v < sizeof(vectors) / sizeof(vectors[0]); v++) {
		uint64_t want = 0;
		for (int b = 7; b >= 0; b--)
			want = want << 8 | vectors[v].out[b];
		assert_true(siphash24(key, msg, vectors[v].len) == want);
	}
}

static void test_key_matters(void **state)
{
	uint8_t k1[SIPHASH_KEY_LEN] = {0}, k2[SIPHASH_KEY_LEN] = {0};
	(void)state;
	k2[15] = 1;
	assert_true(siphash24(k1, "victim", 6) != siphash24(k2, "victim", 6));
	assert_true(siphash24(k1, "victim", 6) != siphash24(k1, "victin", 6));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reference_vectors),
	    cmocka_unit_test(test_key_matters),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
