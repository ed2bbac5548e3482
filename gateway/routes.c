/*
 * routes.c — the gateway's route table: exact path → allowed methods and
 * handler, read once per request by framing.c (the row, whether the method
 * is allowed). The Allow header of a 405 (dispatch.c) and of a preflight
 * (cors.c) is built from the same row, so they cannot disagree. A row also says who may call it
 * (auth, confirm, ROUTE_F_STEP_UP, ROUTE_F_ADMIN: authenticate.c), its other
 * flags (Idempotency-Key, metrics listener) and its rate-limit class;
 * tests/integration/test_gateway_openapi.py reads this table.
 */
#include <stdio.h>
#include <string.h>

#include "gateway/gateway.h"

static const struct route routes_table[] = {
    {.path = "/", .methods = HTTP_M_GET, .handler = health_root},
    {.path = "/healthz", .methods = HTTP_M_GET, .handler = health_live},
    {.path = "/readyz", .methods = HTTP_M_GET, .handler = health_ready},
    {.path = "/metrics", .methods = HTTP_M_GET, .handler = metrics_serve, .flags = ROUTE_F_METRICS},
    {.path = "/openapi.yaml", .methods = HTTP_M_GET, .handler = openapi_serve},
    {.path = "/.well-known/jwks.json", .methods = HTTP_M_GET, .handler = jwks_serve},
    {.path = "/api/v1/auth/register",
     .methods = HTTP_M_POST,
     .handler = authroutes_register,
     .flags = ROUTE_F_IDEMPOTENT,
     .rate = RATE_REGISTER},
    {.path = "/api/v1/auth/login",
     .methods = HTTP_M_POST,
     .handler = authroutes_login,
     .rate = RATE_LOGIN},
    {.path = "/api/v1/auth/refresh", .methods = HTTP_M_POST, .handler = authroutes_refresh},
    {.path = "/api/v1/auth/logout",
     .methods = HTTP_M_POST,
     .handler = authroutes_logout,
     .auth = ROUTE_AUTH_TOKEN},
    {.path = "/api/v1/auth/me",
     .methods = HTTP_M_GET,
     .handler = authroutes_me,
     .auth = ROUTE_AUTH_TOKEN},
    {.path = "/api/v1/auth/password",
     .methods = HTTP_M_POST,
     .handler = authroutes_password,
     .auth = ROUTE_AUTH_TOKEN,
     .rate = RATE_LOGIN},
    {.path = "/api/v1/auth/step-up",
     .methods = HTTP_M_POST,
     .handler = authroutes_step_up,
     .auth = ROUTE_AUTH_TOKEN,
     .flags = ROUTE_F_STEP_UP,
     .rate = RATE_LOGIN},
    {.path = "/api/v1/auth/totp/setup",
     .methods = HTTP_M_POST,
     .handler = authroutes_totp_setup,
     .auth = ROUTE_AUTH_TOKEN},
    {.path = "/api/v1/auth/totp/enable",
     .methods = HTTP_M_POST,
     .handler = authroutes_totp_enable,
     .auth = ROUTE_AUTH_TOKEN},
    {.path = "/api/v1/auth/totp",
     .methods = HTTP_M_DELETE,
     .handler = authroutes_totp_disable,
     .auth = ROUTE_AUTH_TOKEN},
    {.path = "/api/v1/users",
     .methods = HTTP_M_GET | HTTP_M_POST,
     .handler = adminroutes_users,
     .auth = ROUTE_AUTH_TOKEN,
     .flags = ROUTE_F_IDEMPOTENT | ROUTE_F_ADMIN},
    {.path = "/api/v1/users/{id}",
     .methods = HTTP_M_DELETE,
     .handler = adminroutes_user_delete,
     .auth = ROUTE_AUTH_TOKEN,
     .flags = ROUTE_F_ADMIN},
    {.path = "/api/v1/users/{id}/revoke-sessions",
     .methods = HTTP_M_POST,
     .handler = adminroutes_user_revoke,
     .auth = ROUTE_AUTH_TOKEN,
     .flags = ROUTE_F_ADMIN},
    {.path = "/api/v1/audit/events",
     .methods = HTTP_M_GET,
     .handler = adminroutes_audit_events,
     .auth = ROUTE_AUTH_TOKEN,
     .confirm = HTTP_M_GET,
     .flags = ROUTE_F_ADMIN},
    {.path = "/api/v1/audit/verify",
     .methods = HTTP_M_GET,
     .handler = adminroutes_audit_verify,
     .auth = ROUTE_AUTH_TOKEN,
     .confirm = HTTP_M_GET,
     .flags = ROUTE_F_ADMIN},
    /* An app's service, authenticated by HTTP Basic as a registered client
     * (introspect.c); auth throttles failed clients. */
    {.path = "/api/v1/auth/introspect", .methods = HTTP_M_POST, .handler = introspect_serve},
    {.path = "/api/v1/auth/password-check",
     .methods = HTTP_M_POST,
     .handler = authroutes_password_check,
     .rate = RATE_PASSWORD_CHECK},
    {.path = "/api/v1/auth/sessions",
     .methods = HTTP_M_GET,
     .handler = authroutes_sessions,
     .auth = ROUTE_AUTH_TOKEN},
    {.path = "/api/v1/auth/sessions/{id}",
     .methods = HTTP_M_DELETE,
     .handler = authroutes_revoke_session,
     .auth = ROUTE_AUTH_TOKEN},
    {.path = "/api/v1/terminal/sessions",
     .methods = HTTP_M_GET | HTTP_M_POST,
     .handler = terminalroutes_sessions,
     .auth = ROUTE_AUTH_LIVE,
     .confirm = HTTP_M_POST,
     .flags = ROUTE_F_IDEMPOTENT,
     .rate = RATE_TERMINAL},
    {.path = "/api/v1/terminal/sessions/{id}",
     .methods = HTTP_M_DELETE,
     .handler = terminalroutes_close,
     .auth = ROUTE_AUTH_LIVE},
    {.path = "/api/v1/terminal/sessions/{id}/ws",
     .methods = HTTP_M_GET,
     .handler = terminalroutes_ws,
     .auth = ROUTE_AUTH_TICKET,
     .rate = RATE_TERMINAL},
};

