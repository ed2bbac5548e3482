/*
 * auth_test.c — magnetar-auth's handlers over inproc://, with the real
 * store, keys, argon2id and event publisher: sign-up rules, one answer for
 * unknown users and wrong passwords, tokens that verify with the published
 * keys, refresh rotation and re-use revoking the session, the session limit
 * revoking the oldest, logout, and revocations announced on auth.events.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/events.h"
#include "common/jwt.h"
#include "common/pool.h"
#include "common/workq.h"
#include "services/auth/auth.h"

#define URL "inproc://auth_test"
#define EV_URL "inproc://auth_test_events"

static struct auth a;
static struct rpc_server *srv;
static struct rpc_client *cli;
static char dir[] = "/tmp/auth_test.XXXXXX";

static const struct rpc_method methods[] = {
    {"Ping", svc_handle_ping, 0},
    {"Stats", svc_handle_stats, 0},
    {"SignUp", account_register, 0},
    {"Login", account_login, 0},
    {"Refresh", session_refresh, 0},
    {"Logout", session_logout, 0},
    {"Me", session_me, 0},
    {"ListSessions", session_list, 0},
    {"RevokeSession", session_revoke, 0},
    {"PublicKeys", session_public_keys, 0},
    {"Revoked", session_revoked, 0},
    {"RevokedPage", session_revoked_page, 0},
    {"PasswordCheck", breached_handle, 0},
    {"ChangePassword", account_change_password, 0},
    {"ListUsers", users_list, 0},
    {"CreateUser", users_create, 0},
    {"DeleteUser", users_delete, 0},
    {"RevokeUserSessions", users_revoke_sessions, 0},
    {"ReportRisk", risk_report, 0},
    {"StepUp", risk_step_up, 0},
    {"TotpSetup", totp_setup, 0},
    {"TotpEnable", totp_enable, 0},
    {"TotpDisable", totp_disable, 0},
    {"OpCreateUser", operator_create_user, 0},
    {"OpListUsers", operator_list_users, 0},
    {"OpDeleteUser", operator_delete_user, 0},
    {"OpSetRole", operator_set_role, 0},
    {"OpResetTotp", operator_reset_totp, 0},
    {"OpListSessions", operator_list_sessions, 0},
    {"OpRevokeSession", operator_revoke_session, 0},
    {"OpRotateKeys", operator_rotate_keys, 0},
    {"Introspect", clients_introspect, 0},
    {"OpClientCreate", clients_create, 0},
    {"OpClientRotate", clients_rotate, 0},
    {"OpClientDelete", clients_delete, 0},
    {"OpClientList", clients_list, 0},
};

static int setup(void **state)
{
	char path[256], err[256];
	struct rpc_server_opts opts = {.arg = &a};
	(void)state;
	assert_non_null(mkdtemp(dir));
	setenv("MAGNETAR_ENV", "test", 1);
	setenv("MAGNETAR_DATA_DIR", dir, 1);
	setenv("MAGNETAR_MAX_SESSIONS", "3", 1);
	assert_int_equal(conf_load(&a.svc.conf, SVC_AUTH, &auth_conf_table, err, sizeof(err)), 0);
	a.svc.id = SVC_AUTH;
	snprintf(a.svc.data_dir, sizeof(a.svc.data_dir), "%s", dir);
	snprintf(a.svc.instance, sizeof(a.svc.instance), "authtestinstance");
	snprintf(path, sizeof(path), "%s/auth.db", dir);
	assert_int_equal(pool_open(path, &store_schema, NULL, &a.svc.pool), 0);
	memset(a.fp_key, 7, sizeof(a.fp_key));
	assert_int_equal(keys_load(&a), 0);
	assert_int_equal(password_init(&a), 0);
	assert_int_equal(totp_init(&a), 0);
	assert_int_equal(workq_new(2, &a.hashing), 0);
	/* No breach service here: checks are "unavailable", allowed (fail-open). */
	assert_int_equal(rpc_client_open("inproc://auth_test_no_breach", 0, &a.breach), 0);
	assert_int_equal(events_pub_open(EV_URL, a.svc.instance, 100, &a.events), 0);
	assert_int_equal(rpc_server_start(URL, &magnetar__auth__descriptor, methods,
	                                  sizeof(methods) / sizeof(methods[0]), &opts, &srv),
	                 0);
	assert_int_equal(rpc_client_open(URL, 0, &cli), 0);
	return 0;
}

