/*
 * tail.c — live feed: every committed event on topic "audit.appended" and
 * every epoch head on "audit.sealed" (so a verifier can keep the heads off
 * the box), on conf.events_url[SVC_AUDIT] via common/events (sequence numbers,
 * heartbeats, gap detection). Published after the commit, never before.
 */
#include <stdlib.h>
#include <string.h>

#include "common/events.h"
#include "common/log.h"
#include "services/audit/audit.h"

#define TAIL_MAX_RECORDS 256
#define TAIL_MAX_BYTES (192 * 1024) /* under the subscribers' 256 KiB cap */

static char *tail_s(const char *s)
{
	return (char *)(s != NULL ? s : "");
}

static void tail_send(struct audit_state *st, const char *topic, const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(len > 0 ? len : 1);

	if (buf == NULL)
		return; /* a dropped message is a gap the subscriber sees and re-syncs */
	protobuf_c_message_pack(m, buf);
	events_publish(st->pub, topic, buf, len);
	free(buf);
}

void tail_publish_events(struct audit_state *st, const struct audit_rec *recs,
                         const Magnetar__AuditEvent *const *evs, size_t n)
{
	Magnetar__AuditRecord items[TAIL_MAX_RECORDS];
	Magnetar__AuditRecord *ptrs[TAIL_MAX_RECORDS];
	Magnetar__AuditAppended msg = MAGNETAR__AUDIT_APPENDED__INIT;
	size_t k = 0, bytes = 0;

	if (st->pub == NULL)
		return;
	for (size_t i = 0; i <= n; i++) {
		const Magnetar__AuditEvent *e = i < n ? evs[i] : NULL;
		size_t sz = 0;
		if (e != NULL) {
			sz = 160 + strlen(tail_s(e->action)) + strlen(tail_s(e->actor)) +
			     strlen(tail_s(e->target)) + strlen(tail_s(e->ip)) +
			     strlen(tail_s(e->request_id)) + strlen(tail_s(e->outcome)) +
			     strlen(tail_s(e->detail));
		}
		if (k > 0 && (i == n || k == TAIL_MAX_RECORDS || bytes + sz > TAIL_MAX_BYTES)) {
			msg.events = ptrs;
			msg.n_events = k;
			tail_send(st, "audit.appended", &msg.base);
			k = 0;
			bytes = 0;
		}
		if (e == NULL)
			continue; /* the end, or a head between events */
		magnetar__audit_record__init(&items[k]);
		items[k].id = recs[i].id;
		items[k].time_unix_ms = recs[i].time_ms;
		items[k].action = tail_s(e->action);
		items[k].actor = tail_s(e->actor);
		items[k].target = tail_s(e->target);
		items[k].ip = tail_s(e->ip);
		items[k].request_id = tail_s(e->request_id);
		items[k].outcome = tail_s(e->outcome);
		items[k].detail = tail_s(e->detail);
		items[k].source = (char *)recs[i].source;
		items[k].producer = (char *)recs[i].producer;
		items[k].sequence = recs[i].seq;
		items[k].received_unix_ms = recs[i].received_ms;
		items[k].key_id = (char *)recs[i].key_id;
		items[k].epoch = recs[i].epoch;
		ptrs[k] = &items[k];
		k++;
		bytes += sz;
	}
}

void tail_publish_head(struct audit_state *st, const struct audit_rec *head,
                       const struct chain_head *h)
{
	Magnetar__AuditSealed msg = MAGNETAR__AUDIT_SEALED__INIT;

	log_info("sealed epoch %llu: records 1..%llu", (unsigned long long)h->epoch,
	         (unsigned long long)h->records);
	if (st->pub == NULL)
		return;
	msg.id = head->id;
	msg.epoch = h->epoch;
	msg.records = h->records;
	msg.chain_hash.data = (uint8_t *)head->hash;
	msg.chain_hash.len = AUDIT_HASH;
	msg.signature.data = (uint8_t *)head->sig;
	msg.signature.len = head->sig_len;
	msg.next_public_key.data = (uint8_t *)h->next_pub;
	msg.next_public_key.len = AUDIT_PUB;
	tail_send(st, "audit.sealed", &msg.base);
}
