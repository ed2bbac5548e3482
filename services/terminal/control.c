/*
 * control.c — the RPC methods Open, List, Close and Attach. Each checks its
 * input (the receiver validates everything), asks session.c, and records
 * every refusal as a terminal.denied audit event with its reason.
 */
#include <limits.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "common/outbox.h"
#include "services/terminal/terminal.h"

#define CONTROL_LIST_MAX 1000
#define CONTROL_TICKET_MAX 128

static void control_deny(struct rpc_call *call, struct terminal *t, const char *user,
                         const char *target, Magnetar__Status status, const char *code,
                         const char *message)
{
	char detail[64];

	atomic_fetch_add(&t->denied, 1);
	snprintf(detail, sizeof(detail), "reason=%s", code);
	log_info("terminal: denied %s user=%s request_id=%s", code, user,
	         rpc_call_request_id(call));
	if (store_audit(t->svc.pool, "terminal.denied", user, target, rpc_call_context(call),
	                "failure", detail) == 0)
		outbox_kick(t->svc.outbox);
	rpc_reply_error(call, status, code, message);
}

static bool control_user_ok(const char *u)
{
	return u[0] != '\0' && strlen(u) < TERMINAL_USER_MAX;
}

static void control_info(const struct session_info *in, Magnetar__TerminalInfo *out)
{
	magnetar__terminal_info__init(out);
	out->id = (char *)in->id;
	out->user_id = (char *)in->user_id;
	out->shell = (char *)in->shell;
	out->cwd = (char *)in->cwd;
	out->cols = in->cols;
	out->rows = in->rows;
	out->created_ms = in->created_ms;
	out->last_active_ms = in->last_active_ms;
	out->pid = (uint32_t)in->pid;
	out->state = (char *)in->state;
}

void control_open(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	const Magnetar__TerminalOpenRequest *r = (const Magnetar__TerminalOpenRequest *)in;
	Magnetar__TerminalOpenReply out = MAGNETAR__TERMINAL_OPEN_REPLY__INIT;
	Magnetar__TerminalInfo ti;
	struct terminal *t = arg;
	struct session_open o = {0};
	struct session_info *info = NULL;
	char exec_path[PATH_MAX], *cwd = NULL, ticket[64];
	int rv;

	if (!control_user_ok(r->user_id)) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INVALID, "invalid_request",
		                "A user is required.");
		return;
	}
	o.cols = r->cols != 0 ? r->cols : 80;
	o.rows = r->rows != 0 ? r->rows : 24;
	if (o.cols > TERMINAL_SIZE_MAX || o.rows > TERMINAL_SIZE_MAX) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INVALID, "invalid_request",
		                "cols and rows must be from 1 to 1000.");
		return;
	}
	if (validate_shell(&t->policy, r->shell, strlen(r->shell), exec_path, sizeof(exec_path)) !=
	    0) {
		control_deny(call, t, r->user_id, "", MAGNETAR__STATUS__STATUS_INVALID,
		             "shell_not_allowed", "This shell is not allowed.");
		return;
	}
	if ((cwd = malloc(PATH_MAX)) == NULL || (info = calloc(1, sizeof(*info))) == NULL) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INTERNAL, "internal",
		                "out of memory");
		goto out;
	}
	/* None asked for: the user's home, which the spawner knows (and may
	 * have to make). */
	cwd[0] = '\0';
	if (r->cwd[0] != '\0' &&
	    validate_cwd(&t->policy, r->cwd, strlen(r->cwd), cwd, PATH_MAX) != 0) {
		control_deny(call, t, r->user_id, "", MAGNETAR__STATUS__STATUS_INVALID,
		             "cwd_not_allowed", "This working directory is not allowed.");
		goto out;
	}
	o.user_id = r->user_id;
	o.auth_session = r->session_id;
	o.shell = r->shell;
	o.exec_path = exec_path;
	o.cwd = cwd;
	rv = session_open(t, &o, rpc_call_context(call), info, ticket);
	if (rv == ERR_UNAVAIL) {
		control_deny(call, t, r->user_id, "", MAGNETAR__STATUS__STATUS_RESOURCE_EXHAUSTED,
		             "too_many_terminals", "Too many terminals are open.");
		goto out;
	}
	if (rv == ERR_NOTFOUND) {
		/* A 4xx, so its code reaches the client (the gateway hides a
		 * 5xx's); 429 like the other limit of this route. */
		control_deny(call, t, r->user_id, "", MAGNETAR__STATUS__STATUS_RESOURCE_EXHAUSTED,
		             "shell_uids_exhausted",
		             "No shell uid is left for this user (MAGNETAR_TERMINAL_UIDS).");
		goto out;
	}
	if (rv == ERR_PERM) {
		/* The spawner refused: the shell user may not enter the directory. */
		control_deny(call, t, r->user_id, "", MAGNETAR__STATUS__STATUS_INVALID,
		             "cwd_not_allowed", "This working directory is not allowed.");
		goto out;
	}
	if (rv != 0) {
		log_warnx("terminal: open failed request_id=%s: %s", rpc_call_request_id(call),
		          err_str(rv));
		rpc_reply_error(call,
		                rv == ERR_TIMEOUT ? MAGNETAR__STATUS__STATUS_UNAVAILABLE
		                                  : MAGNETAR__STATUS__STATUS_INTERNAL,
		                "internal", "The terminal could not be started.");
		goto out;
	}
	control_info(info, &ti);
	out.terminal = &ti;
	out.ticket = ticket;
	rpc_reply(call, &out.base);
	OPENSSL_cleanse(ticket, sizeof(ticket));
