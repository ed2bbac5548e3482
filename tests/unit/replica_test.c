/*
 * replica_test.c — common/replica: replicas started together take distinct
 * entries, the entry of a replica that dies (however) is taken by the next,
 * a full list is refused, a holder on this host is recognised (magctl ping
 * --here), and URL lists are split strictly.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/err.h"
#include "common/replica.h"

static char dir[] = "/tmp/replica_test.XXXXXX";

static int setup(void **state)
{
	(void)state;
	return mkdtemp(dir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
	char cmd[64];
	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

static void test_distinct_entries_then_full(void **state)
{
	size_t n[4];
	int fd[4];
	(void)state;

	for (int i = 0; i < 3; i++) {
		assert_int_equal(replica_claim(dir, "auth", 3, &n[i], &fd[i]), 0);
		assert_int_equal(n[i], (size_t)i + 1);
	}
	assert_int_equal(replica_claim(dir, "auth", 3, &n[3], &fd[3]), ERR_EXISTS);
	/* Another service's entries are its own. */
	assert_int_equal(replica_claim(dir, "audit", 3, &n[3], &fd[3]), 0);
	assert_int_equal(n[3], 1);
	close(fd[3]);
	/* The second gives up: the next replica takes its entry, not a fourth. */
	close(fd[1]);
	assert_int_equal(replica_claim(dir, "auth", 3, &n[1], &fd[1]), 0);
	assert_int_equal(n[1], 2);
	for (int i = 0; i < 3; i++)
		close(fd[i]);
}

static void test_killed_holder_frees_its_entry(void **state)
{
	int ready[2], fd, status;
	size_t n;
	char c;
	pid_t pid;
	(void)state;

	assert_int_equal(pipe(ready), 0);
	if ((pid = fork()) == 0) {
		size_t mine;
		int lock;
		if (replica_claim(dir, "breach", 2, &mine, &lock) != 0 || mine != 1)
			_exit(1);
		(void)!write(ready[1], "x", 1);
		pause();
		_exit(0);
	}
	assert_int_equal(read(ready[0], &c, 1), 1);
	assert_int_equal(replica_claim(dir, "breach", 2, &n, &fd), 0);
	assert_int_equal(n, 2);
	/* Both held on this host; no entry 3. */
	assert_true(replica_held_here(dir, "breach", 1));
	assert_true(replica_held_here(dir, "breach", 2));
	assert_false(replica_held_here(dir, "breach", 3));
	close(fd);
	assert_false(replica_held_here(dir, "breach", 2)); /* let go: a dead one's */
	kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_false(replica_held_here(dir, "breach", 1));
	assert_int_equal(replica_claim(dir, "breach", 2, &n, &fd), 0);
	assert_int_equal(n, 1);
	close(fd);
	close(ready[0]);
	close(ready[1]);
}

static void test_lock_file_symlink_refused(void **state)
{
	char path[256];
	size_t n;
	int fd;
	(void)state;

	snprintf(path, sizeof(path), "%s/terminal.replica-1.lock", dir);
	assert_int_equal(symlink("/etc/passwd", path), 0);
	assert_int_equal(replica_claim(dir, "terminal", 2, &n, &fd), ERR_IO);
	assert_int_equal(replica_claim(dir, "terminal", 0, &n, &fd), ERR_INVAL);
}

static void test_url_lists(void **state)
{
	char buf[16];
	(void)state;

	assert_int_equal(replica_count("ipc://a"), 1);
	assert_int_equal(replica_count("ipc://a,ipc://b,ipc://c"), 3);
	assert_int_equal(replica_entry("ipc://a,ipc://b,ipc://c", 1, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "ipc://a");
	assert_int_equal(replica_entry("ipc://a,ipc://b,ipc://c", 3, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "ipc://c");
	assert_int_equal(replica_entry("ipc://a,ipc://b", 3, buf, sizeof(buf)), ERR_INVAL);
	assert_int_equal(replica_entry("ipc://a,ipc://b", 0, buf, sizeof(buf)), ERR_INVAL);
	assert_int_equal(replica_entry("ipc://a,,ipc://b", 2, buf, sizeof(buf)), ERR_INVAL);
	assert_int_equal(replica_entry("ipc://a,", 2, buf, sizeof(buf)), ERR_INVAL);
	assert_int_equal(replica_entry("", 1, buf, sizeof(buf)), ERR_INVAL);
	assert_int_equal(replica_entry("ipc://0123456789abcdef", 1, buf, sizeof(buf)), ERR_INVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_distinct_entries_then_full),
	    cmocka_unit_test(test_killed_holder_frees_its_entry),
	    cmocka_unit_test(test_lock_file_symlink_refused),
	    cmocka_unit_test(test_url_lists),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
