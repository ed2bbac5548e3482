/*
 * store.c — audit.db: the `records` chain, the chain tip, the nonce
 * high-water marks, and the de-duplication key UNIQUE (source, instance,
 * seq). Prepared statements only; the only audit file that sees SQLite.
 * Every write transaction of audit is durable (synchronous=FULL) because
 * an Append is acknowledged, and the producer deletes its copy, on commit.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/outbox.h"
#include "common/pool.h"
#include "services/audit/audit.h"

static const char *const store_migrations[] = {
    /* v1: plaintext events (kept so an old audit.db upgrades in order). */
    "CREATE TABLE events ("
    " id INTEGER PRIMARY KEY,"
    " source TEXT NOT NULL,"
    " producer TEXT NOT NULL,"
    " instance TEXT NOT NULL,"
    " seq INTEGER NOT NULL,"
    " time_ms INTEGER NOT NULL,"
    " received_ms INTEGER NOT NULL,"
    " action TEXT NOT NULL, actor TEXT NOT NULL, target TEXT NOT NULL, ip TEXT NOT NULL,"
    " request_id TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL,"
    " UNIQUE (source, instance, seq));",
    /* v2: the encrypted chain. v1 rows are re-ingested at start (encrypted
     * and chained like any batch), then legacy_events is dropped. */
    "ALTER TABLE events RENAME TO legacy_events;"
    "CREATE TABLE records ("
    " id INTEGER PRIMARY KEY," /* chain position: 1, 2, 3 ... no gaps */
    " kind INTEGER NOT NULL,"  /* 0 event, 1 epoch head, 2 genesis */
    " epoch INTEGER NOT NULL,"
    " time_ms INTEGER NOT NULL,"
    " received_ms INTEGER NOT NULL,"
    " source TEXT, producer TEXT, instance TEXT, seq INTEGER, key_id TEXT,"
    " action BLOB, actor BLOB, target BLOB, ip BLOB, request_id BLOB, outcome BLOB,"
    " detail BLOB,"                   /* each nonce || AES-256-GCM ciphertext || tag */
    " action_ix BLOB, actor_ix BLOB," /* blind indexes for Query filters */
    " body BLOB, sig BLOB,"           /* heads and genesis */
    " hash BLOB NOT NULL, mac BLOB NOT NULL,"
    " UNIQUE (source, instance, seq));"
    "CREATE INDEX records_time ON records(time_ms);"
    "CREATE INDEX records_action ON records(action_ix);"
    "CREATE INDEX records_actor ON records(actor_ix);"
    "CREATE INDEX records_kind ON records(kind) WHERE kind <> 0;"
    "CREATE TABLE chain_tip ("
    " id INTEGER PRIMARY KEY CHECK (id = 1),"
    " last_id INTEGER NOT NULL, hash BLOB NOT NULL, epoch INTEGER NOT NULL,"
    " mac BLOB NOT NULL);"
    "CREATE TABLE nonce_blocks (key_id TEXT PRIMARY KEY, next INTEGER NOT NULL);",
};

const struct pool_schema store_schema = {store_migrations,
                                         sizeof(store_migrations) / sizeof(store_migrations[0])};

#define STORE_COLS                                                                                 \
	"id, kind, epoch, time_ms, received_ms, source, producer, instance, seq, key_id,"          \
	" action, actor, target, ip, request_id, outcome, detail, action_ix, actor_ix, body, sig," \
	" hash, mac"

struct store_tx {
	struct pool *pool;
	sqlite3 *db;
	sqlite3_stmt *ins;
};

static int store_exec(sqlite3 *db, const char *sql)
{
	return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : ERR_DB;
}

/* Durable commits for this connection's next transactions; cheap (a flag),
 * and set each time because the pool may have replaced the connection. */
static int store_begin_durable(sqlite3 *db)
{
	/* The writer touches four indexes with random keys (blind indexes,
	 * the de-duplication key): a 16 MiB page cache keeps their upper levels
	 * in memory instead of re-reading them from the OS on every group. */
	if (store_exec(db, "PRAGMA synchronous=FULL") != 0 ||
	    store_exec(db, "PRAGMA cache_size=-16384") != 0)
		return ERR_DB;
	return store_exec(db, "BEGIN IMMEDIATE");
}

