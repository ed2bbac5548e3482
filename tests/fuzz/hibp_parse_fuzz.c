/*
 * hibp_parse_fuzz.c — libFuzzer target for the Pwned Passwords parsers
 * (lib/pwstore/hibp.c): a range body from the network and an import
 * line from a file. The first input byte picks the parser; every accepted
 * body must have consistent pairs (no padding, lengths agree).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/pwstore/pwstore.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pairs *p;
	uint32_t pad, count, prefix;
	uint8_t hash[20];

	if (size == 0)
		return 0;
	switch (data[0] % 3) {
	case 0:
		if (hibp_parse((const char *)data + 1, size - 1, &p, &pad) == 0) {
			for (uint32_t i = 0; i < p->n; i++)
				if (p->counts[i] == 0 || p->suffixes[i * PAIRS_SUFFIX_LEN] > 0x0f)
					abort();
			pairs_unref(p);
		}
		break;
	case 1:
		if (hibp_import_line((const char *)data + 1, size - 1, -1, hash, &count) == 0 &&
		    size - 1 < 41)
			abort();
		break;
	default:
		if (hibp_prefix((const char *)data + 1, size > 6 ? 5 : size - 1, &prefix) == 0 &&
		    prefix > 0xfffff)
			abort();
		if (size > 6 &&
		    hibp_import_line((const char *)data + 6, size - 6, 0x5BAA6, hash, &count) ==
		        0 &&
		    (hash[0] != 0x5B || hash[1] != 0xAA || (hash[2] >> 4) != 6))
			abort();
		break;
	}
	return 0;
}
