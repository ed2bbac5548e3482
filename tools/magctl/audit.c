/*
 * audit.c — `magctl audit query|verify|tail|rotate-key|export`: the audit
 * log's AuditLog methods and its live feed. Events print as JSON lines in
 * printable ASCII (common/jsonesc.h), so a field holding a newline or an
 * escape sequence can neither forge a second line nor drive the terminal.
 */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.pb-c.h"
#include "common/err.h"
#include "common/events.h"
#include "common/jsonesc.h"
#include "tools/magctl/magctl.h"

/* Reads, safe to send again when audit's connection closes under them
 * (rpc_client_resend_on_reset); never RotateKey. */
static const char *const audit_resend[] = {"Query", "Verify", NULL};

/* Calls an AuditLog method (served on audit's socket beside Audit). */
static int audit_call(struct magctl *m, const char *method, const ProtobufCMessage *in,
                      struct rpc_result *r)
{
	struct rpc_client *c;
	int rv;

	memset(r, 0, sizeof(*r));
	if ((rv = rpc_client_open_for(m->conf.url[SVC_AUDIT], 0, SVC_SERVER_ROLES(SVC_AUDIT),
	                              &c)) != 0) {
		printf("audit: down (%s)\n", err_str(rv));
		return 1;
	}
	rpc_client_resend_on_reset(c, audit_resend);
	rv = rpc_call_sync(c, &magnetar__audit_log__descriptor, method, in, NULL, m->timeout_ms, r);
	rpc_client_close(c);
	if (rv != 0) {
		printf("audit: down (%s)\n", err_str(rv));
		return 1;
	}
	if (r->status != MAGNETAR__STATUS__STATUS_OK) {
		if (r->status == MAGNETAR__STATUS__STATUS_UNAVAILABLE ||
		    r->status == MAGNETAR__STATUS__STATUS_DEADLINE_EXCEEDED)
			printf("audit: down (%s)\n", r->code);
		else
			printf("audit: refused (%s: %s)\n", r->code, r->message);
		rpc_result_fini(r);
		return 1;
	}
	return 0;
}

static void audit_print_event(const Magnetar__AuditRecord *e)
{
	const char *names[] = {"action",     "actor",   "target", "ip",
	                       "request_id", "outcome", "detail"};
	const char *vals[] = {e->action,     e->actor,   e->target, e->ip,
	                      e->request_id, e->outcome, e->detail};

	printf("{\"id\":%llu,\"time\":%llu", (unsigned long long)e->id,
	       (unsigned long long)e->time_unix_ms);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		printf(",\"%s\":", names[i]);
		jsonesc_fputs(stdout, vals[i]);
	}
	printf(",\"source\":");
	jsonesc_fputs(stdout, e->source);
	printf(",\"producer\":");
	jsonesc_fputs(stdout, e->producer);
	printf(",\"sequence\":%llu,\"received\":%llu,\"key_id\":", (unsigned long long)e->sequence,
	       (unsigned long long)e->received_unix_ms);
	jsonesc_fputs(stdout, e->key_id);
	printf(",\"epoch\":%llu}\n", (unsigned long long)e->epoch);
}

static int audit_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	if (s[0] < '0' || s[0] > '9')
		return -1;
	v = strtoull(s, &end, 10);
	if (*end != '\0')
		return -1;
	*out = v;
	return 0;
}

/* Pages through Query; `all` follows next_cursor to the end. */
static int audit_run_query(struct magctl *m, Magnetar__QueryRequest *q, bool all)
{
	char cursor[32];

	snprintf(cursor, sizeof(cursor), "%s", q->cursor != NULL ? q->cursor : "");
	for (;;) {
		struct rpc_result r;
		const Magnetar__QueryReply *out;
		q->cursor = cursor;
		if (audit_call(m, "Query", &q->base, &r) != 0)
			return 1;
		out = (const Magnetar__QueryReply *)r.output;
		for (size_t i = 0; i < out->n_events; i++)
			audit_print_event(out->events[i]);
		snprintf(cursor, sizeof(cursor), "%s", out->next_cursor);
		rpc_result_fini(&r);
		if (cursor[0] == '\0')
			return 0;
		if (!all) {
			fprintf(stderr, "next_cursor %s\n", cursor);
			return 0;
		}
	}
}

