/*
 * proxy.h — the upstream proxy's exchange (docs/apps.md), shared by its
 * three files: proxy.c (the routes and the libmicrohttpd side),
 * proxy_thread.c (the thread that talks to the upstream, and the WebSocket
 * relay) and proxy_headers.c (which headers pass, each way).
 *
 * One exchange is one connection to the upstream, driven by a thread of its
 * own (bounded in number, like the WebSocket bridges) that blocks in poll()
 * and never holds an MHD thread. The MHD side and the thread meet in
 * struct proxy under its lock, through two bounded buffers, so neither
 * side ever holds a whole body:
 *   to the upstream   the request head we build, then the body as the
 *                     client sends it (re-framed by us: Content-Length as
 *                     announced, or chunked); a full buffer suspends the
 *                     client's connection until the upstream has read;
 *   from it           the response head, parsed strictly (upstream.c), then
 *                     the body decoded into the buffer that MHD's content
 *                     reader drains; an empty buffer suspends the
 *                     connection until bytes come.
 * The thread resumes what the MHD side suspended (every suspension is
 * counted in gw->suspended, as rpcbridge.c's are, so http_stop waits for
 * it). A WebSocket upgrade the upstream accepts (101) becomes a byte relay
 * between the two sockets on the same thread.
 */
#ifndef MAGNETAR_GATEWAY_PROXY_H
#define MAGNETAR_GATEWAY_PROXY_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/gateway.h"
#include "gateway/upstream.h"

#define PROXY_PER_CLIENT 64                   /* exchanges of one client (rate-limit key) at once */
#define PROXY_MAX 512                         /* exchanges (threads) at once */
#define PROXY_BUF (64u << 10)                 /* each direction's buffer */
#define PROXY_POLL_MS 250                     /* how soon a thread sees shutdown */
#define PROXY_CONNECT_MS 5000                 /* connecting to the upstream */
#define PROXY_UPGRADE_WAIT_MS 10000           /* from the 101 queued to MHD's hand-over */
#define PROXY_WS_IDLE_MS (600u * 1000)        /* a relay with no byte either way */
#define PROXY_WS_MAX_MS (24ull * 3600 * 1000) /* a relay's whole life */
#define PROXY_CHUNK_OVERHEAD 12               /* "ffff\r\n" + "\r\n", with margin */

/* What the MHD side waits for while its connection is suspended. */
enum proxy_wait {
	PROXY_WAIT_NONE,
	PROXY_WAIT_SPACE, /* room in `out` for the client's body */
	PROXY_WAIT_HEAD,  /* the upstream's response head (or a failure) */
	PROXY_WAIT_DATA,  /* body bytes in `in` (or the end) */
};

struct proxy {
	pthread_mutex_t mu;
	int refs; /* the thread, the request, each response that reads it */
	struct gateway *gw;
	struct MHD_Connection *conn;
	const struct upstream *up;
	int efd; /* wakes the thread */
	bool head_request, upgrade, chunked_out;
	/* To the upstream: the head, then the framed body. */
	char *head;
	size_t head_len, head_off;
	char *out; /* PROXY_BUF bytes */
	size_t out_len, out_off;
	bool body_end; /* the MHD side has queued the body's last byte */
	bool up_shut;  /* the upstream takes no more: later body bytes are dropped */
	uint64_t body_seen;
	bool too_large; /* over max_body: 413 */
	/* From the upstream. */
	char *hbuf; /* UPSTREAM_HEAD_MAX bytes */
	size_t hlen;
	struct upstream_head rh;
	bool head_ready;
	unsigned fail_status; /* 502/504/503 instead of an answer */
	const char *fail_code, *fail_message;
	struct upstream_chunked ch;
	uint64_t left; /* UPSTREAM_BODY_LENGTH bytes still to come */
	char *in;      /* PROXY_BUF bytes */
	size_t in_len, in_off;
	bool resp_end, resp_error;
	/* Between the two sides. */
	enum proxy_wait wait;
	bool thread_done;
	bool stop_asked; /* the request ended: the thread gives up */
	/* Who it is for: the per-client cap (proxy_thread.c) counts exchanges
	 * by the client's rate-limit key; a relay ends when the session does. */
	struct netaddr client;
	char sid[JWT_CLAIM_MAX];
	bool upgrade_ref; /* the 101 response's reference, until MHD hands over */
	/* The WebSocket relay: MHD's upgraded socket, once handed over. */
	MHD_socket cfd;
	struct MHD_UpgradeResponseHandle *urh;
	bool ws_ready;
};

struct proxy_route {
	struct route route; /* first: framing.c holds a struct route * */
	const struct upstream *up;
};

/* ---- the exchange's life (proxy.c); each under p->mu unless it says ---- */

/* Drops a reference and unlocks; the last one frees. */
void proxy_unref_locked(struct proxy *p);
void proxy_unref(struct proxy *p); /* not under p->mu */
/* Wakes the thread (any state change it should look at). */
void proxy_wake(struct proxy *p);
/* What a suspended MHD side waits for has come. */
bool proxy_ready_for(const struct proxy *p, enum proxy_wait w);
/* On the thread: resumes the connection when what it waits for has come. */
void proxy_kick(struct proxy *p);
/* The answer is to be this error rather than the upstream's (first wins). */
void proxy_fail(struct proxy *p, unsigned status, const char *code, const char *message);

/* ---- proxy_thread.c --------------------------------------------------------- */

/* Starts the exchange's thread (which takes a reference). ERR_CLOSED when
 * PROXY_MAX run already, or PROXY_PER_CLIENT for p->client, or the gateway
 * is stopping. */
int proxy_thread_start(struct proxy *p);
/* struct proxy allocated and not yet freed (proxy_counts). */
extern _Atomic uint64_t proxy_alive;

/* ---- proxy_headers.c -------------------------------------------------------- */

/* The request as the upstream gets it, into p->head (malloc'd); sets
 * p->upgrade and p->chunked_out. 0 or ERR_NOMEM. */
int proxy_build_head(struct http_request *req, struct proxy *p, const char *target);
/* An upstream's answer header that the client must not get from it. */
bool proxy_drop_response_header(const struct proxy *p, const struct upstream_field *f,
                                bool public_route);

#endif
