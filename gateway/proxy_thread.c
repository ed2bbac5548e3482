/*
 * proxy_thread.c — the thread of one proxied exchange (proxy.h): it
 * connects to the upstream, sends the head and the body the MHD side
 * queues, reads the answer's head strictly and its body into the buffer
 * MHD's reader drains, under the route's timeout, and resumes the client's
 * connection whenever what it waits for has come. A WebSocket upgrade the
 * upstream accepts continues on the same thread as a byte relay.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "gateway/gateway.h"
#include "gateway/proxy.h"
#include "gateway/upstream.h"

static pthread_mutex_t proxy_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t proxy_cv = PTHREAD_COND_INITIALIZER;
static int proxy_active;
static bool proxy_stopping;
_Atomic uint64_t proxy_alive; /* struct proxy allocated and not yet freed */

/* Exchanges per client (its rate-limit key), under proxy_mu: one client
 * may not hold every slot (a body dripped a byte at a time holds one as
 * long as it likes). Requests and WebSocket relays are counted apart, so
 * a client's long-lived relays (an office behind one address) never cost
 * it its plain requests. At most PROXY_MAX clients have any. */
struct proxy_count {
	struct netaddr key;
	int n;
};
static struct proxy_count proxy_requests[PROXY_MAX], proxy_relays[PROXY_MAX];

static bool proxy_client_take(struct proxy_count *table, const struct netaddr *key)
{
	int free_slot = -1;

	for (int i = 0; i < PROXY_MAX; i++) {
		if (table[i].n > 0 && memcmp(&table[i].key, key, sizeof(*key)) == 0) {
			if (table[i].n >= PROXY_PER_CLIENT)
				return false;
			table[i].n++;
			return true;
		}
		if (table[i].n == 0 && free_slot < 0)
			free_slot = i;
	}
	if (free_slot < 0)
		return false;
	table[free_slot].key = *key;
	table[free_slot].n = 1;
	return true;
}

static void proxy_client_put(struct proxy_count *table, const struct netaddr *key)
{
	for (int i = 0; i < PROXY_MAX; i++)
		if (table[i].n > 0 && memcmp(&table[i].key, key, sizeof(*key)) == 0) {
			table[i].n--;
			return;
		}
}

/* The exchange's request slot becomes a relay slot; false (and the request
 * slot kept) when the client holds PROXY_PER_CLIENT relays already. */
static bool proxy_client_to_relay(const struct netaddr *key)
{
	bool ok;

	pthread_mutex_lock(&proxy_mu);
	if ((ok = proxy_client_take(proxy_relays, key)))
		proxy_client_put(proxy_requests, key);
	pthread_mutex_unlock(&proxy_mu);
	return ok;
}

void proxy_counts(uint64_t *exchanges, uint64_t *threads)
{
	*exchanges = atomic_load(&proxy_alive);
	pthread_mutex_lock(&proxy_mu);
	*threads = (uint64_t)proxy_active;
	pthread_mutex_unlock(&proxy_mu);
}

/* ---- the thread: the upstream's side ---------------------------------------------------- */

