/*
 * jsonesc.h — a string as a JSON string literal in plain printable ASCII,
 * for output that reaches logs and terminals (magctl audit query, export,
 * tail). A newline cannot start a second record and an escape sequence or
 * a C1 control cannot reach the terminal: every byte outside 0x20..0x7e is
 * written as a \u escape; invalid UTF-8 becomes \ufffd.
 */
#ifndef MAGNETAR_JSONESC_H
#define MAGNETAR_JSONESC_H

#include <stddef.h>
#include <stdio.h>

/* Writes "..." (with the quotes) for the NUL-terminated s (NULL as ""). */
void jsonesc_fputs(FILE *f, const char *s);

/* The same into buf; returns the length it needs (without the NUL), like
 * snprintf, and writes at most cap bytes including the NUL. */
size_t jsonesc_str(char *buf, size_t cap, const char *s);

#endif