static int teardown(void **state)
{
	char cmd[300];
	(void)state;
	rpc_client_close(cli);
	rpc_server_stop(srv);
	workq_free(a.hashing);
	rpc_client_close(a.breach);
	events_pub_close(a.events);
	keys_free(&a);
	pool_close(a.svc.pool);
	conf_fini(&a.svc.conf);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

static Magnetar__RequestContext ctx_of(const char *ip)
{
	Magnetar__RequestContext c = MAGNETAR__REQUEST_CONTEXT__INIT;
	c.client_ip = (char *)ip;
	c.user_agent = "test-agent";
	return c;
}

static void call(const char *method, const ProtobufCMessage *in, struct rpc_result *r)
{
	Magnetar__RequestContext c = ctx_of("127.0.0.1");
	assert_int_equal(rpc_call_sync(cli, &magnetar__auth__descriptor, method, in, &c, 5000, r),
	                 0);
}

static void signup(const char *user, const char *pw, Magnetar__Status want, const char *code)
{
	Magnetar__RegisterRequest req = MAGNETAR__REGISTER_REQUEST__INIT;
	struct rpc_result r;
	req.username = (char *)user;
	req.password = (char *)pw;
	call("SignUp", &req.base, &r);
	assert_int_equal(r.status, want);
	if (code != NULL)
		assert_string_equal(r.code, code);
	rpc_result_fini(&r);
}

/* Logs in; on success returns the reply (caller frees with rpc_result_fini). */
static void login(const char *user, const char *pw, struct rpc_result *r)
{
	Magnetar__LoginRequest req = MAGNETAR__LOGIN_REQUEST__INIT;
	req.username = (char *)user;
	req.password = (char *)pw;
	req.fingerprint = "en\ngzip";
	call("Login", &req.base, r);
}

static void test_signup_rules(void **state)
{
	(void)state;
	signup("Alice", "correct horse battery", MAGNETAR__STATUS__STATUS_OK, NULL);
	/* Case-folded: alice is Alice. */
	signup("alice", "another password", MAGNETAR__STATUS__STATUS_CONFLICT, "username_taken");
	signup("bob", "short", MAGNETAR__STATUS__STATUS_INVALID, "password_too_short");
	char longpw[130];
	memset(longpw, 'x', 129);
	longpw[129] = '\0';
	signup("bob", longpw, MAGNETAR__STATUS__STATUS_INVALID, "password_too_long");
	longpw[128] = '\0'; /* exactly 128 is fine */
	signup("bob", longpw, MAGNETAR__STATUS__STATUS_OK, NULL);
	signup("b d", "long enough pw", MAGNETAR__STATUS__STATUS_INVALID, "invalid_request");
	signup("élodie", "long enough pw", MAGNETAR__STATUS__STATUS_INVALID, "invalid_request");
}

static void test_login_and_token(void **state)
{
	struct rpc_result r, k;
	Magnetar__Empty empty = MAGNETAR__EMPTY__INIT;
	struct jwt_key keys[16];
	struct jwt_claims c;
	const Magnetar__TokenReply *t;
	const Magnetar__PublicKeysReply *pk;
	(void)state;

	login("nobody", "whatever password", &r);
	assert_int_equal(r.status, MAGNETAR__STATUS__STATUS_UNAUTHENTICATED);
	assert_string_equal(r.code, "invalid_credentials");
	login("ALICE", "wrong password!", &r);
	assert_int_equal(r.status, MAGNETAR__STATUS__STATUS_UNAUTHENTICATED);
	assert_string_equal(r.code, "invalid_credentials");

	login("ALICE", "correct horse battery", &r);
	assert_int_equal(r.status, MAGNETAR__STATUS__STATUS_OK);
	t = (const Magnetar__TokenReply *)r.output;
	assert_int_equal(t->expires_in, 900);
	assert_string_equal(t->user->username, "alice");
	assert_string_equal(t->user->role, "member");
	assert_true(strlen(t->refresh_token) >= 43); /* 256 bits */
	/* The access token verifies with the keys auth publishes. */
	call("PublicKeys", &empty.base, &k);
	assert_int_equal(k.status, MAGNETAR__STATUS__STATUS_OK);
	pk = (const Magnetar__PublicKeysReply *)k.output;
	assert_true(pk->n_keys >= 1);
	for (size_t i = 0; i < pk->n_keys; i++) {
		snprintf(keys[i].kid, sizeof(keys[i].kid), "%s", pk->keys[i]->kid);
		keys[i].pub =
		    EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pk->keys[i]->key.data, 32);
	}
	assert_int_equal(jwt_verify(keys, pk->n_keys, t->access_token, strlen(t->access_token),
	                            time(NULL), 30, &c),
	                 0);
	assert_string_equal(c.sid, t->session_id);
	assert_string_equal(c.sub, t->user->id);
	assert_string_equal(c.role, "member");
	for (size_t i = 0; i < pk->n_keys; i++)
		EVP_PKEY_free(keys[i].pub);
	rpc_result_fini(&k);
	rpc_result_fini(&r);
}

