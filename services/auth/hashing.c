/*
 * hashing.c — the hand-off to auth's bounded `hashing` pool. Every method
 * that hashes or verifies a password or checks a code (register, login,
 * password change, step-up, TOTP, password check, user creation) runs whole
 * there, never on an RPC worker: a login flood fills this queue and gets
 * 429 while every other method keeps its workers.
 */
#include <stdlib.h>

#include "common/rpc.h"
#include "common/workq.h"
#include "services/auth/auth.h"

/* Hashing jobs waiting before 429. A queued job holds its RPC context until
 * it is answered, so the bound must leave contexts to every other method:
 * at 64, as many as there are contexts, a login flood filled them all before
 * the queue ever refused one, and Me, Refresh and ListSessions timed out. */
#define HASHING_QUEUE_MAX (RPC_CONTEXTS_DEFAULT / 2)

void hashing_submit(struct rpc_call *call, const ProtobufCMessage *in, void *arg,
                    void (*fn)(struct workq_job *))
{
	struct auth *a = arg;
	struct hashing_job *j = calloc(1, sizeof(*j));
	if (j == NULL) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INTERNAL, "internal",
		                "out of memory");
		return;
	}
	j->job.run = fn;
	j->call = call;
	j->a = a;
	j->in = in;
	if (workq_submit(a->hashing, &j->job, HASHING_QUEUE_MAX) != 0) {
		free(j);
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_RESOURCE_EXHAUSTED,
		                "too_many_attempts", "too many attempts; try again later");
	}
}
