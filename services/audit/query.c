/*
 * query.c — the Query method: events filtered by action, actor and time,
 * newest first (or oldest first for export), decrypted, with an opaque
 * cursor. Action and actor match through blind indexes (one per key of the
 * ring), so a filter never decrypts the whole log; see docs/audit.md for
 * what the indexes reveal.
 */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "services/audit/audit.h"

#define QUERY_DEFAULT_LIMIT 100
#define QUERY_MAX_LIMIT 1000
#define QUERY_MAX_BYTES (768 * 1024) /* a reply stays under the 1 MiB RPC cap */

struct query_ctx {
	struct audit_state *st;
	struct crypto *c;
	Magnetar__QueryReply *out;
	uint32_t want;
	size_t bytes;
	uint64_t last_id;
	bool more;
	uint64_t bad_id;
};

static int query_cursor(const char *s, uint64_t *id)
{
	uint64_t v = 0;
	size_t n = s != NULL ? strlen(s) : 0;

	*id = 0;
	if (n == 0)
		return 0;
	if (n > 19)
		return ERR_INVAL;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return ERR_INVAL;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v == 0 || v > INT64_MAX)
		return ERR_INVAL;
	*id = v;
	return 0;
}

static void query_record_free(Magnetar__AuditRecord *r)
{
	char **fields[AUDIT_NFIELDS] = {&r->action,     &r->actor,   &r->target, &r->ip,
	                                &r->request_id, &r->outcome, &r->detail};
	for (int f = 0; f < AUDIT_NFIELDS; f++) {
		if (*fields[f] != NULL)
			OPENSSL_cleanse(*fields[f], strlen(*fields[f]));
		free(*fields[f]);
	}
	free(r->source);
	free(r->producer);
	free(r->key_id);
	free(r);
}

void query_reply_fini(Magnetar__QueryReply *out)
{
	for (size_t i = 0; i < out->n_events; i++)
		query_record_free(out->events[i]);
	free(out->events);
	if (out->next_cursor != (char *)protobuf_c_empty_string)
		free(out->next_cursor);
	out->events = NULL;
	out->n_events = 0;
	out->next_cursor = NULL;
}

static int query_row(const struct audit_rec *r, void *arg)
{
	struct query_ctx *q = arg;
	const struct audit_key *k;
	Magnetar__AuditRecord *o;
	char **fields[AUDIT_NFIELDS];
	int rv;

	if (q->out->n_events == q->want || q->bytes > QUERY_MAX_BYTES) {
		q->more = true; /* one row past the page: there is a next page */
		return 1;
	}
	if ((k = keyring_find(&q->st->keys, r->key_id)) == NULL) {
		q->bad_id = r->id;
		return ERR_PERM;
	}
	if ((o = calloc(1, sizeof(*o))) == NULL)
		return ERR_NOMEM;
	magnetar__audit_record__init(o);
	/* NULL until filled: init points every string at protobuf-c's shared
	 * "", which query_record_free would free after a failure below. */
	o->action = o->actor = o->target = o->ip = o->request_id = o->outcome = o->detail = NULL;
	o->source = o->producer = o->key_id = NULL;
	q->out->events[q->out->n_events++] = o;
	fields[0] = &o->action, fields[1] = &o->actor, fields[2] = &o->target;
	fields[3] = &o->ip, fields[4] = &o->request_id, fields[5] = &o->outcome;
	fields[6] = &o->detail;
	for (int f = 0; f < AUDIT_NFIELDS; f++) {
		size_t n =
		    r->field_len[f] >= AUDIT_SEALED(0) ? r->field_len[f] - AUDIT_SEALED(0) : 0;
		if ((*fields[f] = malloc(n + 1)) == NULL)
			return ERR_NOMEM;
		**fields[f] = '\0';
		if ((rv = crypto_open(q->c, k, r->id, (enum audit_field)f, r->field[f],
		                      r->field_len[f], *fields[f])) != 0) {
			q->bad_id = r->id;
			return rv == ERR_PERM ? ERR_PERM : rv;
		}
		q->bytes += n + 8;
	}
	o->source = strdup(r->source != NULL ? r->source : "");
	o->producer = strdup(r->producer != NULL ? r->producer : "");
	o->key_id = strdup(r->key_id);
	if (o->source == NULL || o->producer == NULL || o->key_id == NULL)
		return ERR_NOMEM;
	o->id = r->id;
	o->time_unix_ms = r->time_ms;
	o->sequence = r->seq;
	o->received_unix_ms = r->received_ms;
	o->epoch = r->epoch;
	q->bytes += 96;
	q->last_id = r->id;
	return 0;
}

