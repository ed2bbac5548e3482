/*
 * fault.h — fault injection for the reliability suite (issue 10):
 * SQLite I/O errors, lock contention and allocation failures, every Nth
 * time, switched on by MAGNETAR_FAULT_SQLITE_{IOERR,BUSY,NOMEM}=N, and
 * failures of our own allocations (MAGNETAR_FAULT_ALLOC=N, fault_alloc.c),
 * only when MAGNETAR_ENV=test (a production process refuses to start with
 * them).
 */
#ifndef MAGNETAR_FAULT_H
#define MAGNETAR_FAULT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"

/* Installs what the environment asks for; call before any SQLite use.
 * 0, or ERR_CONFIG with one sentence in err. */
int fault_install(const struct conf *c, char *err, size_t errlen);

/* From now on faults happen (svc_lockdown: the service serves). */
void fault_arm(void);

/* Whether this allocation is to fail (MAGNETAR_FAULT_ALLOC, once armed;
 * counts it): called by the --wrap'ed allocator (fault_alloc.c). */
bool fault_alloc_due(void);

/* How many faults were injected so far (a Stats counter). */
uint64_t fault_injected(void);

#endif
