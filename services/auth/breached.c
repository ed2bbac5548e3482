/*
 * breached.c — auth's side of the breach check: the password is hashed
 * here, only the 5-hex SHA-1 prefix goes to magnetar-breach, and the
 * suffixes come back to be compared here in constant time. The fail mode
 * (MAGNETAR_BREACH_FAIL) also applies when breach itself does not answer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "breach.pb-c.h"
#include "common/breach_check.h"
#include "common/err.h"
#include "common/log.h"
#include "services/auth/auth.h"

#define BREACHED_TIMEOUT_MS 3000
#define BREACHED_CONNECT_MS 1000

int breached_check(struct auth *a, const char *pw, size_t len, uint64_t *count, char source[16])
{
	Magnetar__RangeRequest req = MAGNETAR__RANGE_REQUEST__INIT;
	struct breach_check bc;
	struct rpc_result r;
	int rv;

	*count = 0;
	snprintf(source, 16, "unavailable");
	if ((rv = breach_check_init(&bc, pw, len)) != 0)
		return rv;
	req.prefix = bc.prefix;
	memset(&r, 0, sizeof(r));
	/* Not connected: give the dialer a moment (auth may have started just
	 * before breach listened), not the whole deadline of a breach that is down. */
	rv = rpc_call_sync(
	    a->breach, &magnetar__breach__descriptor, "Range", &req.base, NULL,
	    rpc_client_connected(a->breach) ? BREACHED_TIMEOUT_MS : BREACHED_CONNECT_MS, &r);
	if (rv == 0 && r.status == MAGNETAR__STATUS__STATUS_OK) {
		const Magnetar__RangeReply *reply = (const Magnetar__RangeReply *)r.output;
		snprintf(source, 16, "%s", reply->source);
		rv = breach_check_reply(&bc, reply, count);
	} else if (rv == 0 && r.status != MAGNETAR__STATUS__STATUS_UNAVAILABLE &&
	           r.status != MAGNETAR__STATUS__STATUS_DEADLINE_EXCEEDED) {
		rv = ERR_INTERNAL;
	} else {
		/* Breach is down, or up but unable to check in closed mode. */
		log_warnx("breach check unavailable (%s)", rv != 0 ? err_str(rv) : r.code);
		rv = auth_vars(a)->breach_fail_closed ? ERR_UNAVAIL : 0;
	}
	rpc_result_fini(&r);
	breach_check_fini(&bc);
	if (rv != 0)
		*count = 0;
	return rv;
}

void breached_refuse(struct rpc_call *call, uint64_t count)
{
	char msg[160];
	snprintf(msg, sizeof(msg),
	         "This password has been exposed in %llu data breach(es). Please choose a "
	         "different password.",
	         (unsigned long long)count);
	struct rpc_error_extra extra = {.breach_count = count};
	rpc_reply_error_ex(call, MAGNETAR__STATUS__STATUS_INVALID, "password_breached", msg,
	                   &extra);
}

static void breached_job(struct workq_job *job)
{
	struct hashing_job *j = (struct hashing_job *)job;
	const Magnetar__PasswordCheckRequest *req = (const Magnetar__PasswordCheckRequest *)j->in;
	Magnetar__PasswordCheckReply out = MAGNETAR__PASSWORD_CHECK_REPLY__INIT;
	char source[16];
	int rv;

	rv = breached_check(j->a, req->password, strlen(req->password), &out.count, source);
	if (rv == ERR_UNAVAIL) {
		rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_UNAVAILABLE,
		                "breach_check_unavailable", "the password could not be checked");
	} else if (rv != 0) {
		rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_INTERNAL, "internal",
		                "the password could not be checked");
	} else {
		out.breached = out.count > 0;
		out.source = source;
		rpc_reply(j->call, &out.base);
	}
	free(j);
}

void breached_handle(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	const Magnetar__PasswordCheckRequest *req = (const Magnetar__PasswordCheckRequest *)in;
	if (strlen(req->password) > 1024) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INVALID, "invalid_request",
		                "the password is too long to check");
		return;
	}
	hashing_submit(call, in, arg, breached_job);
}
