/*
 * workq.h — a fixed set of threads running jobs from one FIFO queue.
 * Used where work may block (SQLite, hashing) so it never runs on nng's own
 * callback threads. Jobs are intrusive: the caller embeds struct workq_job in
 * its own object, so submitting allocates nothing.
 */
#ifndef MAGNETAR_WORKQ_H
#define MAGNETAR_WORKQ_H

#include <stddef.h>

struct workq;
struct workq_job {
	struct workq_job *next; /* owned by the queue while queued */
	void (*run)(struct workq_job *job);
};

/* Starts `threads` threads (1..256). 0, ERR_INVAL or ERR_NOMEM. */
int workq_new(int threads, struct workq **out);
/* The same, each thread at nice value `nice` (background work that must not
 * take the CPU from the requests of other threads and processes). */
int workq_new_nice(int threads, int nice, struct workq **out);

/* Queues a job; run() is called once on a worker thread. ERR_CLOSED after
 * workq_free has begun (the job is then not run: the caller still owns it).
 * A non-zero `limit` refuses with ERR_UNAVAIL when that many jobs already wait. */
int workq_submit(struct workq *wq, struct workq_job *job, size_t limit);

/* Jobs queued and not yet started. */
size_t workq_pending(struct workq *wq);

/* Runs every queued job, joins the threads, frees. Accepts NULL. */
void workq_free(struct workq *wq);

#endif
