/*
 * sp_probe.c — a one-shot SP client on a plain socket (sp_probe.h).
 *
 * The wire, as nng 1.5 writes it: each side first sends 8 bytes
 * {0, 'S', 'P', 0, protocol (16-bit big-endian), 0, 0}; then each message
 * is an 8-byte big-endian length and the bytes, on ipc:// preceded by a
 * type byte 1. A req0 message starts with the 4-byte request id (high bit
 * set), which rep0 sends back in front of the reply.
 */
#include "common/sp_probe.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/rpc.h"

#define SP_HANDSHAKE 8
#define SP_IPC_MSG 1 /* the ipc:// type byte of a message */

/* Waits for `events` on fd until `until` (monotonic ms): 0, ERR_TIMEOUT or
 * ERR_IO. */
static int sp_wait(int fd, short events, uint64_t until)
{
	struct pollfd pfd = {.fd = fd, .events = events};
	for (;;) {
		uint64_t now = clock_mono_ms();
		if (now >= until)
			return ERR_TIMEOUT;
		int n = poll(&pfd, 1, (int)(until - now));
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return ERR_IO;
	}
}

/* Exactly `len` bytes, or an error (the peer's end is ERR_IO). */
static int sp_read_all(int fd, uint8_t *buf, size_t len, uint64_t until)
{
	while (len > 0) {
		ssize_t n = read(fd, buf, len);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			return ERR_IO;
		int rv = sp_wait(fd, POLLIN, until);
		if (rv != 0)
			return rv;
	}
	return 0;
}

static int sp_write_all(int fd, const uint8_t *buf, size_t len, uint64_t until)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			return ERR_IO;
		int rv = sp_wait(fd, POLLOUT, until);
		if (rv != 0)
			return rv;
	}
	return 0;
}

/* A listener's host as a client reaches it: a wildcard means this host. */
static const char *sp_connect_host(const char *host)
{
	if (host[0] == '\0' || strcmp(host, "*") == 0 || strcmp(host, "0.0.0.0") == 0)
		return "127.0.0.1";
	if (strcmp(host, "::") == 0)
		return "::1";
	return host;
}

/* A socket() that failed for want of descriptors or memory: the check
 * could not start, which says nothing about the listener. */
static int sp_socket_err(void)
{
	return errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM ? ERR_NOMEM
	                                                                                 : ERR_IO;
}

/* A non-blocking socket connecting (or connected) to the entry by `until`. */
static int sp_socket(const char *entry, bool *ipc, uint64_t until)
{
	const struct timespec tick = {.tv_nsec = 2000000};
	int fd;

	if (strncmp(entry, "ipc://", 6) == 0) {
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		if (strlen(entry + 6) >= sizeof(sa.sun_path))
			return ERR_INVAL;
		strcpy(sa.sun_path, entry + 6);
		if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0)
			return sp_socket_err();
		/* A full backlog (clients redialling after a re-listen) is
		 * EAGAIN, not "in progress": the socket is not connected, so
		 * try again until the deadline. */
		while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
			int e = errno;
			if (e == EINTR)
				continue;
			if (e != EAGAIN || clock_mono_ms() >= until) {
				close(fd);
				return e == EAGAIN ? ERR_TIMEOUT : ERR_IO;
			}
			nanosleep(&tick, NULL);
		}
		*ipc = true;
		return fd;
	}
	if (strncmp(entry, "tcp://", 6) == 0) {
		char host[256];
		const char *colon = strrchr(entry + 6, ':');
		/* nng's own flags for the listener's name (posix_resolv_gai.c),
		 * so that we reach the address it bound. */
		struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
		                         .ai_flags = AI_ADDRCONFIG | AI_NUMERICSERV},
		                *ai;
		size_t hlen;

		if (colon == NULL || (hlen = (size_t)(colon - (entry + 6))) >= sizeof(host))
			return ERR_INVAL;
		memcpy(host, entry + 6, hlen);
		host[hlen] = '\0';
		if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
			memmove(host, host + 1, hlen - 2);
			host[hlen - 2] = '\0';
		}
		if (getaddrinfo(sp_connect_host(host), colon + 1, &hints, &ai) != 0)
			return ERR_IO;
		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0) {
			freeaddrinfo(ai);
			return sp_socket_err();
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
			close(fd);
			fd = ERR_IO;
		}
		freeaddrinfo(ai);
		*ipc = false;
		return fd;
	}
	return ERR_INVAL;
}

/* On ipc://, the listener must be our own process: SO_PEERCRED names the
 * process that called listen(), which for our socket is us (before the
 * privilege drop or after a re-listen alike). Not a uid check: another
 * replica of ours, or a service that listened as root, would pass that. */
static int sp_peer_is_us(int fd, bool ipc)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (!ipc)
		return 0;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
		return ERR_IO;
	return cred.pid == getpid() ? 0 : ERR_PERM;
}

