/*
 * upstream.c — MAGNETAR_UPSTREAMS and the upstream's answer, read strictly
 * (upstream.h). Strict because the gateway frames what it passes on: an
 * answer it cannot frame exactly one way is a 502, never a guess, and a
 * target an upstream could normalise onto another prefix is a 400.
 */
#include "gateway/upstream.h"

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#include "common/err.h"

#define UPSTREAM_FILE_MAX (256u << 10)

static int upstream_refuse(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	n = (size_t)snprintf(err, errlen, "MAGNETAR_UPSTREAMS: ");
	if (n < errlen) {
		va_start(ap, fmt);
		vsnprintf(err + n, errlen - n, fmt, ap);
		va_end(ap);
	}
	return ERR_INVAL;
}

unsigned upstream_role_rank(const char *role)
{
	static const char *const ranks[] = {"member", "admin", "founder"};
	for (unsigned i = 0; i < 3; i++)
		if (strcmp(role, ranks[i]) == 0)
			return i + 1;
	return 0;
}

/* An unsigned decimal in [lo, hi], the whole string. */
static bool upstream_number(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	uint64_t v = 0;
	if (*s == '\0' || strlen(s) > 12)
		return false;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	if (v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

/* "/a/b" or "/a/b/" or "/": segments of unreserved characters, no dot
 * segment, no empty one. */
static bool upstream_prefix_ok(const char *p)
{
	size_t len = strlen(p);
	if (p[0] != '/' || len >= UPSTREAM_PREFIX_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)p[i]) && strchr("/-._~", p[i]) == NULL)
			return false;
	if (strstr(p, "//") != NULL)
		return false;
	for (const char *s = p; s != NULL; s = strchr(s + 1, '/')) {
		const char *seg = s + 1;
		size_t n = strcspn(seg, "/");
		if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
			return false;
	}
	return true;
}

/* "http://host:port" (a literal, "[v6]" or a name resolved now) or
 * "unix:/absolute/path". */
static int upstream_address(struct upstream *u, const char *s, char *err, size_t errlen)
{
	snprintf(u->name, sizeof(u->name), "%s", s);
	if (strncmp(s, "unix:", 5) == 0) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&u->addr;
		const char *path = s + 5;
		if (path[0] != '/' || strlen(path) >= sizeof(sun->sun_path))
			return upstream_refuse(err, errlen,
			                       "%s: a unix: upstream needs an absolute path "
			                       "shorter than %zu bytes",
			                       s, sizeof(sun->sun_path));
		sun->sun_family = AF_UNIX;
		memcpy(sun->sun_path, path, strlen(path) + 1);
		u->addrlen = (socklen_t)sizeof(*sun);
		return 0;
	}
	if (strncmp(s, "http://", 7) != 0)
		return upstream_refuse(err, errlen,
		                       "%s: an upstream is http://host:port or unix:/path", s);
	const char *host = s + 7, *colon, *end;
	char hbuf[256], pbuf[8];
	uint64_t port;
	struct addrinfo hints, *res = NULL;
	size_t hlen;

	if (host[0] == '[') {
		if ((end = strchr(host, ']')) == NULL || end[1] != ':')
			return upstream_refuse(err, errlen, "%s: [v6]:port expected", s);
		host++;
		colon = end + 1;
	} else {
		if ((colon = strrchr(host, ':')) == NULL)
			return upstream_refuse(err, errlen, "%s: the port is required", s);
		end = colon;
	}
	hlen = (size_t)(end - host);
	if (hlen == 0 || hlen >= sizeof(hbuf) || !upstream_number(colon + 1, 1, 65535, &port))
		return upstream_refuse(err, errlen,
		                       "%s: host:port with a port from 1 to 65535, and "
		                       "no path",
		                       s);
	memcpy(hbuf, host, hlen);
	hbuf[hlen] = '\0';
	snprintf(pbuf, sizeof(pbuf), "%u", (unsigned)port);
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if (getaddrinfo(hbuf, pbuf, &hints, &res) != 0 || res == NULL)
		return upstream_refuse(err, errlen, "%s: the host does not resolve", s);
	memcpy(&u->addr, res->ai_addr, res->ai_addrlen);
	u->addrlen = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* One token after the upstream: the policy (first) or an option. */
