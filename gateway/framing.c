/*
 * framing.c — the first stage of the pipeline: it checks what arrived with
 * the headers (target and header sizes, body framing that a proxy in front
 * could read otherwise: request smuggling), and finds the route, whether it
 * takes the method, the client's address and whether its Origin is listed.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/gateway.h"

/* The framing headers as libmicrohttpd reads them: it frames the body by
 * the FIRST Content-Length or Transfer-Encoding, so the checks below look at
 * that one, and a second one (which a proxy in front may have read instead)
 * is refused outright rather than guessed at. */
struct framing_header_sum {
	size_t total;
	unsigned n_length, n_encoding;
	bool spaced_name; /* whitespace in a name: "Transfer-Encoding :" */
	bool bad_byte;    /* a name byte that is no token character, or a control
	                   * byte other than HTAB in a value (a bare CR) */
	const char *length, *encoding;
};

/* RFC 9110 5.6.2: the bytes a header name may hold. */
static bool framing_tchar(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static enum MHD_Result framing_sum_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                          size_t key_size, const char *value, size_t value_size)
{
	struct framing_header_sum *sum = cls;
	(void)kind;

	/* As on the wire: "name: value\r\n". */
	sum->total += key_size + value_size + 4;
	/* MHD keeps a space or tab before the colon as part of the name, so
	 * it ignores "Transfer-Encoding : chunked" where a lenient proxy may
	 * frame by it (RFC 9112 5.1: a server MUST answer 400). */
	if (memchr(key, ' ', key_size) != NULL || memchr(key, '\t', key_size) != NULL)
		sum->spaced_name = true;
	/* libmicrohttpd ends a line only at CRLF or LF: a bare CR stays in the
	 * value, and a server behind us (Python's http.server) may read it as
	 * a line break, so "X-A: a\rX-Magnetar-User: b" would forge a header. */
	for (size_t i = 0; i < key_size && !sum->bad_byte; i++)
		sum->bad_byte =
		    !framing_tchar((unsigned char)key[i]) && key[i] != ' ' && key[i] != '\t';
	for (size_t i = 0; value != NULL && i < value_size && !sum->bad_byte; i++)
		sum->bad_byte =
		    ((unsigned char)value[i] < 0x20 && value[i] != '\t') || value[i] == 0x7f;
	if (key_size == 14 && strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
		if (sum->n_length++ == 0)
			sum->length = value;
	} else if (key_size == 17 && strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
		if (sum->n_encoding++ == 0)
			sum->encoding = value;
	}
	return MHD_YES;
}

/* ---- the client's address and the route as this listener shows it ------- */

struct framing_proxy_values {
	const char *name;
	size_t name_len;
	char *buf;
	size_t len, cap;
};

/* Joins every value of the proxy header, in order ("a, b" + "c" = "a, b,c").
 * Past the buffer the left-most bytes are dropped: the walk goes from the
 * right, and a cut hop only ends it early (at a trusted proxy). */
static enum MHD_Result framing_proxy_value(void *cls, enum MHD_ValueKind kind, const char *key,
                                           size_t key_size, const char *value, size_t value_size)
{
	struct framing_proxy_values *pv = cls;
	size_t need;
	(void)kind;

	if (key_size != pv->name_len || strcasecmp(key, pv->name) != 0 || value == NULL)
		return MHD_YES;
	need = value_size + (pv->len > 0 ? 1 : 0);
	if (need > pv->cap) {
		value += value_size - pv->cap;
		value_size = pv->cap;
		need = value_size;
		pv->len = 0;
	} else if (pv->len + need > pv->cap) {
		size_t drop = pv->len + need - pv->cap;
		memmove(pv->buf, pv->buf + drop, pv->len - drop);
		pv->len -= drop;
	}
	if (pv->len > 0)
		pv->buf[pv->len++] = ',';
	memcpy(pv->buf + pv->len, value, value_size);
	pv->len += value_size;
	return MHD_YES;
}

/* req->client: the peer, or what trusted proxies say (netaddr_client). */
static void framing_find_client(struct http_request *req)
{
	struct gateway *gw = req->gw;
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	struct netaddr peer = {0};
	char buf[8192];
	struct framing_proxy_values pv = {NULL, 0, buf, 0, sizeof(buf)};

	if (ci == NULL || netaddr_from_sockaddr(ci->client_addr, &peer) != 0 || gw->ntrusted == 0 ||
	    !netaddr_cidrs_match(gw->trusted, gw->ntrusted, &peer)) {
		req->client = peer;
		return;
	}
	pv.name = gw->proxy_header == NETADDR_FORWARDED ? "Forwarded" : "X-Forwarded-For";
	pv.name_len = strlen(pv.name);
	MHD_get_connection_values_n(req->conn, MHD_HEADER_KIND, framing_proxy_value, &pv);
	netaddr_client(&peer, gw->trusted, gw->ntrusted, gw->proxy_header, pv.len > 0 ? buf : NULL,
	               pv.len, &req->client);
}

