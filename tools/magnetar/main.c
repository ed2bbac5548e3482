/*
 * main.c — `magnetar up`: reads the configuration, prepares the data and run
 * dirs, starts the five services and runs the one poll loop that forwards
 * their output, restarts them, and stops them all on SIGTERM or SIGINT.
 */
#include "tools/magnetar/magnetar.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/mkdirs.h"
#include "common/log.h"
#include "common/privsep.h"

/* Start order: audit first, as every producer ships its outbox there; breach
 * before auth, which asks it; the gateway, which fronts them all, last. */
static const enum svc_id sup_order[SVC_SERVICES] = {SVC_AUDIT, SVC_BREACH, SVC_AUTH, SVC_TERMINAL,
                                                    SVC_GATEWAY};

/* The longest MAGNETAR_RUN_DIR conf_load accepts (config.c: the sockets'
 * paths must fit a sockaddr_un). The services are handed the absolute path,
 * which may be longer than what the user wrote, so it is checked here too. */

#define SUP_NPOLL (1 + 2 * SVC_SERVICES)

struct sup {
	struct child child[SVC_SERVICES]; /* in sup_order */
	char data_dir[PATH_MAX];          /* absolute, created */
	char run_dir[PATH_MAX];           /* absolute, created */
	int sigfd;                        /* SIGCHLD, SIGTERM, SIGINT, SIGHUP */
	int devnull;                      /* every child's stdin */
	bool stopping;                    /* no more restarts; waiting for the children */
	bool killed;                      /* SIGKILL sent to what was left */
	uint64_t kill_at_ms;              /* when stopping: the end of the grace period */
};

/* Static rather than on the stack: each child carries two line buffers. */
static struct sup sup = {.sigfd = -1, .devnull = -1};

static void sup_usage(FILE *f)
{
	fprintf(f, "usage: magnetar [-n] [up] | vars\n"
	           "  up  start every service beside this executable and supervise them\n"
	           "      until SIGTERM or SIGINT\n"
	           "  vars  list every MAGNETAR_* variable: name, readers, secret, file alias\n"
	           "  -n  check the MAGNETAR_* configuration, print it (secrets redacted), exit\n"
	           "  -h  this help\n");
}

/* Makes sure fds 0-2 are open, so a pipe made later cannot become one of them
 * and end up receiving some unrelated stdout write. */
static void sup_std_fds(void)
{
	for (int fd = 0; fd <= 2; fd++)
		if (fcntl(fd, F_GETFD) < 0 && errno == EBADF &&
		    open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY) != fd)
			_exit(1);
}

/* The directory of our own executable: the services are looked up there and
 * nowhere else, so PATH cannot substitute another binary. */
static int sup_bindir(char *buf, size_t len)
{
	ssize_t n = readlink("/proc/self/exe", buf, len - 1);
	char *slash;

	if (n <= 0 || (size_t)n >= len - 1)
		return ERR_IO;
	buf[n] = '\0';
	if ((slash = strrchr(buf, '/')) == NULL)
		return ERR_IO;
	*slash = '\0';
	return 0;
}

/* mkdir -p: parents 0755, the last one `mode`; existing dirs are left as they
 * are. Then the absolute, symlink-free path into out (PATH_MAX bytes). */
static int sup_mkdirs(const char *path, mode_t mode, char *out)
{
	struct stat st;
	int rv;

	if ((rv = mkdirs(path, mode)) != 0)
		return rv;
	if (realpath(path, out) == NULL)
		return ERR_IO;
	if (stat(out, &st) != 0 || !S_ISDIR(st.st_mode)) {
		errno = ENOTDIR;
		return ERR_IO;
	}
	return 0;
}

/* Every service now has its own copy of the secrets it reads; ours would
 * only be more places for a core dump or /proc/<pid>/environ to find them. */
static void sup_scrub_var(const struct conf_var *v)
{
	char *value;

	if (!conf_var_secret(v))
		return;
	if ((value = getenv(v->name)) != NULL)
		OPENSSL_cleanse(value, strlen(value));
	unsetenv(v->name);
}

