/*
 * rpc_server.c — the serving side of protobuf-c services over nng req/rep
 * (rpc.h): the peer allow-lists, listening, and dispatch to handlers.
 * The calling side is rpc_client.c; dialling (and re-dialling) every
 * replica of a URL list is rpc_dial.c.
 *
 * Server life of one request: a context's recv aio completes on an nng
 * thread (slot_cb), which only queues the slot on the worker pool; a worker
 * decodes the envelope, finds the method by name in the descriptor, unpacks
 * the payload and calls the handler; rpc_reply packs the answer into the
 * same nng_msg and sends it on the same context; the send completion re-arms
 * the receive. A slot is one request in flight, so `contexts` bounds them.
 */
#include "common/rpc.h"

#include <errno.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/workq.h"

#define RPC_CODE_MALFORMED "malformed_request"
#define RPC_IPC_MODE 0660  /* the run dir's group (privsep.h) may connect */
#define RPC_LISTEN_PATHS 8 /* an RPC server and a publisher or two */

/* The ipc:// paths we listen on, for rpc_listen_paths. */
static pthread_mutex_t listen_mu = PTHREAD_MUTEX_INITIALIZER;
static char listen_paths[RPC_LISTEN_PATHS][108];
static size_t nlisten_paths;

static void rpc_note_path(const char *url)
{
	const char *path = url + 6;
	size_t i;

	if (strncmp(url, "ipc://", 6) != 0 || strlen(path) >= sizeof(listen_paths[0]))
		return;
	pthread_mutex_lock(&listen_mu);
	for (i = 0; i < nlisten_paths && strcmp(listen_paths[i], path) != 0; i++)
		;
	if (i == nlisten_paths && i < RPC_LISTEN_PATHS)
		strcpy(listen_paths[nlisten_paths++], path);
	pthread_mutex_unlock(&listen_mu);
}

void rpc_listen_paths(void (*fn)(const char *path, void *arg), void *arg)
{
	pthread_mutex_lock(&listen_mu);
	for (size_t i = 0; i < nlisten_paths; i++)
		fn(listen_paths[i], arg);
	pthread_mutex_unlock(&listen_mu);
}

/* Creates and starts one listener on the first entry of `url` (a replica
 * listens on its own entry, rpc.h), with the socket file's mode on ipc://. */
static int rpc_listener_open(nng_socket sock, const char *url, nng_listener *out)
{
	nng_listener l;
	char first[512];
	int nv;

	if (rpc_url_first(url, first, sizeof(first)) != 0)
		return NNG_EINVAL;
	if ((nv = nng_listener_create(&l, sock, first)) != 0)
		return nv;
	/* Only ipc:// has permissions (ENOTSUP elsewhere): the socket file is
	 * the group's; the run dir keeps everyone else out (privsep.c). */
	if ((strncmp(first, "ipc://", 6) == 0 &&
	     (nv = nng_listener_set_int(l, NNG_OPT_IPC_PERMISSIONS, RPC_IPC_MODE)) != 0) ||
	    (nv = nng_listener_start(l, 0)) != 0) {
		nng_listener_close(l);
		return nv;
	}
	rpc_note_path(first);
	*out = l;
	return 0;
}

int rpc_listen(nng_socket sock, const char *url, void (*pipe_cb)(nng_pipe, nng_pipe_ev, void *),
               void *arg, nng_listener *out)
{
	int nv;

	if (pipe_cb != NULL && (nv = nng_pipe_notify(sock, NNG_PIPE_EV_ADD_PRE, pipe_cb, arg)) != 0)
		return nv;
	return rpc_listener_open(sock, url, out);
}

int rpc_listen_again(nng_socket sock, const char *url, nng_listener *l)
{
	/* Close first: on ipc:// nng unlinks the socket file on close, and a
	 * new listener's bind on a name another socket still answers on fails
	 * (nng removes only a name nobody answers on). */
	nng_listener_close(*l);
	return rpc_listener_open(sock, url, l);
}

/* ---- server ------------------------------------------------------------ */

enum slot_state { SLOT_RECV, SLOT_DISPATCH, SLOT_SEND };

