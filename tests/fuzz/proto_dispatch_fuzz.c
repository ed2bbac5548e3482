/*
 * proto_dispatch_fuzz.c — what a service does with the bytes another process
 * sends its RPC socket, end to end: common/rpc_server.c's server (receive, envelope
 * decode, method look-up, payload unpack, caller check, deadline, dispatch to
 * a worker) and then the service's real handler, running on a real service
 * state with its database on a tmpfs. Built once per service (fuzz.mk):
 *
 *   proto_auth_fuzz      services/auth (SignUp, Login, sessions, TOTP, risk,
 *                        users, operator methods; argon2id at MAGNETAR_ENV=test
 *                        cost; breach answers UNAVAILABLE: fail-open)
 *   proto_audit_fuzz     services/audit (Append through the group-commit
 *                        pipeline, Query with its filters and cursor, Verify,
 *                        RotateKey), keyring from MAGNETAR_AUDIT_KEYS
 *   proto_breach_fuzz    services/breach in offline mode (Range over a small
 *                        store written at start, Reload)
 *   proto_terminal_fuzz  services/terminal's control methods (Open, List,
 *                        Close, Attach) with a policy under which no shell can
 *                        start: validation runs, nothing is ever spawned
 *
 * The handler table is the service's own: its main.c is included here with
 * main renamed, and the start-up its main() does is repeated below without
 * the parts that are no business of a test (privilege drop, Landlock,
 * seccomp, the outbox sender to audit).
 *
 * Input: byte 0 bit 0 clear: the rest is the raw request envelope (an
 * RpcRequest) as sent on the socket. Set: byte 1 picks the method, byte 2
 * the envelope's deadline (bits 0-1: none, in 10 s, past) and whether a
 * RequestContext is sent (bit 2), and the rest is the method's payload.
 * For auth, 32 'U's and 32 'S's in a payload become the user and session id
 * of a live session the harness keeps (logging in again when a fuzzed call
 * ended it), and 43 'R's its current refresh token, so the session methods
 * get past "no such session".
 *
 * Invariants: every request gets a reply within 8 s, the reply is a valid
 * RpcReply, an OK reply's payload unpacks as the method's output type, and no
 * reply is STATUS_INTERNAL.
 */
#include <errno.h>
#include <ftw.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/fuzz/support.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/pool.h"
#include "common/rpc.h"
#include "breach.pb-c.h"

#define main service_main /* the service's main.c: its method table, not its main */
#if defined(PROTO_SVC_AUTH)
#include "services/auth/main.c"
#define SVC SVC_AUTH
#define SVC_PROGRAM (&auth_program)
#define SVC_DESC (&magnetar__auth__descriptor)
#define SVC_METHODS auth_methods
static struct auth x;
#elif defined(PROTO_SVC_AUDIT)
#include "services/audit/main.c"
#define SVC SVC_AUDIT
#define SVC_PROGRAM (&audit_program)
#define SVC_DESC (service_descriptor())
#define SVC_METHODS audit_methods
static struct audit x;
#elif defined(PROTO_SVC_BREACH)
#include "services/breach/main.c"
#define SVC SVC_BREACH
#define SVC_PROGRAM (&breach_program)
#define SVC_DESC (&magnetar__breach__descriptor)
#define SVC_METHODS breach_methods
static struct breach x;
#elif defined(PROTO_SVC_TERMINAL)
#include "services/terminal/main.c"
#define SVC SVC_TERMINAL
#define SVC_PROGRAM (&terminal_program)
#define SVC_DESC (&magnetar__terminal__descriptor)
#define SVC_METHODS terminal_methods
static struct terminal x;
#else
#error "build with -DPROTO_SVC_AUTH, _AUDIT, _BREACH or _TERMINAL"
#endif
#undef main

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_URL "inproc://fuzz-proto-service"
#define FZ_REPLY_MS 8000
#define FZ_PASSWORD "fuzz founder password 1"

static char data_root[256];
static FILE *report;
static nng_socket cli;
static struct rpc_server *server;
static uint64_t serial;
static bool trace; /* MAGNETAR_FUZZ_TRACE: each call's outcome on stderr */

