/*
 * store.c — terminal.db: a row per terminal (who, what, where, how it
 * ended) and the audit outbox, each change with its event in one
 * transaction. The only file of magnetar-terminal that includes sqlite3.h.
 */
#include <sqlite3.h>
#include <stdio.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/outbox.h"
#include "common/pool.h"
#include "services/terminal/terminal.h"

static const char *const store_migrations[] = {
    outbox_migration,
    "CREATE TABLE terminals ("
    " id TEXT PRIMARY KEY,"
    " user_id TEXT NOT NULL,"
    " shell TEXT NOT NULL,"
    " cwd TEXT NOT NULL,"
    " pid INTEGER NOT NULL,"
    " created_ms INTEGER NOT NULL,"
    " closed_ms INTEGER NOT NULL DEFAULT 0,"
    " close_reason TEXT NOT NULL DEFAULT '',"
    " exit_code INTEGER NOT NULL DEFAULT -1);"
    "CREATE INDEX terminals_user ON terminals(user_id, created_ms);",
    outbox_migration_slots,
};

const struct pool_schema store_schema = {store_migrations,
                                         sizeof(store_migrations) / sizeof(store_migrations[0])};

static int store_begin(struct pool *pool, sqlite3 **db)
{
	int rv;
	if ((rv = pool_writer_get(pool, db)) != 0)
		return rv;
	if (sqlite3_exec(*db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		pool_writer_put(pool, *db);
		return ERR_DB;
	}
	return 0;
}

static int store_end(struct pool *pool, sqlite3 *db, int rv)
{
	if (rv == 0 && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		rv = ERR_DB;
	if (rv != 0) {
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		log_warnx("terminal store: transaction failed: %s", err_str(rv));
	}
	pool_writer_put(pool, db);
	return rv;
}

static int store_event(sqlite3 *db, const char *action, const char *actor, const char *target,
                       const Magnetar__RequestContext *ctx, const char *outcome, const char *detail)
{
	struct outbox_event ev = {
	    .action = action,
	    .actor = actor,
	    .target = target,
	    .ip = ctx != NULL ? ctx->client_ip : NULL,
	    .request_id = ctx != NULL ? ctx->request_id : NULL,
	    .outcome = outcome,
	    .detail = detail,
	};
	return outbox_enqueue(db, &ev);
}

int store_audit(struct pool *pool, const char *action, const char *actor, const char *target,
                const Magnetar__RequestContext *ctx, const char *outcome, const char *detail)
{
	sqlite3 *db;
	int rv;
	if ((rv = store_begin(pool, &db)) != 0)
		return rv;
	return store_end(pool, db, store_event(db, action, actor, target, ctx, outcome, detail));
}

/* Runs one prepared statement that returns no row. */
static int store_step(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	if (rc != SQLITE_DONE)
		log_warnx("terminal store: %s", sqlite3_errmsg(sqlite3_db_handle(st)));
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : ERR_DB;
}

int store_opened(struct pool *pool, const struct session_info *s,
                 const Magnetar__RequestContext *ctx)
{
	char detail[PATH_MAX + TERMINAL_SHELL_MAX + 64];
	sqlite3_stmt *st;
	sqlite3 *db;
	int rv;

	if ((rv = store_begin(pool, &db)) != 0)
		return rv;
	if (sqlite3_prepare_v2(db,
	                       "INSERT INTO terminals(id, user_id, shell, cwd, pid, created_ms)"
	                       " VALUES (?, ?, ?, ?, ?, ?)",
	                       -1, &st, NULL) != SQLITE_OK) {
		rv = ERR_DB;
		goto out;
	}
	sqlite3_bind_text(st, 1, s->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, s->user_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, s->shell, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, s->cwd, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)s->pid);
	sqlite3_bind_int64(st, 6, (sqlite3_int64)s->created_ms);
	if ((rv = store_step(st)) != 0)
		goto out;
	snprintf(detail, sizeof(detail), "shell=%s cwd=%s size=%ux%u", s->shell, s->cwd, s->cols,
	         s->rows);
	rv = store_event(db, "terminal.opened", s->user_id, s->id, ctx, "success", detail);
out:
	return store_end(pool, db, rv);
}

int store_closed(struct pool *pool, const char *id, const char *user_id, const char *reason,
                 int exit_code)
{
	char detail[96];
	sqlite3_stmt *st;
	sqlite3 *db;
	int rv;

	if ((rv = store_begin(pool, &db)) != 0)
		return rv;
	if (sqlite3_prepare_v2(db,
	                       "UPDATE terminals SET closed_ms = ?, close_reason = ?, exit_code = ?"
	                       " WHERE id = ?",
	                       -1, &st, NULL) != SQLITE_OK) {
		rv = ERR_DB;
		goto out;
	}
	sqlite3_bind_int64(st, 1, (sqlite3_int64)clock_unix_ms());
	sqlite3_bind_text(st, 2, reason, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 3, exit_code);
	sqlite3_bind_text(st, 4, id, -1, SQLITE_STATIC);
	if ((rv = store_step(st)) != 0)
		goto out;
	snprintf(detail, sizeof(detail), "reason=%s exit_code=%d", reason, exit_code);
	rv = store_event(db, "terminal.closed", user_id, id, NULL, "success", detail);
out:
	return store_end(pool, db, rv);
}
