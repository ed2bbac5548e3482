/*
 * devdirs.c — where a run as root keeps its data and sockets. Every service
 * drops to its own user and must traverse each dir above its data and run
 * dirs. A checkout under /root (0700 on Debian) or a mktemp -d dir is closed
 * to them, and the default ./var and ./run would then crash-loop every
 * service. Such a run gets dirs of its own under /var/lib and /run instead;
 * a dir the operator named that the services cannot reach is refused at once.
 */
#include "tools/magnetar/magnetar.h"

#include <errno.h>
#include <grp.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"

#define DEVDIRS_DATA_ROOT "/var/lib/magnetar-dev"
#define DEVDIRS_RUN_ROOT "/run/magnetar-dev"

/* The first existing dir above `path` (made absolute against the working
 * dir) that others may not traverse, into `closed`; returns true when there is
 * one. `path` itself is ours to set right (privsep.c gives it to the
 * services' group); dirs that do not exist yet are made 0755 by mkdirs. */
static bool devdirs_closed_ancestor(const char *path, gid_t group, char *closed, size_t len)
{
	char buf[PATH_MAX];
	struct stat st;
	int n;

	if (path[0] == '/')
		n = snprintf(buf, sizeof(buf), "%s", path);
	else if (getcwd(buf, sizeof(buf)) != NULL)
		n = snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "/%s", path);
	else
		return false;
	if (n < 0 || (size_t)n >= sizeof(buf))
		return false;
	for (;;) {
		char *slash;

		if ((slash = strrchr(buf, '/')) == NULL || slash == buf)
			break;
		*slash = '\0';
		/* Every service user is in the IPC group: a dir its group may
		 * traverse (0710 root:magnetar) is open to them too. */
		if (stat(buf, &st) == 0 && S_ISDIR(st.st_mode) && !(st.st_mode & S_IXOTH) &&
		    !(st.st_gid == group && (st.st_mode & S_IXGRP))) {
			snprintf(closed, len, "%s (mode %04o)", buf,
			         (unsigned)(st.st_mode & 07777));
			return true;
		}
	}
	if (stat("/", &st) == 0 && !(st.st_mode & S_IXOTH)) {
		snprintf(closed, len, "/ (mode %04o)", (unsigned)(st.st_mode & 07777));
		return true;
	}
	return false;
}

/* 12 hex digits of SHA-256 over the supervisor's own dir: one checkout, one
 * place, the same at every start. */
static int devdirs_tag(const char *bindir, char tag[13])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	if (EVP_Digest(bindir, strlen(bindir), md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen < 6)
		return ERR_INTERNAL;
	for (int i = 0; i < 6; i++)
		snprintf(tag + 2 * i, 3, "%02x", md[i]);
	return 0;
}

static void devdirs_replace(char **slot, const char *root, const char *tag)
{
	char *path = NULL;

	if (asprintf(&path, "%s/%s", root, tag) < 0)
		fatalx("out of memory");
	free(*slot);
	*slot = path;
}

void devdirs_choose(struct conf *c, const char *bindir)
{
	static const struct {
		const char *var;
		size_t off;
		const char *root;
	} dirs[] = {
	    {"MAGNETAR_DATA_DIR", offsetof(struct conf, data_dir), DEVDIRS_DATA_ROOT},
	    {"MAGNETAR_RUN_DIR", offsetof(struct conf, run_dir), DEVDIRS_RUN_ROOT},
	};
	char closed[PATH_MAX + 32], tag[13];
	const struct group *gr;
	gid_t group = (gid_t)-1;

	if (geteuid() != 0)
		return; /* every service runs as us: what we reach, they reach */
	if (c->ipc_group != NULL && (gr = getgrnam(c->ipc_group)) != NULL)
		group = gr->gr_gid;
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		char **slot = (char **)((char *)c + dirs[i].off);

		if (!devdirs_closed_ancestor(*slot, group, closed, sizeof(closed)))
			continue;
		if (getenv(dirs[i].var) != NULL)
			fatalx("%s=%s cannot be reached by the service users: %s is closed to "
			       "others; choose a dir they can traverse",
			       dirs[i].var, *slot, closed);
		if (devdirs_tag(bindir, tag) != 0)
			fatalx("cannot name a development dir for this checkout");
		devdirs_replace(slot, dirs[i].root, tag);
		log_info("%s is closed to the service users; %s defaults to %s for this checkout",
		         closed, dirs[i].var, *slot);
	}
}
