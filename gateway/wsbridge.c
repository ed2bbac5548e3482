/*
 * wsbridge.c — one upgraded WebSocket relayed to one terminal's nng pair,
 * on a thread of its own (bounded in number) running poll() over the
 * socket and the pair's send/receive descriptors, with libwslay framing.
 * Backpressure, never buffers: output from the pair is received only while
 * wslay holds less than WSB_OUT_HIGH bytes for the client, and the socket
 * is read only while fewer than WSB_IN_HIGH client messages wait for the
 * pair (docs/terminal.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nng/nng.h>
#include <nng/protocol/pair0/pair.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <wslay/wslay.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "gateway/gateway.h"
#include "gateway/wsframe.h"

#define WSB_MAX 256               /* bridges (threads) at once */
#define WSB_OUT_HIGH (256u << 10) /* bytes queued for the client before the pair waits */
#define WSB_IN_HIGH 32            /* client messages waiting before the socket waits */
#define WSB_IN_MAX 1024           /* hard cap: one wslay read can hold many tiny frames */
#define WSB_POLL_MS 250
#define WSB_CLOSE_GRACE_MS 2000 /* after our close frame, for the client's */

struct wsbridge {
	struct gateway *gw;
	MHD_socket fd;
	struct MHD_UpgradeResponseHandle *urh;
	char *extra;
	size_t extra_len, extra_off;
	char url[160];
	nng_socket sock;
	bool sock_open;
	_Atomic bool pipe_gone;
	wslay_event_context_ptr ws;
	nng_msg *inq[WSB_IN_MAX]; /* ring: client messages for the pair */
	size_t in_head, in_n;
	bool closing, close_queued;
	uint16_t close_code;
	uint64_t closing_since;
};

static pthread_mutex_t wsb_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wsb_cv = PTHREAD_COND_INITIALIZER;
static int wsb_active;
static bool wsb_stopping;

/* ---- wslay callbacks --------------------------------------------------------- */

static ssize_t wsb_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                           void *user)
{
	struct wsbridge *b = user;
	ssize_t n;
	(void)flags;

	/* Bytes MHD read past the request's headers come first. */
	if (b->extra_off < b->extra_len) {
		size_t k = b->extra_len - b->extra_off;
		if (k > len)
			k = len;
		memcpy(buf, b->extra + b->extra_off, k);
		b->extra_off += k;
		return (ssize_t)k;
	}
	/* The input queue is full: read nothing more (backpressure). */
	if (b->in_n >= WSB_IN_HIGH) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	do
		n = recv(b->fd, buf, len, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	if (n <= 0) {
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return -1;
	}
	return n;
}

static ssize_t wsb_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                           void *user)
{
	struct wsbridge *b = user;
	ssize_t n;
	(void)flags;

	do
		n = send(b->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	if (n < 0) {
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return -1;
	}
	return n;
}

static int wsb_genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
	(void)ctx;
	(void)user;
	return getrandom(buf, len, 0) == (ssize_t)len ? 0 : -1;
}

/* Closes once every queued message has gone out: wslay sends control
 * frames ahead of queued data, and the exit frame must precede the close. */
static void wsb_close(struct wsbridge *b, uint16_t code)
{
	if (b->closing)
		return;
	b->closing = true;
	b->close_code = code;
	b->closing_since = clock_mono_ms();
}

static void wsb_on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                       void *user)
{
	struct wsbridge *b = user;
	nng_msg *m;
	int v;
	(void)ctx;

	if (arg->opcode != WSLAY_TEXT_FRAME && arg->opcode != WSLAY_BINARY_FRAME)
		return; /* ping, pong and close are wslay's */
	if (b->closing)
		return;
	v = wsframe_client(arg->opcode == WSLAY_BINARY_FRAME ? WSFRAME_OP_BINARY : WSFRAME_OP_TEXT,
	                   arg->msg, arg->msg_length);
	if (v != WSFRAME_FORWARD) {
		wsb_close(b, v == WSFRAME_REFUSE_TYPE ? 1003 : 1008);
		return;
	}
	if (b->in_n == WSB_IN_MAX || nng_msg_alloc(&m, 0) != 0) {
		wsb_close(b, 1008);
		return;
	}
	if (nng_msg_append(m, arg->msg, arg->msg_length) != 0) {
		nng_msg_free(m);
		wsb_close(b, 1011);
		return;
	}
	b->inq[(b->in_head + b->in_n) % WSB_IN_MAX] = m;
	b->in_n++;
}

/* ---- the relay ------------------------------------------------------------------ */

static void wsb_pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	struct wsbridge *b = arg;
	(void)p;
	if (ev == NNG_PIPE_EV_REM_POST)
		atomic_store(&b->pipe_gone, true);
}

