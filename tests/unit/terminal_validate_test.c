/*
 * terminal_validate_test.c — the terminal's policy (services/terminal/
 * validate.c): shells compared byte for byte and resolved, the defaults
 * filtered by a shells file, working directories resolved and kept under a
 * root (links out, `..`, files, missing paths), and the frame parser.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "services/terminal/terminal.h"

static char dir[PATH_MAX];

static int setup(void **state)
{
	char path[PATH_MAX + 32];
	FILE *f;
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/termval-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(path, sizeof(path), "%s/root", dir);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/root/sub", dir);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/outside", dir);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/root/out", dir);
	if (symlink("../outside", path) != 0)
		return -1;
	snprintf(path, sizeof(path), "%s/root/in", dir);
	if (symlink("sub", path) != 0)
		return -1;
	snprintf(path, sizeof(path), "%s/root/file", dir);
	if ((f = fopen(path, "w")) == NULL)
		return -1;
	fclose(f);
	snprintf(path, sizeof(path), "%s/shells", dir);
	if ((f = fopen(path, "w")) == NULL)
		return -1;
	fprintf(f, "# comment\n/bin/sh\n/bin/dash\n");
	fclose(f);
	snprintf(path, sizeof(path), "%s/sh-link", dir);
	return symlink("/bin/sh", path);
}

static int teardown(void **state)
{
	char cmd[PATH_MAX + 16];
	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void policy(struct validate_policy *p, const char *shells)
{
	char roots[PATH_MAX + 16], etc[PATH_MAX + 16];
	snprintf(roots, sizeof(roots), "%s/root", dir);
	snprintf(etc, sizeof(etc), "%s/shells", dir);
	assert_int_equal(validate_policy_init(p, shells, roots, etc, "/"), 0);
}

static int shell(const struct validate_policy *p, const char *s)
{
	char out[PATH_MAX];
	return validate_shell(p, s, strlen(s), out, sizeof(out));
}

static void test_defaults_filtered_by_shells_file(void **state)
{
	struct validate_policy p;
	(void)state;
	policy(&p, NULL);
	/* bash exists here but is not in our shells file; zsh and fish are absent. */
	assert_int_equal(shell(&p, "/bin/sh"), 0);
	assert_int_equal(shell(&p, "/bin/dash"), 0);
	assert_int_equal(shell(&p, "/bin/bash"), ERR_PERM);
	assert_int_equal(shell(&p, "/bin/zsh"), ERR_PERM);
	validate_policy_fini(&p);
}

