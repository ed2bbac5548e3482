/*
 * spawner.c — the small process that starts shells, forked by the terminal
 * service before it has threads, a database or sockets. It keeps only the
 * socket to the service (SOCK_SEQPACKET: one request per packet, the PTY
 * master passed back with SCM_RIGHTS). Started as root, it becomes the
 * terminal service's user keeping only CAP_SETUID and CAP_SETGID, under a
 * seccomp filter that lets setresuid and setresgid reach the shells' uid
 * range and nothing else (so never root again). Each shell: fork, drop to
 * its user's uid, open its own PTY, chdir, fresh environment, a filter
 * against cross-process calls, execve. Shells are signalled by a
 * short-lived child that becomes the shell's uid (no CAP_KILL here), and
 * only processes this spawner started or adopted: never all of a uid.
 * The service's side (starting it, sending requests, reading answers) is
 * spawner_client.c; the packets, spawner_wire.c.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "services/terminal/spawner_wire.h"
#include "services/terminal/terminal.h"

#define SPAWNER_MAX_CHILDREN 1024
#define SPAWNER_NPROC 512          /* per uid, so per user: a fork bomb stops here */
#define SPAWNER_SWEEP_ROUNDS 64    /* a tree that forks while being killed */
#define SPAWNER_FSIZE (1ull << 30) /* largest file a shell may write */
#define SPAWNER_PATH "/usr/local/bin:/usr/bin:/bin"
#define SPAWNER_HOMES ".home" /* in the first root: the private homes */

/* ---- the spawner process --------------------------------------------------- */

struct spawner_kid {
	pid_t pid;
	uid_t uid;
	uint64_t kill_at; /* monotonic ms of the SIGKILL; 0 = none pending */
};

static struct spawner_kid spawner_kids[SPAWNER_MAX_CHILDREN];
static const struct spawner_conf *spawner_sc; /* the spawner's own copy */
static pid_t spawner_self;                    /* the spawner's pid */
static int spawner_homes_fd = -1;             /* <first root>/.home, once made */

static struct spawner_kid *spawner_kid(pid_t pid)
{
	for (int i = 0; i < SPAWNER_MAX_CHILDREN; i++)
		if (spawner_kids[i].pid == pid)
			return &spawner_kids[i];
	return NULL;
}

/* A shell's gid: its uid's number as root; our own without root. */
static gid_t spawner_gid(const struct spawner_conf *sc, uid_t uid)
{
	return sc->privileged ? (gid_t)uid : getgid();
}

/* Signals every process of the shell's session: its process group first,
 * then whatever moved to another group of the same session (job control). A
 * process that made its own session escapes this; see docs/terminal.md. */
static void spawner_signal_direct(pid_t sid, int sig)
{
	struct dirent *e;
	DIR *d;

	kill(-sid, sig);
	if ((d = opendir("/proc")) == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		char *end;
		long pid = strtol(e->d_name, &end, 10);
		if (*end != '\0' || pid <= 1 || pid == getpid())
			continue;
		if (getsid((pid_t)pid) == sid)
			kill((pid_t)pid, sig);
	}
	closedir(d);
}

/* Runs `fn(sid, sig)` as `uid`: the shells are other uids and the spawner
 * holds no CAP_KILL. Only the effective uid changes, in this process: kill(2)
 * lets a sender whose real or effective uid is a target's real uid signal
 * it, so we may signal the user's processes, while theirs, which may signal
 * only a process whose real or saved uid is theirs, cannot signal us (ours
 * stay the service's). A child that became the uid outright, as here
 * before, could be stopped or killed by the user's own processes while we
 * waited for it: every later Open and every sweep would wait with it. */
static void spawner_as_uid(void (*fn)(pid_t, int), uid_t uid, pid_t sid, int sig)
{
	const uid_t self = spawner_sc->self_uid;

	if (!spawner_sc->privileged) {
		fn(sid, sig); /* shells are our own uid */
		return;
	}
	if (setresuid((uid_t)-1, uid, (uid_t)-1) != 0) {
		log_warnx("spawner: cannot act as uid %u", (unsigned)uid);
		return;
	}
	fn(sid, sig);
	/* Back to our own: a spawner that stayed the user's would be theirs. */
	if (setresuid((uid_t)-1, self, (uid_t)-1) != 0 || geteuid() != self)
		fatalx("spawner: cannot return to uid %u", (unsigned)self);
}

