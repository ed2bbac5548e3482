/*
 * backup.c — `magctl backup <service> <file>`: a consistent copy of a
 * service's database while it runs, through SQLite's online backup API.
 *
 * The copy is made by magctl itself, opening the database read-only beside
 * the service, in one backup step: one read transaction, hence one
 * consistent snapshot. In WAL mode that reader never blocks the service's
 * writer (stepping in chunks instead would restart the copy each time the
 * service wrote in between, possibly forever under load). Reading another
 * service's 0600 file takes the operator (root, or the invoking user in
 * development). The destination is created exclusively (0600, never an
 * existing file), checked with `PRAGMA integrity_check`, and fsynced.
 * No secret key lives in a database (keys are files: docs/operations.md),
 * so a backup alone cannot decrypt audit fields or sign tokens.
 */
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tools/magctl/magctl.h"

#define BACKUP_RETRY_MS 10 /* a busy source (a checkpoint) is tried again */

/* The file name of each service's database in its data dir. */
static const char *backup_db_file(enum svc_id svc)
{
	static const char *const files[SVC_SERVICES] = {
	    [SVC_GATEWAY] = "gateway.db", [SVC_AUTH] = "auth.db",         [SVC_AUDIT] = "audit.db",
	    [SVC_BREACH] = "breach.db",   [SVC_TERMINAL] = "terminal.db",
	};
	return files[svc];
}

static int backup_fsync(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int rv = fd >= 0 && fsync(fd) == 0 ? 0 : -1;
	if (fd >= 0)
		close(fd);
	return rv;
}

static bool backup_check(sqlite3 *db)
{
	sqlite3_stmt *st = NULL;
	bool ok = false;

	if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		ok = strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
	sqlite3_finalize(st);
	return ok;
}

int magctl_backup(struct magctl *m, int argc, char **argv)
{
	char dir[512], src_path[600];
	sqlite3 *src = NULL, *dst = NULL;
	sqlite3_backup *b;
	int svc, fd, rc, pages = 0;

	if (argc != 3 || (svc = svc_lookup(argv[1])) < 0 || svc >= SVC_SERVICES) {
		fprintf(stderr,
		        "usage: magctl backup <gateway|auth|audit|breach|terminal> <file>\n");
		return 2;
	}
	if (conf_service_dir(&m->conf, (enum svc_id)svc, dir, sizeof(dir)) != 0 ||
	    snprintf(src_path, sizeof(src_path), "%s/%s", dir, backup_db_file((enum svc_id)svc)) >=
	        (int)sizeof(src_path))
		return 2;
	if (access(src_path, R_OK) != 0) {
		printf("backup: cannot read %s: %s\n", src_path, strerror(errno));
		return 1;
	}
	/* Never over an existing file: a typo must not destroy a good backup. */
	if ((fd = open(argv[2], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
		printf("backup: cannot create %s: %s\n", argv[2], strerror(errno));
		return 1;
	}
	close(fd);
	if (sqlite3_open_v2(src_path, &src, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
	    sqlite3_open_v2(argv[2], &dst, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
		printf("backup: cannot open the databases: %s\n",
		       src != NULL ? sqlite3_errmsg(src) : "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(src, 5000);
	if ((b = sqlite3_backup_init(dst, "main", src, "main")) == NULL) {
		printf("backup: %s\n", sqlite3_errmsg(dst));
		goto fail;
	}
	while ((rc = sqlite3_backup_step(b, -1)) == SQLITE_OK || rc == SQLITE_BUSY ||
	       rc == SQLITE_LOCKED)
		sqlite3_sleep(BACKUP_RETRY_MS);
	pages = sqlite3_backup_pagecount(b);
	if (sqlite3_backup_finish(b) != SQLITE_OK || rc != SQLITE_DONE) {
		printf("backup: %s\n", sqlite3_errstr(rc));
		goto fail;
	}
	if (!backup_check(dst)) {
		printf("backup: the copy fails its integrity check\n");
		goto fail;
	}
	sqlite3_close(dst);
	sqlite3_close(src);
	if (backup_fsync(argv[2]) != 0) {
		printf("backup: cannot sync %s: %s\n", argv[2], strerror(errno));
		unlink(argv[2]);
		return 1;
	}
	printf("%s: backed up %d pages to %s\n", svc_name((enum svc_id)svc), pages, argv[2]);
	return 0;
fail:
	sqlite3_close(dst);
	sqlite3_close(src);
	unlink(argv[2]);
	return 1;
}
