/* SPDX-License-Identifier: MIT */
/*
 * filescan.c - `hetmm file-scan FILE --bound SIZE`: a file, larger than
 * the memory it is given, attached with hetmm_file_attach() and read
 * through as an ordinary array of 64-bit words, every page once, in order
 * or (--random) in a shuffled order.  hetmm reads the file in as it is
 * touched and sends the oldest pages back to keep within the bound; a
 * scan writes nothing, so they go back without a write.
 *
 * It prints what it read (bytes, the sum and largest of the words, which
 * any other reader of the file can check), the time the scan took, and
 * what it cost: faults, pages read, pages sent back under the bound,
 * pages written.  The file must exist; it is opened read-write (the file
 * device's way) and left as it was.  Whole pages are attached; a tail
 * shorter than a page is read with pread().
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "hetmm.h"

int hetmm_file_scan_main(int argc, char **argv);

/* The largest fault-around window a context takes (hetmm_ctx_params). */
#define FAULT_AROUND_MOST 8192

struct scan_opts {
	const char *path;
	uint64_t bound;      /* bytes, 0: no bound */
	uint32_t window;     /* fault-around pages, 0: chosen from the bound */
	int random;
};

/* The scan's findings. */
struct scan_sum {
	uint64_t sum, max;
};

static void usage_scan(FILE *f)
{
	fprintf(f,
		"usage: hetmm file-scan FILE --bound SIZE [--random] "
		"[--window PAGES]\n"
		"  attach FILE with hetmm_file_attach, at most SIZE of it in "
		"memory\n"
		"  (K/M/G suffixes; 0: no bound), read every page once and "
		"print\n"
		"  bytes, time, faults, pages read, pages sent back, pages "
		"written,\n"
		"  and the sum and largest of its 64-bit words (native "
		"order)\n"
		"  --random  the pages in a shuffled order, not in sequence\n"
		"  --window  the most pages a fault brings back (default: a "
		"quarter\n"
		"            of the bound, at most the library's default)\n");
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A size with an optional K/M/G suffix: 0 or -EINVAL. */
static int parse_bytes(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || s[0] == '-')
		return -EINVAL;
	unsigned shift = 0;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	default: break;
	}
	if (*end == 'i' && shift)
		end++;
	if ((*end == 'B' || *end == 'b') && shift)
		end++;
	if (*end || v > (UINT64_MAX >> shift))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

static int parse_args(int argc, char **argv, struct scan_opts *o)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		uint64_t v;
		if (!strcmp(a, "--random")) {
			o->random = 1;
		} else if (!strcmp(a, "--bound") && i + 1 < argc) {
			if (parse_bytes(argv[++i], &o->bound))
				return -EINVAL;
		} else if (!strcmp(a, "--window") && i + 1 < argc) {
			if (parse_bytes(argv[++i], &v) || !v || v > UINT32_MAX)
				return -EINVAL;
			o->window = (uint32_t)v;
		} else if (a[0] != '-' && !o->path) {
			o->path = a;
		} else {
			return -EINVAL;
		}
	}
	return o->path ? 0 : -EINVAL;
}

/* Page order: 0..n-1, shuffled if asked (xorshift64, fixed seed). */
static uint32_t *page_order(uint64_t n, int random)
{
	uint32_t *ord = malloc(n * sizeof(*ord));
	if (!ord)
		return NULL;
	for (uint64_t i = 0; i < n; i++)
		ord[i] = (uint32_t)i;
	uint64_t s = 0x9e3779b97f4a7c15ull;
	for (uint64_t i = n; random && i > 1; i--) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		uint64_t j = s % i;
		uint32_t t = ord[i - 1];
		ord[i - 1] = ord[j];
		ord[j] = t;
	}
	return ord;
}

static void add_words(struct scan_sum *r, const uint64_t *w, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		r->sum += w[i];
		r->max = w[i] > r->max ? w[i] : r->max;
	}
}

/* The last size % page bytes, zero-padded to a word. */
static int scan_tail(const char *path, uint64_t size, size_t page,
		     struct scan_sum *r)
{
	size_t tail = size % page;
	if (!tail)
		return 0;
	uint64_t *buf = calloc(1, page);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int rc = buf && fd >= 0 ? 0 : -errno;
	if (!rc && pread(fd, buf, tail, (off_t)(size - tail)) !=
		   (ssize_t)tail)
		rc = -EIO;
	if (!rc)
		add_words(r, buf, (tail + 7) / 8);
	if (fd >= 0)
		close(fd);
	free(buf);
	return rc;
}

static void print_u64(const char *key, uint64_t v)
{
	printf("%-14s %" PRIu64 "\n", key, v);
}

/* The attached pages, in ord's order: the time, in ns. */
static uint64_t scan_pages(const uint64_t *base, const uint32_t *ord,
			   uint64_t n, size_t page, struct scan_sum *r)
{
	size_t words = page / 8;
	uint64_t t0 = now_ns();
	for (uint64_t i = 0; i < n; i++)
		add_words(r, base + (size_t)ord[i] * words, words);
	return now_ns() - t0;
}

