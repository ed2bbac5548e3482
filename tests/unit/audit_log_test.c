/*
 * audit_log_test.c — services/audit end to end without RPC: what Append
 * stores decrypts back; every kind of tampering with audit.db (a flipped
 * byte, fields swapped between rows or columns, a row deleted from the
 * middle or the end, rows reordered, a changed key id or time) is found by
 * Verify at the right record; key rotation and restarts keep everything
 * readable and verifiable; concurrent Appends are group-committed intact.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "common/pool.h"
#include "services/audit/audit.h"

/* 32 bytes each, base64. */
#define K1 "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define K2 "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="

struct fx {
	char dir[64], db[96], chain[96];
	struct audit a;
	struct audit_keyring kr;
	struct audit_opts opts;
};

static void fx_open(struct fx *f)
{
	char err[256];
	assert_int_equal(pool_open(f->db, &store_schema, NULL, &f->a.svc.pool), 0);
	if (audit_open(&f->a, &f->kr, &f->opts, err, sizeof(err)) != 0)
		fail_msg("audit_open: %s", err);
}

static void fx_close(struct fx *f)
{
	audit_close(&f->a);
	pool_close(f->a.svc.pool);
	f->a.svc.pool = NULL;
}

static struct fx *fx_new(const char *keys, uint64_t epoch_events, bool pipeline)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256];

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/audit_log_test.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->db, sizeof(f->db), "%s/audit.db", f->dir);
	snprintf(f->chain, sizeof(f->chain), "%s/audit.chain", f->dir);
	if (keyring_parse(keys, &f->kr, err, sizeof(err)) != 0)
		fail_msg("keyring: %s", err);
	f->opts.epoch_events = epoch_events;
	f->opts.nonce_block = 256;
	f->opts.chain_path = f->chain;
	f->opts.pipeline = pipeline;
	fx_open(f);
	return f;
}

static void fx_free(struct fx *f)
{
	char cmd[128];
	fx_close(f);
	keyring_wipe(&f->kr);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
}

/* Appends events first..first+n-1 of producer "tester" (seq = number). */
static void fx_append(struct fx *f, const char *instance, int first, int n)
{
	Magnetar__AppendRequest req = MAGNETAR__APPEND_REQUEST__INIT;
	Magnetar__AuditEvent *ev = calloc((size_t)n, sizeof(*ev));
	Magnetar__AuditEvent **ptrs = calloc((size_t)n, sizeof(*ptrs));
	char(*actor)[32] = calloc((size_t)n, sizeof(*actor));
	char(*detail)[64] = calloc((size_t)n, sizeof(*detail));
	Magnetar__AppendReply out = MAGNETAR__APPEND_REPLY__INIT;

	assert_true(ev && ptrs && actor && detail);
	for (int i = 0; i < n; i++) {
		magnetar__audit_event__init(&ev[i]);
		ev[i].sequence = (uint64_t)(first + i);
		ev[i].time_unix_ms = 1700000000000ull + (uint64_t)(first + i);
		ev[i].action = (first + i) % 3 == 0 ? "auth.login.failure" : "auth.login.success";
		snprintf(actor[i], sizeof(actor[i]), "user-%d", (first + i) % 4);
		ev[i].actor = actor[i];
		ev[i].target = "session";
		ev[i].ip = "192.0.2.7";
		ev[i].request_id = "req";
		ev[i].outcome = "success";
		/* A newline, an escape sequence and a quote: stored as they are. */
		snprintf(detail[i], sizeof(detail[i]), "n=%d\n\x1b[31mred\"", first + i);
		ev[i].detail = detail[i];
		ptrs[i] = &ev[i];
	}
	req.source = "tester";
	req.instance = (char *)instance;
	req.events = ptrs;
	req.n_events = (size_t)n;
	assert_int_equal(ingest_append_sync(f->a.st, "name:tester", &req, &out), 0);
	free(ev);
	free(ptrs);
	free(actor);
	free(detail);
}

