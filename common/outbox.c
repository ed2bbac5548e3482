/*
 * outbox.c — the transactional audit outbox and its sender (outbox.h).
 * The sender claims the oldest unclaimed rows for its slot (one UPDATE with
 * the writer), reads its claimed rows with a reader connection, ships them
 * with a blocking Append on its own thread under its slot's instance id,
 * and deletes them with the writer only once audit answered OK; any failure
 * leaves the rows, still claimed, for the next try. Rows a dead replica had
 * claimed are shipped by a live one under the dead one's instance id, while
 * it holds the dead one's replica lock (outbox_opts.hold).
 */
#include "common/outbox.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.pb-c.h"
#include "common/clock.h"
#include "common/err.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/pool.h"
#include "common/rpc.h"

const char outbox_migration[] =
    "CREATE TABLE outbox ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT," /* never reused, even after deletes */
    " time_ms INTEGER NOT NULL,"
    " action TEXT NOT NULL, actor TEXT NOT NULL, target TEXT NOT NULL,"
    " ip TEXT NOT NULL, request_id TEXT NOT NULL, outcome TEXT NOT NULL,"
    " detail TEXT NOT NULL);"
    "CREATE TABLE outbox_meta ("
    " id INTEGER PRIMARY KEY CHECK (id = 1),"
    " instance TEXT NOT NULL);";

/* One instance id per sender slot (a replica), and each row claimed by the
 * slot that ships it. The one sender before becomes slot 1, with its id and
 * every row still waiting: a batch it had sent before the upgrade must go
 * out again under the same id, for audit to recognise it. */
const char outbox_migration_slots[] =
    "ALTER TABLE outbox ADD COLUMN sender INTEGER;" /* NULL: not claimed yet */
    "UPDATE outbox SET sender = 1;"
    "CREATE INDEX outbox_by_sender ON outbox(sender, seq);"
    "CREATE TABLE outbox_senders ("
    " slot INTEGER PRIMARY KEY CHECK (slot >= 1),"
    " instance TEXT NOT NULL UNIQUE);"
    "INSERT INTO outbox_senders(slot, instance) SELECT 1, instance FROM outbox_meta;"
    "DROP TABLE outbox_meta;";

struct outbox {
	struct pool *pool;
	struct rpc_client *audit;
	struct outbox_opts opts;
	char source[33];
	int slot;
	char instance[33]; /* our slot's */
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool kicked, stopping;
	struct outbox_stats stats;
};

/* How often an idle sender looks for rows a dead replica had claimed. */
#define OUTBOX_ADOPT_MS 1000

/* One batch read from the table; strings owned by the batch. */
struct outbox_batch {
	Magnetar__AuditEvent *events;
	Magnetar__AuditEvent **ptrs;
	size_t n;
};

static char *outbox_col(sqlite3_stmt *st, int col)
{
	const unsigned char *t = sqlite3_column_text(st, col);
	return strdup(t != NULL ? (const char *)t : "");
}

int outbox_event_row(sqlite3_stmt *st, int col, Magnetar__AuditEvent *e)
{
	magnetar__audit_event__init(e);
	e->sequence = (uint64_t)sqlite3_column_int64(st, col);
	e->time_unix_ms = (uint64_t)sqlite3_column_int64(st, col + 1);
	e->action = outbox_col(st, col + 2);
	e->actor = outbox_col(st, col + 3);
	e->target = outbox_col(st, col + 4);
	e->ip = outbox_col(st, col + 5);
	e->request_id = outbox_col(st, col + 6);
	e->outcome = outbox_col(st, col + 7);
	e->detail = outbox_col(st, col + 8);
	return e->action && e->actor && e->target && e->ip && e->request_id && e->outcome &&
	               e->detail
	           ? 0
	           : ERR_NOMEM;
}

void outbox_event_free(Magnetar__AuditEvent *e)
{
	free(e->action);
	free(e->actor);
	free(e->target);
	free(e->ip);
	free(e->request_id);
	free(e->outcome);
	free(e->detail);
}

