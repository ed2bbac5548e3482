/*
 * fault_alloc.c — MAGNETAR_FAULT_ALLOC=N: every Nth allocation made by
 * Magnetar's own code fails as if memory ran out (fault.h; test only).
 *
 * The five services are linked with -Wl,--wrap=malloc,... (Makefile): the
 * linker sends every call our objects (the program's and this library's)
 * make to malloc to __wrap_malloc here, and __real_malloc to libc's. Shared
 * libraries (nng, jansson, OpenSSL, protobuf-c, libmicrohttpd, SQLite) keep
 * libc's allocator untouched. Nothing refers to this file but the wrapped
 * calls, so a program linked without --wrap (magctl, the unit tests) never
 * pulls it out of the archive, and the fuzzers leave it out (fuzz.mk).
 * Unarmed, each call costs one test of a counter that is zero.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fault.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t nmemb, size_t n);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
int __real_vasprintf(char **out, const char *fmt, va_list ap);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t nmemb, size_t n);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
int __wrap_vasprintf(char **out, const char *fmt, va_list ap);
int __wrap_asprintf(char **out, const char *fmt, ...);

static int fault_alloc_fail(void)
{
	if (!fault_alloc_due())
		return 0;
	errno = ENOMEM;
	return 1;
}

void *__wrap_malloc(size_t n)
{
	return fault_alloc_fail() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t nmemb, size_t n)
{
	return fault_alloc_fail() ? NULL : __real_calloc(nmemb, n);
}

/* realloc(p, 0) frees p: never failed, or p would leak. */
void *__wrap_realloc(void *p, size_t n)
{
	return n != 0 && fault_alloc_fail() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
	return fault_alloc_fail() ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
	return fault_alloc_fail() ? NULL : __real_strndup(s, n);
}

int __wrap_vasprintf(char **out, const char *fmt, va_list ap)
{
	if (fault_alloc_fail()) {
		*out = NULL;
		return -1;
	}
	return __real_vasprintf(out, fmt, ap);
}

int __wrap_asprintf(char **out, const char *fmt, ...)
{
	va_list ap;
	int rv;

	va_start(ap, fmt);
	rv = __wrap_vasprintf(out, fmt, ap);
	va_end(ap);
	return rv;
}
