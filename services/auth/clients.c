/*
 * clients.c — token introspection (RFC 7662) for an app's own services
 * (docs/apps.md): the Introspect method, and the operator's methods behind
 * `magctl client create|rotate|delete|list` that register its callers.
 *
 * A client's secret is 32 random bytes in base64url, shown once, stored
 * only as an argon2id hash. An argon2id verification per introspection
 * would cost milliseconds, so a secret once verified is remembered as an
 * HMAC under a key drawn at start (never the secret itself), together with
 * the hash it was verified against: a rotation or a deletion changes or
 * removes that hash, and the memo no longer matches. Anything else (a wrong
 * secret, an unknown client, checked against a dummy hash at the same
 * cost) is verified on the hashing pool, counted by the failure throttle
 * per client name and network, refused as `invalid_client`, and audited.
 *
 * Every introspection is audited with the client as actor. The answer is
 * auth's own view, not a gateway's: the token's signature and expiry with
 * auth's keys, then the session as the database has it now (revoked,
 * expired, its user deleted: inactive).
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/ids.h"
#include "common/jwt.h"
#include "common/log.h"
#include "services/auth/auth.h"

#define CLIENTS_SECRET_RAW 32
#define CLIENTS_SECRET_MAX 128 /* longer than any secret we issue: refused */
#define CLIENTS_MEMO 32        /* verified clients remembered */
#define CLIENTS_LIST_MAX 1000

struct clients_memo_entry {
	char name[AUTH_USERNAME_MAX + 1]; /* "" = empty */
	char hash[AUTH_HASH_MAX];         /* the stored hash it was verified against */
	unsigned char mac[32];            /* HMAC of the secret under clients_mac_key */
};

static pthread_mutex_t clients_mu = PTHREAD_MUTEX_INITIALIZER;
static struct clients_memo_entry clients_memo[CLIENTS_MEMO];
static size_t clients_memo_next;
static unsigned char clients_mac_key[32];

int clients_init(void)
{
	return ids_random(clients_mac_key, sizeof(clients_mac_key));
}

/* false (out zeroed) when OpenSSL fails: then nothing is remembered or matched. */
static bool clients_mac(const uint8_t *secret, size_t len, unsigned char out[32])
{
	unsigned int n = 32;
	if (HMAC(EVP_sha256(), clients_mac_key, sizeof(clients_mac_key), secret, len, out, &n) !=
	        NULL &&
	    n == 32)
		return true;
	memset(out, 0, 32);
	return false;
}

/* Whether `secret` was verified for `name` while its stored hash was `hash`. */
static bool clients_memo_match(const char *name, const char *hash, const uint8_t *secret,
                               size_t len)
{
	unsigned char mac[32];
	bool ok = false;

	if (!clients_mac(secret, len, mac))
		return false;
	pthread_mutex_lock(&clients_mu);
	for (size_t i = 0; i < CLIENTS_MEMO && !ok; i++) {
		const struct clients_memo_entry *e = &clients_memo[i];
		ok = e->name[0] != '\0' && strcmp(e->name, name) == 0 &&
		     strcmp(e->hash, hash) == 0 && CRYPTO_memcmp(e->mac, mac, sizeof(mac)) == 0;
	}
	pthread_mutex_unlock(&clients_mu);
	OPENSSL_cleanse(mac, sizeof(mac));
	return ok;
}

static void clients_memo_put(const char *name, const char *hash, const uint8_t *secret, size_t len)
{
	struct clients_memo_entry *e = NULL;
	unsigned char mac[32];

	if (!clients_mac(secret, len, mac))
		return; /* not remembered: the next call verifies again */
	pthread_mutex_lock(&clients_mu);
	for (size_t i = 0; i < CLIENTS_MEMO && e == NULL; i++)
		if (strcmp(clients_memo[i].name, name) == 0)
			e = &clients_memo[i];
	if (e == NULL)
		e = &clients_memo[clients_memo_next++ % CLIENTS_MEMO];
	snprintf(e->name, sizeof(e->name), "%s", name);
	snprintf(e->hash, sizeof(e->hash), "%s", hash);
	memcpy(e->mac, mac, sizeof(mac));
	pthread_mutex_unlock(&clients_mu);
	OPENSSL_cleanse(mac, sizeof(mac));
}

