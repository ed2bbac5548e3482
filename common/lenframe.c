/*
 * lenframe.c — length-prefixed messages over a byte stream (lenframe.h).
 * One buffer of header + largest message: a message is handed out in place,
 * and the bytes after it move to the front on the next call. Parses bytes
 * from another process: fuzzed (tests/fuzz/lenframe_fuzz.c).
 */
#include "common/lenframe.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"

void lenframe_header(uint8_t hdr[LENFRAME_HDR], uint32_t len)
{
	hdr[0] = (uint8_t)(len >> 24);
	hdr[1] = (uint8_t)(len >> 16);
	hdr[2] = (uint8_t)(len >> 8);
	hdr[3] = (uint8_t)len;
}

void lenframe_hello(uint8_t out[LENFRAME_HELLO], const char id[LENFRAME_HELLO_ID],
                    const uint8_t key[LENFRAME_HELLO_KEY])
{
	lenframe_header(out, LENFRAME_HELLO - LENFRAME_HDR);
	out[LENFRAME_HDR] = LENFRAME_HELLO_KIND;
	memcpy(out + LENFRAME_HDR + 1, id, LENFRAME_HELLO_ID);
	memcpy(out + LENFRAME_HDR + 1 + LENFRAME_HELLO_ID, key, LENFRAME_HELLO_KEY);
}

int lenframe_hello_parse(const uint8_t in[LENFRAME_HELLO], char id[LENFRAME_HELLO_ID + 1],
                         const uint8_t **key)
{
	uint8_t want[LENFRAME_HDR];
	const uint8_t *hex = in + LENFRAME_HDR + 1;

	lenframe_header(want, LENFRAME_HELLO - LENFRAME_HDR);
	if (memcmp(in, want, LENFRAME_HDR) != 0 || in[LENFRAME_HDR] != LENFRAME_HELLO_KIND)
		return ERR_INVAL;
	for (size_t i = 0; i < LENFRAME_HELLO_ID; i++)
		if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
			return ERR_INVAL;
	memcpy(id, hex, LENFRAME_HELLO_ID);
	id[LENFRAME_HELLO_ID] = '\0';
	*key = hex + LENFRAME_HELLO_ID;
	return 0;
}

int lenframe_reader_init(struct lenframe_reader *r, size_t max)
{
	memset(r, 0, sizeof(*r));
	if (max == 0 || max > UINT32_MAX || (r->buf = malloc(LENFRAME_HDR + max)) == NULL)
		return ERR_NOMEM;
	r->max = max;
	return 0;
}

void lenframe_reader_fini(struct lenframe_reader *r)
{
	free(r->buf);
	r->buf = NULL;
}

/* Drops the message handed out last. */
static void lenframe_compact(struct lenframe_reader *r)
{
	if (r->used == 0)
		return;
	memmove(r->buf, r->buf + r->used, r->len - r->used);
	r->len -= r->used;
	r->used = 0;
}

/* Where the next bytes may go, and how many fit. */
static uint8_t *lenframe_space(struct lenframe_reader *r, size_t *room)
{
	lenframe_compact(r);
	*room = LENFRAME_HDR + r->max - r->len;
	return r->buf + r->len;
}

static void lenframe_wrote(struct lenframe_reader *r, size_t n)
{
	r->len += n;
}

size_t lenframe_add(struct lenframe_reader *r, const uint8_t *data, size_t n)
{
	size_t room;
	uint8_t *at = lenframe_space(r, &room);
	if (n > room)
		n = room;
	memcpy(at, data, n);
	lenframe_wrote(r, n);
	return n;
}

ssize_t lenframe_fill(struct lenframe_reader *r, int fd)
{
	size_t room;
	uint8_t *at = lenframe_space(r, &room);
	ssize_t n;

	if (room == 0) {
		errno = ENOBUFS; /* a whole message waits: take it first */
		return -1;
	}
	do
		n = read(fd, at, room);
	while (n < 0 && errno == EINTR);
	if (n > 0)
		lenframe_wrote(r, (size_t)n);
	return n;
}

int lenframe_next(struct lenframe_reader *r, const uint8_t **msg, size_t *len)
{
	const uint8_t *p;
	uint32_t n;

	lenframe_compact(r);
	if (r->len < LENFRAME_HDR)
		return 0;
	p = r->buf;
	n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	if (n == 0 || n > r->max)
		return ERR_INVAL;
	if (r->len - LENFRAME_HDR < n)
		return 0;
	*msg = p + LENFRAME_HDR;
	*len = n;
	r->used = LENFRAME_HDR + n;
	return 1;
}