static void fx_verify(struct fx *f, bool ok, uint64_t bad_id, const char *reason)
{
	Magnetar__VerifyReply out = MAGNETAR__VERIFY_REPLY__INIT;
	assert_int_equal(verify_run(f->a.st, NULL, &out), 0);
	if (out.ok != ok || out.first_bad_id != bad_id ||
	    (reason != NULL && strcmp(out.reason, reason) != 0))
		fail_msg("verify: ok=%d first_bad_id=%llu reason=%s detail=%s; want ok=%d id=%llu "
		         "reason=%s",
		         out.ok, (unsigned long long)out.first_bad_id, out.reason, out.detail, ok,
		         (unsigned long long)bad_id, reason != NULL ? reason : "-");
	verify_reply_fini(&out);
}

/* Runs SQL on audit.db behind the service's back, as an attacker would. */
static void fx_sql(struct fx *f, const char *sql)
{
	sqlite3 *db;
	char *err = NULL;
	assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
		fail_msg("%s: %s", sql, err);
	sqlite3_close(db);
}

static uint64_t fx_int(struct fx *f, const char *sql)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	uint64_t v = 0;
	assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

/* The n-th event record's id (1-based), counting only events. */
static uint64_t fx_event_id(struct fx *f, int n)
{
	char sql[128];
	snprintf(sql, sizeof(sql),
	         "SELECT id FROM records WHERE kind = 0 ORDER BY id LIMIT 1 OFFSET %d", n - 1);
	return fx_int(f, sql);
}

/* A log of 23 events in epochs of 5 (so several sealed heads) plus 2 more. */
static struct fx *fx_log(void)
{
	struct fx *f = fx_new(K1 "," K2, 5, false);
	fx_append(f, "inst1", 1, 10);
	fx_append(f, "inst1", 11, 13);
	fx_verify(f, true, 0, NULL);
	return f;
}

static void test_round_trip_and_query(void **state)
{
	struct fx *f = fx_new(K1, 1000, false);
	Magnetar__QueryRequest q = MAGNETAR__QUERY_REQUEST__INIT;
	Magnetar__QueryReply out = MAGNETAR__QUERY_REPLY__INIT;
	uint64_t bad;
	(void)state;

	fx_append(f, "inst1", 1, 12);
	/* Everything, oldest first: fields come back exactly. */
	q.oldest_first = true;
	assert_int_equal(query_run(f->a.st, &q, &out, &bad), 0);
	assert_int_equal(out.n_events, 12);
	assert_string_equal(out.events[0]->action, "auth.login.success");
	assert_string_equal(out.events[0]->actor, "user-1");
	assert_string_equal(out.events[0]->detail, "n=1\n\x1b[31mred\"");
	assert_string_equal(out.events[2]->action, "auth.login.failure");
	assert_int_equal(out.events[0]->sequence, 1);
	assert_string_equal(out.events[0]->key_id, "k1");
	assert_string_equal(out.events[0]->source, "name:tester");
	assert_null(out.next_cursor);
	query_reply_fini(&out);
	/* Nothing in the file is plaintext. */
	assert_int_equal(fx_int(f, "SELECT count(*) FROM records WHERE instr(detail, 'red') > 0 OR "
	                           "instr(actor, 'user') > 0"),
	                 0);
	/* Filters: action (4 of 12: seq 3, 6, 9, 12), actor, and both. */
	q.action = "auth.login.failure";
	assert_int_equal(query_run(f->a.st, &q, &out, &bad), 0);
	assert_int_equal(out.n_events, 4);
	query_reply_fini(&out);
	q.action = "";
	q.actor = "user-2"; /* 2, 6, 10 */
	assert_int_equal(query_run(f->a.st, &q, &out, &bad), 0);
	assert_int_equal(out.n_events, 3);
	query_reply_fini(&out);
	q.action = "auth.login.failure"; /* and user-2: 6 */
	assert_int_equal(query_run(f->a.st, &q, &out, &bad), 0);
	assert_int_equal(out.n_events, 1);
	assert_int_equal(out.events[0]->sequence, 6);
	query_reply_fini(&out);
	/* Time range [t3, t6) and paging newest first, 5 per page. */
	q.action = "";
	q.actor = "";
	q.since_unix_ms = 1700000000003ull;
	q.until_unix_ms = 1700000000006ull;
	assert_int_equal(query_run(f->a.st, &q, &out, &bad), 0);
	assert_int_equal(out.n_events, 3);
	query_reply_fini(&out);
	q.since_unix_ms = q.until_unix_ms = 0;
	q.oldest_first = false;
	q.limit = 5;
	int pages = 0, seen = 0;
	uint64_t last = UINT64_MAX;
	char cursor[32] = "";
	do {
		q.cursor = cursor;
		assert_int_equal(query_run(f->a.st, &q, &out, &bad), 0);
		for (size_t i = 0; i < out.n_events; i++) {
			assert_true(out.events[i]->id < last);
			last = out.events[i]->id;
			seen++;
		}
		snprintf(cursor, sizeof(cursor), "%s", out.next_cursor ? out.next_cursor : "");
		query_reply_fini(&out);
		pages++;
	} while (cursor[0] != '\0');
	assert_int_equal(seen, 12);
	assert_int_equal(pages, 3);
	q.cursor = "12abc";
	assert_int_equal(query_run(f->a.st, &q, &out, &bad), ERR_INVAL);
	q.cursor = "";
	q.limit = 1001;
	assert_int_equal(query_run(f->a.st, &q, &out, &bad), ERR_INVAL);
	fx_free(f);
}

