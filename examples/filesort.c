/* SPDX-License-Identifier: MIT */
/*
 * filesort.c - a file sixteen times larger than the memory it may use,
 * attached with hetmm_file_attach(): the program scans and sorts it as
 * an ordinary array, and hetmm reads the file in as it is touched and
 * sends the oldest pages back (written ones written, clean ones dropped)
 * to keep within the bound.
 *
 *   1. make a file of 16 MiB of pseudo-random 64-bit keys (the run
 *      generation of an external sort: any size works the same way);
 *   2. attach it with a resident bound of 1 MiB;
 *   3. scan it: the sum and the largest key;
 *   4. sort each 256 KiB run in place with qsort;
 *   5. hetmm_file_sync(), then check the file with plain read(): every
 *      run sorted, the sum and the largest key unchanged.
 *
 * Exits 0 if every check holds.  The file is made in $TMPDIR or /tmp
 * and removed.
 */
#include <hetmm.h>

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FILE_BYTES ((size_t)16 << 20)
#define BOUND_BYTES ((size_t)1 << 20)
#define RUN_BYTES ((size_t)256 << 10)
#define NKEYS (FILE_BYTES / sizeof(uint64_t))
#define RUN_KEYS (RUN_BYTES / sizeof(uint64_t))

static uint64_t next_key(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static int make_file(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return -1;
	uint64_t buf[RUN_KEYS / 8], s = 88172645463325252ULL;
	for (size_t off = 0; off < FILE_BYTES; off += sizeof(buf)) {
		for (size_t i = 0; i < RUN_KEYS / 8; i++)
			buf[i] = next_key(&s);
		if (pwrite(fd, buf, sizeof(buf), (off_t)off) != sizeof(buf)) {
			close(fd);
			return -1;
		}
	}
	close(fd);
	return 0;
}

static int cmp_key(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The sum and largest key of n keys. */
static void scan(const uint64_t *k, size_t n, uint64_t *sum, uint64_t *max)
{
	*sum = 0;
	*max = 0;
	for (size_t i = 0; i < n; i++) {
		*sum += k[i];
		if (k[i] > *max)
			*max = k[i];
	}
}

/* The file read back with read(): runs sorted, sum and max as given. */
static int check_file(const char *path, uint64_t sum, uint64_t max)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	static uint64_t run[RUN_KEYS];
	uint64_t s = 0, m = 0;
	int bad = 0;
	for (size_t r = 0; r < NKEYS / RUN_KEYS && !bad; r++) {
		if (read(fd, run, RUN_BYTES) != (ssize_t)RUN_BYTES) {
			bad = 1;
			break;
		}
		for (size_t i = 0; i < RUN_KEYS; i++) {
			bad |= i && run[i - 1] > run[i];
			s += run[i];
			m = run[i] > m ? run[i] : m;
		}
	}
	close(fd);
	return bad || s != sum || m != max ? -1 : 0;
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	char path[512];
	snprintf(path, sizeof(path), "%s/hetmm-filesort-%d",
		 tmp && tmp[0] == '/' ? tmp : "/tmp", (int)getpid());
	if (make_file(path)) {
		perror("filesort: making the file");
		return 1;
	}

	/* Fault-around windows a quarter of the bound: larger ones would
	 * send pages back before the scan reaches them. */
	size_t page = hetmm_page_size();
	struct hetmm_ctx_params cp = {
		.fault_around_max = (uint32_t)(BOUND_BYTES / page / 4),
	};
	struct hetmm_ctx *ctx;
	int rc = hetmm_ctx_create(&ctx, &cp);
	if (rc) {
		fprintf(stderr, "filesort: hetmm_ctx_create: %s\n",
			hetmm_strerror(rc));
		unlink(path);
		return 1;
	}
	struct hetmm_file_desc d = {
		.path = path,
		.nr_pages = FILE_BYTES / page,
		.max_resident = BOUND_BYTES / page,
	};
	struct hetmm_file *f;
	uint64_t *keys;
	rc = hetmm_file_attach(ctx, &d, &f, (void **)&keys);
	if (rc) {
		fprintf(stderr, "filesort: hetmm_file_attach: %s\n",
			hetmm_strerror(rc));
		hetmm_ctx_destroy(ctx);
		unlink(path);
		return 1;
	}

	uint64_t sum, max;
	scan(keys, NKEYS, &sum, &max);
	for (size_t r = 0; r < NKEYS / RUN_KEYS; r++)
		qsort(keys + r * RUN_KEYS, RUN_KEYS, sizeof(*keys), cmp_key);
	rc = hetmm_file_sync(f);

	struct hetmm_file_info fi;
	hetmm_file_get_info(f, &fi);
	printf("filesort: %zu MiB file, bound %zu KiB: sum %016" PRIx64
	       ", max %016" PRIx64 "\n", FILE_BYTES >> 20, BOUND_BYTES >> 10,
	       sum, max);
	printf("filesort: %" PRIu64 " pages read, %" PRIu64 " written, %"
	       PRIu64 " sent back under the bound (%s)\n", fi.pages_read,
	       fi.pages_written, fi.evicted,
	       fi.io == HETMM_FILE_IO_URING ? "io_uring" : "pread/pwrite");
	int bad = rc != 0;
	if (rc)
		fprintf(stderr, "filesort: hetmm_file_sync: %s\n",
			hetmm_strerror(rc));
	if (!bad && check_file(path, sum, max)) {
		fprintf(stderr, "filesort: the file is not as sorted\n");
		bad = 1;
	}
	/* The bound held: no more than the bound plus a window in memory
	 * at the end, and pages did go back to the file. */
	if (fi.evicted == 0) {
		fprintf(stderr, "filesort: nothing went back to the file\n");
		bad = 1;
	}
	if (hetmm_file_destroy(f) || hetmm_ctx_destroy(ctx))
		bad = 1;
	unlink(path);
	if (!bad)
		printf("filesort: every run sorted, checked with read()\n");
	return bad;
}
