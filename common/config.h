/*
 * config.h — the MAGNETAR_* environment, parsed once into struct conf.
 *
 * One table (conf_vars) names every variable, which programs read it and
 * whether it is a secret. The parser, the redacted print-out and the
 * supervisor (which hands each service only what that service reads) all
 * walk the same table, so a new variable is one line.
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
enum conf_hibp_mode { CONF_HIBP_ONLINE, CONF_HIBP_OFFLINE, CONF_HIBP_OFF };

struct conf {
	enum svc_id who;
	enum conf_env env;
	enum conf_sandbox sandbox;
	bool log_json;
	bool registration_open;
	bool breach_fail_closed;
	enum conf_hibp_mode hibp_mode;
	int max_sessions;
	/* MAGNETAR_TERMINAL_UIDS: one uid per user from first..last, never 0;
	 * both 0 when unset (the service picks its default). */
	uid_t terminal_uid_first, terminal_uid_last;
	int terminal_idle_s;     /* MAGNETAR_TERMINAL_IDLE_S: no byte either way (900) */
	int terminal_lifetime_s; /* MAGNETAR_TERMINAL_LIFETIME_S: absolute (43200) */
	int terminal_per_user;   /* MAGNETAR_TERMINAL_MAX_PER_USER (3) */
	int terminal_max;        /* MAGNETAR_TERMINAL_MAX: all users (32) */

	/* Strings below are owned by the struct (NULL when unset and no default). */
	char *http_addr;
	char *http_host; /* parsed from http_addr */
	uint16_t http_port;
	char *metrics_addr;
	char *redirect_addr; /* MAGNETAR_HTTP_REDIRECT_ADDR: http -> https, with TLS only */
	char *data_dir;
	char *run_dir;
	char *url[SVC_SERVICES]; /* RPC URL of each service */
	char *auth_events_url;   /* auth's pub socket */
	char *audit_events_url;  /* audit's pub socket */
	char *hibp_url;
	char *cors_origins;
	char *trusted_proxies;
	char *terminal_shells;
	char *terminal_roots;
	char *tls_cert;
	char *tls_key;
	char *founder_username;
	/* Privilege separation (common/privsep.c): each service's system user
	 * when started as root (MAGNETAR_<SVC>_USER, default magnetar-<svc>),
	 * and the group of the processes that may enter the run dir. */
	char *user[SVC_SERVICES];
	char *ipc_group; /* MAGNETAR_IPC_GROUP (magnetar) */
	/* Secrets: never logged, wiped by conf_fini(). */
	char *founder_password;
	char *audit_keys;
	char *totp_key;
	char *fingerprint_key;
};

/* One row of the variable table. */
struct conf_var {
	const char *name;       /* MAGNETAR_... */
	unsigned readers;       /* bit (1u << SVC_*) per program that reads it */
	bool secret;            /* redacted, wiped, also read from NAME_FILE */
	size_t offset;          /* of the char * in struct conf */
	const char *help;       /* one line for docs and `-n` output */
	const char *file_alias; /* another accepted name of NAME_FILE, or NULL */
};

/* Longest MAGNETAR_RUN_DIR: every socket path must fit a sockaddr_un. */
#define CONF_RUN_DIR_MAX 80

extern const struct conf_var conf_vars[];
extern const size_t conf_nvars;

/* True when program `who` reads variable `v` (the supervisor's filter). */
bool conf_var_read_by(const struct conf_var *v, enum svc_id who);

/*
 * Parses the environment for program `who`. On success returns 0 and `c`
 * owns its strings (release with conf_fini). On refusal returns ERR_CONFIG,
 * writes one clear sentence naming the variable into err, and leaves `c`
 * empty (nothing to release).
 */
int conf_load(struct conf *c, enum svc_id who, char *err, size_t errlen);

/* Logs every variable `c->who` reads, secrets as <redacted>. */
void conf_print(const struct conf *c);

/* Releases the strings, wiping secrets first. Accepts a zeroed struct. */
void conf_fini(struct conf *c);

/* "<data_dir>/<svc>" into buf; returns 0 or ERR_INVAL if it does not fit. */
int conf_service_dir(const struct conf *c, enum svc_id svc, char *buf, size_t len);

const char *conf_env_name(enum conf_env env);

#endif
