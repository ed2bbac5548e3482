/*
 * frame.c — the terminal stream's frames (docs/api.md "Terminal"): one kind byte,
 * then data or JSON. The receiver validates: a client frame is data of
 * bounded size or a resize with strict JSON and bounded sizes; anything
 * else is refused. Pure functions (fuzzed in tests/fuzz).
 */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>

#include "common/err.h"
#include "services/terminal/terminal.h"

#define FRAME_RESIZE_MAX 128 /* {"cols":1000,"rows":1000} with room for spaces */

int frame_parse_client(const uint8_t *buf, size_t len, struct frame *out)
{
	json_int_t cols, rows;
	json_error_t err;
	json_t *root;
	int rv;

	if (len == 0)
		return ERR_INVAL;
	switch (buf[0]) {
	case FRAME_DATA:
		if (len - 1 > TERMINAL_FRAME_MAX)
			return ERR_INVAL;
		out->kind = FRAME_DATA;
		out->data = buf + 1;
		out->len = len - 1;
		return 0;
	case FRAME_RESIZE:
		if (len - 1 > FRAME_RESIZE_MAX)
			return ERR_INVAL;
		root = json_loadb((const char *)buf + 1, len - 1, JSON_REJECT_DUPLICATES, &err);
		if (root == NULL)
			return ERR_INVAL;
		rv = json_unpack_ex(root, &err, JSON_STRICT, "{s:I, s:I}", "cols", &cols, "rows",
		                    &rows);
		json_decref(root);
		if (rv != 0 || cols < 1 || cols > TERMINAL_SIZE_MAX || rows < 1 ||
		    rows > TERMINAL_SIZE_MAX)
			return ERR_INVAL;
		out->kind = FRAME_RESIZE;
		out->cols = (unsigned)cols;
		out->rows = (unsigned)rows;
		out->data = NULL;
		out->len = 0;
		return 0;
	default:
		return ERR_INVAL;
	}
}

int frame_exit_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 255;
}

size_t frame_exit(char *buf, size_t cap, int code)
{
	int n = snprintf(buf, cap, "%c{\"code\":%d}", FRAME_EXIT, code);
	return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}
