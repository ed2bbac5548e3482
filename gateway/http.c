/*
 * http.c — the libmicrohttpd daemon (epoll, a pool of 2 threads) and the life
 * of one request: limits checked before the body is read, the body collected,
 * the route dispatched, the connection suspended while RPCs run and resumed
 * by the last of their callbacks, an access-log line for every error.
 *
 * MHD calls the access handler several times per request. The first call
 * only checks and returns MHD_YES: answering there makes 0.9.75 close every
 * connection (docs/dependencies.md). Later calls carry the body; the last, with no data,
 * answers. A response may be queued only on the first or the last call, so
 * an error found in the middle of a body waits for its end (or hangs up).
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/logbuf.h"
#include "gateway/gateway.h"

/* ---- request state --------------------------------------------------------- */

static void http_request_unref(struct http_request *req)
{
	if (atomic_fetch_sub(&req->refs, 1) != 1)
		return;
	if (req->rpc != NULL) {
		for (int i = 0; i < HTTP_RPC_SLOTS; i++)
			rpc_result_fini(&req->rpc[i].result);
		free(req->rpc);
	}
	free(req->body);
	free(req);
}

/* Request ids: a random prefix drawn at start and a counter. Unique, cheap,
 * and never taken from the client (a client's id could forge log lines). */
static void http_request_id(struct gateway *gw, char *out)
{
	static const char hex[] = "0123456789abcdef";
	uint64_t n = atomic_fetch_add_explicit(&gw->rid_next, 1, memory_order_relaxed);
	char tmp[16];
	int len = 0;

	memcpy(out, gw->rid_prefix, 16);
	out[16] = '-';
	do {
		tmp[len++] = hex[n & 0xf];
		n >>= 4;
	} while (n != 0);
	for (int i = 0; i < len; i++)
		out[17 + i] = tmp[len - 1 - i];
	out[17 + len] = '\0';
}

/* MHD_OPTION_URI_LOG_CALLBACK: the first sight of a request, with the raw
 * request target (query included) before MHD cuts and unescapes it. What it
 * returns becomes *req_cls, and MHD then promises the completion callback. */
static void *http_uri_log(void *cls, const char *uri, struct MHD_Connection *conn)
{
	struct gateway *gw = cls;
	struct http_request *req;

	atomic_fetch_add_explicit(&gw->ctr.requests, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&gw->ctr.inflight, 1, memory_order_relaxed);
	if ((req = malloc(sizeof(*req))) == NULL)
		return NULL; /* http_access answers a NULL state with a 503 */
	/* Not memset: the struct is mostly the id buffer and pointers set here. */
	req->gw = gw;
	req->conn = conn;
	atomic_init(&req->refs, 1);
	req->phase = HTTP_PHASE_NEW;
	req->method = 0;
	req->method_name = NULL;
	req->path = NULL;
	req->status = 0;
	req->start_us = clock_mono_us();
	req->target_len = uri != NULL ? strlen(uri) : 0;
	req->err_status = 0;
	req->err_code = req->err_message = NULL;
	req->body = NULL;
	req->body_len = req->body_cap = 0;
	req->body_seen = 0;
	atomic_init(&req->pending, 0);
	req->resume = NULL;
	req->rpc = NULL;
	req->route = NULL;
	req->actor[0] = '\0'; /* read by the access log and idem.c's scope */
	req->param[0] = '\0';
	/* 0 = the default deadline. Left unset, a recycled allocation's value
	 * made an RPC to a frozen service wait far beyond 500 ms. */
	req->rpc_timeout_ms = 0;
	memset(&req->client, 0, sizeof(req->client));
	req->origin = NULL;
	req->cors_allowed = false;
	req->retry_after = 0;
	req->resp_bytes = 0;
	req->idem = NULL;
	req->idem_skip = false;
	req->body_timed = false;
	http_request_id(gw, req->id);
	return req;
}

static const char *http_termination_name(enum MHD_RequestTerminationCode toe)
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
static void http_log_path(const char *path, char *out, size_t len)
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
static bool http_log_secret(const char *name)
{
	static const char *const words[] = {"ticket", "token", "code", "password",
	                                    "secret", "key",   "sig",  "session"};
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcasestr(name, words[i]) != NULL)
			return true;
	return false;
}

struct http_query_buf {
	char *out;
	size_t len, used;
};

static enum MHD_Result http_log_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
	struct http_query_buf *q = cls;
	char k[48], v[64];
	int n;
	(void)kind;

	http_log_path(key, k, sizeof(k));
	if (value == NULL)
		v[0] = '\0';
	else if (http_log_secret(key))
		snprintf(v, sizeof(v), "<redacted>");
	else
		http_log_path(value, v, sizeof(v));
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
static void http_log_query(struct MHD_Connection *conn, char *out, size_t len)
{
	struct http_query_buf q = {out, len, 0};
	out[0] = '\0';
	MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, http_log_arg, &q);
	if (q.used == 0)
		snprintf(out, len, "-");
}

static struct http_conn *http_conn_of_mhd(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	return ci != NULL ? ci->socket_context : NULL;
}

/* MHD_OPTION_NOTIFY_COMPLETED: the response was sent, or the request died.
 * For a suspended request MHD calls this only after the resume. */
