/*
 * vars.h — the terminal service's own MAGNETAR_* variables
 * (services/terminal/vars.c), parsed by common/config.c into struct
 * terminal_vars.
 */
#ifndef MAGNETAR_TERMINAL_VARS_H
#define MAGNETAR_TERMINAL_VARS_H

#include <sys/types.h>

#include "common/config.h"

struct terminal_vars {
	char *shells; /* allowed absolute shell paths */
	char *roots;  /* dirs a terminal may start in */
	char *uids;   /* MAGNETAR_TERMINAL_UIDS as given */
	/* Parsed from uids: one uid per user from first..last, never 0; both
	 * 0 when unset (the service picks its default). */
	uid_t uid_first, uid_last;
	int idle_s;       /* no byte either way (900) */
	int lifetime_s;   /* absolute (43200) */
	int max_per_user; /* (3) */
	int max;          /* all users (32) */
};

extern const struct conf_table terminal_conf_table;

#endif
