/*
 * authroutes.c — the /api/v1/auth routes: each route checks its body or token, makes
 * one RPC to magnetar-auth with the connection suspended, and shapes the
 * answer exactly as docs/api.md's "Auth" table says. Passwords and tokens pass
 * through here but are never logged; JSON bodies holding them are wiped.
 */
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

#include "auth.pb-c.h"
#include "common/err.h"
#include "common/jwt.h"
#include "gateway/gateway.h"

/* Argon2id may queue behind a login flood: give it longer than a lookup. */
#define AUTHROUTES_HASHING_TIMEOUT_MS 10000

/* Frees a parsed body after wiping the strings it held (passwords). */
static void authroutes_wipe(json_t *root)
{
	const char *key;
	json_t *v;
	json_object_foreach(root, key, v)
	{
		if (json_is_string(v))
			OPENSSL_cleanse((void *)json_string_value(v), json_string_length(v));
	}
	json_decref(root);
}

static json_t *authroutes_user(const Magnetar__User *u, bool with_totp)
{
	json_t *o =
	    json_pack("{s:s, s:s, s:s}", "id", u->id, "username", u->username, "role", u->role);
	if (o != NULL && with_totp)
		json_object_set_new(o, "totp_enabled", json_boolean(u->totp_enabled));
	return o;
}

/* The login shape of docs/api.md. */
static int authroutes_tokens(struct http_request *req)
{
	const struct rpc_result *r = &req->rpc[0].result;
	const Magnetar__TokenReply *t = (const Magnetar__TokenReply *)r->output;
	if (r->status != MAGNETAR__STATUS__STATUS_OK)
		return respond_rpc_error(req, r);
	authn_issued(req->gw, t->access_token);
	return respond_json(req, MHD_HTTP_OK,
	                    json_pack("{s:s, s:s, s:i, s:s, s:s, s:o}", "access_token",
	                              t->access_token, "token_type", "Bearer", "expires_in",
	                              (int)t->expires_in, "refresh_token", t->refresh_token,
	                              "session_id", t->session_id, "user",
	                              authroutes_user(t->user, false)));
}

static int authroutes_registered(struct http_request *req)
{
	const struct rpc_result *r = &req->rpc[0].result;
	if (r->status != MAGNETAR__STATUS__STATUS_OK)
		return respond_rpc_error(req, r);
	return respond_json(
	    req, MHD_HTTP_CREATED,
	    json_pack("{s:o}", "user",
	              authroutes_user(((const Magnetar__RegisterReply *)r->output)->user, false)));
}

/* Starts one RPC to auth; the connection resumes into `done`. */
static int authroutes_call(struct http_request *req, const char *method, const ProtobufCMessage *in,
                           http_resume_fn done)
{
	int rv;
	if ((rv = http_async_begin(req, done)) != 0)
		return http_async_refused(req, rv);
	http_async_call(req, 0, req->gw->client[SVC_AUTH], &magnetar__auth__descriptor, method, in);
	http_async_end(req);
	return 0;
}

int authroutes_register(struct http_request *req)
{
	Magnetar__RegisterRequest in = MAGNETAR__REGISTER_REQUEST__INIT;
	const char *email = NULL;
	json_t *root = body_json(req);
	json_error_t err;
	int rv;

	if (root == NULL)
		return 0;
	if (json_unpack_ex(root, &err, JSON_STRICT, "{s:s, s:s, s?:s}", "username", &in.username,
	                   "password", &in.password, "email", &email) != 0) {
		authroutes_wipe(root);
		return body_invalid(req);
	}
	in.email = (char *)(email != NULL ? email : "");
	req->rpc_timeout_ms = AUTHROUTES_HASHING_TIMEOUT_MS;
	rv = authroutes_call(req, "SignUp", &in.base, authroutes_registered);
	authroutes_wipe(root); /* the RPC packed its own copy */
	return rv;
}

int authroutes_login(struct http_request *req)
{
	Magnetar__LoginRequest in = MAGNETAR__LOGIN_REQUEST__INIT;
	const char *totp = NULL;
	char fp[1024];
	json_t *root = body_json(req);
	json_error_t err;
	int rv;

	if (root == NULL)
		return 0;
	if (json_unpack_ex(root, &err, JSON_STRICT, "{s:s, s:s, s?:s}", "username", &in.username,
	                   "password", &in.password, "totp", &totp) != 0) {
		authroutes_wipe(root);
		return body_invalid(req);
	}
	in.totp = (char *)(totp != NULL ? totp : "");
	authn_fingerprint(req, fp, sizeof(fp));
	in.fingerprint = fp;
	req->rpc_timeout_ms = AUTHROUTES_HASHING_TIMEOUT_MS;
	rv = authroutes_call(req, "Login", &in.base, authroutes_tokens);
	authroutes_wipe(root);
	return rv;
}