int store_tx_begin(struct pool *pool, struct store_tx **out)
{
	static const char sql[] = "INSERT INTO records(" STORE_COLS ") VALUES (?, ?, ?, ?, ?, ?, ?,"
	                          " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
	struct store_tx *tx;
	int rv;

	if ((tx = calloc(1, sizeof(*tx))) == NULL)
		return ERR_NOMEM;
	tx->pool = pool;
	if ((rv = pool_writer_get(pool, &tx->db)) != 0) {
		free(tx);
		return rv;
	}
	if ((rv = store_begin_durable(tx->db)) != 0)
		goto fail;
	if (sqlite3_prepare_v2(tx->db, sql, -1, &tx->ins, NULL) != SQLITE_OK) {
		rv = ERR_DB;
		store_exec(tx->db, "ROLLBACK");
		goto fail;
	}
	*out = tx;
	return 0;
fail:
	pool_writer_put(pool, tx->db);
	free(tx);
	return rv;
}

static void store_bind_text(sqlite3_stmt *st, int i, const char *s)
{
	if (s != NULL)
		sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

static void store_bind_blob(sqlite3_stmt *st, int i, const void *p, size_t n)
{
	if (p != NULL)
		sqlite3_bind_blob(st, i, p, (int)n, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

int store_tx_insert(struct store_tx *tx, const struct audit_rec *r)
{
	sqlite3_stmt *st = tx->ins;
	bool ev = r->kind == AUDIT_KIND_EVENT;

	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	sqlite3_bind_int64(st, 1, (sqlite3_int64)r->id);
	sqlite3_bind_int(st, 2, r->kind);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)r->epoch);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)r->time_ms);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)r->received_ms);
	if (ev) {
		store_bind_text(st, 6, r->source);
		store_bind_text(st, 7, r->producer);
		store_bind_text(st, 8, r->instance);
		sqlite3_bind_int64(st, 9, (sqlite3_int64)r->seq);
		store_bind_text(st, 10, r->key_id);
		for (int f = 0; f < AUDIT_NFIELDS; f++)
			store_bind_blob(st, 11 + f, r->field[f], r->field_len[f]);
		store_bind_blob(st, 18, r->action_ix, AUDIT_IX);
		store_bind_blob(st, 19, r->actor_ix, AUDIT_IX);
	}
	store_bind_blob(st, 20, r->body, r->body_len);
	store_bind_blob(st, 21, r->sig, r->sig_len);
	store_bind_blob(st, 22, r->hash, AUDIT_HASH);
	store_bind_blob(st, 23, r->mac, AUDIT_HASH);
	return sqlite3_step(st) == SQLITE_DONE ? 0 : ERR_DB;
}

int store_tx_set_tip(struct store_tx *tx, uint64_t id, const unsigned char hash[AUDIT_HASH],
                     uint64_t epoch, const unsigned char mac[AUDIT_HASH])
{
	static const char sql[] = "INSERT OR REPLACE INTO chain_tip(id, last_id, hash, epoch, mac)"
	                          " VALUES (1, ?, ?, ?, ?)";
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(tx->db, sql, -1, &st, NULL) != SQLITE_OK)
		return ERR_DB;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
	sqlite3_bind_blob(st, 2, hash, AUDIT_HASH, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)epoch);
	sqlite3_bind_blob(st, 4, mac, AUDIT_HASH, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : ERR_DB;
}

static void store_tx_free(struct store_tx *tx)
{
	sqlite3_finalize(tx->ins);
	pool_writer_put(tx->pool, tx->db);
	free(tx);
}

int store_tx_commit(struct store_tx *tx)
{
	int rv = store_exec(tx->db, "COMMIT");
	if (rv != 0)
		store_exec(tx->db, "ROLLBACK");
	store_tx_free(tx);
	return rv;
}

