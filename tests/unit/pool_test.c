/*
 * pool_test.c — common/pool.c against a real SQLite file in a temporary
 * directory: migrations, reader/writer concurrency, checkout timeouts,
 * recycling, health checks, pool_close draining and the file's mode.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/pool.h"

/* A per-connection setting that is not stored in the file: a connection
 * that still has it is the same connection, one without it is new. Pointer
 * comparison cannot tell, as malloc may reuse a closed handle's address. */
#define MARK_CACHE_SIZE (-1234)

struct tmp {
	char dir[64];
	char path[128];
};

static void tmp_make(struct tmp *t)
{
	snprintf(t->dir, sizeof(t->dir), "/tmp/pool_test.XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	snprintf(t->path, sizeof(t->path), "%s/test.db", t->dir);
}

static void tmp_remove(struct tmp *t)
{
	static const char *const suffix[] = {"", "-wal", "-shm", "-journal"};
	char f[160];

	for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
		snprintf(f, sizeof(f), "%s%s", t->path, suffix[i]);
		unlink(f);
	}
	assert_int_equal(rmdir(t->dir), 0);
}

static int db_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	int v;

	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

static void db_mark(sqlite3 *db)
{
	char sql[64];

	snprintf(sql, sizeof(sql), "PRAGMA cache_size=%d", MARK_CACHE_SIZE);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(db_int(db, "PRAGMA cache_size"), MARK_CACHE_SIZE);
}

static bool db_marked(sqlite3 *db)
{
	return db_int(db, "PRAGMA cache_size") == MARK_CACHE_SIZE;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ---- migrations ---------------------------------------------------------- */

/* Each step appends its number, so a step that ran twice or out of order
 * shows in the list. */
static const char *const steps[] = {
    "CREATE TABLE applied(step INTEGER NOT NULL); INSERT INTO applied VALUES (1)",
    "INSERT INTO applied VALUES (2)",
    "INSERT INTO applied VALUES (3)",
};

static void expect_applied(struct pool *p, const char *want)
{
	sqlite3_stmt *st;
	sqlite3 *db;

	assert_int_equal(pool_reader_get(p, &db), 0);
	assert_int_equal(sqlite3_prepare_v2(db,
	                                    "SELECT group_concat(step, ',') FROM "
	                                    "(SELECT step FROM applied ORDER BY rowid)",
	                                    -1, &st, NULL),
	                 SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), want);
	sqlite3_finalize(st);
	assert_int_equal(db_int(db, "PRAGMA user_version"), pool_schema_version(p));
	pool_reader_put(p, db);
}

static void test_migrations_in_order_and_idempotent(void **state)
{
	const struct pool_schema two = {steps, 2}, three = {steps, 3};
	struct pool_stats st;
	struct pool *p;
	struct tmp t;

	(void)state;
	tmp_make(&t);

	assert_int_equal(pool_open(t.path, &two, NULL, &p), 0);
	assert_int_equal(pool_schema_version(p), 2);
	expect_applied(p, "1,2");
	pool_get_stats(p, &st);
	assert_int_equal(st.readers_open, 2); /* default min_readers */
	assert_int_equal(st.opened, 3);       /* + the writer */
	pool_close(p);

	/* Same schema again: nothing re-runs. */
	assert_int_equal(pool_open(t.path, &two, NULL, &p), 0);
	assert_int_equal(pool_schema_version(p), 2);
	expect_applied(p, "1,2");
	pool_close(p);

	/* One more step: only that one runs. */
	assert_int_equal(pool_open(t.path, &three, NULL, &p), 0);
	assert_int_equal(pool_schema_version(p), 3);
	expect_applied(p, "1,2,3");
	pool_close(p);

	assert_int_equal(pool_open(t.path, &three, NULL, &p), 0);
	expect_applied(p, "1,2,3");
	pool_close(p);

	/* The file is now newer than a build that knows two steps, or none. */
	p = NULL;
	assert_int_equal(pool_open(t.path, &two, NULL, &p), ERR_DB);
	assert_null(p);
	assert_int_equal(pool_open(t.path, NULL, NULL, &p), ERR_DB);
	assert_null(p);

	/* Refusing did not touch the file. */
	assert_int_equal(pool_open(t.path, &three, NULL, &p), 0);
	expect_applied(p, "1,2,3");
	pool_close(p);
	tmp_remove(&t);
}

