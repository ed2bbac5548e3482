/*
 * rpc_test.c — common/rpc over inproc://: the happy path, an unknown method,
 * garbage bytes and payloads, deadline expiry, a service that is down,
 * 64 calls in flight, a handler table that does not match its service,
 * (over ipc://) a request whose sender hung up before it was dispatched,
 * a server that dies holding a call (sent again only when its method is
 * safe to run twice: rpc_client_resend_on_reset). The re-listen after
 * nng 1.5's listener stall has its own binary (rpc_relisten_test.c).
 * The Audit service descriptor serves as the test contract.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "audit.pb-c.h"
#include "common/clock.h"
#include "common/err.h"
#include "common/rpc.h"

#define URL "inproc://rpc_test"

static _Atomic int handler_calls, append_calls;

static void h_ping(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	Magnetar__PingReply out = MAGNETAR__PING_REPLY__INIT;
	(void)in;
	(void)arg;
	atomic_fetch_add(&handler_calls, 1);
	out.service = "test";
	out.instance = (char *)rpc_call_request_id(call);
	out.version = "1";
	rpc_reply(call, &out.base);
}

/* Slow: used for deadlines. */
static void h_stats(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	Magnetar__StatsReply out = MAGNETAR__STATS_REPLY__INIT;
	(void)in;
	(void)arg;
	usleep(400 * 1000);
	rpc_reply(call, &out.base);
}

/* Echo: stored = first event's sequence, so each caller can check it got
 * its own answer; sleeps a little so calls overlap. */
static void h_append(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	const Magnetar__AppendRequest *req = (const Magnetar__AppendRequest *)in;
	Magnetar__AppendReply out = MAGNETAR__APPEND_REPLY__INIT;
	(void)arg;
	atomic_fetch_add(&append_calls, 1);
	if (req->n_events == 0) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INVALID, "empty", "no events");
		return;
	}
	usleep(5 * 1000);
	out.stored = (uint32_t)req->events[0]->sequence;
	rpc_reply(call, &out.base);
}

static const struct rpc_method methods[] = {
    {"Ping", h_ping, 0},
    {"Stats", h_stats, 0},
    {"Append", h_append, RPC_F_MUTATES},
};

struct fixture {
	struct rpc_server *srv;
	struct rpc_client *cli;
};

static int setup(void **state)
{
	static struct fixture f;
	struct rpc_server_opts opts = {.contexts = 64, .workers = 8};
	assert_int_equal(
	    rpc_server_start(URL, &magnetar__audit__descriptor, methods, 3, &opts, &f.srv), 0);
	assert_int_equal(rpc_client_open(URL, 0, &f.cli), 0);
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	rpc_client_close(f->cli);
	rpc_server_stop(f->srv);
	return 0;
}

static void test_happy_path(void **state)
{
	struct fixture *f = *state;
	Magnetar__PingRequest req = MAGNETAR__PING_REQUEST__INIT;
	Magnetar__RequestContext ctx = MAGNETAR__REQUEST_CONTEXT__INIT;
	struct rpc_result r;

	ctx.request_id = "req-42";
	assert_int_equal(
	    rpc_call_sync(f->cli, &magnetar__audit__descriptor, "Ping", &req.base, &ctx, 1000, &r),
	    0);
	assert_int_equal(r.status, MAGNETAR__STATUS__STATUS_OK);
	assert_non_null(r.output);
	assert_string_equal(((Magnetar__PingReply *)r.output)->service, "test");
	/* The handler saw our request id. */
	assert_string_equal(((Magnetar__PingReply *)r.output)->instance, "req-42");
	rpc_result_fini(&r);
}

static void test_handler_error(void **state)
{
	struct fixture *f = *state;
	Magnetar__AppendRequest req = MAGNETAR__APPEND_REQUEST__INIT;
	struct rpc_result r;
	assert_int_equal(rpc_call_sync(f->cli, &magnetar__audit__descriptor, "Append", &req.base,
	                               NULL, 1000, &r),
	                 0);
	assert_int_equal(r.status, MAGNETAR__STATUS__STATUS_INVALID);
	assert_string_equal(r.code, "empty");
	assert_null(r.output);
}

