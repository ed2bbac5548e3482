/*
 * spawner.c — the small process that starts shells, forked by the terminal
 * service before it has threads, a database or sockets. It keeps only the
 * socket to the service (SOCK_SEQPACKET: one request per packet, the PTY
 * master passed back with SCM_RIGHTS). Started as root, it becomes the
 * terminal service's user keeping only CAP_SETUID and CAP_SETGID, under a
 * seccomp filter that lets setresuid and setresgid reach the shell's ids
 * and nothing else (so never root again). Each shell: fork, drop to the
 * shell user, open its own PTY, chdir, fresh environment, execve. Shells
 * are signalled by a short-lived child that becomes the shell user (no
 * CAP_KILL here).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <poll.h>
#include <pwd.h>
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
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "services/terminal/terminal.h"

#define SPAWNER_MAX_CHILDREN 1024
#define SPAWNER_REPLY_TIMEOUT_MS 10000
#define SPAWNER_NPROC 1024         /* per uid: a fork bomb stops here */
#define SPAWNER_FSIZE (1ull << 30) /* largest file a shell may write */
#define SPAWNER_PATH "/usr/local/bin:/usr/bin:/bin"

enum spawner_op { SP_SPAWN = 1, SP_KILL, SP_SPAWNED, SP_FAILED, SP_EXITED };

/* One packet either way. Strings are NUL-terminated by the receiver. */
struct spawner_msg {
	uint32_t op;
	uint32_t seq;
	int32_t pid;
	int32_t err;    /* SP_FAILED: errno */
	int32_t status; /* SP_EXITED: wait status */
	uint16_t cols, rows;
	char shell[TERMINAL_SHELL_MAX];
	char cwd[PATH_MAX];
};

struct spawner {
	int fd;
	pid_t pid;
	struct spawner_conf conf;
	pthread_mutex_t call_mu; /* one spawn at a time */
	pthread_mutex_t mu;      /* below, and sends */
	pthread_cond_t cv;
	uint32_t seq;
	bool have_reply, dead, stopping;
	struct spawner_msg reply;
	int reply_fd;
	bool running;
	pthread_t thread;
	spawner_exit_fn on_exit;
	void *arg;
};

/* ---- both sides ------------------------------------------------------------ */

