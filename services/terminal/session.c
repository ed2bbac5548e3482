/*
 * session.c — the live terminals: a PTY master, the shell's pid, and one nng
 * pair0 socket listening under the run dir that exactly one gateway pipe may
 * join, once, after its ticket was consumed. Two threads per terminal move
 * bytes (PTY → pair with a blocking send, so a slow client pauses PTY reads;
 * pair → PTY), and a reaper enforces the idle, lifetime, attach and detach
 * deadlines. Every object is reference counted: the list, the reader and
 * the writer each hold one.
 */
#include <errno.h>
#include <nng/nng.h>
#include <nng/protocol/pair0/pair.h>
#include <nng/transport/ipc/ipc.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/ids.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/outbox.h"
#include "services/terminal/terminal.h"

#define SESSION_READ_CHUNK 65536 /* = TERMINAL_FRAME_MAX */
#define SESSION_POLL_MS 250
#define SESSION_EXIT_WAIT_MS 3000
#define SESSION_EXIT_SEND_MS 5000
#define SESSION_SOCKBUF 16 /* messages buffered in the pair either way */

enum session_state {
	S_STARTING, /* spawning: counted against the limits, not yet usable */
	S_PENDING,  /* running, no gateway yet */
	S_ATTACHED,
	S_DETACHED,
};

struct session {
	struct session *next;
	struct terminal *t;
	int refs; /* under t->mu */
	char id[TERMINAL_ID_LEN];
	char user_id[TERMINAL_USER_MAX];
	char auth_session[TERMINAL_USER_MAX]; /* its revocation closes us ("" = none) */
	char shell[TERMINAL_SHELL_MAX];
	char cwd[PATH_MAX];
	unsigned cols, rows;
	pid_t pid;
	int master;
	uint64_t created_ms, created_mono;
	_Atomic uint64_t active_mono;
	/* Under t->mu. */
	enum session_state state;
	unsigned char ticket[SHA256_DIGEST_LENGTH]; /* hash: the ticket itself is not kept */
	uint64_t ticket_until;
	bool ticket_used, allow_pipe;
	int pipe_id;
	uint64_t detached_mono, exit_sent_mono;
	bool closing, exited, exit_sent;
	int exit_code;
	const char *reason;
	/* Set once before the threads start. */
	uint8_t *rbuf; /* the reader's: allocated by the open, which may fail */
	nng_socket sock;
	bool sock_open;
	char url[128];
};

static uint64_t session_ms_since(uint64_t then)
{
	uint64_t now = clock_mono_ms();
	return now > then ? now - then : 0;
}

static void session_fill(const struct session *s, struct session_info *out)
{
	static const char *const names[] = {"starting", "pending", "attached", "detached"};
	snprintf(out->id, sizeof(out->id), "%s", s->id);
	snprintf(out->user_id, sizeof(out->user_id), "%s", s->user_id);
	snprintf(out->shell, sizeof(out->shell), "%s", s->shell);
	snprintf(out->cwd, sizeof(out->cwd), "%s", s->cwd);
	snprintf(out->state, sizeof(out->state), "%s", names[s->state]);
	out->cols = s->cols;
	out->rows = s->rows;
	out->created_ms = s->created_ms;
	out->last_active_ms = clock_unix_ms() - session_ms_since(atomic_load(&s->active_mono));
	out->pid = s->pid;
}

/* Drops a reference; the last one closes the PTY and frees. */
static void session_unref(struct session *s)
{
	struct terminal *t = s->t;
	bool last;

	pthread_mutex_lock(&t->mu);
	last = --s->refs == 0;
	if (last) {
		struct session **pp = &t->sessions;
		while (*pp != NULL && *pp != s)
			pp = &(*pp)->next;
		if (*pp == s)
			*pp = s->next;
		t->nobjects--;
		pthread_cond_broadcast(&t->cv);
	}
	pthread_mutex_unlock(&t->mu);
	if (!last)
		return;
	if (s->master >= 0)
		close(s->master);
	OPENSSL_cleanse(s->ticket, sizeof(s->ticket));
	free(s->rbuf);
	free(s);
}

/* Marks `s` closing with `reason`, under t->mu. False if it already was. */
static bool session_doom_locked(struct session *s, const char *reason)
{
	if (s->closing)
		return false;
	s->closing = true;
	s->reason = reason;
	s->t->nsessions--; /* counted from the moment its slot was taken */
	return true;
}