static int upstream_word(struct upstream *u, const char *w, bool first, char *err, size_t errlen)
{
	uint64_t v;

	if (first) {
		if (strcmp(w, "public") == 0)
			u->policy = UPSTREAM_PUBLIC;
		else if (strcmp(w, "authenticated") == 0)
			u->policy = UPSTREAM_AUTHENTICATED;
		else if (strncmp(w, "role=", 5) == 0 && upstream_role_rank(w + 5) != 0) {
			u->policy = UPSTREAM_ROLE;
			snprintf(u->role, sizeof(u->role), "%s", w + 5);
		} else if (strcmp(w, "step-up") == 0) {
			u->policy = UPSTREAM_STEP_UP;
			u->step_up_s = UPSTREAM_STEP_UP_MIN * 60;
		} else if (strncmp(w, "step-up=", 8) == 0 && upstream_number(w + 8, 1, 1440, &v)) {
			u->policy = UPSTREAM_STEP_UP;
			u->step_up_s = (unsigned)v * 60;
		} else
			return upstream_refuse(
			    err, errlen,
			    "%s: %s is not a policy (public, authenticated, "
			    "role=member|admin|founder, step-up[=1..1440 minutes])",
			    u->prefix[0] != '\0' ? u->prefix : "/", w);
		return 0;
	}
	if (strcmp(w, "token") == 0)
		u->token = true;
	else if (strncmp(w, "timeout=", 8) == 0 && upstream_number(w + 8, 1, 3600, &v))
		u->timeout_s = (unsigned)v;
	else if (strncmp(w, "max-body=", 9) == 0 && upstream_number(w + 9, 0, 1ull << 40, &v))
		u->max_body = v;
	else
		return upstream_refuse(err, errlen,
		                       "%s: %s is not an option (token, timeout=1..3600, "
		                       "max-body=bytes)",
		                       u->prefix[0] != '\0' ? u->prefix : "/", w);
	return 0;
}

/* One entry, its tokens NUL-separated in place. */
static int upstream_entry(char *line, struct upstream *u, char *err, size_t errlen)
{
	char *save = NULL, *w;
	int i = 0, rv;

	memset(u, 0, sizeof(*u));
	u->timeout_s = UPSTREAM_TIMEOUT_S;
	u->max_body = UPSTREAM_MAX_BODY;
	for (w = strtok_r(line, " \t\r", &save); w != NULL;
	     w = strtok_r(NULL, " \t\r", &save), i++) {
		if (i == 0) {
			if (!upstream_prefix_ok(w))
				return upstream_refuse(
				    err, errlen,
				    "%s is not a prefix (/ then segments of "
				    "letters, digits, - . _ ~; no . or .. segment)",
				    w);
			u->prefix_len = strlen(w);
			while (u->prefix_len > 0 && w[u->prefix_len - 1] == '/')
				u->prefix_len--;
			memcpy(u->prefix, w, u->prefix_len);
			u->prefix[u->prefix_len] = '\0';
		} else if (i == 1) {
			if ((rv = upstream_address(u, w, err, errlen)) != 0)
				return rv;
		} else if ((rv = upstream_word(u, w, i == 2, err, errlen)) != 0)
			return rv;
	}
	if (i < 3)
		return upstream_refuse(err, errlen,
		                       "an entry is \"<prefix> <upstream> <policy> "
		                       "[option ...]\"");
	return 0;
}

