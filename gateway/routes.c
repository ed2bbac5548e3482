/*
 * routes.c — the gateway's route table: exact path → allowed methods and
 * handler. An unknown path is a 404, a known path with another method a 405
 * whose Allow header is built from the same row, so the two cannot disagree.
 */
#include <stdio.h>
#include <string.h>

#include "gateway/gateway.h"

static const struct route routes_table[] = {
    {.path = "/healthz", .methods = HTTP_M_GET, .handler = health_live},
    {.path = "/readyz", .methods = HTTP_M_GET, .handler = health_ready},
};

/* Method names in the order of the HTTP_M_* bits, as an Allow header lists them. */
static const char *const routes_method_names[] = {
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
};

const struct route *routes_find(const char *path)
{
	/* A handful of rows: a linear scan beats hashing until there are dozens. */
	for (size_t i = 0; i < sizeof(routes_table) / sizeof(routes_table[0]); i++)
		if (strcmp(routes_table[i].path, path) == 0)
			return &routes_table[i];
	return NULL;
}

static unsigned routes_mask(const struct route *route)
{
	unsigned m = route->methods;
	if ((m & HTTP_M_GET) != 0)
		m |= HTTP_M_HEAD; /* MHD sends the headers of the GET answer, no body */
	return m;
}

bool routes_allows(const struct route *route, unsigned method)
{
	return method != 0 && (routes_mask(route) & method) != 0;
}

void routes_allow_header(const struct route *route, char *buf, size_t len)
{
	unsigned m = routes_mask(route);
	size_t used = 0;

	if (len == 0)
		return;
	buf[0] = '\0';
	for (size_t i = 0; i < sizeof(routes_method_names) / sizeof(routes_method_names[0]); i++) {
		int n;
		if ((m & (1u << i)) == 0)
			continue;
		n = snprintf(buf + used, len - used, "%s%s", used > 0 ? ", " : "",
		             routes_method_names[i]);
		if (n < 0 || (size_t)n >= len - used)
			return;
		used += (size_t)n;
	}
}

unsigned routes_method(const char *method)
{
	for (size_t i = 0; i < sizeof(routes_method_names) / sizeof(routes_method_names[0]); i++)
		if (strcmp(routes_method_names[i], method) == 0)
			return 1u << i;
	return 0;
}
