/*
 * health.c — GET /healthz (the gateway runs: no RPC, one constant body, the
 * benchmarked hot path) and GET /readyz (every service answers Ping: four
 * RPCs in parallel while the connection is suspended, never a blocked thread).
 *
 * /readyz needs no token, so one Ping per service per request would let
 * anyone turn a flood of it into a flood of every internal service. The
 * requests share rounds instead: one round of four Pings at a time; a
 * request that arrives while a round is out waits for the next one, which
 * starts when that round ends. So every answer comes from Pings sent after
 * the request arrived (a service frozen a moment ago is never reported up),
 * and however many requests wait, one round is in flight.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "auth.pb-c.h"
#include "audit.pb-c.h"
#include "breach.pb-c.h"
#include "terminal.pb-c.h"

#include "common/clock.h"
#include "common/err.h"
#include "gateway/gateway.h"

/* The services /readyz asks, in the order of its answer; slot i is row i. */
static const struct {
	enum svc_id svc;
	const ProtobufCServiceDescriptor *desc;
} health_deps[] = {
    {SVC_AUTH, &magnetar__auth__descriptor},
    {SVC_AUDIT, &magnetar__audit__descriptor},
    {SVC_BREACH, &magnetar__breach__descriptor},
    {SVC_TERMINAL, &magnetar__terminal__descriptor},
};

#define HEALTH_NDEPS (sizeof(health_deps) / sizeof(health_deps[0]))
_Static_assert(HEALTH_NDEPS <= HTTP_RPC_SLOTS, "one RPC slot per service");

/* One object, so the connection's cached response recognises it. */
static const char health_ok[] = "{\"status\":\"ok\"}";

/* GET /: says what this is and where the API is, so a bare visit (or a
 * scanner that grades only a 2xx/3xx front page) gets an answer with every
 * security header rather than a 404. Nothing secret, nothing versioned. */
static const char health_root_body[] =
    "{\"service\":\"magnetar\",\"api\":\"/api/v1\",\"openapi\":\"/openapi.yaml\"}";

int health_root(struct http_request *req)
{
	return respond_static(req, MHD_HTTP_OK, health_root_body);
}

int health_live(struct http_request *req)
{
	return respond_static_cached(req, MHD_HTTP_OK, health_ok);
}

struct health_rounds {
	struct gateway *gw;
	pthread_mutex_t mu;
	bool running;              /* a round's Pings are out */
	struct http_request *now;  /* answered by the running round */
	struct http_request *next; /* arrived while it ran: the next round's */
	int outstanding;           /* Pings of the running round still out */
	unsigned up;               /* which of them answered, so far */
};

/* One Ping of a round: its dependency's index, and the rounds; set once by
 * health_start (one gateway per process), read by every round. */
struct health_ping {
	struct health_rounds *r;
	size_t i;
};
static struct health_ping health_pings[HEALTH_NDEPS];

/* Up means: answered OK, and as the service we meant to ask (a wrong URL
 * pointing at another service must not look healthy). */
static bool health_answered(const struct rpc_result *res, enum svc_id svc)
{
	const Magnetar__PingReply *reply = (const Magnetar__PingReply *)res->output;

	return res->status == MAGNETAR__STATUS__STATUS_OK && reply != NULL &&
	       reply->service != NULL && strcmp(reply->service, svc_name(svc)) == 0;
}

/* Records Ping i of the running round. The last one answers the round's
 * requests and makes the requests that came meanwhile the next round:
 * true then, and the caller sends it (a loop, not a recursion, when Pings
 * cannot even start). */
static bool health_round_record(struct health_rounds *r, size_t i, bool up)
{
	struct http_request *answered, *w;
	bool again = false;
	unsigned bits;

	if (!up)
		atomic_fetch_add_explicit(&r->gw->ctr.rpc_failures, 1, memory_order_relaxed);
	pthread_mutex_lock(&r->mu);
	if (up)
		r->up |= 1u << i;
	if (--r->outstanding > 0) {
		pthread_mutex_unlock(&r->mu);
		return false;
	}
	answered = r->now;
	bits = r->up;
	r->now = r->next;
	r->next = NULL;
	r->up = 0;
	if (r->now != NULL) {
		r->outstanding = (int)HEALTH_NDEPS;
		again = true;
	} else {
		r->running = false;
	}
	pthread_mutex_unlock(&r->mu);
	while ((w = answered) != NULL) {
		answered = w->ready_next;
		w->ready_up = bits;
		http_async_release(w);
	}
	return again;
}

