/*
 * totp.c — RFC 6238 one-time codes (liboath): enrolment needs the current
 * password (a stolen access token must not enrol the thief's authenticator),
 * enabling needs a valid code, disabling needs both. Secrets are sealed with
 * AES-256-GCM under MAGNETAR_TOTP_KEY (bound to the user id), so auth.db
 * alone never reveals one; each code's time step is consumed atomically, so
 * a code works once.
 */
#include <liboath/oath.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "common/ids.h"
#include "common/keyfile.h"
#include "common/log.h"
#include "common/outbox.h"
#include "services/auth/auth.h"

#define TOTP_SECRET 20 /* bytes: 160 bits, as RFC 4226 recommends */
#define TOTP_NONCE 12
#define TOTP_TAG 16
#define TOTP_SEALED (TOTP_NONCE + TOTP_SECRET + TOTP_TAG)
#define TOTP_STEP 30
#define TOTP_WINDOW 1 /* one step either side: clocks drift */
#define TOTP_DIGITS 6

int totp_init(struct auth *a)
{
	const struct conf *c = &a->svc.conf;
	char path[600];
	int created, rv;

	if (oath_init() != OATH_OK)
		return ERR_INTERNAL;
	if (auth_vars(a)->totp_key != NULL && auth_vars(a)->totp_key[0] != '\0') {
		SHA256((const unsigned char *)auth_vars(a)->totp_key,
		       strlen(auth_vars(a)->totp_key), a->totp_key);
		return 0;
	}
	if (c->env == CONF_ENV_PRODUCTION)
		return ERR_CONFIG;
	if (svc_path(&a->svc, "totp.key", path, sizeof(path)) != 0)
		return ERR_INVAL;
	if ((rv = keyfile_load(path, a->totp_key, 32, &created)) == 0 && created)
		log_warnx("MAGNETAR_TOTP_KEY is not set: generated a development key in %s "
		          "(set the variable in production)",
		          path);
	return rv;
}

/* AES-256-GCM with the user id as associated data: a sealed secret copied
 * to another user's row does not open. */
static int totp_seal(struct auth *a, const char *uid, const unsigned char *secret,
                     unsigned char out[TOTP_SEALED])
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int n, rv = ERR_INTERNAL;

	if (c == NULL || ids_random(out, TOTP_NONCE) != 0)
		goto out;
	if (EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, a->totp_key, out) != 1 ||
	    EVP_EncryptUpdate(c, NULL, &n, (const unsigned char *)uid, (int)strlen(uid)) != 1 ||
	    EVP_EncryptUpdate(c, out + TOTP_NONCE, &n, secret, TOTP_SECRET) != 1 ||
	    EVP_EncryptFinal_ex(c, out + TOTP_NONCE + n, &n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TOTP_TAG,
	                        out + TOTP_NONCE + TOTP_SECRET) != 1)
		goto out;
	rv = 0;
out:
	EVP_CIPHER_CTX_free(c);
	return rv;
}

static int totp_open(struct auth *a, const char *uid, const unsigned char *in, size_t len,
                     unsigned char secret[TOTP_SECRET])
{
	EVP_CIPHER_CTX *c;
	unsigned char tag[TOTP_TAG];
	int n, rv = ERR_PERM;

	if (len != TOTP_SEALED || (c = EVP_CIPHER_CTX_new()) == NULL)
		return ERR_PERM;
	memcpy(tag, in + TOTP_NONCE + TOTP_SECRET, TOTP_TAG);
	if (EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, a->totp_key, in) == 1 &&
	    EVP_DecryptUpdate(c, NULL, &n, (const unsigned char *)uid, (int)strlen(uid)) == 1 &&
	    EVP_DecryptUpdate(c, secret, &n, in + TOTP_NONCE, TOTP_SECRET) == 1 &&
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TOTP_TAG, tag) == 1 &&
	    EVP_DecryptFinal_ex(c, secret + n, &n) == 1)
		rv = 0;
	EVP_CIPHER_CTX_free(c);
	if (rv != 0)
		OPENSSL_cleanse(secret, TOTP_SECRET);
	return rv;
}

