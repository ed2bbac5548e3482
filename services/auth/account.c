/*
 * account.c — Register and Login, and the founder bootstrap. Both RPCs
 * hash or verify a password, so they run whole on the bounded `hashing`
 * pool: a login flood fills that queue (and gets 429) while every other
 * method keeps its RPC workers.
 */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/ids.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/outbox.h"
#include "common/rpc.h"
#include "common/workq.h"
#include "services/auth/auth.h"

/* Validates a new account's username and password; answers on refusal. */
bool account_check_new(struct rpc_call *call, const char *username, const char *password,
                       char *norm, size_t cap)
{
	const char *policy;
	if (tokens_normalise_username(username, norm, cap) != 0) {
		rpc_reply_error(
		    call, MAGNETAR__STATUS__STATUS_INVALID, "invalid_request",
		    "username must be 3-32 characters: letters, digits, '.', '_' or '-'");
		return false;
	}
	if ((policy = password_policy(strlen(password))) != NULL) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INVALID, policy,
		                strcmp(policy, "password_too_short") == 0
		                    ? "password must be at least 8 characters"
		                    : "password must be at most 128 bytes");
		return false;
	}
	return true;
}

/* Creates a user in its own transaction. ERR_EXISTS when the name is taken. */
int account_create(struct auth *a, const char *username, const char *password, const char *role,
                   const Magnetar__RequestContext *ctx, struct store_user *u)
{
	char hash[AUTH_HASH_MAX];
	struct store_tx *tx;
	int rv;

	memset(u, 0, sizeof(*u));
	if ((rv = ids_random_hex(u->id, 16)) != 0)
		return rv;
	snprintf(u->username, sizeof(u->username), "%s", username);
	snprintf(u->role, sizeof(u->role), "%s", role);
	u->created_ms = clock_unix_ms();
	if ((rv = password_hash(a, password, strlen(password), hash, sizeof(hash))) != 0)
		return rv;
	if ((rv = store_begin(a, &tx)) != 0) {
		OPENSSL_cleanse(hash, sizeof(hash));
		return rv;
	}
	rv = store_user_insert(tx, u, hash);
	OPENSSL_cleanse(hash, sizeof(hash));
	if (rv == 0)
		rv = store_audit(tx, "user.created", ctx != NULL ? ctx->actor : "", u->id, ctx,
		                 "success", role);
	if (rv == 0)
		rv = store_audit(tx, "auth.register", u->id, u->id, ctx, "success", "");
	return store_end(tx, rv);
}

bool account_password_usable(struct auth *a, struct rpc_call *call, const char *password)
{
	uint64_t count = 0;
	char source[16];
	struct store_tx *tx;
	char detail[64];

	if (breached_check(a, password, strlen(password), &count, source) != 0) {
		/* MAGNETAR_BREACH_FAIL=closed and the check could not run. */
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_UNAVAILABLE,
		                "breach_check_unavailable",
		                "the password could not be checked; try again later");
		return false;
	}
	if (count == 0)
		return true;
	snprintf(detail, sizeof(detail), "breach_count=%llu", (unsigned long long)count);
	if (store_begin(a, &tx) == 0)
		store_end(tx, store_audit(tx, "auth.password.breach_rejected",
		                          rpc_call_context(call)->actor, "", rpc_call_context(call),
		                          "failure", detail));
	breached_refuse(call, count);
	return false;
}

static void account_register_job(struct workq_job *job)
{
	struct hashing_job *j = (struct hashing_job *)job;
	const Magnetar__RegisterRequest *req = (const Magnetar__RegisterRequest *)j->in;
	Magnetar__RegisterReply out = MAGNETAR__REGISTER_REPLY__INIT;
	Magnetar__User user;
	struct store_user u;
	char norm[AUTH_USERNAME_MAX + 1];
	int rv;

	if (!auth_vars(j->a)->registration_open) {
		rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_PERMISSION_DENIED,
		                "registration_closed", "registration is closed");
	} else if (account_check_new(j->call, req->username, req->password, norm, sizeof(norm)) &&
	           account_password_usable(j->a, j->call, req->password)) {
		rv = account_create(j->a, norm, req->password, "member", rpc_call_context(j->call),
		                    &u);
		if (rv == ERR_EXISTS) {
			rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_CONFLICT,
			                "username_taken", "that username is taken");
		} else if (rv != 0) {
			log_warnx("register: failed request_id=%s: %s",
			          rpc_call_request_id(j->call), err_str(rv));
			rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_INTERNAL, "internal",
			                "the account could not be created");
		} else {
			tokens_user_proto(&u, &user);
			out.user = &user;
			rpc_reply(j->call, &out.base);
		}
	}
	free(j);
}

void account_register(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	hashing_submit(call, in, arg, account_register_job);
}