static int spawner_send(int fd, const struct spawner_msg *m, int pass_fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = {.iov_base = (void *)m, .iov_len = sizeof(*m)};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t n;

	if (pass_fd >= 0) {
		struct cmsghdr *c;
		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof(u.buf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
	}
	do
		n = sendmsg(fd, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)sizeof(*m) ? 0 : ERR_IO;
}

/* Receives one packet; *got_fd is a passed descriptor or -1. 0, ERR_CLOSED
 * (peer gone) or ERR_IO/ERR_PROTO. */
static int spawner_recv(int fd, struct spawner_msg *m, int *got_fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = {.iov_base = m, .iov_len = sizeof(*m)};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	struct cmsghdr *c;
	ssize_t n;

	*got_fd = -1;
	mh.msg_control = u.buf;
	mh.msg_controllen = sizeof(u.buf);
	do
		n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n == 0)
		return ERR_CLOSED;
	if (n < 0)
		return ERR_IO;
	for (c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
		    c->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(got_fd, CMSG_DATA(c), sizeof(int));
	if (n != (ssize_t)sizeof(*m) || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
		if (*got_fd >= 0)
			close(*got_fd);
		*got_fd = -1;
		return ERR_PROTO;
	}
	m->shell[sizeof(m->shell) - 1] = '\0';
	m->cwd[sizeof(m->cwd) - 1] = '\0';
	return 0;
}

/* ---- the spawner process --------------------------------------------------- */

struct spawner_kid {
	pid_t pid;
	uint64_t kill_at; /* monotonic ms of the SIGKILL; 0 = none pending */
};

static struct spawner_kid spawner_kids[SPAWNER_MAX_CHILDREN];
static const struct spawner_conf *spawner_sc; /* the spawner's own copy */
static char spawner_home[PATH_MAX] = "/";
static char spawner_user[64] = "shell";

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

/* Runs `fn(sid, sig)` as the shell user: the shells are another uid and
 * the spawner holds no CAP_KILL. A fork of this small single-threaded
 * process costs a fraction of a millisecond, and it happens per close. */
static void spawner_as_shell_user(void (*fn)(pid_t, int), pid_t sid, int sig)
{
	pid_t pid;

	if (!spawner_sc->privileged) {
		fn(sid, sig); /* shells are our own uid */
		return;
	}
	if ((pid = fork()) == 0) {
		if (setresgid(spawner_sc->gid, spawner_sc->gid, spawner_sc->gid) == 0 &&
		    setresuid(spawner_sc->uid, spawner_sc->uid, spawner_sc->uid) == 0)
			fn(sid, sig);
		_exit(0);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
}

static void spawner_signal_session(pid_t sid, int sig)
{
	spawner_as_shell_user(spawner_signal_direct, sid, sig);
}

/* Every process of the shell user, wherever it went (a process that made
 * its own session escaped spawner_signal_session). Only when no terminal
 * is open, and only with a dedicated shell uid (privileged). */
static void spawner_kill_uid(pid_t unused, int sig)
{
	(void)unused;
	kill(-1, sig); /* all the caller may signal: the shell uid's */
}

static void spawner_sweep_if_idle(void)
{
	for (int i = 0; i < SPAWNER_MAX_CHILDREN; i++)
		if (spawner_kids[i].pid != 0)
			return;
	if (spawner_sc->privileged)
		spawner_as_shell_user(spawner_kill_uid, 0, SIGKILL);
}

/* No capability at all from here: the shell starts with none. */
static int spawner_caps_clear(void)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct d[2];

	memset(d, 0, sizeof(d));
	return syscall(SYS_capset, &h, d) == 0 ? 0 : ERR_PERM;
}

/* In the child: report `err` (and the master, when >= 0) to the spawner. */
static void spawner_child_report(int chan, int err, int master)
{
	struct spawner_msg m;
	memset(&m, 0, sizeof(m));
	m.op = err == 0 ? SP_SPAWNED : SP_FAILED;
	m.err = err;
	spawner_send(chan, &m, master);
}

static __attribute__((noreturn)) void spawner_child_fail(int chan, int err)
{
	spawner_child_report(chan, err != 0 ? err : EPERM, -1);
	_exit(126);
}

/* Becomes the shell; never returns. Runs in a fork of the single-threaded
 * spawner, so the C library is usable. */
static __attribute__((noreturn)) void spawner_child(const struct spawner_conf *sc,
                                                    const char *exec_path, const char *shell,
                                                    const char *cwd, unsigned cols, unsigned rows,
                                                    int chan)
{
	struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
	struct rlimit nproc = {SPAWNER_NPROC, SPAWNER_NPROC};
	struct rlimit fsize = {SPAWNER_FSIZE, SPAWNER_FSIZE};
	struct rlimit core = {0, 0};
	char here[PATH_MAX], slave_name[128], argv0[TERMINAL_SHELL_MAX + 1];
	char env_home[PATH_MAX + 8], env_user[80], env_shell[TERMINAL_SHELL_MAX + 8];
	char *envp[7], *argv[3];
	const char *base;
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
	if (setresgid(sc->gid, sc->gid, sc->gid) != 0 || setresuid(sc->uid, sc->uid, sc->uid) != 0)
		spawner_child_fail(chan, errno);
	/* A move between two non-zero uids keeps capabilities: drop them. */
	if (sc->privileged && spawner_caps_clear() != 0)
		spawner_child_fail(chan, EPERM);
	if (getuid() == 0 || geteuid() == 0 || getgid() == 0 || getegid() == 0)
		spawner_child_fail(chan, EPERM);
	if (setrlimit(RLIMIT_NPROC, &nproc) != 0 || setrlimit(RLIMIT_FSIZE, &fsize) != 0 ||
	    setrlimit(RLIMIT_CORE, &core) != 0)
		spawner_child_fail(chan, errno);
	/* As the shell user: a directory it may not enter is refused, and the
	 * place it landed is checked again (a link swapped since validation). */
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
	spawner_child_report(chan, 0, master);
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

	snprintf(env_home, sizeof(env_home), "HOME=%s", spawner_home);
	snprintf(env_user, sizeof(env_user), "USER=%s", spawner_user);
	snprintf(env_shell, sizeof(env_shell), "SHELL=%s", shell);
	envp[0] = "TERM=xterm-256color";
	envp[1] = env_home;
	envp[2] = env_user;
	envp[3] = env_shell;
	envp[4] = "PATH=" SPAWNER_PATH;
	envp[5] = "LANG=C.UTF-8";
	envp[6] = NULL;
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
	execve(exec_path, argv, envp);
	spawner_child_report(chan, errno, -1);
	_exit(127);
}

static int spawner_track(pid_t pid)
{
	for (int i = 0; i < SPAWNER_MAX_CHILDREN; i++)
		if (spawner_kids[i].pid == 0) {
			spawner_kids[i].pid = pid;
			spawner_kids[i].kill_at = 0;
			return 0;
		}
	return ERR_UNAVAIL;
}

static struct spawner_kid *spawner_kid(pid_t pid)
{
	for (int i = 0; i < SPAWNER_MAX_CHILDREN; i++)
		if (spawner_kids[i].pid == pid)
			return &spawner_kids[i];
	return NULL;
}

/* Waits for the child's report on `chan`: the master, then EOF (exec done). */
static int spawner_await_child(int chan, pid_t pid, int *master)
{
	struct pollfd pfd = {.fd = chan, .events = POLLIN};
	struct spawner_msg m;
	int fd, rv;

	*master = -1;
	for (int step = 0; step < 2; step++) {
		if (poll(&pfd, 1, SPAWNER_REPLY_TIMEOUT_MS) <= 0) {
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
	}
	return 0;
fail:
	if (*master >= 0)
		close(*master);
	*master = -1;
	kill(pid, SIGKILL); /* still our uid, or else: */
	spawner_signal_session(pid, SIGKILL);
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
	/* Checked again here: the service's word is not enough for a process
	 * that holds CAP_SETUID. */
	if (validate_shell(sc->policy, m->shell, strlen(m->shell), exec_path, sizeof(exec_path)) !=
	        0 ||
	    validate_cwd(sc->policy, m->cwd, strlen(m->cwd), cwd, sizeof(cwd)) != 0 ||
	    m->cols < 1 || m->cols > TERMINAL_SIZE_MAX || m->rows < 1 ||
	    m->rows > TERMINAL_SIZE_MAX) {
		err = EPERM;
		goto out;
	}
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
		spawner_child(sc, exec_path, m->shell, cwd, m->cols, m->rows, chan[1]);
	}
	close(chan[1]);
	err = spawner_await_child(chan[0], pid, &master);
	close(chan[0]);
	if (err == 0 && spawner_track(pid) != 0) {
		close(master);
		master = -1;
		spawner_signal_session(pid, SIGKILL);
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

/* Allows everything but identity changes other than to the shell's ids
 * (the shells inherit it, which costs them nothing: they cannot setuid). */
static int spawner_seccomp(uid_t uid, gid_t gid)
{
	static const int never[] = {
	    SCMP_SYS(setuid),   SCMP_SYS(setgid),   SCMP_SYS(setreuid),
	    SCMP_SYS(setregid), SCMP_SYS(setfsuid), SCMP_SYS(setfsgid),
	};
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	int rc = 0;

	if (ctx == NULL)
		return ERR_NOMEM;
	for (unsigned i = 0; i < 3 && rc == 0; i++) {
		struct scmp_arg_cmp u = {i, SCMP_CMP_NE, (scmp_datum_t)uid, 0};
		struct scmp_arg_cmp g = {i, SCMP_CMP_NE, (scmp_datum_t)gid, 0};
		rc = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(setresuid), 1, &u);
		if (rc == 0)
			rc = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(setresgid),
			                            1, &g);
	}
	for (size_t i = 0; i < sizeof(never) / sizeof(never[0]) && rc == 0; i++)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), never[i], 0);
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(setgroups), 1,
		                      SCMP_A0(SCMP_CMP_NE, 0));
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
		/* The leader is gone: its session's stragglers follow. */
		spawner_signal_session(pid, SIGHUP);
		k->pid = 0;
		memset(&m, 0, sizeof(m));
		m.op = SP_EXITED;
		m.pid = pid;
		m.status = status;
		spawner_send(sock, &m, -1);
		spawner_sweep_if_idle();
	}
}