void store_tx_rollback(struct store_tx *tx)
{
	if (tx == NULL)
		return;
	store_exec(tx->db, "ROLLBACK");
	store_tx_free(tx);
}

/* Runs `sql` (binding source, instance[, seq]) on a reader; *out = column 0. */
static int store_seq_query(struct pool *pool, const char *sql, const char *source,
                           const char *instance, const uint64_t *seq, int64_t *out, bool *row)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int rc, rv;

	if ((rv = pool_reader_get(pool, &db)) != 0)
		return rv;
	rv = ERR_DB;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, source, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, instance, -1, SQLITE_STATIC);
		if (seq != NULL)
			sqlite3_bind_int64(st, 3, (sqlite3_int64)*seq);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
			*row = rc == SQLITE_ROW;
			*out = *row ? sqlite3_column_int64(st, 0) : 0;
			rv = 0;
		}
		sqlite3_finalize(st);
	}
	pool_reader_put(pool, db);
	return rv;
}

int store_max_seq(struct pool *pool, const char *source, const char *instance, uint64_t *max)
{
	int64_t v;
	bool row;
	int rv = store_seq_query(pool,
	                         "SELECT coalesce(max(seq), 0) FROM records"
	                         " WHERE source = ? AND instance = ?",
	                         source, instance, NULL, &v, &row);
	*max = rv == 0 ? (uint64_t)v : 0;
	return rv;
}

static void store_row(sqlite3_stmt *st, struct audit_rec *r);

int store_find_seq(struct pool *pool, const char *source, const char *instance, uint64_t seq,
                   void (*fn)(const struct audit_rec *r, void *arg), void *arg, bool *found)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	struct audit_rec r;
	int rc, rv;

	*found = false;
	if ((rv = pool_reader_get(pool, &db)) != 0)
		return rv;
	rv = ERR_DB;
	if (sqlite3_prepare_v2(db,
	                       "SELECT " STORE_COLS
	                       " FROM records WHERE source = ? AND instance = ?"
	                       " AND seq = ? AND kind = 0",
	                       -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, source, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, instance, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)seq);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			*found = true;
			store_row(st, &r);
			fn(&r, arg);
		}
		if (rc == SQLITE_ROW || rc == SQLITE_DONE)
			rv = 0;
		sqlite3_finalize(st);
	}
	pool_reader_put(pool, db);
	return rv;
}

/* One integer (or blob into buf) from a one-row statement; *row false if none. */
static int store_one(sqlite3 *db, const char *sql, int64_t bind, int64_t *v, bool *row)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		return ERR_DB;
	if (sqlite3_bind_parameter_count(st) > 0)
		sqlite3_bind_int64(st, 1, bind);
	rc = sqlite3_step(st);
	*row = rc == SQLITE_ROW;
	*v = *row ? sqlite3_column_int64(st, 0) : 0;
	sqlite3_finalize(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : ERR_DB;
}

