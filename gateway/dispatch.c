/*
 * dispatch.c — the pipeline's `route` stage: the row framing.c found is
 * dispatched. No row is a 404; a method the row does not allow, a 405 with
 * the row's Allow header; otherwise the row's handler, which answers or
 * suspends on RPCs (rpcbridge.c).
 */
#include <microhttpd.h>

#include "gateway/gateway.h"

enum stage_rv dispatch_stage(struct http_request *req)
{
	const struct route *route = req->route;
	struct MHD_Response *resp;
	char allow[64];

	if (route == NULL)
		req->stage_error =
		    respond_error(req, MHD_HTTP_NOT_FOUND, "not_found", "No such resource.");
	else if (req->allowed)
		req->stage_error = route->handler(req);
	else {
		routes_allow_header(route, allow, sizeof(allow));
		resp = respond_error_new(req, "method_not_allowed",
		                         "This method is not allowed on this resource.");
		if (resp != NULL &&
		    MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow) != MHD_YES) {
			MHD_destroy_response(resp);
			resp = NULL;
		}
		req->stage_error = http_queue(req, MHD_HTTP_METHOD_NOT_ALLOWED, resp);
	}
	return STAGE_DONE;
}
