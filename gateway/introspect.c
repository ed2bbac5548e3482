/*
 * introspect.c — POST /api/v1/auth/introspect (RFC 7662), for an app's own
 * services (docs/apps.md): is this access token's session alive, and whose
 * is it. The caller authenticates as a registered client with HTTP Basic
 * (RFC 7662 §2.1, RFC 6749 §2.3.1); the body is the form RFC 7662 names,
 * `token=...` (`token_type_hint` accepted and ignored: there is one kind),
 * parsed by libmicrohttpd's own form parser.
 *
 * Auth answers, not this gateway's revoked set: a service that introspects
 * wants a logout seen at once, and auth is where it is recorded. The client
 * check, the throttle of failed ones and the audit event per call are
 * auth's too (services/auth/clients.c).
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>
#include <strings.h>

#include "auth.pb-c.h"
#include "common/jwt.h"
#include "gateway/gateway.h"

#define INTROSPECT_CRED_MAX 256 /* decoded "id:secret"; ours are under 80 */
#define INTROSPECT_FORM_BUF 512 /* libmicrohttpd's parser's own buffer */
/* A client not yet verified since auth started costs an argon2id check,
 * which may queue behind a login flood (as authroutes.c allows). */
#define INTROSPECT_TIMEOUT_MS 10000

/* docs/api.md "Session risk": the score's band, as a service acts on it. */
static const char *introspect_band(uint32_t score)
{
	return score >= 70 ? "step_up" : score >= 50 ? "elevated" : "low";
}

static int introspect_refuse_client(struct http_request *req)
{
	struct MHD_Response *resp =
	    respond_error_new(req, "invalid_client", "Client authentication failed.");
	if (resp != NULL && MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
	                                            "Basic realm=\"magnetar\"") != MHD_YES) {
		MHD_destroy_response(resp);
		resp = NULL;
	}
	return http_queue(req, MHD_HTTP_UNAUTHORIZED, resp);
}

/* The token's own claim names (sub, sid, role, iat, exp), as RFC 7662
 * answers mirror a JWT's, plus session_id as the login body names it. */
static int introspect_done(struct http_request *req)
{
	const struct rpc_result *r = &req->rpc[0].result;
	const Magnetar__IntrospectReply *t = (const Magnetar__IntrospectReply *)r->output;

	if (r->status == MAGNETAR__STATUS__STATUS_UNAUTHENTICATED)
		return introspect_refuse_client(req);
	if (r->status != MAGNETAR__STATUS__STATUS_OK)
		return respond_rpc_error(req, r);
	if (!t->active || t->user == NULL || t->session == NULL)
		return respond_static(req, MHD_HTTP_OK, "{\"active\":false}");
	return respond_json(req, MHD_HTTP_OK,
	                    json_pack("{s:b, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:f, s:s}",
	                              "active", 1, "token_type", "Bearer", "sub", t->user->id,
	                              "username", t->user->username, "role", t->user->role,
	                              "session_id", t->session->id, "sid", t->session->id, "iat",
	                              (json_int_t)t->issued_at, "exp", (json_int_t)t->expires_at,
	                              "risk_score", t->session->risk_score / 100.0, "risk_band",
	                              introspect_band(t->session->risk_score)));
}