static char *upstream_read_file(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	char *text;
	size_t n;

	if (f == NULL) {
		upstream_refuse(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if ((text = malloc(UPSTREAM_FILE_MAX + 1)) == NULL) {
		fclose(f);
		upstream_refuse(err, errlen, "out of memory");
		return NULL;
	}
	n = fread(text, 1, UPSTREAM_FILE_MAX + 1, f);
	fclose(f);
	if (n > UPSTREAM_FILE_MAX) {
		free(text);
		upstream_refuse(err, errlen, "%s is larger than %u bytes", path, UPSTREAM_FILE_MAX);
		return NULL;
	}
	text[n] = '\0';
	return text;
}

static int upstream_cmp(const void *a, const void *b)
{
	const struct upstream *x = a, *y = b;
	return x->prefix_len < y->prefix_len ? 1 : x->prefix_len > y->prefix_len ? -1 : 0;
}

int upstreams_parse(const char *value, struct upstream_set *out, char *err, size_t errlen)
{
	char *text, *save = NULL, *line;
	bool file = value[0] == '/' && value[strcspn(value, " \t\r\n;")] == '\0';
	int rv = 0;

	memset(out, 0, sizeof(*out));
	text = file ? upstream_read_file(value, err, errlen) : strdup(value);
	if (text == NULL)
		return file ? ERR_INVAL : ERR_NOMEM;
	if ((out->u = calloc(UPSTREAM_MAX, sizeof(*out->u))) == NULL) {
		free(text);
		return ERR_NOMEM;
	}
	for (line = strtok_r(text, file ? "\n" : "\n;", &save); line != NULL && rv == 0;
	     line = strtok_r(NULL, file ? "\n" : "\n;", &save)) {
		char *hash = strchr(line, '#');
		if (hash != NULL)
			*hash = '\0';
		if (line[strspn(line, " \t\r")] == '\0')
			continue;
		if (out->n == UPSTREAM_MAX)
			rv = upstream_refuse(err, errlen, "more than %d entries", UPSTREAM_MAX);
		else if ((rv = upstream_entry(line, &out->u[out->n], err, errlen)) == 0) {
			for (size_t i = 0; i < out->n && rv == 0; i++)
				if (strcasecmp(out->u[i].prefix, out->u[out->n].prefix) == 0)
					rv = upstream_refuse(
					    err, errlen, "%s is listed twice",
					    out->u[i].prefix[0] != '\0' ? out->u[i].prefix : "/");
			out->n++;
		}
	}
	free(text);
	if (rv == 0 && out->n == 0)
		rv = upstream_refuse(err, errlen, "set but names no route; unset it for none");
	if (rv != 0) {
		upstreams_free(out);
		return rv;
	}
	qsort(out->u, out->n, sizeof(*out->u), upstream_cmp);
	return 0;
}

void upstreams_free(struct upstream_set *set)
{
	free(set->u);
	set->u = NULL;
	set->n = 0;
}

const struct upstream *upstreams_match(const struct upstream_set *set, const char *path)
{
	for (size_t i = 0; set != NULL && i < set->n; i++) {
		const struct upstream *u = &set->u[i];
		/* Case-insensitively: an upstream that routes so (Express,
		 * ASP.NET) must not be reached at /app/ADMIN under /app's
		 * policy when /app/admin has a stricter one. */
		if (strncasecmp(path, u->prefix, u->prefix_len) == 0 &&
		    (path[u->prefix_len] == '\0' || path[u->prefix_len] == '/'))
			return u;
	}
	return NULL;
}

bool upstream_target_safe(const char *t, size_t len)
{
	size_t plen = 0;

	/* No raw byte a request line may not hold: a space (libmicrohttpd
	 * finds the version from the end, so "/a b" reaches us), a control
	 * byte or anything past ASCII, in the path or the query. */
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] >= 0x7f)
			return false;
	while (plen < len && t[plen] != '?')
		plen++;
	if (plen == 0 || t[0] != '/')
		return false;
	for (size_t i = 0; i < plen; i++) {
		if (t[i] == '\\' || t[i] == '#')
			return false;
		if (t[i] == '%') {
			/* Encoded '/', '\', '.', or a control byte: an upstream
			 * that decodes before it normalises or routes would see
			 * other segments ("/admin%0a" is "/admin" to a regex
			 * anchored with Python's '$'). */
			if (i + 2 >= plen)
				return false;
			char hi = t[i + 1], lo = (char)tolower((unsigned char)t[i + 2]);
			if ((hi == '2' && (lo == 'f' || lo == 'e')) || (hi == '5' && lo == 'c') ||
			    hi == '0' || hi == '1' || (hi == '7' && lo == 'f'))
				return false;
		}
	}
	/* Segments: none empty, none "." or ".." (with or without ";params",
	 * which Java servers cut off: "..;" is ".." to Tomcat). */
	for (size_t i = 0; i < plen; i++) {
		if (t[i] != '/')
			continue;
		size_t s = i + 1, n = 0;
		while (s + n < plen && t[s + n] != '/')
			n++;
		if (n == 0 && s < plen)
			return false; /* "//" */
		const char *seg = t + s;
		size_t dots = 0;
		while (dots < n && seg[dots] == '.')
			dots++;
		if ((dots == 1 || dots == 2) && (dots == n || seg[dots] == ';'))
			return false;
	}
	return true;
}

bool upstreams_ambiguous(const struct upstream_set *set, const char *path,
                         const struct upstream *matched)
{
	size_t len = strlen(path), o = 0;
	const struct upstream *other;
	char *norm = malloc(len + 1);

	if (norm == NULL)
		return true; /* refused rather than guessed */
	/* Each segment as a lenient upstream may route it: cut at ';' (Java
	 * path parameters) and at its first '.' past the start (Rails'
	 * "(.:format)", Spring's suffix match), then without trailing dots
	 * and white space (IIS). */
	for (size_t i = 0; i < len;) {
		size_t s = i + 1, n = 0, keep;
		norm[o++] = '/';
		while (s + n < len && path[s + n] != '/')
			n++;
		keep = n;
		for (size_t k = 0; k < keep; k++)
			if (path[s + k] == ';' || (k > 0 && path[s + k] == '.'))
				keep = k;
		while (keep > 0 &&
		       (path[s + keep - 1] == '.' || (unsigned char)path[s + keep - 1] <= 0x20))
			keep--;
		memcpy(norm + o, path + s, keep);
		o += keep;
		i = s + n;
	}
	norm[o] = '\0';
	other = upstreams_match(set, norm);
	free(norm);
	/* Only a more specific prefix than the one matched is a way around
	 * a policy: the path is refused rather than given either. */
	return other != NULL && other != matched &&
	       (matched == NULL || other->prefix_len > matched->prefix_len);
}

