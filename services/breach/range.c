/*
 * range.c — the Range and Reload methods. Range answers a 5-hex prefix from
 * the cache, the API (fetch.c) or the offline store, and applies the fail
 * mode when none can answer: open → source "unavailable" with no pairs,
 * closed → STATUS_UNAVAILABLE/breach_unavailable. The service only ever
 * sees the prefix; the caller compares suffixes (common/breach_check.h).
 */
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/outbox.h"
#include "services/breach/breach.h"

/* Answer this long before the caller's deadline: the reply still has to
 * travel, and an answer after the deadline is one nobody reads. */
#define RANGE_MARGIN_MS 25
/* When the caller set no deadline, this is ours. */
#define RANGE_DEFAULT_MS 5000

struct range_wait {
	struct breach *b;
	struct rpc_call *call;
	uint32_t prefix;
};

static void range_reply(struct rpc_call *call, const char *source, const struct pairs *p)
{
	Magnetar__RangeReply out = MAGNETAR__RANGE_REPLY__INIT;

	out.source = (char *)source;
	if (p != NULL) {
		out.suffixes.len = (size_t)p->n * PAIRS_SUFFIX_LEN;
		out.suffixes.data = p->suffixes;
		out.n_counts = p->n;
		out.counts = p->counts;
	}
	rpc_reply(call, &out.base);
}

/* Nothing could answer: count it always; log and audit at most once per
 * alarm interval (an outage must not flood the log or the audit trail);
 * then fail open or closed. */
static void range_unavailable(struct breach *b, struct rpc_call *call, const char *why)
{
	bool closed = breach_vars(b)->breach_fail_closed;
	uint64_t now = clock_mono_ms(), last = atomic_load(&b->last_alarm_ms);

	b->unavailable++;
	if ((last == 0 || now - last >= b->alarm_interval_ms) &&
	    atomic_compare_exchange_strong(&b->last_alarm_ms, &last, now)) {
		struct outbox_event ev = {.action = "breach.unavailable",
		                          .actor = "breach",
		                          .request_id = rpc_call_request_id(call),
		                          .outcome = closed ? "fail_closed" : "fail_open",
		                          .detail = why};
		int rv;
		log_warnx("breach check unavailable (%s): answering %s request_id=%s", why,
		          closed ? "breach_unavailable (fail closed)" : "unavailable (fail open)",
		          rpc_call_request_id(call));
		if (b->svc.pool != NULL && (rv = store_audit(b->svc.pool, &ev)) != 0)
			log_warnx("cannot record the outage for audit: %s", err_str(rv));
		else if (b->svc.outbox != NULL)
			outbox_kick(b->svc.outbox);
	}
	if (closed)
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_UNAVAILABLE, "breach_unavailable",
		                "the breached-password check is unavailable");
	else
		range_reply(call, "unavailable", NULL);
}

static void range_fetched(void *arg, int rv, struct pairs *p)
{
	struct range_wait *w = arg;
	struct breach *b = w->b;
	uint64_t now = clock_unix_ms();
	int prv;

	if (rv != 0) {
		range_unavailable(b, w->call,
		                  rv == ERR_PROTO     ? "bad answer from the range API"
		                  : rv == ERR_TIMEOUT ? "range API too slow for the deadline"
		                  : rv == ERR_CLOSED  ? "shutting down"
		                                      : "range API unreachable");
		free(w);
		return;
	}
	cache_put(b->cache, w->prefix, p, now, now);
	b->hits_online++;
	range_reply(w->call, "online", p);
	/* after the reply: the caller does not wait for the disk */
	if (b->svc.pool != NULL &&
	    (prv = store_save_range(b->svc.pool, w->prefix, p, now, BREACH_CACHE_TTL_MS,
	                            BREACH_CACHE_RANGES)) != 0) {
		b->persist_errors++;
		log_warnx("cannot persist a cached range: %s", err_str(prv));
	}
	free(w);
}

static void range_online(struct breach *b, struct rpc_call *call, uint32_t prefix)
{
	uint64_t deadline = rpc_call_deadline_ms(call), now = clock_unix_ms(), budget;
	struct range_wait *w;
	struct pairs *p;

	if ((p = cache_get(b->cache, prefix, now)) != NULL) {
		b->hits_cache++;
		range_reply(call, "cache", p);
		pairs_unref(p);
		return;
	}
	if (deadline == 0)
		budget = RANGE_DEFAULT_MS;
	else if (deadline > now + RANGE_MARGIN_MS)
		budget = deadline - now - RANGE_MARGIN_MS;
	else
		budget = 0;
	if (budget < 5) {
		range_unavailable(b, call, "no time left before the deadline");
		return;
	}
	if ((w = malloc(sizeof(*w))) == NULL) {
		range_unavailable(b, call, "out of memory");
		return;
	}
	w->b = b;
	w->call = call;
	w->prefix = prefix;
	if (fetch_submit(b->fetch, prefix, clock_mono_ms() + budget, range_fetched, w) != 0) {
		free(w);
		range_unavailable(b, call, "cannot queue the fetch");
	}
}

