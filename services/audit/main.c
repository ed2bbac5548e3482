/*
 * main.c — magnetar-audit: configuration, the keyring (refusing a keyring
 * that does not parse; generating a development one loudly), audit.db and
 * the chain, the RPC loop (Audit + AuditLog on one socket).
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "common/err.h"
#include "common/events.h"
#include "common/log.h"
#include "common/pool.h"
#include "common/sandbox.h"
#include "services/audit/audit.h"
#include "services/audit/vars.h"

static const struct rpc_method audit_methods[] = {
    {.name = "Ping", .handler = svc_handle_ping},
    {.name = "Stats", .handler = svc_handle_stats},
    {.name = "Append",
     .handler = append_handle,
     .flags = RPC_F_MUTATES | RPC_F_CALLERS(SVC_BY_PRODUCERS | SVC_BY_OPERATOR)},
    {.name = "Query",
     .handler = query_handle,
     .flags = RPC_F_CALLERS(RPC_BY(SVC_GATEWAY) | SVC_BY_OPERATOR)},
    {.name = "Verify",
     .handler = verify_handle,
     .flags = RPC_F_CALLERS(RPC_BY(SVC_GATEWAY) | SVC_BY_OPERATOR)},
    /* Idempotent enough per request id: a re-sent call seals one more,
     * possibly empty, epoch and re-reads the same file. */
    {.name = "RotateKey",
     .handler = rotate_handle,
     .flags = RPC_F_MUTATES | RPC_F_CALLERS(SVC_BY_OPERATOR)},
};

static void audit_counters(struct svc *s, svc_counter_fn emit, void *emit_arg)
{
	struct audit_state *st = ((struct audit *)s)->st;
	if (st == NULL)
		return;
	emit("audit.events_stored", atomic_load(&st->events), emit_arg);
	emit("audit.duplicates", atomic_load(&st->dups), emit_arg);
	emit("audit.refused", atomic_load(&st->refused), emit_arg);
	emit("audit.integrity_breaks", atomic_load(&st->breaks), emit_arg);
	emit("audit.commits", atomic_load(&st->groups), emit_arg);
	emit("audit.epoch", atomic_load(&st->epoch), emit_arg);
	emit("audit.epochs_sealed", atomic_load(&st->sealed), emit_arg);
	emit("audit.keys", keyring_count(&st->keys), emit_arg);
	if (st->pub != NULL)
		emit("events.relisten", events_pub_relistens(st->pub), emit_arg);
}

/* The keyring file named by MAGNETAR_AUDIT_KEYS_FILE (or its singular
 * alias), or NULL: RotateKey re-reads it. */
static const char *audit_key_file(void)
{
	const char *file = getenv("MAGNETAR_AUDIT_KEYS_FILE");
	return file != NULL ? file : getenv("MAGNETAR_AUDIT_KEY_FILE");
}

/* The keyring: from the configuration, or outside production audit's own
 * generated file in its data dir. Exits with one clear line on failure. */
static void audit_keys(struct audit *a, struct audit_keyring *kr, struct audit_opts *opts,
                       char *path, size_t pathlen)
{
	const struct audit_vars *v = a->svc.conf.own;
	const char *file = audit_key_file();
	char err[256];

	if (v->keys != NULL) {
		if (keyring_parse(v->keys, kr, err, sizeof(err)) != 0)
			fatalx("%s: %s",
			       file != NULL ? "MAGNETAR_AUDIT_KEYS_FILE" : "MAGNETAR_AUDIT_KEYS",
			       err);
		if (file != NULL) {
			snprintf(path, pathlen, "%s", file);
			opts->keys_path = path;
		}
		return;
	}
	if (a->svc.conf.env == CONF_ENV_PRODUCTION) /* config refuses this already */
		fatalx("MAGNETAR_AUDIT_KEYS (or MAGNETAR_AUDIT_KEYS_FILE) is required when "
		       "MAGNETAR_ENV=production");
	if (svc_path(&a->svc, "audit.keys", path, pathlen) != 0)
		fatalx("data dir path too long");
	if (access(path, F_OK) != 0) {
		if (keyring_generate(path, err, sizeof(err)) != 0)
			fatalx("%s", err);
		log_warnx("!!! NO AUDIT KEY CONFIGURED: generated a DEVELOPMENT keyring in %s. "
		          "Events encrypted with it are readable by whoever reads that file. "
		          "Set MAGNETAR_AUDIT_KEYS_FILE for anything real. !!!",
		          path);
	} else {
		log_warnx("!!! using the generated DEVELOPMENT audit keyring %s !!!", path);
	}
	if (keyring_load_file(path, kr, err, sizeof(err)) != 0)
		fatalx("%s", err);
	opts->keys_path = path;
	opts->keys_generated = true;
}

