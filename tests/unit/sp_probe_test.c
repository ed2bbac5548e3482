/*
 * sp_probe_test.c — the self-checks' plain-socket SP client against real
 * nng listeners: a rep0 server over ipc:// and tcp:// accepts it as a pipe
 * and answers its Ping; a pub0 socket takes it as a subscriber; a listener
 * of another protocol, a silent one, nothing at all, inproc:// and a
 * squatter (another process) are each refused with their own error; a
 * wrong-protocol probe leaves the listener accepting.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <nng/nng.h>
#include <nng/protocol/pubsub0/pub.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "audit.pb-c.h"
#include "common/clock.h"
#include "common/err.h"
#include "common/rpc.h"
#include "tests/unit/ping_server.h"
#include "common/sp_probe.h"

/* Opens a probe on a live rpc server, sees the pipe counted, pings. */
static void probe_and_ping(const char *url)
{
	struct rpc_server_opts opts = {.contexts = 2, .workers = 1};
	Magnetar__RpcRequest env = MAGNETAR__RPC_REQUEST__INIT;
	Magnetar__RpcReply *reply;
	Magnetar__PingReply *ping;
	struct rpc_server *srv;
	struct sp_probe p;
	uint8_t req[128], ans[1024];
	size_t len, got = 0;
	uint64_t before, until;

	assert_int_equal(rpc_server_start(url, &magnetar__audit__descriptor, ping_server_methods,
	                                  PING_SERVER_NMETHODS, &opts, &srv),
	                 0);
	before = rpc_server_pipes(srv);
	assert_int_equal(sp_probe_open(&p, url, SP_PROTO_REQ, SP_PROTO_REP, 2000), 0);
	until = clock_mono_ms() + 2000;
	while (rpc_server_pipes(srv) == before && clock_mono_ms() < until)
		usleep(1000);
	assert_true(rpc_server_pipes(srv) > before);
	env.method = "Ping";
	env.request_id = "probe";
	env.deadline_unix_ms = clock_unix_ms() + 2000;
	len = magnetar__rpc_request__pack(&env, req);
	assert_int_equal(sp_probe_call(&p, 7, req, len, ans, sizeof(ans), &got, 2000), 0);
	reply = magnetar__rpc_reply__unpack(NULL, got, ans);
	assert_non_null(reply);
	assert_int_equal(reply->status, MAGNETAR__STATUS__STATUS_OK);
	ping = magnetar__ping_reply__unpack(NULL, reply->payload.len, reply->payload.data);
	assert_non_null(ping);
	assert_string_equal(ping->service, PING_SERVER_SERVICE);
	magnetar__ping_reply__free_unpacked(ping, NULL);
	magnetar__rpc_reply__free_unpacked(reply, NULL);
	/* A second call on the same probe: the id must match again. */
	assert_int_equal(sp_probe_call(&p, 8, req, len, ans, sizeof(ans), &got, 2000), 0);
	sp_probe_close(&p);
	/* Expecting a publisher where a rep0 server answers: refused. */
	assert_int_equal(sp_probe_open(&p, url, SP_PROTO_SUB, SP_PROTO_PUB, 2000), ERR_PROTO);
	before = rpc_server_pipes(srv);
	assert_int_equal(sp_probe_open(&p, url, SP_PROTO_REQ, SP_PROTO_REP, 2000), 0);
	until = clock_mono_ms() + 2000;
	while (rpc_server_pipes(srv) == before && clock_mono_ms() < until)
		usleep(1000);
	assert_true(rpc_server_pipes(srv) > before); /* it did not stall the listener */
	sp_probe_close(&p);
	rpc_server_stop(srv);
}

static void test_ipc_rep(void **state)
{
	char url[96];
	(void)state;
	snprintf(url, sizeof(url), "ipc:///tmp/sp_probe_test.%d.sock", (int)getpid());
	probe_and_ping(url);
	unlink(url + 6);
}

