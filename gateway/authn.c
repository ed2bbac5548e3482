/*
 * authn.c — who is calling: the Bearer access token verified locally with
 * auth's public keys (no RPC on the hot path), and refused when its session
 * was revoked. Revocations arrive on auth.events; a gap or silence there
 * (common/events.h) marks the list stale until it is reloaded over RPC.
 *
 * The list is current only while it was loaded (page by page: it may be
 * large) and auth's heartbeat is heard, from the publisher it was loaded
 * from, within the last 3 s. Routes that rest on the list alone (listing
 * and closing terminals, the cached /me) ask auth instead while it is not
 * (authn_current, authn_confirm), and answer 503 only when auth does not
 * answer; routes whose RPCs have auth check the session need not, and
 * opening a shell or reading the audit log always ask auth first. Fail
 * closed, without refusing a live session because of a late heartbeat.
 *
 * Re-bound sessions are named by a keyed tag of their id (auth sends no live
 * session id to gateways): fingerprint_hash(key, "sid", id).
 *
 * The parts, one file each, sharing struct authn through the private
 * gateway/authn.h: auth's public keys (authn_keys.c), the revoked and
 * re-bound set (authn_revoked.c), the verified-token cache
 * (authn_tokens.c), the risk score and its report (authn_risk.c) and the
 * /me cache (authn_me.c). This file starts and stops them, runs the
 * auth.events refresher, and holds the entry points the routes call.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.pb-c.h"
#include "common/clock.h"
#include "common/err.h"
#include "common/events.h"
#include "common/fingerprint.h"
#include "common/ids.h"
#include "common/jwt.h"
#include "gateway/authn.h"
#include "gateway/gateway.h"

static void authn_wake(struct authn *a, bool keys, bool revoked)
{
	pthread_mutex_lock(&a->mu);
	a->want_keys |= keys;
	a->want_revoked |= revoked;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

static void authn_on_event(const char *pub, uint64_t seq, const char *topic, const uint8_t *payload,
                           size_t len, void *arg)
{
	struct authn *a = arg;
	Magnetar__SessionEvent *ev;
	(void)pub;
	(void)seq;
	bool revoked = strcmp(topic, "session.revoked") == 0;
	if (strcmp(topic, "keys.rotated") == 0) {
		authn_wake(a, true, false);
		return;
	}
	if (strcmp(topic, "user.changed") == 0) {
		if ((ev = magnetar__session_event__unpack(NULL, len, payload)) != NULL) {
			authn_me_drop_user(a, ev->user_id);
			magnetar__session_event__free_unpacked(ev, NULL);
		}
		return;
	}
	if (!revoked && strcmp(topic, "session.rebound") != 0)
		return;
	if ((ev = magnetar__session_event__unpack(NULL, len, payload)) == NULL)
		return;
	pthread_rwlock_wrlock(&a->lock);
	if (revoked)
		authn_revoked_add_locked(a, ev->session_id);
	else
		authn_rebound_add_locked(a, ev);
	pthread_rwlock_unlock(&a->lock);
	if (revoked)
		authn_me_drop(a, ev->session_id);
	else
		authn_me_drop_tag(a, ev->session_tag);
	magnetar__session_event__free_unpacked(ev, NULL);
}

static void authn_on_resync(const char *pub, enum events_resync_reason why, void *arg)
{
	struct authn *a = arg;
	(void)pub;
	/* Something may have been missed: stale until reloaded. A new publisher
	 * (auth restarted) may also have new keys. Silence is told again each
	 * window while it lasts; the reload then succeeds, but the set stays
	 * not current (authn_current) until the publisher is heard again. */
	authn_stale(a);
	authn_wake(a, why == EVENTS_RESYNC_NEW_PUBLISHER, true);
}

