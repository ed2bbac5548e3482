/*
 * events_test.c — common/events: in-order delivery from a real publisher
 * with heartbeats, topic filtering without false gaps, and the subscriber's
 * loss detection (a skipped sequence, a heartbeat ahead of the last event,
 * a new publisher, silence) driven by a hand-made publisher that sends
 * exactly the envelopes each case needs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <nng/nng.h>
#include <nng/protocol/pubsub0/pub.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/events.h"
#include "events.pb-c.h"

struct seen {
	pthread_mutex_t mu;
	uint64_t seqs[256];
	char topics[256][32];
	int n;
	int gaps, fresh, silences;
};

static void on_event(const char *pub, uint64_t seq, const char *topic, const uint8_t *payload,
                     size_t len, void *arg)
{
	struct seen *s = arg;
	(void)pub;
	(void)payload;
	(void)len;
	pthread_mutex_lock(&s->mu);
	if (s->n < 256) {
		s->seqs[s->n] = seq;
		snprintf(s->topics[s->n], sizeof(s->topics[0]), "%s", topic);
		s->n++;
	}
	pthread_mutex_unlock(&s->mu);
}

static void on_resync(const char *pub, enum events_resync_reason why, void *arg)
{
	struct seen *s = arg;
	(void)pub;
	pthread_mutex_lock(&s->mu);
	if (why == EVENTS_RESYNC_GAP)
		s->gaps++;
	else if (why == EVENTS_RESYNC_NEW_PUBLISHER)
		s->fresh++;
	else
		s->silences++;
	pthread_mutex_unlock(&s->mu);
}

static int read_int(struct seen *s, int *field)
{
	int v;
	pthread_mutex_lock(&s->mu);
	v = *field;
	pthread_mutex_unlock(&s->mu);
	return v;
}

/* Polls until *field >= want or timeout_ms passes. */
static bool wait_for(struct seen *s, int *field, int want, int timeout_ms)
{
	uint64_t end = clock_mono_ms() + (uint64_t)timeout_ms;
	while (clock_mono_ms() < end) {
		if (read_int(s, field) >= want)
			return true;
		usleep(5000);
	}
	return read_int(s, field) >= want;
}

static struct events_sub *subscribe(const char *url, const char *const *topics, int silence_ms,
                                    struct seen *s)
{
	struct events_handlers h = {on_event, on_resync, s};
	struct events_sub *sub;
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->mu, NULL);
	assert_int_equal(events_sub_open(url, topics, silence_ms, 0, &h, &sub), 0);
	return sub;
}

static void test_real_publisher_in_order(void **state)
{
	struct events_pub *pub;
	struct events_sub *sub;
	struct events_sub_stats st;
	struct seen s;
	const char *topics[] = {"session.", NULL};
	(void)state;

	assert_int_equal(events_pub_open("inproc://ev1", "pubA", 50, &pub), 0);
	sub = subscribe("inproc://ev1", topics, 3000, &s);
	/* Connected once a heartbeat arrives (it also introduces the publisher). */
	assert_true(wait_for(&s, &s.fresh, 1, 2000));
	for (int i = 0; i < 20; i++) {
		/* Every third event is a topic this subscriber does not want. */
		const char *topic = i % 3 == 2 ? "user.changed" : "session.revoked";
		assert_int_equal(events_publish(pub, topic, "x", 1), 0);
	}
	assert_true(wait_for(&s, &s.n, 14, 2000));
	usleep(150 * 1000); /* a few heartbeats more: still no gap */
	assert_int_equal(s.n, 14);
	for (int i = 0, k = 0; i < 20; i++) {
		if (i % 3 == 2)
			continue;
		assert_int_equal(s.seqs[k], (uint64_t)i + 1);
		assert_string_equal(s.topics[k], "session.revoked");
		k++;
	}
	assert_int_equal(read_int(&s, &s.gaps), 0);
	assert_int_equal(events_pub_sequence(pub), 20);
	events_sub_get_stats(sub, &st);
	assert_true(st.heartbeats > 0);
	assert_int_equal(st.gaps, 0);
	/* A topic containing nothing, or the heartbeat's own topic, is refused. */
	assert_int_not_equal(events_publish(pub, "", "x", 1), 0);
	assert_int_not_equal(events_publish(pub, EVENTS_TOPIC_HEARTBEAT, "x", 1), 0);
	events_sub_close(sub);
	events_pub_close(pub);
	pthread_mutex_destroy(&s.mu);
}

/* Sends one hand-made envelope. */
static void raw_send(nng_socket sock, const char *pub, const char *topic, uint64_t seq)
{
	Magnetar__EventEnvelope env = MAGNETAR__EVENT_ENVELOPE__INIT;
	Magnetar__Heartbeat hb = MAGNETAR__HEARTBEAT__INIT;
	uint8_t hbuf[16], buf[512];
	size_t tl = strlen(topic), n;
	env.publisher = (char *)pub;
	env.sequence = seq;
	env.topic = (char *)topic;
	if (strcmp(topic, EVENTS_TOPIC_HEARTBEAT) == 0) {
		hb.sequence = seq;
		env.payload.len = magnetar__heartbeat__pack(&hb, hbuf);
		env.payload.data = hbuf;
	}
	memcpy(buf, topic, tl + 1);
	n = magnetar__event_envelope__pack(&env, buf + tl + 1);
	assert_int_equal(nng_send(sock, buf, tl + 1 + n, 0), 0);
}

