/*
 * vars.h — breach's own MAGNETAR_* variables (services/breach/vars.c),
 * parsed by common/config.c into struct breach_vars.
 */
#ifndef MAGNETAR_BREACH_VARS_H
#define MAGNETAR_BREACH_VARS_H

#include "common/config.h"

/* MAGNETAR_HIBP_MODE, in the order of its choices. */
enum breach_hibp_mode { BREACH_HIBP_ONLINE, BREACH_HIBP_OFFLINE, BREACH_HIBP_OFF };

struct breach_vars {
	char *hibp_url;         /* Pwned Passwords base URL */
	int hibp_mode;          /* enum breach_hibp_mode */
	int breach_fail_closed; /* MAGNETAR_BREACH_FAIL: 0 open, 1 closed */
};

extern const struct conf_table breach_conf_table;

#endif
