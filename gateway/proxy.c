/*
 * proxy.c — requests under a MAGNETAR_UPSTREAMS prefix passed on to the
 * app's own service (docs/apps.md), after every stage of the pipeline has
 * run on them: the rate limits, CORS, the route's policy (authenticate.c),
 * and on the way out the gateway's own security headers. This file holds
 * the route rows and the libmicrohttpd side of an exchange: starting it,
 * feeding it the client's body, answering with the upstream's head and
 * streaming its body (the design is in proxy.h).
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "common/sandbox.h"
#include "gateway/gateway.h"
#include "gateway/proxy.h"
#include "gateway/upstream.h"

/* ---- the routes --------------------------------------------------------------- */

/* MAGNETAR_UPSTREAMS as read before the sandbox closed (its file, its host
 * names), until proxy_routes_init adopts it. */
static struct {
	int rv;
	char err[512];
	struct upstream_set set;
} proxy_pending;

int proxy_prepare(const char *value, struct sandbox_rules *rules)
{
	int rv = 0;

	if (value == NULL)
		return 0;
	proxy_pending.rv = upstreams_parse(value, &proxy_pending.set, proxy_pending.err,
	                                   sizeof(proxy_pending.err));
	for (size_t i = 0; i < proxy_pending.set.n; i++) {
		const struct upstream *u = &proxy_pending.set.u[i];
		if (u->addr.ss_family == AF_INET)
			rv |= sandbox_allow_connect(
			    rules, ntohs(((const struct sockaddr_in *)&u->addr)->sin_port));
		else if (u->addr.ss_family == AF_INET6)
			rv |= sandbox_allow_connect(
			    rules, ntohs(((const struct sockaddr_in6 *)&u->addr)->sin6_port));
	}
	return rv;
}

int proxy_routes_init(struct gateway *gw, char *err, size_t errlen)
{
	struct proxy_route *r;

	if (proxy_pending.rv != 0) {
		snprintf(err, errlen, "%s", proxy_pending.err);
		return proxy_pending.rv;
	}
	if (proxy_pending.set.n == 0)
		return 0;
	gw->upstreams = proxy_pending.set;
	memset(&proxy_pending.set, 0, sizeof(proxy_pending.set));
	if ((r = calloc(gw->upstreams.n, sizeof(*r))) == NULL) {
		upstreams_free(&gw->upstreams);
		return ERR_NOMEM;
	}
	for (size_t i = 0; i < gw->upstreams.n; i++) {
		const struct upstream *u = &gw->upstreams.u[i];
		r[i].up = u;
		r[i].route = (struct route){
		    .path = u->prefix[0] != '\0' ? u->prefix : "/",
		    .methods = HTTP_M_GET | HTTP_M_POST | HTTP_M_PUT | HTTP_M_PATCH |
		               HTTP_M_DELETE | HTTP_M_OPTIONS,
		    .handler = proxy_handle,
		    /* LIVE: the revoked set when it is provably current, else
		     * auth asked: an upstream trusts what the headers say. */
		    .auth = u->policy == UPSTREAM_PUBLIC ? ROUTE_AUTH_NONE : ROUTE_AUTH_LIVE,
		    .flags = ROUTE_F_PROXY,
		    .role = u->policy == UPSTREAM_ROLE ? u->role : NULL,
		    .step_up_s = u->policy == UPSTREAM_STEP_UP ? u->step_up_s : 0,
		    /* A step-up's time is auth's to say: asked on every request. */
		    .confirm = u->policy == UPSTREAM_STEP_UP ? ~0u : 0,
		};
		log_info("proxy: %s -> %s policy=%s%s%s timeout=%us max_body=%llu", r[i].route.path,
		         u->name,
		         u->policy == UPSTREAM_PUBLIC          ? "public"
		         : u->policy == UPSTREAM_AUTHENTICATED ? "authenticated"
		         : u->policy == UPSTREAM_ROLE          ? "role="
		                                               : "step-up",
		         u->policy == UPSTREAM_ROLE ? u->role : "", u->token ? " token" : "",
		         u->timeout_s, (unsigned long long)u->max_body);
	}
	gw->upstream_routes = &r[0].route;
	return 0;
}