static void spawner_signal_session(uid_t uid, pid_t sid, int sig)
{
	spawner_as_uid(spawner_signal_direct, uid, sid, sig);
}

/* The parent of `pid` and its state letter, from /proc/<pid>/stat; -1 if
 * it is gone. */
static pid_t spawner_parent(pid_t pid, char *state)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	/* "pid (comm) S ppid ...": comm may hold ')' itself. */
	if ((p = strrchr(buf, ')')) == NULL || p[1] != ' ' || p[2] == '\0' || p[3] != ' ')
		return -1;
	*state = p[2];
	return (pid_t)strtol(p + 4, NULL, 10);
}

/* SIGKILLs what closed terminals left behind: a shell is the subreaper of
 * everything it starts, so when it is gone its processes — its session,
 * and any that left it (setsid, a double fork) — were handed to us. Every
 * live process whose line of parents reaches us through a child we did not
 * start as a shell (an adopted one) is such a leftover, and nothing else
 * is: processes of other programs never have us as an ancestor. Rounds,
 * for a tree that forks while it is being killed. Runs as the uid. */
static void spawner_kill_orphans(pid_t unused, int sig)
{
	(void)unused;
	for (int round = 0; round < SPAWNER_SWEEP_ROUNDS; round++) {
		struct timespec nap = {0, 1000 * 1000};
		struct dirent *e;
		int hit = 0;
		DIR *d;

		if ((d = opendir("/proc")) == NULL)
			return;
		while ((e = readdir(d)) != NULL) {
			char *end, st;
			long pid = strtol(e->d_name, &end, 10);
			pid_t q, pp;
			if (*end != '\0' || pid <= 1 || pid == getpid() || pid == spawner_self)
				continue;
			if (spawner_parent((pid_t)pid, &st) < 0 || st == 'Z' || st == 'X')
				continue;
			q = (pid_t)pid;
			for (int depth = 0; depth < 4096; depth++) {
				if ((pp = spawner_parent(q, &st)) <= 1)
					break;
				if (pp == spawner_self) {
					if (q != getpid() && spawner_kid(q) == NULL &&
					    kill((pid_t)pid, sig) == 0)
						hit++;
					break;
				}
				q = pp;
			}
		}
		closedir(d);
		if (hit == 0)
			return;
		nanosleep(&nap, NULL);
	}
}

/* A shell of `uid` is gone: its leftovers follow. */
static void spawner_after_exit(uid_t uid)
{
	spawner_as_uid(spawner_kill_orphans, uid, 0, SIGKILL);
}

/* No capability at all from here: the shell starts with none. */
static int spawner_caps_clear(void)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct d[2];

	memset(d, 0, sizeof(d));
	return syscall(SYS_capset, &h, d) == 0 ? 0 : ERR_PERM;
}

/* In the child: report `err` (and the master, when >= 0, with the
 * directory the shell starts in) to the spawner. */
static void spawner_child_report(int chan, int err, int master, const char *cwd)
{
	struct spawner_msg m;
	memset(&m, 0, sizeof(m));
	m.op = err == 0 ? SP_SPAWNED : SP_FAILED;
	m.err = err;
	if (cwd != NULL)
		snprintf(m.cwd, sizeof(m.cwd), "%s", cwd);
	spawner_send(chan, &m, master);
}

static __attribute__((noreturn)) void spawner_child_fail(int chan, int err)
{
	spawner_child_report(chan, err != 0 ? err : EPERM, -1, NULL);
	_exit(126);
}

/* The parent of the private homes, <first root>/.home: ours and 0711, so
 * no shell can make, rename or remove an entry in it (a home is made by the
 * spawner alone, spawner_child_home), yet each may pass through to its own.
 * One left by anyone else (a shell of an older version, in a 1777 root) is
 * refused, not used. 0 or ERR_PERM. */
