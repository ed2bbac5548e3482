/*
 * gateway.h — magnetar-gateway, the public HTTP front of Magnetar: its state,
 * the per-request state route handlers see, and the prototypes of each file
 * (main.c, http.c, routes.c, respond.c, health.c).
 */
#ifndef MAGNETAR_GATEWAY_H
#define MAGNETAR_GATEWAY_H

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/events.h"
#include "common/jwt.h"
#include "common/rpc.h"
#include "gateway/vars.h"
#include "common/svc.h"
#include "gateway/policy.h"
#include "gateway/upstream.h"

/*
 * Request limits (docs/api.md, Conventions). The gateway decides them itself so
 * its headers are on every 413/414/431; libmicrohttpd gets a memory limit
 * well above them so it never answers an overflow on its own (docs/dependencies.md).
 * One place, so configuration can set them later.
 */
struct http_limits {
	size_t max_target;    /* request target with its query: 414 above */
	size_t max_headers;   /* sum of name + value + 4 over all headers: 431 above */
	size_t max_body;      /* request body: 413 above */
	size_t max_drain;     /* body bytes read (and dropped) before a 413 hangs up */
	size_t conn_memory;   /* MHD_OPTION_CONNECTION_MEMORY_LIMIT */
	unsigned connections; /* MHD_OPTION_CONNECTION_LIMIT */
	unsigned per_ip;      /* MHD_OPTION_PER_IP_CONNECTION_LIMIT */
	unsigned timeout_s;   /* MHD_OPTION_CONNECTION_TIMEOUT (idle) */
	unsigned threads;     /* MHD_OPTION_THREAD_POOL_SIZE: http_threads_for_cores() */
	int rpc_timeout_ms;   /* deadline of one RPC made for a request */
};

#define HTTP_LIMITS_DEFAULT                                                                        \
	{                                                                                          \
		.max_target = 8192, .max_headers = 16384, .max_body = 65536,                       \
		.max_drain = 1u << 20, .conn_memory = 64u << 10, .connections = 4096,              \
		.per_ip = 256, .timeout_s = 30, .threads = 2, .rpc_timeout_ms = 500,               \
	}

/* Gateway counters, served by Stats (svc.h counters callback). */
struct gateway_counters {
	_Atomic uint64_t requests;     /* seen by the URI callback */
	_Atomic uint64_t responses[6]; /* by status class: [2] = 2xx ... [5] = 5xx; [0] none */
	_Atomic int64_t inflight;      /* begun and not yet completed */
	_Atomic uint64_t rejected;     /* answered 400/413/414/431 by the limits */
	_Atomic uint64_t rpc_calls;
	_Atomic uint64_t rpc_failures; /* any outcome other than OK */
};

/* Rate-limit classes: every request counts against GLOBAL, and a route's
 * row may name one more (struct route.rate). */
enum rate_class {
	RATE_GLOBAL,
	RATE_LOGIN,          /* login, password change, step-up: credential guessing */
	RATE_PASSWORD_CHECK, /* each one costs auth a breach look-up */
	RATE_REGISTER,       /* each one costs an argon2id hash */
	RATE_TERMINAL,       /* opening a terminal forks a shell */
	RATE_CLASSES
};

struct metrics;
struct idem;
struct http_sweeper;

struct gateway {
	struct svc svc; /* FIRST: svc_handle_ping/stats receive the gateway as a struct svc */
	struct rpc_client *client[SVC_SERVICES]; /* indexed by SVC_*; [SVC_GATEWAY] unused */
	struct http_limits limits;
	bool hsts;           /* production or TLS: Strict-Transport-Security */
	bool log_success;    /* access-log 2xx/3xx too (MAGNETAR_ACCESS_LOG=all), not only errors */
	char rid_prefix[17]; /* random per start; request ids are prefix-counter */
	_Atomic uint64_t rid_next;
	struct MHD_Daemon *mhd;
	/* Shutdown: once `stopping` is set no connection is suspended any more,
	 * and http_stop waits for `suspended` and `rpc_pending` to drain before
	 * MHD_stop_daemon (which aborts on a suspended connection). */
	_Atomic bool stopping;
	_Atomic int suspended;   /* connections suspended on RPCs */
	_Atomic int rpc_pending; /* RPC completion callbacks not yet returned */
	struct gateway_counters ctr;
	/* authn.c; atomic: Stats (authn_get_stats) may run before it is set. */
	struct authn *_Atomic authn;
	struct health *health; /* health.c: /readyz's probe */
	/* Issue 6 (docs/gateway.md): settings.c fills these at start. */
	struct netaddr_cidr trusted[NETADDR_MAX_CIDRS]; /* MAGNETAR_TRUSTED_PROXIES */
	size_t ntrusted;
	enum netaddr_header proxy_header; /* MAGNETAR_PROXY_HEADER */
	struct origin_list cors;          /* MAGNETAR_CORS_ORIGINS */
	struct ratelimit *rl;
	struct ratelimit_rule rate[RATE_CLASSES]; /* MAGNETAR_RATE_* */
	unsigned header_timeout_ms;               /* MAGNETAR_HEADER_TIMEOUT_S */
	unsigned body_timeout_ms;                 /* MAGNETAR_BODY_TIMEOUT_S */
	char *csp, *permissions_policy;           /* per environment, or overridden */
	struct MHD_Daemon *mhd_metrics;           /* MAGNETAR_METRICS_ADDR, or NULL */
	struct MHD_Daemon *mhd_redirect;          /* MAGNETAR_HTTP_REDIRECT_ADDR, or NULL */
	char *tls_cert, *tls_key;                 /* PEM, until MHD has loaded them (tls.c) */
	struct metrics *metrics;                  /* metrics.c */
	struct idem *idem;                        /* idem.c */
	struct http_sweeper *sweeper;             /* http.c: the header deadline */
	struct upstream_set upstreams;            /* MAGNETAR_UPSTREAMS (proxy.c) */
	struct route *upstream_routes;            /* a route row per upstream */
	const unsigned char *openapi;             /* docs/openapi.yaml, embedded by main.c */
	size_t openapi_len;
};