struct rpc_call {
	struct workq_job job; /* first: the worker's entry point */
	struct rpc_server *srv;
	nng_ctx ctx;
	nng_aio *aio;
	nng_msg *msg;
	enum slot_state state;
	Magnetar__RpcRequest *env;
	ProtobufCMessage *input;
	int method; /* index into desc->methods, -1 before dispatch */
	uid_t peer_uid;
	bool has_peer_uid;
	/* The send's completion may run before nng_ctx_send returns to the
	 * replying thread; the slot is done only when both are through. */
	atomic_int send_refs;
};

struct method_stats {
	_Atomic uint64_t calls, errors;
};

struct rpc_server {
	nng_socket sock;
	const ProtobufCServiceDescriptor *desc;
	rpc_handler_fn *handlers; /* indexed like desc->methods */
	unsigned *flags;          /* the table's flags, indexed the same way */
	struct rpc_server_opts opts;
	struct workq *wq;
	struct rpc_call *slots;
	int nslots;
	struct method_stats *stats;
	_Atomic uint64_t malformed, unknown, expired, refused;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int inflight; /* received and not yet through the send completion */
	_Atomic bool closing;
	/* Held shared across "check closing, then nng_ctx_send", exclusive to
	 * set closing before the socket is closed: nng 1.5 panics on a context
	 * operation racing the socket's close. */
	pthread_rwlock_t send_lock;
	/* rpc_server_relisten replaces it; the watcher's thread alone calls
	 * that, but Stats reads the count from the workers. */
	nng_listener listener;
	char url[512];
	_Atomic uint64_t relistens;
	_Atomic uint64_t pipes; /* ever added: rpc_server_pipes */
};

static const Magnetar__RequestContext empty_context = MAGNETAR__REQUEST_CONTEXT__INIT;

static void slot_arm_recv(struct rpc_call *call)
{
	call->state = SLOT_RECV;
	call->method = -1;
	nng_ctx_recv(call->ctx, call->aio);
}

static void slot_release_request(struct rpc_call *call)
{
	if (call->input != NULL)
		protobuf_c_message_free_unpacked(call->input, NULL);
	if (call->env != NULL)
		magnetar__rpc_request__free_unpacked(call->env, NULL);
	call->input = NULL;
	call->env = NULL;
}