int store_state(struct pool *pool, struct store_state *s)
{
	sqlite3 *db;
	sqlite3_stmt *st = NULL;
	int64_t v;
	bool row;
	int rc, rv;

	memset(s, 0, sizeof(*s));
	if ((rv = pool_reader_get(pool, &db)) != 0)
		return rv;
	rv = ERR_DB;
	if (store_exec(db, "BEGIN") != 0)
		goto out;
	if (sqlite3_prepare_v2(db,
	                       "SELECT id, hash, epoch, kind FROM records ORDER BY id DESC LIMIT 1",
	                       -1, &st, NULL) != SQLITE_OK)
		goto end;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		s->last_id = (uint64_t)sqlite3_column_int64(st, 0);
		if (sqlite3_column_bytes(st, 1) == AUDIT_HASH)
			memcpy(s->last_hash, sqlite3_column_blob(st, 1), AUDIT_HASH);
		s->last_epoch = (uint64_t)sqlite3_column_int64(st, 2);
		s->last_kind = sqlite3_column_int(st, 3);
	} else if (rc != SQLITE_DONE) {
		goto end;
	}
	sqlite3_finalize(st);
	st = NULL;
	if (sqlite3_prepare_v2(db,
	                       "SELECT id, epoch FROM records WHERE kind = 1 AND kind <> 0"
	                       " ORDER BY id DESC LIMIT 1",
	                       -1, &st, NULL) != SQLITE_OK)
		goto end;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		s->head_id = (uint64_t)sqlite3_column_int64(st, 0);
		s->head_epoch = (uint64_t)sqlite3_column_int64(st, 1);
	} else if (rc != SQLITE_DONE) {
		goto end;
	}
	s->open_epoch = s->head_id != 0 ? s->head_epoch + 1 : 0;
	s->epoch_first_id = s->head_id + 1;
	/* A break after the last head that moved the log to a later epoch
	 * (whole epochs were cut) opens that epoch itself. */
	sqlite3_finalize(st);
	if (sqlite3_prepare_v2(db,
	                       "SELECT id, epoch FROM records WHERE kind = 3 AND kind <> 0"
	                       " AND id > ? AND epoch > ? ORDER BY id DESC LIMIT 1",
	                       -1, &st, NULL) != SQLITE_OK)
		goto end;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)s->head_id);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)s->open_epoch);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		s->epoch_first_id = (uint64_t)sqlite3_column_int64(st, 0);
		s->open_epoch = (uint64_t)sqlite3_column_int64(st, 1);
	} else if (rc != SQLITE_DONE) {
		goto end;
	}
	if (store_one(db, "SELECT count(*) FROM records WHERE id >= ? AND kind = 0",
	              (int64_t)s->epoch_first_id, &v, &row) != 0)
		goto end;
	s->epoch_events = (uint64_t)v;
	if (store_one(db, "SELECT received_ms FROM records WHERE id >= ? ORDER BY id LIMIT 1",
	              (int64_t)s->epoch_first_id, &v, &row) != 0)
		goto end;
	s->epoch_first_ms = (uint64_t)v;
	/* Ids have no gaps but the ones a break skips, so events = last id -
	 * heads, genesis and breaks - skipped ids (the partial index answers
	 * without a table scan). */
	if (store_one(db, "SELECT count(*) FROM records WHERE kind <> 0", 0, &v, &row) != 0)
		goto end;
	s->events = s->last_id >= (uint64_t)v ? s->last_id - (uint64_t)v : 0;
	sqlite3_finalize(st);
	if (sqlite3_prepare_v2(db, "SELECT body FROM records WHERE kind = 3 AND kind <> 0", -1, &st,
	                       NULL) != SQLITE_OK)
		goto end;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct chain_break b;
		s->breaks++;
		if (chain_break_decode(sqlite3_column_blob(st, 0),
		                       (size_t)sqlite3_column_bytes(st, 0), &b) == 0)
			s->events = s->events >= b.skipped ? s->events - b.skipped : 0;
	}
	if (rc != SQLITE_DONE)
		goto end;
	rv = 0;
end:
	sqlite3_finalize(st);
	store_exec(db, "COMMIT");
out:
	pool_reader_put(pool, db);
	return rv;
}

int store_nonce_reserve(struct pool *pool, const char *key_id, uint64_t block, uint64_t *start)
{
	sqlite3 *db;
	sqlite3_stmt *st = NULL;
	int64_t next = 0;
	int rv;

	if ((rv = pool_writer_get(pool, &db)) != 0)
		return rv;
	if ((rv = store_begin_durable(db)) != 0)
		goto out;
	rv = ERR_DB;
	if (sqlite3_prepare_v2(db,
	                       "INSERT INTO nonce_blocks(key_id, next) VALUES (?, ?)"
	                       " ON CONFLICT(key_id) DO UPDATE SET next = next + excluded.next"
	                       " RETURNING next",
	                       -1, &st, NULL) != SQLITE_OK)
		goto rollback;
	sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)block);
	if (sqlite3_step(st) != SQLITE_ROW)
		goto rollback;
	next = sqlite3_column_int64(st, 0);
	if (sqlite3_step(st) != SQLITE_DONE)
		goto rollback;
	sqlite3_finalize(st);
	st = NULL;
	/* The block is ours only once this commit is on disk. */
	if (store_exec(db, "COMMIT") != 0)
		goto rollback;
	*start = (uint64_t)next - block;
	rv = 0;
	goto out;
