/*
 * events.h — pub/sub with loss detection.
 *
 * nng pub/sub drops messages by design (docs/dependencies.md), so every event carries
 * its publisher's random instance id and a per-publisher sequence number,
 * and every publisher sends a heartbeat with its current sequence each
 * second. A subscriber that sees a jump in sequence, a publisher it has not
 * heard before, or silence calls the consumer's re-sync callback; the
 * consumer then reloads the state the events describe over req/rep.
 *
 * Wire: message body = topic bytes, one NUL, packed EventEnvelope (see
 * proto/events.proto).
 */
#ifndef MAGNETAR_EVENTS_H
#define MAGNETAR_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#define EVENTS_TOPIC_HEARTBEAT "heartbeat"
#define EVENTS_TOPIC_MAX 64

/* ---- publisher --------------------------------------------------------- */

struct events_pub;

/* Listens on `url` (its first entry) and starts the heartbeat (every
 * heartbeat_ms; 0 = 1000) and the listener's self-check.
 * `publisher` is copied (a random instance id, at most 64 bytes). */
int events_pub_open(const char *url, const char *publisher, int heartbeat_ms,
                    struct events_pub **out);

/* Publishes one event with the next sequence number. Never blocks: a full
 * buffer drops the message, which subscribers then detect as a gap.
 * 0, ERR_INVAL (topic empty, too long, or contains NUL) or ERR_NOMEM. */
int events_publish(struct events_pub *p, const char *topic, const void *payload, size_t len);

/* The last sequence number assigned (0 before the first event). */
uint64_t events_pub_sequence(struct events_pub *p);

/* How often the publisher listened again: every 500 ms it checks that its
 * listener still takes new subscribers within 500 ms (nng 1.5's listener
 * stall, docs/reliability.md) and re-listens when it does not. */
uint64_t events_pub_relistens(struct events_pub *p);

/* Called before the process exits because a publisher can listen no more
 * (svc counts it as a watchdog exit). NULL: none. */
void events_set_exit_hook(void (*fn)(void));

/* Stops the heartbeat and closes. Accepts NULL. */
void events_pub_close(struct events_pub *p);

/* ---- subscriber -------------------------------------------------------- */

enum events_resync_reason {
	EVENTS_RESYNC_NEW_PUBLISHER, /* first word from this publisher instance */
	EVENTS_RESYNC_GAP,           /* a sequence number was skipped */
	EVENTS_RESYNC_SILENCE,       /* nothing heard for silence_ms */
};

struct events_handlers {
	/* One event, in order per publisher. Runs on the subscriber's thread. */
	void (*on_event)(const char *publisher, uint64_t seq, const char *topic,
	                 const uint8_t *payload, size_t len, void *arg);
	/* The consumer must reload its state. `publisher` is NULL on silence. */
	void (*on_resync)(const char *publisher, enum events_resync_reason why, void *arg);
	void *arg;
};

struct events_sub;

/* Dials `url` (in the background); on_event gets only events whose topic
 * starts with one of the NULL-terminated prefixes (NULL = everything), but
 * sequence numbers are tracked over all of the publisher's topics.
 * silence_ms: how long without any message before EVENTS_RESYNC_SILENCE
 * (0 = 3000); reported again each silence_ms while it lasts.
 * server_roles: who may publish to us (rpc.h roles, checked with
 * rpc_peer_is on an ipc:// publisher's uid before any message is read;
 * SVC_SERVER_ROLES(svc) for a service's publisher; 0: anyone). A publisher
 * outside them (a process holding the socket's name) is hung up on and
 * counted in `refused`: it could otherwise fake events and heartbeats. */
int events_sub_open(const char *url, const char *const *topics, int silence_ms,
                    unsigned server_roles, const struct events_handlers *h,
                    struct events_sub **out);

/* Stops the thread and closes. No callback runs after it returns. */
void events_sub_close(struct events_sub *s);

/* When (clock_mono_ms) anything was last heard from `publisher`, 0 if
 * never, or if a connection to a publisher dropped since (until the next
 * message, which shows any gap): a consumer holding state loaded from that publisher knows the
 * state is current only while this is recent. Any thread. */
uint64_t events_sub_heard_ms(struct events_sub *s, const char *publisher);

struct events_sub_stats {
	uint64_t events, heartbeats, gaps, new_publishers, silences, malformed, refused;
};
void events_sub_get_stats(struct events_sub *s, struct events_sub_stats *st);

#endif
