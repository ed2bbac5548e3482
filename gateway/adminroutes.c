/*
 * adminroutes.c — the administrators' routes (docs/api.md "Users" and "Audit"):
 * role admin or founder (ROUTE_F_ADMIN: checked by the authentication stage
 * from the verified token) and checked again by auth, on that same token,
 * for the user methods. Audit queries go to magnetar-audit's AuditLog
 * service, decrypted there; their rows make the authentication stage ask
 * auth first (.confirm), since the gateway's revoked set may be behind, and
 * then the role is auth's view of the user, not the token's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.pb-c.h"
#include "auth.pb-c.h"
#include "common/err.h"
#include "common/jwt.h"
#include "gateway/gateway.h"

#define ADMIN_HASHING_TIMEOUT_MS 10000

static int admin_call(struct http_request *req, struct rpc_client *client,
                      const ProtobufCServiceDescriptor *desc, const char *method,
                      const ProtobufCMessage *in, http_resume_fn done)
{
	int rv;
	if ((rv = http_async_begin(req, done)) != 0)
		return http_async_refused(req, rv);
	http_async_call(req, 0, client, desc, method, in);
	http_async_end(req);
	return 0;
}

static json_t *admin_user(const Magnetar__User *u)
{
	char created[32];
	respond_time(u->created_at_ms, created);
	return json_pack("{s:s, s:s, s:s, s:b, s:b, s:s}", "id", u->id, "username", u->username,
	                 "role", u->role, "terminal", u->terminal, "totp_enabled", u->totp_enabled,
	                 "created_at", created);
}

static int admin_users_done(struct http_request *req)
{
	const struct rpc_result *r = &req->rpc[0].result;
	const Magnetar__UsersReply *list = (const Magnetar__UsersReply *)r->output;
	json_t *arr;

	if (r->status != MAGNETAR__STATUS__STATUS_OK)
		return respond_rpc_error(req, r);
	if ((arr = json_array()) == NULL)
		return ERR_NOMEM;
	for (size_t i = 0; i < list->n_users; i++)
		if (json_array_append_new(arr, admin_user(list->users[i])) != 0) {
			json_decref(arr);
			return ERR_NOMEM;
		}
	return respond_json(req, MHD_HTTP_OK, json_pack("{s:o}", "users", arr));
}

static int admin_created_done(struct http_request *req)
{
	const struct rpc_result *r = &req->rpc[0].result;
	if (r->status != MAGNETAR__STATUS__STATUS_OK)
		return respond_rpc_error(req, r);
	return respond_json(
	    req, MHD_HTTP_CREATED,
	    json_pack("{s:o}", "user",
	              admin_user(((const Magnetar__RegisterReply *)r->output)->user)));
}

static int admin_empty_done(struct http_request *req)
{
	const struct rpc_result *r = &req->rpc[0].result;
	if (r->status != MAGNETAR__STATUS__STATUS_OK)
		return respond_rpc_error(req, r);
	return respond_no_content(req);
}

/* GET /api/v1/users and POST /api/v1/users share one path. */
int adminroutes_users(struct http_request *req)
{
	Magnetar__SessionRef caller = MAGNETAR__SESSION_REF__INIT;

	caller.user_id = req->auth->claims.sub;
	caller.session_id = req->auth->claims.sid;
	if (req->method == HTTP_M_POST) {
		Magnetar__CreateUserRequest in = MAGNETAR__CREATE_USER_REQUEST__INIT;
		json_t *root = body_json(req);
		json_error_t err;
		int rv;
		if (root == NULL)
			return 0;
		if (json_unpack_ex(root, &err, JSON_STRICT, "{s:s, s:s, s:s}", "username",
		                   &in.username, "password", &in.password, "role", &in.role) != 0) {
			json_decref(root);
			return body_invalid(req);
		}
		in.caller = &caller;
		in.access_token = (char *)authn_bearer(req);
		req->rpc_timeout_ms = ADMIN_HASHING_TIMEOUT_MS;
		rv = admin_call(req, req->gw->client[SVC_AUTH], &magnetar__auth__descriptor,
		                "CreateUser", &in.base, admin_created_done);
		json_decref(root);
		return rv;
	}
	Magnetar__UserRequest in = MAGNETAR__USER_REQUEST__INIT;
	in.caller = &caller;
	in.access_token = (char *)authn_bearer(req);
	in.user_id = "";
	return admin_call(req, req->gw->client[SVC_AUTH], &magnetar__auth__descriptor, "ListUsers",
	                  &in.base, admin_users_done);
}

static int admin_user_change(struct http_request *req, const char *method)
{
	Magnetar__SessionRef caller = MAGNETAR__SESSION_REF__INIT;
	Magnetar__UserRequest in = MAGNETAR__USER_REQUEST__INIT;

	caller.user_id = req->auth->claims.sub;
	caller.session_id = req->auth->claims.sid;
	in.caller = &caller;
	in.access_token = (char *)authn_bearer(req);
	in.user_id = req->param;
	return admin_call(req, req->gw->client[SVC_AUTH], &magnetar__auth__descriptor, method,
	                  &in.base, admin_empty_done);
}

int adminroutes_user_delete(struct http_request *req)
{
	return admin_user_change(req, "DeleteUser");
}

