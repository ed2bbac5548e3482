/*
 * rpc_client.c — the calling side of protobuf-c services over nng req/rep
 * (rpc.h): one req0 socket per service dialling each replica (rpc_dial.c),
 * a context and an aio per call, whose timeout is the call's deadline; a
 * call of a method safe to run twice is sent again when its pipe closes
 * under it (rpc_client_resend_on_reset).
 */
#include "common/rpc.h"

#include <nng/nng.h>
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
	const char *const *resend; /* rpc_client_resend_on_reset, or NULL */
	_Atomic uint64_t resent;
	unsigned server_roles; /* rpc_client_open_for; 0: any server */
	_Atomic uint64_t refused;
	/* Refused pipes nng has not yet reported removed: counted in `pipes`
	 * (the removal balances it) but no connection to the service, so a
	 * call that times out meanwhile is "unavailable", not "timeout". */
	pthread_mutex_t refused_mu;
	uint32_t refused_ids[8];
	_Atomic int refused_open;
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
	nng_msg *copy; /* the request, kept while it may be sent again */
	int resends;
};

/* Before nng's req protocol may send on a new pipe: is the server at the
 * other end the service we meant (rpc_client_open_for)? */
static bool client_server_ok(struct rpc_client *c, nng_pipe p)
{
	nng_sockaddr sa;
	uint64_t uid;

	if (c->server_roles == 0)
		return true;
	if (nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_UID, &uid) == 0)
		return rpc_peer_is((uid_t)uid, c->server_roles);
	/* No uid: tcp:// and inproc:// carry none and are let through; an
	 * ipc:// pipe whose uid cannot be read is not. */
	return nng_pipe_get_addr(p, NNG_OPT_REMADDR, &sa) == 0 && sa.s_family != NNG_AF_IPC;
}

/* Notes a refused pipe (add) or forgets it at its removal. More than the
 * slots at once (each is closed as soon as it is seen) are not noted: they
 * then count as connected until removed, as before. */
static void client_refused_track(struct rpc_client *c, int id, bool add)
{
	pthread_mutex_lock(&c->refused_mu);
	for (size_t i = 0; i < sizeof(c->refused_ids) / sizeof(c->refused_ids[0]); i++) {
		if (add && c->refused_ids[i] == 0) {
			c->refused_ids[i] = (uint32_t)id;
			atomic_fetch_add(&c->refused_open, 1);
			break;
		}
		if (!add && c->refused_ids[i] == (uint32_t)id) {
			c->refused_ids[i] = 0;
			atomic_fetch_sub(&c->refused_open, 1);
			break;
		}
	}
	pthread_mutex_unlock(&c->refused_mu);
}

static void client_pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	struct rpc_client *c = arg;

	if (ev == NNG_PIPE_EV_ADD_PRE) {
		if (client_server_ok(c, p))
			return;
		uint64_t n = atomic_fetch_add(&c->refused, 1) + 1;
		/* The dialer tries again every 50 ms: say so at 1, 2, 4, 8, ... */
		if ((n & (n - 1)) == 0)
			log_warnx("rpc: closed a connection whose server is not the service's user "
			          "(a process holding its socket name?) refused=%llu",
			          (unsigned long long)n);
		/* nng still reports its removal (REM_POST): counted as added so
		 * that the removal balances, and closed before ADD_POST, so no
		 * request ever goes out on it. */
		rpc_dials_pipe_event(&c->dials, p, NNG_PIPE_EV_ADD_POST);
		client_refused_track(c, nng_pipe_id(p), true);
		atomic_fetch_add(&c->pipes, 1);
		nng_pipe_close(p);
		return;
	}
	rpc_dials_pipe_event(&c->dials, p, ev);
	if (ev == NNG_PIPE_EV_ADD_POST)
		atomic_fetch_add(&c->pipes, 1);
	else if (ev == NNG_PIPE_EV_REM_POST) {
		atomic_fetch_sub(&c->pipes, 1); /* first: never more "connected" than true */
		client_refused_track(c, nng_pipe_id(p), false);
	}
}

int rpc_client_open(const char *url, size_t max_msg, struct rpc_client **out)
{
	return rpc_client_open_for(url, max_msg, 0, out);
}

uint64_t rpc_client_refused(struct rpc_client *c)
{
	return atomic_load(&c->refused);
}

