/*
 * body.c — request bodies. The pipeline's `body` stage collects one up to
 * its limit, under the body deadline (deadline.c), and drains a refused one;
 * a body may hold a password, a token or a client's secret, so our copies
 * are wiped when let go (body_release; libmicrohttpd's own connection
 * memory is not ours to wipe);
 * a route then parses it as JSON, strictly (docs/api.md Conventions): the
 * right Content-Type, one object, no duplicated key, and unpacked with
 * JSON_STRICT so an unknown field or a wrong type is a 400 too.
 */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/log.h"
#include "gateway/gateway.h"

/* "application/json", optionally followed by parameters (a charset). */
static bool body_is_json(const char *ct)
{
	static const char want[] = "application/json";
	size_t n = sizeof(want) - 1;
	if (ct == NULL || strncasecmp(ct, want, n) != 0)
		return false;
	ct += n;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	return *ct == '\0' || *ct == ';';
}

json_t *body_json(struct http_request *req)
{
	const char *ct =
	    MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
	json_t *root;

	if (!body_is_json(ct)) {
		respond_error(req, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
		              "The body must be application/json.");
		return NULL;
	}
	root = json_loadb(req->body != NULL ? req->body : "", req->body_len, JSON_REJECT_DUPLICATES,
	                  NULL);
	if (root == NULL || !json_is_object(root)) {
		json_decref(root);
		respond_error(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
		              "The body is not a JSON object, or repeats a key.");
		return NULL;
	}
	return root;
}

int body_invalid(struct http_request *req)
{
	return respond_error(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
	                     "The body has a missing, unknown or mistyped field.");
}

/* ---- the stage: collecting ------------------------------------------------ */

enum stage_rv body_stage(struct http_request *req)
{
	/* An upstream's body streams through proxy.c, never collected here. */
	if (req->allowed && (req->route->flags & ROUTE_F_PROXY) != 0)
		return STAGE_NEXT;
	if (!req->body_done) {
		/* The first call, with a body announced: it comes in the next ones. */
		deadline_body_start(req);
		return STAGE_WAIT;
	}
	if (req->body_timed && !deadline_body_stop(req))
		return STAGE_CLOSE; /* answered 408 by the sweeper: close */
	return req->err_status != 0 ? STAGE_REFUSED : STAGE_NEXT;
}

/* Refuses the request once its body has been drained (the refusal waits
 * for the end of the upload) and lets go of what was kept of it. */
static enum MHD_Result body_refuse(struct http_request *req, unsigned status, const char *code,
                                   const char *message)
{
	pipeline_refuse(req, status, code, message);
	body_release(req);
	return MHD_YES;
}

void body_release(struct http_request *req)
{
	if (req->body != NULL)
		OPENSSL_cleanse(req->body, req->body_cap);
	free(req->body);
	req->body = NULL;
	req->body_len = req->body_cap = 0;
}

enum MHD_Result body_feed(struct http_request *req, const char *data, size_t len)
{
	const struct http_limits *lim = &req->gw->limits;

	req->body_seen += len;
	if (req->err_status != 0) {
		/* Already refused: drain what the client still sends, to a point,
		 * so it reads our answer instead of a reset. */
		if (req->body_seen > lim->max_drain) {
			log_warnx("http: body beyond the drain limit, closing request_id=%s",
			          req->id);
			return MHD_NO;
		}
		return MHD_YES;
	}
	if (req->body_seen > lim->max_body) {
		/* Chunked, or more than Content-Length said: 413 once the body ends. */
		return body_refuse(req, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
		                   "The request body is too large.");
	}
	if (req->body_len + len > req->body_cap) {
		size_t cap = req->body_cap != 0 ? req->body_cap : 1024;
		char *p;
		while (cap < req->body_len + len)
			cap *= 2;
		if (cap > lim->max_body)
			cap = lim->max_body;
		/* Not realloc: it would leave the old copy in freed memory. */
		if ((p = malloc(cap)) == NULL) {
			/* Answered once the body has been drained, like a limit. */
			return body_refuse(req, MHD_HTTP_SERVICE_UNAVAILABLE, "service_unavailable",
			                   "Out of memory; try again later.");
		}
		if (req->body_len > 0)
			memcpy(p, req->body, req->body_len);
		size_t len_kept = req->body_len;
		body_release(req);
		req->body = p;
		req->body_len = len_kept;
		req->body_cap = cap;
	}
	memcpy(req->body + req->body_len, data, len);
	req->body_len += len;
	return MHD_YES;
}