static void *authn_main(void *arg)
{
	struct authn *a = arg;
	uint64_t keys_at = 0;

	pthread_mutex_lock(&a->mu);
	while (!a->stop) {
		bool keys = a->want_keys || a->nkeys == 0 ||
		            clock_mono_ms() - keys_at >= AUTHN_KEYS_REFRESH_MS;
		bool revoked = a->want_revoked || !atomic_load(&a->synced);
		a->want_keys = a->want_revoked = false;
		pthread_mutex_unlock(&a->mu);
		if (keys && authn_load_keys(a) == 0)
			keys_at = clock_mono_ms();
		if (revoked)
			authn_load_revoked(a);
		pthread_mutex_lock(&a->mu);
		if (a->stop)
			break;
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 250 * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		if (!a->want_keys && !a->want_revoked)
			pthread_cond_timedwait(&a->cv, &a->mu, &until);
	}
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

int authn_start(struct gateway *gw)
{
	static const struct events_handlers h0 = {authn_on_event, authn_on_resync, NULL};
	struct events_handlers h = h0;
	struct authn *a;
	int rv;

	if ((a = calloc(1, sizeof(*a))) == NULL)
		return ERR_NOMEM;
	a->gw = gw;
	if ((rv = fingerprint_key_load(&gw->svc.conf, a->fp_key)) != 0 ||
	    (rv = ids_random(a->sk, sizeof(a->sk))) != 0) {
		OPENSSL_cleanse(a->fp_key, sizeof(a->fp_key));
		free(a);
		return rv;
	}
	pthread_mutex_init(&a->report_mu, NULL);
	pthread_mutex_init(&a->me_mu, NULL);
	pthread_mutex_init(&a->tok_mu, NULL);
	pthread_mutex_init(&a->risk_mu, NULL);
	pthread_rwlock_init(&a->lock, NULL);
	pthread_mutex_init(&a->load_mu, NULL);
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cv, NULL);
	h.arg = a;
	if ((rv = events_sub_open(gw->svc.conf.events_url[SVC_AUTH], NULL, 3000,
	                          SVC_SERVER_ROLES(SVC_AUTH), &h, &a->sub)) != 0)
		goto fail;
	/* Load before serving when auth is there; when it is not, the refresher
	 * keeps trying and auth itself vouches for each session meanwhile. */
	authn_load_keys(a);
	/* A starting gateway serves with a current set: loaded, and auth's
	 * heartbeat heard (within a second of the subscription). Hearing auth
	 * first is a resync (a new publisher) that voids a load in progress:
	 * loaded again then. Not waited for when auth does not answer. */
	for (uint64_t t0 = clock_mono_ms();
	     !authn_current(a) && clock_mono_ms() - t0 < AUTHN_START_WAIT_MS;) {
		if (!atomic_load(&a->synced) && authn_load_revoked(a) != 0)
			break;
		if (!authn_current(a))
			nanosleep(&(struct timespec){.tv_nsec = 10 * 1000000L}, NULL);
	}
	if (pthread_create(&a->thread, NULL, authn_main, a) != 0) {
		rv = ERR_NOMEM;
		events_sub_close(a->sub);
		goto fail;
	}
	gw->authn = a;
	return 0;
fail:
	OPENSSL_cleanse(&a->sk, sizeof(a->sk));
	pthread_cond_destroy(&a->cv);
	pthread_mutex_destroy(&a->mu);
	pthread_rwlock_destroy(&a->lock);
	pthread_mutex_destroy(&a->load_mu);
	pthread_mutex_destroy(&a->report_mu);
	pthread_mutex_destroy(&a->me_mu);
	pthread_mutex_destroy(&a->tok_mu);
	pthread_mutex_destroy(&a->risk_mu);
	OPENSSL_cleanse(a->fp_key, sizeof(a->fp_key));
	free(a);
	return rv;
}

void authn_stop(struct gateway *gw)
{
	struct authn *a = gw->authn;
	if (a == NULL)
		return;
	events_sub_close(a->sub);
	pthread_mutex_lock(&a->mu);
	a->stop = true;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
	pthread_join(a->thread, NULL);
	for (size_t i = 0; i < a->nkeys; i++)
		EVP_PKEY_free(a->keys[i].pub);
	free(a->jwks);
	free(a->revoked);
	pthread_cond_destroy(&a->cv);
	pthread_mutex_destroy(&a->mu);
	pthread_rwlock_destroy(&a->lock);
	pthread_mutex_destroy(&a->load_mu);
	pthread_mutex_destroy(&a->report_mu);
	for (size_t i = 0; i < AUTHN_ME_SLOTS; i++)
		free(a->me[i].body);
	for (size_t i = 0; i < AUTHN_TOK_SLOTS; i++)
		free(a->tok[i].token);
	pthread_mutex_destroy(&a->me_mu);
	pthread_mutex_destroy(&a->tok_mu);
	pthread_mutex_destroy(&a->risk_mu);
	OPENSSL_cleanse(a->fp_key, sizeof(a->fp_key));
	OPENSSL_cleanse(&a->sk, sizeof(a->sk));
	free(a);
	gw->authn = NULL;
}

static int authn_refuse(struct http_request *req, const char *code, const char *message)
{
	struct MHD_Response *resp = respond_error_new(req, code, message);
	if (resp != NULL &&
	    MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer") != MHD_YES) {
		MHD_destroy_response(resp);
		resp = NULL;
	}
	http_queue(req, MHD_HTTP_UNAUTHORIZED, resp);
	return ERR_PERM;
}

