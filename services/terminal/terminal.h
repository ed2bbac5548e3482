/*
 * terminal.h — magnetar-terminal: shells in PTYs, started by a small spawner
 * process, streamed to the gateway over one Unix stream connection per
 * terminal (docs/terminal.md). Prototypes grouped by file.
 */
#ifndef MAGNETAR_TERMINAL_H
#define MAGNETAR_TERMINAL_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "terminal.pb-c.h"
#include "common/svc.h"
#include "services/terminal/vars.h"

#define TERMINAL_ID_LEN 33     /* 16 random bytes as hex + NUL */
#define TERMINAL_USER_MAX 128  /* a user id (JWT sub) with its NUL */
#define TERMINAL_SHELL_MAX 256 /* longest shell path accepted */
#define TERMINAL_TICKET_TTL_MS 30000
#define TERMINAL_DETACH_GRACE_MS 2000 /* WebSocket gone: the shell follows after this */
#define TERMINAL_KILL_GRACE_MS 2000   /* SIGHUP, then SIGKILL after this */
#define TERMINAL_SIZE_MAX 1000        /* cols and rows: 1..this */
#define TERMINAL_FRAME_MAX 65536      /* one frame's payload either way */
#define TERMINAL_LIST_MAX 16          /* shells or roots configured */
#define TERMINAL_KEY_LEN 32           /* the stream key Attach gives out */

/* ---- validate.c: what may run where (pure, no state) ----------------------- */

struct validate_policy {
	char *shells[TERMINAL_LIST_MAX]; /* as configured, compared byte for byte */
	size_t nshells;
	char *roots[TERMINAL_LIST_MAX]; /* realpath()ed at start */
	size_t nroots;
};

/*
 * Builds the policy. `shells` is MAGNETAR_TERMINAL_SHELLS (NULL: those of
 * the five defaults that exist and are listed in `etc_shells`), `roots`
 * MAGNETAR_TERMINAL_ROOTS (NULL: `home`). A configured shell that is not an
 * absolute, canonical path is ERR_CONFIG; a root that does not resolve to a
 * directory is skipped with a warning. Release with validate_policy_fini.
 */
int validate_policy_init(struct validate_policy *p, const char *shells, const char *roots,
                         const char *etc_shells, const char *home);
void validate_policy_fini(struct validate_policy *p);

/* `shell` (len bytes, no NUL inside) must equal an allowed entry; its
 * resolved target (what is executed, into exec_path) must be a regular,
 * executable file nobody but its owner may write. 0 or ERR_PERM. */
int validate_shell(const struct validate_policy *p, const char *shell, size_t len, char *exec_path,
                   size_t cap);
/* `cwd` must be absolute, resolve (realpath) to an existing directory and lie
 * under a root after resolution; the resolved path goes into out. 0 or
 * ERR_PERM. */
int validate_cwd(const struct validate_policy *p, const char *cwd, size_t len, char *out,
                 size_t cap);
/* True when the resolved path `path` is a root or lies under one. */
bool validate_under_root(const struct validate_policy *p, const char *path);

/* ---- frame.c: the bytes of the stream (docs/api.md "Terminal") ------------------ */

enum frame_kind {
	FRAME_DATA = '0',   /* input (client→shell) or output (shell→client) */
	FRAME_RESIZE = '1', /* client→shell: JSON {"cols","rows"} */
	FRAME_EXIT = '2',   /* shell→client: JSON {"code"}, then close */
	/* gateway→terminal first on a connection: the hello (common/lenframe.h) */
};

struct frame {
	enum frame_kind kind;
	const uint8_t *data; /* FRAME_DATA: the payload (points into the input) */
	size_t len;
	unsigned cols, rows; /* FRAME_RESIZE */
};

/* Parses a client→server frame: data of at most TERMINAL_FRAME_MAX bytes or
 * a resize of sizes within 1..TERMINAL_SIZE_MAX. 0 or ERR_INVAL. */
int frame_parse_client(const uint8_t *buf, size_t len, struct frame *out);
/* Writes the exit frame for wait status `status` (128+signal for a signal
 * death) into buf; returns its length (buf of at least 32 bytes). */
size_t frame_exit(char *buf, size_t cap, int code);
/* The exit code the exit frame reports for a wait(2) status. */
int frame_exit_code(int status);

/* ---- spawner_client.c: the process that starts shells (spawner.c) ---------- */

struct spawner;

