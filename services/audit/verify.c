/*
 * verify.c — the Verify method: walks every record of one snapshot and
 * checks, in order, that ids have no gap, epochs follow the heads, every
 * field's GCM tag verifies under its key id, every record links to the one
 * before, every record of the open epoch carries the chain key's MAC, every
 * head is signed by its epoch's key (certified by the head before, the
 * first by the genesis), and that the log ends where the MAC'ed tip says.
 * Reports the first bad record id and why (docs/audit.md, "Verify").
 */
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/ids.h"
#include "common/log.h"
#include "services/audit/audit.h"

struct verify_ctx {
	struct audit_state *st;
	struct crypto *c;
	struct chain_ctx *cc;     /* keyed with run.mac_key */
	struct chain_secrets run; /* the open epoch's secrets at the snapshot, evolved
	                           * across the heads that follow it */
	struct store_tip tip;
	uint64_t expected, epoch, epoch_first, last_id;
	unsigned char prev[AUDIT_HASH];
	unsigned char pub[AUDIT_PUB];
	bool have_pub;
	const char *anchor;
	char plain[AUDIT_FIELD_MAX + 1];
	char detail[256];
	Magnetar__VerifyReply *out;
	bool found;   /* a finding is in out (a break, or the one that stopped the walk) */
	bool stopped; /* the walk stopped at a finding */
	int error;    /* a failure to verify at all (not a finding) */
};

