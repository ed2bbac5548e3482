/*
 * lenframe.h — messages over a byte stream: each is a 4-byte big-endian
 * length, then that many bytes (1..max). The terminal's stream between the
 * terminal service and the gateway is a Unix stream socket carrying these
 * (docs/terminal.md); the reader gathers what the socket gives, however it
 * is cut, and hands out whole messages. A length of 0 or above the
 * reader's maximum is a broken peer: the reader says so and the caller
 * hangs up (nothing is skipped).
 */
#ifndef MAGNETAR_LENFRAME_H
#define MAGNETAR_LENFRAME_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define LENFRAME_HDR 4

/* Writes the header of a `len`-byte message. */
void lenframe_header(uint8_t hdr[LENFRAME_HDR], uint32_t len);

/* The first message on a terminal stream (docs/terminal.md), the one
 * layout both ends use: 'H', the terminal's id (32 lowercase hex), its
 * stream key (32 bytes). The gateway writes it, the terminal service
 * checks it. */
#define LENFRAME_HELLO_KIND 'H'
#define LENFRAME_HELLO_ID 32
#define LENFRAME_HELLO_KEY 32
#define LENFRAME_HELLO (LENFRAME_HDR + 1 + LENFRAME_HELLO_ID + LENFRAME_HELLO_KEY)
void lenframe_hello(uint8_t out[LENFRAME_HELLO], const char id[LENFRAME_HELLO_ID],
                    const uint8_t key[LENFRAME_HELLO_KEY]);
/* 0 with `id` (NUL-terminated) and *key (into `in`) when `in` is a hello;
 * ERR_INVAL otherwise (header, kind, or an id that is not lowercase hex). */
int lenframe_hello_parse(const uint8_t in[LENFRAME_HELLO], char id[LENFRAME_HELLO_ID + 1],
                         const uint8_t **key);

struct lenframe_reader {
	uint8_t *buf;
	size_t max;  /* largest message accepted */
	size_t len;  /* bytes held */
	size_t used; /* bytes of buf handed out by lenframe_next, dropped next call */
};

/* Allocates room for one header and one message of `max` bytes. 0 or
 * ERR_NOMEM. */
int lenframe_reader_init(struct lenframe_reader *r, size_t max);
void lenframe_reader_fini(struct lenframe_reader *r);
/* Adds up to `n` bytes (as a socket would give them); returns how many
 * fit (all of them whenever no whole message is waiting to be taken). */
size_t lenframe_add(struct lenframe_reader *r, const uint8_t *data, size_t n);
/* Reads once from `fd` into the reader (the read's result: > 0 bytes,
 * 0 at the peer's end, -1 with errno; ENOBUFS while a whole message waits
 * to be taken with lenframe_next). */
ssize_t lenframe_fill(struct lenframe_reader *r, int fd);
/* The next whole message: 1 with *msg and *len set (valid until the next
 * call), 0 when more bytes are needed, ERR_INVAL for a length of 0 or over
 * the maximum. */
int lenframe_next(struct lenframe_reader *r, const uint8_t **msg, size_t *len);

#endif