/* Records a failed login; the reply is the same whatever the reason. */
static void account_login_failed(struct hashing_job *j, const char *actor, const char *why,
                                 const char *throttle_as)
{
	struct store_tx *tx;
	throttle_failed(throttle_as, rpc_call_context(j->call)->client_ip);
	if (store_begin(j->a, &tx) == 0)
		store_end(tx, store_audit(tx, "auth.login.failure", actor, actor,
		                          rpc_call_context(j->call), "failure", why));
	rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_UNAUTHENTICATED, "invalid_credentials",
	                "invalid username or password");
}

static void account_login_job(struct workq_job *job)
{
	struct hashing_job *j = (struct hashing_job *)job;
	const Magnetar__LoginRequest *req = (const Magnetar__LoginRequest *)j->in;
	const Magnetar__RequestContext *ctx = rpc_call_context(j->call);
	Magnetar__TokenReply out;
	Magnetar__User user;
	struct store_user u;
	struct store_tx *tx;
	struct tokens_revoked gone = {.n = 0};
	char norm[AUTH_USERNAME_MAX + 1], token[JWT_MAX_TOKEN];
	size_t pwlen = strlen(req->password);
	int rv;

	/* Throttled by the name tried, known or not: the same for every account. */
	if (tokens_normalise_username(req->username, norm, sizeof(norm)) != 0)
		snprintf(norm, sizeof(norm), "?");
	if (throttle_refused(j->call, norm))
		goto out;
	/* Unknown users verify against a dummy hash: the same cost, the same answer. */
	if (strcmp(norm, "?") == 0 || store_user_by_name(j->a->svc.pool, norm, &u) != 0) {
		password_verify(j->a->dummy_hash, req->password, pwlen);
		account_login_failed(j, "", "unknown_user", norm);
		goto out;
	}
	if (password_check(j->a, u.id, req->password, pwlen) != 0) {
		account_login_failed(j, u.id, "wrong_password", norm);
		goto out;
	}
	/* Only after a correct password does the answer say a code is needed. */
	if (u.totp_enabled && req->totp[0] == '\0') {
		rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_UNAUTHENTICATED, "totp_required",
		                "a one-time code is required");
		goto out;
	}
	if (u.totp_enabled && totp_verify(j->a, u.id, req->totp, false) != 0) {
		struct store_tx *ftx;
		throttle_failed(norm, ctx->client_ip);
		if (store_begin(j->a, &ftx) == 0)
			store_end(ftx, store_audit(ftx, "auth.login.failure", u.id, u.id,
			                           rpc_call_context(j->call), "failure",
			                           "invalid_totp"));
		rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_UNAUTHENTICATED, "invalid_totp",
		                "the one-time code is not valid");
		goto out;
	}
	if ((rv = store_begin(j->a, &tx)) == 0) {
		rv = tokens_new_session(j->a, tx, &u, ctx, req->fingerprint, &gone, &out, token,
		                        sizeof(token));
		if (rv == 0)
			rv = store_audit(tx, "auth.login.success", u.id, out.session_id, ctx,
			                 "success", "");
		rv = store_end(tx, rv);
	}
	if (rv != 0) {
		log_warnx("login: failed request_id=%s: %s", rpc_call_request_id(j->call),
		          err_str(rv));
		rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_INTERNAL, "internal",
		                "the session could not be created");
		goto out;
	}
	throttle_succeeded(norm, ctx->client_ip);
	tokens_publish_all(j->a, &gone, u.id, "session_limit");
	tokens_user_proto(&u, &user);
	out.user = &user;
	rpc_reply(j->call, &out.base);
	OPENSSL_cleanse(token, sizeof(token));
out:
	free(j);
}

void account_login(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	hashing_submit(call, in, arg, account_login_job);
}

/* Replicas starting together on an empty database (`--scale auth=3` on a
 * new host) all see no user and all try to create the founder; one wins,
 * and for the others the account they were about to create exists. */
static int account_founder_raced(struct auth *a, const char *username)
{
	struct store_user u;
	int rv;

	/* Only a founder under that name is the race; any other account there
	 * (registered through a replica already serving) means no founder. */
	if ((rv = store_user_by_name(a->svc.pool, username, &u)) != 0)
		return rv;
	if (strcmp(u.role, "founder") != 0) {
		log_warnx("founder: %s exists as a %s account, not the founder", username, u.role);
		return ERR_EXISTS;
	}
	log_info("founder account %s exists: created by a replica starting with us", username);
	return 0;
}

/* Development without a configured founder: make one with a random
 * password and show it once, so `make run` leads straight to a login. */
static int account_dev_founder(struct auth *a)
{
	unsigned char raw[15];
	char password[24];
	struct store_user u;
	int rv;

	if ((rv = ids_random(raw, sizeof(raw))) != 0)
		return rv;
	jwt_b64url_encode(raw, sizeof(raw), password);
	OPENSSL_cleanse(raw, sizeof(raw));
	rv = account_create(a, "founder", password, "founder", NULL, &u);
	if (rv == 0) {
		/* Deliberately on stdout, once, in development only: the operator
		 * needs it to log in; it is never written anywhere else. */
		printf("\n  development founder account created (shown once):\n"
		       "    username: founder\n    password: %s\n\n",
		       password);
		fflush(stdout);
	}
	OPENSSL_cleanse(password, sizeof(password));
	return rv == ERR_EXISTS ? account_founder_raced(a, "founder") : rv;
}

