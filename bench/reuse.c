/* SPDX-License-Identifier: MIT */
/*
 * reuse.c - migration into frames that a munmap freed.
 *
 * A process that unmaps memory with pages on a device frees their frames
 * (hetmm drops the pages: lifecycle.c); the next migration gets those
 * frames.  Timed: migrating a fresh buffer of the same size into them,
 * and faulting it back, against the same into the frames of a device
 * that never held a page (the baseline: the ratio should be 1).  Median
 * of reps repetitions after one warm-up.  This once cost 20 times the
 * baseline: dropped frames came back one at a time, in reverse and still
 * holding their pages.
 */
#include "sections.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>

/* Touch one byte a page: every page faults back. */
static void read_pages(const char *p, size_t size)
{
	volatile char sink = 0;

	for (size_t off = 0; off < size; off += PAGE)
		sink ^= p[off];
	(void)sink;
}

/* One repetition: with dirty, the device's frames first hold a buffer
 * that is then unmapped; then a fresh buffer migrates in (timed) and
 * faults back (timed). */
static int reuse_rep(struct hetmm_ctx *ctx, size_t size, bool dirty,
		     double *in_ns, double *back_ns)
{
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	int rc = hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_PRIVATE,
				  size / PAGE, &emu);
	if (rc)
		return rc;
	rc = hetmm_emu_pagemap(emu, &pg);
	char *b = NULL;
	if (!rc && dirty) {
		char *a = map_anon(size, -1);
		rc = a ? 0 : -ENOMEM;
		if (a) {
			populate(a, size, 0x5a);
			rc = hetmm_migrate_to_device(pg, a, size, NULL);
			munmap(a, size);
		}
	}
	if (!rc) {
		b = map_anon(size, -1);
		rc = b ? 0 : -ENOMEM;
	}
	if (!rc) {
		populate(b, size, 0xa5);
		uint64_t t0 = now_ns();
		rc = hetmm_migrate_to_device(pg, b, size, NULL);
		uint64_t t1 = now_ns();
		read_pages(b, size);
		*in_ns = (double)(t1 - t0);
		*back_ns = (double)(now_ns() - t1);
	}
	if (b)
		munmap(b, size);
	int r2 = hetmm_emu_destroy(emu);
	return rc ? rc : r2;
}

int bench_reuse(struct hetmm_ctx *ctx, size_t size, int reps,
		struct reuse_result *res)
{
	double in[2][64], back[2][64];

	res->size = size;
	for (int r = 0; r <= reps; r++) {
		/* Alternate, so that drift between rounds cancels out. */
		for (int dirty = 0; dirty < 2; dirty++) {
			double i = NAN, b = NAN;
			int rc = reuse_rep(ctx, size, dirty, &i, &b);
			if (rc)
				return rc;
			if (r) {
				in[dirty][r - 1] = i;
				back[dirty][r - 1] = b;
			}
		}
	}
	res->fresh_in_ns = median(in[0], reps);
	res->reused_in_ns = median(in[1], reps);
	res->fresh_back_ns = median(back[0], reps);
	res->reused_back_ns = median(back[1], reps);
	return 0;
}

void reuse_print_text(const struct reuse_result *r)
{
	char sb[32];

	printf("frames freed by munmap (%s): migrate in %.3f GB/s, fault back "
	       "%.3f GB/s; into a device that never held a page %.3f and "
	       "%.3f GB/s; ratios %.3f and %.3f\n",
	       fmt_size(r->size, sb, sizeof(sb)),
	       gbps(r->size, r->reused_in_ns), gbps(r->size, r->reused_back_ns),
	       gbps(r->size, r->fresh_in_ns), gbps(r->size, r->fresh_back_ns),
	       r->fresh_in_ns / r->reused_in_ns,
	       r->fresh_back_ns / r->reused_back_ns);
}

void reuse_print_json(FILE *f, const struct reuse_result *r)
{
	fprintf(f, ",\n  \"frames_freed_by_munmap\": {\"size\": %zu, "
		"\"migrate_in_gbps\": ", r->size);
	json_num(f, gbps(r->size, r->reused_in_ns), 4);
	json_field(f, "fault_back_gbps", gbps(r->size, r->reused_back_ns), 4);
	json_field(f, "fresh_device_migrate_in_gbps",
		   gbps(r->size, r->fresh_in_ns), 4);
	json_field(f, "fresh_device_fault_back_gbps",
		   gbps(r->size, r->fresh_back_ns), 4);
	json_field(f, "migrate_in_vs_fresh", r->fresh_in_ns / r->reused_in_ns,
		   4);
	json_field(f, "fault_back_vs_fresh",
		   r->fresh_back_ns / r->reused_back_ns, 4);
	fputs("}", f);
}
