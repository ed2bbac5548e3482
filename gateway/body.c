/*
 * body.c — JSON request bodies, parsed strictly (docs/api.md Conventions): the
 * right Content-Type, one object, no duplicated key; the route then unpacks
 * it with JSON_STRICT so an unknown field or a wrong type is a 400 too.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

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
