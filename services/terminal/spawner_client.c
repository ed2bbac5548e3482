/*
 * spawner_client.c — the terminal service's side of its spawner (terminal.h):
 * spawner_start forks the spawner process (spawner.c) before the service
 * has threads; one thread reads its answers (spawned, failed, exited), and
 * spawner_spawn / spawner_kill send one request each, a spawn at a time.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "services/terminal/spawner_wire.h"
#include "services/terminal/terminal.h"

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

int spawner_start(const struct spawner_conf *sc, struct spawner **out)
{
	struct spawner *sp;
	int sv[2];
	pid_t pid;

	if (sc->uid_first == 0 || sc->uid_first > sc->uid_last)
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
                  uid_t uid, unsigned cols, unsigned rows, pid_t *pid, int *master,
                  char used_cwd[PATH_MAX])
{
	struct spawner_msg *m;
	struct timespec until;
	int rv = 0;

	(void)exec_path; /* the spawner resolves it again itself */
	/* No spawner (the proto_terminal fuzz target runs the service without
	 * one): nothing can be started, which is an answer, not a crash. */
	if (sp == NULL)
		return ERR_UNAVAIL;
	if ((m = calloc(1, sizeof(*m))) == NULL)
		return ERR_NOMEM;
	if (strlen(shell) >= sizeof(m->shell) || strlen(cwd) >= sizeof(m->cwd)) {
		free(m);
		return ERR_PERM;
	}
	strcpy(m->shell, shell);
	strcpy(m->cwd, cwd);
	m->op = SP_SPAWN;
	m->uid = (uint32_t)uid;
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
			memcpy(used_cwd, sp->reply.cwd, PATH_MAX);
			used_cwd[PATH_MAX - 1] = '\0';
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