static void health_ping_done(struct rpc_result *res, void *arg);

/* Sends a round's Pings; r->outstanding is already HEALTH_NDEPS. A Ping
 * that cannot start (no pipe to the service: down now, rather than after
 * the deadline, or a flood of /readyz would hold connections suspended) is
 * recorded at once as down. Called without r->mu. */
static void health_round_send(struct health_rounds *r)
{
	Magnetar__PingRequest ping = MAGNETAR__PING_REQUEST__INIT;
	struct gateway *gw = r->gw;
	bool again;

	do {
		again = false;
		for (size_t i = 0; i < HEALTH_NDEPS; i++) {
			struct rpc_client *c = gw->client[health_deps[i].svc];
			atomic_fetch_add_explicit(&gw->ctr.rpc_calls, 1, memory_order_relaxed);
			atomic_fetch_add(&gw->rpc_pending, 1); /* until health_ping_done ends */
			if (c != NULL && rpc_client_connected(c) &&
			    rpc_call_async(c, health_deps[i].desc, "Ping", &ping.base, NULL,
			                   gw->limits.rpc_timeout_ms, health_ping_done,
			                   &health_pings[i]) == 0)
				continue;
			atomic_fetch_sub(&gw->rpc_pending, 1);
			again = health_round_record(r, i, false) || again;
		}
	} while (again);
}

/* On an nng thread. */
static void health_ping_done(struct rpc_result *res, void *arg)
{
	struct health_ping *p = arg;
	struct health_rounds *r = p->r;
	struct gateway *gw = r->gw;

	if (health_round_record(r, p->i, health_answered(res, health_deps[p->i].svc)))
		health_round_send(r);
	/* Last: http_stop waits for rpc_pending, and the next round's Pings
	 * were counted before this one lets go. */
	atomic_fetch_sub(&gw->rpc_pending, 1);
}

/* Runs on an MHD thread once the request's round has answered. */
static int health_ready_done(struct http_request *req)
{
	json_t *services = json_object();
	bool all = true;

	if (services == NULL)
		return ERR_NOMEM;
	for (size_t i = 0; i < HEALTH_NDEPS; i++) {
		bool up = (req->ready_up >> i) & 1u;
		all = all && up;
		if (json_object_set_new(services, svc_name(health_deps[i].svc),
		                        json_string(up ? "up" : "down")) != 0) {
			json_decref(services);
			return ERR_NOMEM;
		}
	}
	return respond_json(
	    req, all ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
	    json_pack("{s:s,s:o}", "status", all ? "ready" : "degraded", "services", services));
}

int health_ready(struct http_request *req)
{
	struct health_rounds *r = req->gw->ready;
	bool start;
	int rv;

	if ((rv = http_async_begin(req, health_ready_done)) != 0)
		return http_async_refused(req, rv);
	http_async_hold(req); /* released by the round that answers it */
	pthread_mutex_lock(&r->mu);
	start = !r->running;
	if (start) {
		req->ready_next = r->now;
		r->now = req;
		r->running = true;
		r->outstanding = (int)HEALTH_NDEPS;
		r->up = 0;
	} else {
		req->ready_next = r->next;
		r->next = req;
	}
	pthread_mutex_unlock(&r->mu);
	if (start)
		health_round_send(r);
	http_async_end(req);
	return 0;
}

int health_start(struct gateway *gw)
{
	struct health_rounds *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return ERR_NOMEM;
	r->gw = gw;
	pthread_mutex_init(&r->mu, NULL);
	for (size_t i = 0; i < HEALTH_NDEPS; i++)
		health_pings[i] = (struct health_ping){.r = r, .i = i};
	gw->ready = r;
	return 0;
}

/* After http_stop: no request waits and no Ping is out. */
void health_stop(struct gateway *gw)
{
	if (gw->ready == NULL)
		return;
	pthread_mutex_destroy(&gw->ready->mu);
	free(gw->ready);
	gw->ready = NULL;
}
