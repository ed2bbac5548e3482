/*
 * main.c — magnetar-auth: configuration, auth.db, audit outbox, RPC loop.
 */
#include "common/log.h"
#include "services/auth/auth.h"

static const struct rpc_method auth_methods[] = {
    {.name = "Ping", .handler = svc_handle_ping},
    {.name = "Stats", .handler = svc_handle_stats},
};

int main(int argc, char **argv)
{
	static struct auth x;

	svc_init(&x.svc, SVC_AUTH, argc, argv);
	svc_open_db(&x.svc, "auth.db", &store_schema);
	svc_start_outbox(&x.svc);
	/* Gateways learn of revocations here; the heartbeat lets them notice
	 * a lost event or a dead publisher (common/events.h). */
	if (events_pub_open(x.svc.conf.auth_events_url, x.svc.instance, 1000, &x.events) != 0)
		fatalx("cannot publish events on %s", x.svc.conf.auth_events_url);
	svc_serve(&x.svc, &magnetar__auth__descriptor, auth_methods,
	          sizeof(auth_methods) / sizeof(auth_methods[0]), &x);
	events_pub_close(x.events);
	svc_fini(&x.svc);
	log_info("stopped");
	return 0;
}
