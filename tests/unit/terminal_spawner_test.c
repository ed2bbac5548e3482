/*
 * terminal_spawner_test.c — the terminal spawner's seccomp filters
 * (services/terminal/spawner.c), loaded for real, each in a child of its own
 * (a filter cannot be unloaded): no user namespace by unshare, setns or
 * clone, clone3 ENOSYS; setresuid/setresgid only to the shells' range, -1
 * as real and saved uid, and the spawner's own uid as effective uid — the
 * values its effective-uid switch needs, and nothing around them. An
 * integration test cannot run code inside the spawner; this runs its filter.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "services/terminal/terminal.h"

#define FIRST 2000000000u
#define LAST 2000099999u
#define SELF 7105u
/* A uid as the kernel takes it: 32 bits, zero-extended in the register. */
#define U(x) ((unsigned long)(uid_t)(x))

static const struct spawner_conf conf = {
    .uid_first = FIRST,
    .uid_last = LAST,
    .privileged = true,
    .self_uid = SELF,
    .self_gid = SELF,
};

/* 0 when the call was refused with `want` (errno). */
static int refused(long rv, int want)
{
	return rv == -1 && errno == want ? 0 : 1;
}

/* Runs `check` in a child that loaded the spawner's filter (shell: the
 * shell's); the child's exit status is what check returned. */
static int in_child(bool shell, int (*check)(void))
{
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		if ((shell ? spawner_shell_filter() : spawner_filter(&conf)) != 0)
			_exit(99);
		_exit(check());
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

static int no_namespaces(void)
{
	int bad = 0;
	long rv;

	bad += refused(unshare(CLONE_NEWUSER), EPERM);
	bad += refused(unshare(CLONE_NEWNS), EPERM);
	bad += refused(syscall(SYS_setns, 0, CLONE_NEWUSER), EPERM);
	bad += refused(syscall(SYS_clone3, NULL, 0), ENOSYS);
	rv = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
	if (rv == 0)
		_exit(0); /* a child in a new user namespace: the filter failed */
	if (rv > 0)
		waitpid((pid_t)rv, NULL, 0);
	bad += refused(rv, EPERM);
	/* A plain fork still works. */
	if ((rv = fork()) == 0)
		_exit(0);
	if (rv < 0 || waitpid((pid_t)rv, NULL, 0) != rv)
		bad++;
	return bad;
}

static void test_spawner_filter_refuses_namespaces(void **state)
{
	(void)state;
	assert_int_equal(in_child(false, no_namespaces), 0);
}

static void test_shell_filter_refuses_namespaces(void **state)
{
	(void)state;
	assert_int_equal(in_child(true, no_namespaces), 0);
}

static int ids_outside(void)
{
	int bad = 0;

	bad += refused(syscall(SYS_setresuid, U(0), U(0), U(0)), EPERM);
	bad += refused(syscall(SYS_setresuid, U(-1), U(0), U(-1)), EPERM);
	bad += refused(syscall(SYS_setresuid, U(-1), U(FIRST - 1), U(-1)), EPERM);
	bad += refused(syscall(SYS_setresuid, U(-1), U(LAST + 1), U(-1)), EPERM);
	bad += refused(syscall(SYS_setresuid, U(-1), U(SELF - 1), U(-1)), EPERM);
	bad += refused(syscall(SYS_setresuid, U(-1), U(SELF + 1), U(-1)), EPERM);
	bad += refused(syscall(SYS_setresuid, U(-1), U(-2), U(-1)), EPERM);
	bad += refused(syscall(SYS_setresuid, U(SELF), U(-1), U(-1)), EPERM); /* not as real */
	bad += refused(syscall(SYS_setresuid, U(-1), U(-1), U(SELF)), EPERM); /* nor saved */
	bad += refused(syscall(SYS_setresuid, U(-2), U(-1), U(-1)), EPERM);
	bad += refused(syscall(SYS_setresuid, 0x100000000ul + FIRST, U(-1), U(-1)), EPERM);
	bad += refused(syscall(SYS_setresgid, U(0), U(0), U(0)), EPERM);
	bad += refused(syscall(SYS_setresgid, U(-1), U(SELF), U(-1)), EPERM);
	bad += refused(syscall(SYS_setuid, U(FIRST)), EPERM);
	bad += refused(syscall(SYS_setreuid, U(-1), U(FIRST)), EPERM);
	bad += refused(syscall(SYS_setfsuid, U(0)), EPERM);
	return bad;
}

static void test_spawner_filter_keeps_ids_in_the_range(void **state)
{
	(void)state;
	if (geteuid() != 0)
		skip(); /* the kernel refuses these anyway: nothing to learn */
	assert_int_equal(in_child(false, ids_outside), 0);
}

/* As root (CAP_SETUID) the kernel allows each: what is refused here is
 * the filter's doing. Each in a child of its own (the first change drops
 * root's effective capabilities). */
static int switch_to_user(void)
{
	return syscall(SYS_setresuid, U(-1), U(FIRST + 5), U(-1)) == 0 && geteuid() == FIRST + 5 &&
	               getuid() == 0
	           ? 0
	           : 1;
}

static int switch_back(void)
{
	return syscall(SYS_setresuid, U(-1), U(SELF), U(-1)) == 0 && geteuid() == SELF ? 0 : 1;
}

static int shell_ids(void)
{
	return syscall(SYS_setresgid, U(FIRST + 5), U(FIRST + 5), U(FIRST + 5)) == 0 &&
	               syscall(SYS_setresuid, U(FIRST + 5), U(FIRST + 5), U(FIRST + 5)) == 0
	           ? 0
	           : 1;
}

static void test_spawner_filter_allows_the_switch_and_the_shells(void **state)
{
	(void)state;
	if (geteuid() != 0)
		skip();
	assert_int_equal(in_child(false, switch_to_user), 0);
	assert_int_equal(in_child(false, switch_back), 0);
	assert_int_equal(in_child(false, shell_ids), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_spawner_filter_refuses_namespaces),
	    cmocka_unit_test(test_shell_filter_refuses_namespaces),
	    cmocka_unit_test(test_spawner_filter_keeps_ids_in_the_range),
	    cmocka_unit_test(test_spawner_filter_allows_the_switch_and_the_shells),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