/* The gateway's own variables (vars.h), parsed by svc_init. */
static inline const struct gateway_vars *gw_vars(const struct gateway *gw)
{
	return gw->svc.conf.own;
}

/* ---- http.c: the libmicrohttpd daemon and the life of one request -------- */

/* Method bits of a route's mask. HEAD is allowed wherever GET is. */
enum http_method {
	HTTP_M_GET = 1u << 0,
	HTTP_M_HEAD = 1u << 1,
	HTTP_M_POST = 1u << 2,
	HTTP_M_PUT = 1u << 3,
	HTTP_M_PATCH = 1u << 4,
	HTTP_M_DELETE = 1u << 5,
	HTTP_M_OPTIONS = 1u << 6,
};

#define ROUTE_PARAM_MAX 64 /* longest {id} path segment, with its NUL */
#define HTTP_RPC_SLOTS 4   /* RPCs one request may have in flight at once */
#define HTTP_ID_LEN 40     /* request id buffer: 16 hex, '-', up to 16 hex, NUL */

struct http_request;
typedef int (*http_resume_fn)(struct http_request *req);

/* The outcome of one RPC made for a request (http_async_call). */
struct http_rpc_slot {
	struct http_request *req;
	struct rpc_result result; /* result.output is owned here; freed with the request */
	/* For the RPC latency metrics (metrics_rpc). */
	const ProtobufCServiceDescriptor *desc;
	const char *method;
	uint64_t start_us;
};

enum http_phase {
	HTTP_PHASE_NEW,       /* request line seen; access handler not yet called */
	HTTP_PHASE_BODY,      /* headers checked; reading the body */
	HTTP_PHASE_SUSPENDED, /* waiting for RPCs; resumed by the last one */
	HTTP_PHASE_PROXY,     /* passed to an upstream: proxy.c takes MHD's calls */
	HTTP_PHASE_DONE,      /* a response is queued (or the request failed) */
};

/*
 * Per-request state, in MHD's *req_cls. Created by the URI log callback, the
 * first thing MHD tells about a request. Reference counted: one reference
 * for MHD, dropped by the completion callback, and one per RPC in flight,
 * dropped by its completion callback (which may run after the client left:
 * MHD completes a suspended request only after it is resumed).
 * Each stage of pipeline.c fills its part: framing the method, path, route,
 * client and body; authentication the claims (and `me`); handlers read
 * them, a resume function also rpc[].
 */