int authn_require_flags(struct http_request *req, struct jwt_claims *claims, unsigned flags)
{
	struct authn *a = req->gw->authn;
	const char *h =
	    MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	const struct authn_entry *e;
	char fip[33], fua[33], fhd[33], tag[33];
	bool revoked = false;
	unsigned score;
	int rv;

	if (h == NULL || strncmp(h, "Bearer ", 7) != 0)
		return authn_refuse(req, "unauthorized", "A bearer access token is required.");
	h += 7;
	pthread_rwlock_rdlock(&a->lock);
	rv = authn_verify(a, h, strlen(h), (int64_t)time(NULL), claims, tag);
	if (rv == 0) {
		e = authn_find_locked(a, claims->sid);
		revoked = e != NULL && e->revoked;
		/* The binding a step-up set (by the session's tag), else the one
		 * the token carries. */
		e = a->nrebound > 0 ? authn_find_locked(a, tag) : NULL;
		memcpy(fip, e != NULL && e->rebound ? e->fip : claims->fip, 33);
		memcpy(fua, e != NULL && e->rebound ? e->fua : claims->fua, 33);
		memcpy(fhd, e != NULL && e->rebound ? e->fhd : claims->fhd, 33);
		fip[32] = fua[32] = fhd[32] = '\0';
	}
	pthread_rwlock_unlock(&a->lock);
	if (rv == ERR_NOTFOUND)
		authn_wake(a, true, false); /* a key we have not fetched yet */
	if (rv != 0)
		return authn_refuse(req, "unauthorized", "The access token is invalid or expired.");
	if (revoked)
		return authn_refuse(req, "unauthorized", "The session has been revoked.");
	snprintf(req->actor, sizeof(req->actor), "%s", claims->sub);
	score = authn_score(a, req, fip, fua, fhd);
	if (score == 0)
		return 0;
	authn_report(a, req, claims, score);
	if (score >= AUTHN_TERMINATE) {
		pthread_rwlock_wrlock(&a->lock); /* refused here at once; auth tells the rest */
		authn_revoked_add_locked(a, claims->sid);
		pthread_rwlock_unlock(&a->lock);
		return authn_refuse(req, "session_terminated",
		                    "The session looked hijacked and has been ended.");
	}
	if (score >= AUTHN_STEP_UP && (flags & AUTHN_ALLOW_STEP_UP) == 0)
		return authn_refuse(req, "step_up_required",
		                    "Confirm it is you: POST /api/v1/auth/step-up.");
	return 0;
}

bool authn_session_revoked(struct gateway *gw, const char *sid)
{
	struct authn *a = atomic_load(&gw->authn);
	const struct authn_entry *e;
	bool revoked;

	if (a == NULL)
		return false;
	pthread_rwlock_rdlock(&a->lock);
	e = authn_find_locked(a, sid);
	revoked = e != NULL && e->revoked;
	pthread_rwlock_unlock(&a->lock);
	return revoked;
}

bool authn_set_current(struct gateway *gw)
{
	struct authn *a = gw->authn;
	if (authn_current(a))
		return true;
	atomic_fetch_add(&a->confirms, 1);
	authn_wake(a, false, true); /* reload now rather than at the next tick */
	return false;
}

void authn_get_stats(struct gateway *gw, struct authn_stats *st)
{
	struct authn *a = atomic_load(&gw->authn);
	if (a == NULL)
		return;
	events_sub_get_stats(a->sub, &st->events);
	st->current = authn_current(a);
	pthread_rwlock_rdlock(&a->lock);
	st->sessions = a->used - a->nrebound;
	pthread_rwlock_unlock(&a->lock);
	st->confirms = atomic_load(&a->confirms);
}

const char *authn_bearer(struct http_request *req)
{
	const char *h =
	    MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	return h != NULL && strncmp(h, "Bearer ", 7) == 0 ? h + 7 : "";
}

int authn_confirm(struct http_request *req, const struct jwt_claims *claims, http_resume_fn done)
{
	Magnetar__SessionRef ref = MAGNETAR__SESSION_REF__INIT;
	int rv;

	if ((rv = http_async_begin(req, done)) != 0)
		return http_async_refused(req, rv);
	ref.user_id = (char *)claims->sub;
	ref.session_id = (char *)claims->sid;
	http_async_call(req, 0, req->gw->client[SVC_AUTH], &magnetar__auth__descriptor, "Me",
	                &ref.base);
	http_async_end(req);
	return 0;
}

const Magnetar__MeReply *authn_confirmed(struct http_request *req)
{
	const struct rpc_result *r = &req->rpc[0].result;
	const Magnetar__MeReply *me = (const Magnetar__MeReply *)r->output;

	if (r->status == MAGNETAR__STATUS__STATUS_OK && me != NULL && me->user != NULL &&
	    me->session != NULL)
		return me;
	if (r->status == MAGNETAR__STATUS__STATUS_NOT_FOUND ||
	    r->status == MAGNETAR__STATUS__STATUS_UNAUTHENTICATED) {
		/* Auth says the session has ended: this gateway missed it. */
		authn_refuse(req, "unauthorized", "The session has been revoked.");
		return NULL;
	}
	if (r->status == MAGNETAR__STATUS__STATUS_OK)
		respond_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal",
		              "The session could not be confirmed.");
	else
		respond_rpc_error(req, r);
	return NULL;
}
