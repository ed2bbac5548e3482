/*
 * store.c — auth.db: users, sessions, refresh tokens, and the audit outbox.
 * The only file of magnetar-auth that includes sqlite3.h. Every change
 * runs inside a store_tx on the writer, with its audit events enqueued in
 * the same transaction (docs/architecture.md, "Data").
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "common/outbox.h"
#include "common/pool.h"
#include "services/auth/auth.h"

static const char *const store_migrations[] = {
    outbox_migration,
    "CREATE TABLE users ("
    " id TEXT PRIMARY KEY,"
    " username TEXT NOT NULL UNIQUE," /* normalised: see tokens_normalise_username */
    " role TEXT NOT NULL CHECK (role IN ('founder', 'admin', 'member')),"
    " terminal INTEGER NOT NULL DEFAULT 0,"
    " totp_enabled INTEGER NOT NULL DEFAULT 0,"
    " password_hash TEXT NOT NULL,"
    " created_ms INTEGER NOT NULL);"
    "CREATE TABLE sessions ("
    " id TEXT PRIMARY KEY,"
    " user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    " created_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL,"
    " refreshed_ms INTEGER NOT NULL, revoked_ms INTEGER NOT NULL DEFAULT 0,"
    " ip TEXT NOT NULL, user_agent TEXT NOT NULL, fingerprint TEXT NOT NULL,"
    " risk_score INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX sessions_user ON sessions(user_id, created_ms);"
    "CREATE INDEX sessions_revoked ON sessions(revoked_ms);"
    "CREATE TABLE refresh_tokens ("
    " hash BLOB PRIMARY KEY," /* SHA-256 of the token: a leaked DB holds no token */
    " session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,"
    " created_ms INTEGER NOT NULL, spent_ms INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX refresh_session ON refresh_tokens(session_id);",
    /* Users are never removed: a deleted one keeps its sessions, revoked, so
     * a gateway that re-syncs still refuses them, and its name is not reused. */
    "ALTER TABLE users ADD COLUMN deleted_ms INTEGER NOT NULL DEFAULT 0;",
    /* A step-up re-binds a session to new client values (docs/api.md "Session risk"). */
    "ALTER TABLE sessions ADD COLUMN rebound_ms INTEGER NOT NULL DEFAULT 0;",
    /* TOTP secrets, sealed with the TOTP key (totp.c): never plaintext here. */
    "ALTER TABLE users ADD COLUMN totp_secret BLOB;"
    "ALTER TABLE users ADD COLUMN totp_pending BLOB;"
    "ALTER TABLE users ADD COLUMN totp_last_step INTEGER NOT NULL DEFAULT 0;",
    outbox_migration_slots,
    /* An app's services that may introspect tokens (clients.c): the secret
     * as an argon2id hash only. */
    "CREATE TABLE clients ("
    " name TEXT PRIMARY KEY,"
    " secret_hash TEXT NOT NULL,"
    " created_ms INTEGER NOT NULL, rotated_ms INTEGER NOT NULL);",
};

const struct pool_schema store_schema = {store_migrations,
                                         sizeof(store_migrations) / sizeof(store_migrations[0])};

struct store_tx {
	struct pool *pool;
	struct outbox *outbox;
	sqlite3 *db;
	bool audited; /* store_audit wrote to the outbox */
};

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
	sqlite3_bind_text(st, i, s != NULL ? s : "", -1, SQLITE_STATIC);
}

static void col_copy(sqlite3_stmt *st, int col, char *out, size_t cap)
{
	const unsigned char *t = sqlite3_column_text(st, col);
	snprintf(out, cap, "%s", t != NULL ? (const char *)t : "");
}

/* Prepares, binds nothing; ERR_DB on failure. */
static int prep(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
	if (sqlite3_prepare_v2(db, sql, -1, st, NULL) != SQLITE_OK) {
		log_warnx("auth store: prepare failed: %s", sqlite3_errmsg(db));
		return ERR_DB;
	}
	return 0;
}

/* Steps a statement that returns no row, finalises it. */
static int exec_done(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	if (rc != SQLITE_DONE && (rc & 0xff) != SQLITE_CONSTRAINT)
		log_warnx("auth store: %s", sqlite3_errmsg(sqlite3_db_handle(st)));
	sqlite3_finalize(st);
	if ((rc & 0xff) == SQLITE_CONSTRAINT) /* the pool enables extended codes */
		return ERR_EXISTS;
	return rc == SQLITE_DONE ? 0 : ERR_DB;
}

