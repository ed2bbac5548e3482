/*
 * throttle.c — brute-force limits on password and code guesses (API.md
 * "Limits"): failures are counted per (account, client network) and per
 * client network alone, within an hour. After a few failures each further
 * attempt waits a growing delay (429 too_many_attempts + Retry-After); at
 * 100 failures per account per network the network is refused for that
 * account until the hour has passed.
 *
 * Keyed by network (IPv4 /24, IPv6 /64), not by account alone, so an
 * attacker elsewhere spends only their own network's budget: the owner,
 * on another network, is never locked out by them. The table is fixed-size
 * (an attacker choosing keys cannot grow memory); a collision evicts.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "services/auth/auth.h"

#define THROTTLE_SLOTS 8192
#define THROTTLE_WINDOW_MS (3600u * 1000)
#define THROTTLE_FREE 5          /* failures before any delay */
#define THROTTLE_MAX_DELAY_S 60  /* the delay grows 1, 2, 4 … 60 s */
#define THROTTLE_ACCOUNT_CAP 100 /* per account per network per hour */
#define THROTTLE_NETWORK_FREE 30 /* per network across accounts */

struct throttle_slot {
	uint64_t key;
	uint64_t window_start_ms;
	uint64_t last_failure_ms;
	uint32_t failures;
};

static struct throttle_slot throttle_table[THROTTLE_SLOTS];
static pthread_mutex_t throttle_mu = PTHREAD_MUTEX_INITIALIZER;

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

static uint64_t throttle_key(const char *account, const char *net)
{
	uint64_t h = 1469598103934665603ull;
	for (const char *p = account; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	h = (h ^ 0xff) * 1099511628211ull;
	for (const char *p = net; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	return h | 1; /* 0 marks an empty slot */
}

static struct throttle_slot *throttle_slot_locked(uint64_t key, uint64_t now)
{
	struct throttle_slot *s = &throttle_table[key % THROTTLE_SLOTS];
	if (s->key != key || now - s->window_start_ms >= THROTTLE_WINDOW_MS) {
		memset(s, 0, sizeof(*s));
		s->key = key;
		s->window_start_ms = now;
	}
	return s;
}

/* Seconds to wait before the next attempt for this slot, 0 when allowed. */
static uint32_t throttle_wait(const struct throttle_slot *s, uint32_t free_failures, uint32_t cap,
                              uint64_t now)
{
	uint64_t delay_ms, ready;
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
	char net[64];
	uint64_t now = clock_mono_ms();
	uint32_t a, n;

	throttle_network(ip, net, sizeof(net));
	pthread_mutex_lock(&throttle_mu);
	a = throttle_wait(throttle_slot_locked(throttle_key(account, net), now), THROTTLE_FREE,
	                  THROTTLE_ACCOUNT_CAP, now);
	n = throttle_wait(throttle_slot_locked(throttle_key("", net), now), THROTTLE_NETWORK_FREE,
	                  0, now);
	pthread_mutex_unlock(&throttle_mu);
	return a > n ? a : n;
}

void throttle_failed(const char *account, const char *ip)
{
	char net[64];
	uint64_t now = clock_mono_ms();
	struct throttle_slot *s;

	throttle_network(ip, net, sizeof(net));
	pthread_mutex_lock(&throttle_mu);
	s = throttle_slot_locked(throttle_key(account, net), now);
	s->failures++;
	s->last_failure_ms = now;
	s = throttle_slot_locked(throttle_key("", net), now);
	s->failures++;
	s->last_failure_ms = now;
	pthread_mutex_unlock(&throttle_mu);
}

void throttle_succeeded(const char *account, const char *ip)
{
	char net[64];
	uint64_t now = clock_mono_ms();

	throttle_network(ip, net, sizeof(net));
	pthread_mutex_lock(&throttle_mu);
	memset(throttle_slot_locked(throttle_key(account, net), now), 0,
	       sizeof(struct throttle_slot));
	pthread_mutex_unlock(&throttle_mu);
}
