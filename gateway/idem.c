/*
 * idem.c — the Idempotency-Key stage, for POST routes that create
 * (ROUTE_F_IDEMPOTENT; docs/api.md Conventions): after authentication (so
 * the key is scoped to the user, or else the client) the key is claimed in
 * gateway.db, or its earlier answer replayed with Idempotent-Replayed: true.
 * On the way out (idem_answered) the answer is stored for 24 h, if the
 * handler got as far as its RPCs; an answer given before them (a malformed
 * body, a missing role) frees the key, so a corrected retry runs. Scope, key
 * and body are stored only as HMACs under a per-install key
 * (<data dir>/idempotency.key, 0600).
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/ids.h"
#include "common/log.h"
#include "gateway/gateway.h"

#define IDEM_TTL_MS (24ull * 3600 * 1000)
#define IDEM_PURGE_EVERY_MS 60000
#define IDEM_KEY_FILE "idempotency.key"

struct idem {
	uint8_t key[32];
	_Atomic uint64_t purge_at;
};

struct idem_state {
	const char *key; /* the header's value (MHD's memory, valid for the request) */
	bool held;       /* our running row: complete or release it */
	uint8_t id[STORE_IDEM_ID_LEN];
	struct store_idem found; /* when not held: what idem_answer answers */
	int error;               /* claiming failed: 503 */
	unsigned rounds;         /* req->rounds at the claim: later ones are the handler's */
};

bool idem_key_valid(const char *key)
{
	size_t n = 0;

	if (key == NULL)
		return false;
	for (; key[n] != '\0'; n++)
		if ((unsigned char)key[n] < 0x20 || (unsigned char)key[n] > 0x7e || n >= 255)
			return false;
	return n >= 1;
}

/* Reads the install key, creating it (0600, O_EXCL) on first start. */
static int idem_load_key(struct gateway *gw, uint8_t key[32])
{
	char path[600];
	struct stat st;
	ssize_t n;
	int fd, rv = ERR_IO;

	if (svc_path(&gw->svc, IDEM_KEY_FILE, path, sizeof(path)) != 0)
		return ERR_INVAL;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0 && errno == ENOENT) {
		if (ids_random(key, 32) != 0)
			return ERR_IO;
		if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600)) <
		    0)
			return ERR_IO;
		if (write(fd, key, 32) != 32 || fsync(fd) != 0) {
			close(fd);
			unlink(path);
			return ERR_IO;
		}
		close(fd);
		return 0;
	}
	if (fd < 0)
		return ERR_IO;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size != 32 ||
	    (st.st_mode & 077) != 0) {
		log_warnx("idem: %s must be a 32-byte file of mode 0600", path);
		goto fail;
	}
	if ((n = read(fd, key, 32)) == 32)
		rv = 0;
fail:
	close(fd);
	return rv;
}

int idem_start(struct gateway *gw)
{
	struct idem *im;
	int rv;

	if ((im = calloc(1, sizeof(*im))) == NULL)
		return ERR_NOMEM;
	if ((rv = idem_load_key(gw, im->key)) != 0) {
		free(im);
		return rv;
	}
	if (gw->svc.pool != NULL)
		store_idem_reset(gw->svc.pool, clock_unix_ms());
	atomic_init(&im->purge_at, clock_mono_ms() + IDEM_PURGE_EVERY_MS);
	gw->idem = im;
	return 0;
}

void idem_stop(struct gateway *gw)
{
	if (gw->idem == NULL)
		return;
	OPENSSL_cleanse(gw->idem->key, sizeof(gw->idem->key));
	free(gw->idem);
	gw->idem = NULL;
}

/* HMAC-SHA256 under the install key of the parts, each with its NUL (so
 * "ab"+"c" and "a"+"bc" differ), then `tail` bytes. Fresh EVP objects: this
 * runs once per keyed request, not on a hot path. */
static void idem_mac(const struct idem *im, const char *const *parts, int n, const void *tail,
                     size_t tail_len, uint8_t out[STORE_IDEM_ID_LEN])
{
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
	OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", "SHA256", 0),
	                       OSSL_PARAM_construct_end()};
	size_t outlen = 0;

	/* On failure the result is all zero, which the caller refuses (503):
	 * a shared zero id could replay one caller's answer to another. */
	memset(out, 0, STORE_IDEM_ID_LEN);
	if (ctx != NULL && EVP_MAC_init(ctx, im->key, sizeof(im->key), params) == 1) {
		for (int i = 0; i < n; i++)
			EVP_MAC_update(ctx, (const unsigned char *)parts[i], strlen(parts[i]) + 1);
		if (tail_len > 0)
			EVP_MAC_update(ctx, tail, tail_len);
		if (EVP_MAC_final(ctx, out, &outlen, STORE_IDEM_ID_LEN) != 1)
			outlen = 0;
	}
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(mac);
	if (outlen != STORE_IDEM_ID_LEN)
		memset(out, 0, STORE_IDEM_ID_LEN);
}

static bool idem_zero(const uint8_t *b)
{
	uint8_t acc = 0;
	for (int i = 0; i < STORE_IDEM_ID_LEN; i++)
		acc |= b[i];
	return acc == 0;
}

