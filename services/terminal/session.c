/*
 * session.c — the live terminals: a PTY master, the shell's pid, and one
 * stream connection from the gateway (stream.c accepts it and hands it over
 * once, to the holder of the key that consuming the ticket gave out). Two
 * threads per terminal move bytes (PTY → stream with a blocking send, so a
 * slow client pauses PTY reads; stream → PTY), and a reaper enforces the
 * idle, lifetime, attach and detach deadlines. Every object is reference
 * counted: the list, the reader and the writer each hold one; the last
 * reference closes the stream, so no thread ever uses a closed descriptor
 * (the teardown only shuts the stream down, which wakes both threads).
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/ids.h"
#include "common/jwt.h"
#include "common/lenframe.h"
#include "common/log.h"
#include "common/outbox.h"
#include "services/terminal/terminal.h"

#define SESSION_READ_CHUNK 65536 /* = TERMINAL_FRAME_MAX */
#define SESSION_POLL_MS 250
#define SESSION_EXIT_WAIT_MS 3000
#define SESSION_EXIT_SEND_MS 5000
#define SESSION_HEAD (LENFRAME_HDR + 1) /* before the data: length, kind */

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
	bool ticket_used, key_valid;
	unsigned char key[SHA256_DIGEST_LENGTH]; /* hash of the stream key Attach gave out */
	int fd;                                  /* the stream; -1 until stream.c hands it over */
	uint64_t detached_mono, exit_sent_mono;
	bool closing, exited, exit_sent;
	int exit_code;
	const char *reason;
	/* Set once before the threads start. */
	uint8_t *rbuf; /* the reader's: allocated by the open, which may fail */
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
	if (s->fd >= 0)
		close(s->fd);
	OPENSSL_cleanse(s->ticket, sizeof(s->ticket));
	OPENSSL_cleanse(s->key, sizeof(s->key));
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

/* Kills the shell, ends the stream, records the close; drops the list's
 * reference. Never under t->mu (the spawner's answer takes it). */
static void session_teardown(struct session *s)
{
	struct terminal *t = s->t;
	bool exited;
	int code;

	pthread_mutex_lock(&t->mu);
	exited = s->exited;
	code = s->exit_code;
	/* The gateway reads the end of the stream after every byte sent
	 * before it; the reader's send and the writer's read return at once.
	 * The descriptor stays open until the last reference goes. */
	if (s->fd >= 0)
		shutdown(s->fd, SHUT_RDWR);
	pthread_cond_broadcast(&t->cv);
	pthread_mutex_unlock(&t->mu);
	if (!exited && s->pid > 0)
		spawner_kill(t->spawner, s->pid);
	atomic_fetch_add(&t->closed, 1);
	log_info("terminal: closed id=%s user=%s reason=%s", s->id, s->user_id, s->reason);
	if (store_closed(t->svc.pool, s->id, s->user_id, s->reason, exited ? code : -1) == 0)
		outbox_kick(t->svc.outbox);
	session_unref(s);
}

/* ---- the stream ----------------------------------------------------------- */

static bool session_closing(struct session *s)
{
	bool closing;
	pthread_mutex_lock(&s->t->mu);
	closing = s->closing;
	pthread_mutex_unlock(&s->t->mu);
	return closing;
}

/* The gateway went away (or broke the framing): detached, and the stream
 * shut so that the other thread stops too. The reaper closes the terminal
 * after the detach grace. */
static void session_lost(struct session *s)
{
	pthread_mutex_lock(&s->t->mu);
	if (s->state == S_ATTACHED) {
		s->state = S_DETACHED;
		s->detached_mono = clock_mono_ms();
	}
	if (s->fd >= 0)
		shutdown(s->fd, SHUT_RDWR);
	pthread_mutex_unlock(&s->t->mu);
}

/* Waits until the gateway's stream is here; false when closing first. */
static bool session_wait_stream(struct session *s)
{
	struct terminal *t = s->t;
	bool ok;

	pthread_mutex_lock(&t->mu);
	while (s->fd < 0 && !s->closing)
		pthread_cond_wait(&t->cv, &t->mu);
	ok = !s->closing;
	pthread_mutex_unlock(&t->mu);
	return ok;
}

/* Sends all of buf. The stream's send timeout (stream.c) wakes the wait
 * every SESSION_POLL_MS to look at the closing flag and the deadline
 * (0: none): a gateway that stops reading holds the shell, not us. */
static bool session_send_all(struct session *s, const uint8_t *buf, size_t len, uint64_t deadline)
{
	while (len > 0) {
		ssize_t n = send(s->fd, buf, len, MSG_NOSIGNAL);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return false;
		if (session_closing(s) || (deadline != 0 && clock_mono_ms() > deadline))
			return false;
	}
	return true;
}

