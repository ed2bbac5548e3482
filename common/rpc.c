/*
 * rpc.c — protobuf-c services over nng req/rep (rpc.h).
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
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/replica.h"
#include "common/workq.h"

#define RPC_CODE_MALFORMED "malformed_request"
#define RPC_IPC_MODE 0660 /* the run dir's group (privsep.h) may connect */

/* ---- peer policy ------------------------------------------------------- */

static struct rpc_peer_policy peer_policy;
static _Atomic bool peer_policy_set;

void rpc_set_peer_policy(const struct rpc_peer_policy *p)
{
	peer_policy = *p;
	atomic_store(&peer_policy_set, true);
}

static unsigned rpc_peer_roles(uid_t uid)
{
	return peer_policy.roles(uid, peer_policy.arg);
}

bool rpc_peer_admitted(uid_t uid, bool events)
{
	unsigned admit = events ? peer_policy.admit_events : peer_policy.admit;
	unsigned roles;

	if (!atomic_load(&peer_policy_set))
		return true;
	roles = rpc_peer_roles(uid);
	/* In development every role has our uid: this passes, but it ran. */
	log_debug("rpc: peer uid=%u roles=0x%x admit=0x%x%s", (unsigned)uid, roles, admit,
	          events ? " (events)" : "");
	if ((roles & admit) != 0)
		return true;
	log_warnx("rpc: refused a peer uid=%u: not on this socket's allow-list%s", (unsigned)uid,
	          events ? " (events)" : "");
	return false;
}

