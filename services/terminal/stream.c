/*
 * stream.c — the socket every terminal's byte stream connects to: one Unix
 * stream socket per terminal service, <run dir>/terminal.stream-<n>.sock
 * (n: our replica entry, so replicas never share a name). The gateway
 * connects after Attach and sends one hello frame, the terminal's id and
 * the stream key Attach gave it; the connection then belongs to that
 * terminal (session_take_stream), and carries length-prefixed frames
 * (common/lenframe.h) either way.
 *
 * Who may connect: the peer's uid (SO_PEERCRED) must be one our RPC socket
 * admits (the gateway's, or ours without privilege separation); anyone
 * else is hung up on before a byte is read. The key works once. Hellos
 * are read by the one accepting thread in one poll loop, each with a 1 s
 * deadline, so no peer holds the thread up. A plain
 * socket, not nng: nng 1.5.2 hangs for good in closing a pair socket that
 * carried data (docs/reliability.md), and a per-terminal socket opened and
 * closed per shell hit it within a few dozen terminals.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/lenframe.h"
#include "common/log.h"
#include "common/rpc.h"
#include "services/terminal/terminal.h"

#define STREAM_POLL_MS 250   /* how soon the thread sees a stop */
#define STREAM_HELLO_MS 1000 /* for a hello to arrive, from an admitted peer */
#define STREAM_WAKE_MS 250   /* the session threads' look at their flags */
#define STREAM_BACKLOG 64
_Static_assert(TERMINAL_ID_LEN == LENFRAME_HELLO_ID + 1 && TERMINAL_KEY_LEN == LENFRAME_HELLO_KEY,
               "a terminal's id and key are what the hello carries");
#define STREAM_PENDING 16 /* connections whose hello is still arriving */

/* Blocking, with timeouts: 0, or -1 when the socket refused either (a
 * thread blocked on it could then never look at its stop flag). */
static int stream_blocking_with_timeouts(int fd, int ms)
{
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0)
		return -1;
	return 0;
}

/* A connection from an admitted peer whose hello is still arriving. */
struct stream_pending {
	int fd;
	uid_t uid;
	uint64_t deadline;
	size_t got;
	uint8_t hello[LENFRAME_HELLO];
};

/* Hangs up on `fd`: counted, and said at most once a second (any member
 * of the group may connect as often as it likes). */
static void stream_refuse(struct terminal *t, int fd, const char *id, uid_t uid)
{
	static _Atomic uint64_t said_mono;
	uint64_t n = atomic_fetch_add(&t->stream_refused, 1) + 1, now = clock_mono_ms();
	uint64_t last = atomic_load(&said_mono);

	if (now - last >= 1000 && atomic_compare_exchange_strong(&said_mono, &last, now))
		log_warnx("terminal: refused a stream peer id=%s uid=%lld (refused=%llu)", id,
		          uid == (uid_t)-1 ? -1LL : (long long)uid, (unsigned long long)n);
	close(fd);
}

/* A whole hello: the connection goes to its terminal, or is hung up on. */
static void stream_hello(struct terminal *t, struct stream_pending *c)
{
	char id[LENFRAME_HELLO_ID + 1] = "-";
	const uint8_t *key;

	if (lenframe_hello_parse(c->hello, id, &key) == 0) {
		/* Blocking again, with the timeouts the session threads use to
		 * look at their flags. */
		if (stream_blocking_with_timeouts(c->fd, STREAM_WAKE_MS) == 0 &&
		    session_take_stream(t, id, key, LENFRAME_HELLO_KEY, c->fd) == 0) {
			c->fd = -1;
			return;
		}
	}
	stream_refuse(t, c->fd, id, c->uid);
	c->fd = -1;
}

