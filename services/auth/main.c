/*
 * main.c — magnetar-auth: configuration, auth.db, signing keys, the
 * hashing pool, the event publisher, the audit outbox, the RPC loop.
 */
#include <fcntl.h>
#include <openssl/crypto.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "common/fingerprint.h"
#include "common/log.h"
#include "common/workq.h"
#include "services/auth/auth.h"

/* The Op* methods are magctl's (uid 0): a gateway that is taken over must
 * not create founders or read every session (docs/security.md). */
#define OP RPC_F_CALLERS(SVC_BY_OPERATOR)
/* The public API's methods are the gateways' (the operator may call them
 * too, for debugging); Revoked is also the terminal's. */
#define GW RPC_F_CALLERS(RPC_BY(SVC_GATEWAY) | SVC_BY_OPERATOR)
#define GW_TERM RPC_F_CALLERS(RPC_BY(SVC_GATEWAY) | RPC_BY(SVC_TERMINAL) | SVC_BY_OPERATOR)

static const struct rpc_method auth_methods[] = {
    {.name = "Ping", .handler = svc_handle_ping},
    {.name = "Stats", .handler = svc_handle_stats},
    {.name = "SignUp", .handler = account_register, .flags = GW | RPC_F_MUTATES},
    {.name = "Login", .handler = account_login, .flags = GW | RPC_F_MUTATES},
    {.name = "Refresh", .handler = session_refresh, .flags = GW | RPC_F_MUTATES},
    {.name = "Logout", .handler = session_logout, .flags = GW | RPC_F_MUTATES},
    {.name = "Me", .handler = session_me, .flags = GW},
    {.name = "ListSessions", .handler = session_list, .flags = GW},
    {.name = "RevokeSession", .handler = session_revoke, .flags = GW | RPC_F_MUTATES},
    {.name = "PublicKeys", .handler = session_public_keys, .flags = GW},
    {.name = "Revoked", .handler = session_revoked, .flags = GW_TERM},
    {.name = "RevokedPage", .handler = session_revoked_page, .flags = GW_TERM},
    {.name = "PasswordCheck", .handler = breached_handle, .flags = GW},
    {.name = "ChangePassword", .handler = account_change_password, .flags = GW | RPC_F_MUTATES},
    {.name = "ListUsers", .handler = users_list, .flags = GW},
    {.name = "CreateUser", .handler = users_create, .flags = GW | RPC_F_MUTATES},
    {.name = "DeleteUser", .handler = users_delete, .flags = GW | RPC_F_MUTATES},
    {.name = "RevokeUserSessions", .handler = users_revoke_sessions, .flags = GW | RPC_F_MUTATES},
    {.name = "ReportRisk", .handler = risk_report, .flags = GW | RPC_F_MUTATES},
    {.name = "StepUp", .handler = risk_step_up, .flags = GW | RPC_F_MUTATES},
    {.name = "TotpSetup", .handler = totp_setup, .flags = GW | RPC_F_MUTATES},
    {.name = "TotpEnable", .handler = totp_enable, .flags = GW | RPC_F_MUTATES},
    {.name = "TotpDisable", .handler = totp_disable, .flags = GW | RPC_F_MUTATES},
    {.name = "OpCreateUser", .handler = operator_create_user, .flags = OP | RPC_F_MUTATES},
    {.name = "OpListUsers", .handler = operator_list_users, .flags = OP},
    {.name = "OpDeleteUser", .handler = operator_delete_user, .flags = OP | RPC_F_MUTATES},
    {.name = "OpSetRole", .handler = operator_set_role, .flags = OP | RPC_F_MUTATES},
    {.name = "OpResetTotp", .handler = operator_reset_totp, .flags = OP | RPC_F_MUTATES},
    {.name = "OpListSessions", .handler = operator_list_sessions, .flags = OP},
    {.name = "OpRevokeSession", .handler = operator_revoke_session, .flags = OP | RPC_F_MUTATES},
    {.name = "OpRotateKeys", .handler = operator_rotate_keys, .flags = OP | RPC_F_MUTATES},
    /* Introspect writes its audit event: a mutation, never retried. */
    {.name = "Introspect", .handler = clients_introspect, .flags = GW | RPC_F_MUTATES},
    {.name = "OpClientCreate", .handler = clients_create, .flags = OP | RPC_F_MUTATES},
    {.name = "OpClientRotate", .handler = clients_rotate, .flags = OP | RPC_F_MUTATES},
    {.name = "OpClientDelete", .handler = clients_delete, .flags = OP | RPC_F_MUTATES},
    {.name = "OpClientList", .handler = clients_list, .flags = OP},
};