/* Kills the shell, closes the stream, records the close; drops the list's
 * reference. Never under t->mu (nng_close waits for pipe callbacks, which
 * take it). */
static void session_teardown(struct session *s)
{
	struct terminal *t = s->t;
	bool exited, attached;
	int code;

	pthread_mutex_lock(&t->mu);
	exited = s->exited;
	code = s->exit_code;
	attached = s->state == S_ATTACHED;
	pthread_cond_broadcast(&t->cv);
	pthread_mutex_unlock(&t->mu);
	if (!exited && s->pid > 0)
		spawner_kill(t->spawner, s->pid);
	if (s->sock_open) {
		/* Tell the gateway in a frame, not only by the pipe's removal,
		 * which nng 1.5 sometimes never reports to it (gateway/wsbridge.c).
		 * A moment for the frame to leave before the close drops it. */
		static const char closed = FRAME_CLOSED;
		struct timespec nap = {0, 20 * 1000 * 1000};
		if (attached && nng_send(s->sock, (void *)&closed, 1, NNG_FLAG_NONBLOCK) == 0)
			nanosleep(&nap, NULL);
		nng_close(s->sock); /* the reader's send and the writer's recv return */
	}
	atomic_fetch_add(&t->closed, 1);
	log_info("terminal: closed id=%s user=%s reason=%s", s->id, s->user_id, s->reason);
	if (store_closed(t->svc.pool, s->id, s->user_id, s->reason, exited ? code : -1) == 0)
		outbox_kick(t->svc.outbox);
	session_unref(s);
}

/* ---- the stream ----------------------------------------------------------- */

static void session_pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	struct session *s = arg;
	struct terminal *t = s->t;
	uint64_t uid = (uint64_t)-1;
	bool ok;

	if (ev == NNG_PIPE_EV_ADD_PRE) {
		/* Only a peer our RPC socket admits (the gateway's uid, or ours
		 * without privilege separation; common/privsep.c), and only once
		 * per consumed ticket: a second dialer, or a shell user who found
		 * the socket, is hung up on. */
		ok = nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_UID, &uid) == 0 &&
		     (uid == (uint64_t)geteuid() || rpc_peer_admitted((uid_t)uid, false));
		pthread_mutex_lock(&t->mu);
		ok = ok && s->allow_pipe && !s->closing;
		if (ok) {
			s->allow_pipe = false;
			s->state = S_ATTACHED;
			s->pipe_id = nng_pipe_id(p);
		}
		pthread_mutex_unlock(&t->mu);
		if (!ok) {
			log_warnx("terminal: refused a stream peer id=%s uid=%lld", s->id,
			          uid == (uint64_t)-1 ? -1LL : (long long)uid);
			nng_pipe_close(p);
		}
	} else if (ev == NNG_PIPE_EV_REM_POST) {
		pthread_mutex_lock(&t->mu);
		if (s->state == S_ATTACHED && s->pipe_id == nng_pipe_id(p)) {
			s->state = S_DETACHED;
			s->detached_mono = clock_mono_ms();
		}
		pthread_mutex_unlock(&t->mu);
	}
}

static int session_listen(struct session *s)
{
	nng_listener l;
	int rv;

	if ((rv = nng_pair0_open(&s->sock)) != 0)
		return ERR_IO;
	s->sock_open = true;
	nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, TERMINAL_FRAME_MAX + 1);
	nng_socket_set_int(s->sock, NNG_OPT_SENDBUF, SESSION_SOCKBUF);
	nng_socket_set_int(s->sock, NNG_OPT_RECVBUF, SESSION_SOCKBUF);
	nng_pipe_notify(s->sock, NNG_PIPE_EV_ADD_PRE, session_pipe_cb, s);
	nng_pipe_notify(s->sock, NNG_PIPE_EV_REM_POST, session_pipe_cb, s);
	if ((rv = nng_listener_create(&l, s->sock, s->url)) != 0)
		return ERR_IO;
	/* Owner and group: the run dir is setgid to the IPC group the gateway
	 * is in (common/privsep.h); the peer uid check decides the rest. */
	nng_listener_set_int(l, NNG_OPT_IPC_PERMISSIONS, 0660);
	if ((rv = nng_listener_start(l, 0)) != 0) {
		log_warnx("terminal: cannot listen on %s: %s", s->url, nng_strerror(rv));
		return ERR_IO;
	}
	return 0;
}