static int spawner_homes_open(const struct spawner_conf *sc)
{
	const char *root = sc->policy->nroots > 0 ? sc->policy->roots[0] : NULL;
	struct stat st;
	int rfd = -1, fd = -1;

	if (spawner_homes_fd >= 0)
		return 0;
	if (root == NULL)
		return ERR_PERM;
	if ((rfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
	    (mkdirat(rfd, SPAWNER_HOMES, 0700) != 0 && errno != EEXIST) ||
	    (fd = openat(rfd, SPAWNER_HOMES, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) <
	        0 ||
	    fstat(fd, &st) != 0) {
		log_warnx("spawner: cannot make %s/%s (the shells' homes): %s", root, SPAWNER_HOMES,
		          strerror(errno));
		goto fail;
	}
	if (st.st_uid != geteuid()) {
		log_warnx("spawner: %s/%s belongs to uid %u, not to us: the shells' homes cannot "
		          "be private there; remove it (docs/operations.md)",
		          root, SPAWNER_HOMES, (unsigned)st.st_uid);
		goto fail;
	}
	if ((st.st_mode & 07777) != 0711 && fchmod(fd, 0711) != 0)
		goto fail;
	close(rfd);
	spawner_homes_fd = fd;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	if (rfd >= 0)
		close(rfd);
	return ERR_PERM;
}

/* In the child, after the group change and before the uid change: the
 * private home of `uid` (a uid without an account), <first root>/.home/<uid>,
 * into out. It is ours with the uid's group, 0770: only that uid (and the
 * spawner) may enter it, and no shell can make one for another (.home is
 * ours, 0711). Anything else found there is refused. 0 or an errno. */
static int spawner_child_home(const struct spawner_conf *sc, uid_t uid, gid_t gid, char *out,
                              size_t cap)
{
	const char *root = sc->policy->roots[0];
	char name[16];
	struct stat st;
	int fd, made, rv = 0;

	if (spawner_homes_fd < 0)
		return EPERM;
	snprintf(name, sizeof(name), "%u", (unsigned)uid);
	made = mkdirat(spawner_homes_fd, name, 0700) == 0;
	if (!made && errno != EEXIST)
		return errno;
	if ((fd = openat(spawner_homes_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) <
	    0)
		return errno;
	if ((made && fchmod(fd, 0770) != 0) || fstat(fd, &st) != 0 || st.st_uid != geteuid() ||
	    st.st_gid != gid || (st.st_mode & 07777) != 0770)
		rv = EPERM;
	close(fd);
	if (rv == 0 && snprintf(out, cap, "%s/%s/%s", strcmp(root, "/") == 0 ? "" : root,
	                        SPAWNER_HOMES, name) >= (int)cap)
		rv = ENAMETOOLONG;
	return rv;
}

/* No namespaces: a user namespace would let a process map a shell uid to
 * any other (and, with CAP_SETUID inside, become it). clone3 passes its
 * flags in memory a filter cannot read: ENOSYS makes the C library fall
 * back to clone, whose flags it can. */
static int spawner_deny_namespaces(scmp_filter_ctx ctx)
{
	static const char *const never[] = {"unshare", "setns"};
	int rc = 0, nr;

	for (size_t i = 0; i < sizeof(never) / sizeof(never[0]) && rc == 0; i++)
		if ((nr = seccomp_syscall_resolve_name(never[i])) != __NR_SCMP_ERROR)
			rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
		                      SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER));
	if (rc == 0 && (nr = seccomp_syscall_resolve_name("clone3")) != __NR_SCMP_ERROR)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), nr, 0);
	return rc;
}

/* Becomes the shell; never returns. Runs in a fork of the single-threaded
 * spawner, so the C library is usable. */
/* What a shell may not do to another process, even its own uid's: trace
 * it, read or write its memory, compare or take its descriptors. Names the
 * libseccomp at hand does not know are skipped (the kernel's are older). */
int spawner_shell_filter(void)
{
	static const char *const deny[] = {
	    "ptrace",      "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp",
	    "pidfd_getfd", "get_robust_list",  "move_pages",        "migrate_pages",
	};
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	int rc = 0;

	if (ctx == NULL)
		return ERR_NOMEM;
	for (size_t i = 0; i < sizeof(deny) / sizeof(deny[0]) && rc == 0; i++) {
		int nr = seccomp_syscall_resolve_name(deny[i]);
		if (nr != __NR_SCMP_ERROR)
			rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
	}
	/* Inherited from the spawner's filter already; said again here, so
	 * the shells' filter stands on its own. */
	if (rc == 0)
		rc = spawner_deny_namespaces(ctx);
	if (rc == 0)
		rc = seccomp_load(ctx);
	seccomp_release(ctx);
	return rc == 0 ? 0 : ERR_PERM;
}

