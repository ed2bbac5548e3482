/*
 * terminalroutes.c — /api/v1/terminal (docs/api.md "Terminal"): open, list and
 * close terminals through magnetar-terminal, and the WebSocket upgrade,
 * decided before any 101: an allowed Origin (or none), then a single-use
 * ticket that the terminal service consumes atomically. The authentication
 * stage has asked auth to confirm the session for Open always (the row's
 * .confirm), and for List, Close and an upgrade with a token while the
 * gateway's revoked set is not current (ROUTE_AUTH_LIVE); the role then
 * comes from auth's answer (req->me), else from the token. Refusals here
 * (role, Origin) are audited through the gateway's outbox; the service
 * audits its own.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "auth.pb-c.h"
#include "common/err.h"
#include "common/list.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/outbox.h"
#include "common/pool.h"
#include "gateway/gateway.h"
#include "terminal.pb-c.h"

#define TERMINALROUTES_SPAWN_TIMEOUT_MS 5000 /* a fork + exec, queued behind others */
#define TERMINALROUTES_SIZE_MAX 1000
#define TERMINALROUTES_WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* An audit event of the gateway's own (in gateway.db's outbox). */
static void terminalroutes_audit(struct http_request *req, const char *actor, const char *target,
                                 const char *detail)
{
	struct outbox_event ev = {.action = "terminal.denied",
	                          .actor = actor,
	                          .target = target,
	                          .request_id = req->id,
	                          .outcome = "failure",
	                          .detail = detail};
	char ip[INET6_ADDRSTRLEN] = "";
	struct sqlite3 *db;

	http_client_ip(req, ip);
	ev.ip = ip;
	if (req->gw->svc.pool == NULL || pool_writer_get(req->gw->svc.pool, &db) != 0)
		return;
	if (outbox_enqueue(db, &ev) != 0)
		log_warnx("terminal: cannot record a refusal request_id=%s", req->id);
	pool_writer_put(req->gw->svc.pool, db);
	outbox_kick(req->gw->svc.outbox);
}

/* May `user` (of `role`, with or without the grant) have terminals? If not,
 * audited and answered 403. */
static bool terminalroutes_allowed(struct http_request *req, const char *user, const char *role,
                                   bool grant)
{
	if (strcmp(role, "founder") == 0 || strcmp(role, "admin") == 0 || grant)
		return true;
	terminalroutes_audit(req, user, "", "reason=role");
	respond_error(req, MHD_HTTP_FORBIDDEN, "forbidden",
	              "Terminals need the founder or admin role or the terminal grant.");
	return false;
}

/* The caller, founder, admin or holder of the terminal grant: as auth has
 * them now when the authentication stage asked it (role and grant from
 * auth, not the token), else as the token says. NULL when answered (403). */
static const char *terminalroutes_user(struct http_request *req)
{
	const struct jwt_claims *c = &req->auth->claims;

	if (req->me != NULL)
		return terminalroutes_allowed(req, req->me->user->id, req->me->user->role,
		                              req->me->user->terminal)
		           ? req->me->user->id
		           : NULL;
	return terminalroutes_allowed(req, c->sub, c->role, c->terminal) ? c->sub : NULL;
}

/* The terminal service's call; its answer is in rpc slot 0. */
static int terminalroutes_call(struct http_request *req, const char *method,
                               const ProtobufCMessage *in, http_resume_fn done)
{
	int rv = http_async_begin(req, done);
	if (rv != 0)
		return http_async_refused(req, rv);
	http_async_call(req, 0, req->gw->client[SVC_TERMINAL], &magnetar__terminal__descriptor,
	                method, in);
	http_async_end(req);
	return 0;
}

static json_t *terminalroutes_info(const Magnetar__TerminalInfo *t)
{
	char created[32], active[32];
	respond_time(t->created_ms, created);
	respond_time(t->last_active_ms, active);
	return json_pack("{s:s, s:s, s:s, s:i, s:i, s:s, s:s, s:s}", "id", t->id, "shell", t->shell,
	                 "cwd", t->cwd, "cols", (int)t->cols, "rows", (int)t->rows, "state",
	                 t->state, "created_at", created, "last_active_at", active);
}

static int terminalroutes_opened(struct http_request *req)
{
	const struct rpc_result *r = &req->rpc[0].result;
	const Magnetar__TerminalOpenReply *o = (const Magnetar__TerminalOpenReply *)r->output;
	char url[160];
	json_t *body;

	if (r->status != MAGNETAR__STATUS__STATUS_OK) {
		/* docs/api.md: too_many_terminals is a 429 (the mapping gives it). */
		return respond_rpc_error(req, r);
	}
	if (o->terminal == NULL)
		return ERR_PROTO;
	/* Relative, and never with the ticket in it: URLs end up in logs. */
	snprintf(url, sizeof(url), "/api/v1/terminal/sessions/%s/ws", o->terminal->id);
	body = terminalroutes_info(o->terminal);
	if (body == NULL)
		return ERR_NOMEM;
	json_object_set_new(body, "ws_url", json_string(url));
	json_object_set_new(body, "ws_ticket", json_string(o->ticket));
	return respond_json(req, MHD_HTTP_CREATED, body);
}

