/* SPDX-License-Identifier: MIT */
/*
 * evict.c - migration into a full device.
 *
 * A device with the eviction policy (HETMM_PAGEMAP_EVICT), as big as the
 * buffer: one buffer migrated in fills it, then a second as big goes in
 * and evicts all of the first.  Timed: that whole second call, in GB/s of
 * evicted bytes; against memcpy() of the same bytes, and, for
 * information, the same migration into an empty device.  Median of reps
 * repetitions after one warm-up.
 */
#include "sections.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>

/* A device with the eviction policy: memory hetmm moves pages into. */
static void *evdev_address(struct hetmm_pagemap *pg, uint64_t index)
{
	struct hetmm_pagemap_info info;

	if (hetmm_pagemap_get_info(pg, &info))
		return NULL;
	return (char *)info.drvdata + index * PAGE;
}

static int evdev_copy_to(struct hetmm_pagemap *pg, uint64_t index,
			 const void *src, size_t nr)
{
	memcpy(evdev_address(pg, index), src, nr * PAGE);
	return 0;
}

static int evdev_copy_from(struct hetmm_pagemap *pg, void *dst,
			   uint64_t index, size_t nr)
{
	memcpy(dst, evdev_address(pg, index), nr * PAGE);
	return 0;
}

static const struct hetmm_pagemap_ops evdev_ops = {
	.copy_to_device = evdev_copy_to,
	.copy_from_device = evdev_copy_from,
	.page_address = evdev_address,
};

/* One repetition on an empty device: A goes in (timed: no eviction),
 * then B, as big as the device (timed: evicts all of A); B comes back. */
static int evict_rep(struct hetmm_ctx *ctx, struct hetmm_pagemap *pg,
		     char *a, char *b, size_t size, double *full_ns,
		     double *empty_ns, uint64_t *evicted)
{
	struct hetmm_stats s0, s1;
	uint64_t t0 = now_ns();
	int rc = hetmm_migrate_to_device(pg, a, size, NULL);

	*empty_ns = (double)(now_ns() - t0);
	if (rc)
		return rc;
	hetmm_ctx_get_stats(ctx, &s0);
	t0 = now_ns();
	rc = hetmm_migrate_to_device(pg, b, size, NULL);
	*full_ns = (double)(now_ns() - t0);
	hetmm_ctx_get_stats(ctx, &s1);
	*evicted = s1.evictions - s0.evictions;
	if (rc)
		return rc;
	return hetmm_migrate_to_system(ctx, b, size, NULL);
}

int bench_evict(struct hetmm_ctx *ctx, size_t size, int reps,
		struct evict_result *res)
{
	size_t npages = size / PAGE;
	char *mem = map_anon(size, -1), *a = map_anon(size, -1),
	     *b = map_anon(size, -1);
	struct hetmm_pagemap *pg = NULL;
	double tf[64], te[64];
	int rc = -ENOMEM;

	res->size = size;
	if (!mem || !a || !b)
		goto out;
	populate(a, size, 0x21);
	populate(b, size, 0x42);
	struct hetmm_pagemap_desc desc = {
		.type = HETMM_MEMORY_DEVICE_PRIVATE, .nr_pages = npages,
		.ops = &evdev_ops, .drvdata = mem,
		.flags = HETMM_PAGEMAP_REMAP | HETMM_PAGEMAP_EVICT,
	};
	rc = hetmm_pagemap_add(ctx, &desc, &pg);
	for (int r = 0; !rc && r <= reps; r++) {
		double f = NAN, e = NAN;
		rc = evict_rep(ctx, pg, a, b, size, &f, &e, &res->evicted);
		if (r) {
			tf[r - 1] = f;
			te[r - 1] = e;
		}
	}
	if (!rc) {
		res->evict_ns = median(tf, reps);
		res->empty_ns = median(te, reps);
		for (int r = 0; r <= reps; r++) {
			uint64_t t0 = now_ns();
			memcpy(b, a, size);
			if (r)
				tf[r - 1] = (double)(now_ns() - t0);
		}
		res->memcpy_ns = median(tf, reps);
	}
	if (pg) {
		int r2 = hetmm_pagemap_remove(pg);
		if (!rc)
			rc = r2;
	}
out:
	if (mem)
		munmap(mem, size);
	if (a)
		munmap(a, size);
	if (b)
		munmap(b, size);
	return rc;
}

void evict_print_text(const struct evict_result *r)
{
	char sb[32];

	printf("eviction (%s into a full device, %" PRIu64 " pages evicted "
	       "and as many moved in): %.3f GB/s of evicted bytes over the "
	       "whole call; memcpy of the same bytes %.3f GB/s, ratio %.3f; "
	       "the same migration into an empty device %.3f GB/s\n",
	       fmt_size(r->size, sb, sizeof(sb)), r->evicted,
	       gbps(r->size, r->evict_ns), gbps(r->size, r->memcpy_ns),
	       gbps(r->size, r->evict_ns) / gbps(r->size, r->memcpy_ns),
	       gbps(r->size, r->empty_ns));
}

void evict_print_json(FILE *f, const struct evict_result *r)
{
	fputs(",\n  \"eviction\": {\"size\": ", f);
	fprintf(f, "%zu, \"evicted_pages\": %" PRIu64 ", \"evict_gbps\": ",
		r->size, r->evicted);
	json_num(f, gbps(r->size, r->evict_ns), 4);
	fputs(", \"memcpy_gbps\": ", f);
	json_num(f, gbps(r->size, r->memcpy_ns), 4);
	fputs(", \"empty_device_gbps\": ", f);
	json_num(f, gbps(r->size, r->empty_ns), 4);
	fputs(", \"eviction_vs_memcpy\": ", f);
	json_num(f, gbps(r->size, r->evict_ns) / gbps(r->size, r->memcpy_ns),
		 4);
	fputs(", \"basis\": \"evicted bytes over the whole migration into a "
	      "full device (evictions plus the new pages moved in)\"}", f);
}