static void http_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                           enum MHD_RequestTerminationCode toe)
{
	struct gateway *gw = cls;
	struct http_request *req = *req_cls;
	struct http_conn *c;
	unsigned klass;
	uint64_t us;

	atomic_fetch_sub_explicit(&gw->ctr.inflight, 1, memory_order_relaxed);
	if (req == NULL)
		return;
	*req_cls = NULL;
	if (req->idem != NULL)
		idem_release(req); /* a key still held (died unanswered) is free again */
	c = http_conn_of_mhd(conn);
	/* A request that died in its body leaves no deadline behind; one the
	 * sweeper answered is logged and counted with the 408 it got. */
	if (req->body_timed && c != NULL && atomic_exchange(&c->body_since, 0) == HTTP_BODY_CUT &&
	    req->status == 0)
		req->status = MHD_HTTP_REQUEST_TIMEOUT;
	us = clock_mono_us() - req->start_us;
	klass = req->status / 100;
	atomic_fetch_add_explicit(&gw->ctr.responses[klass < 6 ? klass : 0], 1,
	                          memory_order_relaxed);
	metrics_request(gw, req->route, req->status, us);
	/* The next header block on this connection is awaited from now on
	 * (the sweeper's deadline), unless the socket left HTTP (101). */
	if (c != NULL) {
		if (req->status == MHD_HTTP_SWITCHING_PROTOCOLS)
			c->upgraded = true;
		if (!c->upgraded)
			atomic_store_explicit(&c->awaiting_since, clock_mono_ms(),
			                      memory_order_relaxed);
	}
	/* A line per request (issue 6), through the thread's log buffer
	 * (common/logbuf.h: one write per 16-20 lines or per 100 ms, not one per
	 * request; a write each cost 10-25% of /healthz throughput):
	 * MAGNETAR_ACCESS_LOG=errors keeps only the errors' lines; the counters
	 * count all either way. */
	if (req->status >= 400 || req->status == 0 || gw->log_success) {
		char path[128], method[16], query[256], ip[NETADDR_STRLEN];
		http_log_path(req->method_name, method, sizeof(method));
		http_log_path(req->path, path, sizeof(path));
		http_log_query(req->conn, query, sizeof(query));
		netaddr_format(&req->client, ip);
		logbuf_info("http method=%s path=%s query=%s status=%u bytes=%zu us=%" PRIu64
		            " ip=%s user=%s end=%s request_id=%s",
		            method, path, query, req->status, req->resp_bytes, us, ip,
		            req->actor[0] != '\0' ? req->actor : "-", http_termination_name(toe),
		            req->id);
	}
	http_request_unref(req);
}

/* ---- answering -------------------------------------------------------------- */

int http_queue(struct http_request *req, unsigned status, struct MHD_Response *resp)
{
	enum MHD_Result ok;

	if (resp == NULL)
		return ERR_NOMEM;
	ok = MHD_queue_response(req->conn, status, resp);
	MHD_destroy_response(resp); /* the connection holds its own reference */
	if (ok != MHD_YES)
		return ERR_INTERNAL;
	req->status = status;
	req->phase = HTTP_PHASE_DONE;
	if (req->idem != NULL)
		idem_finish(req, status);
	return 0;
}

int http_queue_shared(struct http_request *req, unsigned status, struct MHD_Response *resp)
{
	if (MHD_queue_response(req->conn, status, resp) != MHD_YES)
		return ERR_INTERNAL;
	req->status = status;
	req->phase = HTTP_PHASE_DONE;
	if (req->idem != NULL)
		idem_finish(req, status);
	return 0;
}

struct http_conn *http_conn_of(struct http_request *req)
{
	return http_conn_of_mhd(req->conn);
}

/* ---- the header and body deadlines (slowloris) ---------------------------- */

/*
 * libmicrohttpd's own timeout restarts on every byte read, so a client that
 * sends one header byte per second holds a connection forever (docs/dependencies.md).
 * Every connection is on a list with the time since which a header block is
 * awaited (its start, or the end of its previous request); a thread looks
 * at the list 4 times a second and shuts down (shutdown(2)) the socket of
 * any connection still waiting past MAGNETAR_HEADER_TIMEOUT_S. MHD then sees
 * the end of the stream and closes it as usual, in its own thread.
 * The same holds for a body dripped after complete headers (issue 16): from
 * the first call of a request with a body until its last, the connection
 * has a body deadline (MAGNETAR_BODY_TIMEOUT_S). Past it the sweeper writes
 * a 408 itself (MHD 0.9.75 queues no response in the middle of a body, and
 * has nothing of its own to write then), then shuts the socket down. Over
 * TLS it cannot write (the session is MHD's): the socket is only shut down.
 * The sweeper and the request's last call race for the deadline with one
 * atomic swap, so either the 408 or the route's answer is written, never both.
 * The fd cannot be reused under us: MHD tells us a connection closed
 * (NOTIFY_CONNECTION, which unlinks it under the same lock) before it closes
 * the socket.
 */
struct http_sweeper {
	struct gateway *gw;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	pthread_t thread;
	struct http_conn *head;
	_Atomic uint64_t cut, body_cut;
	char *head408; /* the 408's status line and constant headers */
	size_t head408_len;
};

/* The 408 of a body deadline, written to the socket, then the socket shut. */
static void http_sweep_body(struct http_sweeper *sw, struct http_conn *c)
{
	char tail[512];
	int n;

	if (!c->tls && sw->head408 != NULL) {
		char body[256];
		int blen =
		    snprintf(body, sizeof(body),
		             "{\"error\":{\"code\":\"request_timeout\",\"message\":\"The "
		             "request body did not arrive in time.\",\"request_id\":\"%s\"}}",
		             c->body_rid);
		n = snprintf(tail, sizeof(tail), "X-Request-Id: %s\r\nContent-Length: %d\r\n\r\n%s",
		             c->body_rid, blen, body);
		if (blen > 0 && (size_t)blen < sizeof(body) && n > 0 && (size_t)n < sizeof(tail)) {
			struct iovec iov[2] = {{sw->head408, sw->head408_len}, {tail, (size_t)n}};
			struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
			/* Best effort: a peer that reads nothing still loses the socket. */
			(void)sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		}
	}
	shutdown(c->fd, SHUT_RDWR);
}