rollback:
	sqlite3_finalize(st);
	store_exec(db, "ROLLBACK");
out:
	pool_writer_put(pool, db);
	return rv;
}

int store_count(struct pool *pool, uint64_t *count)
{
	struct store_state s;
	int rv = store_state(pool, &s);
	if (rv == 0)
		*count = s.events;
	return rv;
}

static void store_row(sqlite3_stmt *st, struct audit_rec *r)
{
	memset(r, 0, sizeof(*r));
	r->id = (uint64_t)sqlite3_column_int64(st, 0);
	r->kind = sqlite3_column_int(st, 1);
	r->epoch = (uint64_t)sqlite3_column_int64(st, 2);
	r->time_ms = (uint64_t)sqlite3_column_int64(st, 3);
	r->received_ms = (uint64_t)sqlite3_column_int64(st, 4);
	r->source = (const char *)sqlite3_column_text(st, 5);
	r->producer = (const char *)sqlite3_column_text(st, 6);
	r->instance = (const char *)sqlite3_column_text(st, 7);
	r->seq = (uint64_t)sqlite3_column_int64(st, 8);
	r->key_id = (const char *)sqlite3_column_text(st, 9);
	for (int f = 0; f < AUDIT_NFIELDS; f++) {
		r->field[f] = sqlite3_column_blob(st, 10 + f);
		r->field_len[f] = (size_t)sqlite3_column_bytes(st, 10 + f);
	}
	/* A wrong-sized index or hash is left zeroed: the content hash (or the
	 * comparison) then fails, which is what Verify should report. */
	if (sqlite3_column_bytes(st, 17) == AUDIT_IX)
		memcpy(r->action_ix, sqlite3_column_blob(st, 17), AUDIT_IX);
	if (sqlite3_column_bytes(st, 18) == AUDIT_IX)
		memcpy(r->actor_ix, sqlite3_column_blob(st, 18), AUDIT_IX);
	r->body = sqlite3_column_blob(st, 19);
	r->body_len = (size_t)sqlite3_column_bytes(st, 19);
	r->sig = sqlite3_column_blob(st, 20);
	r->sig_len = (size_t)sqlite3_column_bytes(st, 20);
	if (sqlite3_column_bytes(st, 21) == AUDIT_HASH)
		memcpy(r->hash, sqlite3_column_blob(st, 21), AUDIT_HASH);
	if (sqlite3_column_bytes(st, 22) == AUDIT_HASH)
		memcpy(r->mac, sqlite3_column_blob(st, 22), AUDIT_HASH);
}

/* The IN lists hold one blind index per key of the ring (AUDIT_KEYS_MAX
 * placeholders; unused ones stay NULL and match nothing). */
#define Q8 "?,?,?,?,?,?,?,?"
#define Q32 Q8 "," Q8 "," Q8 "," Q8