/* The shell's output is done: wait for its status, send the exit frame. */
static void session_finish(struct session *s)
{
	struct terminal *t = s->t;
	struct timespec until;
	char frame[32];
	size_t len;
	uint64_t start;
	int code;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += SESSION_EXIT_WAIT_MS / 1000;
	pthread_mutex_lock(&t->mu);
	while (!s->exited && !s->closing)
		if (pthread_cond_timedwait(&t->cv, &t->mu, &until) != 0)
			break;
	code = s->exited ? s->exit_code : 255;
	pthread_mutex_unlock(&t->mu);
	len = frame_exit(frame, sizeof(frame), code);
	/* Bounded: a gateway that never reads does not keep us. */
	for (start = clock_mono_ms(); session_ms_since(start) < SESSION_EXIT_SEND_MS;) {
		struct timespec ts = {0, 10 * 1000000};
		int rv = nng_send(s->sock, frame, len, NNG_FLAG_NONBLOCK);
		if (rv == 0 || rv != NNG_EAGAIN)
			break;
		pthread_mutex_lock(&t->mu);
		rv = s->closing;
		pthread_mutex_unlock(&t->mu);
		if (rv)
			break;
		nanosleep(&ts, NULL);
	}
	pthread_mutex_lock(&t->mu);
	s->exit_sent = true;
	s->exit_sent_mono = clock_mono_ms();
	pthread_mutex_unlock(&t->mu);
}

static void *session_reader(void *arg)
{
	struct session *s = arg;
	struct terminal *t = s->t;
	uint8_t *buf = s->rbuf;
	bool closing = false;

	for (;;) {
		struct pollfd pfd = {.fd = s->master, .events = POLLIN};
		ssize_t n;
		pthread_mutex_lock(&t->mu);
		closing = s->closing;
		pthread_mutex_unlock(&t->mu);
		if (closing)
			break;
		if (poll(&pfd, 1, SESSION_POLL_MS) <= 0)
			continue;
		n = read(s->master, buf + 1, SESSION_READ_CHUNK);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0)
			break; /* EIO: every slave descriptor is closed */
		/* The PTY hands out ~4 KiB at a time: gather what is there
		 * already into one frame (fewer messages, same latency). */
		while (n < SESSION_READ_CHUNK) {
			ssize_t more =
			    read(s->master, buf + 1 + n, (size_t)(SESSION_READ_CHUNK - n));
			if (more <= 0)
				break; /* EAGAIN now; EIO is seen on the next round */
			n += more;
		}
		atomic_store(&s->active_mono, clock_mono_ms());
		atomic_fetch_add(&t->bytes_out, (uint64_t)n);
		buf[0] = FRAME_DATA;
		/* Blocks while the gateway is behind (or not there yet): the
		 * PTY is not read meanwhile, so the shell waits, not our memory.
		 * nng_close in the teardown ends the wait. */
		if (nng_send(s->sock, buf, (size_t)n + 1, 0) != 0)
			break;
	}
	if (!closing)
		session_finish(s);
	session_unref(s);
	return NULL;
}

/* Writes all of buf to the PTY, waiting while it is full (bounded by the
 * terminal closing). */
static void session_write_all(struct session *s, const uint8_t *buf, size_t len)
{
	while (len > 0) {
		struct pollfd pfd = {.fd = s->master, .events = POLLOUT};
		ssize_t n = write(s->master, buf, len);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return; /* the shell is gone: input goes nowhere */
		poll(&pfd, 1, SESSION_POLL_MS);
		pthread_mutex_lock(&s->t->mu);
		n = s->closing;
		pthread_mutex_unlock(&s->t->mu);
		if (n)
			return;
	}
}

static void *session_writer(void *arg)
{
	struct session *s = arg;
	struct terminal *t = s->t;

	for (;;) {
		struct frame f;
		uint8_t *buf;
		size_t len;
		if (nng_recv(s->sock, &buf, &len, NNG_FLAG_ALLOC) != 0)
			break;
		if (frame_parse_client(buf, len, &f) != 0) {
			log_warnx("terminal: dropped an invalid frame id=%s", s->id);
		} else if (f.kind == FRAME_DATA) {
			atomic_store(&s->active_mono, clock_mono_ms());
			atomic_fetch_add(&t->bytes_in, f.len);
			session_write_all(s, f.data, f.len);
		} else if (f.kind == FRAME_RESIZE) {
			struct winsize ws = {.ws_row = (unsigned short)f.rows,
			                     .ws_col = (unsigned short)f.cols};
			/* The kernel sends SIGWINCH to the foreground group. */
			ioctl(s->master, TIOCSWINSZ, &ws);
			pthread_mutex_lock(&t->mu);
			s->cols = f.cols;
			s->rows = f.rows;
			pthread_mutex_unlock(&t->mu);
		}
		nng_free(buf, len);
	}
	session_unref(s);
	return NULL;
}

