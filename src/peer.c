/* SPDX-License-Identifier: MIT */
/*
 * peer.c - migration between peer devices, device to device (PCI
 * peer-to-peer DMA, hetmm_p2pdma_add_peer).
 *
 * A migration to a device finds some pages of its range on another
 * device.  Where that device is a peer of the destination, and both are
 * DEVICE_PRIVATE, the pages move straight across: claimed where they are,
 * the notifiers told, frames taken on the destination, the destination's
 * engine copying from the source's bus address (copy_from_peer), then
 * each claim handed over to the new frame and published.  The bytes never
 * pass through system memory and the CPU takes no fault.  Zero pages
 * (HETMM_PAGE_ZERO) move without a copy.
 */
#include <errno.h>

#include "back.h"
#include "ctx.h"
#include "evict.h"
#include "pagemap.h"
#include "peer.h"
#include "shadow.h"

struct peer_chunk {
	uint64_t vpn;
	size_t n;
	uint8_t *status;
	uint64_t claim[CHUNK_PAGES];    /* the source entry claimed, or 0 */
	uint32_t frame[CHUNK_PAGES];    /* its destination frame */
};

/* May dst take the page of entry e straight from its device? */
static bool peer_source(const struct hetmm_pagemap *dst, uint64_t e)
{
	uint64_t pfn = shadow_pfn(e);
	return shadow_claimable(e) &&
	       pagemap_section_type(pfn) == HETMM_MEMORY_DEVICE_PRIVATE &&
	       pagemap_reaches(dst, (unsigned)(pfn >> PFN_SECTION_SHIFT));
}

/* Give claim i back to its source device, status st. */
static void peer_unclaim(struct hetmm_ctx *ctx, struct peer_chunk *c,
			 size_t i, enum hetmm_migrate_status st)
{
	publish_or_drop(ctx, c->vpn + i, c->claim[i],
			shadow_unbusy(c->claim[i]), true);
	c->claim[i] = 0;
	c->status[i] = (uint8_t)st;
}

/* Claim the pages on peers of dst; returns how many. */
static size_t peer_claim(struct hetmm_ctx *ctx, struct hetmm_pagemap *dst,
			 struct peer_chunk *c)
{
	size_t got = 0;
	for (size_t i = 0; i < c->n; i++) {
		c->claim[i] = 0;
		if (c->status[i] != HETMM_MIGRATE_SKIP_OTHER_DEVICE)
			continue;
		_Atomic uint64_t *slot = shadow_slot(&ctx->shadow, c->vpn + i,
						     false);
		uint64_t e = slot ? atomic_load(slot) : 0;
		if (!peer_source(dst, e) ||
		    !claim_device_page(&ctx->shadow, c->vpn + i, slot, e))
			continue;
		c->claim[i] = shadow_busy(e);
		/* Its frame is held now, so its section can't be reused:
		 * is that pagemap still a peer? */
		if (!peer_source(dst, e)) {
			peer_unclaim(ctx, c, i,
				     HETMM_MIGRATE_SKIP_OTHER_DEVICE);
			continue;
		}
		got++;
	}
	return got;
}

/* Frames of dst for the claimed pages, in order; the rest go back. */
static void peer_alloc(struct hetmm_ctx *ctx, struct hetmm_pagemap *dst,
		       struct peer_chunk *c, size_t claimed)
{
	uint32_t frames[CHUNK_PAGES];
	size_t nf = pagemap_alloc(dst, frames, claimed);
	if (nf < claimed && (dst->flags & HETMM_PAGEMAP_EVICT))
		nf += pagemap_alloc_evict(dst, frames + nf, claimed - nf);
	size_t k = 0;
	for (size_t i = 0; i < c->n; i++) {
		if (!c->claim[i])
			continue;
		if (k < nf)
			c->frame[i] = frames[k++];
		else
			peer_unclaim(ctx, c, i, HETMM_MIGRATE_SKIP_NOMEM);
	}
}

static struct hetmm_pagemap *claim_pagemap(uint64_t claim, uint64_t *idx)
{
	return pfn_pagemap(shadow_pfn(claim), idx);
}

static bool frame_is_zero(struct hetmm_pagemap *pgmap, uint64_t idx)
{
	return atomic_load(&pagemap_page(pgmap, idx)->owner) & HETMM_PAGE_ZERO;
}

/* The run of claims from i that one peer copy takes: one source, source
 * and destination frames consecutive, all zero pages or none. */
static size_t peer_run(struct peer_chunk *c, size_t i)
{
	uint64_t s0, s;
	struct hetmm_pagemap *src = claim_pagemap(c->claim[i], &s0);
	bool zero = frame_is_zero(src, s0);
	size_t run = 1;
	while (i + run < c->n && c->claim[i + run] &&
	       claim_pagemap(c->claim[i + run], &s) == src && s == s0 + run &&
	       c->frame[i + run] == c->frame[i] + run &&
	       frame_is_zero(src, s) == zero)
		run++;
	return run;
}

