/* SPDX-License-Identifier: MIT */
/*
 * ablate.c - what hetmm's optimisations buy, each off vs on in the same
 * run, at one size:
 *
 *   fault-around   a read of a device-resident buffer, one byte a page,
 *                  in a context made with hetmm_ctx_params.fault_around_max
 *                  = 1 (one page per fault) vs the default context: in
 *                  order (the streams) and in random order (density);
 *   UFFDIO_MOVE    the same driver (device memory in an anonymous mapping,
 *                  memcpy copy engine) added without HETMM_PAGEMAP_REMAP,
 *                  so that pages are copied (write-protect, copy, zap;
 *                  back by UFFDIO_COPY), vs with it, so that pages are
 *                  moved: migrate to device, migrate back, fault-back.
 *
 * Handler placement (same CPU vs another CPU) is in the latency section.
 */
#include "sections.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static void *drv_address(struct hetmm_pagemap *pg, uint64_t index)
{
	struct hetmm_pagemap_info info;

	if (hetmm_pagemap_get_info(pg, &info))
		return NULL;
	return (char *)info.drvdata + index * PAGE;
}

static int drv_copy_to(struct hetmm_pagemap *pg, uint64_t index,
		       const void *src, size_t nr)
{
	memcpy(drv_address(pg, index), src, nr * PAGE);
	return 0;
}

static int drv_copy_from(struct hetmm_pagemap *pg, void *dst, uint64_t index,
			 size_t nr)
{
	memcpy(dst, drv_address(pg, index), nr * PAGE);
	return 0;
}

static const struct hetmm_pagemap_ops drv_ops = {
	.copy_to_device = drv_copy_to,
	.copy_from_device = drv_copy_from,
	.page_address = drv_address,
};

/* fault_read_once, reps times after a warm-up: the median time and the
 * mean faults. */
static int fault_read(struct hetmm_ctx *ctx, struct hetmm_pagemap *pg,
		      size_t size, int reps, const uint32_t *perm, double *ns,
		      double *faults)
{
	double t[MAX_REPS], nf = 0, f, pages;
	int n = 0;

	for (int r = -1; r < reps; r++) {
		int rc = fault_read_once(ctx, pg, size, perm, &t[n], &f,
					 &pages);

		if (rc)
			return rc;
		if (r >= 0) {
			n++;
			nf += f;
		}
	}
	*ns = median(t, n);
	if (faults)
		*faults = nf / n;
	return 0;
}

static int fault_around(size_t size, int reps, const uint32_t *perm,
			struct ablate_result *r)
{
	for (int on = 0; on < 2; on++) {
		struct hetmm_ctx_params p = { .fault_around_max = on ? 0 : 1 };
		struct hetmm_ctx *ctx = NULL;
		struct hetmm_emu *emu = NULL;
		struct hetmm_pagemap *pg;
		int rc = hetmm_ctx_create(&ctx, &p);

		if (rc)
			return rc;
		rc = hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_PRIVATE,
				      size / PAGE, &emu);
		if (!rc)
			rc = hetmm_emu_pagemap(emu, &pg);
		if (!rc)
			rc = fault_read(ctx, pg, size, reps, NULL,
				       on ? &r->fa_on_ns : &r->fa_off_ns,
				       on ? &r->fa_on_faults : &r->fa_off_faults);
		if (!rc)
			rc = fault_read(ctx, pg, size, reps, perm,
					on ? &r->far_on_ns : &r->far_off_ns,
					on ? &r->far_on_faults
					   : &r->far_off_faults);
		if (emu) {
			int r2 = hetmm_emu_destroy(emu);

			if (!rc)
				rc = r2;
		}
		{
			int r2 = hetmm_ctx_destroy(ctx);

			if (!rc)
				rc = r2;
		}
		if (rc)
			return rc;
	}
	return 0;
}

static int migrate_path(struct hetmm_ctx *ctx, size_t size, int reps,
			int remap, struct ablate_result *r)
{
	char *mem = map_anon(size, -1);
	struct hetmm_pagemap *pg = NULL;
	double td[MAX_REPS], ts[MAX_REPS];
	int rc, n = 0;

	if (!mem)
		return -ENOMEM;
	/* A copying device has its memory; a remapping one must start
	 * unpopulated (its frames are the moved pages themselves). */
	if (!remap)
		populate(mem, size, 0);
	struct hetmm_pagemap_desc desc = {
		.type = HETMM_MEMORY_DEVICE_PRIVATE, .nr_pages = size / PAGE,
		.ops = &drv_ops, .drvdata = mem,
		.flags = remap ? HETMM_PAGEMAP_REMAP : 0,
	};
	rc = hetmm_pagemap_add(ctx, &desc, &pg);
	for (int i = -1; i < reps && !rc; i++) {
		rc = migrate_round_trip(ctx, pg, size, &td[n], &ts[n]);
		if (!rc && i >= 0)
			n++;
	}
	if (!rc) {
		*(remap ? &r->move_to_dev_ns : &r->copy_to_dev_ns) =
			median(td, n);
		*(remap ? &r->move_to_sys_ns : &r->copy_to_sys_ns) =
			median(ts, n);
		rc = fault_read(ctx, pg, size, reps, NULL,
				remap ? &r->move_fault_ns : &r->copy_fault_ns,
				NULL);
	}
	if (pg) {
		int r2 = hetmm_pagemap_remove(pg);

		if (!rc)
			rc = r2;
	}
	munmap(mem, size);
	return rc;
}