int authroutes_refresh(struct http_request *req)
{
	Magnetar__RefreshRequest in = MAGNETAR__REFRESH_REQUEST__INIT;
	json_t *root = body_json(req);
	json_error_t err;
	int rv;

	if (root == NULL)
		return 0;
	if (json_unpack_ex(root, &err, JSON_STRICT, "{s:s}", "refresh_token", &in.refresh_token) !=
	    0) {
		authroutes_wipe(root);
		return body_invalid(req);
	}
	rv = authroutes_call(req, "Refresh", &in.base, authroutes_tokens);
	authroutes_wipe(root);
	return rv;
}

static int authroutes_done_empty(struct http_request *req)
{
	const struct rpc_result *r = &req->rpc[0].result;
	if (r->status != MAGNETAR__STATUS__STATUS_OK)
		return respond_rpc_error(req, r);
	return respond_no_content(req);
}

/* Logout and RevokeSession: req->param is the session that ended. */
static int authroutes_session_ended(struct http_request *req)
{
	if (req->rpc[0].result.status == MAGNETAR__STATUS__STATUS_OK)
		authn_session_ended(req->gw, req->param);
	return authroutes_done_empty(req);
}

/* Every session of the user ended; the new one is in the answer. */
static int authroutes_password_changed(struct http_request *req)
{
	if (req->rpc[0].result.status == MAGNETAR__STATUS__STATUS_OK)
		authn_user_changed(req->gw, req->actor);
	return authroutes_tokens(req);
}

/* Calls `method` with a SessionRef of the authenticated caller's user and
 * `sid` (the caller's own session when NULL). */
static int authroutes_session_call(struct http_request *req, const char *method, const char *sid,
                                   http_resume_fn done)
{
	Magnetar__SessionRef in = MAGNETAR__SESSION_REF__INIT;
	const struct jwt_claims *c = &req->auth->claims;

	in.user_id = (char *)c->sub;
	in.session_id = (char *)(sid != NULL ? sid : c->sid);
	/* Remembered for the answer ("current" in the session list); session
	 * ids are 32 hex, a longer one simply matches nothing. */
	if (sid == NULL && strlen(c->sid) < sizeof(req->param))
		strcpy(req->param, c->sid);
	return authroutes_call(req, method, &in.base, done);
}

int authroutes_logout(struct http_request *req)
{
	return authroutes_session_call(req, "Logout", NULL, authroutes_session_ended);
}

static json_t *authroutes_session(const Magnetar__Session *s)
{
	char created[32], seen[32];
	respond_time(s->created_at_ms, created);
	respond_time(s->last_seen_at_ms, seen);
	return json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", s->id, "created_at", created,
	                 "last_seen_at", seen, "ip", s->ip, "user_agent", s->user_agent);
}

static int authroutes_me_done(struct http_request *req)
{
	const struct rpc_result *r = &req->rpc[0].result;
	const Magnetar__MeReply *me = (const Magnetar__MeReply *)r->output;
	json_t *session, *body;
	char *text;

	if (r->status != MAGNETAR__STATUS__STATUS_OK) {
		/* The token verified but auth no longer knows the session. */
		if (r->status == MAGNETAR__STATUS__STATUS_NOT_FOUND) {
			struct rpc_result gone = {.status =
			                              MAGNETAR__STATUS__STATUS_UNAUTHENTICATED};
			snprintf(gone.code, sizeof(gone.code), "unauthorized");
			snprintf(gone.message, sizeof(gone.message), "The session has ended.");
			return respond_rpc_error(req, &gone);
		}
		return respond_rpc_error(req, r);
	}
	session = authroutes_session(me->session);
	if (session != NULL)
		json_object_set_new(session, "risk_score",
		                    json_real(me->session->risk_score / 100.0));
	body = json_pack("{s:o, s:o}", "user", authroutes_user(me->user, true), "session", session);
	/* The score is integer hundredths: 15 significant digits print 30 as
	 * 0.3, where jansson's default 17 print the double nearest it in full. */
	if (body == NULL ||
	    (text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(15))) == NULL) {
		json_decref(body);
		return ERR_NOMEM;
	}
	json_decref(body);
	authn_me_put(req->gw, me->session->id, me->user->id, text, req->me_epoch);
	return http_queue(req, MHD_HTTP_OK,
	                  respond_new(req, text, strlen(text), MHD_RESPMEM_MUST_FREE, true));
}

