/*
 * jsonesc.c — JSON string literals in printable ASCII (jsonesc.h). Decodes
 * UTF-8 strictly (no overlongs, no surrogates, nothing above U+10FFFF) so
 * what a terminal finally shows is exactly what the escapes say.
 */
#include "common/jsonesc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct jsonesc_out {
	char *buf;
	size_t cap, len;
};

static void jsonesc_put(struct jsonesc_out *o, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++, o->len++)
		if (o->len + 1 < o->cap)
			o->buf[o->len] = s[i];
}

static void jsonesc_u(struct jsonesc_out *o, uint32_t cp)
{
	static const char hex[] = "0123456789abcdef";
	char b[6] = {
	    '\\',        'u', hex[(cp >> 12) & 15], hex[(cp >> 8) & 15], hex[(cp >> 4) & 15],
	    hex[cp & 15]};
	jsonesc_put(o, b, 6);
}

/* Decodes one UTF-8 sequence at s; returns its length, or 0 if invalid. */
static size_t jsonesc_utf8(const unsigned char *s, uint32_t *cp)
{
	size_t n;
	uint32_t c, min;

	if (s[0] < 0xc2 || s[0] > 0xf4)
		return 0;
	if (s[0] < 0xe0)
		n = 2, c = s[0] & 0x1f, min = 0x80;
	else if (s[0] < 0xf0)
		n = 3, c = s[0] & 0x0f, min = 0x800;
	else
		n = 4, c = s[0] & 0x07, min = 0x10000;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0; /* also stops at the NUL */
		c = (c << 6) | (s[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return n;
}

static void jsonesc_run(struct jsonesc_out *o, const char *str)
{
	const unsigned char *s = (const unsigned char *)(str != NULL ? str : "");

	jsonesc_put(o, "\"", 1);
	while (*s != '\0') {
		uint32_t cp;
		size_t n;
		if (*s == '"' || *s == '\\') {
			char b[2] = {'\\', (char)*s};
			jsonesc_put(o, b, 2);
			s++;
		} else if (*s == '\n') {
			jsonesc_put(o, "\\n", 2);
			s++;
		} else if (*s == '\t') {
			jsonesc_put(o, "\\t", 2);
			s++;
		} else if (*s >= 0x20 && *s < 0x7f) {
			jsonesc_put(o, (const char *)s, 1);
			s++;
		} else if (*s < 0x80) {
			jsonesc_u(o, *s++); /* C0 controls (ESC, CR, ...) and DEL */
		} else if ((n = jsonesc_utf8(s, &cp)) == 0) {
			jsonesc_u(o, 0xfffd);
			s++;
		} else {
			if (cp >= 0x10000) { /* a surrogate pair, as JSON spells it */
				cp -= 0x10000;
				jsonesc_u(o, 0xd800 | (cp >> 10));
				jsonesc_u(o, 0xdc00 | (cp & 0x3ff));
			} else {
				jsonesc_u(o, cp); /* C1 controls like U+009B (CSI) too */
			}
			s += n;
		}
	}
	jsonesc_put(o, "\"", 1);
}

size_t jsonesc_str(char *buf, size_t cap, const char *s)
{
	struct jsonesc_out o = {buf, cap, 0};
	jsonesc_run(&o, s);
	if (cap > 0)
		buf[o.len < cap ? o.len : cap - 1] = '\0';
	return o.len;
}

void jsonesc_fputs(FILE *f, const char *s)
{
	char small[512];
	size_t n = jsonesc_str(small, sizeof(small), s);
	char *big;

	if (n < sizeof(small)) {
		fputs(small, f);
		return;
	}
	if ((big = malloc(n + 1)) == NULL) {
		fputs("\"\"", f);
		return;
	}
	jsonesc_str(big, n + 1, s);
	fputs(big, f);
	free(big);
}
