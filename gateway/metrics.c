/*
 * metrics.c — GET /metrics in Prometheus text format 0.0.4: requests and
 * latency per route and status, RPC latency per service and method, rate
 * limit hits, and every service's own Stats counters (fetched with one async
 * Stats RPC each, the connection suspended meanwhile).
 *
 * Recording is on every request's path, so it is a few relaxed atomic adds
 * into one of METRICS_SHARDS copies chosen per thread (MHD's two threads and
 * nng's callbacks do not fight over cache lines); a scrape sums the copies.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.pb-c.h"
#include "auth.pb-c.h"
#include "breach.pb-c.h"
#include "terminal.pb-c.h"

#include "common/err.h"
#include "gateway/gateway.h"

#define METRICS_SHARDS 4
#define METRICS_ROUTES 48  /* route rows + 2 ("unmatched", "upstream"); checked at start */
#define METRICS_STATUS 500 /* 100..599 */
#define METRICS_RPC_METHODS 32
#define METRICS_NB 14

/* Bucket bounds in µs, and as Prometheus prints them (seconds). */
static const uint64_t metrics_le_us[METRICS_NB] = {
    250,   500,    1000,   2500,   5000,    10000,   25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 10000000,
};
static const char *const metrics_le_text[METRICS_NB] = {
    "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05",    "0.1",    "0.25",  "0.5",    "1",     "2.5",  "10",
};

/* The services whose RPCs and Stats are measured, in the order of slots. */
static const struct {
	enum svc_id svc;
	const ProtobufCServiceDescriptor *desc;
} metrics_services[] = {
    {SVC_AUTH, &magnetar__auth__descriptor},
    {SVC_AUDIT, &magnetar__audit__descriptor},
    {SVC_BREACH, &magnetar__breach__descriptor},
    {SVC_TERMINAL, &magnetar__terminal__descriptor},
};
#define METRICS_NSVC (sizeof(metrics_services) / sizeof(metrics_services[0]))
_Static_assert(METRICS_NSVC <= HTTP_RPC_SLOTS, "one RPC slot per service");

static const char *const metrics_rate_names[RATE_CLASSES] = {
    [RATE_GLOBAL] = "global",
    [RATE_LOGIN] = "login",
    [RATE_PASSWORD_CHECK] = "password_check",
    [RATE_REGISTER] = "register",
    [RATE_TERMINAL] = "terminal",
};

struct metrics_hist {
	_Atomic uint64_t bucket[METRICS_NB + 1]; /* not cumulative; [NB] = above the last */
	_Atomic uint64_t sum_us;
};

struct metrics_shard {
	_Atomic uint64_t requests[METRICS_ROUTES][METRICS_STATUS];
	struct metrics_hist latency[METRICS_ROUTES];
	struct metrics_hist rpc[METRICS_NSVC][METRICS_RPC_METHODS];
	_Atomic uint64_t rate_hits[RATE_CLASSES];
} __attribute__((aligned(64)));

struct metrics {
	struct metrics_shard shard[METRICS_SHARDS];
};

static _Atomic unsigned metrics_next_shard;
static _Thread_local int metrics_my_shard = -1;

static struct metrics_shard *metrics_shard(struct metrics *m)
{
	if (metrics_my_shard < 0)
		metrics_my_shard =
		    (int)(atomic_fetch_add_explicit(&metrics_next_shard, 1, memory_order_relaxed) %
		          METRICS_SHARDS);
	return &m->shard[metrics_my_shard];
}

int metrics_new(struct metrics **out)
{
	if (routes_count() + 2 > METRICS_ROUTES)
		return ERR_INTERNAL; /* raise METRICS_ROUTES */
	/* Mostly zero pages the kernel maps lazily: rows never used cost no RSS. */
	if ((*out = calloc(1, sizeof(struct metrics))) == NULL)
		return ERR_NOMEM;
	return 0;
}

