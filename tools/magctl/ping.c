/*
 * ping.c — `magctl ping <service>` and `magctl stats <service>`: is it up,
 * and its counters (the generic Ping/Stats every service serves).
 */
#include <stdio.h>
#include <string.h>

#include "tools/magctl/magctl.h"

static int magctl_service_arg(int argc, char **argv)
{
	int svc;
	if (argc != 2 || (svc = svc_lookup(argv[1])) < 0 || svc >= SVC_SERVICES) {
		fprintf(stderr, "magctl %s: name one of gateway auth audit breach terminal\n",
		        argv[0]);
		return -1;
	}
	return svc;
}

int magctl_ping(struct magctl *m, int argc, char **argv)
{
	Magnetar__PingRequest req = MAGNETAR__PING_REQUEST__INIT;
	const Magnetar__PingReply *p;
	struct rpc_result r;
	int svc = magctl_service_arg(argc, argv);

	if (svc < 0)
		return 2;
	if (magctl_call(m, (enum svc_id)svc, "Ping", &req.base, &r) != 0)
		return 1;
	p = (const Magnetar__PingReply *)r.output;
	printf("%s: up instance=%s version=%s uptime_ms=%llu pid=%u\n", argv[1], p->instance,
	       p->version, (unsigned long long)p->uptime_ms, p->pid);
	rpc_result_fini(&r);
	return 0;
}

int magctl_stats(struct magctl *m, int argc, char **argv)
{
	Magnetar__StatsRequest req = MAGNETAR__STATS_REQUEST__INIT;
	const Magnetar__StatsReply *s;
	struct rpc_result r;
	int svc = magctl_service_arg(argc, argv);

	if (svc < 0)
		return 2;
	if (magctl_call(m, (enum svc_id)svc, "Stats", &req.base, &r) != 0)
		return 1;
	s = (const Magnetar__StatsReply *)r.output;
	for (size_t i = 0; i < s->n_counters; i++)
		printf("%s %llu\n", s->counters[i]->name,
		       (unsigned long long)s->counters[i]->value);
	rpc_result_fini(&r);
	return 0;
}
