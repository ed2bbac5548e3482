/*
 * breach.h — magnetar-breach: Pwned Passwords k-anonymity ranges, online
 * (libcurl, cached in memory and breach.db) or offline (a memory-mapped
 * store built by `magctl breach import`). Prototypes grouped by file.
 */
#ifndef MAGNETAR_BREACH_H
#define MAGNETAR_BREACH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "breach.pb-c.h"
#include "common/svc.h"

struct outbox_event;

#define BREACH_CACHE_RANGES 10000u                /* ranges kept in memory and breach.db */
#define BREACH_CACHE_TTL_MS (24u * 3600u * 1000u) /* a cached range is refetched after */
#define BREACH_STORE_FILE "pwned.store"           /* in the service's data dir */

/* ---- pairs.c: one range's pairs, immutable once filled, ref-counted ---- */

#define PAIRS_SUFFIX_LEN 18 /* SHA-1 bytes 2..19, high nibble of byte 0 cleared */
#define PAIRS_MAX 65536u    /* no real range comes near (≈ 1,000 with padding) */

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
size_t pairs_bytes(const struct pairs *p);

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

/* ---- cache.c: LRU + TTL range cache, clock passed in ------------------- */

struct cache;
struct cache_stats {
	uint64_t entries, hits, misses, evictions, expired;
};

/* capacity 1..2^20 ranges. 0, ERR_INVAL or ERR_NOMEM. */
int cache_new(uint32_t capacity, uint64_t ttl_ms, struct cache **out);
void cache_free(struct cache *c); /* accepts NULL */
/* A new reference to the fresh range (caller unrefs), or NULL: absent or
 * expired (then dropped). A hit becomes the most recently used. */
struct pairs *cache_get(struct cache *c, uint32_t prefix, uint64_t now_ms);
/* Stores (a new reference to) p, replacing any older entry for the prefix,
 * evicting the least recently used when full. Already expired: ignored. */
void cache_put(struct cache *c, uint32_t prefix, struct pairs *p, uint64_t fetched_ms,
               uint64_t now_ms);
void cache_get_stats(struct cache *c, struct cache_stats *st);

/* ---- fetch.c: the online range client (libcurl multi, one thread) ------ */

struct fetch;
struct fetch_opts {
	const char *base_url;   /* MAGNETAR_HIBP_URL; /range/XXXXX is appended */
	int max_in_flight;      /* requests out at once (default 4) */
	int connect_timeout_ms; /* default 2000 */
	int total_timeout_ms;   /* per attempt (default 5000), never past the deadline */
	int max_attempts;       /* including the first (default 3) */
	int backoff_ms;         /* first retry wait, doubled each time (default 100) */
	size_t max_body;        /* bytes (default 1 MiB) */
};
struct fetch_stats {
	_Atomic uint64_t requests, ok, retries, throttled, server_errors, transport_errors,
	    malformed, deadline;
};

/* Called exactly once on the fetcher thread: rv 0 with p (borrowed: take a
 * reference to keep it), else ERR_UNAVAIL (API down or retries exhausted),
 * ERR_TIMEOUT (deadline), ERR_PROTO (bad status or body), ERR_CLOSED. */
typedef void (*fetch_done_fn)(void *arg, int rv, struct pairs *p);

int fetch_start(const struct fetch_opts *o, struct fetch **out);
/* Queues a fetch that must complete before `deadline_mono_ms`. 0 (done will
 * be called), ERR_NOMEM or ERR_CLOSED (done will not be called). */
int fetch_submit(struct fetch *f, uint32_t prefix, uint64_t deadline_mono_ms, fetch_done_fn done,
                 void *arg);
/* Fails every queued and running fetch with ERR_CLOSED, joins, frees. */
void fetch_stop(struct fetch *f);
void fetch_get_stats(struct fetch *f, struct fetch_stats *st);

/* ---- pwstore.c: the offline store (see the file for its layout) -------- */

#define PWSTORE_BUCKETS (1u << 20)
#define PWSTORE_REC 22

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
uint64_t pwstore_writer_count(const struct pwstore_writer *w);

/* ---- store.c: breach.db, the only file that includes sqlite3.h --------- */

extern const struct pool_schema store_schema;

/* Persists one fetched range (and now and then prunes expired rows and
 * rows beyond `keep`). 0 or ERR_DB. */
int store_save_range(struct pool *pool, uint32_t prefix, const struct pairs *p, uint64_t fetched_ms,
                     uint64_t ttl_ms, uint32_t keep);
/* Prunes, then refills `cache` with the newest `keep` fresh ranges. */
int store_load_ranges(struct pool *pool, struct cache *cache, uint64_t now_ms, uint64_t ttl_ms,
                      uint32_t keep, uint32_t *loaded);
/* Enqueues one audit event in its own transaction (caller kicks). */
int store_audit(struct pool *pool, const struct outbox_event *ev);

/* ---- range.c: the Range and Reload methods ----------------------------- */

struct breach {
	struct svc svc; /* first: the generic Ping/Stats handlers use it */
	struct cache *cache;
	struct fetch *fetch;
	pthread_mutex_t store_mu; /* guards the pointer swap of `pw` */
	struct pwstore *pw;       /* offline store or NULL */
	char pw_path[600];
	uint64_t alarm_interval_ms; /* log + audit an outage at most this often */
	_Atomic uint64_t last_alarm_ms;
	_Atomic uint64_t ranges, hits_cache, hits_online, hits_offline, unavailable, off,
	    persist_errors, reloads;
};

/* Opens b->pw_path into b->pw, replacing the old store. 0 or pwstore_open's
 * errors (the old store stays). */
int range_reload(struct breach *b);
void range_handle(struct rpc_call *call, const ProtobufCMessage *input, void *arg);
void range_handle_reload(struct rpc_call *call, const ProtobufCMessage *input, void *arg);
/* Stats counters of the service (svc.counters). */
void range_counters(struct svc *s, svc_counter_fn emit, void *emit_arg);

#endif
