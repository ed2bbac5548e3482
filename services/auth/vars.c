/*
 * vars.c — auth's variable table (config.h): a row per variable, and the
 * rules between them.
 */
#include "services/auth/vars.h"

#include <stddef.h>

#define F(field) offsetof(struct auth_vars, field)

static const char *const auth_open_closed[] = {"open", "closed", NULL};

static const struct conf_var auth_rows[] = {
    {"MAGNETAR_FOUNDER_USERNAME", CONF_TEXT, F(founder_username), NULL, 0, 0, NULL, 0,
     "bootstrap account", NULL, 0},
    {"MAGNETAR_FOUNDER_PASSWORD", CONF_TEXT, F(founder_password), NULL, 0, 0, NULL, CONF_SECRET,
     "bootstrap password", NULL, 0},
    {"MAGNETAR_REGISTRATION", CONF_CHOICE, F(registration), NULL, 0, 0, auth_open_closed, 0,
     "open or closed", NULL, 0},
    {"MAGNETAR_MAX_SESSIONS", CONF_INT, F(max_sessions), "3", 1, 1000, NULL, 0, "sessions per user",
     NULL, 0},
    {"MAGNETAR_TOTP_KEY", CONF_TEXT, F(totp_key), NULL, 0, 0, NULL, CONF_SECRET | CONF_REQUIRED,
     "TOTP secrets' at-rest key", NULL, 0},
    {"MAGNETAR_BREACH_FAIL", CONF_CHOICE, F(breach_fail_closed), "open", 0, 0, auth_open_closed, 0,
     "open or closed", NULL, 0},
};

static int auth_vars_check(void *values, const struct conf *c, char *err, size_t errlen)
{
	struct auth_vars *a = values;
	(void)err;
	(void)errlen;
	/* Closed by default in production: accounts are made by an operator. */
	a->registration_open =
	    a->registration < 0 ? c->env != CONF_ENV_PRODUCTION : a->registration == 0;
	return 0;
}

const struct conf_table auth_conf_table =
    CONF_TABLE("auth", auth_rows, struct auth_vars, auth_vars_check);