static void test_shell_byte_for_byte(void **state)
{
	struct validate_policy p;
	char out[PATH_MAX], link[PATH_MAX + 16];
	(void)state;
	policy(&p, "/bin/bash, /bin/sh");
	assert_int_equal(shell(&p, "/bin/bash"), 0);
	assert_int_equal(shell(&p, "/bin/sh"), 0);
	assert_int_equal(validate_shell(&p, "/bin/sh", 7, out, sizeof(out)), 0);
	/* What runs is the link's target, a real file. */
	assert_int_equal(out[0], '/');
	assert_string_not_equal(out, "/bin/sh");
	static const char *const bad[] = {
	    "bash",       "/bin/bash;id", "/bin/../bin/bash", "/bin//bash", "/bin/./bash",
	    "/bin/bash/", " /bin/bash",   "/BIN/BASH",        "",           "/usr/bin/python3",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(shell(&p, bad[i]), ERR_PERM);
	/* A NUL inside: never the allowed prefix. */
	assert_int_equal(validate_shell(&p, "/bin/bash\0x", 11, out, sizeof(out)), ERR_PERM);
	/* A link to an allowed shell is not itself allowed. */
	snprintf(link, sizeof(link), "%s/sh-link", dir);
	assert_int_equal(shell(&p, link), ERR_PERM);
	/* Too small an output buffer is a refusal, not an overflow. */
	assert_int_equal(validate_shell(&p, "/bin/bash", 9, out, 3), ERR_PERM);
	validate_policy_fini(&p);
}

static void test_configured_shells_must_be_canonical(void **state)
{
	struct validate_policy p;
	(void)state;
	assert_int_equal(validate_policy_init(&p, "bash", "/", "/etc/shells", "/"), ERR_CONFIG);
	assert_int_equal(validate_policy_init(&p, "/bin/../bin/sh", "/", "/etc/shells", "/"),
	                 ERR_CONFIG);
	assert_int_equal(validate_policy_init(&p, "/bin//sh", "/", "/etc/shells", "/"), ERR_CONFIG);
}

static int cwd(const struct validate_policy *p, const char *rel, char *out)
{
	char path[PATH_MAX + 64];
	if (rel[0] == '/' || rel[0] == '.' || rel[0] == '\0')
		snprintf(path, sizeof(path), "%s", rel);
	else
		snprintf(path, sizeof(path), "%s/%s", dir, rel);
	return validate_cwd(p, path, strlen(path), out, PATH_MAX);
}

static void test_cwd(void **state)
{
	struct validate_policy p;
	char out[PATH_MAX], want[PATH_MAX + 16];
	(void)state;
	policy(&p, "/bin/sh");
	assert_int_equal(cwd(&p, "root", out), 0);
	assert_int_equal(cwd(&p, "root/sub", out), 0);
	/* A link inside the root that stays inside: judged by its target. */
	assert_int_equal(cwd(&p, "root/in", out), 0);
	snprintf(want, sizeof(want), "%s/root/sub", dir);
	assert_string_equal(out, want);
	assert_int_equal(cwd(&p, "root/out", out), ERR_PERM);
	assert_int_equal(cwd(&p, "root/sub/../../outside", out), ERR_PERM);
	assert_int_equal(cwd(&p, "outside", out), ERR_PERM);
	assert_int_equal(cwd(&p, "root/nope", out), ERR_PERM);
	assert_int_equal(cwd(&p, "root/file", out), ERR_PERM);
	assert_int_equal(cwd(&p, "../../etc", out), ERR_PERM);
	assert_int_equal(cwd(&p, "/etc", out), ERR_PERM);
	assert_int_equal(cwd(&p, "", out), ERR_PERM);
	/* "<dir>/rootx" shares the root's prefix but is not under it. */
	snprintf(want, sizeof(want), "%s/rootx", dir);
	mkdir(want, 0755);
	assert_int_equal(cwd(&p, "rootx", out), ERR_PERM);
	rmdir(want);
	validate_policy_fini(&p);
}

static void test_frames(void **state)
{
	struct frame f;
	char buf[32];
	(void)state;
	assert_int_equal(frame_parse_client((const uint8_t *)"0ls\r", 4, &f), 0);
	assert_int_equal(f.kind, FRAME_DATA);
	assert_int_equal(f.len, 3);
	assert_int_equal(frame_parse_client((const uint8_t *)"0", 1, &f), 0);
	assert_int_equal(f.len, 0);
	const char *resize = "1{\"cols\":100,\"rows\":40}";
	assert_int_equal(frame_parse_client((const uint8_t *)resize, strlen(resize), &f), 0);
	assert_int_equal(f.kind, FRAME_RESIZE);
	assert_int_equal(f.cols, 100);
	assert_int_equal(f.rows, 40);
	static const char *const bad[] = {
	    "",
	    "2{\"code\":0}",
	    "1{\"cols\":0,\"rows\":40}",
	    "1{\"cols\":1001,\"rows\":40}",
	    "1{\"cols\":10,\"rows\":40,\"x\":1}",
	    "1{\"cols\":10,\"cols\":11,\"rows\":40}",
	    "1{\"cols\":\"10\",\"rows\":40}",
	    "1[]",
	    "1{\"cols\":10}",
	    "x",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(frame_parse_client((const uint8_t *)bad[i], strlen(bad[i]), &f),
		                 ERR_INVAL);
	assert_int_equal(frame_exit(buf, sizeof(buf), 3), 11);
	assert_string_equal(buf, "2{\"code\":3}");
	assert_int_equal(frame_exit_code(3 << 8), 3);  /* exited 3 */
	assert_int_equal(frame_exit_code(9), 128 + 9); /* killed by SIGKILL */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults_filtered_by_shells_file),
	    cmocka_unit_test(test_shell_byte_for_byte),
	    cmocka_unit_test(test_configured_shells_must_be_canonical),
	    cmocka_unit_test(test_cwd),
	    cmocka_unit_test(test_frames),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
