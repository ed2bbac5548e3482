/*
 * validate.c — which shell may run and where: an allow-list of absolute
 * paths compared byte for byte (no PATH look-up, no `..`), and a working
 * directory resolved with realpath() that must stay under a configured root.
 * Pure functions of the policy and the file system, shared by the service
 * and the spawner (which checks again) and fuzzed (tests/fuzz).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/list.h"
#include "common/log.h"
#include "services/terminal/terminal.h"

static const char *const validate_default_shells[] = {
    "/bin/bash", "/bin/sh", "/bin/dash", "/bin/zsh", "/usr/bin/fish",
};

/* Absolute, and no empty, "." or ".." component: the form an allow-list
 * entry must have for a byte comparison to mean what it says. */
static bool validate_canonical(const char *p)
{
	const char *s = p;

	if (p[0] != '/' || p[1] == '\0')
		return false;
	while (*s == '/') {
		const char *e = ++s;
		while (*e != '/' && *e != '\0')
			e++;
		if (e == s || (e - s == 1 && s[0] == '.') ||
		    (e - s == 2 && s[0] == '.' && s[1] == '.'))
			return false;
		s = e;
	}
	return true;
}

/* True when `path` is a line of the shells file. */
static bool validate_in_etc_shells(const char *etc_shells, const char *path)
{
	char line[PATH_MAX];
	bool found = false;
	FILE *f = fopen(etc_shells, "re");

	if (f == NULL)
		return false;
	while (!found && fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\r\n")] = '\0';
		found = strcmp(line, path) == 0;
	}
	fclose(f);
	return found;
}

/* Splits a comma-separated list (spaces around items dropped) into out. */
static int validate_split(const char *csv, char **out, size_t *n)
{
	const char *s;
	size_t len;

	while (list_next(&csv, &s, &len)) {
		if (*n == TERMINAL_LIST_MAX)
			return ERR_CONFIG;
		if ((out[*n] = strndup(s, len)) == NULL)
			return ERR_NOMEM;
		(*n)++;
	}
	return 0;
}

int validate_policy_init(struct validate_policy *p, const char *shells, const char *roots,
                         const char *etc_shells, const char *home)
{
	char *raw[TERMINAL_LIST_MAX];
	size_t nraw = 0;
	int rv;

	memset(p, 0, sizeof(*p));
	if (shells != NULL) {
		if ((rv = validate_split(shells, p->shells, &p->nshells)) != 0)
			goto fail;
		for (size_t i = 0; i < p->nshells; i++)
			if (strlen(p->shells[i]) >= TERMINAL_SHELL_MAX ||
			    !validate_canonical(p->shells[i])) {
				log_warnx("MAGNETAR_TERMINAL_SHELLS: %s is not an absolute, "
				          "canonical path",
				          p->shells[i]);
				rv = ERR_CONFIG;
				goto fail;
			}
	} else {
		for (size_t i = 0;
		     i < sizeof(validate_default_shells) / sizeof(validate_default_shells[0]);
		     i++) {
			const char *sh = validate_default_shells[i];
			if (access(sh, X_OK) != 0 || !validate_in_etc_shells(etc_shells, sh))
				continue;
			if ((p->shells[p->nshells] = strdup(sh)) == NULL) {
				rv = ERR_NOMEM;
				goto fail;
			}
			p->nshells++;
		}
	}
	if (roots == NULL)
		roots = home;
	if (roots != NULL && (rv = validate_split(roots, raw, &nraw)) != 0)
		goto fail;
	for (size_t i = 0; i < nraw; i++) {
		char *r = realpath(raw[i], NULL);
		struct stat st;
		if (r == NULL || stat(r, &st) != 0 || !S_ISDIR(st.st_mode)) {
			log_warnx("terminal root %s is not a directory: skipped", raw[i]);
			free(r);
		} else
			p->roots[p->nroots++] = r;
		free(raw[i]);
	}
	return 0;
fail:
	validate_policy_fini(p);
	return rv;
}

void validate_policy_fini(struct validate_policy *p)
{
	for (size_t i = 0; i < p->nshells; i++)
		free(p->shells[i]);
	for (size_t i = 0; i < p->nroots; i++)
		free(p->roots[i]);
	memset(p, 0, sizeof(*p));
}

int validate_shell(const struct validate_policy *p, const char *shell, size_t len, char *exec_path,
                   size_t cap)
{
	char resolved[PATH_MAX];
	struct stat st;
	size_t i;

	if (len == 0 || len >= TERMINAL_SHELL_MAX || memchr(shell, '\0', len) != NULL ||
	    shell[len] != '\0')
		return ERR_PERM;
	for (i = 0; i < p->nshells; i++)
		if (strcmp(shell, p->shells[i]) == 0)
			break;
	if (i == p->nshells)
		return ERR_PERM;
	/* The entry may be a link (Debian's /bin/sh → dash): what runs is its
	 * target, which must be a plain executable only its owner may change,
	 * and that owner root or us. A target swapped for a writable file is
	 * refused, not run. */
	if (realpath(shell, resolved) == NULL || stat(resolved, &st) != 0 || !S_ISREG(st.st_mode) ||
	    (st.st_mode & 0111) == 0 || (st.st_mode & 022) != 0 ||
	    (st.st_uid != 0 && st.st_uid != geteuid()))
		return ERR_PERM;
	if (strlen(resolved) >= cap)
		return ERR_PERM;
	strcpy(exec_path, resolved);
	return 0;
}

bool validate_under_root(const struct validate_policy *p, const char *path)
{
	for (size_t i = 0; i < p->nroots; i++) {
		const char *r = p->roots[i];
		size_t n = strlen(r);
		if (strcmp(r, "/") == 0)
			return path[0] == '/';
		if (strncmp(path, r, n) == 0 && (path[n] == '\0' || path[n] == '/'))
			return true;
	}
	return false;
}

int validate_cwd(const struct validate_policy *p, const char *cwd, size_t len, char *out,
                 size_t cap)
{
	char resolved[PATH_MAX];
	struct stat st;

	if (len == 0 || len >= PATH_MAX || memchr(cwd, '\0', len) != NULL || cwd[len] != '\0' ||
	    cwd[0] != '/')
		return ERR_PERM;
	/* Resolved first, compared after: a link inside a root that points out
	 * of it is judged by where it leads. */
	if (realpath(cwd, resolved) == NULL || stat(resolved, &st) != 0 || !S_ISDIR(st.st_mode))
		return ERR_PERM;
	if (!validate_under_root(p, resolved) || strlen(resolved) >= cap)
		return ERR_PERM;
	strcpy(out, resolved);
	return 0;
}