void metrics_free(struct metrics *m)
{
	free(m);
}

static void metrics_observe(struct metrics_hist *h, uint64_t us)
{
	int i = 0;
	while (i < METRICS_NB && us > metrics_le_us[i])
		i++;
	atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

void metrics_request(struct gateway *gw, size_t route_label, unsigned status, uint64_t us)
{
	struct metrics_shard *s;
	size_t r = route_label; /* 0 = unmatched */

	if (gw->metrics == NULL)
		return;
	s = metrics_shard(gw->metrics);
	if (status >= 100 && status < 100 + METRICS_STATUS)
		atomic_fetch_add_explicit(&s->requests[r][status - 100], 1, memory_order_relaxed);
	metrics_observe(&s->latency[r], us);
}

void metrics_rpc(struct gateway *gw, const ProtobufCServiceDescriptor *desc, const char *method,
                 uint64_t us)
{
	if (gw->metrics == NULL || desc == NULL || method == NULL)
		return;
	for (size_t i = 0; i < METRICS_NSVC; i++) {
		if (metrics_services[i].desc != desc)
			continue;
		for (unsigned m = 0; m < desc->n_methods && m < METRICS_RPC_METHODS; m++)
			if (strcmp(desc->methods[m].name, method) == 0) {
				metrics_observe(&metrics_shard(gw->metrics)->rpc[i][m], us);
				return;
			}
	}
}

void metrics_rate_hit(struct gateway *gw, enum rate_class klass)
{
	if (gw->metrics != NULL)
		atomic_fetch_add_explicit(&metrics_shard(gw->metrics)->rate_hits[klass], 1,
		                          memory_order_relaxed);
}

/* ---- the scrape --------------------------------------------------------------- */

/* A label value: backslash, double quote and newline escaped (0.0.4). */
static void metrics_label(FILE *f, const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v == '\\' || *v == '"')
			fprintf(f, "\\%c", *v);
		else if (*v == '\n')
			fputs("\\n", f);
		else
			fputc(*v, f);
	}
}

static const char *metrics_route_name(size_t r)
{
	return r == 0 ? "unmatched" : r > routes_count() ? "upstream" : routes_at(r - 1)->path;
}

/* Sums one histogram over the shards and prints it with `labels` (already
 * formatted, without braces). Nothing when it never observed anything. */
static void metrics_print_hist(FILE *f, const char *name, const char *labels,
                               const struct metrics *m, size_t off)
{
	uint64_t b[METRICS_NB + 1] = {0}, sum = 0, cum = 0;

	for (int k = 0; k < METRICS_SHARDS; k++) {
		const struct metrics_hist *h =
		    (const struct metrics_hist *)((const char *)&m->shard[k] + off);
		for (int i = 0; i <= METRICS_NB; i++)
			b[i] += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
		sum += atomic_load_explicit(&h->sum_us, memory_order_relaxed);
	}
	for (int i = 0; i <= METRICS_NB; i++)
		cum += b[i];
	if (cum == 0)
		return;
	cum = 0;
	for (int i = 0; i < METRICS_NB; i++) {
		cum += b[i];
		fprintf(f, "%s_bucket{%s,le=\"%s\"} %llu\n", name, labels, metrics_le_text[i],
		        (unsigned long long)cum);
	}
	cum += b[METRICS_NB];
	fprintf(f, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels, (unsigned long long)cum);
	fprintf(f, "%s_sum{%s} %.6f\n", name, labels, (double)sum / 1e6);
	fprintf(f, "%s_count{%s} %llu\n", name, labels, (unsigned long long)cum);
}

struct metrics_emit {
	FILE *f;
	const char *service;
};

static void metrics_emit_counter(const char *name, uint64_t value, void *arg)
{
	struct metrics_emit *e = arg;
	fputs("magnetar_service_stat{service=\"", e->f);
	metrics_label(e->f, e->service);
	fputs("\",name=\"", e->f);
	metrics_label(e->f, name);
	fprintf(e->f, "\"} %llu\n", (unsigned long long)value);
}

