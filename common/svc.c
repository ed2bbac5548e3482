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
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/events.h"
#include "common/mkdirs.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/outbox.h"
#include "common/pool.h"
#include "common/fault.h"
#include "common/privsep.h"
#include "common/replica.h"
#include "common/sandbox.h"
#include "common/sp_probe.h"

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

/* Our sockets' files (RPC, events), bound as root, become our user's (group and mode
 * unchanged: magnetar, 0660), so that we can listen again after the drop
 * (rpc_server_relisten, svc_watch_main): in the sticky run dir only the
 * file's owner may unlink it. The price, a name free for a few
 * microseconds during a re-listen, is in docs/reliability.md. Replicas'
 * entries sit in a root-owned dir (svc_guard_entries) where we cannot bind
 * at all: they keep root's file, and a stall still exits for a restart. */
static void svc_own_path(const char *path, void *arg)
{
	const struct svc *s = arg;
	char dir[512], *slash;
	struct stat st;

	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) != NULL)
		*slash = '\0';
	if (slash == NULL || stat(dir, &st) != 0 || st.st_uid != 0 || (st.st_mode & S_IWGRP) == 0)
		return;
	if (lchown(path, svc_ps.uid[s->id], (gid_t)-1) != 0)
		fatal("cannot give our socket %s to %s", path, svc_ps.name[s->id]);
}

/* Every ipc:// socket we listen on (RPC, events): rpc_listen_paths. */
static void svc_own_socket(struct svc *s)
{
	if (svc_ps.on)
		rpc_listen_paths(svc_own_path, s);
}

void svc_lockdown(struct svc *s)
{
	char err[256];

	svc_sandbox_fs(s);
	/* Whatever root created since svc_init (the database, its WAL, keys)
	 * becomes the service's before it stops being root. */
	if (privsep_own(&svc_ps, s->id, s->data_dir) != 0)
		fatal("cannot give %s to %s", s->data_dir, svc_ps.name[s->id]);
	svc_own_socket(s);
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
	char **own[2] = {&s->conf.url[s->id],
	                 s->conf.events_url[s->id] != NULL ? &s->conf.events_url[s->id] : NULL};
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
	 * dead entry's lock while it ships one batch of that entry's rows
	 * (outbox_adopt releases it between batches). 15 s covers a batch sent
	 * to a slow audit; only then is the entry taken for good, and a
	 * restarted replica that gave up sooner would exit 0 and stay down. */
	for (int tries = 0; (rv = replica_claim(s->conf.run_dir, svc_name(s->id), count,
	                                        &s->replica, &fd)) == ERR_EXISTS &&
	                    tries < 150;
	     tries++)
		usleep(100 * 1000);
	/* Exit 0, a status `restart: on-failure` (Compose, systemd) does not
	 * retry: a restart would find the same entries held. */
	if (rv == ERR_EXISTS) {
		log_warnx("all %zu entries of %s's URL are held by running replicas: list one "
		          "more to start another; exiting",
		          count, svc_name(s->id));
		exit(0);
	}
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

/* The watchdog's exits, counted across them: one line appended per exit to
 * <data dir>/watchdog-exits (shared by the service's replicas: the count is
 * the service's), counted by Stats as "svc.watchdog_exits" (hence in the
 * gateway's /metrics). The exit is the last resort behind the re-listen;
 * an alert on this counter finds a stall the re-listen could not cure. */
#define SVC_WATCHDOG_FILE "watchdog-exits"
static const struct svc *svc_self; /* for the events publisher's exit hook */

static uint64_t svc_watchdog_exits(const struct svc *s)
{
	char path[600], buf[4096];
	uint64_t n = 0;
	ssize_t got;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", s->data_dir, SVC_WATCHDOG_FILE);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return 0;
	while ((got = read(fd, buf, sizeof(buf))) > 0)
		for (ssize_t i = 0; i < got; i++)
			n += buf[i] == '\n';
	close(fd);
	return n;
}

/* Before the watchdog's exit: one line, appended (replicas may do the same
 * at once: each O_APPEND write lands whole). */
static void svc_watchdog_count(const struct svc *s)
{
	char path[600], line[64];
	int fd, n;

	snprintf(path, sizeof(path), "%s/%s", s->data_dir, SVC_WATCHDOG_FILE);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600)) < 0)
		return;
	n = snprintf(line, sizeof(line), "%llu replica=%zu\n", (unsigned long long)clock_unix_ms(),
	             s->replica);
	if (write(fd, line, (size_t)n) != n)
		log_warn("cannot count the watchdog's exit in %s", path);
	fsync(fd);
	close(fd);
}

