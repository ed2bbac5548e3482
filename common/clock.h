/*
 * clock.h — the two clocks Magnetar uses: wall time in unix milliseconds for
 * records and deadlines that cross processes, monotonic milliseconds for
 * measuring intervals inside one process.
 */
#ifndef MAGNETAR_CLOCK_H
#define MAGNETAR_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

static inline uint64_t clock_unix_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline uint64_t clock_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline uint64_t clock_mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* A condition variable whose timed waits take monotonic deadlines: on the
 * default (wall) clock a wait would end early or late once the date is
 * set. 0, or the error of pthread_condattr_setclock or pthread_cond_init. */
static inline int clock_cond_init_mono(pthread_cond_t *cv)
{
	pthread_condattr_t ca;
	int rv = pthread_condattr_init(&ca);

	if (rv != 0)
		return rv;
	if ((rv = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC)) == 0)
		rv = pthread_cond_init(cv, &ca);
	pthread_condattr_destroy(&ca);
	return rv;
}

#endif
