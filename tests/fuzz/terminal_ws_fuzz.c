/*
 * terminal_ws_fuzz.c — libFuzzer target for a terminal WebSocket as the
 * gateway reads it: the input is the client's byte stream, framed by a real
 * libwslay server context, each message checked by wsframe_client (what the
 * gateway forwards) and then parsed by the terminal's frame_parse_client,
 * which must accept nothing the size limits forbid.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <wslay/wslay.h>

#include "gateway/wsframe.h"
#include "services/terminal/terminal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct feed {
	const uint8_t *p;
	size_t n;
};

static ssize_t fz_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
	struct feed *f = user;
	(void)flags;
	if (f->n == 0) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	if (len > f->n)
		len = f->n;
	/* Uneven chunks, as a network delivers them. */
	if (len > 7 && (f->p[0] & 1))
		len = 7;
	memcpy(buf, f->p, len);
	f->p += len;
	f->n -= len;
	return (ssize_t)len;
}

static ssize_t fz_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
	(void)ctx;
	(void)data;
	(void)flags;
	(void)user;
	return (ssize_t)len;
}

static void fz_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user)
{
	struct frame f;
	int v;
	(void)ctx;
	(void)user;
	if (arg->opcode != WSLAY_TEXT_FRAME && arg->opcode != WSLAY_BINARY_FRAME)
		return;
	v = wsframe_client(arg->opcode == WSLAY_BINARY_FRAME ? WSFRAME_OP_BINARY : WSFRAME_OP_TEXT,
	                   arg->msg, arg->msg_length);
	if (v != WSFRAME_FORWARD)
		return;
	if (arg->msg_length > WSFRAME_DATA_MAX + 1)
		abort();
	if (frame_parse_client(arg->msg, arg->msg_length, &f) == 0 && f.kind == FRAME_DATA &&
	    f.len != arg->msg_length - 1)
		abort();
	(void)wsframe_server(arg->msg, arg->msg_length);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wslay_event_callbacks cb = {
	    .recv_callback = fz_recv, .send_callback = fz_send, .on_msg_recv_callback = fz_msg};
	struct feed f = {data, size};
	wslay_event_context_ptr ws;

	if (wslay_event_context_server_init(&ws, &cb, &f) != 0)
		return 0;
	wslay_event_config_set_max_recv_msg_length(ws, WSFRAME_DATA_MAX + 1);
	for (int i = 0; i < 64 && f.n > 0 && wslay_event_want_read(ws); i++)
		if (wslay_event_recv(ws) != 0)
			break;
	while (wslay_event_want_write(ws) && wslay_event_send(ws) == 0 &&
	       wslay_event_get_queued_msg_count(ws) > 0)
		;
	wslay_event_context_free(ws);
	return 0;
}
