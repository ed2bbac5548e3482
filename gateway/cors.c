/*
 * cors.c — the CORS stage for MAGNETAR_CORS_ORIGINS (docs/gateway.md): a
 * preflight is answered with the route's own methods and a fixed list of
 * request headers, to a listed origin only (framing.c has matched the
 * Origin; decorate.c puts the CORS headers on every answer).
 */
#include <string.h>

#include "common/err.h"
#include "gateway/gateway.h"

/* What a browser client may send: docs/api.md's headers plus the fingerprint
 * headers of "Session risk". */
#define CORS_ALLOW_HEADERS                                                                         \
	"Authorization, Content-Type, Idempotency-Key, Accept-Language, Accept-Encoding, "         \
	"Sec-CH-UA, Sec-CH-UA-Mobile, Sec-CH-UA-Platform"
#define CORS_MAX_AGE "600"

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
	/* A preflight: OPTIONS with an Origin and Access-Control-Request-Method,
	 * on a route that exists (else the route stage's 404). */
	if (req->method != HTTP_M_OPTIONS || req->route == NULL || req->origin == NULL ||
	    MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
	                                "Access-Control-Request-Method") == NULL)
		return STAGE_NEXT;
	req->stage_error = cors_preflight(req);
	return STAGE_DONE;
}