/* Frame idx of pgmap is free again; its memory may still hold a page. */
static void frame_release(struct hetmm_pagemap *pgmap, uint32_t idx)
{
	pagemap_free(pgmap, &idx, 1,
		     (pgmap->flags & HETMM_PAGEMAP_REMAP) ? PAGE_STALE : 0);
}

/*
 * Hand the claim of page i over to its new frame and publish it.  The
 * destination frame's owner is set before the claim names it, from the
 * source frame's owner, which an mremap that carried the claim meanwhile
 * updated (the loop follows it); once the claim names the new frame, a
 * carry updates that frame's owner.  Returns whether the page is on dst.
 */
static bool peer_commit(struct hetmm_ctx *ctx, struct hetmm_pagemap *dst,
			struct peer_chunk *c, size_t i, bool zero)
{
	uint64_t sidx;
	struct hetmm_pagemap *src = claim_pagemap(c->claim[i], &sidx);
	struct hetmm_page *p = pagemap_page(dst, c->frame[i]);
	uint64_t pfn = pagemap_pfn(dst, c->frame[i]);
	uint64_t claim = shadow_busy(shadow_device(pfn));
	uint64_t flags = HETMM_PAGE_ALLOCATED | (zero ? HETMM_PAGE_ZERO : 0);
	if (zero)
		atomic_fetch_add(&dst->nr_zero, 1);
	atomic_store(&p->refcount, 1);
	enum shadow_let_go st;
	uintptr_t owner;
	do {
		owner = atomic_load(&pagemap_page(src, sidx)->owner) &
			PAGE_MASK;
		atomic_store(&p->owner, owner | flags);
	} while ((st = shadow_release(&ctx->shadow, addr_to_vpn(owner),
				      c->claim[i], claim)) == LET_GO_MOVED);
	frame_release(src, (uint32_t)sidx);
	if (st == LET_GO_GONE) {
		/* The process unmapped it meanwhile. */
		frame_release(dst, c->frame[i]);
		atomic_fetch_sub(&ctx->stats.device_resident, 1);
		return false;
	}
	bool on = publish_or_drop(ctx, addr_to_vpn(owner), claim,
				  shadow_device(pfn), true);
	if (addr_to_vpn(owner) != c->vpn + i)
		uffd_wake(ctx->uffd.fd, owner, PAGE_SIZE);
	return on;
}

/* Copy one run device to device and commit it; returns pages moved. */
static size_t peer_copy_run(struct hetmm_ctx *ctx, struct hetmm_pagemap *dst,
			    struct peer_chunk *c, size_t i, size_t run)
{
	uint64_t sidx;
	struct hetmm_pagemap *src = claim_pagemap(c->claim[i], &sidx);
	bool zero = frame_is_zero(src, sidx);
	if (!zero) {
		uint64_t addr = 0;
		int rc = src->ops->p2p_bus_addr ?
			 src->ops->p2p_bus_addr(src, sidx, &addr) : -EOPNOTSUPP;
		if (!rc)
			rc = dst->ops->copy_from_peer(dst, c->frame[i], addr,
						      run);
		if (rc) {
			/* Not across the bus: they stay where they are,
			 * skipped as any other device's pages without the
			 * ops, as a device error if an op failed. */
			enum hetmm_migrate_status st =
				src->ops->p2p_bus_addr && rc != -EOPNOTSUPP ?
				HETMM_MIGRATE_SKIP_ERROR :
				HETMM_MIGRATE_SKIP_OTHER_DEVICE;
			for (size_t k = i; k < i + run; k++) {
				frame_release(dst, c->frame[k]);
				peer_unclaim(ctx, c, k, st);
			}
			return 0;
		}
	}
	size_t moved = 0;
	for (size_t k = i; k < i + run; k++) {
		bool on = peer_commit(ctx, dst, c, k, zero);
		c->status[k] = on ? HETMM_MIGRATE_MOVED : HETMM_MIGRATE_SKIP_BUSY;
		c->claim[k] = 0;
		moved += on;
	}
	return moved;
}

void peer_migrate(struct hetmm_ctx *ctx, struct hetmm_pagemap *dst,
		  uintptr_t start, size_t n, uint8_t *status)
{
	if (dst->type != HETMM_MEMORY_DEVICE_PRIVATE ||
	    !dst->ops->copy_from_peer)
		return;
	struct peer_chunk c = { .vpn = addr_to_vpn(start), .n = n,
				.status = status };
	size_t claimed = peer_claim(ctx, dst, &c);
	if (!claimed)
		return;
	/* Devices stop using the pages before their contents move. */
	back_invalidate(ctx, c.vpn, n, c.claim);
	peer_alloc(ctx, dst, &c, claimed);
	size_t moved = 0;
	for (size_t i = 0; i < n;) {
		if (!c.claim[i]) {
			i++;
			continue;
		}
		size_t run = peer_run(&c, i);
		moved += peer_copy_run(ctx, dst, &c, i, run);
		i += run;
	}
	uffd_wake(ctx->uffd.fd, start, n * PAGE_SIZE);
	STAT_ADD(ctx, to_device_pages, moved);
}