int outbox_enqueue(struct sqlite3 *db, const struct outbox_event *ev)
{
	static const char sql[] =
	    "INSERT INTO outbox(time_ms, action, actor, target, ip, request_id, outcome, detail)"
	    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
	const char *vals[7] = {ev->action,     ev->actor,   ev->target, ev->ip,
	                       ev->request_id, ev->outcome, ev->detail};
	sqlite3_stmt *st;
	int rc;

	if (ev->action == NULL || ev->action[0] == '\0')
		return ERR_INVAL;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		return ERR_DB;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)clock_unix_ms());
	for (int i = 0; i < 7; i++)
		sqlite3_bind_text(st, i + 2, vals[i] != NULL ? vals[i] : "", -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : ERR_DB;
}

static void outbox_batch_free(struct outbox_batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		outbox_event_free(&b->events[i]);
	free(b->events);
	free(b->ptrs);
	memset(b, 0, sizeof(*b));
}

/* Reads up to opts.batch of the oldest rows `slot` claimed. 0 or an error. */
static int outbox_read_batch(struct outbox *o, int slot, struct outbox_batch *b)
{
	static const char sql[] =
	    "SELECT seq, time_ms, action, actor, target, ip, request_id,"
	    " outcome, detail FROM outbox WHERE sender = ? ORDER BY seq LIMIT ?";
	sqlite3 *db;
	sqlite3_stmt *st = NULL;
	int rc, rv = ERR_DB;

	memset(b, 0, sizeof(*b));
	b->events = calloc((size_t)o->opts.batch, sizeof(*b->events));
	b->ptrs = calloc((size_t)o->opts.batch, sizeof(*b->ptrs));
	if (b->events == NULL || b->ptrs == NULL) {
		outbox_batch_free(b);
		return ERR_NOMEM;
	}
	if ((rv = pool_reader_get(o->pool, &db)) != 0) {
		outbox_batch_free(b);
		return rv;
	}
	rv = ERR_DB;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		goto out;
	sqlite3_bind_int(st, 1, slot);
	sqlite3_bind_int(st, 2, o->opts.batch);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		Magnetar__AuditEvent *e = &b->events[b->n];
		b->ptrs[b->n++] = e;
		if (outbox_event_row(st, 0, e) != 0) {
			rv = ERR_NOMEM;
			goto out;
		}
	}
	if (rc == SQLITE_DONE)
		rv = 0;
out:
	sqlite3_finalize(st);
	pool_reader_put(o->pool, db);
	if (rv != 0)
		outbox_batch_free(b);
	return rv;
}

/* Runs one statement with the writer, binding the integers `v`. */
static int outbox_write(struct outbox *o, const char *sql, const int64_t *v, int nv)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int rc, rv;

	if ((rv = pool_writer_get(o->pool, &db)) != 0)
		return rv;
	rv = ERR_DB;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
		for (int i = 0; i < nv; i++)
			sqlite3_bind_int64(st, i + 1, v[i]);
		rc = sqlite3_step(st);
		sqlite3_finalize(st);
		if (rc == SQLITE_DONE)
			rv = 0;
	}
	pool_writer_put(o->pool, db);
	return rv;
}

/* Claims the oldest unclaimed rows for our slot: from here on only our
 * slot's sender ships them, under our instance id. Writers are serialised,
 * so a row with a smaller seq can never commit after a claim passed it:
 * each slot ships its rows in increasing order. */
static int outbox_claim(struct outbox *o)
{
	const int64_t v[2] = {o->slot, o->opts.batch};
	return outbox_write(o,
	                    "UPDATE outbox SET sender = ?1 WHERE seq IN (SELECT seq FROM outbox"
	                    " WHERE sender IS NULL ORDER BY seq LIMIT ?2)",
	                    v, 2);
}

/*
 * Draws a new instance id for `slot` (whose id is `instance`, updated in
 * place). Our sequence went backwards — the database was restored from an
 * older copy, and AUTOINCREMENT hands out numbers audit already holds under
 * this id — so the numbers to come are only unique under a fresh id.
 */