int rpc_listen(nng_socket sock, const char *url, void (*pipe_cb)(nng_pipe, nng_pipe_ev, void *),
               void *arg)
{
	nng_listener l;
	char first[512];
	int nv;

	/* A replica listens on its own entry (rpc.h): the first. */
	if (rpc_url_first(url, first, sizeof(first)) != 0)
		return NNG_EINVAL;
	url = first;
	if (pipe_cb != NULL && (nv = nng_pipe_notify(sock, NNG_PIPE_EV_ADD_PRE, pipe_cb, arg)) != 0)
		return nv;
	if ((nv = nng_listener_create(&l, sock, url)) != 0)
		return nv;
	/* Only ipc:// has permissions (ENOTSUP elsewhere): the socket file is
	 * the group's; the run dir keeps everyone else out (privsep.c). */
	if (strncmp(url, "ipc://", 6) == 0 &&
	    (nv = nng_listener_set_int(l, NNG_OPT_IPC_PERMISSIONS, RPC_IPC_MODE)) != 0)
		return nv;
	return nng_listener_start(l, 0);
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
	unsigned roles;

	if (callers == 0 || !call->has_peer_uid || !atomic_load(&peer_policy_set))
		return true;
	roles = rpc_peer_roles(call->peer_uid);
	log_debug("rpc: %s.%s by uid=%u roles=0x%x callers=0x%x request_id=%s", s->desc->short_name,
	          s->desc->methods[call->method].name, (unsigned)call->peer_uid, roles, callers,
	          call->env->request_id);
	if ((roles & callers) != 0)
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
		s->opts.contexts = 64;
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
	/* No pipe callback: a peer off the allow-list is refused per request
	 * (slot_dispatch). nng 1.5 leaks the descriptor of a pipe closed from
	 * its ADD_PRE/ADD_POST callback now and then; its poller then spins on
	 * the hang-up and the listener stops accepting (docs/security.md). */
	if ((nv = rpc_listen(s->sock, url, NULL, NULL)) != 0) {
		log_warnx("rpc: cannot listen on %s: %s", url, nng_strerror(nv));
		rv = ERR_IO;
		goto fail_sock;
	}
	*out = s;
	return 0;
fail_sock:
	atomic_store(&s->closing, true);
	nng_close(s->sock);
	for (int i = 0; i < s->opts.contexts; i++)
		if (s->slots[i].aio != NULL)
			nng_aio_free(s->slots[i].aio);
fail:
	workq_free(s->wq);
	free(s->handlers);
	free(s->flags);
	free(s->stats);
	free(s->slots);
	pthread_rwlock_destroy(&s->send_lock);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	free(s);
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
	workq_free(s->wq);
	for (int i = 0; i < s->nslots; i++)
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

/* ---- re-dialling ------------------------------------------------------- */

static pthread_mutex_t dial_mu = PTHREAD_MUTEX_INITIALIZER;
static struct rpc_dial *dial_list;
static bool dial_hold;

void rpc_hold_dials(bool hold)
{
	pthread_mutex_lock(&dial_mu);
	dial_hold = hold;
	pthread_mutex_unlock(&dial_mu);
}

/* A dialer created, noted, then started: its first pipe event may come
 * before nng_dialer_start returns. */
static int dial_new(struct rpc_dial *d)
{
	nng_dialer dl;
	int nv;

	if ((nv = nng_dialer_create(&dl, d->sock, d->url)) != 0)
		return nv;
	d->dialer = dl;
	atomic_store(&d->pipes, 0);
	atomic_store(&d->id, (uint32_t)nng_dialer_id(dl));
	if ((nv = nng_dialer_start(dl, NNG_FLAG_NONBLOCK)) != 0)
		nng_dialer_close(dl);
	return nv;
}

int rpc_dial_start(struct rpc_dial *d, nng_socket sock, const char *url)
{
	int nv;

	d->sock = sock;
	d->next = NULL;
	atomic_store(&d->id, 0);
	atomic_store(&d->pipes, 0);
	if ((d->url = strdup(url)) == NULL)
		return NNG_ENOMEM;
	pthread_mutex_lock(&dial_mu);
	d->dialled = !dial_hold;
	nv = dial_hold ? 0 : dial_new(d);
	if (nv == 0) {
		d->next = dial_list;
		dial_list = d;
	}
	pthread_mutex_unlock(&dial_mu);
	if (nv != 0) {
		free(d->url);
		d->url = NULL;
	}
	return nv;
}

void rpc_dial_pipe_event(struct rpc_dial *d, nng_pipe p, nng_pipe_ev ev)
{
	if ((uint32_t)nng_dialer_id(nng_pipe_dialer(p)) != atomic_load(&d->id))
		return; /* the old dialer's, or a listener's */
	if (ev == NNG_PIPE_EV_ADD_POST)
		atomic_fetch_add(&d->pipes, 1);
	else if (ev == NNG_PIPE_EV_REM_POST)
		atomic_fetch_sub(&d->pipes, 1);
}

void rpc_dial_stop(struct rpc_dial *d)
{
	pthread_mutex_lock(&dial_mu);
	for (struct rpc_dial **p = &dial_list; *p != NULL; p = &(*p)->next) {
		if (*p == d) {
			*p = d->next;
			break;
		}
	}
	pthread_mutex_unlock(&dial_mu);
	free(d->url);
	d->url = NULL;
}

int rpc_url_first(const char *urls, char *buf, size_t len)
{
	return replica_entry(urls, 1, buf, len);
}

int rpc_dials_start(struct rpc_dials *ds, nng_socket sock, const char *urls,
                    pthread_mutex_t *busy_mu, const int *busy)
{
	size_t count = replica_count(urls);
	char url[512];
	int nv = 0;

	memset(ds, 0, sizeof(*ds));
	if (count > RPC_URLS_MAX)
		return NNG_EINVAL;
	for (size_t i = 1; i <= count; i++) {
		if (replica_entry(urls, i, url, sizeof(url)) != 0) {
			nv = NNG_EINVAL;
			break;
		}
		ds->d[ds->n].busy_mu = busy_mu;
		ds->d[ds->n].busy = busy;
		if ((nv = rpc_dial_start(&ds->d[ds->n], sock, url)) != 0)
			break;
		ds->n++;
	}
	if (nv == 0)
		return 0;
	rpc_dials_stop(ds);
	return nv;
}

void rpc_dials_pipe_event(struct rpc_dials *ds, nng_pipe p, nng_pipe_ev ev)
{
	/* Every slot, not the first `n`: nng calls this on its own threads while
	 * rpc_dials_start is still counting (a data race under TSan). A slot not
	 * started has id 0, which no dialer has. */
	for (size_t i = 0; i < RPC_URLS_MAX; i++)
		rpc_dial_pipe_event(&ds->d[i], p, ev);
}

void rpc_dials_stop(struct rpc_dials *ds)
{
	for (size_t i = 0; i < ds->n; i++)
		rpc_dial_stop(&ds->d[i]);
	ds->n = 0;
}

/* True when every re-dialled socket that was connected is connected again. */
static bool redial_settled(void)
{
	bool done = true;

	pthread_mutex_lock(&dial_mu);
	for (struct rpc_dial *d = dial_list; d != NULL; d = d->next)
		if (d->dialled && d->url != NULL && atomic_load(&d->pipes) < 0)
			done = false;
	pthread_mutex_unlock(&dial_mu);
	return done;
}

/* Closes `old` when d's owner has nothing in flight: holding its lock, no
 * call can start meanwhile. After 2 s of traffic, closes it anyway. */
static void redial_close_old(struct rpc_dial *d, nng_dialer old)
{
	struct timespec nap = {0, 5 * 1000 * 1000};

	for (int tries = 0; d->busy_mu != NULL && tries < 400; tries++) {
		pthread_mutex_lock(d->busy_mu);
		if (*d->busy == 0) {
			nng_dialer_close(old);
			pthread_mutex_unlock(d->busy_mu);
			return;
		}
		pthread_mutex_unlock(d->busy_mu);
		nanosleep(&nap, NULL);
	}
	nng_dialer_close(old);
}

void rpc_redial_all(void)
{
	struct timespec nap = {0, 10 * 1000 * 1000};
	struct {
		struct rpc_dial *d;
		nng_dialer old;
	} old[64];
	size_t n = 0;

	/* Make before break: the new dialers connect while the old pipes still
	 * carry requests, so a caller never meets a moment without a pipe (a
	 * 503 right after start). A socket whose old dialer had no pipe (its
	 * peer is down) is not waited for; the new dialer finds it later. */
	pthread_mutex_lock(&dial_mu);
	for (struct rpc_dial *d = dial_list; d != NULL; d = d->next) {
		nng_dialer prev = d->dialer;
		bool was_dialled = d->dialled, was_up = d->dialled && atomic_load(&d->pipes) > 0;
		int nv;
		if ((nv = dial_new(d)) != 0) {
			log_warnx("rpc: cannot dial %s again: %s", d->url, nng_strerror(nv));
			d->dialer = prev;
			atomic_store(&d->id, (uint32_t)nng_dialer_id(prev));
			continue;
		}
		d->dialled = true;
		/* -1: connected before, waiting for the new pipe (see settled). */
		if (was_up)
			atomic_fetch_sub(&d->pipes, 1);
		if (was_dialled && n < sizeof(old) / sizeof(old[0])) {
			old[n].d = d;
			old[n++].old = prev;
		} else if (was_dialled) {
			nng_dialer_close(prev); /* more than we track: break first */
		}
	}
	pthread_mutex_unlock(&dial_mu);
	for (int waited = 0; waited < 200 && !redial_settled(); waited++)
		nanosleep(&nap, NULL);
	/* Held throughout: a registered dial cannot go away under us. */
	pthread_mutex_lock(&dial_mu);
	for (struct rpc_dial *d = dial_list; d != NULL; d = d->next)
		if (atomic_load(&d->pipes) < 0)
			atomic_fetch_add(&d->pipes, 1);
	for (size_t i = 0; i < n; i++) {
		bool live = false;
		for (struct rpc_dial *d = dial_list; d != NULL; d = d->next)
			live = live || d == old[i].d;
		if (live)
			redial_close_old(old[i].d, old[i].old);
		/* else: its socket closed meanwhile, and the dialer with it */
	}
	pthread_mutex_unlock(&dial_mu);
}

/* ---- client ------------------------------------------------------------ */

struct rpc_client {
	nng_socket sock;
	struct rpc_dials dials; /* one per URL of the list (replicas) */
	_Atomic int pipes;
	_Atomic uint64_t next_id;
	char id_prefix[17];
	/* Calls started and not yet through their completion: close waits for
	 * them, since nng runs an aborted call's callback after nng_close. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int pending;
	/* Shared around every context operation, exclusive to set `closed`
	 * before nng_close: nng 1.5 panics when they race. */
	pthread_rwlock_t lock;
	bool closed;
};

enum pending_state { PENDING_SEND, PENDING_RECV };

struct rpc_pending {
	struct rpc_client *c;
	nng_ctx ctx;
	nng_aio *aio;
	enum pending_state state;
	const ProtobufCMethodDescriptor *md;
	uint64_t deadline_mono;
	rpc_done_fn done;
	void *arg;
};

static void client_pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	struct rpc_client *c = arg;
	rpc_dials_pipe_event(&c->dials, p, ev);
	if (ev == NNG_PIPE_EV_ADD_POST)
		atomic_fetch_add(&c->pipes, 1);
	else if (ev == NNG_PIPE_EV_REM_POST)
		atomic_fetch_sub(&c->pipes, 1);
}