static void sup_scrub_secrets(void)
{
	for (size_t i = 0; i < conf_nvars; i++)
		sup_scrub_var(&conf_vars[i]);
	for (int s = 0; s < SVC_SERVICES; s++)
		for (size_t i = 0; i < programs_vars[s]->nvars; i++)
			sup_scrub_var(&programs_vars[s]->vars[i]);
}

/* Every variable we read, ours and each service's, secrets redacted. */
static void sup_print_conf(const struct conf *conf, void *const own[SVC_SERVICES])
{
	conf_print(conf);
	for (int i = 0; i < SVC_SERVICES; i++)
		conf_print_table(programs_vars[i], own[i]);
}

/* Says once whose privileges the services get. */
static void sup_log_identity(const struct conf *conf, const struct privsep *ps)
{
	if (ps->on) {
		log_info("running as root: each service drops to its own user after opening its "
		         "files and sockets (%s, %s, %s, %s, %s; group %s); shells run as "
		         "one uid per user (MAGNETAR_TERMINAL_UIDS)",
		         ps->name[SVC_GATEWAY], ps->name[SVC_AUTH], ps->name[SVC_AUDIT],
		         ps->name[SVC_BREACH], ps->name[SVC_TERMINAL], conf->ipc_group);
		return;
	}
	log_info("running as uid %u: every service runs as this user (development)",
	         (unsigned)geteuid());
	if (conf->env == CONF_ENV_PRODUCTION)
		log_warnx("MAGNETAR_ENV=production, but the services share one uid: they are "
		          "not separated from each other by user");
}

/*
 * As root: the users and group, the dirs' owners (privsep.h), then we give
 * up every capability but what a service needs before its own drop. We keep
 * uid 0 itself: each service is exec'd fresh as root and drops on its own
 * (the OpenBSD way), which is what restarts need, and signalling children
 * of five other uids needs CAP_KILL anyway.
 */
static void sup_privsep(const struct conf *conf)
{
	struct privsep ps;
	char err[256], dir[PATH_MAX];

	if (privsep_init(&ps, conf, true, err, sizeof(err)) != 0)
		fatalx("privilege separation: %s", err);
	if (privsep_prepare(&ps, sup.data_dir, sup.run_dir) != 0)
		fatal("cannot set the owners of %s and %s", sup.data_dir, sup.run_dir);
	for (int i = 0; ps.on && i < SVC_SERVICES; i++) {
		if (snprintf(dir, sizeof(dir), "%s/%s", sup.data_dir, svc_name((enum svc_id)i)) >=
		    (int)sizeof(dir))
			fatalx("MAGNETAR_DATA_DIR is too long");
		if ((mkdir(dir, 0700) != 0 && errno != EEXIST) || privsep_own(&ps, i, dir) != 0)
			fatal("cannot prepare %s for %s", dir, ps.name[i]);
	}
	sup_log_identity(conf, &ps);
	if (privsep_limit_caps() != 0)
		fatal("cannot limit the supervisor's capabilities");
}

/* Builds each child's environment and checks its executable; exits on failure. */
static void sup_prepare(const char *bindir)
{
	for (int i = 0; i < SVC_SERVICES; i++) {
		struct child *c = &sup.child[i];
		char **env;
		int rv;

		if ((rv = env_build(sup_order[i], sup.data_dir, sup.run_dir, &env)) != 0)
			fatalx("cannot build the environment of %s: %s", svc_name(sup_order[i]),
			       err_str(rv));
		rv = child_init(c, sup_order[i], bindir, env);
		if (rv == ERR_NOTFOUND)
			fatalx("%s not found or not executable (services are taken from the "
			       "directory of magnetar itself; build them with make)",
			       c->path);
		if (rv != 0)
			fatalx("cannot prepare %s: %s", c->name, err_str(rv));
	}
}

/* Signals are taken synchronously through a signalfd in the poll loop. They
 * are blocked before the first fork, so no SIGCHLD can be missed. */
static void sup_signals(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
		fatal("sigprocmask");
	if ((sup.sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK)) < 0)
		fatal("signalfd");
	/* A closed stderr reader is a failed write, not our death. */
	signal(SIGPIPE, SIG_IGN);
}

static int sup_running(void)
{
	int n = 0;

	for (int i = 0; i < SVC_SERVICES; i++)
		n += sup.child[i].pid > 0;
	return n;
}