/* liboath compares with strcmp; this keeps the comparison constant-time. */
static int totp_cmp(void *handle, const char *test_otp)
{
	const char *code = handle;
	return strlen(test_otp) != TOTP_DIGITS || CRYPTO_memcmp(code, test_otp, TOTP_DIGITS) != 0;
}

int totp_verify(struct auth *a, const char *user_id, const char *code, bool pending)
{
	unsigned char sealed[TOTP_SEALED + 8], secret[TOTP_SECRET];
	struct store_tx *tx;
	uint64_t step = 0;
	size_t len = 0;
	int pos, rv;

	if (strlen(code) != TOTP_DIGITS || strspn(code, "0123456789") != TOTP_DIGITS)
		return ERR_PERM;
	if (store_totp_get(a->svc.pool, user_id, pending, sealed, sizeof(sealed), &len) != 0 ||
	    totp_open(a, user_id, sealed, len, secret) != 0)
		return ERR_PERM;
	rv = oath_totp_validate3_callback((const char *)secret, TOTP_SECRET, time(NULL), TOTP_STEP,
	                                  0, TOTP_DIGITS, TOTP_WINDOW, &pos, &step, totp_cmp,
	                                  (void *)code);
	OPENSSL_cleanse(secret, sizeof(secret));
	if (rv < 0)
		return ERR_PERM;
	if ((rv = store_begin(a, &tx)) != 0)
		return rv;
	rv = store_end(tx, store_totp_use_step(tx, user_id, step));
	return rv == 0 ? 0 : ERR_PERM; /* a replayed code is a wrong code */
}

/* The caller's user, from an active session of theirs; answers 401. */
static bool totp_user(struct hashing_job *j, const char *uid, const char *sid, struct store_user *u)
{
	struct store_session s;
	if (store_session_get(j->a->svc.pool, sid, &s) == 0 && strcmp(s.user_id, uid) == 0 &&
	    s.revoked_ms == 0 && store_user_by_id(j->a->svc.pool, uid, u) == 0)
		return true;
	rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_UNAUTHENTICATED, "unauthorized",
	                "the session has ended");
	return false;
}

static bool totp_password_ok(struct hashing_job *j, const struct store_user *u, const char *pw)
{
	if (throttle_refused(j->call, u->id))
		return false;
	if (password_check(j->a, u->id, pw, strlen(pw)) == 0)
		return true;
	throttle_failed(u->id, rpc_call_context(j->call)->client_ip);
	rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_UNAUTHENTICATED, "invalid_credentials",
	                "the password is not right");
	return false;
}

static void totp_audit(struct auth *a, struct rpc_call *call, const char *action, const char *uid,
                       const char *outcome)
{
	struct store_tx *tx;
	if (store_begin(a, &tx) == 0)
		store_end(tx,
		          store_audit(tx, action, uid, uid, rpc_call_context(call), outcome, ""));
}

static void totp_setup_job(struct workq_job *job)
{
	struct hashing_job *j = (struct hashing_job *)job;
	const Magnetar__TotpSetupRequest *req = (const Magnetar__TotpSetupRequest *)j->in;
	Magnetar__TotpSetupReply out = MAGNETAR__TOTP_SETUP_REPLY__INIT;
	unsigned char secret[TOTP_SECRET], sealed[TOTP_SEALED];
	char *b32 = NULL, uri[256];
	size_t b32len;
	struct store_user u;
	struct store_tx *tx;
	int rv;

	memset(&u, 0, sizeof(u));
	if (!totp_user(j, req->user_id, req->session_id, &u) ||
	    !totp_password_ok(j, &u, req->current_password))
		goto out;
	if ((rv = ids_random(secret, sizeof(secret))) == 0 &&
	    (rv = totp_seal(j->a, u.id, secret, sealed)) == 0 &&
	    (rv = oath_base32_encode((const char *)secret, sizeof(secret), &b32, &b32len)) ==
	        OATH_OK &&
	    (rv = store_begin(j->a, &tx)) == 0)
		rv = store_end(
		    tx, store_totp_set(tx, u.id, STORE_TOTP_PENDING, sealed, sizeof(sealed)));
	OPENSSL_cleanse(secret, sizeof(secret));
	if (rv != 0 || b32 == NULL) {
		rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_INTERNAL, "internal",
		                "TOTP could not be set up");
		goto out;
	}
	snprintf(uri, sizeof(uri),
	         "otpauth://totp/Magnetar:%s?secret=%s&issuer=Magnetar&algorithm=SHA1&digits=6"
	         "&period=30",
	         u.username, b32);
	totp_audit(j->a, j->call, "totp.setup", u.id, "success");
	out.secret = b32;
	out.otpauth_uri = uri;
	rpc_reply(j->call, &out.base);
	OPENSSL_cleanse(uri, sizeof(uri));
