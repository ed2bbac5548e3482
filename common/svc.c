/*
 * svc.c — the start-up, signal and Ping/Stats code every program shares.
 */
#include "common/svc.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/outbox.h"
#include "common/pool.h"

static void svc_usage(const char *prog)
{
	fprintf(stderr,
	        "usage: %s [-n]\n"
	        "  -n  check the MAGNETAR_* configuration, print it (secrets redacted), exit\n",
	        prog);
}

/* mkdir -p with a final mode; existing dirs are left as they are. */
static int svc_mkdirs(const char *path, mode_t mode)
{
	char buf[512];
	size_t len = strlen(path);
	if (len == 0 || len >= sizeof(buf))
		return ERR_INVAL;
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) != 0 && errno != EEXIST)
			return ERR_IO;
		*p = '/';
	}
	if (mkdir(buf, mode) != 0 && errno != EEXIST)
		return ERR_IO;
	return 0;
}

void svc_init(struct svc *s, enum svc_id id, int argc, char **argv)
{
	char err[256];
	bool check_only = false;
	struct rlimit no_core = {0, 0};
	sigset_t set;
	int opt;

	memset(s, 0, sizeof(*s));
	s->id = id;
	s->started_mono_ms = clock_mono_ms();
	log_init(svc_name(id), LOG_TEXT, getenv("MAGNETAR_DEBUG") != NULL);
	while ((opt = getopt(argc, argv, "nh")) != -1) {
		switch (opt) {
		case 'n':
			check_only = true;
			break;
		default:
			svc_usage(argv[0]);
			exit(opt == 'h' ? 0 : 2);
		}
	}
	if (conf_load(&s->conf, id, err, sizeof(err)) != 0)
		fatalx("configuration refused: %s", err);
	log_init(svc_name(id), s->conf.log_json ? LOG_JSON : LOG_TEXT,
	         getenv("MAGNETAR_DEBUG") != NULL);
	if (check_only) {
		conf_print(&s->conf);
		log_info("configuration ok");
		conf_fini(&s->conf);
		exit(0);
	}
	/* Keys and passwords live in this process's memory: no core dumps. */
	setrlimit(RLIMIT_CORE, &no_core);
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	if (ids_random_hex(s->instance, 16) != 0)
		fatalx("cannot read random bytes");

	/* Signals are taken synchronously by svc_wait_signal in the main thread;
	 * every thread started from here on inherits the mask. SIGPIPE is never
	 * wanted: a closed peer is an error return, not a death. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (id < SVC_SERVICES) {
		if (conf_service_dir(&s->conf, id, s->data_dir, sizeof(s->data_dir)) != 0)
			fatalx("MAGNETAR_DATA_DIR is too long");
		if (svc_mkdirs(s->data_dir, 0700) != 0)
			fatal("cannot create data dir %s", s->data_dir);
		if (svc_mkdirs(s->conf.run_dir, 0755) != 0)
			fatal("cannot create run dir %s", s->conf.run_dir);
	}
	conf_print(&s->conf);
}

int svc_wait_signal(void)
{
	sigset_t set;
	int sig = 0;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			log_info("SIGHUP ignored (configuration is read at start only)");
			continue;
		}
		return sig;
	}
}

void svc_open_db(struct svc *s, const char *file, const struct pool_schema *schema)
{
	char path[600];
	int rv;
	if (svc_path(s, file, path, sizeof(path)) != 0)
		fatalx("database path too long");
	if ((rv = pool_open(path, schema, NULL, &s->pool)) != 0)
		fatalx("cannot open database %s: %s", path, err_str(rv));
}

void svc_start_outbox(struct svc *s)
{
	struct outbox_event ev = {.action = "service.started",
	                          .actor = svc_name(s->id),
	                          .target = s->instance,
	                          .outcome = "success"};
	struct sqlite3 *db;
	int rv;

	if ((rv = rpc_client_open(s->conf.url[SVC_AUDIT], 0, &s->audit)) != 0)
		fatalx("cannot open a client of magnetar-audit: %s", err_str(rv));
	if ((rv = outbox_start(s->pool, svc_name(s->id), s->audit, NULL, &s->outbox)) != 0)
		fatalx("cannot start the audit outbox: %s", err_str(rv));
	if ((rv = pool_writer_get(s->pool, &db)) != 0)
		fatalx("cannot record the start: %s", err_str(rv));
	rv = outbox_enqueue(db, &ev);
	pool_writer_put(s->pool, db);
	if (rv != 0)
		fatalx("cannot record the start: %s", err_str(rv));
	outbox_kick(s->outbox);
}

void svc_serve(struct svc *s, const ProtobufCServiceDescriptor *desc,
               const struct rpc_method *methods, size_t nmethods, void *arg)
{
	struct rpc_server_opts opts = {.arg = arg};
	int rv, sig;

	if ((rv = rpc_server_start(s->conf.url[s->id], desc, methods, nmethods, &opts, &s->rpc)) !=
	    0)
		fatalx("cannot serve %s on %s: %s", desc->name, s->conf.url[s->id], err_str(rv));
	log_info("serving %s on %s instance=%s", desc->name, s->conf.url[s->id], s->instance);
	sig = svc_wait_signal();
	log_info("signal %d: stopping", sig);
	rpc_server_stop(s->rpc);
	s->rpc = NULL;
}

void svc_fini(struct svc *s)
{
	outbox_stop(s->outbox);
	s->outbox = NULL;
	rpc_client_close(s->audit);
	s->audit = NULL;
	pool_close(s->pool);
	s->pool = NULL;
	conf_fini(&s->conf);
}

int svc_path(const struct svc *s, const char *file, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%s", s->data_dir, file);
	return n < 0 || (size_t)n >= len ? ERR_INVAL : 0;
}

void svc_handle_ping(struct rpc_call *call, const ProtobufCMessage *input, void *arg)
{
	struct svc *s = arg;
	Magnetar__PingReply out = MAGNETAR__PING_REPLY__INIT;
	(void)input;
	out.service = (char *)svc_name(s->id);
	out.instance = s->instance;
	out.version = SVC_VERSION;
	out.uptime_ms = clock_mono_ms() - s->started_mono_ms;
	out.pid = (uint32_t)getpid();
	rpc_reply(call, &out.base);
}

struct stats_builder {
	Magnetar__Counter *items;
	Magnetar__Counter **ptrs;
	char (*names)[96];
	size_t n, cap;
};

static void stats_add(const char *name, uint64_t value, void *arg)
{
	struct stats_builder *b = arg;
	if (b->n == b->cap)
		return;
	magnetar__counter__init(&b->items[b->n]);
	snprintf(b->names[b->n], sizeof(b->names[0]), "%s", name);
	b->items[b->n].name = b->names[b->n];
	b->items[b->n].value = value;
	b->ptrs[b->n] = &b->items[b->n];
	b->n++;
}

void svc_handle_stats(struct rpc_call *call, const ProtobufCMessage *input, void *arg)
{
	enum { STATS_MAX = 256 };
	struct svc *s = arg;
	Magnetar__StatsReply out = MAGNETAR__STATS_REPLY__INIT;
	struct stats_builder b = {0};
	(void)input;

	b.cap = STATS_MAX;
	b.items = calloc(STATS_MAX, sizeof(*b.items));
	b.ptrs = calloc(STATS_MAX, sizeof(*b.ptrs));
	b.names = calloc(STATS_MAX, sizeof(*b.names));
	if (b.items == NULL || b.ptrs == NULL || b.names == NULL) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INTERNAL, "internal",
		                "out of memory");
		goto out;
	}
	stats_add("uptime_ms", clock_mono_ms() - s->started_mono_ms, &b);
	rpc_server_counters(rpc_call_server(call), stats_add, &b);
	if (s->pool != NULL) {
		struct pool_stats ps;
		pool_get_stats(s->pool, &ps);
		stats_add("db.readers_open", ps.readers_open, &b);
		stats_add("db.opened", ps.opened, &b);
		stats_add("db.recycled", ps.recycled, &b);
		stats_add("db.replaced", ps.replaced, &b);
		stats_add("db.checkout_timeouts", ps.checkout_timeouts, &b);
	}
	if (s->outbox != NULL) {
		struct outbox_stats os;
		outbox_get_stats(s->outbox, &os);
		stats_add("outbox.pending", os.pending, &b);
		stats_add("outbox.sent", os.sent, &b);
		stats_add("outbox.batches", os.batches, &b);
		stats_add("outbox.failures", os.failures, &b);
	}
	if (s->counters != NULL)
		s->counters(s, stats_add, &b);
	out.service = (char *)svc_name(s->id);
	out.n_counters = b.n;
	out.counters = b.ptrs;
	rpc_reply(call, &out.base);
out:
	free(b.items);
	free(b.ptrs);
	free(b.names);
}