static void test_failed_migration_rolls_back(void **state)
{
	static const char *const broken[] = {
	    "CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (1)",
	    "INSERT INTO t VALUES (2); INSERT INTO no_such_table VALUES (1)",
	};
	static const char *const self_commit[] = {
	    "CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (1)",
	    "INSERT INTO t VALUES (3); COMMIT",
	};
	const struct pool_schema one = {broken, 1}, bad = {broken, 2}, commits = {self_commit, 2};
	struct pool *p = NULL;
	sqlite3 *db;
	struct tmp t;

	(void)state;
	tmp_make(&t);

	/* Step 1 commits, step 2 fails half-way and leaves nothing behind. */
	assert_int_equal(pool_open(t.path, &bad, NULL, &p), ERR_DB);
	assert_null(p);
	assert_int_equal(pool_open(t.path, &one, NULL, &p), 0);
	assert_int_equal(pool_schema_version(p), 1);
	assert_int_equal(pool_reader_get(p, &db), 0);
	assert_int_equal(db_int(db, "SELECT count(*) FROM t"), 1);
	pool_reader_put(p, db);
	pool_close(p);

	/* A step that commits by itself would split its changes from the
	 * version bump: refused, and the version stays. */
	p = NULL;
	assert_int_equal(pool_open(t.path, &commits, NULL, &p), ERR_DB);
	assert_null(p);
	assert_int_equal(pool_open(t.path, &one, NULL, &p), 0);
	assert_int_equal(pool_schema_version(p), 1);
	pool_close(p);
	tmp_remove(&t);
}

/* ---- concurrency --------------------------------------------------------- */

#define RACE_OPENERS 4

struct race {
	const char *path;
	pthread_barrier_t start;
	atomic_int failures;
};

static void *race_open(void *arg)
{
	const struct pool_schema three = {steps, 3};
	struct race *r = arg;
	struct pool *p;

	pthread_barrier_wait(&r->start);
	if (pool_open(r->path, &three, NULL, &p) != 0) {
		atomic_fetch_add(&r->failures, 1);
		return NULL;
	}
	if (pool_schema_version(p) != 3)
		atomic_fetch_add(&r->failures, 1);
	pool_close(p);
	return NULL;
}

/* Pools opening one new file at once (a restart overlapping the old
 * process): the version is re-read under the write lock, so each step runs
 * exactly once and nobody fails. */
static void test_concurrent_opens_migrate_once(void **state)
{
	const struct pool_schema three = {steps, 3};
	pthread_t th[RACE_OPENERS];
	struct race r = {0};
	struct pool *p;
	struct tmp t;

	(void)state;
	tmp_make(&t);
	r.path = t.path;
	pthread_barrier_init(&r.start, NULL, RACE_OPENERS);
	for (int i = 0; i < RACE_OPENERS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, race_open, &r), 0);
	for (int i = 0; i < RACE_OPENERS; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&r.start);
	assert_int_equal(atomic_load(&r.failures), 0);

	assert_int_equal(pool_open(t.path, &three, NULL, &p), 0);
	expect_applied(p, "1,2,3");
	pool_close(p);
	tmp_remove(&t);
}

#define CONC_WRITERS 2
#define CONC_READERS 4
#define CONC_MAX_READERS 2
#define CONC_TXNS 40
#define CONC_ROWS 10

struct conc {
	struct pool *p;
	atomic_int readers_out, readers_max;
	atomic_int writers_in, writers_max;
	atomic_int writers_done;
	atomic_int errors;
	atomic_long reads;
};

static void atomic_max(atomic_int *max, int v)
{
	int cur = atomic_load(max);
	while (v > cur && !atomic_compare_exchange_weak(max, &cur, v))
		;
}