int rpc_client_open_for(const char *url, size_t max_msg, unsigned server_roles,
                        struct rpc_client **out)
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
	pthread_mutex_init(&c->refused_mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	pthread_rwlock_init(&c->lock, NULL);
	c->server_roles = server_roles;
	nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, max_msg ? max_msg : RPC_MAX_MSG_DEFAULT);
	/* nng re-sends after 60 s by default: a state-changing call could run twice. */
	nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	/* A restarted service is found again within 500 ms; a service that stays
	 * down costs two dial attempts a second, not a busy loop. */
	nng_socket_set_ms(c->sock, NNG_OPT_RECONNMINT, 50);
	nng_socket_set_ms(c->sock, NNG_OPT_RECONNMAXT, 500);
	nng_pipe_notify(c->sock, NNG_PIPE_EV_ADD_PRE, client_pipe_cb, c);
	nng_pipe_notify(c->sock, NNG_PIPE_EV_ADD_POST, client_pipe_cb, c);
	nng_pipe_notify(c->sock, NNG_PIPE_EV_REM_POST, client_pipe_cb, c);
	if ((nv = rpc_dials_start(&c->dials, c->sock, url, &c->mu, &c->pending)) != 0) {
		log_warnx("rpc: cannot dial %s: %s", url, nng_strerror(nv));
		nng_close(c->sock);
		pthread_rwlock_destroy(&c->lock);
		pthread_cond_destroy(&c->cv);
		pthread_mutex_destroy(&c->mu);
		pthread_mutex_destroy(&c->refused_mu);
		free(c);
		return ERR_INVAL;
	}
	*out = c;
	return 0;
}

/* How long rpc_client_close waits for a dial in progress to finish. */
#define RPC_CLOSE_GRACE_MS 200

void rpc_client_close(struct rpc_client *c)
{
	const struct timespec tick = {.tv_nsec = 2000000};
	uint64_t until;

	if (c == NULL)
		return;
	/* Without a pipe, a dial may be half way through: connected in the
	 * kernel, the server's handshake not yet written. A close then makes
	 * nng 1.5's listener over there write it to a closed socket and stop
	 * accepting for good (issue 1518, docs/reliability.md): a magctl or a
	 * call that gave up on a slow or stopped service silenced it. A pipe
	 * is only added once the server's handshake arrived. A service that
	 * is down costs this wait once. */
	until = clock_mono_ms() + RPC_CLOSE_GRACE_MS;
	while (atomic_load(&c->pipes) == 0 && clock_mono_ms() < until)
		nanosleep(&tick, NULL);
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
	pthread_mutex_destroy(&c->refused_mu);
	free(c);
}

bool rpc_client_connected(struct rpc_client *c)
{
	return atomic_load(&c->pipes) > atomic_load(&c->refused_open);
}

void rpc_client_resend_on_reset(struct rpc_client *c, const char *const *methods)
{
	c->resend = methods;
}

uint64_t rpc_client_resent(struct rpc_client *c)
{
	return atomic_load(&c->resent);
}

static bool client_may_resend(const struct rpc_client *c, const char *method)
{
	for (const char *const *m = c->resend; m != NULL && *m != NULL; m++)
		if (strcmp(*m, method) == 0)
			return true;
	return false;
}

