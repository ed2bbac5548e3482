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
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.pb-c.h"
#include "common/clock.h"
#include "common/err.h"
#include "common/events.h"
#include "common/fingerprint.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/ids.h"
#include "common/siphash.h"
#include "gateway/gateway.h"

#define AUTHN_MAX_KEYS 16
#define AUTHN_SID_LEN 33
#define AUTHN_LEEWAY_S 5
#define AUTHN_KEYS_REFRESH_MS 60000
#define AUTHN_REPORTED 1024
#define AUTHN_ME_SLOTS 4096
#define AUTHN_TOK_SLOTS 4096
#define AUTHN_ME_TTL_MS 30000
#define AUTHN_SILENCE_MS 3000    /* docs/architecture.md, "Security model": no heartbeat for 3 s */
#define AUTHN_PAGE 4096          /* sessions per Revoked page */
#define AUTHN_START_WAIT_MS 2000 /* at start, for the first heartbeat */

/* Score weights in hundredths (docs/api.md "Session risk"). */
#define AUTHN_W_IP 30
#define AUTHN_W_UA 50
#define AUTHN_W_HD 20
#define AUTHN_STEP_UP 70
#define AUTHN_TERMINATE 90

struct authn_entry {
	char sid[AUTHN_SID_LEN]; /* "" = empty slot; a rebound one's is its tag */
	bool revoked;
	bool rebound;
	char fip[33], fua[33], fhd[33]; /* when rebound */
};