/* "Basic base64(id:secret)" into cred (NUL-terminated), *colon at the ':'. */
static bool introspect_basic(struct http_request *req, char cred[INTROSPECT_CRED_MAX + 3],
                             char **colon)
{
	const char *h =
	    MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	size_t len;
	int n;

	if (h == NULL || strncasecmp(h, "Basic ", 6) != 0)
		return false;
	h += 6;
	len = strlen(h);
	/* Strict base64 with padding: EVP_DecodeBlock takes whole quads only. */
	if (len == 0 || len % 4 != 0 || len / 4 * 3 > INTROSPECT_CRED_MAX ||
	    strspn(h, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") != len)
		return false;
	if ((n = EVP_DecodeBlock((unsigned char *)cred, (const unsigned char *)h, (int)len)) < 0)
		return false;
	n -= (h[len - 1] == '=') + (h[len - 2] == '='); /* padding decoded as zeros */
	cred[n] = '\0';
	if (memchr(cred, '\0', (size_t)n) != NULL || (*colon = strchr(cred, ':')) == NULL)
		return false;
	**colon = '\0';
	return true;
}

struct introspect_form {
	char token[JWT_MAX_TOKEN + 1];
	size_t len;
	int tokens; /* `token` fields seen: exactly one */
	bool too_long;
};

static enum MHD_Result introspect_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                        const char *filename, const char *content_type,
                                        const char *encoding, const char *data, uint64_t off,
                                        size_t size)
{
	struct introspect_form *f = cls;
	(void)kind, (void)filename, (void)content_type, (void)encoding;

	if (strcmp(key, "token") != 0)
		return MHD_YES; /* token_type_hint, or an extension: ignored (RFC 7662 §2.1) */
	if (off == 0)
		f->tokens++;
	/* A NUL (%00) would cut the token short of what was sent: judged as
	 * the whole, which is none of ours. */
	if (f->tokens != 1 || off != f->len || size > JWT_MAX_TOKEN - f->len ||
	    memchr(data, '\0', size) != NULL) {
		f->too_long = f->tokens == 1;
		return MHD_YES;
	}
	memcpy(f->token + f->len, data, size);
	f->len += size;
	f->token[f->len] = '\0';
	return MHD_YES;
}

static bool introspect_is_form(const char *ct)
{
	static const char want[] = "application/x-www-form-urlencoded";
	size_t n = sizeof(want) - 1;
	return ct != NULL && strncasecmp(ct, want, n) == 0 &&
	       (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

int introspect_serve(struct http_request *req)
{
	Magnetar__IntrospectRequest in = MAGNETAR__INTROSPECT_REQUEST__INIT;
	struct introspect_form form = {.len = 0};
	struct MHD_PostProcessor *pp;
	char cred[INTROSPECT_CRED_MAX + 3], *colon = NULL;
	int rv;

	if (!introspect_basic(req, cred, &colon)) {
		OPENSSL_cleanse(cred, sizeof(cred));
		return introspect_refuse_client(req);
	}
	if (!introspect_is_form(MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
	                                                    MHD_HTTP_HEADER_CONTENT_TYPE))) {
		OPENSSL_cleanse(cred, sizeof(cred));
		return respond_error(req, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
		                     "The body must be application/x-www-form-urlencoded.");
	}
	pp = MHD_create_post_processor(req->conn, INTROSPECT_FORM_BUF, introspect_field, &form);
	if (pp == NULL ||
	    (req->body_len > 0 &&
	     MHD_post_process(pp, req->body != NULL ? req->body : "", req->body_len) != MHD_YES)) {
		if (pp != NULL)
			MHD_destroy_post_processor(pp);
		OPENSSL_cleanse(cred, sizeof(cred));
		OPENSSL_cleanse(&form, sizeof(form));
		return respond_error(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
		                     "The body is not a form.");
	}
	/* The last field is handed over when the parser is destroyed. */
	if (MHD_destroy_post_processor(pp) != MHD_YES)
		form.tokens = 0;
	/* Longer than any token we issue: not one of ours, so inactive, once
	 * the client is known (auth refuses an empty token). */
	if (form.too_long)
		form.len = 0, form.token[0] = '\0';
	else if (form.len == 0)
		form.tokens = 0;
	if (form.tokens != 1) {
		OPENSSL_cleanse(cred, sizeof(cred));
		OPENSSL_cleanse(&form, sizeof(form));
		return respond_error(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
		                     "The body must hold one token field.");
	}
	in.client_id = cred;
	in.client_secret.data = (uint8_t *)colon + 1;
	in.client_secret.len = strlen(colon + 1);
	in.token = form.token;
	req->rpc_timeout_ms = INTROSPECT_TIMEOUT_MS;
	if ((rv = http_async_begin(req, introspect_done)) != 0) {
		rv = http_async_refused(req, rv);
	} else {
		http_async_call(req, 0, req->gw->client[SVC_AUTH], &magnetar__auth__descriptor,
		                "Introspect", &in.base);
		http_async_end(req);
	}
	/* The RPC packed its own copy. */
	OPENSSL_cleanse(cred, sizeof(cred));
	OPENSSL_cleanse(&form, sizeof(form));
	return rv;
}