int store_begin(struct auth *a, struct store_tx **out)
{
	struct store_tx *tx = calloc(1, sizeof(*tx));
	int rv;
	if (tx == NULL)
		return ERR_NOMEM;
	tx->pool = a->svc.pool;
	tx->outbox = a->svc.outbox;
	if ((rv = pool_tx_begin(tx->pool, &tx->db)) != 0) {
		free(tx);
		return rv;
	}
	*out = tx;
	return 0;
}

int store_end(struct store_tx *tx, int rv)
{
	rv = pool_tx_end(tx->pool, tx->db, rv);
	if (rv == 0 && tx->audited)
		outbox_kick(tx->outbox);
	free(tx);
	return rv;
}

int store_audit(struct store_tx *tx, const char *action, const char *actor, const char *target,
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
	tx->audited = true;
	return outbox_enqueue(tx->db, &ev);
}

int store_user_insert(struct store_tx *tx, const struct store_user *u, const char *hash)
{
	sqlite3_stmt *st;
	int rv;
	if ((rv =
	         prep(tx->db,
	              "INSERT INTO users(id, username, role, terminal, totp_enabled, password_hash,"
	              " created_ms) VALUES (?, ?, ?, ?, 0, ?, ?)",
	              &st)) != 0)
		return rv;
	bind_text(st, 1, u->id);
	bind_text(st, 2, u->username);
	bind_text(st, 3, u->role);
	sqlite3_bind_int(st, 4, u->terminal);
	bind_text(st, 5, hash);
	sqlite3_bind_int64(st, 6, (sqlite3_int64)u->created_ms);
	return exec_done(st);
}

static const char user_cols[] =
    "SELECT id, username, role, terminal, totp_enabled, created_ms FROM users";

static void user_row(sqlite3_stmt *st, struct store_user *u)
{
	col_copy(st, 0, u->id, sizeof(u->id));
	col_copy(st, 1, u->username, sizeof(u->username));
	col_copy(st, 2, u->role, sizeof(u->role));
	u->terminal = sqlite3_column_int(st, 3) != 0;
	u->totp_enabled = sqlite3_column_int(st, 4) != 0;
	u->created_ms = (uint64_t)sqlite3_column_int64(st, 5);
}

static int user_by(struct pool *pool, const char *where, const char *key, struct store_user *u)
{
	char sql[256];
	sqlite3 *db;
	sqlite3_stmt *st;
	int rv, rc;

	snprintf(sql, sizeof(sql), "%s WHERE %s = ? AND deleted_ms = 0", user_cols, where);
	if ((rv = pool_reader_get(pool, &db)) != 0)
		return rv;
	if ((rv = prep(db, sql, &st)) == 0) {
		bind_text(st, 1, key);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			user_row(st, u);
		rv = rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? ERR_NOTFOUND : ERR_DB;
		sqlite3_finalize(st);
	}
	pool_reader_put(pool, db);
	return rv;
}

/* The one text column of the row `sql` selects by one key: a secret's hash,
 * copied into out. 0, ERR_NOTFOUND or ERR_DB. */
static int one_text(struct pool *pool, const char *sql, const char *key, char *out, size_t cap)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int rv, rc;

	if ((rv = pool_reader_get(pool, &db)) != 0)
		return rv;
	if ((rv = prep(db, sql, &st)) == 0) {
		bind_text(st, 1, key);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			col_copy(st, 0, out, cap);
		rv = rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? ERR_NOTFOUND : ERR_DB;
		sqlite3_finalize(st);
	}
	pool_reader_put(pool, db);
	return rv;
}

int store_user_password_hash(struct pool *pool, const char *id, char *out, size_t cap)
{
	return one_text(pool, "SELECT password_hash FROM users WHERE id = ? AND deleted_ms = 0", id,
	                out, cap);
}

int store_user_by_name(struct pool *pool, const char *username, struct store_user *u)
{
	return user_by(pool, "username", username, u);
}

int store_user_by_id(struct pool *pool, const char *id, struct store_user *u)
{
	return user_by(pool, "id", id, u);
}

int store_user_count(struct pool *pool, uint64_t *n)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int rv;
	if ((rv = pool_reader_get(pool, &db)) != 0)
		return rv;
	if ((rv = prep(db, "SELECT count(*) FROM users WHERE deleted_ms = 0", &st)) == 0) {
		rv = sqlite3_step(st) == SQLITE_ROW ? 0 : ERR_DB;
		*n = (uint64_t)sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
	}
	pool_reader_put(pool, db);
	return rv;
}