/* The kept copy may hold a password (Login): wiped, not only freed. */
static void pending_drop_copy(struct rpc_pending *p)
{
	if (p->copy == NULL)
		return;
	explicit_bzero(nng_msg_body(p->copy), nng_msg_len(p->copy));
	nng_msg_free(p->copy);
	p->copy = NULL;
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
	pending_drop_copy(p);
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

/* The pipe closed under a call sent and safe to run twice: send the kept
 * copy again (nng picks a live pipe, or waits for one until the deadline).
 * False when it may not be sent again. */
static bool pending_resend(struct rpc_pending *p)
{
	struct rpc_client *c = p->c;
	uint64_t now = clock_mono_ms();
	nng_msg *msg = p->copy;

	if (msg == NULL || p->resends >= RPC_RESENDS || now >= p->deadline_mono)
		return false;
	p->copy = NULL;
	if (p->resends + 1 < RPC_RESENDS && nng_msg_dup(&p->copy, msg) != 0)
		p->copy = NULL; /* out of memory: this is the last try */
	p->resends++;
	atomic_fetch_add(&c->resent, 1);
	pthread_rwlock_rdlock(&c->lock);
	if (c->closed) {
		pthread_rwlock_unlock(&c->lock);
		nng_msg_free(msg);
		return false;
	}
	p->state = PENDING_SEND;
	nng_aio_set_timeout(p->aio, (nng_duration)(p->deadline_mono - now));
	nng_aio_set_msg(p->aio, msg);
	nng_ctx_send(p->ctx, p->aio);
	pthread_rwlock_unlock(&c->lock);
	return true;
}

static void pending_cb(void *arg)
{
	struct rpc_pending *p = arg;
	int nv = nng_aio_result(p->aio);
	uint64_t now;

	if (nv == NNG_ECONNRESET && p->state == PENDING_RECV && pending_resend(p))
		return;
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

/* rpc_call_async, also handing out the call (rpc_call_sync's guard): valid
 * until `done` has returned. */
static int call_start(struct rpc_client *c, const ProtobufCServiceDescriptor *desc,
                      const char *method, const ProtobufCMessage *input,
                      const Magnetar__RequestContext *ctx, int timeout_ms, rpc_done_fn done,
                      void *arg, struct rpc_pending **started)
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
	if (client_may_resend(c, method) && nng_msg_dup(&p->copy, msg) != 0)
		goto fail;
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
	*started = p;
	nng_ctx_send(p->ctx, p->aio);
	pthread_rwlock_unlock(&c->lock);
	return 0;
fail:
	free(payload);
	if (msg != NULL)
		nng_msg_free(msg);
	if (p->aio != NULL)
		nng_aio_free(p->aio);
	pending_drop_copy(p);
	free(p);
	return rv;
}

int rpc_call_async(struct rpc_client *c, const ProtobufCServiceDescriptor *desc, const char *method,
                   const ProtobufCMessage *input, const Magnetar__RequestContext *ctx,
                   int timeout_ms, rpc_done_fn done, void *arg)
{
	struct rpc_pending *p;
	return call_start(c, desc, method, input, ctx, timeout_ms, done, arg, &p);
}

/* How long past its deadline a blocking call waits for nng before it
 * aborts the call itself, and how often it tries. */
#define RPC_SYNC_GRACE_MS 1000
#define RPC_SYNC_ABORTS 5

/* On the heap, shared by the waiter and the completion: a call the waiter
 * gave up on may still complete later. The last of the two frees it. */
struct sync_wait {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done, abandoned;
	int refs;
	struct rpc_result r;
};

static void sync_unref(struct sync_wait *w)
{
	pthread_mutex_lock(&w->mu);
	bool last = --w->refs == 0;
	pthread_mutex_unlock(&w->mu);
	if (!last)
		return;
	rpc_result_fini(&w->r);
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
	free(w);
}

static void sync_done(struct rpc_result *r, void *arg)
{
	struct sync_wait *w = arg;
	pthread_mutex_lock(&w->mu);
	if (!w->abandoned) {
		w->r = *r;
		r->output = NULL; /* ownership moves to the sync caller */
	}
	w->done = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	sync_unref(w);
}

/* Waits until `until_mono` (CLOCK_MONOTONIC ms) or done; true when done. */
static bool sync_wait_until(struct sync_wait *w, uint64_t until_mono)
{
	struct timespec ts = {.tv_sec = (time_t)(until_mono / 1000),
	                      .tv_nsec = (long)(until_mono % 1000) * 1000000};
	while (!w->done && pthread_cond_timedwait(&w->cv, &w->mu, &ts) == 0)
		;
	return w->done;
}

/*
 * nng 1.5.2 has been seen to lose a call's timeout: an outbox sender stuck
 * for good in this wait while audit, killed and restarted, served everyone
 * else (test_audit.py's kill -9 test, 2 runs in ~150). So the waiter does
 * not trust the deadline alone: past it by a grace, it aborts the call
 * itself (the aio, still live while `done` has not run: the completion
 * cannot pass sync_done while we hold the lock), a few times, since an
 * abort landing between two steps of a call does nothing. If nng still
 * never completes it, the waiter returns a timeout and leaves the call to
 * finish whenever it does.
 */
int rpc_call_sync(struct rpc_client *c, const ProtobufCServiceDescriptor *desc, const char *method,
                  const ProtobufCMessage *input, const Magnetar__RequestContext *ctx,
                  int timeout_ms, struct rpc_result *r)
{
	struct sync_wait *w;
	struct rpc_pending *p = NULL;
	uint64_t until;
	int rv, aborts = 0;

	memset(r, 0, sizeof(*r));
	if ((w = calloc(1, sizeof(*w))) == NULL)
		return ERR_NOMEM;
	if (clock_cond_init_mono(&w->cv) != 0) {
		free(w);
		return ERR_NOMEM;
	}
	pthread_mutex_init(&w->mu, NULL);
	w->refs = 2;
	if ((rv = call_start(c, desc, method, input, ctx, timeout_ms, sync_done, w, &p)) != 0) {
		w->refs = 1;
		sync_unref(w);
		return rv;
	}
	until = clock_mono_ms() + (uint64_t)timeout_ms + RPC_SYNC_GRACE_MS;
	pthread_mutex_lock(&w->mu);
	while (!sync_wait_until(w, until) && aborts < RPC_SYNC_ABORTS) {
		aborts++;
		log_warnx("rpc: %s found no end %d ms past its deadline: aborting it (%d)", method,
		          RPC_SYNC_GRACE_MS * aborts, aborts);
		nng_aio_abort(p->aio, NNG_ETIMEDOUT);
		until = clock_mono_ms() + RPC_SYNC_GRACE_MS;
	}
	if (w->done) {
		*r = w->r;
		w->r.output = NULL;
	} else {
		w->abandoned = true;
		log_warnx("rpc: %s never ended: given up as timed out (nng lost it)", method);
		r->status = MAGNETAR__STATUS__STATUS_DEADLINE_EXCEEDED;
		snprintf(r->code, sizeof(r->code), "service_timeout");
		snprintf(r->message, sizeof(r->message), "the service did not answer in time");
	}
	pthread_mutex_unlock(&w->mu);
	sync_unref(w);
	return 0;
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