struct http_request {
	struct gateway *gw;
	struct MHD_Connection *conn;
	atomic_int refs;
	enum http_phase phase;
	unsigned stage;          /* pipeline.c: index of the stage running or next */
	unsigned rounds;         /* RPC rounds begun (http_async_begin/again) */
	unsigned method;         /* one HTTP_M_* bit, 0 for a method we do not know */
	const char *method_name; /* as sent (MHD's memory, valid until completion) */
	const char *path;        /* unescaped path without the query (MHD's memory) */
	unsigned status;         /* queued status, 0 until then */
	uint64_t start_us;
	size_t target_len;
	/* A stage's refusal (pipeline_refuse), answered as soon as MHD allows. */
	unsigned err_status;
	const char *err_code, *err_message;
	int stage_error;             /* what a stage or handler returned with no answer: 500 */
	struct MHD_Response *answer; /* recorded by http_queue, sent by pipeline.c */
	bool answer_shared;          /* `answer` is a kept, decorated one: not ours */
	struct MHD_Response **answer_keep; /* once sent, `answer` is kept here */
	unsigned hooks;                    /* stages whose `answered` hook runs */
	bool failed;                       /* a 500 for a failure is being answered */
	bool has_body;  /* framing: a body is announced (or framing is doubtful) */
	bool body_done; /* MHD's last call has come: the body is whole */
	/* Body, kept up to limits.max_body; counted beyond it. */
	char *body;
	size_t body_len, body_cap;
	uint64_t body_seen;
	/* Set by the route for its RPCs: the {id} segment, the authenticated
	 * user (the context's actor) and a deadline other than the default. */
	char param[ROUTE_PARAM_MAX];
	char actor[JWT_CLAIM_MAX];
	/* The authentication stage (authenticate.c): the caller, for a route
	 * that asks for a token (NULL otherwise: /healthz allocates nothing
	 * for it), and, when the route (or a stale revoked set) made it ask
	 * auth, auth's own view of the user and session. */
	struct http_auth *auth;
	const struct Magnetar__MeReply *me; /* NULL unless confirmed; in auth->confirmed */
	int rpc_timeout_ms;
	uint64_t me_epoch; /* authroutes_me: authn_me_get's epoch, for authn_me_put */
	/* Issue 6: set by http.c's first call. */
	const struct route *route; /* NULL: 404 */
	bool allowed;              /* route takes the method (else 405) */
	size_t route_label;        /* for metrics: 0 no route, else its row + 1 */
	struct netaddr client;     /* http_client_ip's value, as bytes */
	const char *origin;        /* the Origin header (MHD's memory), or NULL */
	bool cors_allowed;         /* origin is on MAGNETAR_CORS_ORIGINS */
	unsigned retry_after;      /* seconds, with err_status 429 */
	size_t resp_bytes;         /* body bytes of the answer (recorded by http_queue) */
	struct idem_state *idem;   /* idem.c: the request's Idempotency-Key, or NULL */
	const char *resp_body;     /* body of the answer, in its response (for idem.c) */
	/* respond_new's last response and its body, until an answer takes it. */
	const struct MHD_Response *built_resp;
	const char *built_body;
	size_t built_len;
	bool body_timed; /* under the body deadline (http_conn.body_since) */
	/* Asynchronous part (http_async_*). */
	atomic_int pending; /* RPCs in flight + the starter's guard */
	http_resume_fn resume;
	struct http_rpc_slot *rpc; /* HTTP_RPC_SLOTS of them, allocated on first use */
	/* The upstream proxy (proxy.c): the target as sent (copied before
	 * libmicrohttpd unescapes it, only when upstreams are set), the
	 * exchange, and whether the answer's Cache-Control is the upstream's. */
	char *raw_target;
	bool http11; /* the request line said HTTP/1.1 (an upgrade needs it) */
	struct proxy *proxy;
	bool keep_cache_control;
	char id[HTTP_ID_LEN];
};

/* A verified caller: the token's claims, and auth's answer to Me when it
 * was asked (req->me points into it). */
struct http_auth {
	struct jwt_claims claims;
	struct rpc_result confirmed;
};

/*
 * Per-connection state (MHD_OPTION_NOTIFY_CONNECTION), touched only by the
 * connection's MHD thread. It caches the answer with a constant body (the
 * /healthz hot path): building a response costs ten header copies, while
 * re-using one costs swapping its X-Request-Id. MHD handles one request at a
 * time per connection, so the previous use is over when the next begins.
 */
struct http_conn {
	struct MHD_Response *cached; /* our reference, or NULL */
	const char *cached_body;     /* the constant it was built from */
	char cached_id[HTTP_ID_LEN]; /* the X-Request-Id it carries now */
	/* The header deadline (http.c's sweeper): the monotonic ms at which a
	 * header block began to be awaited, 0 while none is. */
	_Atomic uint64_t awaiting_since;
	/* The body deadline: the monotonic ms at which a request's body began
	 * to be awaited, 0 while none is, HTTP_BODY_CUT once the sweeper has
	 * answered 408. body_rid and tls are set before it, for the sweeper. */
	_Atomic uint64_t body_since;
#define HTTP_BODY_CUT UINT64_MAX
	char body_rid[HTTP_ID_LEN];
	bool tls;
	int fd;
	bool upgraded;                 /* a 101 was sent: no deadline any more */
	struct http_conn *prev, *next; /* the sweeper's list, under its lock */
};

/* A resume function's "my stage is done, go on" (authenticate.c); other
 * resume functions return 0 or an ERR_* code, like handlers. */
#define HTTP_NEXT 1
/* proxy_access's "close the connection without an answer". */
#define HTTP_CLOSE 2

/* The state's last reference (http.c); a request id into out[HTTP_ID_LEN]. */
void http_request_unref(struct http_request *req);
void http_request_id(struct gateway *gw, char *out);

/* The main listener's thread pool: the cores this process may run on (its
 * affinity, capped by a cgroup v2 CPU quota), 1 to HTTP_MAX_THREADS. */
#define HTTP_MAX_THREADS 16
unsigned http_threads_for_cores(void);
/* Starts the daemon on MAGNETAR_HTTP_ADDR; logs the address. */
int http_start(struct gateway *gw);
/* "host:port" or "[v6]:port" split into `host` (no brackets) and `port`. */
int http_split_addr(const char *addr, char *host, size_t hlen, uint16_t *port);
/* A host (literal or name) and port as the address to bind. */
int http_resolve(const char *host, uint16_t port, struct sockaddr_storage *ss, socklen_t *sslen);