/* ---- life cycle ----------------------------------------------------------- */

void session_on_exit(void *arg, pid_t pid, int status)
{
	struct terminal *t = arg;
	struct session *s;
	char id[TERMINAL_ID_LEN] = "", user[TERMINAL_USER_MAX] = "", detail[64];
	int code = frame_exit_code(status);

	pthread_mutex_lock(&t->mu);
	for (s = t->sessions; s != NULL; s = s->next)
		if (s->pid == pid && !s->exited) {
			s->exited = true;
			s->exit_code = code;
			snprintf(id, sizeof(id), "%s", s->id);
			snprintf(user, sizeof(user), "%s", s->user_id);
			pthread_cond_broadcast(&t->cv);
			break;
		}
	pthread_mutex_unlock(&t->mu);
	if (id[0] == '\0')
		return;
	snprintf(detail, sizeof(detail), "code=%d", code);
	log_info("terminal: shell exited id=%s code=%d", id, code);
	if (store_audit(t->svc.pool, "terminal.exited", user, id, NULL, "success", detail) == 0)
		outbox_kick(t->svc.outbox);
}

/* The deadlines, checked every SESSION_POLL_MS. */
static void *session_reaper(void *arg)
{
	struct terminal *t = arg;
	uint64_t idle_ms = (uint64_t)t->svc.conf.terminal_idle_s * 1000;
	uint64_t life_ms = (uint64_t)t->svc.conf.terminal_lifetime_s * 1000;

	pthread_mutex_lock(&t->mu);
	while (!t->stopping) {
		struct timespec until;
		struct session *s, *doomed = NULL;
		bool again = true;

		while (again) {
			again = false;
			for (s = t->sessions; s != NULL; s = s->next) {
				const char *why = NULL;
				if (s->closing || s->state == S_STARTING)
					continue;
				if (s->exit_sent && (s->state != S_ATTACHED ||
				                     session_ms_since(s->exit_sent_mono) > 5000))
					why = "exit";
				else if (s->state == S_PENDING &&
				         session_ms_since(s->created_mono) >
				             TERMINAL_TICKET_TTL_MS + TERMINAL_DETACH_GRACE_MS)
					why = "never_attached";
				else if (s->state == S_DETACHED &&
				         session_ms_since(s->detached_mono) >
				             TERMINAL_DETACH_GRACE_MS)
					why = "detached";
				else if (session_ms_since(atomic_load(&s->active_mono)) > idle_ms)
					why = "idle";
				else if (session_ms_since(s->created_mono) > life_ms)
					why = "lifetime";
				if (why == NULL || !session_doom_locked(s, why))
					continue;
				doomed = s;
				break;
			}
			if (doomed != NULL) {
				pthread_mutex_unlock(&t->mu);
				session_teardown(doomed);
				doomed = NULL;
				pthread_mutex_lock(&t->mu);
				again = true; /* the list may have changed meanwhile */
			}
		}
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += SESSION_POLL_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&t->cv, &t->mu, &until);
	}
	pthread_mutex_unlock(&t->mu);
	return NULL;
}

int session_start(struct terminal *t)
{
	pthread_mutex_init(&t->mu, NULL);
	pthread_cond_init(&t->cv, NULL);
	if (pthread_create(&t->reaper, NULL, session_reaper, t) != 0)
		return ERR_NOMEM;
	return 0;
}

void session_stop(struct terminal *t)
{
	struct session *s;

	pthread_mutex_lock(&t->mu);
	t->stopping = true;
	pthread_cond_broadcast(&t->cv);
	pthread_mutex_unlock(&t->mu);
	pthread_join(t->reaper, NULL);
	pthread_mutex_lock(&t->mu);
	for (;;) {
		for (s = t->sessions; s != NULL; s = s->next)
			if (s->state != S_STARTING && session_doom_locked(s, "shutdown"))
				break;
		if (s == NULL)
			break;
		pthread_mutex_unlock(&t->mu);
		session_teardown(s);
		pthread_mutex_lock(&t->mu);
	}
	/* Readers leave within a poll period once closing is set. */
	while (t->nobjects > 0)
		pthread_cond_wait(&t->cv, &t->mu);
	pthread_mutex_unlock(&t->mu);
}

