/*
 * magctl.h — the operator CLI's shared pieces. Each command group lives in
 * its own file (ping.c: ping/stats; later audit.c, breach.c, user.c, ...)
 * and is one row of the command table in main.c.
 */
#ifndef MAGNETAR_MAGCTL_H
#define MAGNETAR_MAGCTL_H

#include "common/config.h"
#include "common/rpc.h"
#include "common/svc.h"

struct magctl {
	struct conf conf;
	int timeout_ms; /* -t, default 2000 */
};

/* A command group: argv[0] is the group's name ("ping", "audit", ...).
 * Returns the process exit status: 0 answered, 1 not answered or refused,
 * 2 usage. */
struct magctl_command {
	const char *name;
	const char *usage; /* lines shown by `magctl -h`, each starting "magctl " */
	int (*run)(struct magctl *m, int argc, char **argv);
};

/* Calls `method` of service `svc` and waits; fills *r (caller frees with
 * rpc_result_fini). Prints "<svc>: down (<why>)" and returns 1 when the
 * service did not answer OK; 0 otherwise. */
int magctl_call(struct magctl *m, enum svc_id svc, const char *method,
                const ProtobufCMessage *input, struct rpc_result *r);

/* ping.c */
int magctl_ping(struct magctl *m, int argc, char **argv);
int magctl_stats(struct magctl *m, int argc, char **argv);
int magctl_audit(struct magctl *m, int argc, char **argv); /* audit.c */

/* user.c */
int magctl_user(struct magctl *m, int argc, char **argv);
int magctl_session(struct magctl *m, int argc, char **argv);
int magctl_auth(struct magctl *m, int argc, char **argv);
int magctl_client(struct magctl *m, int argc, char **argv); /* client.c */

/* breach.c */
int magctl_breach(struct magctl *m, int argc, char **argv);
int magctl_terminal(struct magctl *m, int argc, char **argv); /* terminal.c */
int magctl_backup(struct magctl *m, int argc, char **argv);   /* backup.c */

#endif