static void test_refresh_rotation_and_reuse(void **state)
{
	Magnetar__RefreshRequest req = MAGNETAR__REFRESH_REQUEST__INIT;
	Magnetar__SessionRef ref = MAGNETAR__SESSION_REF__INIT;
	struct rpc_result l, r1, r2, r3, me;
	char first[64], second[64], sid[64], uid[64];
	(void)state;

	login("alice", "correct horse battery", &l);
	assert_int_equal(l.status, MAGNETAR__STATUS__STATUS_OK);
	const Magnetar__TokenReply *t = (const Magnetar__TokenReply *)l.output;
	snprintf(first, sizeof(first), "%s", t->refresh_token);
	snprintf(sid, sizeof(sid), "%s", t->session_id);
	snprintf(uid, sizeof(uid), "%s", t->user->id);
	rpc_result_fini(&l);

	req.refresh_token = first;
	call("Refresh", &req.base, &r1);
	assert_int_equal(r1.status, MAGNETAR__STATUS__STATUS_OK);
	t = (const Magnetar__TokenReply *)r1.output;
	assert_string_equal(t->session_id, sid); /* same session */
	assert_string_not_equal(t->refresh_token, first);
	snprintf(second, sizeof(second), "%s", t->refresh_token);
	rpc_result_fini(&r1);

	/* The first token again: re-use revokes the whole session... */
	call("Refresh", &req.base, &r2);
	assert_int_equal(r2.status, MAGNETAR__STATUS__STATUS_UNAUTHENTICATED);
	assert_string_equal(r2.code, "refresh_token_reused");
	/* ...so even the legitimate newer token is dead now. */
	req.refresh_token = second;
	call("Refresh", &req.base, &r3);
	assert_int_equal(r3.status, MAGNETAR__STATUS__STATUS_UNAUTHENTICATED);
	assert_string_equal(r3.code, "invalid_refresh_token");
	ref.user_id = uid;
	ref.session_id = sid;
	call("Me", &ref.base, &me);
	assert_int_equal(me.status, MAGNETAR__STATUS__STATUS_NOT_FOUND);
	/* Unknown token. */
	req.refresh_token = "not-a-token";
	call("Refresh", &req.base, &r3);
	assert_string_equal(r3.code, "invalid_refresh_token");
}

struct revocations {
	int n;
	char last[64];
};

static void on_event(const char *pub, uint64_t seq, const char *topic, const uint8_t *p, size_t len,
                     void *arg)
{
	struct revocations *rv = arg;
	Magnetar__SessionEvent *ev = magnetar__session_event__unpack(NULL, len, p);
	(void)pub;
	(void)seq;
	if (ev != NULL && strcmp(topic, "session.revoked") == 0) {
		snprintf(rv->last, sizeof(rv->last), "%s", ev->session_id);
		__atomic_add_fetch(&rv->n, 1, __ATOMIC_SEQ_CST);
	}
	magnetar__session_event__free_unpacked(ev, NULL);
}

