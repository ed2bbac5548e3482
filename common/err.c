/*
 * err.c — names for enum err_code, for log lines.
 */
#include "common/err.h"

const char *err_str(int code)
{
	switch (code) {
	case ERR_OK:
		return "ok";
	case ERR_NOMEM:
		return "out of memory";
	case ERR_INVAL:
		return "invalid argument";
	case ERR_IO:
		return "i/o error";
	case ERR_NOTFOUND:
		return "not found";
	case ERR_EXISTS:
		return "already exists";
	case ERR_TIMEOUT:
		return "timed out";
	case ERR_UNAVAIL:
		return "unavailable";
	case ERR_CLOSED:
		return "closed";
	case ERR_PERM:
		return "permission denied";
	case ERR_DB:
		return "database error";
	case ERR_PROTO:
		return "protocol error";
	case ERR_CONFIG:
		return "configuration refused";
	case ERR_INTERNAL:
		return "internal error";
	default:
		return "unknown error";
	}
}
