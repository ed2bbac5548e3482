/*
 * main.c — magnetar-gateway: configuration, one RPC client per service
 * (dialling in the background, so the gateway starts while services are
 * down), its own operator RPC socket (Ping, Stats), the HTTP daemon, and a
 * clean stop on SIGTERM/SIGINT.
 */
#include <stdio.h>
#include <stdlib.h>

#include "gateway.pb-c.h"

#include "common/err.h"
#include "common/events.h"
#include "common/fingerprint.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/logbuf.h"
#include "common/sandbox.h"
#include "gateway/gateway.h"

/* How long an access log line may wait in its thread's buffer (100 ms:
 * well under what a person tailing the log notices). */
#define GATEWAY_ACCESS_LOG_FLUSH_MS 100

/* docs/openapi.yaml, generated into build/gen/openapi_yaml.c by `xxd -i`. */
extern unsigned char docs_openapi_yaml[];
extern unsigned int docs_openapi_yaml_len;

/* svc.h counters callback: what Stats reports beyond the RPC server's own. */
static void gateway_counters(struct svc *s, svc_counter_fn emit, void *arg)
{
	struct gateway *gw = (struct gateway *)s; /* svc is the first member */
	static const char *const klass[6] = {
	    "http.responses_none", NULL,
	    "http.responses_2xx",  "http.responses_3xx",
	    "http.responses_4xx",  "http.responses_5xx",
	};
	int64_t inflight = atomic_load(&gw->ctr.inflight);

	emit("http.requests", atomic_load(&gw->ctr.requests), arg);
	for (int i = 0; i < 6; i++)
		if (klass[i] != NULL)
			emit(klass[i], atomic_load(&gw->ctr.responses[i]), arg);
	emit("http.inflight", inflight > 0 ? (uint64_t)inflight : 0, arg);
	emit("http.suspended", (uint64_t)atomic_load(&gw->suspended), arg);
	emit("http.rejected_limits", atomic_load(&gw->ctr.rejected), arg);
	emit("http.header_deadline_closed", http_header_deadline_cuts(gw), arg);
	emit("http.body_deadline_closed", http_body_deadline_cuts(gw), arg);
	emit("http.rpc_calls", atomic_load(&gw->ctr.rpc_calls), arg);
	emit("http.rpc_failures", atomic_load(&gw->ctr.rpc_failures), arg);
	struct authn_stats au = {0};
	authn_get_stats(gw, &au);
	emit("auth_events.events", au.events.events, arg);
	emit("auth_events.heartbeats", au.events.heartbeats, arg);
	emit("auth_events.gaps", au.events.gaps, arg);
	emit("auth_events.silences", au.events.silences, arg);
	emit("auth_events.refused", au.events.refused, arg);
	emit("auth_events.malformed", au.events.malformed, arg);
	emit("revoked.current", au.current, arg);
	emit("revoked.sessions", au.sessions, arg);
	emit("revoked.confirms", au.confirms, arg);
	uint64_t exchanges, threads;
	proxy_counts(&exchanges, &threads);
	emit("proxy.exchanges", exchanges, arg);
	emit("proxy.threads", threads, arg);
	for (int i = SVC_GATEWAY + 1; i < SVC_SERVICES; i++) {
		char name[64];
		snprintf(name, sizeof(name), "rpc_client.%s.connected", svc_name((enum svc_id)i));
		emit(name, gw->client[i] != NULL && rpc_client_connected(gw->client[i]), arg);
		snprintf(name, sizeof(name), "rpc_client.%s.resent", svc_name((enum svc_id)i));
		emit(name, gw->client[i] != NULL ? rpc_client_resent(gw->client[i]) : 0, arg);
	}
}

/* What may run twice when a replica dies under a call (rpc.h,
 * rpc_client_resend_on_reset): reads, and Login, whose second run only
 * makes the session the client gets (the first, if it ran, is never handed
 * out and ages out like any other; a TOTP code it spent is refused the
 * second time, and the client asks for the next). Never Refresh (a second
 * run is a reuse that revokes the session), registration or any other
 * write: those answer 503 and the client decides. */
