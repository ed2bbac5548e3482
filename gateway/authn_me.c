/*
 * authn_me.c — GET /api/v1/auth/me answers cached per session (30 s), so
 * the authenticated hot path needs no RPC. Never served while the revoked
 * set is not current, never kept for a session with a reported risk score;
 * dropped when auth says the session or its user changed, or the score
 * changes.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/fingerprint.h"
#include "gateway/authn.h"
#include "gateway/gateway.h"

void authn_me_drop(struct authn *a, const char *sid)
{
	size_t slot = authn_hash(a, sid) % AUTHN_ME_SLOTS;
	pthread_mutex_lock(&a->me_mu);
	atomic_fetch_add(&a->me_epoch, 1);
	if (strcmp(a->me[slot].sid, sid) == 0) {
		free(a->me[slot].body);
		a->me[slot].body = NULL;
		a->me[slot].sid[0] = '\0';
	}
	pthread_mutex_unlock(&a->me_mu);
}

/* A user's account changed (TOTP, say): every cached /me of theirs goes.
 * Rare, so a scan of the table is fine. */
void authn_me_drop_user(struct authn *a, const char *uid)
{
	pthread_mutex_lock(&a->me_mu);
	atomic_fetch_add(&a->me_epoch, 1);
	for (size_t i = 0; i < AUTHN_ME_SLOTS; i++) {
		if (a->me[i].body == NULL || strcmp(a->me[i].uid, uid) != 0)
			continue;
		free(a->me[i].body);
		a->me[i].body = NULL;
		a->me[i].sid[0] = '\0';
	}
	pthread_mutex_unlock(&a->me_mu);
}

/* A session re-bound by a step-up, known by its tag: its cached /me (the
 * risk score) goes. Rare, so a scan of the table is fine. */
void authn_me_drop_tag(struct authn *a, const char *tag)
{
	pthread_mutex_lock(&a->me_mu);
	atomic_fetch_add(&a->me_epoch, 1);
	for (size_t i = 0; i < AUTHN_ME_SLOTS; i++) {
		if (a->me[i].body == NULL || strcmp(a->me[i].tag, tag) != 0)
			continue;
		free(a->me[i].body);
		a->me[i].body = NULL;
		a->me[i].sid[0] = '\0';
	}
	pthread_mutex_unlock(&a->me_mu);
}

void authn_user_changed(struct gateway *gw, const char *uid)
{
	authn_me_drop_user(gw->authn, uid);
}

char *authn_me_get(struct gateway *gw, const char *sid, uint64_t *epoch)
{
	struct authn *a = gw->authn;
	size_t slot = authn_hash(a, sid) % AUTHN_ME_SLOTS;
	char *copy = NULL;

	*epoch = atomic_load(&a->me_epoch);
	/* While the revocation set may be stale, auth is asked every time. A
	 * risky session's answer is never here: authn_me_put refuses it, and a
	 * report drops what was kept (bumping the epoch, so that a put already
	 * under way is refused too). */
	if (!authn_current(a))
		return NULL;
	pthread_mutex_lock(&a->me_mu);
	if (a->me[slot].body != NULL && strcmp(a->me[slot].sid, sid) == 0 &&
	    a->me[slot].expires_ms > clock_mono_ms())
		copy = strdup(a->me[slot].body);
	pthread_mutex_unlock(&a->me_mu);
	return copy;
}

void authn_me_put(struct gateway *gw, const char *sid, const char *uid, const char *body,
                  uint64_t epoch)
{
	struct authn *a = gw->authn;
	size_t slot = authn_hash(a, sid) % AUTHN_ME_SLOTS;
	char *copy, tag[33];

	fingerprint_hash(a->fp_key, "sid", sid, tag);
	if (strlen(sid) >= AUTHN_SID_LEN || strlen(uid) >= AUTHN_SID_LEN || authn_risky(a, sid) ||
	    (copy = strdup(body)) == NULL)
		return;
	pthread_mutex_lock(&a->me_mu);
	if (atomic_load(&a->me_epoch) != epoch) {
		/* Something was dropped while the RPC ran: this answer may be from
		 * before it. The next /me asks auth again. */
		pthread_mutex_unlock(&a->me_mu);
		free(copy);
		return;
	}
	free(a->me[slot].body);
	strcpy(a->me[slot].sid, sid);
	strcpy(a->me[slot].uid, uid);
	memcpy(a->me[slot].tag, tag, sizeof(tag));
	a->me[slot].body = copy;
	a->me[slot].expires_ms = clock_mono_ms() + AUTHN_ME_TTL_MS;
	pthread_mutex_unlock(&a->me_mu);
}