/* One frame of `kind` whose `len` bytes wait at buf + SESSION_HEAD. */
static bool session_send_frame(struct session *s, uint8_t *buf, char kind, size_t len,
                               uint64_t deadline)
{
	lenframe_header(buf, (uint32_t)(len + 1));
	buf[LENFRAME_HDR] = (uint8_t)kind;
	return session_send_all(s, buf, SESSION_HEAD + len, deadline);
}

int session_take_stream(struct terminal *t, const char *id, const uint8_t *key, size_t key_len,
                        int fd)
{
	unsigned char h[SHA256_DIGEST_LENGTH];
	struct session *s;
	int rv = ERR_PERM;

	SHA256(key, key_len, h);
	pthread_mutex_lock(&t->mu);
	for (s = t->sessions; s != NULL; s = s->next)
		if (!s->closing && s->state == S_PENDING && strcmp(s->id, id) == 0)
			break;
	/* Once: the key is spent by the first connection that shows it. */
	if (s != NULL && s->key_valid && CRYPTO_memcmp(h, s->key, sizeof(h)) == 0) {
		s->key_valid = false;
		s->fd = fd;
		s->state = S_ATTACHED;
		pthread_cond_broadcast(&t->cv);
		rv = 0;
	}
	pthread_mutex_unlock(&t->mu);
	OPENSSL_cleanse(h, sizeof(h));
	return rv;
}

