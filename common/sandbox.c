/*
 * sandbox.c — seccomp allow-lists and Landlock rules per service, and the
 * self-test (sandbox.h). Debian 12's linux/landlock.h stops at ABI 2, so the
 * ABI 3..6 constants and the newer ruleset struct are spelled out here.
 */
#include "common/sandbox.h"

#include "common/rpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/err.h"
#include "common/list.h"
#include "common/log.h"

/* ---- Landlock (uapi, ABI 1..6) ------------------------------------------- */

#define LL_CREATE_RULESET_VERSION (1u << 0)
#define LL_RULE_PATH_BENEATH 1
#define LL_RULE_NET_PORT 2

#define LL_FS_EXECUTE (1ull << 0)
#define LL_FS_WRITE_FILE (1ull << 1)
#define LL_FS_READ_FILE (1ull << 2)
#define LL_FS_READ_DIR (1ull << 3)
#define LL_FS_REMOVE_DIR (1ull << 4)
#define LL_FS_REMOVE_FILE (1ull << 5)
#define LL_FS_MAKE_CHAR (1ull << 6)
#define LL_FS_MAKE_DIR (1ull << 7)
#define LL_FS_MAKE_REG (1ull << 8)
#define LL_FS_MAKE_SOCK (1ull << 9)
#define LL_FS_MAKE_FIFO (1ull << 10)
#define LL_FS_MAKE_BLOCK (1ull << 11)
#define LL_FS_MAKE_SYM (1ull << 12)
#define LL_FS_REFER (1ull << 13)     /* ABI 2 */
#define LL_FS_TRUNCATE (1ull << 14)  /* ABI 3 */
#define LL_FS_IOCTL_DEV (1ull << 15) /* ABI 5 */
#define LL_NET_BIND_TCP (1ull << 0)  /* ABI 4 */
#define LL_NET_CONNECT_TCP (1ull << 1)
#define LL_SCOPE_ABSTRACT_UNIX (1ull << 0) /* ABI 6 */
#define LL_SCOPE_SIGNAL (1ull << 1)

#define LL_FS_ABI1 ((1ull << 13) - 1)
#define LL_FS_FILE                                                                                 \
	(LL_FS_EXECUTE | LL_FS_WRITE_FILE | LL_FS_READ_FILE | LL_FS_TRUNCATE | LL_FS_IOCTL_DEV)
#define LL_FS_RO (LL_FS_READ_FILE | LL_FS_READ_DIR)
#define LL_FS_RW                                                                                   \
	(LL_FS_RO | LL_FS_WRITE_FILE | LL_FS_REMOVE_DIR | LL_FS_REMOVE_FILE | LL_FS_MAKE_DIR |     \
	 LL_FS_MAKE_REG | LL_FS_REFER | LL_FS_TRUNCATE)
#define LL_FS_SOCK (LL_FS_MAKE_SOCK | LL_FS_REMOVE_FILE)

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#define SYS_landlock_restrict_self 446
#endif

struct ll_ruleset_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net; /* ABI 4 */
	uint64_t scoped;             /* ABI 6 */
};

struct ll_path_beneath_attr {
	uint64_t allowed_access;
	int32_t parent_fd;
} __attribute__((packed));

struct ll_net_port_attr {
	uint64_t allowed_access;
	uint64_t port;
};

int sandbox_landlock_abi(void)
{
	long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LL_CREATE_RULESET_VERSION);
	return abi < 0 ? 0 : (int)abi;
}

/* ---- rules ------------------------------------------------------------- */

static int rules_add_path(char (*set)[PATH_MAX], size_t *n, size_t max, const char *path)
{
	if (path == NULL || path[0] == '\0')
		return 0;
	if (*n == max || strlen(path) >= PATH_MAX)
		return ERR_INVAL;
	snprintf(set[(*n)++], PATH_MAX, "%s", path);
	return 0;
}

static int rules_add_port(uint16_t *set, size_t *n, long port)
{
	if (port <= 0 || port > 65535)
		return 0;
	for (size_t i = 0; i < *n; i++)
		if (set[i] == port)
			return 0;
	if (*n == SANDBOX_MAX_PORTS)
		return ERR_INVAL;
	set[(*n)++] = (uint16_t)port;
	return 0;
}

