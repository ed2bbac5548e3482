/*
 * append.c — the Append method: validates a batch from a producer's outbox
 * and stores it. The producer's identity is the IPC peer uid when there is
 * one (a producer cannot claim to be another uid), and only otherwise the
 * name it claims, so nobody pre-empts another producer's sequence numbers.
 */
#include <stdio.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "services/audit/audit.h"

#define APPEND_MAX_EVENTS 1024
#define APPEND_MAX_FIELD 4096
#define APPEND_MAX_NAME 64

static bool append_name_ok(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;
	if (n == 0 || n > APPEND_MAX_NAME)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-' ||
		      s[i] == '_' || s[i] == '.'))
			return false;
	return true;
}

static bool append_field_ok(const char *s)
{
	return s == NULL || strlen(s) <= APPEND_MAX_FIELD;
}

static bool append_event_ok(const Magnetar__AuditEvent *e)
{
	return e->sequence > 0 && append_name_ok(e->action) && append_field_ok(e->actor) &&
	       append_field_ok(e->target) && append_field_ok(e->ip) &&
	       append_field_ok(e->request_id) && append_field_ok(e->outcome) &&
	       append_field_ok(e->detail);
}

int append_store(struct audit *a, struct rpc_call *call, const Magnetar__AppendRequest *req,
                 Magnetar__AppendReply *out)
{
	char source[80];
	uid_t uid;

	if (!append_name_ok(req->source) || !append_name_ok(req->instance) ||
	    req->n_events > APPEND_MAX_EVENTS)
		return ERR_INVAL;
	for (size_t i = 0; i < req->n_events; i++)
		if (!append_event_ok(req->events[i]))
			return ERR_INVAL;
	if (rpc_call_peer_uid(call, &uid) == 0)
		snprintf(source, sizeof(source), "uid:%u", (unsigned)uid);
	else
		snprintf(source, sizeof(source), "name:%s", req->source);
	return store_append(a->svc.pool, source, req->source, req->instance, req->events,
	                    req->n_events, &out->stored, &out->duplicates);
}

void append_handle(struct rpc_call *call, const ProtobufCMessage *input, void *arg)
{
	Magnetar__AppendReply out = MAGNETAR__APPEND_REPLY__INIT;
	int rv = append_store(arg, call, (const Magnetar__AppendRequest *)input, &out);

	if (rv == ERR_INVAL) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INVALID, "invalid_request",
		                "the batch or one of its events is malformed");
	} else if (rv != 0) {
		log_warnx("append: cannot store batch request_id=%s: %s", rpc_call_request_id(call),
		          err_str(rv));
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_UNAVAILABLE, "store_failed",
		                "the audit store could not take the batch");
	} else {
		rpc_reply(call, &out.base);
	}
}
