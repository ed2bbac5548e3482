/*
 * config_test.c — common/config: defaults, every refusal with a message
 * naming the variable, production's strictness, *_FILE secrets, secrets
 * scrubbed from the environment and never printed, and the variable tables
 * (common's and each program's) the supervisor filters with. Links each
 * program's vars.o and the supervisor's programs.o, the real tables.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/config.h"
#include "common/err.h"
#include "gateway/vars.h"
#include "services/audit/vars.h"
#include "services/auth/vars.h"
#include "services/breach/vars.h"
#include "services/terminal/vars.h"
#include "tools/magnetar/magnetar.h"

static void clear_var(const struct conf_var *v)
{
	char name[96];
	unsetenv(v->name);
	snprintf(name, sizeof(name), "%s_FILE", v->name);
	unsetenv(name);
	if (v->file_alias != NULL)
		unsetenv(v->file_alias);
}

static void clear_env(void)
{
	for (size_t i = 0; i < conf_nvars; i++)
		clear_var(&conf_vars[i]);
	for (int s = 0; s < SVC_SERVICES; s++)
		for (size_t i = 0; i < programs_vars[s]->nvars; i++)
			clear_var(&programs_vars[s]->vars[i]);
}

/* conf_load as program `who` runs it: a service with its own table. */
static int load(struct conf *c, enum svc_id who, char *err, size_t errlen)
{
	return conf_load(c, who, who < SVC_SERVICES ? programs_vars[who] : NULL, err, errlen);
}

/* What the supervisor checks: common's variables and every service's. */
static int load_all(struct conf *c, void *own[SVC_SERVICES], char *err, size_t errlen)
{
	int rv = conf_load(c, SVC_SUPERVISOR, NULL, err, errlen);
	if (rv == 0 && (rv = programs_load(c, own, err, errlen)) != 0)
		conf_fini(c);
	return rv;
}

static int setup(void **state)
{
	(void)state;
	clear_env();
	return 0;
}

/* Loads for `who` and expects a refusal whose message contains `needle`. */
static void expect_refused(enum svc_id who, const char *needle)
{
	struct conf c;
	void *own[SVC_SERVICES];
	char err[256] = "";
	if (who == SVC_SUPERVISOR)
		assert_int_equal(load_all(&c, own, err, sizeof(err)), ERR_CONFIG);
	else
		assert_int_equal(load(&c, who, err, sizeof(err)), ERR_CONFIG);
	if (strstr(err, needle) == NULL)
		fail_msg("message \"%s\" does not name \"%s\"", err, needle);
}

static void test_defaults(void **state)
{
	struct conf c;
	const struct gateway_vars *g;
	const struct auth_vars *a;
	const struct breach_vars *b;
	char err[256];
	(void)state;
	assert_int_equal(load(&c, SVC_GATEWAY, err, sizeof(err)), 0);
	g = c.own;
	assert_int_equal(c.env, CONF_ENV_DEVELOPMENT);
	assert_string_equal(g->http.host, "127.0.0.1");
	assert_int_equal(g->http.port, 8080);
	assert_null(g->metrics.text);
	assert_string_equal(c.data_dir, "./var");
	assert_string_equal(c.run_dir, "./run");
	assert_string_equal(c.url[SVC_AUTH], "ipc://./run/auth.sock");
	assert_string_equal(c.url[SVC_AUDIT], "ipc://./run/audit.sock");
	assert_int_equal(c.sandbox, CONF_SANDBOX_ENFORCE);
	conf_fini(&c);
	assert_int_equal(load(&c, SVC_AUTH, err, sizeof(err)), 0);
	a = c.own;
	assert_true(a->registration_open); /* open in development */
	assert_int_equal(a->max_sessions, 3);
	assert_false(a->breach_fail_closed);
	conf_fini(&c);
	assert_int_equal(load(&c, SVC_BREACH, err, sizeof(err)), 0);
	b = c.own;
	assert_string_equal(b->hibp_url, "https://api.pwnedpasswords.com");
	assert_int_equal(b->hibp_mode, BREACH_HIBP_ONLINE);
	assert_false(b->breach_fail_closed);
	conf_fini(&c);
	assert_int_equal(load(&c, SVC_TERMINAL, err, sizeof(err)), 0);
	assert_int_equal(((const struct terminal_vars *)c.own)->idle_s, 900);
	assert_int_equal(((const struct terminal_vars *)c.own)->max, 32);
	assert_int_equal(((const struct terminal_vars *)c.own)->uid_first, 0);
	conf_fini(&c);
}