/* events.c's hook: a publisher that cannot listen again exits the same way. */
static void svc_watchdog_count_self(void)
{
	if (svc_self != NULL)
		svc_watchdog_count(svc_self);
}

void svc_init(struct svc *s, const struct svc_program *p, int argc, char **argv)
{
	enum svc_id id = p->id;
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
	svc_self = s;
	events_set_exit_hook(svc_watchdog_count_self);
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
	if (conf_load(&s->conf, id, p->vars, err, sizeof(err)) != 0)
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
		if (mkdirs(s->data_dir, 0700) != 0)
			fatal("cannot create data dir %s", s->data_dir);
		if (mkdirs(s->conf.run_dir, 0755) != 0)
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
		                                  /* Our own uid too: svc_check. */
		                                  .admit = p->admit | RPC_BY(id),
		                                  .admit_events = p->admit_events};
		rpc_set_peer_policy(&policy);
		if (sandbox_rules(&svc_rules, &s->conf, id, s->data_dir) != 0 ||
		    (p->sandbox != NULL && p->sandbox(&svc_rules, &s->conf) != 0))
			fatalx("cannot set up the sandbox's rules (too many paths or ports, or a "
			       "file it needs could not be made)");
		if (svc_ps.on)
			log_info("privsep: will run as %s (uid %u) once files and sockets are open",
			         svc_ps.name[id], (unsigned)svc_ps.uid[id]);
		if (selftest)
			svc_selftest(s);
	} else if (selftest) {
		fatalx("--sandbox-selftest is for services");
	}
	conf_print(&s->conf);
	/* A program that forks a helper first (the terminal's spawner) closes
	 * its file sandbox later, in svc_open_db. */
	if (id < SVC_SERVICES && !p->sandbox_fs_later)
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
	rv = rpc_client_open_for(s->conf.url[SVC_AUDIT], 0, SVC_SERVER_ROLES(SVC_AUDIT), &s->audit);
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

/* The self-check: nng 1.5 now and then stops serving its listener, after a
 * start, a SIGCONT, or a peer that hung up before our handshake (nng issue
 * 1518, which anyone in the magnetar group can trigger at will):
 * docs/reliability.md. Connections made after that are taken by nng's
 * transport and never accepted by the listener (bytes sit unread in the
 * kernel, every thread idle); the service looks up and answers nothing new,
 * for good. Two proofs that it serves, each over a new connection (pipes
 * accepted before the stall keep working, so an old one proves nothing):
 * its listener accepts a pipe within SVC_ACCEPT_MS (nng's own threads do
 * that, however busy our workers are: usually well under 1 ms), and a Ping
 * is answered within SVC_PING_MS (through the workers; the start-up stall
 * left accepted pipes unread). Our own uid is on our allow-list for this
 * (svc_init). */
#define SVC_ACCEPT_MS 500
#define SVC_PING_MS 3000

/* Connects to our own socket (sp_probe.h: a plain socket, no nng one,
 * whose closing every 500 ms would be the churn that wedges nng 1.5's
 * reaper): false when no pipe at all was accepted within SVC_ACCEPT_MS.
 * The probe is handed back open, for the Ping (fd -1 if it could not even
 * be made for want of a descriptor: then true, as a check that could not
 * start proves nothing about the listener). */
static bool svc_accepts(struct svc *s, struct sp_probe *self)
{
	uint64_t before = rpc_server_pipes(s->rpc), until = clock_mono_ms() + SVC_ACCEPT_MS;
	const struct timespec tick = {.tv_nsec = 2000000};
	int rv;

	rv = sp_probe_open(self, s->conf.url[s->id], SP_PROTO_REQ, SP_PROTO_REP, SVC_ACCEPT_MS);
	if (rv == ERR_NOMEM) {
		log_warnx("self-check skipped: no descriptor for the probe");
		return true;
	}
	if (rv == ERR_INVAL)
		return true; /* not ipc:// or tcp:// (svc_watch_start said so once) */
	if (rv == ERR_PERM || rv == ERR_PROTO)
		log_warnx("self-check: what answers on our own socket %s is not our listener (%s)",
		          s->conf.url[s->id], err_str(rv));
	if (rv != 0)
		return false; /* refused, silent, or someone else's: not served */
	while (rpc_server_pipes(s->rpc) == before) {
		if (clock_mono_ms() >= until)
			return false;
		nanosleep(&tick, NULL);
	}
	return true;
}