static int session_count_user_locked(struct terminal *t, const char *user_id)
{
	int n = 0;
	for (struct session *s = t->sessions; s != NULL; s = s->next)
		if (!s->closing && strcmp(s->user_id, user_id) == 0)
			n++;
	return n;
}

int session_open(struct terminal *t, const struct session_open *o,
                 const Magnetar__RequestContext *ctx, struct session_info *info, char ticket[64])
{
	unsigned char raw[32];
	char rnd[17];
	struct session *s;
	pthread_t th;
	int rv;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return ERR_NOMEM;
	s->t = t;
	s->master = -1;
	s->refs = 1;
	if (strlen(o->user_id) >= sizeof(s->user_id) || strlen(o->shell) >= sizeof(s->shell) ||
	    strlen(o->cwd) >= sizeof(s->cwd) ||
	    (o->auth_session != NULL && strlen(o->auth_session) >= sizeof(s->auth_session))) {
		free(s);
		return ERR_INVAL;
	}
	strcpy(s->user_id, o->user_id);
	if (o->auth_session != NULL)
		strcpy(s->auth_session, o->auth_session);
	strcpy(s->shell, o->shell);
	strcpy(s->cwd, o->cwd);
	s->cols = o->cols;
	s->rows = o->rows;
	s->created_ms = clock_unix_ms();
	s->created_mono = clock_mono_ms();
	atomic_init(&s->active_mono, s->created_mono);
	/* The ipc path must fit a sockaddr_un: run dir (≤ 80) + 24. */
	if (ids_random_hex(s->id, 16) != 0 || ids_random_hex(rnd, 8) != 0 ||
	    ids_random(raw, sizeof(raw)) != 0) {
		free(s);
		return ERR_IO;
	}
	snprintf(s->url, sizeof(s->url), "ipc://%s/t-%s.sock", t->svc.conf.run_dir, rnd);

	/* The slot is taken before the (slow) spawn, so limits hold under a
	 * burst of opens. */
	pthread_mutex_lock(&t->mu);
	if (t->stopping || t->nsessions >= t->svc.conf.terminal_max ||
	    session_count_user_locked(t, o->user_id) >= t->svc.conf.terminal_per_user) {
		pthread_mutex_unlock(&t->mu);
		free(s);
		return ERR_UNAVAIL;
	}
	s->state = S_STARTING;
	s->next = t->sessions;
	t->sessions = s;
	t->nsessions++;
	t->nobjects++;
	pthread_mutex_unlock(&t->mu);

	if ((rv = spawner_spawn(t->spawner, o->exec_path, o->shell, o->cwd, o->cols, o->rows,
	                        &s->pid, &s->master)) != 0)
		goto fail;
	if ((rv = session_listen(s)) != 0)
		goto fail;
	jwt_b64url_encode(raw, sizeof(raw), ticket);
	SHA256((const unsigned char *)ticket, strlen(ticket), s->ticket);
	OPENSSL_cleanse(raw, sizeof(raw));
	s->ticket_until = clock_mono_ms() + TERMINAL_TICKET_TTL_MS;
	/* Here, not in the reader: without it the terminal would open dead. */
	if ((s->rbuf = malloc(1 + SESSION_READ_CHUNK)) == NULL) {
		rv = ERR_NOMEM;
		goto fail;
	}

	pthread_mutex_lock(&t->mu);
	s->refs += 2;
	pthread_mutex_unlock(&t->mu);
	if (pthread_create(&th, NULL, session_reader, s) != 0) {
		pthread_mutex_lock(&t->mu);
		s->refs -= 2;
		pthread_mutex_unlock(&t->mu);
		rv = ERR_NOMEM;
		goto fail;
	}
	pthread_detach(th);
	if (pthread_create(&th, NULL, session_writer, s) != 0) {
		/* The reader runs: close through the normal path. */
		pthread_mutex_lock(&t->mu);
		s->refs--;
		s->state = S_PENDING;
		session_doom_locked(s, "failed");
		pthread_mutex_unlock(&t->mu);
		session_teardown(s);
		return ERR_NOMEM;
	}
	pthread_detach(th);

	pthread_mutex_lock(&t->mu);
	s->state = S_PENDING;
	session_fill(s, info);
	pthread_mutex_unlock(&t->mu);
	if ((rv = store_opened(t->svc.pool, info, ctx)) != 0) {
		/* No audit record, no terminal. */
		pthread_mutex_lock(&t->mu);
		session_doom_locked(s, "audit_failed");
		pthread_mutex_unlock(&t->mu);
		session_teardown(s);
		return rv;
	}
	outbox_kick(t->svc.outbox);
	atomic_fetch_add(&t->opened, 1);
	log_info("terminal: opened id=%s user=%s pid=%d", s->id, s->user_id, (int)s->pid);
	return 0;
fail:
	if (s->pid > 0)
		spawner_kill(t->spawner, s->pid);
	if (s->sock_open)
		nng_close(s->sock);
	pthread_mutex_lock(&t->mu);
	session_doom_locked(s, "failed");
	pthread_mutex_unlock(&t->mu);
	session_unref(s);
	return rv;
}

