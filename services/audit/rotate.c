/*
 * rotate.c — the RotateKey method. Keys never travel over RPC: the
 * operator adds a key at the END of the keyring file audit was started
 * with (MAGNETAR_AUDIT_KEYS_FILE), and this call re-reads that file, makes
 * its last key current, and seals the open epoch so the chain key and the
 * signing key move on too. A ring may only grow: old records name their key.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "services/audit/audit.h"

int rotate_run(struct audit_state *st, bool generate, Magnetar__RotateKeyReply *out, char *err,
               size_t errlen)
{
	static __thread char prev[AUDIT_KEY_ID_MAX + 1], cur[AUDIT_KEY_ID_MAX + 1];
	struct audit_keyring *next = NULL;
	uint64_t sealed;
	int rv = 0;

	pthread_mutex_lock(&st->keys_mu);
	snprintf(prev, sizeof(prev), "%s", keyring_current(&st->keys)->id);
	if (generate) {
		if (!st->opts.keys_generated || st->opts.keys_path == NULL) {
			snprintf(
			    err, errlen,
			    "audit generates keys only into its own development keyring; add "
			    "the key to the keyring file and call rotate-key without --generate");
			rv = ERR_PERM;
			goto out;
		}
		if ((rv = keyring_generate(st->opts.keys_path, err, errlen)) != 0)
			goto out;
	}
	if (st->opts.keys_path != NULL) {
		if ((next = calloc(1, sizeof(*next))) == NULL) {
			rv = ERR_NOMEM;
			snprintf(err, errlen, "out of memory");
			goto out;
		}
		if ((rv = keyring_load_file(st->opts.keys_path, next, err, errlen)) != 0 ||
		    (rv = keyring_extend(&st->keys, next, err, errlen)) != 0)
			goto out;
	}
	snprintf(cur, sizeof(cur), "%s", keyring_current(&st->keys)->id);
	if (strcmp(cur, prev) != 0)
		log_info("rotate: key %s is now current (was %s)", cur, prev);
	else if (st->opts.keys_path == NULL)
		log_info("rotate: the keyring came from MAGNETAR_AUDIT_KEYS and cannot be re-read; "
		         "key %s stays current, the epoch is sealed",
		         cur);
	pthread_mutex_unlock(&st->keys_mu);
	if ((rv = ingest_seal_now(st, 5000, &sealed)) != 0) {
		snprintf(err, errlen, "the epoch could not be sealed in time");
		goto done;
	}
	out->current_key_id = cur;
	out->previous_key_id = prev;
	out->keys = (uint32_t)keyring_count(&st->keys);
	out->sealed_epoch = sealed;
	goto done;
out:
	pthread_mutex_unlock(&st->keys_mu);
done:
	if (next != NULL) {
		keyring_wipe(next);
		free(next);
	}
	return rv;
}

void rotate_handle(struct rpc_call *call, const ProtobufCMessage *input, void *arg)
{
	const Magnetar__RotateKeyRequest *req = (const Magnetar__RotateKeyRequest *)input;
	Magnetar__RotateKeyReply out = MAGNETAR__ROTATE_KEY_REPLY__INIT;
	struct audit_state *st = append_state(arg);
	char err[256] = "";
	int rv;

	if (st == NULL) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_UNAVAILABLE, "unavailable",
		                "the audit log is not open");
		return;
	}
	rv = rotate_run(st, req->generate, &out, err, sizeof(err));
	if (rv == 0) {
		rpc_reply(call, &out.base);
		return;
	}
	log_warnx("rotate: refused request_id=%s: %s", rpc_call_request_id(call), err);
	rpc_reply_error(call,
	                rv == ERR_TIMEOUT ? MAGNETAR__STATUS__STATUS_UNAVAILABLE
	                : rv == ERR_PERM  ? MAGNETAR__STATUS__STATUS_PERMISSION_DENIED
	                                  : MAGNETAR__STATUS__STATUS_INVALID,
	                rv == ERR_TIMEOUT ? "seal_timeout" : "rotate_refused", err);
}
