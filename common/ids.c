/*
 * ids.c — random identifiers (ids.h).
 */
#include "common/ids.h"

#include <errno.h>
#include <sys/random.h>

#include "common/err.h"

int ids_random(void *buf, size_t n)
{
	unsigned char *p = buf;
	while (n > 0) {
		ssize_t got = getrandom(p, n, 0);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return ERR_IO;
		}
		p += got;
		n -= (size_t)got;
	}
	return 0;
}

void ids_hex(char *out, const unsigned char *in, size_t len)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

int ids_random_hex(char *out, size_t nbytes)
{
	unsigned char raw[64];
	int rv;
	if (nbytes > sizeof(raw))
		return ERR_INVAL;
	if ((rv = ids_random(raw, nbytes)) != 0)
		return rv;
	ids_hex(out, raw, nbytes);
	return 0;
}
