/*
 * service.c — audit serves two service blocks of proto/audit.proto on one
 * socket: Audit (Ping, Stats, Append: what every producer speaks) and
 * AuditLog (Query, Verify, RotateKey). Kept apart in the contract so the
 * producers' side never changes; merged here into one descriptor, with the
 * by-name index protobuf-c's binary search expects.
 */
#include <pthread.h>
#include <string.h>

#include "services/audit/audit.h"

#define SERVICE_MAX_METHODS 16

static ProtobufCMethodDescriptor service_methods[SERVICE_MAX_METHODS];
static unsigned service_index[SERVICE_MAX_METHODS];
static ProtobufCServiceDescriptor service_desc;
static pthread_once_t service_once = PTHREAD_ONCE_INIT;

static void service_build(void)
{
	const ProtobufCServiceDescriptor *parts[] = {&magnetar__audit__descriptor,
	                                             &magnetar__audit_log__descriptor};
	unsigned n = 0;

	for (size_t p = 0; p < sizeof(parts) / sizeof(parts[0]); p++)
		for (unsigned i = 0; i < parts[p]->n_methods && n < SERVICE_MAX_METHODS; i++)
			service_methods[n++] = parts[p]->methods[i];
	for (unsigned i = 0; i < n; i++) {
		unsigned j = i;
		service_index[i] = i;
		while (j > 0 && strcmp(service_methods[service_index[j - 1]].name,
		                       service_methods[i].name) > 0) {
			service_index[j] = service_index[j - 1];
			j--;
		}
		service_index[j] = i;
	}
	service_desc = magnetar__audit__descriptor;
	service_desc.n_methods = n;
	service_desc.methods = service_methods;
	service_desc.method_indices_by_name = service_index;
}

const ProtobufCServiceDescriptor *service_descriptor(void)
{
	pthread_once(&service_once, service_build);
	return &service_desc;
}
