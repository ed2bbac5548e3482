/*
 * http_request_fuzz.c — the gateway's whole request path on a raw HTTP
 * request: the real libmicrohttpd daemons that gateway/http.c starts
 * (http_start: the main listener and the metrics listener, their callbacks,
 * the header-deadline sweeper), fed through MHD_add_connection with one end
 * of a socketpair. The input is written as the client's bytes, the write
 * side is shut, and the answer is read until the daemon closes. So every
 * request runs http.c (limits, framing, client address, CORS, rate limits,
 * body collection, dispatch, suspend/resume), routes.c, body.c, authn.c
 * (Bearer tokens, fingerprint scoring), idem.c (Idempotency-Key, gateway.db
 * on a tmpfs), cors.c, respond.c and every route handler up to its RPC.
 *
 * Services: auth is an in-process stand-in on inproc:// that serves only
 * PublicKeys (one Ed25519 key of the harness) and RevokedPage (none), so authn.c
 * can verify tokens; every other auth method answers UNAVAILABLE, and the
 * audit, breach and terminal clients are absent (NULL): each RPC fails fast
 * and the route answers 503, as with no services running.
 *
 * Input: byte 0 picks the connection (bits 0-1: peer 127.0.0.1, 10.0.0.7 [a
 * trusted proxy], ::1 or 2001:db8::5 [trusted]; bit 2: the proxy header is
 * Forwarded instead of X-Forwarded-For; bit 3: the metrics listener instead
 * of the main one). The rest is the request stream, in which "$A", "$M" and
 * "$T" are replaced by valid access tokens (role admin; member; member with
 * the terminal grant), signed for this request alone (a fresh session id,
 * so a session one input gets ended stays ended for it only), whose
 * fingerprint matches a client at 127.0.0.1 that sends no User-Agent and no
 * fingerprint headers.
 *
 * The request is written and the write side shut; the answer is read until
 * the daemon closes, or until nothing has moved for 5 ms with no RPC out
 * (an incomplete request, or an end of stream MHD saw in the same epoll
 * edge as the data): then the client hangs up completely, and the daemons
 * must let the connection go.
 *
 * Invariants: the daemon answers or closes within 8 s and lets go of every
 * connection (no hung request), every answer starts with an HTTP status
 * line, and no request is answered 500 (a route handler that failed without
 * answering).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tests/fuzz/support.h"
#include "auth.pb-c.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/fingerprint.h"
#include "common/ids.h"
#include "common/jwt.h"
#include "services/auth/jwtsign.h"
#include "common/log.h"
#include "common/pool.h"
#include "gateway/gateway.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_AUTH_URL "inproc://fuzz-http-auth"
#define FZ_KID "fz1"
#define FZ_HANG_MS 8000
#define FZ_REPLY_MAX 65536
#define FZ_IDLE_MS 5

static struct gateway gw = {.limits = HTTP_LIMITS_DEFAULT};
static struct rpc_server *fake_auth;
static EVP_PKEY *signing_key;
static unsigned char fp_key[32];
static uint64_t token_serial;
static char data_root[256];
static FILE *report; /* the real stderr, kept before libFuzzer hides it */
static const char fz_openapi[] = "openapi: 3.0.3\ninfo:\n  title: Magnetar (fuzz)\n";

/* ---- the stand-in for magnetar-auth ----------------------------------------- */

static void fake_auth_handle(struct rpc_call *call, const ProtobufCMessage *input, void *arg)
{
	const char *m = rpc_call_method(call);
	(void)input;
	(void)arg;

	if (strcmp(m, "PublicKeys") == 0) {
		Magnetar__PublicKeysReply out = MAGNETAR__PUBLIC_KEYS_REPLY__INIT;
		Magnetar__PublicKey k = MAGNETAR__PUBLIC_KEY__INIT, *kp = &k;
		unsigned char raw[32];
		size_t len = sizeof(raw);
		EVP_PKEY_get_raw_public_key(signing_key, raw, &len);
		k.kid = FZ_KID;
		k.key.data = raw;
		k.key.len = len;
		out.n_keys = 1;
		out.keys = &kp;
		rpc_reply(call, &out.base);
	} else if (strcmp(m, "Revoked") == 0 || strcmp(m, "RevokedPage") == 0) {
		Magnetar__RevokedReply out = MAGNETAR__REVOKED_REPLY__INIT;
		rpc_reply(call, &out.base);
	} else {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_UNAVAILABLE, "service_unavailable",
		                "the service is not reachable");
	}
}