static void test_overrides(void **state)
{
	struct conf c;
	void *own[SVC_SERVICES];
	const struct gateway_vars *g;
	const struct auth_vars *a;
	const struct breach_vars *b;
	char err[256];
	(void)state;
	setenv("MAGNETAR_ENV", "test", 1);
	setenv("MAGNETAR_HTTP_ADDR", "[::1]:9090", 1);
	setenv("MAGNETAR_RUN_DIR", "/tmp/r", 1);
	setenv("MAGNETAR_AUDIT_URL", "tcp://10.0.0.1:7000", 1);
	setenv("MAGNETAR_MAX_SESSIONS", "7", 1);
	setenv("MAGNETAR_REGISTRATION", "closed", 1);
	setenv("MAGNETAR_BREACH_FAIL", "closed", 1);
	setenv("MAGNETAR_HIBP_MODE", "offline", 1);
	setenv("MAGNETAR_LOG_FORMAT", "json", 1);
	setenv("MAGNETAR_TERMINAL_UIDS", "70000-70099", 1);
	/* The supervisor reads every variable. */
	assert_int_equal(load_all(&c, own, err, sizeof(err)), 0);
	g = own[SVC_GATEWAY];
	a = own[SVC_AUTH];
	b = own[SVC_BREACH];
	assert_int_equal(c.env, CONF_ENV_TEST);
	assert_string_equal(g->http.host, "::1");
	assert_int_equal(g->http.port, 9090);
	assert_string_equal(c.url[SVC_AUDIT], "tcp://10.0.0.1:7000");
	assert_string_equal(c.url[SVC_AUTH], "ipc:///tmp/r/auth.sock");
	assert_int_equal(a->max_sessions, 7);
	assert_false(a->registration_open);
	assert_true(a->breach_fail_closed);
	assert_true(b->breach_fail_closed);
	assert_int_equal(b->hibp_mode, BREACH_HIBP_OFFLINE);
	assert_int_equal(((const struct terminal_vars *)own[SVC_TERMINAL])->uid_first, 70000);
	assert_int_equal(((const struct terminal_vars *)own[SVC_TERMINAL])->uid_last, 70099);
	assert_true(c.log_json);
	programs_free(own);
	conf_fini(&c);
}

static void test_refusals(void **state)
{
	static const struct {
		const char *name, *value;
	} bad[] = {
	    {"MAGNETAR_ENV", "prod"},
	    {"MAGNETAR_ENV", ""},
	    {"MAGNETAR_HTTP_ADDR", "8080"},
	    {"MAGNETAR_HTTP_ADDR", "localhost:99999"},
	    {"MAGNETAR_HTTP_ADDR", "localhost:80x"},
	    {"MAGNETAR_HTTP_ADDR", ":80"},
	    {"MAGNETAR_MAX_SESSIONS", "0"},
	    {"MAGNETAR_MAX_SESSIONS", "-1"},
	    {"MAGNETAR_MAX_SESSIONS", "3 "},
	    {"MAGNETAR_MAX_SESSIONS", "99999999999999999999"},
	    {"MAGNETAR_REGISTRATION", "maybe"},
	    {"MAGNETAR_HIBP_MODE", "sometimes"},
	    {"MAGNETAR_BREACH_FAIL", "half"},
	    {"MAGNETAR_SANDBOX", "none"},
	    {"MAGNETAR_LOG_FORMAT", "xml"},
	    {"MAGNETAR_AUTH_URL", "http://x"},
	    {"MAGNETAR_AUTH_URL", "ipc://"},
	    {"MAGNETAR_HIBP_URL", "ftp://x"},
	    {"MAGNETAR_METRICS_ADDR", "nope"},
	};
	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		clear_env();
		setenv(bad[i].name, bad[i].value, 1);
		/* The supervisor reads every variable. */
		expect_refused(SVC_SUPERVISOR, bad[i].name);
	}
	clear_env();
	setenv("MAGNETAR_TLS_CERT", "/x.pem", 1);
	expect_refused(SVC_GATEWAY, "MAGNETAR_TLS_KEY");
	clear_env();
	static const char *const bad_uids[] = {"0-5", "5", "7-6", "-", "1-", "x-9", "1-4294967295"};
	for (size_t i = 0; i < sizeof(bad_uids) / sizeof(bad_uids[0]); i++) {
		clear_env();
		setenv("MAGNETAR_TERMINAL_UIDS", bad_uids[i], 1);
		expect_refused(SVC_TERMINAL, "MAGNETAR_TERMINAL_UIDS");
	}
}

