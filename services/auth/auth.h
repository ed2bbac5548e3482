/*
 * auth.h — magnetar-auth: accounts, argon2id passwords, Ed25519 access
 * tokens, rotating refresh tokens and sessions. Prototypes grouped by file.
 */
#ifndef MAGNETAR_AUTH_H
#define MAGNETAR_AUTH_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.pb-c.h"
#include "common/events.h"
#include "common/workq.h"
#include "common/svc.h"
#include "services/auth/vars.h"

typedef struct evp_pkey_st EVP_PKEY;

#define AUTH_ACCESS_TTL_S 900              /* access token: 15 min */
#define AUTH_IDLE_TTL_MS (30u * 60 * 1000) /* no refresh for 30 min: expired */
#define AUTH_ABSOLUTE_TTL_MS (12ull * 3600 * 1000)
#define AUTH_ID_LEN 33 /* 16 random bytes as hex + NUL */
#define AUTH_USERNAME_MAX 32
#define AUTH_PASSWORD_MIN 8
#define AUTH_PASSWORD_MAX 128
#define AUTH_HASH_MAX 128 /* an argon2id PHC string, with room */

/* One signing key of the key file. */
struct auth_key {
	char kid[17];
	EVP_PKEY *pkey;    /* private (verifies too) */
	int64_t created_s; /* unix seconds */
	int64_t retired_s; /* 0 while current; then verifying until +access TTL */
};

struct auth {
	struct svc svc;             /* first: the generic Ping/Stats handlers use it */
	struct events_pub *events;  /* auth.events: session.revoked, ... */
	struct workq *hashing;      /* bounded pool for argon2id */
	struct rpc_client *breach;  /* magnetar-breach: Range */
	unsigned char fp_key[32];   /* fingerprint hash key */
	unsigned char totp_key[32]; /* seals TOTP secrets at rest */
	struct auth_key *keys;      /* keys.c; keys[nkeys - 1] is current */
	size_t nkeys;
	pthread_rwlock_t keys_lock;     /* rotate-keys replaces the array */
	uint64_t keys_ino;              /* signing.keys as last read: a replica's */
	int64_t keys_mtime_ns;          /* rewrite is noticed (keys_refresh) */
	uint32_t argon_m_kib, argon_t;  /* argon2id cost */
	char dummy_hash[AUTH_HASH_MAX]; /* verified against for unknown users */
};
/* auth's own variables (vars.h), parsed by svc_init. */
static inline const struct auth_vars *auth_vars(const struct auth *a)
{
	return a->svc.conf.own;
}

/* ---- store.c — the only file that includes sqlite3.h ---------------------- */
extern const struct pool_schema store_schema;

struct store_user {
	char id[AUTH_ID_LEN];
	char username[AUTH_USERNAME_MAX + 1];
	char role[16];
	bool terminal;
	bool totp_enabled;
	uint64_t created_ms;
	/* No password hash: only password_check reads one (issue 18), so no
	 * lookup hands a secret to code that must remember to erase it. */
};

struct store_session {
	char id[AUTH_ID_LEN];
	char user_id[AUTH_ID_LEN];
	uint64_t created_ms, last_seen_ms, refreshed_ms, revoked_ms;
	uint64_t rebound_ms; /* the last step-up, 0 for none */
	char ip[64];
	char user_agent[256];
	char fingerprint[512];
	uint32_t risk_score;
};

/* A database transaction on the writer, with the outbox beside it. */
struct store_tx;
int store_begin(struct auth *a, struct store_tx **tx);
/* Commits (0) or rolls back when rv != 0; returns the outcome. A commit
 * that wrote audit events (store_audit) wakes the outbox's sender, so no
 * caller has to remember to. */
int store_end(struct store_tx *tx, int rv);
int store_audit(struct store_tx *tx, const char *action, const char *actor, const char *target,
                const Magnetar__RequestContext *ctx, const char *outcome, const char *detail);

/* `hash` is the new user's PHC string. ERR_EXISTS when the name is taken. */
int store_user_insert(struct store_tx *tx, const struct store_user *u, const char *hash);
int store_user_by_name(struct pool *pool, const char *username, struct store_user *u);
int store_user_by_id(struct pool *pool, const char *id, struct store_user *u);
int store_user_count(struct pool *pool, uint64_t *n);
/* The user's PHC string into out (the caller erases it): password_check's
 * alone. ERR_NOTFOUND for no such (live) user. */
int store_user_password_hash(struct pool *pool, const char *id, char *out, size_t cap);

