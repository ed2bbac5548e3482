/*
 * ingest.c — the write path. Append batches queue here; one thread takes
 * everything queued as a group, de-duplicates by (source, instance, seq),
 * assigns record ids and epochs (cutting epochs with head records), and
 * hands the encryption to crypto threads; it then links, MACs, inserts and
 * commits the group in ONE durable transaction, and only then answers every
 * Append of the group. While a group's crypto runs, the previous group is
 * being committed: the SQLite writer never waits for AES (docs/dependencies.md).
 */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/workq.h"
#include "services/audit/audit.h"

#define INGEST_GROUP_EVENTS 8192 /* events taken into one transaction, at most */
#define INGEST_CHUNK 128         /* events per crypto job */
#define INGEST_HWM_MAX 4096      /* (source, instance) pairs remembered */

/* Highest sequence stored or in flight per producer database. */
struct hwm_entry {
	char source[80];
	char instance[72];
	uint64_t hwm;   /* max seq sequenced so far */
	uint64_t orig;  /* hwm when the current group began */
	uint64_t stamp; /* group that set orig */
};

/* One Append call. */
struct batch {
	struct batch *next;
	struct rpc_call *call; /* answered after the commit; NULL for a sync caller */
	const Magnetar__AppendRequest *req;
	char source[80];
	bool done; /* sync callers wait for it (under qmu) */
	int rv;
	uint32_t stored, dups;
	uint32_t conflicts; /* events whose sequence is stored with other content */
	bool refused;       /* then none of the batch is stored */
	uint64_t hwm;       /* the producer's high-water mark after the batch */
	size_t first, end;  /* its records (with any heads cut between) in group->recs */
};

struct group;

struct cjob {
	struct workq_job job; /* first */
	struct group *g;
	size_t from, to;
	unsigned char nonce[AUDIT_NONCE];
};

struct group {
	struct ingest *ing;
	struct batch *batches;
	size_t nrecs, cap;
	struct audit_rec *recs;
	const Magnetar__AuditEvent **evs; /* plaintext per record; NULL for heads */
	uint64_t *first_ids;              /* heads: first id of the epoch they seal */
	unsigned char (*bodies)[CHAIN_HEAD_LEN];
	unsigned char (*sigs)[AUDIT_SIG];
	unsigned char *arena; /* every ciphertext of the group */
	const struct audit_key *key;
	uint64_t received_ms;
	struct cjob *jobs;
	size_t njobs;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	size_t pending;
	int crypto_rv;
};

struct ingest {
	struct audit_state *st;
	/* queue of Append batches */
	pthread_mutex_t qmu;
	pthread_cond_t qcv, done_cv;
	struct batch *qhead, *qtail;
	bool running, stopping;
	pthread_t thread;
	struct workq *wq;
	/* Sequencing and writer state: the ingest thread's alone when running;
	 * otherwise whoever holds `mu` (inline appends, tests). */
	pthread_mutex_t mu;
	uint64_t next_id, epoch, epoch_first_id, epoch_events, epoch_start_ms, stamp;
	struct hwm_entry *hwm;
	size_t nhwm;
	unsigned char prev[AUDIT_HASH];
	struct chain_ctx *cc; /* keyed with st->secrets.mac_key */
	bool secrets_dirty;   /* audit.chain is behind st->secrets: write it again */
	bool stale;           /* ingest_recover failed: the numbering above is unknown */
};

/* ---- sequencing --------------------------------------------------------- */

static struct hwm_entry *ingest_hwm_find(struct ingest *ing, const char *source,
                                         const char *instance)
{
	for (size_t i = 0; i < ing->nhwm; i++)
		if (strcmp(ing->hwm[i].source, source) == 0 &&
		    strcmp(ing->hwm[i].instance, instance) == 0)
			return &ing->hwm[i];
	return NULL;
}

/* Finds or loads the entry; ERR_EXISTS when the cache is full. */
static int ingest_hwm_get(struct ingest *ing, const char *source, const char *instance,
                          struct hwm_entry **out)
{
	struct hwm_entry *e = ingest_hwm_find(ing, source, instance);
	uint64_t max;
	int rv;

	if (e == NULL) {
		if (ing->nhwm == INGEST_HWM_MAX)
			return ERR_EXISTS;
		/* Not cached: nothing of this producer is in flight either (entries
		 * go only when nothing is), so the database is the whole truth. */
		if ((rv = store_max_seq(ing->st->pool, source, instance, &max)) != 0)
			return rv;
		e = &ing->hwm[ing->nhwm++];
		snprintf(e->source, sizeof(e->source), "%s", source);
		snprintf(e->instance, sizeof(e->instance), "%s", instance);
		e->hwm = max;
		e->stamp = 0;
	}
	if (e->stamp != ing->stamp) {
		e->orig = e->hwm;
		e->stamp = ing->stamp;
	}
	*out = e;
	return 0;
}

static void group_free(struct group *g)
{
	if (g == NULL)
		return;
	pthread_mutex_destroy(&g->mu);
	pthread_cond_destroy(&g->cv);
	free(g->recs);
	free(g->evs);
	free(g->first_ids);
	free(g->bodies);
	free(g->sigs);
	free(g->arena);
	free(g->jobs);
	free(g);
}

static struct group *group_new(struct ingest *ing, struct batch *batches)
{
	struct group *g = calloc(1, sizeof(*g));
	size_t events = 0;

