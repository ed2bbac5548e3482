/*
 * netaddr.c — who the client is: socket addresses, the trusted-proxy CIDR list
 * (MAGNETAR_TRUSTED_PROXIES) and the right-most untrusted hop of
 * X-Forwarded-For or Forwarded. Pure functions: tests/unit/gateway_netaddr_test.c
 * and tests/fuzz/netaddr_fuzz.c call them directly.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "common/err.h"
#include "common/list.h"
#include "gateway/policy.h"

static const uint8_t netaddr_v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int netaddr_parse(const char *s, size_t len, struct netaddr *out)
{
	char buf[NETADDR_STRLEN];
	uint8_t v4[4];

	/* inet_pton wants a NUL-terminated copy; anything longer is no literal. */
	if (len == 0 || len >= sizeof(buf) || memchr(s, '\0', len) != NULL)
		return ERR_INVAL;
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (inet_pton(AF_INET, buf, v4) == 1) {
		memcpy(out->b, netaddr_v4_prefix, 12);
		memcpy(out->b + 12, v4, 4);
		return 0;
	}
	if (inet_pton(AF_INET6, buf, out->b) == 1)
		return 0;
	return ERR_INVAL;
}

/* Digits only, 1..65535: the port a proxy may append to a hop. */
static bool netaddr_port_ok(const char *s, size_t len)
{
	unsigned long v = 0;
	if (len == 0 || len > 5)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	return v >= 1 && v <= 65535;
}

int netaddr_parse_hop(const char *s, size_t len, struct netaddr *out)
{
	const char *colon;

	if (len > 0 && s[0] == '[') {
		const char *close = memchr(s, ']', len);
		size_t rest;
		if (close == NULL)
			return ERR_INVAL;
		rest = len - (size_t)(close + 1 - s);
		if (rest != 0 && (close[1] != ':' || !netaddr_port_ok(close + 2, rest - 1)))
			return ERR_INVAL;
		/* Only IPv6 goes in brackets. */
		if (memchr(s + 1, ':', (size_t)(close - s - 1)) == NULL)
			return ERR_INVAL;
		return netaddr_parse(s + 1, (size_t)(close - s - 1), out);
	}
	/* One colon: IPv4 with a port. More: a bare IPv6 literal. */
	colon = memchr(s, ':', len);
	if (colon != NULL && memchr(colon + 1, ':', len - (size_t)(colon + 1 - s)) == NULL) {
		if (!netaddr_port_ok(colon + 1, len - (size_t)(colon + 1 - s)) ||
		    memchr(s, '.', (size_t)(colon - s)) == NULL)
			return ERR_INVAL;
		return netaddr_parse(s, (size_t)(colon - s), out);
	}
	return netaddr_parse(s, len, out);
}