static void test_production_is_strict(void **state)
{
	struct conf c;
	char err[256];
	(void)state;
	setenv("MAGNETAR_ENV", "production", 1);
	setenv("MAGNETAR_SANDBOX", "off", 1);
	expect_refused(SVC_AUTH, "MAGNETAR_SANDBOX");
	unsetenv("MAGNETAR_SANDBOX");
	/* Each service refuses without the secrets it needs. */
	expect_refused(SVC_AUDIT, "MAGNETAR_AUDIT_KEYS");
	expect_refused(SVC_GATEWAY, "MAGNETAR_FINGERPRINT_KEY");
	setenv("MAGNETAR_FINGERPRINT_KEY", "k1", 1);
	expect_refused(SVC_AUTH, "MAGNETAR_TOTP_KEY");
	setenv("MAGNETAR_FINGERPRINT_KEY", "k1", 1);
	setenv("MAGNETAR_CORS_ORIGINS", "*", 1);
	expect_refused(SVC_GATEWAY, "MAGNETAR_CORS_ORIGINS");
	unsetenv("MAGNETAR_CORS_ORIGINS");
	setenv("MAGNETAR_FINGERPRINT_KEY", "k1", 1);
	setenv("MAGNETAR_HIBP_URL", "http://plain.example", 1);
	expect_refused(SVC_BREACH, "MAGNETAR_HIBP_URL");
	unsetenv("MAGNETAR_HIBP_URL");
	/* Registration is closed by default in production. */
	setenv("MAGNETAR_FINGERPRINT_KEY", "k1", 1);
	setenv("MAGNETAR_TOTP_KEY", "k2", 1);
	assert_int_equal(load(&c, SVC_AUTH, err, sizeof(err)), 0);
	assert_false(((const struct auth_vars *)c.own)->registration_open);
	conf_fini(&c);
	/* The gateway's table has raw rows (read by settings.c): its
	 * production requirements walk them too. */
	setenv("MAGNETAR_CSP", "default-src 'none'", 1);
	setenv("MAGNETAR_FINGERPRINT_KEY", "k1", 1); /* auth's load scrubbed it */
	assert_int_equal(load(&c, SVC_GATEWAY, err, sizeof(err)), 0);
	conf_fini(&c);
}

/* An environment entry without '=' (execve allows it) holds no value and
 * unsetenv cannot remove it: the scrub passes over it instead of looping
 * on it; a name longer than any buffer is still wiped. */
static void test_scrub_odd_entries(void **state)
{
	extern char **environ;
	char **saved = environ, *odd[64], longname[400], err[256];
	struct conf c;
	size_t n = 0;
	(void)state;

	memset(longname, 'X', sizeof(longname));
	memcpy(longname, "MAGNETAR_", 9);
	snprintf(longname + 300, sizeof(longname) - 300, "=long-secret");
	for (char **e = environ; *e != NULL && n < 60; e++)
		odd[n++] = *e;
	odd[n++] = "MAGNETAR_NO_EQUALS";
	odd[n++] = longname;
	odd[n] = NULL;
	environ = odd;
	alarm(10); /* a loop here is a failure, not a hang */
	assert_int_equal(load(&c, SVC_GATEWAY, err, sizeof(err)), 0);
	alarm(0);
	conf_fini(&c);
	assert_null(strstr(longname, "long-secret")); /* wiped in place... */
	for (char **e = environ; *e != NULL; e++)     /* ...and gone */
		assert_true(*e != longname);
	environ = saved;
}

