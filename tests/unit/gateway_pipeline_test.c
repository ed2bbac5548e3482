/*
 * gateway_pipeline_test.c — the gateway's request pipeline as declared
 * (gateway/pipeline.c, gateway/routes.c, gateway/dispatch.c): the stages in the order
 * docs/gateway.md gives, and route rows whose authentication, confirmation
 * and flags cannot contradict each other (a row the authentication stage
 * would read wrongly is caught here, not by a request).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "gateway/gateway.h"

static void test_stage_order(void **state)
{
	static const char *const want[] = {"framing", "ratelimit", "body",  "cors",
	                                   "authn",   "idem",      "route", "decorate"};
	(void)state;

	for (unsigned i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		assert_string_equal(pipeline_stage_name(i), want[i]);
	/* Nothing after the last: the table ends where the docs say. */
	assert_string_equal(pipeline_stage_name(sizeof(want) / sizeof(want[0])), "answered");
}

static void test_route_rows_are_consistent(void **state)
{
	(void)state;

	for (size_t i = 0; i < routes_count(); i++) {
		const struct route *r = routes_at(i);
		/* Confirmation with auth only for methods the route takes, and
		 * only on a route that authenticates at all. */
		assert_true((r->confirm & ~r->methods) == 0);
		if (r->confirm != 0)
			assert_int_not_equal(r->auth, ROUTE_AUTH_NONE);
		/* A role or the step-up band means nothing without a token. */
		if ((r->flags & (ROUTE_F_ADMIN | ROUTE_F_STEP_UP)) != 0)
			assert_int_not_equal(r->auth, ROUTE_AUTH_NONE);
		/* Idempotency-Key is for POSTs that create. */
		if ((r->flags & ROUTE_F_IDEMPOTENT) != 0)
			assert_true((r->methods & HTTP_M_POST) != 0);
		/* Everything under /api/v1/ but the sign-in routes asks for a
		 * token: a new row that forgets `.auth` fails here. Introspection
		 * takes a client's HTTP Basic credentials instead, which auth
		 * checks (gateway/introspect.c). */
		if (strncmp(r->path, "/api/v1/", 8) == 0 && r->auth == ROUTE_AUTH_NONE) {
			static const char *const open[] = {
			    "/api/v1/auth/register", "/api/v1/auth/login", "/api/v1/auth/refresh",
			    "/api/v1/auth/password-check", "/api/v1/auth/introspect"};
			bool listed = false;
			for (size_t j = 0; j < sizeof(open) / sizeof(open[0]); j++)
				listed = listed || strcmp(r->path, open[j]) == 0;
			if (!listed)
				fail_msg("%s has no .auth", r->path);
		}
	}
}

static void test_admin_routes_are_marked(void **state)
{
	char param[ROUTE_PARAM_MAX];
	static const char *const admin[] = {"/api/v1/users", "/api/v1/users/x1",
	                                    "/api/v1/users/x1/revoke-sessions",
	                                    "/api/v1/audit/events", "/api/v1/audit/verify"};
	(void)state;

	for (size_t i = 0; i < sizeof(admin) / sizeof(admin[0]); i++) {
		const struct route *r = routes_find(admin[i], param);
		assert_non_null(r);
		assert_true((r->flags & ROUTE_F_ADMIN) != 0);
	}
	/* Reading the audit log or opening a shell always asks auth. */
	assert_true((routes_find("/api/v1/audit/events", param)->confirm & HTTP_M_GET) != 0);
	assert_true((routes_find("/api/v1/terminal/sessions", param)->confirm & HTTP_M_POST) != 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_stage_order),
	    cmocka_unit_test(test_route_rows_are_consistent),
	    cmocka_unit_test(test_admin_routes_are_marked),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