static int outbox_rekey(struct outbox *o, int slot, char instance[33], const char *why)
{
	char fresh[33];
	sqlite3 *db;
	sqlite3_stmt *st;
	int rv;

	if ((rv = ids_random_hex(fresh, 16)) != 0)
		return rv;
	if ((rv = pool_writer_get(o->pool, &db)) != 0)
		return rv;
	rv = ERR_DB;
	if (sqlite3_prepare_v2(db,
	                       "UPDATE outbox_senders SET instance = ?1 WHERE slot = ?2 AND"
	                       " instance = ?3",
	                       -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, fresh, -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 2, slot);
		sqlite3_bind_text(st, 3, instance, -1, SQLITE_STATIC);
		if (sqlite3_step(st) == SQLITE_DONE && sqlite3_changes(db) == 1)
			rv = 0;
		sqlite3_finalize(st);
	}
	pool_writer_put(o->pool, db);
	if (rv != 0)
		return rv;
	log_warnx("outbox: %s slot %d: our sequence went backwards (%s; a database restored "
	          "from an older copy?): instance %s is replaced by %s",
	          o->source, slot, why, instance, fresh);
	pthread_mutex_lock(&o->mu);
	memcpy(instance, fresh, sizeof(fresh));
	o->stats.rekeyed++;
	pthread_mutex_unlock(&o->mu);
	return 0;
}

/* Ships one batch of `slot`'s claimed rows under `instance`, claiming new
 * rows first when it is our own slot and it has none. Returns the number of
 * rows acknowledged (0: nothing to send) or a negative error. When audit
 * says our sequence went backwards, draws a new instance id (in place). */
static int outbox_ship(struct outbox *o, int slot, char instance[33])
{
	Magnetar__AppendRequest req = MAGNETAR__APPEND_REQUEST__INIT;
	struct outbox_batch b;
	struct rpc_result r;
	uint64_t high_water = 0;
	bool conflict = false;
	char why[96];
	int rv;

	if ((rv = outbox_read_batch(o, slot, &b)) != 0)
		return rv;
	if (b.n == 0 && slot == o->slot) {
		outbox_batch_free(&b);
		if ((rv = outbox_claim(o)) != 0 || (rv = outbox_read_batch(o, slot, &b)) != 0)
			return rv;
	}
	if (b.n == 0) {
		outbox_batch_free(&b);
		return 0;
	}
	req.source = o->source;
	req.instance = instance;
	req.n_events = b.n;
	req.events = b.ptrs;
	rv = rpc_call_sync(o->audit, &magnetar__audit__descriptor, "Append", &req.base, NULL,
	                   o->opts.timeout_ms, &r);
	if (rv == 0 && r.status == MAGNETAR__STATUS__STATUS_CONFLICT &&
	    strcmp(r.code, "sequence_conflict") == 0) {
		conflict = true; /* nothing of the batch was stored */
		rv = ERR_EXISTS;
	} else if (rv == 0 && r.status != MAGNETAR__STATUS__STATUS_OK) {
		log_debug("outbox: Append refused status=%s code=%s", rpc_status_name(r.status),
		          r.code);
		rv = ERR_UNAVAIL;
	} else if (rv == 0 && r.output != NULL) {
		high_water = ((const Magnetar__AppendReply *)r.output)->high_water;
	}
	rpc_result_fini(&r);
	/* Only an acknowledged batch is deleted; a lost ack means a re-send,
	 * which audit recognises by (source, instance, sequence) and content. */
	if (rv == 0) {
		const int64_t v[2] = {slot, (int64_t)b.events[b.n - 1].sequence};
		rv = outbox_write(o, "DELETE FROM outbox WHERE sender = ? AND seq <= ?", v, 2);
	}
	if (conflict) {
		/* Audit refused the batch: our numbers name other events there.
		 * The rows stay, and go again under the new id. */
		snprintf(why, sizeof(why), "audit refused sequence %llu..%llu: sequence_conflict",
		         (unsigned long long)b.events[0].sequence,
		         (unsigned long long)b.events[b.n - 1].sequence);
		if (outbox_rekey(o, slot, instance, why) == 0) {
			rv = 0; /* nothing sent; go again at once */
			outbox_kick(o);
		}
	} else if (rv == 0 && high_water > b.events[b.n - 1].sequence) {
		/* Stored, but audit holds higher numbers under this id than we
		 * have sent: the next ones we draw would collide. */
		snprintf(why, sizeof(why), "audit holds up to %llu, we sent up to %llu",
		         (unsigned long long)high_water,
		         (unsigned long long)b.events[b.n - 1].sequence);
		outbox_rekey(o, slot, instance, why);
	}
	if (rv == 0 && !conflict)
		rv = (int)b.n;
	outbox_batch_free(&b);
	return rv;
}