static void on_resync(const char *pub, enum events_resync_reason why, void *arg)
{
	(void)pub;
	(void)why;
	(void)arg;
}

static void test_session_limit_and_logout(void **state)
{
	struct revocations seen = {0};
	struct events_handlers h = {on_event, on_resync, &seen};
	struct events_sub *sub;
	struct rpc_result r[4], list, out;
	Magnetar__SessionRef ref = MAGNETAR__SESSION_REF__INIT;
	char oldest[64], uid[64], newest[64];
	(void)state;

	assert_int_equal(events_sub_open(EV_URL, NULL, 3000, 0, &h, &sub), 0);
	usleep(300 * 1000); /* let the subscription connect */
	signup("carol", "carol's password", MAGNETAR__STATUS__STATUS_OK, NULL);
	for (int i = 0; i < 4; i++) {
		login("carol", "carol's password", &r[i]);
		assert_int_equal(r[i].status, MAGNETAR__STATUS__STATUS_OK);
	}
	snprintf(oldest, sizeof(oldest), "%s", ((Magnetar__TokenReply *)r[0].output)->session_id);
	snprintf(newest, sizeof(newest), "%s", ((Magnetar__TokenReply *)r[3].output)->session_id);
	snprintf(uid, sizeof(uid), "%s", ((Magnetar__TokenReply *)r[0].output)->user->id);
	for (int i = 0; i < 4; i++)
		rpc_result_fini(&r[i]);
	/* The 4th login revoked the oldest: 3 remain, and gateways were told. */
	ref.user_id = uid;
	ref.session_id = newest;
	call("ListSessions", &ref.base, &list);
	assert_int_equal(((Magnetar__SessionsReply *)list.output)->n_sessions, 3);
	for (size_t i = 0; i < 3; i++)
		assert_string_not_equal(((Magnetar__SessionsReply *)list.output)->sessions[i]->id,
		                        oldest);
	rpc_result_fini(&list);
	for (int i = 0; i < 100 && __atomic_load_n(&seen.n, __ATOMIC_SEQ_CST) < 1; i++)
		usleep(10 * 1000);
	assert_string_equal(seen.last, oldest);

	/* Someone else's session is not found, not revoked. */
	ref.user_id = "someone-else";
	call("RevokeSession", &ref.base, &out);
	assert_int_equal(out.status, MAGNETAR__STATUS__STATUS_NOT_FOUND);
	/* Logout revokes at once and is announced. */
	ref.user_id = uid;
	call("Logout", &ref.base, &out);
	assert_int_equal(out.status, MAGNETAR__STATUS__STATUS_OK);
	rpc_result_fini(&out);
	call("Me", &ref.base, &out);
	assert_int_equal(out.status, MAGNETAR__STATUS__STATUS_NOT_FOUND);
	for (int i = 0; i < 100 && __atomic_load_n(&seen.n, __ATOMIC_SEQ_CST) < 2; i++)
		usleep(10 * 1000);
	assert_string_equal(seen.last, newest);
	/* The list gateways load at start holds both. */
	Magnetar__Empty empty = MAGNETAR__EMPTY__INIT;
	call("Revoked", &empty.base, &out);
	const Magnetar__RevokedReply *rr = (const Magnetar__RevokedReply *)out.output;
	int found = 0;
	for (size_t i = 0; i < rr->n_session_ids; i++)
		found += strcmp(rr->session_ids[i], oldest) == 0 ||
		         strcmp(rr->session_ids[i], newest) == 0;
	assert_int_equal(found, 2);
	assert_true(rr->sequence >= 2);
	rpc_result_fini(&out);
	/* Paged, one session a page: every page bounded, and the cursor walks
	 * them all (a long list never needs one reply past the RPC limit). */
	Magnetar__RevokedRequest page = MAGNETAR__REVOKED_REQUEST__INIT;
	char after[64] = "";
	int pages = 0;
	found = 0;
	do {
		page.after = after;
		page.limit = 1;
		call("RevokedPage", &page.base, &out);
		assert_int_equal(out.status, MAGNETAR__STATUS__STATUS_OK);
		rr = (const Magnetar__RevokedReply *)out.output;
		assert_true(rr->n_session_ids + rr->n_rebound <= 1);
		for (size_t i = 0; i < rr->n_session_ids; i++)
			found += strcmp(rr->session_ids[i], oldest) == 0 ||
			         strcmp(rr->session_ids[i], newest) == 0;
		assert_true(strlen(rr->next) < sizeof(after));
		snprintf(after, sizeof(after), "%s", rr->next);
		rpc_result_fini(&out);
	} while (after[0] != '\0' && ++pages < 100);
	assert_int_equal(found, 2);
	events_sub_close(sub);
}