void proxy_routes_free(struct gateway *gw)
{
	free(gw->upstream_routes);
	gw->upstream_routes = NULL;
	upstreams_free(&gw->upstreams);
}

const struct route *proxy_route_find(const struct gateway *gw, const char *path)
{
	const struct upstream *u = upstreams_match(&gw->upstreams, path);
	const struct proxy_route *r = (const struct proxy_route *)gw->upstream_routes;

	return u == NULL ? NULL : &r[u - gw->upstreams.u].route;
}

static const struct upstream *proxy_upstream_of(const struct route *route)
{
	return ((const struct proxy_route *)route)->up;
}

uint64_t proxy_max_body(const struct route *route)
{
	return proxy_upstream_of(route)->max_body;
}

bool proxy_public(const struct route *route)
{
	return proxy_upstream_of(route)->policy == UPSTREAM_PUBLIC;
}

/* ---- the exchange's life ------------------------------------------------------------ */

void proxy_unref_locked(struct proxy *p)
{
	if (--p->refs > 0) {
		pthread_mutex_unlock(&p->mu);
		return;
	}
	pthread_mutex_unlock(&p->mu);
	pthread_mutex_destroy(&p->mu);
	if (p->efd >= 0)
		close(p->efd);
	free(p->head);
	free(p->out);
	free(p->in);
	free(p->hbuf);
	free(p);
	atomic_fetch_sub(&proxy_alive, 1);
}

void proxy_unref(struct proxy *p)
{
	pthread_mutex_lock(&p->mu);
	proxy_unref_locked(p);
}

void proxy_wake(struct proxy *p)
{
	uint64_t one = 1;
	ssize_t n = write(p->efd, &one, sizeof(one));
	(void)n; /* a full counter wakes the thread anyway */
}

/* Under p->mu: what the suspended MHD side waits for has come. */
bool proxy_ready_for(const struct proxy *p, enum proxy_wait w)
{
	switch (w) {
	case PROXY_WAIT_SPACE:
		return p->up_shut || p->thread_done ||
		       PROXY_BUF - p->out_len >= PROXY_CHUNK_OVERHEAD + 1;
	case PROXY_WAIT_HEAD:
		return p->head_ready || p->fail_status != 0 || p->thread_done;
	case PROXY_WAIT_DATA:
		return p->in_len > p->in_off || p->resp_end || p->resp_error || p->thread_done;
	case PROXY_WAIT_NONE:
		break;
	}
	return true;
}

/* Under p->mu, on the thread: resumes the connection when what it waits
 * for has come. The lock is let go around the resume, so that no lock of
 * libmicrohttpd's is ever taken under ours from this side. The connection
 * stays valid meanwhile: MHD completes no suspended request. */
void proxy_kick(struct proxy *p)
{
	if (p->wait == PROXY_WAIT_NONE || !proxy_ready_for(p, p->wait))
		return;
	p->wait = PROXY_WAIT_NONE;
	pthread_mutex_unlock(&p->mu);
	MHD_resume_connection(p->conn);
	atomic_fetch_sub(&p->gw->suspended, 1); /* after the resume, as rpcbridge.c */
	pthread_mutex_lock(&p->mu);
}

/* Under p->mu, on an MHD thread: suspends until `w` (false when the
 * gateway is stopping: the caller gives up instead). */
static bool proxy_suspend(struct proxy *p, enum proxy_wait w)
{
	atomic_fetch_add(&p->gw->suspended, 1);
	if (atomic_load(&p->gw->stopping)) {
		atomic_fetch_sub(&p->gw->suspended, 1);
		return false;
	}
	p->wait = w;
	MHD_suspend_connection(p->conn);
	return true;
}

void proxy_fail(struct proxy *p, unsigned status, const char *code, const char *message)
{
	if (p->head_ready || p->fail_status != 0)
		return;
	p->fail_status = status;
	p->fail_code = code;
	p->fail_message = message;
}

/* ---- the MHD side ------------------------------------------------------------------- */

static struct proxy *proxy_of(struct http_request *req)
{
	return req->proxy;
}