static void metrics_print(FILE *f, struct http_request *req)
{
	struct gateway *gw = req->gw;
	const struct metrics *m = gw->metrics;
	char labels[512];
	int64_t inflight = atomic_load(&gw->ctr.inflight);
	struct metrics_emit e = {f, "gateway"};

	fputs("# HELP magnetar_http_requests_total HTTP requests answered, by route and status.\n"
	      "# TYPE magnetar_http_requests_total counter\n",
	      f);
	for (size_t r = 0; r <= routes_count() + 1; r++)
		for (unsigned st = 0; st < METRICS_STATUS; st++) {
			uint64_t n = 0;
			for (int k = 0; k < METRICS_SHARDS; k++)
				n += atomic_load_explicit(&m->shard[k].requests[r][st],
				                          memory_order_relaxed);
			if (n == 0)
				continue;
			fputs("magnetar_http_requests_total{route=\"", f);
			metrics_label(f, metrics_route_name(r));
			fprintf(f, "\",status=\"%u\"} %llu\n", st + 100, (unsigned long long)n);
		}

	fputs("# HELP magnetar_http_request_duration_seconds Time from the request line to the "
	      "end of the answer, by route.\n"
	      "# TYPE magnetar_http_request_duration_seconds histogram\n",
	      f);
	for (size_t r = 0; r <= routes_count() + 1; r++) {
		/* Route paths are our own constants: nothing to escape. */
		snprintf(labels, sizeof(labels), "route=\"%s\"", metrics_route_name(r));
		metrics_print_hist(f, "magnetar_http_request_duration_seconds", labels, m,
		                   offsetof(struct metrics_shard, latency) +
		                       r * sizeof(struct metrics_hist));
	}

	fputs("# HELP magnetar_rpc_duration_seconds RPCs made for HTTP requests, by service and "
	      "method.\n"
	      "# TYPE magnetar_rpc_duration_seconds histogram\n",
	      f);
	for (size_t i = 0; i < METRICS_NSVC; i++) {
		const ProtobufCServiceDescriptor *d = metrics_services[i].desc;
		for (unsigned k = 0; k < d->n_methods && k < METRICS_RPC_METHODS; k++) {
			snprintf(labels, sizeof(labels), "service=\"%s\",method=\"%s\"",
			         svc_name(metrics_services[i].svc), d->methods[k].name);
			metrics_print_hist(f, "magnetar_rpc_duration_seconds", labels, m,
			                   offsetof(struct metrics_shard, rpc) +
			                       (i * METRICS_RPC_METHODS + k) *
			                           sizeof(struct metrics_hist));
		}
	}

	fprintf(f,
	        "# HELP magnetar_http_inflight Requests begun and not yet completed.\n"
	        "# TYPE magnetar_http_inflight gauge\n"
	        "magnetar_http_inflight %lld\n",
	        (long long)(inflight > 0 ? inflight : 0));
	fputs("# HELP magnetar_rate_limited_total Requests refused 429 by the gateway's limits.\n"
	      "# TYPE magnetar_rate_limited_total counter\n",
	      f);
	for (int c = 0; c < RATE_CLASSES; c++) {
		uint64_t n = 0;
		for (int k = 0; k < METRICS_SHARDS; k++)
			n += atomic_load_explicit(&m->shard[k].rate_hits[c], memory_order_relaxed);
		fprintf(f, "magnetar_rate_limited_total{class=\"%s\"} %llu\n",
		        metrics_rate_names[c], (unsigned long long)n);
	}
	fprintf(f,
	        "# HELP magnetar_rate_limit_evictions_total Buckets reused for another client "
	        "(table pressure).\n"
	        "# TYPE magnetar_rate_limit_evictions_total counter\n"
	        "magnetar_rate_limit_evictions_total %llu\n"
	        "# HELP magnetar_header_deadline_closed_total Connections shut down for no "
	        "complete header block in time.\n"
	        "# TYPE magnetar_header_deadline_closed_total counter\n"
	        "magnetar_header_deadline_closed_total %llu\n"
	        "# HELP magnetar_body_deadline_closed_total Requests answered 408 and closed "
	        "for no complete body in time.\n"
	        "# TYPE magnetar_body_deadline_closed_total counter\n"
	        "magnetar_body_deadline_closed_total %llu\n",
	        (unsigned long long)(gw->rl != NULL ? ratelimit_evictions(gw->rl) : 0),
	        (unsigned long long)http_header_deadline_cuts(gw),
	        (unsigned long long)http_body_deadline_cuts(gw));

	fputs("# HELP magnetar_service_up 1 when the service answered Stats for this scrape.\n"
	      "# TYPE magnetar_service_up gauge\n",
	      f);
	for (size_t i = 0; i < METRICS_NSVC; i++)
		fprintf(f, "magnetar_service_up{service=\"%s\"} %d\n",
		        svc_name(metrics_services[i].svc),
		        req->rpc[i].result.status == MAGNETAR__STATUS__STATUS_OK &&
		            req->rpc[i].result.output != NULL);
	fputs("# HELP magnetar_service_stat Each service's own Stats counters.\n"
	      "# TYPE magnetar_service_stat untyped\n",
	      f);
	if (gw->svc.counters != NULL)
		gw->svc.counters(&gw->svc, metrics_emit_counter, &e);
	if (gw->svc.rpc != NULL)
		rpc_server_counters(gw->svc.rpc, metrics_emit_counter, &e);
	for (size_t i = 0; i < METRICS_NSVC; i++) {
		const Magnetar__StatsReply *sr =
		    (const Magnetar__StatsReply *)req->rpc[i].result.output;
		if (req->rpc[i].result.status != MAGNETAR__STATUS__STATUS_OK || sr == NULL)
			continue;
		e.service = svc_name(metrics_services[i].svc);
		for (size_t k = 0; k < sr->n_counters; k++)
			if (sr->counters[k]->name != NULL)
				metrics_emit_counter(sr->counters[k]->name, sr->counters[k]->value,
				                     &e);
	}
}