	if (g == NULL)
		return NULL;
	g->ing = ing;
	g->batches = batches;
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cv, NULL);
	for (struct batch *b = batches; b != NULL; b = b->next)
		events += b->req->n_events;
	/* Worst case one head after every event, plus one requested. */
	g->cap = 2 * events + 2;
	g->recs = calloc(g->cap, sizeof(*g->recs));
	g->evs = calloc(g->cap, sizeof(*g->evs));
	g->first_ids = calloc(g->cap, sizeof(*g->first_ids));
	if (g->recs == NULL || g->evs == NULL || g->first_ids == NULL) {
		group_free(g);
		return NULL;
	}
	return g;
}

/* Does sequencing `g` need the groups in flight committed first? True when
 * one of its events may already be stored (seq at or below the high-water
 * mark): only a committed database answers that. */
static int ingest_plan(struct ingest *ing, struct group *g, bool *flush)
{
	struct hwm_entry *e;
	int rv;

	*flush = false;
	ing->stamp++;
	for (struct batch *b = g->batches; b != NULL; b = b->next) {
		if ((rv = ingest_hwm_get(ing, b->source, b->req->instance, &e)) != 0)
			return rv;
		for (size_t i = 0; i < b->req->n_events; i++)
			if (b->req->events[i]->sequence <= e->orig)
				*flush = true;
	}
	return 0;
}

static void ingest_add_head(struct ingest *ing, struct group *g)
{
	struct audit_rec *r = &g->recs[g->nrecs];

	r->id = ing->next_id++;
	r->kind = AUDIT_KIND_HEAD;
	r->epoch = ing->epoch;
	r->time_ms = g->received_ms;
	r->received_ms = g->received_ms;
	g->first_ids[g->nrecs] = ing->epoch_first_id;
	g->nrecs++;
	ing->epoch++;
	ing->epoch_first_id = ing->next_id;
	ing->epoch_events = 0;
}

static bool ingest_epoch_due(struct ingest *ing, uint64_t now)
{
	const struct audit_opts *o = &ing->st->opts;
	return ing->epoch_events > 0 &&
	       (ing->epoch_events >= o->epoch_events || now - ing->epoch_start_ms >= o->epoch_ms);
}

/* Same producer, time and fields? A re-send carries exactly what was
 * stored; a restored producer database re-uses the numbers for new events. */
static bool ingest_same_plain(const Magnetar__AuditEvent *a, const Magnetar__AuditEvent *b)
{
	const char *x[AUDIT_NFIELDS] = {a->action,     a->actor,   a->target, a->ip,
	                                a->request_id, a->outcome, a->detail};
	const char *y[AUDIT_NFIELDS] = {b->action,     b->actor,   b->target, b->ip,
	                                b->request_id, b->outcome, b->detail};

	if (a->time_unix_ms != b->time_unix_ms)
		return false;
	for (int f = 0; f < AUDIT_NFIELDS; f++)
		if (strcmp(x[f] != NULL ? x[f] : "", y[f] != NULL ? y[f] : "") != 0)
			return false;
	return true;
}

struct ingest_cmp {
	struct audit_state *st;
	const Magnetar__AuditEvent *ev;
	const char *producer;
	bool same;
	int rv;
};

/* Compares a stored event with a re-sent one by decrypting the stored
 * fields (only events at or below a high-water mark get here: re-sends
 * after a lost ack, or a restored producer). A field that fails its tag
 * is not "the same": the batch is then refused, never acknowledged. */
static void ingest_cmp_row(const struct audit_rec *r, void *arg)
{
	struct ingest_cmp *c = arg;
	const Magnetar__AuditEvent *ev = c->ev;
	const char *v[AUDIT_NFIELDS] = {ev->action,     ev->actor,   ev->target, ev->ip,
	                                ev->request_id, ev->outcome, ev->detail};
	const struct audit_key *k = keyring_find(&c->st->keys, r->key_id);
	struct crypto *cr;
	char *plain;

	c->same = false;
	if (k == NULL || r->time_ms != ev->time_unix_ms || r->producer == NULL ||
	    strcmp(r->producer, c->producer) != 0)
		return;
	for (int f = 0; f < AUDIT_NFIELDS; f++)
		if (r->field_len[f] != AUDIT_SEALED(v[f] != NULL ? strlen(v[f]) : 0))
			return;
	if ((plain = malloc(AUDIT_FIELD_MAX + 1)) == NULL ||
	    (cr = crypto_get(c->st->crypto)) == NULL) {
		free(plain);
		c->rv = ERR_NOMEM;
		return;
	}
	c->same = true;
	for (int f = 0; f < AUDIT_NFIELDS && c->same; f++) {
		int rv = crypto_open(cr, k, r->id, (enum audit_field)f, r->field[f],
		                     r->field_len[f], plain);
		if (rv != 0 && rv != ERR_PERM)
			c->rv = rv;
		c->same = rv == 0 && strcmp(plain, v[f] != NULL ? v[f] : "") == 0;
	}
	OPENSSL_cleanse(plain, AUDIT_FIELD_MAX + 1);
	free(plain);
	crypto_put(c->st->crypto, cr);
}

enum { INGEST_NEW, INGEST_DUP, INGEST_CONFLICT };

/* Sorts each event of b, before anything is numbered: new, a duplicate
 * (stored, in flight, or earlier in the group, with the same content), or
 * a conflict (that sequence holds other content). */
