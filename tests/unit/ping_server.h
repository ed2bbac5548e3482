/*
 * ping_server.h — the throwaway RPC server several unit tests stand up: a
 * method table for the Audit contract (the server checks its table
 * against the whole contract) in which only Ping answers, as service
 * PING_SERVER_SERVICE, and nng's own leaks are suppressed for
 * LeakSanitizer. Included by one test file each, so its statics are that
 * file's.
 */
#ifndef MAGNETAR_TESTS_PING_SERVER_H
#define MAGNETAR_TESTS_PING_SERVER_H

#include "audit.pb-c.h"
#include "common/rpc.h"

#define PING_SERVER_SERVICE "ping-server"

/* Read by the sanitizer runtime when built with ASan/LSan. nng 1.5.2 leaks,
 * inside libnng, a listener's accept state when its socket is closed while
 * a connection is being negotiated, and a stranded dialer's pipe state
 * after nng_dialer_close (docs/reliability.md); the tests allocate nothing
 * there themselves. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
	return "leak:libnng.so\n";
}

static void ping_server_ping(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	Magnetar__PingReply out = MAGNETAR__PING_REPLY__INIT;
	(void)in;
	(void)arg;
	out.service = PING_SERVER_SERVICE;
	out.instance = "1";
	out.version = "1";
	rpc_reply(call, &out.base);
}

static void ping_server_unused(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	(void)in;
	(void)arg;
	rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INVALID, "unused", "not called here");
}

static const struct rpc_method ping_server_methods[] = {
    {"Ping", ping_server_ping, 0},
    {"Stats", ping_server_unused, 0},
    {"Append", ping_server_unused, RPC_F_MUTATES},
};

#define PING_SERVER_NMETHODS (sizeof(ping_server_methods) / sizeof(ping_server_methods[0]))

#endif
