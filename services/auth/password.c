/*
 * password.c — argon2id password hashes (libargon2, PHC strings) and the
 * length policy of NIST SP 800-63B: 8..128 bytes of UTF-8, no composition
 * rules, no truncation. Hashing runs on the bounded `hashing` pool
 * (account.c), never on an RPC worker, so a login flood queues there.
 */
#include <argon2.h>
#include <openssl/crypto.h>
#include <string.h>

#include "common/err.h"
#include "common/ids.h"
#include "common/log.h"
#include "services/auth/auth.h"

#define PASSWORD_SALT 16
#define PASSWORD_HASH 32

const char *password_policy(size_t len)
{
	if (len < AUTH_PASSWORD_MIN)
		return "password_too_short";
	if (len > AUTH_PASSWORD_MAX)
		return "password_too_long";
	return NULL;
}

int password_hash(struct auth *a, const char *pw, size_t len, char *out, size_t cap)
{
	unsigned char salt[PASSWORD_SALT];
	int rc;
	if (ids_random(salt, sizeof(salt)) != 0)
		return ERR_IO;
	rc = argon2id_hash_encoded(a->argon_t, a->argon_m_kib, 1, pw, len, salt, sizeof(salt),
	                           PASSWORD_HASH, out, cap);
	return rc == ARGON2_OK ? 0 : ERR_INTERNAL;
}

int password_verify(const char *hash, const char *pw, size_t len)
{
	int rc = argon2id_verify(hash, pw, len);
	if (rc == ARGON2_OK)
		return 0;
	if (rc != ARGON2_VERIFY_MISMATCH)
		log_warnx("password: stored hash unusable (%s)", argon2_error_message(rc));
	return ERR_PERM;
}

int password_check(struct auth *a, const char *id, const char *pw, size_t len)
{
	char hash[AUTH_HASH_MAX];
	int rv;

	/* Refused at the same cost as a wrong password or an unknown user:
	 * a fast answer for a long password would say the user exists. */
	if (len > AUTH_PASSWORD_MAX ||
	    store_user_password_hash(a->svc.pool, id, hash, sizeof(hash)) != 0) {
		password_verify(a->dummy_hash, pw, len); /* the same cost */
		return ERR_PERM;
	}
	rv = password_verify(hash, pw, len);
	OPENSSL_cleanse(hash, sizeof(hash));
	return rv;
}

int password_init(struct auth *a)
{
	/* Production and development: at least m=19 MiB, t=2, p=1 (OWASP).
	 * Test only: cheap, so suites that log in hundreds of times stay fast. */
	if (a->svc.conf.env == CONF_ENV_TEST) {
		a->argon_m_kib = 1024;
		a->argon_t = 1;
	} else {
		a->argon_m_kib = 19 * 1024;
		a->argon_t = 2;
	}
	/* Unknown users are verified against this, so they cost what a wrong
	 * password costs and timing does not reveal which usernames exist. */
	return password_hash(a, "dummy-password-for-timing", 25, a->dummy_hash,
	                     sizeof(a->dummy_hash));
}
