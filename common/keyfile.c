/*
 * keyfile.c — load-or-create of a random key file (keyfile.h).
 */
#include "common/keyfile.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <unistd.h>

#include "common/err.h"
#include "common/ids.h"

static int keyfile_read(const char *path, unsigned char *key, size_t len)
{
	unsigned char raw[64];
	ssize_t n;
	int fd;

	if (len > sizeof(raw))
		return ERR_INVAL;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return errno == ENOENT ? ERR_NOTFOUND : ERR_IO;
	n = read(fd, raw, len);
	close(fd);
	if (n != (ssize_t)len) {
		OPENSSL_cleanse(raw, sizeof(raw));
		return ERR_IO;
	}
	for (size_t i = 0; i < len; i++)
		key[i] = raw[i];
	OPENSSL_cleanse(raw, sizeof(raw));
	return 0;
}

static int keyfile_create(const char *path, size_t len)
{
	char tmp[640];
	unsigned char raw[64];
	int fd, rv = ERR_IO;

	if (len > sizeof(raw) || ids_random(raw, len) != 0)
		return ERR_IO;
	if (snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid()) >= (int)sizeof(tmp))
		return ERR_INVAL;
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0)
		goto out;
	if (write(fd, raw, len) == (ssize_t)len && fsync(fd) == 0)
		rv = 0;
	close(fd);
	/* link fails with EEXIST if another process won: then theirs is read. */
	if (rv == 0 && link(tmp, path) != 0 && errno != EEXIST)
		rv = ERR_IO;
	unlink(tmp);
out:
	OPENSSL_cleanse(raw, sizeof(raw));
	return rv;
}

int keyfile_load(const char *path, unsigned char *key, size_t len, int *created)
{
	int rv = keyfile_read(path, key, len);
	*created = 0;
	if (rv != ERR_NOTFOUND)
		return rv;
	if ((rv = keyfile_create(path, len)) != 0)
		return rv;
	*created = 1;
	return keyfile_read(path, key, len);
}