/* ---- plumbing ----------------------------------------------------------------- */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(report, "proto_dispatch_fuzz(%s): ", svc_name(SVC));
	vfprintf(report, fmt, ap);
	fprintf(report, "\n");
	fflush(report);
	va_end(ap);
	abort();
}

static void fz_setenv(const char *name, const char *value)
{
	if (setenv(name, value, 1) != 0)
		abort();
}

/* svc_init and svc_open_db without argv, privsep and Landlock. */
static void service_setup(struct svc *s, const char *db)
{
	char path[700], err[256];

	memset(s, 0, sizeof(*s));
	s->id = SVC;
	s->started_mono_ms = clock_mono_ms();
	if (conf_load(&s->conf, SVC, SVC_PROGRAM->vars, err, sizeof(err)) != 0)
		die("configuration refused: %s", err);
	if (conf_service_dir(&s->conf, SVC, s->data_dir, sizeof(s->data_dir)) != 0 ||
	    mkdir(s->data_dir, 0700) != 0 || ids_random_hex(s->instance, 16) != 0)
		die("cannot make %s", s->data_dir);
	snprintf(path, sizeof(path), "%s/%s", s->data_dir, db);
	if (pool_open(path, &store_schema, NULL, &s->pool) != 0)
		die("cannot open %s", path);
}

/* A server answering every method of `desc` with UNAVAILABLE: a service of
 * ours that is down (for auth: breach). */
static void unavailable_handle(struct rpc_call *call, const ProtobufCMessage *input, void *arg)
{
	(void)input;
	(void)arg;
	rpc_reply_error(call, MAGNETAR__STATUS__STATUS_UNAVAILABLE, "service_unavailable",
	                "the service is not reachable");
}

static void __attribute__((unused))
start_unavailable(const char *url, const ProtobufCServiceDescriptor *desc)
{
	struct rpc_method *rows = calloc(desc->n_methods, sizeof(*rows));
	struct rpc_server_opts opts = {.contexts = 4, .workers = 1};
	struct rpc_server *s;

	if (rows == NULL)
		abort();
	for (unsigned i = 0; i < desc->n_methods; i++) {
		rows[i].name = desc->methods[i].name;
		rows[i].handler = unavailable_handle;
	}
	if (rpc_server_start(url, desc, rows, desc->n_methods, &opts, &s) != 0)
		die("cannot start the stand-in on %s", url);
	free(rows);
}

/* ---- per-service start-up (each main.c's, less the lock-down) ----------------- */

#if defined(PROTO_SVC_AUTH)
static struct rpc_client *own; /* the harness's calls: logins */
static struct {
	bool known;
	char uid[AUTH_ID_LEN], sid[AUTH_ID_LEN], refresh[64];
	char username[AUTH_USERNAME_MAX + 1];
} live;

static void service_env(void)
{
	fz_setenv("MAGNETAR_FOUNDER_USERNAME", "founder");
	fz_setenv("MAGNETAR_FOUNDER_PASSWORD", FZ_PASSWORD);
	fz_setenv("MAGNETAR_TOTP_KEY", "fuzz-totp-key");
	fz_setenv("MAGNETAR_MAX_SESSIONS", "1000");
}

static void service_start(void)
{
	service_setup(&x.svc, "auth.db");
	start_unavailable(x.svc.conf.url[SVC_BREACH], &magnetar__breach__descriptor);
	if (fingerprint_key_load(&x.svc.conf, x.fp_key) != 0 || keys_load(&x) != 0 ||
	    totp_init(&x) != 0 || password_init(&x) != 0 || workq_new(2, &x.hashing) != 0 ||
	    rpc_client_open(x.svc.conf.url[SVC_BREACH], 0, &x.breach) != 0)
		die("cannot start auth");
	for (int i = 0; i < 2000 && !rpc_client_connected(x.breach); i++)
		usleep(1000);
	if (account_bootstrap_founder(&x) != 0 ||
	    events_pub_open(x.svc.conf.events_url[SVC_AUTH], x.svc.instance, 1000, &x.events) != 0)
		die("cannot start auth");
	strcpy(live.username, "founder");
}

/* The harness's own context: its logins are throttled apart from the
 * fuzzed ones. */
