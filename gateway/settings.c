/*
 * settings.c — the gateway's own MAGNETAR_* variables of issue 6: trusted
 * proxies, CORS origins, rate limits, the header deadline, the header
 * policies (CSP, Permissions-Policy) and how much the access log says. Their rows are in
 * common/config.c's table (so the supervisor passes them on); their meaning is decided here.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/err.h"
#include "gateway/gateway.h"
#include "gateway/security_headers.h"

/* docs/api.md: frame-ancestors 'none' in every variant. Development relaxes the
 * rest only as far as a local dev UI served from the same origin needs. */
#define SETTINGS_CSP_DEV                                                                           \
	"default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "                  \
	"style-src 'self' 'unsafe-inline'; base-uri 'none'; form-action 'self'; "                  \
	"frame-ancestors 'none'"

#define SETTINGS_RATE_TABLE 16384 /* buckets: 512 KiB whatever the traffic */

static const struct {
	const char *name;
	const char *def; /* outside MAGNETAR_ENV=test, where limits are off unless set */
} settings_rates[RATE_CLASSES] = {
    [RATE_GLOBAL] = {"MAGNETAR_RATE_GLOBAL", "100/1"},
    [RATE_LOGIN] = {"MAGNETAR_RATE_LOGIN", "10/60"},
    [RATE_PASSWORD_CHECK] = {"MAGNETAR_RATE_PASSWORD_CHECK", "30/60"},
    [RATE_REGISTER] = {"MAGNETAR_RATE_REGISTER", "5/60"},
    [RATE_TERMINAL] = {"MAGNETAR_RATE_TERMINAL", "10/60"},
};

