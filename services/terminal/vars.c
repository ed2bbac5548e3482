/*
 * vars.c — the terminal service's variable table (config.h): a row per
 * variable, and the parsing of the uid range.
 */
#include "services/terminal/vars.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define F(field) offsetof(struct terminal_vars, field)
#define INT(name, field, def, lo, hi, help)                                                        \
	{                                                                                          \
		name, CONF_INT, F(field), def, lo, hi, NULL, 0, help, NULL, 0                      \
	}

static const struct conf_var terminal_rows[] = {
    {"MAGNETAR_TERMINAL_SHELLS", CONF_TEXT, F(shells), NULL, 0, 0, NULL, 0,
     "allowed absolute shell paths", NULL, 0},
    {"MAGNETAR_TERMINAL_ROOTS", CONF_TEXT, F(roots), NULL, 0, 0, NULL, 0,
     "dirs a terminal may start in", NULL, 0},
    {"MAGNETAR_TERMINAL_UIDS", CONF_TEXT, F(uids), NULL, 0, 0, NULL, 0,
     "uid range first-last for shells, one uid per user", NULL, 0},
    INT("MAGNETAR_TERMINAL_IDLE_S", idle_s, "900", 1, 86400 * 7,
        "seconds without a byte before a terminal closes"),
    INT("MAGNETAR_TERMINAL_LIFETIME_S", lifetime_s, "43200", 1, 86400 * 30,
        "seconds a terminal may live at most"),
    INT("MAGNETAR_TERMINAL_MAX_PER_USER", max_per_user, "3", 1, 1000, "open terminals per user"),
    INT("MAGNETAR_TERMINAL_MAX", max, "32", 1, 1000, "open terminals in all"),
};

/* "first-last": whether it holds an account or a service's uid is the
 * service's check at start (it reads passwd). */
static int terminal_vars_check(void *values, const struct conf *c, char *err, size_t errlen)
{
	struct terminal_vars *t = values;
	const char *s = t->uids, *dash;
	char first[16];
	long lo, hi;

	(void)c;
	if (s == NULL)
		return 0;
	if ((dash = strchr(s, '-')) == NULL || (size_t)(dash - s) >= sizeof(first))
		return conf_refuse(err, errlen,
		                   "MAGNETAR_TERMINAL_UIDS must be a uid range first-last");
	memcpy(first, s, (size_t)(dash - s));
	first[dash - s] = '\0';
	if (conf_int(first, 1, (long)UINT32_MAX - 1, &lo) != 0 ||
	    conf_int(dash + 1, 1, (long)UINT32_MAX - 1, &hi) != 0 || lo > hi)
		return conf_refuse(err, errlen,
		                   "MAGNETAR_TERMINAL_UIDS must be a uid range first-last of "
		                   "non-zero uids, first <= last");
	t->uid_first = (uid_t)lo;
	t->uid_last = (uid_t)hi;
	return 0;
}

const struct conf_table terminal_conf_table =
    CONF_TABLE("terminal", terminal_rows, struct terminal_vars, terminal_vars_check);
