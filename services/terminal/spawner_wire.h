/*
 * spawner_wire.h — the packets between the terminal service and its spawner
 * process (spawner.c, spawner_client.c), private to the three spawner_*
 * files.
 */
#ifndef MAGNETAR_TERMINAL_SPAWNER_WIRE_H
#define MAGNETAR_TERMINAL_SPAWNER_WIRE_H

#include <limits.h>
#include <stdint.h>

#include "services/terminal/terminal.h"

#define SPAWNER_REPLY_TIMEOUT_MS 10000

enum spawner_op { SP_SPAWN = 1, SP_KILL, SP_SPAWNED, SP_FAILED, SP_EXITED };

/* One packet either way. Strings are NUL-terminated by the receiver. */
struct spawner_msg {
	uint32_t op;
	uint32_t seq;
	int32_t pid;
	int32_t err;    /* SP_FAILED: errno */
	int32_t status; /* SP_EXITED: wait status */
	uint32_t uid;   /* SP_SPAWN: the shell's uid, one of the range */
	uint16_t cols, rows;
	char shell[TERMINAL_SHELL_MAX];
	char cwd[PATH_MAX];
};

/* Sends one packet, with `pass_fd` (SCM_RIGHTS) unless it is -1. 0 or ERR_IO. */
int spawner_send(int fd, const struct spawner_msg *m, int pass_fd);
/* Receives one packet; *got_fd is a passed descriptor or -1. 0, ERR_CLOSED
 * (peer gone) or ERR_IO/ERR_PROTO. */
int spawner_recv(int fd, struct spawner_msg *m, int *got_fd);
/* The spawner process's life, on socket `sock`, after spawner_start forked. */
__attribute__((noreturn)) void spawner_main(int sock, const struct spawner_conf *sc);

#endif