/* redirect.c: the plain-HTTP listener of MAGNETAR_HTTP_REDIRECT_ADDR, which
 * only redirects to https (nothing when unset); stop is idempotent. */
int redirect_start(struct gateway *gw);
void redirect_stop(struct gateway *gw);

/* tls.c: read MAGNETAR_TLS_CERT/KEY (before the drop), the MHD options that
 * serve them (at most 3 filled of `n`; 0 without TLS), and the wipe once
 * MHD has loaded them. */
int tls_load(struct gateway *gw);
size_t tls_mhd_options(const struct gateway *gw, struct MHD_OptionItem *opt, size_t n);
void tls_wipe(struct gateway *gw);
/* Refuses new suspensions, waits for those in flight, stops the daemon. */
void http_stop(struct gateway *gw);
/* The connection's state, or NULL if it could not be allocated. */
struct http_conn *http_conn_of(struct http_request *req);

/* ---- pipeline.c: the stages every request passes, and the one answer path -- */

enum stage_rv {
	STAGE_NEXT,    /* on to the next stage */
	STAGE_WAIT,    /* MHD's next call brings more of the body */
	STAGE_REFUSED, /* pipeline_refuse noted an error: answered as soon as MHD allows */
	STAGE_DONE,    /* answered, or suspended on RPCs (stage_error: failed unanswered) */
	STAGE_CLOSE,   /* the connection must close without an answer from us */
};

/* The MHD access handler: runs the stages (pipeline.c's table). */
enum MHD_Result pipeline_access(void *cls, struct MHD_Connection *conn, const char *url,
                                const char *method, const char *version, const char *upload_data,
                                size_t *upload_data_size, void **req_cls);
/* Notes a refusal (status, API code, message) for the driver to answer. */
void pipeline_refuse(struct http_request *req, unsigned status, const char *code,
                     const char *message);
const char *pipeline_stage_name(unsigned i);

/* Asks for the running stage's `answered` hook on this request's answer
 * (decorate's runs on every answer). */
void pipeline_want_answered(struct http_request *req);

/* respond.c: answers `req` with `status` and `resp` (consumed in all cases):
 * recorded, and sent by pipeline.c when the stage, handler or resume
 * function returns, through the `answered` hooks. 0 or ERR_NOMEM/ERR_INTERNAL. */
int http_queue(struct http_request *req, unsigned status, struct MHD_Response *resp);
/* The same for a kept response already decorated, sent as it is (its
 * reference is not consumed). */
int http_queue_shared(struct http_request *req, unsigned status, struct MHD_Response *resp);

/* The stages, each in its own file, in the order they run. */
enum stage_rv framing_stage(struct http_request *req);      /* framing.c */
enum stage_rv ratelimit_stage(struct http_request *req);    /* rate.c */
enum stage_rv body_stage(struct http_request *req);         /* body.c */
enum stage_rv cors_stage(struct http_request *req);         /* cors.c */
enum stage_rv authenticate_stage(struct http_request *req); /* authenticate.c */
enum stage_rv idem_stage(struct http_request *req);         /* idem.c */
enum stage_rv dispatch_stage(struct http_request *req);     /* dispatch.c */
/* The hooks on the way out: idem.c's when its stage asked, decorate.c's
 * (security headers, X-Request-Id, CORS) on every answer. */
int idem_answered(struct http_request *req, unsigned status, struct MHD_Response *resp);
int decorate_answered(struct http_request *req, unsigned status, struct MHD_Response *resp);
/* decorate.c's headers as "Name: value\r\n" lines, the JSON Content-Type
 * last, for an answer written to the socket without libmicrohttpd
 * (deadline.c's 408). malloc'd; NULL on failure. */
char *decorate_raw_headers(const struct gateway *gw);
/* body.c: a piece of the body (MHD's middle calls). MHD_NO closes. */
enum MHD_Result body_feed(struct http_request *req, const char *data, size_t len);

/* ---- accesslog.c: the line per request ------------------------------------ */

/* At completion: one line (every request, or only errors with
 * MAGNETAR_ACCESS_LOG=errors) through the thread's log buffer. */
void accesslog_write(struct http_request *req, enum MHD_RequestTerminationCode toe, uint64_t us);

/* ---- deadline.c: header and body deadlines (slowloris) -------------------- */

int deadline_start(struct gateway *gw);
void deadline_halt(struct gateway *gw); /* before the daemons stop */
void deadline_free(struct gateway *gw);
/* MHD_OPTION_NOTIFY_CONNECTION: a connection opens or closes. */
void deadline_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                         enum MHD_ConnectionNotificationCode toe);
/* The header block is in: no header deadline until the next request. */
void deadline_headers_done(struct http_request *req);
void deadline_body_start(struct http_request *req);
/* False when the sweeper has answered 408 first: nothing more may be written. */
bool deadline_body_stop(struct http_request *req);
/* Connections shut down by the header deadline since start. */
uint64_t http_header_deadline_cuts(struct gateway *gw);
/* Requests answered 408 (or, over TLS, shut down) by the body deadline. */
uint64_t http_body_deadline_cuts(struct gateway *gw);

