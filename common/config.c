/*
 * config.c — parses and validates the MAGNETAR_* environment (config.h).
 * Two passes: copy every variable the program reads into struct conf
 * (reading NAME_FILE for secrets), then derive typed fields and refuse
 * anything invalid with one sentence that names the variable.
 */
#include "common/config.h"

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

const struct conf_var conf_vars[] = {
    {"MAGNETAR_ENV", ALL, false, SIZE_MAX, "development, test or production", NULL},
    {"MAGNETAR_LOG_FORMAT", ALL, false, SIZE_MAX, "text or json", NULL},
    {"MAGNETAR_SANDBOX", ALL, false, SIZE_MAX, "enforce, log or off", NULL},
    {"MAGNETAR_DATA_DIR", ALL, false, F(data_dir), "parent of each service's data dir", NULL},
    {"MAGNETAR_RUN_DIR", ALL, false, F(run_dir), "IPC socket dir", NULL},
    {"MAGNETAR_GATEWAY_URL", ALL, false, F(url[SVC_GATEWAY]), "gateway's RPC URL", NULL},
    {"MAGNETAR_AUTH_URL", ALL, false, F(url[SVC_AUTH]), "auth's RPC URL", NULL},
    {"MAGNETAR_AUDIT_URL", ALL, false, F(url[SVC_AUDIT]), "audit's RPC URL", NULL},
    {"MAGNETAR_BREACH_URL", ALL, false, F(url[SVC_BREACH]), "breach's RPC URL", NULL},
    {"MAGNETAR_TERMINAL_URL", ALL, false, F(url[SVC_TERMINAL]), "terminal's RPC URL", NULL},
    {"MAGNETAR_AUTH_EVENTS_URL", ALL, false, F(auth_events_url), "auth's event publisher", NULL},
    {"MAGNETAR_AUDIT_EVENTS_URL", ALL, false, F(audit_events_url), "audit's event publisher", NULL},
    {"MAGNETAR_HTTP_ADDR", B(SVC_GATEWAY) | SUP, false, F(http_addr), "gateway host:port", NULL},
    {"MAGNETAR_METRICS_ADDR", B(SVC_GATEWAY) | SUP, false, F(metrics_addr),
     "private /metrics listener host:port", NULL},
    {"MAGNETAR_HTTP_REDIRECT_ADDR", B(SVC_GATEWAY) | SUP, false, F(redirect_addr),
     "plain-HTTP host:port that redirects to https (needs TLS)", NULL},
    {"MAGNETAR_CORS_ORIGINS", B(SVC_GATEWAY) | SUP, false, F(cors_origins),
     "comma-separated exact origins", NULL},
    {"MAGNETAR_TRUSTED_PROXIES", B(SVC_GATEWAY) | SUP, false, F(trusted_proxies),
     "CIDRs whose X-Forwarded-For is believed", NULL},
    {"MAGNETAR_TLS_CERT", B(SVC_GATEWAY) | SUP, false, F(tls_cert), "PEM certificate file", NULL},
    {"MAGNETAR_TLS_KEY", B(SVC_GATEWAY) | SUP, false, F(tls_key), "PEM private key file", NULL},
    {"MAGNETAR_FOUNDER_USERNAME", B(SVC_AUTH) | SUP, false, F(founder_username),
     "bootstrap account", NULL},
    {"MAGNETAR_FOUNDER_PASSWORD", B(SVC_AUTH) | SUP, true, F(founder_password),
     "bootstrap password", NULL},
    {"MAGNETAR_REGISTRATION", B(SVC_AUTH) | SUP, false, SIZE_MAX, "open or closed", NULL},
    {"MAGNETAR_MAX_SESSIONS", B(SVC_AUTH) | SUP, false, SIZE_MAX, "sessions per user", NULL},
    {"MAGNETAR_TOTP_KEY", B(SVC_AUTH) | SUP, true, F(totp_key), "TOTP secrets' at-rest key", NULL},
    {"MAGNETAR_FINGERPRINT_KEY", B(SVC_AUTH) | B(SVC_GATEWAY) | SUP, true, F(fingerprint_key),
     "key of the fingerprint hashes", NULL},
    /* The audit issue spells the file form in the singular: accept both. */
    {"MAGNETAR_AUDIT_KEYS", B(SVC_AUDIT) | SUP, true, F(audit_keys),
     "audit keyring id:base64key,...", "MAGNETAR_AUDIT_KEY_FILE"},
    {"MAGNETAR_HIBP_URL", B(SVC_BREACH) | SUP, false, F(hibp_url), "Pwned Passwords base URL",
     NULL},
    {"MAGNETAR_HIBP_MODE", B(SVC_BREACH) | SUP, false, SIZE_MAX, "online, offline or off", NULL},
    {"MAGNETAR_BREACH_FAIL", B(SVC_AUTH) | B(SVC_BREACH) | SUP, false, SIZE_MAX, "open or closed",
     NULL},
    {"MAGNETAR_TERMINAL_SHELLS", B(SVC_TERMINAL) | SUP, false, F(terminal_shells),
     "allowed absolute shell paths", NULL},
    {"MAGNETAR_TERMINAL_ROOTS", B(SVC_TERMINAL) | SUP, false, F(terminal_roots),
     "dirs a terminal may start in", NULL},
    {"MAGNETAR_TERMINAL_UIDS", B(SVC_TERMINAL) | SUP, false, SIZE_MAX,
     "uid range first-last for shells, one uid per user", NULL},
    {"MAGNETAR_TERMINAL_IDLE_S", B(SVC_TERMINAL) | SUP, false, SIZE_MAX,
     "seconds without a byte before a terminal closes", NULL},
    {"MAGNETAR_TERMINAL_LIFETIME_S", B(SVC_TERMINAL) | SUP, false, SIZE_MAX,
     "seconds a terminal may live at most", NULL},
    {"MAGNETAR_TERMINAL_MAX_PER_USER", B(SVC_TERMINAL) | SUP, false, SIZE_MAX,
     "open terminals per user", NULL},
    {"MAGNETAR_TERMINAL_MAX", B(SVC_TERMINAL) | SUP, false, SIZE_MAX, "open terminals in all",
     NULL},
    /* Gateway hardening (issue 6): parsed by gateway/settings.c. */
    {"MAGNETAR_PROXY_HEADER", B(SVC_GATEWAY) | SUP, false, SIZE_MAX,
     "x-forwarded-for or forwarded: the header trusted proxies set", NULL},
    {"MAGNETAR_RATE_GLOBAL", B(SVC_GATEWAY) | SUP, false, SIZE_MAX,
     "requests per client IP: N/S or off", NULL},
    {"MAGNETAR_RATE_LOGIN", B(SVC_GATEWAY) | SUP, false, SIZE_MAX,
     "login, password change, step-up per client IP: N/S or off", NULL},
    {"MAGNETAR_RATE_PASSWORD_CHECK", B(SVC_GATEWAY) | SUP, false, SIZE_MAX,
     "password checks per client IP: N/S or off", NULL},
    {"MAGNETAR_RATE_REGISTER", B(SVC_GATEWAY) | SUP, false, SIZE_MAX,
     "registrations per client IP: N/S or off", NULL},
    {"MAGNETAR_RATE_TERMINAL", B(SVC_GATEWAY) | SUP, false, SIZE_MAX,
     "terminal opens per client IP: N/S or off", NULL},
    {"MAGNETAR_HEADER_TIMEOUT_S", B(SVC_GATEWAY) | SUP, false, SIZE_MAX,
     "seconds for a complete request header block", NULL},
    {"MAGNETAR_BODY_TIMEOUT_S", B(SVC_GATEWAY) | SUP, false, SIZE_MAX,
     "seconds for a request body, from complete headers to its last byte", NULL},
    {"MAGNETAR_ACCESS_LOG", B(SVC_GATEWAY) | SUP, false, SIZE_MAX,
     "all (a line per request) or errors (only status >= 400)", NULL},
    {"MAGNETAR_CSP", B(SVC_GATEWAY) | SUP, false, SIZE_MAX, "Content-Security-Policy override",
     NULL},
    {"MAGNETAR_PERMISSIONS_POLICY", B(SVC_GATEWAY) | SUP, false, SIZE_MAX,
     "Permissions-Policy override", NULL},
    /* The reliability suite (common/fault.c): MAGNETAR_ENV=test only. */
    {"MAGNETAR_FAULT_SQLITE_IOERR", ALL, false, SIZE_MAX,
     "test only: every Nth SQLite write or sync fails with an I/O error", NULL},
    {"MAGNETAR_FAULT_SQLITE_BUSY", ALL, false, SIZE_MAX,
     "test only: every Nth SQLite lock upgrade is busy", NULL},
    {"MAGNETAR_FAULT_SQLITE_NOMEM", ALL, false, SIZE_MAX,
     "test only: every Nth SQLite allocation fails", NULL},
    {"MAGNETAR_FAULT_ALLOC", ALL, false, SIZE_MAX,
     "test only: every Nth allocation by Magnetar's own code fails", NULL},
    /* Everyone reads every user name: a service's peer allow-lists are uids. */
    {"MAGNETAR_GATEWAY_USER", ALL, false, F(user[SVC_GATEWAY]), "gateway's user (as root)", NULL},
    {"MAGNETAR_AUTH_USER", ALL, false, F(user[SVC_AUTH]), "auth's user (as root)", NULL},
    {"MAGNETAR_AUDIT_USER", ALL, false, F(user[SVC_AUDIT]), "audit's user (as root)", NULL},
    {"MAGNETAR_BREACH_USER", ALL, false, F(user[SVC_BREACH]), "breach's user (as root)", NULL},
    {"MAGNETAR_TERMINAL_USER", ALL, false, F(user[SVC_TERMINAL]), "terminal's user (as root)",
     NULL},
    {"MAGNETAR_IPC_GROUP", ALL, false, F(ipc_group), "group allowed into the run dir (as root)",
     NULL},
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

static int conf_refuse(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int conf_refuse(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return ERR_CONFIG;
}

/* Overwrites a secret in the process environment before unsetting it: unsetenv
 * alone leaves the bytes in the initial stack for a core dump to find. */
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

	if (v->secret) {
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

/* Parses a decimal integer in [lo, hi] with nothing after it. */
static int conf_int(const char *s, long lo, long hi, long *out)
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

/* Fills defaults and derived fields, and refuses what is invalid. */
static int conf_validate(struct conf *c, char *err, size_t errlen)
{
	static const char *const envs[] = {"development", "test", "production", NULL};
	static const char *const sandboxes[] = {"enforce", "log", "off", NULL};
	static const char *const modes[] = {"online", "offline", "off", NULL};
	static const char *const formats[] = {"text", "json", NULL};
	static const char *const openclosed[] = {"open", "closed", NULL};
	const char *s;
	long n;
	int i;
	bool prod;

	if ((s = getenv("MAGNETAR_ENV")) != NULL) {
		if ((i = conf_choice(s, envs)) < 0)
			return conf_refuse(err, errlen,
			                   "MAGNETAR_ENV must be development, test or production");
		c->env = (enum conf_env)i;
	}
	prod = c->env == CONF_ENV_PRODUCTION;
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
	if (prod && c->sandbox != CONF_SANDBOX_ENFORCE)
		return conf_refuse(err, errlen,
		                   "MAGNETAR_SANDBOX=%s is refused when MAGNETAR_ENV=production",
		                   sandboxes[c->sandbox]);
	c->registration_open = !prod;
	if ((s = getenv("MAGNETAR_REGISTRATION")) != NULL) {
		if ((i = conf_choice(s, openclosed)) < 0)
			return conf_refuse(err, errlen,
			                   "MAGNETAR_REGISTRATION must be open or closed");
		c->registration_open = i == 0;
	}
	c->max_sessions = 3;
	if ((s = getenv("MAGNETAR_MAX_SESSIONS")) != NULL) {
		if (conf_int(s, 1, 1000, &n) != 0)
			return conf_refuse(
			    err, errlen, "MAGNETAR_MAX_SESSIONS must be an integer from 1 to 1000");
		c->max_sessions = (int)n;
	}
	if ((s = getenv("MAGNETAR_HIBP_MODE")) != NULL) {
		if ((i = conf_choice(s, modes)) < 0)
			return conf_refuse(err, errlen,
			                   "MAGNETAR_HIBP_MODE must be online, offline or off");
		c->hibp_mode = (enum conf_hibp_mode)i;
	}
	if ((s = getenv("MAGNETAR_BREACH_FAIL")) != NULL) {
		if ((i = conf_choice(s, openclosed)) < 0)
			return conf_refuse(err, errlen,
			                   "MAGNETAR_BREACH_FAIL must be open or closed");
		c->breach_fail_closed = i == 1;
	}
	c->terminal_uid_first = c->terminal_uid_last = 0;
	if ((c->who == SVC_TERMINAL || c->who == SVC_SUPERVISOR) &&
	    (s = getenv("MAGNETAR_TERMINAL_UIDS")) != NULL) {
		/* "first-last": whether it holds an account or a service's uid
		 * is the terminal service's check at start (it reads passwd). */
		const char *dash = strchr(s, '-');
		char first[16];
		long lo, hi;
		if (dash == NULL || (size_t)(dash - s) >= sizeof(first))
			return conf_refuse(err, errlen,
			                   "MAGNETAR_TERMINAL_UIDS must be a uid range first-last");
		memcpy(first, s, (size_t)(dash - s));
		first[dash - s] = '\0';
		if (conf_int(first, 1, (long)UINT32_MAX - 1, &lo) != 0 ||
		    conf_int(dash + 1, 1, (long)UINT32_MAX - 1, &hi) != 0 || lo > hi)
			return conf_refuse(err, errlen,
			                   "MAGNETAR_TERMINAL_UIDS must be a uid range first-last "
			                   "of non-zero uids, first <= last");
		c->terminal_uid_first = (uid_t)lo;
		c->terminal_uid_last = (uid_t)hi;
	}

	{
		/* Terminal limits: the service's, but parsed for every program so
		 * `-n` and the supervisor agree on what is valid. */
		static const struct {
			const char *name;
			size_t offset;
			long def, lo, hi;
		} tl[] = {
		    {"MAGNETAR_TERMINAL_IDLE_S", F(terminal_idle_s), 900, 1, 86400 * 7},
		    {"MAGNETAR_TERMINAL_LIFETIME_S", F(terminal_lifetime_s), 43200, 1, 86400 * 30},
		    {"MAGNETAR_TERMINAL_MAX_PER_USER", F(terminal_per_user), 3, 1, 1000},
		    {"MAGNETAR_TERMINAL_MAX", F(terminal_max), 32, 1, 1000},
		};
		for (size_t t = 0; t < sizeof(tl) / sizeof(tl[0]); t++) {
			int *slot = (int *)((char *)c + tl[t].offset);
			*slot = (int)tl[t].def;
			if ((s = getenv(tl[t].name)) == NULL)
				continue;
			if (conf_int(s, tl[t].lo, tl[t].hi, &n) != 0)
				return conf_refuse(err, errlen,
				                   "%s must be an integer from %ld to %ld",
				                   tl[t].name, tl[t].lo, tl[t].hi);
			*slot = (int)n;
		}
	}

	if (conf_default(&c->data_dir, "./var") != 0 || conf_default(&c->run_dir, "./run") != 0 ||
	    conf_default(&c->http_addr, "127.0.0.1:8080") != 0 ||
	    conf_default(&c->hibp_url, "https://api.pwnedpasswords.com") != 0 ||
	    conf_default(&c->auth_events_url, "ipc://%s/auth-events.sock", c->run_dir) != 0 ||
	    conf_default(&c->audit_events_url, "ipc://%s/audit-events.sock", c->run_dir) != 0)
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
	if (strlen(c->run_dir) > 80)
		return conf_refuse(
		    err, errlen,
		    "MAGNETAR_RUN_DIR is too long for a unix socket path (80 bytes max)");

	for (i = 0; i < SVC_SERVICES; i++)
		if (!conf_valid_nng_url(c->url[i]))
			return conf_refuse(
			    err, errlen,
			    "MAGNETAR_%s_URL must be an ipc://, tcp://host:port or "
			    "inproc:// URL, or a comma-separated list of up to 8 (replicas)",
			    i == SVC_GATEWAY  ? "GATEWAY"
			    : i == SVC_AUTH   ? "AUTH"
			    : i == SVC_AUDIT  ? "AUDIT"
			    : i == SVC_BREACH ? "BREACH"
			                      : "TERMINAL");
	if (!conf_valid_nng_url(c->auth_events_url) || !conf_valid_nng_url(c->audit_events_url))
		return conf_refuse(
		    err, errlen,
		    "MAGNETAR_*_EVENTS_URL must be an ipc://, "
		    "tcp://host:port or inproc:// URL, or a comma-separated list of up to 8");
	if (conf_parse_addr(c->http_addr, &c->http_host, &c->http_port) != 0)
		return conf_refuse(err, errlen, "MAGNETAR_HTTP_ADDR must be host:port");
	if (c->metrics_addr != NULL) {
		char *h = NULL;
		uint16_t p;
		if (conf_parse_addr(c->metrics_addr, &h, &p) != 0)
			return conf_refuse(err, errlen, "MAGNETAR_METRICS_ADDR must be host:port");
		free(h);
	}
	if (strncmp(c->hibp_url, "https://", 8) != 0 &&
	    (prod || strncmp(c->hibp_url, "http://", 7) != 0))
		return conf_refuse(err, errlen, "MAGNETAR_HIBP_URL must be an https:// URL%s",
		                   prod ? "" : " (http:// only outside production)");
	if ((c->tls_cert == NULL) != (c->tls_key == NULL))
		return conf_refuse(err, errlen,
		                   "MAGNETAR_TLS_CERT and MAGNETAR_TLS_KEY go together");
	if (c->redirect_addr != NULL) {
		char *h = NULL;
		uint16_t p;
		if (conf_parse_addr(c->redirect_addr, &h, &p) != 0)
			return conf_refuse(err, errlen,
			                   "MAGNETAR_HTTP_REDIRECT_ADDR must be host:port");
		free(h);
		if (c->tls_cert == NULL)
			return conf_refuse(
			    err, errlen,
			    "MAGNETAR_HTTP_REDIRECT_ADDR redirects to https: it needs "
			    "MAGNETAR_TLS_CERT and MAGNETAR_TLS_KEY");
	}
	if (prod && c->cors_origins != NULL && strchr(c->cors_origins, '*') != NULL)
		return conf_refuse(err, errlen,
		                   "MAGNETAR_CORS_ORIGINS may not contain * in production");
	if (prod && c->cors_origins != NULL &&
	    strspn(c->cors_origins, " \t,") == strlen(c->cors_origins))
		return conf_refuse(
		    err, errlen,
		    "MAGNETAR_CORS_ORIGINS is set but empty; list origins, or unset it "
		    "for no CORS");

	/* Production refuses to run on secrets it would otherwise invent. */
	if (prod) {
		struct stat st;
		for (size_t v = 0; v < conf_nvars; v++) {
			const struct conf_var *cv = &conf_vars[v];
			char **slot;
			if (!cv->secret || !conf_var_read_by(cv, c->who) ||
			    c->who == SVC_SUPERVISOR || c->who == SVC_MAGCTL ||
			    strcmp(cv->name, "MAGNETAR_FOUNDER_PASSWORD") == 0)
				continue;
			slot = (char **)((char *)c + cv->offset);
			if (*slot == NULL || (*slot)[0] == '\0')
				return conf_refuse(
				    err, errlen,
				    "%s (or %s_FILE) is required when MAGNETAR_ENV=production",
				    cv->name, cv->name);
		}
		if (stat(c->data_dir, &st) == 0 && (st.st_mode & S_IWOTH) != 0)
			return conf_refuse(
			    err, errlen,
			    "MAGNETAR_DATA_DIR is world-writable; refused in production");
	}
	return 0;
}

int conf_load(struct conf *c, enum svc_id who, char *err, size_t errlen)
{
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
	/* The supervisor passes secrets on; every other program scrubs them. */
	if (who != SVC_SUPERVISOR)
		for (size_t i = 0; i < conf_nvars; i++)
			if (conf_vars[i].secret)
				conf_scrub_env(conf_vars[i].name);
	return 0;
fail:
	conf_fini(c);
	return rv;
}

void conf_print(const struct conf *c)
{
	log_info("config program=%s env=%s", svc_names[c->who], conf_env_name(c->env));
	for (size_t i = 0; i < conf_nvars; i++) {
		const struct conf_var *v = &conf_vars[i];
		const char *val;
		if (!conf_var_read_by(v, c->who))
			continue;
		if (v->offset == SIZE_MAX)
			val = getenv(v->name);
		else
			val = *(char *const *)((const char *)c + v->offset);
		if (val == NULL)
			val = "<unset>";
		else if (v->secret)
			val = "<redacted>";
		log_info("config %s=%s", v->name, val);
	}
}

void conf_fini(struct conf *c)
{
	for (size_t i = 0; i < conf_nvars; i++) {
		const struct conf_var *v = &conf_vars[i];
		char **slot;
		if (v->offset == SIZE_MAX)
			continue;
		slot = (char **)((char *)c + v->offset);
		if (*slot != NULL && v->secret)
			OPENSSL_cleanse(*slot, strlen(*slot));
		free(*slot);
		*slot = NULL;
	}
	/* Defaults may have filled slots for variables this program does not read. */
	free(c->http_host);
	c->http_host = NULL;
}

int conf_service_dir(const struct conf *c, enum svc_id svc, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%s", c->data_dir, svc_names[svc]);
	return n < 0 || (size_t)n >= len ? ERR_INVAL : 0;
}