static void test_duplicates_stored_once(void **state)
{
	struct fx *f = fx_new(K1, 1000, false);
	(void)state;
	fx_append(f, "inst1", 1, 10);
	fx_append(f, "inst1", 5, 10); /* 5..10 again, 11..14 new */
	fx_append(f, "inst2", 1, 3);  /* another producer database: its own sequences */
	assert_int_equal(fx_int(f, "SELECT count(*) FROM records WHERE kind = 0"), 17);
	fx_verify(f, true, 0, NULL);
	fx_free(f);
}

/* A number stored with other content is not a duplicate (issue 16): the
 * batch is refused whole and counted; a true re-send is counted too, even
 * when the whole group is duplicates; the high-water mark is reported. */
static void test_sequence_conflict_refused(void **state)
{
	struct fx *f = fx_new(K1, 1000, false);
	Magnetar__AppendRequest req = MAGNETAR__APPEND_REQUEST__INIT;
	Magnetar__AppendReply out = MAGNETAR__APPEND_REPLY__INIT;
	Magnetar__AuditEvent ev[2], *ptrs[2] = {&ev[0], &ev[1]};
	(void)state;
	fx_append(f, "inst1", 1, 10);
	fx_append(f, "inst1", 3, 4); /* a re-send: duplicates only */
	assert_int_equal(atomic_load(&f->a.st->dups), 4);
	for (int i = 0; i < 2; i++) {
		magnetar__audit_event__init(&ev[i]);
		ev[i].sequence = (uint64_t)(10 + i); /* 10 is stored, 11 is new */
		ev[i].time_unix_ms = 1800000000000ull;
		ev[i].action = "auth.login.success";
		ev[i].detail = "a new event under an old number";
	}
	req.source = "tester";
	req.instance = "inst1";
	req.events = ptrs;
	req.n_events = 2;
	assert_int_equal(ingest_append_sync(f->a.st, "name:tester", &req, &out), ERR_EXISTS);
	assert_int_equal(out.stored, 0);
	assert_int_equal(out.high_water, 10);
	assert_int_equal(atomic_load(&f->a.st->refused), 2);
	assert_int_equal(fx_int(f, "SELECT count(*) FROM records WHERE kind = 0"), 10);
	/* Under a new instance id the same events are stored. */
	req.instance = "inst2";
	assert_int_equal(ingest_append_sync(f->a.st, "name:tester", &req, &out), 0);
	assert_int_equal(out.stored, 2);
	assert_int_equal(out.high_water, 11);
	/* The same number twice in one batch with other content: refused too. */
	ev[0].sequence = ev[1].sequence = 20;
	ev[1].detail = "other";
	assert_int_equal(ingest_append_sync(f->a.st, "name:tester", &req, &out), ERR_EXISTS);
	fx_verify(f, true, 0, NULL);
	fx_free(f);
}

