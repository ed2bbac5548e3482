/*
 * outbox_test.c — common/outbox against the real audit Append handler and
 * store (services/audit): every event enqueued is stored exactly once, even
 * when audit stores a batch and dies before its acknowledgement reaches the
 * producer, and when audit is down for a while and comes back.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/clock.h"
#include "common/outbox.h"
#include "common/pool.h"
#include "common/rpc.h"
#include "services/audit/audit.h"

#define URL "inproc://outbox_test"

static const char *const producer_migrations[] = {outbox_migration, outbox_migration_slots};
static const struct pool_schema producer_schema = {
    producer_migrations, sizeof(producer_migrations) / sizeof(producer_migrations[0])};

static struct audit audit;
static _Atomic int die_on_call; /* the Append call number that dies, 0 = none */
static _Atomic int append_calls;
static _Atomic int died_stored; /* events the dying call stored */
static _Atomic bool died;

/* Append as audit runs it, except that one chosen call stores its batch
 * and then loses its reply: the server is stopped before it answers. */
static void dying_append(struct rpc_call *call, const ProtobufCMessage *input, void *arg)
{
	Magnetar__AppendReply out = MAGNETAR__APPEND_REPLY__INIT;
	int n = atomic_fetch_add(&append_calls, 1) + 1;

	if (n != atomic_load(&die_on_call)) {
		append_handle(call, input, arg);
		return;
	}
	assert_int_equal(append_store(arg, call, (const Magnetar__AppendRequest *)input, &out), 0);
	atomic_store(&died_stored, (int)out.stored);
	atomic_store(&died, true);
	usleep(200 * 1000); /* meanwhile the test stops the server */
	rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INTERNAL, "dead", "never delivered");
}

static const struct rpc_method methods[] = {
    {"Ping", svc_handle_ping, 0},
    {"Stats", svc_handle_stats, 0},
    {"Append", dying_append, RPC_F_MUTATES},
};

static struct rpc_server *start_audit(void)
{
	struct rpc_server_opts opts = {.arg = &audit};
	struct rpc_server *s;
	assert_int_equal(rpc_server_start(URL, &magnetar__audit__descriptor, methods, 3, &opts, &s),
	                 0);
	return s;
}

static void enqueue(struct pool *p, int first, int count)
{
	struct sqlite3 *db;
	char detail[32];
	assert_int_equal(pool_writer_get(p, &db), 0);
	for (int i = first; i < first + count; i++) {
		struct outbox_event ev = {.action = "test.event",
		                          .actor = "tester",
		                          .detail = detail,
		                          .outcome = "success"};
		snprintf(detail, sizeof(detail), "n=%d", i);
		assert_int_equal(outbox_enqueue(db, &ev), 0);
	}
	pool_writer_put(p, db);
}

static uint64_t stored_count(void)
{
	uint64_t n = 0;
	assert_int_equal(store_count(audit.svc.pool, &n), 0);
	return n;
}

static bool wait_stored(uint64_t want, int timeout_ms)
{
	uint64_t end = clock_mono_ms() + (uint64_t)timeout_ms;
	while (clock_mono_ms() < end) {
		if (stored_count() >= want)
			return true;
		usleep(10 * 1000);
	}
	return stored_count() >= want;
}

struct env {
	char dir[64];
	struct pool *producer;
	struct rpc_client *cli;
	struct outbox *ob;
};

static void env_up(struct env *e)
{
	char path[128];
	struct outbox_opts opts = {
	    .batch = 10, .timeout_ms = 300, .idle_ms = 20, .max_backoff_ms = 100};
	snprintf(e->dir, sizeof(e->dir), "/tmp/outbox_test.XXXXXX");
	assert_non_null(mkdtemp(e->dir));
	snprintf(path, sizeof(path), "%s/audit.db", e->dir);
	memset(&audit, 0, sizeof(audit));
	audit.svc.id = SVC_AUDIT;
	assert_int_equal(pool_open(path, &store_schema, NULL, &audit.svc.pool), 0);
	snprintf(path, sizeof(path), "%s/producer.db", e->dir);
	assert_int_equal(pool_open(path, &producer_schema, NULL, &e->producer), 0);
	assert_int_equal(rpc_client_open(URL, 0, &e->cli), 0);
	assert_int_equal(outbox_start(e->producer, "tester", e->cli, &opts, &e->ob), 0);
	assert_int_equal(strlen(outbox_instance(e->ob)), 32);
	atomic_store(&append_calls, 0);
	atomic_store(&died, false);
	atomic_store(&die_on_call, 0);
}

