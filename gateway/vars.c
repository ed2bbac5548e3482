/*
 * vars.c — the gateway's variable table (config.h): a row per variable,
 * and the rules between them.
 */
#include "gateway/vars.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define F(field) offsetof(struct gateway_vars, field)
#define TEXT(name, field, help)                                                                    \
	{                                                                                          \
		name, CONF_TEXT, F(field), NULL, 0, 0, NULL, 0, help, NULL, 0                      \
	}
#define RAW(name, help)                                                                            \
	{                                                                                          \
		name, CONF_RAW, SIZE_MAX, NULL, 0, 0, NULL, 0, help, NULL, 0                       \
	}

static const struct conf_var gateway_rows[] = {
    {"MAGNETAR_HTTP_ADDR", CONF_ADDR, F(http), "127.0.0.1:8080", 0, 0, NULL, 0, "gateway host:port",
     NULL, 0},
    {"MAGNETAR_METRICS_ADDR", CONF_ADDR, F(metrics), NULL, 0, 0, NULL, 0,
     "private /metrics listener host:port", NULL, 0},
    {"MAGNETAR_HTTP_REDIRECT_ADDR", CONF_ADDR, F(redirect), NULL, 0, 0, NULL, 0,
     "plain-HTTP host:port that redirects to https (needs TLS)", NULL, 0},
    TEXT("MAGNETAR_CORS_ORIGINS", cors_origins, "comma-separated exact origins"),
    TEXT("MAGNETAR_TRUSTED_PROXIES", trusted_proxies, "CIDRs whose X-Forwarded-For is believed"),
    TEXT("MAGNETAR_TLS_CERT", tls_cert, "PEM certificate file"),
    TEXT("MAGNETAR_TLS_KEY", tls_key, "PEM private key file"),
    /* Hardening (issue 6): parsed by gateway/settings.c. */
    RAW("MAGNETAR_PROXY_HEADER", "x-forwarded-for or forwarded: the header trusted proxies set"),
    RAW("MAGNETAR_RATE_GLOBAL", "requests per client IP: N/S or off"),
    RAW("MAGNETAR_RATE_LOGIN", "login, password change, step-up per client IP: N/S or off"),
    RAW("MAGNETAR_RATE_PASSWORD_CHECK", "password checks per client IP: N/S or off"),
    RAW("MAGNETAR_RATE_REGISTER", "registrations per client IP: N/S or off"),
    RAW("MAGNETAR_RATE_TERMINAL", "terminal opens per client IP: N/S or off"),
    RAW("MAGNETAR_HEADER_TIMEOUT_S", "seconds for a complete request header block"),
    RAW("MAGNETAR_BODY_TIMEOUT_S",
        "seconds for a request body, from complete headers to its last byte"),
    RAW("MAGNETAR_ACCESS_LOG", "all (a line per request) or errors (only status >= 400)"),
    RAW("MAGNETAR_CSP", "Content-Security-Policy override"),
    RAW("MAGNETAR_PERMISSIONS_POLICY", "Permissions-Policy override"),
    RAW("MAGNETAR_UPSTREAMS", "the app's services: \"<prefix> <upstream> <policy> [option ...]\" "
                              "per line or ';', or a file of such lines (docs/apps.md)"),
};

static int gateway_vars_check(void *values, const struct conf *c, char *err, size_t errlen)
{
	const struct gateway_vars *g = values;
	bool prod = c->env == CONF_ENV_PRODUCTION;

	if ((g->tls_cert == NULL) != (g->tls_key == NULL))
		return conf_refuse(err, errlen,
		                   "MAGNETAR_TLS_CERT and MAGNETAR_TLS_KEY go together");
	if (g->redirect.text != NULL && g->tls_cert == NULL)
		return conf_refuse(err, errlen,
		                   "MAGNETAR_HTTP_REDIRECT_ADDR redirects to https: it needs "
		                   "MAGNETAR_TLS_CERT and MAGNETAR_TLS_KEY");
	if (prod && g->cors_origins != NULL && strchr(g->cors_origins, '*') != NULL)
		return conf_refuse(err, errlen,
		                   "MAGNETAR_CORS_ORIGINS may not contain * in production");
	if (prod && g->cors_origins != NULL &&
	    strspn(g->cors_origins, " \t,") == strlen(g->cors_origins))
		return conf_refuse(err, errlen,
		                   "MAGNETAR_CORS_ORIGINS is set but empty; list origins, or unset "
		                   "it for no CORS");
	return 0;
}

const struct conf_table gateway_conf_table =
    CONF_TABLE("gateway", gateway_rows, struct gateway_vars, gateway_vars_check);