struct spawner_conf {
	/* A shell runs as one uid of first..last (never 0), its gid the same
	 * number (as root; else our own gid): MAGNETAR_TERMINAL_UIDS. */
	uid_t uid_first, uid_last;
	/* As root: the spawner's own ids (the service's user), to which it
	 * drops keeping CAP_SETUID/CAP_SETGID alone. Unused without root. */
	bool privileged;
	uid_t self_uid;
	gid_t self_gid;
	const struct validate_policy *policy; /* re-checked in the spawner */
};

/* Called from the spawner client's thread when a shell exits. */
typedef void (*spawner_exit_fn)(void *arg, pid_t pid, int status);

/*
 * Forks the spawner. Call before any thread exists and before anything
 * privileged or secret is opened: the child keeps only the socket to us.
 * `sc` is copied (the policy must stay valid: the child has its own copy of
 * the memory). 0 or ERR_IO.
 */
int spawner_start(const struct spawner_conf *sc, struct spawner **out);
/* Starts the thread that reads the spawner's answers. */
int spawner_run(struct spawner *sp, spawner_exit_fn on_exit, void *arg);
/*
 * Starts `exec_path` (argv[0] `shell`) in `cwd` in a new PTY of cols×rows,
 * as `uid` (one of the range: the user's, store_shell_uid). An empty `cwd`
 * is the user's home (a range uid's private one, <first root>/.home/<uid>)
 * or, for a uid with an account, the first root. On success *pid is the
 * shell (a session and process group leader, and the subreaper of
 * everything it starts), *master the PTY master (caller's,
 * O_NONBLOCK|O_CLOEXEC) and used_cwd the directory it started in. ERR_PERM
 * when the spawner refused the request or the shell user may not enter cwd.
 */
int spawner_spawn(struct spawner *sp, const char *exec_path, const char *shell, const char *cwd,
                  uid_t uid, unsigned cols, unsigned rows, pid_t *pid, int *master,
                  char used_cwd[PATH_MAX]);
/* Hangs up every process of the shell's session, SIGKILL after a grace;
 * when the shell is gone, whatever it left behind (docs/terminal.md). */
int spawner_kill(struct spawner *sp, pid_t pid);
/* Closes the socket (the spawner kills every shell and exits), waits for it. */
void spawner_stop(struct spawner *sp);
/* The seccomp filters, loaded in the calling process (no_new_privs first):
 * the spawner's (identity changes only to the range, namespaces never) and
 * the one each shell adds (no cross-process calls, namespaces never). The
 * spawner loads them itself; public for tests/unit/terminal_spawner_test.c.
 * 0 or ERR_PERM/ERR_NOMEM. */
int spawner_filter(const struct spawner_conf *sc);
int spawner_shell_filter(void);

/* ---- session.c: the live terminals ----------------------------------------- */

struct session;

struct terminal {
	struct svc svc; /* first: the generic Ping/Stats handlers use it */
	struct validate_policy policy;
	struct spawner *spawner;
	uid_t uid_first, uid_last; /* MAGNETAR_TERMINAL_UIDS, checked at start */
	pthread_mutex_t mu;        /* the list, and each session's state fields */
	pthread_cond_t cv;         /* sessions freed; the reaper's sleep */
	struct session *sessions;
	int nsessions; /* in the list (open) */
	int nobjects;  /* allocated, listed or still tearing down */
	bool stopping;
	pthread_t reaper;
	/* stream.c: the socket every terminal's stream connects to. */
	char stream_path[108];
	int stream_fd;
	pthread_t stream_thread;
	_Atomic bool stream_stop;
	_Atomic uint64_t stream_refused;
	_Atomic uint64_t opened, closed, denied, bytes_in, bytes_out, revoked;
	/* revoke.c: auth's events and the resync through its Revoked RPC. */
	struct rpc_client *auth;
	struct events_sub *revoke_sub;
	pthread_mutex_t revoke_mu;
	pthread_cond_t revoke_cv;
	pthread_t revoke_thread;
	bool revoke_stale, revoke_stop, revoke_running;
};

/* The service's own variables (vars.h), parsed by svc_init. */
static inline const struct terminal_vars *terminal_vars(const struct terminal *t)
{
	return t->svc.conf.own;
}

/* ---- revoke.c: a revoked auth session closes its terminals ----------------- */

/* Subscribes to auth's session.revoked and starts the resync thread. */
int revoke_start(struct terminal *t);
void revoke_stop(struct terminal *t);

