/*
 * cors.c — the CORS stage for MAGNETAR_CORS_ORIGINS (docs/gateway.md): the
 * allow-list is matched on the parsed origin (origin.c) once per request; a
 * preflight is answered with the route's own methods and a fixed list of
 * request headers; on the way out every answer (a refusal before this stage
 * ran included) gets Vary: Origin and, for a listed origin, the origin
 * echoed with credentials allowed.
 */
#include <string.h>

#include "common/err.h"
#include "gateway/gateway.h"

/* What a browser client may send: docs/api.md's headers plus the fingerprint
 * headers of "Session risk". */
#define CORS_ALLOW_HEADERS                                                                         \
	"Authorization, Content-Type, Idempotency-Key, Accept-Language, Accept-Encoding, "         \
	"Sec-CH-UA, Sec-CH-UA-Mobile, Sec-CH-UA-Platform"
#define CORS_EXPOSE_HEADERS "X-Request-Id, Retry-After, Idempotent-Replayed, WWW-Authenticate"
#define CORS_MAX_AGE "600"

/* The request's Origin against the allow-list, once: the answer path may
 * need it before the stage has run (a refusal at framing). */
static void cors_check(struct http_request *req)
{
	if (req->cors_checked)
		return;
	req->cors_checked = true;
	if (req->gw->cors.enabled && (req->origin = MHD_lookup_connection_value(
	                                  req->conn, MHD_HEADER_KIND, "Origin")) != NULL)
		req->cors_allowed = req->gw->cors.any ||
		                    origin_listed(&req->gw->cors, req->origin, strlen(req->origin));
}

int cors_answered(struct http_request *req, unsigned status, struct MHD_Response *resp)
{
	/* A 101 leaves HTTP: nothing for a browser's CORS check to read. */
	if (!req->gw->cors.enabled || status == MHD_HTTP_SWITCHING_PROTOCOLS)
		return 0;
	cors_check(req);
	/* Whether an Origin is echoed depends on the Origin: caches must know. */
	if (MHD_add_response_header(resp, "Vary", "Origin") != MHD_YES)
		return ERR_NOMEM;
	if (!req->cors_allowed)
		return 0;
	if (req->gw->cors.any && !origin_listed(&req->gw->cors, req->origin, strlen(req->origin))) {
		/* "*" (never in production): any origin, never with credentials. */
		if (MHD_add_response_header(resp, "Access-Control-Allow-Origin", "*") != MHD_YES)
			return ERR_NOMEM;
	} else if (MHD_add_response_header(resp, "Access-Control-Allow-Origin", req->origin) !=
	               MHD_YES ||
	           MHD_add_response_header(resp, "Access-Control-Allow-Credentials", "true") !=
	               MHD_YES)
		return ERR_NOMEM;
	if (MHD_add_response_header(resp, "Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS) !=
	    MHD_YES)
		return ERR_NOMEM;
	return 0;
}

static int cors_preflight(struct http_request *req)
{
	struct MHD_Response *resp;
	char methods[64];

	if (!req->cors_allowed)
		return respond_error(req, MHD_HTTP_FORBIDDEN, "forbidden",
		                     "This origin may not call this API.");
	routes_allow_header(req->route, methods, sizeof(methods));
	if ((resp = respond_new(req, "", 0, MHD_RESPMEM_PERSISTENT, false)) == NULL)
		return ERR_NOMEM;
	if (MHD_add_response_header(resp, "Access-Control-Allow-Methods", methods) != MHD_YES ||
	    MHD_add_response_header(resp, "Access-Control-Allow-Headers", CORS_ALLOW_HEADERS) !=
	        MHD_YES ||
	    MHD_add_response_header(resp, "Access-Control-Max-Age", CORS_MAX_AGE) != MHD_YES ||
	    MHD_add_response_header(
	        resp, "Vary", "Access-Control-Request-Method, Access-Control-Request-Headers") !=
	        MHD_YES) {
		MHD_destroy_response(resp);
		return ERR_NOMEM;
	}
	return http_queue(req, MHD_HTTP_NO_CONTENT, resp);
}

enum stage_rv cors_stage(struct http_request *req)
{
	cors_check(req);
	/* A preflight: OPTIONS with an Origin and Access-Control-Request-Method,
	 * on a route that exists (else the route stage's 404). */
	if (req->method != HTTP_M_OPTIONS || req->route == NULL || req->origin == NULL ||
	    MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
	                                "Access-Control-Request-Method") == NULL)
		return STAGE_NEXT;
	req->stage_error = cors_preflight(req);
	return STAGE_DONE;
}