/* Sends raw bytes with a plain req socket and decodes the reply. */
static Magnetar__RpcReply *raw_call(const void *buf, size_t len)
{
	nng_socket s;
	nng_msg *msg;
	Magnetar__RpcReply *reply;
	assert_int_equal(nng_req0_open(&s), 0);
	assert_int_equal(nng_dial(s, URL, NULL, 0), 0);
	nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 2000);
	assert_int_equal(nng_msg_alloc(&msg, 0), 0);
	assert_int_equal(nng_msg_append(msg, buf, len), 0);
	assert_int_equal(nng_sendmsg(s, msg, 0), 0);
	assert_int_equal(nng_recvmsg(s, &msg, 0), 0);
	reply = magnetar__rpc_reply__unpack(NULL, nng_msg_len(msg), nng_msg_body(msg));
	nng_msg_free(msg);
	nng_close(s);
	assert_non_null(reply);
	return reply;
}

static void test_unknown_method(void **state)
{
	Magnetar__RpcRequest env = MAGNETAR__RPC_REQUEST__INIT;
	uint8_t buf[256];
	size_t n;
	Magnetar__RpcReply *reply;
	(void)state;
	env.method = "Nope";
	env.request_id = "x";
	n = magnetar__rpc_request__pack(&env, buf);
	reply = raw_call(buf, n);
	assert_int_equal(reply->status, MAGNETAR__STATUS__STATUS_UNIMPLEMENTED);
	assert_string_equal(reply->error->code, "unknown_method");
	magnetar__rpc_reply__free_unpacked(reply, NULL);
}

static void test_garbage(void **state)
{
	struct fixture *f = *state;
	static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02, 0x99, 0x00};
	Magnetar__RpcRequest env = MAGNETAR__RPC_REQUEST__INIT;
	Magnetar__PingRequest ping = MAGNETAR__PING_REQUEST__INIT;
	Magnetar__RpcReply *reply;
	struct rpc_result r;
	uint8_t buf[256];
	size_t n;

	reply = raw_call(junk, sizeof(junk));
	assert_int_equal(reply->status, MAGNETAR__STATUS__STATUS_INVALID);
	assert_string_equal(reply->error->code, "malformed_request");
	magnetar__rpc_reply__free_unpacked(reply, NULL);

	/* A valid envelope around a payload that is not an AppendRequest. */
	env.method = "Append";
	env.payload.data = (uint8_t *)junk;
	env.payload.len = sizeof(junk);
	n = magnetar__rpc_request__pack(&env, buf);
	reply = raw_call(buf, n);
	assert_int_equal(reply->status, MAGNETAR__STATUS__STATUS_INVALID);
	magnetar__rpc_reply__free_unpacked(reply, NULL);

	/* Empty message. */
	reply = raw_call("", 0);
	assert_int_equal(reply->status, MAGNETAR__STATUS__STATUS_INVALID);
	magnetar__rpc_reply__free_unpacked(reply, NULL);

	/* The server still serves. */
	assert_int_equal(
	    rpc_call_sync(f->cli, &magnetar__audit__descriptor, "Ping", &ping.base, NULL, 1000, &r),
	    0);
	assert_int_equal(r.status, MAGNETAR__STATUS__STATUS_OK);
	rpc_result_fini(&r);
}

static void test_deadline(void **state)
{
	struct fixture *f = *state;
	Magnetar__StatsRequest req = MAGNETAR__STATS_REQUEST__INIT;
	struct rpc_result r;
	uint64_t t0 = clock_mono_ms(), took;

	assert_int_equal(
	    rpc_call_sync(f->cli, &magnetar__audit__descriptor, "Stats", &req.base, NULL, 100, &r),
	    0);
	took = clock_mono_ms() - t0;
	assert_int_equal(r.status, MAGNETAR__STATUS__STATUS_DEADLINE_EXCEEDED);
	assert_string_equal(r.code, "service_timeout");
	assert_true(took >= 90 && took < 350);
	/* Let the slow handler finish before the next test reuses the server. */
	usleep(400 * 1000);
}

static void test_service_down(void **state)
{
	struct rpc_client *c;
	Magnetar__PingRequest req = MAGNETAR__PING_REQUEST__INIT;
	struct rpc_result r;
	(void)state;
	assert_int_equal(rpc_client_open("inproc://nobody_here", 0, &c), 0);
	assert_false(rpc_client_connected(c));
	assert_int_equal(
	    rpc_call_sync(c, &magnetar__audit__descriptor, "Ping", &req.base, NULL, 100, &r), 0);
	assert_int_equal(r.status, MAGNETAR__STATUS__STATUS_UNAVAILABLE);
	assert_string_equal(r.code, "service_unavailable");
	rpc_client_close(c);
}

