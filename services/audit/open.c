/*
 * open.c — bringing the log up: the chain secrets file checked against
 * audit.db (and carried forward over a crash between a seal's commit and
 * its file update), the genesis record and off-box anchor of a new log,
 * plaintext rows of schema v1 re-ingested, the Tail publisher, the pipeline.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/events.h"
#include "common/ids.h"
#include "common/log.h"
#include "services/audit/audit.h"

#define OPEN_MAX_CATCH_UP 100000 /* epochs a chain file may be behind the seals */

static int open_refuse(char *err, size_t errlen, int rv, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int open_refuse(char *err, size_t errlen, int rv, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rv;
}

/* The anchor a verifier keeps off the box: the genesis public key's
 * fingerprint (checks every signature) and the initial chain key (checks
 * every record's MAC, sealed epochs included). */
static void open_write_anchor(const char *path, const unsigned char fp[AUDIT_HASH],
                              const unsigned char key0[AUDIT_KEY])
{
	char fphex[2 * AUDIT_HASH + 1], khex[2 * AUDIT_KEY + 1], buf[400];
	int fd, len;

	ids_hex(fphex, fp, AUDIT_HASH);
	ids_hex(khex, key0, AUDIT_KEY);
	len = snprintf(buf, sizeof(buf),
	               "# magnetar-audit trust anchor. Copy this file OFF this host, then delete "
	               "it here:\n# whoever holds initial_chain_key can forge record MACs.\n"
	               "genesis_public_key_sha256 %s\ninitial_chain_key %s\n",
	               fphex, khex);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0 ||
	    write(fd, buf, (size_t)len) != len || fsync(fd) != 0)
		log_warn("genesis: cannot write the trust anchor %s", path);
	else
		log_warnx("genesis: a new audit log began; its trust anchor is %s: copy it off "
		          "this host and delete it (docs/audit.md)",
		          path);
	if (fd >= 0)
		close(fd);
	OPENSSL_cleanse(buf, sizeof(buf));
	OPENSSL_cleanse(khex, sizeof(khex));
}

/* Record 1: epoch 0's public key and the epoch parameters. */
static int open_genesis(struct audit_state *st, const struct chain_secrets *sec)
{
	struct chain_genesis gen = {0};
	unsigned char body[CHAIN_GENESIS_LEN], zero[AUDIT_HASH] = {0}, tipmac[AUDIT_HASH];
	struct audit_rec r = {0};
	struct chain_ctx *cc = NULL;
	struct crypto *c = NULL;
	struct store_tx *tx = NULL;
	char fphex[2 * AUDIT_HASH + 1];
	int rv;

	gen.time_ms = clock_unix_ms();
	gen.epoch_ms = st->opts.epoch_ms;
	gen.epoch_events = st->opts.epoch_events;
	if ((rv = chain_public_key(sec->sign_seed, gen.pub)) != 0)
		return rv;
	chain_genesis_encode(&gen, body);
	r.id = 1;
	r.kind = AUDIT_KIND_GENESIS;
	r.time_ms = r.received_ms = gen.time_ms;
	r.body = body;
	r.body_len = sizeof(body);
	if ((c = crypto_get(st->crypto)) == NULL)
		return ERR_NOMEM;
	if ((rv = crypto_content(c, &r)) != 0 || (rv = chain_ctx_new(sec->mac_key, &cc)) != 0 ||
	    (rv = chain_link(cc, zero, r.content, r.hash)) != 0 ||
	    (rv = chain_mac(cc, "rec", 1, r.hash, r.mac)) != 0 ||
	    (rv = chain_mac(cc, "tip", 1, r.hash, tipmac)) != 0 ||
	    (rv = store_tx_begin(st->pool, &tx)) != 0)
		goto out;
	if ((rv = store_tx_insert(tx, &r)) != 0 ||
	    (rv = store_tx_set_tip(tx, 1, r.hash, 0, tipmac)) != 0) {
		store_tx_rollback(tx);
		goto out;
	}
	if ((rv = store_tx_commit(tx)) != 0)
		goto out;
	crypto_sha256(gen.pub, AUDIT_PUB, st->genesis_fp);
	ids_hex(fphex, st->genesis_fp, AUDIT_HASH);
	log_info("genesis: epoch 0 public key sha256=%s (keep it off this host)", fphex);
	if (st->opts.anchor_path != NULL)
		open_write_anchor(st->opts.anchor_path, st->genesis_fp, sec->mac_key);
out:
	chain_ctx_free(cc);
	crypto_put(st->crypto, c);
	return rv;
}