static int terminalroutes_listed(struct http_request *req)
{
	const struct rpc_result *r = &req->rpc[0].result;
	const Magnetar__TerminalListReply *l = (const Magnetar__TerminalListReply *)r->output;
	json_t *arr;

	if (r->status != MAGNETAR__STATUS__STATUS_OK)
		return respond_rpc_error(req, r);
	if ((arr = json_array()) == NULL)
		return ERR_NOMEM;
	for (size_t i = 0; i < l->n_terminals; i++)
		if (json_array_append_new(arr, terminalroutes_info(l->terminals[i])) != 0) {
			json_decref(arr);
			return ERR_NOMEM;
		}
	return respond_json(req, MHD_HTTP_OK, json_pack("{s:o}", "terminals", arr));
}

/* The request's body as Open's input (strings point into *root, which the
 * caller frees after the call). 0, or 1 when answered (400). */
static int terminalroutes_open_input(struct http_request *req, json_t **root,
                                     Magnetar__TerminalOpenRequest *in)
{
	const char *shell = NULL, *cwd = NULL;
	json_int_t cols = 80, rows = 24;
	json_error_t err;

	if ((*root = body_json(req)) == NULL)
		return 1;
	if (json_unpack_ex(*root, &err, JSON_STRICT, "{s:s, s?:s, s?:I, s?:I}", "shell", &shell,
	                   "cwd", &cwd, "cols", &cols, "rows", &rows) != 0) {
		json_decref(*root);
		body_invalid(req);
		return 1;
	}
	if (cols < 1 || cols > TERMINALROUTES_SIZE_MAX || rows < 1 ||
	    rows > TERMINALROUTES_SIZE_MAX) {
		json_decref(*root);
		respond_error(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
		              "cols and rows must be from 1 to 1000.");
		return 1;
	}
	in->shell = (char *)shell;
	in->cwd = (char *)(cwd != NULL ? cwd : "");
	in->cols = (uint32_t)cols;
	in->rows = (uint32_t)rows;
	return 0;
}

/* Open: auth has confirmed the session (the row's .confirm: the gateway's
 * revoked set may be behind, and a shell is the last thing to give a
 * revoked token), and its view of the user decides the role. */
static int terminalroutes_open(struct http_request *req)
{
	Magnetar__TerminalOpenRequest in = MAGNETAR__TERMINAL_OPEN_REQUEST__INIT;
	const char *user = terminalroutes_user(req);
	json_t *root;
	int rv;

	if (user == NULL || terminalroutes_open_input(req, &root, &in) != 0)
		return 0;
	in.user_id = (char *)user;
	/* auth's session.revoked closes the terminal */
	in.session_id = req->me != NULL ? req->me->session->id : req->auth->claims.sid;
	req->rpc_timeout_ms = TERMINALROUTES_SPAWN_TIMEOUT_MS;
	rv = terminalroutes_call(req, "Open", &in.base, terminalroutes_opened);
	json_decref(root); /* after the call: it packed its own copy */
	return rv;
}

static int terminalroutes_list(struct http_request *req)
{
	Magnetar__TerminalListRequest in = MAGNETAR__TERMINAL_LIST_REQUEST__INIT;
	const char *user = terminalroutes_user(req);

	if (user == NULL)
		return 0;
	in.user_id = (char *)user;
	return terminalroutes_call(req, "List", &in.base, terminalroutes_listed);
}

int terminalroutes_sessions(struct http_request *req)
{
	return req->method == HTTP_M_POST ? terminalroutes_open(req) : terminalroutes_list(req);
}

static int terminalroutes_closed(struct http_request *req)
{
	const struct rpc_result *r = &req->rpc[0].result;
	if (r->status != MAGNETAR__STATUS__STATUS_OK)
		return respond_rpc_error(req, r);
	return respond_no_content(req);
}

int terminalroutes_close(struct http_request *req)
{
	Magnetar__TerminalCloseRequest in = MAGNETAR__TERMINAL_CLOSE_REQUEST__INIT;
	const char *user = terminalroutes_user(req);
	char id[ROUTE_PARAM_MAX];

	if (user == NULL)
		return 0;
	snprintf(id, sizeof(id), "%s", req->param);
	in.user_id = (char *)user; /* never empty: an empty user means "any" to the service */
	in.id = id;
	return terminalroutes_call(req, "Close", &in.base, terminalroutes_closed);
}

/* ---- the WebSocket upgrade --------------------------------------------------- */

