/*
 * rpcbridge.c — answering after RPCs without blocking a libmicrohttpd
 * thread: a handler suspends its connection (http_async_begin), starts up
 * to HTTP_RPC_SLOTS calls, and the last call's completion, on an nng thread,
 * resumes it; the resume function then runs on an MHD thread with every
 * outcome in req->rpc[]. Each call carries the request's context (id,
 * client, user agent, actor) and its deadline.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/err.h"
#include "gateway/gateway.h"

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
	if (atomic_load(&gw->stopping)) {
		atomic_fetch_sub(&gw->suspended, 1);
		return ERR_CLOSED;
	}
	if (req->rpc == NULL && (req->rpc = calloc(HTTP_RPC_SLOTS, sizeof(*req->rpc))) == NULL) {
		atomic_fetch_sub(&gw->suspended, 1);
		return ERR_NOMEM;
	}
	req->resume = done;
	req->rounds++;
	atomic_store(&req->pending, 1); /* the guard, dropped by http_async_end */
	req->phase = HTTP_PHASE_SUSPENDED;
	/* Suspended before any RPC starts, so a callback may resume at once. */
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

	rpc_result_fini(&s->result); /* an earlier round's outcome in this slot */
	memset(&s->result, 0, sizeof(s->result));
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
