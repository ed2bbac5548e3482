/*
 * operator.c — the operator's methods behind `magctl user` and `magctl
 * session`: accounts by username, roles and the terminal grant, a lost TOTP
 * device, sessions. They take no caller session: the operator is whoever
 * may connect to auth's socket and call them (privilege separation admits
 * only the operator's uid to these methods; docs/security.md). Every change
 * is audited with actor "operator", and a role or grant change revokes the
 * user's sessions so no token carries the old role.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/outbox.h"
#include "services/auth/auth.h"

#define OPERATOR_LIST_MAX 1000

static bool operator_user(struct rpc_call *call, struct auth *a, const char *name,
                          struct store_user *u)
{
	char norm[AUTH_USERNAME_MAX + 1];
	if (tokens_normalise_username(name, norm, sizeof(norm)) == 0 &&
	    store_user_by_name(a->svc.pool, norm, u) == 0) {
		return true;
	}
	rpc_reply_error(call, MAGNETAR__STATUS__STATUS_NOT_FOUND, "not_found", "no such user");
	return false;
}

static void operator_done(struct rpc_call *call, int rv, const char *what)
{
	Magnetar__Empty out = MAGNETAR__EMPTY__INIT;
	if (rv == 0) {
		rpc_reply(call, &out.base);
		return;
	}
	log_warnx("operator: %s failed request_id=%s: %s", what, rpc_call_request_id(call),
	          err_str(rv));
	rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INTERNAL, "internal", "the change failed");
}

static void operator_create_job(struct workq_job *job)
{
	struct hashing_job *j = (struct hashing_job *)job;
	const Magnetar__OperatorRequest *req = (const Magnetar__OperatorRequest *)j->in;
	Magnetar__RegisterReply out = MAGNETAR__REGISTER_REPLY__INIT;
	Magnetar__User user;
	struct store_user u;
	char norm[AUTH_USERNAME_MAX + 1];
	int rv;

	if (strcmp(req->role, "founder") != 0 && strcmp(req->role, "admin") != 0 &&
	    strcmp(req->role, "member") != 0) {
		rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_INVALID, "invalid_request",
		                "role must be founder, admin or member");
	} else if (account_check_new(j->call, req->username, req->password, norm, sizeof(norm)) &&
	           account_password_usable(j->a, j->call, req->password)) {
		rv = account_create(j->a, norm, req->password, req->role, rpc_call_context(j->call),
		                    &u);
		if (rv == ERR_EXISTS) {
			rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_CONFLICT,
			                "username_taken", "that username is taken");
		} else if (rv != 0) {
			operator_done(j->call, rv, "create");
		} else {
			tokens_user_proto(&u, &user);
			out.user = &user;
			rpc_reply(j->call, &out.base);
		}
	}
	free(j);
}

void operator_create_user(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	hashing_submit(call, in, arg, operator_create_job);
}

void operator_list_users(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	struct auth *a = arg;
	Magnetar__UsersReply out = MAGNETAR__USERS_REPLY__INIT;
	struct store_user *u = calloc(OPERATOR_LIST_MAX, sizeof(*u));
	Magnetar__User *items = calloc(OPERATOR_LIST_MAX, sizeof(*items));
	Magnetar__User **ptrs = calloc(OPERATOR_LIST_MAX, sizeof(*ptrs));
	int n;
	(void)in;

	if (u == NULL || items == NULL || ptrs == NULL ||
	    (n = store_user_list(a->svc.pool, u, OPERATOR_LIST_MAX)) < 0) {
		operator_done(call, ERR_NOMEM, "list");
		goto out;
	}
	for (int i = 0; i < n; i++) {
		tokens_user_proto(&u[i], &items[i]);
		ptrs[i] = &items[i];
	}
	out.n_users = (size_t)n;
	out.users = ptrs;
	rpc_reply(call, &out.base);
out:
	free(u);
	free(items);
	free(ptrs);
}

void operator_delete_user(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	const Magnetar__OperatorRequest *req = (const Magnetar__OperatorRequest *)in;
	struct store_user u;
	if (!operator_user(call, arg, req->username, &u))
		return;
	operator_done(call, users_apply(arg, rpc_call_context(call), "operator", &u, true),
	              "delete");
}

/* set-role and grant-terminal: both change what tokens say, so the user's
 * sessions are revoked (user.changed in docs/architecture.md). */
