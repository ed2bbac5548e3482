/*
 * audit_ingest.c — audit ingest throughput, measured as ratios in one run:
 * events/s through the real RPC path (nng ipc req/rep -> Append -> group
 * commit with AES-256-GCM on every field, blind indexes, the hash chain and
 * MACs) against the same rows inserted as plaintext straight into SQLite in
 * batched transactions; and one durable commit per event against group
 * commit. Every commit is durable (synchronous=FULL) on both sides.
 *
 *   audit_ingest [EVENTS [CLIENTS [BATCH]]]     (defaults 200000 8 256)
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/pool.h"
#include "common/rpc.h"
#include "services/audit/audit.h"

#define KEY "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

static char dir[64];

/* A realistic ~300-byte event. */
static void bench_event(Magnetar__AuditEvent *e, uint64_t seq, char *actor, char *detail)
{
	magnetar__audit_event__init(e);
	snprintf(actor, 32, "user-%llu", (unsigned long long)(seq % 977));
	snprintf(detail, 200,
	         "{\"ua\":\"Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0\",\"score\":%llu,"
	         "\"session\":\"5f0c2d7e9b1a4c3f8e6d\"}",
	         (unsigned long long)(seq % 100));
	e->sequence = seq;
	e->time_unix_ms = clock_unix_ms();
	e->action = seq % 5 == 0 ? "auth.login.failure" : "auth.login.success";
	e->actor = actor;
	e->target = "session:0b6f7c1e2d3a4958";
	e->ip = "203.0.113.42";
	e->request_id = "9f1e2d3c4b5a69788796a5b4c3d2e1f0";
	e->outcome = seq % 5 == 0 ? "failure" : "success";
	e->detail = detail;
}

struct client {
	const char *url;
	int id, batches, batch;
	int failures;
};

static void *client_main(void *arg)
{
	struct client *c = arg;
	struct rpc_client *cli;
	Magnetar__AuditEvent *ev = calloc((size_t)c->batch, sizeof(*ev));
	Magnetar__AuditEvent **ptrs = calloc((size_t)c->batch, sizeof(*ptrs));
	char(*actor)[32] = calloc((size_t)c->batch, 32);
	char(*detail)[200] = calloc((size_t)c->batch, 200);
	char instance[32];
	uint64_t seq = 1;

	snprintf(instance, sizeof(instance), "bench%d", c->id);
	if (rpc_client_open(c->url, 0, &cli) != 0)
		fatalx("client");
	usleep(50 * 1000); /* let the pipe connect */
	for (int b = 0; b < c->batches; b++) {
		Magnetar__AppendRequest req = MAGNETAR__APPEND_REQUEST__INIT;
		struct rpc_result r;
		for (int i = 0; i < c->batch; i++) {
			bench_event(&ev[i], seq++, actor[i], detail[i]);
			ptrs[i] = &ev[i];
		}
		req.source = "bench";
		req.instance = instance;
		req.events = ptrs;
		req.n_events = (size_t)c->batch;
		if (rpc_call_sync(cli, &magnetar__audit__descriptor, "Append", &req.base, NULL,
		                  30000, &r) != 0 ||
		    r.status != MAGNETAR__STATUS__STATUS_OK)
			c->failures++;
		rpc_result_fini(&r);
	}
	rpc_client_close(cli);
	free(ev);
	free(ptrs);
	free(actor);
	free(detail);
	return NULL;
}

static const struct rpc_method methods[] = {
    {"Ping", svc_handle_ping, 0},
    {"Stats", svc_handle_stats, 0},
    {"Append", append_handle, RPC_F_MUTATES},
    {"Query", query_handle, 0},
    {"Verify", verify_handle, 0},
    {"RotateKey", rotate_handle, RPC_F_MUTATES},
};

/* Events/s through RPC into a fresh encrypted log. */
static double bench_rpc(const char *name, long events, int clients, int batch)
{
	static struct audit a;
	struct audit_keyring kr;
	struct audit_opts opts = {.pipeline = true};
	struct rpc_server_opts so = {.arg = &a};
	struct rpc_server *srv;
	char path[128], chain[128], url[128], err[256];
	pthread_t t[64];
	struct client c[64];
	uint64_t t0, t1, stored;

	memset(&a, 0, sizeof(a));
	snprintf(path, sizeof(path), "%s/%s.db", dir, name);
	snprintf(chain, sizeof(chain), "%s/%s.chain", dir, name);
	snprintf(url, sizeof(url), "ipc://%s/%s.sock", dir, name);
	opts.chain_path = chain;
	if (keyring_parse(KEY, &kr, err, sizeof(err)) != 0 ||
	    pool_open(path, &store_schema, NULL, &a.svc.pool) != 0 ||
	    audit_open(&a, &kr, &opts, err, sizeof(err)) != 0 ||
	    rpc_server_start(url, service_descriptor(), methods, 6, &so, &srv) != 0)
		fatalx("cannot start the audit side");
	t0 = clock_mono_us();
	for (int i = 0; i < clients; i++) {
		c[i] = (struct client){url, i, (int)(events / clients / batch), batch, 0};
		pthread_create(&t[i], NULL, client_main, &c[i]);
	}
	for (int i = 0; i < clients; i++) {
		pthread_join(t[i], NULL);
		if (c[i].failures)
			fatalx("%d Appends failed", c[i].failures);
	}
	t1 = clock_mono_us();
	store_count(a.svc.pool, &stored);
	rpc_server_stop(srv);
	audit_close(&a);
	pool_close(a.svc.pool);
	keyring_wipe(&kr);
	/* the 50 ms connect pause of each client is not ingest time */
	return (double)stored / ((double)(t1 - t0 - 50000) / 1e6);
}