/* The port of "scheme://host[:port][/...]", or `def`. */
static long rules_url_port(const char *url, long def)
{
	const char *host = strstr(url, "://"), *end, *colon;

	if (host == NULL)
		return def;
	host += 3;
	end = host + strcspn(host, "/?#");
	colon = NULL;
	for (const char *p = host; p < end; p++)
		if (*p == ':')
			colon = p;
	if (colon == NULL || (host[0] == '[' && memchr(colon, ']', (size_t)(end - colon)) != NULL))
		return def;
	return strtol(colon + 1, NULL, 10);
}

/* The dir of an ipc:// URL's socket, for a listener of ours. */
static int rules_add_ipc_dir(struct sandbox_rules *r, const char *urls)
{
	char dir[PATH_MAX], url[PATH_MAX];
	char *slash;

	/* Our own list holds our entry alone by now (svc_init, replica.h). */
	if (urls == NULL || rpc_url_first(urls, url, sizeof(url)) != 0 ||
	    strncmp(url, "ipc://", 6) != 0)
		return 0;
	snprintf(dir, sizeof(dir), "%s", url + 6);
	if ((slash = strrchr(dir, '/')) == NULL)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		slash[1] = '\0';
	else
		*slash = '\0';
	for (size_t i = 0; i < r->nsock; i++)
		if (strcmp(r->sock[i], dir) == 0)
			return 0;
	return rules_add_path(r->sock, &r->nsock, SANDBOX_MAX_SOCK, dir);
}

int sandbox_allow_read(struct sandbox_rules *r, const char *path)
{
	return rules_add_path(r->ro, &r->nro, SANDBOX_MAX_RO, path);
}

int sandbox_allow_sockets_in(struct sandbox_rules *r, const char *dir)
{
	return rules_add_path(r->sock, &r->nsock, SANDBOX_MAX_SOCK, dir);
}

int sandbox_allow_bind(struct sandbox_rules *r, long port)
{
	return rules_add_port(r->bind, &r->nbind, port);
}

int sandbox_allow_connect(struct sandbox_rules *r, long port)
{
	return rules_add_port(r->connect, &r->nconnect, port);
}

int sandbox_allow_syscall(struct sandbox_rules *r, const char *name)
{
	if (r->nsyscalls == SANDBOX_MAX_SYSCALLS)
		return ERR_INVAL;
	r->syscalls[r->nsyscalls++] = name;
	return 0;
}

long sandbox_url_port(const char *url, long def)
{
	return rules_url_port(url, def);
}

int sandbox_rules(struct sandbox_rules *r, const struct conf *c, enum svc_id id,
                  const char *data_dir)
{
	/* Read-only: libraries loaded late (NSS, OpenSSL providers), /etc
	 * (resolver, CA certificates, passwd for getpwnam, /etc/shells), the CPU
	 * count. Nothing here is writable, and DAC still applies. */
	static const char *const ro[] = {"/etc",         "/usr",       "/lib",
	                                 "/lib64",       "/proc/self", "/sys/devices/system/cpu",
	                                 "/dev/urandom", "/dev/random"};
	const char *tcp_urls[2 * SVC_SERVICES]; /* RPC sockets, then publishers */
	int rv = 0;

	memset(r, 0, sizeof(*r));
	r->id = id;
	r->mode = c->sandbox;
	r->verbose = c->env != CONF_ENV_PRODUCTION;
	rv |= rules_add_path(r->rw, &r->nrw, SANDBOX_MAX_RW, data_dir);
	rv |= rules_add_path(r->rw, &r->nrw, SANDBOX_MAX_RW, "/dev/null");
	for (size_t i = 0; i < sizeof(ro) / sizeof(ro[0]); i++)
		if (access(ro[i], F_OK) == 0)
			rv |= rules_add_path(r->ro, &r->nro, SANDBOX_MAX_RO, ro[i]);
	/* Sockets: our own RPC listener and a publisher's. What a program's own
	 * variables call for (files, ports, socket families) its main.c adds
	 * (struct svc_program's sandbox hook). */
	rv |= rules_add_ipc_dir(r, c->url[id]);
	rv |= rules_add_ipc_dir(r, c->events_url[id]);
	/* Configured tcp:// endpoints: ours to bind, everyone's to dial, ours
	 * too (the self-checks of the RPC socket and the publisher dial it). */
	for (int i = 0; i < SVC_SERVICES; i++)
		tcp_urls[i] = c->url[i];
	for (int i = 0; i < SVC_SERVICES; i++)
		tcp_urls[SVC_SERVICES + i] = c->events_url[i];
	for (int i = 0; i < 2 * SVC_SERVICES; i++) {
		bool own = i % SVC_SERVICES == (int)id;
		/* A list (replicas, rpc.h): our own holds our entry alone by now
		 * (svc_init); we may dial every entry of the others'. */
		const char *cur = tcp_urls[i], *item;
		size_t len;
		for (bool first = true; list_next(&cur, &item, &len); first = false) {
			char url[512];
			if (len >= sizeof(url) || len < 6 || strncmp(item, "tcp://", 6) != 0)
				continue;
			memcpy(url, item, len);
			url[len] = '\0';
			r->inet = true;
			if (own && first)
				rv |= rules_add_port(r->bind, &r->nbind, rules_url_port(url, 0));
			rv |= rules_add_port(r->connect, &r->nconnect, rules_url_port(url, 0));
		}
	}
	return rv != 0 ? ERR_INVAL : 0;
}