int authroutes_me(struct http_request *req)
{
	char *cached;

	/* The authenticated hot path: verified locally, answered from the cache
	 * that auth's events keep honest; one RPC fills it. */
	if ((cached = authn_me_get(req->gw, req->auth->claims.sid, &req->me_epoch)) != NULL)
		return http_queue(
		    req, MHD_HTTP_OK,
		    respond_new(req, cached, strlen(cached), MHD_RESPMEM_MUST_FREE, true));
	return authroutes_session_call(req, "Me", NULL, authroutes_me_done);
}

static int authroutes_sessions_done(struct http_request *req)
{
	const struct rpc_result *r = &req->rpc[0].result;
	const Magnetar__SessionsReply *list = (const Magnetar__SessionsReply *)r->output;
	json_t *arr;

	if (r->status != MAGNETAR__STATUS__STATUS_OK)
		return respond_rpc_error(req, r);
	if ((arr = json_array()) == NULL)
		return ERR_NOMEM;
	for (size_t i = 0; i < list->n_sessions; i++) {
		json_t *s = authroutes_session(list->sessions[i]);
		if (s == NULL ||
		    json_object_set_new(
		        s, "current",
		        json_boolean(strcmp(list->sessions[i]->id, req->param) == 0)) != 0 ||
		    json_array_append_new(arr, s) != 0) {
			json_decref(arr);
			return ERR_NOMEM;
		}
	}
	return respond_json(req, MHD_HTTP_OK, json_pack("{s:o}", "sessions", arr));
}

int authroutes_sessions(struct http_request *req)
{
	return authroutes_session_call(req, "ListSessions", NULL, authroutes_sessions_done);
}

int authroutes_revoke_session(struct http_request *req)
{
	char sid[ROUTE_PARAM_MAX];
	snprintf(sid, sizeof(sid), "%s", req->param);
	return authroutes_session_call(req, "RevokeSession", sid, authroutes_session_ended);
}

static int authroutes_checked(struct http_request *req)
{
	const struct rpc_result *r = &req->rpc[0].result;
	const Magnetar__PasswordCheckReply *out = (const Magnetar__PasswordCheckReply *)r->output;
	if (r->status != MAGNETAR__STATUS__STATUS_OK)
		return respond_rpc_error(req, r);
	return respond_json(
	    req, MHD_HTTP_OK,
	    json_pack("{s:b, s:I}", "breached", out->breached, "count", (json_int_t)out->count));
}

int authroutes_password_check(struct http_request *req)
{
	Magnetar__PasswordCheckRequest in = MAGNETAR__PASSWORD_CHECK_REQUEST__INIT;
	json_t *root = body_json(req);
	json_error_t err;
	int rv;

	if (root == NULL)
		return 0;
	if (json_unpack_ex(root, &err, JSON_STRICT, "{s:s}", "password", &in.password) != 0) {
		authroutes_wipe(root);
		return body_invalid(req);
	}
	req->rpc_timeout_ms = AUTHROUTES_HASHING_TIMEOUT_MS;
	rv = authroutes_call(req, "PasswordCheck", &in.base, authroutes_checked);
	authroutes_wipe(root);
	return rv;
}

int authroutes_password(struct http_request *req)
{
	Magnetar__ChangePasswordRequest in = MAGNETAR__CHANGE_PASSWORD_REQUEST__INIT;
	char fp[1024];
	json_t *root;
	json_error_t err;
	int rv;

	if ((root = body_json(req)) == NULL)
		return 0;
	if (json_unpack_ex(root, &err, JSON_STRICT, "{s:s, s:s}", "current_password",
	                   &in.current_password, "new_password", &in.new_password) != 0) {
		authroutes_wipe(root);
		return body_invalid(req);
	}
	in.user_id = req->auth->claims.sub;
	in.session_id = req->auth->claims.sid;
	authn_fingerprint(req, fp, sizeof(fp));
	in.fingerprint = fp;
	req->rpc_timeout_ms = AUTHROUTES_HASHING_TIMEOUT_MS;
	rv = authroutes_call(req, "ChangePassword", &in.base, authroutes_password_changed);
	authroutes_wipe(root);
	return rv;
}