static __attribute__((noreturn)) void spawner_main(int sock, const struct spawner_conf *sc)
{
	struct passwd *pw;
	sigset_t chld;
	int sfd, rv;

	prctl(PR_SET_NAME, "magnetar-spawn", 0, 0, 0);
	/* Orphans of a shell come to us, not to init, so none is left a zombie. */
	prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	if ((pw = getpwuid(sc->uid)) != NULL) {
		snprintf(spawner_home, sizeof(spawner_home), "%s", pw->pw_dir);
		snprintf(spawner_user, sizeof(spawner_user), "%s", pw->pw_name);
	}
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
	if ((rv = spawner_seccomp(sc->uid, sc->gid)) != 0)
		fatalx("spawner: cannot load the seccomp filter: %s", err_str(rv));
	log_info("spawner: ready pid=%d uid=%u shell_uid=%u shell_gid=%u", (int)getpid(),
	         (unsigned)getuid(), (unsigned)sc->uid, (unsigned)sc->gid);

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
				spawner_signal_session(k->pid, SIGKILL);
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
					spawner_signal_session(k->pid, SIGHUP);
					spawner_signal_session(k->pid, SIGCONT);
					if (k->kill_at == 0)
						k->kill_at =
						    clock_mono_ms() + TERMINAL_KILL_GRACE_MS;
				}
			}
		}
	}
	/* The service is gone: so are its shells. */
	for (int i = 0; i < SPAWNER_MAX_CHILDREN; i++)
		if (spawner_kids[i].pid != 0)
			spawner_signal_session(spawner_kids[i].pid, SIGKILL);
	memset(spawner_kids, 0, sizeof(spawner_kids));
	spawner_sweep_if_idle();
	_exit(0);
}

