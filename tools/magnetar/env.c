/*
 * env.c — the environment handed to one service: the common variables it
 * reads and its own table's (programs.c), and nothing else of the supervisor's, so the gateway
 * never holds the audit keys nor the founder password (docs/architecture.md, "Security model").
 */
#include "tools/magnetar/magnetar.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

/*
 * Passed to every service when set: what the C library and the shell a
 * terminal starts expect (PATH, HOME, LANG, TZ), and the sanitizer and debug
 * switches, without which `make SANITIZE=... test` would not reach the
 * services. None of them carries a secret.
 */
static const char *const env_common[] = {"PATH",         "HOME",         "LANG",
                                         "TZ",           "ASAN_OPTIONS", "UBSAN_OPTIONS",
                                         "LSAN_OPTIONS", "TSAN_OPTIONS", "MAGNETAR_DEBUG"};
#define ENV_NCOMMON (sizeof(env_common) / sizeof(env_common[0]))

struct env_list {
	char **v;
	size_t n, cap;
};

static int env_add(struct env_list *l, const char *name, const char *value)
{
	char *s;

	/* Sized in env_build; running out would be a bug in that count. */
	if (l->n + 1 >= l->cap)
		return ERR_INTERNAL;
	if (asprintf(&s, "%s=%s", name, value) < 0)
		return ERR_NOMEM;
	l->v[l->n++] = s;
	return 0;
}

/* Adds name=<its value in our environment> when it is set. */
static int env_pass(struct env_list *l, const char *name)
{
	const char *value = getenv(name);

	return value == NULL ? 0 : env_add(l, name, value);
}

/* Adds variable `v` (and for a secret its NAME_FILE forms) when set. */
static int env_pass_var(struct env_list *l, const struct conf_var *v, const char *data_dir,
                        const char *run_dir)
{
	char filevar[96];
	int rv;

	/* Relative defaults such as ./var would otherwise be resolved by each
	 * service on its own; they get the one absolute path we created. */
	if (strcmp(v->name, "MAGNETAR_DATA_DIR") == 0)
		rv = env_add(l, v->name, data_dir);
	else if (strcmp(v->name, "MAGNETAR_RUN_DIR") == 0)
		rv = env_add(l, v->name, run_dir);
	else
		rv = env_pass(l, v->name);
	if (rv != 0 || !conf_var_secret(v))
		return rv;
	/* conf_load refused a secret set both inline and as a file, so the
	 * service sees what we saw: the file's path goes on, never the bytes
	 * we read from it, and the service reads the file itself. */
	snprintf(filevar, sizeof(filevar), "%s_FILE", v->name);
	if ((rv = env_pass(l, filevar)) != 0)
		return rv;
	return v->file_alias != NULL ? env_pass(l, v->file_alias) : 0;
}

int env_build(enum svc_id svc, const char *data_dir, const char *run_dir, char ***out)
{
	const struct conf_table *own = programs_vars[svc];
	struct env_list l = {0};
	int rv = ERR_NOMEM;

	*out = NULL;
	/* Each variable at most three times (NAME, NAME_FILE, its alias), the
	 * common ones, and the terminating NULL. */
	l.cap = 3 * (conf_nvars + own->nvars) + ENV_NCOMMON + 1;
	if ((l.v = calloc(l.cap, sizeof(*l.v))) == NULL)
		return ERR_NOMEM;
	for (size_t i = 0; i < conf_nvars; i++)
		if (conf_var_read_by(&conf_vars[i], svc) &&
		    (rv = env_pass_var(&l, &conf_vars[i], data_dir, run_dir)) != 0)
			goto fail;
	for (size_t i = 0; i < own->nvars; i++)
		if ((rv = env_pass_var(&l, &own->vars[i], data_dir, run_dir)) != 0)
			goto fail;
	for (size_t i = 0; i < ENV_NCOMMON; i++)
		if ((rv = env_pass(&l, env_common[i])) != 0)
			goto fail;
	*out = l.v;
	return 0;
fail:
	env_free(l.v);
	return rv;
}

void env_free(char **env)
{
	if (env == NULL)
		return;
	for (char **p = env; *p != NULL; p++) {
		OPENSSL_cleanse(*p, strlen(*p));
		free(*p);
	}
	free(env);
}
