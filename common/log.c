/*
 * log.c — stderr logging. Each line is built in a stack buffer and written
 * with one write(2), so lines from concurrent threads never interleave and
 * a supervisor reading the pipe sees whole lines.
 */
#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048 /* the message; a whole line fits LOG_LINE_CAP */

static const char *log_progname = "magnetar";
static enum log_format log_fmt = LOG_TEXT;
static bool log_debug_on;
/* log_format's last second, per thread (log lines come from many). */
static _Thread_local time_t log_when_sec = -1;
static _Thread_local char log_when[32];

void log_init(const char *progname, enum log_format format, bool debug)
{
	log_progname = progname;
	log_fmt = format;
	log_debug_on = debug;
}

/* Appends src to dst[*len..cap) escaped for a JSON or text quoted string. */
static void log_append_escaped(char *dst, size_t *len, size_t cap, const char *src)
{
	for (const unsigned char *p = (const unsigned char *)src; *p != '\0'; p++) {
		char tmp[8];
		size_t n;
		if (*p == '"' || *p == '\\') {
			tmp[0] = '\\';
			tmp[1] = (char)*p;
			n = 2;
		} else if (*p == '\n') {
			memcpy(tmp, "\\n", 2);
			n = 2;
		} else if (*p < 0x20 || *p == 0x7f) {
			/* Control bytes from outside input must not forge log lines. */
			n = (size_t)snprintf(tmp, sizeof(tmp), "\\u%04x", *p);
		} else {
			tmp[0] = (char)*p;
			n = 1;
		}
		if (*len + n >= cap)
			return;
		memcpy(dst + *len, tmp, n);
		*len += n;
	}
}

size_t log_format(char *line, size_t cap, const char *level, const char *fmt, va_list ap,
                  const char *suffix)
{
	char msg[LOG_LINE_MAX];
	struct timespec ts;
	struct tm tm;
	size_t len;
	int n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (suffix != NULL) {
		size_t used = strlen(msg);
		snprintf(msg + used, sizeof(msg) - used, ": %s", suffix);
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	/* The date and time to the second, formatted once per second per
	 * thread: gmtime_r and strftime were ~1.5 % of the gateway's CPU with a
	 * line per request (docs/performance.md). */
	if (ts.tv_sec != log_when_sec) {
		gmtime_r(&ts.tv_sec, &tm);
		strftime(log_when, sizeof(log_when), "%Y-%m-%dT%H:%M:%S", &tm);
		log_when_sec = ts.tv_sec;
	}

	if (log_fmt == LOG_JSON)
		n = snprintf(line, cap,
		             "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"svc\":\"%s\",\"msg\":\"",
		             log_when, ts.tv_nsec / 1000000, level, log_progname);
	else
		n = snprintf(line, cap, "ts=%s.%03ldZ level=%s svc=%s msg=\"", log_when,
		             ts.tv_nsec / 1000000, level, log_progname);
	len = n > 0 ? (size_t)n : 0;
	if (len > cap - 4)
		len = cap - 4;
	log_append_escaped(line, &len, cap - 3, msg);
	memcpy(line + len, log_fmt == LOG_JSON ? "\"}\n" : "\"\n", log_fmt == LOG_JSON ? 3 : 2);
	return len + (log_fmt == LOG_JSON ? 3 : 2);
}

static void log_emit(const char *level, const char *fmt, va_list ap, const char *suffix)
{
	char line[LOG_LINE_CAP];
	size_t len = log_format(line, sizeof(line), level, fmt, ap, suffix);

	/* A failed write to stderr has nowhere better to be reported. */
	if (write(STDERR_FILENO, line, len) < 0)
		return;
}

#define LOG_WRAPPER(name, level, with_errno)                                                       \
	void name(const char *fmt, ...)                                                            \
	{                                                                                          \
		int saved = errno;                                                                 \
		va_list ap;                                                                        \
		va_start(ap, fmt);                                                                 \
		log_emit(level, fmt, ap, with_errno ? strerror(saved) : NULL);                     \
		va_end(ap);                                                                        \
		errno = saved;                                                                     \
	}

LOG_WRAPPER(log_info, "info", 0)
LOG_WRAPPER(log_warn, "warn", 1)
LOG_WRAPPER(log_warnx, "warn", 0)

void log_debug(const char *fmt, ...)
{
	va_list ap;
	if (!log_debug_on)
		return;
	va_start(ap, fmt);
	log_emit("debug", fmt, ap, NULL);
	va_end(ap);
}

void fatal(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	log_emit("fatal", fmt, ap, strerror(saved));
	va_end(ap);
	exit(1);
}

void fatalx(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_emit("fatal", fmt, ap, NULL);
	va_end(ap);
	exit(1);
}
