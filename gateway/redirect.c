/*
 * redirect.c — the plain-HTTP listener of MAGNETAR_HTTP_REDIRECT_ADDR (issue
 * 6): with TLS on, every request to it is answered 301 (GET, HEAD) or 308
 * (anything else, keeping the method) with a Location on the same host and
 * path over https, at the main listener's port. Nothing else happens there:
 * no routes, no RPC, no body read, no token looked at.
 *
 * The host comes from the request's Host header, as any redirecting server
 * does: it can only send a client to the name that client asked for. It is
 * checked to be a DNS name or a bracketed IPv6 literal (with an optional
 * port, replaced by ours) and refused with 400 otherwise. The query string
 * is dropped: a secret sent there in clear text has leaked already, and the
 * Location would repeat it into every proxy's log.
 */
#include <ctype.h>
#include <microhttpd.h>
#include <stdio.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "gateway/gateway.h"

#define REDIRECT_PATH_MAX 2048 /* longer paths are sent to "/" */
#define REDIRECT_LOCATION_MAX (8 + 256 + 6 + 3 * REDIRECT_PATH_MAX + 1)

/* The length of the host part of a Host header (without its port), or 0
 * when it is not a DNS name or a bracketed IPv6 literal. */
static size_t redirect_host_len(const char *host)
{
	size_t n;

	if (host == NULL)
		return 0;
	if (host[0] == '[') {
		n = 1 + strspn(host + 1, "0123456789abcdefABCDEF:.");
		if (host[n] != ']' || n < 3)
			return 0;
		n++;
	} else {
		n = strspn(host,
		           "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-");
		if (n == 0 || n > 253 || host[0] == '.' || host[0] == '-')
			return 0;
	}
	if (host[n] == ':' && host[n + 1] != '\0' &&
	    strspn(host + n + 1, "0123456789") == strlen(host + n + 1) && strlen(host + n + 1) <= 5)
		return n;
	return host[n] == '\0' ? n : 0;
}

/* Appends the decoded path, percent-encoding all but RFC 3986 pchar and '/'. */
static void redirect_path(char *out, size_t *len, const char *path)
{
	static const char keep[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	                           "-._~!$&'()*+,;=:@/";

	if (path == NULL || path[0] != '/' || strlen(path) > REDIRECT_PATH_MAX)
		path = "/";
	for (const unsigned char *p = (const unsigned char *)path; *p != '\0'; p++) {
		if (*p != '\0' && strchr(keep, *p) != NULL)
			out[(*len)++] = (char)*p;
		else
			*len += (size_t)sprintf(out + *len, "%%%02X", *p);
	}
	out[*len] = '\0';
}

static enum MHD_Result redirect_queue(struct MHD_Connection *conn, unsigned status,
                                      const char *location)
{
	static const char bad[] = "{\"error\":{\"code\":\"bad_request\",\"message\":\"the Host "
	                          "header is not a host name\"}}";
	struct MHD_Response *resp;
	enum MHD_Result ok;

	resp = location != NULL ? MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT)
	                        : MHD_create_response_from_buffer(sizeof(bad) - 1, (void *)bad,
	                                                          MHD_RESPMEM_PERSISTENT);
	if (resp == NULL)
		return MHD_NO;
	if ((location != NULL && MHD_add_response_header(resp, "Location", location) != MHD_YES) ||
	    (location == NULL &&
	     MHD_add_response_header(resp, "Content-Type", "application/json") != MHD_YES) ||
	    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff") != MHD_YES ||
	    MHD_add_response_header(resp, "Connection", "close") != MHD_YES) {
		MHD_destroy_response(resp);
		return MHD_NO;
	}
	ok = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ok;
}

static enum MHD_Result redirect_access(void *cls, struct MHD_Connection *conn, const char *url,
                                       const char *method, const char *version,
                                       const char *upload_data, size_t *upload_data_size,
                                       void **state)
{
	struct gateway *gw = cls;
	const char *host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Host");
	char location[REDIRECT_LOCATION_MAX];
	size_t hlen = redirect_host_len(host), len;
	bool safe = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	(void)state;
	if (hlen == 0)
		return redirect_queue(conn, MHD_HTTP_BAD_REQUEST, NULL);
	len = (size_t)snprintf(location, sizeof(location), "https://%.*s", (int)hlen, host);
	if (gw_vars(gw)->http.port != 443)
		len += (size_t)snprintf(location + len, sizeof(location) - len, ":%u",
		                        (unsigned)gw_vars(gw)->http.port);
	redirect_path(location, &len, url);
	return redirect_queue(conn, safe ? MHD_HTTP_MOVED_PERMANENTLY : MHD_HTTP_PERMANENT_REDIRECT,
	                      location);
}

static void redirect_log(void *cls, const char *fmt, va_list ap)
{
	char msg[256];

	(void)cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	log_warnx("redirect: libmicrohttpd: %s", msg);
}

int redirect_start(struct gateway *gw)
{
	const struct http_limits *lim = &gw->limits;
	struct sockaddr_storage ss;
	socklen_t sslen;
	char host[256];
	uint16_t port;
	int rv;

	if (gw_vars(gw)->redirect.text == NULL)
		return 0;
	if (http_split_addr(gw_vars(gw)->redirect.text, host, sizeof(host), &port) != 0)
		return ERR_INVAL;
	if ((rv = http_resolve(host, port, &ss, &sslen)) != 0)
		return rv;
	/* One thread and a small pool: it reads a header block and answers. The
	 * header deadline is libmicrohttpd's idle timeout here, the per-IP cap
	 * bounding what a slow client can hold. */
	gw->mhd_redirect = MHD_start_daemon(
	    MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG |
	        (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
	    0, NULL, NULL, redirect_access, gw, MHD_OPTION_EXTERNAL_LOGGER, redirect_log, gw,
	    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
	    (size_t)32 * 1024, MHD_OPTION_CONNECTION_LIMIT, lim->connections,
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT, lim->per_ip, MHD_OPTION_CONNECTION_TIMEOUT,
	    (unsigned)(gw->header_timeout_ms + 999) / 1000, MHD_OPTION_END);
	if (gw->mhd_redirect == NULL) {
		log_warnx("http: cannot listen on %s (redirect)", gw_vars(gw)->redirect.text);
		return ERR_IO;
	}
	log_info("http: redirect listening on http://%s to https port %u",
	         gw_vars(gw)->redirect.text, (unsigned)gw_vars(gw)->http.port);
	return 0;
}

void redirect_stop(struct gateway *gw)
{
	if (gw->mhd_redirect != NULL) {
		MHD_stop_daemon(gw->mhd_redirect);
		gw->mhd_redirect = NULL;
	}
}
