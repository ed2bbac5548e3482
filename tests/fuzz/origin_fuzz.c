/*
 * origin_fuzz.c — libFuzzer target for the CORS origin parser
 * (gateway/origin.c): an Origin header against a fixed allow-list, and an
 * allow-list itself. An origin that matches must parse to a listed triple;
 * anything with a path, a slash or "null" must never match.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct origin_list list;
	static int ready;
	struct origin_list other;
	struct origin o;
	char *copy;

	if (!ready) {
		if (origin_list_parse("https://app.example.com, http://localhost:3000", &list) != 0)
			abort();
		ready = 1;
	}
	if (size == 0)
		return 0;
	const char *v = (const char *)data + 1;
	size_t len = size - 1;
	if (data[0] % 2 == 0) {
		if (origin_listed(&list, v, len)) {
			if (origin_parse(v, len, &o) != 0 || memchr(v, '/', len) == NULL ||
			    memchr(v + 8, '/', len > 8 ? len - 8 : 0) != NULL ||
			    memchr(v, '@', len))
				abort();
			if (strcmp(o.host, "app.example.com") != 0 &&
			    strcmp(o.host, "localhost") != 0)
				abort();
		}
		return 0;
	}
	if ((copy = malloc(len + 1)) == NULL)
		return 0;
	memcpy(copy, v, len);
	copy[len] = '\0';
	if (origin_list_parse(copy, &other) == 0) {
		for (size_t i = 0; i < other.n; i++)
			if (other.v[i].host[0] == '\0' || other.v[i].port == 0)
				abort();
		origin_list_fini(&other);
	}
	free(copy);
	return 0;
}