/* ---- the service's side ----------------------------------------------------- */

int spawner_start(const struct spawner_conf *sc, struct spawner **out)
{
	struct spawner *sp;
	int sv[2];
	pid_t pid;

	if (sc->uid == 0 || sc->gid == 0)
		return ERR_PERM;
	if ((sp = calloc(1, sizeof(*sp))) == NULL)
		return ERR_NOMEM;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
		free(sp);
		return ERR_IO;
	}
	fflush(NULL);
	if ((pid = fork()) < 0) {
		close(sv[0]);
		close(sv[1]);
		free(sp);
		return ERR_IO;
	}
	if (pid == 0) {
		/* Only the socket and stderr (the log) survive. */
		close(sv[0]);
		if (sv[1] != 3) {
			if (dup2(sv[1], 3) < 0)
				_exit(1);
			close(sv[1]);
		}
		if (syscall(SYS_close_range, 4u, ~0u, 0u) != 0)
			for (int fd = 4; fd < 1024; fd++)
				close(fd);
		spawner_main(3, sc);
	}
	close(sv[1]);
	sp->fd = sv[0];
	sp->pid = pid;
	sp->conf = *sc;
	sp->reply_fd = -1;
	pthread_mutex_init(&sp->call_mu, NULL);
	pthread_mutex_init(&sp->mu, NULL);
	pthread_cond_init(&sp->cv, NULL);
	*out = sp;
	return 0;
}

static void *spawner_reader(void *arg)
{
	struct spawner *sp = arg;
	struct spawner_msg *m = malloc(sizeof(*m));
	int fd, rv;

	while (m != NULL) {
		rv = spawner_recv(sp->fd, m, &fd);
		if (rv == ERR_CLOSED || rv == ERR_IO)
			break;
		if (rv != 0)
			continue;
		if (m->op == SP_EXITED) {
			if (fd >= 0)
				close(fd);
			sp->on_exit(sp->arg, m->pid, m->status);
			continue;
		}
		pthread_mutex_lock(&sp->mu);
		if (m->seq == sp->seq && !sp->have_reply) {
			sp->reply = *m;
			sp->reply_fd = fd;
			sp->have_reply = true;
			fd = -1;
			pthread_cond_broadcast(&sp->cv);
		}
		pthread_mutex_unlock(&sp->mu);
		if (fd >= 0)
			close(fd); /* an answer nobody waits for any more */
	}
	free(m);
	pthread_mutex_lock(&sp->mu);
	sp->dead = true;
	pthread_cond_broadcast(&sp->cv);
	if (!sp->stopping)
		/* No spawner, no shells, and no way to kill the running ones:
		 * exit so the supervisor starts us afresh. */
		fatalx("spawner: the spawner process is gone");
	pthread_mutex_unlock(&sp->mu);
	return NULL;
}