static void start_fake_auth(void)
{
	const ProtobufCServiceDescriptor *d = &magnetar__auth__descriptor;
	struct rpc_method *rows = calloc(d->n_methods, sizeof(*rows));
	struct rpc_server_opts opts = {.contexts = 8, .workers = 2};

	if (rows == NULL)
		abort();
	for (unsigned i = 0; i < d->n_methods; i++) {
		rows[i].name = d->methods[i].name;
		rows[i].handler = fake_auth_handle;
	}
	if (rpc_server_start(FZ_AUTH_URL, d, rows, d->n_methods, &opts, &fake_auth) != 0)
		abort();
	free(rows);
}

/* ---- tokens -------------------------------------------------------------------- */

/* A token of a session of its own: a request that gets its session ended
 * (a risk score of 90 or more) must not end it for the inputs after it. */
static char *make_token(char who)
{
	const char *role = who == 'A' ? "admin" : "member";
	int terminal = who == 'T';
	struct jwt_claims c;
	char *tok = NULL;
	int64_t now = (int64_t)time(NULL);

	memset(&c, 0, sizeof(c));
	snprintf(c.sub, sizeof(c.sub), "u%c%030d", who, 1);
	snprintf(c.sid, sizeof(c.sid), "%c%031llu", who, (unsigned long long)++token_serial);
	snprintf(c.role, sizeof(c.role), "%s", role);
	snprintf(c.jti, sizeof(c.jti), "j%031llu", (unsigned long long)token_serial);
	fingerprint_hash(fp_key, "ip", "127.0.0.1", c.fip);
	fingerprint_hash(fp_key, "ua", "", c.fua);
	fingerprint_hash(fp_key, "hd", "\n\n\n\n", c.fhd);
	c.iat = now - 10;
	c.exp = now + 7 * 86400; /* outlives any run */
	c.terminal = terminal;
	if (jwtsign_token(signing_key, FZ_KID, &c, &tok) != 0)
		abort();
	return tok;
}

/* ---- set-up ---------------------------------------------------------------------- */

static void fz_setenv(const char *name, const char *value)
{
	if (setenv(name, value, 1) != 0)
		abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char dir[300], err[256];
	unsigned char seed[32];

	/* libFuzzer keeps its own output and sanitizer reports on a duplicate
	 * of stderr; the gateway's access log goes to /dev/null. */
	report = fuzz_quiet(argc, argv, "-close_fd_mask=2");
	signal(SIGPIPE, SIG_IGN);
	log_init("gateway", LOG_TEXT, false);
	fuzz_scratch_dir("http", data_root, sizeof(data_root));
	snprintf(dir, sizeof(dir), "%s/run", data_root);
	mkdir(dir, 0700);

	fz_setenv("MAGNETAR_ENV", "development");
	fz_setenv("MAGNETAR_DATA_DIR", data_root);
	fz_setenv("MAGNETAR_RUN_DIR", dir);
	fz_setenv("MAGNETAR_HTTP_ADDR", "127.0.0.1:0");
	fz_setenv("MAGNETAR_METRICS_ADDR", "127.0.0.1:0");
	fz_setenv("MAGNETAR_AUTH_URL", FZ_AUTH_URL);
	fz_setenv("MAGNETAR_AUTH_EVENTS_URL", "inproc://fuzz-http-auth-events");
	fz_setenv("MAGNETAR_AUDIT_URL", "inproc://fuzz-http-audit");
	fz_setenv("MAGNETAR_BREACH_URL", "inproc://fuzz-http-breach");
	fz_setenv("MAGNETAR_TERMINAL_URL", "inproc://fuzz-http-terminal");
	fz_setenv("MAGNETAR_GATEWAY_URL", "inproc://fuzz-http-gateway");
	fz_setenv("MAGNETAR_CORS_ORIGINS", "https://app.example.com, http://localhost:3000");
	fz_setenv("MAGNETAR_TRUSTED_PROXIES", "10.0.0.0/8, 2001:db8::/32");
	fz_setenv("MAGNETAR_FINGERPRINT_KEY", "fuzz-fingerprint-key");
	/* Buckets are taken on every request; only registration runs out. */
	fz_setenv("MAGNETAR_RATE_GLOBAL", "1000000/1");
	fz_setenv("MAGNETAR_RATE_LOGIN", "1000000/1");
	fz_setenv("MAGNETAR_RATE_PASSWORD_CHECK", "1000000/1");
	fz_setenv("MAGNETAR_RATE_REGISTER", "20/1");
	fz_setenv("MAGNETAR_RATE_TERMINAL", "1000000/1");

	if (conf_load(&gw.svc.conf, SVC_GATEWAY, &gateway_conf_table, err, sizeof(err)) != 0) {
		fprintf(stderr, "http_request_fuzz: configuration refused: %s\n", err);
		abort();
	}
	gw.svc.id = SVC_GATEWAY;
	if (conf_service_dir(&gw.svc.conf, SVC_GATEWAY, gw.svc.data_dir, sizeof(gw.svc.data_dir)) !=
	        0 ||
	    mkdir(gw.svc.data_dir, 0700) != 0 || ids_random_hex(gw.svc.instance, 16) != 0 ||
	    ids_random_hex(gw.rid_prefix, 8) != 0)
		abort();
	gw.hsts = true;
	if (settings_load(&gw, err, sizeof(err)) != 0) {
		fprintf(stderr, "http_request_fuzz: settings refused: %s\n", err);
		abort();
	}
	if (metrics_new(&gw.metrics) != 0)
		abort();
	gw.openapi = (const unsigned char *)fz_openapi;
	gw.openapi_len = sizeof(fz_openapi) - 1;

	/* The key auth would publish, and tokens signed with it. */
	memset(seed, 0x5a, sizeof(seed));
	if ((signing_key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32)) == NULL)
		abort();
	start_fake_auth();
	if (rpc_client_open(FZ_AUTH_URL, 0, &gw.client[SVC_AUTH]) != 0)
		abort();
	for (int i = 0; i < 2000 && !rpc_client_connected(gw.client[SVC_AUTH]); i++)
		usleep(1000);

	snprintf(dir, sizeof(dir), "%s/gateway.db", gw.svc.data_dir);
	if (pool_open(dir, &store_schema, NULL, &gw.svc.pool) != 0 || idem_start(&gw) != 0 ||
	    authn_start(&gw) != 0 || http_start(&gw) != 0 || gw.mhd == NULL ||
	    gw.mhd_metrics == NULL)
		abort();
	if (fingerprint_key_load(&gw.svc.conf, fp_key) != 0)
		abort();
	return 0;
}

