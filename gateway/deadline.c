/*
 * deadline.c — the header and body deadlines (slowloris): every connection
 * is on a list with the time since which it has been awaiting a header
 * block or a body, and a sweeper thread cuts those past their deadline.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "gateway/gateway.h"

/*
 * libmicrohttpd's own timeout restarts on every byte read, so a client that
 * sends one header byte per second holds a connection forever (docs/dependencies.md).
 * Every connection is on a list with the time since which a header block is
 * awaited (its start, or the end of its previous request); a thread looks
 * at the list 4 times a second and shuts down (shutdown(2)) the socket of
 * any connection still waiting past MAGNETAR_HEADER_TIMEOUT_S. MHD then sees
 * the end of the stream and closes it as usual, in its own thread.
 * The same holds for a body dripped after complete headers (issue 16): from
 * the first call of a request with a body until its last, the connection
 * has a body deadline (MAGNETAR_BODY_TIMEOUT_S). Past it the sweeper writes
 * a 408 itself (MHD 0.9.75 queues no response in the middle of a body, and
 * has nothing of its own to write then), then shuts the socket down. Over
 * TLS it cannot write (the session is MHD's): the socket is only shut down.
 * The sweeper and the request's last call race for the deadline with one
 * atomic swap, so either the 408 or the route's answer is written, never both.
 * The fd cannot be reused under us: MHD tells us a connection closed
 * (NOTIFY_CONNECTION, which unlinks it under the same lock) before it closes
 * the socket.
 */
struct http_sweeper {
	struct gateway *gw;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	pthread_t thread;
	struct http_conn *head;
	_Atomic uint64_t cut, body_cut;
	char *head408; /* the 408's status line and constant headers */
	size_t head408_len;
};

/* The 408 of a body deadline, written to the socket, then the socket shut. */
static void deadline_sweep_body(struct http_sweeper *sw, struct http_conn *c)
{
	char tail[512];
	int n;

	if (!c->tls && sw->head408 != NULL) {
		char body[256];
		int blen =
		    snprintf(body, sizeof(body),
		             "{\"error\":{\"code\":\"request_timeout\",\"message\":\"The "
		             "request body did not arrive in time.\",\"request_id\":\"%s\"}}",
		             c->body_rid);
		n = snprintf(tail, sizeof(tail), "X-Request-Id: %s\r\nContent-Length: %d\r\n\r\n%s",
		             c->body_rid, blen, body);
		if (blen > 0 && (size_t)blen < sizeof(body) && n > 0 && (size_t)n < sizeof(tail)) {
			struct iovec iov[2] = {{sw->head408, sw->head408_len}, {tail, (size_t)n}};
			struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
			/* Best effort: a peer that reads nothing still loses the socket. */
			(void)sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		}
	}
	shutdown(c->fd, SHUT_RDWR);
}

static void *deadline_sweep(void *arg)
{
	struct http_sweeper *sw = arg;
	const struct gateway *gw = sw->gw;

	pthread_mutex_lock(&sw->mu);
	while (!sw->stop) {
		struct timespec until;
		uint64_t now = clock_mono_ms(), n = 0, nb = 0;
		for (struct http_conn *c = sw->head; c != NULL; c = c->next) {
			uint64_t since =
			    atomic_load_explicit(&c->awaiting_since, memory_order_relaxed);
			if (since != 0 && now >= since && now - since >= gw->header_timeout_ms) {
				shutdown(c->fd, SHUT_RDWR);
				atomic_store_explicit(&c->awaiting_since, 0, memory_order_relaxed);
				n++;
			}
			since = atomic_load(&c->body_since);
			if (since == 0 || since == HTTP_BODY_CUT || now < since ||
			    now - since < gw->body_timeout_ms)
				continue;
			/* Lost: the body ended in the meantime and its answer is ours. */
			if (!atomic_compare_exchange_strong(&c->body_since, &since, HTTP_BODY_CUT))
				continue;
			deadline_sweep_body(sw, c);
			nb++;
		}
		if (n > 0) {
			atomic_fetch_add(&sw->cut, n);
			log_info("http: closed %" PRIu64
			         " connection(s) that sent no complete header "
			         "block within %u s",
			         n, gw->header_timeout_ms / 1000);
		}
		if (nb > 0) {
			atomic_fetch_add(&sw->body_cut, nb);
			log_info("http: answered 408 and closed %" PRIu64
			         " connection(s) whose request body did not arrive within %u s",
			         nb, gw->body_timeout_ms / 1000);
		}
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 250 * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&sw->cv, &sw->mu, &until);
	}
	pthread_mutex_unlock(&sw->mu);
	return NULL;
}

