/*
 * respond.c — how a stage or a route answers: the answer recorded
 * (http_queue; pipeline.c sends it, and decorate.c's headers go on every
 * one), responses built with their bodies, the one JSON shape of every
 * error, and the mapping of RPC outcomes to HTTP that every route reuses.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "common/log.h"
#include "gateway/gateway.h"

#define RESPOND_JSON_TYPE "application/json; charset=utf-8"

/* ---- recording the answer ------------------------------------------------ */

/* Whoever answers (a stage, a handler, a resume function) only records the
 * answer; pipeline.c sends it when they return, through the hooks. */
static int respond_record(struct http_request *req, unsigned status, struct MHD_Response *resp,
                          bool shared)
{
	bool built = resp == req->built_resp;

	/* Whatever happens, what respond_new noted is used up here. */
	req->built_resp = NULL;
	if (req->answer != NULL) {
		/* Answered twice: a broken invariant. The first answer stands. */
		log_warnx("http: a second answer (%u after %u) dropped request_id=%s", status,
		          req->status, req->id);
		if (!shared)
			MHD_destroy_response(resp);
		return ERR_INTERNAL;
	}
	req->answer = resp;
	req->answer_shared = shared;
	req->status = status;
	if (!shared) {
		/* The body of this very response, only if respond_new built it (a
		 * 101 has none): a response built and thrown away meanwhile must
		 * not be what an idempotency key keeps, nor what the log counts. */
		req->resp_body = built ? req->built_body : NULL;
		req->resp_bytes = built ? req->built_len : 0;
	}
	return 0;
}

int http_queue(struct http_request *req, unsigned status, struct MHD_Response *resp)
{
	if (resp == NULL)
		return ERR_NOMEM;
	return respond_record(req, status, resp, false);
}

int http_queue_shared(struct http_request *req, unsigned status, struct MHD_Response *resp)
{
	/* Decorated when respond_static_cached first sent it, for a request
	 * like this one: no key, no listed Origin. */
	return respond_record(req, status, resp, true);
}

/* ---- building responses ---------------------------------------------------- */

struct MHD_Response *respond_new(struct http_request *req, const char *body, size_t len,
                                 enum MHD_ResponseMemoryMode mode, bool json)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)body, mode);

	if (resp == NULL) {
		if (mode == MHD_RESPMEM_MUST_FREE)
			free((void *)body);
		return NULL;
	}
	if (json && MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
	                                    RESPOND_JSON_TYPE) != MHD_YES) {
		MHD_destroy_response(resp);
		return NULL;
	}
	/* The response owns (or points at) the body until it is sent: the answer
	 * it becomes (http_queue) may store it for an Idempotency-Key (idem.c). */
	req->built_resp = resp;
	req->built_body = body;
	req->built_len = len;
	return resp;
}

int respond_json(struct http_request *req, unsigned status, json_t *body)
{
	char *text;

	if (body == NULL)
		return ERR_NOMEM;
	/* Scores are integer hundredths: 15 significant digits print 30 as
	 * 0.3, where jansson's default 17 print the double nearest it in full. */
	text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(15));
	json_decref(body);
	if (text == NULL)
		return ERR_NOMEM;
	return http_queue(req, status,
	                  respond_new(req, text, strlen(text), MHD_RESPMEM_MUST_FREE, true));
}

int respond_static(struct http_request *req, unsigned status, const char *json)
{
	return http_queue(req, status,
	                  respond_new(req, json, strlen(json), MHD_RESPMEM_PERSISTENT, true));
}

int respond_static_cached(struct http_request *req, unsigned status, const char *json)
{
	struct http_conn *c = http_conn_of(req);
	struct MHD_Response *resp;
	int rv;

	/* An allowed Origin is echoed: that answer is this request's alone. */
	if (c == NULL || req->cors_allowed)
		return respond_static(req, status, json);
	req->resp_bytes = strlen(json);
	if (c->cached != NULL && c->cached_body == json) {
		/* Swap the id; if that fails, forget the cache and build afresh. */
		if (MHD_del_response_header(c->cached, "X-Request-Id", c->cached_id) == MHD_YES &&
		    MHD_add_response_header(c->cached, "X-Request-Id", req->id) == MHD_YES) {
			memcpy(c->cached_id, req->id, strlen(req->id) + 1);
			return http_queue_shared(req, status, c->cached);
		}
	}
	if (c->cached != NULL)
		MHD_destroy_response(c->cached);
	c->cached = NULL;
	if ((resp = respond_new(req, json, strlen(json), MHD_RESPMEM_PERSISTENT, true)) == NULL)
		return ERR_NOMEM;
	/* Sent like any answer (decorated on the way out); once sent, the
	 * connection keeps it for the next request like this one. */
	if ((rv = http_queue(req, status, resp)) != 0)
		return rv;
	req->answer_keep = &c->cached;
	c->cached_body = json;
	memcpy(c->cached_id, req->id, strlen(req->id) + 1);
	return 0;
}

struct MHD_Response *respond_error_new(struct http_request *req, const char *code,
                                       const char *message)
{
	json_t *body;
	char *text;

	body = json_pack("{s:{s:s,s:s,s:s}}", "error", "code", code, "message", message,
	                 "request_id", req->id);
	if (body == NULL)
		return NULL;
	/* Scores are integer hundredths: 15 significant digits print 30 as
	 * 0.3, where jansson's default 17 print the double nearest it in full. */
	text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(15));
	json_decref(body);
	if (text == NULL)
		return NULL;
	return respond_new(req, text, strlen(text), MHD_RESPMEM_MUST_FREE, true);
}

