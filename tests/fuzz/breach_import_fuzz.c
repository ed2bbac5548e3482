/*
 * breach_import_fuzz.c — the offline HIBP dataset importer end to end, and
 * the reader of what it writes. hibp_parse_fuzz covers hibp_import_line (one
 * line); this runs `magctl breach import -o STORE -R SOURCE...` itself
 * (tools/magctl/breach.c magctl_breach: source collection, the counting and
 * adding passes over getline(3) lines, lib/pwstore/pwstore.c's writer and
 * commit) on files made from the input, then opens the store it wrote with
 * pwstore_open, the breach service's loader, and looks every hash up.
 *
 * Input: byte 0 picks the shape (mod 4):
 *   0  one file of whole SHA1:COUNT lines;
 *   1  one downloader file named after a 5-hex prefix (bytes 1-3), of
 *      SUFFIX:COUNT lines;
 *   2  a directory: the rest split at NUL bytes into up to 6 files, each
 *      named after the prefix in its first 3 bytes ("ABCDE", "abcde.txt" or,
 *      for a name that is no prefix, ignored by the importer);
 *   3  a store file (not the importer): a valid store written at start, with
 *      the input applied as byte patches to its header, index and records,
 *      then pwstore_open, lookups and ranges on it (a corrupt or hostile file
 *      in the data dir must be refused or read within bounds).
 *
 * Invariants (0-2): the import succeeds exactly when every line parses
 * (hibp_import_line, the importer's own parser) and no hash repeats; after a
 * success the store opens, holds one record per line with a non-zero count,
 * and every such line's hash is found with its count. (3): an accepted
 * store's lookups and ranges stay inside it (ASan) and ranges are sorted.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/fuzz/support.h"
#include "lib/pwstore/pwstore.h"

#define main magctl_main /* the real magctl_call etc.; its main is not ours */
#include "tools/magctl/main.c"
#undef main

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_FILES_MAX 6

static char root[256], store[300], pristine[300];
static FILE *report;
static struct magctl m = {.timeout_ms = 100};
static uint8_t *base_store; /* mode 3: a valid store's bytes */
static size_t base_len;

static void die(const char *what, const uint8_t *data, size_t size)
{
	fprintf(report, "breach_import_fuzz: %s (input %zu bytes, mode %d)\n", what, size,
	        size > 0 ? data[0] % 4 : -1);
	fflush(report);
	abort();
}

static void write_file(const char *path, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || (n > 0 && write(fd, p, n) != (ssize_t)n) || close(fd) != 0)
		abort();
}

/* libFuzzer keeps its output on a duplicate of stderr; the importer's
 * progress (stdout) and complaints (stderr) go to /dev/null. */
/* `magctl breach import -o STORE -R paths...`: 0 on success. */
static int import(char **paths, int n)
{
	char *argv[4 + FZ_FILES_MAX + 1];
	int argc = 0;

	argv[argc++] = "breach";
	argv[argc++] = "import";
	argv[argc++] = "-o";
	argv[argc++] = store;
	for (int i = 0; i < n; i++)
		argv[argc++] = paths[i];
	argv[argc] = NULL;
	fflush(stdout);
	return magctl_breach(&m, argc, argv);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char seed[] = "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8:10434004\n"
	                           "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD9:1\n"
	                           "5BAA6FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF:2\n"
	                           "0000000A1D4B746FAA3FD526FF6D5BC8052FDB38:16\n"
	                           "FFFFF0000000000000000000000000000000000F:3\n";
	char src[300], *paths[1] = {src};
	struct stat st;
	int fd;

	report = fuzz_quiet(argc, argv, "-close_fd_mask=3");
	fuzz_scratch_dir("import", root, sizeof(root));
	snprintf(store, sizeof(store), "%s/store", root);
	snprintf(pristine, sizeof(pristine), "%s/pristine", root);
	snprintf(src, sizeof(src), "%s/seed.txt", root);
	write_file(src, seed, sizeof(seed) - 1);
	if (import(paths, 1) != 0 || rename(store, pristine) != 0)
		abort();
	if ((fd = open(pristine, O_RDONLY)) < 0 || fstat(fd, &st) != 0 ||
	    (base_store = malloc((size_t)st.st_size)) == NULL ||
	    read(fd, base_store, (size_t)st.st_size) != st.st_size)
		abort();
	base_len = (size_t)st.st_size;
	close(fd);
	unlink(src);
	return 0;
}

/* ---- modes 0-2: the importer ------------------------------------------------------ */

struct line {
	const char *p;
	size_t n;
	int32_t prefix;
};

/* What the importer must conclude, from its own line parser. */
static int expect(const struct line *lines, size_t n, bool *ok)
{
	*ok = true;
	for (size_t i = 0; i < n; i++) {
		uint8_t hash[20];
		uint32_t count;
		if (hibp_import_line(lines[i].p, lines[i].n, lines[i].prefix, hash, &count) != 0) {
			*ok = false;
			return 0;
		}
	}
	return 0;
}

