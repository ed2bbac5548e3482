/*
 * terminal.c — `magctl terminal list` (every user's open terminals) and
 * `magctl terminal kill <id>` (closes one: its shell is hung up, then killed).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "terminal.pb-c.h"
#include "tools/magctl/magctl.h"

static int magctl_terminal_list(struct magctl *m)
{
	Magnetar__TerminalListRequest req = MAGNETAR__TERMINAL_LIST_REQUEST__INIT;
	const Magnetar__TerminalListReply *l;
	struct rpc_result r;

	req.user_id = ""; /* every user's */
	if (magctl_call(m, SVC_TERMINAL, "List", &req.base, &r) != 0)
		return 1;
	l = (const Magnetar__TerminalListReply *)r.output;
	for (size_t i = 0; i < l->n_terminals; i++) {
		const Magnetar__TerminalInfo *t = l->terminals[i];
		time_t at = (time_t)(t->created_ms / 1000);
		struct tm tm;
		char when[32];
		gmtime_r(&at, &tm);
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		printf("%s user=%s pid=%u state=%s shell=%s cwd=%s size=%ux%u created=%s\n", t->id,
		       t->user_id, t->pid, t->state, t->shell, t->cwd, t->cols, t->rows, when);
	}
	rpc_result_fini(&r);
	return 0;
}

static int magctl_terminal_kill(struct magctl *m, const char *id)
{
	Magnetar__TerminalCloseRequest req = MAGNETAR__TERMINAL_CLOSE_REQUEST__INIT;
	struct rpc_result r;

	req.user_id = ""; /* the operator: any user's terminal */
	req.id = (char *)id;
	if (magctl_call(m, SVC_TERMINAL, "Close", &req.base, &r) != 0)
		return 1;
	printf("terminal %s: closed\n", id);
	rpc_result_fini(&r);
	return 0;
}

int magctl_terminal(struct magctl *m, int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "list") == 0)
		return magctl_terminal_list(m);
	if (argc == 3 && strcmp(argv[1], "kill") == 0)
		return magctl_terminal_kill(m, argv[2]);
	fprintf(stderr, "usage: magctl terminal list | kill <id>\n");
	return 2;
}
