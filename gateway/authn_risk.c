/*
 * authn_risk.c — session risk on the gateway's side (docs/api.md "Session
 * risk"): each request scored against the session's fingerprint hashes
 * without an RPC, and a non-zero score reported to auth (ReportRisk) once
 * per session and score; auth records and audits it, and ends the session
 * at ≥ 90. authn_require_flags (authn.c) refuses the request itself.
 */
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.pb-c.h"
#include "common/fingerprint.h"
#include "common/jwt.h"
#include "common/siphash.h"
#include "gateway/authn.h"
#include "gateway/gateway.h"

void authn_fingerprint(struct http_request *req, char *buf, size_t len)
{
	static const char *const headers[] = {
	    "Accept-Language",  "Accept-Encoding",    "Sec-CH-UA",
	    "Sec-CH-UA-Mobile", "Sec-CH-UA-Platform",
	};
	size_t used = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
		const char *v = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, headers[i]);
		int n =
		    snprintf(buf + used, len - used, "%s%s", i > 0 ? "\n" : "", v != NULL ? v : "");
		if (n < 0 || (size_t)n >= len - used)
			return; /* bounded: the header limit already caps it */
		used += (size_t)n;
	}
}

static bool authn_differs(const char *a, const char *b)
{
	return strlen(a) != 32 || strlen(b) != 32 || CRYPTO_memcmp(a, b, 32) != 0;
}

static bool authn_memo_hit(const struct authn_risk_memo *m, uint64_t ctx, const char *fip,
                           const char *fua, const char *fhd)
{
	return m->used && m->ctx_hash == ctx && strcmp(m->binding[0], fip) == 0 &&
	       strcmp(m->binding[1], fua) == 0 && strcmp(m->binding[2], fhd) == 0;
}

/* Integer hundredths, never floats: 0.5f + 0.2f >= 0.7f is false in C.
 * The three HMACs are skipped when the same binding was last scored in the
 * same request context (same IP, UA and headers): the score depends on
 * nothing else. */
unsigned authn_score(struct authn *a, struct http_request *req, const char *fip, const char *fua,
                     const char *fhd)
{
	char ip[INET6_ADDRSTRLEN], hd[1024], h[33];
	const char *ua =
	    MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_USER_AGENT);
	struct authn_risk_memo *m;
	uint64_t ctx, parts[3];
	unsigned score = 0;
	bool hit;

	if (ua == NULL)
		ua = "";
	http_client_ip(req, ip);
	authn_fingerprint(req, hd, sizeof(hd));
	/* Keyed: with an unkeyed hash a thief of the token could craft headers
	 * whose context hashes like the owner's and inherit its cached score. */
	parts[0] = siphash24(a->sk, ip, strlen(ip));
	parts[1] = siphash24(a->sk, ua, strlen(ua));
	parts[2] = siphash24(a->sk, hd, strlen(hd));
	ctx = siphash24(a->sk, parts, sizeof(parts));
	m = &a->risk[ctx % AUTHN_RISK_SLOTS];
	pthread_mutex_lock(&a->risk_mu);
	hit = authn_memo_hit(m, ctx, fip, fua, fhd);
	if (hit)
		score = m->score;
	pthread_mutex_unlock(&a->risk_mu);
	if (hit)
		return score;
	fingerprint_hash(a->fp_key, "ip", ip, h);
	score += authn_differs(h, fip) ? AUTHN_W_IP : 0;
	fingerprint_hash(a->fp_key, "ua", ua, h);
	score += authn_differs(h, fua) ? AUTHN_W_UA : 0;
	fingerprint_hash(a->fp_key, "hd", hd, h);
	score += authn_differs(h, fhd) ? AUTHN_W_HD : 0;
	pthread_mutex_lock(&a->risk_mu);
	m->ctx_hash = ctx;
	snprintf(m->binding[0], 33, "%s", fip);
	snprintf(m->binding[1], 33, "%s", fua);
	snprintf(m->binding[2], 33, "%s", fhd);
	m->score = score;
	m->used = true;
	pthread_mutex_unlock(&a->risk_mu);
	return score;
}

struct authn_pending_report {
	struct authn *a;
	char sid[AUTHN_SID_LEN];
};

static void authn_reported(struct rpc_result *r, void *arg)
{
	struct authn_pending_report *p = arg;
	(void)r; /* auth records, audits and (≥ 90) revokes */
	/* A /me cached while the report was on its way shows the old score. */
	authn_me_drop(p->a, p->sid);
	free(p);
}

/* Tells auth about a non-zero score once per (session, score). */
void authn_report(struct authn *a, struct http_request *req, const struct jwt_claims *c,
                  unsigned score)
{
	Magnetar__RiskReport in = MAGNETAR__RISK_REPORT__INIT;
	Magnetar__SessionRef ref = MAGNETAR__SESSION_REF__INIT;
	Magnetar__RequestContext ctx = MAGNETAR__REQUEST_CONTEXT__INIT;
	size_t slot = authn_hash(a, c->sid) % AUTHN_REPORTED;
	struct authn_pending_report *p;
	char ip[INET6_ADDRSTRLEN];
	bool fresh;

	pthread_mutex_lock(&a->report_mu);
	fresh = strcmp(a->reported[slot].sid, c->sid) != 0 || a->reported[slot].score != score;
	if (fresh && strlen(c->sid) < AUTHN_SID_LEN) {
		strcpy(a->reported[slot].sid, c->sid);
		a->reported[slot].score = score;
	}
	pthread_mutex_unlock(&a->report_mu);
	if (!fresh || strlen(c->sid) >= AUTHN_SID_LEN)
		return;
	authn_me_drop(a, c->sid); /* its risk_score changes */
	http_client_ip(req, ip);
	ctx.request_id = req->id;
	ctx.client_ip = ip;
	ctx.user_agent = "";
	ctx.actor = (char *)c->sub;
	ref.user_id = (char *)c->sub;
	ref.session_id = (char *)c->sid;
	in.session = &ref;
	in.score = score;
	if ((p = calloc(1, sizeof(*p))) != NULL) {
		p->a = a;
		memcpy(p->sid, c->sid, strlen(c->sid) + 1); /* fits: checked above */
		if (rpc_call_async(a->gw->client[SVC_AUTH], &magnetar__auth__descriptor,
		                   "ReportRisk", &in.base, &ctx, 2000, authn_reported, p) == 0)
			return;
		free(p);
	}
	/* Not sent: not reported either, so the next request tries again. */
	pthread_mutex_lock(&a->report_mu);
	if (strcmp(a->reported[slot].sid, c->sid) == 0 && a->reported[slot].score == score)
		a->reported[slot].sid[0] = '\0';
	pthread_mutex_unlock(&a->report_mu);
}

/* A session with a non-zero risk score reported: its /me is not cached,
 * since a score recorded after a cached answer would stay invisible. */
bool authn_risky(struct authn *a, const char *sid)
{
	size_t slot = authn_hash(a, sid) % AUTHN_REPORTED;
	bool risky;
	pthread_mutex_lock(&a->report_mu);
	risky = strcmp(a->reported[slot].sid, sid) == 0 && a->reported[slot].score > 0;
	pthread_mutex_unlock(&a->report_mu);
	return risky;
}
