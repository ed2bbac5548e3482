/*
 * store.c — gateway.db: the audit outbox (the gateway records its own
 * security events through it) and the Idempotency-Key records (idem.c).
 * The only file of magnetar-gateway that includes sqlite3.h.
 */
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "common/outbox.h"
#include "common/pool.h"
#include "gateway/gateway.h"

static const char *const store_migrations[] = {
    outbox_migration,
    /* Idempotency keys (issue 6). `id` is a keyed hash of the caller's scope
     * and the key, `body_mac` one of the request: neither the caller, the
     * key nor the body is kept in clear. state 0 = running, 1 = answered. */
    "CREATE TABLE idempotency ("
    " id BLOB PRIMARY KEY,"
    " body_mac BLOB NOT NULL,"
    " state INTEGER NOT NULL DEFAULT 0,"
    " status INTEGER NOT NULL DEFAULT 0,"
    " response BLOB,"
    " expires_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX idempotency_expires ON idempotency(expires_ms);",
    outbox_migration_slots,
};

const struct pool_schema store_schema = {store_migrations,
                                         sizeof(store_migrations) / sizeof(store_migrations[0])};

/* Runs `sql` with (id) bound, or (now) when id is NULL, on the writer. */
static int store_exec1(struct pool *p, const char *sql, const uint8_t *id, int64_t now)
{
	sqlite3 *db;
	sqlite3_stmt *st = NULL;
	int rv;

	if ((rv = pool_writer_get(p, &db)) != 0)
		return rv;
	rv = ERR_DB;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		goto fail;
	if (id != NULL)
		sqlite3_bind_blob(st, 1, id, STORE_IDEM_ID_LEN, SQLITE_STATIC);
	else
		sqlite3_bind_int64(st, 1, now);
	if (sqlite3_step(st) == SQLITE_DONE)
		rv = 0;
fail:
	if (rv != 0)
		log_warnx("gateway store: %s", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	pool_writer_put(p, db);
	return rv;
}

int store_idem_claim(struct pool *p, const uint8_t id[STORE_IDEM_ID_LEN],
                     const uint8_t mac[STORE_IDEM_ID_LEN], uint64_t now_ms, uint64_t ttl_ms,
                     struct store_idem *out)
{
	sqlite3 *db;
	sqlite3_stmt *st = NULL;
	int rv, step;

	memset(out, 0, sizeof(*out));
	/* One transaction: of two requests with one key, exactly one inserts. */
	if ((rv = pool_tx_begin(p, &db)) != 0)
		return rv;
	rv = ERR_DB;
	if (sqlite3_prepare_v2(db,
	                       "SELECT body_mac, state, status, response FROM idempotency"
	                       " WHERE id = ?1 AND expires_ms > ?2",
	                       -1, &st, NULL) != SQLITE_OK)
		goto fail;
	sqlite3_bind_blob(st, 1, id, STORE_IDEM_ID_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (int64_t)now_ms);
	step = sqlite3_step(st);
	if (step == SQLITE_ROW) {
		const void *m = sqlite3_column_blob(st, 0);
		if (sqlite3_column_bytes(st, 0) != STORE_IDEM_ID_LEN || m == NULL ||
		    memcmp(m, mac, STORE_IDEM_ID_LEN) != 0)
			out->outcome = STORE_IDEM_MISMATCH;
		else if (sqlite3_column_int(st, 1) == 0)
			out->outcome = STORE_IDEM_RUNNING;
		else {
			const void *body = sqlite3_column_blob(st, 3);
			int n = sqlite3_column_bytes(st, 3);
			out->outcome = STORE_IDEM_DONE;
			out->status = (unsigned)sqlite3_column_int(st, 2);
			if ((out->body = malloc((size_t)n + 1)) == NULL) {
				rv = ERR_NOMEM;
				goto fail;
			}
			if (n > 0)
				memcpy(out->body, body, (size_t)n);
			out->body[n] = '\0';
			out->len = (size_t)n;
		}
	} else if (step == SQLITE_DONE) {
		sqlite3_finalize(st);
		st = NULL;
		/* Absent or expired: ours now. */
		if (sqlite3_prepare_v2(db,
		                       "INSERT OR REPLACE INTO idempotency (id, body_mac, state,"
		                       " expires_ms) VALUES (?1, ?2, 0, ?3)",
		                       -1, &st, NULL) != SQLITE_OK)
			goto fail;
		sqlite3_bind_blob(st, 1, id, STORE_IDEM_ID_LEN, SQLITE_STATIC);
		sqlite3_bind_blob(st, 2, mac, STORE_IDEM_ID_LEN, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, (int64_t)(now_ms + ttl_ms));
		if (sqlite3_step(st) != SQLITE_DONE)
			goto fail;
		out->outcome = STORE_IDEM_CLAIMED;
	} else
		goto fail;
	sqlite3_finalize(st);
	if ((rv = pool_tx_end(p, db, 0)) == 0)
		return 0;
	free(out->body);
	out->body = NULL;
	return rv;
fail:
	if (rv == ERR_DB)
		log_warnx("gateway store: idempotency: %s", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	pool_tx_end(p, db, rv);
	free(out->body);
	out->body = NULL;
	return rv;
}

int store_idem_complete(struct pool *p, const uint8_t id[STORE_IDEM_ID_LEN], unsigned status,
                        const char *body, size_t len)
{
	sqlite3 *db;
	sqlite3_stmt *st = NULL;
	int rv;

	if ((rv = pool_writer_get(p, &db)) != 0)
		return rv;
	rv = ERR_DB;
	if (sqlite3_prepare_v2(db,
	                       "UPDATE idempotency SET state = 1, status = ?2, response = ?3"
	                       " WHERE id = ?1",
	                       -1, &st, NULL) != SQLITE_OK)
		goto fail;
	sqlite3_bind_blob(st, 1, id, STORE_IDEM_ID_LEN, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, (int)status);
	sqlite3_bind_blob(st, 3, body != NULL ? body : "", (int)len, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_DONE)
		rv = 0;
fail:
	if (rv != 0)
		log_warnx("gateway store: idempotency: %s", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	pool_writer_put(p, db);
	return rv;
}

int store_idem_release(struct pool *p, const uint8_t id[STORE_IDEM_ID_LEN])
{
	return store_exec1(p, "DELETE FROM idempotency WHERE id = ?1", id, 0);
}

int store_idem_purge(struct pool *p, uint64_t now_ms)
{
	return store_exec1(p, "DELETE FROM idempotency WHERE expires_ms <= ?1", NULL,
	                   (int64_t)now_ms);
}

int store_idem_reset(struct pool *p, uint64_t now_ms)
{
	/* Rows still running were an earlier process's: nobody will finish them. */
	return store_exec1(p, "DELETE FROM idempotency WHERE state = 0 OR expires_ms <= ?1", NULL,
	                   (int64_t)now_ms);
}