void http_client_ip(struct http_request *req, char ip[INET6_ADDRSTRLEN])
{
	netaddr_format(&req->client, ip);
}

/* The route as this listener shows it: the metrics listener serves only
 * ROUTE_F_METRICS routes; the main one hides them in production. */
static const struct route *framing_visible(struct http_request *req, const struct route *r)
{
	struct gateway *gw = req->gw;
	bool on_metrics = false;

	if (gw->mhd_metrics != NULL) {
		const union MHD_ConnectionInfo *ci =
		    MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_DAEMON);
		on_metrics = ci != NULL && ci->daemon == gw->mhd_metrics;
	}
	if (r == NULL)
		return NULL;
	if (on_metrics)
		return (r->flags & ROUTE_F_METRICS) != 0 ? r : NULL;
	if ((r->flags & ROUTE_F_METRICS) != 0 && gw->svc.conf.env == CONF_ENV_PRODUCTION)
		return NULL;
	return r;
}

/* ---- framing ------------------------------------------------------------ */

enum stage_rv framing_stage(struct http_request *req)
{
	const struct http_limits *lim = &req->gw->limits;
	struct framing_header_sum sum = {0};

	deadline_headers_done(req);
	req->method = routes_method(req->method_name);
	const struct route *r = routes_find(req->path, req->param);
	if (r == NULL && req->gw->upstreams.n > 0)
		r = proxy_route_find(req->gw, req->path); /* our own routes first */
	req->route = framing_visible(req, r);
	req->allowed = req->route != NULL && routes_allows(req->route, req->method);
	req->route_label = req->route == NULL ? 0
	                   : (req->route->flags & ROUTE_F_PROXY) != 0
	                       ? routes_count() + 1
	                       : routes_index(req->route) + 1;
	uint64_t max_body = req->route != NULL && (req->route->flags & ROUTE_F_PROXY) != 0
	                        ? proxy_max_body(req->route)
	                        : lim->max_body;
	/* The Origin against MAGNETAR_CORS_ORIGINS (origin.c compares parsed
	 * origins): every answer's CORS headers depend on it. */
	if (req->gw->cors.enabled && (req->origin = MHD_lookup_connection_value(
	                                  req->conn, MHD_HEADER_KIND, "Origin")) != NULL)
		req->cors_allowed = req->gw->cors.any ||
		                    origin_listed(&req->gw->cors, req->origin, strlen(req->origin));
	framing_find_client(req);
	MHD_get_connection_values_n(req->conn, MHD_HEADER_KIND, framing_sum_header, &sum);
	/* Doubtful framing counts as a body: answered now, and closed. */
	req->has_body = sum.n_encoding > 0 || sum.n_length > 1 || sum.spaced_name || sum.bad_byte ||
	                (sum.n_length > 0 && strcmp(sum.length, "0") != 0);

	if (req->target_len > lim->max_target)
		pipeline_refuse(req, MHD_HTTP_URI_TOO_LONG, "uri_too_long",
		                "The request target is too long.");
	else if (sum.total > lim->max_headers)
		pipeline_refuse(req, MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large",
		                "The request headers are too large.");
	else if (sum.n_length > 1 || sum.n_encoding > 1)
		/* Repeated framing (smuggling): MHD reads the first, a proxy may
		 * have read the last. Even equal values are refused: no guessing. */
		pipeline_refuse(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
		                "Content-Length and Transfer-Encoding may appear only once.");
	else if (sum.spaced_name)
		pipeline_refuse(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
		                "A header name may not contain whitespace.");
	else if (sum.bad_byte)
		pipeline_refuse(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
		                "A header holds a byte it may not (a control character).");
	else if (sum.n_length > 0 && sum.n_encoding > 0)
		/* Two framings: the classic request-smuggling shape. Refuse both. */
		pipeline_refuse(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
		                "Content-Length and Transfer-Encoding may not be combined.");
	else if (sum.n_encoding > 0 && strcasecmp(sum.encoding, "chunked") != 0)
		/* MHD would read any other coding (or list: "gzip, chunked")
		 * until the peer closes. */
		pipeline_refuse(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
		                "Only the chunked transfer encoding is accepted.");
	else if (sum.n_length > 0 && strtoull(sum.length, NULL, 10) > max_body)
		/* MHD has already checked that the value is a plain number. */
		pipeline_refuse(req, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
		                "The request body is too large.");
	else
		return STAGE_NEXT;
	return STAGE_REFUSED;
}
