/*
 * sp_reply_fuzz.c — libFuzzer target for what the self-check's plain-socket
 * probe (common/sp_probe) reads back from a listener: one message's bytes,
 * which must start with the request id it sent, then an RpcReply. The
 * first 4 input bytes choose the id; the rest is the message. The body
 * handed out must lie inside the message and decode (or not) without harm.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/sp_probe.h"
#include "common.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *body;
	uint32_t id;
	size_t len;

	if (size < 4)
		return 0;
	id = (uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 | (uint32_t)data[2] << 8 | data[3];
	data += 4;
	size -= 4;
	if (sp_reply_body(data, size, id & 0x7fffffffu, &body, &len) != 0)
		return 0;
	if (body < data || body + len != data + size)
		abort();
	Magnetar__RpcReply *r = magnetar__rpc_reply__unpack(NULL, len, body);
	if (r != NULL)
		magnetar__rpc_reply__free_unpacked(r, NULL);
	return 0;
}
