/*
 * proto.c — the engine-independent part of the prototypes (proto.h): the
 * request id and the verified-token cache, keyed with SipHash as the
 * gateway's is (common/siphash.c).
 */
#include "tests/bench/engines/proto.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/siphash.h"

#define PROTO_SLOTS 1024

struct proto_slot {
	char token[128];
	size_t len;
};

static struct proto_slot proto_cache[PROTO_SLOTS];
static uint8_t proto_key[SIPHASH_KEY_LEN];
static unsigned proto_pid;
static _Thread_local uint64_t proto_counter;

void proto_init(void)
{
	size_t n = strlen(PROTO_TOKEN);
	uint64_t h;

	for (size_t i = 0; i < sizeof(proto_key); i++)
		proto_key[i] = (uint8_t)(i * 7 + 1);
	proto_pid = (unsigned)getpid();
	h = siphash24(proto_key, PROTO_TOKEN, n);
	memcpy(proto_cache[h % PROTO_SLOTS].token, PROTO_TOKEN, n);
	proto_cache[h % PROTO_SLOTS].len = n;
}

void proto_request_id(char out[25])
{
	snprintf(out, 25, "%08x%016llx", proto_pid, (unsigned long long)++proto_counter);
}

int proto_token_cached(const char *auth, size_t len)
{
	const struct proto_slot *s;
	uint64_t h;

	if (len <= 7 || strncmp(auth, "Bearer ", 7) != 0)
		return 0;
	auth += 7;
	len -= 7;
	h = siphash24(proto_key, auth, len);
	s = &proto_cache[h % PROTO_SLOTS];
	return s->len == len && CRYPTO_memcmp(s->token, auth, len) == 0;
}
