/*
 * session.c — the session methods that need no password: Refresh (rotate
 * the refresh token; a spent one presented again revokes the session),
 * Logout, Me, ListSessions, RevokeSession, and what gateways load to
 * verify tokens and refuse revoked sessions (PublicKeys, Revoked).
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/fingerprint.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/outbox.h"
#include "services/auth/auth.h"

#define SESSION_LIST_MAX 64
#define SESSION_REVOKED_PAGE 4096 /* ~150 KiB of ids: far below the RPC limit */
#define SESSION_REVOKED_IDS 24576 /* ~820 KiB: Revoked, for callers that do not page */

bool session_live(const struct store_session *s, uint64_t now)
{
	return s->revoked_ms == 0 && s->refreshed_ms + AUTH_IDLE_TTL_MS > now &&
	       s->created_ms + AUTH_ABSOLUTE_TTL_MS > now;
}

static void session_internal(struct rpc_call *call, const char *what, int rv)
{
	log_warnx("%s: failed request_id=%s: %s", what, rpc_call_request_id(call), err_str(rv));
	rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INTERNAL, "internal",
	                "the request could not be completed");
}

/* Revokes one session in its own transaction and tells every gateway. */
static int session_revoke_one(struct auth *a, const char *sid, const char *uid,
                              const Magnetar__RequestContext *ctx, const char *action,
                              const char *why)
{
	struct store_tx *tx;
	char detail[64];
	int rv;
	if ((rv = store_begin(a, &tx)) != 0)
		return rv;
	snprintf(detail, sizeof(detail), "reason=%s", why);
	rv = store_session_revoke(tx, sid, clock_unix_ms());
	if (rv == 0 && strcmp(action, "session.revoked") != 0)
		rv = store_audit(tx, action, uid, sid, ctx, "success", detail);
	if (rv == 0)
		rv = store_audit(tx, "session.revoked", uid, sid, ctx, "success", detail);
	if ((rv = store_end(tx, rv)) == 0) {
		tokens_publish_revoked(a, sid, uid, why);
	}
	return rv;
}

void session_refresh(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	const Magnetar__RefreshRequest *req = (const Magnetar__RefreshRequest *)in;
	const Magnetar__RequestContext *ctx = rpc_call_context(call);
	struct auth *a = arg;
	Magnetar__TokenReply out;
	Magnetar__User user;
	struct store_session s;
	struct store_user u;
	struct store_tx *tx;
	char sid[AUTH_ID_LEN], refresh[64], token[JWT_MAX_TOKEN];
	unsigned char hash[32], fresh[32];
	uint64_t now = clock_unix_ms();
	bool spent = false;
	int rv;

	tokens_refresh_hash(req->refresh_token, strlen(req->refresh_token), hash);
	if ((rv = store_begin(a, &tx)) != 0) {
		session_internal(call, "refresh", rv);
		return;
	}
	rv = store_refresh_take(tx, hash, sid, &spent, now);
	if (rv == 0 && spent) {
		/* A spent token again: stolen, or replayed. Either way the session
		 * can no longer be trusted (docs/api.md). */
		store_session_get_tx(tx, sid, &s);
		if (store_session_revoke(tx, sid, now) == 0)
			store_audit(tx, "session.revoked", s.user_id, sid, ctx, "success",
			            "reason=refresh_token_reused");
		store_audit(tx, "auth.refresh.reused", s.user_id, sid, ctx, "failure", "");
		if (store_end(tx, 0) == 0) {
			tokens_publish_revoked(a, sid, s.user_id, "refresh_token_reused");
		}
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_UNAUTHENTICATED,
		                "refresh_token_reused",
		                "refresh token already used; session revoked");
		return;
	}
	if (rv == 0)
		rv = store_session_get_tx(tx, sid, &s);
	if (rv == ERR_NOTFOUND || (rv == 0 && !session_live(&s, now))) {
		store_end(tx, ERR_NOTFOUND);
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_UNAUTHENTICATED,
		                "invalid_refresh_token", "refresh token unknown or expired");
		return;
	}
	/* A refresh never re-binds the session's fingerprint (docs/api.md). */
	if (rv == 0)
		rv = store_user_by_id(a->svc.pool, s.user_id, &u);
	if (rv == 0)
		rv = tokens_refresh_new(refresh, fresh);
	if (rv == 0)
		rv = store_refresh_insert(tx, fresh, sid, now);
	if (rv == 0)
		rv = store_session_touch(tx, sid, now);
	if (rv == 0)
		rv = tokens_issue(a, &u, &s, refresh, &out, token, sizeof(token));
	if ((rv = store_end(tx, rv)) != 0) {
		session_internal(call, "refresh", rv);
		return;
	}
	tokens_user_proto(&u, &user);
	out.user = &user;
	rpc_reply(call, &out.base);
	OPENSSL_cleanse(refresh, sizeof(refresh));
	OPENSSL_cleanse(token, sizeof(token));
}