/* Does audit.db's tip, MAC'ed with the chain file's key, name records past
 * the last one there? Then the file and the database belong together and
 * the records were cut, whole epochs with them: open_check_tip records it. */
static bool open_tip_vouches(struct audit_state *st, const struct chain_secrets *sec,
                             uint64_t last_id)
{
	struct store_tip tip;
	struct chain_ctx *cc;
	unsigned char mac[AUDIT_HASH];
	bool ok = false;

	if (store_tip_read(st->pool, &tip) != 0 || !tip.has_tip || tip.epoch != sec->epoch ||
	    tip.id <= last_id || chain_ctx_new(sec->mac_key, &cc) != 0)
		return false;
	if (chain_mac(cc, "tip", tip.id, tip.hash, mac) == 0)
		ok = CRYPTO_memcmp(mac, tip.mac, AUDIT_HASH) == 0;
	chain_ctx_free(cc);
	if (ok)
		log_warnx("the chain file is at epoch %llu but audit.db's last record %llu is "
		          "of an earlier epoch, and the MAC'ed tip names record %llu: sealed "
		          "epochs were cut from audit.db",
		          (unsigned long long)sec->epoch, (unsigned long long)last_id,
		          (unsigned long long)tip.id);
	return ok;
}

/* Finds the chain secrets that belong with audit.db, or refuses. */
static int open_secrets(struct audit_state *st, const struct store_state *s,
                        struct chain_secrets *sec, char *err, size_t errlen)
{
	const char *path = st->opts.chain_path;
	uint64_t open_epoch = s->open_epoch;
	int rv = path != NULL ? chain_file_read(path, sec) : ERR_NOTFOUND;

	if (rv != 0 && rv != ERR_NOTFOUND)
		return open_refuse(err, errlen, ERR_CONFIG,
		                   "the audit chain file %s cannot be read (%s)", path,
		                   err_str(rv));
	if (s->last_id == 0) {
		if (rv == 0 && sec->epoch != 0 && open_tip_vouches(st, sec, 0))
			return 0;
		if (rv == 0 && sec->epoch != 0)
			return open_refuse(err, errlen, ERR_CONFIG,
			                   "audit.db holds no records but the chain file %s is at "
			                   "epoch %llu: was the log deleted? Move the chain file "
			                   "away to start a new log",
			                   path, (unsigned long long)sec->epoch);
		if (rv == 0) {
			/* The chain file is there and the tip names records: every
			 * record was removed, not a new log. A new genesis under the
			 * same keys would hide it: open_check_tip records the cut. */
			struct store_tip tip;
			if ((rv = store_tip_read(st->pool, &tip)) != 0)
				return open_refuse(err, errlen, rv, "cannot read the chain tip");
			if (tip.has_tip)
				return 0;
			/* No record and no tip: a first start that died before its
			 * genesis committed, or a log emptied of both. Never reuse
			 * the keys: a new genesis key gives a new fingerprint, which
			 * the anchor kept off the box tells from the old log. */
			log_warnx(
			    "audit.db is empty but %s exists: starting a NEW log with new keys "
			    "(if a log was here, it was deleted: its anchor no longer matches)",
			    path);
			rv = ERR_NOTFOUND;
		}
		if (rv == ERR_NOTFOUND) {
			if ((rv = chain_genesis_secrets(sec)) != 0)
				return open_refuse(err, errlen, rv, "cannot draw chain keys");
			if (path != NULL && (rv = chain_file_write(path, sec)) != 0)
				return open_refuse(err, errlen, rv, "cannot write %s", path);
		}
		return open_genesis(st, sec) == 0
		           ? 0
		           : open_refuse(err, errlen, ERR_DB, "cannot write the genesis record");
	}
	if (rv == ERR_NOTFOUND)
		return open_refuse(err, errlen, ERR_CONFIG,
		                   "audit.db holds %llu records but the chain file %s is missing: "
		                   "the chain cannot be continued. Restore the file, or move "
		                   "audit.db away to start a new log",
		                   (unsigned long long)s->last_id, path != NULL ? path : "(none)");
	if (sec->epoch > open_epoch && sec->epoch - open_epoch <= OPEN_MAX_CATCH_UP &&
	    open_tip_vouches(st, sec, s->last_id))
		return 0;
	if (sec->epoch > open_epoch || open_epoch - sec->epoch > OPEN_MAX_CATCH_UP)
		return open_refuse(err, errlen, ERR_CONFIG,
		                   "the chain file %s is at epoch %llu but audit.db's open epoch "
		                   "is %llu: they do not belong together",
		                   path, (unsigned long long)sec->epoch,
		                   (unsigned long long)open_epoch);
	if (sec->epoch < open_epoch) {
		/* Crashed after a seal committed and before the file followed:
		 * the evolution is one-way and deterministic, so catch up. */
		while (sec->epoch < open_epoch)
			if ((rv = chain_evolve(sec, sec)) != 0)
				return open_refuse(err, errlen, rv, "cannot evolve the chain key");
		if ((rv = chain_file_write(path, sec)) != 0)
			return open_refuse(err, errlen, rv, "cannot write %s", path);
		log_warnx("chain file caught up to epoch %llu (a seal was interrupted)",
		          (unsigned long long)sec->epoch);
	}
	return 0;
}

