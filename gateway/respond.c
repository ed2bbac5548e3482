/*
 * respond.c — response bodies and the pipeline's `decorate` hook: every
 * response the gateway sends passes respond_decorate on its way out
 * (pipeline.c), so every one (200s, 404s, 413s, 503s alike) carries the
 * security headers of docs/api.md and an X-Request-Id, and every error has
 * the one JSON shape. Also the mapping of RPC outcomes to HTTP that every
 * route reuses.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "gateway/gateway.h"

struct respond_header {
	const char *name;
	const char *value;
};

/* OWASP headers for an API that serves no HTML. The CSP and the
 * Permissions-Policy depend on the environment and may be overridden
 * (settings.c); frame-ancestors 'none' stays in every variant.
 * Cache-Control goes on everything: nothing the gateway says is cacheable. */
static const struct respond_header respond_security[] = {
    {"X-Content-Type-Options", "nosniff"},
    {"X-Frame-Options", "DENY"},
    {"Referrer-Policy", "no-referrer"},
    {"Cross-Origin-Opener-Policy", "same-origin"},
    {"Cross-Origin-Resource-Policy", "same-origin"},
    {"Cache-Control", "no-store"},
};

#define RESPOND_HSTS "max-age=31536000; includeSubDomains"
#define RESPOND_JSON_TYPE "application/json; charset=utf-8"

struct MHD_Response *respond_new(struct http_request *req, const char *body, size_t len,
                                 enum MHD_ResponseMemoryMode mode, bool json)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)body, mode);

	if (resp == NULL) {
		if (mode == MHD_RESPMEM_MUST_FREE)
			free((void *)body);
		return NULL;
	}
	/* The response owns (or points at) the body until it is sent: the answer
	 * it becomes (http_queue) may store it for an Idempotency-Key (idem.c). */
	req->built_body = body;
	req->built_len = len;
	if (json && MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
	                                    RESPOND_JSON_TYPE) != MHD_YES) {
		MHD_destroy_response(resp);
		return NULL;
	}
	return resp;
}

int respond_decorate(struct http_request *req, unsigned status, struct MHD_Response *resp)
{
	if (MHD_add_response_header(resp, "X-Request-Id", req->id) != MHD_YES)
		return ERR_NOMEM;
	/* A 101 leaves HTTP: the headers below are about content it has none of. */
	if (status == MHD_HTTP_SWITCHING_PROTOCOLS)
		return 0;
	for (size_t i = 0; i < sizeof(respond_security) / sizeof(respond_security[0]); i++)
		if (MHD_add_response_header(resp, respond_security[i].name,
		                            respond_security[i].value) != MHD_YES)
			return ERR_NOMEM;
	if (MHD_add_response_header(resp, "Content-Security-Policy",
	                            req->gw->csp != NULL ? req->gw->csp
	                                                 : "default-src 'none'; frame-ancestors "
	                                                   "'none'") != MHD_YES ||
	    (req->gw->permissions_policy != NULL &&
	     MHD_add_response_header(resp, "Permissions-Policy", req->gw->permissions_policy) !=
	         MHD_YES))
		return ERR_NOMEM;
	if (req->gw->hsts &&
	    MHD_add_response_header(resp, "Strict-Transport-Security", RESPOND_HSTS) != MHD_YES)
		return ERR_NOMEM;
	return 0;
}

char *respond_raw_headers(const struct gateway *gw)
{
	const char *csp = gw->csp != NULL ? gw->csp : "default-src 'none'; frame-ancestors 'none'";
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	bool bad;

	if (f == NULL)
		return NULL;
	/* The same list as the answer path's decoration and CORS hooks. */
	for (size_t i = 0; i < sizeof(respond_security) / sizeof(respond_security[0]); i++)
		fprintf(f, "%s: %s\r\n", respond_security[i].name, respond_security[i].value);
	fprintf(f, "Content-Security-Policy: %s\r\n", csp);
	if (gw->permissions_policy != NULL)
		fprintf(f, "Permissions-Policy: %s\r\n", gw->permissions_policy);
	if (gw->cors.enabled)
		fputs("Vary: Origin\r\n", f);
	if (gw->hsts)
		fputs("Strict-Transport-Security: " RESPOND_HSTS "\r\n", f);
	fputs("Content-Type: " RESPOND_JSON_TYPE "\r\n", f);
	bad = ferror(f) != 0;
	if (fclose(f) != 0 || bad) {
		free(text);
		return NULL;
	}
	return text;
}

int respond_json(struct http_request *req, unsigned status, json_t *body)
{
	char *text;

	if (body == NULL)
		return ERR_NOMEM;
	text = json_dumps(body, JSON_COMPACT);
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

	/* An allowed Origin is echoed: that answer is this request's alone. */
	if (c == NULL || req->cors_allowed)
		return respond_static(req, status, json);
	if (c->cached != NULL && c->cached_body == json) {
		/* Swap the id; if that fails, forget the cache and build afresh. */
		if (MHD_del_response_header(c->cached, "X-Request-Id", c->cached_id) == MHD_YES &&
		    MHD_add_response_header(c->cached, "X-Request-Id", req->id) == MHD_YES) {
			memcpy(c->cached_id, req->id, strlen(req->id) + 1);
			req->resp_bytes = strlen(json);
			return http_queue_shared(req, status, c->cached);
		}
	}
	req->resp_bytes = strlen(json);
	if (c->cached != NULL)
		MHD_destroy_response(c->cached);
	c->cached = respond_new(req, json, strlen(json), MHD_RESPMEM_PERSISTENT, true);
	if (c->cached == NULL)
		return ERR_NOMEM;
	if (http_decorate(req, status, c->cached) != 0) {
		MHD_destroy_response(c->cached);
		c->cached = NULL;
		return ERR_NOMEM;
	}
	c->cached_body = json;
	memcpy(c->cached_id, req->id, strlen(req->id) + 1);
	return http_queue_shared(req, status, c->cached);
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
	text = json_dumps(body, JSON_COMPACT);
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
	text = json_dumps(body, JSON_COMPACT);
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
