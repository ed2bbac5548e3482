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

struct proto_header {
	const char *name, *value;
};

/* The gateway's headers on every answer (gateway/respond.c, settings.c). */
static const struct proto_header proto_headers[] = {
    {"X-Content-Type-Options", "nosniff"},
    {"X-Frame-Options", "DENY"},
    {"Referrer-Policy", "no-referrer"},
    {"Cross-Origin-Opener-Policy", "same-origin"},
    {"Cross-Origin-Resource-Policy", "same-origin"},
    {"Cache-Control", "no-store"},
    {"Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"},
    {"Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()"},
};
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
