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
    /* Each user's shell uid (MAGNETAR_TERMINAL_UIDS): kept for good, so a
     * uid is stable across restarts and never handed to another user. */
    "CREATE TABLE shell_uids ("
    " user_id TEXT PRIMARY KEY,"
    " uid INTEGER NOT NULL UNIQUE,"
    " created_ms INTEGER NOT NULL);",
};

const struct pool_schema store_schema = {store_migrations,
                                         sizeof(store_migrations) / sizeof(store_migrations[0])};

static int store_end(struct pool *pool, sqlite3 *db, int rv)
{
	if ((rv = pool_tx_end(pool, db, rv)) != 0)
		log_warnx("terminal store: transaction failed: %s", err_str(rv));
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
	if ((rv = pool_tx_begin(pool, &db)) != 0)
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

	if ((rv = pool_tx_begin(pool, &db)) != 0)
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

/* One integer from a one-row query with `user_id` (if non-NULL) and two
 * bounds bound; ERR_NOTFOUND when there is no row or it is NULL. */
static int store_one_int(sqlite3 *db, const char *sql, const char *user_id, sqlite3_int64 a,
                         sqlite3_int64 b, sqlite3_int64 *out)
{
	sqlite3_stmt *st;
	int rc, rv = ERR_NOTFOUND;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		return ERR_DB;
	if (user_id != NULL)
		sqlite3_bind_text(st, 1, user_id, -1, SQLITE_STATIC);
	else {
		sqlite3_bind_int64(st, 1, a);
		sqlite3_bind_int64(st, 2, b);
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
		*out = sqlite3_column_int64(st, 0);
		rv = 0;
	} else if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		rv = ERR_DB;
	sqlite3_finalize(st);
	return rv;
}

int store_shell_uid(struct pool *pool, const char *user_id, uid_t first, uid_t last, uid_t *uid)
{
	sqlite3_int64 v;
	sqlite3_stmt *st;
	sqlite3 *db;
	int rv;

	if ((rv = pool_tx_begin(pool, &db)) != 0)
		return rv;
	rv = store_one_int(db, "SELECT uid FROM shell_uids WHERE user_id = ?", user_id, 0, 0, &v);
	if (rv == 0) {
		if (v < (sqlite3_int64)first || v > (sqlite3_int64)last) {
			log_warnx("terminal: user %s has shell uid %lld, outside "
			          "MAGNETAR_TERMINAL_UIDS %u-%u: refused",
			          user_id, (long long)v, (unsigned)first, (unsigned)last);
			rv = ERR_NOTFOUND;
		}
		goto out;
	}
	if (rv != ERR_NOTFOUND)
		goto out;
	/* Ascending: the next after the highest given in the range. */
	rv = store_one_int(db, "SELECT max(uid) + 1 FROM shell_uids WHERE uid BETWEEN ? AND ?",
	                   NULL, (sqlite3_int64)first, (sqlite3_int64)last, &v);
	if (rv == ERR_NOTFOUND)
		v = (sqlite3_int64)first;
	else if (rv != 0)
		goto out;
	if (v > (sqlite3_int64)last) {
		log_warnx(
		    "terminal: MAGNETAR_TERMINAL_UIDS %u-%u is used up: user %s gets no shell",
		    (unsigned)first, (unsigned)last, user_id);
		rv = ERR_NOTFOUND;
		goto out;
	}
	if (sqlite3_prepare_v2(db,
	                       "INSERT INTO shell_uids(user_id, uid, created_ms) VALUES (?, ?, ?)",
	                       -1, &st, NULL) != SQLITE_OK) {
		rv = ERR_DB;
		goto out;
	}
	sqlite3_bind_text(st, 1, user_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, v);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)clock_unix_ms());
	if ((rv = store_step(st)) == 0)
		log_info("terminal: user %s has shell uid %lld", user_id, (long long)v);
out:
	if (rv == 0)
		*uid = (uid_t)v;
	/* A refusal changed nothing: commit or roll back alike. */
	return store_end(pool, db, rv == ERR_NOTFOUND ? 0 : rv) == 0 ? rv : ERR_DB;
}

int store_closed(struct pool *pool, const char *id, const char *user_id, const char *reason,
                 int exit_code)
{
	char detail[96];
	sqlite3_stmt *st;
	sqlite3 *db;
	int rv;

	if ((rv = pool_tx_begin(pool, &db)) != 0)
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