int store_session_insert(struct store_tx *tx, const struct store_session *s)
{
	sqlite3_stmt *st;
	int rv;
	if ((rv = prep(tx->db,
	               "INSERT INTO sessions(id, user_id, created_ms, last_seen_ms, refreshed_ms,"
	               " ip, user_agent, fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
	               &st)) != 0)
		return rv;
	bind_text(st, 1, s->id);
	bind_text(st, 2, s->user_id);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)s->created_ms);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)s->last_seen_ms);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)s->refreshed_ms);
	bind_text(st, 6, s->ip);
	bind_text(st, 7, s->user_agent);
	bind_text(st, 8, s->fingerprint);
	return exec_done(st);
}

#define STORE_SESSION_COLS                                                                         \
	"SELECT id, user_id, created_ms, last_seen_ms, refreshed_ms, revoked_ms, ip, user_agent,"  \
	" fingerprint, risk_score, rebound_ms"
static const char session_cols_only[] = STORE_SESSION_COLS;
static const char session_cols[] = STORE_SESSION_COLS " FROM sessions";

static void session_row(sqlite3_stmt *st, struct store_session *s)
{
	col_copy(st, 0, s->id, sizeof(s->id));
	col_copy(st, 1, s->user_id, sizeof(s->user_id));
	s->created_ms = (uint64_t)sqlite3_column_int64(st, 2);
	s->last_seen_ms = (uint64_t)sqlite3_column_int64(st, 3);
	s->refreshed_ms = (uint64_t)sqlite3_column_int64(st, 4);
	s->revoked_ms = (uint64_t)sqlite3_column_int64(st, 5);
	col_copy(st, 6, s->ip, sizeof(s->ip));
	col_copy(st, 7, s->user_agent, sizeof(s->user_agent));
	col_copy(st, 8, s->fingerprint, sizeof(s->fingerprint));
	s->risk_score = (uint32_t)sqlite3_column_int(st, 9);
	s->rebound_ms = (uint64_t)sqlite3_column_int64(st, 10);
}

static int session_get_db(sqlite3 *db, const char *id, struct store_session *s)
{
	char sql[256];
	sqlite3_stmt *st;
	int rv, rc;
	snprintf(sql, sizeof(sql), "%s WHERE id = ?", session_cols);
	if ((rv = prep(db, sql, &st)) != 0)
		return rv;
	bind_text(st, 1, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		session_row(st, s);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? ERR_NOTFOUND : ERR_DB;
}

int store_session_get(struct pool *pool, const char *id, struct store_session *s)
{
	sqlite3 *db;
	int rv;
	if ((rv = pool_reader_get(pool, &db)) != 0)
		return rv;
	rv = session_get_db(db, id, s);
	pool_reader_put(pool, db);
	return rv;
}

int store_session_get_tx(struct store_tx *tx, const char *id, struct store_session *s)
{
	return session_get_db(tx->db, id, s);
}

int store_session_touch(struct store_tx *tx, const char *id, uint64_t now_ms)
{
	sqlite3_stmt *st;
	int rv;
	if ((rv = prep(tx->db,
	               "UPDATE sessions SET refreshed_ms = ?1, last_seen_ms = ?1 WHERE id = ?2",
	               &st)) != 0)
		return rv;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)now_ms);
	bind_text(st, 2, id);
	return exec_done(st);
}

int store_session_revoke(struct store_tx *tx, const char *id, uint64_t now_ms)
{
	sqlite3_stmt *st;
	int rv;
	if ((rv = prep(tx->db, "UPDATE sessions SET revoked_ms = ? WHERE id = ? AND revoked_ms = 0",
	               &st)) != 0)
		return rv;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)now_ms);
	bind_text(st, 2, id);
	if ((rv = exec_done(st)) != 0)
		return rv;
	return sqlite3_changes(tx->db) == 1 ? 0 : ERR_NOTFOUND;
}

int store_sessions_of(struct pool *pool, struct store_tx *tx, const char *user_id, uint64_t now_ms,
                      struct store_session *out, int max)
{
	char sql[512];
	sqlite3 *db;
	sqlite3_stmt *st;
	int n = 0, rc, rv;

