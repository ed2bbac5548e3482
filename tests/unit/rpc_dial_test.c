/*
 * rpc_dial_test.c — a client whose connection the server closed before the
 * SP handshake (a server exiting or listening again at that moment): nng
 * 1.5.2's dialer never dials again, and rpc_dials_renew_idle replaces it so
 * that the client reaches the server that comes up next. A dialer that no
 * longer dials is replaced whatever the cause; a connected one never is,
 * also after rpc_redial_all (the privilege drop's re-dial).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "audit.pb-c.h"
#include "common/clock.h"
#include "common/rpc.h"
#include "tests/unit/ping_server.h"

#include <nng/protocol/reqrep0/req.h>

static bool pinged(struct rpc_client *c)
{
	Magnetar__PingRequest ping = MAGNETAR__PING_REQUEST__INIT;
	struct rpc_result r;
	bool ok = rpc_call_sync(c, &magnetar__audit__descriptor, "Ping", &ping.base, NULL, 1000,
	                        &r) == 0 &&
	          r.status == MAGNETAR__STATUS__STATUS_OK;
	rpc_result_fini(&r);
	return ok;
}

/* Waits up to ms for the client to have a pipe, calling
 * rpc_dials_renew_idle every 100 ms when `renew`. */
static bool connects_within(struct rpc_client *c, int ms, bool renew)
{
	for (uint64_t until = clock_mono_ms() + (uint64_t)ms; clock_mono_ms() < until;) {
		if (rpc_client_connected(c))
			return true;
		if (renew)
			rpc_dials_renew_idle(clock_mono_ms());
		usleep(100 * 1000);
	}
	return rpc_client_connected(c);
}

/* A listener of our own that accepts every connection and closes it at
 * once: what a client's dialer meets when its server dies or listens again
 * while the dialer connects. */
static int raw_listener(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);

	assert_true(fd >= 0);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	unlink(path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(listen(fd, 16), 0);
	return fd;
}

/* For 300 ms, closes each connection as soon as it is queued: spinning,
 * so that the close comes before nng's thread writes its SP header (the
 * EPIPE that strands the dialer). Returns how many it closed. */
static int hang_up_on_every_client(int fd, const char *path)
{
	int accepted = 0;

	for (uint64_t until = clock_mono_ms() + 300; clock_mono_ms() < until;) {
		int c = accept(fd, NULL, NULL);
		if (c >= 0) {
			close(c);
			accepted++;
		}
	}
	close(fd);
	unlink(path);
	return accepted;
}

static void test_a_dialer_nng_gave_up_on_is_renewed(void **state)
{
	struct rpc_server_opts opts = {.contexts = 2, .workers = 1};
	struct rpc_server *srv;
	struct rpc_client *c;
	uint64_t before = rpc_dials_renewed();
	bool stranded;
	char url[64];
	int fd, accepted;
	(void)state;

	snprintf(url, sizeof(url), "ipc:///tmp/rpc_dial_test.%d.sock", (int)getpid());
	fd = raw_listener(url + 6);
	assert_int_equal(rpc_client_open(url, 0, &c), 0);
	accepted = hang_up_on_every_client(fd, url + 6);
	assert_true(accepted >= 1);
	assert_int_equal(rpc_server_start(url, &magnetar__audit__descriptor, ping_server_methods,
	                                  PING_SERVER_NMETHODS, &opts, &srv),
	                 0);
	/* nng 1.5.2 dials every 50-500 ms: a live dialer is connected by now. */
	stranded = !connects_within(c, 1500, false);
	printf("after %d hang-up(s) before the handshake the dialer %s\n", accepted,
	       stranded ? "gave up (nng 1.5.2)" : "dialled again");
	assert_true(connects_within(c, 2 * RPC_DIAL_RENEW_MS + 1000, true));
	assert_true(pinged(c));
	if (stranded)
		assert_true(rpc_dials_renewed() > before);
	rpc_client_close(c);
	rpc_server_stop(srv);
}

static nng_pipe last_pipe; /* the last pipe a bare socket added */

/* A bare req socket whose pipe events reach `d`, as rpc_client.c's do. */
static void dial_events(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	if (ev == NNG_PIPE_EV_ADD_POST)
		last_pipe = p;
	rpc_dial_pipe_event(arg, p, ev);
}

static nng_socket bare_socket(struct rpc_dial *d)
{
	nng_socket s;

	assert_int_equal(nng_req0_open(&s), 0);
	nng_socket_set_ms(s, NNG_OPT_RECONNMINT, 50);
	nng_socket_set_ms(s, NNG_OPT_RECONNMAXT, 500);
	assert_int_equal(nng_pipe_notify(s, NNG_PIPE_EV_ADD_POST, dial_events, d), 0);
	assert_int_equal(nng_pipe_notify(s, NNG_PIPE_EV_REM_POST, dial_events, d), 0);
	return s;
}

static bool dial_connected_within(const struct rpc_dial *d, int ms)
{
	for (uint64_t until = clock_mono_ms() + (uint64_t)ms; clock_mono_ms() < until;) {
		if (rpc_dial_has_pipe(d))
			return true;
		usleep(20 * 1000);
	}
	return rpc_dial_has_pipe(d);
}

