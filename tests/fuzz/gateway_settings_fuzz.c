/*
 * gateway_settings_fuzz.c — the gateway's own MAGNETAR_* variables
 * (gateway/settings.c settings_load, after common/config.c's conf_load):
 * trusted proxies, CORS origins, the proxy header, the five rate rules, the
 * header deadline, the CSP and Permissions-Policy overrides. config_fuzz
 * covers conf_load alone; this is what the gateway then makes of the values.
 *
 * Input: lines of NAME=VALUE as in config_fuzz; the first byte of a line
 * picks one of the variables below and the rest of the line is its value.
 *
 * Invariants on success: the CSP, read as a browser reads it (directives
 * split at ';', the first frame-ancestors wins), forbids framing with
 * frame-ancestors 'none' and,
 * like the Permissions-Policy, is printable ASCII (it goes into a header);
 * rate rules, the header deadline and the proxy list are within their
 * bounds; production never allows any origin ("*") or an empty list.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/config.h"
#include "gateway/gateway.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const vars[] = {
    "MAGNETAR_ENV",
    "MAGNETAR_TRUSTED_PROXIES",
    "MAGNETAR_CORS_ORIGINS",
    "MAGNETAR_PROXY_HEADER",
    "MAGNETAR_RATE_GLOBAL",
    "MAGNETAR_RATE_LOGIN",
    "MAGNETAR_RATE_PASSWORD_CHECK",
    "MAGNETAR_RATE_REGISTER",
    "MAGNETAR_RATE_TERMINAL",
    "MAGNETAR_HEADER_TIMEOUT_S",
    "MAGNETAR_CSP",
    "MAGNETAR_PERMISSIONS_POLICY",
};
#define NVARS (sizeof(vars) / sizeof(vars[0]))

/* The policy a browser applies: directives split at ';', names compared
 * without case, the first frame-ancestors directive wins (CSP 3). It must
 * exist and say exactly 'none'. */
static bool frames_none(const char *csp)
{
	const char *d = csp;
	while (d != NULL && *d != '\0') {
		const char *end = strchr(d, ';');
		size_t len;
		while (*d == ' ' || *d == '\t')
			d++;
		len = end != NULL ? (size_t)(end - d) : strlen(d);
		while (len > 0 && (d[len - 1] == ' ' || d[len - 1] == '\t'))
			len--;
		if (len >= 15 && strncasecmp(d, "frame-ancestors", 15) == 0 &&
		    (len == 15 || d[15] == ' ' || d[15] == '\t')) {
			const char *val = d + 15;
			size_t vlen = len - 15;
			while (vlen > 0 && (*val == ' ' || *val == '\t')) {
				val++;
				vlen--;
			}
			return vlen == 6 && strncasecmp(val, "'none'", 6) == 0;
		}
		d = end != NULL ? end + 1 : NULL;
	}
	return false;
}

static void die(const char *what, const struct gateway *gw)
{
	fprintf(stderr, "gateway_settings_fuzz: %s (CSP: %s)\n", what,
	        gw->csp != NULL ? gw->csp : "(none)");
	abort();
}

static bool printable(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return false;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct gateway gw;
	char buf[4096], err[256];
	size_t n = size < sizeof(buf) - 1 ? size : sizeof(buf) - 1;

	/* putenv with buffers of our own: setenv would leak a copy per call
	 * (glibc never frees a replaced value), and RSS would grow all run. */
	static char env[NVARS][sizeof(buf) + 40];
	static bool base;

	if (!base) {
		setenv("MAGNETAR_DATA_DIR", "/nonexistent/magnetar-fuzz", 1);
		setenv("MAGNETAR_RUN_DIR", "/nonexistent/magnetar-fuzz/run", 1);
		base = true;
	}
	for (size_t i = 0; i < NVARS; i++)
		unsetenv(vars[i]);
	memcpy(buf, data, n);
	buf[n] = '\0';
	for (char *line = strtok(buf, "\n"); line != NULL; line = strtok(NULL, "\n")) {
		size_t v = (unsigned char)line[0] % NVARS;
		if (line[0] == '\0')
			continue;
		unsetenv(vars[v]);
		snprintf(env[v], sizeof(env[v]), "%s=%s", vars[v], line + 1);
		putenv(env[v]);
	}

	memset(&gw, 0, sizeof(gw));
	if (conf_load(&gw.svc.conf, SVC_GATEWAY, &gateway_conf_table, err, sizeof(err)) != 0)
		return 0;
	err[0] = '\0';
	if (settings_load(&gw, err, sizeof(err)) == 0) {
		if (gw.csp == NULL || !frames_none(gw.csp) || !printable(gw.csp) ||
		    gw.permissions_policy == NULL || !printable(gw.permissions_policy) ||
		    gw.permissions_policy[0] == '\0')
			die("an accepted CSP that allows framing, or an unprintable header value",
			    &gw);
		if (gw.header_timeout_ms < 1000 || gw.header_timeout_ms > 300000 ||
		    gw.ntrusted > NETADDR_MAX_CIDRS)
			die("a header deadline or proxy list out of bounds", &gw);
		for (int i = 0; i < RATE_CLASSES; i++)
			if (gw.rate[i].burst > 1000000000u || gw.rate[i].period_ms > 86400000u)
				die("a rate rule out of bounds", &gw);
		if (gw.svc.conf.env == CONF_ENV_PRODUCTION && gw.cors.enabled &&
		    (gw.cors.any || gw.cors.n == 0))
			die("production accepted any origin or none", &gw);
		for (size_t i = 0; i < gw.cors.n; i++)
			if (gw.cors.v[i].host[0] == '\0' || gw.cors.v[i].port == 0)
				die("a listed origin without host or port", &gw);
	} else if (err[0] == '\0') {
		die("a refusal that does not say why", &gw);
	}
	/* settings_fini accepts a half-loaded gateway (what it allocated so far). */
	settings_fini(&gw);
	conf_fini(&gw.svc.conf);
	return 0;
}