static void test_unknown_method_client_side(void **state)
{
	struct fixture *f = *state;
	Magnetar__PingRequest req = MAGNETAR__PING_REQUEST__INIT;
	struct rpc_result r;
	/* Not in the descriptor, or an input of the wrong type: refused locally. */
	assert_int_equal(
	    rpc_call_sync(f->cli, &magnetar__audit__descriptor, "Nope", &req.base, NULL, 100, &r),
	    ERR_INVAL);
	assert_int_equal(
	    rpc_call_sync(f->cli, &magnetar__audit__descriptor, "Append", &req.base, NULL, 100, &r),
	    ERR_INVAL);
}

struct many {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done, ok;
};

struct one {
	struct many *m;
	uint32_t expect;
};

static void many_done(struct rpc_result *r, void *arg)
{
	struct one *o = arg;
	bool good = r->status == MAGNETAR__STATUS__STATUS_OK && r->output != NULL &&
	            ((Magnetar__AppendReply *)r->output)->stored == o->expect;
	pthread_mutex_lock(&o->m->mu);
	o->m->done++;
	o->m->ok += good;
	pthread_cond_signal(&o->m->cv);
	pthread_mutex_unlock(&o->m->mu);
}

static void test_64_in_flight(void **state)
{
	enum { N = 64 };
	struct fixture *f = *state;
	struct many m = {.done = 0, .ok = 0};
	struct one ones[N];
	Magnetar__AuditEvent evs[N], *evp[N];
	Magnetar__AppendRequest reqs[N];
	uint64_t t0 = clock_mono_ms();

	pthread_mutex_init(&m.mu, NULL);
	pthread_cond_init(&m.cv, NULL);
	for (int i = 0; i < N; i++) {
		magnetar__audit_event__init(&evs[i]);
		evs[i].sequence = 1000u + (unsigned)i;
		evs[i].action = "x";
		evp[i] = &evs[i];
		magnetar__append_request__init(&reqs[i]);
		reqs[i].n_events = 1;
		reqs[i].events = &evp[i];
		ones[i].m = &m;
		ones[i].expect = 1000u + (unsigned)i;
		assert_int_equal(rpc_call_async(f->cli, &magnetar__audit__descriptor, "Append",
		                                &reqs[i].base, NULL, 5000, many_done, &ones[i]),
		                 0);
	}
	pthread_mutex_lock(&m.mu);
	while (m.done < N)
		pthread_cond_wait(&m.cv, &m.mu);
	pthread_mutex_unlock(&m.mu);
	assert_int_equal(m.ok, N);
	/* 64 × 5 ms handlers on 8 workers overlap: far less than 320 ms serial. */
	assert_true(clock_mono_ms() - t0 < 2000);
	pthread_cond_destroy(&m.cv);
	pthread_mutex_destroy(&m.mu);
}

static void test_table_mismatch(void **state)
{
	static const struct rpc_method missing[] = {
	    {"Ping", h_ping, 0},
	    {"Stats", h_stats, 0},
	};
	static const struct rpc_method wrong[] = {
	    {"Ping", h_ping, 0},
	    {"Stats", h_stats, 0},
	    {"Apend", h_append, 0},
	};
	struct rpc_server *s;
	(void)state;
	assert_int_equal(rpc_server_start("inproc://mismatch", &magnetar__audit__descriptor,
	                                  missing, 2, NULL, &s),
	                 ERR_INVAL);
	assert_int_equal(
	    rpc_server_start("inproc://mismatch", &magnetar__audit__descriptor, wrong, 3, NULL, &s),
	    ERR_INVAL);
}

static void test_stop_with_calls_in_flight(void **state)
{
	struct rpc_server *s;
	struct rpc_client *c;
	Magnetar__StatsRequest req = MAGNETAR__STATS_REQUEST__INIT;
	struct many m = {.done = 0};
	struct one ones[4];
	(void)state;
	pthread_mutex_init(&m.mu, NULL);
	pthread_cond_init(&m.cv, NULL);
	assert_int_equal(rpc_server_start("inproc://stopping", &magnetar__audit__descriptor,
	                                  methods, 3, NULL, &s),
	                 0);
	assert_int_equal(rpc_client_open("inproc://stopping", 0, &c), 0);
	for (int i = 0; i < 4; i++) {
		ones[i].m = &m;
		ones[i].expect = 0;
		assert_int_equal(rpc_call_async(c, &magnetar__audit__descriptor, "Stats", &req.base,
		                                NULL, 1000, many_done, &ones[i]),
		                 0);
	}
	usleep(50 * 1000);
	rpc_server_stop(s); /* waits for the slow handlers; must not crash */
	pthread_mutex_lock(&m.mu);
	while (m.done < 4)
		pthread_cond_wait(&m.cv, &m.mu);
	pthread_mutex_unlock(&m.mu);
	rpc_client_close(c);
	pthread_cond_destroy(&m.cv);
	pthread_mutex_destroy(&m.mu);
}