void proxy_release(struct http_request *req)
{
	struct proxy *p = req->proxy;

	if (p == NULL)
		return;
	req->proxy = NULL;
	pthread_mutex_lock(&p->mu);
	/* The request is over: an exchange still running has no one to
	 * answer (a client gone mid-body, or before its 101 was sent); the
	 * thread gives up. libmicrohttpd completes an upgraded request only
	 * after its upgrade handler has run, so a 101 response whose handler
	 * has not run by now never will: its reference is dropped here. */
	if (!p->ws_ready)
		p->stop_asked = true;
	if (p->upgrade_ref) {
		p->upgrade_ref = false;
		p->refs--; /* the request's own reference is still held below */
	}
	proxy_wake(p);
	proxy_unref_locked(p);
}

int proxy_handle(struct http_request *req)
{
	const struct upstream *u = proxy_upstream_of(req->route);
	struct proxy *p;
	int rv;

	if (req->raw_target == NULL)
		return ERR_NOMEM;
	if (!upstream_target_safe(req->raw_target, strlen(req->raw_target)))
		return respond_error(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
		                     "The path may not hold dot segments, empty segments, "
		                     "backslashes, encoded slashes, dots or control bytes, "
		                     "or raw bytes outside printable ASCII.");
	if (upstreams_ambiguous(&req->gw->upstreams, req->path, u))
		return respond_error(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
		                     "The path could be read as one under another prefix "
		                     "(a ';', a '.' suffix, trailing dots or blanks).");
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return ERR_NOMEM;
	atomic_fetch_add(&proxy_alive, 1);
	pthread_mutex_init(&p->mu, NULL);
	p->refs = 1; /* the request's */
	p->gw = req->gw;
	p->conn = req->conn;
	p->up = u;
	p->efd = -1;
	p->head_request = req->method == HTTP_M_HEAD;
	netaddr_rate_key(&req->client, &p->client);
	if (req->auth != NULL)
		memcpy(p->sid, req->auth->claims.sid, sizeof(p->sid));
	req->proxy = p;
	/* The buffers apart, each below malloc's mmap threshold and never
	 * zeroed: a 150 KiB calloc per request was a sixth of the gateway's
	 * time (perf: memset and page faults). */
	p->out = malloc(PROXY_BUF);
	p->in = malloc(PROXY_BUF);
	p->hbuf = malloc(UPSTREAM_HEAD_MAX);
	if (p->out == NULL || p->in == NULL || p->hbuf == NULL ||
	    (p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
		return ERR_NOMEM;
	if ((rv = proxy_build_head(req, p, req->raw_target)) != 0)
		return rv;
	if (proxy_thread_start(p) != 0)
		return respond_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "service_unavailable",
		                     "Too many requests are being proxied (for you, or in all); "
		                     "try again.");
	req->phase = HTTP_PHASE_PROXY;
	if (req->has_body && !req->body_done)
		return 0; /* the body comes in MHD's next calls (proxy_access) */
	pthread_mutex_lock(&p->mu);
	p->body_end = true;
	proxy_wake(p);
	pthread_mutex_unlock(&p->mu);
	return proxy_access(req, NULL, NULL);
}

/* ---- the answer ------------------------------------------------------------------------ */

static ssize_t proxy_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct proxy *p = cls;
	ssize_t n;
	(void)pos;

	pthread_mutex_lock(&p->mu);
	if (p->in_len > p->in_off) {
		size_t k = p->in_len - p->in_off;
		if (k > max)
			k = max;
		memcpy(buf, p->in + p->in_off, k);
		if ((p->in_off += k) == p->in_len)
			p->in_len = p->in_off = 0;
		proxy_wake(p); /* room for the thread */
		n = (ssize_t)k;
	} else if (p->resp_end)
		n = MHD_CONTENT_READER_END_OF_STREAM;
	else if (p->resp_error || p->thread_done || !proxy_suspend(p, PROXY_WAIT_DATA))
		n = MHD_CONTENT_READER_END_WITH_ERROR; /* the client's connection closes */
	else
		n = 0; /* suspended: resumed when bytes come */
	pthread_mutex_unlock(&p->mu);
	return n;
}

