/*
 * risk.c — session risk (docs/api.md "Session risk", docs/architecture.md, "Security model"). The
 * gateway scores each request against the session's fingerprint hashes
 * without an RPC and reports non-zero scores here: auth records the score,
 * audits every decision, and terminates the session at ≥ 90. A step-up
 * (password, or TOTP once enrolled) re-binds the session to the request's
 * values and tells every gateway with a session.rebound event.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/fingerprint.h"
#include "common/log.h"
#include "common/outbox.h"
#include "services/auth/auth.h"

void risk_hashes(struct auth *a, const struct store_session *s, char fip[33], char fua[33],
                 char fhd[33])
{
	fingerprint_hash(a->fp_key, "ip", s->ip, fip);
	fingerprint_hash(a->fp_key, "ua", s->user_agent, fua);
	fingerprint_hash(a->fp_key, "hd", s->fingerprint, fhd);
}

void risk_report(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	const Magnetar__RiskReport *req = (const Magnetar__RiskReport *)in;
	const Magnetar__RequestContext *ctx = rpc_call_context(call);
	Magnetar__RiskReply out = MAGNETAR__RISK_REPLY__INIT;
	struct auth *a = arg;
	struct store_session s;
	struct store_tx *tx;
	char detail[64];
	bool terminate;
	int rv;

	if (req->session == NULL || req->score == 0 || req->score > 100 ||
	    store_session_get(a->svc.pool, req->session->session_id, &s) != 0 ||
	    strcmp(s.user_id, req->session->user_id) != 0) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INVALID, "invalid_request",
		                "no such session or score");
		return;
	}
	terminate = req->score >= RISK_TERMINATE && s.revoked_ms == 0;
	snprintf(detail, sizeof(detail), "score=%u", req->score);
	if ((rv = store_begin(a, &tx)) == 0) {
		rv = store_session_risk(tx, s.id, req->score);
		if (rv == 0 && req->score >= RISK_ANOMALY)
			rv = store_audit(tx, "session.anomaly", s.user_id, s.id, ctx, "detected",
			                 detail);
		if (rv == 0 && req->score >= RISK_STEP_UP && !terminate)
			rv = store_audit(tx, "session.step_up_required", s.user_id, s.id, ctx,
			                 "challenged", detail);
		if (rv == 0 && terminate) {
			rv = store_session_revoke(tx, s.id, clock_unix_ms());
			if (rv == 0)
				rv = store_audit(tx, "session.revoked", s.user_id, s.id, ctx,
				                 "success", "reason=risk");
		}
		rv = store_end(tx, rv);
	}
	if (rv != 0) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INTERNAL, "internal",
		                "the score could not be recorded");
		return;
	}
	if (terminate)
		tokens_publish_revoked(a, s.id, s.user_id, "risk");
	out.terminated = terminate;
	rpc_reply(call, &out.base);
}

static void risk_publish_rebound(struct auth *a, const struct store_session *s)
{
	Magnetar__SessionEvent ev = MAGNETAR__SESSION_EVENT__INIT;
	char fip[33], fua[33], fhd[33], tag[33];
	uint8_t buf[512];

	/* A live session by tag only: its id would let a gateway act as it. */
	risk_hashes(a, s, fip, fua, fhd);
	fingerprint_hash(a->fp_key, "sid", s->id, tag);
	ev.session_tag = tag;
	ev.reason = "step_up";
	ev.fip = fip;
	ev.fua = fua;
	ev.fhd = fhd;
	if (magnetar__session_event__get_packed_size(&ev) <= sizeof(buf))
		events_publish(a->events, "session.rebound", buf,
		               magnetar__session_event__pack(&ev, buf));
}

static void risk_step_up_job(struct workq_job *job)
{
	struct hashing_job *j = (struct hashing_job *)job;
	const Magnetar__StepUpRequest *req = (const Magnetar__StepUpRequest *)j->in;
	const Magnetar__RequestContext *ctx = rpc_call_context(j->call);
	Magnetar__Empty out = MAGNETAR__EMPTY__INIT;
	struct store_session s;
	struct store_user u;
	struct store_tx *tx;
	uint64_t now = clock_unix_ms();
	int rv;

	memset(&u, 0, sizeof(u));
	if (store_session_get(j->a->svc.pool, req->session_id, &s) != 0 ||
	    strcmp(s.user_id, req->user_id) != 0 || s.revoked_ms != 0 ||
	    store_user_by_id(j->a->svc.pool, req->user_id, &u) != 0) {
		rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_UNAUTHENTICATED, "unauthorized",
		                "the session has ended");
		goto out;
	}
	if (throttle_refused(j->call, u.id))
		goto out;
	/* TOTP when enrolled; the password only where no TOTP is (docs/api.md). */
	if (u.totp_enabled
	        ? totp_verify(j->a, u.id, req->totp, false) != 0
	        : (req->password[0] == '\0' ||
	           password_check(j->a, u.id, req->password, strlen(req->password)) != 0)) {
		/* A guess, counted like a failed login: a stolen token in the
		 * step-up band must not try passwords or the 10^6 codes freely.
		 * An absent secret is no guess (login's totp_required neither). */
		if ((u.totp_enabled ? req->totp : req->password)[0] != '\0')
			throttle_failed(u.id, ctx->client_ip);
		if (store_begin(j->a, &tx) == 0)
			store_end(tx,
			          store_audit(tx, "session.step_up", u.id, s.id, ctx, "failure",
			                      u.totp_enabled ? "totp_required" : "wrong_password"));
		rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_UNAUTHENTICATED,
		                u.totp_enabled ? "invalid_totp" : "invalid_credentials",
		                "the step-up was refused");
		goto out;
	}
	snprintf(s.ip, sizeof(s.ip), "%s", ctx->client_ip);
	snprintf(s.user_agent, sizeof(s.user_agent), "%s", ctx->user_agent);
	snprintf(s.fingerprint, sizeof(s.fingerprint), "%s", req->fingerprint);
	if ((rv = store_begin(j->a, &tx)) == 0) {
		rv = store_session_rebind(tx, &s, now);
		if (rv == 0)
			rv = store_audit(tx, "session.step_up", u.id, s.id, ctx, "success",
			                 "rebound");
		rv = store_end(tx, rv);
	}
	if (rv != 0) {
		rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_INTERNAL, "internal",
		                "the session could not be re-bound");
		goto out;
	}
	risk_publish_rebound(j->a, &s);
	rpc_reply(j->call, &out.base);
out:
	free(j);
}

void risk_step_up(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	hashing_submit(call, in, arg, risk_step_up_job);
}