struct authn {
	struct gateway *gw;
	pthread_rwlock_t lock; /* keys and the revoked set */
	struct jwt_key keys[AUTHN_MAX_KEYS];
	size_t nkeys;
	/* What auth.events said about sessions: revoked, or re-bound by a step-up
	 * to other fingerprint hashes. Open addressing, linear probing. */
	struct authn_entry *revoked;
	size_t cap, used, nrebound;
	char publisher[65];          /* auth's instance the set was loaded from */
	unsigned char fp_key[32];    /* the fingerprint hash key, shared with auth */
	uint8_t sk[SIPHASH_KEY_LEN]; /* per start: the token cache's keys */
	/* GET /api/v1/auth/me answers, per session: the authenticated hot path
	 * needs no RPC. Dropped when auth says the session changed. */
	pthread_mutex_t me_mu;
	_Atomic uint64_t me_epoch; /* bumped by every drop: see authn_me_put */
	struct {
		char sid[AUTHN_SID_LEN];
		char uid[AUTHN_SID_LEN];
		char tag[33]; /* the session's tag, for session.rebound */
		char *body;
		uint64_t expires_ms;
	} me[AUTHN_ME_SLOTS];
	/* Tokens already verified (Ed25519 costs tens of µs: "verifies once per
	 * token and caches the result"), with the last request context they were
	 * scored in. Direct-mapped; the whole token is compared on a hit. */
	pthread_mutex_t tok_mu;
	struct authn_tok {
		char *token;
		size_t len;
		struct jwt_claims claims;
		char tag[33];        /* the session's tag (fingerprint_hash "sid") */
		uint64_t ctx_hash;   /* of the IP, UA and fingerprint headers scored */
		char binding[3][33]; /* the fip/fua/fhd they were scored against */
		unsigned score;
	} tok[AUTHN_TOK_SLOTS];
	/* Scores already reported, so a session is not re-reported per request. */
	pthread_mutex_t report_mu;
	struct {
		char sid[AUTHN_SID_LEN];
		unsigned score;
	} reported[AUTHN_REPORTED];
	atomic_bool synced;          /* the set reflects every revocation so far */
	_Atomic uint64_t confirms;   /* authn_set_current said no */
	_Atomic uint64_t resync_gen; /* bumped by every resync: a load spanning one is void */
	/* The refresher thread. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop, want_keys, want_revoked;
	pthread_t thread;
	struct events_sub *sub;
};

static void authn_stale(struct authn *a);

/* Session ids are auth's random ones, but the tables they index are open
 * addressing; a keyed hash keeps their slots unpredictable all the same. */
static uint64_t authn_hash(const struct authn *a, const char *s)
{
	return siphash24(a->sk, s, strlen(s));
}

/* The slot of `sid` (existing, or the empty one it would take), with the
 * write lock held; grows at half full. NULL if it cannot grow. */
static struct authn_entry *authn_slot_locked(struct authn *a, const char *sid)
{
	size_t i;
	if (2 * (a->used + 1) > a->cap) {
		size_t ncap = a->cap != 0 ? 2 * a->cap : 1024;
		struct authn_entry *n = calloc(ncap, sizeof(*n));
		if (n == NULL) {
			/* Keeps the old table, which now misses an entry: stale (fail
			 * closed: no cached /me) until the refresher reloads it. */
			authn_stale(a);
			return NULL;
		}
		for (size_t k = 0; k < a->cap; k++) {
			if (a->revoked[k].sid[0] == '\0')
				continue;
			for (i = authn_hash(a, a->revoked[k].sid) & (ncap - 1); n[i].sid[0] != '\0';
			     i = (i + 1) & (ncap - 1))
				;
			n[i] = a->revoked[k];
		}
		free(a->revoked);
		a->revoked = n;
		a->cap = ncap;
	}
	for (i = authn_hash(a, sid) & (a->cap - 1); a->revoked[i].sid[0] != '\0';
	     i = (i + 1) & (a->cap - 1))
		if (strcmp(a->revoked[i].sid, sid) == 0)
			return &a->revoked[i];
	strcpy(a->revoked[i].sid, sid);
	a->used++;
	return &a->revoked[i];
}

static void authn_revoked_add_locked(struct authn *a, const char *sid)
{
	struct authn_entry *e;
	if (sid[0] == '\0' || strlen(sid) >= AUTHN_SID_LEN ||
	    (e = authn_slot_locked(a, sid)) == NULL)
		return;
	e->revoked = true;
}

static void authn_rebound_add_locked(struct authn *a, const Magnetar__SessionEvent *ev)
{
	struct authn_entry *e;
	if (strlen(ev->session_tag) != 32 || strlen(ev->fip) != 32 || strlen(ev->fua) != 32 ||
	    strlen(ev->fhd) != 32 || (e = authn_slot_locked(a, ev->session_tag)) == NULL)
		return;
	if (!e->rebound)
		a->nrebound++;
	e->rebound = true;
	memcpy(e->fip, ev->fip, 33);
	memcpy(e->fua, ev->fua, 33);
	memcpy(e->fhd, ev->fhd, 33);
}

static const struct authn_entry *authn_find_locked(struct authn *a, const char *sid)
{
	if (a->cap == 0)
		return NULL;
	for (size_t i = authn_hash(a, sid) & (a->cap - 1); a->revoked[i].sid[0] != '\0';
	     i = (i + 1) & (a->cap - 1))
		if (strcmp(a->revoked[i].sid, sid) == 0)
			return &a->revoked[i];
	return NULL;
}

static void authn_wake(struct authn *a, bool keys, bool revoked)
{
	pthread_mutex_lock(&a->mu);
	a->want_keys |= keys;
	a->want_revoked |= revoked;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

static int authn_load_keys(struct authn *a)
{
	Magnetar__Empty in = MAGNETAR__EMPTY__INIT;
	struct jwt_key fresh[AUTHN_MAX_KEYS];
	struct rpc_result r;
	size_t n = 0;
	int rv;

	rv = rpc_call_sync(a->gw->client[SVC_AUTH], &magnetar__auth__descriptor, "PublicKeys",
	                   &in.base, NULL, 2000, &r);
	if (rv != 0 || r.status != MAGNETAR__STATUS__STATUS_OK) {
		rpc_result_fini(&r);
		return rv != 0 ? rv : ERR_UNAVAIL;
	}
	const Magnetar__PublicKeysReply *pk = (const Magnetar__PublicKeysReply *)r.output;
	for (size_t i = 0; i < pk->n_keys && n < AUTHN_MAX_KEYS; i++) {
		const Magnetar__PublicKey *k = pk->keys[i];
		if (k->key.len != 32 || strlen(k->kid) >= JWT_KID_MAX)
			continue;
		fresh[n].pub = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, k->key.data, 32);
		if (fresh[n].pub == NULL)
			continue;
		strcpy(fresh[n].kid, k->kid);
		n++;
	}
	rpc_result_fini(&r);
	pthread_rwlock_wrlock(&a->lock);
	for (size_t i = 0; i < a->nkeys; i++)
		EVP_PKEY_free(a->keys[i].pub);
	memcpy(a->keys, fresh, n * sizeof(fresh[0]));
	a->nkeys = n;
	pthread_rwlock_unlock(&a->lock);
	return 0;
}

/* Loads the revoked set page by page. Synced only when no resync came
 * while it ran (an event may have been lost then) and every page came from
 * one publisher instance. */
static int authn_load_revoked(struct authn *a)
{
	Magnetar__RevokedRequest in = MAGNETAR__REVOKED_REQUEST__INIT;
	uint64_t gen = atomic_load(&a->resync_gen);
	char publisher[sizeof(a->publisher)] = "", after[AUTHN_SID_LEN] = "";
	struct rpc_result r;
	int rv = 0;

	in.limit = AUTHN_PAGE;
	do {
		in.after = after;
		rv = rpc_call_sync(a->gw->client[SVC_AUTH], &magnetar__auth__descriptor,
		                   "RevokedPage", &in.base, NULL, 2000, &r);
		if (rv != 0 || r.status != MAGNETAR__STATUS__STATUS_OK) {
			rpc_result_fini(&r);
			return rv != 0 ? rv : ERR_UNAVAIL;
		}
		const Magnetar__RevokedReply *rr = (const Magnetar__RevokedReply *)r.output;
		if ((publisher[0] != '\0' && strcmp(publisher, rr->publisher) != 0) ||
		    strlen(rr->publisher) >= sizeof(publisher) ||
		    strlen(rr->next) >= sizeof(after) ||
		    (rr->next[0] != '\0' && strcmp(rr->next, after) <= 0)) {
			rpc_result_fini(&r); /* auth restarted mid-load, or a bad cursor */
			return ERR_PROTO;
		}
		strcpy(publisher, rr->publisher);
		strcpy(after, rr->next);
		pthread_rwlock_wrlock(&a->lock);
		/* Added to, never cleared: an event that arrived during the call stays. */
		for (size_t i = 0; i < rr->n_session_ids; i++)
			authn_revoked_add_locked(a, rr->session_ids[i]);
		for (size_t i = 0; i < rr->n_rebound; i++)
			authn_rebound_add_locked(a, rr->rebound[i]);
		pthread_rwlock_unlock(&a->lock);
		rpc_result_fini(&r);
	} while (after[0] != '\0');
	pthread_rwlock_wrlock(&a->lock);
	strcpy(a->publisher, publisher);
	/* A table that could not grow cleared `synced` meanwhile: bumped the
	 * generation too (authn_stale), so that failure wins. */
	if (atomic_load(&a->resync_gen) == gen)
		atomic_store(&a->synced, true);
	pthread_rwlock_unlock(&a->lock);
	return 0;
}

/* The set is current: loaded since the last resync, and auth's publisher it
 * was loaded from heard within the silence window. */
static bool authn_current(struct authn *a)
{
	char publisher[sizeof(a->publisher)];
	uint64_t heard;

	if (!atomic_load(&a->synced))
		return false;
	pthread_rwlock_rdlock(&a->lock);
	memcpy(publisher, a->publisher, sizeof(publisher));
	pthread_rwlock_unlock(&a->lock);
	heard = events_sub_heard_ms(a->sub, publisher);
	return heard != 0 && clock_mono_ms() - heard < AUTHN_SILENCE_MS;
}

/* Something may have been missed: stale until a load that began after now. */
static void authn_stale(struct authn *a)
{
	atomic_fetch_add(&a->resync_gen, 1);
	atomic_store(&a->synced, false);
}

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
static void authn_me_drop_user(struct authn *a, const char *uid)
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
static void authn_me_drop_tag(struct authn *a, const char *tag)
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

void authn_session_ended(struct gateway *gw, const char *sid)
{
	struct authn *a = gw->authn;
	pthread_rwlock_wrlock(&a->lock);
	authn_revoked_add_locked(a, sid);
	pthread_rwlock_unlock(&a->lock);
	authn_me_drop(a, sid);
}

void authn_user_changed(struct gateway *gw, const char *uid)
{
	authn_me_drop_user(gw->authn, uid);
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

/* A session with a non-zero risk score reported: its /me is not cached,
 * since a score recorded after a cached answer would stay invisible. */
static bool authn_risky(struct authn *a, const char *sid)
{
	size_t slot = authn_hash(a, sid) % AUTHN_REPORTED;
	bool risky;
	pthread_mutex_lock(&a->report_mu);
	risky = strcmp(a->reported[slot].sid, sid) == 0 && a->reported[slot].score > 0;
	pthread_mutex_unlock(&a->report_mu);
	return risky;
}

char *authn_me_get(struct gateway *gw, const char *sid, uint64_t *epoch)
{
	struct authn *a = gw->authn;
	size_t slot = authn_hash(a, sid) % AUTHN_ME_SLOTS;
	char *copy = NULL;

	*epoch = atomic_load(&a->me_epoch);
	/* While the revocation set may be stale, auth is asked every time. */
	if (!authn_current(a) || authn_risky(a, sid))
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
	pthread_rwlock_init(&a->lock, NULL);
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
	pthread_mutex_destroy(&a->report_mu);
	pthread_mutex_destroy(&a->me_mu);
	pthread_mutex_destroy(&a->tok_mu);
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
	free(a->revoked);
	pthread_cond_destroy(&a->cv);
	pthread_mutex_destroy(&a->mu);
	pthread_rwlock_destroy(&a->lock);
	pthread_mutex_destroy(&a->report_mu);
	for (size_t i = 0; i < AUTHN_ME_SLOTS; i++)
		free(a->me[i].body);
	for (size_t i = 0; i < AUTHN_TOK_SLOTS; i++)
		free(a->tok[i].token);
	pthread_mutex_destroy(&a->me_mu);
	pthread_mutex_destroy(&a->tok_mu);
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

void authn_fingerprint(struct http_request *req, char *buf, size_t len)
{
	static const char *const headers[] = {
	    "Accept-Language",  "Accept-Encoding",    "Sec-CH-UA",
	    "Sec-CH-UA-Mobile", "Sec-CH-UA-Platform",
	};
	size_t used = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
		const char *v = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, headers[i]);
		int n =
		    snprintf(buf + used, len - used, "%s%s", i > 0 ? "\n" : "", v != NULL ? v : "");
		if (n < 0 || (size_t)n >= len - used)
			return; /* bounded: the header limit already caps it */
		used += (size_t)n;
	}
}

static bool authn_differs(const char *a, const char *b)
{
	return strlen(a) != 32 || strlen(b) != 32 || CRYPTO_memcmp(a, b, 32) != 0;
}

/* The token cache's slot of a token: keyed, so no one can aim tokens at
 * one slot to evict another's. */
static struct authn_tok *authn_tok_slot(struct authn *a, const char *token, size_t len)
{
	return &a->tok[siphash24(a->sk, token, len) % AUTHN_TOK_SLOTS];
}

/* Integer hundredths, never floats: 0.5f + 0.2f >= 0.7f is false in C.
 * The three HMACs are skipped when this token was last scored against the
 * same binding in the same request context (same IP, UA and headers). */
static unsigned authn_score(struct authn *a, struct http_request *req, const char *token,
                            size_t tlen, const char *fip, const char *fua, const char *fhd)
{
	char ip[INET6_ADDRSTRLEN], hd[1024], h[33];
	const char *ua =
	    MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_USER_AGENT);
	struct authn_tok *t = authn_tok_slot(a, token, tlen);
	uint64_t ctx, parts[3];
	unsigned score = 0;
	bool hit;

