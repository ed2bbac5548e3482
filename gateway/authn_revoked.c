/*
 * authn_revoked.c — the sessions auth said were revoked, or re-bound by a
 * step-up to other fingerprint hashes (a re-bound one named by its keyed
 * tag: authn.c): one open-addressing table, loaded page by page over RPC
 * (RevokedPage) and added to by each auth.events event. Whether it can be
 * trusted (authn_current, inline in authn.h) follows from what is set here:
 * loaded since the last resync, from a publisher heard within 3 s.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "auth.pb-c.h"
#include "common/clock.h"
#include "common/err.h"
#include "common/events.h"
#include "common/siphash.h"
#include "gateway/authn.h"
#include "gateway/gateway.h"

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

void authn_revoked_add_locked(struct authn *a, const char *sid)
{
	struct authn_entry *e;
	if (sid[0] == '\0' || strlen(sid) >= AUTHN_SID_LEN ||
	    (e = authn_slot_locked(a, sid)) == NULL)
		return;
	e->revoked = true;
}

void authn_rebound_add_locked(struct authn *a, const Magnetar__SessionEvent *ev)
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

const struct authn_entry *authn_find_locked(struct authn *a, const char *sid)
{
	if (a->cap == 0)
		return NULL;
	for (size_t i = authn_hash(a, sid) & (a->cap - 1); a->revoked[i].sid[0] != '\0';
	     i = (i + 1) & (a->cap - 1))
		if (strcmp(a->revoked[i].sid, sid) == 0)
			return &a->revoked[i];
	return NULL;
}

/* Loads the revoked set page by page. Synced only when no resync came
 * while it ran (an event may have been lost then) and every page came from
 * one publisher instance. */
int authn_load_revoked(struct authn *a)
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

/* Something may have been missed: stale until a load that began after now. */
void authn_stale(struct authn *a)
{
	atomic_fetch_add(&a->resync_gen, 1);
	atomic_store(&a->synced, false);
}

void authn_session_ended(struct gateway *gw, const char *sid)
{
	struct authn *a = gw->authn;
	pthread_rwlock_wrlock(&a->lock);
	authn_revoked_add_locked(a, sid);
	pthread_rwlock_unlock(&a->lock);
	authn_me_drop(a, sid);
}
