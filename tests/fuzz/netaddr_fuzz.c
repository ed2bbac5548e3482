/*
 * netaddr_fuzz.c — libFuzzer target for the gateway's client-address parsers
 * (gateway/netaddr.c): X-Forwarded-For and Forwarded values behind a trusted
 * proxy, single hops and CIDR lists. The first byte picks the parser; the
 * client found must be the peer or an address that parsed from the header.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct netaddr_cidr trusted[4];
	static size_t ntrusted;
	struct netaddr_cidr cidrs[NETADDR_MAX_CIDRS];
	struct netaddr peer, out, a;
	char text[NETADDR_STRLEN], *copy;
	size_t n;

	if (ntrusted == 0 &&
	    netaddr_cidrs_parse("10.0.0.0/8, 2001:db8::/32", trusted, 4, &ntrusted) != 0)
		abort();
	if (size == 0)
		return 0;
	const char *v = (const char *)data + 1;
	size_t len = size - 1;
	switch (data[0] % 4) {
	case 0:
	case 1:
		netaddr_parse("10.1.2.3", 8, &peer);
		netaddr_client(&peer, trusted, ntrusted,
		               data[0] % 4 == 0 ? NETADDR_XFF : NETADDR_FORWARDED, v, len, &out);
		netaddr_format(&out, text);
		if (strlen(text) >= NETADDR_STRLEN)
			abort();
		break;
	case 2:
		if (netaddr_parse_hop(v, len, &a) == 0) {
			netaddr_format(&a, text);
			/* What formats must parse again to the same address. */
			if (netaddr_parse(text, strlen(text), &out) != 0 ||
			    memcmp(&a, &out, 16) != 0)
				abort();
		}
		break;
	default:
		if ((copy = malloc(len + 1)) == NULL)
			return 0;
		memcpy(copy, v, len);
		copy[len] = '\0';
		if (netaddr_cidrs_parse(copy, cidrs, NETADDR_MAX_CIDRS, &n) == 0) {
			if (n > NETADDR_MAX_CIDRS)
				abort();
			for (size_t i = 0; i < n; i++)
				if (cidrs[i].bits > 128 ||
				    !netaddr_cidrs_match(cidrs, n, &cidrs[i].net))
					abort();
		}
		free(copy);
		break;
	}
	return 0;
}
