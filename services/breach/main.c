/*
 * main.c — magnetar-breach: configuration, breach.db (audit outbox and the
 * persisted range cache), the online fetcher or the offline store, the RPC
 * loop, and the shutdown order (RPC first: pending fetches still answer).
 */
#include <string.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/sandbox.h"
#include "services/breach/breach.h"

static const struct rpc_method breach_methods[] = {
    {.name = "Ping", .handler = svc_handle_ping},
    {.name = "Stats", .handler = svc_handle_stats},
    {.name = "Range",
     .handler = range_handle,
     .flags = RPC_F_CALLERS(RPC_BY(SVC_AUTH) | SVC_BY_OPERATOR)},
    {.name = "Reload",
     .handler = range_handle_reload,
     .flags = RPC_F_MUTATES | RPC_F_CALLERS(SVC_BY_OPERATOR)},
};

/* The only process with outbound TCP: to the range API (and DNS over TCP
 * when an answer is truncated); IP and netlink sockets for the resolver. */
static int breach_sandbox(struct sandbox_rules *r, const struct conf *c)
{
	const struct breach_vars *v = c->own;
	int rv = 0;

	if (v->hibp_mode == BREACH_HIBP_ONLINE) {
		rv |= sandbox_allow_connect(
		    r, sandbox_url_port(v->hibp_url,
		                        strncmp(v->hibp_url, "http://", 7) == 0 ? 80 : 443));
		rv |= sandbox_allow_connect(r, 53);
	}
	r->inet = r->netlink = true;
	return rv != 0 ? ERR_INVAL : 0;
}

/* Range is auth's alone (its row); the gateway only pings (readiness). */
static const struct svc_program breach_program = {.id = SVC_BREACH,
                                                  .vars = &breach_conf_table,
                                                  .admit = RPC_BY(SVC_AUTH) | RPC_BY(SVC_GATEWAY) |
                                                           SVC_BY_OPERATOR,
                                                  .sandbox = breach_sandbox};

int main(int argc, char **argv)
{
	static struct breach x;
	struct fetch_opts fo = {0};
	uint32_t loaded = 0;
	int rv;

	svc_init(&x.svc, &breach_program, argc, argv);
	x.svc.counters = range_counters;
	x.alarm_interval_ms = 60 * 1000;
	pthread_mutex_init(&x.store_mu, NULL);
	svc_open_db(&x.svc, "breach.db", &store_schema);
	if (svc_path(&x.svc, PWSTORE_FILE, x.pw_path, sizeof(x.pw_path)) != 0)
		fatalx("offline store path too long");
	if ((rv = cache_new(BREACH_CACHE_RANGES, BREACH_CACHE_TTL_MS, &x.cache)) != 0)
		fatalx("cannot create the range cache: %s", err_str(rv));

	switch (breach_vars(&x)->hibp_mode) {
	case BREACH_HIBP_ONLINE:
		if ((rv = store_load_ranges(x.svc.pool, x.cache, clock_unix_ms(),
		                            BREACH_CACHE_TTL_MS, BREACH_CACHE_RANGES, &loaded)) !=
		    0)
			log_warnx("cannot reload the cached ranges: %s (starting cold)",
			          err_str(rv));
		fo.base_url = breach_vars(&x)->hibp_url;
		if ((rv = fetch_start(&fo, &x.fetch)) != 0)
			fatalx("cannot start the range fetcher: %s", err_str(rv));
		log_info("mode=online url=%s cached_ranges=%u fail=%s", breach_vars(&x)->hibp_url,
		         loaded, breach_vars(&x)->breach_fail_closed ? "closed" : "open");
		break;
	case BREACH_HIBP_OFFLINE:
		if ((rv = range_reload(&x)) != 0)
			log_warnx("no offline store at %s (%s): Range answers unavailable until "
			          "`magctl breach import`",
			          x.pw_path, err_str(rv));
		log_info("mode=offline fail=%s",
		         breach_vars(&x)->breach_fail_closed ? "closed" : "open");
		break;
	case BREACH_HIBP_OFF:
		log_info("mode=off: Range answers source=off, nothing is checked");
		break;
	}
	svc_start_outbox(&x.svc);
	svc_serve(&x.svc, &magnetar__breach__descriptor, breach_methods,
	          sizeof(breach_methods) / sizeof(breach_methods[0]), &x);
	fetch_stop(x.fetch);
	x.fetch = NULL;
	svc_fini(&x.svc);
	cache_free(x.cache);
	pwstore_unref(x.pw);
	pthread_mutex_destroy(&x.store_mu);
	log_info("stopped");
	return 0;
}
