/*
 * config_fuzz.c — the MAGNETAR_* environment parser. Input is lines of
 * NAME=VALUE; each line's name is mapped onto one of the real variable names
 * (the first byte picks it) so every validator is reached; the URL lists
 * accepted are split as replicas split them (common/replica.c).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/replica.h"

/* Every URL list splits into non-empty entries without commas, exactly
 * replica_count of them (what svc_init and the clients rely on). */
static void check_list(const char *urls)
{
	char entry[512];
	size_t count = replica_count(urls);

	for (size_t n = 1; n <= count + 1; n++) {
		if (replica_entry(urls, n, entry, sizeof(entry)) != 0)
			continue;
		if (n > count || entry[0] == '\0' || strchr(entry, ',') != NULL)
			__builtin_trap();
	}
}

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
			for (int i = 0; i < SVC_SERVICES; i++)
				check_list(c.url[i]);
			check_list(c.auth_events_url);
			check_list(c.audit_events_url);
			conf_fini(&c);
		} else if (err[0] == '\0') {
			__builtin_trap(); /* a refusal always says why */
		}
	}
	return 0;
}
