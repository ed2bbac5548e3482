/*
 * lenframe_fuzz.c — libFuzzer target for common/lenframe, the framing of the
 * terminal's stream as either end reads it from the other process. The
 * input is the byte stream; it is fed to the reader in uneven chunks (as a
 * socket cuts it) and must give exactly the messages a one-shot reading of
 * the whole input gives, each of 1..max bytes, stopping at the same broken
 * length. The input's first bytes are also read as a terminal stream's
 * hello: a parsed one must be rebuilt to exactly those bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/lenframe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_MAX 300 /* small, so too-long lengths are common */

/* The reference: messages of `data` read in one go, as (offset, length)
 * pairs; returns their number, *broken when a bad length ended them. */
static size_t fz_reference(const uint8_t *data, size_t size, size_t *off, size_t *len, size_t cap,
                           int *broken)
{
	size_t n = 0, at = 0;
	*broken = 0;
	while (n < cap && size - at >= LENFRAME_HDR) {
		uint32_t l = (uint32_t)data[at] << 24 | (uint32_t)data[at + 1] << 16 |
		             (uint32_t)data[at + 2] << 8 | data[at + 3];
		if (l == 0 || l > FZ_MAX) {
			*broken = 1;
			break;
		}
		if (size - at - LENFRAME_HDR < l)
			break;
		off[n] = at + LENFRAME_HDR;
		len[n++] = l;
		at += LENFRAME_HDR + l;
	}
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static size_t off[4096], len[4096];
	struct lenframe_reader r;
	size_t want, got = 0, fed = 0, step = 1;
	int broken, seen_broken = 0;

	if (size >= LENFRAME_HELLO) {
		uint8_t again[LENFRAME_HELLO];
		char id[LENFRAME_HELLO_ID + 1];
		const uint8_t *key;
		if (lenframe_hello_parse(data, id, &key) == 0) {
			if (strlen(id) != LENFRAME_HELLO_ID ||
			    key != data + LENFRAME_HELLO - LENFRAME_HELLO_KEY)
				abort();
			lenframe_hello(again, id, key);
			if (memcmp(again, data, LENFRAME_HELLO) != 0)
				abort();
		}
	}
	want = fz_reference(data, size, off, len, 4096, &broken);
	if (lenframe_reader_init(&r, FZ_MAX) != 0)
		return 0;
	while (!seen_broken && got <= want) {
		const uint8_t *msg;
		size_t mlen, n;
		int rv = lenframe_next(&r, &msg, &mlen);
		if (rv == 1) {
			if (got == want || mlen != len[got] ||
			    memcmp(msg, data + off[got], mlen) != 0)
				abort();
			got++;
			continue;
		}
		if (rv != 0) {
			seen_broken = 1;
			break;
		}
		if (fed == size)
			break;
		/* Chunks of 1, 2, 3, ... 13 bytes, then again. */
		n = size - fed < step ? size - fed : step;
		step = step % 13 + 1;
		fed += lenframe_add(&r, data + fed, n);
	}
	if (got != want || seen_broken != broken)
		abort();
	lenframe_reader_fini(&r);
	return 0;
}
