/* SPDX-License-Identifier: MIT */
/*
 * thp.c - transparent huge pages to a device and back.
 *
 * A PMD-aligned buffer backed by THPs moves to the device as huge device
 * pages and faults back as THPs; the baseline is the same buffer in base
 * pages (MADV_NOHUGEPAGE), timed in the same rounds.  Both on the
 * emulated device that moves pages (UFFDIO_MOVE) and on one that copies
 * (HETMM_EMU_COPY_ONLY).  Then, for information, the two ways a copied
 * huge page can become a THP again, per PMD, with a userfaultfd of our
 * own: UFFDIO_COPY of the PMD in base pages then MADV_COLLAPSE, against
 * filling a THP-backed staging PMD and moving it (UFFDIO_MOVE), which is
 * what hetmm does (src/back.c).  Median of reps after one warm-up.
 */
#include "sections.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
struct uffdio_move {
	__u64 dst, src, len, mode;
	__s64 move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, 0x05, struct uffdio_move)
#endif

/* len bytes aligned to the PMD, with advice; NULL if it can't. */
static char *map_aligned(size_t len, int advice)
{
	size_t pmd = hetmm_pmd_size();
	char *p = mmap(NULL, len + pmd, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	char *a = (char *)(((uintptr_t)p + pmd - 1) & ~(uintptr_t)(pmd - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	if (a + len < p + len + pmd)
		munmap(a + len, (size_t)(p + len + pmd - (a + len)));
	(void)madvise(a, len, advice);
	return a;
}

static void touch_pages(const char *p, size_t size)
{
	volatile char sink = 0;

	for (size_t off = 0; off < size; off += PAGE)
		sink ^= p[off];
	(void)sink;
}

/* One repetition of one kind: migrate in, fault back. */
static int thp_rep(struct hetmm_ctx *ctx, size_t size, uint32_t emu_flags,
		   int huge, double *in_ns, double *back_ns)
{
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	struct hetmm_emu_desc d = { HETMM_MEMORY_DEVICE_PRIVATE,
				    size / PAGE + hetmm_pmd_size() / PAGE,
				    emu_flags };
	int rc = hetmm_emu_create_desc(ctx, &d, &emu);
	if (rc)
		return rc;
	rc = hetmm_emu_pagemap(emu, &pg);
	char *b = rc ? NULL : map_aligned(size, huge ? MADV_HUGEPAGE
						     : MADV_NOHUGEPAGE);
	if (!rc && !b)
		rc = -ENOMEM;
	if (!rc) {
		populate(b, size, 0x3c);
		uint64_t t0 = now_ns();
		rc = hetmm_migrate_to_device(pg, b, size, NULL);
		uint64_t t1 = now_ns();
		touch_pages(b, size);
		*in_ns = (double)(t1 - t0);
		*back_ns = (double)(now_ns() - t1);
	}
	if (b)
		munmap(b, size);
	int r2 = hetmm_emu_destroy(emu);
	return rc ? rc : r2;
}

/* Per PMD: UFFDIO_COPY + MADV_COLLAPSE, and a THP-backed fill + move. */
static int refill_rep(int uffd, char *dst, char *staging, const char *src,
		      double *collapse_ns, double *fill_ns)
{
	size_t pmd = hetmm_pmd_size();
	madvise(dst, pmd, MADV_DONTNEED);
	uint64_t t0 = now_ns();
	struct uffdio_copy c = { (uintptr_t)dst, (uintptr_t)src, pmd, 0, 0 };
	if (ioctl(uffd, UFFDIO_COPY, &c) || madvise(dst, pmd, MADV_COLLAPSE))
		return -errno;
	uint64_t t1 = now_ns();
	madvise(dst, pmd, MADV_DONTNEED);
	uint64_t t2 = now_ns();
	memcpy(staging, src, pmd);
	struct uffdio_move m = { (uintptr_t)dst, (uintptr_t)staging, pmd, 0,
				 0 };
	if (ioctl(uffd, UFFDIO_MOVE, &m))
		return -errno;
	uint64_t t3 = now_ns();
	*collapse_ns = (double)(t1 - t0);
	*fill_ns = (double)(t3 - t2);
	return 0;
}

static int bench_refill(int reps, struct thp_result *r)
{
	size_t pmd = hetmm_pmd_size();
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0)
		return -errno;
	struct uffdio_api api = { .api = UFFD_API,
				  .features = UFFD_FEATURE_MOVE };
	char *dst = map_aligned(pmd, MADV_HUGEPAGE);
	char *staging = map_aligned(pmd, MADV_HUGEPAGE);
	char *src = map_aligned(pmd, MADV_HUGEPAGE);
	int rc = ioctl(uffd, UFFDIO_API, &api) ? -errno : 0;
	if (!rc && (!dst || !staging || !src))
		rc = -ENOMEM;
	struct uffdio_register reg = {
		.range = { (uintptr_t)dst, pmd },
		.mode = UFFDIO_REGISTER_MODE_MISSING };
	if (!rc && ioctl(uffd, UFFDIO_REGISTER, &reg))
		rc = -errno;
	double col[64], fill[64];
	if (!rc)
		populate(src, pmd, 0x5e);
	for (int i = 0; !rc && i <= reps; i++) {
		double c = NAN, f = NAN;
		rc = refill_rep(uffd, dst, staging, src, &c, &f);
		if (i) {
			col[i - 1] = c;
			fill[i - 1] = f;
		}
	}
	if (!rc) {
		r->collapse_ns = median(col, reps);
		r->fill_ns = median(fill, reps);
	}
	close(uffd);
	if (dst)
		munmap(dst, pmd);
	if (staging)
		munmap(staging, pmd);
	if (src)
		munmap(src, pmd);
	return rc;
}

int bench_thp(struct hetmm_ctx *ctx, size_t size, int reps,
	      struct thp_result *res)
{
	static const uint32_t dev_flags[2] = { 0, HETMM_EMU_COPY_ONLY };
	double in[2][2][64], back[2][2][64];

	memset(res, 0, sizeof(*res));
	res->size = size;
	res->collapse_ns = res->fill_ns = NAN;
	for (int r = 0; r <= reps; r++)
		for (int dev = 0; dev < 2; dev++)
			for (int huge = 0; huge < 2; huge++) {
				double i = NAN, b = NAN;
				int rc = thp_rep(ctx, size, dev_flags[dev],
						 huge, &i, &b);
				if (rc)
					return res->err = rc;
				if (r) {
					in[dev][huge][r - 1] = i;
					back[dev][huge][r - 1] = b;
				}
			}
	for (int dev = 0; dev < 2; dev++)
		for (int huge = 0; huge < 2; huge++) {
			res->in_ns[dev][huge] = median(in[dev][huge], reps);
			res->back_ns[dev][huge] = median(back[dev][huge], reps);
		}
	/* Without UFFDIO_MOVE (before 6.8) there is no fill to compare. */
	res->refill_err = bench_refill(reps, res);
	return 0;
}

static const char *const dev_name[2] = { "moving device", "copying device" };

void thp_print_text(const struct thp_result *r)
{
	char sb[32];

	if (r->err) {
		printf("THP to device and back: %s\n", strerror(-r->err));
		return;
	}
	for (int dev = 0; dev < 2; dev++)
		printf("THP to device and back (%s, %s): migrate in %.3f GB/s "
		       "vs %.3f in base pages (%.2fx), fault back %.3f vs "
		       "%.3f GB/s (%.2fx)\n", dev_name[dev],
		       fmt_size(r->size, sb, sizeof(sb)),
		       gbps(r->size, r->in_ns[dev][1]),
		       gbps(r->size, r->in_ns[dev][0]),
		       r->in_ns[dev][0] / r->in_ns[dev][1],
		       gbps(r->size, r->back_ns[dev][1]),
		       gbps(r->size, r->back_ns[dev][0]),
		       r->back_ns[dev][0] / r->back_ns[dev][1]);
	if (r->refill_err)
		printf("a copied PMD back as a THP: %s\n",
		       strerror(-r->refill_err));
	else
		printf("a copied PMD back as a THP: THP-backed fill + "
		       "UFFDIO_MOVE %.0f us, UFFDIO_COPY + MADV_COLLAPSE "
		       "%.0f us (%.2fx)\n", r->fill_ns / 1e3,
		       r->collapse_ns / 1e3, r->collapse_ns / r->fill_ns);
}

void thp_print_json(FILE *f, const struct thp_result *r)
{
	static const char *const key[2] = { "move", "copy" };

	fprintf(f, ",\n  \"thp\": {\"size\": %zu, \"err\": %d", r->size,
		r->err);
	for (int dev = 0; dev < 2; dev++) {
		fprintf(f, ", \"%s_thp_in_gbps\": ", key[dev]);
		json_num(f, gbps(r->size, r->in_ns[dev][1]), 4);
		fprintf(f, ", \"%s_base_in_gbps\": ", key[dev]);
		json_num(f, gbps(r->size, r->in_ns[dev][0]), 4);
		fprintf(f, ", \"%s_thp_back_gbps\": ", key[dev]);
		json_num(f, gbps(r->size, r->back_ns[dev][1]), 4);
		fprintf(f, ", \"%s_base_back_gbps\": ", key[dev]);
		json_num(f, gbps(r->size, r->back_ns[dev][0]), 4);
		fprintf(f, ", \"%s_in_thp_vs_base\": ", key[dev]);
		json_num(f, r->in_ns[dev][0] / r->in_ns[dev][1], 4);
		fprintf(f, ", \"%s_back_thp_vs_base\": ", key[dev]);
		json_num(f, r->back_ns[dev][0] / r->back_ns[dev][1], 4);
	}
	fputs(", \"pmd_fill_move_us\": ", f);
	json_num(f, r->fill_ns / 1e3, 2);
	fputs(", \"pmd_copy_collapse_us\": ", f);
	json_num(f, r->collapse_ns / 1e3, 2);
	fputs("}", f);
}