static int ingest_classify(struct ingest *ing, struct group *g, struct batch *b,
                           const struct hwm_entry *e, unsigned char *cls)
{
	uint64_t h = e->hwm;
	int rv;

	for (size_t i = 0; i < b->req->n_events; i++) {
		const Magnetar__AuditEvent *ev = b->req->events[i];
		bool found = false, same = false;

		cls[i] = INGEST_NEW;
		if (ev->sequence > h) {
			h = ev->sequence;
			continue;
		}
		if (ev->sequence <= e->orig) {
			struct ingest_cmp c = {.st = ing->st, .ev = ev, .producer = b->req->source};
			if ((rv = store_find_seq(ing->st->pool, b->source, b->req->instance,
			                         ev->sequence, ingest_cmp_row, &c, &found)) != 0)
				return rv;
			if (c.rv != 0)
				return c.rv;
			same = c.same;
		}
		for (size_t j = 0; !found && j < g->nrecs; j++) {
			const struct audit_rec *r = &g->recs[j];
			if (r->kind == AUDIT_KIND_EVENT && r->seq == ev->sequence &&
			    strcmp(r->source, b->source) == 0 &&
			    strcmp(r->instance, b->req->instance) == 0) {
				found = true;
				same = strcmp(r->producer, b->req->source) == 0 &&
				       ingest_same_plain(g->evs[j], ev);
			}
		}
		for (size_t j = 0; !found && j < i; j++) {
			if (b->req->events[j]->sequence == ev->sequence) {
				found = true;
				same = ingest_same_plain(b->req->events[j], ev);
			}
		}
		if (found)
			cls[i] = same ? INGEST_DUP : INGEST_CONFLICT;
	}
	return 0;
}

/* Assigns ids, epochs and heads; lays out the ciphertext arena; takes the
 * nonces and builds the crypto jobs. Nothing in flight may hold a record
 * this group could duplicate (see ingest_plan). */
static int ingest_sequence(struct ingest *ing, struct group *g)
{
	struct audit_state *st = ing->st;
	size_t arena = 0, off = 0, events = 0;
	int rv;

	g->received_ms = clock_unix_ms();
	g->key = keyring_current(&st->keys);
	if (ingest_epoch_due(ing, g->received_ms))
		ingest_add_head(ing, g);
	for (struct batch *b = g->batches; b != NULL; b = b->next) {
		struct hwm_entry *e;
		unsigned char *cls;
		uint64_t first_conflict = 0;
		b->first = g->nrecs;
		if ((rv = ingest_hwm_get(ing, b->source, b->req->instance, &e)) != 0)
			return rv;
		if ((cls = calloc(b->req->n_events + 1, 1)) == NULL)
			return ERR_NOMEM;
		if ((rv = ingest_classify(ing, g, b, e, cls)) != 0) {
			free(cls);
			return rv;
		}
		for (size_t i = b->req->n_events; i-- > 0;)
			if (cls[i] == INGEST_CONFLICT) {
				b->conflicts++;
				first_conflict = b->req->events[i]->sequence;
			}
		/* A conflict: the producer's sequence went backwards (a restored
		 * database) and its new events carry old numbers. Acknowledging
		 * them as duplicates would let the producer delete events never
		 * stored: refuse the whole batch, loudly; the producer sends it
		 * again under a new instance id. */
		b->refused = b->conflicts > 0;
		if (b->refused) {
			atomic_fetch_add(&st->refused, b->req->n_events);
			log_warnx(
			    "append: sequence_conflict: refused a batch of %zu events from %s "
			    "instance %s: %u of them reuse sequence numbers (first %llu) stored "
			    "with other content, high-water mark %llu: the producer's sequence "
			    "went backwards (a restored database?)",
			    b->req->n_events, b->source, b->req->instance, b->conflicts,
			    (unsigned long long)first_conflict, (unsigned long long)e->hwm);
		}
		for (size_t i = 0; i < b->req->n_events; i++) {
			const Magnetar__AuditEvent *ev = b->req->events[i];
			struct audit_rec *r;

			if (b->refused)
				break;
			if (cls[i] == INGEST_DUP) {
				b->dups++;
				continue;
			}
			if (ev->sequence > e->hwm)
				e->hwm = ev->sequence;
			r = &g->recs[g->nrecs];
			g->evs[g->nrecs] = ev;
			r->id = ing->next_id++;
			r->kind = AUDIT_KIND_EVENT;
			r->epoch = ing->epoch;
			r->time_ms = ev->time_unix_ms;
			r->received_ms = g->received_ms;
			r->source = b->source;
			r->producer = b->req->source;
			r->instance = b->req->instance;
			r->seq = ev->sequence;
			r->key_id = g->key->id;
			g->nrecs++;
			b->stored++;
			events++;
			if (ing->epoch_events++ == 0)
				ing->epoch_start_ms = g->received_ms;
			if (ing->epoch_events >= st->opts.epoch_events)
				ingest_add_head(ing, g);
		}
		free(cls);
		b->end = g->nrecs;
		b->hwm = e->hwm;
		if (b->dups > 0)
			log_info(
			    "append: %u event(s) from %s instance %s were stored already (same "
			    "content): acknowledged, not stored again",
			    b->dups, b->source, b->req->instance);
	}
	if (atomic_exchange(&st->seal_requested, false) || ingest_epoch_due(ing, g->received_ms))
		ingest_add_head(ing, g);

	/* Ciphertext layout, then one nonce range per crypto job. */
	for (size_t i = 0; i < g->nrecs; i++) {
		const Magnetar__AuditEvent *ev = g->evs[i];
		const char *v[AUDIT_NFIELDS];
		if (ev == NULL)
			continue;
		v[0] = ev->action, v[1] = ev->actor, v[2] = ev->target, v[3] = ev->ip;
		v[4] = ev->request_id, v[5] = ev->outcome, v[6] = ev->detail;
		for (int f = 0; f < AUDIT_NFIELDS; f++) {
			g->recs[i].field_len[f] = AUDIT_SEALED(v[f] != NULL ? strlen(v[f]) : 0);
			arena += g->recs[i].field_len[f];
		}
	}
	if (arena > 0 && (g->arena = malloc(arena)) == NULL)
		return ERR_NOMEM;
	for (size_t i = 0; i < g->nrecs; i++) {
		if (g->evs[i] == NULL)
			continue;
		for (int f = 0; f < AUDIT_NFIELDS; f++) {
			g->recs[i].field[f] = g->arena + off;
			off += g->recs[i].field_len[f];
		}
	}
	g->njobs = (g->nrecs + INGEST_CHUNK - 1) / INGEST_CHUNK;
	if (g->njobs > 0 && (g->jobs = calloc(g->njobs, sizeof(*g->jobs))) == NULL)
		return ERR_NOMEM;
	for (size_t j = 0; j < g->njobs; j++) {
		struct cjob *job = &g->jobs[j];
		size_t n = 0;
		job->g = g;
		job->from = j * INGEST_CHUNK;
		job->to = job->from + INGEST_CHUNK < g->nrecs ? job->from + INGEST_CHUNK : g->nrecs;
		for (size_t i = job->from; i < job->to; i++)
			n += g->evs[i] != NULL;
		if (n > 0 &&
		    (rv = nonce_take(st->nonces, g->key->id, n * AUDIT_NFIELDS, job->nonce)) != 0)
			return rv;
	}
	(void)events;
	return 0;
}