static bool idem_claim(struct http_request *req)
{
	struct gateway *gw = req->gw;
	struct idem_state *s = req->idem;
	char scope[JWT_CLAIM_MAX + 8], ip[NETADDR_STRLEN];
	uint8_t body_mac[STORE_IDEM_ID_LEN];
	uint64_t now = clock_unix_ms();
	const char *parts[2];
	int rv;

	/* The user when the handler authenticated one (req->actor), else the
	 * client: two callers never share a key. */
	if (req->actor[0] != '\0')
		snprintf(scope, sizeof(scope), "user:%s", req->actor);
	else {
		http_client_ip(req, ip);
		snprintf(scope, sizeof(scope), "ip:%s", ip);
	}
	parts[0] = scope;
	parts[1] = s->key;
	idem_mac(gw->idem, parts, 2, NULL, 0, s->id);
	/* The body's hash covers the route too: one key on two routes differs. */
	parts[0] = req->method_name;
	parts[1] = req->path;
	idem_mac(gw->idem, parts, 2, req->body, req->body_len, body_mac);
	if (idem_zero(s->id) || idem_zero(body_mac)) {
		s->error = ERR_INTERNAL;
		return false;
	}

	if (clock_mono_ms() >= atomic_load(&gw->idem->purge_at)) {
		atomic_store(&gw->idem->purge_at, clock_mono_ms() + IDEM_PURGE_EVERY_MS);
		store_idem_purge(gw->svc.pool, now);
	}
	rv = store_idem_claim(gw->svc.pool, s->id, body_mac, now, IDEM_TTL_MS, &s->found);
	if (rv != 0) {
		s->error = rv;
		return false;
	}
	if (s->found.outcome == STORE_IDEM_CLAIMED) {
		s->held = true;
		return true;
	}
	return false;
}

static int idem_answer(struct http_request *req)
{
	struct idem_state *s = req->idem;
	struct MHD_Response *resp;

	if (s->error != 0)
		return respond_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "service_unavailable",
		                     "The request could not be recorded; try again later.");
	switch (s->found.outcome) {
	case STORE_IDEM_RUNNING:
		return respond_error(req, MHD_HTTP_CONFLICT, "idempotency_key_in_progress",
		                     "A request with this Idempotency-Key is still running.");
	case STORE_IDEM_MISMATCH:
		return respond_error(req, MHD_HTTP_UNPROCESSABLE_CONTENT, "idempotency_key_reused",
		                     "This Idempotency-Key was used with another request.");
	case STORE_IDEM_DONE:
		resp = respond_new(req, s->found.body, s->found.len, MHD_RESPMEM_MUST_FREE,
		                   s->found.len > 0);
		s->found.body = NULL; /* MHD's (or freed) now */
		if (resp != NULL &&
		    MHD_add_response_header(resp, "Idempotent-Replayed", "true") != MHD_YES) {
			MHD_destroy_response(resp);
			resp = NULL;
		}
		return http_queue(req, s->found.status, resp);
	default:
		return ERR_INTERNAL;
	}
}

/* A token in an answer is never written to disk (docs/api.md): such a key is
 * released instead, and a retry runs again. */
static bool idem_holds_token(const char *body, size_t len)
{
	static const char *const fields[] = {"\"access_token\"", "\"refresh_token\"",
	                                     "\"ws_ticket\"", "\"token\"", "\"secret\""};
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (memmem(body, len, fields[i], strlen(fields[i])) != NULL)
			return true;
	return false;
}

enum stage_rv idem_stage(struct http_request *req)
{
	const struct route *r = req->route;
	const char *key;

	if (r == NULL || (r->flags & ROUTE_F_IDEMPOTENT) == 0 || req->method != HTTP_M_POST ||
	    req->gw->idem == NULL || req->gw->svc.pool == NULL ||
	    (key = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Idempotency-Key")) ==
	        NULL)
		return STAGE_NEXT;
	if (!idem_key_valid(key)) {
		req->stage_error = respond_error(
		    req, MHD_HTTP_BAD_REQUEST, "invalid_request",
		    "The Idempotency-Key must be 1 to 255 printable ASCII characters.");
		return STAGE_DONE;
	}
	if ((req->idem = calloc(1, sizeof(*req->idem))) == NULL) {
		req->stage_error = ERR_NOMEM;
		return STAGE_DONE;
	}
	req->idem->key = key;
	req->idem->rounds = req->rounds;
	if (idem_claim(req)) {
		pipeline_want_answered(req); /* the answer is stored, or the key freed */
		return STAGE_NEXT;
	}
	/* Used before (replay, 409, 422) or not recordable (503). */
	req->stage_error = idem_answer(req);
	return STAGE_DONE;
}

int idem_answered(struct http_request *req, unsigned status, struct MHD_Response *resp)
{
	struct idem_state *s = req->idem;
	struct pool *p = req->gw->svc.pool;
	(void)resp;

	if (s == NULL || !s->held)
		return 0;
	s->held = false;
	if (status < 500 && req->rounds > s->rounds && req->resp_body != NULL &&
	    !idem_holds_token(req->resp_body, req->resp_bytes)) {
		if (store_idem_complete(p, s->id, status, req->resp_body, req->resp_bytes) == 0)
			return 0;
	}
	/* A 5xx may succeed when retried; an answer we cannot or may not keep
	 * must not block the key for 24 h either. */
	store_idem_release(p, s->id);
	return 0;
}

void idem_release(struct http_request *req)
{
	struct idem_state *s = req->idem;

	if (s->held)
		store_idem_release(req->gw->svc.pool, s->id);
	free(s->found.body);
	free(s);
	req->idem = NULL;
}
