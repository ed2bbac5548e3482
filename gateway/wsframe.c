/*
 * wsframe.c — what the gateway lets through from a terminal's WebSocket
 * (docs/api.md "Terminal"): binary messages whose first byte is '0' (input) or
 * '1' (resize), each of bounded size. Pure, so the fuzz target links it;
 * the terminal service parses and validates again on its side.
 */
#include "gateway/wsframe.h"

int wsframe_client(int opcode, const uint8_t *msg, size_t len)
{
	if (opcode != WSFRAME_OP_BINARY)
		return WSFRAME_REFUSE_TYPE;
	if (len == 0)
		return WSFRAME_REFUSE_POLICY;
	if (msg[0] == '0' && len - 1 <= WSFRAME_DATA_MAX)
		return WSFRAME_FORWARD;
	if (msg[0] == '1' && len - 1 <= WSFRAME_RESIZE_MAX)
		return WSFRAME_FORWARD;
	return WSFRAME_REFUSE_POLICY;
}

int wsframe_server(const uint8_t *msg, size_t len)
{
	if (len == 0)
		return WSFRAME_REFUSE_POLICY;
	if (msg[0] == '0' && len - 1 <= WSFRAME_DATA_MAX)
		return WSFRAME_FORWARD;
	if (msg[0] == '2' && len - 1 <= WSFRAME_RESIZE_MAX)
		return WSFRAME_EXIT;
	return WSFRAME_REFUSE_POLICY;
}
