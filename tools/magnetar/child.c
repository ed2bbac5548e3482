/*
 * child.c — one supervised service: fork + execve with a fixed argv and its
 * own environment, output through two logpipes, and restart after an exit
 * with a back-off that doubles while the service keeps failing quickly.
 */
#include "tools/magnetar/magnetar.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"

int child_init(struct child *c, enum svc_id id, const char *bindir, char **env)
{
	int n, rv;

	memset(c, 0, sizeof(*c));
	c->id = id;
	c->name = svc_name(id);
	c->env = env;
	c->backoff_ms = CHILD_BACKOFF_MIN_MS;
	c->out.rfd = c->out.wfd = c->err.rfd = c->err.wfd = -1;
	n = snprintf(c->path, sizeof(c->path), "%s/magnetar-%s", bindir, c->name);
	if (n < 0 || (size_t)n >= sizeof(c->path))
		return ERR_INVAL;
	if (access(c->path, X_OK) != 0)
		return ERR_NOTFOUND;
	if ((rv = logpipe_init(&c->out, c->name)) != 0 ||
	    (rv = logpipe_init(&c->err, c->name)) != 0)
		return rv;
	return 0;
}

void child_fini(struct child *c)
{
	logpipe_fini(&c->out);
	logpipe_fini(&c->err);
	env_free(c->env);
	c->env = NULL;
}

/* Closes every fd from 3 up. close_range needs Linux 5.9; the loop is for
 * older kernels and bounded by the limit read before fork. */
static void child_close_fds(int maxfd)
{
	if (close_range(3, ~0U, 0) == 0)
		return;
	for (int fd = 3; fd < maxfd; fd++)
		close(fd);
}

/* Appends s to buf[*n..cap) without overflowing; for the exec error line. */
static void child_append(char *buf, size_t *n, size_t cap, const char *s)
{
	size_t len = strlen(s);

	if (len > cap - *n)
		len = cap - *n;
	memcpy(buf + *n, s, len);
	*n += len;
}

/*
 * Runs in the forked child and never returns. This path keeps to system
 * calls and plain string copies; strerror, the one exception, is safe here
 * because the supervisor is single-threaded, so no lock was held at the fork.
 */
static void __attribute__((noreturn))
child_exec(const struct child *c, int devnull, pid_t parent, int maxfd)
{
	char *const argv[] = {(char *)c->path, NULL};
	struct sigaction dfl;
	sigset_t none;
	char msg[PATH_MAX + 128];
	size_t n = 0;
	ssize_t w;
	int saved;

	/* Die with the supervisor, even a SIGKILLed one, instead of lingering as
	 * an unsupervised service. If it died before this request was made,
	 * the request came too late: leave now. */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent)
		_exit(127);
	if (dup2(devnull, STDIN_FILENO) < 0 || dup2(c->out.wfd, STDOUT_FILENO) < 0 ||
	    dup2(c->err.wfd, STDERR_FILENO) < 0)
		_exit(127);
	child_close_fds(maxfd);
	/* An ignored signal stays ignored across execve and the mask is
	 * inherited: ours (SIGPIPE ignored, SIGTERM blocked) and whatever the
	 * shell that started us set (a background job ignores SIGINT). Give the
	 * service the defaults it expects; SIGKILL and SIGSTOP just refuse. */
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigemptyset(&dfl.sa_mask);
	for (int sig = 1; sig < NSIG; sig++)
		sigaction(sig, &dfl, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	execve(c->path, argv, c->env);
	saved = errno;
	child_append(msg, &n, sizeof(msg) - 1, "magnetar: cannot execute ");
	child_append(msg, &n, sizeof(msg) - 1, c->path);
	child_append(msg, &n, sizeof(msg) - 1, ": ");
	child_append(msg, &n, sizeof(msg) - 1, strerror(saved));
	msg[n++] = '\n';
	/* If even this write fails, the exit status still tells the supervisor. */
	w = write(STDERR_FILENO, msg, n);
	(void)w;
	_exit(127);
}

/* Sets the next start at now + the current back-off, doubles the back-off
 * for the time after, and returns the delay chosen. */
static uint32_t child_schedule(struct child *c, uint64_t now)
{
	uint32_t delay = c->backoff_ms;

	c->backoff_ms = delay * 2 > CHILD_BACKOFF_MAX_MS ? CHILD_BACKOFF_MAX_MS : delay * 2;
	c->restart_at_ms = now + delay;
	return delay;
}

int child_start(struct child *c, int devnull)
{
	pid_t parent = getpid(), pid;
	struct rlimit rl;
	int maxfd = 65536;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur < (rlim_t)maxfd)
		maxfd = (int)rl.rlim_cur;
	if ((pid = fork()) < 0) {
		log_warn("cannot fork %s; retrying in %u ms", c->name, (unsigned)c->backoff_ms);
		child_schedule(c, clock_mono_ms());
		return ERR_IO;
	}
	if (pid == 0)
		child_exec(c, devnull, parent, maxfd);
	c->pid = pid;
	c->started_ms = clock_mono_ms();
	c->restart_at_ms = 0;
	log_info("started %s pid=%d%s", c->name, (int)pid, c->restarts > 0 ? " (restart)" : "");
	return 0;
}

/* "exit status 3" or "killed by signal 9 (SIGKILL)" into buf. */
static void child_describe(int status, char *buf, size_t len)
{
	if (WIFEXITED(status)) {
		snprintf(buf, len, "exit status %d", WEXITSTATUS(status));
	} else if (WIFSIGNALED(status)) {
		const char *abbrev = sigabbrev_np(WTERMSIG(status));
		snprintf(buf, len, "killed by signal %d (SIG%s)%s", WTERMSIG(status),
		         abbrev != NULL ? abbrev : "?", WCOREDUMP(status) ? ", core dumped" : "");
	} else {
		snprintf(buf, len, "wait status 0x%x", (unsigned)status);
	}
}

void child_exited(struct child *c, int status, bool stopping)
{
	uint64_t now = clock_mono_ms(), up = now - c->started_ms;
	uint32_t delay;
	char how[96];

	/* The child's last words are already in the pipes: show them before
	 * the line that says it died. */
	logpipe_drain(&c->out);
	logpipe_drain(&c->err);
	child_describe(status, how, sizeof(how));
	c->pid = 0;
	if (stopping) {
		log_info("%s stopped: %s", c->name, how);
		return;
	}
	/* A service that ran a while before failing gets a quick restart; one
	 * that keeps failing at once waits longer each time, up to the cap. */
	if (up >= CHILD_STABLE_MS)
		c->backoff_ms = CHILD_BACKOFF_MIN_MS;
	delay = child_schedule(c, now);
	c->restarts++;
	log_warnx("%s exited: %s after %llu ms; restarting in %u ms", c->name, how,
	          (unsigned long long)up, (unsigned)delay);
}

void child_signal(struct child *c, int sig)
{
	if (c->pid > 0 && kill(c->pid, sig) != 0 && errno != ESRCH)
		log_warn("cannot signal %s pid=%d", c->name, (int)c->pid);
}
