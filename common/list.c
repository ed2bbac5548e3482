/*
 * list.c — comma-separated lists (list.h).
 */
#include "common/list.h"

#include <string.h>

static bool list_blank(char c)
{
	return c == ' ' || c == '\t';
}

bool list_next(const char **cur, const char **item, size_t *len)
{
	const char *p = *cur;

	while (p != NULL && *p != '\0') {
		size_t n = strcspn(p, ",");
		const char *next = p[n] == ',' ? p + n + 1 : p + n;
		while (n > 0 && list_blank(*p)) {
			p++;
			n--;
		}
		while (n > 0 && list_blank(p[n - 1]))
			n--;
		if (n > 0) {
			*item = p;
			*len = n;
			*cur = next;
			return true;
		}
		p = next;
	}
	*cur = p;
	return false;
}

size_t list_count(const char *list)
{
	const char *item;
	size_t len, n = 0;

	while (list_next(&list, &item, &len))
		n++;
	return n;
}
