/*
 * pool.h — one SQLite database per service: one writer connection and a
 * bounded set of readers.
 *
 * SQLite in WAL mode allows one writer and many concurrent readers, so the
 * pool hands out exactly that: the writer is exclusive (a mutex), readers
 * come from a free list grown on demand between `min_readers` and
 * `max_readers`. Every connection has journal_mode=WAL, foreign_keys=ON,
 * busy_timeout and synchronous=NORMAL. On checkout a connection is health
 * checked (it must be outside any transaction and answer `SELECT 1`) and
 * replaced if it fails or has outlived `max_lifetime_ms`. Migrations are
 * numbered (PRAGMA user_version) and run once, in order, at open.
 *
 * Who includes sqlite3.h, and why: common/pool.c; common/outbox.c (the
 * outbox's own tables, in the producer's database); common/fault.c (it
 * injects SQLite errors by their codes); each service's store.c;
 * gateway/store.c; and tools/magctl/backup.c (the online backup API). Every
 * other file sees `struct sqlite3` as an opaque pointer.
 */
#ifndef MAGNETAR_POOL_H
#define MAGNETAR_POOL_H

#include <stddef.h>
#include <stdint.h>

struct sqlite3;
struct pool;

struct pool_opts {
	int min_readers;          /* opened at start (default 2) */
	int max_readers;          /* never more (default 10) */
	int busy_timeout_ms;      /* default 5000 */
	uint64_t max_lifetime_ms; /* recycle older connections (default 1 h) */
	int checkout_timeout_ms;  /* wait for a free reader at most (default 5000) */
};

/*
 * Migrations: migrations[i] is the SQL (one or more statements) that moves
 * the schema from version i to i+1. Each runs in its own transaction with
 * user_version bumped in the same transaction, so a crash mid-way leaves
 * either the old or the new version, and re-opening is idempotent.
 */
struct pool_schema {
	const char *const *migrations;
	size_t count;
};

/* Opens (creating if needed, file mode 0600) `path`, applies the schema and
 * opens min_readers readers. opts may be NULL. 0 or ERR_DB/ERR_NOMEM/ERR_IO. */
int pool_open(const char *path, const struct pool_schema *schema, const struct pool_opts *opts,
              struct pool **out);

/* Waits until every checked-out connection is back, then closes them all
 * and frees. Accepts NULL. Further checkouts fail with ERR_CLOSED. */
void pool_close(struct pool *p);

/* The writer, exclusive until pool_writer_put. 0, ERR_CLOSED or ERR_DB. */
int pool_writer_get(struct pool *p, struct sqlite3 **db);
void pool_writer_put(struct pool *p, struct sqlite3 *db);

/*
 * The writer inside BEGIN IMMEDIATE: the one way a store starts a write
 * transaction. 0 with *db ours until pool_tx_end; on failure (ERR_CLOSED,
 * ERR_DB) nothing is held.
 */
int pool_tx_begin(struct pool *p, struct sqlite3 **db);
/*
 * Ends what pool_tx_begin began: COMMIT when rv is 0, else (or when the
 * commit fails) ROLLBACK; the writer goes back either way. Returns rv, or
 * ERR_DB when rv was 0 and the commit failed.
 */
int pool_tx_end(struct pool *p, struct sqlite3 *db, int rv);

/* A reader. Blocks up to checkout_timeout_ms when max_readers are out:
 * then ERR_TIMEOUT. 0, ERR_CLOSED, ERR_TIMEOUT or ERR_DB. */
int pool_reader_get(struct pool *p, struct sqlite3 **db);
void pool_reader_put(struct pool *p, struct sqlite3 *db);

/* Schema version now in the file. */
int pool_schema_version(struct pool *p);

struct pool_stats {
	uint64_t readers_open; /* now */
	uint64_t readers_out;  /* checked out now */
	uint64_t opened;       /* connections opened since start */
	uint64_t recycled;     /* closed for age */
	uint64_t replaced;     /* closed for a failed health check */
	uint64_t checkout_timeouts;
};
void pool_get_stats(struct pool *p, struct pool_stats *st);

#endif
