/*
 * main.c — magctl, the operator CLI: calls a service's RPC methods over its
 * nng socket (the same MAGNETAR_*_URL the services use) and prints the
 * answer. The exit status says whether the service answered: 0 yes, 1 no,
 * 2 usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.pb-c.h"
#include "auth.pb-c.h"
#include "breach.pb-c.h"
#include "common/config.h"
#include "common/err.h"
#include "common/log.h"
#include "common/rpc.h"
#include "gateway.pb-c.h"
#include "terminal.pb-c.h"

static const ProtobufCServiceDescriptor *const magctl_services[SVC_SERVICES] = {
    [SVC_GATEWAY] = &magnetar__gateway__descriptor,   [SVC_AUTH] = &magnetar__auth__descriptor,
    [SVC_AUDIT] = &magnetar__audit__descriptor,       [SVC_BREACH] = &magnetar__breach__descriptor,
    [SVC_TERMINAL] = &magnetar__terminal__descriptor,
};

static void magctl_usage(void)
{
	fprintf(stderr, "usage: magctl [-t timeout_ms] ping <service>\n"
	                "       magctl [-t timeout_ms] stats <service>\n"
	                "services: gateway auth audit breach terminal\n");
	exit(2);
}

static int magctl_ping(const char *name, const struct rpc_result *r)
{
	const Magnetar__PingReply *p = (const Magnetar__PingReply *)r->output;
	printf("%s: up instance=%s version=%s uptime_ms=%llu pid=%u\n", name, p->instance,
	       p->version, (unsigned long long)p->uptime_ms, p->pid);
	return 0;
}

static int magctl_stats(const char *name, const struct rpc_result *r)
{
	const Magnetar__StatsReply *s = (const Magnetar__StatsReply *)r->output;
	(void)name;
	for (size_t i = 0; i < s->n_counters; i++)
		printf("%s %llu\n", s->counters[i]->name,
		       (unsigned long long)s->counters[i]->value);
	return 0;
}

int main(int argc, char **argv)
{
	Magnetar__PingRequest ping = MAGNETAR__PING_REQUEST__INIT;
	Magnetar__StatsRequest stats = MAGNETAR__STATS_REQUEST__INIT;
	struct rpc_client *client;
	struct rpc_result r;
	struct conf conf;
	char err[256];
	const char *cmd, *name;
	int timeout_ms = 2000, svc, opt, rv;

	log_init("magctl", LOG_TEXT, false);
	while ((opt = getopt(argc, argv, "t:h")) != -1) {
		if (opt == 't' && atoi(optarg) > 0)
			timeout_ms = atoi(optarg);
		else
			magctl_usage();
	}
	if (argc - optind != 2)
		magctl_usage();
	cmd = argv[optind];
	name = argv[optind + 1];
	svc = svc_lookup(name);
	if (svc < 0 || svc >= SVC_SERVICES ||
	    (strcmp(cmd, "ping") != 0 && strcmp(cmd, "stats") != 0))
		magctl_usage();
	if (conf_load(&conf, SVC_MAGCTL, err, sizeof(err)) != 0) {
		fprintf(stderr, "magctl: configuration refused: %s\n", err);
		return 2;
	}
	if ((rv = rpc_client_open(conf.url[svc], 0, &client)) != 0) {
		fprintf(stderr, "magctl: cannot open %s: %s\n", conf.url[svc], err_str(rv));
		conf_fini(&conf);
		return 1;
	}
	if (strcmp(cmd, "ping") == 0)
		rv = rpc_call_sync(client, magctl_services[svc], "Ping", &ping.base, NULL,
		                   timeout_ms, &r);
	else
		rv = rpc_call_sync(client, magctl_services[svc], "Stats", &stats.base, NULL,
		                   timeout_ms, &r);
	if (rv != 0 || r.status != MAGNETAR__STATUS__STATUS_OK) {
		printf("%s: down (%s)\n", name, rv != 0 ? err_str(rv) : r.code);
		rv = 1;
	} else {
		rv = strcmp(cmd, "ping") == 0 ? magctl_ping(name, &r) : magctl_stats(name, &r);
	}
	rpc_result_fini(&r);
	rpc_client_close(client);
	conf_fini(&conf);
	return rv;
}