	if (ua == NULL)
		ua = "";
	http_client_ip(req, ip);
	authn_fingerprint(req, hd, sizeof(hd));
	/* Keyed: with an unkeyed hash a thief of the token could craft headers
	 * whose context hashes like the owner's and inherit its cached score. */
	parts[0] = siphash24(a->sk, ip, strlen(ip));
	parts[1] = siphash24(a->sk, ua, strlen(ua));
	parts[2] = siphash24(a->sk, hd, strlen(hd));
	ctx = siphash24(a->sk, parts, sizeof(parts));
	pthread_mutex_lock(&a->tok_mu);
	hit = t->token != NULL && t->len == tlen && CRYPTO_memcmp(t->token, token, tlen) == 0 &&
	      t->ctx_hash == ctx && strcmp(t->binding[0], fip) == 0 &&
	      strcmp(t->binding[1], fua) == 0 && strcmp(t->binding[2], fhd) == 0;
	if (hit)
		score = t->score;
	pthread_mutex_unlock(&a->tok_mu);
	if (hit)
		return score;
	fingerprint_hash(a->fp_key, "ip", ip, h);
	score += authn_differs(h, fip) ? AUTHN_W_IP : 0;
	fingerprint_hash(a->fp_key, "ua", ua, h);
	score += authn_differs(h, fua) ? AUTHN_W_UA : 0;
	fingerprint_hash(a->fp_key, "hd", hd, h);
	score += authn_differs(h, fhd) ? AUTHN_W_HD : 0;
	pthread_mutex_lock(&a->tok_mu);
	if (t->token != NULL && t->len == tlen && CRYPTO_memcmp(t->token, token, tlen) == 0) {
		t->ctx_hash = ctx;
		snprintf(t->binding[0], 33, "%s", fip);
		snprintf(t->binding[1], 33, "%s", fua);
		snprintf(t->binding[2], 33, "%s", fhd);
		t->score = score;
	}
	pthread_mutex_unlock(&a->tok_mu);
	return score;
}

