/* SPDX-License-Identifier: MIT */
/*
 * tier.c - memory tiering over a device smaller than the data.
 *
 * A fast tier (device memory of its own driver, 4 MiB) in front of a data
 * set four times its size in ordinary process memory.  The program works
 * through the data set in 1 MiB windows, promoting each window to the
 * fast tier before a device pass over it, and keeps a small hot table
 * there throughout.  The pagemap is hot-added with HETMM_PAGEMAP_EVICT:
 * when the tier is full, promotion demotes its oldest pages to system
 * memory (a clock with second chance) instead of failing, so
 *
 *   - the program never manages capacity itself;
 *   - the hot table, promoted again before every window, is "asked for
 *     again" and survives the streaming windows;
 *   - demoted pages are ordinary memory again, with their bytes.
 *
 * The device pass reads each window in the tier's own memory (the frame
 * hetmm_addr_to_pfn names) and checks its bytes; at the end the CPU
 * checks every byte of the data set.  Exits 1 on a wrong byte, a failed
 * call, a tier over capacity or a hot page demoted.
 *
 * Build: cc tier.c $(pkg-config --cflags --libs hetmm) -o tier
 */
#define _DEFAULT_SOURCE          /* MAP_ANONYMOUS */
#include <errno.h>
#include <hetmm.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define PS HETMM_PAGE_SIZE
#define TIER_PAGES 1024                  /* the fast tier: 4 MiB */
#define DATA_PAGES (4 * TIER_PAGES)      /* the data set: 16 MiB */
#define WINDOW_PAGES 256                 /* promoted per step: 1 MiB */
#define HOT_PAGES 64                     /* kept hot throughout */

#define CHECK(call)                                                        \
	do {                                                               \
		int rc_ = (call);                                          \
		if (rc_ < 0) {                                             \
			fprintf(stderr, "tier: %s: %s\n", #call,           \
				hetmm_strerror(rc_));                      \
			exit(1);                                           \
		}                                                          \
	} while (0)

/* The fast tier's driver: its memory, and memcpy for a copy engine. */
struct tier {
	struct hetmm_ctx *ctx;
	struct hetmm_pagemap *pgmap;
	unsigned char *mem;
	uint64_t first_pfn;
};

static unsigned char *tier_mem(struct hetmm_pagemap *pgmap, uint64_t index)
{
	struct tier *t = hetmm_pagemap_drvdata(pgmap);

	return index < TIER_PAGES ? t->mem + index * PS : NULL;
}

static int tier_copy_to(struct hetmm_pagemap *pgmap, uint64_t index,
			const void *src, size_t nr)
{
	unsigned char *dst = tier_mem(pgmap, index);

	if (!dst || index + nr > TIER_PAGES)
		return -EINVAL;
	memcpy(dst, src, nr * PS);
	return 0;
}

static int tier_copy_from(struct hetmm_pagemap *pgmap, void *dst,
			  uint64_t index, size_t nr)
{
	unsigned char *src = tier_mem(pgmap, index);

	if (!src || index + nr > TIER_PAGES)
		return -EINVAL;
	memcpy(dst, src, nr * PS);
	return 0;
}

static const struct hetmm_pagemap_ops tier_ops = {
	.copy_to_device = tier_copy_to,
	.copy_from_device = tier_copy_from,
};