int session_list(struct terminal *t, const char *user_id, struct session_info *out, int max)
{
	int n = 0;

	pthread_mutex_lock(&t->mu);
	for (struct session *s = t->sessions; s != NULL && n < max; s = s->next)
		if (!s->closing && s->state != S_STARTING && !s->exit_sent &&
		    (user_id[0] == '\0' || strcmp(s->user_id, user_id) == 0))
			session_fill(s, &out[n++]);
	pthread_mutex_unlock(&t->mu);
	return n;
}

int session_close(struct terminal *t, const char *id, const char *user_id,
                  const Magnetar__RequestContext *ctx)
{
	struct session *s;
	(void)ctx;

	pthread_mutex_lock(&t->mu);
	for (s = t->sessions; s != NULL; s = s->next)
		if (!s->closing && s->state != S_STARTING && strcmp(s->id, id) == 0 &&
		    (user_id[0] == '\0' || strcmp(s->user_id, user_id) == 0))
			break;
	if (s != NULL)
		session_doom_locked(s, user_id[0] == '\0' ? "killed" : "deleted");
	pthread_mutex_unlock(&t->mu);
	if (s == NULL)
		return ERR_NOTFOUND;
	session_teardown(s);
	return 0;
}

static bool session_sid_listed(const char *sid, const char *const *sids, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (sids[i] != NULL && strcmp(sid, sids[i]) == 0)
			return true;
	return false;
}

int session_close_revoked(struct terminal *t, const char *const *sids, size_t n)
{
	int closed = 0;

	for (;;) {
		struct session *s;
		pthread_mutex_lock(&t->mu);
		for (s = t->sessions; s != NULL; s = s->next)
			if (!s->closing && s->state != S_STARTING && s->auth_session[0] != '\0' &&
			    session_sid_listed(s->auth_session, sids, n))
				break;
		if (s != NULL)
			session_doom_locked(s, "revoked");
		pthread_mutex_unlock(&t->mu);
		if (s == NULL)
			break;
		session_teardown(s);
		atomic_fetch_add(&t->revoked, 1);
		closed++;
	}
	return closed;
}

int session_attach(struct terminal *t, const char *id, const char *ticket, const char *user_id,
                   char *url, size_t cap)
{
	unsigned char h[SHA256_DIGEST_LENGTH];
	struct session *s;
	int rv = ERR_PERM;

	SHA256((const unsigned char *)ticket, strlen(ticket), h);
	pthread_mutex_lock(&t->mu);
	for (s = t->sessions; s != NULL; s = s->next)
		if (!s->closing && s->state != S_STARTING && strcmp(s->id, id) == 0)
			break;
	/* One lock for check and consume: a ticket works once, whichever
	 * gateway presents it first. */
	if (s != NULL && CRYPTO_memcmp(h, s->ticket, sizeof(h)) == 0 && !s->ticket_used &&
	    clock_mono_ms() < s->ticket_until && s->state == S_PENDING) {
		if (user_id[0] != '\0' && strcmp(user_id, s->user_id) != 0) {
			rv = ERR_INVAL;
		} else if (strlen(s->url) < cap) {
			s->ticket_used = true;
			s->allow_pipe = true;
			strcpy(url, s->url);
			rv = 0;
		}
	}
	pthread_mutex_unlock(&t->mu);
	OPENSSL_cleanse(h, sizeof(h));
	return rv;
}