/* ---- Landlock ----------------------------------------------------------- */

static int ll_add_path(int ruleset, const char *path, uint64_t access, uint64_t handled)
{
	struct ll_path_beneath_attr pb;
	struct stat st;
	int fd, rv;

	if ((fd = open(path, O_PATH | O_CLOEXEC)) < 0) {
		log_debug("landlock: %s: %s (no rule)", path, strerror(errno));
		return 0; /* a path that is not there needs no rule */
	}
	if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode))
		access &= LL_FS_FILE; /* a rule on a file takes file rights only */
	pb.allowed_access = access & handled;
	pb.parent_fd = fd;
	rv = pb.allowed_access == 0
	         ? 0
	         : (int)syscall(SYS_landlock_add_rule, ruleset, LL_RULE_PATH_BENEATH, &pb, 0);
	close(fd);
	return rv;
}

static int ll_add_port(int ruleset, uint16_t port, uint64_t access)
{
	struct ll_net_port_attr np = {.allowed_access = access, .port = port};
	return (int)syscall(SYS_landlock_add_rule, ruleset, LL_RULE_NET_PORT, &np, 0);
}

int sandbox_landlock(const struct sandbox_rules *r, char *err, size_t errlen)
{
	struct ll_ruleset_attr attr = {0};
	int abi, ruleset, rv = 0;

	if (r->mode != CONF_SANDBOX_ENFORCE) {
		log_warnx("landlock: MAGNETAR_SANDBOX=%s: no file or TCP restrictions",
		          r->mode == CONF_SANDBOX_LOG ? "log" : "off");
		return 0;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		snprintf(err, errlen, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
		return ERR_PERM;
	}
	if ((abi = sandbox_landlock_abi()) <= 0) {
		log_warnx("landlock: not offered by this kernel: files are guarded by users "
		          "and seccomp only");
		return 0;
	}
	attr.handled_access_fs = LL_FS_ABI1;
	if (abi >= 2)
		attr.handled_access_fs |= LL_FS_REFER;
	if (abi >= 3)
		attr.handled_access_fs |= LL_FS_TRUNCATE;
	if (abi >= 5)
		attr.handled_access_fs |= LL_FS_IOCTL_DEV;
	if (abi >= 4)
		attr.handled_access_net = LL_NET_BIND_TCP | LL_NET_CONNECT_TCP;
	else
		log_warnx("landlock: ABI %d has no TCP rules: outbound TCP is not restricted "
		          "by Landlock",
		          abi);
	/* Signals only within our own domain; no abstract unix sockets
	 * outside it (we use none). */
	if (abi >= 6)
		attr.scoped = LL_SCOPE_ABSTRACT_UNIX | LL_SCOPE_SIGNAL;
	if ((ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0)) < 0) {
		snprintf(err, errlen, "landlock_create_ruleset: %s", strerror(errno));
		return ERR_PERM;
	}
	for (size_t i = 0; rv == 0 && i < r->nrw; i++)
		rv = ll_add_path(ruleset, r->rw[i], LL_FS_RW, attr.handled_access_fs);
	for (size_t i = 0; rv == 0 && i < r->nsock; i++)
		rv = ll_add_path(ruleset, r->sock[i], LL_FS_SOCK, attr.handled_access_fs);
	for (size_t i = 0; rv == 0 && i < r->nro; i++)
		rv = ll_add_path(ruleset, r->ro[i], LL_FS_RO, attr.handled_access_fs);
	for (size_t i = 0; rv == 0 && abi >= 4 && i < r->nbind; i++)
		rv = ll_add_port(ruleset, r->bind[i], LL_NET_BIND_TCP);
	for (size_t i = 0; rv == 0 && abi >= 4 && i < r->nconnect; i++)
		rv = ll_add_port(ruleset, r->connect[i], LL_NET_CONNECT_TCP);
	if (rv != 0) {
		snprintf(err, errlen, "landlock_add_rule: %s", strerror(errno));
		close(ruleset);
		return ERR_PERM;
	}
	if (syscall(SYS_landlock_restrict_self, ruleset, 0) != 0) {
		snprintf(err, errlen, "landlock_restrict_self: %s", strerror(errno));
		close(ruleset);
		return ERR_PERM;
	}
	close(ruleset);
	log_info("landlock: ABI %d, files%s restricted (%zu rw, %zu socket dirs, %zu read-only; "
	         "tcp bind %zu port(s), connect %zu port(s))",
	         abi, abi >= 4 ? " and TCP" : "", r->nrw, r->nsock, r->nro, r->nbind, r->nconnect);
	return 0;
}

