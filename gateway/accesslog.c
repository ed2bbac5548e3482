/*
 * accesslog.c — the last step of every request: one line in the access log
 * once the response has left (or the request died), through the thread's log
 * buffer (common/logbuf.h: one write per 16-20 lines or per 100 ms, never a
 * blocking write per request; a write each cost 10-25% of /healthz
 * throughput). Paths and queries are bounded and printable, and the values
 * of query parameters that look like secrets are never written.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/logbuf.h"
#include "gateway/gateway.h"

static const char *accesslog_termination_name(enum MHD_RequestTerminationCode toe)
{
	switch (toe) {
	case MHD_REQUEST_TERMINATED_COMPLETED_OK:
		return "completed";
	case MHD_REQUEST_TERMINATED_WITH_ERROR:
		return "error";
	case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED:
		return "timeout";
	case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN:
		return "shutdown";
	case MHD_REQUEST_TERMINATED_READ_ERROR:
		return "read_error";
	case MHD_REQUEST_TERMINATED_CLIENT_ABORT:
		return "client_abort";
	default:
		return "other";
	}
}

/* Copies a path for a log line: bounded, and nothing but printable ASCII
 * (log.c escapes control bytes too; this keeps the line short and plain). */
static void accesslog_path(const char *path, char *out, size_t len)
{
	size_t i = 0;
	if (path == NULL)
		path = "-";
	for (; path[i] != '\0' && i + 1 < len; i++)
		out[i] = (path[i] > 0x20 && path[i] < 0x7f) ? path[i] : '?';
	out[i] = '\0';
}

/* Query parameters whose values are secrets: a WebSocket ticket, tokens,
 * codes. Their names are logged, their values never. */
static bool accesslog_secret(const char *name)
{
	static const char *const words[] = {"ticket", "token", "code", "password",
	                                    "secret", "key",   "sig",  "session"};
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcasestr(name, words[i]) != NULL)
			return true;
	return false;
}

struct accesslog_query_buf {
	char *out;
	size_t len, used;
};

static enum MHD_Result accesslog_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
	struct accesslog_query_buf *q = cls;
	char k[48], v[64];
	int n;
	(void)kind;

	accesslog_path(key, k, sizeof(k));
	if (value == NULL)
		v[0] = '\0';
	else if (accesslog_secret(key))
		snprintf(v, sizeof(v), "<redacted>");
	else
		accesslog_path(value, v, sizeof(v));
	n = snprintf(q->out + q->used, q->len - q->used, "%s%s%s%s", q->used > 0 ? "&" : "", k,
	             value != NULL ? "=" : "", v);
	if (n < 0 || (size_t)n >= q->len - q->used) {
		q->out[q->used] = '\0';
		return MHD_NO; /* full: the line stays bounded */
	}
	q->used += (size_t)n;
	return MHD_YES;
}

/* The query string for a log line, "-" when none, secrets redacted. */
static void accesslog_query(struct MHD_Connection *conn, char *out, size_t len)
{
	struct accesslog_query_buf q = {out, len, 0};
	out[0] = '\0';
	MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, accesslog_arg, &q);
	if (q.used == 0)
		snprintf(out, len, "-");
}

void accesslog_write(struct http_request *req, enum MHD_RequestTerminationCode toe, uint64_t us)
{
	char path[128], method[16], query[256], ip[NETADDR_STRLEN];

	/* MAGNETAR_ACCESS_LOG=errors keeps only the errors' lines; the
	 * counters count all either way. */
	if (req->status < 400 && req->status != 0 && !req->gw->log_success)
		return;
	accesslog_path(req->method_name, method, sizeof(method));
	accesslog_path(req->path, path, sizeof(path));
	accesslog_query(req->conn, query, sizeof(query));
	netaddr_format(&req->client, ip);
	logbuf_info("http method=%s path=%s query=%s status=%u bytes=%zu us=%" PRIu64
	            " ip=%s user=%s end=%s request_id=%s",
	            method, path, query, req->status, req->resp_bytes, us, ip,
	            req->actor[0] != '\0' ? req->actor : "-", accesslog_termination_name(toe),
	            req->id);
}