static int proxy_connect(struct proxy *p)
{
	const struct upstream *u = p->up;
	struct pollfd pfd;
	int fd, err = 0;
	socklen_t el = sizeof(err);

	fd = socket(u->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)&u->addr, u->addrlen) == 0)
		return fd;
	if (errno != EINPROGRESS && errno != EAGAIN) {
		close(fd);
		return -1;
	}
	pfd = (struct pollfd){.fd = fd, .events = POLLOUT};
	if (poll(&pfd, 1, PROXY_CONNECT_MS) != 1 ||
	    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Under p->mu: bytes for the upstream, head first. */
static bool proxy_has_output(const struct proxy *p)
{
	return p->head_off < p->head_len || (!p->up_shut && p->out_len > p->out_off);
}

/* Under p->mu: sends what it can. When the upstream has stopped reading,
 * nothing more is sent (up_shut); its answer may still be read. */
static void proxy_send(struct proxy *p, int fd, bool *progress)
{
	while (proxy_has_output(p)) {
		bool in_head = p->head_off < p->head_len;
		const char *b = in_head ? p->head + p->head_off : p->out + p->out_off;
		size_t len = in_head ? p->head_len - p->head_off : p->out_len - p->out_off;
		ssize_t n = send(fd, b, len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			/* The upstream stopped reading (it may have answered
			 * early, a 413 of its own): what is left is dropped. */
			p->up_shut = true;
			if (in_head)
				p->head_off = p->head_len;
			p->out_len = p->out_off = 0;
			return;
		}
		*progress = true;
		if (in_head)
			p->head_off += (size_t)n;
		else if ((p->out_off += (size_t)n) == p->out_len)
			p->out_len = p->out_off = 0;
	}
}

/* Under p->mu: body bytes from the upstream (after the head) into `in`.
 * Returns false on a framing error. */
static bool proxy_body_bytes(struct proxy *p, const char *b, size_t len)
{
	size_t used, made;
	int rv;

	switch (p->rh.body) {
	case UPSTREAM_BODY_NONE:
		p->resp_end = true;
		return true;
	case UPSTREAM_BODY_LENGTH:
		if (len > p->left)
			len = (size_t)p->left; /* anything after is not this answer's */
		memcpy(p->in + p->in_len, b, len);
		p->in_len += len;
		if ((p->left -= len) == 0)
			p->resp_end = true;
		return true;
	case UPSTREAM_BODY_CLOSE:
		memcpy(p->in + p->in_len, b, len);
		p->in_len += len;
		return true;
	case UPSTREAM_BODY_CHUNKED:
		rv = upstream_chunked_feed(&p->ch, b, len, &used, p->in + p->in_len,
		                           PROXY_BUF - p->in_len, &made);
		p->in_len += made;
		if (rv < 0)
			return false;
		if (rv == 1)
			p->resp_end = true;
		return true;
	}
	return false;
}

/* Under p->mu: the head is in hbuf[0..hlen); parse it, and pass what follows
 * it on as body. */
static void proxy_head_bytes(struct proxy *p)
{
	long n;

	for (;;) {
		n = upstream_head_parse(p->hbuf, p->hlen, p->head_request, &p->rh);
		if (n == 0 && p->hlen < UPSTREAM_HEAD_MAX)
			return; /* more to come */
		if (n <= 0) {
			proxy_fail(p, MHD_HTTP_BAD_GATEWAY, "bad_gateway",
			           "The upstream sent a malformed answer.");
			return;
		}
		if (p->rh.status >= 100 && p->rh.status < 200 && p->rh.status != 101) {
			/* 100 Continue and other interim answers: skipped. */
			memmove(p->hbuf, p->hbuf + n, p->hlen - (size_t)n);
			p->hlen -= (size_t)n;
			continue;
		}
		break;
	}
	if (p->rh.status == 101 && !p->upgrade) {
		proxy_fail(p, MHD_HTTP_BAD_GATEWAY, "bad_gateway",
		           "The upstream switched protocols unasked.");
		return;
	}
	if (p->upgrade && p->rh.status == 101)
		p->rh.body = UPSTREAM_BODY_CLOSE; /* bytes after the head are the relay's */
	p->left = p->rh.length;
	p->head_ready = true;
	if (p->rh.body == UPSTREAM_BODY_NONE)
		p->resp_end = true;
	/* The head's bytes stay in hbuf (the fields point there); what came
	 * after it is body, at most PROXY_BUF of it. */
	if ((size_t)n < p->hlen && !proxy_body_bytes(p, p->hbuf + n, p->hlen - (size_t)n))
		p->resp_error = true;
}

/* Under p->mu: reads once from the upstream. */
static void proxy_recv(struct proxy *p, int fd, bool *progress)
{
	char buf[PROXY_BUF];
	size_t room;
	ssize_t n;

	if (!p->head_ready)
		room = UPSTREAM_HEAD_MAX - p->hlen;
	else
		room = PROXY_BUF - p->in_len;
	if (room == 0)
		return;
	do
		n = recv(fd, p->head_ready ? buf : p->hbuf + p->hlen, room, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	*progress = true;
	if (n <= 0) {
		if (!p->head_ready)
			proxy_fail(p, MHD_HTTP_BAD_GATEWAY, "bad_gateway",
			           "The upstream closed the connection without an answer.");
		else if (p->rh.body == UPSTREAM_BODY_CLOSE && n == 0)
			p->resp_end = true; /* a close ends it; a reset cuts it short */
		else if (!p->resp_end)
			p->resp_error = true; /* cut short: the client's connection closes */
		return;
	}
	if (!p->head_ready) {
		p->hlen += (size_t)n;
		proxy_head_bytes(p);
	} else if (!p->resp_end && !proxy_body_bytes(p, buf, (size_t)n)) {
		p->resp_error = true;
	}
}

/* ---- the WebSocket relay --------------------------------------------------------------- */

/* Copies between MHD's upgraded socket and the upstream until either ends,
 * the relay has been silent PROXY_WS_IDLE_MS or open PROXY_WS_MAX_MS, or
 * its session ends (logout, revocation: the gateway's revoked set, looked
 * at every poll period). */
static void proxy_relay(struct proxy *p, int ufd)
{
	uint64_t start = clock_mono_ms(), last = start;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		bool progress = false, eof = false;
		struct pollfd pfd[3];
		uint64_t now = clock_mono_ms();
		ssize_t n;

		if (proxy_stopping || now - last > PROXY_WS_IDLE_MS ||
		    now - start > PROXY_WS_MAX_MS ||
		    (p->sid[0] != '\0' && authn_session_revoked(p->gw, p->sid)))
			break;
		/* client -> upstream through `out`, upstream -> client through `in` */
		pfd[0] = (struct pollfd){.fd = p->cfd,
		                         .events = (short)((p->out_len < PROXY_BUF ? POLLIN : 0) |
		                                           (p->in_len > p->in_off ? POLLOUT : 0))};
		pfd[1] =
		    (struct pollfd){.fd = ufd,
		                    .events = (short)((p->in_len < PROXY_BUF ? POLLIN : 0) |
		                                      (p->out_len > p->out_off ? POLLOUT : 0))};
		pfd[2] = (struct pollfd){.fd = p->efd, .events = POLLIN};
		pthread_mutex_unlock(&p->mu);
		n = poll(pfd, 3, PROXY_POLL_MS);
		pthread_mutex_lock(&p->mu);
		if (n < 0 && errno != EINTR)
			break;
		if (n <= 0)
			continue;
		if (p->in_len > p->in_off && (pfd[0].revents & (POLLOUT | POLLERR | POLLHUP))) {
			n = send(p->cfd, p->in + p->in_off, p->in_len - p->in_off,
			         MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n > 0 && (p->in_off += (size_t)n) == p->in_len)
				p->in_len = p->in_off = 0;
			eof |= n < 0 && errno != EAGAIN && errno != EINTR;
			progress |= n > 0;
		}
		if (p->out_len > p->out_off && (pfd[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
			n = send(ufd, p->out + p->out_off, p->out_len - p->out_off,
			         MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n > 0 && (p->out_off += (size_t)n) == p->out_len)
				p->out_len = p->out_off = 0;
			eof |= n < 0 && errno != EAGAIN && errno != EINTR;
			progress |= n > 0;
		}
		if (p->out_len < PROXY_BUF && (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))) {
			n = recv(p->cfd, p->out + p->out_len, PROXY_BUF - p->out_len, MSG_DONTWAIT);
			if (n > 0)
				p->out_len += (size_t)n;
			eof |= n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
			progress |= n > 0;
		}
		if (p->in_len < PROXY_BUF && (pfd[1].revents & (POLLIN | POLLHUP | POLLERR))) {
			n = recv(ufd, p->in + p->in_len, PROXY_BUF - p->in_len, MSG_DONTWAIT);
			if (n > 0)
				p->in_len += (size_t)n;
			eof |= n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
			progress |= n > 0;
		}
		if (pfd[2].revents & POLLIN) {
			uint64_t v;
			ssize_t r = read(p->efd, &v, sizeof(v));
			(void)r;
		}
		if (eof)
			break; /* one side has gone: a WebSocket has no half-open state */
		if (progress)
			last = clock_mono_ms();
	}
	pthread_mutex_unlock(&p->mu);
	MHD_upgrade_action(p->urh, MHD_UPGRADE_ACTION_CLOSE);
}

/* ---- the thread ------------------------------------------------------------------------ */

static void *proxy_thread(void *arg)
{
	struct proxy *p = arg;
	const struct upstream *u = p->up;
	int fd = proxy_connect(p);
	uint64_t last = clock_mono_ms(), sent_at = 0;
	struct netaddr client;
	bool relay = false, relaying = false;

	pthread_mutex_lock(&p->mu);
	if (fd < 0) {
		log_warnx("proxy: cannot connect to %s: %s", u->name, strerror(errno));
		proxy_fail(p, MHD_HTTP_BAD_GATEWAY, "bad_gateway", "The upstream is unreachable.");
	}
	while (fd >= 0 && p->fail_status == 0 && !p->resp_end && !p->resp_error && !p->stop_asked) {
		bool progress = false;
		struct pollfd pfd[2];
		uint64_t now;
		int n;

		if (proxy_stopping) {
			proxy_fail(p, MHD_HTTP_SERVICE_UNAVAILABLE, "service_unavailable",
			           "The gateway is shutting down.");
			p->resp_error = true;
			break;
		}
		if (p->upgrade && p->head_ready && p->rh.status == 101) {
			relay = true;
			break;
		}
		pfd[0] = (struct pollfd){
		    .fd = fd,
		    .events = (short)((proxy_has_output(p) ? POLLOUT : 0) |
		                      (!p->head_ready || p->in_len < PROXY_BUF ? POLLIN : 0))};
		pfd[1] = (struct pollfd){.fd = p->efd, .events = POLLIN};
		pthread_mutex_unlock(&p->mu);
		n = poll(pfd, 2, PROXY_POLL_MS);
		pthread_mutex_lock(&p->mu);
		if (n < 0 && errno != EINTR)
			break;
		if (n > 0 && (pfd[1].revents & POLLIN)) {
			uint64_t v;
			ssize_t r = read(p->efd, &v, sizeof(v));
			(void)r;
		}
		if (n > 0 && (pfd[0].revents & (POLLOUT | POLLERR | POLLHUP)))
			proxy_send(p, fd, &progress);
		if (n > 0 && (pfd[0].revents & (POLLIN | POLLERR | POLLHUP)))
			proxy_recv(p, fd, &progress);
		now = clock_mono_ms();
		if (progress)
			last = now;
		if (sent_at == 0 && p->body_end && !proxy_has_output(p))
			sent_at = now; /* the whole request is with the upstream */
		/* The head is due `timeout` after the request has been sent;
		 * before that, and after it, no byte for `timeout` is a stall. */
		if (!p->head_ready && sent_at != 0 && now - sent_at > u->timeout_s * 1000ull)
			proxy_fail(p, MHD_HTTP_GATEWAY_TIMEOUT, "gateway_timeout",
			           "The upstream did not answer in time.");
		else if (now - last > u->timeout_s * 1000ull) {
			if (!p->head_ready)
				proxy_fail(p, MHD_HTTP_GATEWAY_TIMEOUT, "gateway_timeout",
				           "The upstream did not answer in time.");
			else
				p->resp_error = true;
		}
		proxy_kick(p);
	}
	if (relay) {
		/* The MHD side queues the 101; its upgrade handler hands the
		 * client's socket over. */
		uint64_t until = clock_mono_ms() + PROXY_UPGRADE_WAIT_MS;
		proxy_kick(p);
		while (!p->ws_ready && !proxy_stopping && !p->stop_asked &&
		       clock_mono_ms() < until) {
			struct pollfd pfd = {.fd = p->efd, .events = POLLIN};
			uint64_t v;
			pthread_mutex_unlock(&p->mu);
			if (poll(&pfd, 1, PROXY_POLL_MS) > 0 && read(p->efd, &v, sizeof(v)) < 0)
				v = 0;
			pthread_mutex_lock(&p->mu);
		}
		if (p->ws_ready && (relaying = proxy_client_to_relay(&p->client))) {
			pthread_mutex_unlock(&p->mu);
			proxy_relay(p, fd);
			pthread_mutex_lock(&p->mu);
		} else if (p->ws_ready) {
			log_warnx("proxy: refused a relay: its client holds %d already",
			          PROXY_PER_CLIENT);
			pthread_mutex_unlock(&p->mu); /* no lock of ours around MHD's */
			MHD_upgrade_action(p->urh, MHD_UPGRADE_ACTION_CLOSE);
			pthread_mutex_lock(&p->mu);
		}
	}
	if (fd >= 0)
		close(fd);
	if (!p->head_ready)
		proxy_fail(p, MHD_HTTP_BAD_GATEWAY, "bad_gateway", "The upstream failed.");
	if (!p->resp_end)
		p->resp_error = true;
	p->thread_done = true;
	proxy_kick(p);
	client = p->client;
	proxy_unref_locked(p);
	pthread_mutex_lock(&proxy_mu);
	proxy_client_put(relaying ? proxy_relays : proxy_requests, &client);
	if (--proxy_active == 0)
		pthread_cond_broadcast(&proxy_cv);
	pthread_mutex_unlock(&proxy_mu);
	return NULL;
}

void proxy_stop(struct gateway *gw)
{
	(void)gw;
	pthread_mutex_lock(&proxy_mu);
	proxy_stopping = true;
	while (proxy_active > 0)
		pthread_cond_wait(&proxy_cv, &proxy_mu);
	pthread_mutex_unlock(&proxy_mu);
}

int proxy_thread_start(struct proxy *p)
{
	pthread_attr_t attr;
	pthread_t th;
	bool ok;
	int rv;

	pthread_mutex_lock(&proxy_mu);
	ok = !proxy_stopping && proxy_active < PROXY_MAX &&
	     proxy_client_take(proxy_requests, &p->client);
	if (ok)
		proxy_active++;
	pthread_mutex_unlock(&proxy_mu);
	if (!ok)
		return ERR_CLOSED;
	p->refs++; /* the thread's */
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256u << 10);
	rv = pthread_create(&th, &attr, proxy_thread, p);
	pthread_attr_destroy(&attr);
	if (rv == 0)
		return 0;
	p->refs--;
	pthread_mutex_lock(&proxy_mu);
	proxy_client_put(proxy_requests, &p->client);
	proxy_active--;
	pthread_mutex_unlock(&proxy_mu);
	return ERR_CLOSED;
}
