/*
 * vars.c — audit's variable table (config.h).
 */
#include "services/audit/vars.h"

#include <stddef.h>

static const struct conf_var audit_rows[] = {
    /* The audit issue spells the file form in the singular: accept both. */
    {"MAGNETAR_AUDIT_KEYS", CONF_TEXT, offsetof(struct audit_vars, keys), NULL, 0, 0, NULL,
     CONF_SECRET | CONF_REQUIRED, "audit keyring id:base64key,...", "MAGNETAR_AUDIT_KEY_FILE", 0},
};

const struct conf_table audit_conf_table = CONF_TABLE("audit", audit_rows, struct audit_vars, NULL);