static void *http_sweep(void *arg)
{
	struct http_sweeper *sw = arg;
	const struct gateway *gw = sw->gw;

	pthread_mutex_lock(&sw->mu);
	while (!sw->stop) {
		struct timespec until;
		uint64_t now = clock_mono_ms(), n = 0, nb = 0;
		for (struct http_conn *c = sw->head; c != NULL; c = c->next) {
			uint64_t since =
			    atomic_load_explicit(&c->awaiting_since, memory_order_relaxed);
			if (since != 0 && now >= since && now - since >= gw->header_timeout_ms) {
				shutdown(c->fd, SHUT_RDWR);
				atomic_store_explicit(&c->awaiting_since, 0, memory_order_relaxed);
				n++;
			}
			since = atomic_load(&c->body_since);
			if (since == 0 || since == HTTP_BODY_CUT || now < since ||
			    now - since < gw->body_timeout_ms)
				continue;
			/* Lost: the body ended in the meantime and its answer is ours. */
			if (!atomic_compare_exchange_strong(&c->body_since, &since, HTTP_BODY_CUT))
				continue;
			http_sweep_body(sw, c);
			nb++;
		}
		if (n > 0) {
			atomic_fetch_add(&sw->cut, n);
			log_info("http: closed %" PRIu64
			         " connection(s) that sent no complete header "
			         "block within %u s",
			         n, gw->header_timeout_ms / 1000);
		}
		if (nb > 0) {
			atomic_fetch_add(&sw->body_cut, nb);
			log_info("http: answered 408 and closed %" PRIu64
			         " connection(s) whose request body did not arrive within %u s",
			         nb, gw->body_timeout_ms / 1000);
		}
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 250 * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&sw->cv, &sw->mu, &until);
	}
	pthread_mutex_unlock(&sw->mu);
	return NULL;
}

static int http_sweeper_start(struct gateway *gw)
{
	struct http_sweeper *sw = calloc(1, sizeof(*sw));
	char *hdrs;
	int n;

	if (sw == NULL)
		return ERR_NOMEM;
	sw->gw = gw;
	/* Built once: the sweeper must not allocate per connection it cuts. */
	if ((hdrs = respond_raw_headers(gw)) == NULL) {
		free(sw);
		return ERR_NOMEM;
	}
	n = asprintf(&sw->head408, "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n%s", hdrs);
	free(hdrs);
	if (n < 0) {
		free(sw);
		return ERR_NOMEM;
	}
	sw->head408_len = (size_t)n;
	pthread_mutex_init(&sw->mu, NULL);
	pthread_cond_init(&sw->cv, NULL);
	if (pthread_create(&sw->thread, NULL, http_sweep, sw) != 0) {
		pthread_cond_destroy(&sw->cv);
		pthread_mutex_destroy(&sw->mu);
		free(sw->head408);
		free(sw);
		return ERR_NOMEM;
	}
	gw->sweeper = sw;
	return 0;
}

static void http_sweeper_halt(struct http_sweeper *sw)
{
	if (sw == NULL)
		return;
	pthread_mutex_lock(&sw->mu);
	sw->stop = true;
	pthread_cond_signal(&sw->cv);
	pthread_mutex_unlock(&sw->mu);
	pthread_join(sw->thread, NULL);
}

uint64_t http_header_deadline_cuts(struct gateway *gw)
{
	return gw->sweeper != NULL ? atomic_load(&gw->sweeper->cut) : 0;
}

uint64_t http_body_deadline_cuts(struct gateway *gw)
{
	return gw->sweeper != NULL ? atomic_load(&gw->sweeper->body_cut) : 0;
}

/* MHD_OPTION_NOTIFY_CONNECTION: a connection opens or closes. */
static void http_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                            enum MHD_ConnectionNotificationCode toe)
{
	struct gateway *gw = cls;
	struct http_sweeper *sw = gw->sweeper;
	struct http_conn *c;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci =
		    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		/* NULL: no caching and no header deadline for this one connection. */
		if ((c = calloc(1, sizeof(*c))) == NULL)
			return;
		*socket_context = c;
		if (ci == NULL || sw == NULL)
			return;
		c->fd = ci->connect_fd;
		atomic_init(&c->awaiting_since, clock_mono_ms());
		atomic_init(&c->body_since, 0);
		pthread_mutex_lock(&sw->mu);
		c->next = sw->head;
		if (sw->head != NULL)
			sw->head->prev = c;
		sw->head = c;
		pthread_mutex_unlock(&sw->mu);
		return;
	}
	if ((c = *socket_context) == NULL)
		return;
	if (sw != NULL) {
		/* Under the lock: the sweeper may be about to shut this fd down. */
		pthread_mutex_lock(&sw->mu);
		if (c->prev != NULL)
			c->prev->next = c->next;
		else if (sw->head == c)
			sw->head = c->next;
		if (c->next != NULL)
			c->next->prev = c->prev;
		pthread_mutex_unlock(&sw->mu);
	}
	if (c->cached != NULL)
		MHD_destroy_response(c->cached);
	free(c);
	*socket_context = NULL;
}

