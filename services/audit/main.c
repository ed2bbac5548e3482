/*
 * main.c — magnetar-audit: configuration, audit.db, the RPC loop.
 */
#include <stdlib.h>

#include "common/log.h"
#include "common/pool.h"
#include "services/audit/audit.h"

static const struct rpc_method audit_methods[] = {
    {.name = "Ping", .handler = svc_handle_ping},
    {.name = "Stats", .handler = svc_handle_stats},
    {.name = "Append", .handler = append_handle, .flags = RPC_F_MUTATES},
};

static void audit_counters(struct svc *s, svc_counter_fn emit, void *emit_arg)
{
	uint64_t n;
	if (store_count(s->pool, &n) == 0)
		emit("audit.events_stored", n, emit_arg);
}

int main(int argc, char **argv)
{
	static struct audit a;

	svc_init(&a.svc, SVC_AUDIT, argc, argv);
	a.svc.counters = audit_counters;
	svc_open_db(&a.svc, "audit.db", &store_schema);
	svc_serve(&a.svc, &magnetar__audit__descriptor, audit_methods,
	          sizeof(audit_methods) / sizeof(audit_methods[0]), &a);
	svc_fini(&a.svc);
	log_info("stopped");
	return 0;
}