/*
 * rpcbridge.c — answering after RPCs, without blocking an MHD thread:
 *   http_async_begin(req, done)   suspends the connection (ERR_CLOSED while
 *                                 stopping, ERR_NOMEM: answer with
 *                                 http_async_refused, a 503 that says which);
 *   http_async_call(req, i, ...)  starts RPC i (< HTTP_RPC_SLOTS); a call that
 *                                 cannot start records STATUS_UNAVAILABLE;
 *   http_async_end(req)           after the last call: when every RPC has
 *                                 completed the connection resumes and `done`
 *                                 runs on an MHD thread, reading req->rpc[i].
 * The handler returns 0 after http_async_end. A resume function may begin
 * another round the same way (a slot's earlier outcome is freed on reuse).
 */
int http_async_begin(struct http_request *req, http_resume_fn done);
int http_async_refused(struct http_request *req, int rv);

/* The client's address as text: the one value rate limits, logs, sessions
 * and risk scoring all use. The socket peer, or, when the peer is in
 * MAGNETAR_TRUSTED_PROXIES, the right-most untrusted hop of the proxy header
 * (netaddr_client); decided once per request, before any route runs. */
void http_client_ip(struct http_request *req, char ip[INET6_ADDRSTRLEN]);
void http_async_call(struct http_request *req, int slot, struct rpc_client *client,
                     const ProtobufCServiceDescriptor *desc, const char *method,
                     const ProtobufCMessage *input);
void http_async_end(struct http_request *req);

/* ---- routes.c: the route table ------------------------------------------- */

/* A route handler runs once the whole request is in. It answers (respond_*)
 * or goes asynchronous (http_async_*). Returns 0 or an ERR_* code (→ 500). */
typedef int (*route_fn)(struct http_request *req);

/* Per-route flags (docs/gateway.md). */
enum route_flags {
	ROUTE_F_IDEMPOTENT = 1u << 0, /* a POST that creates: honours Idempotency-Key; never
	                               * on a route whose answer holds a token */
	ROUTE_F_METRICS = 1u << 1,    /* on MAGNETAR_METRICS_ADDR; on the main listener only
	                               * outside production */
	ROUTE_F_STEP_UP = 1u << 2,    /* the step-up route: a step-up-band score is let in */
	ROUTE_F_ADMIN = 1u << 3,      /* the admin or founder role (auth's view when asked) */
	ROUTE_F_PROXY = 1u << 4,      /* an upstream's prefix (proxy.c): the body streams */
};

/* Who may call a route (authenticate.c). */
enum route_auth {
	ROUTE_AUTH_NONE,   /* anyone; the handler decides (login, health) */
	ROUTE_AUTH_TOKEN,  /* a valid Bearer token whose session is not known revoked */
	ROUTE_AUTH_LIVE,   /* the same, and auth asked while the revoked set is not
	                    * provably current: routes whose RPCs do not check the session */
	ROUTE_AUTH_TICKET, /* the WebSocket: its ticket is the credential; a token, when
	                    * sent, is checked as LIVE */
};

struct route {
	const char *path; /* exact, or with one "{id}" segment anywhere */
	unsigned methods; /* HTTP_M_* mask; HEAD implied by GET */
	route_fn handler;
	enum route_auth auth;
	unsigned confirm;     /* HTTP_M_* methods for which auth is always asked */
	unsigned flags;       /* ROUTE_F_* */
	enum rate_class rate; /* a second bucket besides RATE_GLOBAL, or RATE_GLOBAL */
	const char *role;     /* a role at least this (founder > admin > member), or NULL */
	unsigned step_up_s;   /* > 0: a step-up within this many seconds (auth asked) */
};

/* The route for `path`, or NULL. For a "{id}" route the segment is copied
 * into param (it is 1..ROUTE_PARAM_MAX-1 bytes of [A-Za-z0-9_-]). */
const struct route *routes_find(const char *path, char param[ROUTE_PARAM_MAX]);
/* True when `route` takes `method` (one HTTP_M_* bit). */
bool routes_allows(const struct route *route, unsigned method);
/* "GET, HEAD" etc. for an Allow header, into buf. */
void routes_allow_header(const struct route *route, char *buf, size_t len);
/* HTTP_M_* bit of a method name, 0 if unknown. */
unsigned routes_method(const char *method);
/* The table, for metrics (row index = route label). */
size_t routes_count(void);
const struct route *routes_at(size_t i);
size_t routes_index(const struct route *route);

/* ---- respond.c: responses with the security headers on every one ------- */