static const Magnetar__RequestContext *own_ctx(void)
{
	static Magnetar__RequestContext c = MAGNETAR__REQUEST_CONTEXT__INIT;
	c.request_id = "fuzz-harness";
	c.client_ip = "192.0.2.250";
	c.user_agent = "fuzz-harness";
	c.actor = "";
	return &c;
}

static void keep_tokens(const Magnetar__TokenReply *t)
{
	if (t == NULL || t->user == NULL || strlen(t->user->id) >= sizeof(live.uid) ||
	    strlen(t->session_id) >= sizeof(live.sid) || strlen(t->refresh_token) != 43)
		return;
	strcpy(live.uid, t->user->id);
	strcpy(live.sid, t->session_id);
	strcpy(live.refresh, t->refresh_token);
	live.known = true;
}

static bool own_login(const char *username)
{
	Magnetar__LoginRequest in = MAGNETAR__LOGIN_REQUEST__INIT;
	struct rpc_result r;
	bool ok;

	in.username = (char *)username;
	in.password = FZ_PASSWORD;
	in.totp = "";
	in.fingerprint = "";
	if (rpc_call_sync(own, &magnetar__auth__descriptor, "Login", &in.base, own_ctx(), 20000,
	                  &r) != 0)
		return false;
	ok = r.status == MAGNETAR__STATUS__STATUS_OK;
	if (ok)
		keep_tokens((const Magnetar__TokenReply *)r.output);
	rpc_result_fini(&r);
	return ok && live.known;
}

/* A live session for the markers: the last one if auth still knows it, else
 * a new login, else (the fuzzer changed the password, deleted the user or
 * enabled TOTP) a new founder-made user. */
static void ensure_session(void)
{
	Magnetar__SessionRef ref = MAGNETAR__SESSION_REF__INIT;
	Magnetar__OperatorRequest op = MAGNETAR__OPERATOR_REQUEST__INIT;
	struct rpc_result r;

	if (own == NULL && rpc_client_open(FZ_URL, 0, &own) != 0)
		die("cannot open a client");
	if (live.known) {
		ref.user_id = live.uid;
		ref.session_id = live.sid;
		if (rpc_call_sync(own, &magnetar__auth__descriptor, "Me", &ref.base, own_ctx(),
		                  5000, &r) == 0 &&
		    r.status == MAGNETAR__STATUS__STATUS_OK) {
			rpc_result_fini(&r);
			return;
		}
		rpc_result_fini(&r);
		live.known = false;
	}
	if (own_login(live.username))
		return;
	snprintf(live.username, sizeof(live.username), "fz%llu", (unsigned long long)++serial);
	op.username = live.username;
	op.role = "admin";
	op.password = FZ_PASSWORD;
	if (rpc_call_sync(own, &magnetar__auth__descriptor, "OpCreateUser", &op.base, own_ctx(),
	                  20000, &r) != 0 ||
	    r.status != MAGNETAR__STATUS__STATUS_OK) {
		rpc_result_fini(&r);
		return; /* the markers stay as they are */
	}
	rpc_result_fini(&r);
	own_login(live.username);
}

static void replace_run(uint8_t *p, size_t n, char c, size_t run, const char *with)
{
	if (strlen(with) != run)
		return;
	for (size_t i = 0; i + run <= n; i++) {
		size_t k = 0;
		while (k < run && p[i + k] == (uint8_t)c)
			k++;
		if (k == run) {
			memcpy(p + i, with, run);
			i += run - 1;
		}
	}
}

static bool has_run(const uint8_t *p, size_t n, char c, size_t run)
{
	for (size_t i = 0, k = 0; i < n; i++) {
		k = p[i] == (uint8_t)c ? k + 1 : 0;
		if (k == run)
			return true;
	}
	return false;
}

static void substitute(uint8_t *p, size_t n)
{
	if (!has_run(p, n, 'U', 32) && !has_run(p, n, 'S', 32) && !has_run(p, n, 'R', 43))
		return;
	ensure_session();
	if (!live.known)
		return;
	replace_run(p, n, 'U', 32, live.uid);
	replace_run(p, n, 'S', 32, live.sid);
	replace_run(p, n, 'R', 43, live.refresh);
}

/* A reply that moved the session on (Refresh, ChangePassword) carries the
 * next tokens. */
