/*
 * hibp.c — strict parsers for the Pwned Passwords text formats: a range
 * body (`SUFFIX:COUNT` lines from the range API) and an import line (a
 * downloader file's `SUFFIX:COUNT` or `SHA1:COUNT`). Pure functions over
 * bytes from the network or a file: no allocation but the result, no I/O,
 * so the fuzz target calls exactly what the service runs.
 */
#include <string.h>

#include "common/err.h"
#include "lib/pwstore/pwstore.h"

#define HIBP_SUFFIX_HEX 35
#define HIBP_COUNT_DIGITS 10 /* UINT32_MAX has 10 digits */
#define HIBP_LINE_MAX (40 + 1 + HIBP_COUNT_DIGITS)

static int hibp_nibble(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* `n` hex digits into out, high nibble first; an odd count starts with a
 * lone low nibble in out[0] (that is how a 35-digit suffix sits in the
 * 18 bytes of SHA-1 bytes 2..19). */
static int hibp_hex(const char *s, size_t n, uint8_t *out)
{
	size_t o = 0, i = 0;

	if (n % 2 == 1) {
		int v = hibp_nibble((unsigned char)s[0]);
		if (v < 0)
			return ERR_INVAL;
		out[o++] = (uint8_t)v;
		i = 1;
	}
	for (; i < n; i += 2) {
		int hi = hibp_nibble((unsigned char)s[i]),
		    lo = hibp_nibble((unsigned char)s[i + 1]);
		if (hi < 0 || lo < 0)
			return ERR_INVAL;
		out[o++] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

/* 1..10 decimal digits, at most UINT32_MAX: a bigger number is not a
 * count the real data set has, so it is treated as a corrupt body. */
static int hibp_count(const char *s, size_t n, uint32_t *count)
{
	uint64_t v = 0;

	if (n == 0 || n > HIBP_COUNT_DIGITS)
		return ERR_INVAL;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return ERR_INVAL;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v > UINT32_MAX)
		return ERR_INVAL;
	*count = (uint32_t)v;
	return 0;
}

/* Splits off the next line: [*pos, end of line) without its LF or CRLF.
 * Returns 1 with a line, 0 at the end of the body, ERR_INVAL for a lone CR
 * or a line too long to be valid. */
static int hibp_next_line(const char *body, size_t len, size_t *pos, const char **line, size_t *n)
{
	size_t start = *pos, end;
	const char *nl;

	if (start >= len)
		return 0;
	nl = memchr(body + start, '\n', len - start);
	end = nl != NULL ? (size_t)(nl - body) : len;
	*pos = nl != NULL ? end + 1 : len;
	if (nl != NULL && end > start && body[end - 1] == '\r')
		end--; /* CRLF; a CR with no LF after it is a cut-off body */
	if (end - start > HIBP_LINE_MAX || memchr(body + start, '\r', end - start) != NULL)
		return ERR_INVAL;
	*line = body + start;
	*n = end - start;
	return 1;
}

static int hibp_range_line(const char *s, size_t n, uint8_t suffix[PAIRS_SUFFIX_LEN],
                           uint32_t *count)
{
	if (n < HIBP_SUFFIX_HEX + 2 || s[HIBP_SUFFIX_HEX] != ':')
		return ERR_INVAL;
	if (hibp_hex(s, HIBP_SUFFIX_HEX, suffix) != 0)
		return ERR_INVAL;
	return hibp_count(s + HIBP_SUFFIX_HEX + 1, n - HIBP_SUFFIX_HEX - 1, count);
}

int hibp_parse(const char *body, size_t len, struct pairs **out, uint32_t *padding)
{
	uint8_t suffix[PAIRS_SUFFIX_LEN];
	uint32_t count, real = 0, pad = 0, i = 0;
	struct pairs *p;
	const char *line;
	size_t pos = 0, n;
	int rv;

	*out = NULL;
	/* Pass 1 validates everything and sizes the result: nothing is kept
	 * from a body that is malformed anywhere. */
	while ((rv = hibp_next_line(body, len, &pos, &line, &n)) == 1) {
		if (hibp_range_line(line, n, suffix, &count) != 0)
			return ERR_INVAL;
		if (count == 0)
			pad++;
		else
			real++;
		if (real + pad > PAIRS_MAX)
			return ERR_INVAL;
	}
	/* A real range is never empty (hundreds of hashes share every 5-hex
	 * prefix, and we always ask for padding): an empty body is a failure. */
	if (rv != 0 || real + pad == 0)
		return ERR_INVAL;
	if ((p = pairs_new(real)) == NULL)
		return ERR_NOMEM;
	pos = 0;
	while (hibp_next_line(body, len, &pos, &line, &n) == 1) {
		hibp_range_line(line, n, suffix, &count);
		if (count == 0)
			continue; /* padding never counts as a hit */
		memcpy(p->suffixes + (size_t)i * PAIRS_SUFFIX_LEN, suffix, PAIRS_SUFFIX_LEN);
		p->counts[i++] = count;
	}
	if (padding != NULL)
		*padding = pad;
	*out = p;
	return 0;
}

int hibp_import_line(const char *s, size_t n, int32_t prefix, uint8_t hash[20], uint32_t *count)
{
	uint8_t tmp[PAIRS_SUFFIX_LEN];

	if (n > 0 && s[n - 1] == '\n')
		n--;
	if (n > 0 && s[n - 1] == '\r')
		n--;
	if (n > HIBP_LINE_MAX)
		return ERR_INVAL;
	if (prefix < 0) {
		/* whole SHA1:COUNT */
		if (n < 42 || s[40] != ':' || hibp_hex(s, 40, hash) != 0)
			return ERR_INVAL;
		return hibp_count(s + 41, n - 41, count);
	}
	if (prefix > 0xfffff || hibp_range_line(s, n, tmp, count) != 0)
		return ERR_INVAL;
	hash[0] = (uint8_t)(prefix >> 12);
	hash[1] = (uint8_t)(prefix >> 4);
	hash[2] = (uint8_t)((prefix & 0xf) << 4 | tmp[0]);
	memcpy(hash + 3, tmp + 1, PAIRS_SUFFIX_LEN - 1);
	return 0;
}

int hibp_prefix(const char *s, size_t n, uint32_t *prefix)
{
	uint32_t v = 0;

	if (n != 5)
		return ERR_INVAL;
	for (size_t i = 0; i < 5; i++) {
		int d = hibp_nibble((unsigned char)s[i]);
		if (d < 0)
			return ERR_INVAL;
		v = v << 4 | (uint32_t)d;
	}
	*prefix = v;
	return 0;
}