/* A response with `body` (owned by it with MHD_RESPMEM_MUST_FREE, which
 * frees it on failure too) and, when `json`, the JSON Content-Type; the
 * answer path adds the rest. NULL on allocation failure. */
struct MHD_Response *respond_new(struct http_request *req, const char *body, size_t len,
                                 enum MHD_ResponseMemoryMode mode, bool json);
/* Serialises `body` (reference stolen) and queues it. */
int respond_json(struct http_request *req, unsigned status, json_t *body);
/* Queues a constant JSON text (not copied). */
int respond_static(struct http_request *req, unsigned status, const char *json);
/* The same through the connection's cached response (hot paths). */
int respond_static_cached(struct http_request *req, unsigned status, const char *json);
/* The error body of docs/api.md: {"error":{"code","message","request_id"}}; NULL on
 * allocation failure. The caller may add headers before http_queue. */
struct MHD_Response *respond_error_new(struct http_request *req, const char *code,
                                       const char *message);
int respond_error(struct http_request *req, unsigned status, const char *code, const char *message);

/* How an RPC outcome reads over HTTP: status, API code and message. */
struct respond_mapping {
	unsigned http;
	const char *code;
	const char *message;
};
/* Maps `r` (never OK) for the client. A service's own snake_case code and
 * message pass through for 4xx; 5xx answers are always generic. */
void respond_map_rpc(const struct rpc_result *r, struct respond_mapping *out);
/* Queues the error for an RPC outcome (adds WWW-Authenticate / Retry-After
 * where docs/api.md wants them). */
int respond_rpc_error(struct http_request *req, const struct rpc_result *r);

/* ---- store.c: gateway.db (the only file that includes sqlite3.h) -------- */

extern const struct pool_schema store_schema;

#define STORE_IDEM_ID_LEN 32 /* HMAC-SHA256 */

enum store_idem_outcome {
	STORE_IDEM_CLAIMED,  /* new (or expired): the caller holds it now */
	STORE_IDEM_RUNNING,  /* same body, still running */
	STORE_IDEM_MISMATCH, /* another body under the same key */
	STORE_IDEM_DONE,     /* same body, answered: status and body to replay */
};

struct store_idem {
	enum store_idem_outcome outcome;
	unsigned status;
	char *body; /* DONE: malloc'ed, NUL-terminated; the caller frees */
	size_t len;
};

/* In one transaction: looks `id` up (unexpired) and, when absent, inserts it
 * as running with `mac` for ttl_ms. 0 with *out filled, or ERR_DB/ERR_NOMEM. */
int store_idem_claim(struct pool *p, const uint8_t id[STORE_IDEM_ID_LEN],
                     const uint8_t mac[STORE_IDEM_ID_LEN], uint64_t now_ms, uint64_t ttl_ms,
                     struct store_idem *out);
/* The answer to replay from now on. */
int store_idem_complete(struct pool *p, const uint8_t id[STORE_IDEM_ID_LEN], unsigned status,
                        const char *body, size_t len);
/* Forgets a key (the request failed or its answer must not be stored). */
int store_idem_release(struct pool *p, const uint8_t id[STORE_IDEM_ID_LEN]);
int store_idem_purge(struct pool *p, uint64_t now_ms);
/* At start: forgets keys an earlier process left running, and expired ones. */
int store_idem_reset(struct pool *p, uint64_t now_ms);

/* ---- body.c: JSON request bodies ---------------------------------------- */

/* The body as one JSON object. Answers and returns NULL on refusal: 415
 * unsupported_media_type unless the Content-Type is application/json (with
 * or without a charset), 400 invalid_request for malformed JSON, a
 * duplicated key or anything but an object. Caller json_decref()s. */
json_t *body_json(struct http_request *req);
/* Answers 400 invalid_request for a body of the wrong shape (an unknown
 * field, a wrong type, a missing field): json_unpack_ex failed. */
int body_invalid(struct http_request *req);
/* Wipes and frees the collected body (it may hold a secret). */
void body_release(struct http_request *req);
/* Queues an empty 204. */
int respond_no_content(struct http_request *req);
/* RFC 3339 UTC ("2026-11-28T02:13:00Z") of unix milliseconds, into buf[32]. */
void respond_time(uint64_t unix_ms, char buf[32]);

/* ---- authn.c: who is calling ---------------------------------------------- */

struct authn;
struct jwt_claims;
/* Loads auth's public keys and the revoked sessions (waiting briefly for
 * auth at start), subscribes to auth.events, starts the refresher. */
int authn_start(struct gateway *gw);
void authn_stop(struct gateway *gw);
/* Verifies the request's Bearer token (authenticate.c's stage calls it):
 * 0 with *claims filled and req->actor set; otherwise answers 401
 * (WWW-Authenticate: Bearer) itself and returns ERR_PERM. It also scores
 * the request against the session's fingerprint
 * (docs/api.md "Session risk"): ≥ 70 answers 401 step_up_required unless `flags`
 * has AUTHN_ALLOW_STEP_UP (the step-up route itself); ≥ 90 answers 401
 * session_terminated. Non-zero scores are reported to auth. */
