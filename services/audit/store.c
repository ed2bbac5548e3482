/*
 * store.c — audit.db: the events table and its de-duplication key.
 * The UNIQUE (source, instance, seq) constraint is what makes outbox
 * re-sends harmless: INSERT OR IGNORE stores an event at most once.
 */
#include <sqlite3.h>
#include <string.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/pool.h"
#include "services/audit/audit.h"

static const char *const store_migrations[] = {
    "CREATE TABLE events ("
    " id INTEGER PRIMARY KEY,"
    " source TEXT NOT NULL,"   /* authenticated producer identity */
    " producer TEXT NOT NULL," /* the service name the producer claims */
    " instance TEXT NOT NULL,"
    " seq INTEGER NOT NULL,"
    " time_ms INTEGER NOT NULL,"
    " received_ms INTEGER NOT NULL,"
    " action TEXT NOT NULL, actor TEXT NOT NULL, target TEXT NOT NULL, ip TEXT NOT NULL,"
    " request_id TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL,"
    " UNIQUE (source, instance, seq));",
};

const struct pool_schema store_schema = {store_migrations,
                                         sizeof(store_migrations) / sizeof(store_migrations[0])};

static void store_bind(sqlite3_stmt *st, int i, const char *s)
{
	sqlite3_bind_text(st, i, s != NULL ? s : "", -1, SQLITE_STATIC);
}

int store_append(struct pool *pool, const char *source, const char *producer, const char *instance,
                 Magnetar__AuditEvent *const *events, size_t n, uint32_t *stored,
                 uint32_t *duplicates)
{
	static const char sql[] =
	    "INSERT OR IGNORE INTO events(source, producer, instance, seq, time_ms, received_ms,"
	    " action, actor, target, ip, request_id, outcome, detail)"
	    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
	sqlite3 *db;
	sqlite3_stmt *st = NULL;
	uint32_t added = 0;
	uint64_t now = clock_unix_ms();
	int rv;

	if ((rv = pool_writer_get(pool, &db)) != 0)
		return rv;
	rv = ERR_DB;
	if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		goto out;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		goto rollback;
	for (size_t i = 0; i < n; i++) {
		const Magnetar__AuditEvent *e = events[i];
		sqlite3_reset(st);
		store_bind(st, 1, source);
		store_bind(st, 2, producer);
		store_bind(st, 3, instance);
		sqlite3_bind_int64(st, 4, (sqlite3_int64)e->sequence);
		sqlite3_bind_int64(st, 5, (sqlite3_int64)e->time_unix_ms);
		sqlite3_bind_int64(st, 6, (sqlite3_int64)now);
		store_bind(st, 7, e->action);
		store_bind(st, 8, e->actor);
		store_bind(st, 9, e->target);
		store_bind(st, 10, e->ip);
		store_bind(st, 11, e->request_id);
		store_bind(st, 12, e->outcome);
		store_bind(st, 13, e->detail);
		if (sqlite3_step(st) != SQLITE_DONE)
			goto rollback;
		added += (uint32_t)sqlite3_changes(db);
	}
	if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		goto rollback;
	*stored = added;
	*duplicates = (uint32_t)n - added;
	rv = 0;
	goto out;
rollback:
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
out:
	sqlite3_finalize(st);
	pool_writer_put(pool, db);
	return rv;
}

int store_count(struct pool *pool, uint64_t *count)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int rv;

	if ((rv = pool_reader_get(pool, &db)) != 0)
		return rv;
	rv = ERR_DB;
	if (sqlite3_prepare_v2(db, "SELECT count(*) FROM events", -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW) {
			*count = (uint64_t)sqlite3_column_int64(st, 0);
			rv = 0;
		}
		sqlite3_finalize(st);
	}
	pool_reader_put(pool, db);
	return rv;
}
