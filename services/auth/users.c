/*
 * users.c — what administrators may do to accounts (docs/api.md "Users"): list,
 * create, delete, revoke sessions. Auth checks the caller itself from the
 * caller's own access token (signature, session, role), not the gateway's
 * word, and an admin may not touch a founder.
 */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/outbox.h"
#include "services/auth/auth.h"

#define USERS_LIST_MAX 1000

static bool users_is_admin(const char *role)
{
	return strcmp(role, "admin") == 0 || strcmp(role, "founder") == 0;
}

/* Loads the caller (the live session of the verified token, of an admin or
 * founder); answers 401/403 and returns false otherwise. */
static bool users_caller(struct rpc_call *call, struct auth *a, const char *token,
                         struct store_user *caller)
{
	struct jwt_claims c;
	struct store_session s;
	uint64_t now = clock_unix_ms();

	if (keys_verify_token(a, token, &c) != 0 ||
	    store_session_get(a->svc.pool, c.sid, &s) != 0 || strcmp(s.user_id, c.sub) != 0 ||
	    s.revoked_ms != 0 || s.refreshed_ms + AUTH_IDLE_TTL_MS <= now ||
	    s.created_ms + AUTH_ABSOLUTE_TTL_MS <= now ||
	    store_user_by_id(a->svc.pool, c.sub, caller) != 0) {
		OPENSSL_cleanse(&c, sizeof(c));
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_UNAUTHENTICATED, "unauthorized",
		                "the session has ended");
		return false;
	}
	if (!users_is_admin(caller->role)) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_PERMISSION_DENIED, "forbidden",
		                "administrators only");
		return false;
	}
	return true;
}

/* Loads the target; answers 404, or 403 when an admin aims at a founder. */
static bool users_target(struct rpc_call *call, struct auth *a, const struct store_user *caller,
                         const char *id, struct store_user *target)
{
	if (store_user_by_id(a->svc.pool, id, target) != 0) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_NOT_FOUND, "not_found",
		                "no such user");
		return false;
	}
	if (strcmp(target->role, "founder") == 0 && strcmp(caller->role, "founder") != 0) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_PERMISSION_DENIED, "forbidden",
		                "only a founder may do that to a founder");
		return false;
	}
	return true;
}

void users_list(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	const Magnetar__UserRequest *req = (const Magnetar__UserRequest *)in;
	struct auth *a = arg;
	Magnetar__UsersReply out = MAGNETAR__USERS_REPLY__INIT;
	struct store_user caller, *u = NULL;
	Magnetar__User *items = NULL, **ptrs = NULL;
	int n;

	if (!users_caller(call, a, req->access_token, &caller))
		return;
	u = calloc(USERS_LIST_MAX, sizeof(*u));
	items = calloc(USERS_LIST_MAX, sizeof(*items));
	ptrs = calloc(USERS_LIST_MAX, sizeof(*ptrs));
	if (u == NULL || items == NULL || ptrs == NULL ||
	    (n = store_user_list(a->svc.pool, u, USERS_LIST_MAX)) < 0) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INTERNAL, "internal",
		                "the users could not be listed");
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

static void users_create_job(struct workq_job *job)
{
	struct hashing_job *j = (struct hashing_job *)job;
	const Magnetar__CreateUserRequest *req = (const Magnetar__CreateUserRequest *)j->in;
	Magnetar__RegisterReply out = MAGNETAR__REGISTER_REPLY__INIT;
	Magnetar__User user;
	struct store_user caller, u;
	char norm[AUTH_USERNAME_MAX + 1];
	int rv;

	if (!users_caller(j->call, j->a, req->access_token, &caller))
		goto out;
	if (strcmp(req->role, "admin") != 0 && strcmp(req->role, "member") != 0) {
		rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_INVALID, "invalid_request",
		                "role must be admin or member");
		goto out;
	}
	/* Making administrators is a founder's decision. */
	if (strcmp(req->role, "admin") == 0 && strcmp(caller.role, "founder") != 0) {
		rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_PERMISSION_DENIED, "forbidden",
		                "only a founder may create administrators");
		goto out;
	}
	if (!account_check_new(j->call, req->username, req->password, norm, sizeof(norm)) ||
	    !account_password_usable(j->a, j->call, req->password))
		goto out;
	rv = account_create(j->a, norm, req->password, req->role, rpc_call_context(j->call), &u);
	if (rv == ERR_EXISTS) {
		rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_CONFLICT, "username_taken",
		                "that username is taken");
	} else if (rv != 0) {
		rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_INTERNAL, "internal",
		                "the account could not be created");
	} else {
		tokens_user_proto(&u, &user);
		out.user = &user;
		rpc_reply(j->call, &out.base);
	}
out:
	free(j);
}

void users_create(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	hashing_submit(call, in, arg, users_create_job);
}

int users_apply(struct auth *a, const Magnetar__RequestContext *ctx, const char *actor,
                const struct store_user *target, bool delete)
{
	struct tokens_revoked gone;
	struct store_tx *tx;
	uint64_t now = clock_unix_ms();
	int rv;

	if ((rv = store_begin(a, &tx)) != 0)
		return rv;
	rv = store_sessions_revoke_user(tx, target->id, now, &gone);
	for (int i = 0; rv == 0 && i < gone.n; i++)
		rv = store_audit(tx, "session.revoked", actor, gone.ids[i], ctx, "success",
		                 delete ? "reason=user_deleted" : "reason=admin");
	if (rv == 0 && delete)
		rv = store_user_delete(tx, target->id, now);
	if (rv == 0 && delete)
		rv = store_audit(tx, "user.deleted", actor, target->id, ctx, "success",
		                 target->username);
	if ((rv = store_end(tx, rv)) != 0)
		return rv;
	tokens_publish_all(a, &gone, target->id, delete ? "user_deleted" : "admin");
	return 0;
}

/* Revokes every session of the target, and deletes it when `delete`. */
static void users_change(struct rpc_call *call, const ProtobufCMessage *in, void *arg, bool delete)
{
	const Magnetar__UserRequest *req = (const Magnetar__UserRequest *)in;
	Magnetar__Empty out = MAGNETAR__EMPTY__INIT;
	struct auth *a = arg;
	struct store_user caller, target;
	int rv;

	if (!users_caller(call, a, req->access_token, &caller) ||
	    !users_target(call, a, &caller, req->user_id, &target))
		return;
	if ((rv = users_apply(a, rpc_call_context(call), caller.id, &target, delete)) != 0) {
		log_warnx("users: change failed request_id=%s: %s", rpc_call_request_id(call),
		          err_str(rv));
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INTERNAL, "internal",
		                "the change could not be made");
		return;
	}
	rpc_reply(call, &out.base);
}

void users_delete(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	users_change(call, in, arg, true);
}

void users_revoke_sessions(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	users_change(call, in, arg, false);
}
