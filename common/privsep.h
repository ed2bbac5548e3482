/*
 * privsep.h — one system user per service (docs/architecture.md, "Processes" and "Security model"):
 * the users and the IPC group, the data and run dirs they own, the uid drop, and the roles a peer
 * uid holds (what common/rpc_server.c's allow-lists check).
 *
 * As root, each service starts as root, opens what is privileged, then drops
 * to its own user (privsep_drop). Without root there is nothing to separate:
 * every role is the invoking uid, and the checks pass, but still run.
 */
#ifndef MAGNETAR_PRIVSEP_H
#define MAGNETAR_PRIVSEP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common/config.h"

#define PRIVSEP_SHELL_USER "magnetar-shell" /* terminal shells (never a service) */

struct privsep {
	bool on;                 /* started as root: one user per service */
	uid_t self;              /* our real uid at start */
	uid_t uid[SVC_SERVICES]; /* each service's user (self without root) */
	gid_t gid[SVC_SERVICES]; /* its primary group */
	gid_t group;             /* MAGNETAR_IPC_GROUP: may enter the run dir */
	char name[SVC_SERVICES][64];
};

/*
 * Fills `ps` from the configured user names. As root, with `create`, a
 * missing group or user is created (groupadd/useradd --system, no home, shell
 * nologin), and the shell user too. 0, or ERR_NOTFOUND/ERR_IO with one
 * sentence in err.
 */
int privsep_init(struct privsep *ps, const struct conf *c, bool create, char *err, size_t errlen);

/* The RPC_BY(SVC_*) roles `uid` holds; uid 0 (and ours, without root) is the
 * operator, RPC_BY(SVC_MAGCTL). */
unsigned privsep_roles(const struct privsep *ps, uid_t uid);

/*
 * As root: the data dir's parent root:group 0710 (services may pass, not
 * list), the run dir root:group 03770 (setgid: sockets get the group; sticky:
 * nobody removes another's socket), and service `id`'s data dir `dir` with
 * everything in it owned by its user, dirs 0700 and files 0600. Nothing
 * without root. 0 or ERR_IO (errno set).
 */
int privsep_prepare(const struct privsep *ps, const char *data_parent, const char *run_dir);
int privsep_own(const struct privsep *ps, enum svc_id id, const char *dir);

/*
 * As root: `dir`, which holds a replicated service's socket entries (free
 * ones included), made if missing and set root:group 02750 (setgid: its sockets get the
 * group, as in the run dir), so that only root creates sockets in it and no other service's user
 * can listen on a free entry (docs/scaling.md). ERR_PERM when `dir` is the run dir itself
 * (everyone's to write), not a directory, or not root's (someone else made
 * it). Nothing without root.
 */
int privsep_socket_dir(const struct privsep *ps, const char *run_dir, const char *dir);

/*
 * setgroups({group}), setresgid, setresuid to service `id`'s user, each
 * checked, then checks that root cannot be regained. The parent-death signal
 * (cleared by the kernel on a uid change) is set again. Without root: 0 and
 * nothing done. 0 or ERR_PERM with one sentence in err.
 */
int privsep_drop(const struct privsep *ps, enum svc_id id, char *err, size_t errlen);

/*
 * The supervisor, as root: keeps in its bounding set (and its own
 * capabilities) only what the services need before their own drop: chown,
 * DAC override and read-search, fowner, fsetid (the run dir's setgid bit),
 * kill, setuid, setgid, setpcap, net_bind_service. 0 or ERR_PERM.
 */
int privsep_limit_caps(void);

#endif
