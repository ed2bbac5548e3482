/*
 * pipeline.c — the life of one request, as one ordered table of stages. A
 * reader follows any request through the gateway here, top to bottom:
 *
 *   framing    target, headers and framing within limits; route, client, Origin  (framing.c)
 *   ratelimit  the client's token buckets, before any body byte is read      (rate.c)
 *   body       the body collected up to its limit, under its deadline        (body.c)
 *   cors       a preflight answered                                          (cors.c)
 *   authn      the Bearer token verified; auth asked where the route says    (authenticate.c)
 *   idem       an Idempotency-Key claimed, or its answer replayed            (idem.c)
 *   route      404, 405, or the route's handler (which may suspend on RPCs)  (dispatch.c)
 *   decorate   on the way out: X-Request-Id, security and CORS headers      (decorate.c)
 *
 * Every answer, whoever gives it and whatever its status, leaves by one path:
 * recorded (respond.c's http_queue), then sent by the driver once the stage
 * or resume function returns (pipeline_send), back out through the
 * `answered` hooks in reverse order: decorate's on every answer, idem's
 * (the answer kept for a replay) when its stage asked. Once the response
 * has left, http.c's completion writes the access-log line (accesslog.c).
 *
 * A stage returns NEXT, WAIT (MHD's next call brings more of the body),
 * REFUSED (pipeline_refuse noted the error; it is answered here as soon as
 * libmicrohttpd allows) or DONE (answered, or suspended on RPCs). No stage
 * calls another. A resume function returns HTTP_NEXT when its stage is done
 * and the request goes on (authenticate.c's confirmation round).
 *
 * libmicrohttpd calls the access handler several times per request. The
 * first call has the headers: answering there makes 0.9.75 close the
 * connection, so a refusal waits for the last call unless a body was
 * announced (then MHD reads none of it, and closes). Middle calls carry the
 * body. A response may be queued only on the first or the last call, so an
 * error found in the middle of a body waits for its end (or hangs up).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "gateway/gateway.h"

struct stage {
	const char *name;
	enum stage_rv (*run)(struct http_request *req);
	/* On every answer, in reverse table order; 0 or ERR_NOMEM. */
	int (*answered)(struct http_request *req, unsigned status, struct MHD_Response *resp);
};

/* clang-format off */
static const struct stage pipeline_stages[] = {
	/* name         on the way in        on the way out */
	{"framing",   framing_stage,      NULL},
	{"ratelimit", ratelimit_stage,    NULL},
	{"body",      body_stage,         NULL},
	{"cors",      cors_stage,         NULL},
	{"authn",     authenticate_stage, NULL},
	{"idem",      idem_stage,         idem_answered},
	{"route",     dispatch_stage,     NULL},
	{"decorate",  NULL,               decorate_answered},
};
/* clang-format on */

#define PIPELINE_STAGES (sizeof(pipeline_stages) / sizeof(pipeline_stages[0]))
#define PIPELINE_BODY 2 /* the stage that waits for the last call */

const char *pipeline_stage_name(unsigned i)
{
	return i < PIPELINE_STAGES ? pipeline_stages[i].name : "answered";
}

void pipeline_refuse(struct http_request *req, unsigned status, const char *code,
                     const char *message)
{
	req->err_status = status;
	req->err_code = code;
	req->err_message = message;
}

/* ---- the one answer path ---------------------------------------------------- */

static enum MHD_Result pipeline_answer_internal(struct http_request *req, int rv);

void pipeline_want_answered(struct http_request *req)
{
	req->hooks |= 1u << req->stage;
}

/* The recorded answer (respond.c's http_queue), back out through the hooks
 * in reverse table order (decorate's always, a stage's when it asked),
 * then to MHD. */
static enum MHD_Result pipeline_send(struct http_request *req)
{
	struct MHD_Response *resp = req->answer;
	int rv = 0;

	req->answer = NULL;
	for (size_t i = PIPELINE_STAGES; i-- > 0 && rv == 0 && !req->answer_shared;)
		if (pipeline_stages[i].answered != NULL &&
		    (pipeline_stages[i].run == NULL || (req->hooks & (1u << i)) != 0))
			rv = pipeline_stages[i].answered(req, req->status, resp);
	if (rv == 0 && MHD_queue_response(req->conn, req->status, resp) != MHD_YES)
		rv = ERR_INTERNAL;
	if (rv == 0 && req->answer_keep != NULL)
		*req->answer_keep = resp; /* decorated: the connection re-uses it */
	else if (!req->answer_shared)
		MHD_destroy_response(resp); /* the connection holds its own reference */
	req->answer_keep = NULL;
	if (rv == 0) {
		req->phase = HTTP_PHASE_DONE;
		return MHD_YES;
	}
	req->status = 0;
	return pipeline_answer_internal(req, rv);
}

/* A stage's refusal. A request whose body was not read, or that sent too
 * much, is not one to keep talking to: close after a 413 or 400. */
static enum MHD_Result pipeline_answer_refusal(struct http_request *req)
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
	if (http_queue(req, req->err_status, resp) != 0)
		return MHD_NO;
	return pipeline_send(req);
}

/* A stage or handler that failed without answering still gets an answer,
 * once: when that cannot be sent either, the connection is dropped. */