/* Loads the caller's session; answers and returns false when it is not an
 * active session of that user. */
static bool session_of_caller(struct rpc_call *call, struct auth *a,
                              const Magnetar__SessionRef *ref, struct store_session *s)
{
	int rv = store_session_get(a->svc.pool, ref->session_id, s);
	if (rv == 0 && strcmp(s->user_id, ref->user_id) == 0 && session_live(s, clock_unix_ms()))
		return true;
	if (rv != 0 && rv != ERR_NOTFOUND)
		session_internal(call, "session", rv);
	else
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_NOT_FOUND, "not_found",
		                "no such session");
	return false;
}

void session_logout(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	const Magnetar__SessionRef *ref = (const Magnetar__SessionRef *)in;
	Magnetar__Empty out = MAGNETAR__EMPTY__INIT;
	struct store_session s;
	int rv;
	if (!session_of_caller(call, arg, ref, &s))
		return;
	rv = session_revoke_one(arg, s.id, s.user_id, rpc_call_context(call), "auth.logout",
	                        "logout");
	if (rv != 0 && rv != ERR_NOTFOUND) {
		session_internal(call, "logout", rv);
		return;
	}
	rpc_reply(call, &out.base);
}

void session_proto(const struct store_session *s, Magnetar__Session *out)
{
	magnetar__session__init(out);
	out->id = (char *)s->id;
	out->user_id = (char *)s->user_id;
	out->created_at_ms = s->created_ms;
	out->last_seen_at_ms = s->last_seen_ms;
	out->ip = (char *)s->ip;
	out->user_agent = (char *)s->user_agent;
	out->risk_score = s->risk_score;
	out->stepped_up_at_ms = s->rebound_ms;
}

void session_me(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	const Magnetar__SessionRef *ref = (const Magnetar__SessionRef *)in;
	Magnetar__MeReply out = MAGNETAR__ME_REPLY__INIT;
	Magnetar__User user;
	Magnetar__Session session;
	struct store_session s;
	struct store_user u;
	int rv;

	if (!session_of_caller(call, arg, ref, &s))
		return;
	if ((rv = store_user_by_id(((struct auth *)arg)->svc.pool, s.user_id, &u)) != 0) {
		session_internal(call, "me", rv);
		return;
	}
	tokens_user_proto(&u, &user);
	session_proto(&s, &session);
	out.user = &user;
	out.session = &session;
	rpc_reply(call, &out.base);
}

void session_list_user(struct rpc_call *call, struct auth *a, const char *user_id)
{
	Magnetar__SessionsReply out = MAGNETAR__SESSIONS_REPLY__INIT;
	struct store_session *s = calloc(SESSION_LIST_MAX, sizeof(*s));
	Magnetar__Session *items = calloc(SESSION_LIST_MAX, sizeof(*items));
	Magnetar__Session **ptrs = calloc(SESSION_LIST_MAX, sizeof(*ptrs));
	int n;

	if (s == NULL || items == NULL || ptrs == NULL) {
		session_internal(call, "sessions", ERR_NOMEM);
		goto out;
	}
	n = store_sessions_of(a->svc.pool, NULL, user_id, clock_unix_ms(), s, SESSION_LIST_MAX);
	if (n < 0) {
		session_internal(call, "sessions", n);
		goto out;
	}
	for (int i = 0; i < n; i++) {
		session_proto(&s[i], &items[i]);
		ptrs[i] = &items[i];
	}
	out.n_sessions = (size_t)n;
	out.sessions = ptrs;
	rpc_reply(call, &out.base);
out:
	free(s);
	free(items);
	free(ptrs);
}