	snprintf(sql, sizeof(sql),
	         "%s WHERE user_id = ? AND revoked_ms = 0 AND refreshed_ms > ? AND created_ms > ?"
	         " ORDER BY created_ms, rowid LIMIT ?",
	         session_cols);
	if (tx != NULL)
		db = tx->db;
	else if ((rv = pool_reader_get(pool, &db)) != 0)
		return rv;
	if ((rv = prep(db, sql, &st)) == 0) {
		bind_text(st, 1, user_id);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)(now_ms - AUTH_IDLE_TTL_MS));
		sqlite3_bind_int64(st, 3, (sqlite3_int64)(now_ms - AUTH_ABSOLUTE_TTL_MS));
		sqlite3_bind_int(st, 4, max);
		while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < max)
			session_row(st, &out[n++]);
		rv = rc == SQLITE_DONE || rc == SQLITE_ROW ? n : ERR_DB;
		sqlite3_finalize(st);
	}
	if (tx == NULL)
		pool_reader_put(pool, db);
	return rv;
}

int store_refresh_insert(struct store_tx *tx, const unsigned char hash[32], const char *session_id,
                         uint64_t now_ms)
{
	sqlite3_stmt *st;
	int rv;
	if ((rv = prep(tx->db,
	               "INSERT INTO refresh_tokens(hash, session_id, created_ms) VALUES (?, ?, ?)",
	               &st)) != 0)
		return rv;
	sqlite3_bind_blob(st, 1, hash, 32, SQLITE_STATIC);
	bind_text(st, 2, session_id);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)now_ms);
	return exec_done(st);
}

int store_refresh_take(struct store_tx *tx, const unsigned char hash[32], char *session_id,
                       bool *spent, uint64_t now_ms)
{
	sqlite3_stmt *st;
	int rv, rc;

	if ((rv = prep(tx->db, "SELECT session_id, spent_ms FROM refresh_tokens WHERE hash = ?",
	               &st)) != 0)
		return rv;
	sqlite3_bind_blob(st, 1, hash, 32, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		col_copy(st, 0, session_id, AUTH_ID_LEN);
		*spent = sqlite3_column_int64(st, 1) != 0;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? ERR_NOTFOUND : ERR_DB;
	if (*spent)
		return 0;
	if ((rv = prep(tx->db, "UPDATE refresh_tokens SET spent_ms = ? WHERE hash = ?", &st)) != 0)
		return rv;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)now_ms);
	sqlite3_bind_blob(st, 2, hash, 32, SQLITE_STATIC);
	return exec_done(st);
}

int store_user_list(struct pool *pool, struct store_user *out, int max)
{
	char sql[256];
	sqlite3 *db;
	sqlite3_stmt *st;
	int n = 0, rc, rv;

	snprintf(sql, sizeof(sql), "%s WHERE deleted_ms = 0 ORDER BY created_ms, id LIMIT ?",
	         user_cols);
	if ((rv = pool_reader_get(pool, &db)) != 0)
		return rv;
	if ((rv = prep(db, sql, &st)) == 0) {
		sqlite3_bind_int(st, 1, max);
		while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < max)
			user_row(st, &out[n++]);
		rv = rc == SQLITE_DONE || rc == SQLITE_ROW ? n : ERR_DB;
		sqlite3_finalize(st);
	}
	pool_reader_put(pool, db);
	return rv;
}

int store_user_delete(struct store_tx *tx, const char *id, uint64_t now_ms)
{
	sqlite3_stmt *st;
	int rv;
	if ((rv = prep(tx->db, "UPDATE users SET deleted_ms = ? WHERE id = ? AND deleted_ms = 0",
	               &st)) != 0)
		return rv;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)now_ms);
	bind_text(st, 2, id);
	if ((rv = exec_done(st)) != 0)
		return rv;
	return sqlite3_changes(tx->db) == 1 ? 0 : ERR_NOTFOUND;
}

int store_user_set_password(struct store_tx *tx, const char *id, const char *hash)
{
	sqlite3_stmt *st;
	int rv;
	if ((rv = prep(tx->db, "UPDATE users SET password_hash = ? WHERE id = ?", &st)) != 0)
		return rv;
	bind_text(st, 1, hash);
	bind_text(st, 2, id);
	return exec_done(st);
}

int store_sessions_revoke_user(struct store_tx *tx, const char *user_id, uint64_t now_ms,
                               struct tokens_revoked *gone)
{
	sqlite3_stmt *st;
	int rv, rc;