static __attribute__((noreturn)) void spawner_child(const struct spawner_conf *sc,
                                                    const char *exec_path, const char *shell,
                                                    const char *cwd, uid_t uid, unsigned cols,
                                                    unsigned rows, int chan)
{
	struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
	struct rlimit nproc = {SPAWNER_NPROC, SPAWNER_NPROC};
	struct rlimit fsize = {SPAWNER_FSIZE, SPAWNER_FSIZE};
	struct rlimit core = {0, 0};
	char here[PATH_MAX], slave_name[128], argv0[TERMINAL_SHELL_MAX + 1];
	char env_home[PATH_MAX + 8], env_user[80], env_shell[TERMINAL_SHELL_MAX + 8];
	char home[PATH_MAX], env_tmp[PATH_MAX + 16];
	char *envp[8], *argv[3];
	bool private_home;
	const char *base;
	gid_t gid = spawner_gid(sc, uid);
	struct passwd *pw;
	sigset_t all;
	int master, slave;

	/* The service blocked and ignored signals; a shell starts clean. */
	for (int s = 1; s < NSIG; s++)
		signal(s, SIG_DFL);
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	if (setsid() < 0)
		spawner_child_fail(chan, errno);
	/* Identity: groups, then gid, then uid, each checked; never root. */
	if (sc->privileged && setgroups(0, NULL) != 0)
		spawner_child_fail(chan, errno);
	if (setresgid(gid, gid, gid) != 0)
		spawner_child_fail(chan, errno);
	/* HOME: the account's, if the uid has one (a non-root developer); a
	 * range uid has none and gets its own, private one. Never a directory
	 * two uids share: a login shell runs what its HOME holds
	 * (.bash_profile, .profile), and so would any other user's planted
	 * there. Made here, between the two id changes: still ours, already
	 * with the uid's group. */
	if ((pw = getpwuid(uid)) != NULL) {
		private_home = false;
		if (snprintf(home, sizeof(home), "%s", pw->pw_dir) >= (int)sizeof(home) ||
		    snprintf(env_user, sizeof(env_user), "USER=%s", pw->pw_name) >=
		        (int)sizeof(env_user))
			spawner_child_fail(chan, ENAMETOOLONG);
	} else {
		int rv = spawner_child_home(sc, uid, gid, home, sizeof(home));
		if (rv != 0)
			spawner_child_fail(chan, rv);
		private_home = true;
		snprintf(env_user, sizeof(env_user), "USER=shell");
	}
	/* The effective uid only, for now (files, the PTY, the directory are
	 * the user's): the spawner waits for this child, and until its real
	 * and saved uid change, just before execve, the user's own processes
	 * cannot signal it (stop it, and the spawner with it). */
	if (setresuid((uid_t)-1, uid, (uid_t)-1) != 0)
		spawner_child_fail(chan, errno);
	/* A move between two non-zero uids keeps capabilities: drop them. */
	if (sc->privileged && spawner_caps_clear() != 0)
		spawner_child_fail(chan, EPERM);
	if (getuid() == 0 || geteuid() == 0 || getgid() == 0 || getegid() == 0)
		spawner_child_fail(chan, EPERM);
	/* Everything the shell starts stays below it, even what leaves its
	 * session: at its end all of it comes to the spawner, which ends it
	 * (spawner_kill_orphans). Kept across execve. */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 || spawner_shell_filter() != 0)
		spawner_child_fail(chan, EPERM);
	/* Other users' shells run beside this one: files are private unless
	 * the user says otherwise. */
	umask(077);
	if (setrlimit(RLIMIT_FSIZE, &fsize) != 0 || setrlimit(RLIMIT_CORE, &core) != 0)
		spawner_child_fail(chan, errno);
	/* As the shell user: a directory it may not enter is refused, and the
	 * place it landed is checked again (a link swapped since validation). */
	/* No directory asked for: a range uid starts at home, anyone else at
	 * the first root. */
	if (cwd[0] == '\0')
		cwd = private_home ? home : sc->policy->nroots > 0 ? sc->policy->roots[0] : "/";
	if (chdir(cwd) != 0)
		spawner_child_fail(chan, errno);
	if (getcwd(here, sizeof(here)) == NULL || !validate_under_root(sc->policy, here))
		spawner_child_fail(chan, EPERM);
	/* The PTY is opened by the shell user, so its slave belongs to it. */
	if ((master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0)
		spawner_child_fail(chan, errno);
	if (grantpt(master) != 0 || unlockpt(master) != 0 ||
	    ptsname_r(master, slave_name, sizeof(slave_name)) != 0)
		spawner_child_fail(chan, errno);
	if ((slave = open(slave_name, O_RDWR)) < 0)
		spawner_child_fail(chan, errno);
	if (ioctl(slave, TIOCSCTTY, 0) != 0 || ioctl(master, TIOCSWINSZ, &ws) != 0)
		spawner_child_fail(chan, errno);
	spawner_child_report(chan, 0, master, here);
	close(master);
	if (dup2(slave, 0) < 0 || dup2(slave, 1) < 0 || dup2(slave, 2) < 0)
		_exit(126);
	if (slave > 2)
		close(slave);
	/* Everything else closes at exec; `chan` too, which tells the spawner
	 * the exec succeeded. */
	if (syscall(SYS_close_range, 3u, ~0u, 4u /* CLOSE_RANGE_CLOEXEC */) != 0)
		for (int fd = 3; fd < 1024; fd++)
			if (fd != chan)
				close(fd);

	/* Temporary files too: /tmp is shared by every uid. */
	snprintf(env_tmp, sizeof(env_tmp), "TMPDIR=%s/tmp", home);
	if (private_home && mkdir(env_tmp + strlen("TMPDIR="), 0700) != 0 && errno != EEXIST)
		_exit(126);
	snprintf(env_home, sizeof(env_home), "HOME=%s", home);
	snprintf(env_shell, sizeof(env_shell), "SHELL=%s", shell);
	envp[0] = "TERM=xterm-256color";
	envp[1] = env_home;
	envp[2] = env_user;
	envp[3] = env_shell;
	envp[4] = "PATH=" SPAWNER_PATH;
	envp[5] = "LANG=C.UTF-8";
	envp[6] = private_home ? env_tmp : NULL;
	envp[7] = NULL;
	/* A login shell: "-l" for those that take it, the "-name" argv[0] that
	 * login(1) uses for the rest (dash, sh). */
	base = strrchr(shell, '/') != NULL ? strrchr(shell, '/') + 1 : shell;
	if (strcmp(base, "bash") == 0 || strcmp(base, "zsh") == 0 || strcmp(base, "fish") == 0) {
		argv[0] = (char *)shell;
		argv[1] = "-l";
	} else {
		snprintf(argv0, sizeof(argv0), "-%s", base);
		argv[0] = argv0;
		argv[1] = NULL;
	}
	argv[2] = NULL;
	/* Now the user entirely. The process limit after the change: a user
	 * at it still gets a shell (whose own forks fail), see
	 * docs/terminal.md. */
	if (setresuid(uid, uid, uid) != 0 || getuid() != uid || geteuid() != uid ||
	    setrlimit(RLIMIT_NPROC, &nproc) != 0) {
		spawner_child_report(chan, EPERM, -1, NULL);
		_exit(126);
	}
	execve(exec_path, argv, envp);
	spawner_child_report(chan, errno, -1, NULL);
	_exit(127);
}

