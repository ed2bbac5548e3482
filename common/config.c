/*
 * config.c — parses and validates the MAGNETAR_* environment (config.h).
 * Common's variables: copied into struct conf (reading NAME_FILE for
 * secrets), then defaults and refusals that name the variable. A program's
 * table: every row parsed by its kind into the program's struct, then the
 * table's own check.
 */
#include "common/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"

#define B(s) (1u << (s))
#define ALL                                                                                        \
	(B(SVC_GATEWAY) | B(SVC_AUTH) | B(SVC_AUDIT) | B(SVC_BREACH) | B(SVC_TERMINAL) |           \
	 B(SVC_MAGCTL) | B(SVC_SUPERVISOR))
#define SUP B(SVC_SUPERVISOR)
#define F(field) offsetof(struct conf, field)
#define SECRET_FILE_MAX 65536

static const char *const svc_names[SVC_PROGRAMS] = {
    [SVC_GATEWAY] = "gateway",     [SVC_AUTH] = "auth",         [SVC_AUDIT] = "audit",
    [SVC_BREACH] = "breach",       [SVC_TERMINAL] = "terminal", [SVC_MAGCTL] = "magctl",
    [SVC_SUPERVISOR] = "magnetar",
};

#define ROW(name, field, help)                                                                     \
	{                                                                                          \
		name, CONF_TEXT, F(field), NULL, 0, 0, NULL, 0, help, NULL, ALL                    \
	}
#define RAW(name, help)                                                                            \
	{                                                                                          \
		name, CONF_RAW, SIZE_MAX, NULL, 0, 0, NULL, 0, help, NULL, ALL                     \
	}

/* Variables every program, or several, read. A program's own are in its
 * folder's vars.c. */
const struct conf_var conf_vars[] = {
    RAW("MAGNETAR_ENV", "development, test or production"),
    RAW("MAGNETAR_LOG_FORMAT", "text or json"),
    RAW("MAGNETAR_SANDBOX", "enforce, log or off"),
    ROW("MAGNETAR_DATA_DIR", data_dir, "parent of each service's data dir"),
    ROW("MAGNETAR_RUN_DIR", run_dir, "IPC socket dir"),
    ROW("MAGNETAR_GATEWAY_URL", url[SVC_GATEWAY], "gateway's RPC URL"),
    ROW("MAGNETAR_AUTH_URL", url[SVC_AUTH], "auth's RPC URL"),
    ROW("MAGNETAR_AUDIT_URL", url[SVC_AUDIT], "audit's RPC URL"),
    ROW("MAGNETAR_BREACH_URL", url[SVC_BREACH], "breach's RPC URL"),
    ROW("MAGNETAR_TERMINAL_URL", url[SVC_TERMINAL], "terminal's RPC URL"),
    ROW("MAGNETAR_AUTH_EVENTS_URL", events_url[SVC_AUTH], "auth's event publisher"),
    ROW("MAGNETAR_AUDIT_EVENTS_URL", events_url[SVC_AUDIT], "audit's event publisher"),
    {"MAGNETAR_FINGERPRINT_KEY", CONF_TEXT, F(fingerprint_key), NULL, 0, 0, NULL,
     CONF_SECRET | CONF_REQUIRED, "key of the fingerprint hashes", NULL,
     B(SVC_AUTH) | B(SVC_GATEWAY) | SUP},
    /* The reliability suite (common/fault.c): MAGNETAR_ENV=test only. */
    RAW("MAGNETAR_FAULT_SQLITE_IOERR",
        "test only: every Nth SQLite write or sync fails with an I/O error"),
    RAW("MAGNETAR_FAULT_SQLITE_BUSY", "test only: every Nth SQLite lock upgrade is busy"),
    RAW("MAGNETAR_FAULT_SQLITE_NOMEM", "test only: every Nth SQLite allocation fails"),
    RAW("MAGNETAR_FAULT_ALLOC", "test only: every Nth allocation by Magnetar's own code fails"),
    /* Everyone reads every user name: a service's peer allow-lists are uids. */
    ROW("MAGNETAR_GATEWAY_USER", user[SVC_GATEWAY], "gateway's user (as root)"),
    ROW("MAGNETAR_AUTH_USER", user[SVC_AUTH], "auth's user (as root)"),
    ROW("MAGNETAR_AUDIT_USER", user[SVC_AUDIT], "audit's user (as root)"),
    ROW("MAGNETAR_BREACH_USER", user[SVC_BREACH], "breach's user (as root)"),
    ROW("MAGNETAR_TERMINAL_USER", user[SVC_TERMINAL], "terminal's user (as root)"),
    ROW("MAGNETAR_IPC_GROUP", ipc_group, "group allowed into the run dir (as root)"),
};
const size_t conf_nvars = sizeof(conf_vars) / sizeof(conf_vars[0]);