static void observe(const char *method, const ProtobufCMessage *out)
{
	if (strcmp(method, "Refresh") == 0 || strcmp(method, "ChangePassword") == 0 ||
	    strcmp(method, "Login") == 0)
		if (((const Magnetar__TokenReply *)out)->user != NULL &&
		    strcmp(((const Magnetar__TokenReply *)out)->user->username, live.username) == 0)
			keep_tokens((const Magnetar__TokenReply *)out);
}

#elif defined(PROTO_SVC_AUDIT)
static void service_env(void)
{
	/* Two keys: "k1" (older) and "k2" (current), 32 bytes each. */
	fz_setenv("MAGNETAR_AUDIT_KEYS", "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=,"
	                                 "k2:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=");
}

static void service_start(void)
{
	static struct audit_keyring keys;
	static char chain[700], anchor[700];
	struct audit_opts opts = {.pipeline = true};
	char err[512];

	service_setup(&x.svc, "audit.db");
	if (keyring_parse(((const struct audit_vars *)x.svc.conf.own)->keys, &keys, err,
	                  sizeof(err)) != 0)
		die("keyring refused: %s", err);
	snprintf(chain, sizeof(chain), "%s/audit.chain", x.svc.data_dir);
	snprintf(anchor, sizeof(anchor), "%s/audit.anchor", x.svc.data_dir);
	opts.chain_path = chain;
	opts.anchor_path = anchor;
	opts.events_url = x.svc.conf.events_url[SVC_AUDIT];
	if (audit_open(&x, &keys, &opts, err, sizeof(err)) != 0)
		die("cannot open the audit log: %s", err);
	keyring_wipe(&keys);
}

static void substitute(uint8_t *p, size_t n)
{
	(void)p;
	(void)n;
}

static void observe(const char *method, const ProtobufCMessage *out)
{
	(void)method;
	(void)out;
}

#elif defined(PROTO_SVC_BREACH)
static void service_env(void)
{
	fz_setenv("MAGNETAR_HIBP_MODE", "offline");
}

/* The offline store `magctl breach import` would write: a few hashes in
 * prefixes 5BAA6 (SHA-1 of "password") and 00000, with the real writer. */
static void write_store(void)
{
	static const char *const lines[] = {
	    "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8:10434004",
	    "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD9:1",
	    "5BAA6FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF:2",
	    "0000000A1D4B746FAA3FD526FF6D5BC8052FDB38:16",
	    "FFFFF0000000000000000000000000000000000F:3",
	};
	uint64_t *counts = calloc(PWSTORE_BUCKETS, sizeof(*counts));
	struct pwstore_writer *w;
	uint8_t hash[20];
	uint32_t count;

	if (counts == NULL)
		abort();
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		if (hibp_import_line(lines[i], strlen(lines[i]), -1, hash, &count) != 0)
			die("bad seed line %s", lines[i]);
		counts[hash[0] << 12 | hash[1] << 4 | hash[2] >> 4]++;
	}
	if (pwstore_writer_open(x.pw_path, counts, &w) != 0)
		die("cannot write %s", x.pw_path);
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		hibp_import_line(lines[i], strlen(lines[i]), -1, hash, &count);
		if (pwstore_writer_add(w, hash, count) != 0)
			die("cannot add to %s", x.pw_path);
	}
	if (pwstore_writer_commit(w) != 0)
		die("cannot commit %s", x.pw_path);
	free(counts);
}

static void service_start(void)
{
	x.alarm_interval_ms = 60 * 1000;
	pthread_mutex_init(&x.store_mu, NULL);
	service_setup(&x.svc, "breach.db");
	if (svc_path(&x.svc, PWSTORE_FILE, x.pw_path, sizeof(x.pw_path)) != 0 ||
	    cache_new(BREACH_CACHE_RANGES, BREACH_CACHE_TTL_MS, &x.cache) != 0)
		die("cannot start breach");
	write_store();
	if (range_reload(&x) != 0)
		die("cannot load the offline store");
}

static void substitute(uint8_t *p, size_t n)
{
	(void)p;
	(void)n;
}

static void observe(const char *method, const ProtobufCMessage *out)
{
	(void)method;
	(void)out;
}

#elif defined(PROTO_SVC_TERMINAL)
static void service_env(void)
{
	fz_setenv("MAGNETAR_TERMINAL_SHELLS", "/bin/sh,/bin/bash");
}