/* Slot `slot`'s instance id, drawn (and stored) on its first use. */
static int outbox_slot_instance(struct outbox *o, int slot, char instance[33])
{
	char fresh[33];
	sqlite3 *db;
	sqlite3_stmt *st = NULL;
	int rv;

	if ((rv = ids_random_hex(fresh, 16)) != 0)
		return rv;
	if ((rv = pool_writer_get(o->pool, &db)) != 0)
		return rv;
	rv = ERR_DB;
	if (sqlite3_prepare_v2(db,
	                       "INSERT OR IGNORE INTO outbox_senders(slot, instance) VALUES (?, ?)",
	                       -1, &st, NULL) != SQLITE_OK)
		goto out;
	sqlite3_bind_int(st, 1, slot);
	sqlite3_bind_text(st, 2, fresh, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		goto out;
	sqlite3_finalize(st);
	if (sqlite3_prepare_v2(db, "SELECT instance FROM outbox_senders WHERE slot = ?", -1, &st,
	                       NULL) != SQLITE_OK)
		goto out;
	sqlite3_bind_int(st, 1, slot);
	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 0) == 32) {
		memcpy(instance, sqlite3_column_text(st, 0), 32);
		instance[32] = '\0';
		rv = 0;
	}
out:
	sqlite3_finalize(st);
	pool_writer_put(o->pool, db);
	return rv;
}

/* Other slots with claimed rows left (at most `max`), from the reader. */
static int outbox_orphan_slots(struct outbox *o, int *slots, int max)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int n = 0;

	if (pool_reader_get(o->pool, &db) != 0)
		return 0;
	if (sqlite3_prepare_v2(db,
	                       "SELECT DISTINCT sender FROM outbox WHERE sender IS NOT NULL"
	                       " AND sender != ? ORDER BY sender",
	                       -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_int(st, 1, o->slot);
		while (n < max && sqlite3_step(st) == SQLITE_ROW)
			slots[n++] = sqlite3_column_int(st, 0);
		sqlite3_finalize(st);
	}
	pool_reader_put(o->pool, db);
	return n;
}

static bool outbox_stopping(struct outbox *o)
{
	pthread_mutex_lock(&o->mu);
	bool stop = o->stopping;
	pthread_mutex_unlock(&o->mu);
	return stop;
}

/* Rows claimed by a slot whose sender is gone (killed, or scaled away)
 * would wait for good: when we can take that slot's replica lock, nobody
 * else sends for it, so we ship them under its own instance id — a batch
 * it had sent before dying is then recognised by audit as a re-send. */
static void outbox_adopt(struct outbox *o)
{
	int slots[16], n = outbox_orphan_slots(o, slots, 16);

	for (int i = 0; i < n; i++) {
		char instance[33];
		int sent = 1;
		/* One batch per hold of the lock: a replica restarting into this
		 * slot (svc_claim_replica) then waits at most one batch, never
		 * the whole backlog, before the entry is free for it. */
		while (sent > 0 && !outbox_stopping(o)) {
			if (o->opts.hold != NULL && !o->opts.hold(o->opts.hold_arg, slots[i]))
				break; /* alive again: its own sender ships them */
			sent = 0;
			if (outbox_slot_instance(o, slots[i], instance) == 0 &&
			    (sent = outbox_ship(o, slots[i], instance)) > 0) {
				pthread_mutex_lock(&o->mu);
				o->stats.sent += (uint64_t)sent;
				o->stats.adopted += (uint64_t)sent;
				o->stats.batches++;
				pthread_mutex_unlock(&o->mu);
			}
			if (o->opts.release != NULL)
				o->opts.release(o->opts.hold_arg, slots[i]);
		}
	}
}

static void outbox_wait(struct outbox *o, int ms)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&o->mu);
	while (!o->kicked && !o->stopping)
		if (pthread_cond_timedwait(&o->cv, &o->mu, &until) != 0)
			break;
	o->kicked = false;
	pthread_mutex_unlock(&o->mu);
}

