/*
 * throttle.c — brute-force limits on password and code guesses (docs/api.md
 * "Limits"): failures are counted per (account, client network) and per
 * client network alone, within an hour. After a few failures each further
 * attempt waits a growing delay (429 too_many_attempts + Retry-After); at
 * 100 failures per account per network the network is refused for that
 * account until the hour has passed.
 *
 * Keyed by network (IPv4 /24, IPv6 /64), not by account alone, so an
 * attacker elsewhere spends only their own network's budget: the owner,
 * on another network, is never locked out by them.
 *
 * The table is fixed-size (an attacker choosing keys cannot grow memory),
 * so other keys must never be a way to reset a count (issue 16): keys are
 * hashed with SipHash-2-4 under a random key drawn at start (nobody can
 * compute offline which names share a set), the table is 8-way set
 * associative, a check never takes a slot (only a failure does), and a
 * failure that finds its set full takes an empty or expired slot first,
 * else the one with the fewest failures (the newest among equals, so a
 * flood of fresh keys churns its own slots, not older counts). A count
 * near its limit is thus evicted only when all 7 other slots of its set,
 * chosen by a key the attacker does not know, count more: in practice only
 * when the whole table is full of larger counts. Evictions of live counts
 * are counted (auth.throttle_evictions in `magctl stats auth`).
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "common/ids.h"
#include "common/siphash.h"
#include "services/auth/auth.h"

#define THROTTLE_WAYS 8
#define THROTTLE_SETS (THROTTLE_SLOTS / THROTTLE_WAYS)
#define THROTTLE_WINDOW_MS (3600u * 1000)
#define THROTTLE_FREE 5          /* failures before any delay */
#define THROTTLE_MAX_DELAY_S 60  /* the delay grows 1, 2, 4 … 60 s */
#define THROTTLE_ACCOUNT_CAP 100 /* per account per network per hour */
#define THROTTLE_NETWORK_FREE 30 /* per network across accounts */

struct throttle_slot {
	uint64_t key; /* 0: empty */
	uint64_t window_start_ms;
	uint64_t last_failure_ms;
	uint64_t taken; /* order of taking: "newest" must not tie within a millisecond */
	uint32_t failures;
};

static struct throttle_slot throttle_table[THROTTLE_SLOTS];
static pthread_mutex_t throttle_mu = PTHREAD_MUTEX_INITIALIZER;
static uint8_t throttle_hash_key[SIPHASH_KEY_LEN];
static uint64_t throttle_evictions; /* under throttle_mu */
static uint64_t throttle_taken;     /* under throttle_mu: slots taken so far */

int throttle_init(void)
{
	int rv;
	pthread_mutex_lock(&throttle_mu);
	rv = ids_random(throttle_hash_key, sizeof(throttle_hash_key));
	memset(throttle_table, 0, sizeof(throttle_table));
	pthread_mutex_unlock(&throttle_mu);
	return rv;
}

/* The client's network: IPv4 /24 or IPv6 /64, as text. */
static void throttle_network(const char *ip, char *out, size_t len)
{
	unsigned char a[16];
	if (inet_pton(AF_INET, ip, a) == 1)
		snprintf(out, len, "%u.%u.%u.0/24", a[0], a[1], a[2]);
	else if (inet_pton(AF_INET6, ip, a) == 1)
		snprintf(out, len, "%02x%02x:%02x%02x:%02x%02x:%02x%02x::/64", a[0], a[1], a[2],
		         a[3], a[4], a[5], a[6], a[7]);
	else
		snprintf(out, len, "%s", ip);
}

/* SipHash of (SipHash(account), network): no length limit on the account,
 * and no way to make "ab"+"c" and "a"+"bc" meet. */
static uint64_t throttle_key(const char *account, const char *ip)
{
	uint8_t in[8 + 64];
	char net[64];
	uint64_t h;
	size_t n;

	throttle_network(ip, net, sizeof(net));
	h = siphash24(throttle_hash_key, account, strlen(account));
	memcpy(in, &h, 8);
	n = strlen(net);
	memcpy(in + 8, net, n);
	h = siphash24(throttle_hash_key, in, 8 + n);
	return h | 1; /* 0 marks an empty slot */
}

static struct throttle_slot *throttle_set_locked(uint64_t key)
{
	/* The set from the high bits: the low bit is forced to 1 above. */
	return &throttle_table[(key >> 32) % THROTTLE_SETS * THROTTLE_WAYS];
}

static bool throttle_live(const struct throttle_slot *s, uint64_t now)
{
	return s->key != 0 && now - s->window_start_ms < THROTTLE_WINDOW_MS;
}

/* The key's slot when it counts failures in this window, else NULL. */
static struct throttle_slot *throttle_find_locked(uint64_t key, uint64_t now)
{
	struct throttle_slot *set = throttle_set_locked(key);
	for (int i = 0; i < THROTTLE_WAYS; i++)
		if (set[i].key == key)
			return throttle_live(&set[i], now) ? &set[i] : NULL;
	return NULL;
}

