/*
 * audit.h — magnetar-audit: the security event log. Prototypes grouped by
 * file. For now events are stored in plain text; encryption and the
 * tamper-evident chain come with the audit issue.
 */
#ifndef MAGNETAR_AUDIT_H
#define MAGNETAR_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "audit.pb-c.h"
#include "common/svc.h"

struct audit {
	struct svc svc; /* first: the generic Ping/Stats handlers use it */
};

/* store.c — the only file that includes sqlite3.h */
extern const struct pool_schema store_schema;

/* Stores a batch in one transaction, ignoring events whose (source,
 * instance, sequence) is already stored. `source` is the authenticated
 * producer identity, `producer` the name the producer claims. */
int store_append(struct pool *pool, const char *source, const char *producer, const char *instance,
                 Magnetar__AuditEvent *const *events, size_t n, uint32_t *stored,
                 uint32_t *duplicates);

/* Number of stored events. */
int store_count(struct pool *pool, uint64_t *count);

/* append.c */
/* Validates and stores one batch under the caller's authenticated identity.
 * 0, ERR_INVAL for a malformed batch, or a store error. */
int append_store(struct audit *a, struct rpc_call *call, const Magnetar__AppendRequest *req,
                 Magnetar__AppendReply *out);
void append_handle(struct rpc_call *call, const ProtobufCMessage *input, void *arg);

#endif
