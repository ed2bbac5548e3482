/*
 * fault.c — fault injection below SQLite (fault.h).
 *
 * A shim VFS, registered as the default, forwards every call to the real
 * one and turns every Nth write or sync into SQLITE_IOERR and every Nth
 * exclusive WAL lock into SQLITE_BUSY; a wrapped allocator fails every Nth
 * SQLite allocation; fault_alloc_due tells the link-time wrappers of our
 * own malloc and friends (fault_alloc.c) to fail every Nth one. Counting
 * calls (not random draws) keeps a failing run repeatable. Faults are
 * armed only once the service serves (fault_arm): a start that failed at
 * the same count every time would never come up.
 * Nothing here runs unless a MAGNETAR_FAULT_* variable is set.
 */
#include "common/fault.h"

#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"

static unsigned fault_ioerr_every, fault_busy_every, fault_nomem_every, fault_alloc_every;
static _Atomic uint64_t fault_ioerr_n, fault_busy_n, fault_nomem_n, fault_alloc_n, fault_count;
static _Atomic bool fault_armed;
static sqlite3_vfs *fault_real;
static sqlite3_vfs fault_vfs;
static sqlite3_mem_methods fault_real_mem;

static bool fault_due(_Atomic uint64_t *n, unsigned every)
{
	if (every == 0 || !atomic_load(&fault_armed) || (atomic_fetch_add(n, 1) + 1) % every != 0)
		return false;
	atomic_fetch_add(&fault_count, 1);
	return true;
}

void fault_arm(void)
{
	atomic_store(&fault_armed, true);
}

bool fault_alloc_due(void)
{
	return fault_due(&fault_alloc_n, fault_alloc_every);
}

uint64_t fault_injected(void)
{
	return atomic_load(&fault_count);
}

/* ---- the file shim: the real file follows ours in one allocation ---------- */

struct fault_file {
	sqlite3_file base;
	sqlite3_file *real;
};

#define REAL(f) (((struct fault_file *)(f))->real)