/* ---- seccomp ------------------------------------------------------------ */

/* Every system call every service makes while serving (collected with
 * MAGNETAR_SANDBOX=log runs and strace -f over the integration suites).
 * What one program alone needs, its sandbox hook adds
 * (sandbox_allow_syscall). Absent on purpose: execve, fork, ptrace, mount,
 * setuid and friends, bpf, keyctl, kexec, ... */
static const char *const sc_allow[] = {
    /* memory, threads, time */
    "brk",
    "mmap",
    "munmap",
    "mprotect",
    "mremap",
    "madvise",
    "futex",
    "set_robust_list",
    "get_robust_list",
    "rseq",
    "set_tid_address",
    "sched_yield",
    "sched_getaffinity",
    "membarrier",
    "exit",
    "exit_group",
    "restart_syscall",
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "nanosleep",
    "gettimeofday",
    "time",
    "getrandom",
    "sysinfo",
    "uname",
    "prlimit64",
    "getrlimit",
    /* signals */
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigtimedwait",
    "sigaltstack",
    "getpid",
    "gettid",
    "getppid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getresuid",
    "getresgid",
    "getgroups",
    "prctl",
    /* files */
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "openat",
    "open",
    "close",
    "close_range",
    "lseek",
    "fstat",
    "stat",
    "lstat",
    "newfstatat",
    "statx",
    "statfs",
    "fstatfs",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "getcwd",
    "getdents64",
    "fcntl",
    "flock",
    "fsync",
    "fdatasync",
    "ftruncate",
    "fallocate",
    "unlink",
    "unlinkat",
    "rename",
    "renameat",
    "renameat2",
    "mkdir",
    "mkdirat",
    "fchmod",
    "chmod",
    "fchmodat",
    "umask",
    "dup",
    "dup2",
    "dup3",
    "pipe",
    "pipe2",
    "ioctl",
    "fadvise64",
    /* events and sockets (families are checked below) */
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd",
    "eventfd2",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_gettime",
    "socketpair",
    "bind",
    "listen",
    "accept",
    "accept4",
    "connect",
    "shutdown",
    "getsockname",
    "getpeername",
    "getsockopt",
    "setsockopt",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
};
#define SC_NALLOW (sizeof(sc_allow) / sizeof(sc_allow[0]))

/* Async-signal-safe (no stdio, no malloc: the call may have been made with
 * a malloc lock held): the trapped call's number, then death by SIGSYS.
 * `scmp_sys_resolver <nr>` names it. */