	gone->n = 0;
	if ((rv = prep(tx->db,
	               "UPDATE sessions SET revoked_ms = ? WHERE user_id = ? AND revoked_ms = 0"
	               " RETURNING id",
	               &st)) != 0)
		return rv;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)now_ms);
	bind_text(st, 2, user_id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		if (gone->n < TOKENS_REVOKED_MAX)
			col_copy(st, 0, gone->ids[gone->n++], AUTH_ID_LEN);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : ERR_DB;
}

int store_session_risk(struct store_tx *tx, const char *id, uint32_t score)
{
	sqlite3_stmt *st;
	int rv;
	if ((rv = prep(tx->db, "UPDATE sessions SET risk_score = ? WHERE id = ?", &st)) != 0)
		return rv;
	sqlite3_bind_int(st, 1, (int)score);
	bind_text(st, 2, id);
	return exec_done(st);
}

int store_session_rebind(struct store_tx *tx, const struct store_session *s, uint64_t now_ms)
{
	sqlite3_stmt *st;
	int rv;
	if ((rv =
	         prep(tx->db,
	              "UPDATE sessions SET ip = ?, user_agent = ?, fingerprint = ?, risk_score = 0,"
	              " rebound_ms = ?, last_seen_ms = ? WHERE id = ? AND revoked_ms = 0",
	              &st)) != 0)
		return rv;
	bind_text(st, 1, s->ip);
	bind_text(st, 2, s->user_agent);
	bind_text(st, 3, s->fingerprint);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)now_ms);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)now_ms);
	bind_text(st, 6, s->id);
	if ((rv = exec_done(st)) != 0)
		return rv;
	return sqlite3_changes(tx->db) == 1 ? 0 : ERR_NOTFOUND;
}

int store_totp_get(struct pool *pool, const char *user_id, bool pending, unsigned char *blob,
                   size_t cap, size_t *len)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int rv, rc;

	if ((rv = pool_reader_get(pool, &db)) != 0)
		return rv;
	if ((rv = prep(db,
	               pending ? "SELECT totp_pending FROM users WHERE id = ? AND deleted_ms = 0"
	                       : "SELECT totp_secret FROM users WHERE id = ? AND deleted_ms = 0",
	               &st)) == 0) {
		bind_text(st, 1, user_id);
		rc = sqlite3_step(st);
		rv = ERR_NOTFOUND;
		if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_BLOB) {
			size_t n = (size_t)sqlite3_column_bytes(st, 0);
			if (n <= cap) {
				memcpy(blob, sqlite3_column_blob(st, 0), n);
				*len = n;
				rv = 0;
			}
		} else if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
			rv = ERR_DB;
		}
		sqlite3_finalize(st);
	}
	pool_reader_put(pool, db);
	return rv;
}

int store_totp_set(struct store_tx *tx, const char *user_id, enum store_totp_change what,
                   const unsigned char *blob, size_t len)
{
	static const char *const sql[] = {
	    [STORE_TOTP_PENDING] = "UPDATE users SET totp_pending = ? WHERE id = ?",
	    [STORE_TOTP_ENABLE] =
	        "UPDATE users SET totp_secret = totp_pending, totp_pending = NULL,"
	        " totp_enabled = 1 WHERE id = ? AND totp_pending IS NOT NULL",
	    [STORE_TOTP_DISABLE] = "UPDATE users SET totp_secret = NULL, totp_pending = NULL,"
	                           " totp_enabled = 0 WHERE id = ?",
	};
	sqlite3_stmt *st;
	int rv, i = 1;

	if ((rv = prep(tx->db, sql[what], &st)) != 0)
		return rv;
	if (what == STORE_TOTP_PENDING)
		sqlite3_bind_blob(st, i++, blob, (int)len, SQLITE_STATIC);
	bind_text(st, i, user_id);
	if ((rv = exec_done(st)) != 0)
		return rv;
	return sqlite3_changes(tx->db) == 1 ? 0 : ERR_NOTFOUND;
}

int store_totp_use_step(struct store_tx *tx, const char *user_id, uint64_t step)
{
	sqlite3_stmt *st;
	int rv;
	/* Atomic: only one request can move the counter past a given step. */
	if ((rv = prep(tx->db,
	               "UPDATE users SET totp_last_step = ? WHERE id = ? AND totp_last_step < ?",
	               &st)) != 0)
		return rv;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)step);
	bind_text(st, 2, user_id);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)step);
	if ((rv = exec_done(st)) != 0)
		return rv;
	return sqlite3_changes(tx->db) == 1 ? 0 : ERR_EXISTS;
}

