/*
 * breach.c — `magctl breach check|range|import|reload`: check a password
 * the way auth does (hash here, send only the 5-hex prefix, compare the
 * suffixes here), show a range, build the offline store from Pwned
 * Passwords downloader files and have the service load it.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "breach.pb-c.h"
#include "common/breach_check.h"
#include "common/clock.h"
#include "common/err.h"
#include "lib/pwstore/pwstore.h"
#include "tools/magctl/magctl.h"

#define BREACH_PASSWORD_MAX 4096

static int magctl_breach_usage(void)
{
	fprintf(stderr, "usage: magctl breach check            (password on stdin, never argv)\n"
	                "       magctl breach range <5 hex>\n"
	                "       magctl breach import [-o store] [-R] FILE|DIR ...\n"
	                "       magctl breach reload\n");
	return 2;
}

/* ---- check ---------------------------------------------------------------- */

/* Reads one line from stdin into buf (no echo on a terminal). Returns the
 * length without the line end, or -1. */
static long magctl_breach_read_password(char *buf, size_t cap)
{
	struct termios old, quiet;
	bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
	size_t n;

	if (tty) {
		fprintf(stderr, "password: ");
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
	}
	if (fgets(buf, (int)cap, stdin) == NULL)
		buf[0] = '\0';
	if (tty) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
		fprintf(stderr, "\n");
	}
	n = strlen(buf);
	if (n > 0 && buf[n - 1] == '\n')
		n--;
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	return n == 0 ? -1 : (long)n;
}

static int magctl_breach_check(struct magctl *m)
{
	Magnetar__RangeRequest req = MAGNETAR__RANGE_REQUEST__INIT;
	const Magnetar__RangeReply *rep;
	struct breach_check bc;
	struct rpc_result r;
	char pw[BREACH_PASSWORD_MAX];
	uint64_t count = 0;
	long n;
	int rv = 1;

	n = magctl_breach_read_password(pw, sizeof(pw));
	if (n < 0) {
		OPENSSL_cleanse(pw, sizeof(pw));
		fprintf(stderr, "magctl breach check: no password on stdin\n");
		return 2;
	}
	rv = breach_check_init(&bc, pw, (size_t)n);
	OPENSSL_cleanse(pw, sizeof(pw));
	if (rv != 0) {
		fprintf(stderr, "magctl breach check: cannot hash\n");
		return 1;
	}
	req.prefix = bc.prefix;
	if (magctl_call(m, SVC_BREACH, "Range", &req.base, &r) != 0) {
		breach_check_fini(&bc);
		return 1;
	}
	rep = (const Magnetar__RangeReply *)r.output;
	if (breach_check_reply(&bc, rep, &count) != 0) {
		printf("breach: refused (malformed reply)\n");
		rv = 1;
	} else if (strcmp(rep->source, "unavailable") == 0 || strcmp(rep->source, "off") == 0) {
		/* nothing was checked: say so rather than "no" */
		printf("breached: unknown count: 0 source: %s\n", rep->source);
		rv = 0;
	} else {
		printf("breached: %s count: %llu source: %s\n", count > 0 ? "yes" : "no",
		       (unsigned long long)count, rep->source);
		rv = 0;
	}
	breach_check_fini(&bc);
	rpc_result_fini(&r);
	return rv;
}

/* ---- range ---------------------------------------------------------------- */

static int magctl_breach_range(struct magctl *m, const char *prefix)
{
	static const char hex[] = "0123456789ABCDEF";
	Magnetar__RangeRequest req = MAGNETAR__RANGE_REQUEST__INIT;
	const Magnetar__RangeReply *rep;
	struct rpc_result r;
	uint32_t p;

	if (hibp_prefix(prefix, strlen(prefix), &p) != 0) {
		fprintf(stderr, "magctl breach range: the prefix is exactly 5 hex digits\n");
		return 2;
	}
	req.prefix = (char *)prefix;
	if (magctl_call(m, SVC_BREACH, "Range", &req.base, &r) != 0)
		return 1;
	rep = (const Magnetar__RangeReply *)r.output;
	printf("source: %s pairs: %zu\n", rep->source, rep->n_counts);
	if (rep->suffixes.len == rep->n_counts * PAIRS_SUFFIX_LEN) {
		for (size_t i = 0; i < rep->n_counts; i++) {
			const uint8_t *s = rep->suffixes.data + i * PAIRS_SUFFIX_LEN;
			char line[36];
			line[0] = hex[s[0] & 0xf];
			for (int k = 1; k < PAIRS_SUFFIX_LEN; k++) {
				line[2 * k - 1] = hex[s[k] >> 4];
				line[2 * k] = hex[s[k] & 0xf];
			}
			line[35] = '\0';
			printf("%s:%u\n", line, rep->counts[i]);
		}
	}
	rpc_result_fini(&r);
	return 0;
}

