/* SPDX-License-Identifier: MIT */
/*
 * altmap.c - per-page metadata inside the device memory it describes.
 *
 * The kernel can keep the struct pages of a large persistent-memory or
 * CXL range in the range itself (struct vmem_altmap), so that hot-adding
 * terabytes costs no system memory.  A CPU-addressable pagemap asks for
 * the same with HETMM_PAGEMAP_ALTMAP: its metadata array lives in its own
 * first pages, which are never handed out as frames, and which hetmm owns
 * (entry_own) from hot-add to hot-remove, so that no migration or
 * registration of the process's can take them away from under it.
 */
#include <errno.h>
#include <string.h>

#include "altmap.h"
#include "ctx.h"
#include "entry.h"
#include "pagemap.h"
#include "vma.h"

uint64_t altmap_pages(uint64_t nr_pages)
{
	uint64_t bytes = nr_pages * sizeof(struct hetmm_page);
	return (bytes + PAGE_SIZE - 1) / PAGE_SIZE;
}

/* [base, base + len) is mapped, readable and writable, throughout. */
static bool altmap_writable(struct hetmm_ctx *ctx, uintptr_t base, size_t len)
{
	struct vma v;
	for (uintptr_t a = base; a < base + len; a = v.end)
		if (vma_find(&ctx->vmaq, a, &v) < 0 ||
		    (v.flags & (VMA_READ | VMA_WRITE)) !=
		    (VMA_READ | VMA_WRITE))
			return false;
	return true;
}

int altmap_place(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap)
{
	uint64_t n = pgmap->nr_reserved;
	uintptr_t base = (uintptr_t)pgmap->ops->page_address(pgmap, 0);
	if (check_user_range((void *)base, n * PAGE_SIZE) ||
	    (uintptr_t)pgmap->ops->page_address(pgmap, n - 1) !=
	    base + (n - 1) * PAGE_SIZE ||
	    !altmap_writable(ctx, base, n * PAGE_SIZE))
		return -EINVAL;
	memset((void *)base, 0, n * PAGE_SIZE);
	pgmap->pages = (struct hetmm_page *)base;
	entry_own(ctx, &pgmap->altmap_own, (void *)base, n * PAGE_SIZE);
	return 0;
}

void altmap_release(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap)
{
	if ((pgmap->flags & HETMM_PAGEMAP_ALTMAP) && pgmap->pages)
		entry_disown(ctx, &pgmap->altmap_own);
}
