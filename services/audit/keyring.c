/*
 * keyring.c — the audit encryption keys: `id:base64key,id2:base64key`
 * from MAGNETAR_AUDIT_KEYS(_FILE) (the LAST id is current), or audit's own
 * generated file outside production. A ring only grows: records name their
 * key id and must stay readable, so no key is ever dropped while running.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/ids.h"
#include "services/audit/audit.h"

#define KEYRING_FILE_MAX 65536

static int keyring_refuse(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int keyring_refuse(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return ERR_CONFIG;
}

static bool keyring_id_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

/* Strict base64 of exactly 32 bytes (44 characters, one '='). */
static int keyring_b64_key(const char *s, size_t len, unsigned char out[AUDIT_KEY])
{
	unsigned char buf[48];
	int n;

	if (len != 44 || s[43] != '=' || s[42] == '=')
		return ERR_INVAL;
	for (size_t i = 0; i < 43; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '+' || s[i] == '/'))
			return ERR_INVAL;
	n = EVP_DecodeBlock(buf, (const unsigned char *)s, 44);
	if (n != 33) { /* EVP_DecodeBlock counts the padding as a zero byte */
		OPENSSL_cleanse(buf, sizeof(buf));
		return ERR_INVAL;
	}
	memcpy(out, buf, AUDIT_KEY);
	OPENSSL_cleanse(buf, sizeof(buf));
	return 0;
}

/* The blind-index key: a different key for a different use of the secret. */
static int keyring_derive_ix(struct audit_key *k)
{
	static const char label[] = "magnetar-audit blind index v1";
	unsigned int len = 0;
	if (HMAC(EVP_sha256(), k->key, AUDIT_KEY, (const unsigned char *)label, sizeof(label) - 1,
	         k->ix, &len) == NULL ||
	    len != AUDIT_KEY)
		return ERR_INTERNAL;
	return 0;
}

