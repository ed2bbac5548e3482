/*
 * main.c — magctl, the operator CLI: calls services' RPC methods over their
 * nng sockets (the same MAGNETAR_*_URL the services use) and prints the
 * answers. Exit status: 0 answered, 1 not answered or refused, 2 usage.
 * Command groups are rows of one table; each lives in its own file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.pb-c.h"
#include "auth.pb-c.h"
#include "breach.pb-c.h"
#include "common/err.h"
#include "common/log.h"
#include "common/privsep.h"
#include "gateway.pb-c.h"
#include "terminal.pb-c.h"
#include "tools/magctl/magctl.h"

static const struct magctl_command magctl_commands[] = {
    {"ping", "magctl ping <service> [--here]", magctl_ping},
    {"stats", "magctl stats <service>", magctl_stats},
    {"user", "magctl user create|list|delete|set-role|grant-terminal|reset-totp ...", magctl_user},
    {"session", "magctl session list <user> | revoke <session-id>", magctl_session},
    {"auth", "magctl auth rotate-keys", magctl_auth},
    {"client", "magctl client create|rotate|delete <name> | list", magctl_client},
    {"audit", "magctl audit query|verify|tail|rotate-key|export (magctl audit -h)", magctl_audit},
    {"breach", "magctl breach check | range <5hex> | import [-o store] [-R] FILE|DIR... | reload",
     magctl_breach},
    {"terminal", "magctl terminal list | kill <id>", magctl_terminal},
    {"backup", "magctl backup <service> <file>", magctl_backup},
};

#define MAGCTL_NCOMMANDS (sizeof(magctl_commands) / sizeof(magctl_commands[0]))

static const ProtobufCServiceDescriptor *const magctl_services[SVC_SERVICES] = {
    [SVC_GATEWAY] = &magnetar__gateway__descriptor,   [SVC_AUTH] = &magnetar__auth__descriptor,
    [SVC_AUDIT] = &magnetar__audit__descriptor,       [SVC_BREACH] = &magnetar__breach__descriptor,
    [SVC_TERMINAL] = &magnetar__terminal__descriptor,
};

/* Safe to run twice (rpc.h, rpc_client_resend_on_reset): an operator's
 * ping or read survives a service that re-listens or a replica that dies
 * under it. Never a write: a user created or a key rotated twice. */
static const char *const magctl_resend[] = {
    "Ping", "Stats", "OpListUsers", "OpListSessions", "ListUsers", "OpClientList", NULL};

static struct privsep magctl_ps;

static unsigned magctl_roles(uid_t uid, void *arg)
{
	return privsep_roles(arg, uid);
}

/* As root, a service's socket is answered by its user (or root) alone: a
 * password given to `magctl user add` never goes to a process that took
 * the socket's name (rpc_client_open_for). Without the services' users
 * (not yet created, or not root) nothing is checked: every process is
 * then one uid. */
static void magctl_trust_services(struct magctl *m)
{
	struct rpc_peer_policy policy = {.roles = magctl_roles, .arg = &magctl_ps};
	char err[256];

	if (privsep_init(&magctl_ps, &m->conf, false, err, sizeof(err)) == 0 && magctl_ps.on)
		rpc_set_peer_policy(&policy);
}

int magctl_call(struct magctl *m, enum svc_id svc, const char *method,
                const ProtobufCMessage *input, struct rpc_result *r)
{
	struct rpc_client *client;
	int rv;

	memset(r, 0, sizeof(*r));
	if ((rv = rpc_client_open_for(m->conf.url[svc], 0, SVC_SERVER_ROLES(svc), &client)) != 0) {
		printf("%s: down (%s)\n", svc_name(svc), err_str(rv));
		return 1;
	}
	rpc_client_resend_on_reset(client, magctl_resend);
	rv = rpc_call_sync(client, magctl_services[svc], method, input, NULL, m->timeout_ms, r);
	rpc_client_close(client);
	if (rv != 0 || r->status != MAGNETAR__STATUS__STATUS_OK) {
		if (rv != 0)
			printf("%s: down (%s)\n", svc_name(svc), err_str(rv));
		else if (r->status == MAGNETAR__STATUS__STATUS_UNAVAILABLE ||
		         r->status == MAGNETAR__STATUS__STATUS_DEADLINE_EXCEEDED)
			printf("%s: down (%s)\n", svc_name(svc), r->code);
		else
			printf("%s: refused (%s: %s)\n", svc_name(svc), r->code, r->message);
		rpc_result_fini(r);
		return 1;
	}
	return 0;
}

static void magctl_usage(void)
{
	fprintf(stderr, "usage: magctl [-t timeout_ms] <command> ...\n");
	for (size_t i = 0; i < MAGCTL_NCOMMANDS; i++)
		fprintf(stderr, "  %s\n", magctl_commands[i].usage);
	fprintf(stderr, "services: gateway auth audit breach terminal\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct magctl m = {.timeout_ms = 2000};
	char err[256];
	int opt, rv;

	log_init("magctl", LOG_TEXT, false);
	while ((opt = getopt(argc, argv, "+t:h")) != -1) {
		if (opt == 't' && atoi(optarg) > 0)
			m.timeout_ms = atoi(optarg);
		else
			magctl_usage();
	}
	if (optind >= argc)
		magctl_usage();
	for (size_t i = 0; i < MAGCTL_NCOMMANDS; i++) {
		if (strcmp(argv[optind], magctl_commands[i].name) != 0)
			continue;
		if (conf_load(&m.conf, SVC_MAGCTL, NULL, err, sizeof(err)) != 0) {
			fprintf(stderr, "magctl: configuration refused: %s\n", err);
			return 2;
		}
		magctl_trust_services(&m);
		rv = magctl_commands[i].run(&m, argc - optind, argv + optind);
		conf_fini(&m.conf);
		return rv;
	}
	magctl_usage();
}