/* False only when `self` got no answer within SVC_PING_MS. */
static bool svc_pings(struct sp_probe *self)
{
	static _Atomic uint32_t next_id;
	Magnetar__RpcRequest env = MAGNETAR__RPC_REQUEST__INIT;
	Magnetar__RpcReply *reply;
	uint8_t req[256], ans[4096];
	size_t len, got;
	bool alive;
	int rv;

	if (self->fd < 0)
		return true;
	env.method = "Ping";
	env.request_id = "self-check";
	env.deadline_unix_ms = clock_unix_ms() + SVC_PING_MS;
	len = magnetar__rpc_request__pack(&env, req); /* an empty PingRequest: a few bytes */
	rv = sp_probe_call(self, atomic_fetch_add(&next_id, 1) & 0x7fffffffu, req, len, ans,
	                   sizeof(ans), &got, SVC_PING_MS);
	if (rv != 0)
		return false;
	if ((reply = magnetar__rpc_reply__unpack(NULL, got, ans)) == NULL)
		return false;
	alive = reply->status != MAGNETAR__STATUS__STATUS_UNAVAILABLE &&
	        reply->status != MAGNETAR__STATUS__STATUS_DEADLINE_EXCEEDED;
	magnetar__rpc_reply__free_unpacked(reply, NULL);
	return alive;
}

/* One check; on failure, listen again (rpc_server_relisten: nng closes the
 * old listener's pipes, stuck ones included) and check once more. False
 * when even that fails; exits at once, saying `stall`, when we could not
 * listen again (nothing listens any more: only a restart helps). */
static bool svc_check(struct svc *s, const char *stall)
{
	struct sp_probe self;
	bool accepted;
	int rv;

	accepted = svc_accepts(s, &self);
	if (accepted && svc_pings(&self)) {
		sp_probe_close(&self);
		return true;
	}
	/* Closed before the re-listen: its connection belongs to the old
	 * listener, which has written its handshake already (nng's transport
	 * still negotiates during the stall). Closed after it, a dialer that
	 * had just reconnected to the new listener would be cut mid-handshake:
	 * the trigger itself. */
	sp_probe_close(&self);
	rv = rpc_server_relisten(s->rpc);
	if (rv != 0) {
		svc_watchdog_count(s);
		fatalx("our own RPC socket %s %s, and we cannot listen on it again (%s): exiting "
		       "to be started again",
		       s->conf.url[s->id], stall, err_str(rv));
	}
	if (accepted)
		log_warnx(
		    "our own RPC socket %s did not answer a Ping within %d ms: listening again "
		    "(nng 1.5's stall, docs/reliability.md)",
		    s->conf.url[s->id], SVC_PING_MS);
	else
		log_warnx("our own RPC socket %s accepted no connection within %d ms: listening "
		          "again (nng 1.5's listener stall, docs/reliability.md)",
		          s->conf.url[s->id], SVC_ACCEPT_MS);
	accepted = svc_accepts(s, &self);
	accepted = accepted && svc_pings(&self);
	sp_probe_close(&self);
	return accepted;
}

/* The same check every SVC_WATCH_MS while serving, so that a listener
 * stall lasts at most SVC_WATCH_MS + SVC_ACCEPT_MS (1 s): it was also seen
 * after a SIGSTOP/SIGCONT (test_faults, audit silent for a minute), and any
 * member of the magnetar group can cause it at will (test_listener_stall).
 * A check costs a connection and a Ping, about 100 µs of CPU. Three checks in a
 * row that fail even after a re-listen (up to about 15 s) exit for a
 * restart. */