#define AUTHN_ALLOW_STEP_UP 1u
int authn_require_flags(struct http_request *req, struct jwt_claims *claims, unsigned flags);
/* The token after "Bearer " (MHD's memory), for auth to verify itself; ""
 * when there is none. */
const char *authn_bearer(struct http_request *req);
/* Round one of a route that must not rest on the local revoked set at all
 * (opening a shell, reading the audit log): asks auth's Me for the caller's
 * session in rpc slot 0, then `done` runs. In `done`, authn_confirmed gives
 * auth's answer (user and session as auth has them now), or NULL after it
 * has answered 401 (the session has ended) or the RPC's error itself. */
struct Magnetar__MeReply;
int authn_confirm(struct http_request *req, const struct jwt_claims *claims, http_resume_fn done);
const struct Magnetar__MeReply *authn_confirmed(struct http_request *req);
/* True while the local revoked set is provably current (loaded since the
 * last resync, and auth's heartbeat heard within 3 s from the publisher it
 * was loaded from). A route whose RPCs do not have auth check the session
 * (listing or closing terminals) may rest on the set only then; otherwise
 * it confirms with auth first (authn_confirm). False also asks for a
 * reload. */
bool authn_set_current(struct gateway *gw);
/* The /me answer cached for a session (a malloc'd copy), or NULL; never
 * while the revocation set is stale. authn_me_put stores one (30 s), unless
 * an answer was dropped since the authn_me_get that set *epoch: the RPC's
 * answer may predate that logout or password change. */
char *authn_me_get(struct gateway *gw, const char *sid, uint64_t *epoch);
void authn_me_put(struct gateway *gw, const char *sid, const char *uid, const char *body,
                  uint64_t epoch);
void authn_me_drop(struct authn *a, const char *sid);
/* What this gateway itself just did through auth, applied at once rather
 * than when auth's event arrives (which may be late, or lost until the next
 * heartbeat shows the gap): the client that got a 204 for a logout must
 * never see the session accepted again. */
void authn_session_ended(struct gateway *gw, const char *sid);
/* True when the revoked set holds `sid` (a WebSocket relay's session). */
bool authn_session_revoked(struct gateway *gw, const char *sid);
void authn_user_changed(struct gateway *gw, const char *uid);
/* Called with each access token auth has just issued through this gateway:
 * when it names a key not loaded yet (a rotation a moment ago), the keys
 * are loaded before the token is handed out, so the client's next request
 * and its JWKS fetch both know the key. */
void authn_issued(struct gateway *gw, const char *token);
/* What the auth.events subscription saw, and the revoked set's state (all
 * zero before authn_start). */
struct authn_stats {
	struct events_sub_stats events;
	uint64_t current;  /* 1 while the set is current (authn_set_current) */
	uint64_t sessions; /* revoked sessions in the set */
	uint64_t confirms; /* local-set routes that asked auth: the set was not current */
};
void authn_get_stats(struct gateway *gw, struct authn_stats *st);
/* The fingerprint headers of docs/api.md, joined by "\n" (missing = empty). */
void authn_fingerprint(struct http_request *req, char *buf, size_t len);

/* ---- authroutes.c: the /api/v1/auth routes ------------------------------------------ */

int authroutes_register(struct http_request *req);
int authroutes_login(struct http_request *req);
int authroutes_refresh(struct http_request *req);
int authroutes_logout(struct http_request *req);
int authroutes_me(struct http_request *req);
int authroutes_sessions(struct http_request *req);
int authroutes_revoke_session(struct http_request *req);
int authroutes_password_check(struct http_request *req);
int authroutes_password(struct http_request *req);
int authroutes_step_up(struct http_request *req);
int authroutes_totp_setup(struct http_request *req);
int authroutes_totp_enable(struct http_request *req);
int authroutes_totp_disable(struct http_request *req);

/* ---- adminroutes.c: /api/v1/users and /api/v1/audit (admin, founder) ------- */

int adminroutes_users(struct http_request *req);
int adminroutes_user_delete(struct http_request *req);
int adminroutes_user_revoke(struct http_request *req);
int adminroutes_audit_events(struct http_request *req);
int adminroutes_audit_verify(struct http_request *req);

/* ---- terminalroutes.c: /api/v1/terminal (docs/terminal.md) -------------- */

int terminalroutes_sessions(struct http_request *req); /* GET list, POST open */
int terminalroutes_close(struct http_request *req);
int terminalroutes_ws(struct http_request *req);

/* ---- wsbridge.c: a terminal's WebSocket relayed to its stream ------------- */

struct wsbridge;
/* A bridge to the stream at `url`, for MHD_create_response_for_upgrade. */
/* A bridge to the terminal `id`'s stream socket at `path`, to be shown
 * `key` (Attach's answer); NULL for sizes no terminal gives. */
