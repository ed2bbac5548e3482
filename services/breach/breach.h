/*
 * breach.h — magnetar-breach: Pwned Passwords k-anonymity ranges, online
 * (libcurl, cached in memory and breach.db) or offline (a memory-mapped
 * store built by `magctl breach import`). Prototypes grouped by file; the
 * range pairs, the HIBP parsers and the store format are the shared
 * library's (lib/pwstore/pwstore.h), which magctl links too.
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
#include "services/breach/vars.h"
#include "lib/pwstore/pwstore.h"

struct outbox_event;

#define BREACH_CACHE_RANGES 10000u                /* ranges kept in memory and breach.db */
#define BREACH_CACHE_TTL_MS (24u * 3600u * 1000u) /* a cached range is refetched after */

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
/* breach's own variables (vars.h), parsed by svc_init. */
static inline const struct breach_vars *breach_vars(const struct breach *b)
{
	return b->svc.conf.own;
}

/* Opens b->pw_path into b->pw, replacing the old store. 0 or pwstore_open's
 * errors (the old store stays). */
int range_reload(struct breach *b);
void range_handle(struct rpc_call *call, const ProtobufCMessage *input, void *arg);
void range_handle_reload(struct rpc_call *call, const ProtobufCMessage *input, void *arg);
/* Stats counters of the service (svc.counters). */
void range_counters(struct svc *s, svc_counter_fn emit, void *emit_arg);

#endif