/* The key's slot, taken when absent: an empty or expired slot first
 * (an old window of the key itself included), else the fewest failures,
 * the newest count among equals. Never fails: every failure is counted. */
static struct throttle_slot *throttle_take_locked(uint64_t key, uint64_t now)
{
	struct throttle_slot *set = throttle_set_locked(key), *victim = NULL;
	for (int i = 0; i < THROTTLE_WAYS; i++) {
		struct throttle_slot *s = &set[i];
		if (s->key == key && throttle_live(s, now))
			return s;
		if (!throttle_live(s, now)) {
			if (victim == NULL || throttle_live(victim, now) || s->key == key)
				victim = s;
		} else if (victim == NULL ||
		           (throttle_live(victim, now) &&
		            (s->failures < victim->failures ||
		             (s->failures == victim->failures && s->taken > victim->taken))))
			victim = s;
	}
	if (throttle_live(victim, now))
		throttle_evictions++;
	memset(victim, 0, sizeof(*victim));
	victim->key = key;
	victim->window_start_ms = now;
	victim->taken = ++throttle_taken;
	return victim;
}

/* Seconds to wait before the next attempt for this slot, 0 when allowed. */
static uint32_t throttle_wait(const struct throttle_slot *s, uint32_t free_failures, uint32_t cap,
                              uint64_t now)
{
	uint64_t delay_ms, ready;
	if (s == NULL)
		return 0;
	if (cap != 0 && s->failures >= cap)
		return (uint32_t)((s->window_start_ms + THROTTLE_WINDOW_MS - now) / 1000 + 1);
	if (s->failures < free_failures)
		return 0;
	delay_ms = 1000ull << (s->failures - free_failures < 6 ? s->failures - free_failures : 6);
	if (delay_ms > THROTTLE_MAX_DELAY_S * 1000ull)
		delay_ms = THROTTLE_MAX_DELAY_S * 1000ull;
	ready = s->last_failure_ms + delay_ms;
	return ready > now ? (uint32_t)((ready - now + 999) / 1000) : 0;
}

uint32_t throttle_check(const char *account, const char *ip)
{
	uint64_t now = clock_mono_ms(), ka = throttle_key(account, ip), kn = throttle_key("", ip);
	uint32_t a, n;

	pthread_mutex_lock(&throttle_mu);
	a = throttle_wait(throttle_find_locked(ka, now), THROTTLE_FREE, THROTTLE_ACCOUNT_CAP, now);
	n = throttle_wait(throttle_find_locked(kn, now), THROTTLE_NETWORK_FREE, 0, now);
	pthread_mutex_unlock(&throttle_mu);
	return a > n ? a : n;
}

void throttle_failed(const char *account, const char *ip)
{
	uint64_t now = clock_mono_ms(), ka = throttle_key(account, ip), kn = throttle_key("", ip);
	struct throttle_slot *s;

	pthread_mutex_lock(&throttle_mu);
	s = throttle_take_locked(ka, now);
	s->failures++;
	s->last_failure_ms = now;
	s = throttle_take_locked(kn, now);
	s->failures++;
	s->last_failure_ms = now;
	pthread_mutex_unlock(&throttle_mu);
}

void throttle_succeeded(const char *account, const char *ip)
{
	uint64_t now = clock_mono_ms(), ka = throttle_key(account, ip);
	struct throttle_slot *s;

	pthread_mutex_lock(&throttle_mu);
	if ((s = throttle_find_locked(ka, now)) != NULL)
		memset(s, 0, sizeof(*s));
	pthread_mutex_unlock(&throttle_mu);
}

void throttle_stats(struct throttle_stats *st)
{
	uint64_t now = clock_mono_ms();
	pthread_mutex_lock(&throttle_mu);
	st->evictions = throttle_evictions;
	st->counting = 0;
	for (size_t i = 0; i < THROTTLE_SLOTS; i++)
		st->counting += throttle_live(&throttle_table[i], now);
	pthread_mutex_unlock(&throttle_mu);
}

unsigned throttle_set_of(const char *account, const char *ip)
{
	return (unsigned)((throttle_key(account, ip) >> 32) % THROTTLE_SETS);
}

bool throttle_refused(struct rpc_call *call, const char *account)
{
	struct rpc_error_extra extra = {0};
	extra.retry_after_s = throttle_check(account, rpc_call_context(call)->client_ip);
	if (extra.retry_after_s == 0)
		return false;
	rpc_reply_error_ex(call, MAGNETAR__STATUS__STATUS_RESOURCE_EXHAUSTED, "too_many_attempts",
	                   "too many failed attempts; try again later", &extra);
	return true;
}
