/*
 * vars.h — audit's own MAGNETAR_* variables (services/audit/vars.c), parsed
 * by common/config.c into struct audit_vars.
 */
#ifndef MAGNETAR_AUDIT_VARS_H
#define MAGNETAR_AUDIT_VARS_H

#include "common/config.h"

struct audit_vars {
	char *keys; /* secret: MAGNETAR_AUDIT_KEYS, the keyring id:base64key,... */
};

extern const struct conf_table audit_conf_table;

#endif