static int spawner_track(pid_t pid, uid_t uid)
{
	for (int i = 0; i < SPAWNER_MAX_CHILDREN; i++)
		if (spawner_kids[i].pid == 0) {
			spawner_kids[i].pid = pid;
			spawner_kids[i].uid = uid;
			spawner_kids[i].kill_at = 0;
			return 0;
		}
	return ERR_UNAVAIL;
}

/* Waits for the child's report on `chan`: the master with the directory the
 * shell starts in (into cwd, PATH_MAX), then EOF (exec done). */
static void spawner_signal_one(pid_t pid, int sig)
{
	kill(pid, sig);
}

/* Waits for the child's next word on `chan`. Between its last setresuid
 * and execve the child is the user's entirely, so the user's own processes
 * may stop it (an escapee that stops every new process of its uid), and
 * with it this wait and every Open behind it: a stopped child is continued
 * (as the uid) and waited for again. False after SPAWNER_REPLY_TIMEOUT_MS. */
static bool spawner_child_ready(int chan, pid_t pid, uid_t uid)
{
	struct pollfd pfd = {.fd = chan, .events = POLLIN};
	uint64_t until = clock_mono_ms() + SPAWNER_REPLY_TIMEOUT_MS;

	while (clock_mono_ms() < until) {
		siginfo_t si;
		int n = poll(&pfd, 1, 20);
		if (n > 0)
			return true;
		if (n < 0 && errno != EINTR)
			return false;
		memset(&si, 0, sizeof(si));
		if (waitid(P_PID, (id_t)pid, &si, WSTOPPED | WNOHANG) == 0 && si.si_pid == pid)
			spawner_as_uid(spawner_signal_one, uid, pid, SIGCONT);
	}
	return false;
}