static void proxy_read_done(void *cls)
{
	proxy_unref(cls);
}

/* The response's reference, when the response never came to be. */
static void proxy_answer_dropped(struct proxy *p)
{
	pthread_mutex_lock(&p->mu);
	p->upgrade_ref = false;
	proxy_unref_locked(p); /* not the last: the request holds one */
}

/* A response built and not sent: a callback response's destruction drops
 * its reference itself, an upgrade response's does not. */
static void proxy_destroy_answer(struct proxy *p, struct MHD_Response *resp)
{
	bool upgrade = p->rh.status == 101;
	MHD_destroy_response(resp);
	if (upgrade)
		proxy_answer_dropped(p);
}

/* The upstream's answer for the client; 0 with it queued, or ERR_*. */
static int proxy_answer(struct http_request *req, struct proxy *p)
{
	struct MHD_Response *resp;
	bool public_route = proxy_public(req->route);
	char name[256], value[8192];

	if (p->fail_status != 0)
		return respond_error(req, p->fail_status, p->fail_code, p->fail_message);
	/* The response's reference, taken before it exists: destroying a
	 * callback response drops it (proxy_read_done), an upgrade response
	 * has no such callback (proxy_upgraded or proxy_release drop it). */
	pthread_mutex_lock(&p->mu);
	p->refs++;
	p->upgrade_ref = p->rh.status == 101;
	pthread_mutex_unlock(&p->mu);
	if (p->rh.status == 101) {
		resp = MHD_create_response_for_upgrade(proxy_upgraded, p);
	} else {
		/* A bodiless answer says the length the upstream gave, or none:
		 * never a Content-Length of 0 for a 304 or a HEAD that has not
		 * got one (RFC 9110 8.6). */
		bool bodiless = p->head_request || p->rh.status == 304;
		uint64_t size = p->rh.body == UPSTREAM_BODY_LENGTH             ? p->rh.length
		                : bodiless && p->rh.has_length                 ? p->rh.length
		                : bodiless || p->rh.body != UPSTREAM_BODY_NONE ? MHD_SIZE_UNKNOWN
		                                                               : 0;
		resp = MHD_create_response_from_callback(size, 32u << 10, proxy_read, p,
		                                         proxy_read_done);
		/* libmicrohttpd 0.9.75 writes a chunked body's last chunk even
		 * for HEAD: a bodiless answer of unknown length is framed
		 * HTTP/1.0's way instead (no chunks; the connection closes). */
		if (resp != NULL && bodiless && size == MHD_SIZE_UNKNOWN)
			(void)MHD_set_response_options(resp, MHD_RF_HTTP_1_0_COMPATIBLE_STRICT,
			                               MHD_RO_END);
	}
	if (resp == NULL) {
		proxy_answer_dropped(p);
		return ERR_NOMEM;
	}
	for (size_t i = 0; i < p->rh.n; i++) {
		const struct upstream_field *f = &p->rh.h[i];
		if (proxy_drop_response_header(p, f, public_route))
			continue;
		if (f->value_len == 0)
			continue; /* legal, but libmicrohttpd takes no empty value */
		if (f->name_len >= sizeof(name) || f->value_len >= sizeof(value)) {
			proxy_destroy_answer(p, resp);
			return respond_error(req, MHD_HTTP_BAD_GATEWAY, "bad_gateway",
			                     "The upstream sent a header too large to pass on.");
		}
		memcpy(name, f->name, f->name_len);
		name[f->name_len] = '\0';
		memcpy(value, f->value, f->value_len);
		value[f->value_len] = '\0';
		if (MHD_add_response_header(resp, name, value) != MHD_YES) {
			proxy_destroy_answer(p, resp);
			return respond_error(
			    req, MHD_HTTP_BAD_GATEWAY, "bad_gateway",
			    "The upstream sent a header that cannot be passed on.");
		}
	}
	req->keep_cache_control = public_route && MHD_get_response_header(resp, "Cache-Control");
	return http_queue(req, p->rh.status, resp);
}

