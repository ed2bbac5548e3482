/*
 * rpc_decode_fuzz.c — the bytes another process sends an RPC server: the
 * envelope decode, the method look-up and the payload unpack of
 * common/rpc_server.c, for every service's descriptor (the first byte picks it).
 */
#include <stddef.h>
#include <stdint.h>

#include "audit.pb-c.h"
#include "auth.pb-c.h"
#include "breach.pb-c.h"
#include "common/rpc.h"
#include "gateway.pb-c.h"
#include "terminal.pb-c.h"

static const ProtobufCServiceDescriptor *const services[] = {
    &magnetar__audit__descriptor,   &magnetar__auth__descriptor,     &magnetar__breach__descriptor,
    &magnetar__gateway__descriptor, &magnetar__terminal__descriptor,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Magnetar__RpcRequest *env;
	ProtobufCMessage *input;
	int method;

	if (size < 1)
		return 0;
	rpc_decode(services[data[0] % 5], data + 1, size - 1, &env, &method, &input);
	/* Touch what a handler would: the packed size walks every field. */
	if (input != NULL && protobuf_c_message_get_packed_size(input) > (1u << 30))
		__builtin_trap();
	if (input != NULL)
		protobuf_c_message_free_unpacked(input, NULL);
	if (env != NULL)
		magnetar__rpc_request__free_unpacked(env, NULL);
	return 0;
}
