/*
 * pwstore.c — the offline Pwned Passwords store: a file of fixed-size
 * records sorted by hash behind a 2^20-entry index (one per 5-hex prefix),
 * memory-mapped read-only. A lookup is one index read and a binary search
 * of ~100 records (per 10^8 hashes) in one bucket; a range is a copy of one
 * bucket. The writer is used by `magctl breach import` and the tests.
 *
 * File (little-endian): 64-byte header {magic "MGBRST01", u32 version,
 * u32 record size, u64 count}, then (2^20 + 1) u64 record offsets, then
 * `count` records of 22 bytes: SHA-1 bytes 2..19 with the prefix nibble
 * cleared (18) + u32 count. Writing is tmp + fsync + rename, so a reader
 * sees the old file or the whole new one.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "lib/pwstore/pwstore.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "pwstore assumes a little-endian host");

#define PWSTORE_MAGIC "MGBRST01"
#define PWSTORE_VERSION 1u
#define PWSTORE_HEADER 64
#define PWSTORE_INDEX_BYTES ((size_t)(PWSTORE_BUCKETS + 1) * 8)
#define PWSTORE_DATA (PWSTORE_HEADER + PWSTORE_INDEX_BYTES)

struct pwstore {
	_Atomic int refs;
	uint8_t *map;
	size_t size;
	uint64_t count;
	const uint64_t *index; /* PWSTORE_BUCKETS + 1 record numbers */
	const uint8_t *recs;
};

struct pwstore_writer {
	int fd;
	uint8_t *map;
	size_t size;
	uint64_t count;
	uint64_t *index;  /* in the map */
	uint64_t *cursor; /* next free record per bucket */
	char path[PATH_MAX];
	char tmp[PATH_MAX];
};

static uint32_t pwstore_bucket(const uint8_t hash[20])
{
	return (uint32_t)hash[0] << 12 | (uint32_t)hash[1] << 4 | hash[2] >> 4;
}

static void pwstore_key(const uint8_t hash[20], uint8_t key[PAIRS_SUFFIX_LEN])
{
	memcpy(key, hash + 2, PAIRS_SUFFIX_LEN);
	key[0] &= 0x0f;
}

/* ---- reading ------------------------------------------------------------ */

int pwstore_open(const char *path, struct pwstore **out)
{
	struct pwstore *s = NULL;
	struct stat st;
	uint32_t version, recsize;
	int fd, rv = ERR_IO;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return errno == ENOENT ? ERR_NOTFOUND : ERR_IO;
	if (fstat(fd, &st) != 0)
		goto fail;
	rv = ERR_INVAL;
	if (st.st_size < (off_t)PWSTORE_DATA)
		goto fail;
	rv = ERR_NOMEM;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		goto fail;
	s->size = (size_t)st.st_size;
	s->map = mmap(NULL, s->size, PROT_READ, MAP_SHARED, fd, 0);
	if (s->map == MAP_FAILED) {
		s->map = NULL;
		rv = ERR_IO;
		goto fail;
	}
	rv = ERR_INVAL;
	memcpy(&version, s->map + 8, 4);
	memcpy(&recsize, s->map + 12, 4);
	memcpy(&s->count, s->map + 16, 8);
	if (memcmp(s->map, PWSTORE_MAGIC, 8) != 0 || version != PWSTORE_VERSION ||
	    recsize != PWSTORE_REC || s->count > (s->size - PWSTORE_DATA) / PWSTORE_REC ||
	    s->size != PWSTORE_DATA + s->count * PWSTORE_REC)
		goto fail;
	s->index = (const uint64_t *)(s->map + PWSTORE_HEADER);
	s->recs = s->map + PWSTORE_DATA;
	/* A corrupt index would send lookups outside the map: check it once. */
	if (s->index[0] != 0 || s->index[PWSTORE_BUCKETS] != s->count)
		goto fail;
	for (uint32_t b = 0; b < PWSTORE_BUCKETS; b++)
		if (s->index[b] > s->index[b + 1])
			goto fail;
	/* lookups jump around: read-ahead would only evict useful pages */
	madvise(s->map + PWSTORE_DATA, s->size - PWSTORE_DATA, MADV_RANDOM);
	close(fd);
	atomic_init(&s->refs, 1);
	*out = s;
	return 0;
fail:
	if (s != NULL && s->map != NULL)
		munmap(s->map, s->size);
	free(s);
	close(fd);
	return rv;
}

