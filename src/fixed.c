/* SPDX-License-Identifier: MIT */
/*
 * fixed.c - FS_DAX and GENERIC pagemaps: CPU memory the driver mapped,
 * used in place.  Every page is in use from hot-add to hot-remove, owned
 * by its own address, and never migrates.
 */
#include <errno.h>
#include <time.h>

#include "ctx.h"
#include "entry.h"
#include "fixed.h"
#include "pagemap.h"
#include "shadow.h"

/* The driver's mapping: contiguous, accessible and, for FS_DAX, a file. */
int fixed_check_mapping(struct hetmm_ctx *ctx,
			       struct hetmm_pagemap *pgmap)
{
	uintptr_t base = (uintptr_t)pgmap->ops->page_address(pgmap, 0);
	uint64_t last = pgmap->nr_pages - 1;
	if (check_user_range((void *)base, pgmap->nr_pages * PAGE_SIZE) ||
	    (uintptr_t)pgmap->ops->page_address(pgmap, last) !=
	    base + last * PAGE_SIZE)
		return -EINVAL;
	struct vma v;
	uintptr_t end = base + pgmap->nr_pages * PAGE_SIZE;
	for (uintptr_t a = base; a < end; a = v.end) {
		if (vma_find(&ctx->vmaq, a, &v) < 0 || !(v.flags & VMA_READ))
			return -EINVAL;
		if (pgmap->type == HETMM_MEMORY_FS_DAX &&
		    !(v.flags & VMA_FILE))
			return -EINVAL;
	}
	pgmap->fixed_base = base;
	return 0;
}

/* Undo the shadow entries of pages [first frame, n). */
static void fixed_unpublish(struct hetmm_pagemap *pgmap, uint64_t n)
{
	struct hetmm_ctx *ctx = pgmap->ctx;
	uint64_t vpn0 = addr_to_vpn(pgmap->fixed_base);
	_Atomic uint64_t *slot = NULL;
	for (uint64_t i = pagemap_first_frame(pgmap); i < n; i++) {
		slot = shadow_next(&ctx->shadow, slot, vpn0 + i, false);
		uint64_t e = shadow_fixed(pagemap_pfn(pgmap, i));
		if (slot)
			atomic_compare_exchange_strong(slot, &e, 0);
	}
}

/*
 * Every page is in use from the start, owned by its own address.  The
 * shadow entries go from 0 to FIXED | pfn by CAS, so a page hetmm holds
 * otherwise (on a device, pinned, migrating) makes hot-add fail -EBUSY.
 * Pages that hold the metadata (HETMM_PAGEMAP_ALTMAP) are no frames.
 */
int fixed_publish(struct hetmm_pagemap *pgmap)
{
	struct hetmm_ctx *ctx = pgmap->ctx;
	uint64_t vpn0 = addr_to_vpn(pgmap->fixed_base);
	_Atomic uint64_t *slot = NULL;
	pgmap->nr_free = 0;
	for (uint64_t i = pagemap_first_frame(pgmap); i < pgmap->nr_pages;
	     i++) {
		struct hetmm_page *p = &pgmap->pages[i];
		atomic_store(&p->refcount, 1);
		atomic_store(&p->owner, vpn_to_addr(vpn0 + i) |
			     HETMM_PAGE_ALLOCATED);
		slot = shadow_next(&ctx->shadow, slot, vpn0 + i, true);
		uint64_t e = 0;
		if (!slot || !atomic_compare_exchange_strong(slot, &e,
				shadow_fixed(pagemap_pfn(pgmap, i)))) {
			fixed_unpublish(pgmap, i);
			return slot ? -EBUSY : -ENOMEM;
		}
	}
	return 0;
}

static bool fixed_idle(struct hetmm_pagemap *pgmap)
{
	for (uint64_t i = pagemap_first_frame(pgmap); i < pgmap->nr_pages; i++)
		if (atomic_load(&pgmap->pages[i].pincount) ||
		    atomic_load(&pgmap->pages[i].refcount) != 1)
			return false;
	return true;
}

/*
 * Hot-remove of a fixed pagemap: dying is set, so no new hold succeeds
 * (grab raises its count, then looks at dying: one of the two sees the
 * other).  Wait a bounded time for the holds there are.
 */
int fixed_drain(struct hetmm_pagemap *pgmap)
{
	uint64_t deadline = monotonic_ms() + HETMM_REMOVE_PIN_WAIT_MS;
	while (!fixed_idle(pgmap)) {
		if (monotonic_ms() >= deadline)
			return -EBUSY;
		struct timespec nap = { 0, 1000000 };
		nanosleep(&nap, NULL);
	}
	fixed_unpublish(pgmap, pgmap->nr_pages);
	return 0;
}
