/*
 * security_headers.h — the OWASP headers the gateway puts on every answer
 * (decorate.c) and the defaults of the two that settings.c lets an operator
 * override, in one place: the HTTP engine prototypes under
 * tests/bench/engines send exactly this set, so that a benchmark compares
 * like with like.
 */
#ifndef MAGNETAR_GATEWAY_SECURITY_HEADERS_H
#define MAGNETAR_GATEWAY_SECURITY_HEADERS_H

/* For an API that serves no HTML. Cache-Control goes on everything:
 * nothing the gateway says is cacheable. X(name, value) per header. */
#define SECURITY_HEADERS(X)                                                                        \
	X("X-Content-Type-Options", "nosniff")                                                     \
	X("X-Frame-Options", "DENY")                                                               \
	X("Referrer-Policy", "no-referrer")                                                        \
	X("Cross-Origin-Opener-Policy", "same-origin")                                             \
	X("Cross-Origin-Resource-Policy", "same-origin")                                           \
	X("Cache-Control", "no-store")

/* docs/api.md: frame-ancestors 'none' in every variant of the CSP. */
#define SECURITY_CSP_STRICT "default-src 'none'; frame-ancestors 'none'"
#define SECURITY_PERMISSIONS                                                                       \
	"accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), "             \
	"microphone=(), payment=(), usb=()"

#endif
