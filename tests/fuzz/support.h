/*
 * support.h — what the libFuzzer targets share: keeping the real stderr
 * for their own reports while libFuzzer's -close_fd_mask silences the code
 * under test, and a scratch directory removed at exit.
 */
#ifndef MAGNETAR_FUZZ_SUPPORT_H
#define MAGNETAR_FUZZ_SUPPORT_H

#include <stddef.h>
#include <stdio.h>

/* Returns a duplicate of stderr (stderr itself if dup fails) and, unless
 * MAGNETAR_FUZZ_VERBOSE is set or the command line already has one, appends
 * `mask_flag` ("-close_fd_mask=2" or "=3") to libFuzzer's argv. */
FILE *fuzz_quiet(int *argc, char ***argv, const char *mask_flag);

/* Makes /dev/shm/magnetar-fuzz-<name>-XXXXXX (or under /tmp) in `dir`, to
 * be removed with everything in it when the process exits; aborts on
 * failure. One per process. */
void fuzz_scratch_dir(const char *name, char *dir, size_t len);

/* Removes `path` and everything below it, without following symlinks. */
void fuzz_rm_tree(const char *path);

#endif
