/* SPDX-License-Identifier: MIT */
/*
 * lifecycle.c - what the process does to memory that has pages on a
 * device, and what hetmm does about it (userfaultfd events, read by the
 * handler).
 *
 *   munmap     UNMAP event: the device frames of the range are freed and
 *              their entries forgotten.  A page claimed by a migration in
 *              flight is marked GONE so its claimer drops it.
 *   madvise    REMOVE event (DONTNEED, FREE, REMOVE): device frames are
 *              freed, and the next access finds a hole and reads zeroes,
 *              as the kernel zaps a device-private entry.
 *   mremap     REMAP event: device entries move to the new address.
 *
 * UNMAP and REMAP arrive after the fact, REMOVE before; the caller of
 * munmap, madvise or mremap waits until the handler has read the event.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>

#include "back.h"
#include "coherent.h"
#include "ctx.h"
#include "lifecycle.h"
#include "notifier.h"
#include "order.h"
#include "pagemap.h"
#include "shadow.h"

/* ------------------------------------------------------------------------
 * Discarding device pages: munmap and madvise
 */

/* Claimed device pages to forget, dropped a chunk's worth at a time. */
struct drop_batch {
	struct hetmm_ctx *ctx;
	enum hetmm_event why;
	size_t n;
	size_t dropped;                   /* in all, flushed so far */
	uint64_t vpns[CHUNK_PAGES];
	uint64_t claims[CHUNK_PAGES];
};

static void drop_flush(struct drop_batch *b)
{
	if (!b->n)
		return;
	migrate_drop_claimed(b->ctx, b->vpns, b->claims, b->n, b->why);
	b->dropped += b->n;
	b->n = 0;
}

static void drop_add(struct drop_batch *b, uint64_t vpn, uint64_t claim)
{
	b->vpns[b->n] = vpn;
	b->claims[b->n++] = claim;
	if (b->n == CHUNK_PAGES)
		drop_flush(b);
}

struct discard {
	struct drop_batch drop;
	bool unmap;                       /* mark claimed pages GONE too */
};

/*
 * Claim a device page for discarding.  A page someone else holds is
 * theirs to finish: on munmap it is marked GONE, so that they drop it
 * rather than publish it; madvise leaves it alone, since our own
 * migrations zap pages they hold and that comes back as REMOVE too (and
 * they wait for the handler to see it before they publish: order.c).
 */
static int discard_one(void *arg, uint64_t vpn, _Atomic uint64_t *slot)
{
	struct discard *d = arg;
	uint64_t claim;
	if (!shadow_claim_to_drop(&d->drop.ctx->shadow, vpn, slot, d->unmap,
				  &claim))
		return 0;
	/* A discarded coherent page stays mapped where it is, a page of
	 * the device's file: it reads as zeroes again. */
	if (!d->unmap && shadow_is_coherent(claim)) {
		coherent_zero(claim);
		atomic_store(slot, shadow_unbusy(claim));
		return 0;
	}
	drop_add(&d->drop, vpn, claim);
	return 0;
}

static void discard_range(struct hetmm_ctx *ctx, uintptr_t start,
			  uintptr_t end, bool unmap)
{
	struct discard d = {
		.drop = { .ctx = ctx, .why = unmap ? HETMM_EVENT_UNMAP
						   : HETMM_EVENT_DISCARD },
		.unmap = unmap,
	};
	shadow_for_each(&ctx->shadow, addr_to_vpn(start), addr_to_vpn(end),
		      discard_one, &d);
	drop_flush(&d.drop);
	STAT_ADD(ctx, discarded_pages, d.drop.dropped);
}

void lifecycle_unmap(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	/* A coherent mapping swapped by a migrator: nothing was lost. */
	if (migrators_own(ctx, start, end))
		return;
	notifiers_invalidate(ctx, start, end, HETMM_EVENT_UNMAP);
	discard_range(ctx, start, end, true);
}

void lifecycle_discard(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	/* A migrator's own zap of pages it copied to a device: the
	 * migration told notifiers already. */
	if (!migrators_zapping(ctx, start, end))
		notifiers_invalidate(ctx, start, end, HETMM_EVENT_DISCARD);
	discard_range(ctx, start, end, false);
}

/* ------------------------------------------------------------------------
 * mremap
 */

struct remap {
	struct drop_batch drop;           /* pages with nowhere to go */
	uint64_t from_vpn;
	uint64_t to_vpn;
	size_t moved;
};

/* The frame's metadata names the page it backs: make it the new one. */
static void frame_set_owner(uint64_t pfn, uintptr_t addr)
{
	uint64_t idx;
	struct hetmm_pagemap *pgmap = pfn_pagemap(pfn, &idx);
	if (!pgmap)
		return;
	_Atomic uint64_t *owner = &pgmap->pages[idx].owner;
	uint64_t o = atomic_load(owner);
	atomic_store(owner, addr | (o & ~PAGE_MASK));
}

/*
 * Carry one device entry to its new address.  The handler is the only
 * one to fault pages back, and it is busy here, so the page cannot come
 * back meanwhile; claiming it keeps explicit migrations off it.
 */
static int remap_one(void *arg, uint64_t vpn, _Atomic uint64_t *slot)
{
	struct remap *r = arg;
	uint64_t e = atomic_load(slot);
	if (!shadow_claimable(e) ||
	    !shadow_claim(&r->drop.ctx->shadow, vpn, slot, &e,
			  shadow_busy(e)))
		return 0;   /* in a migration's hands: see the notes above */

	uint64_t to = r->to_vpn + (vpn - r->from_vpn);
	_Atomic uint64_t *dst = shadow_slot(&r->drop.ctx->shadow, to, true);
	uint64_t empty = 0;
	frame_set_owner(shadow_pfn(e), vpn_to_addr(to));
	if (dst && atomic_compare_exchange_strong(dst, &empty, e)) {
		atomic_store(slot, 0);
		r->moved++;
		return 0;
	}
	/* Nowhere to put it (out of memory, or the target is claimed). */
	drop_add(&r->drop, vpn, shadow_busy(e));
	return 0;
}

void lifecycle_remap(struct hetmm_ctx *ctx, uintptr_t from, uintptr_t to,
		     size_t len)
{
	if (migrators_own(ctx, from, from + len))
		return;   /* a coherent mapping swapped into place */
	notifiers_invalidate(ctx, from, from + len, HETMM_EVENT_REMAP);
	notifiers_invalidate(ctx, to, to + len, HETMM_EVENT_REMAP);
	struct remap r = {
		.drop = { .ctx = ctx, .why = HETMM_EVENT_REMAP },
		.from_vpn = addr_to_vpn(from), .to_vpn = addr_to_vpn(to),
	};
	shadow_for_each(&ctx->shadow, r.from_vpn, r.from_vpn + addr_to_vpn(len),
		      remap_one, &r);
	drop_flush(&r.drop);
	STAT_ADD(ctx, remapped_pages, r.moved);
}

