/*
 * auth.h — magnetar-auth: accounts, passwords, tokens and sessions (later issues); for now Ping,
 * Stats and its audit outbox. Prototypes grouped by file.
 */
#ifndef MAGNETAR_AUTH_H
#define MAGNETAR_AUTH_H

#include "auth.pb-c.h"
#include "common/events.h"
#include "common/svc.h"

struct auth {
	struct svc svc;            /* first: the generic Ping/Stats handlers use it */
	struct events_pub *events; /* auth.events: session.revoked, ... */
};

/* store.c — the only file that includes sqlite3.h */
extern const struct pool_schema store_schema;

#endif