/* Closes a connection whose handshake did not complete. Hanging up before
 * the listener has written its handshake is the very trigger of nng
 * 1.5.2's listener stall (issue 1518): a listener that is merely slow gets
 * SP_LINGER_MS more for its handshake to arrive before we go. */
#define SP_LINGER_MS 200
static void sp_close_unshaken(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	while (poll(&pfd, 1, SP_LINGER_MS) < 0 && errno == EINTR)
		;
	close(fd);
}

int sp_probe_open(struct sp_probe *p, const char *url, uint16_t self, uint16_t peer, int timeout_ms)
{
	uint64_t until = clock_mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
	uint8_t mine[SP_HANDSHAKE] = {0, 'S', 'P', 0, (uint8_t)(self >> 8), (uint8_t)self, 0, 0};
	uint8_t theirs[SP_HANDSHAKE];
	char entry[512];
	int fd, err = 0, rv;
	socklen_t elen = sizeof(err);

	p->fd = -1;
	if (rpc_url_first(url, entry, sizeof(entry)) != 0)
		return ERR_INVAL;
	if ((fd = sp_socket(entry, &p->ipc, until)) < 0)
		return fd;
	/* Connected once writable, unless the connect failed meanwhile. */
	if ((rv = sp_wait(fd, POLLOUT, until)) == 0 &&
	    (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0 || err != 0))
		rv = ERR_IO;
	if (rv == 0)
		rv = sp_peer_is_us(fd, p->ipc);
	if (rv == 0)
		rv = sp_write_all(fd, mine, sizeof(mine), until);
	if (rv == 0)
		rv = sp_read_all(fd, theirs, sizeof(theirs), until);
	if (rv == 0 && (theirs[0] != 0 || theirs[1] != 'S' || theirs[2] != 'P' || theirs[3] != 0 ||
	                theirs[4] != (uint8_t)(peer >> 8) || theirs[5] != (uint8_t)peer ||
	                theirs[6] != 0 || theirs[7] != 0))
		rv = ERR_PROTO;
	if (rv == ERR_TIMEOUT || rv == ERR_IO)
		sp_close_unshaken(fd);
	else if (rv != 0)
		close(fd); /* a handshake that arrived (wrong), or not our listener */
	if (rv != 0)
		return rv;
	p->fd = fd;
	return 0;
}

static void sp_put64(uint8_t *b, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		b[i] = (uint8_t)v;
}

static void sp_put32(uint8_t *b, uint32_t v)
{
	for (int i = 3; i >= 0; i--, v >>= 8)
		b[i] = (uint8_t)v;
}

int sp_reply_body(const uint8_t *msg, size_t len, uint32_t id, const uint8_t **body,
                  size_t *body_len)
{
	uint8_t want[4];

	sp_put32(want, id | 0x80000000u);
	if (len < sizeof(want) || memcmp(msg, want, sizeof(want)) != 0)
		return ERR_PROTO;
	*body = msg + sizeof(want);
	*body_len = len - sizeof(want);
	return 0;
}

int sp_probe_call(struct sp_probe *p, uint32_t id, const void *body, size_t len, uint8_t *reply,
                  size_t cap, size_t *got, int timeout_ms)
{
	uint64_t until = clock_mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
	uint8_t hdr[1 + 8 + 4], *h = p->ipc ? hdr : hdr + 1;
	uint64_t mlen = 0;
	const uint8_t *rbody;
	size_t rlen;
	int rv;

	/* Request: [type] length, id, body. */
	hdr[0] = SP_IPC_MSG;
	sp_put64(hdr + 1, (uint64_t)len + 4);
	sp_put32(hdr + 9, id | 0x80000000u);
	if ((rv = sp_write_all(p->fd, h, (size_t)(hdr + sizeof(hdr) - h), until)) != 0 ||
	    (rv = sp_write_all(p->fd, body, len, until)) != 0)
		return rv;
	/* Reply: [type] length, then the id and the body read into `reply`. */
	if ((rv = sp_read_all(p->fd, h, (size_t)(hdr + 9 - h), until)) != 0)
		return rv;
	if (p->ipc && hdr[0] != SP_IPC_MSG)
		return ERR_PROTO;
	for (int i = 1; i < 9; i++)
		mlen = (mlen << 8) | hdr[i];
	if (mlen > cap)
		return ERR_PROTO;
	if ((rv = sp_read_all(p->fd, reply, (size_t)mlen, until)) != 0)
		return rv;
	if ((rv = sp_reply_body(reply, (size_t)mlen, id, &rbody, &rlen)) != 0)
		return rv;
	memmove(reply, rbody, rlen);
	*got = rlen;
	return 0;
}

void sp_probe_close(struct sp_probe *p)
{
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
}