static const char *terminalroutes_header(struct http_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

/* True when the comma-separated header value holds `token` (any case). */
static bool terminalroutes_has_token(const char *v, const char *token)
{
	size_t n = strlen(token), len;
	const char *item;

	while (list_next(&v, &item, &len))
		if (len == n && strncasecmp(item, token, n) == 0)
			return true;
	return false;
}

/* The Origin check: none (not a browser), or one of MAGNETAR_CORS_ORIGINS
 * (gateway/origin.c's comparison). "*" never admits a WebSocket, nor does
 * the opaque origin "null". */
static bool terminalroutes_origin_ok(struct http_request *req)
{
	const char *origin = terminalroutes_header(req, "Origin");
	return origin == NULL || origin_listed(&req->gw->cors, origin, strlen(origin));
}

static int terminalroutes_attached(struct http_request *req)
{
	const struct rpc_result *r = &req->rpc[0].result;
	const Magnetar__TerminalAttachReply *a = (const Magnetar__TerminalAttachReply *)r->output;
	const char *key = terminalroutes_header(req, "Sec-WebSocket-Key");
	unsigned char digest[SHA_DIGEST_LENGTH];
	char buf[128], accept[64];
	struct MHD_Response *resp;
	struct wsbridge *b;

	if (r->status != MAGNETAR__STATUS__STATUS_OK)
		return respond_rpc_error(req, r);
	if (key == NULL || strlen(key) > 64)
		return ERR_INTERNAL; /* checked before the call */
	snprintf(buf, sizeof(buf), "%s%s", key, TERMINALROUTES_WS_GUID);
	SHA1((const unsigned char *)buf, strlen(buf), digest);
	EVP_EncodeBlock((unsigned char *)accept, digest, SHA_DIGEST_LENGTH);
	b = wsbridge_new(req->gw, a->stream_path, req->param, a->stream_key.data,
	                 a->stream_key.len);
	/* The bridge holds the key now; the reply's copy goes. */
	OPENSSL_cleanse(a->stream_key.data, a->stream_key.len);
	if (b == NULL)
		return ERR_NOMEM;
	resp = MHD_create_response_for_upgrade(wsbridge_upgraded, b);
	if (resp == NULL) {
		wsbridge_free(b);
		return ERR_NOMEM;
	}
	if (MHD_add_response_header(resp, MHD_HTTP_HEADER_UPGRADE, "websocket") != MHD_YES ||
	    MHD_add_response_header(resp, "Sec-WebSocket-Accept", accept) != MHD_YES) {
		MHD_destroy_response(resp);
		wsbridge_free(b);
		return ERR_NOMEM;
	}
	/* From here the bridge belongs to MHD's upgrade handler. A client that
	 * leaves before the 101 is sent leaks this one small struct. */
	return http_queue(req, MHD_HTTP_SWITCHING_PROTOCOLS, resp);
}

/* Attach with the request's ticket; `user` is "" when no token was sent
 * (the ticket alone is the credential). */
static int terminalroutes_attach_call(struct http_request *req, const char *user)
{
	Magnetar__TerminalAttachRequest in = MAGNETAR__TERMINAL_ATTACH_REQUEST__INIT;
	char id[ROUTE_PARAM_MAX];

	snprintf(id, sizeof(id), "%s", req->param);
	in.id = id;
	in.ticket = (char *)MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, "ticket");
	in.user_id = (char *)user;
	return terminalroutes_call(req, "Attach", &in.base, terminalroutes_attached);
}

int terminalroutes_ws(struct http_request *req)
{
	const char *upgrade = terminalroutes_header(req, "Upgrade");
	const char *connection = terminalroutes_header(req, "Connection");
	const char *version = terminalroutes_header(req, "Sec-WebSocket-Version");
	const char *key = terminalroutes_header(req, "Sec-WebSocket-Key");
	const char *ticket =
	    MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, "ticket");
	const char *user = "";

	if (upgrade == NULL || strcasecmp(upgrade, "websocket") != 0 ||
	    !terminalroutes_has_token(connection, "upgrade") || version == NULL ||
	    strcmp(version, "13") != 0 || key == NULL || strlen(key) != 24)
		return respond_error(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
		                     "A WebSocket (version 13) upgrade is required.");
	/* Cross-site WebSocket hijacking: a foreign page may open this socket
	 * with the user's ticket-less cookies, never with our answer. */
	if (!terminalroutes_origin_ok(req)) {
		terminalroutes_audit(req, "", req->param, "reason=origin");
		return respond_error(req, MHD_HTTP_FORBIDDEN, "forbidden",
		                     "This origin may not open terminals.");
	}
	/* Browsers cannot send headers on a WebSocket: the ticket is the
	 * credential. A token, when sent anyway (the authentication stage has
	 * checked it), must be the owner's. */
	if (req->auth != NULL && (user = terminalroutes_user(req)) == NULL)
		return 0;
	if (ticket == NULL || ticket[0] == '\0' || strlen(ticket) > 128)
		return respond_error(req, MHD_HTTP_UNAUTHORIZED, "invalid_ticket",
		                     "A valid ticket is required.");
	return terminalroutes_attach_call(req, user);
}
