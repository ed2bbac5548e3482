/*
 * openapi.c — GET /openapi.yaml: docs/openapi.yaml as built into the binary
 * (the Makefile turns it into build/gen/openapi_yaml.c; main.c hands it over,
 * so the objects unit tests link do not need the generated file).
 */
#include "gateway/gateway.h"

int openapi_serve(struct http_request *req)
{
	struct MHD_Response *resp;

	if (req->gw->openapi == NULL)
		return respond_error(req, MHD_HTTP_NOT_FOUND, "not_found", "No such resource.");
	resp = respond_new(req, (const char *)req->gw->openapi, req->gw->openapi_len,
	                   MHD_RESPMEM_PERSISTENT, false);
	if (resp != NULL && MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
	                                            "application/yaml; charset=utf-8") != MHD_YES) {
		MHD_destroy_response(resp);
		resp = NULL;
	}
	return http_queue(req, MHD_HTTP_OK, resp);
}
