/*
 * vars.h — auth's own MAGNETAR_* variables (services/auth/vars.c), parsed
 * by common/config.c into struct auth_vars.
 */
#ifndef MAGNETAR_AUTH_VARS_H
#define MAGNETAR_AUTH_VARS_H

#include <stdbool.h>

#include "common/config.h"

struct auth_vars {
	char *founder_username;
	char *founder_password; /* secret */
	char *totp_key;         /* secret: TOTP secrets' at-rest key */
	int registration;       /* MAGNETAR_REGISTRATION: 0 open, 1 closed, -1 unset */
	bool registration_open; /* derived: unset is open outside production */
	int max_sessions;       /* per user (3) */
	int breach_fail_closed; /* MAGNETAR_BREACH_FAIL: 0 open, 1 closed */
};

extern const struct conf_table auth_conf_table;

#endif
