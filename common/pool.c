/*
 * pool.c — one SQLite file per service: an exclusive writer and a bounded
 * free list of readers (pool.h). Opening, health checks and closing run
 * outside the pool lock, on a connection the calling thread has already
 * checked out, so a slow disk never stalls other checkouts.
 */
#include "common/pool.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
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

#define POOL_MIN_READERS 2
#define POOL_MAX_READERS 10
#define POOL_READERS_CAP 1024 /* put finds a reader by a linear scan */
#define POOL_BUSY_TIMEOUT_MS 5000
#define POOL_MAX_LIFETIME_MS (60u * 60u * 1000u)
#define POOL_CHECKOUT_TIMEOUT_MS 5000

/*
 * One connection slot. `db` is written only under the pool lock. During a
 * checkout or check-in that opens or closes, the slot stays `out` with db
 * NULL while the working thread holds the handle, so a concurrent put never
 * matches a pointer that is being closed (malloc may hand the same address
 * to the next sqlite3 opened).
 */
struct conn {
	sqlite3 *db;
	uint64_t born_ms; /* clock_mono_ms() when opened */
	struct conn *next;
	bool out;
};

/* What one checkout or check-in did, folded into the stats under the lock. */
struct tally {
	int opened, closed, recycled, replaced;
};

struct pool {
	pthread_mutex_t mu;
	pthread_cond_t reader_cv; /* a reader slot came back (CLOCK_MONOTONIC) */
	pthread_cond_t writer_cv; /* the writer came back */
	pthread_cond_t drain_cv;  /* pool_close: everyone is out of the pool */
	char *path;
	struct pool_opts opts;
	int version; /* set once at open: only this pool migrates the file */
	struct conn writer;
	struct conn *readers; /* opts.max_readers slots */
	struct conn *idle;    /* readers with a connection, not out */
	struct conn *spare;   /* readers without a connection, not out */
	int readers_open, readers_out;
	int waiters; /* threads blocked in a checkout: pool_close waits for them too */
	bool closing;
	struct pool_stats st; /* opened, recycled, replaced, checkout_timeouts */
};

/* ---- one connection ---------------------------------------------------- */