static int verify_bad(struct verify_ctx *v, uint64_t id, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The first finding is the one reported; one found after a break (which
 * does not stop the walk) is added to the detail. */
static void verify_note(struct verify_ctx *v, uint64_t id, const char *reason, const char *fmt,
                        va_list ap) __attribute__((format(printf, 4, 0)));

static void verify_note(struct verify_ctx *v, uint64_t id, const char *reason, const char *fmt,
                        va_list ap)
{
	char more[200];

	if (v->found) {
		size_t n = strlen(v->detail);
		vsnprintf(more, sizeof(more), fmt, ap);
		snprintf(v->detail + n, sizeof(v->detail) - n, "; then %s at record %llu: %s",
		         reason, (unsigned long long)id, more);
		return;
	}
	vsnprintf(v->detail, sizeof(v->detail), fmt, ap);
	v->found = true;
	v->out->ok = false;
	v->out->first_bad_id = id;
	v->out->reason = (char *)reason;
	v->out->detail = v->detail;
}

static int verify_bad(struct verify_ctx *v, uint64_t id, const char *reason, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	verify_note(v, id, reason, fmt, ap);
	va_end(ap);
	v->stopped = true;
	return 1; /* stops the walk */
}

/* A finding audit recorded at start; the walk goes on past it. */
static void verify_finding(struct verify_ctx *v, uint64_t id, const char *reason, const char *fmt,
                           ...) __attribute__((format(printf, 4, 5)));

static void verify_finding(struct verify_ctx *v, uint64_t id, const char *reason, const char *fmt,
                           ...)
{
	va_list ap;
	va_start(ap, fmt);
	verify_note(v, id, reason, fmt, ap);
	va_end(ap);
}

/* A break record: ids it skips are the gap right before it. */
static bool verify_break_skips(const struct audit_rec *r, uint64_t expected)
{
	struct chain_break b;
	return r->kind == AUDIT_KIND_BREAK && r->id > expected &&
	       chain_break_decode(r->body, r->body_len, &b) == 0 && b.skipped == r->id - expected;
}

/* A break that moves the log on to a later epoch (whole epochs were cut). */
static bool verify_break_jumps(const struct audit_rec *r, uint64_t epoch)
{
	struct chain_break b;
	return r->kind == AUDIT_KIND_BREAK && chain_break_decode(r->body, r->body_len, &b) == 0 &&
	       b.from_epoch == epoch && b.to_epoch == r->epoch && r->epoch > epoch;
}

static int verify_break(struct verify_ctx *v, const struct audit_rec *r)
{
	struct chain_break b;

	if (chain_break_decode(r->body, r->body_len, &b) != 0 || b.first_bad > r->id ||
	    b.from_epoch != v->epoch || b.to_epoch != r->epoch)
		return verify_bad(v, r->id, "bad_break", "break record %llu does not decode",
		                  (unsigned long long)r->id);
	if (b.to_epoch != b.from_epoch) {
		/* The heads that certified the epochs in between are gone: the
		 * break's key (under the chain key's MAC while its epoch is open)
		 * is what the next head is checked against. */
		v->epoch = b.to_epoch;
		v->epoch_first = r->id;
		memcpy(v->pub, b.pub, AUDIT_PUB);
		v->have_pub = true;
	}
	v->out->breaks++;
	verify_finding(v, b.first_bad, chain_break_reason(b.reason),
	               "audit found this at start and recorded break %llu: %s (tip was record "
	               "%llu; %llu ids skipped)",
	               (unsigned long long)r->id,
	               b.reason == CHAIN_BREAK_TRUNCATED     ? "records were removed from the end"
	               : b.reason == CHAIN_BREAK_MISSING_TIP ? "the tip row was missing"
	               : b.reason == CHAIN_BREAK_AFTER_TIP   ? "records lay past the tip"
	                                                     : "the tip did not match",
	               (unsigned long long)b.tip_id, (unsigned long long)b.skipped);
	return 0;
}

static void verify_snap(const struct store_tip *tip, void *arg)
{
	struct verify_ctx *v = arg;

	if (tip == NULL) {
		/* Hold the secrets still while the snapshot is fixed: a seal commits
		 * before it replaces them, so ours are never newer than the rows. */
		pthread_mutex_lock(&v->st->mu);
		return;
	}
	v->tip = *tip;
	v->run = v->st->secrets;
	pthread_mutex_unlock(&v->st->mu);
	if (chain_ctx_new(v->run.mac_key, &v->cc) != 0)
		v->error = ERR_INTERNAL;
}

static int verify_event(struct verify_ctx *v, const struct audit_rec *r)
{
	const struct audit_key *k = keyring_find(&v->st->keys, r->key_id);
	int rv;

	if (k == NULL)
		return verify_bad(v, r->id, "unknown_key",
		                  "record %llu names a key id that is not in the keyring",
		                  (unsigned long long)r->id);
	for (int f = 0; f < AUDIT_NFIELDS; f++) {
		rv = crypto_open(v->c, k, r->id, (enum audit_field)f, r->field[f], r->field_len[f],
		                 v->plain);
		OPENSSL_cleanse(v->plain, sizeof(v->plain));
		if (rv == ERR_PERM)
			return verify_bad(v, r->id, "decrypt_failed",
			                  "record %llu: field %s fails its GCM tag (altered, moved "
			                  "from another row or field, or a changed key id)",
			                  (unsigned long long)r->id, crypto_field_names[f]);
		if (rv != 0) {
			v->error = rv;
			return 1;
		}
	}
	v->out->events++;
	return 0;
}

static int verify_genesis(struct verify_ctx *v, const struct audit_rec *r)
{
	struct chain_genesis g;
	unsigned char fp[AUDIT_HASH];
	char hex[2 * AUDIT_HASH + 1];

	if (chain_genesis_decode(r->body, r->body_len, &g) != 0)
		return verify_bad(v, r->id, "bad_genesis", "the genesis record does not decode");
	memcpy(v->pub, g.pub, AUDIT_PUB);
	v->have_pub = true;
	crypto_sha256(g.pub, AUDIT_PUB, fp);
	ids_hex(hex, fp, AUDIT_HASH);
	v->out->genesis_fingerprint = strdup(hex);
	if (v->anchor != NULL && v->anchor[0] != '\0' && strcmp(v->anchor, hex) != 0)
		return verify_bad(v, r->id, "anchor_mismatch",
		                  "the genesis public key is not the anchor kept off the box: the "
		                  "log was replaced");
	return 0;
}

static int verify_head(struct verify_ctx *v, const struct audit_rec *r)
{
	struct chain_head h;

	if (chain_head_decode(r->body, r->body_len, &h) != 0)
		return verify_bad(v, r->id, "bad_head", "head %llu does not decode",
		                  (unsigned long long)r->id);
	if (h.epoch != v->epoch || h.first_id != v->epoch_first || h.records != r->id ||
	    memcmp(h.prev, v->prev, AUDIT_HASH) != 0)
		return verify_bad(v, r->id, "head_mismatch",
		                  "head %llu does not describe the records before it (epoch %llu, "
		                  "records %llu..%llu)",
		                  (unsigned long long)r->id, (unsigned long long)v->epoch,
		                  (unsigned long long)v->epoch_first, (unsigned long long)r->id);
	if (!v->have_pub || !chain_sig_ok(v->pub, r->body, r->body_len, r->sig, r->sig_len))
		return verify_bad(v, r->id, "bad_signature",
		                  "head %llu is not signed by epoch %llu's key",
		                  (unsigned long long)r->id, (unsigned long long)v->epoch);
	memcpy(v->pub, h.next_pub, AUDIT_PUB);
	v->out->sealed_epochs++;
	return 0;
}

static int verify_row(const struct audit_rec *row, void *arg)
{
	struct verify_ctx *v = arg;
	struct audit_rec r = *row;
	unsigned char link[AUDIT_HASH], mac[AUDIT_HASH];
	int rv;

	if (v->error != 0)
		return 1;
	if (r.id != v->expected && !verify_break_skips(&r, v->expected))
		return verify_bad(v, v->expected, r.id > v->expected ? "missing_record" : "bad_id",
		                  "record %llu is missing (the next is %llu)",
		                  (unsigned long long)v->expected, (unsigned long long)r.id);
	if ((r.id == 1) != (r.kind == AUDIT_KIND_GENESIS) ||
	    (r.kind != AUDIT_KIND_EVENT && r.kind != AUDIT_KIND_HEAD &&
	     r.kind != AUDIT_KIND_GENESIS && r.kind != AUDIT_KIND_BREAK))
		return verify_bad(v, r.id, "bad_kind", "record %llu has the wrong kind",
		                  (unsigned long long)r.id);
	if (r.epoch != v->epoch && !verify_break_jumps(&r, v->epoch))
		return verify_bad(v, r.id, "wrong_epoch", "record %llu claims epoch %llu, not %llu",
		                  (unsigned long long)r.id, (unsigned long long)r.epoch,
		                  (unsigned long long)v->epoch);
	if (r.kind == AUDIT_KIND_EVENT && (rv = verify_event(v, &r)) != 0)
		return rv;
	if ((rv = crypto_content(v->c, &r)) != 0 ||
	    (rv = chain_link(v->cc, v->prev, r.content, link)) != 0) {
		v->error = rv;
		return 1;
	}
	if (CRYPTO_memcmp(link, r.hash, AUDIT_HASH) != 0)
		return verify_bad(v, r.id, "chain_mismatch",
		                  "record %llu does not link to the record before it (altered, "
		                  "inserted or reordered)",
		                  (unsigned long long)r.id);
	if (r.epoch == v->run.epoch) {
		if ((rv = chain_mac(v->cc, "rec", r.id, r.hash, mac)) != 0) {
			v->error = rv;
			return 1;
		}
		if (CRYPTO_memcmp(mac, r.mac, AUDIT_HASH) != 0)
			return verify_bad(
			    v, r.id, "bad_mac",
			    "record %llu lacks the chain key's MAC (rewritten without "
			    "the key)",
			    (unsigned long long)r.id);
		v->out->macs_checked++;
	}
	if (r.kind == AUDIT_KIND_GENESIS && (rv = verify_genesis(v, &r)) != 0)
		return rv;
	if (r.kind == AUDIT_KIND_BREAK && (rv = verify_break(v, &r)) != 0)
		return rv;
	if (r.kind == AUDIT_KIND_HEAD) {
		if ((rv = verify_head(v, &r)) != 0)
			return rv;
		if (v->run.epoch == v->epoch) {
			/* We hold this epoch's key (a seal raced the snapshot): follow. */
			struct chain_ctx *cc;
			if ((rv = chain_evolve(&v->run, &v->run)) != 0 ||
			    (rv = chain_ctx_new(v->run.mac_key, &cc)) != 0) {
				v->error = rv;
				return 1;
			}
			chain_ctx_free(v->cc);
			v->cc = cc;
		}
		v->epoch++;
		v->epoch_first = r.id + 1;
	}
	memcpy(v->prev, r.hash, AUDIT_HASH);
	v->last_id = r.id;
	v->expected = r.id + 1;
	v->out->records++;
	return 0;
}

/* The end of the log: the tip (MAC'ed) and the secrets name where it ends. */
static void verify_end(struct verify_ctx *v)
{
	unsigned char mac[AUDIT_HASH];
	const struct store_tip *t = &v->tip;

	if (!t->has_tip) {
		if (v->last_id > 0)
			verify_bad(v, v->last_id, "missing_tip", "the chain tip record is missing");
		return;
	}
	if (t->id > v->last_id) {
		verify_bad(v, v->last_id + 1, "truncated",
		           "records %llu..%llu are missing from the end",
		           (unsigned long long)v->last_id + 1, (unsigned long long)t->id);
		return;
	}
	if (t->id < v->last_id) {
		verify_bad(v, t->id + 1, "after_tip",
		           "record %llu and after were added past the tip",
		           (unsigned long long)t->id + 1);
		return;
	}
	if (v->run.epoch > v->epoch) {
		verify_bad(v, v->last_id + 1, "truncated",
		           "the log ends in epoch %llu but its keys are at epoch %llu: sealed "
		           "epochs were removed",
		           (unsigned long long)v->epoch, (unsigned long long)v->run.epoch);
		return;
	}
	if (CRYPTO_memcmp(t->hash, v->prev, AUDIT_HASH) != 0 || t->epoch != v->epoch) {
		verify_bad(v, t->id, "tip_mismatch", "the chain tip does not match record %llu",
		           (unsigned long long)t->id);
		return;
	}
	if (t->epoch == v->run.epoch && (chain_mac(v->cc, "tip", t->id, t->hash, mac) != 0 ||
	                                 CRYPTO_memcmp(mac, t->mac, AUDIT_HASH) != 0))
		verify_bad(v, t->id, "bad_tip_mac", "the chain tip lacks the chain key's MAC");
}

int verify_run(struct audit_state *st, const char *anchor_hex, Magnetar__VerifyReply *out)
{
	struct verify_ctx *v = calloc(1, sizeof(*v));
	int rv;

	if (v == NULL)
		return ERR_NOMEM;
	out->ok = true;
	v->st = st;
	v->out = out;
	v->anchor = anchor_hex;
	v->expected = 1;
	v->epoch_first = 1;
	if ((v->c = crypto_get(st->crypto)) == NULL) {
		free(v);
		return ERR_NOMEM;
	}
	rv = store_walk(st->pool, verify_snap, verify_row, v);
	if (rv == 1)
		rv = 0;
	if (rv == 0 && v->error != 0)
		rv = v->error;
	if (rv == 0 && !v->stopped)
		verify_end(v);
	out->current_epoch = v->epoch;
	if (!out->ok) {
		/* The detail lives in v: copy it out before v goes. */
		out->detail = strdup(v->detail);
		log_warnx("verify: record %llu is bad: %s", (unsigned long long)out->first_bad_id,
		          out->reason);
	}
	chain_ctx_free(v->cc);
	crypto_put(st->crypto, v->c);
	OPENSSL_cleanse(v, sizeof(*v));
	free(v);
	return rv;
}

void verify_handle(struct rpc_call *call, const ProtobufCMessage *input, void *arg)
{
	const Magnetar__VerifyRequest *req = (const Magnetar__VerifyRequest *)input;
	Magnetar__VerifyReply out = MAGNETAR__VERIFY_REPLY__INIT;
	struct audit_state *st = append_state(arg);
	int rv;

	if (st == NULL) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_UNAVAILABLE, "unavailable",
		                "the audit log is not open");
		return;
	}
	if ((rv = verify_run(st, req->anchor, &out)) != 0) {
		log_warnx("verify: cannot walk the log request_id=%s: %s",
		          rpc_call_request_id(call), err_str(rv));
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_UNAVAILABLE, "store_failed",
		                "the audit store could not be read");
	} else {
		rpc_reply(call, &out.base);
	}
	verify_reply_fini(&out);
}

void verify_reply_fini(Magnetar__VerifyReply *out)
{
	if (out->detail != (char *)protobuf_c_empty_string)
		free(out->detail);
	if (out->genesis_fingerprint != (char *)protobuf_c_empty_string)
		free(out->genesis_fingerprint);
	out->detail = (char *)protobuf_c_empty_string;
	out->genesis_fingerprint = (char *)protobuf_c_empty_string;
}
