/*
 * authenticate.c — the authentication stage: what a route's row asks of its
 * caller (struct route.auth, .confirm, ROUTE_F_STEP_UP, ROUTE_F_ADMIN) is
 * checked here, once, before any handler runs; handlers read req->auth
 * (and req->me when auth was asked). The checks themselves are authn.c's:
 * the Bearer token verified locally against auth's keys and the revoked
 * set, the session's risk scored. Auth is asked for the session's current
 * state (one Me RPC) when the row says so for the method (opening a shell,
 * reading the audit log), or when the route rests on the revoked set alone
 * and that set is not provably current (authn_set_current).
 */
#include <stdlib.h>
#include <string.h>

#include "auth.pb-c.h"
#include "common/clock.h"
#include "common/err.h"
#include "gateway/gateway.h"

/* The admin routes: the role as auth has it now when it was asked, else
 * as the token says. */
static bool authenticate_role_ok(struct http_request *req)
{
	const char *role = req->me != NULL ? req->me->user->role : req->auth->claims.role;
	const struct route *r = req->route;

	if (r->role != NULL && upstream_role_rank(role) < upstream_role_rank(r->role)) {
		req->stage_error = respond_error(req, MHD_HTTP_FORBIDDEN, "forbidden",
		                                 "Your role may not use this resource.");
		return false;
	}
	if ((r->flags & ROUTE_F_ADMIN) == 0 || strcmp(role, "admin") == 0 ||
	    strcmp(role, "founder") == 0)
		return true;
	req->stage_error = respond_error(req, MHD_HTTP_FORBIDDEN, "forbidden",
	                                 "This needs the admin or founder role.");
	return false;
}

/* A route that wants a recent step-up (an upstream's step-up policy): the
 * session's last one, as auth has it, within the route's window. */
static bool authenticate_step_up_ok(struct http_request *req)
{
	const Magnetar__Session *s = req->me->session;
	uint64_t window_ms = (uint64_t)req->route->step_up_s * 1000;

	if (req->route->step_up_s == 0 || (s != NULL && s->stepped_up_at_ms != 0 &&
	                                   s->stepped_up_at_ms + window_ms >= clock_unix_ms()))
		return true;
	req->stage_error = respond_error(req, MHD_HTTP_UNAUTHORIZED, "step_up_required",
	                                 "This resource needs a recent step-up: "
	                                 "POST /api/v1/auth/step-up, then try again.");
	return false;
}

/* Auth's answer to Me: the session lives (then kept in req->auth, so
 * the handler's own RPCs start again at slot 0), or it has been answered. */
static int authenticate_confirmed(struct http_request *req)
{
	const Magnetar__MeReply *me = authn_confirmed(req);

	if (me == NULL)
		return 0; /* answered: 401, or auth's error */
	req->auth->confirmed = req->rpc[0].result;
	memset(&req->rpc[0], 0, sizeof(req->rpc[0]));
	req->me = me;
	return authenticate_role_ok(req) && authenticate_step_up_ok(req) ? HTTP_NEXT : 0;
}

enum stage_rv authenticate_stage(struct http_request *req)
{
	const struct route *r = req->route;
	unsigned get_or_head;
	bool confirm;

	if (!req->allowed || r->auth == ROUTE_AUTH_NONE)
		return STAGE_NEXT; /* the route stage answers 404 or 405 */
	/* The WebSocket's credential is its ticket; a token, when sent anyway,
	 * must be valid and is checked like any other. */
	if (r->auth == ROUTE_AUTH_TICKET &&
	    MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
	                                MHD_HTTP_HEADER_AUTHORIZATION) == NULL)
		return STAGE_NEXT;
	if ((req->auth = calloc(1, sizeof(*req->auth))) == NULL) {
		req->stage_error = ERR_NOMEM;
		return STAGE_DONE;
	}
	if (authn_require_flags(req, &req->auth->claims,
	                        (r->flags & ROUTE_F_STEP_UP) != 0 ? AUTHN_ALLOW_STEP_UP : 0) != 0) {
		free(req->auth); /* handlers see a caller only once verified */
		req->auth = NULL;
		return STAGE_DONE; /* answered 401 */
	}
	if (!authenticate_role_ok(req))
		return STAGE_DONE; /* by the token's role: no need to ask auth */
	/* HEAD is answered as GET (headers and all, Content-Length included):
	 * whatever a GET must confirm, so must a HEAD. */
	get_or_head = req->method == HTTP_M_HEAD ? HTTP_M_GET : req->method;
	confirm = (r->confirm & get_or_head) != 0 ||
	          (r->auth != ROUTE_AUTH_TOKEN && !authn_set_current(req->gw));
	if (!confirm)
		return STAGE_NEXT;
	req->stage_error = authn_confirm(req, &req->auth->claims, authenticate_confirmed);
	return STAGE_DONE;
}
