/*
 * jwtsign.h — minting access tokens: auth's alone. The gateway and the
 * terminal verify with common/jwt.c and link nothing that can sign; a
 * structure check in `make test` (tests/structure/check.sh) fails if a
 * signing symbol reaches their binaries.
 */
#ifndef MAGNETAR_AUTH_JWTSIGN_H
#define MAGNETAR_AUTH_JWTSIGN_H

#include <openssl/evp.h>

#include "common/jwt.h"

/*
 * Signs `claims` with the Ed25519 private key `priv` under `kid`. On success
 * *out is a NUL-terminated token the caller frees. 0, ERR_INVAL, ERR_NOMEM
 * or ERR_INTERNAL.
 */
int jwtsign_token(EVP_PKEY *priv, const char *kid, const struct jwt_claims *claims, char **out);

#endif
