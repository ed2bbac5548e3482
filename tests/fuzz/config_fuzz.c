/*
 * config_fuzz.c — the MAGNETAR_* environment parser. Input is lines of
 * NAME=VALUE; each line's name is mapped onto one of the real variable names
 * (the first byte picks it) so every validator is reached, common's and
 * each program's table (as the supervisor checks them all); the URL lists
 * accepted are split as replicas split them (common/replica.c).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/replica.h"
#include "gateway/vars.h"
#include "tools/magnetar/magnetar.h"

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

/* The variables a line's first byte picks from, frozen in the order the
 * committed seeds were made with (the variables then sat in one table). */
static const char *const fuzz_names[] = {
    "MAGNETAR_ENV",
    "MAGNETAR_LOG_FORMAT",
    "MAGNETAR_SANDBOX",
    "MAGNETAR_DATA_DIR",
    "MAGNETAR_RUN_DIR",
    "MAGNETAR_GATEWAY_URL",
    "MAGNETAR_AUTH_URL",
    "MAGNETAR_AUDIT_URL",
    "MAGNETAR_BREACH_URL",
    "MAGNETAR_TERMINAL_URL",
    "MAGNETAR_AUTH_EVENTS_URL",
    "MAGNETAR_AUDIT_EVENTS_URL",
    "MAGNETAR_HTTP_ADDR",
    "MAGNETAR_METRICS_ADDR",
    "MAGNETAR_HTTP_REDIRECT_ADDR",
    "MAGNETAR_CORS_ORIGINS",
    "MAGNETAR_TRUSTED_PROXIES",
    "MAGNETAR_TLS_CERT",
    "MAGNETAR_TLS_KEY",
    "MAGNETAR_FOUNDER_USERNAME",
    "MAGNETAR_FOUNDER_PASSWORD",
    "MAGNETAR_REGISTRATION",
    "MAGNETAR_MAX_SESSIONS",
    "MAGNETAR_TOTP_KEY",
    "MAGNETAR_FINGERPRINT_KEY",
    "MAGNETAR_AUDIT_KEYS",
    "MAGNETAR_HIBP_URL",
    "MAGNETAR_HIBP_MODE",
    "MAGNETAR_BREACH_FAIL",
    "MAGNETAR_TERMINAL_SHELLS",
    "MAGNETAR_TERMINAL_ROOTS",
    "MAGNETAR_TERMINAL_UIDS",
    "MAGNETAR_TERMINAL_IDLE_S",
    "MAGNETAR_TERMINAL_LIFETIME_S",
    "MAGNETAR_TERMINAL_MAX_PER_USER",
    "MAGNETAR_TERMINAL_MAX",
    "MAGNETAR_PROXY_HEADER",
    "MAGNETAR_RATE_GLOBAL",
    "MAGNETAR_RATE_LOGIN",
    "MAGNETAR_RATE_PASSWORD_CHECK",
    "MAGNETAR_RATE_REGISTER",
    "MAGNETAR_RATE_TERMINAL",
    "MAGNETAR_HEADER_TIMEOUT_S",
    "MAGNETAR_BODY_TIMEOUT_S",
    "MAGNETAR_ACCESS_LOG",
    "MAGNETAR_CSP",
    "MAGNETAR_PERMISSIONS_POLICY",
    "MAGNETAR_FAULT_SQLITE_IOERR",
    "MAGNETAR_FAULT_SQLITE_BUSY",
    "MAGNETAR_FAULT_SQLITE_NOMEM",
    "MAGNETAR_FAULT_ALLOC",
    "MAGNETAR_GATEWAY_USER",
    "MAGNETAR_AUTH_USER",
    "MAGNETAR_AUDIT_USER",
    "MAGNETAR_BREACH_USER",
    "MAGNETAR_TERMINAL_USER",
    "MAGNETAR_IPC_GROUP",
};
#define FUZZ_NNAMES (sizeof(fuzz_names) / sizeof(fuzz_names[0]))

/* Secrets are left out: their _FILE forms would read the disk. */
static bool fuzz_secret(const char *name)
{
	return strcmp(name, "MAGNETAR_FOUNDER_PASSWORD") == 0 ||
	       strcmp(name, "MAGNETAR_TOTP_KEY") == 0 ||
	       strcmp(name, "MAGNETAR_FINGERPRINT_KEY") == 0 ||
	       strcmp(name, "MAGNETAR_AUDIT_KEYS") == 0;
}

/* What every accepted configuration must hold. */
static void check_conf(const struct conf *c)
{
	if (c->data_dir == NULL || c->url[SVC_AUTH] == NULL)
		__builtin_trap();
	for (int i = 0; i < SVC_SERVICES; i++)
		check_list(c->url[i]);
	check_list(c->events_url[SVC_AUTH]);
	check_list(c->events_url[SVC_AUDIT]);
	if (c->own_table == &gateway_conf_table &&
	    ((const struct gateway_vars *)c->own)->http.host == NULL)
		__builtin_trap();
}

/* Sets the variables the input's lines name (lines in buf, NUL-separated,
 * `n` of them), after unsetting every name. */
static void apply_env(const char *lines, size_t n)
{
	for (size_t i = 0; i < FUZZ_NNAMES; i++)
		unsetenv(fuzz_names[i]);
	for (size_t k = 0; k < n; k++, lines += strlen(lines) + 1) {
		const char *name = fuzz_names[(unsigned char)lines[0] % FUZZ_NNAMES];
		if (!fuzz_secret(name))
			setenv(name, lines + 1, 1);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char buf[4096], lines[4096], err[256];
	struct conf c;
	void *own[SVC_SERVICES];
	size_t n = size < sizeof(buf) - 1 ? size : sizeof(buf) - 1, nlines = 0, used = 0;

	memcpy(buf, data, n);
	buf[n] = '\0';
	for (char *line = strtok(buf, "\n"); line != NULL; line = strtok(NULL, "\n")) {
		size_t len = strlen(line);
		if (len == 0)
			continue;
		memcpy(lines + used, line, len + 1);
		used += len + 1;
		nlines++;
	}
	/* The supervisor with every table, magctl with common's alone, each
	 * service with its own. Programs scrub the MAGNETAR_* variables they do
	 * not read, so the environment is set again before each. */
	apply_env(lines, nlines);
	err[0] = '\0';
	if (conf_load(&c, SVC_SUPERVISOR, NULL, err, sizeof(err)) == 0) {
		check_conf(&c);
		if (programs_load(&c, own, err, sizeof(err)) == 0)
			programs_free(own);
		else if (err[0] == '\0')
			__builtin_trap(); /* a refusal always says why */
		conf_fini(&c);
	} else if (err[0] == '\0') {
		__builtin_trap();
	}
	for (int who = 0; who < SVC_PROGRAMS; who++) {
		if (who == SVC_SUPERVISOR)
			continue;
		apply_env(lines, nlines);
		err[0] = '\0';
		if (conf_load(&c, (enum svc_id)who, who < SVC_SERVICES ? programs_vars[who] : NULL,
		              err, sizeof(err)) == 0) {
			check_conf(&c);
			conf_fini(&c);
		} else if (err[0] == '\0') {
			__builtin_trap(); /* a refusal always says why */
		}
	}
	return 0;
}