static void env_down(struct env *e)
{
	char cmd[128];
	outbox_stop(e->ob);
	rpc_client_close(e->cli);
	pool_close(e->producer);
	pool_close(audit.svc.pool);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", e->dir);
	assert_int_equal(system(cmd), 0);
}

static void test_exactly_once_when_audit_dies_mid_batch(void **state)
{
	struct env e;
	struct rpc_server *srv;
	struct outbox_stats st;
	(void)state;

	env_up(&e);
	atomic_store(&die_on_call, 2);
	srv = start_audit();
	enqueue(e.producer, 0, 35);
	outbox_kick(e.ob);
	/* Wait until the second batch is stored and its reply is pending... */
	for (int i = 0; i < 500 && !atomic_load(&died); i++)
		usleep(10 * 1000);
	assert_true(atomic_load(&died));
	assert_int_equal(atomic_load(&died_stored), 10);
	/* ...then audit dies before answering, and comes back a little later. */
	rpc_server_stop(srv);
	usleep(300 * 1000);
	enqueue(e.producer, 35, 5); /* the producer keeps working meanwhile */
	srv = start_audit();
	assert_true(wait_stored(40, 5000));
	usleep(200 * 1000); /* give any extra (wrong) delivery a chance to show */
	assert_int_equal(stored_count(), 40);
	outbox_get_stats(e.ob, &st);
	assert_int_equal(st.pending, 0);
	assert_true(st.failures >= 1);
	assert_true(st.sent >= 40); /* a re-sent batch is acknowledged twice */
	rpc_server_stop(srv);
	env_down(&e);
}

static void test_audit_down_then_up(void **state)
{
	struct env e;
	struct rpc_server *srv;
	struct outbox_stats st;
	(void)state;

	env_up(&e);
	enqueue(e.producer, 0, 25);
	outbox_kick(e.ob);
	usleep(500 * 1000); /* audit is not there: nothing may be lost meanwhile */
	outbox_get_stats(e.ob, &st);
	assert_int_equal(st.pending, 25);
	assert_true(st.failures >= 1);
	srv = start_audit();
	assert_true(wait_stored(25, 5000));
	usleep(100 * 1000);
	assert_int_equal(stored_count(), 25);
	outbox_get_stats(e.ob, &st);
	assert_int_equal(st.pending, 0);
	rpc_server_stop(srv);
	env_down(&e);
}

/* A restore of the producer's database from an older copy (issue 16): its
 * AUTOINCREMENT hands out numbers audit already holds under the same
 * instance id. Audit refuses the colliding batch (never acknowledges it as
 * a duplicate), the slot draws a new id, and every new event is stored. */
static void test_sequence_rolled_back_loses_nothing(void **state)
{
	char before[33];
	struct env e;
	struct rpc_server *srv;
	struct outbox_stats st;
	struct sqlite3 *db;
	(void)state;

	env_up(&e);
	srv = start_audit();
	snprintf(before, sizeof(before), "%s", outbox_instance(e.ob));
	enqueue(e.producer, 0, 10);
	outbox_kick(e.ob);
	assert_true(wait_stored(10, 5000));
	for (int i = 0; i < 200; i++) { /* until the ack deleted the rows */
		outbox_get_stats(e.ob, &st);
		if (st.pending == 0)
			break;
		usleep(10 * 1000);
	}
	assert_int_equal(pool_writer_get(e.producer, &db), 0);
	assert_int_equal(
	    sqlite3_exec(db, "UPDATE sqlite_sequence SET seq = seq - 6 WHERE name = 'outbox'", NULL,
	                 NULL, NULL),
	    SQLITE_OK);
	pool_writer_put(e.producer, db);
	enqueue(e.producer, 100, 8); /* numbers 5..12: 5..10 name stored events */
	outbox_kick(e.ob);
	assert_true(wait_stored(18, 5000));
	usleep(100 * 1000);
	assert_int_equal(stored_count(), 18);
	outbox_get_stats(e.ob, &st);
	assert_int_equal(st.pending, 0);
	assert_true(st.rekeyed >= 1);
	assert_true(strcmp(outbox_instance(e.ob), before) != 0);
	assert_true(atomic_load(&audit.st->refused) >= 1);
	rpc_server_stop(srv);
	env_down(&e);
}