static int settings_refuse(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int settings_refuse(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return ERR_CONFIG;
}

/* A header value must not be able to end the header (CR/LF) or carry
 * anything but printable ASCII. */
static bool settings_header_ok(const char *v)
{
	if (v[0] == '\0')
		return false;
	for (; *v != '\0'; v++)
		if ((unsigned char)*v < 0x20 || (unsigned char)*v > 0x7e)
			return false;
	return true;
}

/* The value of the policy's first frame-ancestors directive, trimmed, or
 * NULL when it has none. Directives are split at ';' and named by their
 * first token (CSP3 §2.2.1): a "frame-ancestors" inside another directive's
 * value is not one, and browsers ignore every repeat after the first. */
static bool settings_csp_frame_ancestors(const char *csp, const char **val, size_t *vlen)
{
	static const char ws[] = " \t";

	for (const char *d = csp; *d != '\0';) {
		const char *end = d + strcspn(d, ";"); /* this directive is [d, end) */
		const char *next = *end == ';' ? end + 1 : end;
		const char *name_end;

		d += strspn(d, ws);
		while (end > d && strchr(ws, end[-1]) != NULL)
			end--;
		for (name_end = d; name_end < end && strchr(ws, *name_end) == NULL; name_end++)
			;
		if (name_end - d == 15 && strncasecmp(d, "frame-ancestors", 15) == 0) {
			for (*val = name_end; *val < end && strchr(ws, **val) != NULL; (*val)++)
				;
			*vlen = (size_t)(end - *val);
			return true;
		}
		d = next;
	}
	return false;
}

static int settings_csp(struct gateway *gw, char *err, size_t errlen)
{
	const char *v = getenv("MAGNETAR_CSP");
	const char *fa;
	size_t falen;

	if (v == NULL) {
		gw->csp = strdup(gw->svc.conf.env == CONF_ENV_DEVELOPMENT ? SETTINGS_CSP_DEV
		                                                          : SECURITY_CSP_STRICT);
		return gw->csp != NULL ? 0 : ERR_NOMEM;
	}
	if (!settings_header_ok(v))
		return settings_refuse(err, errlen, "MAGNETAR_CSP must be printable ASCII");
	/* An override may say anything else, but not let the API be framed. */
	if (settings_csp_frame_ancestors(v, &fa, &falen)) {
		if (falen != 6 || strncasecmp(fa, "'none'", 6) != 0)
			return settings_refuse(err, errlen,
			                       "MAGNETAR_CSP may only say frame-ancestors 'none'");
		gw->csp = strdup(v);
	} else if (asprintf(&gw->csp, "%s; frame-ancestors 'none'", v) < 0)
		gw->csp = NULL;
	return gw->csp != NULL ? 0 : ERR_NOMEM;
}

int settings_load(struct gateway *gw, char *err, size_t errlen)
{
	const struct conf *c = &gw->svc.conf;
	bool prod = c->env == CONF_ENV_PRODUCTION;
	const char *v;
	int rv;

	gw->log_success = true;
	if ((v = getenv("MAGNETAR_ACCESS_LOG")) != NULL) {
		if (strcmp(v, "errors") == 0)
			gw->log_success = false;
		else if (strcmp(v, "all") != 0)
			return settings_refuse(err, errlen,
			                       "MAGNETAR_ACCESS_LOG must be all or errors");
	}

	if (gw_vars(gw)->trusted_proxies != NULL &&
	    netaddr_cidrs_parse(gw_vars(gw)->trusted_proxies, gw->trusted, NETADDR_MAX_CIDRS,
	                        &gw->ntrusted) != 0)
		return settings_refuse(
		    err, errlen,
		    "MAGNETAR_TRUSTED_PROXIES must be a comma-separated list of at "
		    "most %d IPv4/IPv6 addresses or CIDRs",
		    NETADDR_MAX_CIDRS);
	gw->proxy_header = NETADDR_XFF;
	if ((v = getenv("MAGNETAR_PROXY_HEADER")) != NULL) {
		if (strcasecmp(v, "forwarded") == 0)
			gw->proxy_header = NETADDR_FORWARDED;
		else if (strcasecmp(v, "x-forwarded-for") != 0)
			return settings_refuse(err, errlen,
			                       "MAGNETAR_PROXY_HEADER must be x-forwarded-for or "
			                       "forwarded");
	}

	if ((rv = origin_list_parse(gw_vars(gw)->cors_origins, &gw->cors)) != 0)
		return rv == ERR_NOMEM
		           ? rv
		           : settings_refuse(err, errlen,
		                             "MAGNETAR_CORS_ORIGINS must list origins "
		                             "as scheme://host[:port] (http or https, no "
		                             "path, never null)");
	if (prod && gw->cors.enabled && (gw->cors.any || gw->cors.n == 0))
		return settings_refuse(
		    err, errlen,
		    "MAGNETAR_CORS_ORIGINS must list at least one exact origin, "
		    "and no *, when MAGNETAR_ENV=production (unset it for no CORS)");

	for (int i = 0; i < RATE_CLASSES; i++) {
		v = getenv(settings_rates[i].name);
		if (v == NULL)
			v = c->env == CONF_ENV_TEST ? "off" : settings_rates[i].def;
		if (ratelimit_rule_parse(v, &gw->rate[i]) != 0)
			return settings_refuse(err, errlen,
			                       "%s must be N/S (N requests per S seconds) or off",
			                       settings_rates[i].name);
	}
	if ((rv = ratelimit_new(SETTINGS_RATE_TABLE, &gw->rl)) != 0)
		return rv;

	gw->header_timeout_ms = 10000;
	if ((v = getenv("MAGNETAR_HEADER_TIMEOUT_S")) != NULL) {
		char *end;
		long n = strtol(v, &end, 10);
		if (v[0] < '1' || v[0] > '9' || *end != '\0' || n < 1 || n > 300)
			return settings_refuse(
			    err, errlen,
			    "MAGNETAR_HEADER_TIMEOUT_S must be an integer from 1 to 300");
		gw->header_timeout_ms = (unsigned)n * 1000;
	}
	/* The body's own deadline, from complete headers to the last byte
	 * (docs/gateway.md): 64 KiB in 30 s is about 2 KiB/s. */
	gw->body_timeout_ms = 30000;
	if ((v = getenv("MAGNETAR_BODY_TIMEOUT_S")) != NULL) {
		char *end;
		long n = strtol(v, &end, 10);
		if (v[0] < '1' || v[0] > '9' || *end != '\0' || n < 1 || n > 300)
			return settings_refuse(
			    err, errlen,
			    "MAGNETAR_BODY_TIMEOUT_S must be an integer from 1 to 300");
		gw->body_timeout_ms = (unsigned)n * 1000;
	}

	if ((rv = settings_csp(gw, err, errlen)) != 0)
		return rv;
	v = getenv("MAGNETAR_PERMISSIONS_POLICY");
	if (v != NULL && !settings_header_ok(v))
		return settings_refuse(err, errlen,
		                       "MAGNETAR_PERMISSIONS_POLICY must be printable ASCII");
	if ((gw->permissions_policy = strdup(v != NULL ? v : SECURITY_PERMISSIONS)) == NULL)
		return ERR_NOMEM;
	return 0;
}

void settings_fini(struct gateway *gw)
{
	origin_list_fini(&gw->cors);
	ratelimit_free(gw->rl);
	gw->rl = NULL;
	free(gw->csp);
	free(gw->permissions_policy);
	gw->csp = gw->permissions_policy = NULL;
}
