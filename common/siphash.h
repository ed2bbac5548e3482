/*
 * siphash.h — SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast
 * short-input PRF", 2012): a keyed 64-bit hash for tables whose keys an
 * attacker chooses (rate limits, brute-force counters). With a random key
 * per process start, no one can compute offline which keys share a bucket.
 * Not a MAC for long-lived data: use HMAC there.
 */
#ifndef MAGNETAR_SIPHASH_H
#define MAGNETAR_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

#define SIPHASH_KEY_LEN 16

/* SipHash-2-4 of `len` bytes at `in` under a 16-byte key: the reference
 * algorithm, words read little-endian whatever the host. */
uint64_t siphash24(const uint8_t key[SIPHASH_KEY_LEN], const void *in, size_t len);

#endif
