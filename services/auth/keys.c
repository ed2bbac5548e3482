/*
 * keys.c — the Ed25519 signing keys, in `signing.keys` in auth's data dir
 * (0600), never in auth.db, so a database backup carries no key. One line
 * per key: kid, base64 private seed, created, retired (0 = current). The
 * newest key signs; retired keys keep verifying until their last token has
 * expired, then they are dropped from the file.
 *
 * Replicas share the data dir (docs/scaling.md): the file is read and
 * written under an fcntl lock on `signing.keys.lock`, so two replicas
 * starting together agree on one key, and each replica reloads the file
 * when it changed (another replica rotated) before it signs or lists keys.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/jwt.h"
#include "common/ids.h"
#include "common/log.h"
#include "services/auth/auth.h"

#define KEYS_FILE "signing.keys"
#define KEYS_LOCK "signing.keys.lock"
#define KEYS_VERIFY_MAX 16
#define KEYS_LEEWAY_S 5 /* as the gateways allow (authn.c) */

bool keys_verifying(const struct auth_key *k, int64_t now)
{
	return k->retired_s == 0 || k->retired_s + AUTH_ACCESS_TTL_S + 60 > now;
}

static int keys_path(struct auth *a, char *buf, size_t len)
{
	return svc_path(&a->svc, KEYS_FILE, buf, len);
}

static int keys_write(struct auth *a)
{
	char path[600], tmp[640];
	FILE *f;
	int fd, rv = ERR_IO;

	if (keys_path(a, path, sizeof(path)) != 0)
		return ERR_INVAL;
	snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
		return ERR_IO;
	if ((f = fdopen(fd, "w")) == NULL) {
		close(fd);
		return ERR_IO;
	}
	for (size_t i = 0; i < a->nkeys; i++) {
		unsigned char seed[32];
		char b64[64];
		size_t n = sizeof(seed);
		if (EVP_PKEY_get_raw_private_key(a->keys[i].pkey, seed, &n) != 1)
			goto out;
		EVP_EncodeBlock((unsigned char *)b64, seed, 32);
		OPENSSL_cleanse(seed, sizeof(seed));
		fprintf(f, "%s %s %lld %lld\n", a->keys[i].kid, b64,
		        (long long)a->keys[i].created_s, (long long)a->keys[i].retired_s);
		OPENSSL_cleanse(b64, sizeof(b64));
	}
	if (fflush(f) == 0 && fsync(fd) == 0)
		rv = 0;
out:
	if (fclose(f) != 0)
		rv = ERR_IO;
	if (rv == 0 && rename(tmp, path) != 0)
		rv = ERR_IO;
	if (rv != 0)
		unlink(tmp);
	return rv;
}

static int keys_add(struct auth *a, const unsigned char seed[32], const char *kid, int64_t created,
                    int64_t retired)
{
	struct auth_key *more;
	EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
	if (k == NULL)
		return ERR_INVAL;
	if ((more = realloc(a->keys, (a->nkeys + 1) * sizeof(*more))) == NULL) {
		EVP_PKEY_free(k);
		return ERR_NOMEM;
	}
	a->keys = more;
	memset(&a->keys[a->nkeys], 0, sizeof(a->keys[0]));
	snprintf(a->keys[a->nkeys].kid, sizeof(a->keys[0].kid), "%s", kid);
	a->keys[a->nkeys].pkey = k;
	a->keys[a->nkeys].created_s = created;
	a->keys[a->nkeys].retired_s = retired;
	a->nkeys++;
	return 0;
}

static int keys_generate(struct auth *a)
{
	unsigned char seed[32];
	char kid[17];
	int rv;
	if ((rv = ids_random(seed, sizeof(seed))) != 0 || (rv = ids_random_hex(kid, 8)) != 0)
		return rv;
	rv = keys_add(a, seed, kid, (int64_t)time(NULL), 0);
	OPENSSL_cleanse(seed, sizeof(seed));
	return rv;
}

/* The cross-process lock of the key file: an fd to close, or -1. */
static int keys_lock_file(struct auth *a)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	char path[600];
	int fd;

	if (svc_path(&a->svc, KEYS_LOCK, path, sizeof(path)) != 0 ||
	    (fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0)
		return -1;
	while (fcntl(fd, F_SETLKW, &fl) != 0) {
		if (errno != EINTR) {
			close(fd);
			return -1;
		}
	}
	return fd;
}

/* The file's identity, to notice another replica's rewrite. */
static void keys_stamp(struct auth *a, const char *path)
{
	struct stat st;
	if (stat(path, &st) == 0) {
		a->keys_ino = st.st_ino;
		a->keys_mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
	}
}