out:
	if (b32 != NULL) {
		OPENSSL_cleanse(b32, strlen(b32));
		free(b32);
	}
	free(j);
}

/* Round two of Enable and Disable, once the code (and for Disable the
 * password) has been checked: switches TOTP, audited, tells the gateways
 * (their cached /me says totp_enabled) and answers. */
static void totp_switch(struct hashing_job *j, const char *uid, enum store_totp_change what,
                        const char *action)
{
	Magnetar__Empty out = MAGNETAR__EMPTY__INIT;
	struct store_tx *tx;
	int rv;

	if ((rv = store_begin(j->a, &tx)) == 0) {
		rv = store_totp_set(tx, uid, what, NULL, 0);
		if (rv == 0)
			rv = store_audit(tx, action, uid, uid, rpc_call_context(j->call), "success",
			                 "");
		rv = store_end(tx, rv);
	}
	if (rv != 0) {
		rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_INTERNAL, "internal",
		                what == STORE_TOTP_ENABLE ? "TOTP could not be enabled"
		                                          : "TOTP could not be disabled");
		return;
	}
	tokens_publish_user_changed(j->a, uid);
	rpc_reply(j->call, &out.base);
}

static void totp_enable_job(struct workq_job *job)
{
	struct hashing_job *j = (struct hashing_job *)job;
	const Magnetar__TotpCodeRequest *req = (const Magnetar__TotpCodeRequest *)j->in;
	struct store_user u;

	memset(&u, 0, sizeof(u));
	if (!totp_user(j, req->user_id, req->session_id, &u))
		goto out;
	if (totp_verify(j->a, u.id, req->code, true) != 0) {
		totp_audit(j->a, j->call, "totp.enabled", u.id, "failure");
		rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_INVALID, "invalid_totp",
		                "the code is not valid");
		goto out;
	}
	totp_switch(j, u.id, STORE_TOTP_ENABLE, "totp.enabled");
out:
	free(j);
}

static void totp_disable_job(struct workq_job *job)
{
	struct hashing_job *j = (struct hashing_job *)job;
	const Magnetar__TotpCodeRequest *req = (const Magnetar__TotpCodeRequest *)j->in;
	struct store_user u;

	memset(&u, 0, sizeof(u));
	if (!totp_user(j, req->user_id, req->session_id, &u) ||
	    !totp_password_ok(j, &u, req->current_password))
		goto out;
	if (!u.totp_enabled || totp_verify(j->a, u.id, req->code, false) != 0) {
		totp_audit(j->a, j->call, "totp.disabled", u.id, "failure");
		rpc_reply_error(j->call, MAGNETAR__STATUS__STATUS_UNAUTHENTICATED, "invalid_totp",
		                "the code is not valid");
		goto out;
	}
	totp_switch(j, u.id, STORE_TOTP_DISABLE, "totp.disabled");
out:
	free(j);
}

void totp_setup(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	hashing_submit(call, in, arg, totp_setup_job);
}

void totp_enable(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	hashing_submit(call, in, arg, totp_enable_job);
}

void totp_disable(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	hashing_submit(call, in, arg, totp_disable_job);
}