static void test_world_writable_data_dir_refused_in_production(void **state)
{
	char dir[] = "/tmp/conf_test.XXXXXX";
	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(chmod(dir, 0777), 0);
	setenv("MAGNETAR_ENV", "production", 1);
	setenv("MAGNETAR_DATA_DIR", dir, 1);
	setenv("MAGNETAR_SANDBOX", "enforce", 1);
	expect_refused(SVC_BREACH, "MAGNETAR_DATA_DIR");
	rmdir(dir);
}

static void test_secret_file_and_scrub(void **state)
{
	char path[] = "/tmp/conf_secret.XXXXXX";
	struct conf c;
	char err[256];
	int fd;
	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "s3cret-key\n", 11), 11);
	close(fd);
	setenv("MAGNETAR_AUDIT_KEYS_FILE", path, 1);
	assert_int_equal(load(&c, SVC_AUDIT, err, sizeof(err)), 0);
	assert_string_equal(((const struct audit_vars *)c.own)->keys, "s3cret-key"); /* no \n */
	conf_fini(&c);
	assert_null(c.own);
	/* The singular spelling of the issue is the same variable. */
	unsetenv("MAGNETAR_AUDIT_KEYS_FILE");
	setenv("MAGNETAR_AUDIT_KEY_FILE", path, 1);
	assert_int_equal(load(&c, SVC_AUDIT, err, sizeof(err)), 0);
	assert_string_equal(((const struct audit_vars *)c.own)->keys, "s3cret-key");
	/* The file's path stays: RotateKey reads the file again. */
	assert_non_null(getenv("MAGNETAR_AUDIT_KEY_FILE"));
	conf_fini(&c);
	unsetenv("MAGNETAR_AUDIT_KEY_FILE");
	setenv("MAGNETAR_AUDIT_KEYS_FILE", path, 1);

	/* Both forms at once is ambiguous: refused. */
	setenv("MAGNETAR_AUDIT_KEYS", "x", 1);
	expect_refused(SVC_AUDIT, "MAGNETAR_AUDIT_KEYS");
	unsetenv("MAGNETAR_AUDIT_KEYS_FILE");
	/* A missing file is refused without echoing its contents or path. */
	unsetenv("MAGNETAR_AUDIT_KEYS");
	setenv("MAGNETAR_AUDIT_KEYS_FILE", "/nonexistent/key", 1);
	expect_refused(SVC_AUDIT, "MAGNETAR_AUDIT_KEYS_FILE");
	unsetenv("MAGNETAR_AUDIT_KEYS_FILE");
	unlink(path);

	/* A plain secret is wiped from the environment once parsed... */
	setenv("MAGNETAR_TOTP_KEY", "totp-secret", 1);
	assert_int_equal(load(&c, SVC_AUTH, err, sizeof(err)), 0);
	assert_string_equal(((const struct auth_vars *)c.own)->totp_key, "totp-secret");
	assert_null(getenv("MAGNETAR_TOTP_KEY"));
	conf_fini(&c);
	/* ...and so is any MAGNETAR_* variable a program does not read (another
	 * program's secret handed to it by mistake); its own stay. */
	setenv("MAGNETAR_TOTP_KEY", "totp-secret", 1);
	setenv("MAGNETAR_AUDIT_KEYS", "audit-secret", 1);
	setenv("MAGNETAR_NOT_A_VARIABLE", "x", 1);
	setenv("MAGNETAR_DEBUG", "1", 1);
	setenv("MAGNETAR_RATE_LOGIN", "5/60", 1);
	assert_int_equal(load(&c, SVC_GATEWAY, err, sizeof(err)), 0);
	assert_null(getenv("MAGNETAR_TOTP_KEY"));
	assert_null(getenv("MAGNETAR_AUDIT_KEYS"));
	assert_null(getenv("MAGNETAR_NOT_A_VARIABLE"));
	assert_non_null(getenv("MAGNETAR_DEBUG"));      /* log_init reads it */
	assert_non_null(getenv("MAGNETAR_RATE_LOGIN")); /* the gateway's own, read raw */
	conf_fini(&c);
	unsetenv("MAGNETAR_DEBUG");
	/* ...except by the supervisor, which hands them on. */
	setenv("MAGNETAR_TOTP_KEY", "totp-secret", 1);
	setenv("MAGNETAR_NOT_A_VARIABLE", "x", 1);
	assert_int_equal(load(&c, SVC_SUPERVISOR, err, sizeof(err)), 0);
	assert_non_null(getenv("MAGNETAR_TOTP_KEY"));
	assert_non_null(getenv("MAGNETAR_NOT_A_VARIABLE"));
	conf_fini(&c);
	unsetenv("MAGNETAR_NOT_A_VARIABLE");
}

