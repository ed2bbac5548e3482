/*
 * rate.c — the rate-limit stage: every request takes a token from its
 * client's global bucket, then from its route class's (struct route.rate),
 * before any body byte is read. The buckets themselves are ratelimit.c's.
 * O(1), no allocation: the hot path pays a lock and a hash.
 */
#include "gateway/gateway.h"

enum stage_rv ratelimit_stage(struct http_request *req)
{
	struct gateway *gw = req->gw;
	enum rate_class k = RATE_GLOBAL;
	uint64_t now = req->start_us / 1000;
	unsigned wait;

	if (gw->rl == NULL)
		return STAGE_NEXT;
	wait = ratelimit_take(gw->rl, RATE_GLOBAL, &gw->rate[RATE_GLOBAL], &req->client, now);
	if (wait == 0 && req->allowed && req->route->rate != RATE_GLOBAL) {
		k = req->route->rate;
		wait = ratelimit_take(gw->rl, k, &gw->rate[k], &req->client, now);
	}
	if (wait == 0)
		return STAGE_NEXT;
	metrics_rate_hit(gw, k);
	req->retry_after = wait;
	pipeline_refuse(req, MHD_HTTP_TOO_MANY_REQUESTS, "rate_limited",
	                "Too many requests; try again later.");
	return STAGE_REFUSED;
}
