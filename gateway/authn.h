/*
 * authn.h — private to gateway/authn.c and the authn_*.c files beside it:
 * only they include it. struct authn (the verifier's state), its limits,
 * and what each of those files calls in the others. The rest of the gateway
 * sees only gateway.h's "authn.c: who is calling" section.
 */
#ifndef MAGNETAR_GATEWAY_AUTHN_H
#define MAGNETAR_GATEWAY_AUTHN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "auth.pb-c.h"
#include "common/clock.h"
#include "common/events.h"
#include "common/jwt.h"
#include "common/siphash.h"
#include "gateway/gateway.h"

#define AUTHN_MAX_KEYS 16
#define AUTHN_SID_LEN 33
#define AUTHN_LEEWAY_S 5
#define AUTHN_KEYS_REFRESH_MS 60000
#define AUTHN_REPORTED 1024
#define AUTHN_ME_SLOTS 4096
#define AUTHN_TOK_SLOTS 4096
#define AUTHN_RISK_SLOTS 4096
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
	pthread_rwlock_t lock;     /* keys and the revoked set */
	pthread_mutex_t load_mu;   /* one key load at a time (authn_keys.c) */
	_Atomic uint64_t load_gen; /* key load attempts made, under load_mu */
	struct jwt_key keys[AUTHN_MAX_KEYS];
	size_t nkeys;
	char *jwks; /* the keys as GET /.well-known/jwks.json serves them (jwks.c) */
	size_t jwks_len;
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
	 * token and caches the result"). Direct-mapped; the whole token is
	 * compared on a hit. */
	pthread_mutex_t tok_mu;
	struct authn_tok {
		char *token;
		size_t len;
		struct jwt_claims claims;
		char tag[33]; /* the session's tag (fingerprint_hash "sid") */
	} tok[AUTHN_TOK_SLOTS];
	/* Scores already computed: a score is a function of the request context
	 * (IP, UA, fingerprint headers) and the session's binding alone, so it
	 * is kept by those, in a slot chosen by the context's keyed hash. */
	pthread_mutex_t risk_mu;
	struct authn_risk_memo {
		uint64_t ctx_hash;   /* of the IP, UA and fingerprint headers scored */
		char binding[3][33]; /* the fip/fua/fhd they were scored against */
		unsigned score;
		bool used;
	} risk[AUTHN_RISK_SLOTS];
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

/* ---- shared by the authn files: inline, so that a request that asks
 * one of them (authn_me.c for a cached /me) does not cross into another
 * file for a hash or a flag ---------------------------------------------- */

/* Session ids are auth's random ones, but the tables they index are open
 * addressing; a keyed hash keeps their slots unpredictable all the same. */
static inline uint64_t authn_hash(const struct authn *a, const char *s)
{
	return siphash24(a->sk, s, strlen(s));
}

/* The revoked set is current: loaded since the last resync
 * (authn_revoked.c), and auth's publisher it was loaded from heard within
 * the silence window. */
static inline bool authn_current(struct authn *a)
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

/* ---- authn_keys.c: auth's public keys ------------------------------------ */

int authn_load_keys(struct authn *a);

/* ---- authn_revoked.c: the revoked and re-bound sessions ------------------ */

/* The *_locked ones with a->lock held: for writing to add, shared to find. */
void authn_revoked_add_locked(struct authn *a, const char *sid);
void authn_rebound_add_locked(struct authn *a, const Magnetar__SessionEvent *ev);
const struct authn_entry *authn_find_locked(struct authn *a, const char *sid);
int authn_load_revoked(struct authn *a);
void authn_stale(struct authn *a);

/* ---- authn_tokens.c: the verified-token cache ---------------------------- */

int authn_verify(struct authn *a, const char *token, size_t len, int64_t now,
                 struct jwt_claims *claims, char tag[33]);

/* ---- authn_risk.c: the request's risk score, reported to auth ------------ */

unsigned authn_score(struct authn *a, struct http_request *req, const char *fip, const char *fua,
                     const char *fhd);
void authn_report(struct authn *a, struct http_request *req, const struct jwt_claims *c,
                  unsigned score);
bool authn_risky(struct authn *a, const char *sid);

/* ---- authn_me.c: the cached /me answers ---------------------------------- */

void authn_me_drop_user(struct authn *a, const char *uid);
void authn_me_drop_tag(struct authn *a, const char *tag);

#endif
