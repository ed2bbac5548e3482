/*
 * events_fuzz.c — what an event subscriber (common/events.c) does with the
 * messages a publisher sends: the gateway's authn.c and the terminal's
 * revoke.c learn of revoked sessions this way, so loss detection must hold
 * for any byte sequence. A real subscriber (events_sub_open, its thread and
 * events_handle) dials an nng pub socket of the harness on inproc://; each
 * input is a burst of messages published on it, followed by a sentinel
 * event the harness waits for, so the burst is fully handled before the
 * next input.
 *
 * Input: records, at most 32. A record's first byte b: bit 0 clear, the next
 * byte is a length and that many bytes are published as they are (topic,
 * NUL, EventEnvelope, or anything). Bit 0 set, a well-formed message is
 * built: publisher (b >> 1) & 3 of four (the last one too long), topic
 * (b >> 3) & 7 of eight (heartbeat, the auth topics, a topic nobody wants,
 * "", one of 64 bytes), bit 6 makes the envelope's topic differ from the
 * body's, and the next byte moves the publisher's sequence by -128..127
 * (so gaps, repeats and reordering are easy); then a length-prefixed
 * payload.
 *
 * Invariants (checked in the callbacks): an event delivered has a non-empty
 * publisher of at most 64 bytes, a wanted topic and a sequence above the
 * last one delivered for that publisher since it was (re)announced by a
 * NEW_PUBLISHER re-sync; a gap's re-sync comes before the event after it.
 */
#include <nng/nng.h>
#include <nng/protocol/pubsub0/pub.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/events.h"
#include "events.pb-c.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_URL "inproc://fuzz-events"
#define FZ_MAX_MSGS 32
#define FZ_NPUB 8

static nng_socket pub;
static struct events_sub *sub;
static FILE *report;
static uint64_t sentinel_seq;
static _Atomic uint64_t sentinel_seen;
/* The sentinel's publisher; a new one if an input forged the old one's. */
static char sentinel_id[32] = "fuzz-sentinel-0";
static unsigned sentinel_gen;

/* What the harness saw delivered, per publisher (a small table). */
static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
	char id[80];
	uint64_t last;
	bool used;
} seen[FZ_NPUB * 2];
static uint64_t sent_seq[FZ_NPUB]; /* the harness's sequence per built publisher */

static const char *const topics[] = {"session.", "keys.", "user.", "zz.", NULL};

static void die(const char *what)
{
	fprintf(report, "events_fuzz: %s\n", what);
	fflush(report);
	abort();
}

static int seen_slot(const char *id)
{
	int free_slot = -1;
	for (int i = 0; i < FZ_NPUB * 2; i++) {
		if (seen[i].used && strcmp(seen[i].id, id) == 0)
			return i;
		if (!seen[i].used && free_slot < 0)
			free_slot = i;
	}
	if (free_slot < 0)
		free_slot = (int)(clock_mono_us() % (FZ_NPUB * 2)); /* forget one */
	snprintf(seen[free_slot].id, sizeof(seen[free_slot].id), "%s", id);
	seen[free_slot].last = 0;
	seen[free_slot].used = true;
	return free_slot;
}

static void on_event(const char *publisher, uint64_t seq, const char *topic, const uint8_t *payload,
                     size_t len, void *arg)
{
	bool wanted = false;
	int i;
	(void)payload;
	(void)len;
	(void)arg;

	if (publisher == NULL || publisher[0] == '\0' || strlen(publisher) > 64)
		die("an event with no publisher or one longer than 64 bytes was delivered");
	for (size_t k = 0; topics[k] != NULL; k++)
		wanted |= strncmp(topic, topics[k], strlen(topics[k])) == 0;
	if (!wanted)
		die("an event of a topic nobody subscribed to was delivered");
	pthread_mutex_lock(&seen_mu);
	i = seen_slot(publisher);
	if (seen[i].last != 0 && seq <= seen[i].last) {
		pthread_mutex_unlock(&seen_mu);
		die("an event was delivered twice or out of order");
	}
	seen[i].last = seq;
	if (strcmp(publisher, sentinel_id) == 0 && strcmp(topic, "zz.sentinel") == 0)
		atomic_store(&sentinel_seen, seq);
	pthread_mutex_unlock(&seen_mu);
}

static void on_resync(const char *publisher, enum events_resync_reason why, void *arg)
{
	(void)arg;
	if (why != EVENTS_RESYNC_NEW_PUBLISHER && why != EVENTS_RESYNC_GAP &&
	    why != EVENTS_RESYNC_SILENCE)
		die("an unknown re-sync reason");
	if (why == EVENTS_RESYNC_NEW_PUBLISHER && publisher != NULL) {
		/* Announced anew (first sight, or evicted and back): its
		 * sequence starts over from here. */
		pthread_mutex_lock(&seen_mu);
		seen[seen_slot(publisher)].last = 0;
		pthread_mutex_unlock(&seen_mu);
	}
}

