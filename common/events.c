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
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/sp_probe.h"
#include "events.pb-c.h"

#define EVENTS_BUF 8192 /* docs/dependencies.md: no loss at 50k/s with 1024–8192 */
#define EVENTS_MAX_MSG (256 * 1024)
#define EVENTS_MAX_PUBLISHERS 64
#define EVENTS_PUBLISHER_MAX 64
#define EVENTS_ACCEPT_MS 500 /* the self-check's connection must be taken by then */
#define EVENTS_CHECK_MS 500  /* how often the publisher checks its listener */

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
	/* The heartbeat thread alone checks and replaces the listener. */
	char url[512];
	nng_listener listener;
	_Atomic uint64_t pipes, relistens, unhealed;
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

/* Whether our listener takes a new connection within EVENTS_ACCEPT_MS:
 * nng 1.5.2's listener stall (issue 1518, docs/reliability.md) leaves the
 * subscribers already connected working and refuses every new one, so only
 * a new connection proves anything. The probe is a plain socket speaking
 * SP as a subscriber (sp_probe.h: an nng socket that received heartbeats,
 * closed every 500 ms, is the churn that wedges nng 1.5's reaper); it is
 * closed once counted, after the handshake. */
static bool events_pub_accepts(struct events_pub *p)
{
	const struct timespec tick = {.tv_nsec = 2000000};
	uint64_t before = atomic_load(&p->pipes), until = clock_mono_ms() + EVENTS_ACCEPT_MS;
	struct sp_probe probe;
	bool ok = true;
	int rv;

	rv = sp_probe_open(&probe, p->url, SP_PROTO_SUB, SP_PROTO_PUB, EVENTS_ACCEPT_MS);
	if (rv == ERR_INVAL || rv == ERR_NOMEM)
		return true; /* nothing to probe (inproc://), or no memory: not the listener */
	if (rv != 0)
		return false;
	while (atomic_load(&p->pipes) == before) {
		if (clock_mono_ms() >= until) {
			ok = false;
			break;
		}
		nanosleep(&tick, NULL);
	}
	sp_probe_close(&probe);
	return ok;
}

/* Whether a re-listen can bind the name again: on ipc://, only in a dir we
 * may write (nng unlinks the file and binds anew). */
static bool events_pub_can_relisten(const struct events_pub *p)
{
	char dir[sizeof(p->url)], *slash;

	if (strncmp(p->url, "ipc://", 6) != 0)
		return true;
	snprintf(dir, sizeof(dir), "%s", p->url + 6);
	if ((slash = strrchr(dir, '/')) == NULL)
		return true;
	*slash = '\0';
	return access(dir[0] != '\0' ? dir : "/", W_OK) == 0;
}

static void (*_Atomic events_exit_hook)(void);

void events_set_exit_hook(void (*fn)(void))
{
	atomic_store(&events_exit_hook, fn);
}

/* The check, and a re-listen when it fails; a publisher that cannot listen
 * again is no publisher: the process exits to be started again. */
static void events_pub_check(struct events_pub *p)
{
	void (*hook)(void);
	uint64_t n;
	int nv;

	if (events_pub_accepts(p))
		return;
	/* A replica's entry sits in a root-owned dir where we may not bind
	 * again (svc_guard_entries): closing the listener would leave nothing
	 * listening. Keep it: subscribers already connected are served, new
	 * ones treat us as silent (a gateway then asks auth). Said at the
	 * 1st, 2nd, 4th, ... time. */
	if (!events_pub_can_relisten(p)) {
		n = atomic_fetch_add(&p->unhealed, 1) + 1;
		if ((n & (n - 1)) == 0)
			log_warnx(
			    "our events socket %s accepted no connection within %d ms, and its "
			    "dir is not ours to listen again in: new subscribers wait for a "
			    "restart (nng 1.5's listener stall, docs/reliability.md) times=%llu",
			    p->url, EVENTS_ACCEPT_MS, (unsigned long long)n);
		return;
	}
	if ((nv = rpc_listen_again(p->sock, p->url, &p->listener)) != 0 &&
	    (hook = atomic_load(&events_exit_hook)) != NULL)
		hook();
	if (nv != 0)
		fatalx("our events socket %s accepted no connection within %d ms, and we cannot "
		       "listen on it again (%s): exiting to be started again",
		       p->url, EVENTS_ACCEPT_MS, nng_strerror(nv));
	atomic_fetch_add(&p->relistens, 1);
	log_warnx("our events socket %s accepted no connection within %d ms: listening again "
	          "(nng 1.5's listener stall, docs/reliability.md)",
	          p->url, EVENTS_ACCEPT_MS);
}