int deadline_start(struct gateway *gw)
{
	struct http_sweeper *sw = calloc(1, sizeof(*sw));
	char *hdrs;
	int n;

	if (sw == NULL)
		return ERR_NOMEM;
	sw->gw = gw;
	/* Built once: the sweeper must not allocate per connection it cuts. */
	if ((hdrs = decorate_raw_headers(gw)) == NULL) {
		free(sw);
		return ERR_NOMEM;
	}
	n = asprintf(&sw->head408, "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n%s", hdrs);
	free(hdrs);
	if (n < 0) {
		free(sw);
		return ERR_NOMEM;
	}
	sw->head408_len = (size_t)n;
	pthread_mutex_init(&sw->mu, NULL);
	pthread_cond_init(&sw->cv, NULL);
	if (pthread_create(&sw->thread, NULL, deadline_sweep, sw) != 0) {
		pthread_cond_destroy(&sw->cv);
		pthread_mutex_destroy(&sw->mu);
		free(sw->head408);
		free(sw);
		return ERR_NOMEM;
	}
	gw->sweeper = sw;
	return 0;
}

void deadline_halt(struct gateway *gw)
{
	struct http_sweeper *sw = gw->sweeper;

	if (sw == NULL)
		return;
	pthread_mutex_lock(&sw->mu);
	sw->stop = true;
	pthread_cond_signal(&sw->cv);
	pthread_mutex_unlock(&sw->mu);
	pthread_join(sw->thread, NULL);
}

uint64_t http_header_deadline_cuts(struct gateway *gw)
{
	return gw->sweeper != NULL ? atomic_load(&gw->sweeper->cut) : 0;
}

uint64_t http_body_deadline_cuts(struct gateway *gw)
{
	return gw->sweeper != NULL ? atomic_load(&gw->sweeper->body_cut) : 0;
}

/* MHD_OPTION_NOTIFY_CONNECTION: a connection opens or closes. */
void deadline_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                         enum MHD_ConnectionNotificationCode toe)
{
	struct gateway *gw = cls;
	struct http_sweeper *sw = gw->sweeper;
	struct http_conn *c;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci =
		    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		/* NULL: no caching and no header deadline for this one connection. */
		if ((c = calloc(1, sizeof(*c))) == NULL)
			return;
		*socket_context = c;
		if (ci == NULL || sw == NULL)
			return;
		c->fd = ci->connect_fd;
		atomic_init(&c->awaiting_since, clock_mono_ms());
		atomic_init(&c->body_since, 0);
		pthread_mutex_lock(&sw->mu);
		c->next = sw->head;
		if (sw->head != NULL)
			sw->head->prev = c;
		sw->head = c;
		pthread_mutex_unlock(&sw->mu);
		return;
	}
	if ((c = *socket_context) == NULL)
		return;
	if (sw != NULL) {
		/* Under the lock: the sweeper may be about to shut this fd down. */
		pthread_mutex_lock(&sw->mu);
		if (c->prev != NULL)
			c->prev->next = c->next;
		else if (sw->head == c)
			sw->head = c->next;
		if (c->next != NULL)
			c->next->prev = c->prev;
		pthread_mutex_unlock(&sw->mu);
	}
	if (c->cached != NULL)
		MHD_destroy_response(c->cached);
	free(c);
	*socket_context = NULL;
}

/* The answer to a limit error. A request whose body was not read, or that
 * sent too much, is not one to keep talking to: close after a 413 or 400. */

void deadline_free(struct gateway *gw)
{
	if (gw->sweeper == NULL)
		return;
	pthread_cond_destroy(&gw->sweeper->cv);
	pthread_mutex_destroy(&gw->sweeper->mu);
	free(gw->sweeper->head408);
	free(gw->sweeper);
	gw->sweeper = NULL;
}

void deadline_headers_done(struct http_request *req)
{
	struct http_conn *c = http_conn_of(req);

	if (c != NULL)
		atomic_store_explicit(&c->awaiting_since, 0, memory_order_relaxed);
}

/* From the headers to the last call, the body has MAGNETAR_BODY_TIMEOUT_S.
 * The id and the transport are noted first, for the sweeper's 408. */
void deadline_body_start(struct http_request *req)
{
	struct http_conn *c = http_conn_of(req);

	if (c == NULL)
		return;
	memcpy(c->body_rid, req->id, sizeof(c->body_rid));
	c->tls = MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_GNUTLS_SESSION) != NULL;
	req->body_timed = true;
	atomic_store(&c->body_since, clock_mono_ms());
}

/* The body is in: the deadline ends. False when the sweeper got there first
 * and has answered 408 on the socket: nothing more may be written. */
bool deadline_body_stop(struct http_request *req)
{
	struct http_conn *c;

	if (!req->body_timed || (c = http_conn_of(req)) == NULL)
		return true;
	return atomic_exchange(&c->body_since, 0) != HTTP_BODY_CUT;
}