int adminroutes_user_revoke(struct http_request *req)
{
	return admin_user_change(req, "RevokeUserSessions");
}

/* RFC 3339 UTC ("2026-11-28T02:13:00Z", optional fraction) to unix ms. */
static int admin_parse_time(const char *s, uint64_t *ms)
{
	struct tm tm;
	const char *rest;
	uint64_t frac = 0, scale = 100;
	time_t t;

	memset(&tm, 0, sizeof(tm));
	if ((rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)) == NULL)
		return ERR_INVAL;
	if (*rest == '.') {
		for (rest++; *rest >= '0' && *rest <= '9'; rest++) {
			frac += (uint64_t)(*rest - '0') * scale;
			scale /= 10;
		}
	}
	if (strcmp(rest, "Z") != 0 || (t = timegm(&tm)) < 0)
		return ERR_INVAL;
	*ms = (uint64_t)t * 1000 + frac;
	return 0;
}

static int admin_events_done(struct http_request *req)
{
	const struct rpc_result *r = &req->rpc[0].result;
	const Magnetar__QueryReply *q = (const Magnetar__QueryReply *)r->output;
	json_t *arr;

	if (r->status != MAGNETAR__STATUS__STATUS_OK)
		return respond_rpc_error(req, r);
	if ((arr = json_array()) == NULL)
		return ERR_NOMEM;
	for (size_t i = 0; i < q->n_events; i++) {
		const Magnetar__AuditRecord *e = q->events[i];
		char when[32];
		respond_time(e->time_unix_ms, when);
		if (json_array_append_new(
		        arr, json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id",
		                       (json_int_t)e->id, "time", when, "action", e->action,
		                       "actor", e->actor, "target", e->target, "ip", e->ip,
		                       "request_id", e->request_id, "outcome", e->outcome, "detail",
		                       e->detail)) != 0) {
			json_decref(arr);
			return ERR_NOMEM;
		}
	}
	return respond_json(req, MHD_HTTP_OK,
	                    json_pack("{s:o, s:s?}", "events", arr, "next_cursor",
	                              q->next_cursor[0] != '\0' ? q->next_cursor : NULL));
}

static const char *admin_arg(struct http_request *req, const char *name)
{
	const char *v = MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
	return v != NULL && v[0] != '\0' ? v : NULL;
}

/* The query's arguments as Query's input (MHD's memory). 0, or 1 when
 * answered (400). */
static int admin_events_input(struct http_request *req, Magnetar__QueryRequest *in)
{
	const char *v;
	char *end;

	in->action = (char *)((v = admin_arg(req, "action")) != NULL ? v : "");
	in->actor = (char *)((v = admin_arg(req, "actor")) != NULL ? v : "");
	in->cursor = (char *)((v = admin_arg(req, "cursor")) != NULL ? v : "");
	if (((v = admin_arg(req, "since")) != NULL &&
	     admin_parse_time(v, &in->since_unix_ms) != 0) ||
	    ((v = admin_arg(req, "until")) != NULL &&
	     admin_parse_time(v, &in->until_unix_ms) != 0)) {
		respond_error(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
		              "since and until are RFC 3339 UTC times.");
		return 1;
	}
	if ((v = admin_arg(req, "limit")) != NULL) {
		unsigned long n = strtoul(v, &end, 10);
		if (*end != '\0' || n < 1 || n > 1000 || v[0] == '-' || v[0] == '+') {
			respond_error(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
			              "limit is an integer from 1 to 1000.");
			return 1;
		}
		in->limit = (uint32_t)n;
	}
	return 0;
}

/* The audit service's call, once the stage has confirmed the session. */
static int admin_audit_call(struct http_request *req, const char *method,
                            const ProtobufCMessage *in, http_resume_fn done)
{
	return admin_call(req, req->gw->client[SVC_AUDIT], &magnetar__audit_log__descriptor, method,
	                  in, done);
}

int adminroutes_audit_events(struct http_request *req)
{
	Magnetar__QueryRequest in = MAGNETAR__QUERY_REQUEST__INIT;

	if (admin_events_input(req, &in) != 0)
		return 0; /* answered 400 */
	return admin_audit_call(req, "Query", &in.base, admin_events_done);
}

static int admin_verify_done(struct http_request *req)
{
	const struct rpc_result *r = &req->rpc[0].result;
	const Magnetar__VerifyReply *v = (const Magnetar__VerifyReply *)r->output;

	if (r->status != MAGNETAR__STATUS__STATUS_OK)
		return respond_rpc_error(req, r);
	if (v->ok)
		return respond_json(
		    req, MHD_HTTP_OK,
		    json_pack("{s:b, s:I}", "ok", 1, "records", (json_int_t)v->records));
	return respond_json(req, MHD_HTTP_OK,
	                    json_pack("{s:b, s:I, s:I, s:s}", "ok", 0, "records",
	                              (json_int_t)v->records, "first_bad_id",
	                              (json_int_t)v->first_bad_id, "reason", v->reason));
}

int adminroutes_audit_verify(struct http_request *req)
{
	Magnetar__VerifyRequest in = MAGNETAR__VERIFY_REQUEST__INIT;
	in.anchor = "";
	/* Verify walks the whole log: give it longer than a lookup. */
	req->rpc_timeout_ms = 30000;
	return admin_audit_call(req, "Verify", &in.base, admin_verify_done);
}