static void range_offline(struct breach *b, struct rpc_call *call, uint32_t prefix)
{
	struct pwstore *pw = NULL;
	struct pairs *p = NULL;
	int rv;

	pthread_mutex_lock(&b->store_mu);
	if (b->pw != NULL)
		pw = pwstore_ref(b->pw);
	pthread_mutex_unlock(&b->store_mu);
	if (pw == NULL) {
		range_unavailable(b, call, "no offline store loaded");
		return;
	}
	rv = pwstore_range(pw, prefix, &p);
	pwstore_unref(pw);
	if (rv != 0) {
		range_unavailable(b, call, "offline store lookup failed");
		return;
	}
	b->hits_offline++;
	range_reply(call, "offline", p);
	pairs_unref(p);
}

void range_handle(struct rpc_call *call, const ProtobufCMessage *input, void *arg)
{
	const Magnetar__RangeRequest *req = (const Magnetar__RangeRequest *)input;
	struct breach *b = arg;
	uint32_t prefix;

	b->ranges++;
	if (req->prefix == NULL || hibp_prefix(req->prefix, strlen(req->prefix), &prefix) != 0) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INVALID, "invalid_prefix",
		                "prefix must be exactly 5 hex digits");
		return;
	}
	switch (breach_vars(b)->hibp_mode) {
	case BREACH_HIBP_OFF:
		/* the operator chose not to check: not an outage, no fail mode */
		b->off++;
		range_reply(call, "off", NULL);
		break;
	case BREACH_HIBP_OFFLINE:
		range_offline(b, call, prefix);
		break;
	default:
		range_online(b, call, prefix);
		break;
	}
}

int range_reload(struct breach *b)
{
	struct pwstore *pw, *old;
	int rv;

	if ((rv = pwstore_open(b->pw_path, &pw)) != 0)
		return rv;
	pthread_mutex_lock(&b->store_mu);
	old = b->pw;
	b->pw = pw;
	pthread_mutex_unlock(&b->store_mu);
	/* lookups still holding the old map keep it until they finish */
	pwstore_unref(old);
	b->reloads++;
	log_info("offline store loaded: %llu hashes from %s", (unsigned long long)pwstore_count(pw),
	         b->pw_path);
	return 0;
}

void range_handle_reload(struct rpc_call *call, const ProtobufCMessage *input, void *arg)
{
	static const char *const modes[] = {"online", "offline", "off"};
	Magnetar__ReloadReply out = MAGNETAR__RELOAD_REPLY__INIT;
	struct breach *b = arg;
	int rv;
	(void)input;

	if ((rv = range_reload(b)) != 0) {
		log_warnx("reload of %s failed: %s request_id=%s", b->pw_path, err_str(rv),
		          rpc_call_request_id(call));
		if (rv == ERR_NOTFOUND)
			rpc_reply_error(
			    call, MAGNETAR__STATUS__STATUS_NOT_FOUND, "no_store",
			    "no offline store in the data dir: run magctl breach import");
		else
			rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INVALID, "bad_store",
			                "the offline store is unreadable or corrupt");
		return;
	}
	pthread_mutex_lock(&b->store_mu);
	out.records = pwstore_count(b->pw);
	pthread_mutex_unlock(&b->store_mu);
	out.mode = (char *)modes[breach_vars(b)->hibp_mode];
	rpc_reply(call, &out.base);
}

void range_counters(struct svc *s, svc_counter_fn emit, void *emit_arg)
{
	struct breach *b = (struct breach *)s;
	struct cache_stats cs;
	struct fetch_stats fs;

	emit("breach.range.calls", b->ranges, emit_arg);
	emit("breach.range.cache", b->hits_cache, emit_arg);
	emit("breach.range.online", b->hits_online, emit_arg);
	emit("breach.range.offline", b->hits_offline, emit_arg);
	emit("breach.range.unavailable", b->unavailable, emit_arg);
	emit("breach.range.off", b->off, emit_arg);
	emit("breach.persist_errors", b->persist_errors, emit_arg);
	emit("breach.store.reloads", b->reloads, emit_arg);
	if (b->cache != NULL) {
		cache_get_stats(b->cache, &cs);
		emit("breach.cache.entries", cs.entries, emit_arg);
		emit("breach.cache.hits", cs.hits, emit_arg);
		emit("breach.cache.misses", cs.misses, emit_arg);
		emit("breach.cache.evictions", cs.evictions, emit_arg);
		emit("breach.cache.expired", cs.expired, emit_arg);
	}
	if (b->fetch != NULL) {
		fetch_get_stats(b->fetch, &fs);
		emit("breach.api.requests", fs.requests, emit_arg);
		emit("breach.api.ok", fs.ok, emit_arg);
		emit("breach.api.retries", fs.retries, emit_arg);
		emit("breach.api.throttled", fs.throttled, emit_arg);
		emit("breach.api.server_errors", fs.server_errors, emit_arg);
		emit("breach.api.transport_errors", fs.transport_errors, emit_arg);
		emit("breach.api.malformed", fs.malformed, emit_arg);
		emit("breach.api.deadline", fs.deadline, emit_arg);
	}
	pthread_mutex_lock(&b->store_mu);
	emit("breach.store.records", b->pw != NULL ? pwstore_count(b->pw) : 0, emit_arg);
	pthread_mutex_unlock(&b->store_mu);
}