int keyring_parse(const char *text, struct audit_keyring *kr, char *err, size_t errlen)
{
	const char *p = text;
	size_t n = 0;
	int rv;

	memset(kr, 0, sizeof(*kr));
	if (text == NULL)
		return keyring_refuse(err, errlen, "the audit keyring is empty");
	for (;;) {
		const char *start, *colon, *end;
		struct audit_key *k;

		while (*p == ',' || *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
			p++;
		if (*p == '\0')
			break;
		start = p;
		while (*p != '\0' && *p != ',' && *p != ' ' && *p != '\t' && *p != '\n' &&
		       *p != '\r')
			p++;
		end = p;
		if (n == AUDIT_KEYS_MAX) {
			rv = keyring_refuse(err, errlen, "the audit keyring has more than %d keys",
			                    AUDIT_KEYS_MAX);
			goto fail;
		}
		colon = memchr(start, ':', (size_t)(end - start));
		if (colon == NULL || colon == start || colon - start > AUDIT_KEY_ID_MAX) {
			rv = keyring_refuse(
			    err, errlen,
			    "audit keyring entry %zu is not id:base64key (an id of 1 "
			    "to %d characters, a colon, a base64 key)",
			    n + 1, AUDIT_KEY_ID_MAX);
			goto fail;
		}
		k = &kr->keys[n];
		for (const char *c = start; c < colon; c++) {
			if (!keyring_id_char(*c)) {
				rv = keyring_refuse(
				    err, errlen,
				    "audit keyring entry %zu: a key id may hold only "
				    "A-Z a-z 0-9 . _ -",
				    n + 1);
				goto fail;
			}
		}
		memcpy(k->id, start, (size_t)(colon - start));
		k->id[colon - start] = '\0';
		for (size_t j = 0; j < n; j++) {
			if (strcmp(kr->keys[j].id, k->id) == 0) {
				rv = keyring_refuse(
				    err, errlen, "audit keyring: key id %s is listed twice", k->id);
				goto fail;
			}
		}
		if (keyring_b64_key(colon + 1, (size_t)(end - colon - 1), k->key) != 0) {
			rv = keyring_refuse(err, errlen,
			                    "audit keyring: key %s is not 32 bytes of standard "
			                    "base64 (44 characters ending in one '=')",
			                    k->id);
			goto fail;
		}
		if ((rv = keyring_derive_ix(k)) != 0)
			goto fail;
		n++;
	}
	if (n == 0)
		return keyring_refuse(err, errlen, "the audit keyring has no keys");
	atomic_store(&kr->n, n);
	return 0;
fail:
	keyring_wipe(kr);
	return rv;
}

const struct audit_key *keyring_current(const struct audit_keyring *kr)
{
	size_t n = atomic_load_explicit(&kr->n, memory_order_acquire);
	return n > 0 ? &kr->keys[n - 1] : NULL;
}

size_t keyring_count(const struct audit_keyring *kr)
{
	return atomic_load_explicit(&kr->n, memory_order_acquire);
}

const struct audit_key *keyring_find(const struct audit_keyring *kr, const char *id)
{
	size_t n = atomic_load_explicit(&kr->n, memory_order_acquire);
	if (id == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (strcmp(kr->keys[i].id, id) == 0)
			return &kr->keys[i];
	return NULL;
}

int keyring_extend(struct audit_keyring *kr, const struct audit_keyring *next, char *err,
                   size_t errlen)
{
	size_t have = keyring_count(kr), want = keyring_count(next);

	if (want < have)
		return keyring_refuse(err, errlen,
		                      "the new keyring drops keys: old records need every key "
		                      "id they name");
	for (size_t i = 0; i < have; i++)
		if (strcmp(kr->keys[i].id, next->keys[i].id) != 0 ||
		    CRYPTO_memcmp(kr->keys[i].key, next->keys[i].key, AUDIT_KEY) != 0)
			return keyring_refuse(
			    err, errlen,
			    "the new keyring changes or reorders key %s; keys may "
			    "only be added at the end",
			    kr->keys[i].id);
	/* Readers never look past n: fill the slots, then publish them. */
	for (size_t i = have; i < want; i++)
		kr->keys[i] = next->keys[i];
	atomic_store_explicit(&kr->n, want, memory_order_release);
	return 0;
}

void keyring_wipe(struct audit_keyring *kr)
{
	OPENSSL_cleanse(kr->keys, sizeof(kr->keys));
	atomic_store(&kr->n, 0);
}

/* Reads at most KEYRING_FILE_MAX bytes; *text is NUL-terminated. */
static int keyring_read(const char *path, char **text, size_t *len)
{
	char *buf;
	size_t n = 0;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return errno == ENOENT ? ERR_NOTFOUND : ERR_IO;
	if ((buf = malloc(KEYRING_FILE_MAX + 1)) == NULL) {
		close(fd);
		return ERR_NOMEM;
	}
	for (;;) {
		ssize_t r = read(fd, buf + n, KEYRING_FILE_MAX + 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 || n + (size_t)r > KEYRING_FILE_MAX) {
			OPENSSL_cleanse(buf, n);
			free(buf);
			close(fd);
			return ERR_IO;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = '\0';
	*text = buf;
	*len = n;
	return 0;
}

int keyring_load_file(const char *path, struct audit_keyring *kr, char *err, size_t errlen)
{
	char *text;
	size_t len;
	int rv;

	if ((rv = keyring_read(path, &text, &len)) != 0)
		return keyring_refuse(err, errlen, "cannot read the audit keyring file %s (%s)",
		                      path, err_str(rv));
	rv = keyring_parse(text, kr, err, errlen);
	OPENSSL_cleanse(text, len);
	free(text);
	return rv;
}

int keyring_generate(const char *path, char *err, size_t errlen)
{
	struct audit_keyring *kr;
	unsigned char key[AUDIT_KEY];
	char tmp[600], *out = NULL, id[AUDIT_KEY_ID_MAX + 1];
	size_t cap = (size_t)AUDIT_KEYS_MAX * (AUDIT_KEY_ID_MAX + 48) + 2, len = 0;
	int fd = -1, rv;

	if ((kr = calloc(1, sizeof(*kr))) == NULL)
		return keyring_refuse(err, errlen, "out of memory");
	rv = keyring_load_file(path, kr, err, errlen);
	if (rv != 0 && access(path, F_OK) == 0)
		goto out; /* exists but does not parse: never overwrite it */
	if (rv != 0)
		memset(kr, 0, sizeof(*kr));
	rv = ERR_CONFIG;
	if (keyring_count(kr) == AUDIT_KEYS_MAX) {
		rv = keyring_refuse(err, errlen, "the audit keyring is full");
		goto out;
	}
	for (size_t k = keyring_count(kr) + 1;; k++) {
		snprintf(id, sizeof(id), "k%zu", k);
		if (keyring_find(kr, id) == NULL)
			break;
	}
	if (ids_random(key, sizeof(key)) != 0 || (out = malloc(cap)) == NULL) {
		rv = keyring_refuse(err, errlen, "cannot draw a key");
		goto out;
	}
	for (size_t i = 0; i <= keyring_count(kr); i++) {
		const char *kid = i < keyring_count(kr) ? kr->keys[i].id : id;
		const unsigned char *kb = i < keyring_count(kr) ? kr->keys[i].key : key;
		len += (size_t)snprintf(out + len, cap - len, "%s%s:", i > 0 ? "," : "", kid);
		len += (size_t)EVP_EncodeBlock((unsigned char *)out + len, kb, AUDIT_KEY);
	}
	out[len++] = '\n';
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) >= 0) {
		bool ok = write(fd, out, len) == (ssize_t)len && fsync(fd) == 0;
		if (close(fd) != 0 || !ok)
			fd = -1;
	}
	if (fd < 0 || rename(tmp, path) != 0) {
		unlink(tmp);
		rv = keyring_refuse(err, errlen, "cannot write the audit keyring file %s: %s", path,
		                    strerror(errno));
		goto out;
	}
	rv = 0;
out:
	if (out != NULL) {
		OPENSSL_cleanse(out, cap);
		free(out);
	}
	OPENSSL_cleanse(key, sizeof(key));
	keyring_wipe(kr);
	free(kr);
	return rv;
}