static void test_tcp_rep(void **state)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t slen = sizeof(sa);
	char url[96];
	int fd;
	(void)state;

	/* A free port, found by binding port 0 and letting it go. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	sa.sin_addr.s_addr = htonl(0x7f000001);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &slen), 0);
	close(fd);
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", ntohs(sa.sin_port));
	probe_and_ping(url);
}

static void test_pub_takes_a_subscriber(void **state)
{
	nng_socket pub;
	struct sp_probe p;
	char url[96];
	(void)state;

	snprintf(url, sizeof(url), "ipc:///tmp/sp_probe_test.pub.%d.sock", (int)getpid());
	assert_int_equal(nng_pub0_open(&pub), 0);
	assert_int_equal(nng_listen(pub, url, NULL, 0), 0);
	assert_int_equal(sp_probe_open(&p, url, SP_PROTO_SUB, SP_PROTO_PUB, 2000), 0);
	sp_probe_close(&p);
	assert_int_equal(sp_probe_open(&p, url, SP_PROTO_REQ, SP_PROTO_REP, 2000), ERR_PROTO);
	nng_close(pub);
	unlink(url + 6);
}

/* A plain listener that never accepts: the handshake never comes. */
static void test_silent_listener_times_out(void **state)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct sp_probe p;
	char url[96];
	uint64_t t0;
	int fd;
	(void)state;

	snprintf(url, sizeof(url), "ipc:///tmp/sp_probe_test.silent.%d.sock", (int)getpid());
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", url + 6);
	unlink(sun.sun_path);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(listen(fd, 4), 0);
	t0 = clock_mono_ms();
	assert_int_equal(sp_probe_open(&p, url, SP_PROTO_REQ, SP_PROTO_REP, 300), ERR_TIMEOUT);
	assert_true(clock_mono_ms() - t0 < 2000);
	close(fd);
	unlink(sun.sun_path);
}

static void test_nothing_to_probe(void **state)
{
	struct sp_probe p;
	(void)state;
	assert_int_equal(sp_probe_open(&p, "ipc:///tmp/sp_probe_test.nobody.sock", SP_PROTO_REQ,
	                               SP_PROTO_REP, 300),
	                 ERR_IO);
	assert_int_equal(sp_probe_open(&p, "inproc://x", SP_PROTO_REQ, SP_PROTO_REP, 300),
	                 ERR_INVAL);
	assert_int_equal(p.fd, -1);
}

/* A socket another process listens on, answering SP like us (even with
 * our uid): refused before a byte is sent. */
static void test_squatter_is_refused(void **state)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct sp_probe p;
	char url[96];
	int ready[2], fd;
	pid_t pid;
	char c;
	(void)state;

	snprintf(url, sizeof(url), "ipc:///tmp/sp_probe_test.squat.%d.sock", (int)getpid());
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", url + 6);
	unlink(sun.sun_path);
	assert_int_equal(pipe(ready), 0);
	if ((pid = fork()) == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* gone with a failed test */
		close(ready[0]);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0 || listen(fd, 4) != 0)
			_exit(1);
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	close(ready[1]); /* a child that fails ends the read below */
	assert_int_equal(read(ready[0], &c, 1), 1);
	assert_int_equal(sp_probe_open(&p, url, SP_PROTO_REQ, SP_PROTO_REP, 500), ERR_PERM);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	unlink(sun.sun_path);
	close(ready[0]);
}

static void test_reply_body(void **state)
{
	const uint8_t ok[] = {0x80, 0, 0, 5, 'h', 'i'}, other[] = {0x80, 0, 0, 6, 'h'};
	const uint8_t *body;
	size_t len;
	(void)state;

	assert_int_equal(sp_reply_body(ok, sizeof(ok), 5, &body, &len), 0);
	assert_int_equal(len, 2);
	assert_memory_equal(body, "hi", 2);
	assert_int_equal(sp_reply_body(other, sizeof(other), 5, &body, &len), ERR_PROTO);
	assert_int_equal(sp_reply_body(ok, 3, 5, &body, &len), ERR_PROTO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ipc_rep),
	    cmocka_unit_test(test_tcp_rep),
	    cmocka_unit_test(test_pub_takes_a_subscriber),
	    cmocka_unit_test(test_silent_listener_times_out),
	    cmocka_unit_test(test_nothing_to_probe),
	    cmocka_unit_test(test_squatter_is_refused),
	    cmocka_unit_test(test_reply_body),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
