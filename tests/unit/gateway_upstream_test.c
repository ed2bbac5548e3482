/*
 * gateway_upstream_test.c — gateway/upstream.c: MAGNETAR_UPSTREAMS parsed
 * strictly (bad prefixes, upstreams, policies and options refused with the
 * entry named), prefixes matched on segment boundaries with the longest
 * first, targets an upstream could normalise onto another prefix refused,
 * and the upstream's answer framed exactly one way or refused.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/err.h"
#include "gateway/upstream.h"

static int parse(const char *v, struct upstream_set *s, char *err)
{
	return upstreams_parse(v, s, err, 256);
}

static void test_parse_entries(void **state)
{
	struct upstream_set s;
	char err[256];
	(void)state;

	assert_int_equal(parse("/app http://127.0.0.1:9000 authenticated;"
	                       "/app/admin http://[::1]:9001 role=admin token timeout=5\n"
	                       "/ unix:/run/app.sock public max-body=100 # the rest\n"
	                       "/pay/ http://127.0.0.1:9002 step-up=10",
	                       &s, err),
	                 0);
	assert_int_equal(s.n, 4);
	/* Longest prefix first. */
	assert_string_equal(s.u[0].prefix, "/app/admin");
	assert_int_equal(s.u[0].policy, UPSTREAM_ROLE);
	assert_string_equal(s.u[0].role, "admin");
	assert_true(s.u[0].token);
	assert_int_equal(s.u[0].timeout_s, 5);
	assert_string_equal(upstreams_match(&s, "/app/admin/x")->prefix, "/app/admin");
	assert_string_equal(upstreams_match(&s, "/app/adminx")->prefix, "/app");
	assert_string_equal(upstreams_match(&s, "/app")->prefix, "/app");
	assert_string_equal(upstreams_match(&s, "/apple")->prefix, ""); /* "/" catches it */
	/* Case-insensitively: /app/ADMIN is /app/admin's, not /app's. */
	assert_string_equal(upstreams_match(&s, "/APP/Admin/x")->prefix, "/app/admin");
	assert_string_equal(upstreams_match(&s, "/pay")->prefix, "/pay");
	assert_int_equal(upstreams_match(&s, "/pay/x")->step_up_s, 600);
	assert_int_equal(upstreams_match(&s, "/x")->max_body, 100);
	assert_int_equal(upstreams_match(&s, "/x")->addr.ss_family, AF_UNIX);
	assert_int_equal(upstreams_match(&s, "/app")->timeout_s, UPSTREAM_TIMEOUT_S);
	assert_int_equal(upstreams_match(&s, "/app")->max_body, UPSTREAM_MAX_BODY);
	upstreams_free(&s);

	assert_int_equal(parse("/a http://127.0.0.1:1 step-up", &s, err), 0);
	assert_int_equal(s.u[0].step_up_s, UPSTREAM_STEP_UP_MIN * 60);
	upstreams_free(&s);
}

static void test_parse_refusals(void **state)
{
	static const char *const bad[] = {
	    "",                                                            /* names nothing */
	    " ; \n ",                                                      /* the same */
	    "app http://127.0.0.1:1 public",                               /* no leading / */
	    "/a/../b http://127.0.0.1:1 public",                           /* dot segment */
	    "/a//b http://127.0.0.1:1 public",                             /* empty segment */
	    "/a%2f http://127.0.0.1:1 public",                             /* encoded */
	    "/a http://127.0.0.1 public",                                  /* no port */
	    "/a http://127.0.0.1:0 public",                                /* port 0 */
	    "/a http://127.0.0.1:70000 public",                            /* port too big */
	    "/a https://127.0.0.1:1 public",                               /* no TLS upstreams */
	    "/a unix:relative.sock public",                                /* not absolute */
	    "/a http://127.0.0.1:1",                                       /* no policy */
	    "/a http://127.0.0.1:1 private",                               /* unknown policy */
	    "/a http://127.0.0.1:1 role=root",                             /* unknown role */
	    "/a http://127.0.0.1:1 step-up=0",                             /* window out of range */
	    "/a http://127.0.0.1:1 public timeout=0",                      /* option out of range */
	    "/a http://127.0.0.1:1 public verbose",                        /* unknown option */
	    "/a http://127.0.0.1:1 public; /a/ http://127.0.0.1:2 public", /* twice */
	    "/a http://127.0.0.1:1 public; /A http://127.0.0.1:2 role=admin", /* by case */
	};
	struct upstream_set s;
	char err[256];
	(void)state;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(parse(bad[i], &s, err), ERR_INVAL);
		assert_non_null(strstr(err, "MAGNETAR_UPSTREAMS"));
		assert_null(s.u);
	}
}