/* topic, NUL, packed envelope. */
static int publish(const char *body_topic, const char *publisher, uint64_t seq, const char *topic,
                   const uint8_t *payload, size_t plen)
{
	Magnetar__EventEnvelope env = MAGNETAR__EVENT_ENVELOPE__INIT;
	size_t tlen = strlen(body_topic), len;
	nng_msg *msg;

	env.publisher = (char *)publisher;
	env.sequence = seq;
	env.topic = (char *)topic;
	env.time_unix_ms = 1764300000000ull;
	env.payload.data = (uint8_t *)payload;
	env.payload.len = plen;
	len = magnetar__event_envelope__get_packed_size(&env);
	if (nng_msg_alloc(&msg, tlen + 1 + len) != 0)
		return -1;
	memcpy(nng_msg_body(msg), body_topic, tlen + 1);
	magnetar__event_envelope__pack(&env, (uint8_t *)nng_msg_body(msg) + tlen + 1);
	if (nng_sendmsg(pub, msg, 0) != 0) {
		nng_msg_free(msg);
		return -1;
	}
	return 0;
}

/* Publishes a sentinel and waits for it: everything before it is handled. */
static bool sync_sentinel(int wait_ms)
{
	uint64_t want = ++sentinel_seq, until = clock_mono_ms() + (uint64_t)wait_ms;
	char id[32];

	pthread_mutex_lock(&seen_mu);
	memcpy(id, sentinel_id, sizeof(id));
	pthread_mutex_unlock(&seen_mu);
	if (publish("zz.sentinel", id, want, "zz.sentinel", NULL, 0) != 0)
		return false;
	while (atomic_load(&sentinel_seen) != want) {
		if (clock_mono_ms() >= until)
			return false;
		usleep(50);
	}
	return true;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct events_handlers h = {on_event, on_resync, NULL};
	int fd = dup(STDERR_FILENO);

	(void)argc;
	(void)argv;
	report = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (report == NULL)
		report = stderr;
	if (nng_pub0_open(&pub) != 0 || nng_socket_set_int(pub, NNG_OPT_SENDBUF, 256) != 0 ||
	    nng_listen(pub, FZ_URL, NULL, 0) != 0)
		die("cannot listen");
	/* Silence is not what is fuzzed here: a minute. */
	if (events_sub_open(FZ_URL, topics, 60000, 0, &h, &sub) != 0)
		die("cannot subscribe");
	for (int i = 0; i < 200 && !sync_sentinel(10); i++)
		;
	if (atomic_load(&sentinel_seen) == 0)
		die("the subscriber never connected");
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const pubs[4] = {
	    "auth-1", "auth-2", "0123456789012345678901234567890123456789012345678901234567890123",
	    "01234567890123456789012345678901234567890123456789012345678901234"};
	static const char *const tops[8] = {
	    "heartbeat",
	    "session.revoked",
	    "session.rebound",
	    "keys.rotated",
	    "user.changed",
	    "other.topic",
	    "",
	    "session.0123456789012345678901234567890123456789012345678901234567"};
	size_t i = 0;
	int n = 0;

	while (i < size && n < FZ_MAX_MSGS) {
		uint8_t b = data[i++];
		if ((b & 1) == 0) {
			size_t len = i < size ? data[i++] : 0;
			nng_msg *msg;
			if (len > size - i)
				len = size - i;
			if (nng_msg_alloc(&msg, len) != 0)
				break;
			memcpy(nng_msg_body(msg), data + i, len);
			if (nng_sendmsg(pub, msg, 0) != 0)
				nng_msg_free(msg);
			i += len;
		} else {
			int p = (b >> 1) & 3;
			const char *topic = tops[(b >> 3) & 7];
			const char *body_topic = (b & 0x40) ? "session.revoked" : topic;
			int8_t delta = i < size ? (int8_t)data[i++] : 1;
			size_t plen = i < size ? data[i++] : 0;
			if (plen > size - i)
				plen = size - i;
			sent_seq[p] += (uint64_t)(int64_t)delta;
			publish(body_topic, pubs[p], sent_seq[p], topic, data + i, plen);
			i += plen;
		}
		n++;
	}
	/* A burst the subscriber dropped (its buffer is full) is what pub/sub
	 * does; the next sentinel then resynchronises. */
	if (sync_sentinel(2000))
		return 0;
	/* Perhaps an input spoke as the sentinel (a higher sequence makes ours
	 * "old"): another publisher id, which the subscriber must then hear. */
	pthread_mutex_lock(&seen_mu);
	snprintf(sentinel_id, sizeof(sentinel_id), "fuzz-sentinel-%u", ++sentinel_gen);
	pthread_mutex_unlock(&seen_mu);
	if (!sync_sentinel(2000) && !sync_sentinel(2000))
		die("the subscriber stopped handling messages");
	return 0;
}
