/*
 * main.c — magnetar-breach: configuration, breach.db, audit outbox, RPC loop.
 */
#include "common/log.h"
#include "services/breach/breach.h"

static const struct rpc_method breach_methods[] = {
    {.name = "Ping", .handler = svc_handle_ping},
    {.name = "Stats", .handler = svc_handle_stats},
};

int main(int argc, char **argv)
{
	static struct breach x;

	svc_init(&x.svc, SVC_BREACH, argc, argv);
	svc_open_db(&x.svc, "breach.db", &store_schema);
	svc_start_outbox(&x.svc);
	svc_serve(&x.svc, &magnetar__breach__descriptor, breach_methods,
	          sizeof(breach_methods) / sizeof(breach_methods[0]), &x);
	svc_fini(&x.svc);
	log_info("stopped");
	return 0;
}
