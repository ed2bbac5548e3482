/*
 * client.c — `magctl client create|rotate|delete|list`: the app's services
 * allowed to introspect tokens (POST /api/v1/auth/introspect, docs/apps.md).
 * create and rotate print the secret once, on standard output and nowhere
 * else; auth keeps only its argon2id hash, so a lost secret is rotated,
 * never recovered.
 */
#include <stdio.h>
#include <string.h>

#include "auth.pb-c.h"
#include "tools/magctl/magctl.h"

static int client_usage(void)
{
	fprintf(stderr, "usage: magctl client create <name>   (prints the secret once)\n"
	                "       magctl client rotate <name>   (a new secret; the old one stops)\n"
	                "       magctl client delete <name>\n"
	                "       magctl client list\n");
	return 2;
}

int magctl_client(struct magctl *m, int argc, char **argv)
{
	Magnetar__ClientRequest req = MAGNETAR__CLIENT_REQUEST__INIT;
	const char *sub = argc > 1 ? argv[1] : "";
	const char *method = strcmp(sub, "create") == 0   ? "OpClientCreate"
	                     : strcmp(sub, "rotate") == 0 ? "OpClientRotate"
	                     : strcmp(sub, "delete") == 0 ? "OpClientDelete"
	                                                  : NULL;
	struct rpc_result r;

	if (strcmp(sub, "list") == 0 && argc == 2) {
		Magnetar__Empty none = MAGNETAR__EMPTY__INIT;
		if (magctl_call(m, SVC_AUTH, "OpClientList", &none.base, &r) != 0)
			return 1;
		const Magnetar__ClientsReply *c = (const Magnetar__ClientsReply *)r.output;
		for (size_t i = 0; i < c->n_clients; i++)
			printf("%s created_ms=%llu rotated_ms=%llu\n", c->clients[i]->name,
			       (unsigned long long)c->clients[i]->created_at_ms,
			       (unsigned long long)c->clients[i]->rotated_at_ms);
		rpc_result_fini(&r);
		return 0;
	}
	if (method == NULL || argc != 3)
		return client_usage();
	req.name = argv[2];
	if (magctl_call(m, SVC_AUTH, method, &req.base, &r) != 0)
		return 1;
	if (strcmp(sub, "delete") == 0) {
		printf("ok\n");
	} else {
		const Magnetar__ClientReply *c = (const Magnetar__ClientReply *)r.output;
		printf("client_id=%s\nclient_secret=%s\n", c->name, c->secret);
	}
	rpc_result_fini(&r);
	return 0;
}