static int cmp_tokens(const void *x, const void *y)
{
	return strcmp(x, y);
}

/* 10^5 refresh tokens: all distinct, each 256 bits (43 base64url chars),
 * and the stored hash is SHA-256 of exactly the token. */
static void test_refresh_tokens_distinct(void **state)
{
	enum { N = 100000 };
	char(*tok)[64] = calloc(N, sizeof(*tok));
	unsigned char hash[32], again[32];
	(void)state;
	assert_non_null(tok);
	for (int i = 0; i < N; i++) {
		assert_int_equal(tokens_refresh_new(tok[i], hash), 0);
		assert_int_equal(strlen(tok[i]), 43);
		tokens_refresh_hash(tok[i], strlen(tok[i]), again);
		assert_memory_equal(hash, again, 32);
	}
	qsort(tok, N, sizeof(*tok), cmp_tokens);
	for (int i = 1; i < N; i++)
		assert_string_not_equal(tok[i - 1], tok[i]);
	free(tok);
}

/* PublicKeys (and so the JWKS) lists the keys that still verify: not one
 * retired longer ago than an access token lives, at most 16 (the oldest
 * left out), oldest first with the signing key last. */
static void test_public_keys_drop_retired_and_keep_the_signing_key(void **state)
{
	Magnetar__Empty empty = MAGNETAR__EMPTY__INIT;
	const Magnetar__PublicKeysReply *pk;
	struct rpc_result r;
	char kid[17];
	(void)state;

	while (a.nkeys < 17)
		assert_int_equal(keys_rotate(&a, kid), 0);
	assert_int_equal(a.nkeys, 17);
	int64_t now = (int64_t)time(NULL);
	a.keys[0].retired_s = now - 900 - 61; /* their last tokens have expired */
	a.keys[1].retired_s = now - 900 - 61;
	a.keys[2].retired_s = now - 900 - 30; /* not yet: still verifying */

	call("PublicKeys", &empty.base, &r);
	assert_int_equal(r.status, MAGNETAR__STATUS__STATUS_OK);
	pk = (const Magnetar__PublicKeysReply *)r.output;
	assert_int_equal(pk->n_keys, 15);
	assert_string_equal(pk->keys[0]->kid, a.keys[2].kid);
	assert_string_equal(pk->keys[14]->kid, a.keys[16].kid);
	rpc_result_fini(&r);

	/* Two more: 17 verify, the oldest of them is left out. */
	assert_int_equal(keys_rotate(&a, kid), 0);
	assert_int_equal(keys_rotate(&a, kid), 0);
	call("PublicKeys", &empty.base, &r);
	pk = (const Magnetar__PublicKeysReply *)r.output;
	assert_int_equal(pk->n_keys, 16);
	assert_string_equal(pk->keys[0]->kid, a.keys[a.nkeys - 16].kid);
	assert_string_equal(pk->keys[15]->kid, a.keys[a.nkeys - 1].kid);
	assert_string_equal(pk->keys[15]->kid, kid); /* the signing key */
	rpc_result_fini(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_refresh_tokens_distinct),
	    cmocka_unit_test(test_signup_rules),
	    cmocka_unit_test(test_login_and_token),
	    cmocka_unit_test(test_refresh_rotation_and_reuse),
	    cmocka_unit_test(test_session_limit_and_logout),
	    cmocka_unit_test(test_public_keys_drop_retired_and_keep_the_signing_key),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
