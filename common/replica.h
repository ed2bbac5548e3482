/*
 * replica.h — which replica of a service this process is.
 *
 * A service's own MAGNETAR_<SVC>_URL (and its events URL) may list up to
 * RPC_URLS_MAX entries, one per replica. Every replica is started with the
 * same environment (`docker compose up --scale auth=3`, or three processes
 * by hand); each takes the first entry that no live replica holds and
 * listens there, while clients dial every entry (rpc.h). Holding an entry is
 * an flock on `<run dir>/<service>.replica-<n>.lock`, kept for the life of
 * the process: the kernel lets go of it when the process dies, however it
 * dies, so a restarted or new replica takes a dead one's entry, and two
 * replicas starting at the same moment never take the same one.
 */
#ifndef MAGNETAR_REPLICA_H
#define MAGNETAR_REPLICA_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Claims the first free replica number n (1-based) of `service` among
 * `count` entries, locking its file in `run_dir`. On success *index is n and
 * *lock_fd the descriptor to keep open (close it to give the entry up).
 * ERR_EXISTS when every entry is held, ERR_IO (errno set) when a lock file
 * cannot be opened, ERR_INVAL for a count of 0 or a too long path.
 */
int replica_claim(const char *run_dir, const char *service, size_t count, size_t *index,
                  int *lock_fd);

/*
 * Opens (creating it) the lock file of entry n of `service`, without locking
 * it: a descriptor, or -1 with errno set (ENAMETOOLONG for a too long path).
 * flock(LOCK_EX | LOCK_NB) on it then tells whether a live replica holds n,
 * and keeps a new one from taking n until LOCK_UN (the outbox's adoption of
 * a dead replica's rows, outbox.h).
 */
int replica_open(const char *run_dir, const char *service, size_t n);

/*
 * Whether entry n of `service` is held, by a process whose host name is
 * ours: on a container, the replica the container runs (the file records
 * "<hostname> <pid>"). For `magctl ping <service> --here`, a per-container
 * health check. False when unknown.
 */
bool replica_held_here(const char *run_dir, const char *service, size_t n);

/* The number of entries of a comma-separated URL list (empty entries
 * included, so that a malformed list is refused where it is used). */
size_t replica_count(const char *urls);

/*
 * Entry n (1-based) of a comma-separated URL list into buf: 0, or ERR_INVAL
 * when the list has fewer entries, the entry is empty, or it does not fit.
 */
int replica_entry(const char *urls, size_t n, char *buf, size_t len);

#endif