static void *conc_writer(void *arg)
{
	struct conc *c = arg;
	sqlite3 *db;

	for (int i = 0; i < CONC_TXNS; i++) {
		if (pool_writer_get(c->p, &db) != 0) {
			atomic_fetch_add(&c->errors, 1);
			break;
		}
		atomic_max(&c->writers_max, atomic_fetch_add(&c->writers_in, 1) + 1);
		if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
			atomic_fetch_add(&c->errors, 1);
		for (int r = 0; r < CONC_ROWS; r++) {
			if (sqlite3_exec(db, "INSERT INTO items(v) VALUES (randomblob(32))", NULL,
			                 NULL, NULL) != SQLITE_OK)
				atomic_fetch_add(&c->errors, 1);
			/* Readers must not see this half-done transaction. */
			if (r == CONC_ROWS / 2)
				usleep(200);
		}
		if (sqlite3_exec(db, "UPDATE counter SET n = n + 10; COMMIT", NULL, NULL, NULL) !=
		    SQLITE_OK)
			atomic_fetch_add(&c->errors, 1);
		atomic_fetch_sub(&c->writers_in, 1);
		pool_writer_put(c->p, db);
	}
	atomic_fetch_add(&c->writers_done, 1);
	return NULL;
}

static void *conc_reader(void *arg)
{
	struct conc *c = arg;
	int last = 0;

	for (int i = 0; i < 50 || atomic_load(&c->writers_done) < CONC_WRITERS; i++) {
		sqlite3_stmt *st;
		sqlite3 *db;
		int rows, n;

		if (pool_reader_get(c->p, &db) != 0) {
			atomic_fetch_add(&c->errors, 1);
			break;
		}
		atomic_max(&c->readers_max, atomic_fetch_add(&c->readers_out, 1) + 1);
		/* Both counts in one statement: one snapshot. */
		if (sqlite3_prepare_v2(
		        db, "SELECT (SELECT count(*) FROM items), (SELECT n FROM counter)", -1, &st,
		        NULL) != SQLITE_OK ||
		    sqlite3_step(st) != SQLITE_ROW) {
			atomic_fetch_add(&c->errors, 1);
		} else {
			rows = sqlite3_column_int(st, 0);
			n = sqlite3_column_int(st, 1);
			if (rows != n || rows % CONC_ROWS != 0 || rows < last)
				atomic_fetch_add(&c->errors, 1);
			last = rows;
		}
		sqlite3_finalize(st);
		usleep(100); /* overlap with the other readers */
		atomic_fetch_sub(&c->readers_out, 1);
		pool_reader_put(c->p, db);
		atomic_fetch_add(&c->reads, 1);
	}
	return NULL;
}

static void test_concurrent_readers_and_writers(void **state)
{
	static const char *const schema_sql[] = {
	    "CREATE TABLE items(id INTEGER PRIMARY KEY, v BLOB NOT NULL);"
	    "CREATE TABLE counter(n INTEGER NOT NULL); INSERT INTO counter VALUES (0)",
	};
	const struct pool_schema schema = {schema_sql, 1};
	const struct pool_opts opts = {.min_readers = 1, .max_readers = CONC_MAX_READERS};
	pthread_t w[CONC_WRITERS], r[CONC_READERS];
	struct conc c = {0};
	struct pool_stats st;
	sqlite3 *db;
	struct tmp t;

	(void)state;
	tmp_make(&t);
	assert_int_equal(pool_open(t.path, &schema, &opts, &c.p), 0);
	for (int i = 0; i < CONC_READERS; i++)
		assert_int_equal(pthread_create(&r[i], NULL, conc_reader, &c), 0);
	for (int i = 0; i < CONC_WRITERS; i++)
		assert_int_equal(pthread_create(&w[i], NULL, conc_writer, &c), 0);
	for (int i = 0; i < CONC_WRITERS; i++)
		pthread_join(w[i], NULL);
	for (int i = 0; i < CONC_READERS; i++)
		pthread_join(r[i], NULL);

	assert_int_equal(atomic_load(&c.errors), 0);
	assert_int_equal(atomic_load(&c.writers_max), 1);
	assert_true(atomic_load(&c.readers_max) <= CONC_MAX_READERS);
	assert_true(atomic_load(&c.reads) >= 50 * CONC_READERS);

	pool_get_stats(c.p, &st);
	assert_int_equal(st.readers_out, 0);
	assert_true(st.readers_open >= 1 && st.readers_open <= CONC_MAX_READERS);
	assert_int_equal(st.checkout_timeouts, 0);
	assert_int_equal(st.replaced, 0);

	assert_int_equal(pool_reader_get(c.p, &db), 0);
	assert_int_equal(db_int(db, "SELECT count(*) FROM items"),
	                 CONC_WRITERS * CONC_TXNS * CONC_ROWS);
	pool_reader_put(c.p, db);
	pool_close(c.p);
	tmp_remove(&t);
}

