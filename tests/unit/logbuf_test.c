/*
 * logbuf_test.c — the access log's buffers, seen from the reading end of
 * stderr. stderr is a SOCK_SEQPACKET socket here, so each write(2) arrives
 * as one record and its bounds can be checked: every write is whole lines
 * of at most PIPE_BUF bytes; four threads' 3,000 lines each all arrive,
 * each exactly once, with far fewer writes than lines; a lone line waits
 * in its buffer and is written by time; a thread that exits leaves its
 * lines to the flusher; logbuf_stop writes what is left; before a start
 * a line is written at once.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/logbuf.h"

static int reader_fd = -1, saved_stderr = -1;

/* What arrived on stderr, gathered by a reader thread (writers must never
 * block on a full socket while the test waits for them). */
static struct {
	pthread_mutex_t mu;
	char *data;
	size_t len, cap, records;
	pthread_t thread;
} got = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void *reader(void *arg)
{
	char rec[PIPE_BUF + 1];
	(void)arg;
	for (;;) {
		ssize_t n = recv(reader_fd, rec, sizeof(rec), 0);
		if (n <= 0)
			return NULL;
		pthread_mutex_lock(&got.mu);
		/* One write each, atomic on a pipe, of whole lines (a record
		 * that breaks this is kept with a marker the test looks for). */
		if (n > PIPE_BUF || rec[n - 1] != '\n')
			got.records += 1000000;
		if (got.len + (size_t)n + 1 <= got.cap) {
			memcpy(got.data + got.len, rec, (size_t)n);
			got.len += (size_t)n;
			got.data[got.len] = '\0';
		}
		got.records++;
		pthread_mutex_unlock(&got.mu);
	}
}

static int setup(void **state)
{
	int sv[2];
	(void)state;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) != 0)
		return -1;
	got.cap = 4 << 20;
	if ((got.data = calloc(1, got.cap)) == NULL)
		return -1;
	saved_stderr = dup(STDERR_FILENO);
	dup2(sv[1], STDERR_FILENO);
	close(sv[1]);
	reader_fd = sv[0];
	log_init("logbuf-test", LOG_TEXT, false);
	return pthread_create(&got.thread, NULL, reader, NULL);
}

static int teardown(void **state)
{
	(void)state;
	dup2(saved_stderr, STDERR_FILENO); /* the reader sees the end */
	close(saved_stderr);
	pthread_join(got.thread, NULL);
	close(reader_fd);
	free(got.data);
	return 0;
}

/* What arrived since the last call once `want` more writes have (or
 * after `wait_ms` when fewer came: the caller's assertion then says so):
 * its text into out (NUL-terminated), its number of writes returned. */
static size_t drain(char *out, size_t cap, size_t *len, size_t want, int wait_ms)
{
	static size_t seen_len, seen_records;
	size_t records, n;

	for (int waited = 0; waited < wait_ms; waited += 10) {
		pthread_mutex_lock(&got.mu);
		bool enough = want > 0 && got.records - seen_records >= want;
		pthread_mutex_unlock(&got.mu);
		if (enough)
			break;
		usleep(10000);
	}
	pthread_mutex_lock(&got.mu);
	n = got.len - seen_len;
	assert_true(*len + n < cap);
	memcpy(out + *len, got.data + seen_len, n);
	*len += n;
	out[*len] = '\0';
	records = got.records - seen_records;
	seen_len = got.len;
	seen_records = got.records;
	pthread_mutex_unlock(&got.mu);
	assert_true(records < 1000000); /* no write broke a line or PIPE_BUF */
	return records;
}

static void test_unstarted_writes_at_once(void **state)
{
	char out[4096];
	size_t len = 0;
	(void)state;
	logbuf_info("before start n=%d", 1);
	assert_int_equal(drain(out, sizeof(out), &len, 1, 5000), 1);
	assert_non_null(strstr(out, "msg=\"before start n=1\""));
}