/* The audit event that says a break was recorded, readable through Query
 * like any event (source "self", instance "integrity", sequence = the
 * break's id, so it is stored once). */
static void open_audit_break(struct audit_state *st, const struct chain_break *b, uint64_t id,
                             const char *detail)
{
	Magnetar__AppendRequest req = MAGNETAR__APPEND_REQUEST__INIT;
	Magnetar__AuditEvent ev = MAGNETAR__AUDIT_EVENT__INIT, *evp = &ev;
	Magnetar__AppendReply out = MAGNETAR__APPEND_REPLY__INIT;
	char action[64];
	int rv;

	snprintf(action, sizeof(action), "audit.integrity.%s", chain_break_reason(b->reason));
	ev.sequence = id;
	ev.time_unix_ms = b->time_ms;
	ev.action = action;
	ev.target = "audit.db";
	ev.outcome = "failure";
	ev.detail = (char *)detail;
	req.source = "audit";
	req.instance = "integrity";
	req.n_events = 1;
	req.events = &evp;
	if ((rv = ingest_append_sync(st, "self", &req, &out)) != 0)
		log_warnx("integrity: cannot store the event of break %llu: %s",
		          (unsigned long long)id, err_str(rv));
}

/* A break skips at most this many ids on a tip whose MAC does not verify
 * (a forged tip must not push the ids to the end of the int64 range). */
#define OPEN_MAX_UNVERIFIED_SKIP (1ull << 32)

/*
 * The MAC'ed tip must name the last record exactly. When it does not (rows
 * cut from the end, the tip deleted or rewritten without the key), audit
 * neither refuses to serve nor continues the chain as if nothing happened:
 * it appends a break record saying what it found, skipping the ids the tip
 * names (they are never used again), logs it, and stores an audit event.
 * Verify then reports the break on every run (docs/audit.md, "Breaks").
 */