static void test_checkout_timeout(void **state)
{
	const struct pool_opts opts = {
	    .min_readers = 1, .max_readers = 2, .checkout_timeout_ms = 50};
	sqlite3 *a, *b, *c, *w;
	struct pool_stats st;
	struct pool *p;
	uint64_t t0, took;
	struct tmp t;

	(void)state;
	tmp_make(&t);
	assert_int_equal(pool_open(t.path, NULL, &opts, &p), 0);
	assert_int_equal(pool_reader_get(p, &a), 0);
	assert_int_equal(pool_reader_get(p, &b), 0); /* opened on demand */
	assert_ptr_not_equal(a, b);

	t0 = clock_mono_ms();
	assert_int_equal(pool_reader_get(p, &c), ERR_TIMEOUT);
	took = clock_mono_ms() - t0;
	assert_true(took >= 45 && took < 2000);
	pool_get_stats(p, &st);
	assert_int_equal(st.checkout_timeouts, 1);
	assert_int_equal(st.readers_out, 2);
	assert_int_equal(st.readers_open, 2);

	/* Readers being out does not hold up the writer. */
	assert_int_equal(pool_writer_get(p, &w), 0);
	pool_writer_put(p, w);

	pool_reader_put(p, a);
	assert_int_equal(pool_reader_get(p, &c), 0);
	pool_reader_put(p, b);
	pool_reader_put(p, c);
	pool_get_stats(p, &st);
	assert_int_equal(st.readers_out, 0);
	pool_close(p);
	tmp_remove(&t);
}

/* ---- recycling and health checks ---------------------------------------- */

static void test_recycle_old_connections(void **state)
{
	const struct pool_opts young = {.min_readers = 1, .max_readers = 1};
	const struct pool_opts old = {.min_readers = 1, .max_readers = 1, .max_lifetime_ms = 1};
	struct pool_stats st;
	struct pool *p;
	sqlite3 *db;
	struct tmp t;

	(void)state;
	tmp_make(&t);

	/* Control: with the default lifetime the same connection comes back. */
	assert_int_equal(pool_open(t.path, NULL, &young, &p), 0);
	assert_int_equal(pool_reader_get(p, &db), 0);
	db_mark(db);
	pool_reader_put(p, db);
	assert_int_equal(pool_reader_get(p, &db), 0);
	assert_true(db_marked(db));
	pool_reader_put(p, db);
	assert_int_equal(pool_writer_get(p, &db), 0);
	db_mark(db);
	pool_writer_put(p, db);
	assert_int_equal(pool_writer_get(p, &db), 0);
	assert_true(db_marked(db));
	pool_writer_put(p, db);
	pool_get_stats(p, &st);
	assert_int_equal(st.recycled, 0);
	assert_int_equal(st.opened, 2);
	pool_close(p);

	assert_int_equal(pool_open(t.path, NULL, &old, &p), 0);
	assert_int_equal(pool_reader_get(p, &db), 0);
	db_mark(db);
	pool_reader_put(p, db);
	sleep_ms(5);
	assert_int_equal(pool_reader_get(p, &db), 0);
	assert_false(db_marked(db));
	pool_reader_put(p, db);
	pool_get_stats(p, &st);
	assert_true(st.recycled >= 1);
	assert_true(st.opened >= 3);
	assert_int_equal(st.replaced, 0);
	assert_int_equal(st.readers_out, 0);
	assert_true(st.readers_open <= 1);

	assert_int_equal(pool_writer_get(p, &db), 0);
	db_mark(db);
	pool_writer_put(p, db);
	sleep_ms(5);
	assert_int_equal(pool_writer_get(p, &db), 0);
	assert_false(db_marked(db));
	pool_writer_put(p, db);
	pool_get_stats(p, &st);
	assert_true(st.recycled >= 2);
	pool_close(p);
	tmp_remove(&t);
}

