/*
 * append.c — the Append method: validates a batch from a producer's outbox
 * and hands it to the ingest pipeline, which answers after the batch's
 * transaction commits. The producer's identity is the IPC peer uid when
 * there is one (a producer cannot claim to be another uid), and only
 * otherwise the name it claims, so nobody pre-empts another producer's
 * sequence numbers.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/ids.h"
#include "common/log.h"
#include "services/audit/audit.h"

#define APPEND_MAX_EVENTS 1024
#define APPEND_MAX_NAME 64

static bool append_name_ok(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;
	if (n == 0 || n > APPEND_MAX_NAME)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-' ||
		      s[i] == '_' || s[i] == '.'))
			return false;
	return true;
}

static bool append_field_ok(const char *s)
{
	return s == NULL || strlen(s) <= AUDIT_FIELD_MAX;
}

static bool append_event_ok(const Magnetar__AuditEvent *e)
{
	return e->sequence > 0 && e->sequence <= INT64_MAX && e->time_unix_ms <= INT64_MAX &&
	       append_name_ok(e->action) && append_field_ok(e->actor) &&
	       append_field_ok(e->target) && append_field_ok(e->ip) &&
	       append_field_ok(e->request_id) && append_field_ok(e->outcome) &&
	       append_field_ok(e->detail);
}

/* Unit tests of the outbox build `struct audit` by hand, without
 * audit_open: give such a struct an ephemeral log (a random in-memory key,
 * chain secrets in memory only, each Append committed inline). Kept in a
 * list for the process's life, since the test reuses and clears its struct. */
struct append_lazy {
	struct append_lazy *next;
	struct audit a;
};
static pthread_mutex_t append_lazy_mu = PTHREAD_MUTEX_INITIALIZER;
static struct append_lazy *append_lazy_list;

static struct audit_state *append_lazy_open(struct pool *pool)
{
	struct audit_keyring *kr = calloc(1, sizeof(*kr));
	struct append_lazy *l = calloc(1, sizeof(*l));
	struct audit_opts opts = {0};
	char err[256];

	if (kr == NULL || l == NULL)
		goto fail;
	log_warnx("audit: no audit_open; using an EPHEMERAL in-memory key (tests only)");
	snprintf(kr->keys[0].id, sizeof(kr->keys[0].id), "ephemeral");
	if (ids_random(kr->keys[0].key, AUDIT_KEY) != 0 ||
	    ids_random(kr->keys[0].ix, AUDIT_KEY) != 0)
		goto fail;
	atomic_store(&kr->n, 1);
	l->a.svc.pool = pool;
	if (audit_open(&l->a, kr, &opts, err, sizeof(err)) != 0) {
		log_warnx("audit: cannot open an ephemeral log: %s", err);
		goto fail;
	}
	keyring_wipe(kr);
	free(kr);
	l->next = append_lazy_list;
	append_lazy_list = l;
	return l->a.st;
fail:
	if (kr != NULL)
		keyring_wipe(kr);
	free(kr);
	free(l);
	return NULL;
}

struct audit_state *append_state(struct audit *a)
{
	struct audit_state *st = __atomic_load_n(&a->st, __ATOMIC_ACQUIRE);

	if (st != NULL)
		return st;
	pthread_mutex_lock(&append_lazy_mu);
	st = __atomic_load_n(&a->st, __ATOMIC_ACQUIRE);
	if (st == NULL && (st = append_lazy_open(a->svc.pool)) != NULL)
		__atomic_store_n(&a->st, st, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&append_lazy_mu);
	return st;
}

/* Validates the batch and names its producer. */
static int append_check(struct rpc_call *call, const Magnetar__AppendRequest *req, char *source,
                        size_t len)
{
	uid_t uid;

	if (!append_name_ok(req->source) || !append_name_ok(req->instance) ||
	    req->n_events > APPEND_MAX_EVENTS)
		return ERR_INVAL;
	for (size_t i = 0; i < req->n_events; i++)
		if (!append_event_ok(req->events[i]))
			return ERR_INVAL;
	if (call != NULL && rpc_call_peer_uid(call, &uid) == 0)
		snprintf(source, len, "uid:%u", (unsigned)uid);
	else
		snprintf(source, len, "name:%s", req->source);
	return 0;
}

int append_store(struct audit *a, struct rpc_call *call, const Magnetar__AppendRequest *req,
                 Magnetar__AppendReply *out)
{
	struct audit_state *st;
	char source[80];
	int rv;

	if ((rv = append_check(call, req, source, sizeof(source))) != 0)
		return rv;
	if ((st = append_state(a)) == NULL)
		return ERR_UNAVAIL;
	return ingest_append_sync(st, source, req, out);
}

static void append_reply(struct rpc_call *call, int rv, const Magnetar__AppendReply *out)
{
	if (rv == ERR_INVAL) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INVALID, "invalid_request",
		                "the batch or one of its events is malformed");
	} else if (rv == ERR_EXISTS) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_CONFLICT, "sequence_conflict",
		                INGEST_CONFLICT_MESSAGE);
	} else if (rv != 0) {
		log_warnx("append: cannot store batch request_id=%s: %s", rpc_call_request_id(call),
		          err_str(rv));
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_UNAVAILABLE, "store_failed",
		                "the audit store could not take the batch");
	} else {
		rpc_reply(call, &out->base);
	}
}

void append_handle(struct rpc_call *call, const ProtobufCMessage *input, void *arg)
{
	const Magnetar__AppendRequest *req = (const Magnetar__AppendRequest *)input;
	Magnetar__AppendReply out = MAGNETAR__APPEND_REPLY__INIT;
	struct audit_state *st;
	char source[80];
	int rv;

	if ((rv = append_check(call, req, source, sizeof(source))) != 0) {
		append_reply(call, rv, &out);
		return;
	}
	if ((st = append_state(arg)) == NULL) {
		append_reply(call, ERR_UNAVAIL, &out);
		return;
	}
	/* Group commit: the pipeline answers once the batch is on disk. The
	 * request stays owned by the call until then. */
	if ((rv = ingest_append_async(st, source, call, req)) == 0)
		return;
	if (rv == ERR_UNAVAIL) /* no pipeline: store inline */
		rv = ingest_append_sync(st, source, req, &out);
	append_reply(call, rv, &out);
}