static void test_a_lone_line_is_written_by_time(void **state)
{
	char out[4096];
	size_t len = 0;
	(void)state;
	assert_int_equal(logbuf_start(300), 0);
	logbuf_info("lone line");
	/* Not at once: it waits for the flusher (at least 300 ms old). */
	assert_int_equal(drain(out, sizeof(out), &len, 0, 100), 0);
	/* Within 1.5 periods and a margin. */
	assert_int_equal(drain(out, sizeof(out), &len, 1, 1500), 1);
	assert_non_null(strstr(out, "msg=\"lone line\""));
	logbuf_stop();
}

#define THREADS 4
#define LINES 3000

static void *writer(void *arg)
{
	int t = (int)(intptr_t)arg;
	for (int i = 0; i < LINES; i++)
		logbuf_info("http method=GET path=/healthz thread=%d line=%d end", t, i);
	return NULL; /* exits with lines still buffered: the flusher's */
}

static void test_threads_lose_nothing_and_write_in_batches(void **state)
{
	static char out[THREADS * LINES * 160];
	pthread_t th[THREADS];
	size_t len = 0, records = 0, lines = 0;
	char want[96];
	(void)state;

	/* A long period: only size (and the stop) write during the run. */
	assert_int_equal(logbuf_start(60000), 0);
	/* This thread logged under the previous start too: its old buffer was
	 * freed by that stop and must not be reused (ASan would say so). */
	logbuf_info("main thread again, after a new start");
	for (int t = 0; t < THREADS; t++)
		assert_int_equal(pthread_create(&th[t], NULL, writer, (void *)(intptr_t)t), 0);
	for (int t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);
	records += drain(out, sizeof(out), &len, 0, 200);
	logbuf_stop(); /* the threads are gone; their last lines are written now */
	for (int waited = 0; waited < 10000; waited += 100) {
		records += drain(out, sizeof(out), &len, 0, 100);
		size_t n = 0;
		for (char *p = out; (p = strchr(p, '\n')) != NULL; p++)
			n++;
		if (n >= THREADS * LINES + 1)
			break;
	}
	assert_non_null(strstr(out, "main thread again, after a new start"));
	for (char *p = out; (p = strchr(p, '\n')) != NULL; p++)
		lines++;
	assert_int_equal(lines, THREADS * LINES + 1);
	for (int t = 0; t < THREADS; t++)
		for (int i = 0; i < LINES; i += 997) {
			snprintf(want, sizeof(want), "thread=%d line=%d end", t, i);
			char *at = strstr(out, want);
			assert_non_null(at);
			assert_null(strstr(at + 1, want)); /* once */
		}
	/* About PIPE_BUF / 110 lines per write: well over 10 per write. */
	assert_true(records * 10 < lines);
	printf("%zu lines in %zu writes\n", lines, records);
}

/* The child of test_an_exit_flushes: a fresh process (exec'd, not only
 * forked: a forked child of a threaded process may not start threads
 * under ThreadSanitizer) that buffers a line and exits as fatalx does. */
static int exit_child(void)
{
	log_init("logbuf-test", LOG_TEXT, false);
	if (logbuf_start(60000) != 0)
		return 2;
	logbuf_info("said just before a fatal error");
	exit(1);
}

static void test_an_exit_flushes(void **state)
{
	char out[65536];
	size_t len = 0;
	pid_t pid;
	(void)state;

	if ((pid = fork()) == 0) {
		alarm(30); /* a hang in the exit hook fails the test, not CI */
		execl("/proc/self/exe", "logbuf_test", "exit-child", (char *)NULL);
		_exit(3);
	}
	assert_true(pid > 0);
	waitpid(pid, NULL, 0);
	assert_true(drain(out, sizeof(out) - 1, &len, 1, 5000) >= 1);
	assert_non_null(strstr(out, "said just before a fatal error"));
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "exit-child") == 0)
		return exit_child();
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_unstarted_writes_at_once),
	    cmocka_unit_test(test_a_lone_line_is_written_by_time),
	    cmocka_unit_test(test_threads_lose_nothing_and_write_in_batches),
	    cmocka_unit_test(test_an_exit_flushes),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
