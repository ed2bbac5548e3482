/*
 * config_fuzz.c — the MAGNETAR_* environment parser. Input is lines of
 * NAME=VALUE; each line's name is mapped onto one of the real variable names
 * (the first byte picks it) so every validator is reached.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char buf[4096], err[256];
	struct conf c;
	size_t n = size < sizeof(buf) - 1 ? size : sizeof(buf) - 1;

	for (size_t i = 0; i < conf_nvars; i++)
		unsetenv(conf_vars[i].name);
	memcpy(buf, data, n);
	buf[n] = '\0';
	for (char *line = strtok(buf, "\n"); line != NULL; line = strtok(NULL, "\n")) {
		if (line[0] == '\0')
			continue;
		/* Secrets are left out: their _FILE forms would read the disk. */
		const struct conf_var *v = &conf_vars[(unsigned char)line[0] % conf_nvars];
		if (!v->secret)
			setenv(v->name, line + 1, 1);
	}
	for (int who = 0; who < SVC_PROGRAMS; who++) {
		if (conf_load(&c, (enum svc_id)who, err, sizeof(err)) == 0) {
			if (c.http_host == NULL || c.data_dir == NULL || c.url[SVC_AUTH] == NULL)
				__builtin_trap();
			conf_fini(&c);
		} else if (err[0] == '\0') {
			__builtin_trap(); /* a refusal always says why */
		}
	}
	return 0;
}
