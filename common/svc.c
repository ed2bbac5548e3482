/*
 * svc.c — the start-up, signal and Ping/Stats code every program shares,
 * and the one place where a service's privileges are given up (privsep.c,
 * sandbox.c): Landlock before the first thread, the uid drop and seccomp
 * once the database and sockets are open, before the first request.
 */
#include "common/svc.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/fingerprint.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/outbox.h"
#include "common/pool.h"
#include "common/fault.h"
#include "common/privsep.h"
#include "common/replica.h"
#include "common/sandbox.h"

/* Who may connect to each service's RPC socket and to its publisher
 * (ARCHITECTURE.md §1): the gateway fronts auth and terminal, auth alone
 * asks breach, every producer ships its outbox to audit; the operator
 * (root, magctl) reaches everything. Methods narrow this in their rows. */
static const unsigned svc_admit[SVC_SERVICES] = {
    [SVC_GATEWAY] = SVC_BY_OPERATOR,
    /* The terminal only for Revoked (auth's rows narrow every method). */
    [SVC_AUTH] = RPC_BY(SVC_GATEWAY) | RPC_BY(SVC_TERMINAL) | SVC_BY_OPERATOR,
    [SVC_AUDIT] = SVC_BY_PRODUCERS | SVC_BY_OPERATOR,
    /* The gateway only for Ping (readiness): Range is auth's (its row). */
    [SVC_BREACH] = RPC_BY(SVC_AUTH) | RPC_BY(SVC_GATEWAY) | SVC_BY_OPERATOR,
    [SVC_TERMINAL] = RPC_BY(SVC_GATEWAY) | SVC_BY_OPERATOR,
};
static const unsigned svc_admit_events[SVC_SERVICES] = {
    /* Revocations: the gateways, and the terminal (it closes terminals). */
    [SVC_AUTH] = RPC_BY(SVC_GATEWAY) | RPC_BY(SVC_TERMINAL) | SVC_BY_OPERATOR,
    [SVC_AUDIT] = SVC_BY_OPERATOR, /* magctl audit tail */
};

/* One process, one service: its identities and rules, set by svc_init. */
static struct privsep svc_ps;
static struct sandbox_rules svc_rules; /* large: PATH_MAX per path */
static bool svc_landlocked;

static unsigned svc_roles(uid_t uid, void *arg)
{
	return privsep_roles(arg, uid);
}

/* Landlock reaches only the calling thread and what it creates later: this
 * runs before the first thread (nng, the pool, the outbox), so everything
 * the service ever runs is inside. The terminal comes here from
 * svc_open_db, after forking its spawner, which must stay outside. */
static void svc_sandbox_fs(struct svc *s)
{
	char err[256];

	if (svc_landlocked)
		return;
	svc_landlocked = true;
	if (sandbox_landlock(&svc_rules, err, sizeof(err)) != 0)
		fatalx("cannot restrict the filesystem: %s", err);
	(void)s;
}

int svc_own_user(const struct svc *s, uid_t *uid, gid_t *gid)
{
	if (!svc_ps.on || s->id >= SVC_SERVICES)
		return ERR_NOTFOUND;
	*uid = svc_ps.uid[s->id];
	*gid = svc_ps.gid[s->id];
	return 0;
}

void svc_lockdown(struct svc *s)
{
	char err[256];

	svc_sandbox_fs(s);
	/* Whatever root created since svc_init (the database, its WAL, keys)
	 * becomes the service's before it stops being root. */
	if (privsep_own(&svc_ps, s->id, s->data_dir) != 0)
		fatal("cannot give %s to %s", s->data_dir, svc_ps.name[s->id]);
	if (privsep_drop(&svc_ps, s->id, err, sizeof(err)) != 0)
		fatalx("cannot drop privileges to %s: %s", svc_ps.name[s->id], err);
	/* Peers learnt our uid when we connected: connect again as ourselves. */
	if (svc_ps.on)
		rpc_redial_all();
	if (svc_ps.on && access(s->data_dir, R_OK | W_OK | X_OK) != 0)
		fatal("%s cannot use its data dir %s (is a parent dir closed to it? it needs "
		      "o+x or the %s group)",
		      svc_ps.name[s->id], s->data_dir, s->conf.ipc_group);
	if (sandbox_seccomp(&svc_rules, err, sizeof(err)) != 0)
		fatalx("cannot load the system call filter: %s", err);
	if (svc_ps.on)
		log_info("privileges dropped: uid=%u gid=%u (%s), no_new_privs, sandbox=%s",
		         (unsigned)getuid(), (unsigned)getgid(), svc_ps.name[s->id],
		         s->conf.sandbox == CONF_SANDBOX_ENFORCE ? "enforce"
		         : s->conf.sandbox == CONF_SANDBOX_LOG   ? "log"
		                                                 : "off");
	else
		log_info("not root: running as uid %u, no users to separate; sandbox=%s",
		         (unsigned)getuid(),
		         s->conf.sandbox == CONF_SANDBOX_ENFORCE ? "enforce"
		         : s->conf.sandbox == CONF_SANDBOX_LOG   ? "log"
		                                                 : "off");
	fault_arm(); /* serving from here: injected faults may start (test only) */
}

