/*
 * main.c — magnetar-terminal: configuration, terminal.db, audit outbox, RPC loop.
 */
#include "common/log.h"
#include "services/terminal/terminal.h"

static const struct rpc_method terminal_methods[] = {
    {.name = "Ping", .handler = svc_handle_ping},
    {.name = "Stats", .handler = svc_handle_stats},
};

int main(int argc, char **argv)
{
	static struct terminal x;

	svc_init(&x.svc, SVC_TERMINAL, argc, argv);
	svc_open_db(&x.svc, "terminal.db", &store_schema);
	svc_start_outbox(&x.svc);
	svc_serve(&x.svc, &magnetar__terminal__descriptor, terminal_methods,
	          sizeof(terminal_methods) / sizeof(terminal_methods[0]), &x);
	svc_fini(&x.svc);
	log_info("stopped");
	return 0;
}