out:
	free(info);
	free(cwd);
}

void control_list(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	const Magnetar__TerminalListRequest *r = (const Magnetar__TerminalListRequest *)in;
	Magnetar__TerminalListReply out = MAGNETAR__TERMINAL_LIST_REPLY__INIT;
	struct terminal *t = arg;
	struct session_info *infos = calloc(CONTROL_LIST_MAX, sizeof(*infos));
	Magnetar__TerminalInfo *tis = calloc(CONTROL_LIST_MAX, sizeof(*tis));
	Magnetar__TerminalInfo **ptrs = calloc(CONTROL_LIST_MAX, sizeof(*ptrs));
	int n;

	if (infos == NULL || tis == NULL || ptrs == NULL) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_INTERNAL, "internal",
		                "out of memory");
		goto out;
	}
	n = session_list(t, r->user_id, infos, CONTROL_LIST_MAX);
	for (int i = 0; i < n; i++) {
		control_info(&infos[i], &tis[i]);
		ptrs[i] = &tis[i];
	}
	out.n_terminals = (size_t)n;
	out.terminals = ptrs;
	rpc_reply(call, &out.base);
out:
	free(infos);
	free(tis);
	free(ptrs);
}

void control_close(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	const Magnetar__TerminalCloseRequest *r = (const Magnetar__TerminalCloseRequest *)in;
	Magnetar__TerminalCloseReply out = MAGNETAR__TERMINAL_CLOSE_REPLY__INIT;
	struct terminal *t = arg;

	/* Closing twice (a re-sent request) finds nothing the second time: a
	 * 404 for a terminal that is gone either way. */
	if (session_close(t, r->id, r->user_id, rpc_call_context(call)) != 0) {
		rpc_reply_error(call, MAGNETAR__STATUS__STATUS_NOT_FOUND, "not_found",
		                "No such terminal.");
		return;
	}
	rpc_reply(call, &out.base);
}

void control_attach(struct rpc_call *call, const ProtobufCMessage *in, void *arg)
{
	const Magnetar__TerminalAttachRequest *r = (const Magnetar__TerminalAttachRequest *)in;
	Magnetar__TerminalAttachReply out = MAGNETAR__TERMINAL_ATTACH_REPLY__INIT;
	struct terminal *t = arg;
	uint8_t key[TERMINAL_KEY_LEN];
	int rv = ERR_PERM;

	if (strlen(r->ticket) <= CONTROL_TICKET_MAX && strlen(r->id) < TERMINAL_ID_LEN)
		rv = session_attach(t, r->id, r->ticket, r->user_id, key);
	if (rv == ERR_INVAL) {
		control_deny(call, t, r->user_id, r->id, MAGNETAR__STATUS__STATUS_PERMISSION_DENIED,
		             "forbidden", "This terminal belongs to another user.");
		return;
	}
	if (rv != 0) {
		control_deny(call, t, r->user_id, r->id, MAGNETAR__STATUS__STATUS_UNAUTHENTICATED,
		             "invalid_ticket", "The ticket is invalid, used or expired.");
		return;
	}
	out.stream_path = t->stream_path;
	out.stream_key.data = key;
	out.stream_key.len = sizeof(key);
	rpc_reply(call, &out.base);
	OPENSSL_cleanse(key, sizeof(key));
}
