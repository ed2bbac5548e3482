/*
 * upstream_fuzz.c — libFuzzer target for what the gateway reads from an
 * upstream and from a client's target before proxying (gateway/upstream.c):
 * the response head, the chunked body decoder, the target check and the
 * check for a path a lenient upstream reads under another prefix. The
 * first byte picks the parser. The decoder must give the same bytes
 * whether its input comes whole or a byte at a time, with any output room.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/upstream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Decodes in[0..len) feeding `step` bytes at a time into `room`-byte
 * outputs; returns the decoder's last result, the output in out. */
static int upstream_fuzz_decode(const char *in, size_t len, size_t step, size_t room, char *out,
                                size_t *olen)
{
	struct upstream_chunked c;
	size_t at = 0;
	int rv = 0;

	memset(&c, 0, sizeof(c));
	*olen = 0;
	while (at < len && rv == 0) {
		size_t k = len - at < step ? len - at : step, used, made;
		rv = upstream_chunked_feed(&c, in + at, k, &used, out + *olen, room, &made);
		if (used > k || made > room)
			abort();
		*olen += made;
		at += used;
		if (used == 0 && made == 0 && rv == 0)
			abort(); /* no progress with room to spare */
	}
	return rv;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct upstream_head h;
	const char *in = (const char *)data + 1;
	size_t len;
	long n;

	if (size == 0)
		return 0;
	len = size - 1;
	switch (data[0] % 4) {
	case 0:
		n = upstream_head_parse(in, len, (data[0] & 0x80) != 0, &h);
		if (n > (long)len || n < -1)
			abort();
		for (size_t i = 0; n > 0 && i < h.n; i++)
			if (h.h[i].name < in || h.h[i].value + h.h[i].value_len > in + n ||
			    h.h[i].name_len == 0)
				abort();
		if (n > 0 && (h.status < 100 || h.status > 599))
			abort();
		break;
	case 1: {
		char *a = malloc(len + 1), *b = malloc(len + 1);
		size_t la, lb;
		int ra, rb;
		if (a == NULL || b == NULL)
			abort();
		ra = upstream_fuzz_decode(in, len, len + 1, len + 1, a, &la);
		rb = upstream_fuzz_decode(in, len, 1, 3, b, &lb);
		if (ra != rb || (ra >= 0 && (la != lb || memcmp(a, b, la) != 0)))
			abort();
		free(a);
		free(b);
		break;
	}
	case 2:
		(void)upstream_target_safe(in, len);
		break;
	case 3: {
		/* Literal addresses only: no name is resolved in a fuzz run. */
		static struct upstream_set set;
		char err[256], *path;
		if (set.n == 0 && upstreams_parse("/app http://127.0.0.1:1 authenticated;"
		                                  "/app/admin http://127.0.0.1:1 role=admin;"
		                                  "/ unix:/tmp/x.sock public",
		                                  &set, err, sizeof(err)) != 0)
			abort();
		if ((path = strndup(in, len)) == NULL)
			abort();
		(void)upstreams_ambiguous(&set, path, upstreams_match(&set, path));
		free(path);
		break;
	}
	}
	return 0;
}