static int ff_close(sqlite3_file *f)
{
	return REAL(f)->pMethods->xClose(REAL(f));
}
static int ff_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
	return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
}
static int ff_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
	if (fault_due(&fault_ioerr_n, fault_ioerr_every))
		return SQLITE_IOERR_WRITE;
	return REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
}
static int ff_truncate(sqlite3_file *f, sqlite3_int64 size)
{
	return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int ff_sync(sqlite3_file *f, int flags)
{
	if (fault_due(&fault_ioerr_n, fault_ioerr_every))
		return SQLITE_IOERR_FSYNC;
	return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int ff_size(sqlite3_file *f, sqlite3_int64 *size)
{
	return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int ff_lock(sqlite3_file *f, int level)
{
	return REAL(f)->pMethods->xLock(REAL(f), level);
}
static int ff_unlock(sqlite3_file *f, int level)
{
	return REAL(f)->pMethods->xUnlock(REAL(f), level);
}
static int ff_reserved(sqlite3_file *f, int *out)
{
	return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int ff_control(sqlite3_file *f, int op, void *arg)
{
	return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int ff_sector(sqlite3_file *f)
{
	return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int ff_device(sqlite3_file *f)
{
	return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int ff_shm_map(sqlite3_file *f, int pg, int sz, int extend, void volatile **pp)
{
	return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, extend, pp);
}
static int ff_shm_lock(sqlite3_file *f, int off, int n, int flags)
{
	/* In WAL mode a writer takes the WAL write lock here, not in xLock:
	 * an exclusive shared-memory lock is where writers contend. */
	if ((flags & SQLITE_SHM_LOCK) != 0 && (flags & SQLITE_SHM_EXCLUSIVE) != 0 &&
	    fault_due(&fault_busy_n, fault_busy_every))
		return SQLITE_BUSY;
	return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}
static void ff_shm_barrier(sqlite3_file *f)
{
	REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int ff_shm_unmap(sqlite3_file *f, int del)
{
	return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
static int ff_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
	return REAL(f)->pMethods->xFetch(REAL(f), off, n, pp);
}
static int ff_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
	return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

static const sqlite3_io_methods fault_io = {
    3,           ff_close,       ff_read,      ff_write,   ff_truncate, ff_sync,   ff_size,
    ff_lock,     ff_unlock,      ff_reserved,  ff_control, ff_sector,   ff_device, ff_shm_map,
    ff_shm_lock, ff_shm_barrier, ff_shm_unmap, ff_fetch,   ff_unfetch,
};

static int fault_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
	struct fault_file *ff = (struct fault_file *)f;
	int rc;
	(void)vfs;

	ff->real = (sqlite3_file *)(ff + 1);
	rc = fault_real->xOpen(fault_real, name, ff->real, flags, out);
	/* Our methods only over a real file that has its own (see xOpen's
	 * contract: pMethods NULL means nothing to close). */
	f->pMethods = rc == SQLITE_OK && ff->real->pMethods != NULL ? &fault_io : NULL;
	return rc;
}

/* ---- the allocator -------------------------------------------------------- */

static void *fault_malloc(int n)
{
	return fault_due(&fault_nomem_n, fault_nomem_every) ? NULL : fault_real_mem.xMalloc(n);
}
static void *fault_realloc(void *p, int n)
{
	return fault_due(&fault_nomem_n, fault_nomem_every) ? NULL : fault_real_mem.xRealloc(p, n);
}

static unsigned fault_env(const char *name)
{
	const char *s = getenv(name);
	return s != NULL ? (unsigned)strtoul(s, NULL, 10) : 0;
}

int fault_install(const struct conf *c, char *err, size_t errlen)
{
	fault_ioerr_every = fault_env("MAGNETAR_FAULT_SQLITE_IOERR");
	fault_busy_every = fault_env("MAGNETAR_FAULT_SQLITE_BUSY");
	fault_nomem_every = fault_env("MAGNETAR_FAULT_SQLITE_NOMEM");
	fault_alloc_every = fault_env("MAGNETAR_FAULT_ALLOC");
	if (fault_ioerr_every == 0 && fault_busy_every == 0 && fault_nomem_every == 0 &&
	    fault_alloc_every == 0)
		return 0;
	if (c->env != CONF_ENV_TEST) {
		snprintf(err, errlen, "MAGNETAR_FAULT_* is for MAGNETAR_ENV=test only");
		return ERR_CONFIG;
	}
	if (fault_nomem_every != 0) {
		sqlite3_mem_methods m;
		if (sqlite3_config(SQLITE_CONFIG_GETMALLOC, &fault_real_mem) != SQLITE_OK)
			return ERR_CONFIG;
		m = fault_real_mem;
		m.xMalloc = fault_malloc;
		m.xRealloc = fault_realloc;
		if (sqlite3_config(SQLITE_CONFIG_MALLOC, &m) != SQLITE_OK) {
			snprintf(err, errlen, "SQLite was initialised before fault_install");
			return ERR_CONFIG;
		}
	}
	if (fault_ioerr_every != 0 || fault_busy_every != 0) {
		if ((fault_real = sqlite3_vfs_find(NULL)) == NULL)
			return ERR_CONFIG;
		fault_vfs = *fault_real;
		fault_vfs.zName = "magnetar-fault";
		fault_vfs.szOsFile = (int)sizeof(struct fault_file) + fault_real->szOsFile;
		fault_vfs.xOpen = fault_open;
		fault_vfs.pAppData = NULL;
		if (sqlite3_vfs_register(&fault_vfs, 1) != SQLITE_OK)
			return ERR_CONFIG;
	}
	log_warnx("fault injection: SQLite ioerr every %u, busy every %u, nomem every %u; "
	          "allocation failure every %u",
	          fault_ioerr_every, fault_busy_every, fault_nomem_every, fault_alloc_every);
	return 0;
}