/* The answer to a limit error. A request whose body was not read, or that
 * sent too much, is not one to keep talking to: close after a 413 or 400. */
static enum MHD_Result http_answer_error(struct http_request *req)
{
	struct MHD_Response *resp;

	atomic_fetch_add_explicit(&req->gw->ctr.rejected, 1, memory_order_relaxed);
	resp = respond_error_new(req, req->err_code, req->err_message);
	if (resp != NULL &&
	    (req->err_status == MHD_HTTP_CONTENT_TOO_LARGE ||
	     req->err_status == MHD_HTTP_BAD_REQUEST) &&
	    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close") != MHD_YES) {
		MHD_destroy_response(resp);
		resp = NULL;
	}
	if (resp != NULL && req->err_status == MHD_HTTP_TOO_MANY_REQUESTS) {
		char secs[16];
		snprintf(secs, sizeof(secs), "%u", req->retry_after > 0 ? req->retry_after : 1);
		if (MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, secs) != MHD_YES) {
			MHD_destroy_response(resp);
			resp = NULL;
		}
	}
	return http_queue(req, req->err_status, resp) == 0 ? MHD_YES : MHD_NO;
}

/* A handler that failed without answering still gets an answer. */
static enum MHD_Result http_answer_internal(struct http_request *req, int rv)
{
	log_warnx("http: handler failed: %s request_id=%s", err_str(rv), req->id);
	if (respond_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "Internal error.") != 0)
		return MHD_NO; /* not even that: drop the connection */
	return MHD_YES;
}

/* ---- first call: limits, before any body byte is read ---------------------- */

/* The framing headers as libmicrohttpd reads them: it frames the body by
 * the FIRST Content-Length or Transfer-Encoding, so the checks below look at
 * that one, and a second one (which a proxy in front may have read instead)
 * is refused outright rather than guessed at. */
struct http_header_sum {
	size_t total;
	unsigned n_length, n_encoding;
	bool spaced_name; /* whitespace in a name: "Transfer-Encoding :" */
	const char *length, *encoding;
};

static enum MHD_Result http_sum_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                       size_t key_size, const char *value, size_t value_size)
{
	struct http_header_sum *sum = cls;
	(void)kind;

	/* As on the wire: "name: value\r\n". */
	sum->total += key_size + value_size + 4;
	/* MHD keeps a space or tab before the colon as part of the name, so
	 * it ignores "Transfer-Encoding : chunked" where a lenient proxy may
	 * frame by it (RFC 9112 5.1: a server MUST answer 400). */
	if (memchr(key, ' ', key_size) != NULL || memchr(key, '\t', key_size) != NULL)
		sum->spaced_name = true;
	if (key_size == 14 && strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
		if (sum->n_length++ == 0)
			sum->length = value;
	} else if (key_size == 17 && strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
		if (sum->n_encoding++ == 0)
			sum->encoding = value;
	}
	return MHD_YES;
}

static void http_reject(struct http_request *req, unsigned status, const char *code,
                        const char *message)
{
	req->err_status = status;
	req->err_code = code;
	req->err_message = message;
}

/* ---- client address, listener, rate limits ---------------------------------- */

struct http_proxy_values {
	const char *name;
	size_t name_len;
	char *buf;
	size_t len, cap;
};

/* Joins every value of the proxy header, in order ("a, b" + "c" = "a, b,c").
 * Past the buffer the left-most bytes are dropped: the walk goes from the
 * right, and a cut hop only ends it early (at a trusted proxy). */
static enum MHD_Result http_proxy_value(void *cls, enum MHD_ValueKind kind, const char *key,
                                        size_t key_size, const char *value, size_t value_size)
{
	struct http_proxy_values *pv = cls;
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
static void http_find_client(struct http_request *req)
{
	struct gateway *gw = req->gw;
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	struct netaddr peer = {0};
	char buf[8192];
	struct http_proxy_values pv = {NULL, 0, buf, 0, sizeof(buf)};

	if (ci == NULL || netaddr_from_sockaddr(ci->client_addr, &peer) != 0 || gw->ntrusted == 0 ||
	    !netaddr_cidrs_match(gw->trusted, gw->ntrusted, &peer)) {
		req->client = peer;
		return;
	}
	pv.name = gw->proxy_header == NETADDR_FORWARDED ? "Forwarded" : "X-Forwarded-For";
	pv.name_len = strlen(pv.name);
	MHD_get_connection_values_n(req->conn, MHD_HEADER_KIND, http_proxy_value, &pv);
	netaddr_client(&peer, gw->trusted, gw->ntrusted, gw->proxy_header, pv.len > 0 ? buf : NULL,
	               pv.len, &req->client);
}

void http_client_ip(struct http_request *req, char ip[INET6_ADDRSTRLEN])
{
	netaddr_format(&req->client, ip);
}

/* The route as this listener shows it: the metrics listener serves only
 * ROUTE_F_METRICS routes; the main one hides them in production. */
static const struct route *http_visible(struct http_request *req, const struct route *r)
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

/* Token buckets: the client's global one, then its route class's. O(1), no
 * allocation: the hot path pays a lock and a hash. */
static bool http_rate_limited(struct http_request *req)
{
	struct gateway *gw = req->gw;
	enum rate_class k = RATE_GLOBAL;
	uint64_t now = req->start_us / 1000;
	unsigned wait;

	if (gw->rl == NULL)
		return false;
	wait = ratelimit_take(gw->rl, RATE_GLOBAL, &gw->rate[RATE_GLOBAL], &req->client, now);
	if (wait == 0 && req->route != NULL && req->route->rate != RATE_GLOBAL &&
	    routes_allows(req->route, req->method)) {
		k = req->route->rate;
		wait = ratelimit_take(gw->rl, k, &gw->rate[k], &req->client, now);
	}
	if (wait == 0)
		return false;
	metrics_rate_hit(gw, k);
	req->retry_after = wait;
	http_reject(req, MHD_HTTP_TOO_MANY_REQUESTS, "rate_limited",
	            "Too many requests; try again later.");
	return true;
}

/* From the headers to the last call, the body has MAGNETAR_BODY_TIMEOUT_S.
 * The id and the transport are noted first, for the sweeper's 408. */
static void http_body_deadline_start(struct http_request *req, struct http_conn *c)
{
	memcpy(c->body_rid, req->id, sizeof(c->body_rid));
	c->tls = MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_GNUTLS_SESSION) != NULL;
	req->body_timed = true;
	atomic_store(&c->body_since, clock_mono_ms());
}