/* jwt_verify, once per token: a verified token's claims are kept until it
 * expires. Called with a->lock held shared (the keys). */
static int authn_verify(struct authn *a, const char *token, size_t len, int64_t now,
                        struct jwt_claims *claims, char tag[33])
{
	struct authn_tok *t = authn_tok_slot(a, token, len);
	char *copy;
	int rv;

	pthread_mutex_lock(&a->tok_mu);
	if (t->token != NULL && t->len == len && CRYPTO_memcmp(t->token, token, len) == 0 &&
	    t->claims.exp > now - AUTHN_LEEWAY_S) {
		*claims = t->claims;
		memcpy(tag, t->tag, 33);
		pthread_mutex_unlock(&a->tok_mu);
		return 0;
	}
	pthread_mutex_unlock(&a->tok_mu);
	if ((rv = jwt_verify(a->keys, a->nkeys, token, len, now, AUTHN_LEEWAY_S, claims)) != 0)
		return rv;
	fingerprint_hash(a->fp_key, "sid", claims->sid, tag);
	if ((copy = malloc(len)) == NULL)
		return 0; /* verified; only not remembered */
	memcpy(copy, token, len);
	pthread_mutex_lock(&a->tok_mu);
	free(t->token);
	memset(t, 0, sizeof(*t));
	t->token = copy;
	t->len = len;
	t->claims = *claims;
	memcpy(t->tag, tag, 33);
	pthread_mutex_unlock(&a->tok_mu);
	return 0;
}

