/*
 * h2o_proto.c — the gateway's /healthz and cached /me on h2o's event loop
 * (Debian's libh2o-evloop 2.2.5): one loop per thread, each with its own
 * SO_REUSEPORT listener, answers built in the request's memory pool.
 * Measures the HTTP engine alone against mhd_proto.c and nginx
 * (tests/bench/engines.sh); not part of Magnetar.
 *
 *   h2o_proto <port> <threads>
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <h2o.h>

#include "tests/bench/engines/proto.h"

static h2o_globalconf_t h2o_config;
static uint16_t h2o_port;

struct h2o_thread {
	h2o_context_t ctx;
	h2o_accept_ctx_t accept;
};

static void h2o_answer(h2o_req_t *req, const char *body, size_t len)
{
	char *id = h2o_mem_alloc_pool(&req->pool, 25);

	proto_request_id(id);
	req->res.status = 200;
	req->res.reason = "OK";
	for (size_t i = 0; i < PROTO_NHEADERS; i++)
		h2o_add_header_by_str(&req->pool, &req->res.headers, proto_headers[i].name,
		                      strlen(proto_headers[i].name), 0, NULL,
		                      proto_headers[i].value, strlen(proto_headers[i].value));
	h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL,
	                      id, 24);
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
	               H2O_STRLIT(PROTO_JSON));
	req->res.content_length = len;
	h2o_send_inline(req, body, len);
}

static int h2o_on_req(h2o_handler_t *self, h2o_req_t *req)
{
	(void)self;
	if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")))
		return -1;
	if (h2o_memis(req->path_normalized.base, req->path_normalized.len,
	              H2O_STRLIT("/healthz"))) {
		h2o_answer(req, H2O_STRLIT(PROTO_HEALTHZ));
		return 0;
	}
	if (h2o_memis(req->path_normalized.base, req->path_normalized.len, H2O_STRLIT("/me"))) {
		ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
		if (i < 0 || !proto_token_cached(req->headers.entries[i].value.base,
		                                 req->headers.entries[i].value.len)) {
			h2o_send_error_generic(req, 401, "Unauthorized", "unauthorized", 0);
			return 0;
		}
		h2o_answer(req, H2O_STRLIT(PROTO_ME));
		return 0;
	}
	return -1; /* h2o's 404 */
}

static void h2o_on_accept(h2o_socket_t *listener, const char *err)
{
	struct h2o_thread *t = listener->data;
	h2o_socket_t *sock;

	if (err != NULL || (sock = h2o_evloop_socket_accept(listener)) == NULL)
		return;
	h2o_accept(&t->accept, sock);
}

static int h2o_listen_fd(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(h2o_port)};
	int fd, on = 1;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) != 0 ||
	    bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 1024) != 0) {
		perror("h2o_proto: listen");
		exit(1);
	}
	return fd;
}

static void *h2o_thread_main(void *arg)
{
	struct h2o_thread *t = arg;
	h2o_socket_t *listener;

	h2o_context_init(&t->ctx, h2o_evloop_create(), &h2o_config);
	t->accept.ctx = &t->ctx;
	t->accept.hosts = h2o_config.hosts;
	listener =
	    h2o_evloop_socket_create(t->ctx.loop, h2o_listen_fd(), H2O_SOCKET_FLAG_DONT_READ);
	listener->data = t;
	h2o_socket_read_start(listener, h2o_on_accept);
	while (h2o_evloop_run(t->ctx.loop, INT32_MAX) == 0)
		;
	return NULL;
}

int main(int argc, char **argv)
{
	h2o_hostconf_t *host;
	h2o_handler_t *handler;
	struct h2o_thread *threads;
	pthread_t *tids;
	int n;

	if (argc != 3 || (h2o_port = (uint16_t)atoi(argv[1])) == 0 || (n = atoi(argv[2])) < 1) {
		fprintf(stderr, "usage: h2o_proto <port> <threads>\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	proto_init();
	h2o_config_init(&h2o_config);
	host = h2o_config_register_host(&h2o_config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
	handler = h2o_create_handler(h2o_config_register_path(host, "/", 0), sizeof(*handler));
	handler->on_req = h2o_on_req;
	threads = calloc((size_t)n, sizeof(*threads));
	tids = calloc((size_t)n, sizeof(*tids));
	for (int i = 0; i < n; i++)
		pthread_create(&tids[i], NULL, h2o_thread_main, &threads[i]);
	for (int i = 0; i < n; i++)
		pthread_join(tids[i], NULL);
	return 0;
}