static void sup_kill_all(void)
{
	sup.killed = true;
	for (int i = 0; i < SVC_SERVICES; i++) {
		struct child *c = &sup.child[i];

		if (c->pid <= 0)
			continue;
		log_warnx("%s pid=%d did not stop: sending SIGKILL", c->name, (int)c->pid);
		child_signal(c, SIGKILL);
	}
}

/* First SIGTERM/SIGINT: stop restarting and ask every child to stop, the
 * gateway first so it stops taking requests before what it fronts goes away.
 * A second one: the operator is done waiting. */
static void sup_stop(int sig)
{
	const char *name = sigabbrev_np(sig);

	if (sup.stopping) {
		if (!sup.killed) {
			log_warnx("SIG%s again: not waiting any longer", name);
			sup_kill_all();
		}
		return;
	}
	log_info("SIG%s received: stopping the services (SIGKILL after %d ms)", name,
	         CHILD_STOP_GRACE_MS);
	sup.stopping = true;
	sup.kill_at_ms = clock_mono_ms() + CHILD_STOP_GRACE_MS;
	for (int i = SVC_SERVICES; i-- > 0;) {
		sup.child[i].restart_at_ms = 0;
		child_signal(&sup.child[i], SIGTERM);
	}
}

static void sup_reap(void)
{
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (int i = 0; i < SVC_SERVICES; i++) {
			if (sup.child[i].pid == pid) {
				child_exited(&sup.child[i], status, sup.stopping);
				break;
			}
		}
	}
}

static void sup_read_signals(void)
{
	struct signalfd_siginfo si;

	while (read(sup.sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGTERM:
		case SIGINT:
			sup_stop((int)si.ssi_signo);
			break;
		case SIGHUP:
			log_info("SIGHUP ignored (configuration is read at start only)");
			break;
		default:
			break;
		}
	}
	/* After the stop above, so an exit it caused is not taken for a crash.
	 * SIGCHLDs coalesce, so reaping does not wait to see one. */
	sup_reap();
}

/* Milliseconds until the next restart or the SIGKILL deadline; -1: none. */
static int sup_timeout(uint64_t now)
{
	uint64_t next = UINT64_MAX;

	if (sup.stopping && !sup.killed)
		next = sup.kill_at_ms;
	for (int i = 0; !sup.stopping && i < SVC_SERVICES; i++)
		if (sup.child[i].restart_at_ms != 0 && sup.child[i].restart_at_ms < next)
			next = sup.child[i].restart_at_ms;
	if (next == UINT64_MAX)
		return -1;
	return next <= now ? 0 : next - now > INT32_MAX ? INT32_MAX : (int)(next - now);
}

static void sup_timers(uint64_t now)
{
	if (sup.stopping) {
		if (!sup.killed && now >= sup.kill_at_ms)
			sup_kill_all();
		return;
	}
	for (int i = 0; i < SVC_SERVICES; i++) {
		struct child *c = &sup.child[i];

		if (c->pid == 0 && c->restart_at_ms != 0 && c->restart_at_ms <= now)
			child_start(c, sup.devnull);
	}
}

static void sup_read_pipe(struct logpipe *lp, short revents)
{
	if ((revents & (POLLIN | POLLHUP | POLLERR)) != 0 && logpipe_read(lp) != 0)
		log_warn("reading the output of %s", lp->name);
}

/* Runs until stopping and every child has been reaped. */
static void sup_loop(void)
{
	struct pollfd pfd[SUP_NPOLL];

	pfd[0].fd = sup.sigfd;
	pfd[0].events = POLLIN;
	for (int i = 0; i < SVC_SERVICES; i++) {
		pfd[1 + 2 * i].fd = sup.child[i].out.rfd;
		pfd[2 + 2 * i].fd = sup.child[i].err.rfd;
		pfd[1 + 2 * i].events = pfd[2 + 2 * i].events = POLLIN;
	}
	while (!sup.stopping || sup_running() > 0) {
		int n = poll(pfd, SUP_NPOLL, sup_timeout(clock_mono_ms()));

		if (n < 0 && errno != EINTR)
			fatal("poll");
		if (n > 0) {
			/* Output first: a child's last lines come before its exit line. */
			for (int i = 0; i < SVC_SERVICES; i++) {
				sup_read_pipe(&sup.child[i].out, pfd[1 + 2 * i].revents);
				sup_read_pipe(&sup.child[i].err, pfd[2 + 2 * i].revents);
			}
			if ((pfd[0].revents & POLLIN) != 0)
				sup_read_signals();
		}
		sup_timers(clock_mono_ms());
	}
}

