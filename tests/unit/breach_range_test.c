/*
 * breach_range_test.c — the Range method end to end over inproc:// in one
 * process: prefix validation, off mode, the offline store, a cache hit, and
 * the fail modes when the API is unreachable (open: source "unavailable";
 * closed: STATUS_UNAVAILABLE/breach_unavailable), always before the
 * caller's deadline. Run under TSan: handlers and the fetcher thread meet.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/rpc.h"
#include "services/breach/breach.h"

#define URL "inproc://breach_range_test"

static struct breach b;
static struct breach_vars bv; /* b.svc.conf.own: the variables, set by each test */
static struct rpc_server *server;
static struct rpc_client *client;
static char dir[] = "/tmp/breach_range_testXXXXXX";

static const struct rpc_method methods[] = {
    {"Ping", svc_handle_ping, 0},
    {"Stats", svc_handle_stats, 0},
    {"Range", range_handle, 0},
    {"Reload", range_handle_reload, RPC_F_MUTATES},
};

static int setup(void **state)
{
	struct rpc_server_opts opts = {.arg = &b};
	struct fetch_opts fo = {.base_url = "http://127.0.0.1:1", .backoff_ms = 20};
	(void)state;

	assert_non_null(mkdtemp(dir));
	b.svc.id = SVC_BREACH;
	b.svc.conf.own = &bv;
	b.alarm_interval_ms = 60000;
	pthread_mutex_init(&b.store_mu, NULL);
	snprintf(b.pw_path, sizeof(b.pw_path), "%s/%s", dir, PWSTORE_FILE);
	assert_int_equal(cache_new(16, BREACH_CACHE_TTL_MS, &b.cache), 0);
	assert_int_equal(fetch_start(&fo, &b.fetch), 0);
	assert_int_equal(
	    rpc_server_start(URL, &magnetar__breach__descriptor, methods, 4, &opts, &server), 0);
	assert_int_equal(rpc_client_open(URL, 0, &client), 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	rpc_client_close(client);
	rpc_server_stop(server);
	fetch_stop(b.fetch);
	cache_free(b.cache);
	pwstore_unref(b.pw);
	unlink(b.pw_path);
	rmdir(dir);
	return 0;
}

static void call(const char *prefix, int timeout_ms, struct rpc_result *r)
{
	Magnetar__RangeRequest req = MAGNETAR__RANGE_REQUEST__INIT;
	req.prefix = (char *)prefix;
	assert_int_equal(rpc_call_sync(client, &magnetar__breach__descriptor, "Range", &req.base,
	                               NULL, timeout_ms, r),
	                 0);
}

static const Magnetar__RangeReply *ok(struct rpc_result *r, const char *source)
{
	const Magnetar__RangeReply *rep = (const Magnetar__RangeReply *)r->output;
	assert_int_equal(r->status, MAGNETAR__STATUS__STATUS_OK);
	assert_string_equal(rep->source, source);
	assert_int_equal(rep->suffixes.len, rep->n_counts * PAIRS_SUFFIX_LEN);
	return rep;
}

static void test_invalid_prefix(void **state)
{
	static const char *const bad[] = {"", "5BAA", "5BAA61", "5BAAG", "5BA A", "-5BAA"};
	struct rpc_result r;
	(void)state;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		call(bad[i], 1000, &r);
		assert_int_equal(r.status, MAGNETAR__STATUS__STATUS_INVALID);
		assert_string_equal(r.code, "invalid_prefix");
		rpc_result_fini(&r);
	}
}

static void test_off(void **state)
{
	struct rpc_result r;
	(void)state;

	bv.hibp_mode = BREACH_HIBP_OFF;
	bv.breach_fail_closed = true; /* off is a choice, not an outage */
	call("5BAA6", 1000, &r);
	assert_int_equal(ok(&r, "off")->n_counts, 0);
	rpc_result_fini(&r);
	bv.breach_fail_closed = false;
}

static void test_cache_hit(void **state)
{
	struct pairs *p = pairs_new(1);
	const Magnetar__RangeReply *rep;
	struct rpc_result r;
	uint64_t now = clock_unix_ms();
	(void)state;

	bv.hibp_mode = BREACH_HIBP_ONLINE;
	memset(p->suffixes, 0xAB, PAIRS_SUFFIX_LEN);
	p->suffixes[0] = 0x0A;
	p->counts[0] = 77;
	cache_put(b.cache, 0xABCDE, p, now, now);
	pairs_unref(p);
	call("abcde", 1000, &r);
	rep = ok(&r, "cache");
	assert_int_equal(rep->n_counts, 1);
	assert_int_equal(rep->counts[0], 77);
	assert_int_equal(rep->suffixes.data[0], 0x0A);
	rpc_result_fini(&r);
}

static void test_unreachable_open_and_closed(void **state)
{
	struct rpc_result r;
	uint64_t t0;
	(void)state;

	bv.hibp_mode = BREACH_HIBP_ONLINE;
	bv.breach_fail_closed = false;
	call("00001", 2000, &r);
	assert_int_equal(ok(&r, "unavailable")->n_counts, 0);
	rpc_result_fini(&r);
	bv.breach_fail_closed = true;
	t0 = clock_mono_ms();
	call("00002", 2000, &r);
	assert_int_equal(r.status, MAGNETAR__STATUS__STATUS_UNAVAILABLE);
	assert_string_equal(r.code, "breach_unavailable");
	assert_true(clock_mono_ms() - t0 < 2000);
	rpc_result_fini(&r);
	bv.breach_fail_closed = false;
	assert_true(b.unavailable >= 2);
}

static void test_short_deadline_still_answered(void **state)
{
	struct rpc_result r;
	(void)state;

	/* retries (20 ms, 40 ms) do not fit in 40 ms: answered, not timed out */
	bv.hibp_mode = BREACH_HIBP_ONLINE;
	call("00003", 40, &r);
	ok(&r, "unavailable");
	rpc_result_fini(&r);
}

static void test_offline(void **state)
{
	uint64_t *per = calloc(PWSTORE_BUCKETS, sizeof(*per));
	uint8_t h[20] = {0x5B, 0xAA, 0x61, 0xE4};
	struct pwstore_writer *w;
	const Magnetar__RangeReply *rep;
	struct rpc_result r;
	(void)state;

	bv.hibp_mode = BREACH_HIBP_OFFLINE;
	call("5BAA6", 1000, &r); /* no store yet */
	ok(&r, "unavailable");
	rpc_result_fini(&r);
	per[0x5BAA6] = 1;
	assert_int_equal(pwstore_writer_open(b.pw_path, per, &w), 0);
	assert_int_equal(pwstore_writer_add(w, h, 12345), 0);
	assert_int_equal(pwstore_writer_commit(w), 0);
	free(per);
	assert_int_equal(range_reload(&b), 0);
	call("5baa6", 1000, &r);
	rep = ok(&r, "offline");
	assert_int_equal(rep->n_counts, 1);
	assert_int_equal(rep->counts[0], 12345);
	assert_int_equal(rep->suffixes.data[0], 0x01);
	assert_int_equal(rep->suffixes.data[1], 0xE4);
	rpc_result_fini(&r);
	call("5BAA7", 1000, &r);
	assert_int_equal(ok(&r, "offline")->n_counts, 0);
	rpc_result_fini(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_invalid_prefix),
	    cmocka_unit_test(test_off),
	    cmocka_unit_test(test_cache_hit),
	    cmocka_unit_test(test_unreachable_open_and_closed),
	    cmocka_unit_test(test_short_deadline_still_answered),
	    cmocka_unit_test(test_offline),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