static void sc_sigsys(int sig, siginfo_t *si, void *uc)
{
	static const char pre[] = "seccomp: killed by a forbidden system call nr=";
	char msg[sizeof(pre) + 16], num[12];
	int k = 0, v = si->si_syscall;
	size_t n = sizeof(pre) - 1;
	(void)uc;

	memcpy(msg, pre, n);
	do
		num[k++] = (char)('0' + v % 10);
	while ((v /= 10) > 0 && k < (int)sizeof(num));
	while (k > 0)
		msg[n++] = num[--k];
	msg[n++] = '\n';
	if (write(STDERR_FILENO, msg, n) < 0) {
		/* nothing more to say */
	}
	signal(sig, SIG_DFL); /* SA_RESETHAND did; this is for clarity */
	raise(sig);
	_exit(128 + sig);
}

int sandbox_seccomp(const struct sandbox_rules *r, char *err, size_t errlen)
{
	uint32_t deny;
	scmp_filter_ctx ctx;
	int rc = 0;

	if (r->mode == CONF_SANDBOX_OFF) {
		log_warnx("seccomp: MAGNETAR_SANDBOX=off: no system call filter");
		return 0;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		snprintf(err, errlen, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
		return ERR_PERM;
	}
	if (r->mode == CONF_SANDBOX_LOG) {
		deny = SCMP_ACT_LOG;
	} else if (r->verbose) {
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = sc_sigsys;
		/* Not blocked in its own handler, so that the raise kills. */
		sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESETHAND;
		sigemptyset(&sa.sa_mask);
		sigaction(SIGSYS, &sa, NULL);
		deny = SCMP_ACT_TRAP;
	} else {
		deny = SCMP_ACT_KILL_PROCESS;
	}
	if ((ctx = seccomp_init(deny)) == NULL) {
		snprintf(err, errlen, "seccomp_init failed");
		return ERR_PERM;
	}
	rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
	for (size_t i = 0; rc == 0 && i < SC_NALLOW + r->nsyscalls; i++) {
		const char *name = i < SC_NALLOW ? sc_allow[i] : r->syscalls[i - SC_NALLOW];
		int nr;
		if ((nr = seccomp_syscall_resolve_name(name)) == __NR_SCMP_ERROR)
			continue; /* not on this architecture */
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
	}
	/* Threads only: a clone without CLONE_THREAD is a fork. clone3 hides its
	 * flags in memory a filter cannot read: ENOSYS sends glibc to clone. */
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
		                      SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	/* Signals to ourselves only (raise, abort, pthread_kill). */
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
		                      SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid()));
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(kill), 1,
		                      SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid()));
	/* Socket families: unix for everyone; inet only where TCP is used; a
	 * refused family is EACCES (a library probing a family is not an
	 * attack worth a kill). */
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
		                      SCMP_A0(SCMP_CMP_EQ, AF_UNIX));
	if (rc == 0 && r->inet)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
		                      SCMP_A0(SCMP_CMP_EQ, AF_INET));
	if (rc == 0 && r->inet)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
		                      SCMP_A0(SCMP_CMP_EQ, AF_INET6));
	if (rc == 0 && r->netlink)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
		                      SCMP_A0(SCMP_CMP_EQ, AF_NETLINK));
	for (int fam = 0; rc == 0 && fam < AF_MAX; fam++) {
		if (fam == AF_UNIX || ((fam == AF_INET || fam == AF_INET6) && r->inet) ||
		    (fam == AF_NETLINK && r->netlink))
			continue;
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(socket), 1,
		                      SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)fam));
	}
	if (rc == 0)
		rc = seccomp_load(ctx);
	seccomp_release(ctx);
	if (rc != 0) {
		snprintf(err, errlen, "seccomp: %s", strerror(-rc));
		return ERR_PERM;
	}
	log_info("seccomp: allow-list of %s loaded (%s)", svc_name(r->id),
	         r->mode == CONF_SANDBOX_LOG ? "log: nothing is refused"
	         : r->verbose                ? "enforce: other calls kill, and are named"
	                                     : "enforce: other calls kill");
	return 0;
}

/* ---- self-test ---------------------------------------------------------- */

enum probe { PROBE_OPEN, PROBE_CONNECT, PROBE_EXEC, PROBE_KILL };