/* docs/api.md: the breached-password refusal carries "breach_count" in its error. */
static struct MHD_Response *respond_breached_new(struct http_request *req, const char *message,
                                                 uint64_t count)
{
	json_t *body =
	    json_pack("{s:{s:s,s:s,s:s,s:I}}", "error", "code", "password_breached", "message",
	              message, "request_id", req->id, "breach_count", (json_int_t)count);
	char *text;

	if (body == NULL)
		return NULL;
	/* Scores are integer hundredths: 15 significant digits print 30 as
	 * 0.3, where jansson's default 17 print the double nearest it in full. */
	text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(15));
	json_decref(body);
	if (text == NULL)
		return NULL;
	return respond_new(req, text, strlen(text), MHD_RESPMEM_MUST_FREE, true);
}

int respond_error(struct http_request *req, unsigned status, const char *code, const char *message)
{
	return http_queue(req, status, respond_error_new(req, code, message));
}

/* ---- RPC outcomes --------------------------------------------------------- */

static const struct respond_mapping respond_rpc_table[] = {
    [MAGNETAR__STATUS__STATUS_INVALID] = {400, "invalid_request", "The request is not valid."},
    [MAGNETAR__STATUS__STATUS_NOT_FOUND] = {404, "not_found", "Not found."},
    [MAGNETAR__STATUS__STATUS_UNAUTHENTICATED] = {401, "unauthorized",
                                                  "Authentication is required."},
    [MAGNETAR__STATUS__STATUS_PERMISSION_DENIED] = {403, "forbidden",
                                                    "This action is not allowed."},
    [MAGNETAR__STATUS__STATUS_CONFLICT] = {409, "conflict",
                                           "The request conflicts with the current state."},
    [MAGNETAR__STATUS__STATUS_RESOURCE_EXHAUSTED] = {429, "rate_limited",
                                                     "Too many requests; try again later."},
    [MAGNETAR__STATUS__STATUS_UNAVAILABLE] = {503, "service_unavailable",
                                              "A service is unavailable; try again later."},
    [MAGNETAR__STATUS__STATUS_DEADLINE_EXCEEDED] = {504, "service_timeout",
                                                    "A service did not answer in time."},
};

static const struct respond_mapping respond_rpc_internal = {500, "internal", "Internal error."};

/* A service's code reaches the client only if it looks like an API code. */
static bool respond_code_ok(const char *s)
{
	size_t n = 0;
	if (s[0] < 'a' || s[0] > 'z')
		return false;
	for (; s[n] != '\0'; n++)
		if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= '0' && s[n] <= '9') || s[n] == '_'))
			return false;
	return n < 64;
}

/* ... and its message only if it is plain printable text. */
static bool respond_message_ok(const char *s)
{
	if (s[0] == '\0')
		return false;
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return false;
	return true;
}

/* Codes whose HTTP status differs from their RPC status's (docs/api.md wants
 * 422 for a password the policy or the breach check refuses). */
static const struct {
	const char *code;
	unsigned http;
} respond_code_status[] = {
    {"password_too_short", 422},
    {"password_too_long", 422},
    {"password_breached", 422},
};

void respond_map_rpc(const struct rpc_result *r, struct respond_mapping *out)
{
	size_t n = sizeof(respond_rpc_table) / sizeof(respond_rpc_table[0]);

	if ((size_t)r->status < n && respond_rpc_table[r->status].http != 0)
		*out = respond_rpc_table[r->status];
	else
		*out = respond_rpc_internal;
	/* A 5xx tells the client nothing about the inside; a 4xx is about the
	 * client's own request, and the service's stable code says what. */
	if (out->http >= 500)
		return;
	if (respond_code_ok(r->code)) {
		out->code = r->code;
		if (respond_message_ok(r->message))
			out->message = r->message;
		for (size_t i = 0; i < sizeof(respond_code_status) / sizeof(respond_code_status[0]);
		     i++)
			if (strcmp(r->code, respond_code_status[i].code) == 0)
				out->http = respond_code_status[i].http;
	}
}

int respond_rpc_error(struct http_request *req, const struct rpc_result *r)
{
	char retry[16];
	struct respond_mapping m;
	struct MHD_Response *resp;

	snprintf(retry, sizeof(retry), "%u", r->retry_after_s > 0 ? r->retry_after_s : 1);
	respond_map_rpc(r, &m);
	if (strcmp(m.code, "password_breached") == 0)
		resp = respond_breached_new(req, m.message, r->breach_count);
	else
		resp = respond_error_new(req, m.code, m.message);
	if (resp == NULL)
		return ERR_NOMEM;
	if ((m.http == 401 && MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
	                                              "Bearer") != MHD_YES) ||
	    (m.http == 429 &&
	     MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, retry) != MHD_YES)) {
		MHD_destroy_response(resp);
		return ERR_NOMEM;
	}
	return http_queue(req, m.http, resp);
}

int respond_no_content(struct http_request *req)
{
	struct MHD_Response *resp = respond_new(req, "", 0, MHD_RESPMEM_PERSISTENT, false);
	return http_queue(req, MHD_HTTP_NO_CONTENT, resp);
}

void respond_time(uint64_t unix_ms, char buf[32])
{
	time_t t = (time_t)(unix_ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}
