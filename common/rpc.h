/*
 * rpc.h — protobuf-c services over nng req/rep.
 *
 * Server: binds a ProtobufCServiceDescriptor plus a handler table to a rep0
 * socket. N nng contexts receive concurrently; each request is decoded and
 * dispatched on a small worker pool (handlers may block on SQLite, never on
 * nng's own threads). The envelope (proto/common.proto RpcRequest) names the
 * method; the payload is unpacked with that method's input descriptor. No
 * service writes a dispatch switch or a pack/unpack pair.
 *
 * Client: a req0 socket that dials without blocking (a service that is down
 * is a 503, not a start-up failure). Each call gets its own context and aio
 * and a deadline; NNG_OPT_REQ_RESENDTIME is infinite, so nng does not
 * silently re-send (handlers still get the request id to stay idempotent,
 * because a closed pipe can still cause one re-send).
 */
#ifndef MAGNETAR_RPC_H
#define MAGNETAR_RPC_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common.pb-c.h"

#define RPC_MAX_MSG_DEFAULT (1u << 20) /* NNG_OPT_RECVMAXSZ unless told */

/* ---- server ------------------------------------------------------------ */

struct rpc_server;
struct rpc_call;

/*
 * A handler. `input` is the unpacked request (owned by the call, valid until
 * the reply is sent). The handler must answer exactly once, with rpc_reply()
 * or rpc_reply_error(), now or later from any thread.
 */
typedef void (*rpc_handler_fn)(struct rpc_call *call, const ProtobufCMessage *input, void *arg);

/* Per-method flags, beside the handler (CONVENTIONS.md: dispatch by table). */
enum rpc_method_flags {
	RPC_F_NONE = 0,
	RPC_F_MUTATES = 1u << 0, /* changes state: must be idempotent per request id */
};

struct rpc_method {
	const char *name; /* exactly as in the .proto service block */
	rpc_handler_fn handler;
	unsigned flags;
};

struct rpc_server_opts {
	int contexts;   /* requests received concurrently (default 64) */
	int workers;    /* handler threads (default 4) */
	size_t max_msg; /* NNG_OPT_RECVMAXSZ (default RPC_MAX_MSG_DEFAULT) */
	void *arg;      /* passed to every handler */
};

/*
 * Listens on `url` and serves `desc` with `methods`. Every method of the
 * descriptor must have exactly one row in `methods` and vice versa:
 * otherwise ERR_INVAL (a broken build, caught at start).
 */
int rpc_server_start(const char *url, const ProtobufCServiceDescriptor *desc,
                     const struct rpc_method *methods, size_t nmethods,
                     const struct rpc_server_opts *opts, struct rpc_server **out);

/* Closes the socket, waits until every dispatched call has replied, frees. */
void rpc_server_stop(struct rpc_server *s);

/* Calls fn for each counter ("rpc.<Method>.calls", "rpc.<Method>.errors",
 * "rpc.malformed", "rpc.unknown_method", "rpc.expired"). */
void rpc_server_counters(struct rpc_server *s,
                         void (*fn)(const char *name, uint64_t value, void *arg), void *arg);

/* What a handler may ask about its call. */
const char *rpc_call_method(const struct rpc_call *call);
const char *rpc_call_request_id(const struct rpc_call *call);
const Magnetar__RequestContext *rpc_call_context(const struct rpc_call *call); /* never NULL */
uint64_t rpc_call_deadline_ms(const struct rpc_call *call); /* unix ms; 0 = none */
/* The peer's uid on ipc://; ERR_NOTFOUND on tcp:// and inproc://. */
int rpc_call_peer_uid(const struct rpc_call *call, uid_t *uid);
struct rpc_server *rpc_call_server(const struct rpc_call *call);

/* Answers OK with `output` (packed now; the caller keeps ownership). */
void rpc_reply(struct rpc_call *call, const ProtobufCMessage *output);
/* Answers with a status other than OK, a stable code and a human message. */
void rpc_reply_error(struct rpc_call *call, Magnetar__Status status, const char *code,
                     const char *message);
/* Details some errors carry (zero when absent). */
struct rpc_error_extra {
	uint64_t breach_count;	/* with code password_breached */
	uint32_t retry_after_s; /* with RESOURCE_EXHAUSTED */
};
/* The same with the error's details set. */
void rpc_reply_error_ex(struct rpc_call *call, Magnetar__Status status, const char *code,
                        const char *message, const struct rpc_error_extra *extra);

/*
 * Decodes a request envelope and unpacks its payload with the input
 * descriptor of the method it names in `desc`: the whole parse a server does
 * on bytes from another process (exposed for the fuzz target). On return
 * *env is set whenever the envelope decoded (free with
 * magnetar__rpc_request__free_unpacked), *method is the method index or -1,
 * *input the unpacked payload or NULL (free with
 * protobuf_c_message_free_unpacked). 0, ERR_PROTO or ERR_NOTFOUND.
 */
int rpc_decode(const ProtobufCServiceDescriptor *desc, const uint8_t *buf, size_t len,
               Magnetar__RpcRequest **env, int *method, ProtobufCMessage **input);

/* ---- client ------------------------------------------------------------ */

struct rpc_client;

/* The outcome of one call, handed to the completion callback. */
struct rpc_result {
	Magnetar__Status status;
	char code[64];            /* stable error code; "" when OK */
	char message[256];        /* human text; "" when OK */
	uint64_t breach_count;  /* Error.breach_count, with password_breached */
	uint32_t retry_after_s; /* Error.retry_after_s, with RESOURCE_EXHAUSTED */
	ProtobufCMessage *output; /* unpacked reply when OK; see rpc_done_fn */
};

/*
 * Completion. Runs on an nng thread: do not block. `r->output` is freed
 * after the callback returns unless the callback takes it (sets it to NULL
 * and later calls protobuf_c_message_free_unpacked).
 */
typedef void (*rpc_done_fn)(struct rpc_result *r, void *arg);

/* Opens a req0 socket dialing `url` in the background. */
int rpc_client_open(const char *url, size_t max_msg, struct rpc_client **out);
/* Closes; calls still pending complete with STATUS_UNAVAILABLE first. */
void rpc_client_close(struct rpc_client *c);
/* True while at least one pipe to the service is connected. */
bool rpc_client_connected(struct rpc_client *c);

/*
 * Starts a call of `method` (looked up in `desc`). `ctx` may be NULL; its
 * request id is used, or one is made. Returns 0 when `done` will be called
 * exactly once, or an error (and `done` is never called).
 */
int rpc_call_async(struct rpc_client *c, const ProtobufCServiceDescriptor *desc, const char *method,
                   const ProtobufCMessage *input, const Magnetar__RequestContext *ctx,
                   int timeout_ms, rpc_done_fn done, void *arg);

/* Blocking form for tools, tests and background senders (never on an nng
 * thread). Fills *r; on OK the caller owns r->output. Returns 0 if a reply or
 * a status was obtained (check r->status), else an error. */
int rpc_call_sync(struct rpc_client *c, const ProtobufCServiceDescriptor *desc, const char *method,
                  const ProtobufCMessage *input, const Magnetar__RequestContext *ctx,
                  int timeout_ms, struct rpc_result *r);

/* Frees r->output if set. */
void rpc_result_fini(struct rpc_result *r);

/* "ok", "invalid", ... for logs and magctl. */
const char *rpc_status_name(Magnetar__Status s);

#endif