int account_bootstrap_founder(struct auth *a)
{
	const struct conf *c = &a->svc.conf;
	const struct auth_vars *v = auth_vars(a);
	struct store_user u;
	char norm[AUTH_USERNAME_MAX + 1];
	uint64_t n;
	int rv;

	if ((rv = store_user_count(a->svc.pool, &n)) != 0)
		return rv;
	if (n > 0)
		return 0; /* first start only */
	if (v->founder_username == NULL || v->founder_password == NULL)
		return c->env == CONF_ENV_DEVELOPMENT ? account_dev_founder(a) : 0;
	if (tokens_normalise_username(v->founder_username, norm, sizeof(norm)) != 0) {
		log_warnx("founder: MAGNETAR_FOUNDER_USERNAME is not a valid username");
		return ERR_CONFIG;
	}
	if (password_policy(strlen(v->founder_password)) != NULL) {
		log_warnx("founder: MAGNETAR_FOUNDER_PASSWORD must be 8..128 bytes");
		return ERR_CONFIG;
	}
	uint64_t count = 0;
	char source[16];
	if ((rv = breached_check(a, v->founder_password, strlen(v->founder_password), &count,
	                         source)) != 0)
		return rv;
	if (count > 0) {
		log_warnx(
		    "founder: MAGNETAR_FOUNDER_PASSWORD appears in %llu breaches; choose another",
		    (unsigned long long)count);
		return ERR_CONFIG;
	}
	if ((rv = account_create(a, norm, v->founder_password, "founder", NULL, &u)) != 0)
		return rv == ERR_EXISTS ? account_founder_raced(a, norm) : rv;
	log_info("founder account created username=%s", norm);
	return 0;
}

/* ChangePassword: the current password proves it is the owner (a stolen
 * access token alone cannot do it); every session is revoked and a fresh
 * one returned (docs/api.md). */
static void account_change_password_job(struct workq_job *job)
{
	struct hashing_job *j = (struct hashing_job *)job;
	const Magnetar__ChangePasswordRequest *req = (const Magnetar__ChangePasswordRequest *)j->in;
	const Magnetar__RequestContext *ctx = rpc_call_context(j->call);
	struct store_session s;
	struct store_user u;
	struct store_tx *tx;
	struct tokens_revoked gone, limit;
	Magnetar__TokenReply out;
	Magnetar__User user;
	char hash[AUTH_HASH_MAX], token[JWT_MAX_TOKEN];
	const char *policy;
	int rv;

	memset(&u, 0, sizeof(u));
	if (store_session_get(j->a->svc.pool, req->session_id, &s) != 0 ||
	    strcmp(s.user_id, req->user_id) != 0 || s.revoked_ms != 0 ||
	    store_user_by_id(j->a->svc.pool, req->user_id, &u) != 0) {
		rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_UNAUTHENTICATED, "unauthorized",
		                "the session has ended");
		goto out;
	}
	if (throttle_refused(j->call, u.id))
		goto out;
	if (password_check(j->a, u.id, req->current_password, strlen(req->current_password)) != 0) {
		account_login_failed(j, u.id, "wrong_password", u.id);
		goto out;
	}
	if ((policy = password_policy(strlen(req->new_password))) != NULL) {
		rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_INVALID, policy,
		                strcmp(policy, "password_too_short") == 0
		                    ? "password must be at least 8 characters"
		                    : "password must be at most 128 bytes");
		goto out;
	}
	if (!account_password_usable(j->a, j->call, req->new_password))
		goto out;
	if ((rv = password_hash(j->a, req->new_password, strlen(req->new_password), hash,
	                        sizeof(hash))) == 0 &&
	    (rv = store_begin(j->a, &tx)) == 0) {
		rv = store_user_set_password(tx, u.id, hash);
		if (rv == 0)
			rv = store_sessions_revoke_user(tx, u.id, clock_unix_ms(), &gone);
		if (rv == 0)
			rv = tokens_new_session(j->a, tx, &u, ctx, req->fingerprint, &limit, &out,
			                        token, sizeof(token));
		if (rv == 0)
			rv = store_audit(tx, "auth.password.changed", u.id, u.id, ctx, "success",
			                 "");
		rv = store_end(tx, rv);
	}
	OPENSSL_cleanse(hash, sizeof(hash));
	if (rv != 0) {
		log_warnx("password change: failed request_id=%s: %s", rpc_call_request_id(j->call),
		          err_str(rv));
		rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_INTERNAL, "internal",
		                "the password could not be changed");
		goto out;
	}
	tokens_publish_all(j->a, &gone, u.id, "password_changed");
	tokens_user_proto(&u, &user);
	out.user = &user;
	rpc_reply(j->call, &out.base);
	OPENSSL_cleanse(token, sizeof(token));
out:
	free(j);
}

void account_change_password(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	hashing_submit(call, in, arg, account_change_password_job);
}
