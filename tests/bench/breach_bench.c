/*
 * breach_bench.c — measurements for magnetar-breach (run by breach.sh):
 *   gen STORE N        build an offline store of N generated hashes
 *   gentext FILE N     write the same N hashes as SHA1:COUNT lines (import input)
 *   offline STORE N S  S lookups (half present, half absent) in process: lookups/s
 *   rpc URL S          S Range calls of one cached prefix through RPC, and S
 *                      Pings for reference: p50/p99 of each
 * Hash i is a fixed function of i, so the lookups know which hashes exist.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "breach.pb-c.h"
#include "common/clock.h"
#include "common/rpc.h"
#include "lib/pwstore/pwstore.h"

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static void gen_hash(uint64_t i, uint8_t h[20])
{
	uint64_t x = i * 3, w[3];
	w[0] = splitmix(&x);
	w[1] = splitmix(&x);
	w[2] = splitmix(&x);
	memcpy(h, w, 20);
}

static uint32_t bucket(const uint8_t *h)
{
	return (uint32_t)h[0] << 12 | (uint32_t)h[1] << 4 | h[2] >> 4;
}

static int cmd_gen(const char *path, uint64_t n)
{
	uint64_t *per = calloc(PWSTORE_BUCKETS, sizeof(*per)), t0 = clock_mono_us();
	struct pwstore_writer *w;
	uint8_t h[20];
	int rv;

	for (uint64_t i = 0; i < n; i++) {
		gen_hash(i, h);
		per[bucket(h)]++;
	}
	if ((rv = pwstore_writer_open(path, per, &w)) != 0)
		return fprintf(stderr, "open: %d\n", rv), 1;
	for (uint64_t i = 0; i < n; i++) {
		gen_hash(i, h);
		pwstore_writer_add(w, h, (uint32_t)(i % 1000 + 1));
	}
	if ((rv = pwstore_writer_commit(w)) != 0)
		return fprintf(stderr, "commit: %d\n", rv), 1;
	printf("built %llu hashes in %.1f s\n", (unsigned long long)n,
	       (double)(clock_mono_us() - t0) / 1e6);
	free(per);
	return 0;
}

static int cmd_gentext(const char *path, uint64_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	FILE *f = fopen(path, "w");
	char line[64];
	uint8_t h[20];

	if (f == NULL)
		return perror(path), 1;
	setvbuf(f, NULL, _IOFBF, 1 << 20);
	for (uint64_t i = 0; i < n; i++) {
		gen_hash(i, h);
		for (int k = 0; k < 20; k++) {
			line[2 * k] = hex[h[k] >> 4];
			line[2 * k + 1] = hex[h[k] & 15];
		}
		fprintf(f, "%.40s:%u\r\n", line, (unsigned)(i % 1000 + 1));
	}
	return fclose(f) == 0 ? 0 : 1;
}

static int cmd_offline(const char *path, uint64_t n, uint64_t samples)
{
	struct pwstore *s;
	uint64_t x = 42, found = 0, t0, t1;
	uint8_t(*keys)[20] = malloc(samples * 20);
	uint32_t c;
	int rv;

	if ((rv = pwstore_open(path, &s)) != 0)
		return fprintf(stderr, "open: %d\n", rv), 1;
	/* keys first, so the timing is lookups only */
	for (uint64_t i = 0; i < samples; i++) {
		uint64_t r = splitmix(&x) % n;
		gen_hash(i % 2 == 0 ? r : n + r, keys[i]); /* index >= n was never stored */
	}
	/* warm: one pass touching every index page and a share of records */
	for (uint64_t i = 0; i < samples; i++)
		found += pwstore_lookup(s, keys[i], &c) == 0;
	found = 0;
	t0 = clock_mono_us();
	for (uint64_t i = 0; i < samples; i++)
		found += pwstore_lookup(s, keys[i], &c) == 0;
	t1 = clock_mono_us();
	printf("offline: %llu hashes, %llu lookups (%llu found) in %.3f s: %.0f lookups/s\n",
	       (unsigned long long)pwstore_count(s), (unsigned long long)samples,
	       (unsigned long long)found, (double)(t1 - t0) / 1e6,
	       (double)samples * 1e6 / (double)(t1 - t0));
	pwstore_unref(s);
	free(keys);
	return found == samples / 2 ? 0 : 1;
}

static int u64cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int rpc_series(struct rpc_client *c, const char *method, const ProtobufCMessage *in,
                      uint64_t samples, const char *label)
{
	uint64_t *lat = malloc(samples * sizeof(*lat));
	struct rpc_result r;

	for (uint64_t i = 0; i < samples + 200; i++) {
		uint64_t t0 = clock_mono_us();
		if (rpc_call_sync(c, &magnetar__breach__descriptor, method, in, NULL, 2000, &r) !=
		        0 ||
		    r.status != MAGNETAR__STATUS__STATUS_OK)
			return fprintf(stderr, "%s failed\n", method), 1;
		if (i == 0 && strcmp(method, "Range") == 0)
			printf("range source of the first call: %s\n",
			       ((Magnetar__RangeReply *)r.output)->source);
		rpc_result_fini(&r);
		if (i >= 200) /* the first 200 warm up */
			lat[i - 200] = clock_mono_us() - t0;
	}
	qsort(lat, samples, sizeof(*lat), u64cmp);
	printf("%s: %llu calls p50 %llu us p99 %llu us\n", label, (unsigned long long)samples,
	       (unsigned long long)lat[samples / 2], (unsigned long long)lat[samples * 99 / 100]);
	free(lat);
	return 0;
}

static int cmd_rpc(const char *url, uint64_t samples)
{
	Magnetar__RangeRequest req = MAGNETAR__RANGE_REQUEST__INIT;
	Magnetar__PingRequest ping = MAGNETAR__PING_REQUEST__INIT;
	struct rpc_client *c;
	int rv;

	if (rpc_client_open(url, 0, &c) != 0)
		return 1;
	for (int i = 0; i < 100 && !rpc_client_connected(c); i++)
		usleep(10000);
	req.prefix = "5BAA6";
	rv = rpc_series(c, "Ping", &ping.base, samples, "Ping (reference)") ||
	     rpc_series(c, "Range", &req.base, samples, "Range, cache hit");
	rpc_client_close(c);
	return rv;
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "gen") == 0)
		return cmd_gen(argv[2], strtoull(argv[3], NULL, 10));
	if (argc == 4 && strcmp(argv[1], "gentext") == 0)
		return cmd_gentext(argv[2], strtoull(argv[3], NULL, 10));
	if (argc == 5 && strcmp(argv[1], "offline") == 0)
		return cmd_offline(argv[2], strtoull(argv[3], NULL, 10),
		                   strtoull(argv[4], NULL, 10));
	if (argc == 4 && strcmp(argv[1], "rpc") == 0)
		return cmd_rpc(argv[2], strtoull(argv[3], NULL, 10));
	fprintf(stderr, "usage: see the header of tests/bench/breach_bench.c\n");
	return 2;
}