/* The body is in: the deadline ends. False when the sweeper got there first
 * and has answered 408 on the socket: nothing more may be written. */
static bool http_body_deadline_stop(struct http_request *req)
{
	struct http_conn *c;

	if (!req->body_timed || (c = http_conn_of(req)) == NULL)
		return true;
	return atomic_exchange(&c->body_since, 0) != HTTP_BODY_CUT;
}

static enum MHD_Result http_first_call(struct http_request *req, const char *url,
                                       const char *method)
{
	const struct http_limits *lim = &req->gw->limits;
	struct http_header_sum sum = {0};
	struct http_conn *c;
	bool has_body;

	req->path = url;
	req->method_name = method;
	req->method = routes_method(method);
	req->phase = HTTP_PHASE_BODY;
	/* The header block is complete: no deadline until the next one. */
	if ((c = http_conn_of(req)) != NULL)
		atomic_store_explicit(&c->awaiting_since, 0, memory_order_relaxed);
	req->route = http_visible(req, routes_find(url, req->param));
	http_find_client(req);
	if (req->gw->cors.enabled && (req->origin = MHD_lookup_connection_value(
	                                  req->conn, MHD_HEADER_KIND, "Origin")) != NULL)
		req->cors_allowed = req->gw->cors.any ||
		                    origin_listed(&req->gw->cors, req->origin, strlen(req->origin));
	MHD_get_connection_values_n(req->conn, MHD_HEADER_KIND, http_sum_header, &sum);
	/* Doubtful framing counts as a body: answered now, and closed. */
	has_body = sum.n_encoding > 0 || sum.n_length > 1 || sum.spaced_name ||
	           (sum.n_length > 0 && strcmp(sum.length, "0") != 0);

	if (req->target_len > lim->max_target)
		http_reject(req, MHD_HTTP_URI_TOO_LONG, "uri_too_long",
		            "The request target is too long.");
	else if (sum.total > lim->max_headers)
		http_reject(req, MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large",
		            "The request headers are too large.");
	else if (sum.n_length > 1 || sum.n_encoding > 1)
		/* Repeated framing (smuggling): MHD reads the first, a proxy may
		 * have read the last. Even equal values are refused: no guessing. */
		http_reject(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
		            "Content-Length and Transfer-Encoding may appear only once.");
	else if (sum.spaced_name)
		http_reject(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
		            "A header name may not contain whitespace.");
	else if (sum.n_length > 0 && sum.n_encoding > 0)
		/* Two framings: the classic request-smuggling shape. Refuse both. */
		http_reject(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
		            "Content-Length and Transfer-Encoding may not be combined.");
	else if (sum.n_encoding > 0 && strcasecmp(sum.encoding, "chunked") != 0)
		/* MHD would read any other coding (or list: "gzip, chunked")
		 * until the peer closes. */
		http_reject(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
		            "Only the chunked transfer encoding is accepted.");
	else if (sum.n_length > 0 && strtoull(sum.length, NULL, 10) > lim->max_body)
		/* MHD has already checked that the value is a plain number. */
		http_reject(req, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
		            "The request body is too large.");
	else if (!http_rate_limited(req)) {
		if (has_body && c != NULL)
			http_body_deadline_start(req, c);
		return MHD_YES;
	}
	/* With a body announced, answer now: MHD then reads none of it (and
	 * sends no 100 Continue) and closes after the answer. Without one, wait
	 * for the next call so the connection may stay open. */
	if (has_body)
		return http_answer_error(req);
	return MHD_YES;
}

/* ---- body ---------------------------------------------------------------- */

static enum MHD_Result http_body(struct http_request *req, const char *data, size_t len)
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
		http_reject(req, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
		            "The request body is too large.");
		free(req->body);
		req->body = NULL;
		req->body_len = req->body_cap = 0;
		return MHD_YES;
	}
	if (req->body_len + len > req->body_cap) {
		size_t cap = req->body_cap != 0 ? req->body_cap : 1024;
		char *p;
		while (cap < req->body_len + len)
			cap *= 2;
		if (cap > lim->max_body)
			cap = lim->max_body;
		if ((p = realloc(req->body, cap)) == NULL) {
			/* Answered once the body has been drained, like a limit. */
			http_reject(req, MHD_HTTP_SERVICE_UNAVAILABLE, "service_unavailable",
			            "Out of memory; try again later.");
			free(req->body);
			req->body = NULL;
			req->body_len = req->body_cap = 0;
			return MHD_YES;
		}
		req->body = p;
		req->body_cap = cap;
	}
	memcpy(req->body + req->body_len, data, len);
	req->body_len += len;
	return MHD_YES;
}