/* ---- Introspect ----------------------------------------------------------- */

/* What a call is counted and audited under: "client:<id>" when the id is a
 * well-formed name (as magctl makes them), else "client:?", so no hostile
 * byte reaches the audit log and malformed ids share one throttle count. */
static void clients_account(const char *id, char account[AUTH_USERNAME_MAX + 8])
{
	char norm[AUTH_USERNAME_MAX + 1];
	bool named = strlen(id) <= AUTH_USERNAME_MAX &&
	             tokens_normalise_username(id, norm, sizeof(norm)) == 0 &&
	             strcmp(norm, id) == 0;
	snprintf(account, AUTH_USERNAME_MAX + 8, "client:%s", named ? id : "?");
}

static const char *clients_ip(struct rpc_call *call)
{
	const Magnetar__RequestContext *ctx = rpc_call_context(call);
	return ctx != NULL && ctx->client_ip != NULL ? ctx->client_ip : "";
}

static int clients_audit(struct auth *a, struct rpc_call *call, const char *account,
                         const char *target, const char *outcome, const char *detail)
{
	struct store_tx *tx;
	int rv;

	if ((rv = store_begin(a, &tx)) != 0)
		return rv;
	return store_end(tx, store_audit(tx, "auth.introspect", account, target,
	                                 rpc_call_context(call), outcome, detail));
}

/* The client is known: what auth knows of the token now. An answer whose
 * audit event could not be written is not given (every call is on record). */
static void clients_answer(struct rpc_call *call, struct auth *a,
                           const Magnetar__IntrospectRequest *req, const char *account)
{
	Magnetar__IntrospectReply out = MAGNETAR__INTROSPECT_REPLY__INIT;
	Magnetar__User user;
	Magnetar__Session session;
	struct jwt_claims c;
	struct store_session s;
	struct store_user u;
	char detail[32];
	int rv;

	out.active = keys_verify_token(a, req->token, &c) == 0 &&
	             store_session_get(a->svc.pool, c.sid, &s) == 0 &&
	             strcmp(s.user_id, c.sub) == 0 && session_live(&s, clock_unix_ms()) &&
	             store_user_by_id(a->svc.pool, s.user_id, &u) == 0;
	if (out.active) {
		tokens_user_proto(&u, &user);
		session_proto(&s, &session);
		out.user = &user;
		out.session = &session;
		out.issued_at = c.iat;
		out.expires_at = c.exp;
	}
	OPENSSL_cleanse(&c, sizeof(c));
	snprintf(detail, sizeof(detail), "active=%s", out.active ? "true" : "false");
	if ((rv = clients_audit(a, call, account, out.active ? s.id : "-", "success", detail)) !=
	    0) {
		log_warnx("introspect: not recorded, not answered request_id=%s: %s",
		          rpc_call_request_id(call), err_str(rv));
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_UNAVAILABLE, "service_unavailable",
		                "the call could not be recorded");
		return;
	}
	rpc_reply(call, &out.base);
}

/* A failed client: counted for the throttle, audited, refused. */
static void clients_refuse(struct rpc_call *call, struct auth *a, const char *account)
{
	throttle_failed(account, clients_ip(call));
	/* Refused either way: a refusal tells nothing, so it is not withheld. */
	if (clients_audit(a, call, account, "-", "failure", "reason=invalid_client") != 0)
		log_warnx("introspect: a refused client was not recorded request_id=%s",
		          rpc_call_request_id(call));
	rpc_reply_error(call, MAGNETAR__STATUS__STATUS_UNAUTHENTICATED, "invalid_client",
	                "client authentication failed");
}

