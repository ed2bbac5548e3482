/*
 * replica.c — claiming a replica's entry of a URL list (replica.h).
 *
 * Why a lock file and not the listen itself: nng's ipc listener removes a
 * socket file it cannot connect to, and between another replica's bind and
 * its listen that file refuses connections like a stale one, so two
 * replicas starting together could both "own" an entry; a tcp:// entry
 * would need a different test again. One flock per entry in the run dir
 * (shared by every replica on the host, and by the containers of a compose
 * project through the socket volume) answers for every kind of URL.
 */
#include "common/replica.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "common/err.h"

size_t replica_count(const char *urls)
{
	size_t n = 1;

	for (const char *p = urls; *p != '\0'; p++)
		if (*p == ',')
			n++;
	return n;
}

int replica_entry(const char *urls, size_t n, char *buf, size_t len)
{
	const char *p = urls;
	size_t l;

	for (size_t i = 1; i < n; i++) {
		if ((p = strchr(p, ',')) == NULL)
			return ERR_INVAL;
		p++;
	}
	l = strcspn(p, ",");
	if (n == 0 || l == 0 || l >= len)
		return ERR_INVAL;
	memcpy(buf, p, l);
	buf[l] = '\0';
	return 0;
}

/* "<hostname> <pid>" in the lock file: for replica_held_here, and for an
 * operator asking which container holds which entry. Best effort. */
static void replica_sign(int fd)
{
	char host[256] = "", line[300];
	int n;

	gethostname(host, sizeof(host) - 1);
	n = snprintf(line, sizeof(line), "%s %ld\n", host, (long)getpid());
	if (ftruncate(fd, 0) == 0 && n > 0)
		(void)!pwrite(fd, line, (size_t)n, 0);
}

bool replica_held_here(const char *run_dir, const char *service, size_t n)
{
	char path[4096], host[256] = "", line[300];
	bool here = false;
	ssize_t got;
	int fd, r = snprintf(path, sizeof(path), "%s/%s.replica-%zu.lock", run_dir, service, n);

	if (r < 0 || (size_t)r >= sizeof(path) ||
	    (fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return false;
	gethostname(host, sizeof(host) - 1);
	if ((got = pread(fd, line, sizeof(line) - 1, 0)) > 0) {
		line[got] = '\0';
		line[strcspn(line, " \n")] = '\0';
		here = strcmp(line, host) == 0;
	}
	/* A file nobody holds is a dead replica's. */
	if (here && flock(fd, LOCK_SH | LOCK_NB) == 0)
		here = false;
	close(fd);
	return here;
}

int replica_open(const char *run_dir, const char *service, size_t n)
{
	char path[4096];
	int r = snprintf(path, sizeof(path), "%s/%s.replica-%zu.lock", run_dir, service, n);

	if (r < 0 || (size_t)r >= sizeof(path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	/* 0600: under privilege separation root makes it, before the drop,
	 * and no other user can open it to hold an entry hostage. */
	return open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
}

int replica_claim(const char *run_dir, const char *service, size_t count, size_t *index,
                  int *lock_fd)
{
	if (count == 0)
		return ERR_INVAL;
	for (size_t n = 1; n <= count; n++) {
		int fd, r;

		if ((fd = replica_open(run_dir, service, n)) < 0)
			return errno == ENAMETOOLONG ? ERR_INVAL : ERR_IO;
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			replica_sign(fd);
			*index = n;
			*lock_fd = fd;
			return 0;
		}
		r = errno;
		close(fd);
		if (r != EWOULDBLOCK) {
			errno = r;
			return ERR_IO;
		}
	}
	return ERR_EXISTS;
}
