/*
 * mhd_proto.c — the gateway's /healthz and cached /me on libmicrohttpd
 * 0.9.75 at its best: epoll, an internal pool of one thread per core, a
 * response per request from static buffers (no copy), answered on the
 * handler's first call. Measures the HTTP engine alone against
 * h2o_proto.c and nginx (tests/bench/engines.sh); not part of Magnetar.
 *
 *   mhd_proto <port> <threads>
 */
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/bench/engines/proto.h"

static enum MHD_Result mhd_answer(struct MHD_Connection *conn, unsigned status, const char *body)
{
	struct MHD_Response *resp;
	enum MHD_Result rv;
	char id[25];

	resp = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
	if (resp == NULL)
		return MHD_NO;
	proto_request_id(id);
	for (size_t i = 0; i < PROTO_NHEADERS; i++)
		MHD_add_response_header(resp, proto_headers[i].name, proto_headers[i].value);
	MHD_add_response_header(resp, "X-Request-Id", id);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, PROTO_JSON);
	rv = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return rv;
}

static enum MHD_Result mhd_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *version, const char *upload_data,
                                   size_t *upload_size, void **ctx)
{
	const char *auth;
	(void)cls;
	(void)version;
	(void)upload_data;
	/* MHD 0.9.75 keeps the connection alive only when the first call of a
	 * request returns without answering (../shared: measured). */
	if (*ctx == NULL) {
		*ctx = (void *)1;
		return MHD_YES;
	}
	*upload_size = 0;
	if (strcmp(method, "GET") != 0)
		return mhd_answer(conn, 405, "{}");
	if (strcmp(url, "/healthz") == 0)
		return mhd_answer(conn, 200, PROTO_HEALTHZ);
	if (strcmp(url, "/me") == 0) {
		auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
		                                   MHD_HTTP_HEADER_AUTHORIZATION);
		if (auth == NULL || !proto_token_cached(auth, strlen(auth)))
			return mhd_answer(conn, 401, "{}");
		return mhd_answer(conn, 200, PROTO_ME);
	}
	return mhd_answer(conn, 404, "{}");
}

int main(int argc, char **argv)
{
	struct MHD_Daemon *d;
	sigset_t set;
	int port, n, sig;

	if (argc != 3 || (port = atoi(argv[1])) <= 0 || (n = atoi(argv[2])) < 1) {
		fprintf(stderr, "usage: mhd_proto <port> <threads>\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	proto_init();
	d = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_TURBO, (uint16_t)port, NULL,
	                     NULL, mhd_handler, NULL, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)n,
	                     MHD_OPTION_CONNECTION_LIMIT, 4096u, MHD_OPTION_END);
	if (d == NULL) {
		fprintf(stderr, "mhd_proto: cannot start on %d\n", port);
		return 1;
	}
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	sigwait(&set, &sig);
	MHD_stop_daemon(d);
	return 0;
}