static void service_start(void)
{
	char roots[300];

	service_setup(&x.svc, "terminal.db");
	/* Shells are allowed (validate_shell accepts them) but no root exists,
	 * so validate_cwd refuses every directory: Open never reaches the
	 * spawner, which is not started. */
	snprintf(roots, sizeof(roots), "%s/no-such-root", data_root);
	x.uid_first = x.uid_last = getuid();
	if (validate_policy_init(&x.policy, terminal_vars(&x)->shells, roots, "/etc/shells",
	                         roots) != 0 ||
	    x.policy.nroots != 0)
		die("the policy must have no usable root");
	if (session_start(&x) != 0)
		die("cannot start the reaper");
}

static void substitute(uint8_t *p, size_t n)
{
	(void)p;
	(void)n;
}

static void observe(const char *method, const ProtobufCMessage *out)
{
	if (strcmp(method, "Open") == 0)
		die("a terminal was opened (the policy should refuse all): %p", (const void *)out);
}
#endif

/* ---- set-up ------------------------------------------------------------------------ */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct rpc_server_opts opts = {.contexts = 16, .workers = 4, .arg = &x};
	char run[300];

	/* libFuzzer keeps its output and sanitizer reports on a duplicate of
	 * stderr (-close_fd_mask=2); the service's log lines go to /dev/null. */
	report = fuzz_quiet(argc, argv, "-close_fd_mask=2");
	trace = getenv("MAGNETAR_FUZZ_TRACE") != NULL;
	signal(SIGPIPE, SIG_IGN);
	log_init(svc_name(SVC), LOG_TEXT, false);
	fuzz_scratch_dir(svc_name(SVC), data_root, sizeof(data_root));
	snprintf(run, sizeof(run), "%s/run", data_root);
	mkdir(run, 0700);
	fz_setenv("MAGNETAR_ENV", "test");
	fz_setenv("MAGNETAR_DATA_DIR", data_root);
	fz_setenv("MAGNETAR_RUN_DIR", run);
	fz_setenv("MAGNETAR_FINGERPRINT_KEY", "fuzz-fingerprint-key");
	for (int i = 0; i < SVC_SERVICES; i++) {
		char name[64], url[128];
		snprintf(name, sizeof(name), "MAGNETAR_%s_URL", svc_name((enum svc_id)i));
		for (char *c = name; *c != '\0'; c++)
			*c = (char)(*c >= 'a' && *c <= 'z' ? *c - 'a' + 'A' : *c);
		snprintf(url, sizeof(url), "inproc://fuzz-proto-%s", svc_name((enum svc_id)i));
		fz_setenv(name, i == SVC ? FZ_URL : url);
	}
	fz_setenv("MAGNETAR_AUTH_EVENTS_URL", "inproc://fuzz-proto-auth-events");
	fz_setenv("MAGNETAR_AUDIT_EVENTS_URL", "inproc://fuzz-proto-audit-events");
	service_env();
	service_start();

	if (rpc_server_start(FZ_URL, SVC_DESC, SVC_METHODS,
	                     sizeof(SVC_METHODS) / sizeof(SVC_METHODS[0]), &opts, &server) != 0)
		die("cannot serve on %s", FZ_URL);
	if (nng_req0_open(&cli) != 0 ||
	    nng_socket_set_ms(cli, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE) != 0 ||
	    nng_socket_set_ms(cli, NNG_OPT_RECVTIMEO, FZ_REPLY_MS) != 0 ||
	    nng_socket_set_ms(cli, NNG_OPT_SENDTIMEO, FZ_REPLY_MS) != 0 ||
	    nng_dial(cli, FZ_URL, NULL, 0) != 0)
		die("cannot dial %s", FZ_URL);
	return 0;
}

/* ---- one request ------------------------------------------------------------------- */