/* In the child: 0 refused, 1 allowed, 2 the lock-down itself failed. */
static int selftest_child(enum probe what, const char *path, uint16_t port)
{
	struct sockaddr_in sin;
	int fd;

	switch (what) {
	case PROBE_OPEN:
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0)
			return 1;
		dprintf(STDERR_FILENO, "selftest: open %s: %s\n", path, strerror(errno));
		return 0;
	case PROBE_CONNECT:
		if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
			dprintf(STDERR_FILENO, "selftest: socket(AF_INET): %s\n", strerror(errno));
			return 0;
		}
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_port = htons(port);
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0)
			return 1;
		dprintf(STDERR_FILENO, "selftest: connect 127.0.0.1:%u: %s\n", (unsigned)port,
		        strerror(errno));
		return errno == ECONNREFUSED ? 1 : 0; /* refused by the peer is not by us */
	case PROBE_EXEC: {
		char *const argv[] = {"/bin/sh", "-c", "exit 3", NULL};
		char *const envp[] = {NULL};
		execve("/bin/sh", argv, envp);
		dprintf(STDERR_FILENO, "selftest: execve /bin/sh: %s\n", strerror(errno));
		return 0;
	}
	case PROBE_KILL:
		/* Signal 0 to another process (the one that forked us): harmless
		 * if allowed, and exactly what signals-to-ourselves-only forbids. */
		if (kill(getppid(), 0) == 0)
			return 1;
		dprintf(STDERR_FILENO, "selftest: kill(%d, 0): %s\n", (int)getppid(),
		        strerror(errno));
		return 0;
	}
	return 2;
}

static int selftest_one(int (*apply)(void *), void *arg, enum probe what, const char *path,
                        uint16_t port, const char *label)
{
	const char *verdict;
	char how[64];
	int status, code;
	pid_t pid;

	fflush(NULL);
	if ((pid = fork()) < 0) {
		printf("selftest: %-40s cannot fork: %s\n", label, strerror(errno));
		return 1;
	}
	if (pid == 0) {
		if (apply(arg) != 0)
			_exit(2);
		_exit(selftest_child(what, path, port));
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return 1;
	code = 1;
	if (WIFSIGNALED(status)) {
		snprintf(how, sizeof(how), "killed by SIG%s", sigabbrev_np(WTERMSIG(status)));
		code = WTERMSIG(status) == SIGSYS ? 0 : 1;
	} else if (WEXITSTATUS(status) == 0) {
		snprintf(how, sizeof(how), "failed");
		code = 0;
	} else if (WEXITSTATUS(status) == 2) {
		snprintf(how, sizeof(how), "the lock-down itself failed");
	} else {
		snprintf(how, sizeof(how), "succeeded");
	}
	verdict = code == 0 ? "refused" : "NOT REFUSED";
	printf("selftest: %-48s %s (%s)\n", label, verdict, how);
	return code;
}

int sandbox_selftest(int (*apply)(void *arg), void *arg, const char *const *paths, size_t npaths)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	char label[PATH_MAX + 16];
	int lfd, bad = 0;

	for (size_t i = 0; i < npaths; i++) {
		snprintf(label, sizeof(label), "open %s", paths[i]);
		bad |= selftest_one(apply, arg, PROBE_OPEN, paths[i], 0, label);
	}
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(lfd, 4) != 0 ||
	    getsockname(lfd, (struct sockaddr *)&sin, &len) != 0) {
		printf("selftest: cannot listen on 127.0.0.1 for the connect probe: %s\n",
		       strerror(errno));
		bad = 1;
	} else {
		snprintf(label, sizeof(label), "connect tcp 127.0.0.1:%u", ntohs(sin.sin_port));
		bad |= selftest_one(apply, arg, PROBE_CONNECT, NULL, ntohs(sin.sin_port), label);
	}
	if (lfd >= 0)
		close(lfd);
	bad |= selftest_one(apply, arg, PROBE_EXEC, NULL, 0, "execve /bin/sh");
	bad |= selftest_one(apply, arg, PROBE_KILL, NULL, 0, "kill another process");
	printf("selftest: %s\n", bad ? "FAILED: something forbidden was allowed"
	                             : "ok: every forbidden operation was refused");
	fflush(stdout);
	return bad ? 1 : 0;
}