struct pwstore *pwstore_ref(struct pwstore *s)
{
	atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
	return s;
}

void pwstore_unref(struct pwstore *s)
{
	if (s == NULL || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
		return;
	munmap(s->map, s->size);
	free(s);
}

uint64_t pwstore_count(const struct pwstore *s)
{
	return s->count;
}

/* The first 8 key bytes as a number below 2^60 (byte 0 holds one nibble). */
static uint64_t pwstore_key60(const uint8_t *k)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | k[i];
	return v;
}

int pwstore_lookup(const struct pwstore *s, const uint8_t hash[20], uint32_t *count)
{
	uint8_t key[PAIRS_SUFFIX_LEN];
	uint32_t b = pwstore_bucket(hash);
	uint64_t lo = s->index[b], hi = s->index[b + 1], i;
	const uint8_t *r;
	int c;

	if (lo == hi)
		return ERR_NOTFOUND;
	pwstore_key(hash, key);
	/* SHA-1 suffixes are uniform inside a bucket: interpolate the position
	 * (off by ~sqrt(n)/2 records, i.e. within a cache line or two), then
	 * walk. A binary search would cost ~7 dependent cache misses per
	 * lookup in a store larger than the CPU caches; this costs one or two. */
	i = lo + (uint64_t)(((unsigned __int128)pwstore_key60(key) * (hi - lo)) >> 60);
	r = s->recs + i * PWSTORE_REC;
	c = memcmp(key, r, PAIRS_SUFFIX_LEN);
	while (c > 0 && ++i < hi) {
		r += PWSTORE_REC;
		c = memcmp(key, r, PAIRS_SUFFIX_LEN);
	}
	while (c < 0 && i-- > lo) {
		r -= PWSTORE_REC;
		c = memcmp(key, r, PAIRS_SUFFIX_LEN);
		if (c > 0)
			return ERR_NOTFOUND; /* between two records */
	}
	if (c != 0)
		return ERR_NOTFOUND;
	memcpy(count, r + PAIRS_SUFFIX_LEN, 4);
	return 0;
}

int pwstore_range(const struct pwstore *s, uint32_t prefix, struct pairs **out)
{
	uint64_t lo, n;
	struct pairs *p;

	if (prefix >= PWSTORE_BUCKETS)
		return ERR_INVAL;
	lo = s->index[prefix];
	n = s->index[prefix + 1] - lo;
	if (n > PAIRS_MAX)
		return ERR_INVAL;
	if ((p = pairs_new((uint32_t)n)) == NULL)
		return ERR_NOMEM;
	for (uint64_t i = 0; i < n; i++) {
		const uint8_t *r = s->recs + (lo + i) * PWSTORE_REC;
		memcpy(p->suffixes + i * PAIRS_SUFFIX_LEN, r, PAIRS_SUFFIX_LEN);
		memcpy(&p->counts[i], r + PAIRS_SUFFIX_LEN, 4);
	}
	*out = p;
	return 0;
}

/* ---- writing ------------------------------------------------------------ */