void session_list(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	const Magnetar__SessionRef *ref = (const Magnetar__SessionRef *)in;
	struct auth *a = arg;
	struct store_session caller;
	int rv;

	/* The caller's own session must be live: a gateway whose revoked set is
	 * behind relies on auth's check. An ended one is 401, not 404: it is the
	 * caller who is refused, not a session that was asked about. */
	if ((rv = store_session_get(a->svc.pool, ref->session_id, &caller)) != 0 &&
	    rv != ERR_NOTFOUND) {
		session_internal(call, "sessions", rv);
		return;
	}
	if (rv != 0 || strcmp(caller.user_id, ref->user_id) != 0 ||
	    !session_live(&caller, clock_unix_ms())) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_UNAUTHENTICATED, "unauthorized",
		                "the session has ended");
		return;
	}
	session_list_user(call, a, ref->user_id);
}

void session_revoke(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	const Magnetar__SessionRef *ref = (const Magnetar__SessionRef *)in;
	Magnetar__Empty out = MAGNETAR__EMPTY__INIT;
	struct store_session s;
	int rv;
	/* Only the caller's own sessions: anyone else's is "not found" (docs/api.md). */
	if (!session_of_caller(call, arg, ref, &s))
		return;
	rv = session_revoke_one(arg, s.id, s.user_id, rpc_call_context(call), "session.revoked",
	                        "user");
	if (rv != 0 && rv != ERR_NOTFOUND) {
		session_internal(call, "revoke", rv);
		return;
	}
	rpc_reply(call, &out.base);
}

void session_public_keys(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	struct auth *a = arg;
	Magnetar__PublicKeysReply out = MAGNETAR__PUBLIC_KEYS_REPLY__INIT;
	Magnetar__PublicKey items[16], *ptrs[16];
	unsigned char raw[16][32];
	char kids[16][17];
	(void)in;
	int64_t now = (int64_t)time(NULL);
	size_t listed = 0, skip;
	keys_refresh(a);
	pthread_rwlock_rdlock(&a->keys_lock);
	for (size_t k = 0; k < a->nkeys; k++)
		listed += keys_verifying(&a->keys[k], now);
	/* Oldest first, the signing key last (magctl says so); with more than
	 * 16, the oldest are the ones left out. */
	skip = listed > 16 ? listed - 16 : 0;
	for (size_t k = 0; k < a->nkeys; k++) {
		size_t i = out.n_keys, len = 32;
		if (!keys_verifying(&a->keys[k], now) || (skip > 0 && skip--))
			continue;
		magnetar__public_key__init(&items[i]);
		if (EVP_PKEY_get_raw_public_key(a->keys[k].pkey, raw[i], &len) != 1) {
			pthread_rwlock_unlock(&a->keys_lock);
			session_internal(call, "public keys", ERR_INTERNAL);
			return;
		}
		snprintf(kids[i], sizeof(kids[i]), "%s", a->keys[k].kid);
		items[i].kid = kids[i];
		items[i].key.data = raw[i];
		items[i].key.len = len;
		ptrs[out.n_keys++] = &items[i];
	}
	pthread_rwlock_unlock(&a->keys_lock);
	out.keys = ptrs;
	rpc_reply(call, &out.base);
}

/* One page of RevokedReply: the revoked sessions by id (dead, so the id is
 * no reusable reference) and the re-bound ones by tag with their current
 * hashes (a gateway that missed session.rebound learns them here), never a
 * live session's id (a gateway could otherwise act as that user). */
