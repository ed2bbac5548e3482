/*
 * fingerprint.c — loading or creating the fingerprint key (fingerprint.h).
 * The development key file is created by link(2) from a fully written
 * temporary file, so two processes starting together never read half a key.
 */
#include "common/fingerprint.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/err.h"
#include "common/ids.h"
#include "common/log.h"

#define FP_FILE "fingerprint.key"

static int fingerprint_read(const char *path, unsigned char key[32])
{
	unsigned char raw[32];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? ERR_NOTFOUND : ERR_IO;
	n = read(fd, raw, sizeof(raw));
	close(fd);
	if (n != (ssize_t)sizeof(raw))
		return ERR_IO;
	memcpy(key, raw, 32);
	OPENSSL_cleanse(raw, sizeof(raw));
	return 0;
}

static int fingerprint_create(const char *path)
{
	char tmp[640];
	unsigned char raw[32];
	int fd, rv = ERR_IO;

	if (ids_random(raw, sizeof(raw)) != 0)
		return ERR_IO;
	if (snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid()) >= (int)sizeof(tmp))
		return ERR_INVAL;
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0)
		goto out;
	if (write(fd, raw, sizeof(raw)) == (ssize_t)sizeof(raw) && fsync(fd) == 0)
		rv = 0;
	close(fd);
	/* link fails with EEXIST if another process won: then read theirs. */
	if (rv == 0 && link(tmp, path) != 0 && errno != EEXIST)
		rv = ERR_IO;
	unlink(tmp);
out:
	OPENSSL_cleanse(raw, sizeof(raw));
	return rv;
}

int fingerprint_key_load(const struct conf *c, unsigned char key[32])
{
	char path[600];
	int rv;

	if (c->fingerprint_key != NULL && c->fingerprint_key[0] != '\0') {
		SHA256((const unsigned char *)c->fingerprint_key, strlen(c->fingerprint_key), key);
		return 0;
	}
	if (c->env == CONF_ENV_PRODUCTION)
		return ERR_CONFIG;
	if (snprintf(path, sizeof(path), "%s/%s", c->data_dir, FP_FILE) >= (int)sizeof(path))
		return ERR_INVAL;
	if ((rv = fingerprint_read(path, key)) == ERR_NOTFOUND) {
		log_warnx("MAGNETAR_FINGERPRINT_KEY is not set: using a generated development key "
		          "in %s (set the variable in production)",
		          path);
		if ((rv = fingerprint_create(path)) == 0)
			rv = fingerprint_read(path, key);
	}
	return rv;
}

void fingerprint_hash(const unsigned char key[32], const char *label, const char *value,
                      char out[33])
{
	unsigned char msg[1024], mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	size_t l = strlen(label) + 1, v = strlen(value);

	if (v > sizeof(msg) - l)
		v = sizeof(msg) - l; /* values are bounded by the gateway anyway */
	memcpy(msg, label, l);
	memcpy(msg + l, value, v);
	if (HMAC(EVP_sha256(), key, 32, msg, l + v, mac, &maclen) == NULL || maclen < 16)
		memset(mac, 0, 16);
	ids_hex(out, mac, 16);
}
