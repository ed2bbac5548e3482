/*
 * siphash.c — SipHash-2-4, after the reference implementation by
 * Aumasson and Bernstein (CC0). Checked against the paper's vectors in
 * tests/unit/siphash_test.c.
 */
#include "common/siphash.h"

#define SIPHASH_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static uint64_t siphash_le64(const uint8_t *p)
{
	return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
	       (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 |
	       (uint64_t)p[7] << 56;
}

/* One SipRound on the four words held in locals: a macro, as in the
 * reference code, so they stay in registers (a function taking v[4] was not
 * inlined and went through memory: 5 % of the gateway's /me profile). */
#define SIPHASH_ROUND                                                                              \
	do {                                                                                       \
		v0 += v1;                                                                          \
		v1 = SIPHASH_ROTL(v1, 13);                                                         \
		v1 ^= v0;                                                                          \
		v0 = SIPHASH_ROTL(v0, 32);                                                         \
		v2 += v3;                                                                          \
		v3 = SIPHASH_ROTL(v3, 16);                                                         \
		v3 ^= v2;                                                                          \
		v0 += v3;                                                                          \
		v3 = SIPHASH_ROTL(v3, 21);                                                         \
		v3 ^= v0;                                                                          \
		v2 += v1;                                                                          \
		v1 = SIPHASH_ROTL(v1, 17);                                                         \
		v1 ^= v2;                                                                          \
		v2 = SIPHASH_ROTL(v2, 32);                                                         \
	} while (0)

uint64_t siphash24(const uint8_t key[SIPHASH_KEY_LEN], const void *in, size_t len)
{
	const uint8_t *p = in, *end = p + (len - len % 8);
	uint64_t k0 = siphash_le64(key), k1 = siphash_le64(key + 8), m, b = (uint64_t)len << 56;
	uint64_t v0 = k0 ^ 0x736f6d6570736575ull, v1 = k1 ^ 0x646f72616e646f6dull,
	         v2 = k0 ^ 0x6c7967656e657261ull, v3 = k1 ^ 0x7465646279746573ull;

	for (; p != end; p += 8) {
		m = siphash_le64(p);
		v3 ^= m;
		SIPHASH_ROUND;
		SIPHASH_ROUND;
		v0 ^= m;
	}
	/* The last 0..7 bytes, with the length in the top byte. */
	for (size_t i = 0; i < len % 8; i++)
		b |= (uint64_t)p[i] << (8 * i);
	v3 ^= b;
	SIPHASH_ROUND;
	SIPHASH_ROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPHASH_ROUND;
	SIPHASH_ROUND;
	SIPHASH_ROUND;
	SIPHASH_ROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}