static void slot_done(struct rpc_server *s)
{
	pthread_mutex_lock(&s->mu);
	s->inflight--;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

/* One of the send's two parties (replying thread, completion) is through;
 * the last one releases the slot and re-arms its receive. */
static void slot_send_finished(struct rpc_call *call)
{
	struct rpc_server *s = call->srv;
	if (atomic_fetch_sub(&call->send_refs, 1) != 1)
		return;
	/* Re-arm first: once slot_done runs, rpc_server_stop may free the slot. */
	if (!atomic_load(&s->closing))
		slot_arm_recv(call);
	slot_done(s);
}

static void slot_send(struct rpc_call *call, Magnetar__Status status, const char *code,
                      const char *message, const struct rpc_error_extra *extra,
                      const ProtobufCMessage *output)
{
	Magnetar__RpcReply reply = MAGNETAR__RPC_REPLY__INIT;
	Magnetar__Error error = MAGNETAR__ERROR__INIT;
	struct rpc_server *srv;
	uint8_t *buf = NULL;
	size_t len;

	reply.status = status;
	if (status != MAGNETAR__STATUS__STATUS_OK) {
		error.code = (char *)(code != NULL ? code : "");
		error.message = (char *)(message != NULL ? message : "");
		if (extra != NULL) {
			error.breach_count = extra->breach_count;
			error.retry_after_s = extra->retry_after_s;
		}
		reply.error = &error;
		if (call->method >= 0)
			atomic_fetch_add(&call->srv->stats[call->method].errors, 1);
	} else if (output != NULL) {
		reply.payload.len = protobuf_c_message_get_packed_size(output);
		if (reply.payload.len > 0) {
			/* No memory for the answer: an internal error (it needs none),
			 * not a silence the caller's deadline would turn into 504. */
			if ((buf = malloc(reply.payload.len)) == NULL) {
				log_warnx("rpc: no memory to reply method=%s",
				          rpc_call_method(call));
				slot_send(call, MAGNETAR__STATUS__STATUS_INTERNAL, "internal",
				          "out of memory", NULL, NULL);
				return;
			}
			protobuf_c_message_pack(output, buf);
			reply.payload.data = buf;
		}
	}
	pthread_rwlock_rdlock(&call->srv->send_lock);
	if (atomic_load(&call->srv->closing)) {
		pthread_rwlock_unlock(&call->srv->send_lock);
		goto drop; /* the socket is gone: nobody to answer */
	}
	len = magnetar__rpc_reply__get_packed_size(&reply);
	nng_msg_clear(call->msg);
	if (nng_msg_realloc(call->msg, len) != 0) {
		pthread_rwlock_unlock(&call->srv->send_lock);
		goto fail;
	}
	magnetar__rpc_reply__pack(&reply, nng_msg_body(call->msg));
	free(buf);
	slot_release_request(call);
	call->state = SLOT_SEND;
	nng_aio_set_msg(call->aio, call->msg);
	call->msg = NULL;
	atomic_store(&call->send_refs, 2);
	nng_ctx_send(call->ctx, call->aio);
	pthread_rwlock_unlock(&call->srv->send_lock);
	slot_send_finished(call);
	return;
fail:
	/* nng has no memory for the reply: drop it; the caller's deadline
	 * answers for us. */
	log_warnx("rpc: no memory to reply method=%s",
	          call->method >= 0 ? call->srv->desc->methods[call->method].name : "?");
drop:
	free(buf);
	slot_release_request(call);
	nng_msg_free(call->msg);
	call->msg = NULL;
	srv = call->srv;
	if (!atomic_load(&srv->closing))
		slot_arm_recv(call);
	slot_done(srv); /* last: the slot may be freed from here on */
}

void rpc_reply(struct rpc_call *call, const ProtobufCMessage *output)
{
	slot_send(call, MAGNETAR__STATUS__STATUS_OK, NULL, NULL, NULL, output);
}

void rpc_reply_error(struct rpc_call *call, Magnetar__Status status, const char *code,
                     const char *message)
{
	if (status == MAGNETAR__STATUS__STATUS_OK)
		status = MAGNETAR__STATUS__STATUS_INTERNAL;
	slot_send(call, status, code, message, NULL, NULL);
}

void rpc_reply_error_ex(struct rpc_call *call, Magnetar__Status status, const char *code,
                        const char *message, const struct rpc_error_extra *extra)
{
	if (status == MAGNETAR__STATUS__STATUS_OK)
		status = MAGNETAR__STATUS__STATUS_INTERNAL;
	slot_send(call, status, code, message, extra, NULL);
}

/* The envelope and the index of the method it names. */
static int rpc_decode_envelope(const ProtobufCServiceDescriptor *desc, const uint8_t *buf,
                               size_t len, Magnetar__RpcRequest **env, int *method)
{
	const ProtobufCMethodDescriptor *md;

	*method = -1;
	*env = magnetar__rpc_request__unpack(NULL, len, buf);
	if (*env == NULL || (*env)->method == NULL || (*env)->method[0] == '\0')
		return ERR_PROTO;
	if ((md = protobuf_c_service_descriptor_get_method_by_name(desc, (*env)->method)) == NULL)
		return ERR_NOTFOUND;
	*method = (int)(md - desc->methods);
	return 0;
}

/* The payload as the method's input message. */
static int rpc_decode_input(const ProtobufCServiceDescriptor *desc, const Magnetar__RpcRequest *env,
                            int method, ProtobufCMessage **input)
{
	*input = protobuf_c_message_unpack(desc->methods[method].input, NULL, env->payload.len,
	                                   env->payload.data);
	return *input == NULL ? ERR_PROTO : 0;
}

int rpc_decode(const ProtobufCServiceDescriptor *desc, const uint8_t *buf, size_t len,
               Magnetar__RpcRequest **env, int *method, ProtobufCMessage **input)
{
	int rv;

	*input = NULL;
	if ((rv = rpc_decode_envelope(desc, buf, len, env, method)) != 0)
		return rv;
	return rpc_decode_input(desc, *env, *method, input);
}

/* The table's caller mask against the peer's roles. Only an ipc:// peer has
 * an identity; without a policy or a mask there is nothing to check. */
static bool slot_permitted(const struct rpc_call *call)
{
	struct rpc_server *s = call->srv;
	unsigned callers = s->flags[call->method] >> RPC_F_CALLERS_SHIFT;

	if (callers == 0 || !call->has_peer_uid || rpc_peer_is(call->peer_uid, callers))
		return true;
	log_warnx("rpc: permission denied %s.%s uid=%u request_id=%s", s->desc->short_name,
	          s->desc->methods[call->method].name, (unsigned)call->peer_uid,
	          call->env->request_id);
	return false;
}

/* Worker: decode, validate, dispatch. */
static void slot_dispatch(struct workq_job *job)
{
	struct rpc_call *call = (struct rpc_call *)job;
	struct rpc_server *s = call->srv;
	nng_pipe pipe = nng_msg_get_pipe(call->msg);
	uint64_t uid;
	int rv;

	rv = nng_pipe_get_uint64(pipe, NNG_OPT_IPC_PEER_UID, &uid);
	call->has_peer_uid = rv == 0;
	call->peer_uid = call->has_peer_uid ? (uid_t)uid : (uid_t)-1;
	/* Off the socket's allow-list: refused before a byte is decoded. Only
	 * a transport without credentials (tcp, inproc) answers ENOTSUP; any
	 * other failure is an ipc pipe already gone (its peer closed it, or
	 * died, after sending), whose sender is unknown now: refused too, or a
	 * caller off the allow-list could send and hang up to skip every check,
	 * and audit would file a dead producer's batch under a claimed name. */
	if ((rv != 0 && rv != NNG_ENOTSUP) ||
	    (call->has_peer_uid && !rpc_peer_admitted(call->peer_uid, false))) {
		atomic_fetch_add(&s->refused, 1);
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_PERMISSION_DENIED,
		                RPC_CODE_PEER_REFUSED, "this peer may not use this socket");
		return;
	}
	rv = rpc_decode_envelope(s->desc, nng_msg_body(call->msg), nng_msg_len(call->msg),
	                         &call->env, &call->method);
	if (call->method >= 0)
		atomic_fetch_add(&s->stats[call->method].calls, 1);
	if (rv == ERR_NOTFOUND) {
		atomic_fetch_add(&s->unknown, 1);
		log_warnx("rpc: unknown method service=%s request_id=%s", s->desc->short_name,
		          call->env->request_id);
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_UNIMPLEMENTED, "unknown_method",
		                "no such method");
		return;
	}
	/* A caller the method refuses gets no parse of its payload either. */
	if (call->method >= 0 && !slot_permitted(call)) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_PERMISSION_DENIED,
		                RPC_CODE_PERMISSION_DENIED, "this caller may not call this method");
		return;
	}
	if (rv == 0)
		rv = rpc_decode_input(s->desc, call->env, call->method, &call->input);
	if (rv != 0) {
		atomic_fetch_add(&s->malformed, 1);
		log_warnx("rpc: undecodable request len=%zu request_id=%s", nng_msg_len(call->msg),
		          call->env != NULL ? call->env->request_id : "");
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INVALID, RPC_CODE_MALFORMED,
		                "the request could not be decoded");
		return;
	}
	if (call->env->deadline_unix_ms != 0 && clock_unix_ms() > call->env->deadline_unix_ms) {
		/* Nobody is waiting any more: do no work, say so. */
		atomic_fetch_add(&s->expired, 1);
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_DEADLINE_EXCEEDED,
		                "deadline_exceeded", "the deadline passed before the call ran");
		return;
	}
	s->handlers[call->method](call, call->input, s->opts.arg);
}