static void test_tamper_flip_ciphertext_byte(void **state)
{
	struct fx *f = fx_log();
	uint64_t id = fx_event_id(f, 3); /* in a sealed epoch */
	char sql[160];
	(void)state;
	/* One bit of the ciphertext, through a bound blob. */
	sqlite3 *db;
	sqlite3_stmt *st;
	unsigned char buf[256];
	int n;
	assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
	snprintf(sql, sizeof(sql), "SELECT detail FROM records WHERE id = %llu",
	         (unsigned long long)id);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	n = sqlite3_column_bytes(st, 0);
	memcpy(buf, sqlite3_column_blob(st, 0), (size_t)n);
	sqlite3_finalize(st);
	buf[AUDIT_NONCE + 2] ^= 0x01;
	assert_int_equal(
	    sqlite3_prepare_v2(db, "UPDATE records SET detail = ? WHERE id = ?", -1, &st, NULL),
	    SQLITE_OK);
	sqlite3_bind_blob(st, 1, buf, n, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)id);
	assert_int_equal(sqlite3_step(st), SQLITE_DONE);
	sqlite3_finalize(st);
	sqlite3_close(db);
	fx_verify(f, false, id, "decrypt_failed");
	fx_free(f);
}

static void test_tamper_swap_field_between_rows(void **state)
{
	struct fx *f = fx_log();
	uint64_t a = fx_event_id(f, 4), b = fx_event_id(f, 9);
	char sql[400];
	(void)state;
	snprintf(
	    sql, sizeof(sql),
	    "UPDATE records SET actor = (SELECT actor FROM records WHERE id = %llu) WHERE id = "
	    "%llu;",
	    (unsigned long long)b, (unsigned long long)a);
	fx_sql(f, sql);
	fx_verify(f, false, a, "decrypt_failed");
	fx_free(f);
}

static void test_tamper_swap_columns(void **state)
{
	struct fx *f = fx_log();
	uint64_t id = fx_event_id(f, 21); /* in the open epoch */
	char sql[200];
	(void)state;
	snprintf(sql, sizeof(sql),
	         "UPDATE records SET actor = target, target = actor WHERE id = %llu",
	         (unsigned long long)id);
	fx_sql(f, sql);
	fx_verify(f, false, id, "decrypt_failed");
	fx_free(f);
}

static void test_tamper_delete_middle_row(void **state)
{
	struct fx *f = fx_log();
	uint64_t id = fx_event_id(f, 7);
	char sql[100];
	(void)state;
	snprintf(sql, sizeof(sql), "DELETE FROM records WHERE id = %llu", (unsigned long long)id);
	fx_sql(f, sql);
	fx_verify(f, false, id, "missing_record");
	fx_free(f);
}