int query_run(struct audit_state *st, const Magnetar__QueryRequest *req, Magnetar__QueryReply *out,
              uint64_t *bad_id)
{
	unsigned char(*aix)[AUDIT_IX] = NULL, (*uix)[AUDIT_IX] = NULL;
	struct store_query sq = {0};
	struct query_ctx q = {.st = st, .out = out};
	size_t nkeys = keyring_count(&st->keys);
	int rv;

	*bad_id = 0;
	out->next_cursor = NULL; /* set only when there is a next page */
	q.want = req->limit != 0 ? req->limit : QUERY_DEFAULT_LIMIT;
	if (q.want > QUERY_MAX_LIMIT || query_cursor(req->cursor, &sq.after_id) != 0 ||
	    req->since_unix_ms > INT64_MAX || req->until_unix_ms > INT64_MAX ||
	    (req->action != NULL && strlen(req->action) > AUDIT_FIELD_MAX) ||
	    (req->actor != NULL && strlen(req->actor) > AUDIT_FIELD_MAX))
		return ERR_INVAL;
	if ((q.c = crypto_get(st->crypto)) == NULL)
		return ERR_NOMEM;
	rv = ERR_NOMEM;
	if ((out->events = calloc(q.want, sizeof(*out->events))) == NULL)
		goto out;
	/* One blind index per key: a record matches under its own key. */
	if (req->action != NULL && req->action[0] != '\0') {
		if ((aix = calloc(nkeys, sizeof(*aix))) == NULL)
			goto out;
		for (size_t i = 0; i < nkeys; i++)
			if ((rv = crypto_index(q.c, &st->keys.keys[i], AUDIT_F_ACTION, req->action,
			                       aix[i])) != 0)
				goto out;
		sq.action_ix = (const unsigned char(*)[AUDIT_IX])aix;
	}
	if (req->actor != NULL && req->actor[0] != '\0') {
		if ((uix = calloc(nkeys, sizeof(*uix))) == NULL)
			goto out;
		for (size_t i = 0; i < nkeys; i++)
			if ((rv = crypto_index(q.c, &st->keys.keys[i], AUDIT_F_ACTOR, req->actor,
			                       uix[i])) != 0)
				goto out;
		sq.actor_ix = (const unsigned char(*)[AUDIT_IX])uix;
	}
	sq.n_ix = nkeys;
	sq.since_ms = req->since_unix_ms;
	sq.until_ms = req->until_unix_ms;
	sq.oldest_first = req->oldest_first;
	sq.limit = q.want + 1;
	rv = store_query(st->pool, &sq, query_row, &q);
	if (rv == 1)
		rv = 0;
	if (rv == 0 && q.more) {
		char buf[24];
		snprintf(buf, sizeof(buf), "%llu", (unsigned long long)q.last_id);
		if ((out->next_cursor = strdup(buf)) == NULL)
			rv = ERR_NOMEM;
	}
	*bad_id = q.bad_id;
out:
	free(aix);
	free(uix);
	crypto_put(st->crypto, q.c);
	if (rv != 0)
		query_reply_fini(out);
	return rv;
}

void query_handle(struct rpc_call *call, const ProtobufCMessage *input, void *arg)
{
	Magnetar__QueryReply out = MAGNETAR__QUERY_REPLY__INIT;
	struct audit_state *st = append_state(arg);
	char msg[128];
	uint64_t bad;
	int rv;

	if (st == NULL) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_UNAVAILABLE, "unavailable",
		                "the audit log is not open");
		return;
	}
	rv = query_run(st, (const Magnetar__QueryRequest *)input, &out, &bad);
	if (rv == 0) {
		if (out.next_cursor == NULL)
			out.next_cursor = "";
		rpc_reply(call, &out.base);
		if (out.next_cursor[0] == '\0')
			out.next_cursor = NULL;
		query_reply_fini(&out);
	} else if (rv == ERR_INVAL) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INVALID, "invalid_request",
		                "limit must be 1..1000 and cursor a next_cursor from before");
	} else if (rv == ERR_PERM) {
		log_warnx("query: record %llu failed its integrity check request_id=%s",
		          (unsigned long long)bad, rpc_call_request_id(call));
		snprintf(msg, sizeof(msg), "record %llu failed its integrity check; run verify",
		         (unsigned long long)bad);
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INTERNAL, "integrity_failure", msg);
	} else {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_UNAVAILABLE, "store_failed",
		                "the audit store could not answer");
	}
}