const char *svc_name(enum svc_id id)
{
	if ((int)id < 0 || id >= SVC_PROGRAMS)
		return NULL;
	return svc_names[id];
}

int svc_lookup(const char *name)
{
	for (int i = 0; i < SVC_PROGRAMS; i++)
		if (strcmp(svc_names[i], name) == 0)
			return i;
	return -1;
}

bool conf_var_read_by(const struct conf_var *v, enum svc_id who)
{
	return (v->readers & B(who)) != 0;
}

const char *conf_env_name(enum conf_env env)
{
	switch (env) {
	case CONF_ENV_TEST:
		return "test";
	case CONF_ENV_PRODUCTION:
		return "production";
	default:
		return "development";
	}
}

int conf_refuse(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return ERR_CONFIG;
}

/* Overwrites a variable's value in the process environment before unsetting
 * it: unsetenv alone leaves the bytes in the initial stack for a core dump
 * to find. */
static void conf_scrub_env(const char *name)
{
	char *v = getenv(name);
	if (v != NULL)
		OPENSSL_cleanse(v, strlen(v));
	unsetenv(name);
}

/* Reads a secret file whole, strips one trailing newline. */
static int conf_read_secret_file(const char *path, char **out)
{
	char *buf = NULL;
	size_t len = 0;
	int fd, rv = ERR_IO;
	struct stat st;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return ERR_IO;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > SECRET_FILE_MAX)
		goto fail;
	if ((buf = malloc((size_t)st.st_size + 1)) == NULL) {
		rv = ERR_NOMEM;
		goto fail;
	}
	while (len < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto fail;
		len += (size_t)n;
	}
	if (len > 0 && buf[len - 1] == '\n')
		len--;
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	buf[len] = '\0';
	close(fd);
	*out = buf;
	return 0;
fail:
	if (buf != NULL) {
		OPENSSL_cleanse(buf, len);
		free(buf);
	}
	close(fd);
	return rv;
}

/* Copies one variable (or its _FILE form) into *slot. */
static int conf_take(const struct conf_var *v, char **slot, char *err, size_t errlen)
{
	char filevar[96];
	const char *val = getenv(v->name);
	const char *path;
	int rv;

	if (conf_var_secret(v)) {
		snprintf(filevar, sizeof(filevar), "%s_FILE", v->name);
		path = getenv(filevar);
		if (path == NULL && v->file_alias != NULL && (path = getenv(v->file_alias)) != NULL)
			snprintf(filevar, sizeof(filevar), "%s", v->file_alias);
		if (val != NULL && path != NULL)
			return conf_refuse(err, errlen, "%s and %s are both set; set one", v->name,
			                   filevar);
		if (path != NULL) {
			if ((rv = conf_read_secret_file(path, slot)) != 0)
				return conf_refuse(err, errlen,
				                   "%s: cannot read the secret file (%s)", filevar,
				                   err_str(rv));
			return 0;
		}
	}
	if (val == NULL)
		return 0;
	if ((*slot = strdup(val)) == NULL)
		return conf_refuse(err, errlen, "out of memory");
	return 0;
}