static void test_health_check_replaces_broken(void **state)
{
	static const char *const schema_sql[] = {"CREATE TABLE t(x INTEGER)"};
	const struct pool_schema schema = {schema_sql, 1};
	const struct pool_opts opts = {.min_readers = 1, .max_readers = 1};
	struct pool_stats st;
	sqlite3_stmt *stmt;
	struct pool *p;
	sqlite3 *db;
	struct tmp t;

	(void)state;
	tmp_make(&t);
	assert_int_equal(pool_open(t.path, &schema, &opts, &p), 0);

	/* A reader left inside a transaction. */
	assert_int_equal(pool_reader_get(p, &db), 0);
	db_mark(db);
	assert_int_equal(sqlite3_exec(db, "BEGIN; SELECT count(*) FROM t", NULL, NULL, NULL),
	                 SQLITE_OK);
	assert_int_equal(sqlite3_get_autocommit(db), 0);
	pool_reader_put(p, db);
	assert_int_equal(pool_reader_get(p, &db), 0);
	assert_int_equal(sqlite3_get_autocommit(db), 1);
	assert_false(db_marked(db));
	pool_reader_put(p, db);
	pool_get_stats(p, &st);
	assert_int_equal(st.replaced, 1);

	/* The writer left inside a write transaction: replaced, the write
	 * rolled back and the file's write lock released. */
	assert_int_equal(pool_writer_get(p, &db), 0);
	db_mark(db);
	assert_int_equal(
	    sqlite3_exec(db, "BEGIN IMMEDIATE; INSERT INTO t VALUES (1)", NULL, NULL, NULL),
	    SQLITE_OK);
	pool_writer_put(p, db);
	assert_int_equal(pool_writer_get(p, &db), 0);
	assert_int_equal(sqlite3_get_autocommit(db), 1);
	assert_false(db_marked(db));
	assert_int_equal(db_int(db, "SELECT count(*) FROM t"), 0);
	assert_int_equal(
	    sqlite3_exec(db, "BEGIN IMMEDIATE; INSERT INTO t VALUES (2); COMMIT", NULL, NULL, NULL),
	    SQLITE_OK);
	pool_writer_put(p, db);
	pool_get_stats(p, &st);
	assert_int_equal(st.replaced, 2);

	/* A reader with a stepped, un-reset statement holds a read transaction
	 * although it is in autocommit mode. */
	assert_int_equal(pool_reader_get(p, &db), 0);
	db_mark(db);
	assert_int_equal(
	    sqlite3_prepare_v2(db, "SELECT x FROM t UNION ALL SELECT 0", -1, &stmt, NULL),
	    SQLITE_OK);
	assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
	pool_reader_put(p, db);
	sqlite3_finalize(stmt); /* frees the closed (zombie) connection */
	assert_int_equal(pool_reader_get(p, &db), 0);
	assert_false(db_marked(db));
	assert_int_equal(db_int(db, "SELECT count(*) FROM t"), 1);
	pool_reader_put(p, db);
	pool_get_stats(p, &st);
	assert_int_equal(st.replaced, 3);
	assert_int_equal(st.recycled, 0);
	pool_close(p);
	tmp_remove(&t);
}