static void test_tamper_delete_last_rows(void **state)
{
	struct fx *f = fx_log();
	uint64_t last = fx_int(f, "SELECT max(id) FROM records");
	char sql[100];
	(void)state;
	/* Three from the open epoch... */
	snprintf(sql, sizeof(sql), "DELETE FROM records WHERE id > %llu",
	         (unsigned long long)last - 3);
	fx_sql(f, sql);
	fx_verify(f, false, last - 2, "truncated");
	fx_free(f);

	/* ...and everything back into a sealed epoch, heads included. */
	f = fx_log();
	last = fx_int(f, "SELECT max(id) FROM records");
	uint64_t head = fx_int(f, "SELECT min(id) FROM records WHERE kind = 1");
	snprintf(sql, sizeof(sql), "DELETE FROM records WHERE id >= %llu",
	         (unsigned long long)head);
	fx_sql(f, sql);
	fx_verify(f, false, head, "truncated");
	/* Rewriting the tip to the shortened end does not help without the key. */
	snprintf(sql, sizeof(sql),
	         "UPDATE chain_tip SET last_id = %llu, epoch = 0, hash = (SELECT hash FROM records "
	         "WHERE id = %llu)",
	         (unsigned long long)head - 1, (unsigned long long)head - 1);
	fx_sql(f, sql);
	fx_verify(f, false, head, "truncated"); /* the chain key is epochs ahead */
	fx_free(f);
}

/* A restart must not heal a cut (issue 16): the open finds the tip naming
 * records that are gone, records a break that skips their ids, and Verify
 * keeps reporting the cut, across more appends and restarts. */
static void test_truncation_survives_restarts(void **state)
{
	struct fx *f = fx_new(K1, 1000, false);
	uint64_t last, events;
	char sql[100];
	(void)state;
	fx_append(f, "inst1", 1, 10);
	last = fx_int(f, "SELECT max(id) FROM records");
	fx_close(f);
	snprintf(sql, sizeof(sql), "DELETE FROM records WHERE id > %llu",
	         (unsigned long long)last - 3);
	fx_sql(f, sql);
	fx_open(f);
	fx_verify(f, false, last - 2, "truncated");
	/* The break and its audit event follow the skipped ids. */
	assert_int_equal(fx_int(f, "SELECT id FROM records WHERE kind = 3"), last + 1);
	assert_int_equal(fx_int(f, "SELECT count(*) FROM records WHERE kind = 3"), 1);
	fx_append(f, "inst1", 11, 4);
	assert_true(fx_int(f, "SELECT min(id) FROM records WHERE seq >= 11") > last + 1);
	fx_verify(f, false, last - 2, "truncated");
	events = fx_int(f, "SELECT count(*) FROM records WHERE kind = 0");
	assert_int_equal(atomic_load(&f->a.st->events), events);
	fx_close(f);
	fx_open(f);
	fx_verify(f, false, last - 2, "truncated");
	assert_int_equal(atomic_load(&f->a.st->events), events);
	assert_int_equal(fx_int(f, "SELECT count(*) FROM records WHERE kind = 3"), 1);
	/* A later change is still found, and named after the first finding. */
	fx_sql(f, "UPDATE records SET time_ms = time_ms + 1 WHERE id = (SELECT max(id) FROM "
	          "records WHERE kind = 0)");
	fx_verify(f, false, last - 2, "truncated");
	fx_free(f);

	/* Every record, genesis included, while in epoch 0: not a new log. */
	f = fx_new(K1, 1000, false);
	fx_append(f, "inst1", 1, 5);
	last = fx_int(f, "SELECT max(id) FROM records");
	fx_close(f);
	fx_sql(f, "DELETE FROM records");
	fx_open(f);
	fx_verify(f, false, 1, "truncated");
	assert_int_equal(fx_int(f, "SELECT min(id) FROM records"), last + 1);
	fx_append(f, "inst1", 6, 2);
	fx_close(f);
	fx_open(f);
	fx_verify(f, false, 1, "truncated");
	fx_free(f);

	/* Every record and the tip: nothing left says a log was here, but it
	 * cannot come back under the same genesis key (the anchor tells). */
	{
		Magnetar__VerifyReply out = MAGNETAR__VERIFY_REPLY__INIT;
		char fp[2 * AUDIT_HASH + 1];
		f = fx_new(K1, 1000, false);
		fx_append(f, "inst1", 1, 5);
		assert_int_equal(verify_run(f->a.st, NULL, &out), 0);
		snprintf(fp, sizeof(fp), "%s", out.genesis_fingerprint);
		verify_reply_fini(&out);
		fx_close(f);
		fx_sql(f, "DELETE FROM records; DELETE FROM chain_tip");
		fx_open(f);
		assert_int_equal(verify_run(f->a.st, NULL, &out), 0);
		assert_true(out.ok);
		assert_true(strcmp(fp, out.genesis_fingerprint) != 0);
		verify_reply_fini(&out);
		assert_int_equal(verify_run(f->a.st, fp, &out), 0);
		assert_false(out.ok);
		assert_string_equal(out.reason, "anchor_mismatch");
		verify_reply_fini(&out);
		fx_free(f);
	}

	/* Deleting the tip row too (so nothing says where the log ended). */
	f = fx_new(K1, 1000, false);
	fx_append(f, "inst1", 1, 10);
	last = fx_int(f, "SELECT max(id) FROM records");
	fx_close(f);
	snprintf(sql, sizeof(sql), "DELETE FROM records WHERE id > %llu; DELETE FROM chain_tip",
	         (unsigned long long)last - 3);
	fx_sql(f, sql);
	fx_open(f);
	fx_verify(f, false, last - 2, "missing_tip");
	fx_close(f);
	fx_open(f);
	fx_verify(f, false, last - 2, "missing_tip");
	fx_free(f);
}