int proxy_access(struct http_request *req, const char *data, size_t *size)
{
	struct proxy *p = proxy_of(req);
	int rv;

	pthread_mutex_lock(&p->mu);
	if (size != NULL && *size != 0) {
		/* A piece of the client's body. */
		size_t room = PROXY_BUF - p->out_len, k = *size;
		p->body_seen += *size;
		if (p->body_seen > p->up->max_body) {
			p->too_large = true;
			p->up_shut = true; /* the upstream gets nothing more; the thread ends it */
			p->stop_asked = true;
			proxy_wake(p);
			*size = 0;
			rv = p->body_seen > p->up->max_body + req->gw->limits.max_drain ? HTTP_CLOSE
			                                                                : 0;
			pthread_mutex_unlock(&p->mu);
			return rv;
		}
		if (p->up_shut || p->thread_done) {
			*size = 0; /* nobody reads it: drained */
			pthread_mutex_unlock(&p->mu);
			return 0;
		}
		if (p->chunked_out)
			k = room > PROXY_CHUNK_OVERHEAD ? room - PROXY_CHUNK_OVERHEAD : 0;
		else
			k = room;
		if (k > *size)
			k = *size;
		if (k > 0) {
			if (p->chunked_out)
				p->out_len +=
				    (size_t)snprintf(p->out + p->out_len, room, "%zx\r\n", k);
			memcpy(p->out + p->out_len, data, k);
			p->out_len += k;
			if (p->chunked_out) {
				memcpy(p->out + p->out_len, "\r\n", 2);
				p->out_len += 2;
			}
			proxy_wake(p);
		}
		p->body_seen -= *size - k; /* counted again when MHD offers it anew */
		*size -= k;
		if (*size > 0 && !proxy_suspend(p, PROXY_WAIT_SPACE))
			rv = HTTP_CLOSE;
		else
			rv = 0;
		pthread_mutex_unlock(&p->mu);
		return rv;
	}
	if (p->too_large) {
		pthread_mutex_unlock(&p->mu);
		pipeline_refuse(req, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
		                "The request body is too large.");
		return 0;
	}
	if (!p->body_end) {
		/* MHD's last call: the body is whole. */
		if (p->chunked_out && !p->up_shut && !p->thread_done) {
			if (PROXY_BUF - p->out_len < 5 && !proxy_suspend(p, PROXY_WAIT_SPACE)) {
				pthread_mutex_unlock(&p->mu);
				return HTTP_CLOSE;
			}
			if (PROXY_BUF - p->out_len < 5) {
				pthread_mutex_unlock(&p->mu);
				return 0; /* called again once there is room */
			}
			memcpy(p->out + p->out_len, "0\r\n\r\n", 5);
			p->out_len += 5;
		}
		p->body_end = true;
		proxy_wake(p);
	}
	if (!proxy_ready_for(p, PROXY_WAIT_HEAD)) {
		rv = proxy_suspend(p, PROXY_WAIT_HEAD) ? 0 : HTTP_CLOSE;
		pthread_mutex_unlock(&p->mu);
		return rv;
	}
	pthread_mutex_unlock(&p->mu);
	/* The head is in and the thread no longer changes it. */
	return proxy_answer(req, p);
}

/* MHD_UpgradeHandler: the client's socket, once the 101 has left. */
void proxy_upgraded(void *cls, struct MHD_Connection *conn, void *req_cls, const char *extra_in,
                    size_t extra_in_size, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
	struct proxy *p = cls;
	bool refuse;
	(void)conn;
	(void)req_cls;

	pthread_mutex_lock(&p->mu);
	p->upgrade_ref = false; /* this call's reference, dropped below */
	refuse = p->thread_done || extra_in_size > PROXY_BUF - p->out_len;
	if (!refuse) {
		memcpy(p->out + p->out_len, extra_in, extra_in_size);
		p->out_len += extra_in_size;
		p->cfd = sock;
		p->urh = urh;
		p->ws_ready = true;
		proxy_wake(p);
	}
	pthread_mutex_unlock(&p->mu);
	if (refuse)
		MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE); /* no lock of ours held */
	proxy_unref(p);
}