/* The slow path, on the hashing pool: argon2id against the stored hash, or
 * the dummy one for a name that is not a client. The throttle is asked
 * again here, as the login does: guesses queued before the limit was
 * reached meet it now rather than each costing a verification. */
static void clients_introspect_job(struct workq_job *job)
{
	struct hashing_job *j = (struct hashing_job *)job;
	const Magnetar__IntrospectRequest *req = (const Magnetar__IntrospectRequest *)j->in;
	char hash[AUTH_HASH_MAX], account[AUTH_USERNAME_MAX + 8];
	bool known;
	int rv;

	clients_account(req->client_id, account);
	if (throttle_refused(j->call, account)) {
		free(j);
		return;
	}
	known = store_client_secret_hash(j->a->svc.pool, req->client_id, hash, sizeof(hash)) == 0;
	rv = password_verify(known ? hash : j->a->dummy_hash, (const char *)req->client_secret.data,
	                     req->client_secret.len);
	if (known && rv == 0) {
		throttle_succeeded(account, clients_ip(j->call));
		clients_memo_put(req->client_id, hash, req->client_secret.data,
		                 req->client_secret.len);
		clients_answer(j->call, j->a, req, account);
	} else {
		clients_refuse(j->call, j->a, account);
	}
	OPENSSL_cleanse(hash, sizeof(hash));
	free(j);
}

void clients_introspect(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	const Magnetar__IntrospectRequest *req = (const Magnetar__IntrospectRequest *)in;
	struct auth *a = arg;
	char hash[AUTH_HASH_MAX], account[AUTH_USERNAME_MAX + 8];
	bool memo;

	clients_account(req->client_id, account);
	if (throttle_refused(call, account))
		return;
	if (strcmp(account, "client:?") == 0 || req->client_secret.len == 0 ||
	    req->client_secret.len > CLIENTS_SECRET_MAX ||
	    memchr(req->client_secret.data, '\0', req->client_secret.len) != NULL) {
		clients_refuse(call, a, account);
		return;
	}
	memo = store_client_secret_hash(a->svc.pool, req->client_id, hash, sizeof(hash)) == 0 &&
	       clients_memo_match(req->client_id, hash, req->client_secret.data,
	                          req->client_secret.len);
	OPENSSL_cleanse(hash, sizeof(hash));
	if (memo)
		clients_answer(call, a, req, account);
	else
		hashing_submit(call, in, arg, clients_introspect_job);
}

/* ---- the operator's methods ------------------------------------------------ */

static bool clients_name(struct rpc_call *call, const char *name, char *norm, size_t cap)
{
	if (tokens_normalise_username(name, norm, cap) == 0)
		return true;
	rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INVALID, "invalid_request",
	                "a client name is 3-32 of a-z 0-9 . _ -");
	return false;
}

