/*
 * err.h — the one error vocabulary of common/ and the services.
 * Functions return 0 or one of these negative codes; err_str() names them
 * for log lines (never for HTTP bodies, which carry stable API codes).
 */
#ifndef MAGNETAR_ERR_H
#define MAGNETAR_ERR_H

enum err_code {
	ERR_OK = 0,
	ERR_NOMEM = -1,    /* allocation failed */
	ERR_INVAL = -2,    /* bad argument or malformed input */
	ERR_IO = -3,       /* file or socket I/O failed */
	ERR_NOTFOUND = -4, /* no such record, method or file */
	ERR_EXISTS = -5,   /* already there */
	ERR_TIMEOUT = -6,  /* a deadline passed */
	ERR_UNAVAIL = -7,  /* peer not connected / not answering */
	ERR_CLOSED = -8,   /* object is shutting down */
	ERR_PERM = -9,     /* not allowed */
	ERR_DB = -10,      /* SQLite failed */
	ERR_PROTO = -11,   /* undecodable message */
	ERR_CONFIG = -12,  /* configuration refused */
	ERR_INTERNAL = -13 /* broken invariant */
};

const char *err_str(int code);

#endif
