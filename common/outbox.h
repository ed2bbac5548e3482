/*
 * outbox.h — the transactional audit outbox (docs/architecture.md, "Data").
 *
 * A producer writes each audit event into its own database's `outbox`
 * table in the same transaction as the change it describes, so the event
 * exists exactly when the change does. A sender thread ships the oldest
 * rows in batches to magnetar-audit (Append) and deletes them only after
 * audit acknowledged them. Audit de-duplicates by (source, instance,
 * sequence): a batch re-sent after a lost ack is stored once. The sequence
 * is the row's AUTOINCREMENT key, never reused even after deletes — unless
 * the database is restored from an older copy: then audit refuses a batch
 * whose numbers it holds with other content (sequence_conflict), or tells
 * us its high-water mark is above what we sent, and the slot draws a new
 * instance id, so the events to come are not taken for old ones.
 *
 * Replicas of a service share its database (docs/scaling.md) but not a
 * sender: each replica's sender has its own slot (its replica number) and
 * that slot's own random instance id, and ships only the rows it claimed,
 * so no two live senders ever ship the same row. A slot's id outlives its
 * process: the replica that takes the slot next ships what the dead one
 * had claimed, or another replica does, holding the dead slot's lock.
 */
#ifndef MAGNETAR_OUTBOX_H
#define MAGNETAR_OUTBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sqlite3;
struct pool;
struct rpc_client;

/* The migration that creates the outbox tables: add it to the producer's
 * schema (struct pool_schema) as one of its numbered migrations. */
extern const char outbox_migration[];
/* The second one (sender slots), numbered after the producer's own. */
extern const char outbox_migration_slots[];

/* One audit event; NULL strings are stored as empty. */
struct outbox_event {
	const char *action; /* required, e.g. "auth.login.success" */
	const char *actor;
	const char *target;
	const char *ip;
	const char *request_id;
	const char *outcome;
	const char *detail;
};

/*
 * Inserts one event using `db` (normally the writer, inside the caller's
 * transaction). 0, ERR_INVAL (no action) or ERR_DB. The sender is not woken:
 * call outbox_kick after the transaction commits for prompt delivery.
 */
int outbox_enqueue(struct sqlite3 *db, const struct outbox_event *ev);

struct outbox_opts {
	int batch;          /* rows per Append (default 256) */
	int timeout_ms;     /* Append deadline (default 2000) */
	int idle_ms;        /* poll period when nothing is kicked (default 250) */
	int max_backoff_ms; /* after failures (default 2000) */
	int slot;           /* our replica number (default 1) */
	/* Takes slot n's replica lock without waiting: true when no live
	 * process holds it (then `release` is called). NULL: every other slot
	 * is taken to be dead (an unreplicated service). */
	bool (*hold)(void *arg, int n);
	void (*release)(void *arg, int n);
	void *hold_arg;
};

struct outbox;

/*
 * Starts the sender. `source` names the producer (e.g. "auth"); `audit` is
 * a client of magnetar-audit owned by the caller (it must outlive the
 * outbox). Reads or draws the instance id. opts may be NULL.
 */
int outbox_start(struct pool *pool, const char *source, struct rpc_client *audit,
                 const struct outbox_opts *opts, struct outbox **out);

/* Wakes the sender now (after a commit that enqueued). Accepts NULL. */
void outbox_kick(struct outbox *o);

/* Stops the sender (an Append in flight finishes first). Accepts NULL. */
void outbox_stop(struct outbox *o);

/* Our slot's instance id (32 hex). */
const char *outbox_instance(struct outbox *o);

struct outbox_stats {
	uint64_t pending; /* rows waiting, as of the last look */
	uint64_t sent;    /* rows acknowledged by audit */
	uint64_t batches;
	uint64_t failures; /* Appends that failed or timed out */
	uint64_t adopted;  /* rows shipped for a dead replica's slot */
	uint64_t rekeyed;  /* new instance ids drawn: our sequence went backwards */
};
void outbox_get_stats(struct outbox *o, struct outbox_stats *st);

/*
 * One AuditEvent from a row whose columns, from `col` on, are the outbox's
 * own layout: sequence, time_ms, action, actor, target, ip, request_id,
 * outcome, detail (audit's import of its legacy table reads the same). The
 * strings are copies: outbox_event_free them, after an error too. 0 or
 * ERR_NOMEM.
 */
struct sqlite3_stmt;
struct Magnetar__AuditEvent;
int outbox_event_row(struct sqlite3_stmt *st, int col, struct Magnetar__AuditEvent *e);
void outbox_event_free(struct Magnetar__AuditEvent *e);

#endif