struct wsbridge *wsbridge_new(struct gateway *gw, const char *path, const char *id,
                              const uint8_t *key, size_t key_len);
void wsbridge_free(struct wsbridge *b); /* only if never handed to MHD */
/* The MHD_UpgradeHandler; `cls` is the wsbridge (owned from then on). */
void wsbridge_upgraded(void *cls, struct MHD_Connection *conn, void *req_cls, const char *extra_in,
                       size_t extra_in_size, MHD_socket sock,
                       struct MHD_UpgradeResponseHandle *urh);
/* Closes every bridge (1001) and waits for them: before MHD_stop_daemon. */
void wsbridge_stop(struct gateway *gw);

/* ---- health.c: /, /healthz and /readyz ---------------------------------- */

int health_root(struct http_request *req);
int health_live(struct http_request *req);
int health_ready(struct http_request *req);
/* The probe thread /readyz answers from; stop it before the clients close
 * (it waits for a Ping still out). */
int health_start(struct gateway *gw);
void health_stop(struct gateway *gw);

/* ---- settings.c: the gateway's own MAGNETAR_* variables (issue 6) -------- */

/* Fills gw's proxy, CORS, rate, header-deadline and header-policy fields.
 * 0, or ERR_CONFIG with one sentence naming the variable in err. */
int settings_load(struct gateway *gw, char *err, size_t errlen);
void settings_fini(struct gateway *gw);

/* ---- idem.c: Idempotency-Key (docs/api.md Conventions) ------------------------ */

struct idem_state;
/* Loads or creates the per-install HMAC key (<data dir>/idempotency.key,
 * 0600) and forgets keys left "in progress" by an earlier run. */
int idem_start(struct gateway *gw);
void idem_stop(struct gateway *gw);
/* Request completion: releases a key still held, frees the state. */
void idem_release(struct http_request *req);

/* ---- metrics.c: GET /metrics (Prometheus text 0.0.4) ------------------------ */

int metrics_new(struct metrics **out);
void metrics_free(struct metrics *m);
/* A request ended: `route_label` 0 for no route (404); `us` its duration. */
void metrics_request(struct gateway *gw, size_t route_label, unsigned status, uint64_t us);
/* One RPC made for a request completed after `us`. */
void metrics_rpc(struct gateway *gw, const ProtobufCServiceDescriptor *desc, const char *method,
                 uint64_t us);
void metrics_rate_hit(struct gateway *gw, enum rate_class klass);
int metrics_serve(struct http_request *req);

/* ---- openapi.c: GET /openapi.yaml ---------------------------------------- */

int openapi_serve(struct http_request *req);

/* ---- introspect.c: POST /api/v1/auth/introspect (RFC 7662) ------------- */

int introspect_serve(struct http_request *req);

/* ---- jwks.c: GET /.well-known/jwks.json ----------------------------------- */

/* How long a client may keep the set (docs/apps.md, "Key rotation"). */
#define JWKS_CACHE_CONTROL "public, max-age=60"
int jwks_serve(struct http_request *req);
/* The set for `n` keys as a JSON text (malloc'd; *len its length), or NULL. */
char *jwks_render(const struct jwt_key *keys, size_t n, size_t *len);

/* ---- proxy.c: MAGNETAR_UPSTREAMS, the app's services behind the gateway ---- */

/* Reads MAGNETAR_UPSTREAMS (NULL: none) while the sandbox is still open
 * (the file it may name, the host names) and lets the gateway connect to
 * the upstreams' ports; a malformed value is kept for proxy_routes_init to
 * report. Then the route rows, one per entry: 0, ERR_INVAL with the reason
 * in err, or ERR_NOMEM. */
struct sandbox_rules;
int proxy_prepare(const char *value, struct sandbox_rules *rules);
int proxy_routes_init(struct gateway *gw, char *err, size_t errlen);
void proxy_routes_free(struct gateway *gw);
/* The row of the upstream a decoded path falls under, or NULL. */
const struct route *proxy_route_find(const struct gateway *gw, const char *path);
uint64_t proxy_max_body(const struct route *route);
bool proxy_public(const struct route *route);
/* The route handler: starts the exchange (HTTP_PHASE_PROXY from then on). */
int proxy_handle(struct http_request *req);
/* MHD's later calls for a proxied request: a piece of the body (*size > 0)
 * or the last call. 0 (an answer may be recorded, or a refusal noted),
 * HTTP_CLOSE, or ERR_*. */
int proxy_access(struct http_request *req, const char *data, size_t *size);
/* The request is over: drops its hold on the exchange. */
void proxy_release(struct http_request *req);
void proxy_upgraded(void *cls, struct MHD_Connection *conn, void *req_cls, const char *extra_in,
                    size_t extra_in_size, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh);
/* Ends every exchange (each sees it within a poll period) and waits. */
void proxy_stop(struct gateway *gw);
/* Exchanges alive (their memory) and threads running, for Stats. */
void proxy_counts(uint64_t *exchanges, uint64_t *threads);

#endif
