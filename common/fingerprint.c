/*
 * fingerprint.c — loading or creating the fingerprint key (fingerprint.h).
 * The development key file is common/keyfile's: created once, atomically.
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
#include "common/keyfile.h"
#include "common/log.h"
#include "common/sandbox.h"

#define FP_FILE "fingerprint.key"

int fingerprint_key_load(const struct conf *c, unsigned char key[32])
{
	char path[600];
	int rv, created;

	if (c->fingerprint_key != NULL && c->fingerprint_key[0] != '\0') {
		SHA256((const unsigned char *)c->fingerprint_key, strlen(c->fingerprint_key), key);
		return 0;
	}
	if (c->env == CONF_ENV_PRODUCTION)
		return ERR_CONFIG;
	if (snprintf(path, sizeof(path), "%s/%s", c->data_dir, FP_FILE) >= (int)sizeof(path))
		return ERR_INVAL;
	if ((rv = keyfile_load(path, key, 32, &created)) == 0 && created)
		log_warnx("MAGNETAR_FINGERPRINT_KEY is not set: generated a development key in %s "
		          "(set the variable in production)",
		          path);
	return rv;
}

int fingerprint_prepare(const struct conf *c, struct sandbox_rules *r)
{
	unsigned char key[32];
	char path[600];
	int rv;

	if ((c->fingerprint_key != NULL && c->fingerprint_key[0] != '\0') ||
	    c->env == CONF_ENV_PRODUCTION)
		return 0;
	if ((rv = fingerprint_key_load(c, key)) != 0) {
		log_warnx("cannot create the development fingerprint key in %s", c->data_dir);
		return rv;
	}
	OPENSSL_cleanse(key, sizeof(key));
	if (snprintf(path, sizeof(path), "%s/%s", c->data_dir, FP_FILE) >= (int)sizeof(path))
		return ERR_INVAL;
	return sandbox_allow_read(r, path);
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