/* ---- the upstream's answer ------------------------------------------------------ */

bool upstream_field_is(const struct upstream_field *f, const char *name)
{
	size_t n = strlen(name);
	return f->name_len == n && strncasecmp(f->name, name, n) == 0;
}

static bool upstream_tchar(unsigned char c)
{
	return isalnum(c) || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* A line of buf from `at`, through its CRLF: its length without the CRLF,
 * or -2 when no line ends in what is here, -1 on a bare CR or LF. */
static long upstream_line(const char *buf, size_t len, size_t at)
{
	for (size_t i = at; i < len; i++) {
		if (buf[i] == '\n')
			return -1; /* bare LF */
		if (buf[i] == '\r') {
			if (i + 1 == len)
				return -2;
			return buf[i + 1] == '\n' ? (long)(i - at) : -1;
		}
	}
	return -2;
}

/* Content-Length's value: digits only, at most 18 of them. */
static bool upstream_length(const char *v, size_t n, uint64_t *out)
{
	uint64_t x = 0;
	if (n == 0 || n > 18)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return false;
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	*out = x;
	return true;
}

static long upstream_status_line(const char *buf, size_t n, struct upstream_head *h)
{
	/* "HTTP/1.x SSS" then nothing or " reason". */
	if (n < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || (buf[7] != '0' && buf[7] != '1') ||
	    buf[8] != ' ' || buf[9] < '1' || buf[9] > '5' || buf[10] < '0' || buf[10] > '9' ||
	    buf[11] < '0' || buf[11] > '9' || (n > 12 && buf[12] != ' '))
		return -1;
	for (size_t i = 12; i < n; i++)
		if ((unsigned char)buf[i] < 0x20 && buf[i] != '\t')
			return -1;
	h->status = (unsigned)((buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0'));
	return 0;
}

long upstream_head_parse(const char *buf, size_t len, bool head_request, struct upstream_head *h)
{
	size_t at = 0;
	long n;
	unsigned n_te = 0, n_cl = 0;
	const struct upstream_field *te = NULL;

	memset(h, 0, sizeof(*h));
	if (len > UPSTREAM_HEAD_MAX)
		len = UPSTREAM_HEAD_MAX;
	if ((n = upstream_line(buf, len, 0)) < 0)
		return n == -2 ? (len == UPSTREAM_HEAD_MAX ? -1 : 0) : -1;
	if (upstream_status_line(buf, (size_t)n, h) != 0)
		return -1;
	at = (size_t)n + 2;
	for (;;) {
		if ((n = upstream_line(buf, len, at)) < 0)
			return n == -2 ? (len == UPSTREAM_HEAD_MAX ? -1 : 0) : -1;
		if (n == 0) {
			at += 2;
			break;
		}
		const char *line = buf + at;
		size_t ln = (size_t)n, c = 0;
		while (c < ln && upstream_tchar((unsigned char)line[c]))
			c++;
		if (c == 0 || c == ln || line[c] != ':' || h->n == UPSTREAM_HEADERS_MAX)
			return -1; /* obs-fold, a space before ':', no name, too many */
		struct upstream_field *f = &h->h[h->n++];
		f->name = line;
		f->name_len = c;
		size_t v = c + 1, e = ln;
		while (v < e && (line[v] == ' ' || line[v] == '\t'))
			v++;
		while (e > v && (line[e - 1] == ' ' || line[e - 1] == '\t'))
			e--;
		for (size_t i = v; i < e; i++)
			if (((unsigned char)line[i] < 0x20 && line[i] != '\t') || line[i] == 0x7f)
				return -1;
		f->value = line + v;
		f->value_len = e - v;
		if (upstream_field_is(f, "Transfer-Encoding")) {
			n_te++;
			te = f;
		} else if (upstream_field_is(f, "Content-Length")) {
			uint64_t x;
			if (!upstream_length(f->value, f->value_len, &x) ||
			    (n_cl++ > 0 && x != h->length))
				return -1;
			h->length = x;
			h->has_length = true;
		}
		at += (size_t)n + 2;
	}
	/* One framing, exactly: a proxy that guessed between two would let
	 * the upstream choose where the next answer begins. */
	if (n_te > 1 || (n_te == 1 && n_cl > 0))
		return -1;
	if (n_te == 1 && !(te->value_len == 7 && strncasecmp(te->value, "chunked", 7) == 0))
		return -1;
	if (head_request || h->status < 200 || h->status == 204 || h->status == 304)
		h->body = UPSTREAM_BODY_NONE;
	else if (n_te == 1)
		h->body = UPSTREAM_BODY_CHUNKED;
	else if (n_cl > 0)
		h->body = UPSTREAM_BODY_LENGTH;
	else
		h->body = UPSTREAM_BODY_CLOSE;
	if ((h->status == 204 || h->status < 200) && (n_te > 0 || (n_cl > 0 && h->length > 0)))
		return -1; /* a body where none may be */
	return (long)at;
}

/* ---- chunked ----------------------------------------------------------------------- */

enum {
	CH_SIZE,     /* hex digits */
	CH_EXT,      /* ";ext" until CR */
	CH_SIZE_LF,  /* LF after the size line's CR */
	CH_DATA,     /* `left` bytes */
	CH_DATA_CR,  /* CR after the data */
	CH_DATA_LF,  /* LF after it */
	CH_TRAILER,  /* start of a trailer line, or the final CRLF */
	CH_TLINE,    /* inside a trailer line */
	CH_TLINE_LF, /* LF ending a trailer line */
	CH_END_LF,   /* LF of the final CRLF */
	CH_DONE,
};

#define CH_LINE_MAX 4096
#define CH_TRAILERS_MAX 16384

static int upstream_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int upstream_chunked_feed(struct upstream_chunked *c, const char *in, size_t len, size_t *used,
                          char *out, size_t cap, size_t *made)
{
	size_t i = 0, o = 0;

	while (i < len && c->state != CH_DONE) {
		char b = in[i];
		int d;
		switch (c->state) {
		case CH_SIZE:
			if ((d = upstream_hex(b)) >= 0) {
				if (++c->digits > 15)
					goto bad;
				c->left = c->left * 16 + (uint64_t)d;
			} else if (c->digits == 0) {
				goto bad;
			} else if (b == ';' || b == ' ' || b == '\t') {
				c->state = CH_EXT;
				c->line = 0;
			} else if (b == '\r') {
				c->state = CH_SIZE_LF;
			} else
				goto bad;
			i++;
			break;
		case CH_EXT:
			if (b == '\r')
				c->state = CH_SIZE_LF;
			else if (b == '\n' || (unsigned char)b < 0x09 || ++c->line > CH_LINE_MAX)
				goto bad;
			i++;
			break;
		case CH_SIZE_LF:
			if (b != '\n')
				goto bad;
			i++;
			c->digits = 0;
			c->state = c->left == 0 ? CH_TRAILER : CH_DATA;
			break;
		case CH_DATA: {
			size_t k = len - i;
			if (k > c->left)
				k = (size_t)c->left;
			if (k > cap - o)
				k = cap - o;
			if (k == 0)
				goto out; /* out is full */
			memcpy(out + o, in + i, k);
			o += k;
			i += k;
			c->left -= k;
			if (c->left == 0)
				c->state = CH_DATA_CR;
			break;
		}
		case CH_DATA_CR:
			if (b != '\r')
				goto bad;
			c->state = CH_DATA_LF;
			i++;
			break;
		case CH_DATA_LF:
			if (b != '\n')
				goto bad;
			c->state = CH_SIZE;
			i++;
			break;
		case CH_TRAILER:
			if (b == '\r')
				c->state = CH_END_LF;
			else if (b == '\n')
				goto bad;
			else {
				c->state = CH_TLINE;
				c->line = 0;
				continue; /* the byte belongs to the line */
			}
			i++;
			break;
		case CH_TLINE:
			if (b == '\r')
				c->state = CH_TLINE_LF;
			else if (b == '\n' || ++c->trailers > CH_TRAILERS_MAX)
				goto bad;
			i++;
			break;
		case CH_TLINE_LF:
		case CH_END_LF:
			if (b != '\n')
				goto bad;
			c->state = c->state == CH_END_LF ? CH_DONE : CH_TRAILER;
			i++;
			break;
		}
	}
out:
	*used = i;
	*made = o;
	return c->state == CH_DONE ? 1 : 0;
bad:
	*used = i;
	*made = o;
	return -1;
}