/* ---- last call: route ------------------------------------------------------ */

static enum MHD_Result http_dispatch(struct http_request *req)
{
	const struct route *route = req->route;
	int rv;

	if (req->err_status != 0)
		return http_answer_error(req);
	if (route == NULL)
		rv = respond_error(req, MHD_HTTP_NOT_FOUND, "not_found", "No such resource.");
	else if (req->method == HTTP_M_OPTIONS && cors_is_preflight(req))
		rv = cors_preflight(req);
	else if (!routes_allows(route, req->method)) {
		struct MHD_Response *resp;
		char allow[64];
		routes_allow_header(route, allow, sizeof(allow));
		resp = respond_error_new(req, "method_not_allowed",
		                         "This method is not allowed on this resource.");
		if (resp != NULL &&
		    MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow) != MHD_YES) {
			MHD_destroy_response(resp);
			resp = NULL;
		}
		rv = http_queue(req, MHD_HTTP_METHOD_NOT_ALLOWED, resp);
	} else if ((route->flags & ROUTE_F_IDEMPOTENT) != 0 && req->method == HTTP_M_POST &&
	           (rv = idem_begin(req)) != 0)
		rv = rv > 0 ? 0 : rv; /* answered: replayed, or refused */
	else
		rv = route->handler(req);
	/* Answered or waiting for RPCs; anything else gets a 500, never a hang. */
	if (req->status != 0 || req->phase == HTTP_PHASE_SUSPENDED)
		return MHD_YES;
	return http_answer_internal(req, rv != 0 ? rv : ERR_INTERNAL);
}

static enum MHD_Result http_resumed(struct http_request *req)
{
	int rv;

	req->again = false;
	/* An Idempotency-Key already used: its answer instead of the route's. */
	rv = req->idem_skip ? idem_answer(req) : req->resume(req);
	if (req->status != 0 || req->again)
		return MHD_YES;
	return http_answer_internal(req, rv != 0 ? rv : ERR_INTERNAL);
}

/* http_uri_log had no memory for the request's state: a 503 built on a
 * state that lives for this call only (the completion sees none). */
static enum MHD_Result http_answer_stateless(struct gateway *gw, struct MHD_Connection *conn)
{
	struct http_request tmp;

	memset(&tmp, 0, sizeof(tmp));
	tmp.gw = gw;
	tmp.conn = conn;
	http_request_id(gw, tmp.id);
	log_warnx("http: no memory for a request request_id=%s", tmp.id);
	if (respond_error(&tmp, MHD_HTTP_SERVICE_UNAVAILABLE, "service_unavailable",
	                  "Out of memory; try again later.") != 0)
		return MHD_NO; /* not even that: drop the connection */
	return MHD_YES;
}

static enum MHD_Result http_access(void *cls, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *version, const char *upload_data,
                                   size_t *upload_data_size, void **req_cls)
{
	struct http_request *req = *req_cls;
	(void)version;

	if (req == NULL)
		return http_answer_stateless((struct gateway *)cls, conn);
	switch (req->phase) {
	case HTTP_PHASE_NEW:
		return http_first_call(req, url, method);
	case HTTP_PHASE_BODY:
		if (*upload_data_size != 0) {
			size_t len = *upload_data_size;
			*upload_data_size = 0;
			return http_body(req, upload_data, len);
		}
		if (!http_body_deadline_stop(req))
			return MHD_NO; /* answered 408 by the sweeper: close */
		return http_dispatch(req);
	case HTTP_PHASE_SUSPENDED:
		return http_resumed(req);
	case HTTP_PHASE_DONE:
		break;
	}
	/* A response is queued, so MHD should not call again: a broken invariant,
	 * closed rather than left hanging. */
	log_warnx("http: access handler called after the answer request_id=%s", req->id);
	return MHD_NO;
}

/* ---- asynchronous answers ------------------------------------------------- */

/* Drops one of req->pending; the last one resumes the connection. */
static void http_async_put(struct http_request *req)
{
	struct gateway *gw = req->gw;

	if (atomic_fetch_sub(&req->pending, 1) != 1)
		return;
	MHD_resume_connection(req->conn);
	/* After the resume: http_stop may now stop the daemon. */
	atomic_fetch_sub(&gw->suspended, 1);
}

int http_async_begin(struct http_request *req, http_resume_fn done)
{
	struct gateway *gw = req->gw;

	/* Counted before `stopping` is read, so http_stop either sees this
	 * request or this request sees `stopping` (both are seq_cst). */
	atomic_fetch_add(&gw->suspended, 1);
	if (atomic_load(&gw->stopping))
		goto fail;
	if (req->rpc == NULL && (req->rpc = calloc(HTTP_RPC_SLOTS, sizeof(*req->rpc))) == NULL) {
		atomic_fetch_sub(&gw->suspended, 1);
		return ERR_NOMEM;
	}
	req->resume = done;
	/* The handler has checked the body and the caller: the moment to hold
	 * the Idempotency-Key, if any (a blocking SQLite write, only then). */
	if (req->idem != NULL && !idem_claim(req))
		req->idem_skip = true;
	atomic_store(&req->pending, 1); /* the guard, dropped by http_async_end */
	req->phase = HTTP_PHASE_SUSPENDED;
	/* Suspended before any RPC starts, so a callback may resume at once. */
	MHD_suspend_connection(req->conn);
	return 0;
fail:
	atomic_fetch_sub(&gw->suspended, 1);
	return ERR_CLOSED;
}