static int open_check_tip(struct audit_state *st)
{
	struct store_state now, *s = &now;
	struct store_tip tip;
	struct chain_break b = {0};
	struct chain_secrets sec;
	struct chain_ctx *cc = NULL;
	unsigned char mac[AUDIT_HASH];
	char detail[320];
	bool authentic = false;
	uint64_t id = 0;
	int rv;

	if ((rv = store_state(st->pool, s)) != 0 || (rv = store_tip_read(st->pool, &tip)) != 0)
		return rv;
	if (s->last_id == 0 && !tip.has_tip)
		return 0; /* nothing yet (the genesis writes both) */
	pthread_mutex_lock(&st->mu);
	sec = st->secrets;
	pthread_mutex_unlock(&st->mu);
	rv = chain_ctx_new(sec.mac_key, &cc);
	if (rv == 0 && tip.has_tip && tip.epoch == sec.epoch &&
	    (rv = chain_mac(cc, "tip", tip.id, tip.hash, mac)) == 0)
		authentic = CRYPTO_memcmp(mac, tip.mac, AUDIT_HASH) == 0;
	if (rv == 0)
		rv = chain_public_key(sec.sign_seed, b.pub);
	OPENSSL_cleanse(&sec, sizeof(sec));
	chain_ctx_free(cc);
	if (rv != 0)
		return rv;
	b.tip_id = tip.id;
	b.tip_epoch = tip.epoch;
	memcpy(b.tip_hash, tip.hash, AUDIT_HASH);
	b.from_epoch = b.to_epoch = atomic_load(&st->epoch);
	if (!tip.has_tip) {
		b.reason = CHAIN_BREAK_MISSING_TIP;
		b.first_bad = s->last_id + 1;
		snprintf(detail, sizeof(detail),
		         "the chain tip row is missing: records from %llu on may have been "
		         "removed from the end of audit.db",
		         (unsigned long long)b.first_bad);
	} else if (tip.id > s->last_id) {
		b.reason = CHAIN_BREAK_TRUNCATED;
		b.first_bad = s->last_id + 1;
		b.skipped = tip.id - s->last_id;
		if (authentic)
			b.to_epoch = tip.epoch; /* whole epochs cut: go on in the key's */
		if (!authentic && b.skipped > OPEN_MAX_UNVERIFIED_SKIP)
			b.skipped = OPEN_MAX_UNVERIFIED_SKIP;
		snprintf(detail, sizeof(detail),
		         "records %llu..%llu are missing from the end of audit.db (its %s tip "
		         "names record %llu)",
		         (unsigned long long)b.first_bad, (unsigned long long)tip.id,
		         authentic ? "MAC'ed" : "unauthenticated", (unsigned long long)tip.id);
	} else if (tip.id < s->last_id) {
		b.reason = CHAIN_BREAK_AFTER_TIP;
		b.first_bad = tip.id + 1;
		snprintf(detail, sizeof(detail), "records %llu..%llu lie past the chain tip",
		         (unsigned long long)b.first_bad, (unsigned long long)s->last_id);
	} else if (CRYPTO_memcmp(tip.hash, s->last_hash, AUDIT_HASH) != 0 ||
	           tip.epoch != atomic_load(&st->epoch)) {
		b.reason = CHAIN_BREAK_TIP_MISMATCH;
		b.first_bad = tip.id;
		snprintf(detail, sizeof(detail), "the chain tip does not match record %llu",
		         (unsigned long long)tip.id);
	} else if (!authentic) {
		b.reason = CHAIN_BREAK_BAD_TIP_MAC;
		b.first_bad = tip.id;
		snprintf(detail, sizeof(detail), "the chain tip lacks the chain key's MAC");
	} else {
		return 0;
	}
	b.time_ms = clock_unix_ms();
	if ((rv = ingest_break(st->ing, &b, &id)) != 0)
		return rv;
	atomic_fetch_add(&st->breaks, 1);
	log_warnx("integrity: %s: %s; a break record (id %llu) says so in the chain and the log "
	          "continues after it (Verify reports it from now on)",
	          chain_break_reason(b.reason), detail, (unsigned long long)id);
	open_audit_break(st, &b, id, detail);
	return 0;
}

/* Re-ingests v1 plaintext rows (same de-duplication keys), then drops them. */
static int open_import_legacy(struct audit_state *st)
{
	struct store_legacy l;
	uint64_t after = 0, total = 0;
	int rv;

	for (;;) {
		Magnetar__AppendRequest req = MAGNETAR__APPEND_REQUEST__INIT;
		Magnetar__AppendReply out = MAGNETAR__APPEND_REPLY__INIT;
		if ((rv = store_legacy_read(st->pool, after, 1024, &l)) != 0)
			return rv;
		if (l.n == 0) {
			store_legacy_free(&l);
			break;
		}
		req.source = l.producer;
		req.instance = l.instance;
		req.events = l.ptrs;
		req.n_events = l.n;
		rv = ingest_append_sync(st, l.source, &req, &out);
		after = l.last_id;
		total += out.stored;
		store_legacy_free(&l);
		if (rv != 0)
			return rv;
	}
	if (total > 0)
		log_warnx("imported %llu plaintext events of schema v1 into the encrypted chain",
		          (unsigned long long)total);
	return store_legacy_drop(st->pool);
}