int rpc_client_open(const char *url, size_t max_msg, struct rpc_client **out)
{
	struct rpc_client *c;
	int nv;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return ERR_NOMEM;
	if (ids_random_hex(c->id_prefix, 8) != 0 || nng_req0_open(&c->sock) != 0) {
		free(c);
		return ERR_IO;
	}
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	pthread_rwlock_init(&c->lock, NULL);
	nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, max_msg ? max_msg : RPC_MAX_MSG_DEFAULT);
	/* nng re-sends after 60 s by default: a state-changing call could run twice. */
	nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	/* A restarted service is found again within 500 ms; a service that stays
	 * down costs two dial attempts a second, not a busy loop. */
	nng_socket_set_ms(c->sock, NNG_OPT_RECONNMINT, 50);
	nng_socket_set_ms(c->sock, NNG_OPT_RECONNMAXT, 500);
	nng_pipe_notify(c->sock, NNG_PIPE_EV_ADD_POST, client_pipe_cb, c);
	nng_pipe_notify(c->sock, NNG_PIPE_EV_REM_POST, client_pipe_cb, c);
	if ((nv = rpc_dials_start(&c->dials, c->sock, url, &c->mu, &c->pending)) != 0) {
		log_warnx("rpc: cannot dial %s: %s", url, nng_strerror(nv));
		nng_close(c->sock);
		pthread_rwlock_destroy(&c->lock);
		pthread_cond_destroy(&c->cv);
		pthread_mutex_destroy(&c->mu);
		free(c);
		return ERR_INVAL;
	}
	*out = c;
	return 0;
}