int http_async_again(struct http_request *req, http_resume_fn done)
{
	struct gateway *gw = req->gw;

	/* As http_async_begin, without its Idempotency-Key claim: the first
	 * round made it. */
	atomic_fetch_add(&gw->suspended, 1);
	if (atomic_load(&gw->stopping)) {
		atomic_fetch_sub(&gw->suspended, 1);
		return ERR_CLOSED;
	}
	req->resume = done;
	req->again = true;
	atomic_store(&req->pending, 1);
	req->phase = HTTP_PHASE_SUSPENDED;
	MHD_suspend_connection(req->conn);
	return 0;
}

int http_async_refused(struct http_request *req, int rv)
{
	return respond_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "service_unavailable",
	                     rv == ERR_NOMEM ? "The gateway is short of memory: try again."
	                                     : "The gateway is shutting down.");
}

static void http_rpc_done(struct rpc_result *r, void *arg)
{
	struct http_rpc_slot *slot = arg;
	struct http_request *req = slot->req;
	struct gateway *gw = req->gw;

	/* Runs on an nng thread: record, never block. */
	metrics_rpc(gw, slot->desc, slot->method, clock_mono_us() - slot->start_us);
	if (r->status != MAGNETAR__STATUS__STATUS_OK)
		atomic_fetch_add_explicit(&gw->ctr.rpc_failures, 1, memory_order_relaxed);
	slot->result = *r;
	r->output = NULL; /* ours now; freed with the request */
	http_async_put(req);
	http_request_unref(req);
	/* Last touch of the gateway: http_stop waits for this to reach 0. */
	atomic_fetch_sub(&gw->rpc_pending, 1);
}

void http_async_call(struct http_request *req, int slot, struct rpc_client *client,
                     const ProtobufCServiceDescriptor *desc, const char *method,
                     const ProtobufCMessage *input)
{
	Magnetar__RequestContext ctx = MAGNETAR__REQUEST_CONTEXT__INIT;
	struct http_rpc_slot *s = &req->rpc[slot];
	struct gateway *gw = req->gw;
	const char *ua;
	char ip[INET6_ADDRSTRLEN];
	int rv = ERR_UNAVAIL;

	if (req->idem_skip)
		return; /* answered from the idempotency record on resume */
	s->req = req;
	s->desc = desc;
	s->method = method;
	s->start_us = clock_mono_us();
	http_client_ip(req, ip);
	ua = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_USER_AGENT);
	ctx.request_id = req->id;
	ctx.client_ip = ip;
	ctx.user_agent = (char *)(ua != NULL ? ua : "");
	ctx.actor = req->actor;

	atomic_fetch_add_explicit(&gw->ctr.rpc_calls, 1, memory_order_relaxed);
	atomic_fetch_add(&gw->rpc_pending, 1);
	atomic_fetch_add(&req->pending, 1);
	atomic_fetch_add(&req->refs, 1);
	if (client != NULL)
		rv = rpc_call_async(client, desc, method, input, &ctx,
		                    req->rpc_timeout_ms > 0 ? req->rpc_timeout_ms
		                                            : gw->limits.rpc_timeout_ms,
		                    http_rpc_done, s);
	if (rv == 0)
		return;
	/* Never started: the callback will not come. Neither count can reach
	 * zero here: the guard and MHD's reference are still held. */
	atomic_fetch_add_explicit(&gw->ctr.rpc_failures, 1, memory_order_relaxed);
	s->result.status = MAGNETAR__STATUS__STATUS_UNAVAILABLE;
	snprintf(s->result.code, sizeof(s->result.code), "service_unavailable");
	atomic_fetch_sub(&req->pending, 1);
	atomic_fetch_sub(&req->refs, 1);
	atomic_fetch_sub(&gw->rpc_pending, 1);
}

void http_async_end(struct http_request *req)
{
	http_async_put(req);
}

/* ---- daemon ---------------------------------------------------------------- */

static void http_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];
	size_t n;
	(void)cls;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	log_warnx("http: libmicrohttpd: %s", msg);
}

/* Resolves MAGNETAR_HTTP_ADDR's host (IPv4 or IPv6 literal, or a name such as
 * "localhost") to the address to bind. */
