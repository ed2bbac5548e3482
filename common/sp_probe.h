/*
 * sp_probe.h — a one-shot SP client on a plain socket, for the self-checks
 * of our own listeners (svc.c, events.c).
 *
 * Why not an nng socket: Debian's nng 1.5.2 shares one reaper thread per
 * process, and closing sockets that carried data, over and over, can wedge
 * it for good (nng #1543, docs/reliability.md); every later nng_close in
 * the process then hangs, shutdown included. A self-check runs every
 * 500 ms, so it would be that churn. The probe speaks the SP wire itself
 * (the 8-byte handshake, then length-prefixed messages, nng's ipc:// and
 * tcp:// framing), so a check opens and closes no nng socket of ours.
 *
 * The peer must be our own listener: on ipc:// the process that listens
 * (SO_PEERCRED) must be this one, so a squatter on the socket name, even
 * of our uid, cannot answer for us. A handshake that does not come in time
 * is waited for a little longer before the hang-up (a hang-up before it is
 * the listener-stall trigger).
 */
#ifndef MAGNETAR_SP_PROBE_H
#define MAGNETAR_SP_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* SP protocol numbers (nng's protocol headers). */
#define SP_PROTO_PUB 0x20
#define SP_PROTO_SUB 0x21
#define SP_PROTO_REQ 0x30
#define SP_PROTO_REP 0x31

struct sp_probe {
	int fd;
	bool ipc; /* ipc:// frames carry a type byte before the length */
};

/*
 * Connects to `url` (ipc:// or tcp://host:port; the first entry of a list)
 * and completes the handshake as protocol `self` with a peer speaking
 * `peer`, within timeout_ms. 0, or ERR_INVAL for another transport
 * (inproc://: nothing to probe), ERR_NOMEM when no socket could be made,
 * ERR_PERM for a listener that is not this process, ERR_TIMEOUT, ERR_PROTO
 * for a peer that is no SP `peer`, ERR_IO.
 */
int sp_probe_open(struct sp_probe *p, const char *url, uint16_t self, uint16_t peer,
                  int timeout_ms);

/*
 * One request on a req probe: sends `body` with request id `id` and waits
 * up to timeout_ms for the reply carrying the same id. On 0 the reply's
 * body (without the id) is in reply[0..*got). ERR_TIMEOUT, ERR_PROTO (a
 * frame that is not a reply to `id`, or larger than cap), ERR_IO.
 */
int sp_probe_call(struct sp_probe *p, uint32_t id, const void *body, size_t len, uint8_t *reply,
                  size_t cap, size_t *got, int timeout_ms);

void sp_probe_close(struct sp_probe *p);

/*
 * The reply body inside one received message (after the frame's length):
 * the 4-byte request id `id` (high bit set), then the body. 0 with *body and
 * *body_len set, or ERR_PROTO. Pure, for the fuzz target.
 */
int sp_reply_body(const uint8_t *msg, size_t len, uint32_t id, const uint8_t **body,
                  size_t *body_len);

#endif