/* Closing a client with a call in flight completes the call first: its
 * callback never runs after close returned (it would touch freed memory). */
static void test_close_client_with_call_in_flight(void **state)
{
	struct fixture *f = *state;
	struct rpc_client *c;
	Magnetar__StatsRequest req = MAGNETAR__STATS_REQUEST__INIT;
	struct many m = {.done = 0, .ok = 0};
	struct one o = {.m = &m, .expect = 0};
	(void)f;
	pthread_mutex_init(&m.mu, NULL);
	pthread_cond_init(&m.cv, NULL);
	assert_int_equal(rpc_client_open(URL, 0, &c), 0);
	assert_int_equal(rpc_call_async(c, &magnetar__audit__descriptor, "Stats", &req.base, NULL,
	                                5000, many_done, &o),
	                 0);
	usleep(20 * 1000);
	rpc_client_close(c);
	assert_int_equal(m.done, 1);
	assert_int_equal(m.ok, 0);
	usleep(400 * 1000); /* the slow handler finishes before teardown */
	pthread_cond_destroy(&m.cv);
	pthread_mutex_destroy(&m.mu);
}

/* A request whose ipc pipe is gone by the time a worker takes it (its
 * sender hung up, or died) has no identity left to check: it is refused,
 * never run. Here the one worker is busy with a slow call while a second
 * client sends a Ping and closes. */
static void test_request_from_a_closed_ipc_pipe_is_not_run(void **state)
{
	struct rpc_server_opts opts = {.contexts = 8, .workers = 1};
	Magnetar__StatsRequest slow = MAGNETAR__STATS_REQUEST__INIT;
	Magnetar__PingRequest ping = MAGNETAR__PING_REQUEST__INIT;
	struct many m = {.done = 0, .ok = 0};
	struct one o1 = {.m = &m, .expect = 0}, o2 = {.m = &m, .expect = 0};
	struct rpc_server *srv;
	struct rpc_client *busy, *gone;
	char url[64];
	(void)state;

	snprintf(url, sizeof(url), "ipc:///tmp/rpc_test.%d.sock", (int)getpid());
	pthread_mutex_init(&m.mu, NULL);
	pthread_cond_init(&m.cv, NULL);
	assert_int_equal(
	    rpc_server_start(url, &magnetar__audit__descriptor, methods, 3, &opts, &srv), 0);
	assert_int_equal(rpc_client_open(url, 0, &busy), 0);
	assert_int_equal(rpc_client_open(url, 0, &gone), 0);
	usleep(100 * 1000); /* both dialled */
	atomic_store(&handler_calls, 0);
	assert_int_equal(rpc_call_async(busy, &magnetar__audit__descriptor, "Stats", &slow.base,
	                                NULL, 5000, many_done, &o1),
	                 0);
	usleep(50 * 1000); /* the worker is in the slow handler */
	assert_int_equal(rpc_call_async(gone, &magnetar__audit__descriptor, "Ping", &ping.base,
	                                NULL, 5000, many_done, &o2),
	                 0);
	usleep(50 * 1000); /* received, waiting for the worker */
	rpc_client_close(gone);
	usleep(600 * 1000);
	assert_int_equal(atomic_load(&handler_calls), 0);
	rpc_client_close(busy);
	rpc_server_stop(srv);
	pthread_cond_destroy(&m.cv);
	pthread_mutex_destroy(&m.mu);
}

/* A server that takes one request off the wire and dies without answering
 * (its socket closes, as when a replica is SIGKILLed): the call is then sent
 * again to the live server that came up meanwhile when, and only when, its
 * method is on the client's resend list. */
struct dying {
	nng_socket sock;
	_Atomic int got;
};

struct outcome {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	Magnetar__Status status;
	char code[64];
};

static void outcome_done(struct rpc_result *r, void *arg)
{
	struct outcome *o = arg;
	pthread_mutex_lock(&o->mu);
	o->status = r->status;
	snprintf(o->code, sizeof(o->code), "%s", r->code);
	o->done = true;
	pthread_cond_signal(&o->cv);
	pthread_mutex_unlock(&o->mu);
}