static int spawner_await_child(int chan, pid_t pid, uid_t uid, int *master, char *cwd)
{
	struct spawner_msg m;
	int fd, rv;

	*master = -1;
	for (int step = 0; step < 2; step++) {
		if (!spawner_child_ready(chan, pid, uid)) {
			rv = ETIMEDOUT;
			goto fail;
		}
		rv = spawner_recv(chan, &m, &fd);
		if (step == 1 && rv == ERR_CLOSED)
			return 0; /* close-on-exec: the shell runs */
		if (rv != 0) {
			rv = EIO;
			goto fail;
		}
		if (m.op != SP_SPAWNED || fd < 0 || step == 1) {
			if (fd >= 0)
				close(fd);
			rv = m.err != 0 ? m.err : EIO;
			goto fail;
		}
		*master = fd;
		memcpy(cwd, m.cwd, PATH_MAX);
	}
	return 0;
fail:
	if (*master >= 0)
		close(*master);
	*master = -1;
	kill(pid, SIGKILL); /* still our uid, or else: */
	spawner_signal_session(uid, pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return rv;
}

static void spawner_do_spawn(int sock, const struct spawner_conf *sc, struct spawner_msg *m)
{
	char exec_path[PATH_MAX], cwd[PATH_MAX];
	struct spawner_msg rep;
	int chan[2], master = -1, err = 0;
	pid_t pid;

	memset(&rep, 0, sizeof(rep));
	rep.seq = m->seq;
	cwd[0] = '\0'; /* none asked for: the child's default (home) */
	/* Checked again here: the service's word is not enough for a process
	 * that holds CAP_SETUID. */
	if (validate_shell(sc->policy, m->shell, strlen(m->shell), exec_path, sizeof(exec_path)) !=
	        0 ||
	    (m->cwd[0] != '\0' &&
	     validate_cwd(sc->policy, m->cwd, strlen(m->cwd), cwd, sizeof(cwd)) != 0) ||
	    m->cols < 1 || m->cols > TERMINAL_SIZE_MAX || m->rows < 1 ||
	    m->rows > TERMINAL_SIZE_MAX || m->uid == 0 || m->uid < sc->uid_first ||
	    m->uid > sc->uid_last) {
		err = EPERM;
		goto out;
	}
	/* A uid without an account (every range uid) has its home under
	 * .home: the child refuses to start without it. */
	if (spawner_homes_fd < 0 && (sc->privileged || getpwuid((uid_t)m->uid) == NULL))
		spawner_homes_open(sc);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, chan) != 0) {
		err = errno;
		goto out;
	}
	if ((pid = fork()) < 0) {
		err = errno;
		close(chan[0]);
		close(chan[1]);
		goto out;
	}
	if (pid == 0) {
		close(chan[0]);
		close(sock);
		spawner_child(sc, exec_path, m->shell, cwd, (uid_t)m->uid, m->cols, m->rows,
		              chan[1]);
	}
	close(chan[1]);
	err = spawner_await_child(chan[0], pid, (uid_t)m->uid, &master, rep.cwd);
	close(chan[0]);
	if (err == 0 && spawner_track(pid, (uid_t)m->uid) != 0) {
		close(master);
		master = -1;
		spawner_signal_session((uid_t)m->uid, pid, SIGKILL);
		err = EAGAIN;
	}
	rep.pid = pid;
out:
	rep.op = err == 0 ? SP_SPAWNED : SP_FAILED;
	rep.err = err;
	spawner_send(sock, &rep, master);
	if (master >= 0)
		close(master);
}

/* CAP_SETUID and CAP_SETGID (to become the shell user) stay; everything
 * else leaves the bounding, permitted and effective sets. */
static int spawner_drop_caps(void)
{
	const uint32_t keep = (1u << CAP_SETUID) | (1u << CAP_SETGID);
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct d[2];

	for (int cap = 0; cap < 64; cap++) {
		if (cap < 32 && (keep & (1u << cap)) != 0)
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno == EINVAL)
			break; /* past the kernel's last capability */
	}
	memset(d, 0, sizeof(d));
	d[0].effective = d[0].permitted = keep;
	if (syscall(SYS_capset, &h, d) != 0)
		return ERR_PERM;
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	return 0;
}

/* Refuses `sys` (EPERM) when argument `arg` lies in lo..hi, as aligned
 * blocks of values: libseccomp takes one comparison per argument in a rule,
 * so a range with a hole is the rules around the hole. */
