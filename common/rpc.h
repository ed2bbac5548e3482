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

#include <nng/nng.h>
#include <protobuf-c/protobuf-c.h>
#include <pthread.h>
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

/* Per-method flags, beside the handler (docs/conventions.md: dispatch by table). */
enum rpc_method_flags {
	RPC_F_NONE = 0,
	RPC_F_MUTATES = 1u << 0, /* changes state: must be idempotent per request id */
};

/*
 * Who may call a method: a mask of caller roles (RPC_BY(SVC_*), the
 * operator being RPC_BY(SVC_MAGCTL)) in bits 8 and up of the flags. A row
 * without one may be called by any peer the socket admits. The roles of a
 * peer come from its IPC uid through the process's peer policy
 * (rpc_set_peer_policy); an unpermitted call is answered
 * PERMISSION_DENIED/permission_denied without running the handler.
 */
#define RPC_BY(svc) (1u << (svc))
#define RPC_F_CALLERS_SHIFT 8
#define RPC_F_CALLERS(mask) ((unsigned)(mask) << RPC_F_CALLERS_SHIFT)
#define RPC_CODE_PERMISSION_DENIED "permission_denied"
#define RPC_CODE_PEER_REFUSED "peer_refused"

/*
 * The process's peer policy, consulted for every ipc:// pipe of every RPC
 * server and event publisher opened after it is set: `roles(uid, arg)`
 * returns the RPC_BY() roles a peer uid holds; `admit` is the roles that may
 * connect at all (others' pipes are closed when they are added). Peers
 * without a uid (tcp://, inproc://) carry no identity and are not checked
 * here: such deployments rely on their network. Without a policy (unit
 * tests) nothing is checked. Set once at start, before any server opens.
 */
struct rpc_peer_policy {
	unsigned (*roles)(uid_t uid, void *arg);
	void *arg;
	unsigned admit;        /* RPC sockets */
	unsigned admit_events; /* event publishers */
};
void rpc_set_peer_policy(const struct rpc_peer_policy *p);
/* True when `uid` may connect under the process policy (`events`: as a
 * subscriber of our publisher); logs a refusal. No policy: true. */
bool rpc_peer_admitted(uid_t uid, bool events);
/* The same, silent: for a caller that rate-limits its own refusal lines. */
bool rpc_peer_admits(uid_t uid, bool events);
/* True when `uid` holds one of `roles` under the process policy; true too
 * without a policy, or for roles 0. */
bool rpc_peer_is(uid_t uid, unsigned roles);

struct rpc_method {
	const char *name; /* exactly as in the .proto service block */
	rpc_handler_fn handler;
	unsigned flags;
};

/* Requests a server receives concurrently unless told otherwise. A request
 * holds its context until it is answered, asynchronous ones included. */
#define RPC_CONTEXTS_DEFAULT 64