static void test_readers_refuse_writes(void **state)
{
	static const char *const schema_sql[] = {"CREATE TABLE t(x INTEGER)"};
	const struct pool_schema schema = {schema_sql, 1};
	struct pool *p;
	sqlite3 *db;
	struct tmp t;

	(void)state;
	tmp_make(&t);
	assert_int_equal(pool_open(t.path, &schema, NULL, &p), 0);
	assert_int_equal(pool_reader_get(p, &db), 0);
	assert_int_equal(sqlite3_exec(db, "INSERT INTO t VALUES (1)", NULL, NULL, NULL),
	                 SQLITE_READONLY);
	assert_int_equal(db_int(db, "PRAGMA foreign_keys"), 1);
	assert_int_equal(db_int(db, "PRAGMA synchronous"), 1); /* NORMAL */
	pool_reader_put(p, db);
	assert_int_equal(pool_writer_get(p, &db), 0);
	assert_int_equal(db_int(db, "PRAGMA foreign_keys"), 1);
	assert_int_equal(sqlite3_exec(db, "INSERT INTO t VALUES (1)", NULL, NULL, NULL), SQLITE_OK);
	pool_writer_put(p, db);
	pool_close(p);
	tmp_remove(&t);
}

/* ---- pool_close ---------------------------------------------------------- */

struct closing {
	struct pool *p;
	sem_t held, others_done, release;
	atomic_int put_done, closed;
	int reader_rv, writer_rv;
	uint64_t waited_ms;
};

/* Holds the writer until the other thread has finished with the pool, then
 * a while longer, so pool_close must wait for the put. */
static void *closing_holder(void *arg)
{
	struct closing *c = arg;
	sqlite3 *db;

	if (pool_writer_get(c->p, &db) != 0)
		return NULL;
	sem_post(&c->held);
	sem_wait(&c->others_done);
	sleep_ms(100);
	atomic_store(&c->put_done, 1);
	pool_writer_put(c->p, db);
	return NULL;
}

/* Checks readers out and in until pool_close refuses one, then tries the
 * writer, which must fail at once rather than queue behind the holder. */
static void *closing_prober(void *arg)
{
	struct closing *c = arg;
	sqlite3 *db;

	for (;;) {
		c->reader_rv = pool_reader_get(c->p, &db);
		if (c->reader_rv != 0)
			break;
		pool_reader_put(c->p, db);
		sleep_ms(1);
	}
	c->writer_rv = pool_writer_get(c->p, &db);
	if (c->writer_rv == 0)
		pool_writer_put(c->p, db);
	sem_post(&c->others_done);
	return NULL;
}

static void test_close_waits_for_checked_out(void **state)
{
	pthread_t holder, prober;
	struct closing c = {0};
	uint64_t t0, took;
	struct tmp t;

	(void)state;
	tmp_make(&t);
	assert_int_equal(pool_open(t.path, NULL, NULL, &c.p), 0);
	sem_init(&c.held, 0, 0);
	sem_init(&c.others_done, 0, 0);
	assert_int_equal(pthread_create(&holder, NULL, closing_holder, &c), 0);
	sem_wait(&c.held);
	assert_int_equal(pthread_create(&prober, NULL, closing_prober, &c), 0);
	sleep_ms(10);

	t0 = clock_mono_ms();
	pool_close(c.p);
	took = clock_mono_ms() - t0;
	assert_int_equal(atomic_load(&c.put_done), 1);
	assert_true(took >= 90);

	pthread_join(holder, NULL);
	pthread_join(prober, NULL);
	assert_int_equal(c.reader_rv, ERR_CLOSED);
	assert_int_equal(c.writer_rv, ERR_CLOSED);
	sem_destroy(&c.held);
	sem_destroy(&c.others_done);
	tmp_remove(&t);
}

static void *closing_reader_holder(void *arg)
{
	struct closing *c = arg;
	sqlite3 *db;

	if (pool_reader_get(c->p, &db) != 0)
		return NULL;
	sem_post(&c->held);
	sem_wait(&c->release);
	pool_reader_put(c->p, db);
	return NULL;
}

/* Blocks for the only reader (10 s checkout timeout) until close wakes it. */
static void *closing_waiter(void *arg)
{
	struct closing *c = arg;
	uint64_t t0 = clock_mono_ms();
	sqlite3 *db;

	c->reader_rv = pool_reader_get(c->p, &db);
	if (c->reader_rv == 0)
		pool_reader_put(c->p, db);
	c->waited_ms = clock_mono_ms() - t0;
	sem_post(&c->others_done);
	return NULL;
}

