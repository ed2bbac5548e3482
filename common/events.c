/*
 * events.c — pub/sub with sequence numbers, heartbeats and gap detection
 * (events.h). One thread per publisher (heartbeat) and per subscriber
 * (receive loop); both are tiny and make the timing logic easy to follow.
 */
#include "common/events.h"

#include <nng/nng.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/pubsub0/sub.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/rpc.h"
#include "events.pb-c.h"

#define EVENTS_BUF 8192 /* FACTS.md: no loss at 50k/s with 1024–8192 */
#define EVENTS_MAX_MSG (256 * 1024)
#define EVENTS_MAX_PUBLISHERS 64
#define EVENTS_PUBLISHER_MAX 64

/* ---- publisher --------------------------------------------------------- */

struct events_pub {
	nng_socket sock;
	pthread_mutex_t mu; /* orders sequence assignment with the send */
	pthread_cond_t cv;
	uint64_t seq;
	bool closing;
	int heartbeat_ms;
	pthread_t hb_thread;
	char publisher[EVENTS_PUBLISHER_MAX + 1];
};

static bool events_topic_ok(const char *topic)
{
	size_t n = strlen(topic);
	return n > 0 && n <= EVENTS_TOPIC_MAX;
}

/* Packs and sends; caller holds p->mu. */
static int events_send_locked(struct events_pub *p, const char *topic, uint64_t seq,
                              const void *payload, size_t len)
{
	Magnetar__EventEnvelope env = MAGNETAR__EVENT_ENVELOPE__INIT;
	size_t tlen = strlen(topic), elen;
	nng_msg *msg;

	env.publisher = p->publisher;
	env.sequence = seq;
	env.topic = (char *)topic;
	env.time_unix_ms = clock_unix_ms();
	env.payload.data = (uint8_t *)payload;
	env.payload.len = len;
	elen = magnetar__event_envelope__get_packed_size(&env);
	if (nng_msg_alloc(&msg, tlen + 1 + elen) != 0)
		return ERR_NOMEM;
	memcpy(nng_msg_body(msg), topic, tlen + 1);
	magnetar__event_envelope__pack(&env, (uint8_t *)nng_msg_body(msg) + tlen + 1);
	if (nng_sendmsg(p->sock, msg, NNG_FLAG_NONBLOCK) != 0)
		nng_msg_free(msg); /* dropped: subscribers see the gap */
	return 0;
}

