/*
 * main.c — magnetar-terminal: configuration, the shells' uid range, the spawner
 * (forked before any thread, database or socket exists), terminal.db, the
 * audit outbox, the reaper, the stream socket, the RPC loop, and a stop that
 * closes every shell.
 */
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "common/sandbox.h"
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
	emit("terminal.stream_refused", atomic_load(&t->stream_refused), emit_arg);
}

#define TERMINAL_UIDS_FIRST 2000000000u /* the default range as root: no account */
#define TERMINAL_UIDS_LAST 2000099999u

static bool terminal_in_range(const struct terminal *t, unsigned long id)
{
	return id >= t->uid_first && id <= t->uid_last;
}

/* As root: no service's user, account or group may lie in the range (a
 * shell would be that account, or have that group's files). */
static void terminal_range_unused(const struct terminal *t)
{
	const struct conf *c = &t->svc.conf;
	struct passwd *pw;
	struct group *gr;

	for (int i = 0; i < SVC_SERVICES; i++)
		if ((pw = getpwnam(c->user[i])) != NULL && terminal_in_range(t, pw->pw_uid))
			fatalx("MAGNETAR_TERMINAL_UIDS %u-%u holds uid %u of the service user %s: "
			       "refused",
			       (unsigned)t->uid_first, (unsigned)t->uid_last, (unsigned)pw->pw_uid,
			       c->user[i]);
	setpwent();
	while ((pw = getpwent()) != NULL)
		if (terminal_in_range(t, pw->pw_uid))
			fatalx(
			    "MAGNETAR_TERMINAL_UIDS %u-%u holds the account %s (uid %u): refused "
			    "(pick a range no account uses)",
			    (unsigned)t->uid_first, (unsigned)t->uid_last, pw->pw_name,
			    (unsigned)pw->pw_uid);
	endpwent();
	setgrent();
	while ((gr = getgrent()) != NULL)
		if (terminal_in_range(t, gr->gr_gid))
			fatalx("MAGNETAR_TERMINAL_UIDS %u-%u holds the group %s (gid %u): refused "
			       "(a shell's gid is its uid)",
			       (unsigned)t->uid_first, (unsigned)t->uid_last, gr->gr_name,
			       (unsigned)gr->gr_gid);
	endgrent();
}

/* Who shells run as (docs/architecture.md, "Environment"): one uid per user from
 * MAGNETAR_TERMINAL_UIDS, its gid the same number. As root the default is a
 * range no account uses; as anyone else, that user alone (one user, whose
 * own account it knowingly is). */
static void terminal_shell_range(struct terminal *t)
{
	const struct terminal_vars *v = terminal_vars(t);
	unsigned me = (unsigned)getuid();

	t->uid_first = v->uid_first;
	t->uid_last = v->uid_last;
	if (geteuid() != 0) {
		if (t->uid_first == 0)
			t->uid_first = t->uid_last = getuid();
		if (t->uid_first != getuid() || t->uid_last != getuid())
			fatalx("MAGNETAR_TERMINAL_UIDS %u-%u: without root, shells can only be our "
			       "own uid (MAGNETAR_TERMINAL_UIDS=%u-%u)",
			       (unsigned)t->uid_first, (unsigned)t->uid_last, me, me);
	} else if (t->uid_first == 0) {
		t->uid_first = TERMINAL_UIDS_FIRST;
		t->uid_last = TERMINAL_UIDS_LAST;
	}
	if (t->uid_first == 0 || t->uid_first > t->uid_last)
		fatalx("MAGNETAR_TERMINAL_UIDS holds uid 0 or nothing: refused");
	if (geteuid() == 0)
		terminal_range_unused(t);
	log_info("terminal: shells run as one uid per user of %u-%u", (unsigned)t->uid_first,
	         (unsigned)t->uid_last);
}

/* The terminals' stream socket is created in the run dir while serving;
 * at stop the service waits for its spawner. */
static int terminal_sandbox(struct sandbox_rules *r, const struct conf *c)
{
	int rv = sandbox_allow_sockets_in(r, c->run_dir);

	rv |= sandbox_allow_syscall(r, "wait4");
	rv |= sandbox_allow_syscall(r, "waitid");
	return rv != 0 ? ERR_INVAL : 0;
}

/* The gateway fronts the terminal. Its spawner, forked before the database
 * opens, stays outside the file sandbox (svc_open_db closes it). */
static const struct svc_program terminal_program = {.id = SVC_TERMINAL,
                                                    .vars = &terminal_conf_table,
                                                    .admit = RPC_BY(SVC_GATEWAY) | SVC_BY_OPERATOR,
                                                    .sandbox = terminal_sandbox,
                                                    .sandbox_fs_later = true};

int main(int argc, char **argv)
{
	static struct terminal x;
	struct spawner_conf sc;
	const char *home = getenv("HOME");
	struct passwd *pw;
	int rv;

	x.stream_fd = -1;
	svc_init(&x.svc, &terminal_program, argc, argv);
	x.svc.counters = terminal_counters;
	terminal_shell_range(&x);
	if ((home == NULL || home[0] != '/') && (pw = getpwuid(getuid())) != NULL)
		home = pw->pw_dir;
	if ((rv = validate_policy_init(&x.policy, terminal_vars(&x)->shells,
	                               terminal_vars(&x)->roots, "/etc/shells", home)) != 0)
		fatalx("terminal policy refused: %s", err_str(rv));
	for (size_t i = 0; i < x.policy.nshells; i++)
		log_info("terminal: shell allowed %s", x.policy.shells[i]);
	for (size_t i = 0; i < x.policy.nroots; i++)
		log_info("terminal: root %s", x.policy.roots[i]);
	if (x.policy.nshells == 0 || x.policy.nroots == 0)
		log_warnx("terminal: no shell or no root is usable: every open is refused");

	/* Now, while this process is small and has no threads (docs/dependencies.md:
	 * forking a big process costs ~30 ms; forking a threaded one is
	 * unsafe). The child gets a copy of the policy. */
	sc.uid_first = x.uid_first;
	sc.uid_last = x.uid_last;
	sc.privileged = svc_own_user(&x.svc, &sc.self_uid, &sc.self_gid) == 0;
	sc.policy = &x.policy;
	if ((rv = spawner_start(&sc, &x.spawner)) != 0)
		fatalx("cannot start the spawner: %s", err_str(rv));

	svc_open_db(&x.svc, "terminal.db", &store_schema);
	svc_start_outbox(&x.svc);
	if ((rv = session_start(&x)) != 0 ||
	    (rv = spawner_run(x.spawner, session_on_exit, &x)) != 0 || (rv = revoke_start(&x)) != 0)
		fatalx("cannot start the terminal threads: %s", err_str(rv));
	/* Bound before the drop of privileges, like the RPC socket: no other
	 * user of the group can take the name first (stream.c). */
	if ((rv = stream_start(&x)) != 0)
		fatalx("cannot listen for terminal streams: %s", err_str(rv));
	svc_serve(&x.svc, &magnetar__terminal__descriptor, terminal_methods,
	          sizeof(terminal_methods) / sizeof(terminal_methods[0]), &x);
	stream_stop(&x);
	revoke_stop(&x);
	session_stop(&x);
	spawner_stop(x.spawner);
	validate_policy_fini(&x.policy);
	svc_fini(&x.svc);
	log_info("stopped");
	return 0;
}