/* The heartbeat every heartbeat_ms, and the listener's check every
 * EVENTS_CHECK_MS (or with each heartbeat when that is sooner): a stall
 * is noticed within EVENTS_CHECK_MS + EVENTS_ACCEPT_MS. */
static void *events_heartbeat_main(void *arg)
{
	struct events_pub *p = arg;
	Magnetar__Heartbeat hb = MAGNETAR__HEARTBEAT__INIT;
	int step = p->heartbeat_ms < EVENTS_CHECK_MS ? p->heartbeat_ms : EVENTS_CHECK_MS;
	uint64_t beat_due = 0;
	uint8_t buf[16];
	struct timespec until;

	pthread_mutex_lock(&p->mu);
	while (!p->closing) {
		if (clock_mono_ms() >= beat_due) {
			hb.sequence = p->seq;
			size_t n = magnetar__heartbeat__pack(&hb, buf);
			events_send_locked(p, EVENTS_TOPIC_HEARTBEAT, p->seq, buf, n);
			beat_due = clock_mono_ms() + (uint64_t)p->heartbeat_ms;
		}
		/* Unlocked: publishing goes on during the check. */
		pthread_mutex_unlock(&p->mu);
		events_pub_check(p);
		pthread_mutex_lock(&p->mu);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += step / 1000;
		until.tv_nsec += (long)(step % 1000) * 1000000L;
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

/* Pipe-add: counted (the self-check's proof that the listener accepts),
 * then a subscriber outside the publisher's allow-list (rpc.h peer policy)
 * is hung up on; events may name users and sessions. Our own uid is the
 * self-check's probe. */
static void events_pipe_cb(nng_pipe pipe, nng_pipe_ev ev, void *arg)
{
	struct events_pub *p = arg;
	uint64_t uid;
	(void)ev;
	atomic_fetch_add(&p->pipes, 1);
	if (nng_pipe_get_uint64(pipe, NNG_OPT_IPC_PEER_UID, &uid) == 0 &&
	    uid != (uint64_t)geteuid() && !rpc_peer_admitted((uid_t)uid, true))
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
	/* A replica's list: we listen on its first entry (rpc.h). */
	if (rpc_url_first(url, p->url, sizeof(p->url)) != 0) {
		free(p);
		return ERR_INVAL;
	}
	p->heartbeat_ms = heartbeat_ms > 0 ? heartbeat_ms : 1000;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	if ((nv = nng_pub0_open(&p->sock)) != 0)
		goto fail;
	nng_socket_set_int(p->sock, NNG_OPT_SENDBUF, EVENTS_BUF);
	nng_socket_set_size(p->sock, NNG_OPT_RECVMAXSZ, 1024);
	if ((nv = rpc_listen(p->sock, p->url, events_pipe_cb, p, &p->listener)) != 0) {
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

uint64_t events_pub_relistens(struct events_pub *p)
{
	return atomic_load(&p->relistens);
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
	unsigned server_roles; /* who may publish (events_sub_open) */
	_Atomic bool closing;
	pthread_t thread;
	struct events_peer peers[EVENTS_MAX_PUBLISHERS];
	size_t npeers;
	uint64_t last_heard_ms;
	uint64_t silence_told_ms; /* when silence was last reported; 0: not silent */
	pthread_mutex_t stats_mu; /* also the peers' ids and times, for other threads */
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
	s->silence_told_ms = 0;
	pthread_mutex_lock(&s->stats_mu);
	peer = events_peer(s, env->publisher, &fresh);
	pthread_mutex_unlock(&s->stats_mu);
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
	/* Heard only now, after any re-sync it called for: a consumer asking
	 * events_sub_heard_ms never sees it fresh while a gap is unhandled. */
	pthread_mutex_lock(&s->stats_mu);
	peer->last_heard_ms = now;
	pthread_mutex_unlock(&s->stats_mu);
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
		/* Told again every silence window while it lasts: a consumer that
		 * re-synced during the silence (over req/rep, which may work while
		 * pub/sub does not) is still missing whatever is published. */
		uint64_t now = clock_mono_ms();
		if (now - s->last_heard_ms >= (uint64_t)s->silence_ms &&
		    (s->silence_told_ms == 0 ||
		     now - s->silence_told_ms >= (uint64_t)s->silence_ms)) {
			s->silence_told_ms = now;
			events_count(s, &s->stats.silences);
			s->h.on_resync(NULL, EVENTS_RESYNC_SILENCE, s->h.arg);
		}
	}
	return NULL;
}

/* Whether the publisher at the other end of `pipe` may publish to us. */
static bool events_sub_server_ok(const struct events_sub *s, nng_pipe pipe)
{
	uint64_t uid;
	int nv;

	if (s->server_roles == 0)
		return true;
	nv = nng_pipe_get_uint64(pipe, NNG_OPT_IPC_PEER_UID, &uid);
	if (nv == NNG_ENOTSUP)
		return true; /* not ipc:// (tcp://: the network's business) */
	return nv == 0 && (uid == (uint64_t)geteuid() || rpc_peer_is((uid_t)uid, s->server_roles));
}

/* Tells the re-dial (rpc.h) when this subscriber is connected; hangs up,
 * before a message is read, on a publisher that is not who we dialled. */
static void events_sub_pipe_cb(nng_pipe pipe, nng_pipe_ev ev, void *arg)
{
	struct events_sub *s = arg;

	if (ev == NNG_PIPE_EV_ADD_PRE) {
		uint64_t n;
		if (events_sub_server_ok(s, pipe))
			return;
		pthread_mutex_lock(&s->stats_mu);
		n = ++s->stats.refused;
		pthread_mutex_unlock(&s->stats_mu);
		/* The dialer tries again every 20-200 ms: say so at 1, 2, 4, ... */
		if ((n & (n - 1)) == 0)
			log_warnx(
			    "events: closed a connection whose publisher is not the service's "
			    "user (a process holding its socket name?) refused=%llu",
			    (unsigned long long)n);
		/* nng still reports its removal: counted as added, as rpc_client.c
		 * does, so the re-dial's count balances. */
		rpc_dials_pipe_event(&s->dials, pipe, NNG_PIPE_EV_ADD_POST);
		nng_pipe_close(pipe);
		return;
	}
	rpc_dials_pipe_event(&s->dials, pipe, ev);
	/* A connection gone (a publisher's re-listen drops them all): what was
	 * published meanwhile is unknown until the next heartbeat shows the
	 * gap, so nobody counts as heard until then. */
	if (ev == NNG_PIPE_EV_REM_POST) {
		pthread_mutex_lock(&s->stats_mu);
		for (size_t i = 0; i < s->npeers; i++)
			s->peers[i].last_heard_ms = 0;
		pthread_mutex_unlock(&s->stats_mu);
	}
}

int events_sub_open(const char *url, const char *const *topics, int silence_ms,
                    unsigned server_roles, const struct events_handlers *h, struct events_sub **out)
{
	struct events_sub *s;
	int nv;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return ERR_NOMEM;
	s->h = *h;
	s->silence_ms = silence_ms > 0 ? silence_ms : 3000;
	s->server_roles = server_roles;
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
	nng_pipe_notify(s->sock, NNG_PIPE_EV_ADD_PRE, events_sub_pipe_cb, s);
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

uint64_t events_sub_heard_ms(struct events_sub *s, const char *publisher)
{
	uint64_t t = 0;
	pthread_mutex_lock(&s->stats_mu);
	for (size_t i = 0; i < s->npeers; i++)
		if (strcmp(s->peers[i].id, publisher) == 0)
			t = s->peers[i].last_heard_ms;
	pthread_mutex_unlock(&s->stats_mu);
	return t;
}

void events_sub_get_stats(struct events_sub *s, struct events_sub_stats *st)
{
	pthread_mutex_lock(&s->stats_mu);
	*st = s->stats;
	pthread_mutex_unlock(&s->stats_mu);
}
