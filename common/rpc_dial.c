/*
 * rpc_dial.c — dialling a service (rpc.h): one dialer per entry of a URL
 * list (replicas), pipe counts per dialer, re-dialling every registered
 * socket at once (rpc_redial_all: make before break), and replacing a
 * dialer nng 1.5.2 gave up on (rpc_dials_renew_idle); used by rpc_client.c
 * and by the events subscribers.
 */
#include "common/rpc.h"

#include <nng/nng.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/replica.h"

/* ---- re-dialling ------------------------------------------------------- */

static pthread_mutex_t dial_mu = PTHREAD_MUTEX_INITIALIZER;
static struct rpc_dial *dial_list;
static bool dial_hold;

void rpc_hold_dials(bool hold)
{
	pthread_mutex_lock(&dial_mu);
	dial_hold = hold;
	pthread_mutex_unlock(&dial_mu);
}

/* The low word of link: the id of the dialer's pipe, 0 for none, or a
 * pipe id with DIAL_GONE for a pipe whose removal came before its addition
 * (nng 1.5.2 runs REM_POST as soon as a pipe closes, and its ADD_POST may
 * still be on its way): that ADD_POST is then not counted. */
#define DIAL_GONE 0x80000000u

bool rpc_dial_has_pipe(const struct rpc_dial *d)
{
	uint32_t low = (uint32_t)atomic_load(&d->link);
	return low != 0 && (low & DIAL_GONE) == 0;
}

/* A dialer created, noted, then started: its first pipe event may come
 * before nng_dialer_start returns. On failure d is as it was. */
static int dial_new(struct rpc_dial *d)
{
	nng_dialer dl, prev = d->dialer;
	uint64_t prev_link = atomic_load(&d->link);
	int nv;

	if ((nv = nng_dialer_create(&dl, d->sock, d->url)) != 0)
		return nv;
	d->dialer = dl;
	atomic_store(&d->link, (uint64_t)(uint32_t)nng_dialer_id(dl) << 32);
	if ((nv = nng_dialer_start(dl, NNG_FLAG_NONBLOCK)) != 0) {
		nng_dialer_close(dl);
		d->dialer = prev;
		atomic_store(&d->link, prev_link);
	}
	return nv;
}

int rpc_dial_start(struct rpc_dial *d, nng_socket sock, const char *url)
{
	int nv;

	d->sock = sock;
	d->next = NULL;
	d->idle_since_ms = 0;
	d->waiting = false;
	atomic_store(&d->link, 0); /* no dialer has id 0 */
	if ((d->url = strdup(url)) == NULL)
		return NNG_ENOMEM;
	pthread_mutex_lock(&dial_mu);
	d->dialled = !dial_hold;
	nv = dial_hold ? 0 : dial_new(d);
	if (nv == 0) {
		d->next = dial_list;
		dial_list = d;
	}
	pthread_mutex_unlock(&dial_mu);
	if (nv != 0) {
		free(d->url);
		d->url = NULL;
	}
	return nv;
}

void rpc_dial_pipe_event(struct rpc_dial *d, nng_pipe p, nng_pipe_ev ev)
{
	uint64_t id = (uint64_t)(uint32_t)nng_dialer_id(nng_pipe_dialer(p));
	uint32_t pipe = (uint32_t)nng_pipe_id(p) & ~DIAL_GONE, low;
	uint64_t v = atomic_load(&d->link), next;

	do {
		if (v >> 32 != id || pipe == 0)
			return; /* a replaced dialer's, or a listener's */
		low = (uint32_t)v;
		if (ev == NNG_PIPE_EV_ADD_POST) {
			if (low == (pipe | DIAL_GONE))
				next = id << 32; /* removed already: not counted */
			else if (low == 0 || (low & DIAL_GONE) != 0)
				next = id << 32 | pipe; /* (another pipe's stale mark) */
			else
				return;
		} else if (ev == NNG_PIPE_EV_REM_POST) {
			if (low == pipe)
				next = id << 32;
			else if (low == 0 || (low & DIAL_GONE) != 0)
				next = id << 32 | pipe | DIAL_GONE;
			else
				return;
		} else {
			return;
		}
	} while (!atomic_compare_exchange_weak(&d->link, &v, next));
}

void rpc_dial_stop(struct rpc_dial *d)
{
	pthread_mutex_lock(&dial_mu);
	for (struct rpc_dial **p = &dial_list; *p != NULL; p = &(*p)->next) {
		if (*p == d) {
			*p = d->next;
			break;
		}
	}
	pthread_mutex_unlock(&dial_mu);
	free(d->url);
	d->url = NULL;
}

int rpc_url_first(const char *urls, char *buf, size_t len)
{
	return replica_entry(urls, 1, buf, len);
}

int rpc_dials_start(struct rpc_dials *ds, nng_socket sock, const char *urls,
                    pthread_mutex_t *busy_mu, const int *busy)
{
	size_t count = replica_count(urls);
	char url[512];
	int nv = 0;

	memset(ds, 0, sizeof(*ds));
	if (count > RPC_URLS_MAX)
		return NNG_EINVAL;
	for (size_t i = 1; i <= count; i++) {
		if (replica_entry(urls, i, url, sizeof(url)) != 0) {
			nv = NNG_EINVAL;
			break;
		}
		ds->d[ds->n].busy_mu = busy_mu;
		ds->d[ds->n].busy = busy;
		if ((nv = rpc_dial_start(&ds->d[ds->n], sock, url)) != 0)
			break;
		ds->n++;
	}
	if (nv == 0)
		return 0;
	rpc_dials_stop(ds);
	return nv;
}

