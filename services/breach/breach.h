/*
 * breach.h — magnetar-breach: Pwned Passwords range checks (later issue); for now Ping, Stats and
 * its audit outbox. Prototypes grouped by file.
 */
#ifndef MAGNETAR_BREACH_H
#define MAGNETAR_BREACH_H

#include "breach.pb-c.h"
#include "common/svc.h"

struct breach {
	struct svc svc; /* first: the generic Ping/Stats handlers use it */
};

/* store.c — the only file that includes sqlite3.h */
extern const struct pool_schema store_schema;

#endif