static void *events_heartbeat_main(void *arg)
{
	struct events_pub *p = arg;
	Magnetar__Heartbeat hb = MAGNETAR__HEARTBEAT__INIT;
	uint8_t buf[16];
	struct timespec until;

	pthread_mutex_lock(&p->mu);
	while (!p->closing) {
		hb.sequence = p->seq;
		size_t n = magnetar__heartbeat__pack(&hb, buf);
		events_send_locked(p, EVENTS_TOPIC_HEARTBEAT, p->seq, buf, n);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += p->heartbeat_ms / 1000;
		until.tv_nsec += (long)(p->heartbeat_ms % 1000) * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		while (!p->closing && pthread_cond_timedwait(&p->cv, &p->mu, &until) == 0)
			;
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* Pipe-add: a subscriber outside the publisher's allow-list (rpc.h peer
 * policy) is hung up on; events may name users and sessions. */
static void events_pipe_cb(nng_pipe pipe, nng_pipe_ev ev, void *arg)
{
	uint64_t uid;
	(void)ev;
	(void)arg;
	if (nng_pipe_get_uint64(pipe, NNG_OPT_IPC_PEER_UID, &uid) == 0 &&
	    !rpc_peer_admitted((uid_t)uid, true))
		nng_pipe_close(pipe);
}

int events_pub_open(const char *url, const char *publisher, int heartbeat_ms,
                    struct events_pub **out)
{
	struct events_pub *p;
	int nv;

	if (strlen(publisher) == 0 || strlen(publisher) > EVENTS_PUBLISHER_MAX)
		return ERR_INVAL;
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return ERR_NOMEM;
	strcpy(p->publisher, publisher);
	p->heartbeat_ms = heartbeat_ms > 0 ? heartbeat_ms : 1000;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	if ((nv = nng_pub0_open(&p->sock)) != 0)
		goto fail;
	nng_socket_set_int(p->sock, NNG_OPT_SENDBUF, EVENTS_BUF);
	nng_socket_set_size(p->sock, NNG_OPT_RECVMAXSZ, 1024);
	if ((nv = rpc_listen(p->sock, url, events_pipe_cb, p)) != 0) {
		log_warnx("events: cannot listen on %s: %s", url, nng_strerror(nv));
		nng_close(p->sock);
		goto fail;
	}
	if (pthread_create(&p->hb_thread, NULL, events_heartbeat_main, p) != 0) {
		nng_close(p->sock);
		goto fail;
	}
	*out = p;
	return 0;
fail:
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
	return ERR_IO;
}

int events_publish(struct events_pub *p, const char *topic, const void *payload, size_t len)
{
	int rv;
	if (!events_topic_ok(topic) || strcmp(topic, EVENTS_TOPIC_HEARTBEAT) == 0)
		return ERR_INVAL;
	pthread_mutex_lock(&p->mu);
	p->seq++;
	rv = events_send_locked(p, topic, p->seq, payload, len);
	pthread_mutex_unlock(&p->mu);
	return rv;
}

uint64_t events_pub_sequence(struct events_pub *p)
{
	uint64_t s;
	pthread_mutex_lock(&p->mu);
	s = p->seq;
	pthread_mutex_unlock(&p->mu);
	return s;
}

void events_pub_close(struct events_pub *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->closing = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	pthread_join(p->hb_thread, NULL);
	nng_close(p->sock);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

/* ---- subscriber -------------------------------------------------------- */

struct events_peer {
	char id[EVENTS_PUBLISHER_MAX + 1];
	uint64_t last_seq;
	uint64_t last_heard_ms;
};

struct events_sub {
	nng_socket sock;
	struct rpc_dials dials; /* re-dialled after a uid drop (rpc.h) */
	struct events_handlers h;
	char **topics; /* NULL-terminated prefixes; NULL = all */
	int silence_ms;
	_Atomic bool closing;
	pthread_t thread;
	struct events_peer peers[EVENTS_MAX_PUBLISHERS];
	size_t npeers;
	uint64_t last_heard_ms;
	bool silent; /* a silence was reported and nothing heard since */
	pthread_mutex_t stats_mu;
	struct events_sub_stats stats;
};

static void events_count(struct events_sub *s, uint64_t *field)
{
	pthread_mutex_lock(&s->stats_mu);
	(*field)++;
	pthread_mutex_unlock(&s->stats_mu);
}

/* Finds the publisher's record; on first sight makes one, evicting the
 * longest-silent one when full (a restarted publisher has a new id). */
static struct events_peer *events_peer(struct events_sub *s, const char *id, bool *fresh)
{
	size_t oldest = 0;
	*fresh = false;
	for (size_t i = 0; i < s->npeers; i++) {
		if (strcmp(s->peers[i].id, id) == 0)
			return &s->peers[i];
		if (s->peers[i].last_heard_ms < s->peers[oldest].last_heard_ms)
			oldest = i;
	}
	*fresh = true;
	if (s->npeers < EVENTS_MAX_PUBLISHERS)
		oldest = s->npeers++;
	memset(&s->peers[oldest], 0, sizeof(s->peers[oldest]));
	snprintf(s->peers[oldest].id, sizeof(s->peers[oldest].id), "%s", id);
	return &s->peers[oldest];
}

static bool events_wanted(const struct events_sub *s, const char *topic)
{
	if (s->topics == NULL)
		return true;
	for (size_t i = 0; s->topics[i] != NULL; i++)
		if (strncmp(topic, s->topics[i], strlen(s->topics[i])) == 0)
			return true;
	return false;
}

static void events_free_topics(char **topics)
{
	if (topics == NULL)
		return;
	for (size_t i = 0; topics[i] != NULL; i++)
		free(topics[i]);
	free(topics);
}

static void events_handle(struct events_sub *s, nng_msg *msg)
{
	const uint8_t *body = nng_msg_body(msg);
	size_t len = nng_msg_len(msg);
	const uint8_t *nul =
	    memchr(body, '\0', len < EVENTS_TOPIC_MAX + 1 ? len : EVENTS_TOPIC_MAX + 1);
	Magnetar__EventEnvelope *env = NULL;
	struct events_peer *peer;
	bool fresh, heartbeat;
	uint64_t seq, now = clock_mono_ms();

	if (nul == NULL)
		goto malformed;
	env = magnetar__event_envelope__unpack(NULL, len - (size_t)(nul - body) - 1, nul + 1);
	if (env == NULL || env->publisher == NULL || env->publisher[0] == '\0' ||
	    strlen(env->publisher) > EVENTS_PUBLISHER_MAX || env->topic == NULL ||
	    strcmp(env->topic, (const char *)body) != 0)
		goto malformed;
	heartbeat = strcmp(env->topic, EVENTS_TOPIC_HEARTBEAT) == 0;
	seq = env->sequence;
	if (!heartbeat && seq == 0)
		goto malformed; /* sequences start at 1 */
	s->last_heard_ms = now;
	s->silent = false;
	peer = events_peer(s, env->publisher, &fresh);
	peer->last_heard_ms = now;
	if (fresh) {
		events_count(s, &s->stats.new_publishers);
		/* Heard mid-stream: what came before is unknown, so reload. */
		s->h.on_resync(env->publisher, EVENTS_RESYNC_NEW_PUBLISHER, s->h.arg);
		peer->last_seq = heartbeat ? seq : seq - 1;
	}
	if (heartbeat) {
		events_count(s, &s->stats.heartbeats);
		if (seq > peer->last_seq) {
			events_count(s, &s->stats.gaps);
			s->h.on_resync(env->publisher, EVENTS_RESYNC_GAP, s->h.arg);
			peer->last_seq = seq;
		}
	} else if (seq <= peer->last_seq) {
		/* Old or repeated: already covered. */
	} else {
		if (seq != peer->last_seq + 1) {
			events_count(s, &s->stats.gaps);
			s->h.on_resync(env->publisher, EVENTS_RESYNC_GAP, s->h.arg);
		}
		peer->last_seq = seq;
		events_count(s, &s->stats.events);
		if (events_wanted(s, env->topic))
			s->h.on_event(env->publisher, seq, env->topic, env->payload.data,
			              env->payload.len, s->h.arg);
	}
	magnetar__event_envelope__free_unpacked(env, NULL);
	return;
malformed:
	events_count(s, &s->stats.malformed);
	if (env != NULL)
		magnetar__event_envelope__free_unpacked(env, NULL);
}

static void *events_sub_main(void *arg)
{
	struct events_sub *s = arg;
	s->last_heard_ms = clock_mono_ms();
	while (!atomic_load(&s->closing)) {
		nng_msg *msg;
		int nv = nng_recvmsg(s->sock, &msg, 0);
		if (nv == 0) {
			events_handle(s, msg);
			nng_msg_free(msg);
		} else if (nv == NNG_ECLOSED) {
			break;
		}
		if (!s->silent && clock_mono_ms() - s->last_heard_ms >= (uint64_t)s->silence_ms) {
			s->silent = true;
			events_count(s, &s->stats.silences);
			s->h.on_resync(NULL, EVENTS_RESYNC_SILENCE, s->h.arg);
		}
	}
	return NULL;
}

/* Tells the re-dial (rpc.h) when this subscriber is connected. */
static void events_sub_pipe_cb(nng_pipe pipe, nng_pipe_ev ev, void *arg)
{
	struct events_sub *s = arg;
	rpc_dials_pipe_event(&s->dials, pipe, ev);
}

int events_sub_open(const char *url, const char *const *topics, int silence_ms,
                    const struct events_handlers *h, struct events_sub **out)
{
	struct events_sub *s;
	int nv;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return ERR_NOMEM;
	s->h = *h;
	s->silence_ms = silence_ms > 0 ? silence_ms : 3000;
	pthread_mutex_init(&s->stats_mu, NULL);
	if (topics != NULL) {
		size_t n = 0;
		while (topics[n] != NULL)
			n++;
		if ((s->topics = calloc(n + 1, sizeof(char *))) == NULL)
			goto fail;
		for (size_t i = 0; i < n; i++)
			if ((s->topics[i] = strdup(topics[i])) == NULL)
				goto fail;
	}
	if (nng_sub0_open(&s->sock) != 0)
		goto fail;
	nng_socket_set_int(s->sock, NNG_OPT_RECVBUF, EVENTS_BUF);
	nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, EVENTS_MAX_MSG);
	/* Wake at least 10 times a silence window to notice silence on time. */
	nng_socket_set_ms(s->sock, NNG_OPT_RECVTIMEO,
	                  s->silence_ms / 10 > 0 ? s->silence_ms / 10 : 1);
	nng_socket_set_ms(s->sock, NNG_OPT_RECONNMINT, 20);
	nng_socket_set_ms(s->sock, NNG_OPT_RECONNMAXT, 200);
	/* Everything is received and topics are filtered here, not by nng: one
	 * sequence spans all of a publisher's topics, so a subscriber that let
	 * nng drop the topics it does not want would see a gap at each one. */
	nng_socket_set(s->sock, NNG_OPT_SUB_SUBSCRIBE, "", 0);
	nng_pipe_notify(s->sock, NNG_PIPE_EV_ADD_POST, events_sub_pipe_cb, s);
	nng_pipe_notify(s->sock, NNG_PIPE_EV_REM_POST, events_sub_pipe_cb, s);
	if ((nv = rpc_dials_start(&s->dials, s->sock, url, NULL, NULL)) != 0) {
		log_warnx("events: cannot dial %s: %s", url, nng_strerror(nv));
		nng_close(s->sock);
		goto fail;
	}
	if (pthread_create(&s->thread, NULL, events_sub_main, s) != 0) {
		rpc_dials_stop(&s->dials);
		nng_close(s->sock);
		goto fail;
	}
	*out = s;
	return 0;
fail:
	events_free_topics(s->topics);
	pthread_mutex_destroy(&s->stats_mu);
	free(s);
	return ERR_IO;
}

void events_sub_close(struct events_sub *s)
{
	if (s == NULL)
		return;
	atomic_store(&s->closing, true);
	rpc_dials_stop(&s->dials);
	nng_close(s->sock);
	pthread_join(s->thread, NULL);
	events_free_topics(s->topics);
	pthread_mutex_destroy(&s->stats_mu);
	free(s);
}

void events_sub_get_stats(struct events_sub *s, struct events_sub_stats *st)
{
	pthread_mutex_lock(&s->stats_mu);
	*st = s->stats;
	pthread_mutex_unlock(&s->stats_mu);
}