int pwstore_writer_open(const char *path, const uint64_t *counts, struct pwstore_writer **out)
{
	struct pwstore_writer *w;
	uint64_t total = 0;
	int rv = ERR_NOMEM;

	if ((w = calloc(1, sizeof(*w))) == NULL)
		return ERR_NOMEM;
	w->fd = -1;
	if ((w->cursor = malloc(PWSTORE_BUCKETS * sizeof(*w->cursor))) == NULL)
		goto fail;
	rv = ERR_INVAL;
	if (snprintf(w->path, sizeof(w->path), "%s", path) >= (int)sizeof(w->path) ||
	    snprintf(w->tmp, sizeof(w->tmp), "%s.tmp.%ld", path, (long)getpid()) >=
	        (int)sizeof(w->tmp))
		goto fail;
	for (uint32_t b = 0; b < PWSTORE_BUCKETS; b++) {
		w->cursor[b] = total;
		total += counts[b];
	}
	w->count = total;
	w->size = PWSTORE_DATA + total * PWSTORE_REC;
	rv = ERR_IO;
	/* the data is public (published hashes): readable by the service's uid
	 * whoever runs the import; the data dir's own mode guards the path */
	if ((w->fd = open(w->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0)
		goto fail;
	if (ftruncate(w->fd, (off_t)w->size) != 0)
		goto fail;
	w->map = mmap(NULL, w->size, PROT_READ | PROT_WRITE, MAP_SHARED, w->fd, 0);
	if (w->map == MAP_FAILED) {
		w->map = NULL;
		goto fail;
	}
	w->index = (uint64_t *)(w->map + PWSTORE_HEADER);
	for (uint32_t b = 0; b < PWSTORE_BUCKETS; b++)
		w->index[b] = w->cursor[b];
	w->index[PWSTORE_BUCKETS] = total;
	*out = w;
	return 0;
fail:
	pwstore_writer_abort(w);
	return rv;
}

int pwstore_writer_add(struct pwstore_writer *w, const uint8_t hash[20], uint32_t count)
{
	uint32_t b = pwstore_bucket(hash);
	uint8_t *r;

	if (w->cursor[b] >= w->index[b + 1])
		return ERR_INVAL; /* more hashes than were counted: the input changed */
	r = w->map + PWSTORE_DATA + w->cursor[b]++ * PWSTORE_REC;
	pwstore_key(hash, r);
	memcpy(r + PAIRS_SUFFIX_LEN, &count, 4);
	return 0;
}

static int pwstore_reccmp(const void *a, const void *b)
{
	return memcmp(a, b, PAIRS_SUFFIX_LEN);
}

int pwstore_writer_commit(struct pwstore_writer *w)
{
	uint32_t version = PWSTORE_VERSION, recsize = PWSTORE_REC;
	char dir[PATH_MAX], *slash;
	int dfd, rv = ERR_INVAL;

	/* Buckets hold ~100 records per 10^8 hashes: sorting each one is
	 * O(n log 100), and the scatter already put them in prefix order. */
	for (uint32_t b = 0; b < PWSTORE_BUCKETS; b++) {
		uint8_t *base = w->map + PWSTORE_DATA + w->index[b] * PWSTORE_REC;
		uint64_t n = w->index[b + 1] - w->index[b];
		if (w->cursor[b] != w->index[b + 1])
			goto fail; /* fewer hashes than counted */
		if (n < 2)
			continue;
		qsort(base, n, PWSTORE_REC, pwstore_reccmp);
		for (uint64_t i = 1; i < n; i++)
			if (memcmp(base + (i - 1) * PWSTORE_REC, base + i * PWSTORE_REC,
			           PAIRS_SUFFIX_LEN) == 0) {
				rv = ERR_EXISTS; /* a hash twice: which count is right? */
				goto fail;
			}
	}
	memcpy(w->map, PWSTORE_MAGIC, 8);
	memcpy(w->map + 8, &version, 4);
	memcpy(w->map + 12, &recsize, 4);
	memcpy(w->map + 16, &w->count, 8);
	rv = ERR_IO;
	if (msync(w->map, w->size, MS_SYNC) != 0 || fsync(w->fd) != 0)
		goto fail;
	if (rename(w->tmp, w->path) != 0)
		goto fail;
	w->tmp[0] = '\0'; /* nothing to unlink any more */
	/* the rename itself must survive a crash too */
	snprintf(dir, sizeof(dir), "%s", w->path);
	slash = strrchr(dir, '/');
	if (slash == dir)
		slash[1] = '\0';
	else if (slash != NULL)
		*slash = '\0';
	else
		snprintf(dir, sizeof(dir), ".");
	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		fsync(dfd);
		close(dfd);
	}
	rv = 0;
fail:
	pwstore_writer_abort(w);
	return rv;
}

void pwstore_writer_abort(struct pwstore_writer *w)
{
	if (w == NULL)
		return;
	if (w->map != NULL)
		munmap(w->map, w->size);
	if (w->fd >= 0)
		close(w->fd);
	if (w->tmp[0] != '\0' && w->fd >= 0)
		unlink(w->tmp);
	free(w->cursor);
	free(w);
}