/* Matches `s` against a NULL-terminated list; returns its index or -1. */
static int conf_choice(const char *s, const char *const *choices)
{
	for (int i = 0; choices[i] != NULL; i++)
		if (strcmp(s, choices[i]) == 0)
			return i;
	return -1;
}

int conf_int(const char *s, long lo, long hi, long *out)
{
	char *end;
	long n;

	if (s[0] == '\0' || s[0] == '+' || s[0] == '-' || s[0] == ' ')
		return ERR_INVAL;
	errno = 0;
	n = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || n < lo || n > hi)
		return ERR_INVAL;
	*out = n;
	return 0;
}

/* "host:port" or "[v6]:port" into host and port (0..65535). */
static int conf_parse_addr(const char *addr, char **host, uint16_t *port)
{
	const char *colon;
	size_t hlen;
	long p;

	if (addr[0] == '[') {
		const char *close = strchr(addr, ']');
		if (close == NULL || close[1] != ':')
			return ERR_INVAL;
		colon = close + 1;
		addr++;
		hlen = (size_t)(close - addr);
	} else {
		colon = strrchr(addr, ':');
		if (colon == NULL || memchr(addr, ':', (size_t)(colon - addr)) != NULL)
			return ERR_INVAL;
		hlen = (size_t)(colon - addr);
	}
	if (hlen == 0 || hlen > 253 || conf_int(colon + 1, 0, 65535, &p) != 0)
		return ERR_INVAL;
	if ((*host = strndup(addr, hlen)) == NULL)
		return ERR_NOMEM;
	*port = (uint16_t)p;
	return 0;
}

static bool conf_valid_one_url(const char *u, size_t n)
{
	return (n > 6 && strncmp(u, "ipc://", 6) == 0) ||
	       (n > 6 && strncmp(u, "tcp://", 6) == 0 && memchr(u + 6, ':', n - 6) != NULL) ||
	       (n > 9 && strncmp(u, "inproc://", 9) == 0);
}

/* One nng URL, or a comma-separated list of them (replicas: rpc.h). */
static bool conf_valid_nng_url(const char *u)
{
	for (size_t entries = 1;; entries++) {
		size_t n = strcspn(u, ",");
		if (entries > 8 || n >= 512 || !conf_valid_one_url(u, n))
			return false;
		if (u[n] == '\0')
			return true;
		u += n + 1;
	}
}

static int conf_default(char **slot, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int conf_default(char **slot, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*slot != NULL)
		return 0;
	va_start(ap, fmt);
	n = vasprintf(slot, fmt, ap);
	va_end(ap);
	if (n < 0) {
		*slot = NULL;
		return ERR_NOMEM;
	}
	return 0;
}

/* "a, b or c": the choices, as a refusal names them. */
static void conf_choices_text(const char *const *choices, char *out, size_t len)
{
	size_t used = 0;
	out[0] = '\0';
	for (int i = 0; choices[i] != NULL && used < len; i++) {
		const char *sep = i == 0 ? "" : choices[i + 1] == NULL ? " or " : ", ";
		int n = snprintf(out + used, len - used, "%s%s", sep, choices[i]);
		if (n < 0)
			break;
		used += (size_t)n;
	}
}

