/*
 * log.h — one line per event on stderr, as `key=value` text or JSON
 * (MAGNETAR_LOG_FORMAT). Never pass a password, token, key or TOTP secret.
 * log_warn appends strerror(errno); fatal/fatalx log and exit(1) and are for
 * start-up and broken invariants only, never for input from another process.
 */
#ifndef MAGNETAR_LOG_H
#define MAGNETAR_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

enum log_format { LOG_TEXT, LOG_JSON };

/* Sets the program name put on every line and the format. Thread-safe after. */
void log_init(const char *progname, enum log_format format, bool debug);

void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* The longest line log_format writes (a longer message is cut). */
#define LOG_LINE_CAP (2048 + 256)
/* One whole line, newline included, as the functions above write it, into
 * line[0..cap) (cap >= 64); returns its length. For common/logbuf.c. */
size_t log_format(char *line, size_t cap, const char *level, const char *fmt, va_list ap,
                  const char *suffix);

#endif