int store_user_set_role(struct store_tx *tx, const char *id, const char *role, int terminal)
{
	sqlite3_stmt *st;
	int rv;
	if ((rv = prep(tx->db,
	               "UPDATE users SET role = coalesce(nullif(?, ''), role),"
	               " terminal = CASE WHEN ? < 0 THEN terminal ELSE ? END"
	               " WHERE id = ? AND deleted_ms = 0",
	               &st)) != 0)
		return rv;
	bind_text(st, 1, role);
	sqlite3_bind_int(st, 2, terminal);
	sqlite3_bind_int(st, 3, terminal);
	bind_text(st, 4, id);
	if ((rv = exec_done(st)) != 0)
		return rv;
	return sqlite3_changes(tx->db) == 1 ? 0 : ERR_NOTFOUND;
}

int store_revoked_page(struct pool *pool, uint64_t since_ms, const char *after,
                       struct store_session *out, bool *rebound, int max)
{
	char sql[512];
	sqlite3 *db;
	sqlite3_stmt *st;
	int n = 0, rc, rv;

	/* In id order from `after`: the primary key walks each row once over
	 * all the pages, however many there are. */
	snprintf(sql, sizeof(sql),
	         "%s FROM sessions WHERE (revoked_ms > 0 OR rebound_ms > 0) AND"
	         " created_ms > ? AND id > ? ORDER BY id LIMIT ?",
	         session_cols_only);
	if ((rv = pool_reader_get(pool, &db)) != 0)
		return rv;
	if ((rv = prep(db, sql, &st)) == 0) {
		sqlite3_bind_int64(st, 1, (sqlite3_int64)since_ms);
		bind_text(st, 2, after);
		sqlite3_bind_int(st, 3, max);
		while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < max) {
			session_row(st, &out[n]);
			rebound[n] = out[n].revoked_ms == 0 && out[n].rebound_ms > 0;
			n++;
		}
		rv = rc == SQLITE_DONE || rc == SQLITE_ROW ? n : ERR_DB;
		sqlite3_finalize(st);
	}
	pool_reader_put(pool, db);
	return rv;
}

/* ---- clients: the callers of Introspect ------------------------------------ */

int store_client_secret_hash(struct pool *pool, const char *name, char *out, size_t cap)
{
	return one_text(pool, "SELECT secret_hash FROM clients WHERE name = ?", name, out, cap);
}

int store_client_put(struct store_tx *tx, const char *name, const char *hash, bool create,
                     uint64_t now_ms)
{
	sqlite3_stmt *st;
	int rv;
	if ((rv = prep(tx->db,
	               create ? "INSERT INTO clients(secret_hash, rotated_ms, created_ms, name)"
	                        " VALUES (?1, ?2, ?3, ?4)"
	                      : "UPDATE clients SET secret_hash = ?1, rotated_ms = ?2"
	                        " WHERE name = ?4",
	               &st)) != 0)
		return rv;
	bind_text(st, 1, hash);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)now_ms);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)now_ms);
	bind_text(st, 4, name);
	if ((rv = exec_done(st)) == 0 && sqlite3_changes(tx->db) == 0)
		rv = ERR_NOTFOUND;
	return rv;
}

int store_client_delete(struct store_tx *tx, const char *name)
{
	sqlite3_stmt *st;
	int rv;
	if ((rv = prep(tx->db, "DELETE FROM clients WHERE name = ?", &st)) != 0)
		return rv;
	bind_text(st, 1, name);
	if ((rv = exec_done(st)) == 0 && sqlite3_changes(tx->db) == 0)
		rv = ERR_NOTFOUND;
	return rv;
}

int store_client_list(struct pool *pool, struct store_client *out, int max)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int n = 0, rc, rv;

	if ((rv = pool_reader_get(pool, &db)) != 0)
		return rv;
	if ((rv = prep(db, "SELECT name, created_ms, rotated_ms FROM clients ORDER BY name LIMIT ?",
	               &st)) == 0) {
		sqlite3_bind_int(st, 1, max);
		while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < max) {
			col_copy(st, 0, out[n].name, sizeof(out[n].name));
			out[n].created_ms = (uint64_t)sqlite3_column_int64(st, 1);
			out[n].rotated_ms = (uint64_t)sqlite3_column_int64(st, 2);
			n++;
		}
		rv = rc == SQLITE_DONE || rc == SQLITE_ROW ? n : ERR_DB;
		sqlite3_finalize(st);
	}
	pool_reader_put(pool, db);
	return rv;
}
