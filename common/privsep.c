/*
 * privsep.c — service users, the dirs they own, and the uid drop
 * (privsep.h). Users are created with the system's own useradd/groupadd
 * (fixed argv, empty environment), never by editing /etc/passwd ourselves.
 */
#include "common/privsep.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "common/rpc.h"

static int privsep_refuse(char *err, size_t errlen, int rv, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int privsep_refuse(char *err, size_t errlen, int rv, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rv;
}

/* Runs argv[0] (absolute) with an empty environment; its exit status, or -1. */
static int privsep_run(char *const argv[])
{
	char *const envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
	int status;
	pid_t pid;

	if ((pid = fork()) < 0)
		return -1;
	if (pid == 0) {
		int fd = open("/dev/null", O_RDWR);
		if (fd >= 0) {
			dup2(fd, STDIN_FILENO);
			dup2(fd, STDOUT_FILENO); /* useradd's chatter is not our log */
		}
		execve(argv[0], argv, envp);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Five services may start at once and race to create the same user:
 * useradd then fails on its lock or on "already exists"; look again. */
static void privsep_nap(void)
{
	struct timespec ts = {0, 100 * 1000 * 1000};
	nanosleep(&ts, NULL);
}

static int privsep_group(const char *name, bool create, gid_t *gid)
{
	char *argv[] = {"/usr/sbin/groupadd", "--system", (char *)name, NULL};
	struct group *gr;

	for (int tries = 0; tries < 50; tries++) {
		if ((gr = getgrnam(name)) != NULL) {
			*gid = gr->gr_gid;
			return 0;
		}
		if (!create)
			return ERR_NOTFOUND;
		if (privsep_run(argv) == 0)
			log_info("created the system group %s", name);
		else
			privsep_nap();
	}
	return ERR_IO;
}

/* `group`: a supplementary group for the new user, or NULL. */
static int privsep_user(const char *name, const char *group, bool create, uid_t *uid, gid_t *gid)
{
	char *argv[] = {"/usr/sbin/useradd",
	                "--system",
	                "--no-create-home",
	                "--home-dir",
	                "/nonexistent",
	                "--shell",
	                "/usr/sbin/nologin",
	                "--user-group",
	                (char *)name,
	                NULL,
	                NULL,
	                NULL};
	struct passwd *pw;

	if (group != NULL) {
		argv[8] = "--groups";
		argv[9] = (char *)group;
		argv[10] = (char *)name;
	}
	for (int tries = 0; tries < 50; tries++) {
		if ((pw = getpwnam(name)) != NULL) {
			*uid = pw->pw_uid;
			*gid = pw->pw_gid;
			return 0;
		}
		if (!create)
			return ERR_NOTFOUND;
		if (privsep_run(argv) == 0)
			log_info("created the system user %s", name);
		else
			privsep_nap();
	}
	return ERR_IO;
}

int privsep_init(struct privsep *ps, const struct conf *c, bool create, char *err, size_t errlen)
{
	uid_t shell_uid;
	gid_t shell_gid;
	int rv;

	memset(ps, 0, sizeof(*ps));
	ps->self = getuid();
	ps->on = geteuid() == 0;
	if (!ps->on) {
		for (int i = 0; i < SVC_SERVICES; i++) {
			ps->uid[i] = ps->self;
			ps->gid[i] = getgid();
			snprintf(ps->name[i], sizeof(ps->name[i]), "uid %u", (unsigned)ps->self);
		}
		ps->group = getgid();
		return 0;
	}
	if ((rv = privsep_group(c->ipc_group, create, &ps->group)) != 0)
		return privsep_refuse(err, errlen, rv, "no group %s (MAGNETAR_IPC_GROUP)%s",
		                      c->ipc_group, create ? " and groupadd failed" : "");
	for (int i = 0; i < SVC_SERVICES; i++) {
		snprintf(ps->name[i], sizeof(ps->name[i]), "%s", c->user[i]);
		if ((rv = privsep_user(c->user[i], c->ipc_group, create, &ps->uid[i],
		                       &ps->gid[i])) != 0)
			return privsep_refuse(err, errlen, rv, "no user %s (MAGNETAR_%s_USER)%s",
			                      c->user[i], svc_name((enum svc_id)i),
			                      create ? " and useradd failed" : "");
		if (ps->uid[i] == 0 || ps->gid[i] == 0)
			return privsep_refuse(err, errlen, ERR_PERM,
			                      "user %s is root: a service may not run as root",
			                      c->user[i]);
		for (int j = 0; j < i; j++)
			if (ps->uid[j] == ps->uid[i])
				return privsep_refuse(err, errlen, ERR_PERM,
				                      "%s and %s are the same uid: each service "
				                      "needs its own user",
				                      ps->name[j], ps->name[i]);
	}
	/* An account in no group of ours. Shells no longer run as it (each
	 * user has a uid of the terminal's own range, docs/terminal.md); it
	 * stays the deployments' name for an outsider without any access. */
	if (create && privsep_user(PRIVSEP_SHELL_USER, NULL, true, &shell_uid, &shell_gid) != 0)
		log_warnx("cannot create the user %s", PRIVSEP_SHELL_USER);
	return 0;
}

unsigned privsep_roles(const struct privsep *ps, uid_t uid)
{
	unsigned roles = 0;

	if (uid == 0 || (!ps->on && uid == ps->self))
		roles |= RPC_BY(SVC_MAGCTL);
	for (int i = 0; i < SVC_SERVICES; i++)
		if (ps->uid[i] == uid)
			roles |= RPC_BY(i);
	return roles;
}

/* Leaves a dir that is already right alone: five services start at once,
 * and a chmod by one of them would race the others' socket binds. */
static int privsep_set(const char *path, uid_t uid, gid_t gid, mode_t mode)
{
	struct stat st;

	if (lstat(path, &st) != 0)
		return ERR_IO;
	if (st.st_uid == uid && st.st_gid == gid && (st.st_mode & 07777) == mode)
		return 0;
	if (lchown(path, uid, gid) != 0 || chmod(path, mode) != 0)
		return ERR_IO;
	return 0;
}

int privsep_prepare(const struct privsep *ps, const char *data_parent, const char *run_dir)
{
	if (!ps->on)
		return 0;
	if (privsep_set(data_parent, 0, ps->group, 0710) != 0 ||
	    privsep_set(run_dir, 0, ps->group, 03770) != 0)
		return ERR_IO;
	return 0;
}

int privsep_socket_dir(const struct privsep *ps, const char *run_dir, const char *dir)
{
	char real_run[PATH_MAX], real_dir[PATH_MAX];
	struct stat st;

	if (!ps->on)
		return 0;
	if (mkdir(dir, 0750) != 0 && errno != EEXIST)
		return ERR_IO;
	if (lstat(dir, &st) != 0)
		return ERR_IO;
	/* Made by root, or by nobody we trust: a dir someone else made may
	 * already hold their sockets. Not the run dir itself, which every
	 * service may write. */
	if (!S_ISDIR(st.st_mode) || st.st_uid != 0 || realpath(run_dir, real_run) == NULL ||
	    realpath(dir, real_dir) == NULL || strcmp(real_run, real_dir) == 0)
		return ERR_PERM;
	return privsep_set(dir, 0, ps->group, 02750);
}

/* chown -R without following a link; dirs 0700, regular files 0600. */
static int privsep_own_at(int dfd, uid_t uid, gid_t gid, int depth)
{
	struct dirent *e;
	DIR *d;
	int rv = 0;

	if (depth > 8 || (d = fdopendir(dfd)) == NULL) {
		close(dfd);
		return ERR_IO;
	}
	while (rv == 0 && (e = readdir(d)) != NULL) {
		struct stat st;
		int fd;

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
			continue; /* gone meanwhile */
		if (S_ISLNK(st.st_mode))
			continue; /* never ours to follow */
		if (fchownat(dirfd(d), e->d_name, uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
			rv = ERR_IO;
			break;
		}
		if (S_ISDIR(st.st_mode)) {
			if (fchmodat(dirfd(d), e->d_name, 0700, 0) != 0 ||
			    (fd = openat(dirfd(d), e->d_name,
			                 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
				rv = ERR_IO;
			else
				rv = privsep_own_at(fd, uid, gid, depth + 1);
		} else if (S_ISREG(st.st_mode) && fchmodat(dirfd(d), e->d_name, 0600, 0) != 0) {
			rv = ERR_IO;
		}
	}
	closedir(d);
	return rv;
}

int privsep_own(const struct privsep *ps, enum svc_id id, const char *dir)
{
	int fd;

	if (!ps->on)
		return 0;
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return ERR_IO;
	if (fchown(fd, ps->uid[id], ps->gid[id]) != 0 || fchmod(fd, 0700) != 0) {
		close(fd);
		return ERR_IO;
	}
	return privsep_own_at(fd, ps->uid[id], ps->gid[id], 0);
}

int privsep_drop(const struct privsep *ps, enum svc_id id, char *err, size_t errlen)
{
	uid_t u = ps->uid[id], ru, eu, su;
	gid_t g = ps->gid[id], rg, eg, sg, groups[2], have[4];
	int pdeath = 0, n;

	if (!ps->on)
		return 0;
	/* The kernel clears the parent-death signal on a uid change; the
	 * supervisor set it so that we do not outlive it. */
	prctl(PR_GET_PDEATHSIG, &pdeath, 0, 0, 0);
	groups[0] = ps->group;
	if (setgroups(1, groups) != 0)
		return privsep_refuse(err, errlen, ERR_PERM, "setgroups: %s", strerror(errno));
	if (setresgid(g, g, g) != 0)
		return privsep_refuse(err, errlen, ERR_PERM, "setresgid(%u): %s", (unsigned)g,
		                      strerror(errno));
	if (setresuid(u, u, u) != 0)
		return privsep_refuse(err, errlen, ERR_PERM, "setresuid(%u): %s", (unsigned)u,
		                      strerror(errno));
	if (getresuid(&ru, &eu, &su) != 0 || ru != u || eu != u || su != u ||
	    getresgid(&rg, &eg, &sg) != 0 || rg != g || eg != g || sg != g)
		return privsep_refuse(err, errlen, ERR_PERM, "the ids did not change");
	n = getgroups(4, have);
	if (n != 1 || have[0] != ps->group)
		return privsep_refuse(err, errlen, ERR_PERM, "supplementary groups left over");
	/* Each of these must fail now; a success would mean we kept a way back. */
	if (setresuid(0, 0, 0) == 0 || setuid(0) == 0 || seteuid(0) == 0 ||
	    setresgid(0, 0, 0) == 0 || setgroups(0, NULL) == 0)
		return privsep_refuse(err, errlen, ERR_PERM,
		                      "root could be regained after the drop");
	if (pdeath != 0)
		prctl(PR_SET_PDEATHSIG, pdeath, 0, 0, 0);
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	return 0;
}

int privsep_limit_caps(void)
{
	const uint64_t keep = (1ull << CAP_CHOWN) | (1ull << CAP_DAC_OVERRIDE) |
	                      (1ull << CAP_DAC_READ_SEARCH) | (1ull << CAP_FOWNER) |
	                      (1ull << CAP_KILL) | (1ull << CAP_SETGID) | (1ull << CAP_SETUID) |
	                      (1ull << CAP_SETPCAP) | (1ull << CAP_NET_BIND_SERVICE) |
	                      (1ull << CAP_FSETID);
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2];

	if (geteuid() != 0)
		return 0;
	/* CAP_SETPCAP stays until the last drop: it is what allows dropping. */
	for (int cap = 0; cap <= 63; cap++) {
		if ((keep & (1ull << cap)) != 0)
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
			return ERR_PERM;
	}
	memset(data, 0, sizeof(data));
	data[0].effective = data[0].permitted = (uint32_t)keep;
	data[1].effective = data[1].permitted = (uint32_t)(keep >> 32);
	if (syscall(SYS_capset, &hdr, data) != 0)
		return ERR_PERM;
	return 0;
}