/* A cut that takes sealed epochs with it (their heads are gone, the chain
 * file is epochs ahead): the tip, MAC'ed with the file's key, shows that
 * file and database belong together, so audit records the break, goes on in
 * the key's epoch, and later heads verify against the break's key. */
static void test_truncation_across_seals(void **state)
{
	struct fx *f = fx_log(); /* epochs of 5 events: heads sealed */
	Magnetar__VerifyReply out = MAGNETAR__VERIFY_REPLY__INIT;
	uint64_t head, events;
	char sql[100];
	(void)state;
	head = fx_int(f, "SELECT min(id) FROM records WHERE kind = 1");
	fx_close(f);
	snprintf(sql, sizeof(sql), "DELETE FROM records WHERE id >= %llu",
	         (unsigned long long)head);
	fx_sql(f, sql);
	fx_open(f);
	fx_verify(f, false, head, "truncated");
	fx_append(f, "inst1", 24, 12); /* two more seals after the break */
	assert_int_equal(verify_run(f->a.st, NULL, &out), 0);
	assert_false(out.ok);
	assert_string_equal(out.reason, "truncated");
	assert_int_equal(out.first_bad_id, head);
	assert_null(strstr(out.detail, "then")); /* nothing else is wrong */
	assert_true(out.sealed_epochs >= 2);
	verify_reply_fini(&out);
	events = fx_int(f, "SELECT count(*) FROM records WHERE kind = 0");
	assert_int_equal(atomic_load(&f->a.st->events), events);
	fx_close(f);
	fx_open(f);
	fx_verify(f, false, head, "truncated");
	assert_int_equal(atomic_load(&f->a.st->events), events);
	fx_append(f, "inst1", 36, 3);
	fx_verify(f, false, head, "truncated");
	fx_free(f);
}

static void test_tamper_reorder_rows(void **state)
{
	struct fx *f = fx_log();
	uint64_t a = fx_event_id(f, 11), b = a + 1;
	char sql[300];
	(void)state;
	snprintf(sql, sizeof(sql),
	         "UPDATE records SET id = 100000 WHERE id = %llu;"
	         "UPDATE records SET id = %llu WHERE id = %llu;"
	         "UPDATE records SET id = %llu WHERE id = 100000;",
	         (unsigned long long)a, (unsigned long long)a, (unsigned long long)b,
	         (unsigned long long)b);
	fx_sql(f, sql);
	fx_verify(f, false, a, NULL);
	fx_free(f);
}