static void slot_cb(void *arg)
{
	struct rpc_call *call = arg;
	struct rpc_server *s = call->srv;
	int rv = nng_aio_result(call->aio);

	switch (call->state) {
	case SLOT_RECV:
		if (rv != 0) {
			if (rv != NNG_ECLOSED && rv != NNG_ECANCELED && !atomic_load(&s->closing))
				slot_arm_recv(call);
			return;
		}
		call->msg = nng_aio_get_msg(call->aio);
		call->state = SLOT_DISPATCH;
		pthread_mutex_lock(&s->mu);
		s->inflight++;
		pthread_mutex_unlock(&s->mu);
		if (workq_submit(s->wq, &call->job, 0) != 0) {
			nng_msg_free(call->msg);
			call->msg = NULL;
			slot_done(s);
		}
		return;
	case SLOT_SEND:
		if (rv != 0)
			nng_msg_free(nng_aio_get_msg(call->aio));
		slot_send_finished(call);
		return;
	case SLOT_DISPATCH:
		return;
	}
}

static void server_pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	struct rpc_server *s = arg;
	(void)p;
	(void)ev;
	atomic_fetch_add(&s->pipes, 1);
}

static int rpc_server_bind_table(struct rpc_server *s, const struct rpc_method *methods,
                                 size_t nmethods)
{
	if (nmethods != s->desc->n_methods)
		return ERR_INVAL;
	for (unsigned i = 0; i < s->desc->n_methods; i++) {
		size_t j;
		for (j = 0; j < nmethods; j++)
			if (strcmp(methods[j].name, s->desc->methods[i].name) == 0)
				break;
		if (j == nmethods || methods[j].handler == NULL) {
			log_warnx("rpc: %s.%s has no handler", s->desc->short_name,
			          s->desc->methods[i].name);
			return ERR_INVAL;
		}
		s->handlers[i] = methods[j].handler;
		s->flags[i] = methods[j].flags;
	}
	return 0;
}

