/*
 * terminal_validate_fuzz.c — libFuzzer target for the terminal's policy
 * (services/terminal/validate.c) and frame parser (frame.c). The first byte
 * picks the check; an accepted shell must be exactly an allowed entry and an
 * accepted directory must lie under the root.
 */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "services/terminal/terminal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct validate_policy policy;
static int ready;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char in[PATH_MAX + 1], out[PATH_MAX];
	struct frame f;
	size_t len;

	if (!ready) {
		if (validate_policy_init(&policy, "/bin/sh,/bin/bash", "/tmp", "/etc/shells",
		                         "/") != 0)
			abort();
		ready = 1;
	}
	if (size == 0)
		return 0;
	len = size - 1 < PATH_MAX ? size - 1 : PATH_MAX;
	memcpy(in, data + 1, len);
	in[len] = '\0';
	switch (data[0] % 3) {
	case 0:
		if (validate_shell(&policy, in, len, out, sizeof(out)) == 0 &&
		    strcmp(in, "/bin/sh") != 0 && strcmp(in, "/bin/bash") != 0)
			abort();
		break;
	case 1:
		if (validate_cwd(&policy, in, len, out, sizeof(out)) == 0 &&
		    !validate_under_root(&policy, out))
			abort();
		break;
	default:
		if (frame_parse_client(data + 1, size - 1, &f) == 0 &&
		    ((f.kind == FRAME_RESIZE && (f.cols < 1 || f.cols > TERMINAL_SIZE_MAX ||
		                                 f.rows < 1 || f.rows > TERMINAL_SIZE_MAX)) ||
		     (f.kind == FRAME_DATA && f.len != size - 2)))
			abort();
		break;
	}
	return 0;
}