/* ---- encryption (crypto threads) ---------------------------------------- */

static int ingest_encrypt(struct group *g, struct cjob *job)
{
	struct audit_state *st = g->ing->st;
	struct crypto *c = crypto_get(st->crypto);
	uint64_t k = 0;
	int rv = 0;

	if (c == NULL)
		return ERR_NOMEM;
	for (size_t i = job->from; i < job->to && rv == 0; i++) {
		const Magnetar__AuditEvent *ev = g->evs[i];
		struct audit_rec *r = &g->recs[i];
		const char *v[AUDIT_NFIELDS];
		if (ev == NULL)
			continue; /* heads are built by the writer: they need the chain */
		v[0] = ev->action, v[1] = ev->actor, v[2] = ev->target, v[3] = ev->ip;
		v[4] = ev->request_id, v[5] = ev->outcome, v[6] = ev->detail;
		for (int f = 0; f < AUDIT_NFIELDS && rv == 0; f++, k++) {
			unsigned char nonce[AUDIT_NONCE];
			const char *p = v[f] != NULL ? v[f] : "";
			nonce_at(job->nonce, k, nonce);
			rv = crypto_seal(c, g->key, nonce, r->id, (enum audit_field)f, p, strlen(p),
			                 (unsigned char *)r->field[f]);
		}
		if (rv == 0)
			rv = crypto_index(c, g->key, AUDIT_F_ACTION, v[0], r->action_ix);
		if (rv == 0)
			rv = crypto_index(c, g->key, AUDIT_F_ACTOR, v[1], r->actor_ix);
		if (rv == 0)
			rv = crypto_content(c, r);
	}
	crypto_put(st->crypto, c);
	return rv;
}