/* Fills common's defaults and derived fields, and refuses what is invalid. */
static int conf_validate(struct conf *c, char *err, size_t errlen)
{
	static const char *const envs[] = {"development", "test", "production", NULL};
	static const char *const sandboxes[] = {"enforce", "log", "off", NULL};
	static const char *const formats[] = {"text", "json", NULL};
	const char *s;
	int i;

	if ((s = getenv("MAGNETAR_ENV")) != NULL) {
		if ((i = conf_choice(s, envs)) < 0)
			return conf_refuse(err, errlen,
			                   "MAGNETAR_ENV must be development, test or production");
		c->env = (enum conf_env)i;
	}
	if ((s = getenv("MAGNETAR_LOG_FORMAT")) != NULL) {
		if ((i = conf_choice(s, formats)) < 0)
			return conf_refuse(err, errlen, "MAGNETAR_LOG_FORMAT must be text or json");
		c->log_json = i == 1;
	}
	if ((s = getenv("MAGNETAR_SANDBOX")) != NULL) {
		if ((i = conf_choice(s, sandboxes)) < 0)
			return conf_refuse(err, errlen,
			                   "MAGNETAR_SANDBOX must be enforce, log or off");
		c->sandbox = (enum conf_sandbox)i;
	}
	if (c->env == CONF_ENV_PRODUCTION && c->sandbox != CONF_SANDBOX_ENFORCE)
		return conf_refuse(err, errlen,
		                   "MAGNETAR_SANDBOX=%s is refused when MAGNETAR_ENV=production",
		                   sandboxes[c->sandbox]);

	if (conf_default(&c->data_dir, "./var") != 0 || conf_default(&c->run_dir, "./run") != 0 ||
	    conf_default(&c->events_url[SVC_AUTH], "ipc://%s/auth-events.sock", c->run_dir) != 0 ||
	    conf_default(&c->events_url[SVC_AUDIT], "ipc://%s/audit-events.sock", c->run_dir) != 0)
		return conf_refuse(err, errlen, "out of memory");
	for (i = 0; i < SVC_SERVICES; i++)
		if (conf_default(&c->url[i], "ipc://%s/%s.sock", c->run_dir, svc_names[i]) != 0)
			return conf_refuse(err, errlen, "out of memory");
	for (i = 0; i < SVC_SERVICES; i++)
		if (conf_default(&c->user[i], "magnetar-%s", svc_names[i]) != 0)
			return conf_refuse(err, errlen, "out of memory");
	if (conf_default(&c->ipc_group, "magnetar") != 0)
		return conf_refuse(err, errlen, "out of memory");
	if (c->data_dir[0] == '\0' || c->run_dir[0] == '\0')
		return conf_refuse(err, errlen,
		                   "MAGNETAR_DATA_DIR and MAGNETAR_RUN_DIR may not be empty");
	if (strlen(c->run_dir) > CONF_RUN_DIR_MAX)
		return conf_refuse(
		    err, errlen,
		    "MAGNETAR_RUN_DIR is too long for a unix socket path (80 bytes max)");

	for (i = 0; i < SVC_SERVICES; i++) {
		char up[16];
		if (conf_valid_nng_url(c->url[i]))
			continue;
		for (size_t k = 0; k < sizeof(up); k++)
			if ((up[k] = (char)toupper((unsigned char)svc_names[i][k])) == '\0')
				break;
		up[sizeof(up) - 1] = '\0';
		return conf_refuse(err, errlen,
		                   "MAGNETAR_%s_URL must be an ipc://, tcp://host:port or "
		                   "inproc:// URL, or a comma-separated list of up to 8 (replicas)",
		                   up);
	}
	if (!conf_valid_nng_url(c->events_url[SVC_AUTH]) ||
	    !conf_valid_nng_url(c->events_url[SVC_AUDIT]))
		return conf_refuse(
		    err, errlen,
		    "MAGNETAR_*_EVENTS_URL must be an ipc://, "
		    "tcp://host:port or inproc:// URL, or a comma-separated list of up to 8");
	if (c->env == CONF_ENV_PRODUCTION) {
		struct stat st;
		if (stat(c->data_dir, &st) == 0 && (st.st_mode & S_IWOTH) != 0)
			return conf_refuse(
			    err, errlen,
			    "MAGNETAR_DATA_DIR is world-writable; refused in production");
	}
	return 0;
}