void operator_set_role(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	const Magnetar__OperatorRequest *req = (const Magnetar__OperatorRequest *)in;
	struct auth *a = arg;
	struct store_user u;
	struct store_tx *tx;
	char detail[64];
	int rv;

	if (req->role[0] != '\0' && strcmp(req->role, "founder") != 0 &&
	    strcmp(req->role, "admin") != 0 && strcmp(req->role, "member") != 0) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INVALID, "invalid_request",
		                "role must be founder, admin or member");
		return;
	}
	if (!operator_user(call, a, req->username, &u))
		return;
	snprintf(detail, sizeof(detail), "role=%s terminal=%d",
	         req->role[0] != '\0' ? req->role : u.role,
	         req->role[0] != '\0' ? u.terminal : req->terminal);
	if ((rv = store_begin(a, &tx)) == 0) {
		/* An empty role means: only the terminal grant changes. */
		rv = store_user_set_role(tx, u.id, req->role,
		                         req->role[0] != '\0' ? -1 : req->terminal);
		if (rv == 0)
			rv = store_audit(tx, "user.changed", "operator", u.id,
			                 rpc_call_context(call), "success", detail);
		rv = store_end(tx, rv);
	}
	if (rv == 0)
		rv = users_apply(a, rpc_call_context(call), "operator", &u, false);
	operator_done(call, rv, "set-role");
}

void operator_reset_totp(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	const Magnetar__OperatorRequest *req = (const Magnetar__OperatorRequest *)in;
	struct auth *a = arg;
	struct store_user u;
	struct store_tx *tx;
	int rv;

	if (!operator_user(call, a, req->username, &u))
		return;
	if ((rv = store_begin(a, &tx)) == 0) {
		rv = store_totp_set(tx, u.id, STORE_TOTP_DISABLE, NULL, 0);
		if (rv == 0)
			rv = store_audit(tx, "totp.reset", "operator", u.id, rpc_call_context(call),
			                 "success", "");
		rv = store_end(tx, rv);
	}
	if (rv == 0)
		tokens_publish_user_changed(a, u.id);
	operator_done(call, rv, "reset-totp");
}

void operator_list_sessions(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	const Magnetar__OperatorRequest *req = (const Magnetar__OperatorRequest *)in;
	struct store_user u;

	if (!operator_user(call, arg, req->username, &u))
		return;
	session_list_user(call, arg, u.id);
}

void operator_revoke_session(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	const Magnetar__OperatorRequest *req = (const Magnetar__OperatorRequest *)in;
	struct auth *a = arg;
	struct store_session s;
	struct store_tx *tx;
	int rv;

	if (store_session_get(a->svc.pool, req->session_id, &s) != 0 || s.revoked_ms != 0) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_NOT_FOUND, "not_found",
		                "no such active session");
		return;
	}
	if ((rv = store_begin(a, &tx)) == 0) {
		rv = store_session_revoke(tx, s.id, clock_unix_ms());
		if (rv == 0)
			rv = store_audit(tx, "session.revoked", "operator", s.id,
			                 rpc_call_context(call), "success", "reason=operator");
		rv = store_end(tx, rv);
	}
	if (rv == 0)
		tokens_publish_revoked(a, s.id, s.user_id, "operator");
	operator_done(call, rv, "revoke");
}

void operator_rotate_keys(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	struct auth *a = arg;
	struct store_tx *tx;
	char kid[17];
	int rv;

	if ((rv = keys_rotate(a, kid)) != 0) {
		operator_done(call, rv, "rotate-keys");
		return;
	}
	if (store_begin(a, &tx) == 0)
		store_end(tx, store_audit(tx, "auth.keys.rotated", "operator", kid,
		                          rpc_call_context(call), "success", ""));
	/* Gateways fetch the new public key now, before its first token. */
	events_publish(a->events, "keys.rotated", "", 0);
	session_public_keys(call, in, arg); /* answers with the keys now published */
}