static const char *const gateway_resend_auth[] = {
    "Ping",    "Stats",       "Login",         "Me",        "ListSessions", "PublicKeys",
    "Revoked", "RevokedPage", "PasswordCheck", "ListUsers", "OpListUsers",  "OpListSessions",
    NULL};
static const char *const gateway_resend_audit[] = {"Ping", "Stats", "Query", "Verify", NULL};
static const char *const gateway_resend_breach[] = {"Ping", "Stats", "Range", NULL};
static const char *const gateway_resend_terminal[] = {"Ping", "Stats", "List", NULL};

static const struct rpc_method gateway_methods[] = {
    {.name = "Ping", .handler = svc_handle_ping},
    {.name = "Stats", .handler = svc_handle_stats},
};

/* The development fingerprint key (shared with auth); the files and ports
 * the gateway's own variables name: the TLS pair, the public, metrics and
 * redirect listeners; and IP sockets (it serves HTTP). */
static int gateway_sandbox(struct sandbox_rules *r, const struct conf *c)
{
	const struct gateway_vars *v = c->own;
	int rv = fingerprint_prepare(c, r);

	rv |= sandbox_allow_read(r, v->tls_cert);
	rv |= sandbox_allow_read(r, v->tls_key);
	rv |= sandbox_allow_bind(r, v->http.port);
	if (v->metrics.text != NULL)
		rv |= sandbox_allow_bind(r, v->metrics.port);
	if (v->redirect.text != NULL)
		rv |= sandbox_allow_bind(r, v->redirect.port);
	rv |= sandbox_allow_syscall(r, "sendfile");           /* libmicrohttpd's file answers */
	rv |= proxy_prepare(getenv("MAGNETAR_UPSTREAMS"), r); /* the upstreams' ports */
	r->inet = true;
	return rv != 0 ? ERR_INVAL : 0;
}

/* Its RPC socket serves the operator (magctl) alone. */
static const struct svc_program gateway_program = {.id = SVC_GATEWAY,
                                                   .vars = &gateway_conf_table,
                                                   .admit = SVC_BY_OPERATOR,
                                                   .sandbox = gateway_sandbox};