/* Sends what the client typed, in order, as far as the pair takes it now. */
static void wsb_flush_input(struct wsbridge *b)
{
	while (b->in_n > 0) {
		nng_msg *m = b->inq[b->in_head];
		if (nng_sendmsg(b->sock, m, NNG_FLAG_NONBLOCK) != 0)
			return; /* still ours; retried when the pair can take it */
		b->in_head = (b->in_head + 1) % WSB_IN_MAX;
		b->in_n--;
	}
}

/* Moves output from the pair to wslay's queue while it is short. */
static void wsb_pump_output(struct wsbridge *b)
{
	for (int i = 0; i < 64 && !b->closing; i++) {
		struct wslay_event_msg wm;
		nng_msg *m;
		int v;
		if (wslay_event_get_queued_msg_length(b->ws) >= WSB_OUT_HIGH)
			return;
		if (nng_recvmsg(b->sock, &m, NNG_FLAG_NONBLOCK) != 0)
			return;
		v = wsframe_server(nng_msg_body(m), nng_msg_len(m));
		/* The terminal ended the stream (deleted, revoked, idle): said in
		 * a frame, since the pipe's removal is not reported while nng's
		 * reaper is stalled (see wsb_thread's end). Not for the client. */
		if (v == WSFRAME_CLOSED) {
			nng_msg_free(m);
			wsb_close(b, 1000);
			return;
		}
		if (v == WSFRAME_FORWARD || v == WSFRAME_EXIT) {
			wm.opcode = WSLAY_BINARY_FRAME;
			wm.msg = nng_msg_body(m);
			wm.msg_length = nng_msg_len(m);
			if (wslay_event_queue_msg(b->ws, &wm) != 0)
				wsb_close(b, 1011);
		}
		nng_msg_free(m);
		/* The exit frame is the last word: then close (API.md). */
		if (v == WSFRAME_EXIT)
			wsb_close(b, 1000);
	}
}

