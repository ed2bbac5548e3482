/*
 * terminal.h — magnetar-terminal: shells in PTYs (later issue); for now Ping, Stats and its audit
 * outbox. Prototypes grouped by file.
 */
#ifndef MAGNETAR_TERMINAL_H
#define MAGNETAR_TERMINAL_H

#include "terminal.pb-c.h"
#include "common/svc.h"

struct terminal {
	struct svc svc; /* first: the generic Ping/Stats handlers use it */
};

/* store.c — the only file that includes sqlite3.h */
extern const struct pool_schema store_schema;

#endif
