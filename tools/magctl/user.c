/*
 * user.c — `magctl user ...`, `magctl session ...` and `magctl auth
 * rotate-keys`: the operator's commands to auth (its Op* methods). A password is read
 * from standard input, never from the command line (ps would show it).
 */
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "auth.pb-c.h"
#include "tools/magctl/magctl.h"

static int user_usage(void)
{
	fprintf(stderr,
	        "usage: magctl user create <name> <founder|admin|member>  (password on stdin)\n"
	        "       magctl user list\n"
	        "       magctl user delete <name>\n"
	        "       magctl user set-role <name> <founder|admin|member>\n"
	        "       magctl user grant-terminal <name> on|off\n"
	        "       magctl user reset-totp <name>\n"
	        "       magctl session list <name>\n"
	        "       magctl session revoke <session-id>\n");
	return 2;
}

/* Reads one line from stdin (the password), without its newline. */
static int user_read_password(char *buf, size_t len)
{
	size_t n;
	if (fgets(buf, (int)len, stdin) == NULL)
		return -1;
	n = strcspn(buf, "\r\n");
	buf[n] = '\0';
	return n > 0 ? 0 : -1;
}

static int user_call(struct magctl *m, const char *method, Magnetar__OperatorRequest *req,
                     struct rpc_result *r)
{
	return magctl_call(m, SVC_AUTH, method, &req->base, r);
}

static void user_print(const Magnetar__User *u)
{
	printf("%s %s role=%s terminal=%s totp=%s\n", u->id, u->username, u->role,
	       u->terminal ? "yes" : "no", u->totp_enabled ? "yes" : "no");
}

int magctl_user(struct magctl *m, int argc, char **argv)
{
	Magnetar__OperatorRequest req = MAGNETAR__OPERATOR_REQUEST__INIT;
	struct rpc_result r;
	char password[256];
	const char *sub = argc > 1 ? argv[1] : "";
	int rv;

	if (strcmp(sub, "list") == 0 && argc == 2) {
		if (user_call(m, "OpListUsers", &req, &r) != 0)
			return 1;
		const Magnetar__UsersReply *u = (const Magnetar__UsersReply *)r.output;
		for (size_t i = 0; i < u->n_users; i++)
			user_print(u->users[i]);
		rpc_result_fini(&r);
		return 0;
	}
	if (argc < 3)
		return user_usage();
	req.username = argv[2];
	if (strcmp(sub, "create") == 0 && argc == 4) {
		if (user_read_password(password, sizeof(password)) != 0) {
			fprintf(stderr,
			        "magctl user create: give the password on standard input\n");
			return 2;
		}
		req.role = argv[3];
		req.password = password;
		rv = user_call(m, "OpCreateUser", &req, &r);
		OPENSSL_cleanse(password, sizeof(password));
		if (rv != 0)
			return 1;
		user_print(((const Magnetar__RegisterReply *)r.output)->user);
		rpc_result_fini(&r);
		return 0;
	}
	if (strcmp(sub, "delete") == 0 && argc == 3)
		rv = user_call(m, "OpDeleteUser", &req, &r);
	else if (strcmp(sub, "set-role") == 0 && argc == 4) {
		req.role = argv[3];
		rv = user_call(m, "OpSetRole", &req, &r);
	} else if (strcmp(sub, "grant-terminal") == 0 && argc == 4 &&
	           (strcmp(argv[3], "on") == 0 || strcmp(argv[3], "off") == 0)) {
		req.role = "";
		req.terminal = strcmp(argv[3], "on") == 0;
		rv = user_call(m, "OpSetRole", &req, &r);
	} else if (strcmp(sub, "reset-totp") == 0 && argc == 3)
		rv = user_call(m, "OpResetTotp", &req, &r);
	else
		return user_usage();
	if (rv != 0)
		return 1;
	rpc_result_fini(&r);
	printf("ok\n");
	return 0;
}

int magctl_session(struct magctl *m, int argc, char **argv)
{
	Magnetar__OperatorRequest req = MAGNETAR__OPERATOR_REQUEST__INIT;
	struct rpc_result r;

	if (argc == 3 && strcmp(argv[1], "list") == 0) {
		req.username = argv[2];
		if (user_call(m, "OpListSessions", &req, &r) != 0)
			return 1;
		const Magnetar__SessionsReply *s = (const Magnetar__SessionsReply *)r.output;
		for (size_t i = 0; i < s->n_sessions; i++)
			printf("%s ip=%s user_agent=%s created_ms=%llu\n", s->sessions[i]->id,
			       s->sessions[i]->ip, s->sessions[i]->user_agent,
			       (unsigned long long)s->sessions[i]->created_at_ms);
		rpc_result_fini(&r);
		return 0;
	}
	if (argc == 3 && strcmp(argv[1], "revoke") == 0) {
		req.session_id = argv[2];
		if (user_call(m, "OpRevokeSession", &req, &r) != 0)
			return 1;
		rpc_result_fini(&r);
		printf("ok\n");
		return 0;
	}
	return user_usage();
}

int magctl_auth(struct magctl *m, int argc, char **argv)
{
	Magnetar__Empty req = MAGNETAR__EMPTY__INIT;
	struct rpc_result r;

	if (argc != 2 || strcmp(argv[1], "rotate-keys") != 0) {
		fprintf(stderr, "usage: magctl auth rotate-keys\n");
		return 2;
	}
	if (magctl_call(m, SVC_AUTH, "OpRotateKeys", &req.base, &r) != 0)
		return 1;
	const Magnetar__PublicKeysReply *k = (const Magnetar__PublicKeysReply *)r.output;
	for (size_t i = 0; i < k->n_keys; i++)
		printf("%s%s\n", k->keys[i]->kid,
		       i + 1 == k->n_keys ? " (signing)" : " (verifying)");
	rpc_result_fini(&r);
	return 0;
}
