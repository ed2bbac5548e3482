/*
 * upstream.h — the pure parts of the gateway's upstream proxy (issue 21,
 * docs/apps.md): MAGNETAR_UPSTREAMS parsed into routes, the prefix a path
 * falls under, the request targets that may be passed on, and the
 * upstream's answer read strictly (its head, its chunked body). No
 * libmicrohttpd and no sockets: unit tests and fuzz targets link them.
 * proxy.c does the I/O.
 */
#ifndef MAGNETAR_GATEWAY_UPSTREAM_H
#define MAGNETAR_GATEWAY_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define UPSTREAM_MAX 64               /* routes in MAGNETAR_UPSTREAMS */
#define UPSTREAM_PREFIX_MAX 256       /* a prefix, with its NUL */
#define UPSTREAM_TIMEOUT_S 30         /* default time for the upstream's response head */
#define UPSTREAM_MAX_BODY (10u << 20) /* default request-body limit */
#define UPSTREAM_STEP_UP_MIN 5        /* default minutes of a step-up policy */

enum upstream_policy {
	UPSTREAM_PUBLIC,        /* anyone; no identity is passed on */
	UPSTREAM_AUTHENTICATED, /* a valid token whose session is alive */
	UPSTREAM_ROLE,          /* the same, and a role at least `role` */
	UPSTREAM_STEP_UP,       /* the same, and a step-up within step_up_s */
};

struct upstream {
	char prefix[UPSTREAM_PREFIX_MAX]; /* "/app" (no trailing '/'); "" for "/" */
	size_t prefix_len;
	char name[UPSTREAM_PREFIX_MAX]; /* the upstream as written, for logs */
	struct sockaddr_storage addr;   /* AF_INET, AF_INET6 or AF_UNIX */
	socklen_t addrlen;
	enum upstream_policy policy;
	char role[16];      /* UPSTREAM_ROLE: member, admin or founder */
	unsigned step_up_s; /* UPSTREAM_STEP_UP: seconds */
	bool token;         /* pass the client's Authorization on */
	unsigned timeout_s; /* for the response head */
	uint64_t max_body;  /* request-body bytes */
};

struct upstream_set {
	struct upstream *u; /* n of them, longest prefix first */
	size_t n;
};

/*
 * MAGNETAR_UPSTREAMS: entries separated by newlines or ';', each
 * "<prefix> <upstream> <policy> [option ...]" (docs/apps.md); a value that
 * is one token starting with '/' names a file of such lines ('#' starts a
 * comment). Host names are resolved here, once. 0, or ERR_INVAL with the
 * reason in err (no secret is ever in this value).
 */
int upstreams_parse(const char *value, struct upstream_set *out, char *err, size_t errlen);
void upstreams_free(struct upstream_set *set);
/* The route a decoded path falls under (on a segment boundary), or NULL. */
const struct upstream *upstreams_match(const struct upstream_set *set, const char *path);
/* Rank of a role (member 1, admin 2, founder 3), 0 for anything else. */
unsigned upstream_role_rank(const char *role);

/* A request target (as sent, percent-encoded) that may be passed on: no
 * raw space, control or non-ASCII byte; a path with no dot segment, no
 * empty segment, no backslash and no encoded '/', '\\', '.' or control
 * byte, so that the prefix the gateway matched is the one the upstream
 * sees, whatever it normalises. */
bool upstream_target_safe(const char *target, size_t len);
/* True when a lenient upstream could read the decoded `path` as one under
 * a more specific prefix than `matched` (the one it falls under here):
 * "/app/admin.json", "/app/admin;x", "/app/admin." under /app when
 * /app/admin is listed. Such a path is refused (400), never given the
 * looser policy. */
bool upstreams_ambiguous(const struct upstream_set *set, const char *path,
                         const struct upstream *matched);

/* ---- the upstream's answer -------------------------------------------------- */

#define UPSTREAM_HEAD_MAX 16384 /* response head bytes */
#define UPSTREAM_HEADERS_MAX 100

enum upstream_body {
	UPSTREAM_BODY_NONE,    /* 1xx, 204, 304, or the answer to HEAD */
	UPSTREAM_BODY_LENGTH,  /* Content-Length */
	UPSTREAM_BODY_CHUNKED, /* Transfer-Encoding: chunked */
	UPSTREAM_BODY_CLOSE,   /* until the upstream closes */
};

struct upstream_field {
	const char *name, *value; /* into the parsed buffer; not NUL-terminated */
	size_t name_len, value_len;
};

struct upstream_head {
	unsigned status;
	size_t n;
	struct upstream_field h[UPSTREAM_HEADERS_MAX];
	enum upstream_body body;
	uint64_t length; /* UPSTREAM_BODY_LENGTH (and a HEAD's announced length) */
	bool has_length;
};

/* Parses a response head from buf. The head's length (through its blank
 * line) when whole, 0 when more bytes are needed, -1 when malformed (a
 * bare LF, obs-fold, a control byte, a bad status line, more than
 * UPSTREAM_HEADERS_MAX fields, doubtful framing). `head_request`: the
 * answer to a HEAD has no body whatever it announces. */
long upstream_head_parse(const char *buf, size_t len, bool head_request, struct upstream_head *h);
/* Field name equality, case-insensitive. */
bool upstream_field_is(const struct upstream_field *f, const char *name);

/* A chunked body decoded as it arrives (RFC 9112 7.1); trailers dropped. */
struct upstream_chunked {
	int state;
	uint64_t left;   /* bytes of the current chunk still to come */
	unsigned digits; /* of the size line */
	size_t line;     /* bytes of the extension or trailer line so far */
	size_t trailers; /* trailer bytes in all */
};
/* Consumes bytes of `in` into `out` (data only): returns 1 at the body's
 * end, 0 when more is wanted, -1 when malformed. *used and *made say how
 * many bytes were consumed and produced. */
int upstream_chunked_feed(struct upstream_chunked *c, const char *in, size_t len, size_t *used,
                          char *out, size_t cap, size_t *made);

#endif
