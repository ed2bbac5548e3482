/*
 * workq.c — thread pool over one mutex-protected FIFO (workq.h).
 * One lock is enough: jobs here are whole RPC handlers (tens of µs or more),
 * so queue contention is not where time goes.
 */
#include "common/workq.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/err.h"

struct workq {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct workq_job *head, *tail;
	size_t pending;
	bool closing;
	int nice;    /* each thread's own nice value (0: unchanged) */
	int started; /* threads that have applied it, under mu */
	int nthreads;
	pthread_t threads[];
};

static void *workq_main(void *arg)
{
	struct workq *wq = arg;

	/* Linux's nice is per thread; a failure only leaves the default. */
	if (wq->nice != 0)
		(void)setpriority(PRIO_PROCESS, (id_t)gettid(), wq->nice);
	pthread_mutex_lock(&wq->mu);
	wq->started++;
	pthread_cond_broadcast(&wq->cv);
	pthread_mutex_unlock(&wq->mu);
	for (;;) {
		struct workq_job *job;
		pthread_mutex_lock(&wq->mu);
		while (wq->head == NULL && !wq->closing)
			pthread_cond_wait(&wq->cv, &wq->mu);
		job = wq->head;
		if (job == NULL) { /* closing and drained */
			pthread_mutex_unlock(&wq->mu);
			return NULL;
		}
		wq->head = job->next;
		if (wq->head == NULL)
			wq->tail = NULL;
		wq->pending--;
		pthread_mutex_unlock(&wq->mu);
		job->next = NULL;
		job->run(job);
	}
}

int workq_new_nice(int threads, int nice, struct workq **out)
{
	struct workq *wq;
	if (threads < 1 || threads > 256)
		return ERR_INVAL;
	if ((wq = calloc(1, sizeof(*wq) + (size_t)threads * sizeof(pthread_t))) == NULL)
		return ERR_NOMEM;
	pthread_mutex_init(&wq->mu, NULL);
	pthread_cond_init(&wq->cv, NULL);
	wq->nice = nice;
	for (int i = 0; i < threads; i++) {
		if (pthread_create(&wq->threads[i], NULL, workq_main, wq) != 0) {
			wq->nthreads = i;
			workq_free(wq);
			return ERR_NOMEM;
		}
	}
	wq->nthreads = threads;
	/* Every thread has set its priority before we return: a service locks
	 * down (seccomp) right after, and setpriority need not be allowed. */
	pthread_mutex_lock(&wq->mu);
	while (wq->started < threads)
		pthread_cond_wait(&wq->cv, &wq->mu);
	pthread_mutex_unlock(&wq->mu);
	*out = wq;
	return 0;
}

int workq_new(int threads, struct workq **out)
{
	return workq_new_nice(threads, 0, out);
}

int workq_submit(struct workq *wq, struct workq_job *job, size_t limit)
{
	int rv = 0;
	pthread_mutex_lock(&wq->mu);
	if (wq->closing) {
		rv = ERR_CLOSED;
	} else if (limit != 0 && wq->pending >= limit) {
		rv = ERR_UNAVAIL;
	} else {
		job->next = NULL;
		if (wq->tail != NULL)
			wq->tail->next = job;
		else
			wq->head = job;
		wq->tail = job;
		wq->pending++;
		pthread_cond_signal(&wq->cv);
	}
	pthread_mutex_unlock(&wq->mu);
	return rv;
}

size_t workq_pending(struct workq *wq)
{
	size_t n;
	pthread_mutex_lock(&wq->mu);
	n = wq->pending;
	pthread_mutex_unlock(&wq->mu);
	return n;
}

void workq_free(struct workq *wq)
{
	if (wq == NULL)
		return;
	pthread_mutex_lock(&wq->mu);
	wq->closing = true;
	pthread_cond_broadcast(&wq->cv);
	pthread_mutex_unlock(&wq->mu);
	for (int i = 0; i < wq->nthreads; i++)
		pthread_join(wq->threads[i], NULL);
	pthread_cond_destroy(&wq->cv);
	pthread_mutex_destroy(&wq->mu);
	free(wq);
}