/* audit is one writer by design: one hash chain and one nonce counter per
 * key, which two processes appending to one database would fork. A second
 * audit on the same data dir (`--scale audit=2` on one volume) says so and
 * exits 0, a status `restart: on-failure` and systemd's Restart=on-failure do
 * not retry; the lock is held, unused, until we exit. */
static void audit_single_writer(const struct svc *s)
{
	char path[600];
	int fd;

	if (svc_path(s, "audit.writer", path, sizeof(path)) != 0)
		fatalx("data dir path too long");
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0)
		fatal("cannot open %s", path);
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		return;
	if (errno != EWOULDBLOCK)
		fatal("cannot lock %s", path);
	log_warnx("another audit already writes this log (%s is locked): audit is a single "
	          "writer and does not scale (docs/scaling.md); exiting",
	          path);
	exit(0);
}

/* RotateKey re-reads a configured key file. */
static int audit_sandbox(struct sandbox_rules *r, const struct conf *c)
{
	const char *file = audit_key_file();
	(void)c;
	return file != NULL && file[0] == '/' ? sandbox_allow_read(r, file) : 0;
}

/* Every producer ships its outbox here; the operator tails the events. */
static const struct svc_program audit_program = {.id = SVC_AUDIT,
                                                 .vars = &audit_conf_table,
                                                 .admit = SVC_BY_PRODUCERS | SVC_BY_OPERATOR,
                                                 .admit_events = SVC_BY_OPERATOR,
                                                 .sandbox = audit_sandbox};

int main(int argc, char **argv)
{
	static struct audit a;
	static struct audit_keyring keys;
	struct audit_opts opts = {.pipeline = true};
	char keys_path[600], chain[600], anchor[600], err[512];

	svc_init(&a.svc, &audit_program, argc, argv);
	audit_single_writer(&a.svc);
	a.svc.counters = audit_counters;
	audit_keys(&a, &keys, &opts, keys_path, sizeof(keys_path));
	svc_open_db(&a.svc, "audit.db", &store_schema);
	if (svc_path(&a.svc, "audit.chain", chain, sizeof(chain)) != 0 ||
	    svc_path(&a.svc, "audit.anchor", anchor, sizeof(anchor)) != 0)
		fatalx("data dir path too long");
	opts.chain_path = chain;
	opts.anchor_path = anchor;
	opts.events_url = a.svc.conf.events_url[SVC_AUDIT];
	if (audit_open(&a, &keys, &opts, err, sizeof(err)) != 0)
		fatalx("cannot open the audit log: %s", err);
	keyring_wipe(&keys);
	log_info("audit log open: %zu key(s), current key %s, epoch %llu",
	         keyring_count(&a.st->keys), keyring_current(&a.st->keys)->id,
	         (unsigned long long)atomic_load(&a.st->epoch));
	svc_serve(&a.svc, service_descriptor(), audit_methods,
	          sizeof(audit_methods) / sizeof(audit_methods[0]), &a);
	audit_close(&a);
	svc_fini(&a.svc);
	log_info("stopped");
	return 0;
}