static void test_tamper_change_key_id(void **state)
{
	struct fx *f = fx_log();
	uint64_t id = fx_event_id(f, 5);
	char sql[100];
	(void)state;
	/* Records are under k2 (the last listed, current); k1 is in the ring too. */
	snprintf(sql, sizeof(sql), "UPDATE records SET key_id = 'k1' WHERE id = %llu",
	         (unsigned long long)id);
	fx_sql(f, sql);
	fx_verify(f, false, id, "decrypt_failed");
	fx_free(f);

	f = fx_log();
	snprintf(sql, sizeof(sql), "UPDATE records SET key_id = 'nokey' WHERE id = %llu",
	         (unsigned long long)id);
	fx_sql(f, sql);
	fx_verify(f, false, id, "unknown_key");
	fx_free(f);
}

static void test_tamper_plaintext_columns(void **state)
{
	struct fx *f = fx_log();
	uint64_t id = fx_event_id(f, 22); /* open epoch: caught by link and MAC */
	char sql[100];
	(void)state;
	snprintf(sql, sizeof(sql), "UPDATE records SET time_ms = time_ms + 1 WHERE id = %llu",
	         (unsigned long long)id);
	fx_sql(f, sql);
	fx_verify(f, false, id, "chain_mismatch");
	fx_free(f);

	/* An insertion at the end without the chain key. */
	f = fx_log();
	fx_sql(f, "INSERT INTO records(id, kind, epoch, time_ms, received_ms, hash, mac)"
	          " SELECT max(id) + 1, 1, epoch, 0, 0, hash, mac FROM records");
	fx_verify(f, false, fx_int(f, "SELECT max(id) FROM records"), NULL);
	fx_free(f);
}

static void test_key_rotation_and_restart(void **state)
{
	struct fx *f = fx_new(K1, 4, false);
	Magnetar__QueryRequest q = MAGNETAR__QUERY_REQUEST__INIT;
	Magnetar__QueryReply out = MAGNETAR__QUERY_REPLY__INIT;
	struct audit_keyring next;
	char err[256];
	uint64_t bad, sealed;
	int k1 = 0, k2 = 0;
	(void)state;

	fx_append(f, "inst1", 1, 6);
	assert_int_equal(keyring_parse(K1 "," K2, &next, err, sizeof(err)), 0);
	assert_int_equal(keyring_extend(&f->a.st->keys, &next, err, sizeof(err)), 0);
	assert_int_equal(ingest_seal_now(f->a.st, 1000, &sealed), 0);
	fx_append(f, "inst1", 7, 6);
	fx_verify(f, true, 0, NULL);
	/* A ring may not lose or change keys. */
	struct audit_keyring only2;
	assert_int_equal(keyring_parse(K2, &only2, err, sizeof(err)), 0);
	assert_int_equal(keyring_extend(&f->a.st->keys, &only2, err, sizeof(err)), ERR_CONFIG);

	/* Restart with the new ring: both keys' records verify and decrypt. */
	fx_close(f);
	f->kr = next;
	fx_open(f);
	fx_append(f, "inst1", 13, 3);
	fx_verify(f, true, 0, NULL);
	q.oldest_first = true;
	assert_int_equal(query_run(f->a.st, &q, &out, &bad), 0);
	assert_int_equal(out.n_events, 15);
	for (size_t i = 0; i < out.n_events; i++) {
		k1 += strcmp(out.events[i]->key_id, "k1") == 0;
		k2 += strcmp(out.events[i]->key_id, "k2") == 0;
	}
	assert_int_equal(k1, 6);
	assert_int_equal(k2, 9);
	query_reply_fini(&out);

	/* The chain file is what continues the chain: without it, refuse. */
	fx_close(f);
	assert_int_equal(unlink(f->chain), 0);
	assert_int_equal(pool_open(f->db, &store_schema, NULL, &f->a.svc.pool), 0);
	assert_int_not_equal(audit_open(&f->a, &f->kr, &f->opts, err, sizeof(err)), 0);
	assert_non_null(strstr(err, "missing"));
	pool_close(f->a.svc.pool);
	f->a.svc.pool = NULL;
	keyring_wipe(&next);
	keyring_wipe(&only2);
	keyring_wipe(&f->kr);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
}