int bench_ablate(struct hetmm_ctx *ctx, size_t size, int reps,
		 struct ablate_result *r)
{
	int rc;

	memset(r, 0, sizeof(*r));
	r->size = size;
	r->fa_off_ns = r->fa_on_ns = r->fa_off_faults = r->fa_on_faults = NAN;
	r->far_off_ns = r->far_on_ns = NAN;
	r->far_off_faults = r->far_on_faults = NAN;
	r->copy_to_dev_ns = r->move_to_dev_ns = NAN;
	r->copy_to_sys_ns = r->move_to_sys_ns = NAN;
	r->copy_fault_ns = r->move_fault_ns = NAN;
	{
		size_t n = size / PAGE;
		uint32_t *perm = malloc(n * sizeof(*perm));
		uint64_t seed = 0x6a09e667f3bcc909ull;

		if (!perm)
			return r->err = -ENOMEM;
		for (size_t i = 0; i < n; i++)
			perm[i] = (uint32_t)i;
		shuffle(perm, n, &seed);
		rc = fault_around(size, reps, perm, r);
		free(perm);
	}
	if (rc)
		warn_("ablate: fault-around: %s", strerror(-rc));
	for (int remap = 0; remap < 2; remap++) {
		int r2 = migrate_path(ctx, size, reps, remap, r);

		if (r2) {
			warn_("ablate: %s path: %s", remap ? "move" : "copy",
			      strerror(-r2));
			if (!rc)
				rc = r2;
		}
	}
	r->err = rc;
	return rc;
}

void ablate_print_text(const struct ablate_result *r)
{
	char sb[32];
	size_t s = r->size;

	printf("\nwhat each optimisation buys (%s, off vs on, same run; "
	       "GB/s, gain = on / off):\n", fmt_size(s, sb, sizeof(sb)));
	printf("  %-38s %10s %10s %8s\n", "", "off", "on", "gain");
	printf("  %-38s %10.3f %10.3f %8.2f  (%.0f vs %.0f faults)\n",
	       "fault-around: sequential fault-back", gbps(s, r->fa_off_ns),
	       gbps(s, r->fa_on_ns), r->fa_off_ns / r->fa_on_ns,
	       r->fa_off_faults, r->fa_on_faults);
	printf("  %-38s %10.3f %10.3f %8.2f  (%.0f vs %.0f faults)\n",
	       "fault-around: random-order fault-back", gbps(s, r->far_off_ns),
	       gbps(s, r->far_on_ns), r->far_off_ns / r->far_on_ns,
	       r->far_off_faults, r->far_on_faults);
	printf("  %-38s %10.3f %10.3f %8.2f\n",
	       "UFFDIO_MOVE (REMAP): migrate to device",
	       gbps(s, r->copy_to_dev_ns), gbps(s, r->move_to_dev_ns),
	       r->copy_to_dev_ns / r->move_to_dev_ns);
	printf("  %-38s %10.3f %10.3f %8.2f\n",
	       "UFFDIO_MOVE (REMAP): migrate back",
	       gbps(s, r->copy_to_sys_ns), gbps(s, r->move_to_sys_ns),
	       r->copy_to_sys_ns / r->move_to_sys_ns);
	printf("  %-38s %10.3f %10.3f %8.2f\n",
	       "UFFDIO_MOVE (REMAP): fault-back",
	       gbps(s, r->copy_fault_ns), gbps(s, r->move_fault_ns),
	       r->copy_fault_ns / r->move_fault_ns);
	printf("  (off: fault_around_max = 1; a pagemap without "
	       "HETMM_PAGEMAP_REMAP, pages copied)\n");
}

static void pair(FILE *f, const char *name, size_t s, double off, double on,
		 int last)
{
	fprintf(f, "\"%s\": {\"off_gbps\": ", name);
	json_num(f, gbps(s, off), 4);
	fputs(", \"on_gbps\": ", f);
	json_num(f, gbps(s, on), 4);
	fputs(", \"gain\": ", f);
	json_num(f, off / on, 4);
	fputs(last ? "}" : "}, ", f);
}

static void faults(FILE *f, const char *name, double off, double on)
{
	fprintf(f, "\"%s\": {\"off\": ", name);
	json_num(f, off, 0);
	fputs(", \"on\": ", f);
	json_num(f, on, 0);
	fputs("}, ", f);
}

void ablate_print_json(FILE *f, const struct ablate_result *r)
{
	size_t s = r->size;

	fprintf(f, ",\n  \"optimisations\": {\"size\": %zu, ", s);
	pair(f, "fault_around", s, r->fa_off_ns, r->fa_on_ns, 0);
	faults(f, "fault_around_faults", r->fa_off_faults, r->fa_on_faults);
	pair(f, "fault_around_random", s, r->far_off_ns, r->far_on_ns, 0);
	faults(f, "fault_around_random_faults", r->far_off_faults,
	       r->far_on_faults);
	pair(f, "move_to_device", s, r->copy_to_dev_ns, r->move_to_dev_ns, 0);
	pair(f, "move_to_system", s, r->copy_to_sys_ns, r->move_to_sys_ns, 0);
	pair(f, "move_fault_seq", s, r->copy_fault_ns, r->move_fault_ns, 0);
	fprintf(f, "\"error\": %d}", r->err);
}