/* Parses one row of a program's table into `values`. */
static int conf_parse_row(const struct conf_var *v, void *values, char *err, size_t errlen)
{
	char *field, names[128];
	const char *s;
	long n;
	int rv, i;

	if (v->kind == CONF_RAW)
		return 0; /* offset SIZE_MAX: no field */
	field = (char *)values + v->offset;
	if (v->kind == CONF_TEXT || v->kind == CONF_URLS) {
		char **slot = (char **)(void *)field;
		if ((rv = conf_take(v, slot, err, errlen)) != 0)
			return rv;
		if (*slot == NULL && v->def != NULL && (*slot = strdup(v->def)) == NULL)
			return conf_refuse(err, errlen, "out of memory");
		if (v->kind == CONF_URLS && *slot != NULL && !conf_valid_nng_url(*slot))
			return conf_refuse(
			    err, errlen,
			    "%s must be an ipc://, tcp://host:port or inproc:// URL, "
			    "or a comma-separated list of up to 8",
			    v->name);
		return 0;
	}
	if (v->kind == CONF_ADDR) {
		struct conf_addr *a = (struct conf_addr *)(void *)field;
		if ((rv = conf_take(v, &a->text, err, errlen)) != 0)
			return rv;
		if (a->text == NULL && v->def != NULL && (a->text = strdup(v->def)) == NULL)
			return conf_refuse(err, errlen, "out of memory");
		if (a->text == NULL)
			return 0;
		if ((rv = conf_parse_addr(a->text, &a->host, &a->port)) == ERR_NOMEM)
			return conf_refuse(err, errlen, "out of memory");
		return rv != 0 ? conf_refuse(err, errlen, "%s must be host:port", v->name) : 0;
	}
	/* CONF_INT and CONF_CHOICE: an int, from the value or the default. */
	if ((s = getenv(v->name)) == NULL)
		s = v->def;
	if (v->kind == CONF_INT) {
		*(int *)(void *)field = 0;
		if (s == NULL)
			return 0;
		if (conf_int(s, v->lo, v->hi, &n) != 0)
			return conf_refuse(err, errlen, "%s must be an integer from %ld to %ld",
			                   v->name, v->lo, v->hi);
		*(int *)(void *)field = (int)n;
		return 0;
	}
	*(int *)(void *)field = -1;
	if (s == NULL)
		return 0;
	if ((i = conf_choice(s, v->choices)) < 0) {
		conf_choices_text(v->choices, names, sizeof(names));
		return conf_refuse(err, errlen, "%s must be %s", v->name, names);
	}
	*(int *)(void *)field = i;
	return 0;
}

void conf_table_free(const struct conf_table *t, void *values)
{
	if (t == NULL || values == NULL)
		return;
	for (size_t i = 0; i < t->nvars; i++) {
		const struct conf_var *v = &t->vars[i];
		char *field, **slot;
		if (v->kind == CONF_RAW)
			continue;
		field = (char *)values + v->offset;
		if (v->kind == CONF_ADDR) {
			struct conf_addr *a = (struct conf_addr *)(void *)field;
			free(a->host);
			slot = &a->text;
		} else if (v->kind == CONF_TEXT || v->kind == CONF_URLS) {
			slot = (char **)(void *)field;
		} else {
			continue;
		}
		if (*slot != NULL && conf_var_secret(v))
			OPENSSL_cleanse(*slot, strlen(*slot));
		free(*slot);
	}
	OPENSSL_cleanse(values, t->size);
	free(values);
}

int conf_table_load(const struct conf *c, const struct conf_table *t, void **values, char *err,
                    size_t errlen)
{
	void *v;
	int rv = 0;

	*values = NULL;
	if ((v = calloc(1, t->size)) == NULL)
		return conf_refuse(err, errlen, "out of memory");
	for (size_t i = 0; i < t->nvars && rv == 0; i++)
		rv = conf_parse_row(&t->vars[i], v, err, errlen);
	if (rv == 0 && t->check != NULL)
		rv = t->check(v, c, err, errlen);
	if (rv != 0) {
		conf_table_free(t, v);
		return rv;
	}
	*values = v;
	return 0;
}

