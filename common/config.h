/*
 * config.h — the MAGNETAR_* environment, parsed once into struct conf and
 * into the program's own variables.
 *
 * Two kinds of table, one row per variable: common's (conf_vars, what every
 * program or several read: environment, directories, URLs, users) and each
 * program's own (a struct conf_table in its folder's vars.c, parsed into a
 * struct of its own). A row names the variable, its type, its default and
 * its bounds; the parser, the redacted print-out and the supervisor (which
 * hands each service only what that service reads) all walk the tables, so
 * a new variable is one line in its program's table.
 *
 * Secrets are also accepted as NAME_FILE; after parsing, a secret's bytes are
 * wiped from the environment and the variable unset, and conf_fini() wipes
 * the copies held here.
 */
#ifndef MAGNETAR_CONFIG_H
#define MAGNETAR_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The programs of Magnetar. The first five own an RPC socket. */
enum svc_id {
	SVC_GATEWAY,
	SVC_AUTH,
	SVC_AUDIT,
	SVC_BREACH,
	SVC_TERMINAL,
	SVC_MAGCTL,
	SVC_SUPERVISOR,
	SVC_PROGRAMS
};
#define SVC_SERVICES 5 /* gateway .. terminal */

/* "gateway", "auth", ... ; NULL outside the range. */
const char *svc_name(enum svc_id id);
/* SVC_* for a name, or -1. */
int svc_lookup(const char *name);

enum conf_env { CONF_ENV_DEVELOPMENT, CONF_ENV_TEST, CONF_ENV_PRODUCTION };
enum conf_sandbox { CONF_SANDBOX_ENFORCE, CONF_SANDBOX_LOG, CONF_SANDBOX_OFF };

struct conf_table;

struct conf {
	enum svc_id who;
	enum conf_env env;
	enum conf_sandbox sandbox;
	bool log_json;

	/* Strings below are owned by the struct (NULL when unset and no default). */
	char *data_dir;
	char *run_dir;
	char *url[SVC_SERVICES]; /* RPC URL of each service */
	/* Each publisher's pub socket (auth's and audit's); NULL for a
	 * service that publishes nothing. */
	char *events_url[SVC_SERVICES];
	/* Privilege separation (common/privsep.c): each service's system user
	 * when started as root (MAGNETAR_<SVC>_USER, default magnetar-<svc>),
	 * and the group of the processes that may enter the run dir. */
	char *user[SVC_SERVICES];
	char *ipc_group; /* MAGNETAR_IPC_GROUP (magnetar) */
	/* Secret (auth and the gateways: common/fingerprint.c), wiped by conf_fini. */
	char *fingerprint_key;

	/* The program's own variables: its table, and the struct it fills
	 * (allocated by conf_load, released by conf_fini). */
	const struct conf_table *own_table;
	void *own;
};

/* How a row's value is parsed, and what it fills at `offset`. */
enum conf_kind {
	CONF_TEXT,   /* char *, as given (or `def`) */
	CONF_INT,    /* int, decimal in [lo, hi], nothing else */
	CONF_CHOICE, /* int, the index of the value in `choices`; -1 unset, no def */
	CONF_ADDR,   /* struct conf_addr: host:port or [v6]:port */
	CONF_URLS,   /* char *: an ipc://, tcp://host:port or inproc:// URL, or up
	              * to 8 of them comma-separated (replicas: rpc.h) */
	CONF_RAW,    /* nothing: the program reads the environment itself */
};

/* A CONF_ADDR value: the text as given, and its parts. */
struct conf_addr {
	char *text; /* NULL when unset and no default */
	char *host;
	uint16_t port;
};

#define CONF_SECRET 0x1u   /* redacted, wiped, also read from NAME_FILE */
#define CONF_REQUIRED 0x2u /* in production, by the program that owns it */

/* One row of a variable table. */
struct conf_var {
	const char *name;           /* MAGNETAR_... */
	enum conf_kind kind;        /* of the field at `offset` */
	size_t offset;              /* in struct conf (common) or the program's struct */
	const char *def;            /* default, parsed like a value; NULL: none */
	long lo, hi;                /* CONF_INT bounds */
	const char *const *choices; /* CONF_CHOICE: NULL-terminated */
	unsigned flags;             /* CONF_SECRET, CONF_REQUIRED */
	const char *help;           /* one line for docs and `-n` output */
	const char *file_alias;     /* another accepted name of NAME_FILE, or NULL */
	unsigned readers;           /* common's rows: bit (1u << SVC_*) per reader */
};

/* A program's own variables: the rows, the struct they fill, and the rules
 * between them (derived fields, refusals no single row can state). */
struct conf_table {
	const char *program; /* "gateway", ... */
	const struct conf_var *vars;
	size_t nvars;
	size_t size; /* of the struct the rows' offsets point into */
	/* After every row parsed; 0, or ERR_CONFIG with one sentence in err. */
	int (*check)(void *values, const struct conf *c, char *err, size_t errlen);
};

#define CONF_TABLE(prog, rows, type, check_fn)                                                     \
	{                                                                                          \
		.program = (prog), .vars = (rows), .nvars = sizeof(rows) / sizeof((rows)[0]),      \
		.size = sizeof(type), .check = (check_fn)                                          \
	}

/* Longest MAGNETAR_RUN_DIR: every socket path must fit a sockaddr_un. */
#define CONF_RUN_DIR_MAX 80

extern const struct conf_var conf_vars[];
extern const size_t conf_nvars;

/* True when program `who` reads common's variable `v`. */
bool conf_var_read_by(const struct conf_var *v, enum svc_id who);
static inline bool conf_var_secret(const struct conf_var *v)
{
	return (v->flags & CONF_SECRET) != 0;
}

/*
 * Parses the environment for program `who`: common's variables into `c`,
 * and those of `own` (the program's table, or NULL) into a struct it
 * allocates (c->own). On success returns 0 and `c` owns its strings
 * (release with conf_fini). On refusal returns ERR_CONFIG, writes one clear
 * sentence naming the variable into err, and leaves `c` empty.
 */
int conf_load(struct conf *c, enum svc_id who, const struct conf_table *own, char *err,
              size_t errlen);

/*
 * Parses table `t` on its own into a struct it allocates (*values), as for
 * a program that does not own it (the supervisor checks every program's
 * variables this way): no production requirement, nothing scrubbed.
 * 0 or ERR_CONFIG with err set; release with conf_table_free.
 */
int conf_table_load(const struct conf *c, const struct conf_table *t, void **values, char *err,
                    size_t errlen);
void conf_table_free(const struct conf_table *t, void *values);

/* Logs every variable `c->who` reads, secrets as <redacted>. */
void conf_print(const struct conf *c);
/* Logs table `t`'s variables, secrets as <redacted>. */
void conf_print_table(const struct conf_table *t, const void *values);

/* Releases the strings, wiping secrets first. Accepts a zeroed struct. */
void conf_fini(struct conf *c);

/* "<data_dir>/<svc>" into buf; returns 0 or ERR_INVAL if it does not fit. */
int conf_service_dir(const struct conf *c, enum svc_id svc, char *buf, size_t len);

const char *conf_env_name(enum conf_env env);

/* Shared by tables' checks: one sentence into err, ERR_CONFIG. */
int conf_refuse(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A decimal integer in [lo, hi] with nothing after it: 0 or ERR_INVAL. */
int conf_int(const char *s, long lo, long hi, long *out);

#endif