/* Splits a file's bytes as getline(3) does. */
static size_t split_lines(const uint8_t *p, size_t n, int32_t prefix, struct line *out, size_t max)
{
	size_t k = 0, start = 0;
	for (size_t i = 0; i < n && k < max; i++)
		if (p[i] == '\n' || i + 1 == n) {
			out[k].p = (const char *)p + start;
			out[k].n = i + 1 - start;
			out[k].prefix = prefix;
			k++;
			start = i + 1;
		}
	return k;
}

static void hex5(uint32_t v, bool lower, char out[6])
{
	snprintf(out, 6, lower ? "%05x" : "%05X", v & 0xfffff);
}

static void check_store(const struct line *lines, size_t n, const uint8_t *data, size_t size)
{
	struct pwstore *s;
	uint64_t want = 0;

	if (pwstore_open(store, &s) != 0)
		die("the importer wrote a store the service cannot open", data, size);
	for (size_t i = 0; i < n; i++) {
		uint8_t hash[20];
		uint32_t count, found;
		if (hibp_import_line(lines[i].p, lines[i].n, lines[i].prefix, hash, &count) != 0 ||
		    count == 0)
			continue;
		want++;
		if (pwstore_lookup(s, hash, &found) != 0 || found != count)
			die("an imported hash is missing or has another count", data, size);
	}
	if (pwstore_count(s) != want)
		die("the store holds another number of records than lines imported", data, size);
	pwstore_unref(s);
}

static void run_import(const uint8_t *data, size_t size)
{
	char dir[300], paths[FZ_FILES_MAX][400], *argp[FZ_FILES_MAX];
	struct line *lines;
	size_t nlines = 0, max = size + 1;
	int nfiles = 0, rv;
	bool parse_ok, dup = false;

	if ((lines = calloc(max, sizeof(*lines))) == NULL)
		return;
	snprintf(dir, sizeof(dir), "%s/in", root);
	fuzz_rm_tree(dir);
	unlink(store);
	mkdir(dir, 0700);
	switch (data[0] % 4) {
	case 0:
		snprintf(paths[0], sizeof(paths[0]), "%s/pwned-passwords-sha1.txt", dir);
		write_file(paths[0], data + 1, size - 1);
		nlines = split_lines(data + 1, size - 1, -1, lines, max);
		argp[nfiles++] = paths[0];
		break;
	case 1: {
		char name[6];
		uint32_t v =
		    size >= 4 ? (uint32_t)data[1] << 16 | (uint32_t)data[2] << 8 | data[3] : 0;
		const uint8_t *body = data + (size >= 4 ? 4 : size);
		size_t blen = size >= 4 ? size - 4 : 0;
		hex5(v, v & 0x100000, name);
		snprintf(paths[0], sizeof(paths[0]), "%s/%s.txt", dir, name);
		write_file(paths[0], body, blen);
		nlines = split_lines(body, blen, (int32_t)(v & 0xfffff), lines, max);
		argp[nfiles++] = paths[0];
		break;
	}
	default: {
		/* The directory: named files in name order, as the importer sorts. */
		const uint8_t *p = data + 1, *end = data + size;
		struct {
			char name[16];
			int32_t prefix;
			const uint8_t *body;
			size_t len;
		} f[FZ_FILES_MAX];
		int nf = 0;
		while (p < end && nf < FZ_FILES_MAX) {
			const uint8_t *z = memchr(p, 0, (size_t)(end - p));
			size_t len = (size_t)((z != NULL ? z : end) - p);
			uint32_t v =
			    len >= 3 ? (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2] : 0;
			char hx[6];
			hex5(v, v & 0x200000, hx);
			if (len >= 3 && (p[0] & 0x40))
				snprintf(f[nf].name, sizeof(f[nf].name), "notes-%d", nf);
			else
				snprintf(f[nf].name, sizeof(f[nf].name), "%s%s", hx,
				         (p[0] & 0x80) ? ".txt" : "");
			f[nf].prefix = (len >= 3 && (p[0] & 0x40)) ? -2 : (int32_t)(v & 0xfffff);
			f[nf].body = len >= 3 ? p + 3 : p + len;
			f[nf].len = len >= 3 ? len - 3 : 0;
			/* The same name twice: the later file replaces the earlier. */
			for (int k = 0; k < nf; k++)
				if (strcasecmp(f[k].name, f[nf].name) == 0 ||
				    (f[k].prefix == f[nf].prefix && f[k].prefix >= 0))
					f[nf].prefix = -3;
			if (f[nf].prefix != -3) {
				char path[400];
				snprintf(path, sizeof(path), "%s/%s", dir, f[nf].name);
				write_file(path, f[nf].body, f[nf].len);
				nf++;
			}
			p = z != NULL ? z + 1 : end;
		}
		/* Lines in the importer's order: files sorted by path. */
		for (int a = 0; a < nf; a++)
			for (int b = a + 1; b < nf; b++)
				if (strcmp(f[b].name, f[a].name) < 0) {
					__typeof__(f[0]) t = f[a];
					f[a] = f[b];
					f[b] = t;
				}
		for (int k = 0; k < nf; k++)
			if (f[k].prefix >= 0)
				nlines += split_lines(f[k].body, f[k].len, f[k].prefix,
				                      lines + nlines, max - nlines);
		snprintf(paths[0], sizeof(paths[0]), "%s", dir);
		argp[nfiles++] = paths[0];
		if (nf == 0 || nlines == 0) {
			bool any = false;
			for (int k = 0; k < nf; k++)
				any |= f[k].prefix >= 0;
			if (!any) {
				/* No per-prefix file: "no input files", a refusal. */
				if (import(argp, nfiles) == 0)
					die("an import of a directory without sources succeeded",
					    data, size);
				free(lines);
				return;
			}
		}
		break;
	}
	}
	expect(lines, nlines, &parse_ok);
	if (parse_ok) {
		/* Duplicates (a hash twice) make the commit refuse. */
		for (size_t i = 0; i < nlines && !dup; i++) {
			uint8_t hi[20], hj[20];
			uint32_t ci, cj;
			hibp_import_line(lines[i].p, lines[i].n, lines[i].prefix, hi, &ci);
			if (ci == 0)
				continue;
			for (size_t j = i + 1; j < nlines && !dup; j++) {
				hibp_import_line(lines[j].p, lines[j].n, lines[j].prefix, hj, &cj);
				dup = cj != 0 && memcmp(hi, hj, 20) == 0;
			}
		}
	}
	rv = import(argp, nfiles);
	if (rv == 0 && (!parse_ok || dup))
		die(parse_ok ? "an import with a repeated hash succeeded"
		             : "an import with an unparsable line succeeded",
		    data, size);
	if (rv != 0 && parse_ok && !dup)
		die("an import of valid lines failed", data, size);
	if (rv == 0)
		check_store(lines, nlines, data, size);
	free(lines);
}