static void *closing_closer(void *arg)
{
	struct closing *c = arg;

	pool_close(c->p);
	atomic_store(&c->closed, 1);
	return NULL;
}

static void test_close_wakes_waiting_checkout(void **state)
{
	const struct pool_opts opts = {
	    .min_readers = 1, .max_readers = 1, .checkout_timeout_ms = 10000};
	pthread_t holder, waiter, closer;
	struct closing c = {0};
	struct timespec until;
	int woke;
	struct tmp t;

	(void)state;
	tmp_make(&t);
	assert_int_equal(pool_open(t.path, NULL, &opts, &c.p), 0);
	sem_init(&c.held, 0, 0);
	sem_init(&c.others_done, 0, 0);
	sem_init(&c.release, 0, 0);
	assert_int_equal(pthread_create(&holder, NULL, closing_reader_holder, &c), 0);
	sem_wait(&c.held);
	assert_int_equal(pthread_create(&waiter, NULL, closing_waiter, &c), 0);
	sleep_ms(50); /* let it block; if not yet, it sees the closed pool */
	assert_int_equal(pthread_create(&closer, NULL, closing_closer, &c), 0);

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 5;
	woke = sem_timedwait(&c.others_done, &until);
	/* pool_close cannot finish while the reader is out. */
	assert_int_equal(atomic_load(&c.closed), 0);
	sem_post(&c.release);
	pthread_join(holder, NULL);
	pthread_join(closer, NULL);
	pthread_join(waiter, NULL);

	assert_int_equal(woke, 0);
	assert_int_equal(c.reader_rv, ERR_CLOSED);
	assert_true(c.waited_ms < 5000);
	assert_int_equal(atomic_load(&c.closed), 1);
	sem_destroy(&c.held);
	sem_destroy(&c.others_done);
	sem_destroy(&c.release);
	tmp_remove(&t);
}

/* ---- the file ------------------------------------------------------------ */

static void expect_mode(const char *path, const char *suffix)
{
	char f[160];
	struct stat sb;

	snprintf(f, sizeof(f), "%s%s", path, suffix);
	assert_int_equal(stat(f, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
}

static void test_file_mode_0600(void **state)
{
	struct pool *p;
	sqlite3 *db;
	mode_t old;
	struct tmp t;
	char bad[160];

	(void)state;
	tmp_make(&t);
	/* With no umask to hide it, only the mode the pool asks for shows. */
	old = umask(0);
	assert_int_equal(pool_open(t.path, NULL, NULL, &p), 0);
	assert_int_equal(pool_writer_get(p, &db), 0);
	assert_int_equal(sqlite3_exec(db, "CREATE TABLE t(x)", NULL, NULL, NULL), SQLITE_OK);
	pool_writer_put(p, db);
	umask(old);
	expect_mode(t.path, "");
	expect_mode(t.path, "-wal");
	expect_mode(t.path, "-shm");
	pool_close(p);

	/* Not a regular file, and no such directory: refused. */
	p = NULL;
	assert_int_equal(pool_open(t.dir, NULL, NULL, &p), ERR_IO);
	snprintf(bad, sizeof(bad), "%s/missing/test.db", t.dir);
	assert_int_equal(pool_open(bad, NULL, NULL, &p), ERR_IO);
	assert_null(p);
	pool_close(NULL);
	tmp_remove(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_migrations_in_order_and_idempotent),
	    cmocka_unit_test(test_failed_migration_rolls_back),
	    cmocka_unit_test(test_concurrent_opens_migrate_once),
	    cmocka_unit_test(test_concurrent_readers_and_writers),
	    cmocka_unit_test(test_checkout_timeout),
	    cmocka_unit_test(test_recycle_old_connections),
	    cmocka_unit_test(test_health_check_replaces_broken),
	    cmocka_unit_test(test_readers_refuse_writes),
	    cmocka_unit_test(test_close_waits_for_checked_out),
	    cmocka_unit_test(test_close_wakes_waiting_checkout),
	    cmocka_unit_test(test_file_mode_0600),
	};

	log_init("pool_test", LOG_TEXT, false);
	/* A pool that deadlocks must fail the run, not hang it. */
	alarm(120);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