static nng_socket raw_pub(const char *url)
{
	nng_socket sock;
	assert_int_equal(nng_pub0_open(&sock), 0);
	assert_int_equal(nng_listen(sock, url, NULL, 0), 0);
	return sock;
}

static void test_gap_detection(void **state)
{
	nng_socket sock = raw_pub("inproc://ev2");
	struct events_sub *sub;
	struct seen s;
	(void)state;

	sub = subscribe("inproc://ev2", NULL, 3000, &s);
	/* Until the pipe is up, messages go nowhere: announce with heartbeats. */
	for (int i = 0; i < 200 && read_int(&s, &s.fresh) == 0; i++) {
		raw_send(sock, "P1", EVENTS_TOPIC_HEARTBEAT, 0);
		usleep(5000);
	}
	assert_int_equal(read_int(&s, &s.fresh), 1);
	raw_send(sock, "P1", "a", 1);
	raw_send(sock, "P1", "a", 2);
	raw_send(sock, "P1", "a", 4); /* 3 was lost */
	assert_true(wait_for(&s, &s.n, 3, 1000));
	assert_int_equal(read_int(&s, &s.gaps), 1);
	/* A repeated or old event is ignored, not a gap. */
	raw_send(sock, "P1", "a", 4);
	raw_send(sock, "P1", "a", 2);
	/* A heartbeat ahead of the last event: the events between were lost. */
	raw_send(sock, "P1", EVENTS_TOPIC_HEARTBEAT, 6);
	assert_true(wait_for(&s, &s.gaps, 2, 1000));
	/* Continuing after the heartbeat's sequence is fine. */
	raw_send(sock, "P1", "a", 7);
	assert_true(wait_for(&s, &s.n, 4, 1000));
	assert_int_equal(read_int(&s, &s.gaps), 2);
	assert_int_equal(s.seqs[3], 7);
	/* A new publisher instance (a restarted service) asks for a re-sync. */
	raw_send(sock, "P2", "a", 5);
	assert_true(wait_for(&s, &s.fresh, 2, 1000));
	assert_true(wait_for(&s, &s.n, 5, 1000));
	assert_int_equal(read_int(&s, &s.gaps), 2);
	events_sub_close(sub);
	nng_close(sock);
	pthread_mutex_destroy(&s.mu);
}

static void test_silence(void **state)
{
	nng_socket sock = raw_pub("inproc://ev3");
	struct events_sub *sub;
	struct seen s;
	uint64_t t0;
	(void)state;

	sub = subscribe("inproc://ev3", NULL, 300, &s);
	for (int i = 0; i < 200 && read_int(&s, &s.fresh) == 0; i++) {
		raw_send(sock, "P1", EVENTS_TOPIC_HEARTBEAT, 0);
		usleep(5000);
	}
	t0 = clock_mono_ms();
	assert_true(wait_for(&s, &s.silences, 1, 2000));
	assert_true(clock_mono_ms() - t0 >= 250);
	/* Reported once per silence window, not on every wake-up (each 30 ms)... */
	usleep(150 * 1000);
	assert_int_equal(read_int(&s, &s.silences), 1);
	/* ... but again each window while it lasts: a consumer that re-synced
	 * meanwhile must not take itself for current. */
	assert_true(wait_for(&s, &s.silences, 2, 2000));
	assert_true(events_sub_heard_ms(sub, "P1") != 0);
	assert_true(clock_mono_ms() - events_sub_heard_ms(sub, "P1") >= 300);
	assert_int_equal(events_sub_heard_ms(sub, "P2"), 0);
	/* Heard again, then silent again: reported again. */
	raw_send(sock, "P1", EVENTS_TOPIC_HEARTBEAT, 0);
	assert_true(wait_for(&s, &s.silences, 3, 2000));
	events_sub_close(sub);
	nng_close(sock);
	pthread_mutex_destroy(&s.mu);
}

static void test_malformed_ignored(void **state)
{
	nng_socket sock = raw_pub("inproc://ev4");
	struct events_sub *sub;
	struct events_sub_stats st;
	struct seen s;
	static const char junk[] = "a\0\xff\xff\xff\xff\xff";
	(void)state;

	sub = subscribe("inproc://ev4", NULL, 3000, &s);
	for (int i = 0; i < 200 && read_int(&s, &s.fresh) == 0; i++) {
		raw_send(sock, "P1", EVENTS_TOPIC_HEARTBEAT, 0);
		usleep(5000);
	}
	assert_int_equal(nng_send(sock, (void *)junk, sizeof(junk), 0), 0);
	assert_int_equal(nng_send(sock, "no-nul-at-all", 13, 0), 0);
	raw_send(sock, "P1", "a", 0); /* sequence 0 is not a sequence */
	raw_send(sock, "P1", "a", 1);
	assert_true(wait_for(&s, &s.n, 1, 1000));
	events_sub_get_stats(sub, &st);
	assert_int_equal(st.malformed, 3);
	assert_int_equal(read_int(&s, &s.gaps), 0);
	events_sub_close(sub);
	nng_close(sock);
	pthread_mutex_destroy(&s.mu);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_real_publisher_in_order),
	    cmocka_unit_test(test_gap_detection),
	    cmocka_unit_test(test_silence),
	    cmocka_unit_test(test_malformed_ignored),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
