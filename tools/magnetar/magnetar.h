/*
 * magnetar.h — the supervisor `magnetar up`: starts the five services from
 * beside its own executable, each with only the environment it reads,
 * prefixes their output, restarts them with back-off and stops them cleanly.
 */
#ifndef MAGNETAR_SUPERVISOR_H
#define MAGNETAR_SUPERVISOR_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/config.h"

/* Longest line forwarded from a child; the rest of a longer line is dropped
 * so one runaway child cannot make the supervisor buffer without bound. */
#define LOGPIPE_LINE_MAX 8192

/* Restart back-off: first delay, cap, and how long a child must stay up for
 * its next crash to count as a first one again. */
#define CHILD_BACKOFF_MIN_MS 100
#define CHILD_BACKOFF_MAX_MS 5000
#define CHILD_STABLE_MS 10000
/* How long children get between SIGTERM and SIGKILL at shutdown. */
#define CHILD_STOP_GRACE_MS 5000

/* ---- logpipe.c: one child output stream, re-emitted line by line ---------- */

struct logpipe {
	const char *name; /* service name put in the "[name] " prefix (static) */
	int rfd;          /* read end, non-blocking, in the supervisor's poll set */
	int wfd;          /* write end, kept open across restarts and dup2'd into children */
	size_t len;       /* bytes of the current partial line in buf */
	bool cutting;     /* the current line overflowed: drop bytes until its newline */
	char buf[LOGPIPE_LINE_MAX];
};

/* Creates the pipe. On failure returns ERR_IO and holds nothing. */
int logpipe_init(struct logpipe *lp, const char *name);
/* Reads what is available now and emits every complete line. Returns 0, or
 * ERR_IO on a read error other than EAGAIN. */
int logpipe_read(struct logpipe *lp);
/* Reads until the pipe is empty, then emits a pending partial line: for a
 * child that has exited, whose last line may lack its newline. */
void logpipe_drain(struct logpipe *lp);
/* Closes both ends. Accepts a logpipe whose init failed or never ran (fds -1). */
void logpipe_fini(struct logpipe *lp);

/* ---- programs.c: each service's own variables ---------------------------- */

/* Each service's variable table (its folder's vars.c), by SVC_*. */
extern const struct conf_table *const programs_vars[SVC_SERVICES];
/* Parses every service's table into values[]: a bad variable of any
 * service refuses the whole configuration. 0, or ERR_CONFIG with err set
 * and nothing held. Release with programs_free. */
int programs_load(const struct conf *c, void *values[SVC_SERVICES], char *err, size_t errlen);
void programs_free(void *values[SVC_SERVICES]);
/* "http(s)://<MAGNETAR_HTTP_ADDR>/" from the gateway's values, into buf. */
const char *programs_gateway_url(const void *gateway_values, char *buf, size_t len);
/* `magnetar vars`: a line per variable, tab-separated: name, the programs
 * that read it, secret (0/1), the NAME_FILE alias or "-". */
void programs_print_vars(void);

/* ---- env.c: the environment one service is given ------------------------- */

/*
 * Builds a NULL-terminated "NAME=value" array for service `svc` from the
 * supervisor's environment: the MAGNETAR_* variables `svc` reads (for a
 * secret, its NAME_FILE form when that is what was set), MAGNETAR_DATA_DIR
 * and MAGNETAR_RUN_DIR as the absolute `data_dir` and `run_dir`, and the
 * few process and diagnostic variables every program may use. On success
 * returns 0 and *out is the caller's (release with env_free); on failure
 * returns ERR_NOMEM (or ERR_INTERNAL) and *out is NULL.
 */
int env_build(enum svc_id svc, const char *data_dir, const char *run_dir, char ***out);
/* Wipes (it may hold secrets) and frees an env_build array. Accepts NULL. */
void env_free(char **env);

/* ---- devdirs.c: where a run as root keeps its data and sockets ------------ */

/*
 * As root, where the default ./var or ./run lies under a dir the service users
 * cannot traverse (a checkout in /root), points c's data and run dirs at
 * /var/lib/magnetar-dev/<tag> and /run/magnetar-dev/<tag>, tag derived from
 * `bindir`, and logs where they are. A dir set explicitly that they cannot
 * reach is fatal with one line. Not as root: changes nothing.
 */
void devdirs_choose(struct conf *c, const char *bindir);

/* ---- child.c: spawning, restarting and stopping the services -------------- */

struct child {
	enum svc_id id;
	const char *name;    /* svc_name(id) */
	char path[PATH_MAX]; /* <dir of magnetar>/magnetar-<name> */
	char **env;          /* from env_build, reused for every restart */
	pid_t pid;           /* 0 when not running */
	uint64_t started_ms;
	uint64_t restart_at_ms; /* monotonic; 0 when no restart is pending */
	uint32_t backoff_ms;    /* the delay the next quick crash will wait */
	unsigned restarts;
	struct logpipe out; /* the child's stdout */
	struct logpipe err; /* the child's stderr */
};

/*
 * Prepares `c` for service `id` found in `bindir`, with environment `env`.
 * `c` owns `env` from this call on, success or failure, and child_fini must
 * be called either way. Returns 0, ERR_NOTFOUND when the executable is
 * missing, ERR_INVAL when its path is too long, or ERR_IO when a pipe cannot
 * be made.
 */
int child_init(struct child *c, enum svc_id id, const char *bindir, char **env);
/* Starts the child now, `devnull` as its stdin. Returns 0, or ERR_IO when fork
 * failed, in which case a retry is already scheduled with back-off. */
int child_start(struct child *c, int devnull);
/* Records the exit of c->pid with wait status `status`, drains its output and,
 * unless `stopping`, schedules a restart with back-off. */
void child_exited(struct child *c, int status, bool stopping);
/* Sends `sig` to a running child. */
void child_signal(struct child *c, int sig);
/* Releases what child_init took. The child must not be running. */
void child_fini(struct child *c);

#endif