/* Method names in the order of the HTTP_M_* bits, as an Allow header lists them. */
static const char *const routes_method_names[] = {
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
};

/* Matches a pattern holding one "{id}" segment ("/a/{id}" or "/a/{id}/b")
 * against `path`; copies the segment. */
static bool routes_match_param(const char *pattern, const char *path, char *param)
{
	const char *hole = strstr(pattern, "{id}");
	size_t plen = (size_t)(hole - pattern), n;
	if (strncmp(pattern, path, plen) != 0)
		return false;
	path += plen;
	n = strspn(path, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-");
	if (n == 0 || n >= ROUTE_PARAM_MAX || strcmp(path + n, hole + 4) != 0)
		return false;
	memcpy(param, path, n);
	param[n] = '\0';
	return true;
}

const struct route *routes_find(const char *path, char param[ROUTE_PARAM_MAX])
{
	/* A few dozen rows: a linear scan costs less than the request's parsing. */
	for (size_t i = 0; i < sizeof(routes_table) / sizeof(routes_table[0]); i++) {
		const char *p = routes_table[i].path;
		if (strstr(p, "{id}") != NULL) {
			if (routes_match_param(p, path, param))
				return &routes_table[i];
		} else if (strcmp(p, path) == 0) {
			return &routes_table[i];
		}
	}
	return NULL;
}

static unsigned routes_mask(const struct route *route)
{
	unsigned m = route->methods;
	if ((m & HTTP_M_GET) != 0)
		m |= HTTP_M_HEAD; /* MHD sends the headers of the GET answer, no body */
	return m;
}

bool routes_allows(const struct route *route, unsigned method)
{
	return method != 0 && (routes_mask(route) & method) != 0;
}

void routes_allow_header(const struct route *route, char *buf, size_t len)
{
	unsigned m = routes_mask(route);
	size_t used = 0;

	if (len == 0)
		return;
	buf[0] = '\0';
	for (size_t i = 0; i < sizeof(routes_method_names) / sizeof(routes_method_names[0]); i++) {
		int n;
		if ((m & (1u << i)) == 0)
			continue;
		n = snprintf(buf + used, len - used, "%s%s", used > 0 ? ", " : "",
		             routes_method_names[i]);
		if (n < 0 || (size_t)n >= len - used)
			return;
		used += (size_t)n;
	}
}

size_t routes_count(void)
{
	return sizeof(routes_table) / sizeof(routes_table[0]);
}

const struct route *routes_at(size_t i)
{
	return i < routes_count() ? &routes_table[i] : NULL;
}

size_t routes_index(const struct route *route)
{
	return (size_t)(route - routes_table);
}

unsigned routes_method(const char *method)
{
	for (size_t i = 0; i < sizeof(routes_method_names) / sizeof(routes_method_names[0]); i++)
		if (strcmp(routes_method_names[i], method) == 0)
			return 1u << i;
	return 0;
}