int store_session_insert(struct store_tx *tx, const struct store_session *s);
int store_session_get(struct pool *pool, const char *id, struct store_session *s);
int store_session_get_tx(struct store_tx *tx, const char *id, struct store_session *s);
/* Marks refreshed and seen now. */
int store_session_touch(struct store_tx *tx, const char *id, uint64_t now_ms);
/* Revokes; ERR_NOTFOUND when not active. */
int store_session_revoke(struct store_tx *tx, const char *id, uint64_t now_ms);
/* Active sessions of a user, oldest first; returns how many (≤ max). */
int store_sessions_of(struct pool *pool, struct store_tx *tx, const char *user_id, uint64_t now_ms,
                      struct store_session *out, int max);

/* Users that are not deleted, oldest first; returns how many (≤ max). */
int store_user_list(struct pool *pool, struct store_user *out, int max);
/* Marks deleted (ERR_NOTFOUND when there is no such live user). */
int store_user_delete(struct store_tx *tx, const char *id, uint64_t now_ms);
int store_user_set_password(struct store_tx *tx, const char *id, const char *hash);
struct tokens_revoked;
/* Revokes every active session of a user; lists them in *gone. */
int store_sessions_revoke_user(struct store_tx *tx, const char *user_id, uint64_t now_ms,
                               struct tokens_revoked *gone);

/* Records a gateway's risk score on the session. */
int store_session_risk(struct store_tx *tx, const char *id, uint32_t score);
/* Re-binds s->id to s's ip, user_agent and fingerprint (a step-up). */
int store_session_rebind(struct store_tx *tx, const struct store_session *s, uint64_t now_ms);
/* Up to `max` sessions created after since_ms that are revoked, or active
 * and re-bound (rebound[i]), with ids greater than `after`, in id order.
 * Returns how many, or an ERR_* code. */
int store_revoked_page(struct pool *pool, uint64_t since_ms, const char *after,
                       struct store_session *out, bool *rebound, int max);

/* A user's sealed TOTP secret (or the one being enrolled). ERR_NOTFOUND. */
int store_totp_get(struct pool *pool, const char *user_id, bool pending, unsigned char *blob,
                   size_t cap, size_t *len);
enum store_totp_change { STORE_TOTP_PENDING, STORE_TOTP_ENABLE, STORE_TOTP_DISABLE };
/* Stores a pending secret, enables the pending one, or disables TOTP. */
int store_totp_set(struct store_tx *tx, const char *user_id, enum store_totp_change what,
                   const unsigned char *blob, size_t len);
/* Consumes time step `step` for the user: ERR_EXISTS when it (or a later
 * one) was already used — each code works once. */
int store_totp_use_step(struct store_tx *tx, const char *user_id, uint64_t step);

/* Sets the role (unless empty) and the terminal grant (unless < 0). */
int store_user_set_role(struct store_tx *tx, const char *id, const char *role, int terminal);

/* Introspection clients (clients.c). put: create (ERR_EXISTS if taken) or
 * replace the secret (ERR_NOTFOUND if none); delete: ERR_NOTFOUND if none. */
struct store_client {
	char name[AUTH_USERNAME_MAX + 1];
	uint64_t created_ms, rotated_ms;
};
int store_client_secret_hash(struct pool *pool, const char *name, char *out, size_t cap);
int store_client_put(struct store_tx *tx, const char *name, const char *hash, bool create,
                     uint64_t now_ms);
int store_client_delete(struct store_tx *tx, const char *name);
int store_client_list(struct pool *pool, struct store_client *out, int max);

/* Refresh tokens are stored as SHA-256 hashes. */
int store_refresh_insert(struct store_tx *tx, const unsigned char hash[32], const char *session_id,
                         uint64_t now_ms);
/* Looks a token up: *spent is true when it was already used. ERR_NOTFOUND. */
int store_refresh_take(struct store_tx *tx, const unsigned char hash[32], char *session_id,
                       bool *spent, uint64_t now_ms);

/* ---- password.c ------------------------------------------------------------ */
int password_init(struct auth *a);
/* Hashes into out (PHC string). */
int password_hash(struct auth *a, const char *pw, size_t len, char *out, size_t cap);
/* 0 when `pw` matches `hash`; ERR_PERM when not. Same cost either way. */
int password_verify(const char *hash, const char *pw, size_t len);
/* 0 when `pw` (at most AUTH_PASSWORD_MAX bytes) is user `id`'s password;
 * ERR_PERM when not, or when there is no such user (at the same cost). The
 * stored hash is read here and erased before it returns. */
int password_check(struct auth *a, const char *id, const char *pw, size_t len);
/* A policy refusal's API code, or NULL when the length is acceptable. */
const char *password_policy(size_t len);

