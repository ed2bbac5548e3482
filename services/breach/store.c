/*
 * store.c — breach.db: the audit outbox (migration 1) and the persisted
 * range cache (migration 2), so a restarted service starts warm. Rows are
 * the cache's own binary form; the in-memory cache (cache.c) stays the
 * authority on what is fresh, this table only refills it at start.
 */
#include <sqlite3.h>
#include <string.h>

#include "common/err.h"
#include "common/outbox.h"
#include "common/pool.h"
#include "services/breach/breach.h"

/* Rows beyond the cache's capacity are pruned every this many saves: the
 * prune is an ordered scan, too dear for every insert. */
#define STORE_PRUNE_EVERY 256

static const char *const store_migrations[] = {
    outbox_migration,
    "CREATE TABLE ranges ("
    " prefix INTEGER PRIMARY KEY,"  /* the 20-bit prefix */
    " fetched_ms INTEGER NOT NULL," /* unix ms of the fetch: the TTL runs from here */
    " n INTEGER NOT NULL,"
    " suffixes BLOB NOT NULL," /* n x 18 bytes */
    " counts BLOB NOT NULL);"  /* n x u32, host order */
    "CREATE INDEX ranges_fetched ON ranges(fetched_ms);",
    outbox_migration_slots,
};

const struct pool_schema store_schema = {store_migrations,
                                         sizeof(store_migrations) / sizeof(store_migrations[0])};

static int store_exec_prune(sqlite3 *db, uint64_t oldest_ms, uint32_t keep)
{
	static const char sql[] =
	    "DELETE FROM ranges WHERE fetched_ms < ?1 OR prefix IN"
	    " (SELECT prefix FROM ranges ORDER BY fetched_ms DESC LIMIT -1 OFFSET ?2)";
	sqlite3_stmt *st;
	int rv = ERR_DB;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		return ERR_DB;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)oldest_ms);
	sqlite3_bind_int64(st, 2, keep);
	if (sqlite3_step(st) == SQLITE_DONE)
		rv = 0;
	sqlite3_finalize(st);
	return rv;
}

int store_save_range(struct pool *pool, uint32_t prefix, const struct pairs *p, uint64_t fetched_ms,
                     uint64_t ttl_ms, uint32_t keep)
{
	static const char sql[] =
	    "INSERT OR REPLACE INTO ranges(prefix, fetched_ms, n, suffixes, counts)"
	    " VALUES (?, ?, ?, ?, ?)";
	static _Atomic uint32_t saves;
	sqlite3 *db;
	sqlite3_stmt *st = NULL;
	int rv;

	if ((rv = pool_writer_get(pool, &db)) != 0)
		return rv;
	rv = ERR_DB;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		goto fail;
	sqlite3_bind_int64(st, 1, prefix);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)fetched_ms);
	sqlite3_bind_int64(st, 3, p->n);
	/* zero-length blobs must still be non-NULL for NOT NULL */
	sqlite3_bind_blob(st, 4, p->n ? (const void *)p->suffixes : "",
	                  (int)(p->n * PAIRS_SUFFIX_LEN), SQLITE_STATIC);
	sqlite3_bind_blob(st, 5, p->n ? (const void *)p->counts : "",
	                  (int)(p->n * sizeof(uint32_t)), SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		goto fail;
	rv = 0;
	if (atomic_fetch_add(&saves, 1) % STORE_PRUNE_EVERY == STORE_PRUNE_EVERY - 1)
		rv = store_exec_prune(db, fetched_ms > ttl_ms ? fetched_ms - ttl_ms : 0, keep);
fail:
	sqlite3_finalize(st);
	pool_writer_put(pool, db);
	return rv;
}

int store_load_ranges(struct pool *pool, struct cache *cache, uint64_t now_ms, uint64_t ttl_ms,
                      uint32_t keep, uint32_t *loaded)
{
	/* newest `keep` rows, replayed oldest first so the newest end up at
	 * the head of the LRU list */
	static const char sql[] = "SELECT prefix, fetched_ms, n, suffixes, counts FROM"
	                          " (SELECT * FROM ranges ORDER BY fetched_ms DESC LIMIT ?)"
	                          " ORDER BY fetched_ms ASC";
	sqlite3 *db;
	sqlite3_stmt *st = NULL;
	int rv, step;

	*loaded = 0;
	if ((rv = pool_writer_get(pool, &db)) != 0)
		return rv;
	rv = ERR_DB;
	if (store_exec_prune(db, now_ms > ttl_ms ? now_ms - ttl_ms : 0, keep) != 0)
		goto fail;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		goto fail;
	sqlite3_bind_int64(st, 1, keep);
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		sqlite3_int64 prefix = sqlite3_column_int64(st, 0);
		sqlite3_int64 n = sqlite3_column_int64(st, 2);
		const void *suf = sqlite3_column_blob(st, 3);
		size_t sufn = (size_t)sqlite3_column_bytes(st, 3);
		const void *cnt = sqlite3_column_blob(st, 4);
		size_t cntn = (size_t)sqlite3_column_bytes(st, 4);
		struct pairs *p;

		/* a row that does not add up is skipped, not trusted */
		if (prefix < 0 || prefix > 0xfffff || n < 0 || n > PAIRS_MAX ||
		    sufn != (size_t)n * PAIRS_SUFFIX_LEN || cntn != (size_t)n * sizeof(uint32_t))
			continue;
		if ((p = pairs_new((uint32_t)n)) == NULL) {
			rv = ERR_NOMEM;
			goto fail;
		}
		if (n > 0) {
			memcpy(p->suffixes, suf, sufn);
			memcpy(p->counts, cnt, cntn);
		}
		cache_put(cache, (uint32_t)prefix, p, (uint64_t)sqlite3_column_int64(st, 1),
		          now_ms);
		pairs_unref(p);
		(*loaded)++;
	}
	if (step == SQLITE_DONE)
		rv = 0;
fail:
	sqlite3_finalize(st);
	pool_writer_put(pool, db);
	return rv;
}

int store_audit(struct pool *pool, const struct outbox_event *ev)
{
	sqlite3 *db;
	int rv;

	if ((rv = pool_writer_get(pool, &db)) != 0)
		return rv;
	rv = outbox_enqueue(db, ev);
	pool_writer_put(pool, db);
	return rv;
}
