/*
 * breach_check.h — the caller's half of a k-anonymity breach check: hash a
 * password locally, send only the 5-hex prefix to magnetar-breach (Range),
 * then look for the rest of the hash among the returned suffixes in
 * constant time, so neither the password nor its full hash leaves the
 * caller, and the time taken does not say which suffix (if any) matched.
 */
#ifndef MAGNETAR_BREACH_CHECK_H
#define MAGNETAR_BREACH_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "breach.pb-c.h"

#define BREACH_CHECK_SUFFIX_LEN 18 /* bytes per suffix in RangeReply.suffixes */

struct breach_check {
	unsigned char hash[20]; /* SHA-1 of the password: secret, wiped by _fini */
	char prefix[6];         /* 5 uppercase hex + NUL: the only thing sent */
};

/* SHA-1 of `password` (`len` bytes) and its prefix. 0 or ERR_INTERNAL. */
int breach_check_init(struct breach_check *bc, const void *password, size_t len);

/*
 * The count for this hash among `n` suffixes (n x 18 bytes, SHA-1 bytes
 * 2..19 with the prefix nibble cleared) and their counts: 0 when absent.
 * Every suffix is compared in full, with no early exit and no branch on
 * the data. 0, or ERR_INVAL when the lengths do not agree (*count is 0).
 */
int breach_check_count(const struct breach_check *bc, const uint8_t *suffixes, size_t suffixes_len,
                       const uint32_t *counts, size_t n, uint64_t *count);

/* The same over a Range reply as unpacked by the RPC client. */
int breach_check_reply(const struct breach_check *bc, const Magnetar__RangeReply *r,
                       uint64_t *count);

/* Wipes the hash (OPENSSL_cleanse). */
void breach_check_fini(struct breach_check *bc);

#endif