/* The structured form: an envelope around the payload. */
static uint8_t *envelope(const uint8_t *data, size_t size, size_t *len, int *method)
{
	const ProtobufCServiceDescriptor *d = SVC_DESC;
	Magnetar__RpcRequest env = MAGNETAR__RPC_REQUEST__INIT;
	Magnetar__RequestContext ctx = MAGNETAR__REQUEST_CONTEXT__INIT;
	char rid[40];
	uint8_t *payload, *out;

	*method = data[1] % d->n_methods;
	if ((payload = malloc(size - 3 + 1)) == NULL)
		return NULL;
	memcpy(payload, data + 3, size - 3);
	substitute(payload, size - 3);
	snprintf(rid, sizeof(rid), "fz-%llu", (unsigned long long)++serial);
	env.method = (char *)d->methods[*method].name;
	env.request_id = rid;
	switch (data[2] & 3) {
	case 1:
		env.deadline_unix_ms = clock_unix_ms() + 10000;
		break;
	case 2:
		env.deadline_unix_ms = clock_unix_ms() - 1000;
		break;
	default:
		break;
	}
	if (data[2] & 4) {
		ctx.request_id = rid;
		ctx.client_ip = (data[2] & 8) ? "2001:db8::7" : "198.51.100.7";
		ctx.user_agent = "fuzz";
		ctx.actor = (data[2] & 16) ? "u-fuzz" : "";
		env.context = &ctx;
	}
	env.payload.data = payload;
	env.payload.len = size - 3;
	*len = magnetar__rpc_request__get_packed_size(&env);
	if ((out = malloc(*len + 1)) != NULL)
		magnetar__rpc_request__pack(&env, out);
	free(payload);
	return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const ProtobufCServiceDescriptor *d = SVC_DESC;
	Magnetar__RpcReply *reply;
	Magnetar__RpcRequest *env;
	uint8_t *msg, *buf = NULL;
	size_t len, got = 0;
	int method = -1, nv;

	if (size < 1)
		return 0;
	if ((data[0] & 1) && size >= 3) {
		if ((msg = envelope(data, size, &len, &method)) == NULL)
			return 0;
	} else {
		len = size - 1;
		if ((msg = malloc(len + 1)) == NULL)
			return 0;
		memcpy(msg, data + 1, len);
		/* The method the server will find, to check an OK reply's type. */
		if ((env = magnetar__rpc_request__unpack(NULL, len, msg)) != NULL) {
			const ProtobufCMethodDescriptor *md =
			    env->method != NULL
			        ? protobuf_c_service_descriptor_get_method_by_name(d, env->method)
			        : NULL;
			method = md != NULL ? (int)(md - d->methods) : -1;
			magnetar__rpc_request__free_unpacked(env, NULL);
		}
	}
	if ((nv = nng_send(cli, msg, len, 0)) != 0)
		die("send: %s", nng_strerror(nv));
	free(msg);
	if ((nv = nng_recv(cli, &buf, &got, NNG_FLAG_ALLOC)) != 0)
		die("no reply within %d ms (%s) to a %s call", FZ_REPLY_MS, nng_strerror(nv),
		    method >= 0 ? d->methods[method].name : "malformed");
	if ((reply = magnetar__rpc_reply__unpack(NULL, got, buf)) == NULL)
		die("an undecodable reply (%zu bytes)", got);
	if (trace) {
		fprintf(report, "%s -> %s %s\n", method >= 0 ? d->methods[method].name : "-",
		        rpc_status_name(reply->status),
		        reply->error != NULL ? reply->error->code : "");
		fflush(report);
	}
	if (reply->status == MAGNETAR__STATUS__STATUS_INTERNAL)
		die("STATUS_INTERNAL from %s: %s: %s",
		    method >= 0 ? d->methods[method].name : "(no method)",
		    reply->error != NULL ? reply->error->code : "",
		    reply->error != NULL ? reply->error->message : "");
	if (reply->status == MAGNETAR__STATUS__STATUS_OK) {
		ProtobufCMessage *out;
		if (method < 0)
			die("an OK reply to a request without a method");
		out = protobuf_c_message_unpack(d->methods[method].output, NULL, reply->payload.len,
		                                reply->payload.data);
		if (out == NULL)
			die("an OK reply to %s whose payload is not a %s", d->methods[method].name,
			    d->methods[method].output->name);
		observe(d->methods[method].name, out);
		protobuf_c_message_free_unpacked(out, NULL);
	}
	magnetar__rpc_reply__free_unpacked(reply, NULL);
	nng_free(buf, got);
	return 0;
}
