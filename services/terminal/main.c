/*
 * main.c — magnetar-terminal: configuration, the shell user, the spawner
 * (forked before any thread, database or socket exists), terminal.db, the
 * audit outbox, the reaper, the RPC loop, and a stop that closes every shell.
 */
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "services/terminal/terminal.h"

static const struct rpc_method terminal_methods[] = {
    {.name = "Ping", .handler = svc_handle_ping},
    {.name = "Stats", .handler = svc_handle_stats},
    {.name = "Open", .handler = control_open, .flags = RPC_F_MUTATES},
    {.name = "List", .handler = control_list},
    {.name = "Close", .handler = control_close, .flags = RPC_F_MUTATES},
    {.name = "Attach", .handler = control_attach, .flags = RPC_F_MUTATES},
};

static void terminal_counters(struct svc *s, svc_counter_fn emit, void *emit_arg)
{
	struct terminal *t = (struct terminal *)s;
	int open;

	pthread_mutex_lock(&t->mu);
	open = t->nsessions;
	pthread_mutex_unlock(&t->mu);
	emit("terminal.open", (uint64_t)(open > 0 ? open : 0), emit_arg);
	emit("terminal.opened", atomic_load(&t->opened), emit_arg);
	emit("terminal.closed", atomic_load(&t->closed), emit_arg);
	emit("terminal.denied", atomic_load(&t->denied), emit_arg);
	emit("terminal.bytes_in", atomic_load(&t->bytes_in), emit_arg);
	emit("terminal.bytes_out", atomic_load(&t->bytes_out), emit_arg);
	emit("terminal.revoked", atomic_load(&t->revoked), emit_arg);
}

/* Who shells run as (ARCHITECTURE.md §7): configured; as root a dedicated
 * `magnetar-shell` user, else nobody; as anyone else that user. Never 0. */
static void terminal_shell_user(struct terminal *t)
{
	const struct conf *c = &t->svc.conf;
	struct passwd *pw;
	struct group *gr;

	if (c->terminal_uid != (uid_t)-1) {
		t->shell_uid = c->terminal_uid;
		pw = getpwuid(t->shell_uid);
		t->shell_gid = c->terminal_gid != (gid_t)-1 ? c->terminal_gid
		               : pw != NULL                 ? pw->pw_gid
		                                            : (gid_t)t->shell_uid;
	} else if (geteuid() == 0) {
		if ((pw = getpwnam("magnetar-shell")) != NULL) {
			t->shell_uid = pw->pw_uid;
			t->shell_gid = pw->pw_gid;
		} else {
			log_warnx("no magnetar-shell user: shells run as nobody, which other "
			          "programs may share (create the user; docs/terminal.md)");
			pw = getpwnam("nobody");
			gr = getgrnam("nogroup");
			t->shell_uid = pw != NULL ? pw->pw_uid : 65534;
			t->shell_gid = gr != NULL ? gr->gr_gid : 65534;
		}
		if (c->terminal_gid != (gid_t)-1)
			t->shell_gid = c->terminal_gid;
	} else {
		t->shell_uid = getuid();
		t->shell_gid = c->terminal_gid != (gid_t)-1 ? c->terminal_gid : getgid();
	}
	if (t->shell_uid == 0 || t->shell_gid == 0)
		fatalx("shells would run as root (uid or gid 0): refused");
	if (geteuid() != 0 && (t->shell_uid != geteuid() || t->shell_gid != getegid()))
		fatalx("MAGNETAR_TERMINAL_UID/GID other than our own need root to start");
}

int main(int argc, char **argv)
{
	static struct terminal x;
	struct spawner_conf sc;
	const char *home = getenv("HOME");
	struct passwd *pw;
	int rv;

	svc_init(&x.svc, SVC_TERMINAL, argc, argv);
	x.svc.counters = terminal_counters;
	terminal_shell_user(&x);
	if ((home == NULL || home[0] != '/') && (pw = getpwuid(getuid())) != NULL)
		home = pw->pw_dir;
	if ((rv = validate_policy_init(&x.policy, x.svc.conf.terminal_shells,
	                               x.svc.conf.terminal_roots, "/etc/shells", home)) != 0)
		fatalx("terminal policy refused: %s", err_str(rv));
	for (size_t i = 0; i < x.policy.nshells; i++)
		log_info("terminal: shell allowed %s", x.policy.shells[i]);
	for (size_t i = 0; i < x.policy.nroots; i++)
		log_info("terminal: root %s", x.policy.roots[i]);
	if (x.policy.nshells == 0 || x.policy.nroots == 0)
		log_warnx("terminal: no shell or no root is usable: every open is refused");

	/* Now, while this process is small and has no threads (FACTS.md:
	 * forking a big process costs ~30 ms; forking a threaded one is
	 * unsafe). The child gets a copy of the policy. */
	sc.uid = x.shell_uid;
	sc.gid = x.shell_gid;
	sc.privileged = svc_own_user(&x.svc, &sc.self_uid, &sc.self_gid) == 0;
	sc.policy = &x.policy;
	if ((rv = spawner_start(&sc, &x.spawner)) != 0)
		fatalx("cannot start the spawner: %s", err_str(rv));

	svc_open_db(&x.svc, "terminal.db", &store_schema);
	svc_start_outbox(&x.svc);
	if ((rv = session_start(&x)) != 0 ||
	    (rv = spawner_run(x.spawner, session_on_exit, &x)) != 0 || (rv = revoke_start(&x)) != 0)
		fatalx("cannot start the terminal threads: %s", err_str(rv));
	svc_serve(&x.svc, &magnetar__terminal__descriptor, terminal_methods,
	          sizeof(terminal_methods) / sizeof(terminal_methods[0]), &x);
	revoke_stop(&x);
	session_stop(&x);
	spawner_stop(x.spawner);
	validate_policy_fini(&x.policy);
	svc_fini(&x.svc);
	log_info("stopped");
	return 0;
}