/* ---- reload --------------------------------------------------------------- */

static int magctl_breach_reload(struct magctl *m)
{
	Magnetar__ReloadRequest req = MAGNETAR__RELOAD_REQUEST__INIT;
	const Magnetar__ReloadReply *rep;
	struct rpc_result r;

	if (magctl_call(m, SVC_BREACH, "Reload", &req.base, &r) != 0)
		return 1;
	rep = (const Magnetar__ReloadReply *)r.output;
	printf("breach: reloaded records=%llu mode=%s\n", (unsigned long long)rep->records,
	       rep->mode);
	rpc_result_fini(&r);
	return 0;
}

/* ---- import --------------------------------------------------------------- */

struct import_src {
	char *path;
	int32_t prefix; /* from a file named by its 5-hex prefix, else -1 */
};

struct import {
	struct import_src *src;
	size_t n, cap;
	uint64_t *counts;
	struct pwstore_writer *w;
	uint64_t lines, skipped;
};

/* "ABCDE" or "ABCDE.txt": a downloader's per-prefix file. */
static int32_t import_prefix_of(const char *path)
{
	const char *base = strrchr(path, '/');
	size_t n;
	uint32_t p;

	base = base != NULL ? base + 1 : path;
	n = strlen(base);
	if (n == 9 && strcmp(base + 5, ".txt") == 0)
		n = 5;
	return hibp_prefix(base, n, &p) == 0 ? (int32_t)p : -1;
}

static int import_add_src(struct import *im, const char *path, int32_t prefix)
{
	if (im->n == im->cap) {
		size_t cap = im->cap ? im->cap * 2 : 64;
		struct import_src *s = realloc(im->src, cap * sizeof(*s));
		if (s == NULL)
			return ERR_NOMEM;
		im->src = s;
		im->cap = cap;
	}
	if ((im->src[im->n].path = strdup(path)) == NULL)
		return ERR_NOMEM;
	im->src[im->n++].prefix = prefix;
	return 0;
}

static int import_cmp(const void *a, const void *b)
{
	return strcmp(((const struct import_src *)a)->path, ((const struct import_src *)b)->path);
}

/* A directory contributes its per-prefix files (in name order); a file is
 * per-prefix when named so, else whole SHA1:COUNT lines. */
static int import_collect(struct import *im, const char *arg)
{
	char path[PATH_MAX];
	struct dirent *d;
	struct stat st;
	size_t first = im->n;
	DIR *dir;
	int rv = 0;

	if (stat(arg, &st) != 0) {
		fprintf(stderr, "magctl breach import: %s: %s\n", arg, strerror(errno));
		return ERR_IO;
	}
	if (!S_ISDIR(st.st_mode))
		return import_add_src(im, arg, import_prefix_of(arg));
	if ((dir = opendir(arg)) == NULL)
		return ERR_IO;
	while (rv == 0 && (d = readdir(dir)) != NULL) {
		int32_t p = import_prefix_of(d->d_name);
		if (p < 0)
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", arg, d->d_name) >= (int)sizeof(path))
			continue;
		rv = import_add_src(im, path, p);
	}
	closedir(dir);
	if (im->n > first) /* qsort's base may not be NULL, even for no items */
		qsort(im->src + first, im->n - first, sizeof(*im->src), import_cmp);
	return rv;
}

/* One pass over every source: count (w == NULL) or add. */
static int import_pass(struct import *im, bool add)
{
	char *line = NULL;
	size_t cap = 0;
	int rv = 0;

	im->lines = im->skipped = 0;
	for (size_t i = 0; rv == 0 && i < im->n; i++) {
		FILE *f = fopen(im->src[i].path, "r");
		uint64_t lineno = 0;
		ssize_t len;

		if (f == NULL) {
			fprintf(stderr, "magctl breach import: %s: %s\n", im->src[i].path,
			        strerror(errno));
			rv = ERR_IO;
			break;
		}
		setvbuf(f, NULL, _IOFBF, 1 << 20);
		while ((len = getline(&line, &cap, f)) > 0) {
			uint8_t hash[20];
			uint32_t count;
			lineno++;
			if (hibp_import_line(line, (size_t)len, im->src[i].prefix, hash, &count) !=
			    0) {
				fprintf(stderr, "magctl breach import: %s:%llu: not a %s line\n",
				        im->src[i].path, (unsigned long long)lineno,
				        im->src[i].prefix < 0 ? "SHA1:COUNT" : "SUFFIX:COUNT");
				rv = ERR_INVAL;
				break;
			}
			if (count == 0) {
				im->skipped++; /* a padding row: never a hit */
				continue;
			}
			im->lines++;
			if (!add) {
				im->counts[hash[0] << 12 | hash[1] << 4 | hash[2] >> 4]++;
			} else if ((rv = pwstore_writer_add(im->w, hash, count)) != 0) {
				fprintf(stderr,
				        "magctl breach import: %s changed while importing\n",
				        im->src[i].path);
				break;
			}
		}
		fclose(f);
	}
	free(line);
	return rv;
}