int store_query(struct pool *pool, const struct store_query *q,
                int (*fn)(const struct audit_rec *r, void *arg), void *arg)
{
	/* The statement is assembled from these constant fragments only,
	 * chosen by which filters are present, so each shape can use its index;
	 * no byte of input ever becomes SQL. */
	static const char head[] = "SELECT " STORE_COLS " FROM records WHERE kind = 0"
	                           " AND time_ms >= ? AND time_ms < ?";
	static const char after[] = " AND id > ?";
	static const char before[] = " AND id < ?";
	static const char by_action[] = " AND action_ix IN (" Q32 ")";
	static const char by_actor[] = " AND actor_ix IN (" Q32 ")";
	static const char asc[] = " ORDER BY id ASC LIMIT ?";
	static const char desc[] = " ORDER BY id DESC LIMIT ?";
	char
	    sql[sizeof(head) + sizeof(after) + sizeof(by_action) + sizeof(by_actor) + sizeof(desc)];
	sqlite3 *db;
	sqlite3_stmt *st = NULL;
	struct audit_rec r;
	int i = 1, rc, rv;

	snprintf(sql, sizeof(sql), "%s%s%s%s%s", head, q->oldest_first ? after : before,
	         q->action_ix != NULL ? by_action : "", q->actor_ix != NULL ? by_actor : "",
	         q->oldest_first ? asc : desc);
	if ((rv = pool_reader_get(pool, &db)) != 0)
		return rv;
	rv = ERR_DB;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		goto out;
	sqlite3_bind_int64(st, i++, (sqlite3_int64)q->since_ms);
	sqlite3_bind_int64(st, i++, q->until_ms != 0 ? (sqlite3_int64)q->until_ms : INT64_MAX);
	if (q->oldest_first)
		sqlite3_bind_int64(st, i++, (sqlite3_int64)q->after_id);
	else
		sqlite3_bind_int64(st, i++,
		                   q->after_id != 0 ? (sqlite3_int64)q->after_id : INT64_MAX);
	for (int which = 0; which < 2; which++) {
		const unsigned char(*ix)[AUDIT_IX] = which == 0 ? q->action_ix : q->actor_ix;
		if (ix == NULL)
			continue;
		for (size_t k = 0; k < AUDIT_KEYS_MAX; k++, i++)
			if (k < q->n_ix)
				sqlite3_bind_blob(st, i, ix[k], AUDIT_IX, SQLITE_STATIC);
	}
	sqlite3_bind_int(st, i, (int)q->limit);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		store_row(st, &r);
		if ((rv = fn(&r, arg)) != 0)
			goto out;
	}
	rv = rc == SQLITE_DONE ? 0 : ERR_DB;
out:
	sqlite3_finalize(st);
	pool_reader_put(pool, db);
	return rv;
}

int store_walk(struct pool *pool, void (*snap)(const struct store_tip *tip, void *arg),
               int (*fn)(const struct audit_rec *r, void *arg), void *arg)
{
	sqlite3 *db;
	sqlite3_stmt *st = NULL;
	struct store_tip tip = {0};
	struct audit_rec r;
	int rc, rv;

	if ((rv = pool_reader_get(pool, &db)) != 0)
		return rv;
	rv = ERR_DB;
	if (store_exec(db, "BEGIN") != 0)
		goto out;
	snap(NULL, arg);
	/* The first read fixes the snapshot: the tip and every row below come
	 * from the same moment. */
	if (sqlite3_prepare_v2(db, "SELECT last_id, epoch, hash, mac FROM chain_tip WHERE id = 1",
	                       -1, &st, NULL) != SQLITE_OK) {
		snap(&tip, arg);
		goto end;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		tip.has_tip = true;
		tip.id = (uint64_t)sqlite3_column_int64(st, 0);
		tip.epoch = (uint64_t)sqlite3_column_int64(st, 1);
		if (sqlite3_column_bytes(st, 2) == AUDIT_HASH)
			memcpy(tip.hash, sqlite3_column_blob(st, 2), AUDIT_HASH);
		if (sqlite3_column_bytes(st, 3) == AUDIT_HASH)
			memcpy(tip.mac, sqlite3_column_blob(st, 3), AUDIT_HASH);
	} else if (rc != SQLITE_DONE) {
		snap(&tip, arg);
		goto end;
	}
	sqlite3_finalize(st);
	st = NULL;
	snap(&tip, arg);
	if (sqlite3_prepare_v2(db, "SELECT " STORE_COLS " FROM records ORDER BY id", -1, &st,
	                       NULL) != SQLITE_OK)
		goto end;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		store_row(st, &r);
		if ((rv = fn(&r, arg)) != 0)
			goto end;
	}
	rv = rc == SQLITE_DONE ? 0 : ERR_DB;
end:
	sqlite3_finalize(st);
	store_exec(db, "COMMIT");
out:
	pool_reader_put(pool, db);
	return rv;
}

