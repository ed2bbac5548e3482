/*
 * ids.h — random identifiers: instance ids, request ids, record ids.
 * Backed by getrandom(2), which is several times cheaper per call than
 * OpenSSL's RAND_bytes here (docs/dependencies.md) and needs no initialisation.
 */
#ifndef MAGNETAR_IDS_H
#define MAGNETAR_IDS_H

#include <stddef.h>

/* Fills buf with n random bytes; 0 or ERR_IO. */
int ids_random(void *buf, size_t n);

/* Writes 2*nbytes lowercase hex characters and a NUL into out (size >= 2n+1). */
int ids_random_hex(char *out, size_t nbytes);

/* Lowercase hex of `len` bytes into out (size >= 2*len+1). */
void ids_hex(char *out, const unsigned char *in, size_t len);

#endif