/* Reads the file into a->keys (empty when it does not exist). */
static int keys_read(struct auth *a, const char *path)
{
	char line[256];
	int64_t now = (int64_t)time(NULL);
	FILE *f;
	int rv = 0;

	if ((f = fopen(path, "re")) == NULL)
		return errno == ENOENT ? 0 : ERR_IO;
	while (rv == 0 && fgets(line, sizeof(line), f) != NULL) {
		char kid[32], b64[64];
		unsigned char seed[48];
		long long created, retired;
		if (sscanf(line, "%31s %63s %lld %lld", kid, b64, &created, &retired) != 4 ||
		    EVP_DecodeBlock(seed, (unsigned char *)b64, (int)strlen(b64)) < 32) {
			log_warnx("keys: %s is malformed", KEYS_FILE);
			rv = ERR_INVAL;
		} else if (keys_verifying(&(struct auth_key){.retired_s = retired}, now)) {
			rv = keys_add(a, seed, kid, created, retired);
		}
		OPENSSL_cleanse(seed, sizeof(seed));
		OPENSSL_cleanse(b64, sizeof(b64));
		OPENSSL_cleanse(line, sizeof(line));
	}
	fclose(f);
	return rv;
}

static void keys_clear(struct auth *a)
{
	for (size_t i = 0; i < a->nkeys; i++)
		EVP_PKEY_free(a->keys[i].pkey);
	free(a->keys);
	a->keys = NULL;
	a->nkeys = 0;
}

int keys_load(struct auth *a)
{
	char path[600];
	int rv, lock;

	pthread_rwlock_init(&a->keys_lock, NULL);
	if (keys_path(a, path, sizeof(path)) != 0)
		return ERR_INVAL;
	if ((lock = keys_lock_file(a)) < 0)
		return ERR_IO;
	rv = keys_read(a, path);
	if (rv == 0 && (a->nkeys == 0 || a->keys[a->nkeys - 1].retired_s != 0)) {
		if ((rv = keys_generate(a)) == 0 && (rv = keys_write(a)) == 0)
			log_info("keys: generated signing key kid=%s", a->keys[a->nkeys - 1].kid);
	}
	if (rv == 0)
		keys_stamp(a, path);
	close(lock);
	return rv;
}

void keys_refresh(struct auth *a)
{
	char path[600];
	struct stat st;
	int lock;

	if (keys_path(a, path, sizeof(path)) != 0 || stat(path, &st) != 0)
		return;
	pthread_rwlock_rdlock(&a->keys_lock);
	bool same =
	    st.st_ino == a->keys_ino &&
	    (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec == a->keys_mtime_ns;
	pthread_rwlock_unlock(&a->keys_lock);
	if (same || (lock = keys_lock_file(a)) < 0)
		return;
	pthread_rwlock_wrlock(&a->keys_lock);
	struct auth_key *old = a->keys;
	size_t nold = a->nkeys;
	a->keys = NULL;
	a->nkeys = 0;
	if (keys_read(a, path) == 0 && a->nkeys > 0 && a->keys[a->nkeys - 1].retired_s == 0) {
		keys_stamp(a, path);
		for (size_t i = 0; i < nold; i++)
			EVP_PKEY_free(old[i].pkey);
		free(old);
		log_info("keys: reloaded (another replica rotated); signing with kid=%s",
		         a->keys[a->nkeys - 1].kid);
	} else {
		keys_clear(a); /* unreadable meanwhile: keep what we had */
		a->keys = old;
		a->nkeys = nold;
	}
	pthread_rwlock_unlock(&a->keys_lock);
	close(lock);
}

int keys_rotate(struct auth *a, char kid[17])
{
	char path[600];
	int rv, lock;

	keys_refresh(a); /* another replica's rotation first: never lost */
	if (keys_path(a, path, sizeof(path)) != 0 || (lock = keys_lock_file(a)) < 0)
		return ERR_IO;
	pthread_rwlock_wrlock(&a->keys_lock);
	a->keys[a->nkeys - 1].retired_s = (int64_t)time(NULL);
	if ((rv = keys_generate(a)) == 0)
		rv = keys_write(a);
	if (rv == 0)
		keys_stamp(a, path);
	if (rv == 0)
		memcpy(kid, a->keys[a->nkeys - 1].kid, 17);
	else if (a->keys[a->nkeys - 1].retired_s != 0)
		a->keys[a->nkeys - 1].retired_s = 0; /* nothing changed */
	pthread_rwlock_unlock(&a->keys_lock);
	close(lock);
	if (rv == 0)
		log_info("keys: rotated; signing with kid=%s", kid);
	return rv;
}

int keys_verify_token(struct auth *a, const char *token, struct jwt_claims *c)
{
	struct jwt_key keys[KEYS_VERIFY_MAX];
	size_t n = 0;
	int rv;

	if (token == NULL || token[0] == '\0' || strlen(token) >= JWT_MAX_TOKEN)
		return ERR_PERM;
	keys_refresh(a); /* a replica's rotation, as PublicKeys sees it */
	int64_t now = (int64_t)(clock_unix_ms() / 1000);
	pthread_rwlock_rdlock(&a->keys_lock);
	for (size_t i = a->nkeys; i-- > 0 && n < KEYS_VERIFY_MAX;) {
		if (!keys_verifying(&a->keys[i], now))
			continue;
		snprintf(keys[n].kid, sizeof(keys[n].kid), "%s", a->keys[i].kid);
		keys[n++].pub = a->keys[i].pkey; /* a private key verifies too */
	}
	rv = jwt_verify(keys, n, token, strlen(token), now, KEYS_LEEWAY_S, c);
	pthread_rwlock_unlock(&a->keys_lock);
	return rv;
}

void keys_free(struct auth *a)
{
	keys_clear(a);
	pthread_rwlock_destroy(&a->keys_lock);
}