int authroutes_step_up(struct http_request *req)
{
	Magnetar__StepUpRequest in = MAGNETAR__STEP_UP_REQUEST__INIT;
	const char *password = NULL, *totp = NULL;
	char fp[1024];
	json_t *root;
	json_error_t err;
	int rv;

	if ((root = body_json(req)) == NULL)
		return 0;
	/* Exactly one of the two (docs/api.md). */
	if (json_unpack_ex(root, &err, JSON_STRICT, "{s?:s, s?:s}", "password", &password, "totp",
	                   &totp) != 0 ||
	    (password == NULL) == (totp == NULL)) {
		authroutes_wipe(root);
		return body_invalid(req);
	}
	in.user_id = req->auth->claims.sub;
	in.session_id = req->auth->claims.sid;
	in.password = (char *)(password != NULL ? password : "");
	in.totp = (char *)(totp != NULL ? totp : "");
	authn_fingerprint(req, fp, sizeof(fp));
	in.fingerprint = fp;
	req->rpc_timeout_ms = AUTHROUTES_HASHING_TIMEOUT_MS;
	rv = authroutes_call(req, "StepUp", &in.base, authroutes_done_empty);
	authroutes_wipe(root);
	return rv;
}

static int authroutes_totp_setup_done(struct http_request *req)
{
	const struct rpc_result *r = &req->rpc[0].result;
	const Magnetar__TotpSetupReply *t = (const Magnetar__TotpSetupReply *)r->output;
	if (r->status != MAGNETAR__STATUS__STATUS_OK)
		return respond_rpc_error(req, r);
	return respond_json(
	    req, MHD_HTTP_OK,
	    json_pack("{s:s, s:s}", "secret", t->secret, "otpauth_uri", t->otpauth_uri));
}

int authroutes_totp_setup(struct http_request *req)
{
	Magnetar__TotpSetupRequest in = MAGNETAR__TOTP_SETUP_REQUEST__INIT;
	json_t *root;
	json_error_t err;
	int rv;

	if ((root = body_json(req)) == NULL)
		return 0;
	if (json_unpack_ex(root, &err, JSON_STRICT, "{s:s}", "current_password",
	                   &in.current_password) != 0) {
		authroutes_wipe(root);
		return body_invalid(req);
	}
	in.user_id = req->auth->claims.sub;
	in.session_id = req->auth->claims.sid;
	req->rpc_timeout_ms = AUTHROUTES_HASHING_TIMEOUT_MS;
	rv = authroutes_call(req, "TotpSetup", &in.base, authroutes_totp_setup_done);
	authroutes_wipe(root);
	return rv;
}

/* POST /api/v1/auth/totp/enable {code}; DELETE /api/v1/auth/totp
 * {current_password, code}. */
static int authroutes_totp_code(struct http_request *req, bool disable)
{
	Magnetar__TotpCodeRequest in = MAGNETAR__TOTP_CODE_REQUEST__INIT;
	const char *pw = NULL;
	json_t *root;
	json_error_t err;
	int rv;

	if ((root = body_json(req)) == NULL)
		return 0;
	rv = disable ? json_unpack_ex(root, &err, JSON_STRICT, "{s:s, s:s}", "current_password",
	                              &pw, "code", &in.code)
	             : json_unpack_ex(root, &err, JSON_STRICT, "{s:s}", "code", &in.code);
	if (rv != 0) {
		authroutes_wipe(root);
		return body_invalid(req);
	}
	in.user_id = req->auth->claims.sub;
	in.session_id = req->auth->claims.sid;
	in.current_password = (char *)(pw != NULL ? pw : "");
	req->rpc_timeout_ms = AUTHROUTES_HASHING_TIMEOUT_MS;
	rv = authroutes_call(req, disable ? "TotpDisable" : "TotpEnable", &in.base,
	                     authroutes_done_empty);
	authroutes_wipe(root);
	return rv;
}

int authroutes_totp_enable(struct http_request *req)
{
	return authroutes_totp_code(req, false);
}

int authroutes_totp_disable(struct http_request *req)
{
	return authroutes_totp_code(req, true);
}
