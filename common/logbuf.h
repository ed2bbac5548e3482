/*
 * logbuf.h — log lines at request rate without a write(2) each: the
 * gateway's access log (one line per request, the default users expect).
 *
 * Each thread appends whole lines to a buffer of its own; the buffer goes
 * to stderr in one write when the next line would not fit (size), and a
 * flusher thread writes any buffer holding a line older than flush_ms
 * (time). A write is at most PIPE_BUF bytes of whole lines, so, like
 * log.c's single-line writes, it never interleaves with another writer's
 * on the supervisor's pipe. logbuf_stop writes everything left: nothing is
 * lost on SIGTERM, and an exit() (fatalx) flushes too. Lines of different
 * threads may reach the log out of order by up to flush_ms; each carries
 * its time.
 */
#ifndef MAGNETAR_LOGBUF_H
#define MAGNETAR_LOGBUF_H

/* Starts the flusher. Before it (and after logbuf_stop) logbuf_info
 * writes each line at once, as log_info does. 0 or an ERR_* code. */
int logbuf_start(int flush_ms);

/* Like log_info, through the calling thread's buffer. */
void logbuf_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Stops the flusher, writes every buffer and frees them. Call once the
 * threads that log through it have stopped: a call made while another
 * thread is inside logbuf_info is undefined; one made after it is written
 * at once. Buffers live until then, one per thread that ever logged: for
 * a fixed pool of threads (the gateway's), not one per task. */
void logbuf_stop(void);

#endif
