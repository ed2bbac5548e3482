/*
 * mkdirs.h — `mkdir -p` with a mode for the last component: the data and
 * run dirs the supervisor and every service make at start.
 */
#ifndef MAGNETAR_MKDIRS_H
#define MAGNETAR_MKDIRS_H

#include <sys/types.h>

/* Makes `path` and its missing parents (0755); the last one gets `mode`.
 * Dirs that exist are left as they are. 0, ERR_INVAL (empty or too long)
 * or ERR_IO (errno says why). */
int mkdirs(const char *path, mode_t mode);

#endif
