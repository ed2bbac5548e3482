/*
 * tokens.c — what a session is made of: the normalised username rule, the
 * session row, the Ed25519 access token (common/jwt.h) with its keyed
 * fingerprint hashes, and 256-bit refresh tokens stored only as SHA-256.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/fingerprint.h"
#include "common/ids.h"
#include "common/jwt.h"
#include "services/auth/jwtsign.h"
#include "common/log.h"
#include "services/auth/auth.h"

int tokens_normalise_username(const char *in, char *out, size_t cap)
{
	size_t n = strlen(in);
	/* ASCII only, case-folded: no homoglyphs, no Unicode normalisation
	 * questions, and `Alice` and `alice` are the same account. */
	if (n < 3 || n > AUTH_USERNAME_MAX || n >= cap)
		return ERR_INVAL;
	for (size_t i = 0; i < n; i++) {
		char c = in[i];
		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      ((c == '.' || c == '_' || c == '-') && i > 0)))
			return ERR_INVAL;
		out[i] = c;
	}
	out[n] = '\0';
	return 0;
}

void tokens_refresh_hash(const char *token, size_t len, unsigned char hash[32])
{
	SHA256((const unsigned char *)token, len, hash);
}

int tokens_refresh_new(char out[64], unsigned char hash[32])
{
	unsigned char raw[32];
	int rv;
	if ((rv = ids_random(raw, sizeof(raw))) != 0)
		return rv;
	jwt_b64url_encode(raw, sizeof(raw), out);
	OPENSSL_cleanse(raw, sizeof(raw));
	tokens_refresh_hash(out, strlen(out), hash);
	return 0;
}

void tokens_user_proto(const struct store_user *u, Magnetar__User *out)
{
	magnetar__user__init(out);
	out->id = (char *)u->id;
	out->username = (char *)u->username;
	out->role = (char *)u->role;
	out->terminal = u->terminal;
	out->totp_enabled = u->totp_enabled;
	out->created_at_ms = u->created_ms;
}

int tokens_issue(struct auth *a, const struct store_user *u, const struct store_session *s,
                 char *refresh, Magnetar__TokenReply *out, char *buf, size_t buflen)
{
	struct jwt_claims c = {0};
	const struct auth_key *k;
	char *tok;
	int rv;

	snprintf(c.sub, sizeof(c.sub), "%s", u->id);
	snprintf(c.sid, sizeof(c.sid), "%s", s->id);
	snprintf(c.role, sizeof(c.role), "%s", u->role);
	if ((rv = ids_random_hex(c.jti, 16)) != 0)
		return rv;
	risk_hashes(a, s, c.fip, c.fua, c.fhd);
	c.iat = (int64_t)time(NULL);
	c.exp = c.iat + AUTH_ACCESS_TTL_S;
	c.terminal = u->terminal;
	keys_refresh(a);
	pthread_rwlock_rdlock(&a->keys_lock);
	k = &a->keys[a->nkeys - 1];
	rv = jwtsign_token(k->pkey, k->kid, &c, &tok);
	pthread_rwlock_unlock(&a->keys_lock);
	if (rv != 0)
		return rv;
	if (strlen(tok) >= buflen) {
		free(tok);
		return ERR_INVAL;
	}
	strcpy(buf, tok);
	free(tok);
	magnetar__token_reply__init(out);
	out->access_token = buf;
	out->expires_in = AUTH_ACCESS_TTL_S;
	out->refresh_token = refresh;
	out->session_id = (char *)s->id;
	return 0;
}

void tokens_publish_all(struct auth *a, const struct tokens_revoked *gone, const char *uid,
                        const char *why)
{
	for (int i = 0; i < gone->n; i++)
		tokens_publish_revoked(a, gone->ids[i], uid, why);
}

void tokens_publish_user_changed(struct auth *a, const char *uid)
{
	Magnetar__SessionEvent ev = MAGNETAR__SESSION_EVENT__INIT;
	uint8_t buf[128];
	ev.user_id = (char *)uid;
	ev.reason = "user_changed";
	if (magnetar__session_event__get_packed_size(&ev) <= sizeof(buf))
		events_publish(a->events, "user.changed", buf,
		               magnetar__session_event__pack(&ev, buf));
}

void tokens_publish_revoked(struct auth *a, const char *sid, const char *uid, const char *why)
{
	Magnetar__SessionEvent ev = MAGNETAR__SESSION_EVENT__INIT;
	uint8_t buf[256];
	ev.session_id = (char *)sid;
	ev.user_id = (char *)uid;
	ev.reason = (char *)why;
	if (magnetar__session_event__get_packed_size(&ev) > sizeof(buf))
		return;
	events_publish(a->events, "session.revoked", buf, magnetar__session_event__pack(&ev, buf));
}

int tokens_new_session(struct auth *a, struct store_tx *tx, const struct store_user *u,
                       const Magnetar__RequestContext *ctx, const char *fingerprint,
                       struct tokens_revoked *gone, Magnetar__TokenReply *out, char *buf,
                       size_t buflen)
{
	/* Static per thread: the reply points into it until packed. */
	static _Thread_local struct store_session s;
	static _Thread_local char refresh[64];
	struct store_session active[64];
	unsigned char hash[32];
	uint64_t now = clock_unix_ms();
	int n, rv;

	memset(&s, 0, sizeof(s));
	if ((rv = ids_random_hex(s.id, 16)) != 0)
		return rv;
	snprintf(s.user_id, sizeof(s.user_id), "%s", u->id);
	s.created_ms = s.last_seen_ms = s.refreshed_ms = now;
	snprintf(s.ip, sizeof(s.ip), "%s", ctx->client_ip != NULL ? ctx->client_ip : "");
	snprintf(s.user_agent, sizeof(s.user_agent), "%s",
	         ctx->user_agent != NULL ? ctx->user_agent : "");
	snprintf(s.fingerprint, sizeof(s.fingerprint), "%s",
	         fingerprint != NULL ? fingerprint : "");
	/* At most max_sessions: the oldest go first (docs/api.md "Limits"). */
	n = store_sessions_of(a->svc.pool, tx, u->id, now, active, 64);
	if (n < 0)
		return n;
	gone->n = 0;
	for (int i = 0; i + auth_vars(a)->max_sessions <= n && gone->n < TOKENS_REVOKED_MAX; i++) {
		if ((rv = store_session_revoke(tx, active[i].id, now)) != 0 ||
		    (rv = store_audit(tx, "session.revoked", u->id, active[i].id, ctx, "success",
		                      "reason=session_limit")) != 0)
			return rv;
		memcpy(gone->ids[gone->n++], active[i].id, AUTH_ID_LEN);
	}
	if ((rv = store_session_insert(tx, &s)) != 0 ||
	    (rv = tokens_refresh_new(refresh, hash)) != 0 ||
	    (rv = store_refresh_insert(tx, hash, s.id, now)) != 0 ||
	    (rv = store_audit(tx, "session.created", u->id, s.id, ctx, "success", "")) != 0)
		return rv;
	return tokens_issue(a, u, &s, refresh, out, buf, buflen);
}