/* Production refuses to run on secrets it would otherwise invent. */
static int conf_require(const struct conf_var *v, const char *value, char *err, size_t errlen)
{
	if ((v->flags & CONF_REQUIRED) == 0 || (value != NULL && value[0] != '\0'))
		return 0;
	return conf_refuse(err, errlen, "%s (or %s_FILE) is required when MAGNETAR_ENV=production",
	                   v->name, v->name);
}

/* A value of table row `v` in `values`, as text (NULL: unset or not text). */
static const char *conf_row_text(const struct conf_var *v, const void *values)
{
	/* Kind first: a raw row's offset is SIZE_MAX, no field. */
	if (v->kind == CONF_ADDR)
		return ((const struct conf_addr *)(const void *)((const char *)values + v->offset))
		    ->text;
	if (v->kind == CONF_TEXT || v->kind == CONF_URLS)
		return *(char *const *)(const void *)((const char *)values + v->offset);
	return NULL;
}

/* True when `name` is one of the variables `c`'s program declares (NAME,
 * and for a secret NAME_FILE and its alias). */
static bool conf_declared_in(const struct conf_var *rows, size_t n, const char *name, size_t len,
                             enum svc_id who, bool common)
{
	for (size_t i = 0; i < n; i++) {
		const struct conf_var *v = &rows[i];
		size_t vl = strlen(v->name);
		if (common && !conf_var_read_by(v, who))
			continue;
		if (len == vl && memcmp(name, v->name, len) == 0)
			return true;
		if (conf_var_secret(v) && ((len == vl + 5 && memcmp(name, v->name, vl) == 0 &&
		                            memcmp(name + vl, "_FILE", 5) == 0) ||
		                           (v->file_alias != NULL && strlen(v->file_alias) == len &&
		                            memcmp(name, v->file_alias, len) == 0)))
			return true;
	}
	return false;
}

/*
 * A program keeps in its environment only what it reads: its own secrets
 * and every MAGNETAR_* variable it does not declare are wiped and unset
 * (another program's secret, handed to it by mistake, is not left for
 * /proc/<pid>/environ or a core dump). MAGNETAR_DEBUG stays: log_init
 * reads it. The NAME_FILE paths stay: audit re-reads its key file.
 */
static void conf_scrub(const struct conf *c)
{
	extern char **environ;

	for (size_t i = 0; i < conf_nvars; i++)
		if (conf_var_secret(&conf_vars[i]))
			conf_scrub_env(conf_vars[i].name);
	if (c->own_table != NULL)
		for (size_t i = 0; i < c->own_table->nvars; i++)
			if (conf_var_secret(&c->own_table->vars[i]))
				conf_scrub_env(c->own_table->vars[i].name);
	for (size_t i = 0; environ != NULL && environ[i] != NULL;) {
		char *e = environ[i], *eq = strchr(e, '='), *name;
		/* An entry without '=' holds no value, and unsetenv cannot
		 * remove it: passed over. */
		if (eq == NULL || strncmp(e, "MAGNETAR_", 9) != 0 ||
		    strncmp(e, "MAGNETAR_DEBUG=", 15) == 0 ||
		    conf_declared_in(conf_vars, conf_nvars, e, (size_t)(eq - e), c->who, true) ||
		    (c->own_table != NULL &&
		     conf_declared_in(c->own_table->vars, c->own_table->nvars, e, (size_t)(eq - e),
		                      c->who, false))) {
			i++;
			continue;
		}
		if ((name = strndup(e, (size_t)(eq - e))) == NULL) {
			OPENSSL_cleanse(eq + 1, strlen(eq + 1)); /* at least the value */
			i++;
			continue;
		}
		conf_scrub_env(name); /* environ[i] is now the next entry */
		free(name);
		if (environ[i] == e)
			i++; /* removed nothing: never loop on it */
	}
}