static void ingest_cjob_run(struct workq_job *wj)
{
	struct cjob *job = (struct cjob *)wj;
	struct group *g = job->g;
	int rv = ingest_encrypt(g, job);

	pthread_mutex_lock(&g->mu);
	if (rv != 0 && g->crypto_rv == 0)
		g->crypto_rv = rv;
	if (--g->pending == 0)
		pthread_cond_signal(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

static void ingest_dispatch(struct ingest *ing, struct group *g)
{
	g->pending = g->njobs;
	for (size_t j = 0; j < g->njobs; j++) {
		g->jobs[j].job.run = ingest_cjob_run;
		if (ing->wq == NULL || workq_submit(ing->wq, &g->jobs[j].job, 0) != 0)
			ingest_cjob_run(&g->jobs[j].job); /* inline, or the pool is closing */
	}
}

static int ingest_wait_crypto(struct group *g)
{
	int rv;
	pthread_mutex_lock(&g->mu);
	while (g->pending > 0)
		pthread_cond_wait(&g->cv, &g->mu);
	rv = g->crypto_rv;
	pthread_mutex_unlock(&g->mu);
	return rv;
}

/* ---- commit ------------------------------------------------------------- */

/* Builds head record i: the statement of the epoch it seals, signed with
 * that epoch's key. `next` is the following epoch's secrets. */
static int ingest_build_head(struct group *g, size_t i, const unsigned char prev[AUDIT_HASH],
                             const struct chain_secrets *cur, const struct chain_secrets *next,
                             struct crypto *c, struct chain_head *h)
{
	struct audit_rec *r = &g->recs[i];
	size_t k = 0;
	int rv;

	for (size_t j = 0; j < i; j++)
		k += g->evs[j] == NULL && g->recs[j].kind == AUDIT_KIND_HEAD;
	h->epoch = r->epoch;
	h->first_id = g->first_ids[i];
	h->records = r->id;
	h->time_ms = r->time_ms;
	memcpy(h->prev, prev, AUDIT_HASH);
	if ((rv = chain_public_key(next->sign_seed, h->next_pub)) != 0)
		return rv;
	chain_head_encode(h, g->bodies[k]);
	if ((rv = chain_sign(cur->sign_seed, g->bodies[k], CHAIN_HEAD_LEN, g->sigs[k])) != 0)
		return rv;
	r->body = g->bodies[k];
	r->body_len = CHAIN_HEAD_LEN;
	r->sig = g->sigs[k];
	r->sig_len = AUDIT_SIG;
	return crypto_content(c, r);
}

static void ingest_answer(struct ingest *ing, struct batch *b, int rv)
{
	b->rv = rv;
	if (b->call != NULL) {
		Magnetar__AppendReply out = MAGNETAR__APPEND_REPLY__INIT;
		out.stored = b->stored;
		out.duplicates = b->dups;
		out.high_water = b->hwm;
		if (rv == 0 && b->refused)
			rpc_reply_error(b->call, MAGNETAR__STATUS__STATUS_CONFLICT,
			                "sequence_conflict", INGEST_CONFLICT_MESSAGE);
		else if (rv == 0)
			rpc_reply(b->call, &out.base);
		else
			rpc_reply_error(b->call, MAGNETAR__STATUS__STATUS_UNAVAILABLE,
			                "store_failed", "the audit store could not take the batch");
		free(b);
		return;
	}
	pthread_mutex_lock(&ing->qmu);
	b->done = true;
	pthread_cond_broadcast(&ing->done_cv);
	pthread_mutex_unlock(&ing->qmu);
}

/* Answers every Append of g with rv (0 once committed). */
static void ingest_answer_all(struct ingest *ing, struct group *g, int rv)
{
	struct batch *b = g->batches, *next;
	if (rv != 0)
		log_warnx("ingest: a group of %zu records was not stored: %s", g->nrecs,
		          err_str(rv));
	for (; b != NULL; b = next) {
		next = b->next;
		ingest_answer(ing, b, rv);
	}
	g->batches = NULL;
}

/* Links, MACs and inserts every record of g, then commits and answers. */
static int ingest_finish(struct ingest *ing, struct group *g)
{
	struct audit_state *st = ing->st;
	struct chain_secrets ws = {0}, next = {0};
	struct chain_ctx *cc = ing->cc;
	struct store_tx *tx = NULL;
	struct crypto *c = NULL;
	struct chain_head *heads = NULL;
	unsigned char prev[AUDIT_HASH], tipmac[AUDIT_HASH];
	size_t nheads = 0, k = 0;
	uint64_t events = 0;
	int rv;

	if ((rv = ingest_wait_crypto(g)) != 0)
		goto fail;
	for (size_t i = 0; i < g->nrecs; i++)
		nheads += g->recs[i].kind == AUDIT_KIND_HEAD;
	events = g->nrecs - nheads;
	if (g->nrecs == 0) {
		/* Every event was a duplicate (or refused): answer now, counted. */
		for (struct batch *b = g->batches; b != NULL; b = b->next)
			atomic_fetch_add(&st->dups, b->dups);
		ingest_answer_all(ing, g, 0);
		return 0;
	}
	rv = ERR_NOMEM;
	if (nheads > 0 && ((g->bodies = calloc(nheads, sizeof(*g->bodies))) == NULL ||
	                   (g->sigs = calloc(nheads, sizeof(*g->sigs))) == NULL ||
	                   (heads = calloc(nheads, sizeof(*heads))) == NULL))
		goto fail;
	if ((c = crypto_get(st->crypto)) == NULL)
		goto fail;
	pthread_mutex_lock(&st->mu);
	ws = st->secrets;
	pthread_mutex_unlock(&st->mu);
	memcpy(prev, ing->prev, AUDIT_HASH);
	if ((rv = store_tx_begin(st->pool, &tx)) != 0)
		goto fail;
	for (size_t i = 0; i < g->nrecs; i++) {
		struct audit_rec *r = &g->recs[i];
		if (r->epoch != ws.epoch) {
			rv = ERR_INTERNAL; /* sequencing and secrets disagree: never guess */
			goto fail;
		}
		if (r->kind == AUDIT_KIND_HEAD &&
		    ((rv = chain_evolve(&ws, &next)) != 0 ||
		     (rv = ingest_build_head(g, i, prev, &ws, &next, c, &heads[k++])) != 0))
			goto fail;
		if ((rv = chain_link(cc, prev, r->content, r->hash)) != 0 ||
		    (rv = chain_mac(cc, "rec", r->id, r->hash, r->mac)) != 0 ||
		    (rv = store_tx_insert(tx, r)) != 0)
			goto fail;
		memcpy(prev, r->hash, AUDIT_HASH);
		if (r->kind == AUDIT_KIND_HEAD) {
			/* Records after a head belong to the next epoch and its key. */
			struct chain_ctx *ncc;
			if ((rv = chain_ctx_new(next.mac_key, &ncc)) != 0)
				goto fail;
			if (cc != ing->cc)
				chain_ctx_free(cc);
			cc = ncc;
			ws = next;
		}
	}
	if ((rv = chain_mac(cc, "tip", g->recs[g->nrecs - 1].id, prev, tipmac)) != 0 ||
	    (rv = store_tx_set_tip(tx, g->recs[g->nrecs - 1].id, prev, ws.epoch, tipmac)) != 0)
		goto fail;
	rv = store_tx_commit(tx);
	tx = NULL;
	if (rv != 0)
		goto fail;

	/* Committed: from here on nothing may fail the group. */
	memcpy(ing->prev, prev, AUDIT_HASH);
	if (nheads > 0) {
		pthread_mutex_lock(&st->mu);
		st->secrets = ws; /* the sealed epochs' secrets are gone from memory */
		pthread_mutex_unlock(&st->mu);
		chain_ctx_free(ing->cc);
		ing->cc = cc;
		cc = NULL;
		ing->secrets_dirty = true;
		atomic_fetch_add(&st->sealed, nheads);
		atomic_store(&st->epoch, ws.epoch);
	}
	if (ing->secrets_dirty && st->opts.chain_path != NULL) {
		/* A failure here loses no record: at start the file is evolved
		 * forward to the sealed heads. It only keeps an old key on disk
		 * longer, so say so and try again after the next commit. */
		if (chain_file_write(st->opts.chain_path, &ws) == 0)
			ing->secrets_dirty = false;
		else
			log_warnx("ingest: cannot update %s; the sealed epoch's key is still on "
			          "disk",
			          st->opts.chain_path);
	} else {
		ing->secrets_dirty = false;
	}
	atomic_fetch_add(&st->events, events);
	atomic_fetch_add(&st->groups, 1);
	for (struct batch *b = g->batches; b != NULL; b = b->next)
		atomic_fetch_add(&st->dups, b->dups);
	for (size_t i = 0, h = 0; i < g->nrecs; i++)
		if (g->recs[i].kind == AUDIT_KIND_HEAD)
			tail_publish_head(st, &g->recs[i], &heads[h++]);
	for (struct batch *b = g->batches; b != NULL; b = b->next)
		tail_publish_events(st, g->recs + b->first, g->evs + b->first, b->end - b->first);
	ingest_answer_all(ing, g, 0);
	rv = 0;
	goto out;
fail:
	store_tx_rollback(tx);
	if (cc != ing->cc)
		chain_ctx_free(cc);
	ingest_answer_all(ing, g, rv);
out:
	OPENSSL_cleanse(&ws, sizeof(ws));
	OPENSSL_cleanse(&next, sizeof(next));
	crypto_put(st->crypto, c);
	free(heads);
	return rv;
}

int ingest_recover(struct ingest *ing)
{
	struct audit_state *st = ing->st;
	struct store_state s;
	struct chain_secrets sec;
	struct chain_ctx *cc;
	int rv;

	ing->stale = true; /* until this succeeds (ingest_run_group retries) */
	if ((rv = store_state(st->pool, &s)) != 0)
		return rv;
	pthread_mutex_lock(&st->mu);
	sec = st->secrets;
	pthread_mutex_unlock(&st->mu);
	rv = chain_ctx_new(sec.mac_key, &cc);
	OPENSSL_cleanse(&sec, sizeof(sec));
	if (rv != 0)
		return rv;
	chain_ctx_free(ing->cc);
	ing->cc = cc;
	ing->next_id = s.last_id + 1;
	memcpy(ing->prev, s.last_hash, AUDIT_HASH);
	ing->epoch = s.open_epoch;
	ing->epoch_first_id = s.epoch_first_id;
	ing->epoch_events = s.epoch_events;
	ing->epoch_start_ms = s.epoch_first_ms != 0 ? s.epoch_first_ms : clock_unix_ms();
	ing->nhwm = 0;
	atomic_store(&st->events, s.events);
	atomic_store(&st->epoch, ing->epoch);
	ing->stale = false;
	return 0;
}

int ingest_break(struct ingest *ing, const struct chain_break *b, uint64_t *id)
{
	struct audit_state *st = ing->st;
	unsigned char body[CHAIN_BREAK_LEN], tipmac[AUDIT_HASH];
	struct audit_rec r = {0};
	struct store_tx *tx = NULL;
	struct crypto *c;
	int rv;

	if (ing->stale)
		return ERR_INTERNAL;
	chain_break_encode(b, body);
	r.id = ing->next_id + b->skipped;
	if (b->from_epoch != ing->epoch || b->to_epoch < b->from_epoch)
		return ERR_INTERNAL;
	r.kind = AUDIT_KIND_BREAK;
	r.epoch = b->to_epoch;
	r.time_ms = r.received_ms = b->time_ms;
	r.body = body;
	r.body_len = sizeof(body);
	if ((c = crypto_get(st->crypto)) == NULL)
		return ERR_NOMEM;
	/* It links to the last record still there: the chain stays checkable
	 * across the break, and the break cannot be removed unnoticed. */
	if ((rv = crypto_content(c, &r)) != 0 ||
	    (rv = chain_link(ing->cc, ing->prev, r.content, r.hash)) != 0 ||
	    (rv = chain_mac(ing->cc, "rec", r.id, r.hash, r.mac)) != 0 ||
	    (rv = chain_mac(ing->cc, "tip", r.id, r.hash, tipmac)) != 0 ||
	    (rv = store_tx_begin(st->pool, &tx)) != 0)
		goto out;
	if ((rv = store_tx_insert(tx, &r)) != 0 ||
	    (rv = store_tx_set_tip(tx, r.id, r.hash, r.epoch, tipmac)) != 0) {
		store_tx_rollback(tx);
		goto out;
	}
	if ((rv = store_tx_commit(tx)) != 0)
		goto out;
	ing->next_id = r.id + 1;
	memcpy(ing->prev, r.hash, AUDIT_HASH);
	if (r.epoch != ing->epoch) {
		/* The cut took whole epochs: the log goes on in the chain key's
		 * epoch, which this break opens. */
		ing->epoch = r.epoch;
		ing->epoch_first_id = r.id;
		ing->epoch_events = 0;
		ing->epoch_start_ms = r.received_ms;
		atomic_store(&st->epoch, r.epoch);
	}
	*id = r.id;
out:
	crypto_put(st->crypto, c);
	return rv;
}

/* ---- the pipeline thread ------------------------------------------------ */

/* Sequences, encrypts and commits `g` after everything before it. *cur is
 * the group in flight (encrypting), or NULL; on return it is `g` (left in
 * flight when `pipelined`) or NULL. */
static void ingest_run_group(struct ingest *ing, struct group **cur, struct group *g,
                             bool pipelined)
{
	bool flush;
	int rv;

	/* After a failed recovery the ids, chain and high-water marks are
	 * those of groups that were not stored: nothing is numbered (or taken
	 * for a duplicate) until a recovery succeeds. Nothing is in flight. */
	if (ing->stale && (rv = ingest_recover(ing)) != 0) {
		ingest_answer_all(ing, g, rv);
		group_free(g);
		return;
	}
	rv = ingest_plan(ing, g, &flush);
	if (rv == ERR_EXISTS || flush) {
		/* Only a committed database answers "stored already?". */
		if (*cur != NULL) {
			rv = ingest_finish(ing, *cur);
			group_free(*cur);
			*cur = NULL;
			if (rv != 0)
				ingest_recover(ing);
		}
		if (ing->nhwm == INGEST_HWM_MAX)
			ing->nhwm = 0;
		rv = ingest_plan(ing, g, &flush);
	}
	if (rv == 0)
		rv = ingest_sequence(ing, g);
	if (rv != 0) {
		/* Ids and epochs were handed out: take them back from the database
		 * once everything before is committed. */
		if (*cur != NULL) {
			ingest_finish(ing, *cur);
			group_free(*cur);
			*cur = NULL;
		}
		ingest_answer_all(ing, g, rv);
		group_free(g);
		ingest_recover(ing);
		return;
	}
	ingest_dispatch(ing, g);
	if (*cur != NULL) {
		rv = ingest_finish(ing, *cur);
		group_free(*cur);
		*cur = NULL;
		if (rv != 0) {
			/* g was numbered after a group that is not stored. */
			ingest_wait_crypto(g);
			ingest_answer_all(ing, g, rv);
			group_free(g);
			ingest_recover(ing);
			return;
		}
	}
	if (pipelined) {
		*cur = g;
		return;
	}
	if (ingest_finish(ing, g) != 0)
		ingest_recover(ing);
	group_free(g);
}

/* Takes up to INGEST_GROUP_EVENTS events' worth of batches (at least one). */
static struct batch *ingest_take(struct ingest *ing)
{
	struct batch *head = ing->qhead, *last = NULL;
	size_t events = 0;

	if (head == NULL)
		return NULL;
	for (struct batch *b = head;
	     b != NULL && (last == NULL || events + b->req->n_events <= INGEST_GROUP_EVENTS);
	     b = b->next) {
		events += b->req->n_events;
		last = b;
	}
	ing->qhead = last->next;
	if (ing->qhead == NULL)
		ing->qtail = NULL;
	last->next = NULL;
	return head;
}

static void *ingest_main(void *arg)
{
	struct ingest *ing = arg;
	struct audit_state *st = ing->st;
	struct group *cur = NULL;

	for (;;) {
		struct batch *list;
		struct group *g;
		bool more, stop, seal;

		pthread_mutex_lock(&ing->qmu);
		for (;;) {
			struct timespec until;
			uint64_t now = clock_unix_ms(), wake = now + 1000;
			seal = atomic_load(&st->seal_requested) || ingest_epoch_due(ing, now);
			if (ing->qhead != NULL || ing->stopping || seal || cur != NULL)
				break;
			if (ing->epoch_events > 0 && ing->epoch_start_ms + st->opts.epoch_ms < wake)
				wake = ing->epoch_start_ms + st->opts.epoch_ms;
			until.tv_sec = (time_t)(wake / 1000);
			until.tv_nsec = (long)(wake % 1000) * 1000000L;
			pthread_cond_timedwait(&ing->qcv, &ing->qmu, &until);
		}
		list = ingest_take(ing);
		more = ing->qhead != NULL;
		stop = ing->stopping && list == NULL;
		pthread_mutex_unlock(&ing->qmu);

		if (list == NULL && !seal) {
			/* Idle: commit what is in flight now rather than wait for a
			 * companion group (latency), or stop. */
			if (cur != NULL) {
				if (ingest_finish(ing, cur) != 0)
					ingest_recover(ing);
				group_free(cur);
				cur = NULL;
			}
			if (stop)
				break;
			continue;
		}
		if ((g = group_new(ing, list)) == NULL) {
			struct group tmp = {.batches = list};
			ingest_answer_all(ing, &tmp, ERR_NOMEM);
			continue;
		}
		ingest_run_group(ing, &cur, g, more);
	}
	return NULL;
}

int ingest_new(struct audit_state *st, struct ingest **out)
{
	struct ingest *ing = calloc(1, sizeof(*ing));

	if (ing == NULL)
		return ERR_NOMEM;
	if ((ing->hwm = calloc(INGEST_HWM_MAX, sizeof(*ing->hwm))) == NULL) {
		free(ing);
		return ERR_NOMEM;
	}
	ing->st = st;
	pthread_mutex_init(&ing->qmu, NULL);
	pthread_mutex_init(&ing->mu, NULL);
	pthread_cond_init(&ing->qcv, NULL);
	pthread_cond_init(&ing->done_cv, NULL);
	*out = ing;
	return 0;
}

int ingest_start(struct ingest *ing)
{
	int rv, n = ing->st->opts.crypto_threads > 0 ? ing->st->opts.crypto_threads : 2;

	if ((rv = workq_new(n, &ing->wq)) != 0)
		return rv;
	ing->running = true;
	if (pthread_create(&ing->thread, NULL, ingest_main, ing) != 0) {
		ing->running = false;
		workq_free(ing->wq);
		ing->wq = NULL;
		return ERR_NOMEM;
	}
	return 0;
}

void ingest_free(struct ingest *ing)
{
	if (ing == NULL)
		return;
	if (ing->running) {
		pthread_mutex_lock(&ing->qmu);
		ing->stopping = true;
		pthread_cond_signal(&ing->qcv);
		pthread_mutex_unlock(&ing->qmu);
		pthread_join(ing->thread, NULL);
		workq_free(ing->wq);
	}
	chain_ctx_free(ing->cc);
	free(ing->hwm);
	pthread_cond_destroy(&ing->qcv);
	pthread_cond_destroy(&ing->done_cv);
	pthread_mutex_destroy(&ing->qmu);
	pthread_mutex_destroy(&ing->mu);
	free(ing);
}

/* ---- entry points ------------------------------------------------------- */

static struct batch *ingest_batch(const char *source, struct rpc_call *call,
                                  const Magnetar__AppendRequest *req)
{
	struct batch *b = calloc(1, sizeof(*b));
	if (b == NULL)
		return NULL;
	b->call = call;
	b->req = req;
	snprintf(b->source, sizeof(b->source), "%s", source);
	return b;
}

static void ingest_enqueue(struct ingest *ing, struct batch *b)
{
	pthread_mutex_lock(&ing->qmu);
	if (ing->qtail != NULL)
		ing->qtail->next = b;
	else
		ing->qhead = b;
	ing->qtail = b;
	pthread_cond_signal(&ing->qcv);
	pthread_mutex_unlock(&ing->qmu);
}

int ingest_append_async(struct audit_state *st, const char *source, struct rpc_call *call,
                        const Magnetar__AppendRequest *req)
{
	struct batch *b;

	if (!st->ing->running)
		return ERR_UNAVAIL;
	if ((b = ingest_batch(source, call, req)) == NULL)
		return ERR_NOMEM;
	ingest_enqueue(st->ing, b); /* the pipeline answers and frees it */
	return 0;
}

int ingest_append_sync(struct audit_state *st, const char *source,
                       const Magnetar__AppendRequest *req, Magnetar__AppendReply *out)
{
	struct ingest *ing = st->ing;
	struct batch *b = ingest_batch(source, NULL, req);
	int rv;

	if (b == NULL)
		return ERR_NOMEM;
	if (ing->running) {
		ingest_enqueue(ing, b);
		pthread_mutex_lock(&ing->qmu);
		while (!b->done)
			pthread_cond_wait(&ing->done_cv, &ing->qmu);
		pthread_mutex_unlock(&ing->qmu);
	} else {
		struct group *g, *cur = NULL;
		pthread_mutex_lock(&ing->mu);
		if ((g = group_new(ing, b)) != NULL)
			ingest_run_group(ing, &cur, g, false);
		else
			b->rv = ERR_NOMEM;
		pthread_mutex_unlock(&ing->mu);
	}
	/* ERR_EXISTS means a refusal to the caller, and only that. */
	if (b->rv != 0)
		rv = b->rv == ERR_EXISTS ? ERR_UNAVAIL : b->rv;
	else
		rv = b->refused ? ERR_EXISTS : 0;
	out->stored = b->stored;
	out->duplicates = b->dups;
	out->high_water = b->hwm;
	free(b);
	return rv;
}

int ingest_seal_now(struct audit_state *st, int timeout_ms, uint64_t *sealed)
{
	struct ingest *ing = st->ing;
	uint64_t before = atomic_load(&st->sealed), end = clock_mono_ms() + (uint64_t)timeout_ms;

	*sealed = atomic_load(&st->epoch);
	atomic_store(&st->seal_requested, true);
	if (!ing->running) {
		struct group *g, *cur = NULL;
		pthread_mutex_lock(&ing->mu);
		if ((g = group_new(ing, NULL)) != NULL)
			ingest_run_group(ing, &cur, g, false);
		pthread_mutex_unlock(&ing->mu);
	} else {
		pthread_mutex_lock(&ing->qmu);
		pthread_cond_signal(&ing->qcv);
		pthread_mutex_unlock(&ing->qmu);
		while (atomic_load(&st->sealed) == before && clock_mono_ms() < end) {
			struct timespec ts = {0, 5 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
	}
	return atomic_load(&st->sealed) > before ? 0 : ERR_TIMEOUT;
}