int spawner_run(struct spawner *sp, spawner_exit_fn on_exit, void *arg)
{
	sp->on_exit = on_exit;
	sp->arg = arg;
	if (pthread_create(&sp->thread, NULL, spawner_reader, sp) != 0)
		return ERR_NOMEM;
	sp->running = true;
	return 0;
}

int spawner_spawn(struct spawner *sp, const char *exec_path, const char *shell, const char *cwd,
                  unsigned cols, unsigned rows, pid_t *pid, int *master)
{
	struct spawner_msg *m = calloc(1, sizeof(*m));
	struct timespec until;
	int rv = 0;

	(void)exec_path; /* the spawner resolves it again itself */
	if (m == NULL)
		return ERR_NOMEM;
	if (strlen(shell) >= sizeof(m->shell) || strlen(cwd) >= sizeof(m->cwd)) {
		free(m);
		return ERR_PERM;
	}
	strcpy(m->shell, shell);
	strcpy(m->cwd, cwd);
	m->op = SP_SPAWN;
	m->cols = (uint16_t)cols;
	m->rows = (uint16_t)rows;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += SPAWNER_REPLY_TIMEOUT_MS / 1000 + 1;

	pthread_mutex_lock(&sp->call_mu);
	pthread_mutex_lock(&sp->mu);
	m->seq = ++sp->seq;
	sp->have_reply = false;
	if (sp->dead || spawner_send(sp->fd, m, -1) != 0)
		rv = ERR_UNAVAIL;
	while (rv == 0 && !sp->have_reply && !sp->dead)
		if (pthread_cond_timedwait(&sp->cv, &sp->mu, &until) != 0)
			rv = ERR_TIMEOUT;
	if (rv == 0 && !sp->have_reply)
		rv = ERR_UNAVAIL;
	if (rv == 0) {
		if (sp->reply.op == SP_SPAWNED && sp->reply_fd >= 0) {
			*pid = sp->reply.pid;
			*master = sp->reply_fd;
			fcntl(*master, F_SETFL, fcntl(*master, F_GETFL) | O_NONBLOCK);
		} else {
			if (sp->reply_fd >= 0)
				close(sp->reply_fd);
			log_info("spawner: refused: %s", strerror(sp->reply.err));
			rv = ERR_PERM;
		}
		sp->reply_fd = -1;
		sp->have_reply = false;
	}
	pthread_mutex_unlock(&sp->mu);
	pthread_mutex_unlock(&sp->call_mu);
	free(m);
	return rv;
}

int spawner_kill(struct spawner *sp, pid_t pid)
{
	/* On the stack: a kill never fails for want of memory (the shell
	 * would outlive its terminal). */
	struct spawner_msg m = {.op = SP_KILL, .pid = pid};
	int rv;

	pthread_mutex_lock(&sp->mu);
	rv = sp->dead ? ERR_UNAVAIL : spawner_send(sp->fd, &m, -1);
	pthread_mutex_unlock(&sp->mu);
	return rv;
}

void spawner_stop(struct spawner *sp)
{
	if (sp == NULL)
		return;
	/* EOF tells the spawner to kill every shell and exit; its exit closes
	 * its end, which ends our reader. */
	pthread_mutex_lock(&sp->mu);
	sp->stopping = true;
	pthread_mutex_unlock(&sp->mu);
	shutdown(sp->fd, SHUT_WR);
	if (sp->running)
		pthread_join(sp->thread, NULL);
	waitpid(sp->pid, NULL, 0);
	close(sp->fd);
	pthread_mutex_destroy(&sp->call_mu);
	pthread_mutex_destroy(&sp->mu);
	pthread_cond_destroy(&sp->cv);
	free(sp);
}