static void test_print_redacts(void **state)
{
	struct conf c;
	char err[256], path[] = "/tmp/conf_log.XXXXXX", buf[16384];
	int fd, saved;
	ssize_t n;
	(void)state;
	setenv("MAGNETAR_FOUNDER_PASSWORD", "hunter2-very-secret", 1);
	setenv("MAGNETAR_FOUNDER_USERNAME", "alice", 1);
	assert_int_equal(load(&c, SVC_AUTH, err, sizeof(err)), 0);
	fd = mkstemp(path);
	saved = dup(2);
	dup2(fd, 2);
	conf_print(&c);
	dup2(saved, 2);
	close(saved);
	lseek(fd, 0, SEEK_SET);
	n = read(fd, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	close(fd);
	unlink(path);
	assert_null(strstr(buf, "hunter2"));
	assert_non_null(strstr(buf, "MAGNETAR_FOUNDER_PASSWORD=<redacted>"));
	assert_non_null(strstr(buf, "MAGNETAR_FOUNDER_USERNAME=alice"));
	/* Auth does not read the gateway's variables. */
	assert_null(strstr(buf, "MAGNETAR_HTTP_ADDR"));
	conf_fini(&c);
}

/* Every name in one place only (the supervisor passes a variable to the
 * program whose table holds it), every row sound. */
static void check_rows(const struct conf_var *rows, size_t n, size_t size, bool common)
{
	for (size_t i = 0; i < n; i++) {
		const struct conf_var *v = &rows[i];
		assert_int_equal(strncmp(v->name, "MAGNETAR_", 9), 0);
		assert_non_null(v->help);
		if (v->kind != CONF_RAW)
			assert_true(v->offset < size);
		if (v->kind == CONF_CHOICE)
			assert_non_null(v->choices);
		if (common)
			/* The supervisor must read everything it hands on. */
			assert_true(conf_var_read_by(v, SVC_SUPERVISOR));
		for (size_t k = 0; k < conf_nvars; k++)
			if (&conf_vars[k] != v)
				assert_string_not_equal(conf_vars[k].name, v->name);
	}
}

static void test_table_readers(void **state)
{
	(void)state;
	check_rows(conf_vars, conf_nvars, sizeof(struct conf), true);
	for (int s = 0; s < SVC_SERVICES; s++) {
		const struct conf_table *t = programs_vars[s];
		assert_string_equal(t->program, svc_name((enum svc_id)s));
		check_rows(t->vars, t->nvars, t->size, false);
		for (size_t i = 0; i < t->nvars; i++) {
			/* Each secret is its one program's. */
			if (strcmp(t->vars[i].name, "MAGNETAR_AUDIT_KEYS") == 0)
				assert_int_equal(s, SVC_AUDIT);
			if (strcmp(t->vars[i].name, "MAGNETAR_FOUNDER_PASSWORD") == 0) {
				assert_int_equal(s, SVC_AUTH);
				assert_true(conf_var_secret(&t->vars[i]));
			}
		}
	}
	assert_int_equal(svc_lookup("audit"), SVC_AUDIT);
	assert_int_equal(svc_lookup("nope"), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_defaults, setup),
	    cmocka_unit_test_setup(test_overrides, setup),
	    cmocka_unit_test_setup(test_refusals, setup),
	    cmocka_unit_test_setup(test_production_is_strict, setup),
	    cmocka_unit_test_setup(test_world_writable_data_dir_refused_in_production, setup),
	    cmocka_unit_test_setup(test_secret_file_and_scrub, setup),
	    cmocka_unit_test_setup(test_scrub_odd_entries, setup),
	    cmocka_unit_test_setup(test_print_redacts, setup),
	    cmocka_unit_test_setup(test_table_readers, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