int netaddr_from_sockaddr(const struct sockaddr *sa, struct netaddr *out)
{
	if (sa == NULL)
		return ERR_INVAL;
	if (sa->sa_family == AF_INET) {
		memcpy(out->b, netaddr_v4_prefix, 12);
		memcpy(out->b + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		memcpy(out->b, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
		return 0;
	}
	return ERR_INVAL;
}

void netaddr_format(const struct netaddr *a, char out[NETADDR_STRLEN])
{
	const char *ok;
	if (memcmp(a->b, netaddr_v4_prefix, 12) == 0)
		ok = inet_ntop(AF_INET, a->b + 12, out, NETADDR_STRLEN);
	else
		ok = inet_ntop(AF_INET6, a->b, out, NETADDR_STRLEN);
	if (ok == NULL)
		strcpy(out, "?");
}

static void netaddr_mask(struct netaddr *a, unsigned bits)
{
	for (unsigned i = 0; i < 16; i++) {
		unsigned keep = bits > 8 * i ? bits - 8 * i : 0;
		if (keep < 8)
			a->b[i] &= (uint8_t)(0xff00u >> keep);
	}
}

static int netaddr_cidr_parse(const char *s, size_t len, struct netaddr_cidr *out)
{
	const char *slash = memchr(s, '/', len);
	size_t alen = slash != NULL ? (size_t)(slash - s) : len;
	unsigned long bits;
	bool v4;

	if (netaddr_parse(s, alen, &out->net) != 0)
		return ERR_INVAL;
	v4 = memchr(s, ':', alen) == NULL;
	if (slash == NULL)
		bits = v4 ? 32 : 128;
	else {
		const char *p = slash + 1;
		size_t plen = len - alen - 1;
		if (plen == 0 || plen > 3)
			return ERR_INVAL;
		bits = 0;
		for (size_t i = 0; i < plen; i++) {
			if (p[i] < '0' || p[i] > '9')
				return ERR_INVAL;
			bits = bits * 10 + (unsigned long)(p[i] - '0');
		}
		if (bits > (v4 ? 32u : 128u))
			return ERR_INVAL;
	}
	out->bits = (unsigned)(v4 ? bits + 96 : bits);
	netaddr_mask(&out->net, out->bits);
	return 0;
}

int netaddr_cidrs_parse(const char *list, struct netaddr_cidr *out, size_t max, size_t *n)
{
	const char *p;
	size_t len;

	*n = 0;
	while (list_next(&list, &p, &len)) {
		if (*n >= max || netaddr_cidr_parse(p, len, &out[*n]) != 0)
			return ERR_INVAL;
		(*n)++;
	}
	return 0;
}

bool netaddr_cidrs_match(const struct netaddr_cidr *c, size_t n, const struct netaddr *a)
{
	for (size_t i = 0; i < n; i++) {
		struct netaddr m = *a;
		netaddr_mask(&m, c[i].bits);
		if (memcmp(m.b, c[i].net.b, 16) == 0)
			return true;
	}
	return false;
}

void netaddr_rate_key(const struct netaddr *a, struct netaddr *out)
{
	*out = *a;
	/* IPv4 is held IPv4-mapped, inside ::/64: it must not be masked, or
	 * every IPv4 client (and ::1) would share one bucket. */
	if (memcmp(a->b, netaddr_v4_prefix, 12) != 0)
		netaddr_mask(out, 64);
}

/* ---- proxy headers --------------------------------------------------------- */

struct netaddr_hop {
	const char *s;
	size_t len;
	bool ok; /* syntactically a node we can read */
};

/* The hops of a header, the last NETADDR_MAX_HOPS kept (a ring). */
struct netaddr_hops {
	struct netaddr_hop h[NETADDR_MAX_HOPS];
	size_t count; /* total seen; the ring holds the last min(count, MAX) */
};

static void netaddr_hops_add(struct netaddr_hops *hs, const char *s, size_t len, bool ok)
{
	while (len > 0 && (*s == ' ' || *s == '\t')) {
		s++;
		len--;
	}
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	hs->h[hs->count % NETADDR_MAX_HOPS] = (struct netaddr_hop){s, len, ok && len > 0};
	hs->count++;
}

static void netaddr_split_xff(const char *v, size_t len, struct netaddr_hops *hs)
{
	size_t start = 0;
	for (size_t i = 0; i <= len; i++)
		if (i == len || v[i] == ',') {
			netaddr_hops_add(hs, v + start, i - start, true);
			start = i + 1;
		}
}

/* One forwarded-element ("for=...;proto=..."): the for= node, unquoted. */
static void netaddr_forwarded_element(const char *e, size_t len, struct netaddr_hops *hs)
{
	size_t i = 0;

	while (i < len) {
		size_t name = i, eq, vstart, vend;
		while (i < len && e[i] != '=' && e[i] != ';')
			i++;
		if (i >= len || e[i] != '=') {
			i++;
			continue;
		}
		eq = i++;
		vstart = i;
		if (i < len && e[i] == '"') {
			vstart = ++i;
			while (i < len && e[i] != '"' && e[i] != '\\')
				i++;
			if (i >= len || e[i] != '"') {
				netaddr_hops_add(hs, e, 0,
				                 false); /* escapes or no end: unreadable */
				return;
			}
			vend = i++;
		} else {
			while (i < len && e[i] != ';')
				i++;
			vend = i;
		}
		while (name < eq && (e[name] == ' ' || e[name] == '\t'))
			name++;
		while (eq > name && (e[eq - 1] == ' ' || e[eq - 1] == '\t'))
			eq--;
		if (eq - name == 3 && strncasecmp(e + name, "for", 3) == 0) {
			netaddr_hops_add(hs, e + vstart, vend - vstart, true);
			return;
		}
		while (i < len && e[i] != ';')
			i++;
		i++;
	}
	netaddr_hops_add(hs, e, 0, false); /* an element without for= */
}

static void netaddr_split_forwarded(const char *v, size_t len, struct netaddr_hops *hs)
{
	size_t start = 0;
	bool quoted = false;

	for (size_t i = 0; i <= len; i++) {
		if (i < len && v[i] == '"')
			quoted = !quoted;
		if (i == len || (v[i] == ',' && !quoted)) {
			netaddr_forwarded_element(v + start, i - start, hs);
			start = i + 1;
		}
	}
}

void netaddr_client(const struct netaddr *peer, const struct netaddr_cidr *trusted, size_t ntrusted,
                    enum netaddr_header kind, const char *value, size_t len, struct netaddr *out)
{
	struct netaddr_hops hs;
	size_t kept;

	*out = *peer;
	if (value == NULL || ntrusted == 0 || !netaddr_cidrs_match(trusted, ntrusted, out))
		return;
	hs.count = 0;
	if (kind == NETADDR_FORWARDED)
		netaddr_split_forwarded(value, len, &hs);
	else
		netaddr_split_xff(value, len, &hs);
	kept = hs.count < NETADDR_MAX_HOPS ? hs.count : NETADDR_MAX_HOPS;
	for (size_t k = 0; k < kept; k++) {
		const struct netaddr_hop *h = &hs.h[(hs.count - 1 - k) % NETADDR_MAX_HOPS];
		struct netaddr a;
		if (!h->ok || netaddr_parse_hop(h->s, h->len, &a) != 0)
			return; /* unreadable: the trusted proxy in hand is the client */
		*out = a;
		if (!netaddr_cidrs_match(trusted, ntrusted, out))
			return;
	}
}