struct rpc_server_opts {
	int contexts;   /* requests received concurrently (default RPC_CONTEXTS_DEFAULT) */
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

/* nng_listen with what every listening socket of ours sets: on ipc:// the
 * socket file's mode (0660) and, when `pipe_cb` is given, a pipe-add
 * (NNG_PIPE_EV_ADD_PRE) callback. The listener goes to *out (for
 * rpc_listen_again). An nng error code. */
int rpc_listen(nng_socket sock, const char *url, void (*pipe_cb)(nng_pipe, nng_pipe_ev, void *),
               void *arg, nng_listener *out);
/* Closes *l and listens again on `url` into *l (nng 1.5's listener stall;
 * rpc_server_relisten says what it costs). An nng error code: then nothing
 * listens any more. */
int rpc_listen_again(nng_socket sock, const char *url, nng_listener *l);
/* Calls fn with the path of every ipc:// socket this process listens on
 * (its RPC server's, its publishers'): svc_lockdown gives them to the
 * service's user, who must be able to bind them again. */
void rpc_listen_paths(void (*fn)(const char *path, void *arg), void *arg);

/* Closes the socket, waits until every dispatched call has replied, frees. */
void rpc_server_stop(struct rpc_server *s);

/* How many pipes the server's socket ever accepted (NNG_PIPE_EV_ADD_POST):
 * a connection nng's transport took but its listener never accepted (nng
 * 1.5's listener stall) does not count. */
uint64_t rpc_server_pipes(struct rpc_server *s);

/* Closes the listener and listens again on the same URL (nng 1.5's
 * listener stall, docs/reliability.md). nng closes the listener's pipes
 * with it: calls in flight on them fail (service_unavailable) unless their
 * clients may send them again, and their clients dial again. On ipc:// the
 * socket file is unlinked and bound again, so the process must be allowed
 * to (svc_lockdown gives the file to the service's user). Counted as
 * "rpc.relisten". Not concurrent with itself or rpc_server_stop. 0, or
 * ERR_EXISTS (the name was taken in between), ERR_PERM or ERR_IO: then
 * nothing listens any more. */
int rpc_server_relisten(struct rpc_server *s);

/* Calls fn for each counter ("rpc.<Method>.calls", "rpc.<Method>.errors",
 * "rpc.malformed", "rpc.unknown_method", "rpc.expired", "rpc.refused",
 * "rpc.relisten"). */
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
	uint64_t breach_count;  /* with code password_breached */
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

/*
 * A dialling socket that rpc_redial_all() dials again. The kernel records a
 * unix socket peer's credentials when it connects, so a client that dialled
 * as root before the service dropped to its user would be seen as root
 * forever; after the drop, svc_lockdown re-dials every one (requests in
 * flight are re-sent by nng on the new pipe). Used by rpc clients and event
 * subscribers.
 */
struct rpc_dial {
	nng_socket sock;
	nng_dialer dialer;
	char *url;
	bool dialled; /* false while held (rpc_hold_dials) */
	bool waiting; /* rpc_redial_all waits for its new pipe; under its lock */
	/* nng_dialer_id(dialer) in the high 32 bits, its pipe in the low 32
	 * (an nng dialer has at most one): one word, so that a pipe event of a
	 * dialer just replaced can never count for its successor. See
	 * rpc_dial_pipe_event for the low word. */
	_Atomic uint64_t link;
	/* Optional: the owner's count of requests in flight and its lock; the
	 * old dialer is closed only when none is (a reply is never lost). */
	pthread_mutex_t *busy_mu;
	const int *busy;
	uint64_t idle_since_ms; /* rpc_dials_renew_idle's clock; under its lock */
	struct rpc_dial *next;
};
/* The owner's pipe-notify callback passes every ADD_POST and REM_POST here,
 * so the re-dial knows when the new dialer is connected. */
void rpc_dial_pipe_event(struct rpc_dial *d, nng_pipe p, nng_pipe_ev ev);
/* Whether d's current dialer has its pipe. */
bool rpc_dial_has_pipe(const struct rpc_dial *d);
/* While held, rpc_dial_start registers without dialling; the next
 * rpc_redial_all dials. For a client that must not be seen as root. */
void rpc_hold_dials(bool hold);
/* nng_dial(NNG_FLAG_NONBLOCK) and registration; `d` starts zeroed but for
 * busy_mu and busy. 0 or an nng error (then nothing is registered). */
int rpc_dial_start(struct rpc_dial *d, nng_socket sock, const char *url);
/* Unregisters; call before closing the socket. Accepts a never-started one. */
void rpc_dial_stop(struct rpc_dial *d);

/*
 * Replicas: a MAGNETAR_*_URL may be a comma-separated list. A client or a
 * subscriber dials every entry (nng's req spreads requests over the live
 * pipes and routes around one that is gone; a sub merges the publishers,
 * whose instance ids keep their sequences apart); a server or publisher
 * listens on one entry: svc_init has already replaced a service's own list
 * with the entry its process claimed (replica.h), and rpc_listen takes the
 * first of whatever it is given.
 */
#define RPC_URLS_MAX 8
struct rpc_dials {
	struct rpc_dial d[RPC_URLS_MAX];
	size_t n;
};
/* rpc_dial_start on each entry; busy_mu/busy as in struct rpc_dial (may be
 * NULL). 0, NNG_EINVAL for a malformed list, or the first nng error (then
 * nothing stays registered). */
int rpc_dials_start(struct rpc_dials *ds, nng_socket sock, const char *urls,
                    pthread_mutex_t *busy_mu, const int *busy);
void rpc_dials_pipe_event(struct rpc_dials *ds, nng_pipe p, nng_pipe_ev ev);
void rpc_dials_stop(struct rpc_dials *ds);
/* The first entry of a URL list into buf: 0 or ERR_INVAL (empty, too long). */
int rpc_url_first(const char *urls, char *buf, size_t len);
/* Dials every registered socket again and, once each new dialer whose old
 * one had a pipe has one too (at most 2 s: make before break), closes the
 * old dialers and their pipes, each at a moment its owner has no request in
 * flight (at most 2 s more). */
void rpc_redial_all(void);
/*
 * nng 1.5.2's dialer stops dialling for good when a connection it made is
 * closed by the server before the SP handshake is through (its write fails
 * with EPIPE, mapped to NNG_ECLOSED, which dialer.c takes for "closed by
 * us": no further attempt). A server that exits or listens again at that
 * moment strands every client that was connecting: a restarted replica or
 * audit would never be reached again (docs/reliability.md). Called every
 * few hundred ms: a registered dialer that has had no pipe for
 * RPC_DIAL_RENEW_MS is replaced by a new one (a dialer whose peer is simply
 * down loses nothing by it). Returns how many it replaced.
 */
#define RPC_DIAL_RENEW_MS 1500
unsigned rpc_dials_renew_idle(uint64_t now_ms);
/* Dialers replaced by rpc_dials_renew_idle since start, for Stats. */
uint64_t rpc_dials_renewed(void);

/* ---- client ------------------------------------------------------------ */

struct rpc_client;

/* The outcome of one call, handed to the completion callback. */
struct rpc_result {
	Magnetar__Status status;
	char code[64];            /* stable error code; "" when OK */
	char message[256];        /* human text; "" when OK */
	uint64_t breach_count;    /* Error.breach_count, with password_breached */
	uint32_t retry_after_s;   /* Error.retry_after_s, with RESOURCE_EXHAUSTED */
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
/*
 * The same, and every ipc:// pipe whose server is not a uid holding one of
 * `server_roles` under the process policy (rpc_peer_is) is closed before a
 * request can go out on it: a process that binds the service's socket name
 * while it is free (the service down, or between a re-listen's close and
 * bind) receives nothing. Counted by rpc_client_refused. tcp:// carries no
 * uid and is not checked.
 */
int rpc_client_open_for(const char *url, size_t max_msg, unsigned server_roles,
                        struct rpc_client **out);
/* Pipes closed because their server was not who rpc_client_open_for named. */
uint64_t rpc_client_refused(struct rpc_client *c);
/* Closes; calls still pending complete with STATUS_UNAVAILABLE first. */
void rpc_client_close(struct rpc_client *c);
/* True while at least one pipe to the service is connected. */
bool rpc_client_connected(struct rpc_client *c);
/*
 * Methods of this client's service that are safe to run twice (reads, and
 * any the caller decides may be), as a NULL-terminated list that outlives
 * the client; set before the first call. A call of one of them whose pipe
 * closed after it was sent (the server crashed or hung up, so it may or may
 * not have run) is sent again, to another pipe when there is one, within
 * its deadline, at most RPC_RESENDS times. A call of any other method fails
 * STATUS_UNAVAILABLE then: nng does not re-send on its own (its resend
 * timer is off here, so a state-changing call never runs twice by itself).
 */
#define RPC_RESENDS 2
void rpc_client_resend_on_reset(struct rpc_client *c, const char *const *methods);
/* Calls sent again by rpc_client_resend_on_reset's rule since open. */
uint64_t rpc_client_resent(struct rpc_client *c);

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
 * a status was obtained (check r->status), else an error. A call nng never
 * ends (1.5.2 was seen to lose a deadline) is aborted past its deadline and,
 * failing that, reported DEADLINE_EXCEEDED while it stays in flight (and
 * pending for rpc_client_close): docs/reliability.md. */
int rpc_call_sync(struct rpc_client *c, const ProtobufCServiceDescriptor *desc, const char *method,
                  const ProtobufCMessage *input, const Magnetar__RequestContext *ctx,
                  int timeout_ms, struct rpc_result *r);

/* Frees r->output if set. */
void rpc_result_fini(struct rpc_result *r);

/* "ok", "invalid", ... for logs and magctl. */
const char *rpc_status_name(Magnetar__Status s);

#endif