int main(int argc, char **argv)
{
	/* Static: large, lives as long as the process, and zeroed. */
	static struct gateway gw = {.limits = HTTP_LIMITS_DEFAULT};
	struct rpc_server_opts opts = {.arg = &gw};
	/* Before svc_init's Landlock: it reads the cgroup's CPU quota. */
	unsigned threads = http_threads_for_cores();
	char err[256];
	int rv, sig;

	svc_init(&gw.svc, &gateway_program, argc, argv);
	gw.svc.counters = gateway_counters;
	gw.hsts = gw.svc.conf.env == CONF_ENV_PRODUCTION || gw_vars(&gw)->tls_cert != NULL;
	if (ids_random_hex(gw.rid_prefix, 8) != 0)
		fatalx("cannot read random bytes");
	/* Issue 6: proxies, CORS, rate limits, header deadline, header policies. */
	if ((rv = settings_load(&gw, err, sizeof(err))) != 0)
		fatalx("%s", rv == ERR_CONFIG ? err : err_str(rv));
	/* MAGNETAR_UPSTREAMS, read before the sandbox closed (proxy.c). */
	if ((rv = proxy_routes_init(&gw, err, sizeof(err))) != 0)
		fatalx("%s", rv == ERR_INVAL ? err : err_str(rv));
	/* One MHD thread per core the gateway may run on (issue 20): each
	 * owns its connections and epoll set, so more would only contend. */
	gw.limits.threads = threads;
	if ((rv = metrics_new(&gw.metrics)) != 0)
		fatalx("cannot set up metrics: %s", err_str(rv));
	gw.openapi = docs_openapi_yaml;
	gw.openapi_len = docs_openapi_yaml_len;

	for (int i = SVC_GATEWAY + 1; i < SVC_SERVICES; i++)
		if ((rv = rpc_client_open_for(gw.svc.conf.url[i], 0, SVC_SERVER_ROLES(i),
		                              &gw.client[i])) != 0)
			fatalx("cannot open a client of magnetar-%s at %s: %s",
			       svc_name((enum svc_id)i), gw.svc.conf.url[i], err_str(rv));
	rpc_client_resend_on_reset(gw.client[SVC_AUTH], gateway_resend_auth);
	rpc_client_resend_on_reset(gw.client[SVC_AUDIT], gateway_resend_audit);
	rpc_client_resend_on_reset(gw.client[SVC_BREACH], gateway_resend_breach);
	rpc_client_resend_on_reset(gw.client[SVC_TERMINAL], gateway_resend_terminal);
	if ((rv = rpc_server_start(
	         gw.svc.conf.url[SVC_GATEWAY], &magnetar__gateway__descriptor, gateway_methods,
	         sizeof(gateway_methods) / sizeof(gateway_methods[0]), &opts, &gw.svc.rpc)) != 0)
		fatalx("cannot serve magnetar.Gateway on %s: %s", gw.svc.conf.url[SVC_GATEWAY],
		       err_str(rv));
	log_info("serving magnetar.Gateway on %s instance=%s", gw.svc.conf.url[SVC_GATEWAY],
	         gw.svc.instance);
	svc_open_db(&gw.svc, "gateway.db", &store_schema);
	svc_start_outbox(&gw.svc);
	if ((rv = idem_start(&gw)) != 0)
		fatalx("cannot load or create the idempotency key in %s: %s", gw.svc.data_dir,
		       err_str(rv));
	/* Keys and revocations before the first request (authn.c). */
	if ((rv = authn_start(&gw)) != 0)
		fatalx("cannot start authentication: %s", err_str(rv));
	if ((rv = health_start(&gw)) != 0)
		fatalx("cannot start the readiness probe: %s", err_str(rv));
	/* The access log's buffers: a line reaches stderr within about
	 * GATEWAY_ACCESS_LOG_FLUSH_MS, and all of them before we exit. */
	if ((rv = logbuf_start(GATEWAY_ACCESS_LOG_FLUSH_MS)) != 0)
		fatalx("cannot start the access log's flusher: %s", err_str(rv));
	if ((rv = http_start(&gw)) != 0)
		fatalx("cannot start HTTP on %s: %s", gw_vars(&gw)->http.text, err_str(rv));
	if ((rv = redirect_start(&gw)) != 0)
		fatalx("cannot start the redirect listener on %s: %s", gw_vars(&gw)->redirect.text,
		       err_str(rv));
	svc_lockdown(&gw.svc); /* listeners open, TLS key read: drop, seccomp */
	svc_watch_start(&gw.svc);

	sig = svc_wait_signal();
	log_info("signal %d: stopping", sig);
	/* HTTP first (it waits for the RPCs its requests made), then our own
	 * RPC socket (its Stats reads authn's counters), then authn, then the
	 * clients nobody uses any more. */
	wsbridge_stop(&gw); /* MHD may not stop with upgraded sockets open */
	proxy_stop(&gw);    /* nor with suspended ones, and relays hold upgraded ones */
	redirect_stop(&gw);
	http_stop(&gw);
	logbuf_stop(); /* every request has ended: its line is written now */
	svc_watch_stop();
	rpc_server_stop(gw.svc.rpc);
	gw.svc.rpc = NULL;
	authn_stop(&gw);
	health_stop(&gw);
	for (int i = SVC_GATEWAY + 1; i < SVC_SERVICES; i++) {
		rpc_client_close(gw.client[i]);
		gw.client[i] = NULL;
	}
	idem_stop(&gw);
	svc_fini(&gw.svc);
	metrics_free(gw.metrics);
	settings_fini(&gw);
	proxy_routes_free(&gw);
	log_info("stopped");
	return 0;
}