/* ---- breached.c: has a password appeared in a breach? -------------------- */
/*
 * Asks magnetar-breach with the SHA-1's 5-hex prefix only and compares the
 * suffixes here (common/breach_check.h). *count is 0 when the password was
 * not found or could not be checked in fail-open mode; *source says which.
 * ERR_UNAVAIL when it could not be checked and MAGNETAR_BREACH_FAIL=closed.
 */
int breached_check(struct auth *a, const char *pw, size_t len, uint64_t *count, char source[16]);
/* The PasswordCheck method (on the hashing pool, like the password routes). */
void breached_handle(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
/* docs/api.md's refusal for a breached password, with its breach_count. */
void breached_refuse(struct rpc_call *call, uint64_t count);

/* ---- keys.c ---------------------------------------------------------------- */
/* Loads the signing key file from the data dir, creating a first key. */
int keys_load(struct auth *a);
void keys_free(struct auth *a);
/* A new signing key becomes current; the old one keeps verifying until its
 * last token has expired (rotate-keys). Its kid into kid[17]. */
int keys_rotate(struct auth *a, char kid[17]);
/* Reloads signing.keys when another replica rewrote it (one stat otherwise). */
void keys_refresh(struct auth *a);
/* Whether a key still verifies at `now`: current, or retired less than an
 * access token's lifetime (and a minute of skew) ago. A key past that is
 * neither listed by PublicKeys (nor so in the JWKS) nor kept on reload. */
bool keys_verifying(const struct auth_key *k, int64_t now);
/* Verifies an access token with auth's own keys (signature, kid, expiry):
 * 0 with *c filled, or jwt_verify's error (ERR_PERM for none at all). */
struct jwt_claims;
int keys_verify_token(struct auth *a, const char *token, struct jwt_claims *c);

/* ---- tokens.c -------------------------------------------------------------- */
/* Username normalisation (docs/design.md): lowercase ASCII; NULL if invalid. */
int tokens_normalise_username(const char *in, char *out, size_t cap);
/* Sessions a change revoked, announced only once its transaction commits. */
#define TOKENS_REVOKED_MAX 64
struct tokens_revoked {
	char ids[TOKENS_REVOKED_MAX][AUTH_ID_LEN];
	int n;
};
/* New session + first refresh token + access token, in `tx`; the oldest
 * sessions beyond max_sessions are revoked and listed in *gone. The reply
 * points into thread-local storage valid until the thread's next call. */
int tokens_new_session(struct auth *a, struct store_tx *tx, const struct store_user *u,
                       const Magnetar__RequestContext *ctx, const char *fingerprint,
                       struct tokens_revoked *gone, Magnetar__TokenReply *out, char *buf,
                       size_t buflen);
/* Publishes session.revoked for each of `gone` (after the commit). */
void tokens_publish_all(struct auth *a, const struct tokens_revoked *gone, const char *uid,
                        const char *why);
/* Access token for a session. */
int tokens_issue(struct auth *a, const struct store_user *u, const struct store_session *s,
                 char *refresh, Magnetar__TokenReply *out, char *buf, size_t buflen);
/* A random refresh token (base64url of 32 bytes) and its SHA-256. */
int tokens_refresh_new(char out[64], unsigned char hash[32]);
void tokens_refresh_hash(const char *token, size_t len, unsigned char hash[32]);
/* Publishes user.changed: what /me shows of the user is stale. */
void tokens_publish_user_changed(struct auth *a, const char *uid);
/* Publishes session.revoked. */
void tokens_publish_revoked(struct auth *a, const char *sid, const char *uid, const char *why);
/* Fills a proto User from a store user (strings point into u). */
void tokens_user_proto(const struct store_user *u, Magnetar__User *out);

/* ---- hashing.c: the bounded pool every password or code check runs on ---- */
/* Runs fn on the bounded hashing pool with (call, in, arg); 429 when full. */
void hashing_submit(struct rpc_call *call, const ProtobufCMessage *in, void *arg,
                    void (*fn)(struct workq_job *));
/* What hashing_submit hands to fn. */
struct hashing_job {
	struct workq_job job; /* first */
	struct rpc_call *call;
	struct auth *a;
	const ProtobufCMessage *in;
};

/* ---- account.c: SignUp (register), Login -------------------------------------------- */
void account_register(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void account_login(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
/* Founder bootstrap from MAGNETAR_FOUNDER_* at first start. */
int account_bootstrap_founder(struct auth *a);

/* ---- users.c: the administrators' methods ----------------------------------- */
void users_list(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void users_create(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void users_delete(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void users_revoke_sessions(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
/* Revokes every session of `target` (announcing each), and deletes it when
 * `delete`; audited as done by `actor`. */
int users_apply(struct auth *a, const Magnetar__RequestContext *ctx, const char *actor,
                const struct store_user *target, bool delete);

/* ---- operator.c: magctl user|session (the operator's methods) -------------- */
void operator_create_user(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void operator_list_users(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void operator_delete_user(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void operator_set_role(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void operator_reset_totp(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void operator_list_sessions(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void operator_revoke_session(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void operator_rotate_keys(struct rpc_call *call, const ProtobufCMessage *in, void *arg);

/* ---- account.c: ChangePassword ------------------------------------------------ */
void account_change_password(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
/* Creates a user in its own transaction (hashes on the calling thread).
 * ERR_EXISTS when the name is taken. */
int account_create(struct auth *a, const char *username, const char *password, const char *role,
                   const Magnetar__RequestContext *ctx, struct store_user *u);
/* Validates a new account's username (normalised into norm) and password
 * length; answers the call and returns false on refusal. */
bool account_check_new(struct rpc_call *call, const char *username, const char *password,
                       char *norm, size_t cap);
/* Refuses (answering the call, auditing) a breached password, or answers
 * 503 when the check cannot run in fail-closed mode; true when usable. */
bool account_password_usable(struct auth *a, struct rpc_call *call, const char *password);

/* ---- throttle.c: brute-force limits per (account, network) and network ---- */
#define THROTTLE_SLOTS 8192 /* 8-way sets; 32 bytes each */
struct throttle_stats {
	uint64_t evictions; /* live counts pushed out by other keys since start */
	uint64_t counting;  /* slots counting failures now */
};
/* Draws the table's hash key and empties it; once at start, before any
 * other call. 0 or ERR_IO. */
int throttle_init(void);
/* Seconds before `account` may be tried again from `ip`'s network; 0 = now. */
uint32_t throttle_check(const char *account, const char *ip);
/* Counts a failed guess (password or code) for `account` and for the
 * network. Every call counts, whatever else the table holds. */
void throttle_failed(const char *account, const char *ip);
void throttle_succeeded(const char *account, const char *ip);
void throttle_stats(struct throttle_stats *st);
/* Which of the THROTTLE_SLOTS / 8 sets (account, ip) falls in under this
 * start's key: for tests that aim keys at one set. */
unsigned throttle_set_of(const char *account, const char *ip);
/* True, having answered 429 too_many_attempts with Retry-After, when the
 * caller's network is throttled for `account`. */
bool throttle_refused(struct rpc_call *call, const char *account);

/* ---- totp.c: RFC 6238 codes (liboath), secrets sealed at rest ------------- */
int totp_init(struct auth *a);
/* 0 when `code` is valid for the user's enrolled (or pending) secret and its
 * time step is used now for the first time; ERR_PERM otherwise. */
int totp_verify(struct auth *a, const char *user_id, const char *code, bool pending);
void totp_setup(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void totp_enable(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void totp_disable(struct rpc_call *call, const ProtobufCMessage *in, void *arg);

/* ---- risk.c: anomaly scores and step-up (docs/api.md "Session risk") -------------- */
#define RISK_ANOMALY 50   /* ≥: a session.anomaly audit event */
#define RISK_STEP_UP 70   /* ≥: 401 step_up_required until a step-up */
#define RISK_TERMINATE 90 /* ≥: the session is revoked */
void risk_report(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void risk_step_up(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
/* The keyed fingerprint hashes of a session's binding, as tokens carry them. */
void risk_hashes(struct auth *a, const struct store_session *s, char fip[33], char fua[33],
                 char fhd[33]);

/* ---- session.c: Refresh, Logout, Me, ListSessions, RevokeSession, ... ------ */
void session_refresh(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void session_logout(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void session_me(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void session_list(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void session_revoke(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void session_public_keys(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
/* The active sessions of a user, answered on `call`: ListSessions after it
 * has checked the caller's own session, OpListSessions for the operator. */
void session_list_user(struct rpc_call *call, struct auth *a, const char *user_id);
void session_revoked(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void session_revoked_page(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
/* Not revoked, within the idle and absolute lifetimes at `now` (unix ms). */
bool session_live(const struct store_session *s, uint64_t now);
void session_proto(const struct store_session *s, Magnetar__Session *out);

/* ---- clients.c: Introspect (RFC 7662) and its registered clients ---------- */
/* Draws the key verified secrets are remembered under; once at start. */
int clients_init(void);
void clients_introspect(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void clients_create(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void clients_rotate(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void clients_delete(struct rpc_call *call, const ProtobufCMessage *in, void *arg);
void clients_list(struct rpc_call *call, const ProtobufCMessage *in, void *arg);

#endif
