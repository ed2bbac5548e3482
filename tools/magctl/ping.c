/*
 * ping.c — `magctl ping <service> [--here]` and `magctl stats <service>`: is
 * it up, and its counters (the generic Ping/Stats every service serves).
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/replica.h"
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

static int ping_one(struct magctl *m, enum svc_id svc)
{
	Magnetar__PingRequest req = MAGNETAR__PING_REQUEST__INIT;
	const Magnetar__PingReply *p;
	struct rpc_result r;

	if (magctl_call(m, svc, "Ping", &req.base, &r) != 0)
		return 1;
	p = (const Magnetar__PingReply *)r.output;
	printf("%s: up instance=%s version=%s uptime_ms=%llu pid=%u\n", svc_name(svc), p->instance,
	       p->version, (unsigned long long)p->uptime_ms, p->pid);
	rpc_result_fini(&r);
	return 0;
}

/* --here: each replica this host runs, by its own entry of the URL list
 * (common/replica.h), so that a container's health check asks its own
 * replica and not whichever one nng picks. Every one must answer. */
static int ping_here(struct magctl *m, enum svc_id svc)
{
	char *list = m->conf.url[svc], entry[512];
	size_t count = replica_count(list), found = 0;
	int rv = 0;

	if (count == 1)
		return ping_one(m, svc);
	for (size_t n = 1; n <= count; n++) {
		if (!replica_held_here(m->conf.run_dir, svc_name(svc), n) ||
		    replica_entry(list, n, entry, sizeof(entry)) != 0)
			continue;
		found++;
		m->conf.url[svc] = entry;
		printf("replica %zu: ", n);
		fflush(stdout);
		rv |= ping_one(m, svc);
		m->conf.url[svc] = list;
	}
	if (found == 0) {
		printf("%s: down (no replica on this host holds an entry of its URL list)\n",
		       svc_name(svc));
		return 1;
	}
	return rv;
}

int magctl_ping(struct magctl *m, int argc, char **argv)
{
	bool here = argc == 3 && strcmp(argv[2], "--here") == 0;
	int svc = magctl_service_arg(here ? 2 : argc, argv);

	if (svc < 0)
		return 2;
	return here ? ping_here(m, (enum svc_id)svc) : ping_one(m, (enum svc_id)svc);
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