void rpc_client_close(struct rpc_client *c)
{
	if (c == NULL)
		return;
	pthread_rwlock_wrlock(&c->lock);
	c->closed = true;
	pthread_rwlock_unlock(&c->lock);
	rpc_dials_stop(&c->dials);
	nng_close(c->sock); /* aborts the calls in flight; they finish below */
	pthread_mutex_lock(&c->mu);
	while (c->pending > 0)
		pthread_cond_wait(&c->cv, &c->mu);
	pthread_mutex_unlock(&c->mu);
	pthread_rwlock_destroy(&c->lock);
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

bool rpc_client_connected(struct rpc_client *c)
{
	return atomic_load(&c->pipes) > 0;
}

static void pending_finish(struct rpc_pending *p, struct rpc_result *r)
{
	struct rpc_client *c = p->c;
	p->done(r, p->arg);
	if (r->output != NULL)
		protobuf_c_message_free_unpacked(r->output, NULL);
	pthread_rwlock_rdlock(&c->lock);
	if (!c->closed) /* else nng_close closes the context itself */
		nng_ctx_close(p->ctx);
	pthread_rwlock_unlock(&c->lock);
	nng_aio_reap(p->aio);
	free(p);
	pthread_mutex_lock(&c->mu);
	if (--c->pending == 0)
		pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

static void pending_fail(struct rpc_pending *p, int nv)
{
	struct rpc_result r = {0};
	if (nv == NNG_ETIMEDOUT && rpc_client_connected(p->c)) {
		r.status = MAGNETAR__STATUS__STATUS_DEADLINE_EXCEEDED;
		snprintf(r.code, sizeof(r.code), "service_timeout");
		snprintf(r.message, sizeof(r.message), "the service did not answer in time");
	} else {
		r.status = MAGNETAR__STATUS__STATUS_UNAVAILABLE;
		snprintf(r.code, sizeof(r.code), "service_unavailable");
		snprintf(r.message, sizeof(r.message), "the service is not reachable");
	}
	pending_finish(p, &r);
}

static void pending_decode(struct rpc_pending *p, nng_msg *msg)
{
	struct rpc_result r = {0};
	Magnetar__RpcReply *reply =
	    magnetar__rpc_reply__unpack(NULL, nng_msg_len(msg), nng_msg_body(msg));

	nng_msg_free(msg);
	if (reply == NULL) {
		r.status = MAGNETAR__STATUS__STATUS_INTERNAL;
		snprintf(r.code, sizeof(r.code), "malformed_reply");
		snprintf(r.message, sizeof(r.message), "the service's reply could not be decoded");
	} else if (reply->status != MAGNETAR__STATUS__STATUS_OK) {
		r.status = reply->status;
		if (reply->error != NULL) {
			snprintf(r.code, sizeof(r.code), "%s", reply->error->code);
			snprintf(r.message, sizeof(r.message), "%s", reply->error->message);
			r.breach_count = reply->error->breach_count;
			r.retry_after_s = reply->error->retry_after_s;
		}
		if (r.code[0] == '\0')
			snprintf(r.code, sizeof(r.code), "internal");
	} else {
		r.output = protobuf_c_message_unpack(p->md->output, NULL, reply->payload.len,
		                                     reply->payload.data);
		if (r.output == NULL) {
			r.status = MAGNETAR__STATUS__STATUS_INTERNAL;
			snprintf(r.code, sizeof(r.code), "malformed_reply");
			snprintf(r.message, sizeof(r.message),
			         "the service's reply could not be decoded");
		}
	}
	if (reply != NULL)
		magnetar__rpc_reply__free_unpacked(reply, NULL);
	pending_finish(p, &r);
}

static void pending_cb(void *arg)
{
	struct rpc_pending *p = arg;
	int nv = nng_aio_result(p->aio);
	uint64_t now;

	if (nv != 0) {
		if (p->state == PENDING_SEND)
			nng_msg_free(nng_aio_get_msg(p->aio));
		pending_fail(p, nv);
		return;
	}
	if (p->state == PENDING_SEND) {
		now = clock_mono_ms();
		if (now >= p->deadline_mono) {
			pending_fail(p, NNG_ETIMEDOUT);
			return;
		}
		/* Once the receive is started, p may complete and be freed at any
		 * moment on another thread: only the client is touched after it. */
		struct rpc_client *c = p->c;
		pthread_rwlock_rdlock(&c->lock);
		if (c->closed) {
			pthread_rwlock_unlock(&c->lock);
			pending_fail(p, NNG_ECLOSED);
			return;
		}
		p->state = PENDING_RECV;
		nng_aio_set_timeout(p->aio, (nng_duration)(p->deadline_mono - now));
		nng_ctx_recv(p->ctx, p->aio);
		pthread_rwlock_unlock(&c->lock);
		return;
	}
	pending_decode(p, nng_aio_get_msg(p->aio));
}

int rpc_call_async(struct rpc_client *c, const ProtobufCServiceDescriptor *desc, const char *method,
                   const ProtobufCMessage *input, const Magnetar__RequestContext *ctx,
                   int timeout_ms, rpc_done_fn done, void *arg)
{
	Magnetar__RpcRequest env = MAGNETAR__RPC_REQUEST__INIT;
	struct rpc_pending *p;
	char rid[64];
	nng_msg *msg = NULL;
	uint8_t *payload = NULL;
	size_t len;
	int rv = ERR_NOMEM;

	if (timeout_ms <= 0)
		return ERR_INVAL;
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return ERR_NOMEM;
	p->c = c;
	p->done = done;
	p->arg = arg;
	if ((p->md = protobuf_c_service_descriptor_get_method_by_name(desc, method)) == NULL ||
	    input->descriptor != p->md->input) {
		rv = ERR_INVAL;
		goto fail;
	}
	if (ctx != NULL && ctx->request_id != NULL && ctx->request_id[0] != '\0')
		snprintf(rid, sizeof(rid), "%s", ctx->request_id);
	else
		snprintf(rid, sizeof(rid), "%s-%llu", c->id_prefix,
		         (unsigned long long)atomic_fetch_add(&c->next_id, 1));
	env.method = (char *)method;
	env.request_id = rid;
	env.deadline_unix_ms = clock_unix_ms() + (uint64_t)timeout_ms;
	env.context = (Magnetar__RequestContext *)ctx;
	env.payload.len = protobuf_c_message_get_packed_size(input);
	if (env.payload.len > 0) {
		if ((payload = malloc(env.payload.len)) == NULL)
			goto fail;
		protobuf_c_message_pack(input, payload);
		env.payload.data = payload;
	}
	len = magnetar__rpc_request__get_packed_size(&env);
	if (nng_msg_alloc(&msg, len) != 0)
		goto fail;
	magnetar__rpc_request__pack(&env, nng_msg_body(msg));
	free(payload);
	payload = NULL;
	if (nng_aio_alloc(&p->aio, pending_cb, p) != 0)
		goto fail;
	pthread_rwlock_rdlock(&c->lock);
	if (c->closed || nng_ctx_open(&p->ctx, c->sock) != 0) {
		pthread_rwlock_unlock(&c->lock);
		rv = ERR_CLOSED;
		goto fail;
	}
	p->deadline_mono = clock_mono_ms() + (uint64_t)timeout_ms;
	p->state = PENDING_SEND;
	pthread_mutex_lock(&c->mu);
	c->pending++;
	pthread_mutex_unlock(&c->mu);
	nng_aio_set_timeout(p->aio, timeout_ms);
	nng_aio_set_msg(p->aio, msg);
	nng_ctx_send(p->ctx, p->aio);
	pthread_rwlock_unlock(&c->lock);
	return 0;
fail:
	free(payload);
	if (msg != NULL)
		nng_msg_free(msg);
	if (p->aio != NULL)
		nng_aio_free(p->aio);
	free(p);
	return rv;
}

struct sync_wait {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	struct rpc_result *r;
};

static void sync_done(struct rpc_result *r, void *arg)
{
	struct sync_wait *w = arg;
	*w->r = *r;
	r->output = NULL; /* ownership moves to the sync caller */
	pthread_mutex_lock(&w->mu);
	w->done = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

int rpc_call_sync(struct rpc_client *c, const ProtobufCServiceDescriptor *desc, const char *method,
                  const ProtobufCMessage *input, const Magnetar__RequestContext *ctx,
                  int timeout_ms, struct rpc_result *r)
{
	struct sync_wait w = {.done = false, .r = r};
	int rv;

	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&w.mu, NULL);
	pthread_cond_init(&w.cv, NULL);
	if ((rv = rpc_call_async(c, desc, method, input, ctx, timeout_ms, sync_done, &w)) == 0) {
		pthread_mutex_lock(&w.mu);
		while (!w.done)
			pthread_cond_wait(&w.cv, &w.mu);
		pthread_mutex_unlock(&w.mu);
	}
	pthread_cond_destroy(&w.cv);
	pthread_mutex_destroy(&w.mu);
	return rv;
}

void rpc_result_fini(struct rpc_result *r)
{
	if (r->output != NULL)
		protobuf_c_message_free_unpacked(r->output, NULL);
	r->output = NULL;
}

const char *rpc_status_name(Magnetar__Status s)
{
	switch (s) {
	case MAGNETAR__STATUS__STATUS_OK:
		return "ok";
	case MAGNETAR__STATUS__STATUS_INVALID:
		return "invalid";
	case MAGNETAR__STATUS__STATUS_NOT_FOUND:
		return "not_found";
	case MAGNETAR__STATUS__STATUS_UNAUTHENTICATED:
		return "unauthenticated";
	case MAGNETAR__STATUS__STATUS_PERMISSION_DENIED:
		return "permission_denied";
	case MAGNETAR__STATUS__STATUS_CONFLICT:
		return "conflict";
	case MAGNETAR__STATUS__STATUS_RESOURCE_EXHAUSTED:
		return "resource_exhausted";
	case MAGNETAR__STATUS__STATUS_UNAVAILABLE:
		return "unavailable";
	case MAGNETAR__STATUS__STATUS_DEADLINE_EXCEEDED:
		return "deadline_exceeded";
	case MAGNETAR__STATUS__STATUS_UNIMPLEMENTED:
		return "unimplemented";
	case MAGNETAR__STATUS__STATUS_INTERNAL:
		return "internal";
	default:
		return "unknown";
	}
}