static void session_revoked_reply(struct rpc_call *call, struct auth *a, const char *after,
                                  uint32_t limit)
{
	Magnetar__RevokedReply out = MAGNETAR__REVOKED_REPLY__INIT;
	int max = limit == 0 || limit > SESSION_REVOKED_PAGE ? SESSION_REVOKED_PAGE : (int)limit;
	struct store_session *s = calloc((size_t)max, sizeof(*s));
	bool *rebound = calloc((size_t)max, sizeof(*rebound));
	char **ids = calloc((size_t)max, sizeof(*ids));
	Magnetar__SessionEvent *ev = calloc((size_t)max, sizeof(*ev));
	Magnetar__SessionEvent **evp = calloc((size_t)max, sizeof(*evp));
	char(*hashes)[4][33] = calloc((size_t)max, sizeof(*hashes));
	int n;

	if (s == NULL || rebound == NULL || ids == NULL || ev == NULL || evp == NULL ||
	    hashes == NULL) {
		session_internal(call, "revoked", ERR_NOMEM);
		goto out;
	}
	/* The sequence is read first: an event published while the page is read
	 * is then also seen after it, never lost between the two. */
	out.publisher = a->svc.instance;
	out.sequence = events_pub_sequence(a->events);
	if ((n = store_revoked_page(a->svc.pool, clock_unix_ms() - AUTH_ABSOLUTE_TTL_MS, after, s,
	                            rebound, max)) < 0) {
		session_internal(call, "revoked", n);
		goto out;
	}
	for (int i = 0; i < n; i++) {
		if (!rebound[i]) {
			ids[out.n_session_ids++] = s[i].id;
			continue;
		}
		magnetar__session_event__init(&ev[i]);
		risk_hashes(a, &s[i], hashes[i][0], hashes[i][1], hashes[i][2]);
		fingerprint_hash(a->fp_key, "sid", s[i].id, hashes[i][3]);
		ev[i].session_tag = hashes[i][3];
		ev[i].reason = "step_up";
		ev[i].fip = hashes[i][0];
		ev[i].fua = hashes[i][1];
		ev[i].fhd = hashes[i][2];
		evp[out.n_rebound++] = &ev[i];
	}
	out.session_ids = ids;
	out.rebound = evp;
	out.next = n == max ? s[n - 1].id : "";
	rpc_reply(call, &out.base);
out:
	free(s);
	free(rebound);
	free(ids);
	free(ev);
	free(evp);
	free(hashes);
}

void session_revoked_page(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	const Magnetar__RevokedRequest *req = (const Magnetar__RevokedRequest *)in;
	session_revoked_reply(call, arg, req->after, req->limit);
}

/* For a caller that does not page (the terminal, which wants only the
 * revoked ids): as many ids as fit well within the RPC size limit (34
 * bytes each on the wire), read in pages; `next` tells when there is more.
 * Never one reply past the limit, as the unbounded list once was. */
void session_revoked(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	struct auth *a = arg;
	Magnetar__RevokedReply out = MAGNETAR__REVOKED_REPLY__INIT;
	struct store_session *s = calloc(SESSION_REVOKED_PAGE, sizeof(*s));
	bool *rebound = calloc(SESSION_REVOKED_PAGE, sizeof(*rebound));
	char(*ids)[AUTH_ID_LEN] = calloc(SESSION_REVOKED_IDS, sizeof(*ids));
	char **ptrs = calloc(SESSION_REVOKED_IDS, sizeof(*ptrs));
	char after[AUTH_ID_LEN] = "";
	int n, max;
	(void)in;

	if (s == NULL || rebound == NULL || ids == NULL || ptrs == NULL) {
		session_internal(call, "revoked", ERR_NOMEM);
		goto out;
	}
	out.publisher = a->svc.instance; /* read first: see session_revoked_reply */
	out.sequence = events_pub_sequence(a->events);
	out.next = "";
	do {
		max = SESSION_REVOKED_IDS - (int)out.n_session_ids;
		if (max > SESSION_REVOKED_PAGE)
			max = SESSION_REVOKED_PAGE;
		if ((n = store_revoked_page(a->svc.pool, clock_unix_ms() - AUTH_ABSOLUTE_TTL_MS,
		                            after, s, rebound, max)) < 0) {
			session_internal(call, "revoked", n);
			goto out;
		}
		for (int i = 0; i < n; i++) {
			if (rebound[i])
				continue;
			memcpy(ids[out.n_session_ids], s[i].id, AUTH_ID_LEN);
			ptrs[out.n_session_ids] = ids[out.n_session_ids];
			out.n_session_ids++;
		}
		if (n == max)
			memcpy(after, s[n - 1].id, AUTH_ID_LEN);
		if (n == max && out.n_session_ids == SESSION_REVOKED_IDS)
			out.next = after; /* full: the rest is for RevokedPage */
	} while (n == max && out.n_session_ids < SESSION_REVOKED_IDS);
	out.session_ids = ptrs;
	rpc_reply(call, &out.base);
out:
	free(s);
	free(rebound);
	free(ids);
	free(ptrs);
}
