/*
 * proto.h — what the two engine prototypes (h2o_proto.c, mhd_proto.c)
 * answer, so that they differ only in the HTTP library: the gateway's
 * /healthz (its header set, a fresh X-Request-Id) and a /me answered from a
 * verified-token cache (a keyed hash of the bearer token, a constant-time
 * compare, a cached JSON body). Bench code: tests/bench/engines.sh.
 */
#ifndef MAGNETAR_BENCH_ENGINE_PROTO_H
#define MAGNETAR_BENCH_ENGINE_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/security_headers.h"

struct proto_header {
	const char *name, *value;
};

/* The gateway's headers on every answer, with their production defaults. */
#define PROTO_ROW(name, value) {name, value},
static const struct proto_header proto_headers[] = {
    {"Content-Security-Policy", SECURITY_CSP_STRICT},
    {"Permissions-Policy", SECURITY_PERMISSIONS},
    SECURITY_HEADERS(PROTO_ROW)};
#define PROTO_NHEADERS (sizeof(proto_headers) / sizeof(proto_headers[0]))
#define PROTO_JSON "application/json; charset=utf-8"
#define PROTO_HEALTHZ "{\"status\":\"ok\"}"
/* The bearer token the bench presents, and the cached /me answer. */
#define PROTO_TOKEN "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
#define PROTO_ME "{\"id\":\"0123456789abcdef\",\"username\":\"alice\",\"role\":\"member\"}"

/* A request id: 8 random-ish hex of the process, 16 of a per-thread counter. */
void proto_request_id(char out[25]);
/* 1 when `auth` ("Bearer <token>", `len` bytes) is a cached verified token. */
int proto_token_cached(const char *auth, size_t len);
/* Fills the token cache (before the threads start). */
void proto_init(void);

#endif