static void auth_counters(struct svc *s, svc_counter_fn emit, void *emit_arg)
{
	struct auth *a = (struct auth *)s;
	uint64_t n;
	if (store_user_count(s->pool, &n) == 0)
		emit("auth.users", n, emit_arg);
	emit("auth.hashing_queued", workq_pending(a->hashing), emit_arg);
	emit("auth.events_published", events_pub_sequence(a->events), emit_arg);
	emit("events.relisten", events_pub_relistens(a->events), emit_arg);
	struct throttle_stats ts;
	throttle_stats(&ts);
	emit("auth.throttle_evictions", ts.evictions, emit_arg);
	emit("auth.throttle_counting", ts.counting, emit_arg);
}

/* The development fingerprint key, shared with the gateways. */
static int auth_sandbox(struct sandbox_rules *r, const struct conf *c)
{
	return fingerprint_prepare(c, r);
}

/* The gateway fronts auth; the terminal asks it only Revoked (the method
 * rows narrow every method). Revocations go to the gateways and the
 * terminal (it closes terminals). */
static const struct svc_program auth_program = {
    .id = SVC_AUTH,
    .vars = &auth_conf_table,
    .admit = RPC_BY(SVC_GATEWAY) | RPC_BY(SVC_TERMINAL) | SVC_BY_OPERATOR,
    .admit_events = RPC_BY(SVC_GATEWAY) | RPC_BY(SVC_TERMINAL) | SVC_BY_OPERATOR,
    .sandbox = auth_sandbox};

int main(int argc, char **argv)
{
	static struct auth x;
	int rv;

	svc_init(&x.svc, &auth_program, argc, argv);
	x.svc.counters = auth_counters;
	svc_open_db(&x.svc, "auth.db", &store_schema);
	if ((rv = fingerprint_key_load(&x.svc.conf, x.fp_key)) != 0)
		fatalx("cannot load the fingerprint key: %s", err_str(rv));
	if ((rv = keys_load(&x)) != 0)
		fatalx("cannot load the signing keys: %s", err_str(rv));
	if ((rv = totp_init(&x)) != 0)
		fatalx("cannot load the TOTP key: %s", err_str(rv));
	if ((rv = password_init(&x)) != 0)
		fatalx("cannot initialise password hashing: %s", err_str(rv));
	if ((rv = throttle_init()) != 0)
		fatalx("cannot key the brute-force table: %s", err_str(rv));
	if ((rv = clients_init()) != 0)
		fatalx("cannot key the introspection clients' memo: %s", err_str(rv));
	/* Two threads on two cores: argon2id is CPU-bound, more would only queue.
	 * At nice 19, so a login flood takes only the CPU nothing else wants:
	 * measured (docs/performance.md), /me's p99 under 32 flooding clients
	 * went from ~100 ms at nice 0 to the figure recorded there. */
	if ((rv = workq_new_nice(2, 19, &x.hashing)) != 0)
		fatalx("cannot start the hashing pool: %s", err_str(rv));
	svc_start_outbox(&x.svc);
	if ((rv = rpc_client_open_for(x.svc.conf.url[SVC_BREACH], 0, SVC_SERVER_ROLES(SVC_BREACH),
	                              &x.breach)) != 0)
		fatalx("cannot open a client of magnetar-breach: %s", err_str(rv));
	if ((rv = account_bootstrap_founder(&x)) != 0)
		fatalx("cannot create the founder account: %s", err_str(rv));
	/* Gateways learn of revocations here; the heartbeat lets them notice
	 * a lost event or a dead publisher (common/events.h). */
	if (events_pub_open(x.svc.conf.events_url[SVC_AUTH], x.svc.instance, 1000, &x.events) != 0)
		fatalx("cannot publish events on %s", x.svc.conf.events_url[SVC_AUTH]);
	svc_serve(&x.svc, &magnetar__auth__descriptor, auth_methods,
	          sizeof(auth_methods) / sizeof(auth_methods[0]), &x);
	workq_free(x.hashing);
	rpc_client_close(x.breach);
	events_pub_close(x.events);
	keys_free(&x);
	OPENSSL_cleanse(x.fp_key, sizeof(x.fp_key));
	OPENSSL_cleanse(x.totp_key, sizeof(x.totp_key));
	svc_fini(&x.svc);
	log_info("stopped");
	return 0;
}