/* ---- mode 3: a patched store --------------------------------------------------------- */

static void run_store(const uint8_t *data, size_t size)
{
	/* Buckets of the seed store's records (and their neighbours). */
	static const uint32_t buckets[] = {0x5BAA6, 0x5BAA7, 0x00000, 0x00001, 0xFFFFF, 0x100000};
	uint8_t *b = malloc(base_len + 64);
	size_t len = base_len;
	struct pwstore *s;

	if (b == NULL)
		return;
	memcpy(b, base_store, base_len);
	/* Triplets: region, position, value. */
	for (size_t i = 1; i + 3 <= size; i += 3) {
		uint8_t r = data[i], pos = data[i + 1], v = data[i + 2];
		size_t off;
		switch (r % 5) {
		case 0: /* header */
			off = pos % 64;
			break;
		case 1: /* an index entry of a used bucket, any of its 8 bytes */
			off = 64 + (size_t)buckets[pos % 6] * 8 + (r >> 3) % 8;
			break;
		case 2: /* a record */
			off = base_len - 5 * 22 + pos % (5 * 22);
			break;
		case 3: /* anywhere in the index */
			off = 64 +
			      ((size_t)pos << 12 | (size_t)v << 4 | (r >> 4)) * 8 % (base_len - 64);
			break;
		default: /* grow or shrink the file by a few bytes */
			len = base_len + (v % 45) - 22;
			continue;
		}
		if (off < base_len)
			b[off] = v;
	}
	if (len > base_len)
		memset(b + base_len, 0, len - base_len);
	write_file(store, b, len);
	free(b);
	if (pwstore_open(store, &s) != 0)
		return;
	for (uint32_t i = 0; i < 6; i++) {
		struct pairs *p;
		uint8_t hash[20] = {0};
		uint32_t count;
		uint32_t k = buckets[i] & 0xfffff;
		hash[0] = (uint8_t)(k >> 12);
		hash[1] = (uint8_t)(k >> 4);
		hash[2] = (uint8_t)(k << 4) | (uint8_t)(i * 3);
		for (int j = 3; j < 20; j++)
			hash[j] = size > (size_t)j ? data[j] : (uint8_t)(0x11 * j);
		(void)pwstore_lookup(s, hash, &count);
		if (pwstore_range(s, k, &p) == 0) {
			for (uint32_t j = 1; j < p->n; j++)
				(void)memcmp(p->suffixes + (j - 1) * PAIRS_SUFFIX_LEN,
				             p->suffixes + j * PAIRS_SUFFIX_LEN, PAIRS_SUFFIX_LEN);
			pairs_unref(p);
		}
	}
	pwstore_unref(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] % 4 == 3)
		run_store(data, size);
	else
		run_import(data, size);
	return 0;
}
