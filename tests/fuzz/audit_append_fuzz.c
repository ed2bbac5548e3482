/*
 * audit_append_fuzz.c — libFuzzer target for what magnetar-audit parses
 * from outside: an RPC envelope against its merged Audit+AuditLog
 * descriptor (Append batches included), a keyring text as it comes from
 * MAGNETAR_AUDIT_KEYS(_FILE), and the escaping of arbitrary field bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/jsonesc.h"
#include "common/rpc.h"
#include "services/audit/audit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Magnetar__RpcRequest *env = NULL;
	ProtobufCMessage *input = NULL;
	struct audit_keyring kr;
	char err[256], *text, out[512];
	int method;
	volatile size_t sink = 0;

	if (rpc_decode(service_descriptor(), data, size, &env, &method, &input) == 0 &&
	    method >= 0 && strcmp(service_descriptor()->methods[method].name, "Append") == 0) {
		const Magnetar__AppendRequest *req = (const Magnetar__AppendRequest *)input;
		for (size_t i = 0; i < req->n_events; i++)
			sink += jsonesc_str(out, sizeof(out), req->events[i]->detail);
	}
	if (input != NULL)
		protobuf_c_message_free_unpacked(input, NULL);
	if (env != NULL)
		magnetar__rpc_request__free_unpacked(env, NULL);
	if ((text = malloc(size + 1)) == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	if (keyring_parse(text, &kr, err, sizeof(err)) == 0) {
		sink += keyring_count(&kr);
		keyring_wipe(&kr);
	}
	sink += jsonesc_str(out, sizeof(out), text);
	free(text);
	(void)sink;
	return 0;
}