/* Starts the reaper (idle, lifetime, detach and attach deadlines). */
int session_start(struct terminal *t);
/* Closes every terminal and waits until all are gone. */
void session_stop(struct terminal *t);
/* The spawner's exit callback (spawner_exit_fn). */
void session_on_exit(void *arg, pid_t pid, int status);

/* Closes (reason "revoked") every terminal opened under one of the `n` auth
 * session ids; returns how many. */
int session_close_revoked(struct terminal *t, const char *const *sids, size_t n);

/* ---- control.c: the RPC methods Open, List, Close, Attach ------------------ */

void control_open(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void control_list(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void control_close(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void control_attach(struct rpc_call *call, const ProtobufCMessage *in, void *arg);

/* What control.c asks of session.c. */
struct session_open {
	const char *user_id, *auth_session, *shell, *exec_path;
	const char *cwd; /* validated; "" for the user's home */
	unsigned cols, rows;
};
/* Reserves a slot, takes the user's shell uid (store_shell_uid: only once
 * no limit refused, so a refused Open uses up no uid), spawns, listens on
 * the stream, lists the session and records terminal.opened. Fills the
 * reply's info and ticket (buffers in `info_buf`). ERR_UNAVAIL: a limit
 * (too_many_terminals); ERR_NOTFOUND: no shell uid left
 * (shell_uids_exhausted); ERR_PERM: the spawner refused (cwd not
 * enterable as the shell user). */
struct session_info {
	char id[TERMINAL_ID_LEN];
	char user_id[TERMINAL_USER_MAX];
	char shell[TERMINAL_SHELL_MAX];
	char cwd[PATH_MAX];
	char state[16];
	unsigned cols, rows;
	uint64_t created_ms, last_active_ms;
	pid_t pid;
};
int session_open(struct terminal *t, const struct session_open *o,
                 const Magnetar__RequestContext *ctx, struct session_info *info, char ticket[64]);
/* Up to `max` sessions of `user_id` (all when empty) into out; the count. */
int session_list(struct terminal *t, const char *user_id, struct session_info *out, int max);
/* Closes the terminal `id` if `user_id` (empty: anyone's) owns it. ERR_NOTFOUND. */
int session_close(struct terminal *t, const char *id, const char *user_id,
                  const Magnetar__RequestContext *ctx);
/* Consumes the ticket; fills a fresh stream key, good for one connection
 * to the stream socket. ERR_PERM (bad ticket), ERR_INVAL (user mismatch),
 * ERR_IO. */
int session_attach(struct terminal *t, const char *id, const char *ticket, const char *user_id,
                   uint8_t key[TERMINAL_KEY_LEN]);
/* Gives `fd` (a connection that showed `key` for terminal `id`) to that
 * terminal, which then owns it: 0, or ERR_PERM (no such pending terminal,
 * or not its key, or its key was spent) and the caller keeps fd. */
int session_take_stream(struct terminal *t, const char *id, const uint8_t *key, size_t key_len,
                        int fd);

/* ---- stream.c: the socket the gateway's streams connect to ----------------- */

/* Listens on <run dir>/terminal.stream-<replica>.sock (before the drop of
 * privileges, like the RPC socket) and starts the thread that accepts. */
int stream_start(struct terminal *t);
void stream_stop(struct terminal *t);

/* ---- store.c — the only file that includes sqlite3.h ------------------------ */
extern const struct pool_schema store_schema;

/* Records one audit event (in its own transaction). */
int store_audit(struct pool *pool, const char *action, const char *actor, const char *target,
                const Magnetar__RequestContext *ctx, const char *outcome, const char *detail);
/* The terminal's row and terminal.opened, in one transaction. */
int store_opened(struct pool *pool, const struct session_info *s,
                 const Magnetar__RequestContext *ctx);
/* The shell uid of `user_id`: the one recorded, else the next of
 * first..last never given to anyone, recorded in the same transaction (a
 * uid is never reused for another user). ERR_NOTFOUND: none left, or the
 * recorded one lies outside first..last (the range was changed). */
int store_shell_uid(struct pool *pool, const char *user_id, uid_t first, uid_t last, uid_t *uid);
/* Closes the row and records terminal.closed with `reason`, one transaction. */
int store_closed(struct pool *pool, const char *id, const char *user_id, const char *reason,
                 int exit_code);

#endif
