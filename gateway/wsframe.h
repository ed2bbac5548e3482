/*
 * wsframe.h — the gateway's check of terminal WebSocket messages (wsframe.c),
 * apart from gateway.h so the fuzz target needs neither MHD nor wslay.
 */
#ifndef MAGNETAR_GATEWAY_WSFRAME_H
#define MAGNETAR_GATEWAY_WSFRAME_H

#include <stddef.h>
#include <stdint.h>

#define WSFRAME_OP_TEXT 1 /* RFC 6455 opcodes (wslay's values) */
#define WSFRAME_OP_BINARY 2
#define WSFRAME_DATA_MAX 65536 /* payload bytes of one '0' frame */
#define WSFRAME_RESIZE_MAX 128 /* JSON bytes of one '1' or '2' frame */

enum wsframe_verdict {
	WSFRAME_FORWARD = 0,   /* pass it on */
	WSFRAME_EXIT = 1,      /* server→client exit frame: pass on, then close */
	WSFRAME_REFUSE_TYPE,   /* not binary: close 1003 */
	WSFRAME_REFUSE_POLICY, /* empty, unknown kind or too big: close 1008 */
};

/* A message from the client (opcode, payload). */
int wsframe_client(int opcode, const uint8_t *msg, size_t len);
/* A message from the terminal service, on its way to the client. */
int wsframe_server(const uint8_t *msg, size_t len);

#endif