struct authn_pending_report {
	struct authn *a;
	char sid[AUTHN_SID_LEN];
};

static void authn_reported(struct rpc_result *r, void *arg)
{
	struct authn_pending_report *p = arg;
	(void)r; /* auth records, audits and (≥ 90) revokes */
	/* A /me cached while the report was on its way shows the old score. */
	authn_me_drop(p->a, p->sid);
	free(p);
}

/* Tells auth about a non-zero score once per (session, score). */
static void authn_report(struct authn *a, struct http_request *req, const struct jwt_claims *c,
                         unsigned score)
{
	Magnetar__RiskReport in = MAGNETAR__RISK_REPORT__INIT;
	Magnetar__SessionRef ref = MAGNETAR__SESSION_REF__INIT;
	Magnetar__RequestContext ctx = MAGNETAR__REQUEST_CONTEXT__INIT;
	size_t slot = authn_hash(a, c->sid) % AUTHN_REPORTED;
	struct authn_pending_report *p;
	char ip[INET6_ADDRSTRLEN];
	bool fresh;

	pthread_mutex_lock(&a->report_mu);
	fresh = strcmp(a->reported[slot].sid, c->sid) != 0 || a->reported[slot].score != score;
	if (fresh && strlen(c->sid) < AUTHN_SID_LEN) {
		strcpy(a->reported[slot].sid, c->sid);
		a->reported[slot].score = score;
	}
	pthread_mutex_unlock(&a->report_mu);
	if (!fresh || strlen(c->sid) >= AUTHN_SID_LEN)
		return;
	authn_me_drop(a, c->sid); /* its risk_score changes */
	http_client_ip(req, ip);
	ctx.request_id = req->id;
	ctx.client_ip = ip;
	ctx.user_agent = "";
	ctx.actor = (char *)c->sub;
	ref.user_id = (char *)c->sub;
	ref.session_id = (char *)c->sid;
	in.session = &ref;
	in.score = score;
	if ((p = calloc(1, sizeof(*p))) != NULL) {
		p->a = a;
		memcpy(p->sid, c->sid, strlen(c->sid) + 1); /* fits: checked above */
		if (rpc_call_async(a->gw->client[SVC_AUTH], &magnetar__auth__descriptor,
		                   "ReportRisk", &in.base, &ctx, 2000, authn_reported, p) == 0)
			return;
		free(p);
	}
	/* Not sent: not reported either, so the next request tries again. */
	pthread_mutex_lock(&a->report_mu);
	if (strcmp(a->reported[slot].sid, c->sid) == 0 && a->reported[slot].score == score)
		a->reported[slot].sid[0] = '\0';
	pthread_mutex_unlock(&a->report_mu);
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
	score = authn_score(a, req, h, strlen(h), fip, fua, fhd);
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

bool authn_set_current(struct gateway *gw)
{
	struct authn *a = gw->authn;
	if (authn_current(a))
		return true;
	atomic_fetch_add(&a->confirms, 1);
	authn_wake(a, false, true); /* reload now rather than at the next tick */
	return false;
}

int authn_require(struct http_request *req, struct jwt_claims *claims)
{
	return authn_require_flags(req, claims, 0);
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
