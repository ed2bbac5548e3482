/*
 * http.c — the libmicrohttpd daemons (epoll, a pool of threads) and the
 * bounds of one request's life: its state created at MHD's first sight of
 * it, and at its end the counters, the metrics, the next header deadline
 * and the access-log line. What happens in between is pipeline.c's.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
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
#include "gateway/gateway.h"

/* ---- request state --------------------------------------------------------- */

void http_request_unref(struct http_request *req)
{
	if (atomic_fetch_sub(&req->refs, 1) != 1)
		return;
	if (req->rpc != NULL) {
		for (int i = 0; i < HTTP_RPC_SLOTS; i++)
			rpc_result_fini(&req->rpc[i].result);
		free(req->rpc);
	}
	if (req->auth != NULL) {
		rpc_result_fini(&req->auth->confirmed);
		free(req->auth);
	}
	if (req->answer != NULL && !req->answer_shared)
		MHD_destroy_response(req->answer); /* recorded, never sent */
	body_release(req);
	proxy_release(req);
	free(req->raw_target);
	free(req);
}

/* Request ids: a random prefix drawn at start and a counter. Unique, cheap,
 * and never taken from the client (a client's id could forge log lines). */
void http_request_id(struct gateway *gw, char *out)
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
		return NULL; /* pipeline_access answers a NULL state with a 503 */
	/* Every field zero but these: a field added later cannot keep a
	 * recycled allocation's value (one did: rpc_timeout_ms, which made an
	 * RPC to a frozen service wait far beyond its 500 ms). The 520 bytes
	 * cost about 15 ns. */
	*req = (struct http_request){
	    .gw = gw,
	    .conn = conn,
	    .refs = 1,
	    .phase = HTTP_PHASE_NEW,
	    .start_us = clock_mono_us(),
	    .target_len = uri != NULL ? strlen(uri) : 0,
	};
	http_request_id(gw, req->id);
	/* libmicrohttpd unescapes the target in place after this call; an
	 * upstream gets it as sent. NULL on failure: proxy.c answers 500. */
	if (gw->upstreams.n > 0 && uri != NULL)
		req->raw_target = strdup(uri);
	return req;
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
	metrics_request(gw, req->route_label, req->status, us);
	/* The next header block on this connection is awaited from now on
	 * (the sweeper's deadline), unless the socket left HTTP (101). */
	if (c != NULL) {
		if (req->status == MHD_HTTP_SWITCHING_PROTOCOLS)
			c->upgraded = true;
		if (!c->upgraded)
			atomic_store_explicit(&c->awaiting_since, clock_mono_ms(),
			                      memory_order_relaxed);
	}
	accesslog_write(req, toe, us);
	http_request_unref(req);
}

struct http_conn *http_conn_of(struct http_request *req)
{
	return http_conn_of_mhd(req->conn);
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
	    flags, 0, NULL, NULL, pipeline_access, gw, MHD_OPTION_EXTERNAL_LOGGER, http_mhd_log, gw,
	    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE, threads,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, lim->conn_memory, MHD_OPTION_CONNECTION_LIMIT,
	    lim->connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT, lim->per_ip,
	    MHD_OPTION_CONNECTION_TIMEOUT, lim->timeout_s, MHD_OPTION_URI_LOG_CALLBACK,
	    http_uri_log, gw, MHD_OPTION_NOTIFY_COMPLETED, http_completed, gw,
	    MHD_OPTION_NOTIFY_CONNECTION, deadline_connection, gw, MHD_OPTION_ARRAY, tls_opt,
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

/* The CPUs a cgroup v2 quota allows ("200000 100000" in cpu.max: 2), or 0
 * when there is none ("max") or it cannot be read. */
static int http_cgroup_cpus(void)
{
	FILE *f = fopen("/sys/fs/cgroup/cpu.max", "re");
	long long quota = 0, period = 0;
	char first[32] = "";

	if (f == NULL)
		return 0;
	if (fscanf(f, "%31s %lld", first, &period) != 2 || strcmp(first, "max") == 0 ||
	    period <= 0 || (quota = strtoll(first, NULL, 10)) <= 0)
		quota = 0;
	fclose(f);
	return quota > 0 ? (int)((quota + period - 1) / period) : 0;
}

unsigned http_threads_for_cores(void)
{
	cpu_set_t set;
	int n = 0, quota = http_cgroup_cpus();

	/* The cores this process may use (a cpuset, taskset), not the
	 * machine's, and no more than a CPU quota (docker --cpus, Kubernetes
	 * limits) lets it run at once. */
	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		n = CPU_COUNT(&set);
	if (quota > 0 && (n < 1 || quota < n))
		n = quota;
	if (n < 1)
		n = 1;
	return n > HTTP_MAX_THREADS ? HTTP_MAX_THREADS : (unsigned)n;
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

	if ((rv = deadline_start(gw)) != 0)
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
	deadline_halt(gw);
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
	deadline_free(gw);
}