/* The self-test's child: the whole lock-down in the order the service
 * takes it (Landlock, the drop, seccomp). */
static int svc_selftest_apply(void *arg)
{
	struct svc *s = arg;
	char err[256];

	if (sandbox_landlock(&svc_rules, err, sizeof(err)) != 0 ||
	    privsep_drop(&svc_ps, s->id, err, sizeof(err)) != 0 ||
	    sandbox_seccomp(&svc_rules, err, sizeof(err)) != 0) {
		fprintf(stderr, "selftest: lock-down failed: %s\n", err);
		return -1;
	}
	return 0;
}

/* --sandbox-selftest: a world-readable file outside our dirs (only Landlock
 * stands in the way), every other service's database that exists, a TCP
 * connect, an exec. Exits 0 when all are refused. */
static void __attribute__((noreturn)) svc_selftest(struct svc *s)
{
	char probe[PATH_MAX], db[SVC_SERVICES][PATH_MAX];
	const char *paths[SVC_SERVICES + 1];
	size_t n = 0;
	int fd, rv;

	snprintf(probe, sizeof(probe), "%s/.sandbox-probe-%s", s->conf.data_dir, svc_name(s->id));
	if ((fd = open(probe, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644)) < 0)
		fatal("cannot create %s", probe);
	fchmod(fd, 0644);
	close(fd);
	paths[n++] = probe;
	for (int i = 0; i < SVC_SERVICES; i++) {
		if (i == (int)s->id)
			continue;
		snprintf(db[i], sizeof(db[i]), "%s/%s/%s.db", s->conf.data_dir,
		         svc_name((enum svc_id)i), svc_name((enum svc_id)i));
		if (access(db[i], F_OK) == 0)
			paths[n++] = db[i];
	}
	printf("selftest: %s as %s, sandbox=%s, landlock ABI %d\n", svc_name(s->id),
	       svc_ps.name[s->id],
	       s->conf.sandbox == CONF_SANDBOX_ENFORCE ? "enforce"
	       : s->conf.sandbox == CONF_SANDBOX_LOG   ? "log"
	                                               : "off",
	       sandbox_landlock_abi());
	rv = sandbox_selftest(svc_selftest_apply, s, paths, n);
	unlink(probe);
	conf_fini(&s->conf);
	exit(rv);
}