static void *outbox_main(void *arg)
{
	struct outbox *o = arg;
	/* Not at once: replicas restarted together take their own slots back
	 * first, rather than find them held by an adopter. */
	uint64_t adopt_at = clock_mono_ms() + 3 * OUTBOX_ADOPT_MS;
	int backoff = 0;

	for (;;) {
		int n;
		if (outbox_stopping(o))
			break;
		n = outbox_ship(o, o->slot, o->instance);
		if (n >= 0 && n < o->opts.batch && clock_mono_ms() >= adopt_at) {
			outbox_adopt(o);
			adopt_at = clock_mono_ms() + OUTBOX_ADOPT_MS;
		}
		pthread_mutex_lock(&o->mu);
		if (n > 0) {
			o->stats.sent += (uint64_t)n;
			o->stats.batches++;
		} else if (n < 0) {
			o->stats.failures++;
		}
		pthread_mutex_unlock(&o->mu);
		if (n < 0) {
			backoff = backoff == 0 ? 50 : backoff * 2;
			if (backoff > o->opts.max_backoff_ms)
				backoff = o->opts.max_backoff_ms;
			outbox_wait(o, backoff);
		} else if (n < o->opts.batch) {
			backoff = 0;
			outbox_wait(o, o->opts.idle_ms);
		}
		/* A full batch: more may wait, go again at once. */
	}
	return NULL;
}

int outbox_start(struct pool *pool, const char *source, struct rpc_client *audit,
                 const struct outbox_opts *opts, struct outbox **out)
{
	struct outbox *o;
	int rv;

	if (strlen(source) == 0 || strlen(source) >= sizeof(o->source))
		return ERR_INVAL;
	if ((o = calloc(1, sizeof(*o))) == NULL)
		return ERR_NOMEM;
	o->pool = pool;
	o->audit = audit;
	strcpy(o->source, source);
	if (opts != NULL)
		o->opts = *opts;
	if (o->opts.batch <= 0)
		o->opts.batch = 256;
	if (o->opts.timeout_ms <= 0)
		o->opts.timeout_ms = 2000;
	if (o->opts.idle_ms <= 0)
		o->opts.idle_ms = 250;
	if (o->opts.max_backoff_ms <= 0)
		o->opts.max_backoff_ms = 2000;
	o->slot = o->opts.slot > 0 ? o->opts.slot : 1;
	pthread_mutex_init(&o->mu, NULL);
	pthread_cond_init(&o->cv, NULL);
	if ((rv = outbox_slot_instance(o, o->slot, o->instance)) != 0)
		goto fail;
	if (pthread_create(&o->thread, NULL, outbox_main, o) != 0) {
		rv = ERR_NOMEM;
		goto fail;
	}
	*out = o;
	return 0;
fail:
	pthread_cond_destroy(&o->cv);
	pthread_mutex_destroy(&o->mu);
	free(o);
	return rv;
}

void outbox_kick(struct outbox *o)
{
	if (o == NULL)
		return;
	pthread_mutex_lock(&o->mu);
	o->kicked = true;
	pthread_cond_signal(&o->cv);
	pthread_mutex_unlock(&o->mu);
}

void outbox_stop(struct outbox *o)
{
	if (o == NULL)
		return;
	pthread_mutex_lock(&o->mu);
	o->stopping = true;
	pthread_cond_signal(&o->cv);
	pthread_mutex_unlock(&o->mu);
	pthread_join(o->thread, NULL);
	pthread_cond_destroy(&o->cv);
	pthread_mutex_destroy(&o->mu);
	free(o);
}

const char *outbox_instance(struct outbox *o)
{
	return o->instance;
}

void outbox_get_stats(struct outbox *o, struct outbox_stats *st)
{
	sqlite3 *db;
	sqlite3_stmt *s;
	uint64_t pending = 0;

	if (pool_reader_get(o->pool, &db) == 0) {
		if (sqlite3_prepare_v2(db, "SELECT count(*) FROM outbox", -1, &s, NULL) ==
		    SQLITE_OK) {
			if (sqlite3_step(s) == SQLITE_ROW)
				pending = (uint64_t)sqlite3_column_int64(s, 0);
			sqlite3_finalize(s);
		}
		pool_reader_put(o->pool, db);
	}
	pthread_mutex_lock(&o->mu);
	o->stats.pending = pending;
	*st = o->stats;
	pthread_mutex_unlock(&o->mu);
}
