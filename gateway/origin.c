/*
 * origin.c — serialised origins (RFC 6454) and the CORS allow-list of
 * MAGNETAR_CORS_ORIGINS. A browser's Origin header is compared as a parsed
 * (scheme, host, port) triple, never as a prefix, suffix or substring, so
 * look-alikes such as https://app.example.com.evil.net never match.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/err.h"
#include "common/list.h"
#include "gateway/policy.h"

static bool origin_host_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.';
}

int origin_parse(const char *s, size_t len, struct origin *out)
{
	size_t i, hlen;

	if (len > 7 && strncasecmp(s, "http://", 7) == 0) {
		out->https = false;
		out->port = 80;
		i = 7;
	} else if (len > 8 && strncasecmp(s, "https://", 8) == 0) {
		out->https = true;
		out->port = 443;
		i = 8;
	} else
		return ERR_INVAL; /* "null", other schemes, empty */

	if (s[i] == '[') {
		/* An IPv6 literal; its inside is checked for the characters only
		 * (a browser sends it already normalised). */
		size_t j = i + 1;
		while (j < len && s[j] != ']') {
			char c = s[j];
			if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
			      (c >= 'A' && c <= 'F') || c == ':' || c == '.'))
				return ERR_INVAL;
			j++;
		}
		if (j >= len || j == i + 1)
			return ERR_INVAL;
		hlen = j + 1 - i;
	} else {
		hlen = 0;
		while (i + hlen < len && origin_host_char(s[i + hlen]))
			hlen++;
		if (hlen == 0 || s[i] == '.' || s[i] == '-')
			return ERR_INVAL;
	}
	if (hlen >= ORIGIN_HOST_MAX)
		return ERR_INVAL;
	for (size_t k = 0; k < hlen; k++) {
		char c = s[i + k];
		out->host[k] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	out->host[hlen] = '\0';
	i += hlen;
	if (i == len)
		return 0;
	/* Only ":port" may follow: a path, a trailing slash, "?", "#", "@" or
	 * whitespace make it something other than a serialised origin. */
	if (s[i] != ':' || i + 1 == len || len - i - 1 > 5 || s[i + 1] == '0')
		return ERR_INVAL;
	{
		unsigned long port = 0;
		for (size_t k = i + 1; k < len; k++) {
			if (s[k] < '0' || s[k] > '9')
				return ERR_INVAL;
			port = port * 10 + (unsigned long)(s[k] - '0');
		}
		if (port == 0 || port > 65535)
			return ERR_INVAL;
		out->port = (uint16_t)port;
	}
	return 0;
}

static bool origin_equal(const struct origin *a, const struct origin *b)
{
	return a->https == b->https && a->port == b->port && strcmp(a->host, b->host) == 0;
}

int origin_list_parse(const char *list, struct origin_list *out)
{
	const char *p;
	size_t cap, len;

	memset(out, 0, sizeof(*out));
	if (list == NULL)
		return 0;
	out->enabled = true;
	cap = list_count(list) + 1;
	if ((out->v = calloc(cap, sizeof(*out->v))) == NULL)
		return ERR_NOMEM;
	while (list_next(&list, &p, &len)) {
		if (len == 1 && p[0] == '*')
			out->any = true;
		else if (out->n >= cap || origin_parse(p, len, &out->v[out->n]) != 0) {
			origin_list_fini(out);
			return ERR_INVAL;
		} else
			out->n++;
	}
	return 0;
}

void origin_list_fini(struct origin_list *l)
{
	free(l->v);
	memset(l, 0, sizeof(*l));
}

bool origin_listed(const struct origin_list *l, const char *s, size_t len)
{
	struct origin o;

	if (!l->enabled || l->n == 0 || origin_parse(s, len, &o) != 0)
		return false;
	for (size_t i = 0; i < l->n; i++)
		if (origin_equal(&l->v[i], &o))
			return true;
	return false;
}