static int spawner_deny_span(scmp_filter_ctx ctx, int sys, unsigned arg, uint64_t lo, uint64_t hi)
{
	int rc = 0;

	while (rc == 0 && lo <= hi) {
		uint64_t size = lo == 0 ? 1ull << 63 : lo & (~lo + 1); /* lo's alignment */
		struct scmp_arg_cmp c;
		while (size - 1 > hi - lo)
			size >>= 1;
		c = (struct scmp_arg_cmp){arg, SCMP_CMP_MASKED_EQ, ~(size - 1), lo};
		rc = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(EPERM), sys, 1, &c);
		if (hi - lo == size - 1)
			break;
		lo += size;
	}
	return rc;
}

/* Refuses `sys` when argument `arg` is outside first..last and not `extra`. */
static int spawner_deny_outside(scmp_filter_ctx ctx, int sys, unsigned arg, uint64_t first,
                                uint64_t last, uint64_t extra)
{
	struct scmp_arg_cmp lt = {arg, SCMP_CMP_LT, first, 0}, gt = {arg, SCMP_CMP_GT, last, 0};
	int rc;

	if (extra < first) {
		lt.datum_a = extra;
		if ((rc = spawner_deny_span(ctx, sys, arg, extra + 1, first - 1)) != 0)
			return rc;
	} else if (extra > last) {
		gt.datum_a = extra;
		if ((rc = spawner_deny_span(ctx, sys, arg, last + 1, extra - 1)) != 0)
			return rc;
	}
	if ((rc = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(EPERM), sys, 1, &lt)) != 0)
		return rc;
	return seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(EPERM), sys, 1, &gt);
}

/* Allows everything but identity changes other than to the shells' ids, and
 * namespaces (the shells inherit it, which costs them nothing: they cannot
 * setuid). setresuid may also name -1 (unchanged) as real and saved uid and
 * our own uid as effective uid: spawner_as_uid's switch and its way back. */
int spawner_filter(const struct spawner_conf *sc)
{
	const gid_t gfirst = spawner_gid(sc, sc->uid_first), glast = spawner_gid(sc, sc->uid_last);
	static const int never[] = {
	    SCMP_SYS(setuid),   SCMP_SYS(setgid),   SCMP_SYS(setreuid),
	    SCMP_SYS(setregid), SCMP_SYS(setfsuid), SCMP_SYS(setfsgid),
	};
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	int rc = 0;

	if (ctx == NULL)
		return ERR_NOMEM;
	/* Each argument outside the range (but the one extra value) is refused
	 * (rules OR). */
	for (unsigned i = 0; i < 3 && rc == 0; i++) {
		uint64_t extra = !sc->privileged ? (uint64_t)sc->uid_first
		                 : i == 1        ? (uint64_t)sc->self_uid
		                                 : (uint64_t)(uid_t)-1;
		rc = spawner_deny_outside(ctx, SCMP_SYS(setresuid), i, sc->uid_first, sc->uid_last,
		                          extra);
		if (rc == 0)
			rc = spawner_deny_outside(ctx, SCMP_SYS(setresgid), i, gfirst, glast,
			                          gfirst);
	}
	for (size_t i = 0; i < sizeof(never) / sizeof(never[0]) && rc == 0; i++)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), never[i], 0);
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(setgroups), 1,
		                      SCMP_A0(SCMP_CMP_NE, 0));
	if (rc == 0)
		rc = spawner_deny_namespaces(ctx);
	if (rc == 0)
		rc = seccomp_load(ctx); /* sets no_new_privs first */
	seccomp_release(ctx);
	return rc == 0 ? 0 : ERR_PERM;
}

/* As root: keep the two capabilities, become the service's user (keeping
 * them across the uid change), and check that root is gone. */
static int spawner_become(const struct spawner_conf *sc)
{
	int rv;

	if ((rv = spawner_drop_caps()) != 0) /* the bounding set needs root */
		return rv;
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 || setgroups(0, NULL) != 0 ||
	    setresgid(sc->self_gid, sc->self_gid, sc->self_gid) != 0 ||
	    setresuid(sc->self_uid, sc->self_uid, sc->self_uid) != 0)
		return ERR_PERM;
	prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
	if (getuid() == 0 || geteuid() == 0 || getgid() == 0 || getegid() == 0)
		return ERR_PERM;
	return spawner_drop_caps(); /* the uid change emptied the effective set */
}

