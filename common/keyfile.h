/*
 * keyfile.h — a random key kept in a file of its own (0600), created once:
 * the development fallback for secrets that production must be given
 * (MAGNETAR_FINGERPRINT_KEY, auth's TOTP key). Creation is atomic (a fully
 * written temporary file linked into place), so two processes starting
 * together never read half a key.
 */
#ifndef MAGNETAR_KEYFILE_H
#define MAGNETAR_KEYFILE_H

#include <stddef.h>

/* Reads `len` bytes from `path`, creating it with random bytes first when it
 * does not exist (*created is then true). 0, ERR_IO or ERR_INVAL. */
int keyfile_load(const char *path, unsigned char *key, size_t len, int *created);

#endif