static void *dying_main(void *arg)
{
	struct dying *d = arg;
	nng_msg *msg;
	if (nng_recvmsg(d->sock, &msg, 0) == 0) {
		nng_msg_free(msg);
		atomic_store(&d->got, 1);
	}
	return NULL;
}

static void call_into_a_dying_server(const char *method, const ProtobufCMessage *in,
                                     const char *const *resend, struct outcome *o, uint64_t *resent)
{
	struct rpc_server_opts opts = {.contexts = 8, .workers = 2};
	static const char *const urls = "inproc://dying,inproc://alive";
	struct rpc_server *alive;
	struct rpc_client *c;
	struct dying d = {.got = 0};
	pthread_t t;

	pthread_mutex_init(&o->mu, NULL);
	pthread_cond_init(&o->cv, NULL);
	o->done = false;
	assert_int_equal(nng_rep0_open(&d.sock), 0);
	assert_int_equal(nng_listen(d.sock, "inproc://dying", NULL, 0), 0);
	assert_int_equal(pthread_create(&t, NULL, dying_main, &d), 0);
	assert_int_equal(rpc_client_open(urls, 0, &c), 0);
	rpc_client_resend_on_reset(c, resend);
	usleep(100 * 1000); /* dialled: the dying server is the only pipe */
	assert_int_equal(rpc_call_async(c, &magnetar__audit__descriptor, method, in, NULL, 3000,
	                                outcome_done, o),
	                 0);
	for (int i = 0; i < 100 && !atomic_load(&d.got); i++)
		usleep(10 * 1000);
	assert_true(atomic_load(&d.got));
	/* The other replica is up (the client finds it within 500 ms), then the
	 * first dies with the call unanswered. */
	atomic_store(&handler_calls, 0);
	atomic_store(&append_calls, 0);
	assert_int_equal(rpc_server_start("inproc://alive", &magnetar__audit__descriptor, methods,
	                                  3, &opts, &alive),
	                 0);
	usleep(600 * 1000);
	nng_close(d.sock);
	pthread_join(t, NULL);
	pthread_mutex_lock(&o->mu);
	while (!o->done)
		pthread_cond_wait(&o->cv, &o->mu);
	pthread_mutex_unlock(&o->mu);
	*resent = rpc_client_resent(c);
	usleep(100 * 1000); /* a call sent where it should not be would have run by now */
	rpc_client_close(c);
	rpc_server_stop(alive);
	pthread_cond_destroy(&o->cv);
	pthread_mutex_destroy(&o->mu);
}

static void test_a_safe_call_is_sent_again_when_its_server_dies(void **state)
{
	static const char *const resend[] = {"Ping", NULL};
	Magnetar__PingRequest ping = MAGNETAR__PING_REQUEST__INIT;
	uint64_t resent = 0;
	struct outcome o;
	(void)state;

	call_into_a_dying_server("Ping", &ping.base, resend, &o, &resent);
	assert_int_equal(o.status, MAGNETAR__STATUS__STATUS_OK);
	assert_int_equal(atomic_load(&handler_calls), 1);
	assert_int_equal(resent, 1);
}

static void test_an_unsafe_call_is_not_sent_again(void **state)
{
	static const char *const resend[] = {"Ping", NULL};
	Magnetar__AuditEvent ev = MAGNETAR__AUDIT_EVENT__INIT;
	Magnetar__AuditEvent *evs[] = {&ev};
	Magnetar__AppendRequest req = MAGNETAR__APPEND_REQUEST__INIT;
	uint64_t resent = 1;
	struct outcome o;
	(void)state;

	ev.sequence = 7;
	req.n_events = 1;
	req.events = evs;
	call_into_a_dying_server("Append", &req.base, resend, &o, &resent);
	assert_int_equal(o.status, MAGNETAR__STATUS__STATUS_UNAVAILABLE);
	assert_string_equal(o.code, "service_unavailable");
	assert_int_equal(resent, 0);
	assert_int_equal(atomic_load(&append_calls), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_happy_path, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_handler_error, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unknown_method, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unknown_method_client_side, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_64_in_flight, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_client_with_call_in_flight, setup, teardown),
	    cmocka_unit_test(test_service_down),
	    cmocka_unit_test(test_table_mismatch),
	    cmocka_unit_test(test_stop_with_calls_in_flight),
	    cmocka_unit_test(test_request_from_a_closed_ipc_pipe_is_not_run),
	    cmocka_unit_test(test_a_safe_call_is_sent_again_when_its_server_dies),
	    cmocka_unit_test(test_an_unsafe_call_is_not_sent_again),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