int conf_load(struct conf *c, enum svc_id who, const struct conf_table *own, char *err,
              size_t errlen)
{
	bool owner = who != SVC_SUPERVISOR && who != SVC_MAGCTL;
	int rv;

	memset(c, 0, sizeof(*c));
	c->who = who;
	c->env = CONF_ENV_DEVELOPMENT;
	for (size_t i = 0; i < conf_nvars; i++) {
		const struct conf_var *v = &conf_vars[i];
		if (v->offset == SIZE_MAX || !conf_var_read_by(v, who))
			continue;
		if ((rv = conf_take(v, (char **)((char *)c + v->offset), err, errlen)) != 0)
			goto fail;
	}
	if ((rv = conf_validate(c, err, errlen)) != 0)
		goto fail;
	if (own != NULL) {
		if ((rv = conf_table_load(c, own, &c->own, err, errlen)) != 0)
			goto fail;
		c->own_table = own;
	}
	if (c->env == CONF_ENV_PRODUCTION && owner) {
		for (size_t i = 0; i < conf_nvars; i++)
			if (conf_var_read_by(&conf_vars[i], who) &&
			    (rv = conf_require(&conf_vars[i],
			                       conf_vars[i].offset == SIZE_MAX
			                           ? NULL
			                           : *(char **)((char *)c + conf_vars[i].offset),
			                       err, errlen)) != 0)
				goto fail;
		for (size_t i = 0; own != NULL && i < own->nvars; i++)
			if ((rv = conf_require(&own->vars[i], conf_row_text(&own->vars[i], c->own),
			                       err, errlen)) != 0)
				goto fail;
	}
	/* The supervisor passes secrets on; every other program scrubs them. */
	if (who != SVC_SUPERVISOR)
		conf_scrub(c);
	return 0;
fail:
	conf_fini(c);
	return rv;
}

static void conf_print_row(const struct conf_var *v, const char *val)
{
	if (val == NULL)
		val = "<unset>";
	else if (conf_var_secret(v))
		val = "<redacted>";
	log_info("config %s=%s", v->name, val);
}

void conf_print_table(const struct conf_table *t, const void *values)
{
	for (size_t i = 0; i < t->nvars; i++) {
		const struct conf_var *v = &t->vars[i];
		conf_print_row(v,
		               v->kind == CONF_TEXT || v->kind == CONF_URLS || v->kind == CONF_ADDR
		                   ? conf_row_text(v, values)
		                   : getenv(v->name));
	}
}

void conf_print(const struct conf *c)
{
	log_info("config program=%s env=%s", svc_names[c->who], conf_env_name(c->env));
	for (size_t i = 0; i < conf_nvars; i++) {
		const struct conf_var *v = &conf_vars[i];
		if (!conf_var_read_by(v, c->who))
			continue;
		conf_print_row(v, v->offset == SIZE_MAX
		                      ? getenv(v->name)
		                      : *(char *const *)((const char *)c + v->offset));
	}
	if (c->own_table != NULL)
		conf_print_table(c->own_table, c->own);
}

void conf_fini(struct conf *c)
{
	for (size_t i = 0; i < conf_nvars; i++) {
		const struct conf_var *v = &conf_vars[i];
		char **slot;
		if (v->offset == SIZE_MAX)
			continue;
		slot = (char **)((char *)c + v->offset);
		if (*slot != NULL && conf_var_secret(v))
			OPENSSL_cleanse(*slot, strlen(*slot));
		free(*slot);
		*slot = NULL;
	}
	conf_table_free(c->own_table, c->own);
	c->own = NULL;
	c->own_table = NULL;
}

int conf_service_dir(const struct conf *c, enum svc_id svc, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%s", c->data_dir, svc_names[svc]);
	return n < 0 || (size_t)n >= len ? ERR_INVAL : 0;
}