int audit_open(struct audit *a, const struct audit_keyring *keys, const struct audit_opts *opts,
               char *err, size_t errlen)
{
	struct audit_state *st;
	struct store_state s;
	int rv;

	if (keyring_count(keys) == 0)
		return open_refuse(err, errlen, ERR_CONFIG, "the audit keyring is empty");
	if ((st = calloc(1, sizeof(*st))) == NULL)
		return open_refuse(err, errlen, ERR_NOMEM, "out of memory");
	st->pool = a->svc.pool;
	st->opts = *opts;
	if (st->opts.epoch_ms == 0)
		st->opts.epoch_ms = AUDIT_EPOCH_MS;
	if (st->opts.epoch_events == 0)
		st->opts.epoch_events = AUDIT_EPOCH_EVENTS;
	memcpy(st->keys.keys, keys->keys, sizeof(st->keys.keys));
	atomic_store(&st->keys.n, keyring_count(keys));
	pthread_mutex_init(&st->mu, NULL);
	pthread_mutex_init(&st->keys_mu, NULL);
	if ((rv = crypto_pool_new(&st->crypto)) != 0 ||
	    (rv = nonce_new(st->pool, opts->nonce_block, &st->nonces)) != 0 ||
	    (rv = ingest_new(st, &st->ing)) != 0) {
		open_refuse(err, errlen, rv, "cannot set up the audit state (%s)", err_str(rv));
		goto fail;
	}
	if ((rv = store_state(st->pool, &s)) != 0) {
		open_refuse(err, errlen, rv, "cannot read audit.db (%s)", err_str(rv));
		goto fail;
	}
	if ((rv = open_secrets(st, &s, &st->secrets, err, errlen)) != 0)
		goto fail;
	if ((rv = ingest_recover(st->ing)) != 0) {
		open_refuse(err, errlen, rv, "cannot recover the chain state (%s)", err_str(rv));
		goto fail;
	}
	atomic_store(&st->breaks, s.breaks);
	if ((rv = open_check_tip(st)) != 0) {
		open_refuse(err, errlen, rv, "cannot check the chain tip (%s)", err_str(rv));
		goto fail;
	}
	if ((rv = open_import_legacy(st)) != 0) {
		open_refuse(err, errlen, rv, "cannot import v1 events (%s)", err_str(rv));
		goto fail;
	}
	if (opts->anchor_path != NULL && access(opts->anchor_path, F_OK) == 0 && s.last_id != 0)
		log_warnx("the trust anchor %s is still on this host: move it off-box",
		          opts->anchor_path);
	if (opts->events_url != NULL &&
	    (rv = events_pub_open(opts->events_url, a->svc.instance, 0, &st->pub)) != 0)
		log_warnx("cannot publish audit.events on %s (%s): Tail is off", opts->events_url,
		          err_str(rv));
	if (opts->pipeline && (rv = ingest_start(st->ing)) != 0) {
		open_refuse(err, errlen, rv, "cannot start the ingest thread");
		goto fail;
	}
	a->st = st;
	return 0;
fail:
	a->st = st;
	audit_close(a);
	return rv != 0 ? rv : ERR_INTERNAL;
}

void audit_close(struct audit *a)
{
	struct audit_state *st = a->st;

	if (st == NULL)
		return;
	ingest_free(st->ing);
	events_pub_close(st->pub);
	nonce_free(st->nonces);
	crypto_pool_free(st->crypto);
	keyring_wipe(&st->keys);
	OPENSSL_cleanse(&st->secrets, sizeof(st->secrets));
	pthread_mutex_destroy(&st->mu);
	pthread_mutex_destroy(&st->keys_mu);
	free(st);
	a->st = NULL;
}