static void svc_usage(const char *prog)
{
	fprintf(stderr,
	        "usage: %s [-n] [--sandbox-selftest]\n"
	        "  -n  check the MAGNETAR_* configuration, print it (secrets redacted), exit\n"
	        "  --sandbox-selftest  try a forbidden open, connect and exec inside this\n"
	        "      service's sandbox; exit 0 when each was refused\n",
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

/* Under privilege separation, the dir of each ipc:// entry of a replicated
 * service's list is root's alone (privsep_socket_dir): an entry no replica
 * holds must not be free for another service's user to listen on. */
static void svc_guard_entries(struct svc *s, const char *list)
{
	char entry[512], *slash;
	size_t count = replica_count(list);

	for (size_t n = 1; n <= count; n++) {
		if (replica_entry(list, n, entry, sizeof(entry)) != 0 ||
		    strncmp(entry, "ipc://", 6) != 0 || (slash = strrchr(entry + 6, '/')) == NULL)
			continue;
		*slash = '\0';
		if (privsep_socket_dir(&svc_ps, s->conf.run_dir, entry + 6) != 0)
			fatalx(
			    "%s's replica entries are in %s: they need a root-owned dir of their "
			    "own under the run dir, so that no other user can listen on a free "
			    "entry (ipc://%s/%s/1.sock,…; docs/scaling.md)",
			    svc_name(s->id), entry + 6, s->conf.run_dir, svc_name(s->id));
	}
}

/* Replicas (replica.h): given lists, take the first entry no running replica
 * holds, and keep only that entry of each list we listen on, so that the
 * listeners, the sandbox's rules and the logs see one URL. The lock stays
 * open, unused, for the life of the process. */
static void svc_claim_replica(struct svc *s)
{
	char **own[2] = {&s->conf.url[s->id], s->id == SVC_AUTH    ? &s->conf.auth_events_url
	                                      : s->id == SVC_AUDIT ? &s->conf.audit_events_url
	                                                           : NULL};
	size_t count = replica_count(s->conf.url[s->id]);
	char entry[512];
	int fd, rv;

	s->replica = s->replicas = 1;
	for (size_t n = 0; n <= RPC_URLS_MAX; n++)
		s->replica_lock[n] = -1;
	if (count == 1)
		return;
	if (count > RPC_URLS_MAX)
		fatalx("%s's URL lists %zu replicas: at most %d", svc_name(s->id), count,
		       RPC_URLS_MAX);
	if (own[1] != NULL && replica_count(*own[1]) != count)
		fatalx(
		    "%s's events URL lists %zu entries and its URL %zu: give each replica one of "
		    "each",
		    svc_name(s->id), replica_count(*own[1]), count);
	for (size_t i = 0; i < 2 && own[i] != NULL; i++)
		svc_guard_entries(s, *own[i]);
	/* Every entry held may be a moment's: another replica's outbox holds a
	 * dead entry's lock while it ships that entry's rows. */
	for (int tries = 0; (rv = replica_claim(s->conf.run_dir, svc_name(s->id), count,
	                                        &s->replica, &fd)) == ERR_EXISTS &&
	                    tries < 30;
	     tries++)
		usleep(100 * 1000);
	if (rv == ERR_EXISTS)
		fatalx("all %zu entries of %s's URL are held by running replicas: list one more to "
		       "start another",
		       count, svc_name(s->id));
	if (rv != 0)
		fatal("cannot claim a replica's entry in %s", s->conf.run_dir);
	for (size_t i = 0; i < 2 && own[i] != NULL; i++) {
		char *one;
		if (replica_entry(*own[i], s->replica, entry, sizeof(entry)) != 0 ||
		    (one = strdup(entry)) == NULL)
			fatalx("%s's URL list has an empty or too long entry", svc_name(s->id));
		free(*own[i]);
		*own[i] = one;
	}
	/* The others' lock files, opened now (as root, before the sandbox) for
	 * the outbox to tell a dead replica's claimed rows from a live one's:
	 * every possible entry, for a replica of a longer list may still run
	 * while the lists are being shortened. */
	s->replicas = RPC_URLS_MAX;
	for (size_t n = 1; n <= RPC_URLS_MAX; n++)
		if (n != s->replica &&
		    (s->replica_lock[n] = replica_open(s->conf.run_dir, svc_name(s->id), n)) < 0)
			fatal("cannot open a replica lock in %s", s->conf.run_dir);
	log_info("replica %zu of %zu: listening on %s", s->replica, count, s->conf.url[s->id]);
}

void svc_init(struct svc *s, enum svc_id id, int argc, char **argv)
{
	static const struct option longopts[] = {{"sandbox-selftest", no_argument, NULL, 'S'},
	                                         {"help", no_argument, NULL, 'h'},
	                                         {NULL, 0, NULL, 0}};
	char err[256];
	bool check_only = false, selftest = false;
	struct rlimit no_core = {0, 0};
	struct rpc_peer_policy policy;
	sigset_t set;
	int opt;

	memset(s, 0, sizeof(*s));
	s->id = id;
	s->started_mono_ms = clock_mono_ms();
	log_init(svc_name(id), LOG_TEXT, getenv("MAGNETAR_DEBUG") != NULL);
	while ((opt = getopt_long(argc, argv, "nh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'n':
			check_only = true;
			break;
		case 'S':
			selftest = true;
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
	/* Before anything touches SQLite (the reliability suite, test only). */
	if (fault_install(&s->conf, err, sizeof(err)) != 0)
		fatalx("configuration refused: %s", err);
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
		/* As root: our user (created when missing, for a service started
		 * without the supervisor), the dirs' owners and modes. */
		if (privsep_init(&svc_ps, &s->conf, true, err, sizeof(err)) != 0)
			fatalx("privilege separation: %s", err);
		if (privsep_prepare(&svc_ps, s->conf.data_dir, s->conf.run_dir) != 0 ||
		    privsep_own(&svc_ps, id, s->data_dir) != 0)
			fatal("cannot set the owners of %s and %s", s->data_dir, s->conf.run_dir);
		svc_claim_replica(s);
		/* SQLite's temporary files stay in our own dir, not a shared /tmp. */
		setenv("SQLITE_TMPDIR", s->data_dir, 1);
		policy = (struct rpc_peer_policy){.roles = svc_roles,
		                                  .arg = &svc_ps,
		                                  /* Our own uid too: svc_self_check. */
		                                  .admit = svc_admit[id] | RPC_BY(id),
		                                  .admit_events = svc_admit_events[id]};
		rpc_set_peer_policy(&policy);
		/* auth and the gateways share a development fingerprint key beside
		 * the service dirs: made now, while nothing stands in the way. */
		if ((id == SVC_AUTH || id == SVC_GATEWAY) && s->conf.fingerprint_key == NULL &&
		    s->conf.env != CONF_ENV_PRODUCTION) {
			unsigned char fp[32];
			if (fingerprint_key_load(&s->conf, fp) != 0)
				fatalx("cannot create the development fingerprint key in %s",
				       s->conf.data_dir);
			OPENSSL_cleanse(fp, sizeof(fp));
		}
		if (sandbox_rules(&svc_rules, &s->conf, id, s->data_dir) != 0)
			fatalx("too many paths or ports for the sandbox's rules");
		if (svc_ps.on)
			log_info("privsep: will run as %s (uid %u) once files and sockets are open",
			         svc_ps.name[id], (unsigned)svc_ps.uid[id]);
		if (selftest)
			svc_selftest(s);
	} else if (selftest) {
		fatalx("--sandbox-selftest is for services");
	}
	conf_print(&s->conf);
	/* The spawner the terminal forks next must stay outside (svc_open_db). */
	if (id < SVC_SERVICES && id != SVC_TERMINAL)
		svc_sandbox_fs(s);
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
	svc_sandbox_fs(s); /* the terminal's, after its spawner; no-op otherwise */
	if ((rv = pool_open(path, schema, NULL, &s->pool)) != 0)
		fatalx("cannot open database %s: %s", path, err_str(rv));
}

/* outbox_opts.hold: a slot is dead when its lock is free, and stays ours
 * until svc_release_slot. An unreplicated service (one URL) holds no locks:
 * rows of other slots are left from when it was replicated, and it ships
 * them itself. */
static bool svc_hold_slot(void *arg, int n)
{
	struct svc *s = arg;
	if (n < 1 || (size_t)n > s->replicas)
		return true;
	return s->replica_lock[n] >= 0 && flock(s->replica_lock[n], LOCK_EX | LOCK_NB) == 0;
}

static void svc_release_slot(void *arg, int n)
{
	struct svc *s = arg;
	if (n >= 1 && (size_t)n <= s->replicas && s->replica_lock[n] >= 0)
		flock(s->replica_lock[n], LOCK_UN);
}

void svc_start_outbox(struct svc *s)
{
	const struct outbox_opts opts = {.slot = (int)s->replica,
	                                 .hold = svc_hold_slot,
	                                 .release = svc_release_slot,
	                                 .hold_arg = s};
	struct outbox_event ev = {.action = "service.started",
	                          .actor = svc_name(s->id),
	                          .target = s->instance,
	                          .outcome = "success"};
	struct sqlite3 *db;
	int rv;

	/* Audit takes the producer's identity from its uid: dial as ourselves,
	 * after svc_lockdown, never as root. Events wait in the outbox. */
	rpc_hold_dials(svc_ps.on);
	rv = rpc_client_open(s->conf.url[SVC_AUDIT], 0, &s->audit);
	rpc_hold_dials(false);
	if (rv != 0)
		fatalx("cannot open a client of magnetar-audit: %s", err_str(rv));
	if ((rv = outbox_start(s->pool, svc_name(s->id), s->audit, &opts, &s->outbox)) != 0)
		fatalx("cannot start the audit outbox: %s", err_str(rv));
	if ((rv = pool_writer_get(s->pool, &db)) != 0)
		fatalx("cannot record the start: %s", err_str(rv));
	rv = outbox_enqueue(db, &ev);
	pool_writer_put(s->pool, db);
	if (rv != 0)
		fatalx("cannot record the start: %s", err_str(rv));
	outbox_kick(s->outbox);
}

/* A Ping to ourselves: false only when the socket stays silent for 3 s.
 * nng 1.5 now and then stops reading a listener's connections, after a
 * start or a SIGCONT (docs/reliability.md: bytes sit unread in the kernel,
 * every thread idle); such a service would look up and answer nothing, for
 * good, so the callers exit for whoever started us (the supervisor, Docker,
 * systemd) to start us again. Our own uid is on our allow-list for this
 * (svc_init). */
static bool svc_ping_self(struct svc *s, const ProtobufCServiceDescriptor *desc)
{
	Magnetar__PingRequest req = MAGNETAR__PING_REQUEST__INIT;
	struct rpc_client *self;
	struct rpc_result r;
	bool alive;
	int rv;

	/* Only silence proves the stall: a call that could not even start
	 * (no memory, say, under MAGNETAR_FAULT_ALLOC) proves nothing. */
	if ((rv = rpc_client_open(s->conf.url[s->id], 0, &self)) != 0) {
		log_warnx("self-check skipped: cannot dial our own socket: %s", err_str(rv));
		return true;
	}
	rv = rpc_call_sync(self, desc, "Ping", &req.base, NULL, 3000, &r);
	alive = rv != 0 || (r.status != MAGNETAR__STATUS__STATUS_UNAVAILABLE &&
	                    r.status != MAGNETAR__STATUS__STATUS_DEADLINE_EXCEEDED);
	if (rv != 0)
		log_warnx("self-check skipped: %s", err_str(rv));
	else
		rpc_result_fini(&r);
	rpc_client_close(self);
	return alive;
}

static void svc_self_check(struct svc *s, const ProtobufCServiceDescriptor *desc)
{
	if (!svc_ping_self(s, desc))
		fatalx("our own RPC socket %s does not answer (nng's start-up stall, "
		       "docs/reliability.md): exiting to be started again",
		       s->conf.url[s->id]);
}

/* The same check every SVC_WATCH_MS while serving: the stall was also seen
 * after a SIGSTOP/SIGCONT (test_faults, audit silent for a minute). Three
 * silent checks in a row (about 15 s: a busy service answers a Ping within
 * milliseconds) exit for a restart. */
#define SVC_WATCH_MS 5000
struct svc_watch {
	struct svc *s;
	const ProtobufCServiceDescriptor *desc;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
};

static void *svc_watch_main(void *arg)
{
	struct svc_watch *w = arg;
	int silent = 0;

	pthread_mutex_lock(&w->mu);
	while (!w->stop) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += SVC_WATCH_MS / 1000;
		pthread_cond_timedwait(&w->cv, &w->mu, &until);
		if (w->stop)
			break;
		pthread_mutex_unlock(&w->mu);
		silent = svc_ping_self(w->s, w->desc) ? 0 : silent + 1;
		if (silent == 3)
			fatalx("our own RPC socket %s stopped answering (nng's stall, "
			       "docs/reliability.md): exiting to be started again",
			       w->s->conf.url[w->s->id]);
		pthread_mutex_lock(&w->mu);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

void svc_serve(struct svc *s, const ProtobufCServiceDescriptor *desc,
               const struct rpc_method *methods, size_t nmethods, void *arg)
{
	struct rpc_server_opts opts = {.arg = arg};
	struct svc_watch watch = {
	    .s = s, .desc = desc, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
	pthread_t watcher;
	bool watching;
	int rv, sig;

	/* Bound as root, so that the socket file is root's and its name never
	 * goes free for another user to squat (privsep.h). Requests that come
	 * in the few milliseconds before the drop are served as root: holding
	 * them back (contexts not yet receiving) stalled nng 1.5's rep0 pipes. */
	if ((rv = rpc_server_start(s->conf.url[s->id], desc, methods, nmethods, &opts, &s->rpc)) !=
	    0)
		fatalx("cannot serve %s on %s: %s", desc->name, s->conf.url[s->id], err_str(rv));
	svc_lockdown(s);
	svc_self_check(s, desc);
	log_info("serving %s on %s instance=%s", desc->name, s->conf.url[s->id], s->instance);
	watching = pthread_create(&watcher, NULL, svc_watch_main, &watch) == 0;
	sig = svc_wait_signal();
	log_info("signal %d: stopping", sig);
	pthread_mutex_lock(&watch.mu);
	watch.stop = true;
	pthread_cond_signal(&watch.cv);
	pthread_mutex_unlock(&watch.mu);
	if (watching)
		pthread_join(watcher, NULL);
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
	stats_add("replica", s->replica, &b);
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
		stats_add("outbox.adopted", os.adopted, &b);
	}
	if (fault_injected() > 0)
		stats_add("faults.injected", fault_injected(), &b);
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