static void test_parse_file(void **state)
{
	char path[] = "/tmp/upstreams_test_XXXXXX", err[256];
	struct upstream_set s;
	int fd = mkstemp(path);
	(void)state;

	assert_true(fd >= 0);
	assert_true(dprintf(fd, "# the app\n/app http://127.0.0.1:9000 authenticated\n\n"
	                        "/pub http://127.0.0.1:9000 public\n") > 0);
	close(fd);
	assert_int_equal(parse(path, &s, err), 0);
	assert_int_equal(s.n, 2);
	upstreams_free(&s);
	unlink(path);
	assert_int_equal(parse(path, &s, err), ERR_INVAL); /* gone: named in err */
	assert_non_null(strstr(err, path));
}

static void test_target(void **state)
{
	static const char *const ok[] = {
	    "/app", "/app/", "/app/x%20y?a=../b//c;d", "/app/.well", "/app/a.b", "/app/%41",
	    "/app/my%20file",
	    /* Shapes only a stricter prefix makes doubtful (upstreams_ambiguous). */
	    "/app/admin;x/users", "/app/x.", "/app/...", "/app/admin%20/x"};
	static const char *const bad[] = {
	    "/app/../admin", "/app/./x", "/app/..", "/app/.", "/app/%2e%2e/admin", "/app/%2E/x",
	    "/app//x", "/app/%2fx", "/app/%2F", "/app/%5cx", "/app\\x", "/app/%00", "/app/..;/x",
	    "/app/.;x", "app", "", "/app/%2", "/app/%",
	    /* Encoded control bytes ("%0a" before a regex's '$'). */
	    "/app/admin%0a", "/app/a%09", "/app/a%1F", "/app/a%7f",
	    /* Raw bytes no request line may hold, in the path or the query. */
	    "/app/admin HTTP/1.1", "/app/a\tb", "/app/a?q=\x80", "/app/\x7f", "/app?a b"};
	(void)state;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		assert_true(upstream_target_safe(ok[i], strlen(ok[i])));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(upstream_target_safe(bad[i], strlen(bad[i])));
}

static void test_ambiguous(void **state)
{
	struct upstream_set s;
	char err[256];
	static const char *const doubtful[] = {
	    "/app/admin;x/users", "/app/admin./x", "/app/admin.json", "/app/ADMIN.json",
	    "/app/admin /x",      "/app/admin..",  "/app;x/admin"};
	static const char *const plain[] = {
	    "/app/x;jsessionid=1", "/app/x.",     "/app/report.json", "/app/admin",
	    "/app/admin/x.json",   "/other.json", "/v1.2/admin"};
	(void)state;

	assert_int_equal(
	    parse("/app http://127.0.0.1:1 authenticated; /app/admin http://127.0.0.1:1 "
	          "role=admin; / http://127.0.0.1:1 public; /v1.2/admin "
	          "http://127.0.0.1:1 role=admin",
	          &s, err),
	    0);
	for (size_t i = 0; i < sizeof(doubtful) / sizeof(doubtful[0]); i++)
		assert_true(upstreams_ambiguous(&s, doubtful[i], upstreams_match(&s, doubtful[i])));
	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
		assert_false(upstreams_ambiguous(&s, plain[i], upstreams_match(&s, plain[i])));
	upstreams_free(&s);
}

static long head(const char *s, bool head_request, struct upstream_head *h)
{
	return upstream_head_parse(s, strlen(s), head_request, h);
}

