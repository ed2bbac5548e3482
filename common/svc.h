/*
 * svc.h — what every Magnetar program's main.c shares: argument handling
 * (`-n` checks the configuration and exits), configuration and logging set
 * up, core dumps off, the data dir, the generic Ping and Stats handlers, and
 * waiting for SIGTERM/SIGINT.
 *
 * A service keeps its state in its own struct whose FIRST member is a
 * struct svc, and passes that struct as rpc_server_opts.arg, so the Ping
 * and Stats handlers here can serve every service unchanged.
 */
#ifndef MAGNETAR_SVC_H
#define MAGNETAR_SVC_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/rpc.h"

struct pool;
struct pool_schema;
struct outbox;
struct sandbox_rules;

/* What a program brings to svc_init (defined in its main.c): everything
 * about it that the shared start-up needs, so common/ knows no program. */
struct svc_program {
	enum svc_id id;
	const struct conf_table *vars; /* its own variables (its vars.c); NULL: none */
	/* Who may connect to its RPC socket and to its publisher, RPC_BY(SVC_*)
	 * bits (docs/architecture.md, "Processes"); its method rows narrow
	 * this further. Its own uid is always admitted (the self-checks). */
	unsigned admit, admit_events;
	/* Before its sandbox closes: makes what its configuration needs (a
	 * development key file) and adds to `r` what it calls for: files it
	 * reads, ports, socket dirs, socket families (common/sandbox.h).
	 * NULL: nothing. 0, or an error (a set full, a file not made). */
	int (*sandbox)(struct sandbox_rules *r, const struct conf *c);
	/* The file sandbox closes in svc_open_db, not svc_init: for a program
	 * that forks a helper which must stay outside it (the terminal's
	 * spawner) in between. */
	bool sandbox_fs_later;
};

typedef void (*svc_counter_fn)(const char *name, uint64_t value, void *arg);

struct svc {
	enum svc_id id;
	struct conf conf;
	char instance[33]; /* random hex per process start */
	uint64_t started_mono_ms;
	char data_dir[512];       /* <MAGNETAR_DATA_DIR>/<name>, created 0700 */
	struct rpc_server *rpc;   /* while svc_serve runs */
	struct pool *pool;        /* svc_open_db */
	struct rpc_client *audit; /* svc_start_outbox: client of magnetar-audit */
	struct outbox *outbox;    /* svc_start_outbox */
	size_t replica;           /* our entry of our URL lists, 1-based (replica.h) */
	/* Replicated: RPC_URLS_MAX, each entry's lock file open (the outbox
	 * tells dead replicas from live ones by them); else 1. */
	size_t replicas;
	int replica_lock[RPC_URLS_MAX + 1]; /* per entry; -1 for ours and unopened */
	/* Service-specific counters for Stats, or NULL. */
	void (*counters)(struct svc *s, svc_counter_fn emit, void *emit_arg);
};

/*
 * Parses argv (`-n`: check config, print it, exit 0; `-h`: usage;
 * `--sandbox-selftest`: sandbox.h, exits), loads the
 * configuration for program `p` (common's variables and its own), sets up logging, turns core dumps
 * off (secrets), blocks SIGTERM/SIGINT/SIGPIPE in every thread to come, and creates the data and
 * run dirs. Exits the process on any failure with one clear line, and on `-n` after the check.
 */
void svc_init(struct svc *s, const struct svc_program *p, int argc, char **argv);

/* Waits for SIGTERM or SIGINT (blocked by svc_init); returns the signal. */
int svc_wait_signal(void);

/* Opens <data dir>/<file> with `schema` into s->pool; exits on failure. */
void svc_open_db(struct svc *s, const char *file, const struct pool_schema *schema);

/* For producers of audit events (the pool must hold outbox_migration):
 * opens a client of magnetar-audit, starts the outbox sender, and records
 * a "service.started" event. Exits on failure. */
void svc_start_outbox(struct svc *s);

/* Serves `desc` with `methods` on the service's own URL until SIGTERM or
 * SIGINT, then stops the RPC server. `arg` goes to every handler and must
 * begin with this struct svc. Exits if the socket cannot be opened. */
void svc_serve(struct svc *s, const ProtobufCServiceDescriptor *desc,
               const struct rpc_method *methods, size_t nmethods, void *arg);

/* Checks our own socket (s->rpc) over a new connection, right away and
 * then every 500 ms from a thread of its own: the listener must accept it
 * within 500 ms and a Ping on it be answered within 3 s. A failed check
 * makes the server listen again (rpc_server_relisten: nng 1.5's listener
 * stall, docs/reliability.md); when the check after that fails too, at
 * start or three times in a row while serving, the process exits for a
 * restart. svc_serve does both; a program with its own serve
 * path (the gateway) calls them after svc_lockdown and before
 * rpc_server_stop. */
void svc_watch_start(struct svc *s);
void svc_watch_stop(void);

/*
 * Gives up what the service no longer needs, in docs/conventions.md §7's order:
 * everything in the data dir becomes the service user's, setgroups/
 * setresgid/setresuid to it (as root; each checked, and root must not come
 * back), PR_SET_NO_NEW_PRIVS, the seccomp allow-list. Landlock came earlier
 * (svc_init, or svc_open_db for the terminal): it only reaches threads
 * created after it. svc_serve calls this once its socket is bound; a
 * program with its own serve path (the gateway) calls it once its
 * listeners are open. Exits on any failure.
 */
void svc_lockdown(struct svc *s);

/* As root (one user per service): 0 and this service's uid and gid, which
 * svc_lockdown will drop to. ERR_NOTFOUND without root. */
int svc_own_user(const struct svc *s, uid_t *uid, gid_t *gid);

/* Caller masks for method rows (rpc.h RPC_F_CALLERS). */
#define SVC_BY_OPERATOR RPC_BY(SVC_MAGCTL) /* root, or our own uid without root */
/* Who may answer on service `id`'s socket (rpc_client_open_for): its user,
 * or root (a service binds its socket before it drops to its user, and
 * only re-binds it as that user). */
#define SVC_SERVER_ROLES(id) (RPC_BY(id) | SVC_BY_OPERATOR)
/* Every service but audit ships audit events (svc_start_outbox): a new
 * service is a producer without a change here. */
#define SVC_BY_PRODUCERS (((1u << SVC_SERVICES) - 1) & ~RPC_BY(SVC_AUDIT))

/* Stops the outbox, closes the audit client and the pool, frees config. */
void svc_fini(struct svc *s);

/* "<data_dir>/<file>" into buf. 0 or ERR_INVAL if it does not fit. */
int svc_path(const struct svc *s, const char *file, char *buf, size_t len);

/* Generic handlers for the Ping and Stats rows of every service's table;
 * `arg` is the service struct whose first member is a struct svc. */
void svc_handle_ping(struct rpc_call *call, const ProtobufCMessage *input, void *arg);
void svc_handle_stats(struct rpc_call *call, const ProtobufCMessage *input, void *arg);

#define SVC_VERSION "0.1.0"

#endif