static int magctl_breach_import(struct magctl *m, int argc, char **argv)
{
	struct import im = {0};
	char out[PATH_MAX], dir[PATH_MAX];
	const char *opath = NULL;
	bool reload = true;
	uint64_t t0 = clock_mono_us();
	double secs;
	int opt, rv = 1;

	optind = 1;
	while ((opt = getopt(argc, argv, "o:R")) != -1) {
		if (opt == 'o')
			opath = optarg;
		else if (opt == 'R')
			reload = false;
		else
			return magctl_breach_usage();
	}
	if (optind >= argc)
		return magctl_breach_usage();
	if (opath == NULL) {
		/* the service's own data dir; it loads nothing from anywhere else */
		if (conf_service_dir(&m->conf, SVC_BREACH, dir, sizeof(dir)) != 0 ||
		    snprintf(out, sizeof(out), "%s/%s", dir, PWSTORE_FILE) >= (int)sizeof(out)) {
			fprintf(stderr, "magctl breach import: data dir path too long\n");
			return 2;
		}
		if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
			fprintf(stderr, "magctl breach import: %s: %s\n", dir, strerror(errno));
			return 1;
		}
	} else {
		snprintf(out, sizeof(out), "%s", opath);
		reload = false; /* the service only ever loads its data dir's store */
	}
	if ((im.counts = calloc(PWSTORE_BUCKETS, sizeof(*im.counts))) == NULL)
		goto fail;
	for (int i = optind; i < argc; i++)
		if (import_collect(&im, argv[i]) != 0)
			goto fail;
	if (im.n == 0) {
		fprintf(stderr, "magctl breach import: no input files\n");
		goto fail;
	}
	if (import_pass(&im, false) != 0)
		goto fail;
	if ((rv = pwstore_writer_open(out, im.counts, &im.w)) != 0) {
		fprintf(stderr, "magctl breach import: cannot create %s: %s\n", out, err_str(rv));
		rv = 1;
		goto fail;
	}
	rv = 1;
	if (import_pass(&im, true) != 0)
		goto fail;
	rv = pwstore_writer_commit(im.w);
	im.w = NULL;
	if (rv != 0) {
		fprintf(stderr, "magctl breach import: cannot write %s: %s\n", out,
		        rv == ERR_EXISTS ? "a hash appears twice in the input" : err_str(rv));
		rv = 1;
		goto fail;
	}
	secs = (double)(clock_mono_us() - t0) / 1e6;
	printf(
	    "imported %llu hashes (%llu padding rows skipped) into %s in %.2f s (%.0f hashes/s)\n",
	    (unsigned long long)im.lines, (unsigned long long)im.skipped, out, secs,
	    secs > 0 ? (double)im.lines / secs : 0.0);
	rv = 0;
	if (reload && magctl_breach_reload(m) != 0)
		printf("the store is written; run `magctl breach reload` once breach is up\n");
fail:
	pwstore_writer_abort(im.w);
	for (size_t i = 0; i < im.n; i++)
		free(im.src[i].path);
	free(im.src);
	free(im.counts);
	return rv;
}

int magctl_breach(struct magctl *m, int argc, char **argv)
{
	if (argc < 2)
		return magctl_breach_usage();
	if (strcmp(argv[1], "check") == 0 && argc == 2)
		return magctl_breach_check(m);
	if (strcmp(argv[1], "range") == 0 && argc == 3)
		return magctl_breach_range(m, argv[2]);
	if (strcmp(argv[1], "import") == 0)
		return magctl_breach_import(m, argc - 1, argv + 1);
	if (strcmp(argv[1], "reload") == 0 && argc == 2)
		return magctl_breach_reload(m);
	return magctl_breach_usage();
}