/* Whatever made nng stop dialling (here: its dialer closed behind our
 * back), a dialer without a pipe for RPC_DIAL_RENEW_MS is replaced. */
static void test_a_dialer_that_no_longer_dials_is_renewed(void **state)
{
	struct rpc_server_opts opts = {.contexts = 2, .workers = 1};
	struct rpc_dial d = {0};
	struct rpc_server *srv;
	nng_socket s = bare_socket(&d);
	uint64_t now = clock_mono_ms();
	char url[64];
	(void)state;

	snprintf(url, sizeof(url), "ipc:///tmp/rpc_dial_test.dead.%d.sock", (int)getpid());
	unlink(url + 6);
	assert_int_equal(rpc_dial_start(&d, s, url), 0);
	nng_dialer_close(d.dialer);
	assert_int_equal(rpc_server_start(url, &magnetar__audit__descriptor, ping_server_methods,
	                                  PING_SERVER_NMETHODS, &opts, &srv),
	                 0);
	assert_false(dial_connected_within(&d, 700));
	assert_int_equal(rpc_dials_renew_idle(now), 0); /* idle from now on */
	assert_int_equal(rpc_dials_renew_idle(now + RPC_DIAL_RENEW_MS - 1), 0);
	assert_int_equal(rpc_dials_renew_idle(now + RPC_DIAL_RENEW_MS), 1);
	assert_true(dial_connected_within(&d, 2000));
	rpc_dial_stop(&d);
	nng_close(s);
	rpc_server_stop(srv);
}

/* Connected, then re-dialled the way svc_lockdown does after the privilege
 * drop: the new dialer's pipe is counted, so it is never taken for idle
 * (it once was: every service cut its clients' pipes 2 s after start). */
static void test_a_connected_dialer_is_kept_after_a_redial(void **state)
{
	struct rpc_server_opts opts = {.contexts = 2, .workers = 1};
	struct rpc_dial d = {0};
	struct rpc_server *srv;
	nng_socket s = bare_socket(&d);
	uint64_t now;
	char url[64];
	(void)state;

	snprintf(url, sizeof(url), "ipc:///tmp/rpc_dial_test.kept.%d.sock", (int)getpid());
	assert_int_equal(rpc_server_start(url, &magnetar__audit__descriptor, ping_server_methods,
	                                  PING_SERVER_NMETHODS, &opts, &srv),
	                 0);
	assert_int_equal(rpc_dial_start(&d, s, url), 0);
	assert_true(dial_connected_within(&d, 2000));
	rpc_redial_all();
	assert_true(dial_connected_within(&d, 2000));
	/* However long it has been, a dialer with its pipe stays. */
	now = clock_mono_ms();
	assert_int_equal(rpc_dials_renew_idle(now), 0);
	assert_int_equal(rpc_dials_renew_idle(now + 10 * 1000), 0);
	assert_int_equal(rpc_dials_renew_idle(now + 20 * 1000), 0);
	assert_true(rpc_dial_has_pipe(&d));
	rpc_dial_stop(&d);
	nng_close(s);
	rpc_server_stop(srv);
}

/* nng 1.5.2 runs a pipe's REM_POST as soon as it closes, and its ADD_POST
 * may come after: a pipe removed before it was added must not stay
 * counted (the dialer would never be taken for idle again). Played here
 * with the events of a live pipe, in that order. */
static void test_a_removal_before_its_addition_is_not_counted(void **state)
{
	struct rpc_server_opts opts = {.contexts = 2, .workers = 1};
	struct rpc_dial d = {0};
	struct rpc_server *srv;
	nng_socket s = bare_socket(&d);
	char url[64];
	(void)state;

	snprintf(url, sizeof(url), "ipc:///tmp/rpc_dial_test.order.%d.sock", (int)getpid());
	assert_int_equal(rpc_server_start(url, &magnetar__audit__descriptor, ping_server_methods,
	                                  PING_SERVER_NMETHODS, &opts, &srv),
	                 0);
	assert_int_equal(rpc_dial_start(&d, s, url), 0);
	assert_true(dial_connected_within(&d, 2000));
	rpc_dial_pipe_event(&d, last_pipe, NNG_PIPE_EV_REM_POST); /* its removal */
	assert_false(rpc_dial_has_pipe(&d));
	rpc_dial_pipe_event(&d, last_pipe, NNG_PIPE_EV_REM_POST); /* again: before its add */
	rpc_dial_pipe_event(&d, last_pipe, NNG_PIPE_EV_ADD_POST); /* the late add */
	assert_false(rpc_dial_has_pipe(&d));
	/* The next pipe counts as usual. */
	rpc_dial_pipe_event(&d, last_pipe, NNG_PIPE_EV_ADD_POST);
	assert_true(rpc_dial_has_pipe(&d));
	rpc_dial_stop(&d);
	nng_close(s);
	rpc_server_stop(srv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_a_dialer_nng_gave_up_on_is_renewed),
	    cmocka_unit_test(test_a_dialer_that_no_longer_dials_is_renewed),
	    cmocka_unit_test(test_a_connected_dialer_is_kept_after_a_redial),
	    cmocka_unit_test(test_a_removal_before_its_addition_is_not_counted),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