/* ---- one request ------------------------------------------------------------------- */

/* The input after byte 0 with "$A"/"$M"/"$T" replaced by tokens (one per
 * kind and request: the same session within a request). */
static char *expand(const uint8_t *in, size_t n, size_t *outlen)
{
	static const char kinds[] = "AMT";
	char *tokens[3] = {NULL, NULL, NULL};
	size_t cap = n + 1, len = 0;
	char *out = malloc(cap);

	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		const char *tok = NULL, *k;
		if (in[i] == '$' && i + 1 < n && in[i + 1] != '\0' &&
		    (k = strchr(kinds, in[i + 1])) != NULL) {
			if (tokens[k - kinds] == NULL)
				tokens[k - kinds] = make_token(*k);
			tok = tokens[k - kinds];
		}
		size_t add = tok != NULL ? strlen(tok) : 1;
		if (len + add + 1 > cap) {
			char *p;
			cap = (len + add + 1) * 2;
			if ((p = realloc(out, cap)) == NULL) {
				free(out);
				out = NULL;
				break;
			}
			out = p;
		}
		if (tok != NULL) {
			memcpy(out + len, tok, add);
			i++;
		} else {
			out[len] = (char)in[i];
		}
		len += add;
	}
	for (int k = 0; k < 3; k++)
		free(tokens[k]);
	if (out == NULL)
		return NULL;
	out[len] = '\0';
	*outlen = len;
	return out;
}

static void hang(const char *what, const char *req, size_t len)
{
	fprintf(report, "http_request_fuzz: %s; request (%zu bytes):\n%.*s\n", what, len,
	        (int)(len < 2048 ? len : 2048), req);
	fflush(report);
	abort();
}

/* Waits for the daemon to finish with the request (completion callback run,
 * no RPC callback pending) so requests do not overlap. */
static void settle(void)
{
	for (int i = 0; i < 2000; i++) {
		if (atomic_load(&gw.ctr.inflight) == 0 && atomic_load(&gw.rpc_pending) == 0 &&
		    atomic_load(&gw.suspended) == 0)
			return;
		usleep(1000);
	}
	fprintf(report, "http_request_fuzz: the daemon did not settle (inflight=%lld)\n",
	        (long long)atomic_load(&gw.ctr.inflight));
	fflush(report);
	abort();
}

