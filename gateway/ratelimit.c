/*
 * ratelimit.c — token buckets per (class, client) in one table of fixed size:
 * memory is bounded whatever addresses attackers choose. A client is an IPv4
 * address or an IPv6 /64 (netaddr_rate_key). The table is 8-way set
 * associative; a bucket that has refilled completely holds no
 * information and is free, otherwise the fullest bucket of the set is evicted.
 *
 * Each bucket is one number, GCRA style: the time at which it would be full
 * again ("theoretical arrival time"). A request is allowed when that time is
 * at most burst-1 emission intervals ahead of now, and pushes it one interval
 * further. Equivalent to a token bucket, with no floating point and no timer.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/err.h"
#include "common/ids.h"
#include "common/siphash.h"
#include "gateway/policy.h"

#define RATELIMIT_WAYS 8
#define RATELIMIT_LOCKS 256 /* lock stripes; a set uses lock (set % LOCKS) */

struct ratelimit_entry {
	struct netaddr key;
	uint32_t klass;  /* 0 = empty slot (classes are stored + 1) */
	uint64_t tat_us; /* full again at this time (monotonic µs) */
};

struct ratelimit {
	size_t nsets; /* a power of two */
	uint8_t seed[SIPHASH_KEY_LEN];
	pthread_mutex_t locks[RATELIMIT_LOCKS];
	_Atomic uint64_t evictions;
	struct ratelimit_entry *e; /* nsets * RATELIMIT_WAYS */
};

int ratelimit_rule_parse(const char *s, struct ratelimit_rule *out)
{
	unsigned long n = 0, sec = 0;
	const char *p = s;

	if (strcasecmp(s, "off") == 0) {
		out->burst = 0;
		out->period_ms = 1000;
		return 0;
	}
	if (*p < '1' || *p > '9')
		return ERR_INVAL;
	for (; *p >= '0' && *p <= '9'; p++)
		if ((n = n * 10 + (unsigned long)(*p - '0')) > 1000000000ul)
			return ERR_INVAL;
	if (*p++ != '/' || *p < '1' || *p > '9')
		return ERR_INVAL;
	for (; *p >= '0' && *p <= '9'; p++)
		if ((sec = sec * 10 + (unsigned long)(*p - '0')) > 86400ul)
			return ERR_INVAL;
	if (*p != '\0')
		return ERR_INVAL;
	out->burst = (uint32_t)n;
	out->period_ms = (uint32_t)(sec * 1000);
	return 0;
}

int ratelimit_new(size_t entries, struct ratelimit **out)
{
	struct ratelimit *rl;
	size_t nsets = 8;

	while (nsets * RATELIMIT_WAYS < entries)
		nsets *= 2;
	if ((rl = calloc(1, sizeof(*rl))) == NULL)
		return ERR_NOMEM;
	if ((rl->e = calloc(nsets * RATELIMIT_WAYS, sizeof(*rl->e))) == NULL) {
		free(rl);
		return ERR_NOMEM;
	}
	if (ids_random(rl->seed, sizeof(rl->seed)) != 0) {
		free(rl->e);
		free(rl);
		return ERR_IO;
	}
	rl->nsets = nsets;
	for (int i = 0; i < RATELIMIT_LOCKS; i++)
		pthread_mutex_init(&rl->locks[i], NULL);
	*out = rl;
	return 0;
}

void ratelimit_free(struct ratelimit *rl)
{
	if (rl == NULL)
		return;
	for (int i = 0; i < RATELIMIT_LOCKS; i++)
		pthread_mutex_destroy(&rl->locks[i]);
	free(rl->e);
	free(rl);
}

uint64_t ratelimit_evictions(const struct ratelimit *rl)
{
	return atomic_load_explicit(&((struct ratelimit *)rl)->evictions, memory_order_relaxed);
}

/* SipHash-2-4 of (class, address) under a key drawn at start: without the
 * key no one can aim many addresses at one set. */
static uint64_t ratelimit_hash(const struct ratelimit *rl, unsigned klass, const struct netaddr *k)
{
	uint8_t in[4 + sizeof(k->b)];
	uint32_t c = (uint32_t)klass;
	memcpy(in, &c, 4);
	memcpy(in + 4, k->b, sizeof(k->b));
	return siphash24(rl->seed, in, sizeof(in));
}

unsigned ratelimit_take(struct ratelimit *rl, unsigned klass, const struct ratelimit_rule *rule,
                        const struct netaddr *key, uint64_t now_ms)
{
	uint64_t set, now = now_ms * 1000, interval, tolerance, tat;
	struct ratelimit_entry *s, *slot = NULL, *victim = NULL;
	struct netaddr k;
	pthread_mutex_t *lock;
	unsigned retry = 0;

	if (rule->burst == 0)
		return 0;
	interval = (uint64_t)rule->period_ms * 1000 / rule->burst;
	if (interval == 0)
		interval = 1;
	tolerance = interval * (rule->burst - 1);
	netaddr_rate_key(key, &k);
	set = ratelimit_hash(rl, klass, &k) & (rl->nsets - 1);
	s = &rl->e[set * RATELIMIT_WAYS];
	lock = &rl->locks[set % RATELIMIT_LOCKS];

	pthread_mutex_lock(lock);
	for (int i = 0; i < RATELIMIT_WAYS; i++) {
		if (s[i].klass == klass + 1 && memcmp(s[i].key.b, k.b, 16) == 0) {
			slot = &s[i];
			break;
		}
		/* Empty, or refilled (as good as absent): reusable. Otherwise the
		 * bucket nearest to full is the cheapest to forget. */
		if (s[i].klass == 0 || s[i].tat_us <= now) {
			if (victim == NULL || victim->tat_us > now)
				victim = &s[i];
		} else if (victim == NULL || (victim->tat_us > now && s[i].tat_us < victim->tat_us))
			victim = &s[i];
	}
	if (slot == NULL) {
		if (victim->klass != 0 && victim->tat_us > now)
			atomic_fetch_add_explicit(&rl->evictions, 1, memory_order_relaxed);
		slot = victim;
		slot->key = k;
		slot->klass = klass + 1;
		slot->tat_us = 0;
	}
	tat = slot->tat_us > now ? slot->tat_us : now;
	if (tat - now > tolerance) {
		uint64_t wait = tat - now - tolerance;
		retry = (unsigned)((wait + 999999) / 1000000);
		if (retry == 0)
			retry = 1;
	} else
		slot->tat_us = tat + interval;
	pthread_mutex_unlock(lock);
	return retry;
}