static void test_interrupted_seal_recovers(void **state)
{
	struct fx *f = fx_new(K1, 5, false);
	struct chain_secrets before;
	char err[256];
	(void)state;

	fx_append(f, "inst1", 1, 3);
	assert_int_equal(chain_file_read(f->chain, &before), 0);
	fx_append(f, "inst1", 4, 8); /* seals epochs 0 and 1 */
	fx_close(f);
	/* As if audit died between a seal's commit and the file update. */
	assert_int_equal(chain_file_write(f->chain, &before), 0);
	fx_open(f);
	fx_verify(f, true, 0, NULL);
	fx_append(f, "inst1", 12, 2);
	fx_verify(f, true, 0, NULL);
	fx_close(f);
	/* A chain file from the future does not belong to this log. */
	struct chain_secrets fut;
	assert_int_equal(chain_file_read(f->chain, &fut), 0);
	fut.epoch += 3;
	assert_int_equal(chain_file_write(f->chain, &fut), 0);
	assert_int_equal(pool_open(f->db, &store_schema, NULL, &f->a.svc.pool), 0);
	assert_int_not_equal(audit_open(&f->a, &f->kr, &f->opts, err, sizeof(err)), 0);
	assert_int_equal(chain_file_write(f->chain, &before), 0);
	pool_close(f->a.svc.pool);
	f->a.svc.pool = NULL;
	fx_open(f);
	fx_free(f);
}

struct writer {
	struct fx *f;
	char instance[16];
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	for (int i = 0; i < 20; i++)
		fx_append(w->f, w->instance, 1 + i * 25, 25);
	return NULL;
}

static void test_concurrent_appends_group_commit(void **state)
{
	struct fx *f = fx_new(K1, 300, true);
	struct writer w[4];
	pthread_t t[4];
	(void)state;

	for (int i = 0; i < 4; i++) {
		w[i].f = f;
		snprintf(w[i].instance, sizeof(w[i].instance), "inst%d", i);
		assert_int_equal(pthread_create(&t[i], NULL, writer_main, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(fx_int(f, "SELECT count(*) FROM records WHERE kind = 0"), 4 * 500);
	assert_true(fx_int(f, "SELECT count(*) FROM records WHERE kind = 1") >= 6);
	fx_verify(f, true, 0, NULL);
	/* Re-sent batches (a lost ack) are recognised, even mid-pipeline. */
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, writer_main, &w[i]), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(fx_int(f, "SELECT count(*) FROM records WHERE kind = 0"), 4 * 500);
	fx_verify(f, true, 0, NULL);
	fx_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip_and_query),
	    cmocka_unit_test(test_duplicates_stored_once),
	    cmocka_unit_test(test_sequence_conflict_refused),
	    cmocka_unit_test(test_tamper_flip_ciphertext_byte),
	    cmocka_unit_test(test_tamper_swap_field_between_rows),
	    cmocka_unit_test(test_tamper_swap_columns),
	    cmocka_unit_test(test_tamper_delete_middle_row),
	    cmocka_unit_test(test_tamper_delete_last_rows),
	    cmocka_unit_test(test_truncation_survives_restarts),
	    cmocka_unit_test(test_truncation_across_seals),
	    cmocka_unit_test(test_tamper_reorder_rows),
	    cmocka_unit_test(test_tamper_change_key_id),
	    cmocka_unit_test(test_tamper_plaintext_columns),
	    cmocka_unit_test(test_key_rotation_and_restart),
	    cmocka_unit_test(test_interrupted_seal_recovers),
	    cmocka_unit_test(test_concurrent_appends_group_commit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