/* Reads what arrived of a pending hello; false when done with it. */
static bool stream_read(struct terminal *t, struct stream_pending *c)
{
	ssize_t n = recv(c->fd, c->hello + c->got, sizeof(c->hello) - c->got, MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return true;
	if (n <= 0) {
		stream_refuse(t, c->fd, "-", c->uid);
		return false;
	}
	c->got += (size_t)n;
	if (c->got < sizeof(c->hello))
		return true;
	stream_hello(t, c);
	return false;
}

/* A new connection: refused before a byte is read unless its uid is one
 * our RPC socket admits (the gateway or the operator; ourselves without
 * privilege separation); else it waits in `pend` for its hello. */
static void stream_accept(struct terminal *t, struct stream_pending *pend, size_t *n)
{
	struct ucred cr = {.uid = (uid_t)-1};
	socklen_t len = sizeof(cr);
	int fd = accept4(t->stream_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE || errno == ENOMEM)
			poll(NULL, 0, STREAM_POLL_MS); /* out of descriptors: not a spin */
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0 ||
	    !(cr.uid == geteuid() || rpc_peer_admits(cr.uid, false))) {
		stream_refuse(t, fd, "-", cr.uid);
		return;
	}
	/* Full: the oldest goes (its hello is late; the gateway sends its own
	 * right after connecting). */
	if (*n == STREAM_PENDING) {
		stream_refuse(t, pend[0].fd, "-", pend[0].uid);
		OPENSSL_cleanse(&pend[0], sizeof(pend[0]));
		memmove(pend, pend + 1, (STREAM_PENDING - 1) * sizeof(*pend));
		(*n)--;
	}
	pend[*n] = (struct stream_pending){
	    .fd = fd, .uid = cr.uid, .deadline = clock_mono_ms() + STREAM_HELLO_MS};
	(*n)++;
}

/* One thread, one poll over the listening socket and the pending hellos:
 * no peer can hold it up. */
static void *stream_main(void *arg)
{
	struct terminal *t = arg;
	struct stream_pending pend[STREAM_PENDING];
	struct pollfd p[1 + STREAM_PENDING];
	size_t n = 0;

	while (!atomic_load(&t->stream_stop)) {
		uint64_t now;
		size_t kept = 0;

		p[0] = (struct pollfd){.fd = t->stream_fd, .events = POLLIN};
		for (size_t i = 0; i < n; i++)
			p[1 + i] = (struct pollfd){.fd = pend[i].fd, .events = POLLIN};
		if (poll(p, 1 + n, STREAM_POLL_MS) < 0)
			continue;
		now = clock_mono_ms();
		for (size_t i = 0; i < n; i++) {
			bool keep = true;
			if (p[1 + i].revents != 0)
				keep = stream_read(t, &pend[i]);
			if (keep && now >= pend[i].deadline) {
				stream_refuse(t, pend[i].fd, "-", pend[i].uid);
				keep = false;
			}
			if (keep)
				pend[kept++] = pend[i];
			else
				OPENSSL_cleanse(&pend[i], sizeof(pend[i]));
		}
		/* Slots left behind by the compaction held hello bytes. */
		OPENSSL_cleanse(pend + kept, (n - kept) * sizeof(*pend));
		n = kept;
		if ((p[0].revents & POLLIN) != 0)
			stream_accept(t, pend, &n);
	}
	for (size_t i = 0; i < n; i++)
		close(pend[i].fd);
	OPENSSL_cleanse(pend, sizeof(pend));
	return NULL;
}

int stream_start(struct terminal *t)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int n;

	n = snprintf(t->stream_path, sizeof(t->stream_path), "%s/terminal.stream-%zu.sock",
	             t->svc.conf.run_dir, t->svc.replica);
	if (n < 0 || (size_t)n >= sizeof(t->stream_path) || (size_t)n >= sizeof(sun.sun_path))
		return ERR_INVAL;
	memcpy(sun.sun_path, t->stream_path, (size_t)n + 1);
	if ((t->stream_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return ERR_IO;
	/* Ours: the replica entry's lock says no live process uses the name,
	 * so a file there is a dead one's. */
	unlink(t->stream_path);
	if (bind(t->stream_fd, (struct sockaddr *)&sun, sizeof(sun)) != 0 ||
	    chmod(t->stream_path, 0660) != 0 || listen(t->stream_fd, STREAM_BACKLOG) != 0) {
		log_warn("terminal: cannot listen on %s", t->stream_path);
		close(t->stream_fd);
		t->stream_fd = -1;
		return ERR_IO;
	}
	atomic_store(&t->stream_stop, false);
	if (pthread_create(&t->stream_thread, NULL, stream_main, t) != 0) {
		close(t->stream_fd);
		t->stream_fd = -1;
		return ERR_NOMEM;
	}
	log_info("terminal: streams on %s", t->stream_path);
	return 0;
}

void stream_stop(struct terminal *t)
{
	if (t->stream_fd < 0)
		return;
	atomic_store(&t->stream_stop, true);
	pthread_join(t->stream_thread, NULL);
	close(t->stream_fd);
	t->stream_fd = -1;
	unlink(t->stream_path); /* best effort: the next start removes it too */
}
