/*
 * proxy_headers.c — which headers pass the proxy, each way. What the
 * upstream sees is ours alone: our framing, hop-by-hop headers dropped
 * (RFC 9110 7.6.1, and any the Connection header names), every
 * client-sent identity header removed and the gateway's own added
 * (X-Magnetar-User, -Role, -Session, X-Request-Id, X-Forwarded-*), one
 * request per connection (Connection: close), so no byte of a client's
 * body can be read as a second request. What the client sees keeps the
 * gateway's security, CORS and caching headers, never the upstream's.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "auth.pb-c.h"
#include "common/err.h"
#include "common/list.h"
#include "gateway/gateway.h"
#include "gateway/proxy.h"
#include "gateway/upstream.h"

/* ---- the request head ---------------------------------------------------------------- */

struct proxy_head {
	FILE *f;
	const struct upstream *up;
	const char *connection; /* the client's Connection header: names to drop */
	bool upgrade;
};

/* A header the gateway decides itself, or one for this hop only. `_` reads
 * as `-`: some servers (CGI, WSGI) read X_Magnetar_User as X-Magnetar-User. */
static bool proxy_drop_request_header(const struct proxy_head *h, const char *name, size_t len)
{
	static const char *const drop[] = {
	    "connection",
	    "keep-alive",
	    "proxy-connection",
	    "te",
	    "trailer",
	    "transfer-encoding",
	    "upgrade",
	    "proxy-authorization",
	    "proxy-authenticate",
	    "content-length",
	    "expect",
	    "x-forwarded-for",
	    "x-forwarded-proto",
	    "x-forwarded-host",
	    "x-forwarded-port",
	    "forwarded",
	    "x-real-ip",
	    "x-request-id",
	    /* Other names frameworks read a client address or a routed path
	     * from: what an upstream believes is the gateway's to say. */
	    "x-forwarded-server",
	    "x-forwarded-prefix",
	    "x-forwarded-ssl",
	    "x-forwarded-scheme",
	    "x-original-url",
	    "x-rewrite-url",
	    "x-original-forwarded-for",
	    "x-host",
	    "true-client-ip",
	    "x-client-ip",
	    "client-ip",
	    "cf-connecting-ip",
	    "fastly-client-ip",
	    "x-cluster-client-ip",
	};
	char norm[64];
	const char *item, *cur = h->connection;
	size_t ilen, n = len < sizeof(norm) - 1 ? len : sizeof(norm) - 1;

	/* Read as the upstream's framework may: case folded, '_' as '-'. A
	 * name longer than the buffer is judged by its start (none of the
	 * names below is that long). */
	for (size_t i = 0; i < n; i++) {
		char c = name[i] == '_' ? '-' : name[i];
		norm[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
	}
	norm[n] = '\0';
	if (strncmp(norm, "x-magnetar-", 11) == 0)
		return true;
	while (cur != NULL && list_next(&cur, &item, &ilen))
		if (ilen == len && strncasecmp(item, name, len) == 0)
			return true; /* hop-by-hop, by the client's Connection */
	if (len != n)
		return false;
	if (strcmp(norm, "authorization") == 0)
		return !h->up->token;
	for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
		if (strcmp(norm, drop[i]) == 0)
			return true;
	return false;
}

static enum MHD_Result proxy_head_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                        size_t key_size, const char *value, size_t value_size)
{
	struct proxy_head *h = cls;
	(void)kind;

	if (key_size == 0 || value == NULL)
		return MHD_YES;
	if (proxy_drop_request_header(h, key, key_size))
		return MHD_YES;
	fwrite(key, 1, key_size, h->f);
	fputs(": ", h->f);
	fwrite(value, 1, value_size, h->f);
	fputs("\r\n", h->f);
	return MHD_YES;
}

/* Every Connection header's value, joined by ',' (a client may send two). */
static enum MHD_Result proxy_join_connection(void *cls, enum MHD_ValueKind kind, const char *key,
                                             size_t key_size, const char *value, size_t value_size)
{
	FILE *f = cls;
	(void)kind;

	if (key_size == 10 && strcasecmp(key, MHD_HTTP_HEADER_CONNECTION) == 0 && value != NULL) {
		fwrite(value, 1, value_size, f);
		fputc(',', f);
	}
	return MHD_YES;
}

static bool proxy_list_has(const char *v, const char *token)
{
	const char *item;
	size_t len, n = strlen(token);
	while (v != NULL && list_next(&v, &item, &len))
		if (len == n && strncasecmp(item, token, n) == 0)
			return true;
	return false;
}

