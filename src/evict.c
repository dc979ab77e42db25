/* SPDX-License-Identifier: MIT */
/*
 * evict.c - making room on a full device (HETMM_PAGEMAP_EVICT).
 *
 * A clock over frame indices: the hand moves one frame per look, frames
 * are handed out in ascending order, so the hand meets pages in about the
 * order they arrived.  A page asked for again since the hand last passed
 * (HETMM_PAGE_REFERENCED) gets a second chance; any other resident page is
 * a victim.  Victims are claimed like a fault claims pages (DEVICE | pfn
 * -> BUSY by CAS, so a page some fault or migration holds is passed over)
 * and go back through migrate_back_claimed(), in runs of consecutive
 * frames backing consecutive addresses.  Device pages are never pinned
 * (a pin brings its page back first), so every resident page may go.
 */
#include <sys/mman.h>

#include "back.h"
#include "ctx.h"
#include "evict.h"
#include "pagemap.h"
#include "shadow.h"
#include "trace.h"

/* Rounds of evict-then-allocate before a migration settles for fewer. */
#define EVICT_ROUNDS 8

/*
 * Claim the run of victims that starts at frame idx, at most max pages:
 * frames idx, idx + 1, ... backing vpn, vpn + 1, ...  Returns its length;
 * *vpn is where it starts.
 */
static size_t claim_victims(struct hetmm_pagemap *pgmap, uint64_t idx,
			    size_t max, uint64_t *vpn, uint64_t *claims)
{
	struct hetmm_page *p = &pgmap->pages[idx];
	uint64_t o = atomic_load(&p->owner);
	if (!(o & HETMM_PAGE_ALLOCATED))
		return 0;
	if (o & HETMM_PAGE_REFERENCED) {
		atomic_fetch_and(&p->owner, ~(uint64_t)HETMM_PAGE_REFERENCED);
		return 0;
	}
	*vpn = addr_to_vpn(o & PAGE_MASK);
	_Atomic uint64_t *slot = NULL;
	size_t k;
	for (k = 0; k < max && idx + k < pgmap->nr_pages; k++) {
		if (k && (atomic_load(&pgmap->pages[idx + k].owner) &
			  HETMM_PAGE_REFERENCED))
			break;   /* its turn comes with the hand */
		slot = shadow_next(&pgmap->ctx->shadow, slot, *vpn + k, false);
		uint64_t e = shadow_device(pagemap_pfn(pgmap, idx + k));
		/* The CAS also proves the owner was current; a coherent
		 * page held in place is never evicted. */
		if (!slot || !claim_device_page(&pgmap->ctx->shadow, *vpn + k, slot,
						 e))
			break;
		claims[k] = shadow_busy(e);
	}
	return k;
}

/* Evict up to want pages; returns how many left the device.  Their
 * copies stay in flight from one run of victims to the next. */
static size_t evict(struct hetmm_pagemap *pgmap, size_t want)
{
	struct hetmm_ctx *ctx = pgmap->ctx;
	uint64_t claims[CHUNK_PAGES];
	void *staging = NULL;
	struct back_pipe bp;
	back_pipe_init(&bp, ctx, false, NULL, 0);
	/* Two turns of the hand: one may only clear reference bits. */
	for (uint64_t look = 0;
	     bp.left + bp.in_flight < want && look < 2 * pgmap->nr_pages;
	     look++) {
		size_t ahead = bp.left + bp.in_flight;
		uint64_t idx = atomic_fetch_add_explicit(&pgmap->clock_hand, 1,
				memory_order_relaxed) % pgmap->nr_pages;
		uint64_t vpn = 0;
		size_t n = claim_victims(pgmap, idx,
					 MIN(want - ahead, (size_t)CHUNK_PAGES),
					 &vpn, claims);
		if (!n)
			continue;
		/* The hand passes the whole run: the frames after idx are
		 * free now and will be the next to fill, the youngest. */
		atomic_fetch_add_explicit(&pgmap->clock_hand, n - 1,
					  memory_order_relaxed);
		migrate_back_claimed(&bp, vpn, n, claims, &staging);
	}
	back_pipe_drain(&bp);
	if (staging)
		munmap(staging, CHUNK_PAGES * PAGE_SIZE);
	STAT_ADD(ctx, evictions, bp.left);
	TRACE3(evict, pgmap, want, bp.left);
	return bp.left;
}

size_t pagemap_alloc_evict(struct hetmm_pagemap *pgmap, uint32_t *idx,
			   size_t nr)
{
	size_t got = 0;
	/* Frames freed here may go to a racing migration first: a few
	 * rounds, then the caller reports the rest as SKIP_NOMEM. */
	for (int round = 0; round < EVICT_ROUNDS && got < nr; round++) {
		if (!evict(pgmap, nr - got))
			break;
		got += pagemap_alloc(pgmap, idx + got, nr - got);
	}
	return got;
}