static void tier_open(struct tier *t)
{
	struct hetmm_pagemap_desc desc = {
		.type = HETMM_MEMORY_DEVICE_PRIVATE,
		.nr_pages = TIER_PAGES,
		.ops = &tier_ops,
		.drvdata = t,
		.owner = t,
		.flags = HETMM_PAGEMAP_EVICT,
	};
	struct hetmm_pagemap_info info;

	t->mem = mmap(NULL, TIER_PAGES * PS, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (t->mem == MAP_FAILED) {
		perror("tier: mmap");
		exit(1);
	}
	CHECK(hetmm_ctx_create(&t->ctx, NULL));
	CHECK(hetmm_pagemap_add(t->ctx, &desc, &t->pgmap));
	CHECK(hetmm_pagemap_get_info(t->pgmap, &info));
	t->first_pfn = hetmm_pfn_number(info.first_pfn);
}

static void tier_close(struct tier *t)
{
	CHECK(hetmm_pagemap_remove(t->pgmap));
	CHECK(hetmm_ctx_destroy(t->ctx));
	munmap(t->mem, TIER_PAGES * PS);
}

/* The byte the data set holds at offset off. */
static unsigned char data_byte(size_t off)
{
	return (unsigned char)(off * 2654435761u >> 24);
}

/*
 * The device's pass over pages [p, p + n) of the data: each page must be
 * in the tier, and its bytes there right.  Returns the pages checked.
 */
static int device_pass(struct tier *t, unsigned char *data, size_t p,
		       size_t n)
{
	for (size_t i = p; i < p + n; i++) {
		hetmm_pfn_t pfn;
		const unsigned char *frame;
		int rc = hetmm_addr_to_pfn(t->ctx, data + i * PS, &pfn);

		if (rc) {
			fprintf(stderr, "tier: page %zu is not in the tier: "
				"%s\n", i, hetmm_strerror(rc));
			return -1;
		}
		frame = t->mem + (hetmm_pfn_number(pfn) - t->first_pfn) * PS;
		for (size_t k = 0; k < PS; k++) {
			if (frame[k] != data_byte(i * PS + k)) {
				fprintf(stderr, "tier: page %zu byte %zu wrong "
					"in the tier\n", i, k);
				return -1;
			}
		}
	}
	return 0;
}

static void promote(struct tier *t, unsigned char *addr, size_t npages)
{
	struct hetmm_migrate_report rep = { 0 };
	int rc = hetmm_migrate_to_device(t->pgmap, addr, npages * PS, &rep);

	/* -ENOENT: every page was there already (the hot table). */
	if (rc != -ENOENT)
		CHECK(rc);
}

int main(void)
{
	struct tier t;
	struct hetmm_stats st;
	size_t len = (size_t)DATA_PAGES * PS;
	unsigned char *data;
	uint64_t peak = 0;

	data = mmap(NULL, len, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (data == MAP_FAILED) {
		perror("tier: mmap");
		return 1;
	}
	for (size_t off = 0; off < len; off++)
		data[off] = data_byte(off);
	tier_open(&t);

	/* The hot table is the data set's first pages; the windows stream
	 * through the rest, twice. */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t p = HOT_PAGES; p < DATA_PAGES; p += WINDOW_PAGES) {
			size_t n = DATA_PAGES - p < WINDOW_PAGES ?
				   DATA_PAGES - p : WINDOW_PAGES;

			promote(&t, data, HOT_PAGES);
			promote(&t, data + p * PS, n);
			if (device_pass(&t, data, 0, HOT_PAGES) ||
			    device_pass(&t, data, p, n))
				return 1;
			CHECK(hetmm_ctx_get_stats(t.ctx, &st));
			if (st.device_resident > peak)
				peak = st.device_resident;
		}
	}
	CHECK(hetmm_ctx_get_stats(t.ctx, &st));
	printf("tier: %d pages of data through a %d-page tier: %" PRIu64
	       " promoted, %" PRIu64 " demoted by eviction, at most %" PRIu64
	       " resident\n", DATA_PAGES, TIER_PAGES, st.to_device_pages,
	       st.evictions, peak);
	if (peak > TIER_PAGES || st.evictions == 0) {
		fprintf(stderr, "tier: the tier should have filled and "
			"evicted, never over capacity\n");
		return 1;
	}
	if (st.to_device_pages > 2 * (DATA_PAGES - HOT_PAGES) + HOT_PAGES) {
		fprintf(stderr, "tier: the hot table was demoted and promoted "
			"again\n");
		return 1;
	}

	/* Every byte, wherever it is now: demoted pages in system memory,
	 * the rest faulting back from the tier as the CPU reads them. */
	for (size_t off = 0; off < len; off++) {
		if (data[off] != data_byte(off)) {
			fprintf(stderr, "tier: byte %zu wrong\n", off);
			return 1;
		}
	}
	tier_close(&t);
	munmap(data, len);
	printf("tier: ok\n");
	return 0;
}