static int conn_exec(const struct pool *p, sqlite3 *db, const char *sql)
{
	char *msg = NULL;
	int rc;

	if ((rc = sqlite3_exec(db, sql, NULL, NULL, &msg)) != SQLITE_OK) {
		/* Only our own fixed statements come here: no parameter values. */
		log_warnx("pool: \"%s\" failed path=%s: %s", sql, p->path,
		          msg != NULL ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
		return rc == SQLITE_NOMEM ? ERR_NOMEM : ERR_DB;
	}
	return 0;
}

/* Runs sql and returns the first column of its first row as an integer. */
static int conn_int(const struct pool *p, sqlite3 *db, const char *sql, int *out)
{
	sqlite3_stmt *st = NULL;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_ROW) {
		log_warnx("pool: \"%s\" failed path=%s: %s", sql, p->path, sqlite3_errmsg(db));
		sqlite3_finalize(st);
		return ERR_DB;
	}
	*out = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return 0;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/*
 * PRAGMA journal_mode answers with the mode now in force, which stays
 * "delete" where WAL is impossible (e.g. some network filesystems).
 * Switching a new file to WAL upgrades the statement's read lock to a write
 * lock, and SQLite refuses that at once, without the busy handler (two
 * upgraders would deadlock), while another connection does the same — two
 * processes opening a new file together. So the statement is retried, with
 * its read lock dropped in between, for up to busy_timeout_ms.
 */
static int conn_wal(const struct pool *p, sqlite3 *db)
{
	uint64_t give_up = clock_mono_ms() + (uint64_t)p->opts.busy_timeout_ms;
	sqlite3_stmt *st = NULL;
	const unsigned char *mode;
	int rc, rv = ERR_DB;

	for (;;) {
		rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
		if (rc == SQLITE_OK)
			rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			break;
		sqlite3_finalize(st);
		st = NULL;
		if ((rc & 0xff) != SQLITE_BUSY || clock_mono_ms() >= give_up) {
			log_warnx("pool: cannot set WAL path=%s: %s", p->path, sqlite3_errmsg(db));
			goto fail;
		}
		sleep_ms(2);
	}
	mode = sqlite3_column_text(st, 0);
	if (mode == NULL || strcmp((const char *)mode, "wal") != 0) {
		log_warnx("pool: journal_mode is %s, not wal, path=%s",
		          mode != NULL ? (const char *)mode : "unknown", p->path);
		goto fail;
	}
	rv = 0;
fail:
	sqlite3_finalize(st);
	return rv;
}

static int conn_open(const struct pool *p, bool reader, sqlite3 **out)
{
	const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
	                  SQLITE_OPEN_PRIVATECACHE;
	sqlite3 *db = NULL;
	int rc, v, rv;

	if ((rc = sqlite3_open_v2(p->path, &db, flags, NULL)) != SQLITE_OK) {
		log_warnx("pool: cannot open path=%s: %s", p->path,
		          db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		rv = rc == SQLITE_NOMEM ? ERR_NOMEM : ERR_DB;
		goto fail;
	}
	sqlite3_extended_result_codes(db, 1);
	sqlite3_busy_timeout(db, p->opts.busy_timeout_ms);
	/* Refuses SQL that can corrupt the file (writable_schema and friends). */
	sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
	if ((rv = conn_wal(p, db)) != 0)
		goto fail;
	if ((rv = conn_exec(p, db, "PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL")) != 0)
		goto fail;
	/* foreign_keys=ON is silently ignored by builds without FK support. */
	if ((rv = conn_int(p, db, "PRAGMA foreign_keys", &v)) != 0)
		goto fail;
	if (v != 1) {
		log_warnx("pool: foreign keys unavailable path=%s", p->path);
		rv = ERR_DB;
		goto fail;
	}
	/* A write through a reader would queue behind the writer on the file
	 * lock and break the one-writer design: refuse it outright. */
	if (reader && (rv = conn_exec(p, db, "PRAGMA query_only=ON")) != 0)
		goto fail;
	*out = db;
	return 0;
fail:
	sqlite3_close_v2(db);
	return rv;
}

/*
 * Cheap part of the health check, also run on put: the connection must be
 * outside any transaction, including the implicit read transaction that a
 * stepped but un-reset statement holds (which would pin the WAL snapshot and
 * stop checkpoints while the connection sits idle).
 */
static bool conn_idle_ok(sqlite3 *db)
{
	if (!sqlite3_get_autocommit(db))
		return false;
	for (sqlite3_stmt *st = sqlite3_next_stmt(db, NULL); st != NULL;
	     st = sqlite3_next_stmt(db, st))
		if (sqlite3_stmt_busy(st))
			return false;
	return true;
}

static bool conn_healthy(sqlite3 *db)
{
	return conn_idle_ok(db) && sqlite3_exec(db, "SELECT 1", NULL, NULL, NULL) == SQLITE_OK;
}

/* close_v2: statements a caller failed to finalize keep the handle alive as
 * a zombie until they are, instead of the close failing and leaking. */
static void conn_close(sqlite3 *db)
{
	sqlite3_close_v2(db);
}

static bool pool_expired(const struct pool *p, uint64_t born_ms)
{
	return clock_mono_ms() - born_ms > p->opts.max_lifetime_ms;
}

/*
 * Makes a checked-out connection usable: opens it if the slot is empty,
 * replaces it if it is too old or fails the health check. Runs without the
 * lock; *db is NULL after a failure.
 */
static int conn_ready(const struct pool *p, bool reader, sqlite3 **db, uint64_t *born,
                      struct tally *t)
{
	int rv;

	if (*db != NULL && pool_expired(p, *born)) {
		conn_close(*db);
		*db = NULL;
		t->closed++;
		t->recycled++;
	} else if (*db != NULL && !conn_healthy(*db)) {
		log_warnx("pool: %s failed its health check, replacing it path=%s",
		          reader ? "reader" : "writer", p->path);
		conn_close(*db);
		*db = NULL;
		t->closed++;
		t->replaced++;
	}
	if (*db != NULL)
		return 0;
	if ((rv = conn_open(p, reader, db)) != 0)
		return rv;
	*born = clock_mono_ms();
	t->opened++;
	return 0;
}

/* ---- the pool ---------------------------------------------------------- */

/* Under the lock. */
static void pool_tally(struct pool *p, const struct tally *t, bool reader)
{
	p->st.opened += (uint64_t)t->opened;
	p->st.recycled += (uint64_t)t->recycled;
	p->st.replaced += (uint64_t)t->replaced;
	if (reader)
		p->readers_open += t->opened - t->closed;
}

/* Under the lock: pool_close may go on once nobody is inside the pool. */
static void pool_wake_closer(struct pool *p)
{
	if (p->closing && !p->writer.out && p->readers_out == 0 && p->waiters == 0)
		pthread_cond_signal(&p->drain_cv);
}

/* Under the lock: c comes back from a checkout, with c->db NULL if closed. */
static void pool_release(struct pool *p, struct conn *c)
{
	c->out = false;
	if (c == &p->writer) {
		pthread_cond_signal(&p->writer_cv);
	} else {
		struct conn **list = c->db != NULL ? &p->idle : &p->spare;
		c->next = *list;
		*list = c;
		p->readers_out--;
		pthread_cond_signal(&p->reader_cv);
	}
	pool_wake_closer(p);
}

static struct timespec deadline_after_ms(int ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

/* Under the lock. Idle readers first (LIFO, so the warmest cache is reused),
 * then an empty slot, which the caller fills by opening a connection. */
static int pool_wait_reader(struct pool *p, struct conn **out)
{
	struct timespec deadline;
	bool waited = false, timed_out = false;

	for (;;) {
		struct conn **list = p->idle != NULL ? &p->idle : &p->spare;
		if (p->closing)
			return ERR_CLOSED;
		if (*list != NULL) {
			*out = *list;
			*list = (*list)->next;
			return 0;
		}
		if (timed_out) {
			p->st.checkout_timeouts++;
			return ERR_TIMEOUT;
		}
		if (!waited) {
			deadline = deadline_after_ms(p->opts.checkout_timeout_ms);
			waited = true;
		}
		p->waiters++;
		if (pthread_cond_timedwait(&p->reader_cv, &p->mu, &deadline) == ETIMEDOUT)
			timed_out = true;
		p->waiters--;
		pool_wake_closer(p);
	}
}

/* Under the lock. No deadline: the writer is held for one transaction. */
static int pool_wait_writer(struct pool *p, struct conn **out)
{
	while (!p->closing && p->writer.out) {
		p->waiters++;
		pthread_cond_wait(&p->writer_cv, &p->mu);
		p->waiters--;
		pool_wake_closer(p);
	}
	if (p->closing)
		return ERR_CLOSED;
	*out = &p->writer;
	return 0;
}

static int pool_checkout(struct pool *p, bool reader, sqlite3 **out)
{
	struct tally t = {0};
	struct conn *c;
	sqlite3 *db;
	uint64_t born;
	int rv;

	pthread_mutex_lock(&p->mu);
	rv = reader ? pool_wait_reader(p, &c) : pool_wait_writer(p, &c);
	if (rv != 0) {
		pthread_mutex_unlock(&p->mu);
		return rv;
	}
	c->out = true;
	if (reader)
		p->readers_out++;
	db = c->db;
	born = c->born_ms;
	c->db = NULL;
	pthread_mutex_unlock(&p->mu);

	rv = conn_ready(p, reader, &db, &born, &t);

	pthread_mutex_lock(&p->mu);
	pool_tally(p, &t, reader);
	if (rv == 0) {
		c->db = db;
		c->born_ms = born;
	} else {
		pool_release(p, c);
	}
	pthread_mutex_unlock(&p->mu);
	/* p may be freed by pool_close from here on. */
	if (rv == 0)
		*out = db;
	return rv;
}

/* Under the lock. A reader is found by its handle; pools are small. */
static struct conn *pool_find(struct pool *p, bool reader, sqlite3 *db)
{
	if (!reader)
		return p->writer.out && p->writer.db == db ? &p->writer : NULL;
	for (int i = 0; i < p->opts.max_readers; i++)
		if (p->readers[i].out && p->readers[i].db == db)
			return &p->readers[i];
	return NULL;
}

static void pool_checkin(struct pool *p, bool reader, sqlite3 *db)
{
	struct tally t = {0};
	struct conn *c;
	bool idle_ok;

	if (db == NULL)
		return;
	idle_ok = conn_idle_ok(db); /* the caller still owns db */
	pthread_mutex_lock(&p->mu);
	if ((c = pool_find(p, reader, db)) == NULL) {
		pthread_mutex_unlock(&p->mu);
		fatalx("pool: put of a %s this pool did not hand out",
		       reader ? "reader" : "writer");
	}
	if (idle_ok && !pool_expired(p, c->born_ms)) {
		pool_release(p, c);
		pthread_mutex_unlock(&p->mu);
		return;
	}
	c->db = NULL; /* stays out, so pool_close waits for the close below */
	pthread_mutex_unlock(&p->mu);

	if (!idle_ok) {
		/* A caller bug; closing rolls the transaction back. */
		log_warnx("pool: %s put back inside a transaction or with an un-reset statement, "
		          "closing it path=%s",
		          reader ? "reader" : "writer", p->path);
		t.replaced++;
	} else {
		t.recycled++;
	}
	conn_close(db);
	t.closed++;

	pthread_mutex_lock(&p->mu);
	pool_tally(p, &t, reader);
	pool_release(p, c);
	pthread_mutex_unlock(&p->mu);
}

/* The version in the file must be one this build can move forward from. */
static int pool_check_version(const struct pool *p, int v, size_t count)
{
	if (v >= 0 && (size_t)v <= count)
		return 0;
	log_warnx("pool: path=%s is at schema version %d but this build knows only %zu; "
	          "refusing a newer or foreign database",
	          p->path, v, count);
	return ERR_DB;
}

/*
 * Applies one migration in its own BEGIN IMMEDIATE transaction together with
 * the user_version bump. The version is re-read under that write lock, so two
 * processes opening the same file at once cannot both apply a step. SQL that
 * fails or does nothing inside a transaction (VACUUM, PRAGMA foreign_keys)
 * does not belong in a migration.
 */
static int pool_migrate_one(const struct pool *p, sqlite3 *db, const struct pool_schema *schema,
                            int *version)
{
	char sql[64], *msg = NULL;
	bool applied = false;
	int v, rv;

	if ((rv = conn_exec(p, db, "BEGIN IMMEDIATE")) != 0)
		return rv;
	if ((rv = conn_int(p, db, "PRAGMA user_version", &v)) != 0 ||
	    (rv = pool_check_version(p, v, schema->count)) != 0)
		goto fail;
	if ((size_t)v == schema->count) /* someone else got there first */
		goto done;
	if (schema->migrations[v] == NULL) {
		rv = ERR_INVAL;
		goto fail;
	}
	if (sqlite3_exec(db, schema->migrations[v], NULL, NULL, &msg) != SQLITE_OK) {
		log_warnx("pool: migration %d->%d failed path=%s: %s", v, v + 1, p->path,
		          msg != NULL ? msg : sqlite3_errmsg(db));
		sqlite3_free(msg);
		rv = ERR_DB;
		goto fail;
	}
	if (sqlite3_get_autocommit(db)) {
		/* It committed or rolled back our transaction itself: its changes
		 * and the version bump would no longer be one atomic step. */
		log_warnx("pool: migration %d->%d ends its own transaction path=%s", v, v + 1,
		          p->path);
		rv = ERR_DB;
		goto fail;
	}
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v + 1);
	if ((rv = conn_exec(p, db, sql)) != 0)
		goto fail;
	v++;
	applied = true;
done:
	if ((rv = conn_exec(p, db, "COMMIT")) != 0)
		goto fail;
	if (applied)
		log_info("pool: migrated path=%s version=%d->%d", p->path, v - 1, v);
	*version = v;
	return 0;
fail:
	if (!sqlite3_get_autocommit(db))
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return rv;
}

static int pool_migrate(struct pool *p, sqlite3 *db, const struct pool_schema *schema)
{
	static const struct pool_schema none = {NULL, 0};
	int v, rv;

	if (schema == NULL)
		schema = &none;
	if (schema->count > INT_MAX || (schema->count > 0 && schema->migrations == NULL))
		return ERR_INVAL;
	/* Read first outside a transaction: an up-to-date file takes no write lock. */
	if ((rv = conn_int(p, db, "PRAGMA user_version", &v)) != 0 ||
	    (rv = pool_check_version(p, v, schema->count)) != 0)
		return rv;
	while ((size_t)v < schema->count)
		if ((rv = pool_migrate_one(p, db, schema, &v)) != 0)
			return rv;
	p->version = v;
	return 0;
}

/*
 * Creates the file 0600 before SQLite sees it (SQLite gives -wal and -shm
 * the main file's mode). Only with O_EXCL: opening and closing an existing
 * database file would drop every POSIX lock this process holds on it, which
 * another pool on the same file relies on.
 */
static int pool_create_file(const char *path)
{
	struct stat sb;
	int fd;

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);
	if (fd >= 0) {
		close(fd);
		return 0;
	}
	if (errno != EEXIST || stat(path, &sb) != 0) {
		log_warn("pool: cannot create %s", path);
		return ERR_IO;
	}
	if (!S_ISREG(sb.st_mode)) {
		log_warnx("pool: %s is not a regular file", path);
		return ERR_IO;
	}
	if ((sb.st_mode & 077) != 0)
		log_warnx("pool: %s is readable by group or others (mode %03o)", path,
		          (unsigned)(sb.st_mode & 0777));
	return 0;
}

static void pool_close_conn(const struct pool *p, struct conn *c, const char *kind)
{
	if (c->db == NULL)
		return;
	if (sqlite3_next_stmt(c->db, NULL) != NULL)
		log_warnx("pool: %s closed with unfinalized statements path=%s", kind, p->path);
	conn_close(c->db);
	c->db = NULL;
}

static void pool_free(struct pool *p)
{
	if (p->readers != NULL)
		for (int i = 0; i < p->opts.max_readers; i++)
			pool_close_conn(p, &p->readers[i], "reader");
	/* The writer last: closing the last connection checkpoints the WAL. */
	pool_close_conn(p, &p->writer, "writer");
	pthread_cond_destroy(&p->drain_cv);
	pthread_cond_destroy(&p->writer_cv);
	pthread_cond_destroy(&p->reader_cv);
	pthread_mutex_destroy(&p->mu);
	free(p->readers);
	free(p->path);
	free(p);
}

int pool_open(const char *path, const struct pool_schema *schema, const struct pool_opts *opts,
              struct pool **out)
{
	struct pool *p;
	int rv;

	if (path == NULL || out == NULL)
		return ERR_INVAL;
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return ERR_NOMEM;
	if (clock_cond_init_mono(&p->reader_cv) != 0) {
		free(p);
		return ERR_NOMEM;
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->writer_cv, NULL);
	pthread_cond_init(&p->drain_cv, NULL);

	/* Zero (or negative) fields take the defaults, as in rpc_server_opts. */
	if (opts != NULL)
		p->opts = *opts;
	if (p->opts.max_readers <= 0)
		p->opts.max_readers = POOL_MAX_READERS;
	if (p->opts.min_readers <= 0)
		p->opts.min_readers = POOL_MIN_READERS;
	if (p->opts.min_readers > p->opts.max_readers)
		p->opts.min_readers = p->opts.max_readers;
	if (p->opts.busy_timeout_ms <= 0)
		p->opts.busy_timeout_ms = POOL_BUSY_TIMEOUT_MS;
	if (p->opts.max_lifetime_ms == 0)
		p->opts.max_lifetime_ms = POOL_MAX_LIFETIME_MS;
	if (p->opts.checkout_timeout_ms <= 0)
		p->opts.checkout_timeout_ms = POOL_CHECKOUT_TIMEOUT_MS;
	if (p->opts.max_readers > POOL_READERS_CAP) {
		rv = ERR_INVAL;
		goto fail;
	}

	p->path = strdup(path);
	p->readers = calloc((size_t)p->opts.max_readers, sizeof(*p->readers));
	if (p->path == NULL || p->readers == NULL) {
		rv = ERR_NOMEM;
		goto fail;
	}
	for (int i = p->opts.max_readers - 1; i >= 0; i--) {
		p->readers[i].next = p->spare;
		p->spare = &p->readers[i];
	}
	if ((rv = pool_create_file(path)) != 0)
		goto fail;
	if ((rv = conn_open(p, false, &p->writer.db)) != 0)
		goto fail;
	p->writer.born_ms = clock_mono_ms();
	p->st.opened++;
	if ((rv = pool_migrate(p, p->writer.db, schema)) != 0)
		goto fail;
	for (int i = 0; i < p->opts.min_readers; i++) {
		struct conn *c = p->spare;
		if ((rv = conn_open(p, true, &c->db)) != 0)
			goto fail;
		c->born_ms = clock_mono_ms();
		p->spare = c->next;
		c->next = p->idle;
		p->idle = c;
		p->readers_open++;
		p->st.opened++;
	}
	log_info("pool: open path=%s version=%d readers=%d..%d", p->path, p->version,
	         p->opts.min_readers, p->opts.max_readers);
	*out = p;
	return 0;
fail:
	pool_free(p);
	return rv;
}

void pool_close(struct pool *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->closing = true;
	pthread_cond_broadcast(&p->reader_cv);
	pthread_cond_broadcast(&p->writer_cv);
	while (p->writer.out || p->readers_out > 0 || p->waiters > 0)
		pthread_cond_wait(&p->drain_cv, &p->mu);
	pthread_mutex_unlock(&p->mu);
	log_info("pool: closed path=%s", p->path);
	pool_free(p);
}

int pool_writer_get(struct pool *p, struct sqlite3 **db)
{
	return pool_checkout(p, false, db);
}

void pool_writer_put(struct pool *p, struct sqlite3 *db)
{
	pool_checkin(p, false, db);
}

int pool_tx_begin(struct pool *p, struct sqlite3 **db)
{
	int rv;

	if ((rv = pool_writer_get(p, db)) != 0)
		return rv;
	if (sqlite3_exec(*db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		pool_writer_put(p, *db);
		*db = NULL;
		return ERR_DB;
	}
	return 0;
}

int pool_tx_end(struct pool *p, struct sqlite3 *db, int rv)
{
	if (rv == 0 && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		rv = ERR_DB;
	if (rv != 0)
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	pool_writer_put(p, db);
	return rv;
}

int pool_reader_get(struct pool *p, struct sqlite3 **db)
{
	return pool_checkout(p, true, db);
}

void pool_reader_put(struct pool *p, struct sqlite3 *db)
{
	pool_checkin(p, true, db);
}

int pool_schema_version(struct pool *p)
{
	return p->version;
}

void pool_get_stats(struct pool *p, struct pool_stats *st)
{
	pthread_mutex_lock(&p->mu);
	*st = p->st;
	st->readers_open = (uint64_t)p->readers_open;
	st->readers_out = (uint64_t)p->readers_out;
	pthread_mutex_unlock(&p->mu);
}
