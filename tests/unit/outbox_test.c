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

#include "common/clock.h"
#include "common/outbox.h"
#include "common/pool.h"
#include "common/rpc.h"
#include "services/audit/audit.h"

#define URL "inproc://outbox_test"

static const char *const producer_migrations[] = {outbox_migration};
static const struct pool_schema producer_schema = {producer_migrations, 1};

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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_exactly_once_when_audit_dies_mid_batch),
	    cmocka_unit_test(test_audit_down_then_up),
	    cmocka_unit_test(test_instance_id_is_stable),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