static void spawner_reap(int sock)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		struct spawner_kid *k = spawner_kid(pid);
		struct spawner_msg m;
		if (k == NULL)
			continue; /* an orphan we adopted as subreaper */
		k->pid = 0;
		memset(&m, 0, sizeof(m));
		m.op = SP_EXITED;
		m.pid = pid;
		m.status = status;
		spawner_send(sock, &m, -1);
		/* The shell is gone: everything it left was handed to us. */
		spawner_after_exit(k->uid);
	}
}

__attribute__((noreturn)) void spawner_main(int sock, const struct spawner_conf *sc)
{
	sigset_t chld;
	int sfd, rv;

	prctl(PR_SET_NAME, "magnetar-spawn", 0, 0, 0);
	/* Orphans of a shell come to us, not to init, so none is left a zombie. */
	prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	spawner_self = getpid();
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);
	if ((sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK)) < 0)
		fatal("spawner: signalfd");
	spawner_sc = sc;
	if (geteuid() == 0 && !sc->privileged)
		fatalx("spawner: started as root without a service user to become");
	if (sc->privileged && (rv = spawner_become(sc)) != 0)
		fatalx("spawner: cannot become uid %u with CAP_SETUID/CAP_SETGID alone: %s",
		       (unsigned)sc->self_uid, err_str(rv));
	if ((rv = spawner_filter(sc)) != 0)
		fatalx("spawner: cannot load the seccomp filter: %s", err_str(rv));
	/* Before any shell runs, so none can make .home first (the shells'
	 * root may be 1777); not fatal: without it only range uids' shells
	 * are refused, and it is tried again at each spawn. */
	if (sc->privileged)
		spawner_homes_open(sc);
	log_info("spawner: ready pid=%d uid=%u shell_uids=%u-%u", (int)getpid(), (unsigned)getuid(),
	         (unsigned)sc->uid_first, (unsigned)sc->uid_last);

	for (;;) {
		struct pollfd pfd[2] = {{.fd = sock, .events = POLLIN},
		                        {.fd = sfd, .events = POLLIN}};
		uint64_t now = clock_mono_ms(), next = 0;
		int timeout = -1;

		for (int i = 0; i < SPAWNER_MAX_CHILDREN; i++) {
			struct spawner_kid *k = &spawner_kids[i];
			if (k->pid == 0 || k->kill_at == 0)
				continue;
			if (k->kill_at <= now) {
				spawner_signal_session(k->uid, k->pid, SIGKILL);
				k->kill_at = 0;
			} else if (next == 0 || k->kill_at < next)
				next = k->kill_at;
		}
		if (next != 0)
			timeout = (int)(next - now);
		if (poll(pfd, 2, timeout) < 0 && errno != EINTR)
			fatal("spawner: poll");
		if ((pfd[1].revents & POLLIN) != 0) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
				;
			spawner_reap(sock);
		}
		if ((pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
			struct spawner_msg m;
			int fd;
			rv = spawner_recv(sock, &m, &fd);
			if (fd >= 0)
				close(fd); /* nothing is ever passed to us */
			if (rv == ERR_CLOSED || rv == ERR_IO)
				break;
			if (rv != 0)
				continue;
			if (m.op == SP_SPAWN)
				spawner_do_spawn(sock, sc, &m);
			else if (m.op == SP_KILL) {
				struct spawner_kid *k = spawner_kid(m.pid);
				/* Only our own shells: never a pid the service names. */
				if (k != NULL) {
					spawner_signal_session(k->uid, k->pid, SIGHUP);
					spawner_signal_session(k->uid, k->pid, SIGCONT);
					if (k->kill_at == 0)
						k->kill_at =
						    clock_mono_ms() + TERMINAL_KILL_GRACE_MS;
				}
			}
		}
	}
	/* The service is gone: so are its shells, and then what they left. */
	for (int i = 0; i < SPAWNER_MAX_CHILDREN; i++)
		if (spawner_kids[i].pid != 0)
			spawner_signal_session(spawner_kids[i].uid, spawner_kids[i].pid, SIGKILL);
	for (int i = 0; i < SPAWNER_MAX_CHILDREN; i++)
		if (spawner_kids[i].pid != 0) {
			waitpid(spawner_kids[i].pid, NULL, 0);
			spawner_kids[i].pid = 0;
			spawner_after_exit(spawner_kids[i].uid);
		}
	_exit(0);
}
