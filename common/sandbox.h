/*
 * sandbox.h — what a service may do once it serves: a seccomp allow-list
 * per service (libseccomp) and Landlock rules for files and, from ABI 4, TCP
 * ports, with the ABI detected at run time; and the self-test that proves a
 * forbidden open, connect and exec are refused.
 */
#ifndef MAGNETAR_SANDBOX_H
#define MAGNETAR_SANDBOX_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"

#define SANDBOX_MAX_RW 4
#define SANDBOX_MAX_SOCK 4
#define SANDBOX_MAX_RO 16
#define SANDBOX_MAX_PORTS 16
#define SANDBOX_MAX_SYSCALLS 8

/* One service's rules, built by sandbox_rules and its program's sandbox
 * hook (paths are copies). */
struct sandbox_rules {
	enum svc_id id;
	enum conf_sandbox mode;
	bool verbose;                      /* development/test: name a killed syscall */
	char rw[SANDBOX_MAX_RW][PATH_MAX]; /* read, write, create, remove beneath */
	size_t nrw;
	char sock[SANDBOX_MAX_SOCK][PATH_MAX]; /* create and remove sockets beneath */
	size_t nsock;
	char ro[SANDBOX_MAX_RO][PATH_MAX]; /* read beneath */
	size_t nro;
	uint16_t bind[SANDBOX_MAX_PORTS]; /* TCP ports it may bind (ABI >= 4) */
	size_t nbind;
	uint16_t connect[SANDBOX_MAX_PORTS]; /* TCP ports it may connect to (ABI >= 4) */
	size_t nconnect;
	const char *syscalls[SANDBOX_MAX_SYSCALLS]; /* beyond every service's (static names) */
	size_t nsyscalls;
	bool inet;    /* seccomp: AF_INET/AF_INET6 sockets */
	bool netlink; /* seccomp: AF_NETLINK (the resolver) */
};

/* The rules of service `id` whose data dir is `data_dir`, from `c`. 0 or
 * ERR_INVAL (too many paths or ports). */
int sandbox_rules(struct sandbox_rules *r, const struct conf *c, enum svc_id id,
                  const char *data_dir);

/* For a program's own rules (struct svc_program's sandbox hook): a path it
 * may read beneath, a dir it may create sockets in, a TCP port it may bind
 * or connect to (ABI >= 4). 0 or ERR_INVAL (the set is full). */
int sandbox_allow_read(struct sandbox_rules *r, const char *path);
int sandbox_allow_sockets_in(struct sandbox_rules *r, const char *dir);
int sandbox_allow_bind(struct sandbox_rules *r, long port);
int sandbox_allow_connect(struct sandbox_rules *r, long port);
/* A system call this program alone makes while serving, beyond the list
 * every service has (`name` is a string constant). 0 or ERR_INVAL. */
int sandbox_allow_syscall(struct sandbox_rules *r, const char *name);
/* The port of "scheme://host[:port][/...]", or `def`. */
long sandbox_url_port(const char *url, long def);

/* The Landlock ABI of this kernel (0: none). */
int sandbox_landlock_abi(void);

/*
 * Restricts the calling thread and every thread and child it creates from
 * now on (Landlock cannot reach threads that already exist). Sets
 * PR_SET_NO_NEW_PRIVS. Nothing in `log` or `off` mode. A kernel without
 * Landlock, or without TCP rules, is a warning. 0 or ERR_PERM with err set.
 */
int sandbox_landlock(const struct sandbox_rules *r, char *err, size_t errlen);

/*
 * PR_SET_NO_NEW_PRIVS, then loads the service's allow-list on every thread
 * (TSYNC). `enforce`: anything else kills the process (in development and
 * test after a line naming the syscall); `log`: the kernel logs it and it
 * runs; `off`: nothing. 0 or ERR_PERM with err set.
 */
int sandbox_seccomp(const struct sandbox_rules *r, char *err, size_t errlen);

/*
 * Forks one child per probe; each calls apply(arg) (the service's whole
 * lock-down), then tries: to open each of `paths` read-only, a TCP connect
 * to a listener of ours on 127.0.0.1, an execve of /bin/sh. Prints one line
 * per probe. Returns 0 when every probe was refused, 1 otherwise.
 */
int sandbox_selftest(int (*apply)(void *arg), void *arg, const char *const *paths, size_t npaths);

#endif