void rpc_dials_pipe_event(struct rpc_dials *ds, nng_pipe p, nng_pipe_ev ev)
{
	/* Every slot, not the first `n`: nng calls this on its own threads while
	 * rpc_dials_start is still counting (a data race under TSan). A slot not
	 * started has id 0, which no dialer has. */
	for (size_t i = 0; i < RPC_URLS_MAX; i++)
		rpc_dial_pipe_event(&ds->d[i], p, ev);
}

void rpc_dials_stop(struct rpc_dials *ds)
{
	for (size_t i = 0; i < ds->n; i++)
		rpc_dial_stop(&ds->d[i]);
	ds->n = 0;
}

/* True when every re-dialled socket that was connected is connected again. */
static bool redial_settled(void)
{
	bool done = true;

	pthread_mutex_lock(&dial_mu);
	for (struct rpc_dial *d = dial_list; d != NULL; d = d->next)
		if (d->dialled && d->url != NULL && d->waiting && !rpc_dial_has_pipe(d))
			done = false;
	pthread_mutex_unlock(&dial_mu);
	return done;
}

/* Closes `old` when d's owner has nothing in flight: holding its lock, no
 * call can start meanwhile. After 2 s of traffic, closes it anyway. */
static void redial_close_old(struct rpc_dial *d, nng_dialer old)
{
	struct timespec nap = {0, 5 * 1000 * 1000};

	for (int tries = 0; d->busy_mu != NULL && tries < 400; tries++) {
		pthread_mutex_lock(d->busy_mu);
		if (*d->busy == 0) {
			nng_dialer_close(old);
			pthread_mutex_unlock(d->busy_mu);
			return;
		}
		pthread_mutex_unlock(d->busy_mu);
		nanosleep(&nap, NULL);
	}
	nng_dialer_close(old);
}

void rpc_redial_all(void)
{
	struct timespec nap = {0, 10 * 1000 * 1000};
	struct {
		struct rpc_dial *d;
		nng_dialer old;
	} old[64];
	size_t n = 0;

	/* Make before break: the new dialers connect while the old pipes still
	 * carry requests, so a caller never meets a moment without a pipe (a
	 * 503 right after start). A socket whose old dialer had no pipe (its
	 * peer is down) is not waited for; the new dialer finds it later. */
	pthread_mutex_lock(&dial_mu);
	for (struct rpc_dial *d = dial_list; d != NULL; d = d->next) {
		nng_dialer prev = d->dialer;
		bool was_dialled = d->dialled, was_up = d->dialled && rpc_dial_has_pipe(d);
		int nv;
		if ((nv = dial_new(d)) != 0) {
			log_warnx("rpc: cannot dial %s again: %s", d->url, nng_strerror(nv));
			continue;
		}
		d->dialled = true;
		d->waiting = was_up; /* connected before: wait for the new pipe */
		if (was_dialled && n < sizeof(old) / sizeof(old[0])) {
			old[n].d = d;
			old[n++].old = prev;
		} else if (was_dialled) {
			nng_dialer_close(prev); /* more than we track: break first */
		}
	}
	pthread_mutex_unlock(&dial_mu);
	for (int waited = 0; waited < 200 && !redial_settled(); waited++)
		nanosleep(&nap, NULL);
	/* Held throughout: a registered dial cannot go away under us. */
	pthread_mutex_lock(&dial_mu);
	for (struct rpc_dial *d = dial_list; d != NULL; d = d->next)
		d->waiting = false;
	for (size_t i = 0; i < n; i++) {
		bool live = false;
		for (struct rpc_dial *d = dial_list; d != NULL; d = d->next)
			live = live || d == old[i].d;
		if (live)
			redial_close_old(old[i].d, old[i].old);
		/* else: its socket closed meanwhile, and the dialer with it */
	}
	pthread_mutex_unlock(&dial_mu);
}

/* ---- replacing a dialer nng gave up on (rpc.h) -------------------------- */

static _Atomic uint64_t dial_renewed;

unsigned rpc_dials_renew_idle(uint64_t now_ms)
{
	unsigned renewed = 0;

	pthread_mutex_lock(&dial_mu);
	for (struct rpc_dial *d = dial_list; d != NULL; d = d->next) {
		nng_dialer prev = d->dialer;

		/* A dialer rpc_redial_all is waiting for is left to it. */
		if (!d->dialled || d->url == NULL || d->waiting || rpc_dial_has_pipe(d)) {
			d->idle_since_ms = 0;
			continue;
		}
		if (d->idle_since_ms == 0 || now_ms < d->idle_since_ms) {
			d->idle_since_ms = now_ms;
			continue;
		}
		if (now_ms - d->idle_since_ms < RPC_DIAL_RENEW_MS)
			continue;
		d->idle_since_ms = now_ms;
		if (dial_new(d) != 0)
			continue; /* keep what we had; try again next time */
		/* No pipe of its own, so no request in flight on it. */
		nng_dialer_close(prev);
		renewed++;
	}
	pthread_mutex_unlock(&dial_mu);
	atomic_fetch_add(&dial_renewed, renewed);
	return renewed;
}

uint64_t rpc_dials_renewed(void)
{
	return atomic_load(&dial_renewed);
}
