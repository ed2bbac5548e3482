/*
 * config_test.c — common/config: defaults, every refusal with a message
 * naming the variable, production's strictness, *_FILE secrets, secrets
 * scrubbed from the environment and never printed, and the per-program
 * variable table the supervisor filters with.
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

static void clear_env(void)
{
	for (size_t i = 0; i < conf_nvars; i++) {
		char name[96];
		unsetenv(conf_vars[i].name);
		snprintf(name, sizeof(name), "%s_FILE", conf_vars[i].name);
		unsetenv(name);
		if (conf_vars[i].file_alias != NULL)
			unsetenv(conf_vars[i].file_alias);
	}
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
	char err[256] = "";
	assert_int_equal(conf_load(&c, who, err, sizeof(err)), ERR_CONFIG);
	if (strstr(err, needle) == NULL)
		fail_msg("message \"%s\" does not name \"%s\"", err, needle);
}

static void test_defaults(void **state)
{
	struct conf c;
	char err[256];
	(void)state;
	assert_int_equal(conf_load(&c, SVC_GATEWAY, err, sizeof(err)), 0);
	assert_int_equal(c.env, CONF_ENV_DEVELOPMENT);
	assert_string_equal(c.http_host, "127.0.0.1");
	assert_int_equal(c.http_port, 8080);
	assert_string_equal(c.data_dir, "./var");
	assert_string_equal(c.run_dir, "./run");
	assert_string_equal(c.url[SVC_AUTH], "ipc://./run/auth.sock");
	assert_string_equal(c.url[SVC_AUDIT], "ipc://./run/audit.sock");
	assert_int_equal(c.sandbox, CONF_SANDBOX_ENFORCE);
	assert_true(c.registration_open); /* open in development */
	assert_int_equal(c.max_sessions, 3);
	assert_string_equal(c.hibp_url, "https://api.pwnedpasswords.com");
	assert_int_equal(c.hibp_mode, CONF_HIBP_ONLINE);
	assert_false(c.breach_fail_closed);
	conf_fini(&c);
}

static void test_overrides(void **state)
{
	struct conf c;
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
	/* The supervisor reads every variable. */
	assert_int_equal(conf_load(&c, SVC_SUPERVISOR, err, sizeof(err)), 0);
	assert_int_equal(c.env, CONF_ENV_TEST);
	assert_string_equal(c.http_host, "::1");
	assert_int_equal(c.http_port, 9090);
	assert_string_equal(c.url[SVC_AUDIT], "tcp://10.0.0.1:7000");
	assert_string_equal(c.url[SVC_AUTH], "ipc:///tmp/r/auth.sock");
	assert_int_equal(c.max_sessions, 7);
	assert_false(c.registration_open);
	assert_true(c.breach_fail_closed);
	assert_int_equal(c.hibp_mode, CONF_HIBP_OFFLINE);
	assert_true(c.log_json);
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
	assert_int_equal(conf_load(&c, SVC_AUTH, err, sizeof(err)), 0);
	assert_false(c.registration_open);
	conf_fini(&c);
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
	assert_int_equal(conf_load(&c, SVC_AUDIT, err, sizeof(err)), 0);
	assert_string_equal(c.audit_keys, "s3cret-key"); /* newline stripped */
	conf_fini(&c);
	assert_null(c.audit_keys);
	/* The singular spelling of the issue is the same variable. */
	unsetenv("MAGNETAR_AUDIT_KEYS_FILE");
	setenv("MAGNETAR_AUDIT_KEY_FILE", path, 1);
	assert_int_equal(conf_load(&c, SVC_AUDIT, err, sizeof(err)), 0);
	assert_string_equal(c.audit_keys, "s3cret-key");
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
	assert_int_equal(conf_load(&c, SVC_AUTH, err, sizeof(err)), 0);
	assert_string_equal(c.totp_key, "totp-secret");
	assert_null(getenv("MAGNETAR_TOTP_KEY"));
	conf_fini(&c);
	/* ...except by the supervisor, which hands it on. */
	setenv("MAGNETAR_TOTP_KEY", "totp-secret", 1);
	assert_int_equal(conf_load(&c, SVC_SUPERVISOR, err, sizeof(err)), 0);
	assert_non_null(getenv("MAGNETAR_TOTP_KEY"));
	conf_fini(&c);
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
	assert_int_equal(conf_load(&c, SVC_AUTH, err, sizeof(err)), 0);
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

static void test_table_readers(void **state)
{
	(void)state;
	for (size_t i = 0; i < conf_nvars; i++) {
		const struct conf_var *v = &conf_vars[i];
		/* The supervisor must read everything it hands on. */
		assert_true(conf_var_read_by(v, SVC_SUPERVISOR));
		if (strcmp(v->name, "MAGNETAR_AUDIT_KEYS") == 0) {
			assert_true(conf_var_read_by(v, SVC_AUDIT));
			assert_false(conf_var_read_by(v, SVC_GATEWAY));
			assert_false(conf_var_read_by(v, SVC_AUTH));
		}
		if (strcmp(v->name, "MAGNETAR_FOUNDER_PASSWORD") == 0) {
			assert_true(v->secret);
			assert_false(conf_var_read_by(v, SVC_GATEWAY));
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
	    cmocka_unit_test_setup(test_print_redacts, setup),
	    cmocka_unit_test_setup(test_table_readers, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
