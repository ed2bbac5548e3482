/*
 * wsbridge.c — one upgraded WebSocket relayed to one terminal's stream (a
 * Unix stream connection to the terminal service, docs/terminal.md), on a
 * thread of its own (bounded in number) running poll() over both sockets,
 * with libwslay framing on the client's side and length-prefixed frames
 * (common/lenframe.h) on the terminal's. Backpressure, never buffers:
 * output is read from the stream only while wslay holds less than
 * WSB_OUT_HIGH bytes for the client, and the client's socket is read only
 * while less than WSB_IN_HIGH bytes of its messages wait for the stream.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/lenframe.h"
#include "common/log.h"
#include "gateway/gateway.h"
#include "gateway/wsframe.h"

#define WSB_MAX 256               /* bridges (threads) at once */
#define WSB_OUT_HIGH (256u << 10) /* bytes queued for the client before the stream waits */
#define WSB_IN_HIGH (64u << 10)   /* bytes for the terminal before the client waits */
/* One wslay read (4 KiB) past the mark can finish one largest message and
 * many tiny ones; more than this is refused (1008). */
#define WSB_IN_CAP (WSB_IN_HIGH + 2 * (LENFRAME_HDR + WSFRAME_DATA_MAX + 1))
#define WSB_POLL_MS 250
#define WSB_OUT_MSGS 4096       /* messages queued for the client (pongs have no bytes) */
#define WSB_CLOSE_GRACE_MS 2000 /* after our close frame, for the client's */
#define WSB_STALL_MS 10000      /* the terminal gone, a client that takes nothing */
#define WSB_CONNECT_MS 2000     /* connect and hello, to the terminal service */

struct wsbridge {
	struct gateway *gw;
	MHD_socket fd;
	struct MHD_UpgradeResponseHandle *urh;
	char *extra;
	size_t extra_len, extra_off;
	char path[108];
	uint8_t hello[LENFRAME_HELLO]; /* holds the key until sent */
	int sfd;                       /* the terminal's stream */
	bool stream_end;               /* read to its end (or it broke) */
	bool stream_hup;               /* the terminal hung up; its last bytes may wait */
	bool input_dead;               /* the terminal takes no more input */
	struct lenframe_reader out;
	uint8_t *in; /* framed client messages for the terminal */
	size_t in_off, in_len;
	wslay_event_context_ptr ws;
	bool closing, close_queued;
	uint16_t close_code;
	uint64_t close_queued_mono;
	uint64_t progress_mono; /* the client last took bytes */
};

static pthread_mutex_t wsb_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wsb_cv = PTHREAD_COND_INITIALIZER;
static int wsb_active;
static bool wsb_stopping;

/* ---- wslay callbacks --------------------------------------------------------- */

/* Enough output waits for the client: the stream is not read meanwhile.
 * Bytes and messages: many tiny frames must not reach the client mark
 * below on output alone. */
static bool wsb_output_full(const struct wsbridge *b)
{
	return wslay_event_get_queued_msg_length(b->ws) >= WSB_OUT_HIGH ||
	       wslay_event_get_queued_msg_count(b->ws) >= WSB_OUT_MSGS / 2;
}

/* The client takes too little of what is queued for it (output or pongs):
 * its own input is not read meanwhile. Above the output marks, so that
 * keystrokes (Ctrl-C) still pass while output fills the queue. */
static bool wsb_client_behind(const struct wsbridge *b)
{
	return wslay_event_get_queued_msg_length(b->ws) >= 2 * WSB_OUT_HIGH ||
	       wslay_event_get_queued_msg_count(b->ws) >= WSB_OUT_MSGS;
}

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
	/* Enough waits for the terminal, or for the client: read nothing more
	 * (backpressure). */
	if (b->in_len - b->in_off >= WSB_IN_HIGH || wsb_client_behind(b)) {
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
	if (n > 0)
		b->progress_mono = clock_mono_ms();
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
	/* The stall limit counts from here: a client idle before (no output
	 * to take) still gets its close frame. */
	b->progress_mono = clock_mono_ms();
}

static void wsb_on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                       void *user)
{
	struct wsbridge *b = user;
	uint8_t hdr[LENFRAME_HDR];
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
	if (b->in_off > 0) {
		memmove(b->in, b->in + b->in_off, b->in_len - b->in_off);
		b->in_len -= b->in_off;
		b->in_off = 0;
	}
	if (WSB_IN_CAP - b->in_len < LENFRAME_HDR + arg->msg_length) {
		wsb_close(b, 1008);
		return;
	}
	lenframe_header(hdr, (uint32_t)arg->msg_length);
	memcpy(b->in + b->in_len, hdr, LENFRAME_HDR);
	memcpy(b->in + b->in_len + LENFRAME_HDR, arg->msg, arg->msg_length);
	b->in_len += LENFRAME_HDR + arg->msg_length;
}

/* ---- the relay ------------------------------------------------------------------ */