static int metrics_done(struct http_request *req)
{
	struct MHD_Response *resp;
	char *text = NULL;
	size_t len = 0;
	FILE *f;

	if (req->gw->metrics == NULL)
		return respond_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "service_unavailable",
		                     "Metrics are not available.");
	if ((f = open_memstream(&text, &len)) == NULL)
		return ERR_NOMEM;
	metrics_print(f, req);
	if (fclose(f) != 0) {
		free(text);
		return ERR_NOMEM;
	}
	resp = respond_new(req, text, len, MHD_RESPMEM_MUST_FREE, false);
	if (resp != NULL &&
	    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
	                            "text/plain; version=0.0.4; charset=utf-8") != MHD_YES) {
		MHD_destroy_response(resp);
		resp = NULL;
	}
	return http_queue(req, MHD_HTTP_OK, resp);
}

int metrics_serve(struct http_request *req)
{
	int rv;
	Magnetar__StatsRequest in = MAGNETAR__STATS_REQUEST__INIT;

	if ((rv = http_async_begin(req, metrics_done)) != 0)
		return http_async_refused(req, rv);
	for (size_t i = 0; i < METRICS_NSVC; i++) {
		struct rpc_client *c = req->gw->client[metrics_services[i].svc];
		/* Not connected: reported down now, not after the deadline. */
		if (c != NULL && !rpc_client_connected(c))
			c = NULL;
		http_async_call(req, (int)i, c, metrics_services[i].desc, "Stats", &in.base);
	}
	http_async_end(req);
	return 0;
}