int store_tip_read(struct pool *pool, struct store_tip *tip)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int rc, rv;

	memset(tip, 0, sizeof(*tip));
	if ((rv = pool_reader_get(pool, &db)) != 0)
		return rv;
	rv = ERR_DB;
	if (sqlite3_prepare_v2(db, "SELECT last_id, epoch, hash, mac FROM chain_tip WHERE id = 1",
	                       -1, &st, NULL) == SQLITE_OK) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			tip->has_tip = true;
			tip->id = (uint64_t)sqlite3_column_int64(st, 0);
			tip->epoch = (uint64_t)sqlite3_column_int64(st, 1);
			if (sqlite3_column_bytes(st, 2) == AUDIT_HASH)
				memcpy(tip->hash, sqlite3_column_blob(st, 2), AUDIT_HASH);
			if (sqlite3_column_bytes(st, 3) == AUDIT_HASH)
				memcpy(tip->mac, sqlite3_column_blob(st, 3), AUDIT_HASH);
		}
		if (rc == SQLITE_ROW || rc == SQLITE_DONE)
			rv = 0;
		sqlite3_finalize(st);
	}
	pool_reader_put(pool, db);
	return rv;
}

void store_legacy_free(struct store_legacy *l)
{
	for (size_t i = 0; i < l->n; i++)
		outbox_event_free(l->ptrs[i]);
	free(l->events);
	free(l->ptrs);
	l->events = NULL;
	l->ptrs = NULL;
	l->n = 0;
}

int store_legacy_read(struct pool *pool, uint64_t after_id, size_t max, struct store_legacy *l)
{
	static const char sql[] =
	    "SELECT id, source, producer, instance, seq, time_ms, action, actor, target, ip,"
	    " request_id, outcome, detail FROM legacy_events WHERE id > ? ORDER BY id LIMIT ?";
	sqlite3 *db;
	sqlite3_stmt *st = NULL;
	int rc, rv;

	memset(l, 0, sizeof(*l));
	l->last_id = after_id;
	if ((l->events = calloc(max, sizeof(*l->events))) == NULL ||
	    (l->ptrs = calloc(max, sizeof(*l->ptrs))) == NULL) {
		store_legacy_free(l);
		return ERR_NOMEM;
	}
	if ((rv = pool_reader_get(pool, &db)) != 0) {
		store_legacy_free(l);
		return rv;
	}
	int64_t exists;
	bool row;
	rv = ERR_DB;
	if (store_one(db,
	              "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
	              " AND name = 'legacy_events'",
	              0, &exists, &row) != 0)
		goto out;
	rv = 0;
	if (exists == 0)
		goto out; /* already imported and dropped */
	rv = ERR_DB;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		goto out;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)after_id);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)max);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		Magnetar__AuditEvent *e = &l->events[l->n];
		const char *src = (const char *)sqlite3_column_text(st, 1);
		const char *prod = (const char *)sqlite3_column_text(st, 2);
		const char *inst = (const char *)sqlite3_column_text(st, 3);
		if (src == NULL || prod == NULL || inst == NULL)
			goto out;
		/* One batch = one (source, producer, instance), as Append takes. */
		if (l->n == 0) {
			snprintf(l->source, sizeof(l->source), "%s", src);
			snprintf(l->producer, sizeof(l->producer), "%s", prod);
			snprintf(l->instance, sizeof(l->instance), "%s", inst);
		} else if (strcmp(src, l->source) != 0 || strcmp(prod, l->producer) != 0 ||
		           strcmp(inst, l->instance) != 0) {
			break;
		}
		l->ptrs[l->n++] = e;
		l->last_id = (uint64_t)sqlite3_column_int64(st, 0);
		if (outbox_event_row(st, 4, e) != 0) {
			rv = ERR_NOMEM;
			goto out;
		}
	}
	rv = 0;
out:
	sqlite3_finalize(st);
	pool_reader_put(pool, db);
	if (rv != 0)
		store_legacy_free(l);
	return rv;
}

int store_legacy_drop(struct pool *pool)
{
	sqlite3 *db;
	int rv;

	if ((rv = pool_writer_get(pool, &db)) != 0)
		return rv;
	rv = store_exec(db, "DROP TABLE IF EXISTS legacy_events");
	pool_writer_put(pool, db);
	return rv;
}
