/*
 * logbuf.c — per-thread line buffers flushed by size and time (logbuf.h).
 *
 * Every buffer is on one list the flusher walks; a buffer has its own
 * mutex, so its thread appends without contention except in the rare
 * moment the flusher writes that very buffer. Buffers outlive their
 * threads (a thread that exits leaves its lines to the flusher) and are
 * freed by logbuf_stop.
 */
#include "common/logbuf.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"

/* One write of whole lines never exceeds PIPE_BUF: atomic on a pipe. */
#define LOGBUF_CAP PIPE_BUF
_Static_assert(LOG_LINE_CAP <= LOGBUF_CAP, "a line must fit an empty buffer");

struct logbuf {
	pthread_mutex_t mu;
	size_t len;
	uint64_t oldest_ms; /* when the first line not yet written was added */
	struct logbuf *next;
	char data[LOGBUF_CAP];
};

static struct {
	pthread_mutex_t mu; /* the list and the flusher's state */
	pthread_cond_t cv;
	struct logbuf *all;
	bool stop;
	bool running;
	int flush_ms;
	pthread_t thread;
} lb = {.mu = PTHREAD_MUTEX_INITIALIZER}; /* cv: made in logbuf_start, on CLOCK_MONOTONIC */

static _Atomic bool lb_on;
/* Which start the buffers belong to: a thread's cached buffer from before
 * a logbuf_stop was freed by it and is never touched again. */
static _Atomic unsigned lb_generation;
static _Thread_local struct logbuf *lb_mine;
static _Thread_local unsigned lb_mine_generation;

/* Writes all of it; a failed write to stderr has nowhere to be reported. */
static void lb_write(const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(STDERR_FILENO, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		p += n;
		len -= (size_t)n;
	}
}

/* Under b->mu. */
static void lb_drain(struct logbuf *b)
{
	lb_write(b->data, b->len);
	b->len = 0;
}

/* This thread's buffer, made and listed on first use; NULL when off or out
 * of memory (the line is then written at once). */
static struct logbuf *lb_buffer(void)
{
	struct logbuf *b;

	unsigned gen = atomic_load(&lb_generation);

	if (lb_mine != NULL && lb_mine_generation == gen)
		return lb_mine;
	if ((b = malloc(sizeof(*b))) == NULL)
		return NULL;
	pthread_mutex_init(&b->mu, NULL);
	b->len = 0;
	pthread_mutex_lock(&lb.mu);
	if (!lb.running) {
		pthread_mutex_unlock(&lb.mu);
		pthread_mutex_destroy(&b->mu);
		free(b);
		return NULL;
	}
	b->next = lb.all;
	lb.all = b;
	pthread_mutex_unlock(&lb.mu);
	lb_mine_generation = gen;
	return lb_mine = b;
}

void logbuf_info(const char *fmt, ...)
{
	char line[LOG_LINE_CAP];
	struct logbuf *b;
	va_list ap;
	size_t len;
	int saved = errno;

	va_start(ap, fmt);
	len = log_format(line, sizeof(line), "info", fmt, ap, NULL);
	va_end(ap);
	if (!atomic_load_explicit(&lb_on, memory_order_acquire) || (b = lb_buffer()) == NULL) {
		lb_write(line, len);
		errno = saved;
		return;
	}
	pthread_mutex_lock(&b->mu);
	if (b->len + len > sizeof(b->data))
		lb_drain(b); /* size: the one write in about PIPE_BUF / len lines */
	if (b->len == 0)
		b->oldest_ms = clock_mono_ms();
	memcpy(b->data + b->len, line, len);
	b->len += len;
	pthread_mutex_unlock(&b->mu);
	errno = saved;
}

/* Writes every buffer holding a line at least `age_ms` old. Under lb.mu. */
static void lb_flush_locked(uint64_t age_ms)
{
	uint64_t now = clock_mono_ms();

	for (struct logbuf *b = lb.all; b != NULL; b = b->next) {
		pthread_mutex_lock(&b->mu);
		if (b->len > 0 && b->oldest_ms + age_ms <= now)
			lb_drain(b);
		pthread_mutex_unlock(&b->mu);
	}
}

static void *lb_flusher(void *arg)
{
	struct timespec until;
	(void)arg;

	pthread_mutex_lock(&lb.mu);
	while (!lb.stop) {
		/* Woken twice per period: a line waits at most 1.5 periods. */
		int step = lb.flush_ms / 2 > 0 ? lb.flush_ms / 2 : 1;
		clock_gettime(CLOCK_MONOTONIC,
		              &until); /* a clock step neither holds nor hurries lines */
		until.tv_nsec += (long)(step % 1000) * 1000000L;
		until.tv_sec += step / 1000 + until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		pthread_cond_timedwait(&lb.cv, &lb.mu, &until);
		lb_flush_locked((uint64_t)lb.flush_ms);
	}
	pthread_mutex_unlock(&lb.mu);
	return NULL;
}

/* An exit() (fatalx, or a return from main before logbuf_stop) writes what
 * is buffered: the lines before a fatal error are the ones that explain it. */
static void lb_at_exit(void)
{
	pthread_mutex_lock(&lb.mu);
	lb_flush_locked(0);
	pthread_mutex_unlock(&lb.mu);
}

int logbuf_start(int flush_ms)
{
	static bool at_exit_set;

	pthread_mutex_lock(&lb.mu);
	if (lb.running) {
		pthread_mutex_unlock(&lb.mu);
		return ERR_INVAL;
	}
	lb.flush_ms = flush_ms > 0 ? flush_ms : 1;
	lb.stop = false;
	if (clock_cond_init_mono(&lb.cv) != 0) {
		pthread_mutex_unlock(&lb.mu);
		return ERR_NOMEM;
	}
	if (pthread_create(&lb.thread, NULL, lb_flusher, NULL) != 0) {
		pthread_cond_destroy(&lb.cv);
		pthread_mutex_unlock(&lb.mu);
		return ERR_NOMEM;
	}
	lb.running = true;
	atomic_fetch_add(&lb_generation, 1);
	if (!at_exit_set)
		at_exit_set = atexit(lb_at_exit) == 0;
	pthread_mutex_unlock(&lb.mu);
	atomic_store_explicit(&lb_on, true, memory_order_release);
	return 0;
}

void logbuf_stop(void)
{
	struct logbuf *b;

	atomic_store_explicit(&lb_on, false, memory_order_release);
	atomic_fetch_add(&lb_generation, 1); /* no thread reuses a buffer freed below */
	pthread_mutex_lock(&lb.mu);
	if (!lb.running) {
		pthread_mutex_unlock(&lb.mu);
		return;
	}
	lb.stop = true;
	pthread_cond_signal(&lb.cv);
	pthread_mutex_unlock(&lb.mu);
	pthread_join(lb.thread, NULL);
	pthread_cond_destroy(&lb.cv);
	pthread_mutex_lock(&lb.mu);
	lb_flush_locked(0);
	while ((b = lb.all) != NULL) {
		lb.all = b->next;
		pthread_mutex_destroy(&b->mu);
		free(b);
	}
	lb.running = false;
	pthread_mutex_unlock(&lb.mu);
}
