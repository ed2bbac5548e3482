/*
 * logpipe.c — a child's stdout or stderr, read through a pipe and re-emitted
 * on the supervisor's stderr one whole line at a time as "[name] line", so
 * the services' logs share one terminal without being cut into each other.
 */
#include "tools/magnetar/magnetar.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"

#define LOGPIPE_CHUNK 4096
/* Bytes read per logpipe_read call: enough for bursts, small enough that one
 * chatty child cannot keep the loop from its other pipes and its signals. */
#define LOGPIPE_READ_BUDGET (16 * LOGPIPE_CHUNK)
/* logpipe_drain's bound: a surviving grandchild may still be writing. */
#define LOGPIPE_DRAIN_BUDGET (256 * LOGPIPE_CHUNK)

static const char logpipe_cut_mark[] = " [cut]";

int logpipe_init(struct logpipe *lp, const char *name)
{
	int fds[2];

	lp->name = name;
	lp->rfd = lp->wfd = -1;
	lp->len = 0;
	lp->cutting = false;
	/* CLOEXEC on both ends: a child gets its write end only through dup2 onto
	 * 1 or 2, never another service's pipe. Only the read end is
	 * non-blocking, so a child writing faster than we forward simply waits. */
	if (pipe2(fds, O_CLOEXEC) != 0)
		return ERR_IO;
	if (fcntl(fds[0], F_SETFL, O_NONBLOCK) != 0) {
		close(fds[0]);
		close(fds[1]);
		return ERR_IO;
	}
	lp->rfd = fds[0];
	lp->wfd = fds[1];
	return 0;
}

void logpipe_fini(struct logpipe *lp)
{
	if (lp->rfd >= 0)
		close(lp->rfd);
	if (lp->wfd >= 0)
		close(lp->wfd);
	lp->rfd = lp->wfd = -1;
}

/* Writes all of buf to stderr. Nothing better can be done with a failure. */
static void logpipe_write_all(const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(STDERR_FILENO, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		buf += n;
		len -= (size_t)n;
	}
}

/* Emits buf[0..len) as one line. The line goes out in a single write from
 * this single-threaded process, so nothing we write can land inside it. */
static void logpipe_emit(const struct logpipe *lp, bool cut)
{
	char line[LOGPIPE_LINE_MAX + 64 + sizeof(logpipe_cut_mark)];
	size_t len = lp->len, n = 0, namelen = strlen(lp->name);

	if (len > 0 && lp->buf[len - 1] == '\r')
		len--;
	line[n++] = '[';
	memcpy(line + n, lp->name, namelen);
	n += namelen;
	line[n++] = ']';
	line[n++] = ' ';
	/* Control bytes could move a terminal's cursor over other services'
	 * lines or forge a prefix; a tab is harmless and common. */
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)lp->buf[i];
		line[n++] = (ch < 0x20 && ch != '\t') || ch == 0x7f ? '?' : (char)ch;
	}
	if (cut) {
		memcpy(line + n, logpipe_cut_mark, sizeof(logpipe_cut_mark) - 1);
		n += sizeof(logpipe_cut_mark) - 1;
	}
	line[n++] = '\n';
	logpipe_write_all(line, n);
}

/* Splits fresh bytes into lines; a line longer than the buffer is emitted cut
 * at LOGPIPE_LINE_MAX and the rest of it dropped. */
static void logpipe_feed(struct logpipe *lp, const char *p, size_t n)
{
	while (n > 0) {
		const char *nl = memchr(p, '\n', n);
		size_t take = nl != NULL ? (size_t)(nl - p) : n;

		if (!lp->cutting) {
			size_t room = sizeof(lp->buf) - lp->len;
			size_t copy = take < room ? take : room;

			memcpy(lp->buf + lp->len, p, copy);
			lp->len += copy;
			if (take > copy) {
				logpipe_emit(lp, true);
				lp->len = 0;
				lp->cutting = true;
			}
		}
		if (nl == NULL)
			return;
		if (!lp->cutting)
			logpipe_emit(lp, false);
		lp->len = 0;
		lp->cutting = false;
		p += take + 1;
		n -= take + 1;
	}
}

/* Reads at most `budget` bytes; 0 when the pipe is empty or the budget spent. */
static int logpipe_read_some(struct logpipe *lp, size_t budget)
{
	char chunk[LOGPIPE_CHUNK];
	size_t done = 0;

	while (done < budget) {
		ssize_t n = read(lp->rfd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN ? 0 : ERR_IO;
		/* EOF cannot happen while we hold the write end; treat it as empty. */
		if (n == 0)
			return 0;
		logpipe_feed(lp, chunk, (size_t)n);
		done += (size_t)n;
	}
	return 0;
}

int logpipe_read(struct logpipe *lp)
{
	if (lp->rfd < 0)
		return 0;
	return logpipe_read_some(lp, LOGPIPE_READ_BUDGET);
}

void logpipe_drain(struct logpipe *lp)
{
	if (lp->rfd < 0)
		return;
	logpipe_read_some(lp, LOGPIPE_DRAIN_BUDGET);
	if (lp->len > 0 && !lp->cutting)
		logpipe_emit(lp, false);
	lp->len = 0;
	lp->cutting = false;
}
