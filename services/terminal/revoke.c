/*
 * revoke.c — a revoked auth session takes its terminals with it.
 *
 * The terminal service follows auth's event stream (session.revoked) and
 * closes every terminal opened under that session (reason "revoked"). An
 * event can be missed (a gap, 3 s of silence, auth restarted): then the
 * refresher thread asks auth for every session revoked within the
 * absolute session lifetime (`RevokedPage`, page by page, as the gateways
 * load theirs) and closes what matches, retrying every 250 ms until auth answers. The
 * sequence read before that list (auth's side) means an event published
 * meanwhile is seen after it, never lost between the two.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.pb-c.h"

#include "common/clock.h"
#include "common/err.h"
#include "common/events.h"
#include "common/log.h"
#include "common/rpc.h"
#include "services/terminal/terminal.h"

#define REVOKE_RETRY_MS 250
#define REVOKE_RPC_MS 2000
/* 4096 sessions a page: 256 pages is a million revocations in 12 h, well past
 * anything real; the bound only keeps a misbehaving auth from looping us. */
#define REVOKE_PAGES_MAX 256

static void revoke_on_event(const char *pub, uint64_t seq, const char *topic,
                            const uint8_t *payload, size_t len, void *arg)
{
	struct terminal *t = arg;
	Magnetar__SessionEvent *ev;
	(void)pub;
	(void)seq;

	if (strcmp(topic, "session.revoked") != 0)
		return;
	if ((ev = magnetar__session_event__unpack(NULL, len, payload)) == NULL)
		return;
	if (ev->session_id[0] != '\0') {
		const char *sid = ev->session_id;
		int n = session_close_revoked(t, &sid, 1);
		if (n > 0)
			log_info("terminal: closed %d terminal(s) of revoked session %s", n, sid);
	}
	magnetar__session_event__free_unpacked(ev, NULL);
}

static void revoke_on_resync(const char *pub, enum events_resync_reason why, void *arg)
{
	struct terminal *t = arg;
	(void)pub;
	(void)why;
	pthread_mutex_lock(&t->revoke_mu);
	t->revoke_stale = true;
	pthread_cond_signal(&t->revoke_cv);
	pthread_mutex_unlock(&t->revoke_mu);
}

/* One reload, page by page (`RevokedPage`, as the gateways load theirs: a
 * single reply would outgrow the RPC limit past ~24k revocations in 12 h):
 * 0 when auth answered every page (whatever it said). */
static int revoke_reload(struct terminal *t)
{
	char after[64] = "";
	int closed = 0;

	for (int page = 0; page < REVOKE_PAGES_MAX; page++) {
		Magnetar__RevokedRequest in = MAGNETAR__REVOKED_REQUEST__INIT;
		struct rpc_result r;
		int rv;

		in.after = after;
		rv = rpc_call_sync(t->auth, &magnetar__auth__descriptor, "RevokedPage", &in.base,
		                   NULL, REVOKE_RPC_MS, &r);
		if (rv != 0 || r.status != MAGNETAR__STATUS__STATUS_OK) {
			rpc_result_fini(&r);
			return rv != 0 ? rv : ERR_UNAVAIL;
		}
		const Magnetar__RevokedReply *rr = (const Magnetar__RevokedReply *)r.output;
		closed += session_close_revoked(t, (const char *const *)rr->session_ids,
		                                rr->n_session_ids);
		bool last = rr->next == NULL || rr->next[0] == '\0' ||
		            strlen(rr->next) >= sizeof(after) || strcmp(rr->next, after) == 0;
		if (!last)
			snprintf(after, sizeof(after), "%s", rr->next);
		rpc_result_fini(&r);
		if (last)
			break;
	}
	if (closed > 0)
		log_info("terminal: closed %d terminal(s) of revoked sessions (resync)", closed);
	return 0;
}

static void *revoke_main(void *arg)
{
	struct terminal *t = arg;

	pthread_mutex_lock(&t->revoke_mu);
	while (!t->revoke_stop) {
		if (t->revoke_stale) {
			t->revoke_stale = false;
			pthread_mutex_unlock(&t->revoke_mu);
			bool ok = revoke_reload(t) == 0;
			pthread_mutex_lock(&t->revoke_mu);
			if (!ok)
				t->revoke_stale = true; /* retried below, after a pause */
		}
		if (t->revoke_stop)
			break;
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += REVOKE_RETRY_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&t->revoke_cv, &t->revoke_mu, &until);
	}
	pthread_mutex_unlock(&t->revoke_mu);
	return NULL;
}

int revoke_start(struct terminal *t)
{
	static const char *const topics[] = {"session.revoked", NULL};
	struct events_handlers h = {revoke_on_event, revoke_on_resync, t};
	int rv;

	pthread_mutex_init(&t->revoke_mu, NULL);
	pthread_cond_init(&t->revoke_cv, NULL);
	t->revoke_stale = true; /* nothing is known before the first list */
	if ((rv = rpc_client_open_for(t->svc.conf.url[SVC_AUTH], 0, SVC_SERVER_ROLES(SVC_AUTH),
	                              &t->auth)) != 0)
		return rv;
	if ((rv = events_sub_open(t->svc.conf.events_url[SVC_AUTH], topics, 3000,
	                          SVC_SERVER_ROLES(SVC_AUTH), &h, &t->revoke_sub)) != 0)
		return rv;
	if (pthread_create(&t->revoke_thread, NULL, revoke_main, t) != 0)
		return ERR_NOMEM;
	t->revoke_running = true;
	return 0;
}

void revoke_stop(struct terminal *t)
{
	if (t->revoke_running) {
		pthread_mutex_lock(&t->revoke_mu);
		t->revoke_stop = true;
		pthread_cond_signal(&t->revoke_cv);
		pthread_mutex_unlock(&t->revoke_mu);
		pthread_join(t->revoke_thread, NULL);
		t->revoke_running = false;
	}
	if (t->revoke_sub != NULL)
		events_sub_close(t->revoke_sub);
	t->revoke_sub = NULL;
	rpc_client_close(t->auth);
	t->auth = NULL;
}
