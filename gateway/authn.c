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
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.pb-c.h"
#include "common/clock.h"
#include "common/err.h"
#include "common/events.h"
#include "common/jwt.h"
#include "common/log.h"
#include "gateway/gateway.h"

#define AUTHN_MAX_KEYS 16
#define AUTHN_SID_LEN 33
#define AUTHN_LEEWAY_S 5
#define AUTHN_KEYS_REFRESH_MS 60000

struct authn {
	struct gateway *gw;
	pthread_rwlock_t lock; /* keys and the revoked set */
	struct jwt_key keys[AUTHN_MAX_KEYS];
	size_t nkeys;
	/* Revoked session ids: open addressing, linear probing; "" is empty. */
	char (*revoked)[AUTHN_SID_LEN];
	size_t cap, used;
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

/* Adds with the write lock held. Grows at half full. */
static void authn_revoked_add_locked(struct authn *a, const char *sid)
{
	size_t i;
	if (strlen(sid) >= AUTHN_SID_LEN || sid[0] == '\0')
		return;
	if (2 * (a->used + 1) > a->cap) {
		size_t ncap = a->cap != 0 ? 2 * a->cap : 1024;
		char(*n)[AUTHN_SID_LEN] = calloc(ncap, AUTHN_SID_LEN);
		if (n == NULL)
			return; /* keeps the old table; auth still checks the session */
		for (size_t k = 0; k < a->cap; k++) {
			if (a->revoked[k][0] == '\0')
				continue;
			for (i = authn_hash(a->revoked[k]) & (ncap - 1); n[i][0] != '\0';
			     i = (i + 1) & (ncap - 1))
				;
			memcpy(n[i], a->revoked[k], AUTHN_SID_LEN);
		}
		free(a->revoked);
		a->revoked = n;
		a->cap = ncap;
	}
	for (i = authn_hash(sid) & (a->cap - 1); a->revoked[i][0] != '\0';
	     i = (i + 1) & (a->cap - 1))
		if (strcmp(a->revoked[i], sid) == 0)
			return;
	strcpy(a->revoked[i], sid);
	a->used++;
}

static bool authn_revoked_has_locked(struct authn *a, const char *sid)
{
	if (a->cap == 0)
		return false;
	for (size_t i = authn_hash(sid) & (a->cap - 1); a->revoked[i][0] != '\0';
	     i = (i + 1) & (a->cap - 1))
		if (strcmp(a->revoked[i], sid) == 0)
			return true;
	return false;
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
	if (strcmp(topic, "session.revoked") != 0)
		return;
	if ((ev = magnetar__session_event__unpack(NULL, len, payload)) == NULL)
		return;
	pthread_rwlock_wrlock(&a->lock);
	authn_revoked_add_locked(a, ev->session_id);
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
	free(a);
	gw->authn = NULL;
}

static int authn_refuse(struct http_request *req, const char *message)
{
	struct MHD_Response *resp = respond_error_new(req, "unauthorized", message);
	if (resp != NULL &&
	    MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer") != MHD_YES) {
		MHD_destroy_response(resp);
		resp = NULL;
	}
	http_queue(req, MHD_HTTP_UNAUTHORIZED, resp);
	return ERR_PERM;
}

int authn_require(struct http_request *req, struct jwt_claims *claims)
{
	struct authn *a = req->gw->authn;
	const char *h =
	    MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	bool revoked;
	int rv;

	if (h == NULL || strncmp(h, "Bearer ", 7) != 0)
		return authn_refuse(req, "A bearer access token is required.");
	h += 7;
	pthread_rwlock_rdlock(&a->lock);
	rv = jwt_verify(a->keys, a->nkeys, h, strlen(h), (int64_t)time(NULL), AUTHN_LEEWAY_S,
	                claims);
	revoked = rv == 0 && authn_revoked_has_locked(a, claims->sid);
	pthread_rwlock_unlock(&a->lock);
	if (rv == ERR_NOTFOUND)
		authn_wake(a, true, false); /* a key we have not fetched yet */
	if (rv != 0)
		return authn_refuse(req, "The access token is invalid or expired.");
	if (revoked)
		return authn_refuse(req, "The session has been revoked.");
	snprintf(req->actor, sizeof(req->actor), "%s", claims->sub);
	return 0;
}