int http_resolve(const char *host, uint16_t port, struct sockaddr_storage *ss, socklen_t *sslen)
{
	struct addrinfo hints = {0}, *res = NULL;
	int gai;

	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	if ((gai = getaddrinfo(host, NULL, &hints, &res)) != 0 || res == NULL) {
		log_warnx("http: cannot resolve %s: %s", host, gai_strerror(gai));
		return ERR_INVAL;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*sslen = res->ai_addrlen;
	freeaddrinfo(res);
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons(port);
	else if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
	else
		return ERR_INVAL;
	return 0;
}

/* Starts one listener with every callback of this file. `threads` > 0. */
static int http_listen(struct gateway *gw, const char *host, uint16_t port, unsigned threads,
                       const char *what, bool tls, struct MHD_Daemon **out)
{
	struct MHD_OptionItem tls_opt[4];
	size_t ntls = tls ? tls_mhd_options(gw, tls_opt, 3) : 0;
	const struct http_limits *lim = &gw->limits;
	const union MHD_DaemonInfo *info;
	struct sockaddr_storage ss;
	socklen_t sslen;
	unsigned flags;
	char ip[INET6_ADDRSTRLEN] = "?";
	int rv;

	if ((rv = http_resolve(host, port, &ss, &sslen)) != 0)
		return rv;
	flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
	        MHD_ALLOW_UPGRADE; /* terminals' WebSockets (wsbridge.c) */
	if (ntls > 0)
		flags |= MHD_USE_TLS;
	tls_opt[ntls] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
	if (ss.ss_family == AF_INET6) {
		flags |= MHD_USE_IPv6;
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof(ip));
	} else
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof(ip));

	/* The logger first: MHD reports problems with the options after it. */
	*out = MHD_start_daemon(
	    flags, 0, NULL, NULL, http_access, gw, MHD_OPTION_EXTERNAL_LOGGER, http_mhd_log, gw,
	    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE, threads,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, lim->conn_memory, MHD_OPTION_CONNECTION_LIMIT,
	    lim->connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT, lim->per_ip,
	    MHD_OPTION_CONNECTION_TIMEOUT, lim->timeout_s, MHD_OPTION_URI_LOG_CALLBACK,
	    http_uri_log, gw, MHD_OPTION_NOTIFY_COMPLETED, http_completed, gw,
	    MHD_OPTION_NOTIFY_CONNECTION, http_connection, gw, MHD_OPTION_ARRAY, tls_opt,
	    MHD_OPTION_END);
	if (*out == NULL) {
		log_warnx("http: cannot listen on %s port %u (%s)", host, (unsigned)port, what);
		return ERR_IO;
	}
	info = MHD_get_daemon_info(*out, MHD_DAEMON_INFO_BIND_PORT);
	log_info("http: %s listening on %s://%s%s%s:%u threads=%u hsts=%s", what,
	         ntls > 0 ? "https" : "http", ss.ss_family == AF_INET6 ? "[" : "", ip,
	         ss.ss_family == AF_INET6 ? "]" : "",
	         info != NULL ? (unsigned)info->port : (unsigned)port, threads,
	         gw->hsts ? "on" : "off");
	return 0;
}

/* "host:port" or "[v6]:port" (config.c has checked the shape). */
int http_split_addr(const char *addr, char *host, size_t hlen, uint16_t *port)
{
	const char *colon = strrchr(addr, ':');
	const char *h = addr;
	size_t n;

	if (colon == NULL)
		return ERR_INVAL;
	n = (size_t)(colon - addr);
	if (addr[0] == '[' && n >= 2 && addr[n - 1] == ']') {
		h++;
		n -= 2;
	}
	if (n == 0 || n >= hlen)
		return ERR_INVAL;
	memcpy(host, h, n);
	host[n] = '\0';
	*port = (uint16_t)strtoul(colon + 1, NULL, 10);
	return 0;
}

int http_start(struct gateway *gw)
{
	int rv;

	if ((rv = http_sweeper_start(gw)) != 0)
		return rv;
	/* TLS on the main listener; the key leaves our memory once MHD has it. */
	if ((rv = tls_load(gw)) != 0)
		return rv;
	rv = http_listen(gw, gw_vars(gw)->http.host, gw_vars(gw)->http.port, gw->limits.threads,
	                 "main", true, &gw->mhd);
	tls_wipe(gw);
	if (rv != 0)
		return rv;
	if (gw_vars(gw)->metrics.text != NULL) {
		char host[256];
		uint16_t port;
		if (http_split_addr(gw_vars(gw)->metrics.text, host, sizeof(host), &port) != 0)
			return ERR_INVAL;
		/* One thread: a scraper every few seconds, never the public. */
		if ((rv = http_listen(gw, host, port, 1, "metrics", false, &gw->mhd_metrics)) != 0)
			return rv;
	}
	return 0;
}

void http_stop(struct gateway *gw)
{
	MHD_socket listener, metrics_listener = MHD_INVALID_SOCKET;
	uint64_t until;

	if (gw->mhd == NULL)
		return;
	/* MHD aborts when stopped with a suspended connection; every RPC ends
	 * within its deadline, so this wait is bounded. No new connections
	 * meanwhile (a quiesced listener is ours to close). */
	atomic_store(&gw->stopping, true);
	listener = MHD_quiesce_daemon(gw->mhd);
	if (gw->mhd_metrics != NULL)
		metrics_listener = MHD_quiesce_daemon(gw->mhd_metrics);
	until = clock_mono_ms() + 2000;
	while (atomic_load(&gw->suspended) > 0 || atomic_load(&gw->rpc_pending) > 0) {
		struct timespec ts = {0, 1000000};
		if (until != 0 && clock_mono_ms() > until) {
			log_warnx("http: still waiting for %d suspended requests",
			          atomic_load(&gw->suspended));
			until = 0;
		}
		nanosleep(&ts, NULL);
	}
	/* The sweeper first: it must not shut down fds the daemons are closing. */
	http_sweeper_halt(gw->sweeper);
	MHD_stop_daemon(gw->mhd);
	gw->mhd = NULL;
	if (listener != MHD_INVALID_SOCKET)
		close(listener);
	if (gw->mhd_metrics != NULL) {
		MHD_stop_daemon(gw->mhd_metrics);
		gw->mhd_metrics = NULL;
		if (metrics_listener != MHD_INVALID_SOCKET)
			close(metrics_listener);
	}
	if (gw->sweeper != NULL) {
		pthread_cond_destroy(&gw->sweeper->cv);
		pthread_mutex_destroy(&gw->sweeper->mu);
		free(gw->sweeper->head408);
		free(gw->sweeper);
		gw->sweeper = NULL;
	}
}