/* Sends what the client typed, in order, as far as the stream takes it now. */
static void wsb_flush_input(struct wsbridge *b)
{
	while (b->in_off < b->in_len && !b->input_dead) {
		ssize_t n = send(b->sfd, b->in + b->in_off, b->in_len - b->in_off,
		                 MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0) {
			b->in_off += (size_t)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else {
			/* The terminal is gone: so is the input; what it sent before
			 * is still read, to its end. */
			if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
				b->input_dead = true;
				b->in_off = b->in_len = 0;
			}
			return;
		}
	}
	if (b->in_off == b->in_len)
		b->in_off = b->in_len = 0;
}

/* Queues one message from the terminal for the client; false to stop. */
static bool wsb_forward(struct wsbridge *b, const uint8_t *msg, size_t len)
{
	int v = wsframe_server(msg, len);
	struct wslay_event_msg wm = {.opcode = WSLAY_BINARY_FRAME, .msg = msg, .msg_length = len};

	if (v != WSFRAME_FORWARD && v != WSFRAME_EXIT)
		return true; /* not for the client (the terminal never sends one) */
	if (wslay_event_queue_msg(b->ws, &wm) != 0) {
		wsb_close(b, 1011);
		return false;
	}
	/* The exit frame is the last word: then close (docs/api.md). */
	if (v == WSFRAME_EXIT) {
		wsb_close(b, 1000);
		return false;
	}
	return true;
}

/* Moves output from the stream to wslay's queue while it is short. The
 * stream's end, after every message before it, closes with 1000: the
 * terminal closed (deleted, revoked, idle) or the shell exited. */
static void wsb_pump_output(struct wsbridge *b)
{
	while (!b->closing && !wsb_output_full(b)) {
		const uint8_t *msg;
		size_t len;
		ssize_t n;
		int got = lenframe_next(&b->out, &msg, &len);
		if (got == 1) {
			if (!wsb_forward(b, msg, len))
				return;
			continue;
		}
		if (got != 0) {
			log_warnx("wsbridge: broken framing from the terminal: closing");
			wsb_close(b, 1011);
			return;
		}
		if (b->stream_end) {
			wsb_close(b, 1000);
			return;
		}
		n = lenframe_fill(&b->out, b->sfd);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		if (n <= 0)
			b->stream_end = true;
	}
}

/* Whether the listener at the other end is the terminal service: its uid
 * (SO_PEERCRED: who called listen) must be one its RPC socket may answer
 * from (SVC_SERVER_ROLES: its user, or root, who binds before the drop). */
static bool wsb_server_is_terminal(struct wsbridge *b)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);

	if (getsockopt(b->sfd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0 &&
	    (cr.uid == geteuid() || rpc_peer_is(cr.uid, SVC_SERVER_ROLES(SVC_TERMINAL))))
		return true;
	log_warnx("wsbridge: refused a terminal stream served by uid %lld at %s",
	          len == sizeof(cr) ? (long long)cr.uid : -1LL, b->path);
	return false;
}

/* Connects to the terminal's stream and shows the key (then forgotten);
 * the descriptor becomes non-blocking for the relay. */