/* The request as the upstream gets it; malloc'd into *out. */
int proxy_build_head(struct http_request *req, struct proxy *p, const char *target)
{
	struct proxy_head h = {.up = p->up};
	const char *host, *upgrade, *length;
	char ip[INET6_ADDRSTRLEN];
	struct http_conn *c = http_conn_of(req);
	char *connection = NULL;
	size_t len = 0, clen = 0;
	FILE *cf = open_memstream(&connection, &clen);
	int rv = 0;

	if (cf == NULL)
		return ERR_NOMEM;
	MHD_get_connection_values_n(req->conn, MHD_HEADER_KIND, proxy_join_connection, cf);
	if (fclose(cf) != 0 || connection == NULL) {
		free(connection);
		return ERR_NOMEM;
	}
	h.connection = connection;
	if ((h.f = open_memstream(&p->head, &len)) == NULL) {
		free(connection);
		return ERR_NOMEM;
	}
	upgrade = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_UPGRADE);
	p->upgrade = req->method == HTTP_M_GET && req->http11 && !req->has_body &&
	             upgrade != NULL && strcasecmp(upgrade, "websocket") == 0 &&
	             proxy_list_has(h.connection, "upgrade");
	fprintf(h.f, "%s %s HTTP/1.1\r\n", req->method_name, target);
	MHD_get_connection_values_n(req->conn, MHD_HEADER_KIND, proxy_head_field, &h);
	http_client_ip(req, ip);
	host = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
	fprintf(h.f, "X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\n", ip,
	        c != NULL && c->tls ? "https" : "http");
	if (host != NULL)
		fprintf(h.f, "X-Forwarded-Host: %s\r\n", host);
	fprintf(h.f, "X-Request-Id: %s\r\n", req->id);
	if (req->auth != NULL) {
		const struct jwt_claims *cl = &req->auth->claims;
		const char *role = req->me != NULL ? req->me->user->role : cl->role;
		fprintf(h.f,
		        "X-Magnetar-User: %s\r\nX-Magnetar-Role: %s\r\nX-Magnetar-Session: %s\r\n",
		        cl->sub, role, cl->sid);
	}
	if (p->upgrade)
		fputs("Connection: Upgrade\r\nUpgrade: websocket\r\n", h.f);
	else
		fputs("Connection: close\r\n", h.f);
	length =
	    MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (req->has_body && length == NULL) {
		fputs("Transfer-Encoding: chunked\r\n", h.f);
		p->chunked_out = true;
	} else if (length != NULL)
		fprintf(h.f, "Content-Length: %s\r\n", length); /* digits: framing.c checked */
	else if (req->method & (HTTP_M_POST | HTTP_M_PUT | HTTP_M_PATCH))
		fputs("Content-Length: 0\r\n", h.f);
	fputs("\r\n", h.f);
	if (fclose(h.f) != 0 || p->head == NULL)
		rv = ERR_NOMEM;
	free(connection);
	p->head_len = len;
	return rv;
}

/* True when the comma-separated list v[0..vlen) names `name`. */
static bool proxy_named_in(const char *v, size_t vlen, const char *name, size_t nlen)
{
	size_t at = 0;

	while (at < vlen) {
		const char *comma = memchr(v + at, ',', vlen - at);
		size_t end = comma != NULL ? (size_t)(comma - v) : vlen, s = at, e = end;
		while (s < e && (v[s] == ' ' || v[s] == '\t'))
			s++;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - s == nlen && strncasecmp(v + s, name, nlen) == 0)
			return true;
		at = end + 1;
	}
	return false;
}

/* An answer's header the gateway sets itself, or one for this hop only. */
bool proxy_drop_response_header(const struct proxy *p, const struct upstream_field *f,
                                bool public_route)
{
	static const char *const drop[] = {
	    "connection",
	    "keep-alive",
	    "proxy-connection",
	    "te",
	    "trailer",
	    "transfer-encoding",
	    "content-length",
	    "date",
	    "server",
	    "x-request-id",
	    "x-content-type-options",
	    "x-frame-options",
	    "referrer-policy",
	    "cross-origin-opener-policy",
	    "cross-origin-resource-policy",
	    "content-security-policy",
	    "permissions-policy",
	    "strict-transport-security",
	    "proxy-authenticate",
	    "proxy-authorization",
	};
	if (upstream_field_is(f, "upgrade"))
		return p->rh.status != 101;
	if (upstream_field_is(f, "cache-control"))
		return !public_route;
	if (f->name_len > 15 && strncasecmp(f->name, "access-control-", 15) == 0)
		return true; /* CORS is the gateway's (decorate.c) */
	for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
		if (upstream_field_is(f, drop[i]))
			return true;
	/* Names the upstream's own Connection header lists, however long. */
	for (size_t i = 0; i < p->rh.n; i++)
		if (upstream_field_is(&p->rh.h[i], "connection") &&
		    proxy_named_in(p->rh.h[i].value, p->rh.h[i].value_len, f->name, f->name_len))
			return true;
	return false;
}
