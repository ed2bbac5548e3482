/*
 * list.h — comma-separated lists, as environment values (the gateway's CORS
 * origins and trusted proxies, the terminal's shells, ...) and HTTP header
 * values (Connection) carry them: items split at ',', spaces and tabs around
 * an item dropped, empty items skipped. One tokenizer, so every list of the
 * project reads "a, b,,c " the same way.
 */
#ifndef MAGNETAR_LIST_H
#define MAGNETAR_LIST_H

#include <stdbool.h>
#include <stddef.h>

/* The next item of the list at *cur: true with *item and *len set (not
 * NUL-terminated) and *cur moved past it; false at the end. Start with
 * *cur at the list (NULL is an empty list). */
bool list_next(const char **cur, const char **item, size_t *len);
/* The number of items list_next would give. */
size_t list_count(const char *list);

#endif