static void wsb_run(struct wsbridge *b)
{
	int rfd = -1, sfd = -1;

	for (;;) {
		struct pollfd p[3];
		bool stopping;
		int n;

		pthread_mutex_lock(&wsb_mu);
		stopping = wsb_stopping;
		pthread_mutex_unlock(&wsb_mu);
		if (stopping)
			wsb_close(b, 1001);
		if (!b->closing && atomic_load(&b->pipe_gone))
			wsb_close(b, 1000); /* the terminal closed (idle, deleted, exited) */
		if (b->closing && clock_mono_ms() - b->closing_since > WSB_CLOSE_GRACE_MS)
			return;
		if (b->closing && !b->close_queued &&
		    wslay_event_get_queued_msg_count(b->ws) == 0) {
			wslay_event_queue_close(b->ws, b->close_code, NULL, 0);
			b->close_queued = true;
		}
		if (!wslay_event_want_read(b->ws) && !wslay_event_want_write(b->ws))
			return;
		/* Bytes handed over by MHD are parsed before any poll. */
		if (b->extra_off < b->extra_len && wslay_event_recv(b->ws) != 0)
			return;
		if (rfd < 0 && (nng_socket_get_int(b->sock, NNG_OPT_RECVFD, &rfd) != 0 ||
		                nng_socket_get_int(b->sock, NNG_OPT_SENDFD, &sfd) != 0))
			return;
		p[0].fd = b->fd;
		p[0].events =
		    (short)((wslay_event_want_read(b->ws) && b->in_n < WSB_IN_HIGH ? POLLIN : 0) |
		            (wslay_event_want_write(b->ws) ? POLLOUT : 0));
		p[1].fd = rfd;
		p[1].events =
		    (short)(!b->closing && wslay_event_get_queued_msg_length(b->ws) < WSB_OUT_HIGH
		                ? POLLIN
		                : 0);
		p[2].fd = sfd;
		p[2].events = (short)(b->in_n > 0 ? POLLIN : 0);
		p[0].revents = p[1].revents = p[2].revents = 0;
		n = poll(p, 3, WSB_POLL_MS);
		if (n < 0 && errno != EINTR)
			return;
		if ((p[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0 &&
		    wslay_event_recv(b->ws) != 0)
			return;
		if ((p[1].revents & POLLIN) != 0)
			wsb_pump_output(b);
		if (b->in_n > 0)
			wsb_flush_input(b);
		if (wslay_event_want_write(b->ws) && wslay_event_send(b->ws) != 0)
			return;
	}
}

static void *wsb_thread(void *arg)
{
	struct wsbridge *b = arg;
	struct wslay_event_callbacks cb = {
	    .recv_callback = wsb_recv_cb,
	    .send_callback = wsb_send_cb,
	    .genmask_callback = wsb_genmask_cb,
	    .on_msg_recv_callback = wsb_on_msg,
	};
	int rv;

	/* Keystrokes and their echoes are tiny: Nagle would hold each for the
	 * peer's delayed ACK (~40 ms). Fails harmlessly on a non-TCP socket. */
	setsockopt(b->fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
	setsockopt(b->fd, IPPROTO_TCP, TCP_CORK, &(int){0}, sizeof(int));
	if (wslay_event_context_server_init(&b->ws, &cb, b) != 0) {
		b->ws = NULL;
		goto out;
	}
	wslay_event_config_set_max_recv_msg_length(b->ws, WSFRAME_DATA_MAX + 1);
	if ((rv = nng_pair0_open(&b->sock)) == 0) {
		b->sock_open = true;
		nng_socket_set_size(b->sock, NNG_OPT_RECVMAXSZ, WSFRAME_DATA_MAX + 1);
		nng_socket_set_int(b->sock, NNG_OPT_SENDBUF, 16);
		nng_socket_set_int(b->sock, NNG_OPT_RECVBUF, 16);
		/* One connection: if it goes, so does the bridge (no redial). */
		nng_socket_set_ms(b->sock, NNG_OPT_RECONNMINT, 60000);
		nng_socket_set_ms(b->sock, NNG_OPT_RECONNMAXT, 60000);
		nng_pipe_notify(b->sock, NNG_PIPE_EV_REM_POST, wsb_pipe_cb, b);
		rv = nng_dial(b->sock, b->url, NULL, 0);
	}
	if (rv != 0) {
		log_warnx("wsbridge: cannot reach the terminal stream: %s", nng_strerror(rv));
		wsb_close(b, 1011);
	}
	wsb_run(b);
out:
	while (b->in_n > 0) {
		nng_msg_free(b->inq[b->in_head]);
		b->in_head = (b->in_head + 1) % WSB_IN_MAX;
		b->in_n--;
	}
	if (b->ws != NULL)
		wslay_event_context_free(b->ws);
	/* The client's connection first: nng 1.5's nng_close now and then never
	 * returns (its reaper thread stalls: nanomsg/nng#1543, fixed after
	 * 1.5.2; docs/reliability.md). Then this thread and its slot are lost,
	 * but the client is not left hanging. */
	MHD_upgrade_action(b->urh, MHD_UPGRADE_ACTION_CLOSE);
	if (b->sock_open)
		nng_close(b->sock); /* after: its pipe callback uses `b` */
	free(b->extra);
	free(b);
	pthread_mutex_lock(&wsb_mu);
	wsb_active--;
	pthread_cond_broadcast(&wsb_cv);
	pthread_mutex_unlock(&wsb_mu);
	return NULL;
}

/* MHD_UpgradeHandler: runs on an MHD thread right after the 101; must not
 * block, so the relay gets its own thread. */
void wsbridge_upgraded(void *cls, struct MHD_Connection *conn, void *req_cls, const char *extra_in,
                       size_t extra_in_size, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
	struct wsbridge *b = cls;
	pthread_attr_t attr;
	pthread_t th;
	bool ok;
	(void)conn;
	(void)req_cls;

	b->fd = sock;
	b->urh = urh;
	if (extra_in_size > 0 && (b->extra = malloc(extra_in_size)) != NULL) {
		memcpy(b->extra, extra_in, extra_in_size);
		b->extra_len = extra_in_size;
	}
	pthread_mutex_lock(&wsb_mu);
	ok = !wsb_stopping && wsb_active < WSB_MAX && (extra_in_size == 0 || b->extra != NULL);
	if (ok)
		wsb_active++;
	pthread_mutex_unlock(&wsb_mu);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (ok && pthread_create(&th, &attr, wsb_thread, b) == 0) {
		pthread_attr_destroy(&attr);
		return;
	}
	pthread_attr_destroy(&attr);
	if (ok) {
		pthread_mutex_lock(&wsb_mu);
		wsb_active--;
		pthread_mutex_unlock(&wsb_mu);
	}
	log_warnx("wsbridge: refused an upgraded connection (limit or shutdown)");
	MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
	free(b->extra);
	free(b);
}

struct wsbridge *wsbridge_new(struct gateway *gw, const char *url)
{
	struct wsbridge *b;

	if (strlen(url) >= sizeof(b->url) || (b = calloc(1, sizeof(*b))) == NULL)
		return NULL;
	b->gw = gw;
	strcpy(b->url, url);
	atomic_init(&b->pipe_gone, false);
	return b;
}

void wsbridge_free(struct wsbridge *b)
{
	free(b);
}

void wsbridge_stop(struct gateway *gw)
{
	(void)gw;
	pthread_mutex_lock(&wsb_mu);
	wsb_stopping = true;
	/* Each bridge sees the flag within a poll period, sends 1001 and ends
	 * within the close grace. */
	while (wsb_active > 0)
		pthread_cond_wait(&wsb_cv, &wsb_mu);
	pthread_mutex_unlock(&wsb_mu);
}