int main(int argc, char **argv)
{
	struct rlimit no_core = {0, 0};
	char err[256], bindir[PATH_MAX], url[300];
	bool check_only = false, up;
	struct conf conf;
	void *own[SVC_SERVICES];
	int opt;

	sup_std_fds();
	log_init("magnetar", LOG_TEXT, getenv("MAGNETAR_DEBUG") != NULL);
	while ((opt = getopt(argc, argv, "nh")) != -1) {
		switch (opt) {
		case 'n':
			check_only = true;
			break;
		case 'h':
			sup_usage(stdout);
			return 0;
		default:
			sup_usage(stderr);
			return 2;
		}
	}
	if (!check_only && argc - optind == 1 && strcmp(argv[optind], "vars") == 0) {
		programs_print_vars();
		return fflush(stdout) == 0 ? 0 : 1;
	}
	/* `up` runs the stack; `-n` alone (or with `up`) only checks. */
	up = argc - optind == 1 && strcmp(argv[optind], "up") == 0;
	if (!up && !(check_only && optind == argc)) {
		sup_usage(stderr);
		return 2;
	}
	if (conf_load(&conf, SVC_SUPERVISOR, NULL, err, sizeof(err)) != 0 ||
	    programs_load(&conf, own, err, sizeof(err)) != 0)
		fatalx("configuration refused: %s", err);
	log_init("magnetar", conf.log_json ? LOG_JSON : LOG_TEXT, getenv("MAGNETAR_DEBUG") != NULL);
	if (check_only) {
		sup_print_conf(&conf, own);
		log_info("configuration ok");
		programs_free(own);
		conf_fini(&conf);
		return 0;
	}
	/* We hold every service's secrets until they are handed out. */
	setrlimit(RLIMIT_CORE, &no_core);
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

	if (sup_bindir(bindir, sizeof(bindir)) != 0)
		fatal("cannot find the directory of magnetar from /proc/self/exe");
	devdirs_choose(&conf, bindir);
	if (sup_mkdirs(conf.data_dir, 0700, sup.data_dir) != 0)
		fatal("cannot create MAGNETAR_DATA_DIR %s", conf.data_dir);
	if (sup_mkdirs(conf.run_dir, 0755, sup.run_dir) != 0)
		fatal("cannot create MAGNETAR_RUN_DIR %s", conf.run_dir);
	if (strlen(sup.run_dir) > CONF_RUN_DIR_MAX)
		fatalx("MAGNETAR_RUN_DIR resolves to %s, longer than the %d bytes a socket path "
		       "allows; set a shorter MAGNETAR_RUN_DIR",
		       sup.run_dir, CONF_RUN_DIR_MAX);
	programs_gateway_url(own[SVC_GATEWAY], url, sizeof(url));

	sup_print_conf(&conf, own);
	log_info("services get MAGNETAR_DATA_DIR=%s MAGNETAR_RUN_DIR=%s", sup.data_dir,
	         sup.run_dir);
	sup_privsep(&conf);
	sup_prepare(bindir);
	sup_scrub_secrets();
	programs_free(own);
	conf_fini(&conf);

	sup_signals();
	if ((sup.devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0)
		fatal("cannot open /dev/null");
	for (int i = 0; i < SVC_SERVICES; i++)
		child_start(&sup.child[i], sup.devnull);
	log_info("gateway URL: %s", url);

	sup_loop();

	for (int i = 0; i < SVC_SERVICES; i++) {
		/* A grandchild may have written after its parent's exit was drained. */
		logpipe_drain(&sup.child[i].out);
		logpipe_drain(&sup.child[i].err);
		child_fini(&sup.child[i]);
	}
	close(sup.devnull);
	close(sup.sigfd);
	log_info("every service stopped");
	return 0;
}