static int wsb_connect(struct wsbridge *b)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = WSB_CONNECT_MS / 1000,
	                     .tv_usec = (WSB_CONNECT_MS % 1000) * 1000};
	int rv = ERR_IO;

	memcpy(sun.sun_path, b->path, strlen(b->path) + 1);
	if ((b->sfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    setsockopt(b->sfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0 ||
	    connect(b->sfd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		log_warn("wsbridge: cannot reach the terminal stream %s", b->path);
	} else if (!wsb_server_is_terminal(b)) {
		/* Someone else bound the name (while the terminal was down):
		 * it gets neither the key nor the user's keystrokes. */
	} else if (send(b->sfd, b->hello, sizeof(b->hello), MSG_NOSIGNAL) ==
	               (ssize_t)sizeof(b->hello) &&
	           fcntl(b->sfd, F_SETFL, O_NONBLOCK) == 0) {
		rv = 0;
	} else {
		log_warn("wsbridge: cannot reach the terminal stream %s", b->path);
	}
	if (rv != 0 && b->sfd >= 0) {
		close(b->sfd);
		b->sfd = -1;
	}
	OPENSSL_cleanse(b->hello, sizeof(b->hello));
	return rv;
}

/* Whether the bridge is done waiting: the close frame went out and the
 * client had WSB_CLOSE_GRACE_MS to answer, or the terminal is gone and
 * the client took nothing for WSB_STALL_MS (the queue waits for nobody). */
static bool wsb_expired(const struct wsbridge *b)
{
	uint64_t now = clock_mono_ms();

	if (b->close_queued && now - b->close_queued_mono > WSB_CLOSE_GRACE_MS)
		return true;
	return (b->closing || b->stream_hup) && now - b->progress_mono > WSB_STALL_MS;
}

static void wsb_run(struct wsbridge *b)
{
	b->progress_mono = clock_mono_ms();
	for (;;) {
		struct pollfd p[2];
		bool stopping, read_client, read_stream, write_stream;
		int n;

		pthread_mutex_lock(&wsb_mu);
		stopping = wsb_stopping;
		pthread_mutex_unlock(&wsb_mu);
		if (stopping)
			wsb_close(b, 1001);
		if (wsb_expired(b))
			return;
		/* Output already read may wait for room in wslay's queue. */
		if (b->sfd >= 0)
			wsb_pump_output(b);
		/* After every queued message (the exit frame last): the grace
		 * starts only when the close frame is queued, so a slow client
		 * still gets all of the output. */
		if (b->closing && !b->close_queued &&
		    wslay_event_get_queued_msg_count(b->ws) == 0) {
			wslay_event_queue_close(b->ws, b->close_code, NULL, 0);
			b->close_queued = true;
			b->close_queued_mono = clock_mono_ms();
		}
		if (!wslay_event_want_read(b->ws) && !wslay_event_want_write(b->ws))
			return;
		/* Bytes handed over by MHD are parsed before any poll. */
		if (b->extra_off < b->extra_len && wslay_event_recv(b->ws) != 0)
			return;
		read_client = wslay_event_want_read(b->ws) && b->in_len - b->in_off < WSB_IN_HIGH &&
		              !wsb_client_behind(b);
		read_stream = !b->closing && !b->stream_end && !wsb_output_full(b);
		write_stream = b->in_off < b->in_len && !b->input_dead;
		/* poll reports a hang-up even for a descriptor polled for nothing:
		 * one we wait on for nothing is left out, or the loop would spin. */
		p[0].fd = b->fd;
		p[0].events = (short)((read_client ? POLLIN : 0) |
		                      (wslay_event_want_write(b->ws) ? POLLOUT : 0));
		/* The stream is polled for nothing but its hang-up until one is
		 * seen: a terminal that goes while output waits for the client
		 * must start the stall limit, or the bridge would wait forever. */
		p[1].fd = read_stream || write_stream || !b->stream_hup ? b->sfd : -1;
		p[1].events = (short)((read_stream ? POLLIN : 0) | (write_stream ? POLLOUT : 0));
		p[0].revents = p[1].revents = 0;
		n = poll(p, 2, WSB_POLL_MS);
		if (n < 0 && errno != EINTR)
			return;
		/* The client's connection is gone both ways (reset): nothing more
		 * can reach it. */
		if ((p[0].revents & (POLLHUP | POLLERR)) != 0)
			return;
		if ((p[0].revents & POLLIN) != 0 && wslay_event_recv(b->ws) != 0)
			return;
		/* The terminal hung up: no more input; its last output is still
		 * read when the client makes room (then the end closes with 1000). */
		if ((p[1].revents & (POLLHUP | POLLERR)) != 0 && !b->stream_hup) {
			b->stream_hup = b->input_dead = true;
			b->in_off = b->in_len = 0;
			b->progress_mono = clock_mono_ms();
		}
		if (b->sfd >= 0 && b->in_off < b->in_len)
			wsb_flush_input(b);
		if (b->sfd >= 0)
			wsb_pump_output(b);
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

	/* Keystrokes and their echoes are tiny: Nagle would hold each for the
	 * peer's delayed ACK (~40 ms). Fails harmlessly on a non-TCP socket. */
	setsockopt(b->fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
	setsockopt(b->fd, IPPROTO_TCP, TCP_CORK, &(int){0}, sizeof(int));
	if ((b->in = malloc(WSB_IN_CAP)) == NULL ||
	    lenframe_reader_init(&b->out, WSFRAME_DATA_MAX + 1) != 0 ||
	    wslay_event_context_server_init(&b->ws, &cb, b) != 0) {
		b->ws = NULL;
		goto out;
	}
	wslay_event_config_set_max_recv_msg_length(b->ws, WSFRAME_DATA_MAX + 1);
	if (wsb_connect(b) != 0)
		wsb_close(b, 1011);
	wsb_run(b);
out:
	if (b->ws != NULL)
		wslay_event_context_free(b->ws);
	MHD_upgrade_action(b->urh, MHD_UPGRADE_ACTION_CLOSE);
	if (b->sfd >= 0)
		close(b->sfd); /* the terminal sees the end: detached */
	lenframe_reader_fini(&b->out);
	free(b->in);
	free(b->extra);
	wsbridge_free(b);
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
	wsbridge_free(b);
}

struct wsbridge *wsbridge_new(struct gateway *gw, const char *path, const char *id,
                              const uint8_t *key, size_t key_len)
{
	struct wsbridge *b;

	if (strlen(path) >= sizeof(b->path) || strlen(id) != LENFRAME_HELLO_ID ||
	    key_len != LENFRAME_HELLO_KEY || (b = calloc(1, sizeof(*b))) == NULL)
		return NULL;
	b->gw = gw;
	b->sfd = -1;
	strcpy(b->path, path);
	lenframe_hello(b->hello, id, key);
	return b;
}

void wsbridge_free(struct wsbridge *b)
{
	OPENSSL_cleanse(b->hello, sizeof(b->hello));
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
