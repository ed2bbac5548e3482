/*
 * audit_producer.c — a test producer of audit events through the real path:
 * its own SQLite pool, common/outbox, and Append to magnetar-audit. Each
 * event is enqueued in one transaction with a counter, so a producer
 * killed at any moment and started again emits exactly `count` in all.
 *
 *   audit_producer DB COUNT [RATE_PER_S [NAME]]   (MAGNETAR_AUDIT_URL: audit's socket)
 *
 * Exits 0 once all COUNT are emitted and acknowledged by audit.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/outbox.h"
#include "common/pool.h"
#include "common/rpc.h"

static const char *const producer_migrations[] = {
    outbox_migration,
    "CREATE TABLE emitted (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);"
    "INSERT INTO emitted VALUES (1, 0);",
    outbox_migration_slots,
};
static const struct pool_schema producer_schema = {
    producer_migrations, sizeof(producer_migrations) / sizeof(producer_migrations[0])};

static long producer_emitted(struct pool *p)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	long n = -1;

	if (pool_reader_get(p, &db) != 0)
		return -1;
	if (sqlite3_prepare_v2(db, "SELECT n FROM emitted", -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			n = (long)sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
	}
	pool_reader_put(p, db);
	return n;
}

/* The event and the counter in one transaction: both or neither. */
static int producer_emit(struct pool *p, long n)
{
	char detail[64], actor[32];
	struct outbox_event ev = {.action = "test.produced",
	                          .actor = actor,
	                          .target = "audit",
	                          .ip = "192.0.2.1",
	                          .request_id = "req",
	                          .outcome = "success",
	                          .detail = detail};
	sqlite3 *db;
	int rv;

	snprintf(actor, sizeof(actor), "producer-%ld", n % 7);
	snprintf(detail, sizeof(detail), "n=%ld\n\x1b[0m", n);
	if ((rv = pool_writer_get(p, &db)) != 0)
		return rv;
	rv = ERR_DB;
	if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK) {
		if (outbox_enqueue(db, &ev) == 0 &&
		    sqlite3_exec(db, "UPDATE emitted SET n = n + 1", NULL, NULL, NULL) ==
		        SQLITE_OK &&
		    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
			rv = 0;
		else
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	}
	pool_writer_put(p, db);
	return rv;
}

int main(int argc, char **argv)
{
	struct outbox_opts oo = {
	    .batch = 256, .timeout_ms = 2000, .idle_ms = 20, .max_backoff_ms = 200};
	const char *url = getenv("MAGNETAR_AUDIT_URL");
	struct rpc_client *cli;
	struct outbox *ob;
	struct outbox_stats st;
	struct pool *p;
	long count, rate, n;
	uint64_t start;
	int rv;

	log_init("audit_producer", LOG_TEXT, false);
	if (argc < 3 || url == NULL) {
		fprintf(stderr, "usage: MAGNETAR_AUDIT_URL=... audit_producer DB COUNT [RATE]\n");
		return 2;
	}
	count = atol(argv[2]);
	rate = argc > 3 ? atol(argv[3]) : 0;
	if ((rv = pool_open(argv[1], &producer_schema, NULL, &p)) != 0)
		fatalx("cannot open %s: %s", argv[1], err_str(rv));
	if ((rv = rpc_client_open(url, 0, &cli)) != 0 ||
	    (rv = outbox_start(p, argc > 4 ? argv[4] : "producer", cli, &oo, &ob)) != 0)
		fatalx("cannot start the outbox: %s", err_str(rv));
	start = clock_mono_ms();
	n = producer_emitted(p);
	for (long i = 0; n < count; n++, i++) {
		if ((rv = producer_emit(p, n + 1)) != 0)
			fatalx("cannot enqueue: %s", err_str(rv));
		if (i % 64 == 0)
			outbox_kick(ob);
		if (rate > 0) { /* pace: i events should take i/rate seconds */
			uint64_t due = start + (uint64_t)(i * 1000 / rate);
			while (clock_mono_ms() < due) {
				struct timespec ts = {0, 1000 * 1000};
				nanosleep(&ts, NULL);
			}
		}
	}
	outbox_kick(ob);
	for (;;) { /* done once every event is acknowledged */
		struct timespec ts = {0, 20 * 1000 * 1000};
		outbox_get_stats(ob, &st);
		if (st.pending == 0)
			break;
		nanosleep(&ts, NULL);
	}
	printf("emitted=%ld\n", producer_emitted(p));
	outbox_stop(ob);
	rpc_client_close(cli);
	pool_close(p);
	return 0;
}
