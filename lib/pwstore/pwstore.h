/*
 * pwstore.h — libmagnetar-pwstore: the Pwned Passwords data formats that
 * magnetar-breach and `magctl breach import` share, in a library of its own
 * so that neither program links the other's code (docs/breach.md).
 *
 *   pairs.c    one range's (suffix, count) pairs, ref-counted
 *   hibp.c     strict parsers of the HIBP text formats (range body, import
 *              line, 5-hex prefix)
 *   pwstore.c  the offline store file: reader (mmap) and writer
 *
 * libc and common/err.h's codes only: no SQLite, curl, nng or service state.
 * Prototypes grouped by file.
 */
#ifndef MAGNETAR_PWSTORE_H
#define MAGNETAR_PWSTORE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common/breach_check.h"

/* The offline store's name in the breach service's data dir: the service
 * loads it from there only, and the importer writes it there by default. */
#define PWSTORE_FILE "pwned.store"

/* ---- pairs.c: one range's pairs, immutable once filled, ref-counted ---- */

/* SHA-1 bytes 2..19, high nibble of byte 0 cleared: the same 18 bytes a range
 * carries on the wire (common/breach_check.h), so one definition. */
#define PAIRS_SUFFIX_LEN BREACH_CHECK_SUFFIX_LEN
#define PAIRS_MAX 65536u /* no real range comes near (≈ 1,000 with padding) */

struct pairs {
	_Atomic int refs;
	uint32_t n;
	uint32_t *counts;  /* n, never 0 (padding is dropped) */
	uint8_t *suffixes; /* n x PAIRS_SUFFIX_LEN */
};

/* One allocation holding room for n pairs, refs = 1; NULL when out of
 * memory or n > PAIRS_MAX. */
struct pairs *pairs_new(uint32_t n);
struct pairs *pairs_ref(struct pairs *p);
void pairs_unref(struct pairs *p); /* accepts NULL */

/* ---- hibp.c: strict parsers (pure; the fuzz target's entry points) ----- */

/* A range body: `SUFFIX:COUNT` lines (35 hex, ':' and 1..10 digits at most
 * UINT32_MAX), LF or CRLF, the last line's terminator optional. Padding rows
 * (count 0) are counted in *padding (may be NULL) and dropped. 0 with *out
 * (refs 1) or ERR_INVAL for anything malformed, empty or over PAIRS_MAX
 * lines (then nothing is returned), or ERR_NOMEM. */
int hibp_parse(const char *body, size_t len, struct pairs **out, uint32_t *padding);

/* One import line (trailing LF/CRLF allowed): `SHA1:COUNT` when prefix < 0,
 * or `SUFFIX:COUNT` under the 20-bit `prefix` (a downloader's per-prefix
 * file). Fills the whole hash. 0 or ERR_INVAL. */
int hibp_import_line(const char *s, size_t n, int32_t prefix, uint8_t hash[20], uint32_t *count);

/* Exactly 5 hex digits (either case) into a 20-bit prefix. 0 or ERR_INVAL. */
int hibp_prefix(const char *s, size_t n, uint32_t *prefix);

/* ---- pwstore.c: the offline store (see the file for its layout) -------- */

#define PWSTORE_BUCKETS (1u << 20) /* one per 5-hex prefix */
#define PWSTORE_REC 22             /* PAIRS_SUFFIX_LEN + u32 count */

struct pwstore;
struct pwstore_writer;

/* Maps and validates a store. 0, ERR_NOTFOUND, ERR_IO, ERR_INVAL (not a
 * store or corrupt) or ERR_NOMEM. refs = 1. */
int pwstore_open(const char *path, struct pwstore **out);
struct pwstore *pwstore_ref(struct pwstore *s);
void pwstore_unref(struct pwstore *s); /* unmaps with the last reference; NULL ok */
uint64_t pwstore_count(const struct pwstore *s);
/* 0 with *count, or ERR_NOTFOUND. Never touches the network. */
int pwstore_lookup(const struct pwstore *s, const uint8_t hash[20], uint32_t *count);
/* The range's pairs (refs 1). 0, ERR_INVAL or ERR_NOMEM. */
int pwstore_range(const struct pwstore *s, uint32_t prefix, struct pairs **out);

/* Writing is two passes over the input: count hashes per 5-hex bucket
 * (counts[PWSTORE_BUCKETS]), open, add every hash exactly once, commit.
 * The file appears at `path` only on a successful commit (tmp + fsync +
 * rename); the writer is freed by commit and by abort. */
int pwstore_writer_open(const char *path, const uint64_t *counts, struct pwstore_writer **out);
/* ERR_INVAL when a bucket gets more hashes than counted. */
int pwstore_writer_add(struct pwstore_writer *w, const uint8_t hash[20], uint32_t count);
/* 0, ERR_INVAL (fewer hashes than counted), ERR_EXISTS (a duplicate hash)
 * or ERR_IO. */
int pwstore_writer_commit(struct pwstore_writer *w);
void pwstore_writer_abort(struct pwstore_writer *w); /* NULL ok */

#endif