/* What rpc_server_start allocated, once the socket is closed and no call
 * is in flight: the workers are joined before the aios they used go. */
static void rpc_server_free(struct rpc_server *s)
{
	workq_free(s->wq);
	for (int i = 0; s->slots != NULL && i < s->opts.contexts; i++)
		if (s->slots[i].aio != NULL)
			nng_aio_free(s->slots[i].aio);
	free(s->handlers);
	free(s->flags);
	free(s->stats);
	free(s->slots);
	pthread_rwlock_destroy(&s->send_lock);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

int rpc_server_start(const char *url, const ProtobufCServiceDescriptor *desc,
                     const struct rpc_method *methods, size_t nmethods,
                     const struct rpc_server_opts *opts, struct rpc_server **out)
{
	struct rpc_server *s;
	int rv, nv;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return ERR_NOMEM;
	s->desc = desc;
	if (opts != NULL)
		s->opts = *opts;
	if (s->opts.contexts <= 0)
		s->opts.contexts = RPC_CONTEXTS_DEFAULT;
	if (s->opts.workers <= 0)
		s->opts.workers = 4;
	if (s->opts.max_msg == 0)
		s->opts.max_msg = RPC_MAX_MSG_DEFAULT;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	pthread_rwlock_init(&s->send_lock, NULL);
	s->handlers = calloc(desc->n_methods, sizeof(*s->handlers));
	s->flags = calloc(desc->n_methods, sizeof(*s->flags));
	s->stats = calloc(desc->n_methods, sizeof(*s->stats));
	s->slots = calloc((size_t)s->opts.contexts, sizeof(*s->slots));
	if (s->handlers == NULL || s->flags == NULL || s->stats == NULL || s->slots == NULL) {
		rv = ERR_NOMEM;
		goto fail;
	}
	if ((rv = rpc_server_bind_table(s, methods, nmethods)) != 0)
		goto fail;
	if ((rv = workq_new(s->opts.workers, &s->wq)) != 0)
		goto fail;
	if ((nv = nng_rep0_open(&s->sock)) != 0) {
		rv = ERR_IO;
		goto fail;
	}
	nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, s->opts.max_msg);
	for (int i = 0; i < s->opts.contexts; i++) {
		struct rpc_call *call = &s->slots[i];
		call->srv = s;
		call->job.run = slot_dispatch;
		if (nng_aio_alloc(&call->aio, slot_cb, call) != 0 ||
		    nng_ctx_open(&call->ctx, s->sock) != 0) {
			rv = ERR_NOMEM;
			goto fail_sock;
		}
		s->nslots = i + 1;
	}
	/* Every context receives before the first peer can connect: a request
	 * that reached nng 1.5's rep0 while no context was receiving left its
	 * pipe unread for good (clients dial eagerly, every 50-500 ms; seen as
	 * a service that never answered after its start, ~1 start in 8). */
	for (int i = 0; i < s->nslots; i++)
		slot_arm_recv(&s->slots[i]);
	/* A peer off the allow-list is refused per request (slot_dispatch),
	 * never from a pipe callback: nng 1.5 leaks the descriptor of a pipe
	 * closed from its ADD_PRE/ADD_POST callback now and then; its poller
	 * then spins on the hang-up and the listener stops accepting
	 * (docs/security.md). The one callback only counts. */
	nng_pipe_notify(s->sock, NNG_PIPE_EV_ADD_POST, server_pipe_cb, s);
	/* Our own entry, kept for rpc_server_relisten. */
	nv = rpc_url_first(url, s->url, sizeof(s->url)) != 0
	         ? NNG_EINVAL
	         : rpc_listener_open(s->sock, s->url, &s->listener);
	if (nv != 0) {
		log_warnx("rpc: cannot listen on %s: %s", url, nng_strerror(nv));
		rv = ERR_IO;
		goto fail_sock;
	}
	*out = s;
	return 0;
fail_sock:
	atomic_store(&s->closing, true);
	nng_close(s->sock);
fail:
	rpc_server_free(s);
	return rv;
}

