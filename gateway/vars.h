/*
 * vars.h — the gateway's own MAGNETAR_* variables (gateway/vars.c), parsed
 * by common/config.c into struct gateway_vars. The hardening settings
 * (rates, timeouts, headers) are read raw by settings.c.
 */
#ifndef MAGNETAR_GATEWAY_VARS_H
#define MAGNETAR_GATEWAY_VARS_H

#include "common/config.h"

struct gateway_vars {
	struct conf_addr http;     /* MAGNETAR_HTTP_ADDR (127.0.0.1:8080) */
	struct conf_addr metrics;  /* MAGNETAR_METRICS_ADDR: private /metrics */
	struct conf_addr redirect; /* MAGNETAR_HTTP_REDIRECT_ADDR: http -> https */
	char *cors_origins;
	char *trusted_proxies;
	char *tls_cert;
	char *tls_key;
};

extern const struct conf_table gateway_conf_table;

#endif