static void test_instance_id_is_stable(void **state)
{
	char first[33];
	struct env e;
	struct outbox *again;
	(void)state;

	env_up(&e);
	snprintf(first, sizeof(first), "%s", outbox_instance(e.ob));
	assert_int_equal(outbox_start(e.producer, "tester", e.cli, NULL, &again), 0);
	assert_string_equal(outbox_instance(again), first);
	outbox_stop(again);
	/* An empty action is refused. */
	struct sqlite3 *db;
	struct outbox_event bad = {.action = ""};
	assert_int_equal(pool_writer_get(e.producer, &db), 0);
	assert_int_not_equal(outbox_enqueue(db, &bad), 0);
	pool_writer_put(e.producer, db);
	env_down(&e);
}

/* Per-slot instances in the store: the distinct instances audit recorded. */
static int stored_instances(char out[][33], int max)
{
	struct sqlite3 *db;
	struct sqlite3_stmt *st;
	int n = 0;
	assert_int_equal(pool_reader_get(audit.svc.pool, &db), 0);
	assert_int_equal(sqlite3_prepare_v2(db,
	                                    "SELECT DISTINCT instance FROM records WHERE kind = 0",
	                                    -1, &st, NULL),
	                 SQLITE_OK);
	while (n < max && sqlite3_step(st) == SQLITE_ROW)
		snprintf(out[n++], 33, "%s", (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	pool_reader_put(audit.svc.pool, db);
	return n;
}

static _Atomic bool slot2_alive = true;
static _Atomic int released;

/* Slot 1 asks about slot 2 and the other way round: slot 1 is alive for
 * the whole test, slot 2 until the test says it died. */
static bool hold_slot(void *arg, int n)
{
	(void)arg;
	return n == 2 && !atomic_load(&slot2_alive);
}

static void release_slot(void *arg, int n)
{
	(void)arg;
	(void)n;
	atomic_fetch_add(&released, 1);
}

/* Two replicas' senders on one database: each ships under its own slot's
 * instance id, and no row twice; rows the second had claimed when it died
 * are shipped by the first under the second's id, and only once the
 * second's lock is free. */
static void test_replica_slots_and_adoption(void **state)
{
	struct env e;
	struct rpc_server *srv;
	struct outbox *ob[2];
	struct outbox_stats st[2];
	struct outbox_opts opts = {.batch = 10,
	                           .timeout_ms = 300,
	                           .idle_ms = 20,
	                           .max_backoff_ms = 100,
	                           .hold = hold_slot,
	                           .release = release_slot};
	char inst[4][33];
	(void)state;

	env_up(&e);
	outbox_stop(e.ob); /* env_up's has no hold: it would adopt slot 2's rows */
	for (int i = 0; i < 2; i++) {
		opts.slot = i + 1;
		assert_int_equal(outbox_start(e.producer, "tester", e.cli, &opts, &ob[i]), 0);
	}
	e.ob = ob[0];
	assert_string_not_equal(outbox_instance(ob[0]), outbox_instance(ob[1]));
	srv = start_audit();
	for (int i = 0; i < 20; i++) {
		enqueue(e.producer, i * 10, 10);
		outbox_kick(ob[i % 2]);
		assert_true(wait_stored((uint64_t)(i + 1) * 10, 5000));
	}
	usleep(100 * 1000);
	assert_int_equal(stored_count(), 200);
	assert_int_equal(stored_instances(inst, 4), 2);
	for (int i = 0; i < 2; i++)
		outbox_get_stats(ob[i], &st[i]);
	/* Without a failed Append nothing was re-sent: nobody shipped a row the
	 * other had claimed. */
	if (st[0].failures + st[1].failures == 0)
		assert_int_equal(st[0].sent + st[1].sent, 200);

	/* The second dies holding a claim: audit is away, so its batch stays. */
	rpc_server_stop(srv);
	outbox_stop(ob[0]); /* or it might claim them first */
	enqueue(e.producer, 200, 10);
	outbox_kick(ob[1]);
	usleep(100 * 1000);
	outbox_stop(ob[1]);
	opts.slot = 1;
	assert_int_equal(outbox_start(e.producer, "tester", e.cli, &opts, &ob[0]), 0);
	e.ob = ob[0];
	srv = start_audit();
	usleep(1500 * 1000); /* slot 2's lock still held: not ours to ship */
	assert_int_equal(stored_count(), 200);
	atomic_store(&slot2_alive, false);
	assert_true(wait_stored(210, 5000));
	usleep(100 * 1000);
	assert_int_equal(stored_count(), 210);
	assert_int_equal(stored_instances(inst, 4), 2); /* under slot 2's id */
	outbox_get_stats(ob[0], &st[0]);
	assert_int_equal(st[0].adopted, 10);
	assert_int_equal(st[0].pending, 0);
	assert_true(atomic_load(&released) >= 1);
	rpc_server_stop(srv);
	env_down(&e);
}

/* A database of the release before replica slots (outbox_meta, rows not
 * claimed) upgrades in place: slot 1 keeps the old instance id and every
 * waiting row (another slot would ship them under a new id, and audit would
 * store a batch sent before the upgrade twice), so they go out under it. */
static void test_upgrade_keeps_the_instance_and_the_rows(void **state)
{
	static const struct pool_schema old_schema = {producer_migrations, 1};
	char dir[64], path[128], old_id[33];
	struct pool *p, *a;
	struct rpc_client *cli;
	struct rpc_server *srv;
	struct outbox *ob;
	struct sqlite3 *db;
	struct sqlite3_stmt *st;
	char inst[4][33];
	(void)state;

	snprintf(dir, sizeof(dir), "/tmp/outbox_test.XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/producer.db", dir);
	assert_int_equal(pool_open(path, &old_schema, NULL, &p), 0);
	assert_int_equal(pool_writer_get(p, &db), 0);
	assert_int_equal(sqlite3_exec(db,
	                              "INSERT INTO outbox_meta VALUES "
	                              "(1, '0123456789abcdef0123456789abcdef')",
	                              NULL, NULL, NULL),
	                 SQLITE_OK);
	pool_writer_put(p, db);
	enqueue(p, 0, 7);
	pool_close(p);
	snprintf(old_id, sizeof(old_id), "0123456789abcdef0123456789abcdef");

	snprintf(path, sizeof(path), "%s/audit.db", dir);
	memset(&audit, 0, sizeof(audit));
	audit.svc.id = SVC_AUDIT;
	assert_int_equal(pool_open(path, &store_schema, NULL, &a), 0);
	audit.svc.pool = a;
	snprintf(path, sizeof(path), "%s/producer.db", dir);
	assert_int_equal(pool_open(path, &producer_schema, NULL, &p), 0);
	assert_int_equal(pool_reader_get(p, &db), 0);
	assert_int_equal(
	    sqlite3_prepare_v2(db, "SELECT count(*) FROM outbox WHERE sender = 1", -1, &st, NULL),
	    SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), 7);
	sqlite3_finalize(st);
	pool_reader_put(p, db);
	assert_int_equal(rpc_client_open(URL, 0, &cli), 0);
	atomic_store(&die_on_call, 0);
	assert_int_equal(outbox_start(p, "tester", cli, NULL, &ob), 0);
	assert_string_equal(outbox_instance(ob), old_id);
	srv = start_audit();
	outbox_kick(ob);
	assert_true(wait_stored(7, 5000));
	assert_int_equal(stored_instances(inst, 4), 1);
	assert_string_equal(inst[0], old_id);
	rpc_server_stop(srv);
	outbox_stop(ob);
	rpc_client_close(cli);
	pool_close(p);
	pool_close(a);
	snprintf(path, sizeof(path), "rm -rf %s", dir);
	assert_int_equal(system(path), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_exactly_once_when_audit_dies_mid_batch),
	    cmocka_unit_test(test_audit_down_then_up),
	    cmocka_unit_test(test_sequence_rolled_back_loses_nothing),
	    cmocka_unit_test(test_instance_id_is_stable),
	    cmocka_unit_test(test_replica_slots_and_adoption),
	    cmocka_unit_test(test_upgrade_keeps_the_instance_and_the_rows),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
