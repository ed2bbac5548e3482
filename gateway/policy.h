/*
 * policy.h — the pure parts of the gateway's hardening (issue 6): client
 * addresses and proxy headers, CORS origins, token buckets, Idempotency-Key
 * syntax. No libmicrohttpd, no I/O: unit tests and fuzz targets link them.
 */
#ifndef MAGNETAR_GATEWAY_POLICY_H
#define MAGNETAR_GATEWAY_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sockaddr;

/* ---- netaddr.c: addresses, CIDRs, X-Forwarded-For / Forwarded ------------- */

/* An IPv6 address; IPv4 is held IPv4-mapped (::ffff:a.b.c.d), so one CIDR
 * list and one rate-limit key cover both families. */
struct netaddr {
	uint8_t b[16];
};

struct netaddr_cidr {
	struct netaddr net; /* host bits cleared */
	unsigned bits;      /* prefix length out of 128 (an IPv4 /n is 96 + n) */
};

#define NETADDR_STRLEN 46 /* INET6_ADDRSTRLEN */
#define NETADDR_MAX_CIDRS 64
#define NETADDR_MAX_HOPS 64 /* proxy hops looked at, counted from the right */

enum netaddr_header {
	NETADDR_XFF,       /* X-Forwarded-For: a, b, c */
	NETADDR_FORWARDED, /* Forwarded: for=a;proto=https, for="[b]:1" (RFC 7239) */
};

/* An IPv4 or IPv6 literal of exactly `len` bytes. 0 or ERR_INVAL. */
int netaddr_parse(const char *s, size_t len, struct netaddr *out);
/* A proxy hop: a literal, "[v6]", "[v6]:port" or "v4:port". 0 or ERR_INVAL. */
int netaddr_parse_hop(const char *s, size_t len, struct netaddr *out);
/* From a socket address (AF_INET or AF_INET6). 0 or ERR_INVAL. */
int netaddr_from_sockaddr(const struct sockaddr *sa, struct netaddr *out);
/* Dotted quad for IPv4-mapped addresses, RFC 5952 text otherwise. */
void netaddr_format(const struct netaddr *a, char out[NETADDR_STRLEN]);
/* "10.0.0.0/8, 2001:db8::/32, 192.0.2.1" (a bare address is a /32 or /128).
 * 0 with *n set, or ERR_INVAL (a bad entry, or more than `max`). */
int netaddr_cidrs_parse(const char *list, struct netaddr_cidr *out, size_t max, size_t *n);
bool netaddr_cidrs_match(const struct netaddr_cidr *c, size_t n, const struct netaddr *a);
/* The one client a per-IP limit counts `a` as: an IPv4 address whole, an
 * IPv6 address by its /64 (the host bits cleared). A site gets a /64 at the
 * least and picks the low 64 bits at will (privacy addresses, RFC 8981),
 * so a limit per full IPv6 address is no limit. */
void netaddr_rate_key(const struct netaddr *a, struct netaddr *out);
/*
 * The client address of a request that came from `peer` carrying the proxy
 * header `value` (len bytes; NULL when absent). The header is believed only
 * while the address at hand is a trusted proxy: walking the hops from the
 * right, the first address not in `trusted` is the client. A hop that does
 * not parse ("unknown", an obfuscated Forwarded node, garbage) ends the walk
 * at the last trusted proxy, which then counts as the client.
 */
void netaddr_client(const struct netaddr *peer, const struct netaddr_cidr *trusted, size_t ntrusted,
                    enum netaddr_header kind, const char *value, size_t len, struct netaddr *out);

/* ---- origin.c: serialised origins (RFC 6454) and the CORS allow-list ------- */

#define ORIGIN_HOST_MAX 256

struct origin {
	bool https;                 /* else http: no other scheme is an origin here */
	char host[ORIGIN_HOST_MAX]; /* lower case; "[v6]" kept in brackets */
	uint16_t port;              /* explicit or the scheme's default */
};

/* "scheme://host[:port]" exactly: no path, no trailing slash, no userinfo,
 * query or fragment, no whitespace; "null" and other schemes are refused.
 * Scheme and host are compared case-insensitively, the port exactly, with
 * 80/443 filled in when omitted. 0 or ERR_INVAL. */
int origin_parse(const char *s, size_t len, struct origin *out);

struct origin_list {
	bool enabled; /* MAGNETAR_CORS_ORIGINS is set (even empty) */
	bool any;     /* "*" (refused in production by config.c) */
	size_t n;
	struct origin *v;
};

/* Parses the comma-separated list. 0, or ERR_INVAL naming nothing secret
 * (the caller reports the variable) / ERR_NOMEM. Free with origin_list_fini. */
int origin_list_parse(const char *list, struct origin_list *out);
void origin_list_fini(struct origin_list *l);
/* True when the Origin header value `s` is on the list (never for "*"). */
bool origin_listed(const struct origin_list *l, const char *s, size_t len);

/* ---- ratelimit.c: token buckets in a fixed-size table ---------------------- */

/* `burst` requests per `period_ms`, refilled evenly; burst 0 = no limit. */
struct ratelimit_rule {
	uint32_t burst;
	uint32_t period_ms;
};

/* "N/S" (N requests per S seconds, at most N at once), or "off". 0 or ERR_INVAL. */
int ratelimit_rule_parse(const char *s, struct ratelimit_rule *out);

struct ratelimit;
/* A table of `entries` buckets (rounded up to a power of two, at least 64),
 * hashed with a random key so no client can aim at another's bucket. */
int ratelimit_new(size_t entries, struct ratelimit **out);
void ratelimit_free(struct ratelimit *rl);
/* Takes one token from the bucket of (klass, netaddr_rate_key(key)): every
 * address of one IPv6 /64 shares a bucket. 0 when allowed, else the
 * seconds (>= 1) until a token is back: the Retry-After. O(1): one lock,
 * one set of 8 entries. */
unsigned ratelimit_take(struct ratelimit *rl, unsigned klass, const struct ratelimit_rule *rule,
                        const struct netaddr *key, uint64_t now_ms);
/* Buckets taken over from another key since start (table pressure). */
uint64_t ratelimit_evictions(const struct ratelimit *rl);

/* ---- idem.c: Idempotency-Key syntax (docs/api.md: 1-255 printable ASCII) ------- */

bool idem_key_valid(const char *key);

#endif
