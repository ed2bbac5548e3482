/*
 * privsep_test.c — the peer policy of common/rpc over ipc:// (where the
 * kernel tells the peer's uid): a method outside the caller's roles is
 * permission_denied, a peer outside the socket's allow-list is hung up on,
 * and privsep_roles without root gives every role to our own uid.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

#include "audit.pb-c.h"
#include "common/err.h"
#include "common/privsep.h"
#include "common/rpc.h"

static unsigned test_roles; /* what the policy says our own uid holds */

static unsigned roles_fn(uid_t uid, void *arg)
{
	(void)arg;
	return uid == getuid() ? test_roles : 0;
}

static void h_ping(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	Magnetar__PingReply out = MAGNETAR__PING_REPLY__INIT;
	(void)in;
	(void)arg;
	out.service = "test";
	rpc_reply(call, &out.base);
}

static const struct rpc_method methods[] = {
    {"Ping", h_ping, 0},
    {"Stats", h_ping, RPC_F_CALLERS(RPC_BY(SVC_MAGCTL))},
    {"Append", h_ping, RPC_F_CALLERS(RPC_BY(SVC_AUTH))},
};

static int call(const char *url, const char *method, struct rpc_result *r)
{
	Magnetar__PingRequest ping = MAGNETAR__PING_REQUEST__INIT;
	Magnetar__StatsRequest stats = MAGNETAR__STATS_REQUEST__INIT;
	Magnetar__AppendRequest append = MAGNETAR__APPEND_REQUEST__INIT;
	const ProtobufCMessage *in = strcmp(method, "Ping") == 0    ? &ping.base
	                             : strcmp(method, "Stats") == 0 ? &stats.base
	                                                            : &append.base;
	struct rpc_client *c;
	int rv;

	assert_int_equal(rpc_client_open(url, 0, &c), 0);
	rv = rpc_call_sync(c, &magnetar__audit__descriptor, method, in, NULL, 700, r);
	rpc_client_close(c);
	return rv;
}

static void test_caller_masks_and_allow_list(void **state)
{
	struct rpc_peer_policy policy = {.roles = roles_fn,
	                                 .admit = RPC_BY(SVC_GATEWAY) | RPC_BY(SVC_MAGCTL)};
	struct rpc_server *srv;
	struct rpc_result r;
	char url[128];
	(void)state;

	snprintf(url, sizeof(url), "ipc:///tmp/magnetar-privsep-test-%d.sock", (int)getpid());
	rpc_set_peer_policy(&policy);
	assert_int_equal(
	    rpc_server_start(url, &magnetar__audit__descriptor, methods, 3, NULL, &srv), 0);

	/* The gateway: admitted; Ping has no mask; Stats is the operator's;
	 * Append is auth's. */
	test_roles = RPC_BY(SVC_GATEWAY);
	assert_int_equal(call(url, "Ping", &r), 0);
	assert_int_equal(r.status, MAGNETAR__STATUS__STATUS_OK);
	rpc_result_fini(&r);
	assert_int_equal(call(url, "Stats", &r), 0);
	assert_int_equal(r.status, MAGNETAR__STATUS__STATUS_PERMISSION_DENIED);
	assert_string_equal(r.code, "permission_denied");
	assert_int_equal(call(url, "Append", &r), 0);
	assert_int_equal(r.status, MAGNETAR__STATUS__STATUS_PERMISSION_DENIED);

	/* The operator may call Stats. */
	test_roles = RPC_BY(SVC_MAGCTL);
	assert_int_equal(call(url, "Stats", &r), 0);
	assert_int_equal(r.status, MAGNETAR__STATUS__STATUS_OK);
	rpc_result_fini(&r);

	/* Auth is not on this socket's allow-list: refused before decoding,
	 * even for the method that would be its own. */
	test_roles = RPC_BY(SVC_AUTH);
	assert_int_equal(call(url, "Append", &r), 0);
	assert_int_equal(r.status, MAGNETAR__STATUS__STATUS_PERMISSION_DENIED);
	assert_string_equal(r.code, RPC_CODE_PEER_REFUSED);
	rpc_result_fini(&r);

	rpc_server_stop(srv);
}

static void test_roles_without_root(void **state)
{
	struct privsep ps;
	struct conf c;
	char err[128];
	(void)state;

	if (geteuid() == 0)
		skip();
	memset(&c, 0, sizeof(c));
	assert_int_equal(privsep_init(&ps, &c, false, err, sizeof(err)), 0);
	assert_false(ps.on);
	/* One uid holds every role, so the checks pass (but still run). */
	assert_int_equal(privsep_roles(&ps, getuid()) & 0x3f, 0x3f);
	assert_int_equal(privsep_roles(&ps, getuid() + 1), 0);
	assert_int_equal(privsep_drop(&ps, SVC_AUTH, err, sizeof(err)), 0);
}

/* A replicated service's socket dir (docs/scaling.md): made root's 02750,
 * and refused when it is the run dir, not a dir, or someone else's. */
static void test_socket_dir(void **state)
{
	struct privsep ps = {.on = true, .group = getgid()};
	char run[] = "/tmp/privsep_test.XXXXXX", dir[64], other[64], link_[64], cmd[96];
	struct stat st;
	(void)state;

	if (geteuid() != 0)
		skip(); /* chown needs root; CI runs the suite as root */
	assert_non_null(mkdtemp(run));
	snprintf(dir, sizeof(dir), "%s/auth", run);
	assert_int_equal(privsep_socket_dir(&ps, run, dir), 0);
	assert_int_equal(lstat(dir, &st), 0);
	assert_true(S_ISDIR(st.st_mode) && st.st_uid == 0 && (st.st_mode & 07777) == 02750);
	assert_int_equal(privsep_socket_dir(&ps, run, dir), 0); /* found as made */
	assert_int_equal(privsep_socket_dir(&ps, run, run), ERR_PERM);
	snprintf(other, sizeof(other), "%s/squatted", run);
	assert_int_equal(mkdir(other, 0777), 0);
	assert_int_equal(chown(other, 65534, 65534), 0);
	assert_int_equal(privsep_socket_dir(&ps, run, other), ERR_PERM);
	snprintf(link_, sizeof(link_), "%s/link", run);
	assert_int_equal(symlink(dir, link_), 0);
	assert_int_equal(privsep_socket_dir(&ps, run, link_), ERR_PERM);
	ps.on = false; /* without root: nothing checked, nothing made */
	assert_int_equal(privsep_socket_dir(&ps, run, run), 0);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", run);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_caller_masks_and_allow_list),
	    cmocka_unit_test(test_roles_without_root),
	    cmocka_unit_test(test_socket_dir),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