/* create and rotate: a new secret, its hash stored, the secret answered once. */
static void clients_put_job(struct workq_job *job, bool create)
{
	struct hashing_job *j = (struct hashing_job *)job;
	const Magnetar__ClientRequest *req = (const Magnetar__ClientRequest *)j->in;
	Magnetar__ClientReply out = MAGNETAR__CLIENT_REPLY__INIT;
	unsigned char raw[CLIENTS_SECRET_RAW];
	char secret[64], hash[AUTH_HASH_MAX], norm[AUTH_USERNAME_MAX + 1];
	uint64_t now = clock_unix_ms();
	struct store_tx *tx;
	int rv;

	if (!clients_name(j->call, req->name, norm, sizeof(norm)))
		goto out;
	if ((rv = ids_random(raw, sizeof(raw))) == 0) {
		jwt_b64url_encode(raw, sizeof(raw), secret);
		rv = password_hash(j->a, secret, strlen(secret), hash, sizeof(hash));
	}
	if (rv == 0 && (rv = store_begin(j->a, &tx)) == 0) {
		rv = store_client_put(tx, norm, hash, create, now);
		if (rv == 0)
			rv =
			    store_audit(tx, create ? "client.created" : "client.rotated",
			                "operator", norm, rpc_call_context(j->call), "success", "");
		rv = store_end(tx, rv);
	}
	if (rv == ERR_EXISTS || rv == ERR_NOTFOUND) {
		rpc_reply_error(j->call,
		                rv == ERR_EXISTS ? MAGNETAR__STATUS__STATUS_CONFLICT
		                                 : MAGNETAR__STATUS__STATUS_NOT_FOUND,
		                rv == ERR_EXISTS ? "conflict" : "not_found",
		                rv == ERR_EXISTS ? "a client of that name exists"
		                                 : "no such client");
	} else if (rv != 0) {
		log_warnx("clients: %s failed request_id=%s: %s", create ? "create" : "rotate",
		          rpc_call_request_id(j->call), err_str(rv));
		rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_INTERNAL, "internal",
		                "the change failed");
	} else {
		out.name = norm;
		out.secret = secret;
		out.created_at_ms = create ? now : 0; /* rotate: unchanged, not read here */
		out.rotated_at_ms = now;
		rpc_reply(j->call, &out.base);
	}
out:
	OPENSSL_cleanse(raw, sizeof(raw));
	OPENSSL_cleanse(secret, sizeof(secret));
	OPENSSL_cleanse(hash, sizeof(hash));
	free(j);
}

static void clients_create_job(struct workq_job *job)
{
	clients_put_job(job, true);
}

static void clients_rotate_job(struct workq_job *job)
{
	clients_put_job(job, false);
}

void clients_create(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	hashing_submit(call, in, arg, clients_create_job);
}

void clients_rotate(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	hashing_submit(call, in, arg, clients_rotate_job);
}

void clients_delete(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	const Magnetar__ClientRequest *req = (const Magnetar__ClientRequest *)in;
	Magnetar__Empty out = MAGNETAR__EMPTY__INIT;
	char norm[AUTH_USERNAME_MAX + 1];
	struct store_tx *tx;
	int rv;

	if (!clients_name(call, req->name, norm, sizeof(norm)))
		return;
	if ((rv = store_begin(arg, &tx)) == 0) {
		rv = store_client_delete(tx, norm);
		if (rv == 0)
			rv = store_audit(tx, "client.deleted", "operator", norm,
			                 rpc_call_context(call), "success", "");
		rv = store_end(tx, rv);
	}
	if (rv == 0)
		rpc_reply(call, &out.base);
	else if (rv == ERR_NOTFOUND)
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_NOT_FOUND, "not_found",
		                "no such client");
	else
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INTERNAL, "internal",
		                "the change failed");
}

void clients_list(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	struct auth *a = arg;
	Magnetar__ClientsReply out = MAGNETAR__CLIENTS_REPLY__INIT;
	struct store_client *c = calloc(CLIENTS_LIST_MAX, sizeof(*c));
	Magnetar__ClientReply *items = calloc(CLIENTS_LIST_MAX, sizeof(*items));
	Magnetar__ClientReply **ptrs = calloc(CLIENTS_LIST_MAX, sizeof(*ptrs));
	int n;
	(void)in;

	if (c == NULL || items == NULL || ptrs == NULL ||
	    (n = store_client_list(a->svc.pool, c, CLIENTS_LIST_MAX)) < 0) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INTERNAL, "internal",
		                "the list failed");
		goto out;
	}
	for (int i = 0; i < n; i++) {
		magnetar__client_reply__init(&items[i]);
		items[i].name = c[i].name;
		items[i].created_at_ms = c[i].created_ms;
		items[i].rotated_at_ms = c[i].rotated_ms;
		ptrs[i] = &items[i];
	}
	out.n_clients = (size_t)n;
	out.clients = ptrs;
	rpc_reply(call, &out.base);
out:
	free(c);
	free(items);
	free(ptrs);
}