#define SVC_WATCH_MS 500
/* What the exits say (test_faults and test_scaling look for them). */
#define SVC_STALL "stopped answering (nng's stall, docs/reliability.md)"
#define SVC_START_STALL "does not answer (nng's start-up stall, docs/reliability.md)"
static struct svc_watch {
	struct svc *s;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	pthread_t thread;
	bool running;
} svc_watch = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void *svc_watch_main(void *arg)
{
	struct svc_watch *w = arg;
	int silent = 0;

	pthread_mutex_lock(&w->mu);
	while (!w->stop) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += (long)(SVC_WATCH_MS % 1000) * 1000000L;
		until.tv_sec += SVC_WATCH_MS / 1000 + until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		pthread_cond_timedwait(&w->cv, &w->mu, &until);
		if (w->stop)
			break;
		pthread_mutex_unlock(&w->mu);
		/* Our clients' side of the same nng: a dialer it gave up on. */
		rpc_dials_renew_idle(clock_mono_ms());
		silent = svc_check(w->s, SVC_STALL) ? 0 : silent + 1;
		if (silent == 3) {
			svc_watchdog_count(w->s);
			fatalx("our own RPC socket %s %s: exiting to be started again",
			       w->s->conf.url[w->s->id], SVC_STALL);
		}
		pthread_mutex_lock(&w->mu);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

void svc_watch_start(struct svc *s)
{
	char entry[512];

	/* A socket our own user cannot connect to (an ipc:// URL outside the
	 * run dir, in a dir closed to it) would fail every check, and the
	 * re-listen there too: nobody but root can use it, a stall included.
	 * access(), not a test connection: a connect-then-close is the very
	 * hang-up that stalls nng 1.5's listener. */
	if (rpc_url_first(s->conf.url[s->id], entry, sizeof(entry)) != 0 ||
	    (strncmp(entry, "ipc://", 6) != 0 && strncmp(entry, "tcp://", 6) != 0)) {
		log_warnx("self-check off: %s is neither ipc:// nor tcp://, where nng's listener "
		          "stall happens (docs/reliability.md)",
		          s->conf.url[s->id]);
		return;
	}
	if (strncmp(entry, "ipc://", 6) == 0 && access(entry + 6, W_OK) != 0) {
		log_warnx(
		    "self-check off: our own socket %s is closed to us (%s), so nng's listener "
		    "stall would go unnoticed (docs/reliability.md)",
		    entry + 6, strerror(errno));
		return;
	}
	/* Right after the drop: the start-up stall (docs/reliability.md). */
	if (!svc_check(s, SVC_START_STALL)) {
		svc_watchdog_count(s);
		fatalx("our own RPC socket %s %s: exiting to be started again", s->conf.url[s->id],
		       SVC_START_STALL);
	}
	svc_watch.s = s;
	svc_watch.stop = false;
	svc_watch.running =
	    pthread_create(&svc_watch.thread, NULL, svc_watch_main, &svc_watch) == 0;
	if (!svc_watch.running)
		log_warnx("self-check: cannot start its thread: the socket goes unwatched");
}

void svc_watch_stop(void)
{
	pthread_mutex_lock(&svc_watch.mu);
	svc_watch.stop = true;
	pthread_cond_signal(&svc_watch.cv);
	pthread_mutex_unlock(&svc_watch.mu);
	if (svc_watch.running)
		pthread_join(svc_watch.thread, NULL);
	svc_watch.running = false;
}

void svc_serve(struct svc *s, const ProtobufCServiceDescriptor *desc,
               const struct rpc_method *methods, size_t nmethods, void *arg)
{
	struct rpc_server_opts opts = {.arg = arg};
	int rv, sig;

	/* Bound as root, so that no other user can take the name first
	 * (privsep.h); svc_lockdown then gives the file to our user for the
	 * re-listen. Requests that come in the few milliseconds before the drop
	 * are served as root: holding them back (contexts not yet receiving)
	 * stalled nng 1.5's rep0 pipes. */
	if ((rv = rpc_server_start(s->conf.url[s->id], desc, methods, nmethods, &opts, &s->rpc)) !=
	    0)
		fatalx("cannot serve %s on %s: %s", desc->name, s->conf.url[s->id], err_str(rv));
	svc_lockdown(s);
	svc_watch_start(s);
	log_info("serving %s on %s instance=%s", desc->name, s->conf.url[s->id], s->instance);
	sig = svc_wait_signal();
	log_info("signal %d: stopping", sig);
	svc_watch_stop();
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
	stats_add("svc.watchdog_exits", svc_watchdog_exits(s), &b);
	stats_add("rpc.dialers_renewed", rpc_dials_renewed(), &b);
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
		stats_add("outbox.rekeyed", os.rekeyed, &b);
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