void rpc_server_stop(struct rpc_server *s)
{
	if (s == NULL)
		return;
	/* Order matters: with `closing` set no reply is sent and no receive is
	 * re-armed; closing the socket completes pending receives; stopping each
	 * aio waits out a callback already running; then every call already
	 * dispatched finishes (its reply is dropped) before slots are freed. */
	pthread_rwlock_wrlock(&s->send_lock); /* waits out sends in progress */
	atomic_store(&s->closing, true);
	pthread_rwlock_unlock(&s->send_lock);
	nng_close(s->sock);
	for (int i = 0; i < s->nslots; i++)
		nng_aio_stop(s->slots[i].aio);
	pthread_mutex_lock(&s->mu);
	while (s->inflight > 0)
		pthread_cond_wait(&s->cv, &s->mu);
	pthread_mutex_unlock(&s->mu);
	rpc_server_free(s);
}

void rpc_server_counters(struct rpc_server *s,
                         void (*fn)(const char *name, uint64_t value, void *arg), void *arg)
{
	char name[128];
	for (unsigned i = 0; i < s->desc->n_methods; i++) {
		snprintf(name, sizeof(name), "rpc.%s.calls", s->desc->methods[i].name);
		fn(name, atomic_load(&s->stats[i].calls), arg);
		snprintf(name, sizeof(name), "rpc.%s.errors", s->desc->methods[i].name);
		fn(name, atomic_load(&s->stats[i].errors), arg);
	}
	fn("rpc.malformed", atomic_load(&s->malformed), arg);
	fn("rpc.unknown_method", atomic_load(&s->unknown), arg);
	fn("rpc.expired", atomic_load(&s->expired), arg);
	fn("rpc.refused", atomic_load(&s->refused), arg);
	fn("rpc.relisten", atomic_load(&s->relistens), arg);
}

uint64_t rpc_server_pipes(struct rpc_server *s)
{
	return atomic_load(&s->pipes);
}

int rpc_server_relisten(struct rpc_server *s)
{
	int nv;

	/* nng closes the listener's pipes with it (listener_shutdown): calls in
	 * flight on them fail with service_unavailable unless their method is
	 * safe to send again (rpc_client_resend_on_reset), and the clients
	 * dial again within 50 ms (rpc_client_open). */
	if ((nv = rpc_listen_again(s->sock, s->url, &s->listener)) != 0) {
		log_warnx("rpc: cannot listen again on %s: %s", s->url, nng_strerror(nv));
		return nv == NNG_EADDRINUSE ? ERR_EXISTS : nv == NNG_EPERM ? ERR_PERM : ERR_IO;
	}
	atomic_fetch_add(&s->relistens, 1);
	return 0;
}

const char *rpc_call_method(const struct rpc_call *call)
{
	return call->method >= 0 ? call->srv->desc->methods[call->method].name : "";
}

const char *rpc_call_request_id(const struct rpc_call *call)
{
	return call->env != NULL && call->env->request_id != NULL ? call->env->request_id : "";
}

const Magnetar__RequestContext *rpc_call_context(const struct rpc_call *call)
{
	if (call->env != NULL && call->env->context != NULL)
		return call->env->context;
	return &empty_context;
}

uint64_t rpc_call_deadline_ms(const struct rpc_call *call)
{
	return call->env != NULL ? call->env->deadline_unix_ms : 0;
}

int rpc_call_peer_uid(const struct rpc_call *call, uid_t *uid)
{
	if (!call->has_peer_uid)
		return ERR_NOTFOUND;
	*uid = call->peer_uid;
	return 0;
}

struct rpc_server *rpc_call_server(const struct rpc_call *call)
{
	return call->srv;
}
