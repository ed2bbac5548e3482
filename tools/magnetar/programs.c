/*
 * programs.c — the services the supervisor runs, by their variable tables:
 * each program declares its own MAGNETAR_* variables in its folder's
 * vars.c, and the supervisor links those tables (data and their checks,
 * nothing else of the program) to hand each service only what it reads and
 * to refuse a bad configuration before starting anything. Adding a service
 * is a line here. Also `magnetar vars`: every variable, as a table.
 */
#include "tools/magnetar/magnetar.h"

#include <stdio.h>

#include "gateway/vars.h"
#include "services/audit/vars.h"
#include "services/auth/vars.h"
#include "services/breach/vars.h"
#include "services/terminal/vars.h"

const struct conf_table *const programs_vars[SVC_SERVICES] = {
    [SVC_GATEWAY] = &gateway_conf_table,   [SVC_AUTH] = &auth_conf_table,
    [SVC_AUDIT] = &audit_conf_table,       [SVC_BREACH] = &breach_conf_table,
    [SVC_TERMINAL] = &terminal_conf_table,
};

int programs_load(const struct conf *c, void *values[SVC_SERVICES], char *err, size_t errlen)
{
	for (int i = 0; i < SVC_SERVICES; i++)
		values[i] = NULL;
	for (int i = 0; i < SVC_SERVICES; i++) {
		int rv = conf_table_load(c, programs_vars[i], &values[i], err, errlen);
		if (rv != 0) {
			programs_free(values);
			return rv;
		}
	}
	return 0;
}

void programs_free(void *values[SVC_SERVICES])
{
	for (int i = 0; i < SVC_SERVICES; i++) {
		conf_table_free(programs_vars[i], values[i]);
		values[i] = NULL;
	}
}

const char *programs_gateway_url(const void *gateway_values, char *buf, size_t len)
{
	const struct gateway_vars *g = gateway_values;
	snprintf(buf, len, "%s://%s/", g->tls_cert != NULL ? "https" : "http", g->http.text);
	return buf;
}

/* One line: name, the programs that read it (comma-separated), secret (0 or
 * 1), the file alias or "-". */
static void programs_vars_row(const struct conf_var *v, const char *readers)
{
	printf("%s\t%s\t%d\t%s\n", v->name, readers, conf_var_secret(v) ? 1 : 0,
	       v->file_alias != NULL ? v->file_alias : "-");
}

void programs_print_vars(void)
{
	char readers[128];

	for (size_t i = 0; i < conf_nvars; i++) {
		size_t used = 0;
		readers[0] = '\0';
		for (int s = 0; s < SVC_SERVICES; s++)
			if (conf_var_read_by(&conf_vars[i], (enum svc_id)s))
				used +=
				    (size_t)snprintf(readers + used, sizeof(readers) - used, "%s%s",
				                     used > 0 ? "," : "", svc_name((enum svc_id)s));
		programs_vars_row(&conf_vars[i], used > 0 ? readers : "-");
	}
	for (int s = 0; s < SVC_SERVICES; s++)
		for (size_t i = 0; i < programs_vars[s]->nvars; i++)
			programs_vars_row(&programs_vars[s]->vars[i], programs_vars[s]->program);
}
