/*
 * decorate.c — the last row of the pipeline, run on every answer whoever
 * gives it (pipeline.c): X-Request-Id, the OWASP security headers of
 * docs/api.md, HSTS where it applies, and CORS (Vary: Origin, and for a
 * listed origin the origin echoed with credentials allowed). The same list,
 * as raw header lines, for the one answer written without libmicrohttpd
 * (deadline.c's 408).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "gateway/gateway.h"
#include "gateway/security_headers.h"

struct decorate_header {
	const char *name;
	const char *value;
};

/* The fixed ones (security_headers.h). The CSP and the Permissions-Policy
 * depend on the environment and may be overridden (settings.c). */
#define DECORATE_ROW(name, value) {name, value},
static const struct decorate_header decorate_security[] = {SECURITY_HEADERS(DECORATE_ROW)};

#define DECORATE_HSTS "max-age=31536000; includeSubDomains"
#define DECORATE_JSON_TYPE "application/json; charset=utf-8"
/* What a browser script may read of an answer. */
#define DECORATE_EXPOSE_HEADERS "X-Request-Id, Retry-After, Idempotent-Replayed, WWW-Authenticate"

/* CORS: whether an Origin is echoed depends on the Origin, so caches must
 * know (Vary); framing.c has matched it against MAGNETAR_CORS_ORIGINS. */
static int decorate_cors(struct http_request *req, struct MHD_Response *resp)
{
	const struct gateway *gw = req->gw;

	if (MHD_add_response_header(resp, "Vary", "Origin") != MHD_YES)
		return ERR_NOMEM;
	if (!req->cors_allowed)
		return 0;
	if (gw->cors.any && !origin_listed(&gw->cors, req->origin, strlen(req->origin))) {
		/* "*" (never in production): any origin, never with credentials. */
		if (MHD_add_response_header(resp, "Access-Control-Allow-Origin", "*") != MHD_YES)
			return ERR_NOMEM;
	} else if (MHD_add_response_header(resp, "Access-Control-Allow-Origin", req->origin) !=
	               MHD_YES ||
	           MHD_add_response_header(resp, "Access-Control-Allow-Credentials", "true") !=
	               MHD_YES)
		return ERR_NOMEM;
	if (MHD_add_response_header(resp, "Access-Control-Expose-Headers",
	                            DECORATE_EXPOSE_HEADERS) != MHD_YES)
		return ERR_NOMEM;
	return 0;
}

int decorate_answered(struct http_request *req, unsigned status, struct MHD_Response *resp)
{
	const struct gateway *gw = req->gw;

	if (MHD_add_response_header(resp, "X-Request-Id", req->id) != MHD_YES)
		return ERR_NOMEM;
	/* A 101 leaves HTTP: the headers below are about content it has none
	 * of, and there is nothing for a browser's CORS check to read. */
	if (status == MHD_HTTP_SWITCHING_PROTOCOLS)
		return 0;
	/* Every answer is no-store but the JWKS, which says how long it may be
	 * kept: exactly that value, so no other Cache-Control (an upstream's,
	 * one day) can take no-store's place. */
	const char *cc = MHD_get_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL);
	bool own_cache =
	    cc != NULL && (strcmp(cc, JWKS_CACHE_CONTROL) == 0 || req->keep_cache_control);
	for (size_t i = 0; i < sizeof(decorate_security) / sizeof(decorate_security[0]); i++) {
		const struct decorate_header *h = &decorate_security[i];
		if (own_cache && strcmp(h->name, MHD_HTTP_HEADER_CACHE_CONTROL) == 0)
			continue;
		if (MHD_add_response_header(resp, h->name, h->value) != MHD_YES)
			return ERR_NOMEM;
	}
	if (MHD_add_response_header(resp, "Content-Security-Policy",
	                            gw->csp != NULL ? gw->csp : SECURITY_CSP_STRICT) != MHD_YES ||
	    (gw->permissions_policy != NULL &&
	     MHD_add_response_header(resp, "Permissions-Policy", gw->permissions_policy) !=
	         MHD_YES))
		return ERR_NOMEM;
	if (gw->hsts &&
	    MHD_add_response_header(resp, "Strict-Transport-Security", DECORATE_HSTS) != MHD_YES)
		return ERR_NOMEM;
	return gw->cors.enabled ? decorate_cors(req, resp) : 0;
}

char *decorate_raw_headers(const struct gateway *gw)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	bool bad;

	if (f == NULL)
		return NULL;
	/* The same list as decorate_answered's, for a request without an
	 * Origin (the sweeper's 408 has no request to read one from). */
	for (size_t i = 0; i < sizeof(decorate_security) / sizeof(decorate_security[0]); i++)
		fprintf(f, "%s: %s\r\n", decorate_security[i].name, decorate_security[i].value);
	fprintf(f, "Content-Security-Policy: %s\r\n",
	        gw->csp != NULL ? gw->csp : SECURITY_CSP_STRICT);
	if (gw->permissions_policy != NULL)
		fprintf(f, "Permissions-Policy: %s\r\n", gw->permissions_policy);
	if (gw->cors.enabled)
		fputs("Vary: Origin\r\n", f);
	if (gw->hsts)
		fputs("Strict-Transport-Security: " DECORATE_HSTS "\r\n", f);
	fputs("Content-Type: " DECORATE_JSON_TYPE "\r\n", f);
	bad = ferror(f) != 0;
	if (fclose(f) != 0 || bad) {
		free(text);
		return NULL;
	}
	return text;
}