static unsigned connections(struct MHD_Daemon *d)
{
	const union MHD_DaemonInfo *i = MHD_get_daemon_info(d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
	return i != NULL ? i->num_connections : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	char *req, *reply;
	size_t len, off = 0, got = 0;
	uint64_t until, last;
	int sv[2];
	bool eof = false;

	if (size < 1)
		return 0;
	memset(&ss, 0, sizeof(ss));
	switch (data[0] & 3) {
	case 0:
	case 1: {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_port = htons(40000);
		inet_pton(AF_INET, (data[0] & 3) == 0 ? "127.0.0.1" : "10.0.0.7", &a->sin_addr);
		sslen = sizeof(*a);
		break;
	}
	default: {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons(40000);
		inet_pton(AF_INET6, (data[0] & 3) == 2 ? "::1" : "2001:db8::5", &a->sin6_addr);
		sslen = sizeof(*a);
		break;
	}
	}
	gw.proxy_header = (data[0] & 4) ? NETADDR_FORWARDED : NETADDR_XFF;
	if ((req = expand(data + 1, size - 1, &len)) == NULL)
		return 0;
	if ((reply = malloc(FZ_REPLY_MAX)) == NULL) {
		free(req);
		return 0;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		abort();
	if (MHD_add_connection((data[0] & 8) ? gw.mhd_metrics : gw.mhd, sv[1],
	                       (const struct sockaddr *)&ss, sslen) != MHD_YES) {
		/* MHD closed sv[1]. */
		close(sv[0]);
		free(req);
		free(reply);
		return 0;
	}
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	if (len == 0)
		shutdown(sv[0], SHUT_WR);
	until = clock_mono_ms() + FZ_HANG_MS;
	last = clock_mono_ms();
	while (!eof) {
		struct pollfd p = {.fd = sv[0], .events = POLLIN | (off < len ? POLLOUT : 0)};
		uint64_t now = clock_mono_ms();
		ssize_t n;
		if (now >= until)
			hang("no answer and no close within 8 s", req, len);
		/* All sent, nothing read for a while and no RPC outstanding: the
		 * daemon waits for more bytes (an incomplete request, or a
		 * keep-alive whose end of stream came in one epoll edge with the
		 * data, which MHD does not look at again). Hang up completely;
		 * that is an edge it sees, and it still reads what was sent. */
		if (off == len && now - last >= FZ_IDLE_MS && atomic_load(&gw.suspended) == 0 &&
		    atomic_load(&gw.rpc_pending) == 0)
			break;
		if (poll(&p, 1, FZ_IDLE_MS) < 0 && errno != EINTR)
			abort();
		if ((p.revents & POLLOUT) && off < len) {
			n = send(sv[0], req + off, len - off, MSG_NOSIGNAL);
			if (n > 0 && (off += (size_t)n) == len)
				shutdown(sv[0], SHUT_WR);
			else if (n < 0 && errno != EAGAIN && errno != EINTR) {
				off = len; /* the daemon hung up before reading it all */
				shutdown(sv[0], SHUT_WR);
			}
			last = clock_mono_ms();
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			char sink[4096];
			char *dst = got < FZ_REPLY_MAX ? reply + got : sink;
			size_t room = got < FZ_REPLY_MAX ? FZ_REPLY_MAX - got : sizeof(sink);
			n = recv(sv[0], dst, room, 0);
			if (n > 0)
				got = got < FZ_REPLY_MAX ? got + (size_t)n : got;
			else if (n == 0 || (errno != EAGAIN && errno != EINTR))
				eof = true;
			last = clock_mono_ms();
		}
	}
	close(sv[0]);
	/* The daemons must let go of the connection, whatever it sent. */
	while (connections(gw.mhd) + connections(gw.mhd_metrics) > 0)
		if (clock_mono_ms() >= until)
			hang("the daemon kept the connection 8 s after the client left", req, len);
		else
			usleep(200);
	settle();
	if (got > 0) {
		if (got < 12 ||
		    (memcmp(reply, "HTTP/1.1 ", 9) != 0 && memcmp(reply, "HTTP/1.0 ", 9) != 0))
			hang("an answer without a status line", req, len);
		/* Every answer on the connection, pipelined ones too. */
		for (size_t i = 0; i + 12 <= got; i++)
			if (memcmp(reply + i, "HTTP/1.1 500", 12) == 0)
				hang("a 500 (a handler failed without answering)", req, len);
	}
	free(req);
	free(reply);
	return 0;
}