static enum MHD_Result pipeline_answer_internal(struct http_request *req, int rv)
{
	log_warnx("http: %s failed: %s request_id=%s", pipeline_stage_name(req->stage),
	          err_str(rv != 0 ? rv : ERR_INTERNAL), req->id);
	if (req->failed)
		return MHD_NO;
	req->failed = true;
	if (respond_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "Internal error.") != 0)
		return MHD_NO; /* not even that: drop the connection */
	return pipeline_send(req);
}

/* ---- the driver ----------------------------------------------------------- */

/* After proxy.c has run (its handler, or a later call): an answer it
 * recorded, a refusal it noted, a closed connection, or nothing yet. */
static enum MHD_Result pipeline_proxied(struct http_request *req, int rv)
{
	if (req->answer != NULL)
		return pipeline_send(req);
	if (rv == HTTP_CLOSE)
		return MHD_NO;
	if (rv != 0)
		return pipeline_answer_internal(req, rv);
	if (req->err_status != 0)
		return pipeline_answer_refusal(req);
	return MHD_YES; /* suspended, or more body to come */
}

/* Runs the stages from req->stage on. `first`: this is MHD's first call. */
static enum MHD_Result pipeline_run(struct http_request *req, bool first)
{
	while (req->stage < PIPELINE_STAGES && pipeline_stages[req->stage].run != NULL) {
		/* Nothing to read and nothing to answer until MHD's last call. */
		if (req->stage == PIPELINE_BODY && first && !req->has_body)
			return MHD_YES;
		switch (pipeline_stages[req->stage].run(req)) {
		case STAGE_NEXT:
			req->stage++;
			continue;
		case STAGE_WAIT:
			return MHD_YES;
		case STAGE_REFUSED:
			if (first && !req->has_body) {
				/* Answered on the last call, so the connection stays. */
				req->stage = PIPELINE_BODY;
				return MHD_YES;
			}
			return pipeline_answer_refusal(req);
		case STAGE_DONE:
			if (req->answer != NULL)
				return pipeline_send(req);
			if (req->phase == HTTP_PHASE_SUSPENDED || req->phase == HTTP_PHASE_PROXY)
				return pipeline_proxied(req, req->stage_error);
			return pipeline_answer_internal(req, req->stage_error);
		case STAGE_CLOSE:
			return MHD_NO;
		}
	}
	return pipeline_answer_internal(req, ERR_INTERNAL); /* no stage answered */
}

/* The RPCs of a suspended request are in: its resume function goes on. */
static enum MHD_Result pipeline_resumed(struct http_request *req)
{
	int rv;

	req->phase = HTTP_PHASE_BODY; /* running again; a new round suspends anew */
	rv = req->resume(req);
	if (req->answer != NULL)
		return pipeline_send(req);
	if (req->phase == HTTP_PHASE_SUSPENDED)
		return MHD_YES;
	if (rv == HTTP_NEXT) {
		req->stage++;
		return pipeline_run(req, false);
	}
	return pipeline_answer_internal(req, rv);
}

/* http_uri_log had no memory for the request's state: a 503 built on a
 * state that lives for this call only (the completion sees none). */
static enum MHD_Result pipeline_answer_stateless(struct gateway *gw, struct MHD_Connection *conn)
{
	struct http_request tmp;

	memset(&tmp, 0, sizeof(tmp));
	tmp.gw = gw;
	tmp.conn = conn;
	http_request_id(gw, tmp.id);
	log_warnx("http: no memory for a request request_id=%s", tmp.id);
	tmp.failed = true; /* no second try */
	if (respond_error(&tmp, MHD_HTTP_SERVICE_UNAVAILABLE, "service_unavailable",
	                  "Out of memory; try again later.") != 0)
		return MHD_NO; /* not even that: drop the connection */
	return pipeline_send(&tmp);
}

enum MHD_Result pipeline_access(void *cls, struct MHD_Connection *conn, const char *url,
                                const char *method, const char *version, const char *upload_data,
                                size_t *upload_data_size, void **req_cls)
{
	struct http_request *req = *req_cls;

	if (req == NULL)
		return pipeline_answer_stateless((struct gateway *)cls, conn);
	switch (req->phase) {
	case HTTP_PHASE_NEW:
		req->path = url;
		req->method_name = method;
		req->http11 = version != NULL && strcmp(version, MHD_HTTP_VERSION_1_1) == 0;
		req->phase = HTTP_PHASE_BODY;
		return pipeline_run(req, true);
	case HTTP_PHASE_BODY:
		if (*upload_data_size != 0) {
			size_t len = *upload_data_size;
			*upload_data_size = 0;
			return body_feed(req, upload_data, len);
		}
		req->body_done = true; /* the last call */
		return pipeline_run(req, false);
	case HTTP_PHASE_SUSPENDED:
		return pipeline_resumed(req);
	case HTTP_PHASE_PROXY:
		return pipeline_proxied(req, proxy_access(req, upload_data, upload_data_size));
	case HTTP_PHASE_DONE:
		break;
	}
	/* A response is queued, so MHD should not call again: a broken invariant,
	 * closed rather than left hanging. */
	log_warnx("http: access handler called after the answer request_id=%s", req->id);
	return MHD_NO;
}