static int fail(const char *what, int rc)
{
	fprintf(stderr, "hetmm file-scan: %s: %s\n", what, hetmm_strerror(rc));
	return 1;
}

/* A context whose fault-around window fits the bound: a window larger
 * than the bound sends pages back before the scan reaches them. */
static int scan_ctx(const struct scan_opts *o, uint64_t bound_pages,
		    struct hetmm_ctx **ctxp)
{
	struct hetmm_ctx_params cp = { .fault_around_max = o->window };
	if (!cp.fault_around_max && bound_pages)
		cp.fault_around_max = bound_pages / 4 ? bound_pages / 4 : 1;
	if (cp.fault_around_max > FAULT_AROUND_MOST)
		cp.fault_around_max = FAULT_AROUND_MOST;
	return hetmm_ctx_create(ctxp, &cp);
}

static int scan_attached(const struct scan_opts *o, uint64_t size,
			 struct scan_sum *r)
{
	size_t page = hetmm_page_size();
	uint64_t n = size / page, bound_pages = (o->bound + page - 1) / page;
	if (n > UINT32_MAX)
		return fail("the file", -EFBIG);
	uint32_t *ord = page_order(n, o->random);
	if (!ord)
		return fail("the page order", -ENOMEM);
	struct hetmm_ctx *ctx;
	int rc = scan_ctx(o, bound_pages, &ctx);
	if (rc) {
		free(ord);
		return fail("hetmm_ctx_create", rc);
	}
	struct hetmm_file_desc d = { .path = o->path, .nr_pages = n,
				     .max_resident = bound_pages };
	struct hetmm_file *f;
	uint64_t *base;
	int status = 0;
	rc = hetmm_file_attach(ctx, &d, &f, (void **)&base);
	if (rc) {
		status = fail("hetmm_file_attach", rc);
		goto out;
	}
	uint64_t ns = scan_pages(base, ord, n, page, r);
	struct hetmm_file_info fi;
	struct hetmm_stats st;
	if ((rc = hetmm_file_get_info(f, &fi)) ||
	    (rc = hetmm_ctx_get_stats(ctx, &st))) {
		status = fail("counters", rc);
		hetmm_file_destroy(f);
		goto out;
	}
	printf("%-14s %s\n", "file", o->path);
	print_u64("bytes", size);
	printf("%-14s %" PRIu64 " pages%s\n", "bound", bound_pages,
	       bound_pages ? "" : " (none)");
	printf("%-14s %s\n", "order", o->random ? "random" : "sequential");
	printf("%-14s %s%s\n", "io", fi.io == HETMM_FILE_IO_URING ?
	       "io_uring" : "pread", fi.direct ? ", O_DIRECT" : "");
	printf("%-14s %.3f s\n", "time", (double)ns / 1e9);
	printf("%-14s %.3f GB/s\n", "throughput",
	       ns ? (double)(n * page) / (double)ns : 0.0);
	print_u64("faults", st.faults);
	print_u64("pages read", fi.pages_read);
	print_u64("evictions", fi.evicted);
	print_u64("pages written", fi.pages_written);
	if ((rc = hetmm_file_destroy(f)))
		status = fail("hetmm_file_destroy", rc);
out:
	if ((rc = hetmm_ctx_destroy(ctx)) && !status)
		status = fail("hetmm_ctx_destroy", rc);
	free(ord);
	return status;
}

int hetmm_file_scan_main(int argc, char **argv)
{
	struct scan_opts o = { 0 };
	if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage_scan(stdout);
		return 0;
	}
	if (parse_args(argc, argv, &o)) {
		usage_scan(stderr);
		return 2;
	}
	struct stat st;
	if (stat(o.path, &st)) {
		fprintf(stderr, "hetmm file-scan: %s: %s\n", o.path,
			strerror(errno));
		return 1;
	}
	if (!S_ISREG(st.st_mode) || !st.st_size) {
		fprintf(stderr, "hetmm file-scan: %s: not a regular file "
			"with data\n", o.path);
		return 1;
	}
	/* hetmm_file_attach takes an absolute path only. */
	char full[PATH_MAX];
	if (!realpath(o.path, full)) {
		fprintf(stderr, "hetmm file-scan: %s: %s\n", o.path,
			strerror(errno));
		return 1;
	}
	o.path = full;
	struct scan_sum r = { 0, 0 };
	uint64_t size = (uint64_t)st.st_size;
	int status = 0;
	if (size >= hetmm_page_size())
		status = scan_attached(&o, size, &r);
	else
		printf("%-14s %s\nbytes          %" PRIu64 "\n", "file", o.path,
		       size);
	int rc = status ? 0 : scan_tail(o.path, size, hetmm_page_size(), &r);
	if (rc)
		return fail("reading the tail", rc);
	if (!status)
		printf("%-14s 0x%016" PRIx64 "\n%-14s 0x%016" PRIx64 "\n",
		       "sum", r.sum, "max", r.max);
	return status;
}