static int audit_query(struct magctl *m, int argc, char **argv, bool export)
{
	static const struct option opts[] = {
	    {"action", required_argument, NULL, 'a'}, {"actor", required_argument, NULL, 'u'},
	    {"since", required_argument, NULL, 's'},  {"until", required_argument, NULL, 'e'},
	    {"limit", required_argument, NULL, 'n'},  {"cursor", required_argument, NULL, 'c'},
	    {"all", no_argument, NULL, 'A'},          {NULL, 0, NULL, 0},
	};
	Magnetar__QueryRequest q = MAGNETAR__QUERY_REQUEST__INIT;
	bool all = export;
	uint64_t n;
	int opt;

	q.oldest_first = export;
	optind = 0;
	while ((opt = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		switch (opt) {
		case 'a':
			q.action = optarg;
			break;
		case 'u':
			q.actor = optarg;
			break;
		case 's':
		case 'e':
			if (audit_u64(optarg, &n) != 0)
				return 2;
			*(opt == 's' ? &q.since_unix_ms : &q.until_unix_ms) = n;
			break;
		case 'n':
			if (audit_u64(optarg, &n) != 0 || n == 0 || n > 1000)
				return 2;
			q.limit = (uint32_t)n;
			break;
		case 'c':
			q.cursor = optarg;
			break;
		case 'A':
			all = true;
			break;
		default:
			return 2;
		}
	}
	if (export && q.limit == 0)
		q.limit = 1000;
	return audit_run_query(m, &q, all);
}

static int audit_query_cmd(struct magctl *m, int argc, char **argv)
{
	return audit_query(m, argc, argv, false);
}

static int audit_export_cmd(struct magctl *m, int argc, char **argv)
{
	return audit_query(m, argc, argv, true);
}

static int audit_verify_cmd(struct magctl *m, int argc, char **argv)
{
	Magnetar__VerifyRequest req = MAGNETAR__VERIFY_REQUEST__INIT;
	const Magnetar__VerifyReply *v;
	struct rpc_result r;
	int rv;

	if (argc == 3 && strcmp(argv[1], "--anchor") == 0)
		req.anchor = argv[2];
	else if (argc != 1)
		return 2;
	if (m->timeout_ms < 600000)
		m->timeout_ms = 600000; /* a walk of the whole log takes its time */
	if (audit_call(m, "Verify", &req.base, &r) != 0)
		return 1;
	v = (const Magnetar__VerifyReply *)r.output;
	printf("{\"ok\":%s,\"records\":%llu", v->ok ? "true" : "false",
	       (unsigned long long)v->records);
	if (!v->ok) {
		printf(",\"first_bad_id\":%llu,\"reason\":", (unsigned long long)v->first_bad_id);
		jsonesc_fputs(stdout, v->reason);
		printf(",\"detail\":");
		jsonesc_fputs(stdout, v->detail);
	}
	printf(",\"events\":%llu,\"sealed_epochs\":%llu,\"current_epoch\":%llu,"
	       "\"macs_checked\":%llu,\"breaks\":%llu,\"genesis_fingerprint\":",
	       (unsigned long long)v->events, (unsigned long long)v->sealed_epochs,
	       (unsigned long long)v->current_epoch, (unsigned long long)v->macs_checked,
	       (unsigned long long)v->breaks);
	jsonesc_fputs(stdout, v->genesis_fingerprint);
	printf("}\n");
	rv = v->ok ? 0 : 1; /* a bad log fails scripts, like a refusal */
	rpc_result_fini(&r);
	return rv;
}

static int audit_rotate_cmd(struct magctl *m, int argc, char **argv)
{
	Magnetar__RotateKeyRequest req = MAGNETAR__ROTATE_KEY_REQUEST__INIT;
	const Magnetar__RotateKeyReply *out;
	struct rpc_result r;

	if (argc == 2 && strcmp(argv[1], "--generate") == 0)
		req.generate = true;
	else if (argc != 1)
		return 2;
	if (audit_call(m, "RotateKey", &req.base, &r) != 0)
		return 1;
	out = (const Magnetar__RotateKeyReply *)r.output;
	printf("current_key=%s previous_key=%s keys=%u sealed_epoch=%llu\n", out->current_key_id,
	       out->previous_key_id, out->keys, (unsigned long long)out->sealed_epoch);
	rpc_result_fini(&r);
	return 0;
}

struct audit_tail {
	pthread_mutex_t mu;
	uint64_t printed, want;
};

static void audit_tail_event(const char *publisher, uint64_t seq, const char *topic,
                             const uint8_t *payload, size_t len, void *arg)
{
	struct audit_tail *t = arg;
	(void)publisher;
	(void)seq;

	pthread_mutex_lock(&t->mu);
	if (strcmp(topic, "audit.appended") == 0) {
		Magnetar__AuditAppended *a = magnetar__audit_appended__unpack(NULL, len, payload);
		if (a != NULL) {
			for (size_t i = 0; i < a->n_events; i++)
				audit_print_event(a->events[i]);
			t->printed += a->n_events;
			magnetar__audit_appended__free_unpacked(a, NULL);
		}
	} else if (strcmp(topic, "audit.sealed") == 0) {
		Magnetar__AuditSealed *s = magnetar__audit_sealed__unpack(NULL, len, payload);
		if (s != NULL) {
			printf("{\"sealed_epoch\":%llu,\"records\":%llu}\n",
			       (unsigned long long)s->epoch, (unsigned long long)s->records);
			magnetar__audit_sealed__free_unpacked(s, NULL);
		}
	}
	fflush(stdout);
	pthread_mutex_unlock(&t->mu);
}

static void audit_tail_resync(const char *publisher, enum events_resync_reason why, void *arg)
{
	(void)publisher;
	(void)arg;
	/* The feed is lossy by design; Query is the record. */
	if (why == EVENTS_RESYNC_GAP)
		fprintf(stderr, "# gap in the live feed: events were missed; use magctl audit "
		                "query\n");
}

static int audit_tail_cmd(struct magctl *m, int argc, char **argv)
{
	static const char *const topics[] = {"audit.", NULL};
	struct audit_tail t = {.mu = PTHREAD_MUTEX_INITIALIZER};
	struct events_handlers h = {audit_tail_event, audit_tail_resync, &t};
	struct events_sub *sub;
	struct timespec tick = {0, 100 * 1000 * 1000};
	sigset_t set;
	int rv;

	if (argc == 3 && strcmp(argv[1], "--count") == 0) {
		if (audit_u64(argv[2], &t.want) != 0)
			return 2;
	} else if (argc != 1) {
		return 2;
	}
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if ((rv = events_sub_open(m->conf.events_url[SVC_AUDIT], topics, 0,
	                          SVC_SERVER_ROLES(SVC_AUDIT), &h, &sub)) != 0) {
		printf("audit: cannot subscribe to %s (%s)\n", m->conf.events_url[SVC_AUDIT],
		       err_str(rv));
		return 1;
	}
	for (;;) {
		bool done;
		if (sigtimedwait(&set, NULL, &tick) > 0)
			break;
		pthread_mutex_lock(&t.mu);
		done = t.want > 0 && t.printed >= t.want;
		pthread_mutex_unlock(&t.mu);
		if (done)
			break;
	}
	events_sub_close(sub);
	return 0;
}

struct audit_sub {
	const char *name;
	int (*run)(struct magctl *m, int argc, char **argv);
	const char *usage;
};

static const struct audit_sub audit_subs[] = {
    {"query", audit_query_cmd,
     "query [--action A] [--actor U] [--since MS] [--until MS] [--limit N] [--cursor C] [--all]"},
    {"export", audit_export_cmd, "export [filters as query]   (every event, oldest first)"},
    {"verify", audit_verify_cmd, "verify [--anchor GENESIS_SHA256]   (exit 1 when the log is bad)"},
    {"tail", audit_tail_cmd, "tail [--count N]"},
    {"rotate-key", audit_rotate_cmd, "rotate-key [--generate]"},
};

int magctl_audit(struct magctl *m, int argc, char **argv)
{
	size_t n = sizeof(audit_subs) / sizeof(audit_subs[0]);

	if (argc >= 2)
		for (size_t i = 0; i < n; i++)
			if (strcmp(argv[1], audit_subs[i].name) == 0) {
				int rv = audit_subs[i].run(m, argc - 1, argv + 1);
				if (rv == 2)
					fprintf(stderr, "usage: magctl audit %s\n",
					        audit_subs[i].usage);
				return rv;
			}
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, "usage: magctl audit %s\n", audit_subs[i].usage);
	return 2;
}
