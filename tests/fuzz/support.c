/*
 * support.c — the fuzz targets' shared set-up (support.h).
 */
#include "tests/fuzz/support.h"

#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *scratch; /* fuzz_scratch_dir's, removed at exit */

FILE *fuzz_quiet(int *argc, char ***argv, const char *mask_flag)
{
	int fd = dup(STDERR_FILENO);
	FILE *report = fd >= 0 ? fdopen(fd, "w") : NULL;
	char **nargv;

	if (report == NULL)
		report = stderr;
	if (getenv("MAGNETAR_FUZZ_VERBOSE") != NULL)
		return report;
	for (int i = 1; i < *argc; i++)
		if (strncmp((*argv)[i], "-close_fd_mask=", 15) == 0)
			return report;
	/* Lives as long as the process: libFuzzer keeps using argv. */
	if ((nargv = calloc((size_t)*argc + 2, sizeof(*nargv))) == NULL)
		return report;
	memcpy(nargv, *argv, (size_t)*argc * sizeof(*nargv));
	nargv[(*argc)++] = (char *)mask_flag;
	nargv[*argc] = NULL;
	*argv = nargv;
	return report;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

void fuzz_rm_tree(const char *path)
{
	nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void remove_scratch(void)
{
	if (scratch != NULL)
		fuzz_rm_tree(scratch);
}

void fuzz_scratch_dir(const char *name, char *dir, size_t len)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

	if ((size_t)snprintf(dir, len, "%s/magnetar-fuzz-%s-XXXXXX", base, name) >= len ||
	    mkdtemp(dir) == NULL)
		abort();
	scratch = dir;
	atexit(remove_scratch);
}