static void test_head(void **state)
{
	struct upstream_head h;
	(void)state;

	assert_int_equal(
	    head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A:  b \r\n\r\nhello", false, &h),
	    strlen("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A:  b \r\n\r\n"));
	assert_int_equal(h.status, 200);
	assert_int_equal(h.body, UPSTREAM_BODY_LENGTH);
	assert_int_equal(h.length, 5);
	assert_int_equal(h.n, 2);
	assert_int_equal(h.h[1].value_len, 1); /* trimmed */
	assert_true(head("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n", false, &h) > 0);
	assert_int_equal(h.body, UPSTREAM_BODY_CHUNKED);
	assert_true(head("HTTP/1.0 200 OK\r\n\r\n", false, &h) > 0);
	assert_int_equal(h.body, UPSTREAM_BODY_CLOSE);
	assert_true(head("HTTP/1.1 200\r\nContent-Length: 9\r\n\r\n", true, &h) > 0);
	assert_int_equal(h.body, UPSTREAM_BODY_NONE); /* HEAD */
	assert_true(head("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false, &h) > 0);
	assert_int_equal(h.body, UPSTREAM_BODY_NONE);
	assert_true(head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", false,
	                 &h) > 0);
	/* Incomplete: more is wanted. */
	assert_int_equal(head("HTTP/1.1 200 OK\r\nX-A: b\r\n", false, &h), 0);
	assert_int_equal(head("HTTP/1.1 200 OK\r", false, &h), 0);
	/* Malformed: refused, never guessed. */
	static const char *const bad[] = {
	    "HTTP/1.1 200 OK\nX: y\r\n\r\n",              /* bare LF */
	    "HTTP/1.1 200 OK\r\nX: y\r\n folded\r\n\r\n", /* obs-fold */
	    "HTTP/1.1 200 OK\r\nX : y\r\n\r\n",           /* space before : */
	    "HTTP/1.1 200 OK\r\nX: a\x01z\r\n\r\n",       /* control byte */
	    "HTTP/2 200 OK\r\n\r\n",                      /* version */
	    "HTTP/1.1 20 OK\r\n\r\n",                     /* status */
	    "HTTP/1.1 600 OK\r\n\r\n",                    /* status */
	    "garbage\r\n\r\n",                            /* no status line */
	    "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n",
	    "HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
	    "HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(head(bad[i], false, &h), -1);
	/* A NUL inside a value. */
	static const char nul[] = "HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n";
	assert_int_equal(upstream_head_parse(nul, sizeof(nul) - 1, false, &h), -1);
	/* Past the head limit without a blank line. */
	char *big = malloc(UPSTREAM_HEAD_MAX + 100);
	assert_non_null(big);
	memset(big, 'a', UPSTREAM_HEAD_MAX + 100);
	memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
	assert_int_equal(upstream_head_parse(big, UPSTREAM_HEAD_MAX + 100, false, &h), -1);
	free(big);
}

static int chunked(const char *in, char *out, size_t *olen)
{
	struct upstream_chunked c;
	size_t used;
	memset(&c, 0, sizeof(c));
	return upstream_chunked_feed(&c, in, strlen(in), &used, out, 256, olen);
}

static void test_chunked(void **state)
{
	char out[256];
	size_t n;
	(void)state;

	assert_int_equal(chunked("5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: 1\r\n\r\n", out, &n), 1);
	assert_int_equal(n, 11);
	assert_memory_equal(out, "hello world", 11);
	assert_int_equal(chunked("5\r\nhel", out, &n), 0); /* more wanted */
	assert_int_equal(n, 3);
	assert_int_equal(chunked("A\r\n0123456789\r\n0\r\n\r\n", out, &n), 1);
	assert_int_equal(chunked("x\r\n", out, &n), -1);                /* not hex */
	assert_int_equal(chunked("5\nhello\r\n", out, &n), -1);         /* bare LF */
	assert_int_equal(chunked("5\r\nhelloX\r\n", out, &n), -1);      /* no CRLF after data */
	assert_int_equal(chunked("1000000000000000\r\n", out, &n), -1); /* 16 digits */
	assert_int_equal(chunked("0\r\nT: 1\n\r\n", out, &n), -1);      /* bare LF in trailer */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_entries), cmocka_unit_test(test_parse_refusals),
	    cmocka_unit_test(test_parse_file),    cmocka_unit_test(test_target),
	    cmocka_unit_test(test_ambiguous),     cmocka_unit_test(test_head),
	    cmocka_unit_test(test_chunked),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
