/*
 * vars.c — breach's variable table (config.h): a row per variable, and the
 * rules between them.
 */
#include "services/breach/vars.h"

#include <stddef.h>
#include <string.h>

#define F(field) offsetof(struct breach_vars, field)

static const char *const breach_modes[] = {"online", "offline", "off", NULL};
static const char *const breach_open_closed[] = {"open", "closed", NULL};

static const struct conf_var breach_rows[] = {
    {"MAGNETAR_HIBP_URL", CONF_TEXT, F(hibp_url), "https://api.pwnedpasswords.com", 0, 0, NULL, 0,
     "Pwned Passwords base URL", NULL, 0},
    {"MAGNETAR_HIBP_MODE", CONF_CHOICE, F(hibp_mode), "online", 0, 0, breach_modes, 0,
     "online, offline or off", NULL, 0},
    {"MAGNETAR_BREACH_FAIL", CONF_CHOICE, F(breach_fail_closed), "open", 0, 0, breach_open_closed,
     0, "open or closed", NULL, 0},
};

static int breach_vars_check(void *values, const struct conf *c, char *err, size_t errlen)
{
	const struct breach_vars *b = values;
	bool prod = c->env == CONF_ENV_PRODUCTION;

	if (strncmp(b->hibp_url, "https://", 8) != 0 &&
	    (prod || strncmp(b->hibp_url, "http://", 7) != 0))
		return conf_refuse(err, errlen, "MAGNETAR_HIBP_URL must be an https:// URL%s",
		                   prod ? "" : " (http:// only outside production)");
	return 0;
}

const struct conf_table breach_conf_table =
    CONF_TABLE("breach", breach_rows, struct breach_vars, breach_vars_check);
