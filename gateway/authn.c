/*
 * authn.c — who is calling: the Bearer access token verified locally with
 * auth's public keys (no RPC on the hot path), and refused when its session
 * was revoked. Revocations arrive on auth.events; a gap or silence there
 * (common/events.h) marks the list stale until it is reloaded over RPC.
 *
 * Every route behind authn today also asks auth, which checks the session
 * itself, so a stale list never lets a revoked session through: fail closed.
 * The local list makes the refusal immediate and is what routes without an
 * RPC (the cached /me, terminals) will rely on.
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
#include "gateway/gateway.h"

#define AUTHN_MAX_KEYS 16
#define AUTHN_SID_LEN 33
#define AUTHN_LEEWAY_S 5
#define AUTHN_KEYS_REFRESH_MS 60000
#define AUTHN_REPORTED 1024

/* Score weights in hundredths (API.md "Session risk"). */
#define AUTHN_W_IP 30
#define AUTHN_W_UA 50
#define AUTHN_W_HD 20
#define AUTHN_STEP_UP 70
#define AUTHN_TERMINATE 90

struct authn_entry {
	char sid[AUTHN_SID_LEN]; /* "" = empty slot */
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
	size_t cap, used;
	unsigned char fp_key[32]; /* the fingerprint hash key, shared with auth */
	/* Scores already reported, so a session is not re-reported per request. */
	pthread_mutex_t report_mu;
	struct {
		char sid[AUTHN_SID_LEN];
		unsigned score;
	} reported[AUTHN_REPORTED];
	atomic_bool synced; /* the set reflects every revocation so far */
	/* The refresher thread. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop, want_keys, want_revoked;
	pthread_t thread;
	struct events_sub *sub;
};

static uint64_t authn_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a: ids are random already */
	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

/* The slot of `sid` (existing, or the empty one it would take), with the
 * write lock held; grows at half full. NULL if it cannot grow. */
static struct authn_entry *authn_slot_locked(struct authn *a, const char *sid)
{
	size_t i;
	if (2 * (a->used + 1) > a->cap) {
		size_t ncap = a->cap != 0 ? 2 * a->cap : 1024;
		struct authn_entry *n = calloc(ncap, sizeof(*n));
		if (n == NULL)
			return NULL; /* keeps the old table; auth still checks the session */
		for (size_t k = 0; k < a->cap; k++) {
			if (a->revoked[k].sid[0] == '\0')
				continue;
			for (i = authn_hash(a->revoked[k].sid) & (ncap - 1); n[i].sid[0] != '\0';
			     i = (i + 1) & (ncap - 1))
				;
			n[i] = a->revoked[k];
		}
		free(a->revoked);
		a->revoked = n;
		a->cap = ncap;
	}
	for (i = authn_hash(sid) & (a->cap - 1); a->revoked[i].sid[0] != '\0';
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
	if (ev->session_id[0] == '\0' || strlen(ev->session_id) >= AUTHN_SID_LEN ||
	    strlen(ev->fip) != 32 || strlen(ev->fua) != 32 || strlen(ev->fhd) != 32 ||
	    (e = authn_slot_locked(a, ev->session_id)) == NULL)
		return;
	e->rebound = true;
	memcpy(e->fip, ev->fip, 33);
	memcpy(e->fua, ev->fua, 33);
	memcpy(e->fhd, ev->fhd, 33);
}

static const struct authn_entry *authn_find_locked(struct authn *a, const char *sid)
{
	if (a->cap == 0)
		return NULL;
	for (size_t i = authn_hash(sid) & (a->cap - 1); a->revoked[i].sid[0] != '\0';
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

static int authn_load_revoked(struct authn *a)
{
	Magnetar__Empty in = MAGNETAR__EMPTY__INIT;
	struct rpc_result r;
	int rv;

	rv = rpc_call_sync(a->gw->client[SVC_AUTH], &magnetar__auth__descriptor, "Revoked",
	                   &in.base, NULL, 2000, &r);
	if (rv != 0 || r.status != MAGNETAR__STATUS__STATUS_OK) {
		rpc_result_fini(&r);
		return rv != 0 ? rv : ERR_UNAVAIL;
	}
	const Magnetar__RevokedReply *rr = (const Magnetar__RevokedReply *)r.output;
	pthread_rwlock_wrlock(&a->lock);
	/* Added to, never cleared: an event that arrived during the call stays. */
	for (size_t i = 0; i < rr->n_session_ids; i++)
		authn_revoked_add_locked(a, rr->session_ids[i]);
	for (size_t i = 0; i < rr->n_rebound; i++)
		authn_rebound_add_locked(a, rr->rebound[i]);
	pthread_rwlock_unlock(&a->lock);
	rpc_result_fini(&r);
	atomic_store(&a->synced, true);
	return 0;
}

static void authn_on_event(const char *pub, uint64_t seq, const char *topic, const uint8_t *payload,
                           size_t len, void *arg)
{
	struct authn *a = arg;
	Magnetar__SessionEvent *ev;
	(void)pub;
	(void)seq;
	bool revoked = strcmp(topic, "session.revoked") == 0;
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
	magnetar__session_event__free_unpacked(ev, NULL);
}

static void authn_on_resync(const char *pub, enum events_resync_reason why, void *arg)
{
	struct authn *a = arg;
	(void)pub;
	/* Something may have been missed: stale until reloaded. A new publisher
	 * (auth restarted) may also have new keys. */
	atomic_store(&a->synced, false);
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
	if ((rv = fingerprint_key_load(&gw->svc.conf, a->fp_key)) != 0) {
		free(a);
		return rv;
	}
	pthread_mutex_init(&a->report_mu, NULL);
	pthread_rwlock_init(&a->lock, NULL);
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cv, NULL);
	h.arg = a;
	if ((rv = events_sub_open(gw->svc.conf.auth_events_url, NULL, 3000, &h, &a->sub)) != 0)
		goto fail;
	/* Load before serving when auth is there; when it is not, the refresher
	 * keeps trying and auth itself vouches for each session meanwhile. */
	authn_load_keys(a);
	authn_load_revoked(a);
	if (pthread_create(&a->thread, NULL, authn_main, a) != 0) {
		rv = ERR_NOMEM;
		events_sub_close(a->sub);
		goto fail;
	}
	gw->authn = a;
	return 0;
fail:
	pthread_cond_destroy(&a->cv);
	pthread_mutex_destroy(&a->mu);
	pthread_rwlock_destroy(&a->lock);
	pthread_mutex_destroy(&a->report_mu);
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
	OPENSSL_cleanse(a->fp_key, sizeof(a->fp_key));
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

/* Integer hundredths, never floats: 0.5f + 0.2f >= 0.7f is false in C. */
static unsigned authn_score(struct authn *a, struct http_request *req, const char *fip,
                            const char *fua, const char *fhd)
{
	char ip[INET6_ADDRSTRLEN], hd[1024], h[33];
	const char *ua =
	    MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_USER_AGENT);
	unsigned score = 0;

	http_client_ip(req, ip);
	authn_fingerprint(req, hd, sizeof(hd));
	fingerprint_hash(a->fp_key, "ip", ip, h);
	score += authn_differs(h, fip) ? AUTHN_W_IP : 0;
	fingerprint_hash(a->fp_key, "ua", ua != NULL ? ua : "", h);
	score += authn_differs(h, fua) ? AUTHN_W_UA : 0;
	fingerprint_hash(a->fp_key, "hd", hd, h);
	score += authn_differs(h, fhd) ? AUTHN_W_HD : 0;
	return score;
}

static void authn_reported(struct rpc_result *r, void *arg)
{
	(void)r;
	(void)arg; /* auth records, audits and (≥ 90) revokes; nothing to do here */
}

/* Tells auth about a non-zero score once per (session, score). */
static void authn_report(struct authn *a, struct http_request *req, const struct jwt_claims *c,
                         unsigned score)
{
	Magnetar__RiskReport in = MAGNETAR__RISK_REPORT__INIT;
	Magnetar__SessionRef ref = MAGNETAR__SESSION_REF__INIT;
	Magnetar__RequestContext ctx = MAGNETAR__REQUEST_CONTEXT__INIT;
	size_t slot = authn_hash(c->sid) % AUTHN_REPORTED;
	char ip[INET6_ADDRSTRLEN];
	bool fresh;

	pthread_mutex_lock(&a->report_mu);
	fresh = strcmp(a->reported[slot].sid, c->sid) != 0 || a->reported[slot].score != score;
	if (fresh && strlen(c->sid) < AUTHN_SID_LEN) {
		strcpy(a->reported[slot].sid, c->sid);
		a->reported[slot].score = score;
	}
	pthread_mutex_unlock(&a->report_mu);
	if (!fresh)
		return;
	http_client_ip(req, ip);
	ctx.request_id = req->id;
	ctx.client_ip = ip;
	ctx.user_agent = "";
	ctx.actor = (char *)c->sub;
	ref.user_id = (char *)c->sub;
	ref.session_id = (char *)c->sid;
	in.session = &ref;
	in.score = score;
	rpc_call_async(a->gw->client[SVC_AUTH], &magnetar__auth__descriptor, "ReportRisk", &in.base,
	               &ctx, 2000, authn_reported, NULL);
}

int authn_require_flags(struct http_request *req, struct jwt_claims *claims, unsigned flags)
{
	struct authn *a = req->gw->authn;
	const char *h =
	    MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	const struct authn_entry *e;
	char fip[33], fua[33], fhd[33];
	bool revoked = false;
	unsigned score;
	int rv;

	if (h == NULL || strncmp(h, "Bearer ", 7) != 0)
		return authn_refuse(req, "unauthorized", "A bearer access token is required.");
	h += 7;
	pthread_rwlock_rdlock(&a->lock);
	rv = jwt_verify(a->keys, a->nkeys, h, strlen(h), (int64_t)time(NULL), AUTHN_LEEWAY_S,
	                claims);
	if (rv == 0) {
		/* The binding a step-up set, else the one the token carries. */
		e = authn_find_locked(a, claims->sid);
		revoked = e != NULL && e->revoked;
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

int authn_require(struct http_request *req, struct jwt_claims *claims)
{
	return authn_require_flags(req, claims, 0);
}