/* The shell's output is done: wait for its status, send the exit frame. */
static void session_finish(struct session *s)
{
	struct terminal *t = s->t;
	struct timespec until;
	uint8_t frame[LENFRAME_HDR + 32];
	size_t len;
	bool closing;
	int code;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += SESSION_EXIT_WAIT_MS / 1000;
	pthread_mutex_lock(&t->mu);
	while (!s->exited && !s->closing)
		if (pthread_cond_timedwait(&t->cv, &t->mu, &until) != 0)
			break;
	code = s->exited ? s->exit_code : 255;
	closing = s->closing;
	pthread_mutex_unlock(&t->mu);
	/* Closed meanwhile (deleted, revoked, idle): the shell's end is the
	 * close's doing, and the stream's end says so. The reader
	 * may see the PTY end before it sees the close: the spawner signals
	 * within microseconds. */
	if (closing)
		return;
	len = frame_exit((char *)frame + LENFRAME_HDR, sizeof(frame) - LENFRAME_HDR, code);
	/* Bounded: a gateway that never reads does not keep us. */
	lenframe_header(frame, (uint32_t)len);
	session_send_all(s, frame, LENFRAME_HDR + len, clock_mono_ms() + SESSION_EXIT_SEND_MS);
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
	bool closing;

	/* Output waits in the PTY until the gateway is here (the shell's
	 * prompt is read then). */
	closing = !session_wait_stream(s);
	while (!closing) {
		struct pollfd pfd = {.fd = s->master, .events = POLLIN};
		ssize_t n;
		if ((closing = session_closing(s)))
			break;
		if (poll(&pfd, 1, SESSION_POLL_MS) <= 0)
			continue;
		n = read(s->master, buf + SESSION_HEAD, SESSION_READ_CHUNK);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0)
			break; /* EIO: every slave descriptor is closed */
		/* The PTY hands out ~4 KiB at a time: gather what is there
		 * already into one frame (fewer messages, same latency). */
		while (n < SESSION_READ_CHUNK) {
			ssize_t more = read(s->master, buf + SESSION_HEAD + n,
			                    (size_t)(SESSION_READ_CHUNK - n));
			if (more <= 0)
				break; /* EAGAIN now; EIO is seen on the next round */
			n += more;
		}
		atomic_store(&s->active_mono, clock_mono_ms());
		atomic_fetch_add(&t->bytes_out, (uint64_t)n);
		/* Waits while the gateway is behind: the PTY is not read
		 * meanwhile, so the shell waits, not our memory. The teardown's
		 * shutdown ends the wait. */
		if (!session_send_frame(s, buf, FRAME_DATA, (size_t)n, 0)) {
			session_lost(s);
			closing = true; /* not the shell's end: no exit frame */
		}
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

/* Applies one client frame to the PTY. */
static void session_write_frame(struct session *s, const struct frame *f)
{
	struct terminal *t = s->t;

	if (f->kind == FRAME_DATA) {
		atomic_store(&s->active_mono, clock_mono_ms());
		atomic_fetch_add(&t->bytes_in, f->len);
		session_write_all(s, f->data, f->len);
	} else if (f->kind == FRAME_RESIZE) {
		struct winsize ws = {.ws_row = (unsigned short)f->rows,
		                     .ws_col = (unsigned short)f->cols};
		/* The kernel sends SIGWINCH to the foreground group. */
		ioctl(s->master, TIOCSWINSZ, &ws);
		pthread_mutex_lock(&t->mu);
		s->cols = f->cols;
		s->rows = f->rows;
		pthread_mutex_unlock(&t->mu);
	}
}

/* Reads what the gateway sent into `r`; false when the stream ended (the
 * gateway left, or the teardown shut it). The stream's receive timeout
 * (stream.c) wakes the read to look at the closing flag. */
static bool session_writer_read(struct session *s, struct lenframe_reader *r)
{
	for (;;) {
		ssize_t n = lenframe_fill(r, s->fd);
		if (n > 0)
			return true;
		if (n < 0 && (errno == EAGAIN || errno == EINTR) && !session_closing(s))
			continue;
		session_lost(s);
		return false;
	}
}

static void *session_writer(void *arg)
{
	struct session *s = arg;
	struct lenframe_reader r;

	if (lenframe_reader_init(&r, TERMINAL_FRAME_MAX + 1) != 0) {
		log_warnx("terminal: no memory for the stream id=%s", s->id);
		session_unref(s);
		return NULL;
	}
	while (session_wait_stream(s) && session_writer_read(s, &r)) {
		const uint8_t *buf;
		struct frame f;
		size_t len;
		int got;
		while ((got = lenframe_next(&r, &buf, &len)) == 1) {
			if (frame_parse_client(buf, len, &f) != 0)
				log_warnx("terminal: dropped an invalid frame id=%s", s->id);
			else
				session_write_frame(s, &f);
		}
		if (got != 0) {
			/* A length no frame has: the stream cannot be resynced. */
			log_warnx("terminal: broken stream framing id=%s: hung up", s->id);
			session_lost(s);
			break;
		}
	}
	lenframe_reader_fini(&r);
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
	uint64_t idle_ms = (uint64_t)terminal_vars(t)->idle_s * 1000;
	uint64_t life_ms = (uint64_t)terminal_vars(t)->lifetime_s * 1000;

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
	char used_cwd[PATH_MAX];
	struct session *s;
	pthread_t th;
	uid_t uid;
	int rv;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return ERR_NOMEM;
	s->t = t;
	s->master = -1;
	s->fd = -1;
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
	if (ids_random_hex(s->id, 16) != 0 || ids_random(raw, sizeof(raw)) != 0) {
		free(s);
		return ERR_IO;
	}

	/* The slot is taken before the (slow) spawn, so limits hold under a
	 * burst of opens. */
	pthread_mutex_lock(&t->mu);
	if (t->stopping || t->nsessions >= terminal_vars(t)->max ||
	    session_count_user_locked(t, o->user_id) >= terminal_vars(t)->max_per_user) {
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

	/* The user's own uid: shells of two users never share one. */
	if ((rv = store_shell_uid(t->svc.pool, o->user_id, t->uid_first, t->uid_last, &uid)) != 0)
		goto fail;
	if ((rv = spawner_spawn(t->spawner, o->exec_path, o->shell, o->cwd, uid, o->cols, o->rows,
	                        &s->pid, &s->master, used_cwd)) != 0)
		goto fail;
	pthread_mutex_lock(&t->mu);
	strcpy(s->cwd, used_cwd); /* the home, when none was asked for */
	pthread_mutex_unlock(&t->mu);
	jwt_b64url_encode(raw, sizeof(raw), ticket);
	SHA256((const unsigned char *)ticket, strlen(ticket), s->ticket);
	OPENSSL_cleanse(raw, sizeof(raw));
	s->ticket_until = clock_mono_ms() + TERMINAL_TICKET_TTL_MS;
	/* Here, not in the reader: without it the terminal would open dead. */
	if ((s->rbuf = malloc(SESSION_HEAD + SESSION_READ_CHUNK)) == NULL) {
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
                   uint8_t key[TERMINAL_KEY_LEN])
{
	unsigned char h[SHA256_DIGEST_LENGTH], kh[SHA256_DIGEST_LENGTH];
	struct session *s;
	int rv = ERR_PERM;

	if (ids_random(key, TERMINAL_KEY_LEN) != 0)
		return ERR_IO;
	SHA256(key, TERMINAL_KEY_LEN, kh);
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
		} else {
			/* The stream key replaces the ticket: whoever shows it first
			 * on the stream socket gets the stream (session_take_stream). */
			s->ticket_used = true;
			s->key_valid = true;
			memcpy(s->key, kh, sizeof(kh));
			rv = 0;
		}
	}
	pthread_mutex_unlock(&t->mu);
	OPENSSL_cleanse(h, sizeof(h));
	OPENSSL_cleanse(kh, sizeof(kh));
	if (rv != 0)
		OPENSSL_cleanse(key, TERMINAL_KEY_LEN);
	return rv;
}
