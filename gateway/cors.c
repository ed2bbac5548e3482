/*
 * cors.c — CORS for MAGNETAR_CORS_ORIGINS (docs/gateway.md): the allow-list
 * is matched on the parsed origin (origin.c) once per request; responses to a
 * listed origin echo it with credentials allowed, and a preflight answers the
 * route's own methods and a fixed list of request headers.
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

int cors_headers(struct http_request *req, struct MHD_Response *resp)
{
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

bool cors_is_preflight(struct http_request *req)
{
	return req->origin != NULL &&
	       MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
	                                   "Access-Control-Request-Method") != NULL;
}

int cors_preflight(struct http_request *req)
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