/* The same rows as plaintext, straight into SQLite, `per_tx` rows a commit. */
static double bench_plain(const char *name, long events, int per_tx)
{
	static const char *const mig[] = {
	    "CREATE TABLE events (id INTEGER PRIMARY KEY, source TEXT, producer TEXT,"
	    " instance TEXT, seq INTEGER, time_ms INTEGER, received_ms INTEGER, action TEXT,"
	    " actor TEXT, target TEXT, ip TEXT, request_id TEXT, outcome TEXT, detail TEXT,"
	    " UNIQUE (source, instance, seq));"
	    "CREATE INDEX events_time ON events(time_ms);"
	    "CREATE INDEX events_action ON events(action);"
	    "CREATE INDEX events_actor ON events(actor);"};
	struct pool_schema schema = {mig, 1};
	struct pool *p;
	sqlite3 *db;
	sqlite3_stmt *st;
	char path[128], actor[32], detail[200];
	Magnetar__AuditEvent e;
	uint64_t t0, t1;

	snprintf(path, sizeof(path), "%s/%s.db", dir, name);
	if (pool_open(path, &schema, NULL, &p) != 0 || pool_writer_get(p, &db) != 0)
		fatalx("plain");
	/* Exactly what audit's writer sets (services/audit/store.c). */
	sqlite3_exec(db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
	sqlite3_exec(db, "PRAGMA cache_size=-16384", NULL, NULL, NULL);
	sqlite3_prepare_v2(
	    db,
	    "INSERT INTO events(source, producer, instance, seq, time_ms, received_ms,"
	    " action, actor, target, ip, request_id, outcome, detail)"
	    " VALUES ('name:bench', 'bench', 'bench0', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
	    -1, &st, NULL);
	t0 = clock_mono_us();
	for (long i = 0; i < events; i++) {
		if (i % per_tx == 0)
			sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
		bench_event(&e, (uint64_t)i + 1, actor, detail);
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, (sqlite3_int64)e.sequence);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)e.time_unix_ms);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)clock_unix_ms());
		sqlite3_bind_text(st, 4, e.action, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 5, e.actor, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 6, e.target, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 7, e.ip, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 8, e.request_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 9, e.outcome, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 10, e.detail, -1, SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE)
			fatalx("insert");
		if (i % per_tx == per_tx - 1 || i == events - 1)
			sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	}
	t1 = clock_mono_us();
	sqlite3_finalize(st);
	pool_writer_put(p, db);
	pool_close(p);
	return (double)events / ((double)(t1 - t0) / 1e6);
}

int main(int argc, char **argv)
{
	long events = argc > 1 ? atol(argv[1]) : 200000;
	int clients = argc > 2 ? atoi(argv[2]) : 8;
	int batch = argc > 3 ? atoi(argv[3]) : 256;
	double plain, enc, plain1, enc1;
	char cmd[96];

	log_init("audit_ingest", LOG_TEXT, false);
	snprintf(dir, sizeof(dir), "/tmp/audit_ingest.XXXXXX");
	if (mkdtemp(dir) == NULL)
		fatal("mkdtemp");
	plain = bench_plain("plain", events, 1000);
	enc = bench_rpc("enc", events, clients, batch);
	/* One durable commit per event: one client, one event per Append. */
	plain1 = bench_plain("plain1", 2000, 1);
	enc1 = bench_rpc("enc1", 2000, 1, 1);
	printf("plain_batched_eps %.0f\n", plain);
	printf("encrypted_rpc_group_commit_eps %.0f\n", enc);
	printf("ratio_encrypted_vs_plain %.2f\n", enc / plain);
	printf("plain_one_commit_per_event_eps %.0f\n", plain1);
	printf("encrypted_rpc_one_commit_per_event_eps %.0f\n", enc1);
	printf("group_vs_per_event_commit %.1f\n", enc / enc1);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : 1;
}
