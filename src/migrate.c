/* SPDX-License-Identifier: MIT */
/*
 * migrate.c - moving process pages to device memory.
 *
 * To the device, per chunk of at most CHUNK_PAGES (base.h), in the
 * kernel's three phases (a PMD block of several chunks that a THP maps
 * goes through them as one: block_to_device):
 *
 *   collect  claim each page's shadow entry (0 -> BUSY); pages that are
 *            pinned, on a device or claimed by someone else are skipped.
 *            Allocate frames (each claim becomes BUSY | DEVICE | pfn, which
 *            mremap carries along: chunk_claim) and register the range
 *            with userfaultfd.  A CPU access that misses a claimed page
 *            now waits for a wake.
 *   copy     holes are not copied: they become zero device pages.  Pages
 *            of a remapping pagemap move into their frames by UFFDIO_MOVE,
 *            atomically, so no write can slip between copy and unmap.  The
 *            rest are write-protected, copied and zapped: a write racing
 *            them waits in a write-protect fault.
 *   commit   publish DEVICE | pfn in the shadow, lift the protection and
 *            wake every waiter.  A woken thread faults again on the
 *            now-missing page and the handler brings it back, its write
 *            still to come.
 *
 * Back to system memory is back.c's.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "back.h"
#include "coherent.h"
#include "compat.h"
#include "copy.h"
#include "ctx.h"
#include "entry.h"
#include "evict.h"
#include "marker.h"
#include "notifier.h"
#include "order.h"
#include "pagemap.h"
#include "peer.h"
#include "shadow.h"
#include "testhook.h"
#include "trace.h"
#include "watch.h"

/* Chunk page states beyond the public ones, while the chunk is worked. */
enum {
	ST_PENDING = 0,      /* claimed, not yet on the device */
	ST_DONE_DATA = 0x80, /* on the device */
	ST_DONE_ZERO,        /* a hole: on the device as a zero page */
	ST_COPIED,           /* copied; still mapped until the zap */
	ST_FAILED,           /* the driver's copy failed: stays in system
			      * memory (HETMM_MIGRATE_SKIP_ERROR) */
	ST_VANISHED,         /* its copy could not read it (-EFAULT): the
			      * process unmapped or moved pages under it,
			      * and they are left out (SKIP_BUSY) */
	ST_STAGED,           /* moved out of the process into the chunk's
			      * stage, not copied yet (chunk_stage) */
};

struct chunk {
	const struct vma *vma;          /* the mapping it lies in */
	uintptr_t start;
	uint64_t vpn;
	size_t n;
	bool wp[CHUNK_PAGES];           /* we write-protected the page */
	bool staged[CHUNK_PAGES];       /* in the stage since chunk_stage */
	char *stage;                    /* a PMD of the sink, or NULL */
	unsigned stage_slot;            /* its migrator's stage number */
	uint8_t status[CHUNK_PAGES];
	uint32_t frame[CHUNK_PAGES];    /* per page */
	uint32_t frames[CHUNK_PAGES];   /* as allocated */
	size_t nframes;
	uint8_t pflags[CHUNK_PAGES];
	bool thp;                       /* one THP, mapped by its PMD */
	bool huge;                      /* a THP, given a huge page's frames */
	struct migrator *migrator;      /* while in the copy path */
	/* HETMM_PAGEMAP_PLACED: page i goes to frame place + i; and with
	 * HETMM_MIGRATE_POPULATED holes take their frame's bytes. */
	uint64_t place;
	bool populated;
	/* In a train (below): its first page's index in the call, pages of
	 * its copies still in flight, its protection's error. */
	size_t page0;
	size_t copying;
	uint64_t last_piece;          /* its last copy's copy_pipe_added */
	int protect_rc;
};

static bool st_claimed(uint8_t st)
{
	return st == ST_PENDING || st >= ST_DONE_DATA;
}

static bool st_pending(uint8_t st)
{
	return st == ST_PENDING;
}

static bool st_copied(uint8_t st)
{
	return st == ST_COPIED;
}

static bool st_staged(uint8_t st)
{
	return st == ST_STAGED;
}

static bool st_done(uint8_t st)
{
	return st == ST_DONE_DATA || st == ST_DONE_ZERO;
}

/* The run from page i of pages in pred's state whose frames follow on
 * one another: what one copy, move or mapping call can take. */
static size_t chunk_frame_run(const struct chunk *c, size_t i,
			      bool (*pred)(uint8_t))
{
	size_t run = 1;
	while (i + run < c->n && pred(c->status[i + run]) &&
	       c->frame[i + run] == c->frame[i] + run)
		run++;
	return run;
}

static uintptr_t chunk_addr(const struct chunk *c, size_t i)
{
	return c->start + i * PAGE_SIZE;
}

/* Where page i waits in the chunk's stage: at its offset in its PMD, so
 * that a THP's PMD moves there whole. */
static uintptr_t stage_addr(const struct chunk *c, size_t i)
{
	return (uintptr_t)c->stage + (chunk_addr(c, i) & (PMD_SIZE - 1));
}

/* Apply fn to each maximal run of pages whose status satisfies pred. */
static int for_each_run(struct hetmm_ctx *ctx, struct chunk *c,
			bool (*pred)(uint8_t),
			int (*fn)(struct hetmm_ctx *, struct chunk *, size_t,
				  size_t))
{
	for (size_t i = 0; i < c->n;) {
		if (!pred(c->status[i])) {
			i++;
			continue;
		}
		size_t run = 1;
		while (i + run < c->n && pred(c->status[i + run]))
			run++;
		int rc = fn(ctx, c, i, run);
		if (rc)
			return rc;
		i += run;
	}
	return 0;
}

static enum hetmm_migrate_status classify_unclaimable(uint64_t e,
		struct hetmm_pagemap *pgmap)
{
	if (shadow_is_busy(e))
		return HETMM_MIGRATE_SKIP_BUSY;
	if (shadow_on_device(e) || shadow_is_fixed(e)) {
		uint64_t idx;
		if (!pagemap_has_pfn(pgmap, shadow_pfn(e), &idx))
			return HETMM_MIGRATE_SKIP_OTHER_DEVICE;
		/* Asked for again: the eviction clock spares it once. */
		atomic_fetch_or(&pagemap_page(pgmap, idx)->owner,
				(uint64_t)HETMM_PAGE_REFERENCED);
		return HETMM_MIGRATE_ALREADY;
	}
	return HETMM_MIGRATE_SKIP_PINNED;
}

/* Collect: claim every page nobody else holds. */
static size_t chunk_collect(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			    struct chunk *c)
{
	size_t claimed = 0;
	_Atomic uint64_t *slot = NULL;
	for (size_t i = 0; i < c->n; i++) {
		slot = shadow_next(&ctx->shadow, slot, c->vpn + i, true);
		uint64_t e = 0;
		if (!slot) {
			c->status[i] = HETMM_MIGRATE_SKIP_NOMEM;
		} else if (claim_system_page(slot, &e)) {
			c->status[i] = ST_PENDING;
			claimed++;
		} else {
			c->status[i] = (uint8_t)classify_unclaimable(e, pgmap);
		}
	}
	return claimed;
}

/* Wake every waiter of the chunk: claims it saw BUSY are gone. */
static void chunk_wake(struct hetmm_ctx *ctx, struct chunk *c)
{
	uffd_wake(ctx->uffd.fd, c->start, c->n * PAGE_SIZE);
}

/*
 * The claim a migration to a device holds on page i once the page has a
 * frame: its device entry, claimed (BUSY | DEVICE | pfn), the frame's
 * owner naming the address.  mremap carries such a claim to where the
 * page went, as it does a page on its way back (lifecycle.c:
 * carry_claim), and the commit follows it there.  A coherent device's
 * pages keep the bare claim: their mappings are swapped by mremaps of
 * the migrator's own.
 */
static uint64_t chunk_claim(struct hetmm_pagemap *pgmap, const struct chunk *c,
			    size_t i)
{
	if (pagemap_is_coherent(pgmap))
		return shadow_filling();
	return shadow_busy(shadow_device(pagemap_pfn(pgmap, c->frame[i])));
}

/* Where page i's claim is now: at its address, or where mremap carried
 * it (the frame's owner names it); 0 if the process unmapped the page. */
static uint64_t chunk_claim_vpn(struct hetmm_ctx *ctx,
				struct hetmm_pagemap *pgmap,
				const struct chunk *c, size_t i)
{
	uint64_t claim = chunk_claim(pgmap, c, i), at = c->vpn + i;
	_Atomic uint64_t *owner = &pagemap_page(pgmap, c->frame[i])->owner;
	for (;;) {
		enum shadow_let_go st = shadow_claim_at(&ctx->shadow, at, claim);
		if (st == LET_GO_DONE)
			return at;
		uint64_t to = addr_to_vpn(atomic_load(owner) & PAGE_MASK);
		if (st == LET_GO_GONE || !shadow_on_device(claim) || to == at)
			return 0;
		at = to;
	}
}

/* Let go of page i's claim, wherever it is, leaving the page where it
 * is. */
static void chunk_unclaim(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			  const struct chunk *c, size_t i)
{
	publish_or_drop(ctx, c->vpn + i, chunk_claim(pgmap, c, i), 0, false);
}

/* Turn the bare claims of pages with frames into chunk_claim()'s; a page
 * unmapped meanwhile (GONE) is let go of, with its frame. */
static void chunk_name_claims(struct hetmm_ctx *ctx,
			      struct hetmm_pagemap *pgmap, struct chunk *c)
{
	uint32_t frames[CHUNK_PAGES];
	size_t n = 0;
	for (size_t i = 0; i < c->n; i++) {
		if (!st_pending(c->status[i]))
			continue;
		_Atomic uint64_t *owner =
			&pagemap_page(pgmap, c->frame[i])->owner;
		atomic_store(owner, chunk_addr(c, i) |
			     (atomic_load(owner) & ~PAGE_MASK));
		uint64_t e = shadow_filling();
		if (pagemap_is_coherent(pgmap) ||
		    atomic_compare_exchange_strong(
			    shadow_slot(&ctx->shadow, c->vpn + i, false), &e,
			    chunk_claim(pgmap, c, i)))
			continue;
		shadow_store(&ctx->shadow, c->vpn + i, 0);   /* GONE */
		frames[n++] = c->frame[i];
		c->status[i] = HETMM_MIGRATE_SKIP_BUSY;
	}
	if (n)
		pagemap_free(pgmap, frames, n, 0);
}

/*
 * Is every page of the chunk claimed and mapped by a transparent huge
 * page's PMD?  Only where the kernel shows huge mappings (PAGEMAP_SCAN,
 * or kpageflags as root: vma.h); elsewhere its pages go as base pages.
 */
static bool chunk_all_thp(struct hetmm_ctx *ctx, struct chunk *c,
			  size_t claimed)
{
	if (claimed != c->n ||
	    vma_page_huge(&ctx->vmaq, c->vma, c->start, c->n, c->pflags))
		return false;
	for (size_t i = 0; i < c->n; i++)
		if (!(c->pflags[i] & PG_HUGE))
			return false;
	return true;
}

/* Is the chunk a whole PMD-aligned THP?  Only a chunk that is a whole
 * PMD can be (4 KiB pages: base.h; larger ones: block_to_device). */
static bool chunk_is_thp(struct hetmm_ctx *ctx, struct chunk *c,
			 size_t claimed)
{
	return c->n == PMD_PAGES && !(c->start & (PMD_SIZE - 1)) &&
	       chunk_all_thp(ctx, c, claimed);
}

/* Give the chunk's pending pages the frames in c->frames (c->nframes of
 * them), in order; the pages left without one are let go of. */
static void chunk_assign_frames(struct hetmm_ctx *ctx,
				struct hetmm_pagemap *pgmap, struct chunk *c)
{
	size_t k = 0;
	bool unclaimed = false;
	for (size_t i = 0; i < c->n; i++) {
		if (!st_pending(c->status[i]))
			continue;
		if (k < c->nframes) {
			c->frame[i] = c->frames[k++];
			continue;
		}
		shadow_store(&ctx->shadow, c->vpn + i, 0);
		c->status[i] = HETMM_MIGRATE_SKIP_NOMEM;
		unclaimed = true;
	}
	if (unclaimed)
		chunk_wake(ctx, c);
	chunk_name_claims(ctx, pgmap, c);
}

/*
 * Frames for the claimed pages, in order; the rest are left unclaimed.
 * A THP gets a huge page's frames (pagemap_alloc_huge) and moves as one;
 * where the device has no such run it goes as base pages, as the kernel
 * splits a THP its device cannot hold whole.
 */
static void chunk_alloc_frames(struct hetmm_ctx *ctx,
			       struct hetmm_pagemap *pgmap, struct chunk *c,
			       size_t claimed)
{
	c->thp = chunk_is_thp(ctx, c, claimed);
	c->huge = c->thp && pagemap_alloc_huge(pgmap, c->frames);
	c->nframes = c->huge ? PMD_PAGES :
		     pagemap_alloc(pgmap, c->frames, claimed);
	if (c->nframes < claimed && (pgmap->flags & HETMM_PAGEMAP_EVICT))
		c->nframes += pagemap_alloc_evict(pgmap, c->frames + c->nframes,
						  claimed - c->nframes);
	chunk_assign_frames(ctx, pgmap, c);
}

/* A placed pagemap's frames, by name: a page whose frame is in use is
 * let go of (HETMM_MIGRATE_SKIP_BUSY). */
static void chunk_take_frames(struct hetmm_ctx *ctx,
			      struct hetmm_pagemap *pgmap, struct chunk *c)
{
	bool unclaimed = false;
	c->nframes = 0;
	for (size_t i = 0; i < c->n; i++) {
		if (!st_pending(c->status[i]))
			continue;
		uint32_t idx = (uint32_t)(c->place + i);
		if (pagemap_take(pgmap, idx)) {
			c->frame[i] = idx;
			c->frames[c->nframes++] = idx;
			continue;
		}
		shadow_store(&ctx->shadow, c->vpn + i, 0);
		c->status[i] = HETMM_MIGRATE_SKIP_BUSY;
		unclaimed = true;
	}
	if (unclaimed)
		chunk_wake(ctx, c);
	chunk_name_claims(ctx, pgmap, c);
}

/* Let go of the claimed pages marked in drop, and of their frames. */
static void chunk_let_go(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			 struct chunk *c, const bool *drop)
{
	uint32_t frames[CHUNK_PAGES];
	size_t n = 0;
	for (size_t i = 0; i < c->n; i++) {
		if (!drop[i])
			continue;
		chunk_unclaim(ctx, pgmap, c, i);
		frames[n++] = c->frame[i];
		c->status[i] = c->status[i] == ST_FAILED ?
			       HETMM_MIGRATE_SKIP_ERROR :
			       HETMM_MIGRATE_SKIP_BUSY;
	}
	if (n)
		pagemap_free(pgmap, frames, n, 0);
}

static bool page_has_data(uint8_t pflags)
{
	return pflags & (PG_PRESENT | PG_SWAPPED);
}

/* Is any page of [start, start + npages pages) unmapped? */
static bool range_has_gap(uintptr_t start, size_t npages)
{
	return msync((void *)start, npages * PAGE_SIZE, MS_ASYNC) &&
	       errno == ENOMEM;
}

/*
 * A page the process unmapped before its chunk was registered raised no
 * event, and pagemap shows it as a hole: it would go to the device as a
 * zero page of an address with no mapping, or for a coherent device be
 * mapped there.  Once the chunk is registered, msync(MS_ASYNC) finds
 * every such page: it only walks the mappings (a few hundred ns a chunk,
 * where mincore() walks the page tables too: 4.5 us) and fails with
 * ENOMEM over a gap.  A page unmapped later raises UNMAP, which marks its
 * claim GONE.  Only the chunk's holes need a look of their own, and only
 * when the chunk has a gap at all.
 */
static void chunk_drop_unmapped(struct hetmm_ctx *ctx,
				struct hetmm_pagemap *pgmap, struct chunk *c)
{
	if (!range_has_gap(c->start, c->n))
		return;
	bool drop[CHUNK_PAGES];
	for (size_t i = 0; i < c->n; i++)
		drop[i] = st_pending(c->status[i]) &&
			  !page_has_data(c->pflags[i]) &&
			  range_has_gap(chunk_addr(c, i), 1);
	chunk_let_go(ctx, pgmap, c, drop);
}

/* Holes have nothing to copy: they go to the device as zero pages.  No
 * hole can fill meanwhile: the range is registered and the pages BUSY. */
static void chunk_mark_holes(struct chunk *c)
{
	for (size_t i = 0; i < c->n; i++)
		if (st_pending(c->status[i]) && !page_has_data(c->pflags[i]))
			c->status[i] = c->populated ? ST_DONE_DATA
						    : ST_DONE_ZERO;
}

/*
 * A placed pagemap's pages that came back from the very frame they go to
 * and are still write-protected (nobody wrote them since: the first
 * write lifts the protection, fault_unprotect) need no copy: the frame
 * has their bytes.  We hold their claims, so no migration's protection
 * can be mistaken for it; they join the copied pages, to be zapped.
 */
static void chunk_mark_clean(struct hetmm_ctx *ctx,
			     struct hetmm_pagemap *pgmap, struct chunk *c)
{
	if (!pagemap_is_placed(pgmap))
		return;
	for (size_t i = 0; i < c->n; i++)
		if (st_pending(c->status[i]) &&
		    page_has_data(c->pflags[i]) &&
		    (c->pflags[i] & PG_UFFD_WP) &&
		    vtab_get(&ctx->placed_src, c->vpn + i) ==
		    pagemap_pfn(pgmap, c->frame[i]))
			c->status[i] = ST_COPIED;
}

/* A frame moved into must be a hole; make it one if a stray read of the
 * free frame left a zero page there. */
static void frame_clear(struct hetmm_pagemap *pgmap, uint32_t idx)
{
	madvise((void *)pagemap_remap_addr(pgmap, idx), PAGE_SIZE,
		MADV_DONTNEED);
}

static bool frame_is_stale(struct hetmm_pagemap *pgmap, uint32_t idx)
{
	return atomic_load_explicit(&pagemap_page(pgmap, idx)->owner,
				    memory_order_relaxed) & PAGE_STALE;
}

/*
 * Empty the chunk's frames that still hold a page copied out of them
 * (PAGE_STALE), one madvise per run of consecutive frames that has any:
 * the chunk owns them all, and none holds anything of value.  Device
 * memory raises no event (see hetmm_ctx.frames), so this costs a
 * syscall, not a round trip through the handler.
 */
static void frames_empty_stale(struct hetmm_pagemap *pgmap, struct chunk *c)
{
	for (size_t k = 0; k < c->nframes;) {
		size_t run = 1;
		bool stale = frame_is_stale(pgmap, c->frames[k]);
		while (k + run < c->nframes &&
		       c->frames[k + run] == c->frames[k] + run) {
			stale |= frame_is_stale(pgmap, c->frames[k + run]);
			run++;
		}
		if (stale) {
			madvise((void *)pagemap_remap_addr(pgmap, c->frames[k]),
				run * PAGE_SIZE, MADV_DONTNEED);
			for (size_t i = k; i < k + run; i++)
				atomic_fetch_and(&pagemap_page(pgmap,
						c->frames[i])->owner,
						~(uint64_t)PAGE_STALE);
		}
		k += run;
	}
}

/*
 * Move the pending pages that have data into their frames.  UFFDIO_MOVE
 * is atomic per page: a CPU access after it misses and waits on BUSY.
 * Pages the kernel refuses (shared with a fork child, pinned, read-only or
 * mlocked mappings) stay pending for the copy path.
 */
static void chunk_move(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
		       struct chunk *c)
{
	frames_empty_stale(pgmap, c);
	for (size_t i = 0; i < c->n;) {
		if (!st_pending(c->status[i])) {
			i++;
			continue;
		}
		size_t run = chunk_frame_run(c, i, st_pending);
		long got = uffd_fill(ctx->frames.fd, FILL_MOVE,
				     pagemap_remap_addr(pgmap, c->frame[i]),
				     chunk_addr(c, i), run * PAGE_SIZE, 0);
		size_t moved = got > 0 ? (size_t)got / PAGE_SIZE : 0;
		for (size_t k = 0; k < moved; k++)
			c->status[i + k] = ST_DONE_DATA;
		if (moved == run) {
			i += run;
			continue;
		}
		/* Stopped at page i + moved; got is its error if it was the
		 * first, else ask again about that page alone. */
		size_t p = i + moved;
		if (moved)
			got = uffd_fill(ctx->frames.fd, FILL_MOVE,
					pagemap_remap_addr(pgmap, c->frame[p]),
					chunk_addr(c, p), PAGE_SIZE, 0);
		if (got > 0) {
			c->status[p] = ST_DONE_DATA;
		} else if (got == -ENOENT) {
			c->status[p] = ST_DONE_ZERO;    /* zapped meanwhile */
		} else if (got == -EEXIST) {
			frame_clear(pgmap, c->frame[p]);
			continue;                       /* retry from p */
		}
		/* Anything else: leave it pending for the copy path. */
		i = p + 1;
	}
}

static int run_wp(struct hetmm_ctx *ctx, struct chunk *c, size_t i, size_t n)
{
	return uffd_writeprotect(ctx->uffd.fd, chunk_addr(c, i),
				 n * PAGE_SIZE, WP_ON);
}

/* Take a run of copied pages out of the process: a THP copied whole by
 * a move of its PMD (no event to wait for: order.c), the rest zapped. */
static int run_zap(struct hetmm_ctx *ctx, struct chunk *c, size_t i, size_t n)
{
	uintptr_t start = chunk_addr(c, i), end = chunk_addr(c, i + n);
	if (c->thp && n == c->n)
		start += migrator_take(ctx, c->migrator, start);
	return start == end ? 0 : migrator_zap(ctx, c->migrator, start, end);
}

/* A run's copy ended: copied, or failed (the pages stay in system
 * memory).  -EFAULT: its source went away under the copy (hetmm.h,
 * "Process memory"), which is the process's doing, not the device's. */
static void chunk_copied(struct chunk *c, size_t i, size_t n, int err)
{
	memset(&c->status[i], !err ? ST_COPIED :
	       err == -EFAULT ? ST_VANISHED : ST_FAILED, n);
}

/* Asynchronous copies: the chunk's pending runs, from page *next on. */
struct chunk_pipe {
	struct chunk *c;
	size_t next;
};

static bool chunk_next_run(void *arg, struct copy_req *r)
{
	struct chunk_pipe *p = arg;
	struct chunk *c = p->c;
	while (p->next < c->n && !st_pending(c->status[p->next]) &&
	       !st_staged(c->status[p->next]))
		p->next++;
	if (p->next >= c->n)
		return false;
	size_t i = p->next;
	bool staged = st_staged(c->status[i]);
	size_t run = chunk_frame_run(c, i, staged ? st_staged : st_pending);
	*r = (struct copy_req){ .index = c->frame[i],
				.mem = (void *)(staged ? stage_addr(c, i) :
						chunk_addr(c, i)),
				.nr = run, .tag = i };
	p->next = i + run;
	return true;
}

static void chunk_run_copied(void *arg, const struct copy_req *r, int err,
			     void *staging)
{
	(void)staging;
	chunk_copied(((struct chunk_pipe *)arg)->c, r->tag, r->nr, err);
}

/*
 * Copy runs of pending pages with consecutive frames: one call each, or
 * with an asynchronous driver all at once, in pieces.  A run whose copy
 * fails is marked ST_FAILED; the others go on.
 */
static void chunk_copy_pending(struct hetmm_pagemap *pgmap, struct chunk *c)
{
	if (copy_is_async(pgmap)) {
		struct chunk_pipe p = { c, 0 };
		copy_pipe(pgmap, true, chunk_next_run, chunk_run_copied, &p);
		return;
	}
	for (size_t i = 0; i < c->n;) {
		if (!st_pending(c->status[i])) {
			i++;
			continue;
		}
		size_t run = chunk_frame_run(c, i, st_pending);
		int rc = pgmap->ops->copy_to_device(pgmap, c->frame[i],
				(const void *)chunk_addr(c, i), run);
		if (rc && copy_error_is_device(true, rc))
			STAT_ADD(pgmap->ctx, copy_errors, 1);
		chunk_copied(c, i, run, rc);
		i += run;
	}
}

/*
 * chunk_copy_pending as c->migrator's copy (migrator_copying): a read of
 * a page the process discarded meanwhile gets zeroes, as the kernel's
 * copy would, instead of waiting on the chunk's claim for a commit that
 * waits for the copy.
 */
static void chunk_copy_recorded(struct hetmm_pagemap *pgmap, struct chunk *c)
{
	migrator_copying(c->migrator, c->start, chunk_addr(c, c->n),
			 copy_is_async(pgmap));
	TEST_HOOK(TEST_HOOK_TO_DEVICE_COPYING, c->start, c->n * PAGE_SIZE);
	chunk_copy_pending(pgmap, c);
	migrator_copying(c->migrator, 0, 0, false);
}

static int run_mark_wp(struct hetmm_ctx *ctx, struct chunk *c, size_t i,
		       size_t n)
{
	int rc = run_wp(ctx, c, i, n);
	if (rc == 0)
		memset(&c->wp[i], 1, n);
	return rc;
}

/*
 * Lift the write protection this chunk set, while its pages are still
 * BUSY: once a claim is let go another migration may protect the page
 * again, and lifting it after that would open a window for a lost write.
 * A page mremap took away took its protection along.
 */
static void chunk_unprotect(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			    struct chunk *c)
{
	for (size_t i = 0; i < c->n;) {
		if (!c->wp[i]) {
			i++;
			continue;
		}
		size_t run = 1;
		while (i + run < c->n && c->wp[i + run])
			run++;
		uffd_writeprotect(ctx->uffd.fd, chunk_addr(c, i),
				  run * PAGE_SIZE, 0);
		for (size_t k = i; k < i + run; k++) {
			uint64_t at = chunk_claim_vpn(ctx, pgmap, c, k);
			if (at && at != c->vpn + k)
				uffd_writeprotect(ctx->uffd.fd,
						  vpn_to_addr(at), PAGE_SIZE, 0);
		}
		memset(&c->wp[i], 0, run);
		i += run;
	}
}

/* Let go of the pages the copy path could not finish, or whose copy
 * failed: in system memory, wherever mremap took them (chunk_unclaim
 * follows their claims). */
static void chunk_drop_unfinished(struct hetmm_ctx *ctx,
				  struct hetmm_pagemap *pgmap, struct chunk *c)
{
	chunk_unprotect(ctx, pgmap, c);
	bool drop[CHUNK_PAGES];
	for (size_t i = 0; i < c->n; i++)
		drop[i] = st_pending(c->status[i]) ||
			  st_copied(c->status[i]) ||
			  c->status[i] == ST_FAILED ||
			  c->status[i] == ST_VANISHED;
	chunk_let_go(ctx, pgmap, c, drop);
}

/*
 * A zap failed, but madvise zaps what it can before it says so (the
 * process unmapped part of the range meanwhile, say): a copied page that
 * is no longer there exists only on the device now and must stay there.
 * Unmapped pages among them are marked GONE and dropped at the commit.
 */
static void chunk_keep_zapped(struct hetmm_ctx *ctx, struct chunk *c)
{
	uint8_t pf[CHUNK_PAGES];
	if (vma_page_presence(&ctx->vmaq, c->start, c->n, pf))
		return;
	for (size_t i = 0; i < c->n; i++)
		if (st_copied(c->status[i]) && !page_has_data(pf[i]))
			c->status[i] = ST_DONE_DATA;
}

/* Write-protect the pages to copy. */
static int chunk_protect(struct hetmm_ctx *ctx, struct chunk *c)
{
	return for_each_run(ctx, c, st_pending, run_mark_wp);
}

/* Zap the copied pages, for c->migrator (the sync is the caller's). */
static int chunk_zap(struct hetmm_ctx *ctx, struct chunk *c)
{
	return for_each_run(ctx, c, st_copied, run_zap);
}

/*
 * Empty the chunk's stage: staged pages that did not reach the device
 * (all of them, before any copy) go back where their claims are (mremap
 * may have carried them), pending again or failed, before the claims
 * are let go of: until then a fault there waits.  A page the process
 * unmapped meanwhile is gone with its mapping.  The rest are freed with
 * the stage (no event: the frames userfaultfd has none).
 */
static void chunk_unstage(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			  struct chunk *c)
{
	if (!c->stage)
		return;
	migrator_staged(c->migrator, c->stage_slot, 0, 0);
	for (size_t i = 0; i < c->n; i++) {
		if (!c->staged[i] || st_copied(c->status[i]))
			continue;
		uint64_t at = chunk_claim_vpn(ctx, pgmap, c, i);
		if (at)
			uffd_fill(ctx->uffd.fd, FILL_MOVE, vpn_to_addr(at),
				  stage_addr(c, i), PAGE_SIZE, 0);
		if (st_staged(c->status[i]))
			c->status[i] = ST_PENDING;
	}
	madvise(c->stage, PMD_SIZE, MADV_DONTNEED);
	memset(c->staged, 0, c->n);
	c->stage = NULL;
}

/* The copy path's end, its zaps synced (or its error rc): copied pages
 * are on the device; those whose copy failed or that could not be
 * zapped are let go of. */
static void chunk_copy_end(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			   struct chunk *c, int rc)
{
	chunk_unstage(ctx, pgmap, c);
	if (rc) {
		chunk_keep_zapped(ctx, c);
		chunk_drop_unfinished(ctx, pgmap, c);
		return;
	}
	for (size_t i = 0; i < c->n; i++)
		if (st_copied(c->status[i]))
			c->status[i] = ST_DONE_DATA;
	/* Pages whose copy failed are still mapped: let them go. */
	chunk_drop_unfinished(ctx, pgmap, c);
}

/*
 * The copy path, for pages that could not be moved: write-protect, copy,
 * zap.  A write racing it waits in a write-protect fault until the commit
 * lifts the protection, then faults the page back with the write to come.
 */
static void chunk_copy(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
		       struct chunk *c)
{
	int rc = chunk_protect(ctx, c);
	c->migrator = migrator_enter(ctx, gettid());
	if (rc == 0) {
		chunk_copy_recorded(pgmap, c);
		rc = chunk_zap(ctx, c);
		migrator_zap_sync(ctx, c->migrator);
	}
	migrator_leave(c->migrator);
	chunk_copy_end(ctx, pgmap, c, rc);
}

/*
 * Let go of the copied pages the process discarded or unmapped since the
 * claim (lifecycle.c marks their claims GONE), once the handler has
 * handled every event raised so far: they stay in system memory, zapped
 * (reading zeroes) or gone, as the kernel's migration leaves out a page
 * whose migration entry was zapped.  Mapped, their frames would show the
 * bytes copied before the discard.  A discard after this look meets the
 * page mapped: chunk_publish_coherent.
 */
static void chunk_drop_gone(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			    struct chunk *c)
{
	handler_sync(ctx);
	bool drop[CHUNK_PAGES];
	for (size_t i = 0; i < c->n; i++)
		drop[i] = st_copied(c->status[i]) &&
			  shadow_claim_at(&ctx->shadow, c->vpn + i,
					  shadow_filling()) == LET_GO_GONE;
	chunk_let_go(ctx, pgmap, c, drop);
}

/* Map runs of copied pages with consecutive frames over their addresses. */
static void chunk_map_coherent(struct hetmm_ctx *ctx,
			       struct hetmm_pagemap *pgmap, struct chunk *c)
{
	chunk_drop_gone(ctx, pgmap, c);
	for (size_t i = 0; i < c->n;) {
		if (!st_copied(c->status[i])) {
			i++;
			continue;
		}
		size_t run = chunk_frame_run(c, i, st_copied);
		if (coherent_map(ctx, pgmap, chunk_addr(c, i), c->frame[i],
				 run) == 0) {
			/* The protected mapping is gone with its pages. */
			memset(&c->status[i], ST_DONE_DATA, run);
			memset(&c->wp[i], 0, run);
		}
		i += run;
	}
}

/*
 * The copy path of a coherent device: holes become zeroed frames, the
 * rest is write-protected and copied, then the device's pages are mapped
 * over the range (coherent.c).  A write racing it waits in a
 * write-protect fault (a hole: a missing fault) until the commit wakes
 * it, then lands in device memory through the new mapping.
 */
static void chunk_copy_coherent(struct hetmm_ctx *ctx,
				struct hetmm_pagemap *pgmap, struct chunk *c)
{
	for (size_t i = 0; i < c->n; i++) {
		if (c->status[i] != ST_DONE_ZERO)
			continue;
		memset(pgmap->ops->page_address(pgmap, c->frame[i]), 0,
		       PAGE_SIZE);
		c->status[i] = ST_COPIED;
	}
	int rc = for_each_run(ctx, c, st_pending, run_mark_wp);
	if (rc == 0) {
		c->migrator = migrator_enter(ctx, gettid());
		chunk_copy_recorded(pgmap, c);
		migrator_leave(c->migrator);
		chunk_map_coherent(ctx, pgmap, c);
	}
	/* What could not be mapped stays in system memory. */
	chunk_drop_unfinished(ctx, pgmap, c);
}

/*
 * mremap carried page i's claim elsewhere, and the page is there in
 * system memory: the kernel moved it before the migration took it out
 * of the process (a move or copy then found the old place empty or
 * gone).  It stays a system page, and the frame is let go of.
 */
static bool kernel_took_page(struct hetmm_ctx *ctx,
			     struct hetmm_pagemap *pgmap,
			     const struct chunk *c, size_t i)
{
	uint64_t at = chunk_claim_vpn(ctx, pgmap, c, i);
	uint8_t pf = 0;
	return at && at != c->vpn + i &&
	       vma_page_presence(&ctx->vmaq, vpn_to_addr(at), 1, &pf) == 0 &&
	       page_has_data(pf);
}

/* Did every page of a huge chunk reach the device?  Then its frames are
 * one huge page; else its pages stay base pages (a split). */
static bool chunk_whole(const struct chunk *c)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->status[i] != ST_DONE_DATA &&
		    c->status[i] != ST_DONE_ZERO)
			return false;
	return true;
}

/* Did the chunk have a page in the process when it was collected? */
static bool chunk_had_pages(const struct chunk *c)
{
	for (size_t i = 0; i < c->n; i++)
		if (page_has_data(c->pflags[i]))
			return true;
	return false;
}

/*
 * Markers where the chunk's pages left the process for a private device
 * (marker.h), one ioctl per run, before publication: until then a fault
 * there waits for the claim, so nothing is installed that the ioctl
 * would write-protect instead.  Where mremap took a page away meanwhile
 * (MREMAP_DONTUNMAP: its old place stays mapped, empty) the marker
 * lands at the old place with no device page behind it: a fault there
 * fills zeroes over it as over a hole (asking the kernel where each
 * claim is now cost a tenth of the migration).  A marker keeps a page
 * table, where a PMD whose pages all left would otherwise have none (a
 * THP taken whole, a chunk that was all holes, base pages zapped by a
 * kernel that frees empty page tables), and a PMD with a page table
 * takes no THP back whole: so none on those chunks, nor on a device
 * with asynchronous copies, whose pages come back in whole PMDs
 * (pmdback.c).  lifecycle.c decides on the markers there are.
 */
static void chunk_mark(struct hetmm_ctx *ctx,
		       const struct hetmm_pagemap *pgmap, const struct chunk *c)
{
	if (!markers_kept(ctx) || pagemap_is_coherent(pgmap) ||
	    copy_is_async(pgmap) || c->thp || !chunk_had_pages(c))
		return;
	for (size_t i = 0; i < c->n;) {
		size_t run = 0;
		while (i + run < c->n && st_done(c->status[i + run]))
			run++;
		if (run)
			markers_set(ctx, chunk_addr(c, i), run);
		i += run ? run : 1;
	}
}

/*
 * Publish coherent page i as e.  Its mapping is in place, the frame's: if
 * the process discarded the page since chunk_drop_gone looked (its claim
 * marked GONE), it reads zeroes, as a discarded coherent page does
 * (lifecycle.c), and is published all the same.  One it unmapped is
 * dropped.  A write the process made after its discard and before this
 * is lost, as one made before the handler handles the discard of a
 * published coherent page is.
 */
static bool chunk_publish_coherent(struct hetmm_ctx *ctx,
				   struct hetmm_pagemap *pgmap,
				   const struct chunk *c, size_t i, uint64_t e)
{
	uint64_t vpn = c->vpn + i, claim = shadow_filling();
	enum shadow_let_go st = shadow_try_release(&ctx->shadow, vpn, claim, e);
	if (st == LET_GO_DONE)
		return true;
	if (st != LET_GO_GONE || range_has_gap(chunk_addr(c, i), 1))
		return publish_or_drop(ctx, vpn, claim, e, false);
	memset(pgmap->ops->page_address(pgmap, c->frame[i]), 0, PAGE_SIZE);
	return shadow_publish_gone(&ctx->shadow, vpn, claim, e);
}

/* Commit, but for the wake: metadata, then publish.  huge: PAGE_HUGE
 * for every frame (the chunks of a huge device page all arrived).
 * Returns the pages moved. */
static size_t chunk_publish(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			    struct chunk *c, uint64_t huge)
{
	size_t moved = 0;
	chunk_unprotect(ctx, pgmap, c);
	chunk_mark(ctx, pgmap, c);
	for (size_t i = 0; i < c->n; i++) {
		uint8_t st = c->status[i];
		if (st != ST_DONE_DATA && st != ST_DONE_ZERO)
			continue;
		if (kernel_took_page(ctx, pgmap, c, i)) {
			chunk_unclaim(ctx, pgmap, c, i);
			uint32_t frame = c->frame[i];
			pagemap_free(pgmap, &frame, 1, 0);
			c->status[i] = HETMM_MIGRATE_SKIP_BUSY;
			continue;
		}
		struct hetmm_page *p = pagemap_page(pgmap, c->frame[i]);
		if (st == ST_DONE_ZERO)
			atomic_fetch_add(&pgmap->nr_zero, 1);
		atomic_store(&p->refcount, 1);
		/* The address is where mremap carried the claim, if it did;
		 * the handler may carry it again meanwhile. */
		uint64_t o = atomic_load(&p->owner);
		while (!atomic_compare_exchange_weak(&p->owner, &o,
				(o & PAGE_MASK) | HETMM_PAGE_ALLOCATED |
				(st == ST_DONE_ZERO ? HETMM_PAGE_ZERO : 0) | huge))
			;
		uint64_t e = shadow_device(pagemap_pfn(pgmap, c->frame[i]));
		if (pagemap_is_coherent(pgmap) ?
		    !chunk_publish_coherent(ctx, pgmap, c, i, e) :
		    !publish_or_drop(ctx, c->vpn + i, chunk_claim(pgmap, c, i),
				     e, false)) {
			c->status[i] = HETMM_MIGRATE_SKIP_BUSY;  /* unmapped */
			continue;
		}
		c->status[i] = HETMM_MIGRATE_MOVED;
		moved++;
	}
	return moved;
}

/* The commit's end: wake everyone who waited, and count. */
static void chunk_done(struct hetmm_ctx *ctx, struct chunk *c, size_t moved)
{
	chunk_wake(ctx, c);
	atomic_fetch_add(&ctx->stats.device_resident, (int64_t)moved);
	STAT_ADD(ctx, to_device_pages, moved);
	TRACE3(migrate_to_device, vpn_to_addr(c->vpn), c->n, moved);
}

/* Give back every claim and frame: nothing of the chunk moved yet. */
static void chunk_abort(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			struct chunk *c)
{
	for (size_t i = 0; i < c->n; i++)
		if (st_claimed(c->status[i]))
			chunk_unclaim(ctx, pgmap, c, i);
	pagemap_free(pgmap, c->frames, c->nframes, 0);
	chunk_wake(ctx, c);
}

/* Claim the chunk's pages: how many it holds. */
static size_t chunk_begin(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			  struct chunk *c)
{
	memset(c->wp, 0, c->n);
	memset(c->staged, 0, c->n);
	c->stage = NULL;
	c->thp = c->huge = false;
	c->nframes = 0;
	return chunk_collect(ctx, pgmap, c);
}

/*
 * Between the frames and the copy: register, look.  On an error the
 * chunk is given back (chunk_abort) and the error returned.
 */
static int chunk_look(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
		      struct chunk *c)
{
	/* The whole mapping, so that the process can still mremap it. */
	int rc = watch_vma(ctx, c->vma, c->start, c->start + c->n * PAGE_SIZE);
	if (!rc)
		rc = vma_page_presence(&ctx->vmaq, c->start, c->n, c->pflags);
	if (rc) {
		chunk_abort(ctx, pgmap, c);
		return rc;
	}
	chunk_drop_unmapped(ctx, pgmap, c);
	/* The device must not keep using the CPU copy it is replacing. */
	notifiers_invalidate(ctx, c->start, c->start + c->n * PAGE_SIZE,
			     HETMM_EVENT_MIGRATE);

	chunk_mark_holes(c);
	TEST_HOOK(TEST_HOOK_TO_DEVICE_CLAIMED, c->start, c->n * PAGE_SIZE);
	chunk_mark_clean(ctx, pgmap, c);
	return 0;
}

/*
 * Everything between the frames and the commit: register, look, copy.
 * On an error the chunk is given back (chunk_abort) and the error
 * returned.
 */
static int chunk_work(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
		      struct chunk *c)
{
	int rc = chunk_look(ctx, pgmap, c);
	if (rc)
		return rc;
	if (pagemap_is_coherent(pgmap)) {
		chunk_copy_coherent(ctx, pgmap, c);
	} else {
		if (back_can_move(ctx, pgmap))
			chunk_move(ctx, pgmap, c);
		chunk_copy(ctx, pgmap, c);
	}
	TEST_HOOK(TEST_HOOK_TO_DEVICE_COPIED, c->start, c->n * PAGE_SIZE);
	return 0;
}

/* Claim the chunk's pages and give them frames: false if it holds
 * none. */
static bool chunk_take(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
		       struct chunk *c)
{
	size_t claimed = chunk_begin(ctx, pgmap, c);
	if (!claimed)
		return false;
	if (pagemap_is_placed(pgmap))
		chunk_take_frames(ctx, pgmap, c);
	else
		chunk_alloc_frames(ctx, pgmap, c, claimed);
	return c->nframes != 0;
}

/* The commit: publish and wake. */
static void chunk_commit(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			 struct chunk *c)
{
	uint64_t huge = c->huge && chunk_whole(c) ? PAGE_HUGE : 0;
	chunk_done(ctx, c, chunk_publish(ctx, pgmap, c, huge));
}

static int chunk_to_device(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			   struct chunk *c)
{
	if (!chunk_take(ctx, pgmap, c))
		return 0;
	int rc = chunk_work(ctx, pgmap, c);
	if (rc)
		return rc;
	chunk_commit(ctx, pgmap, c);
	return 0;
}

/*
 * A PMD block of several chunks (16 and 64 KiB pages: base.h), worked
 * together so that a transparent huge page mapping it moves as one huge
 * device page, as one chunk does at 4 KiB pages: every page of every
 * chunk is claimed before any frame is taken; if all are, and all are
 * mapped by the THP's PMD, a huge page's frames (pagemap_alloc_huge) are
 * dealt to the chunks in order; each chunk is copied; only then are all
 * published, PAGE_HUGE on every frame if every page arrived, and only
 * then woken.  Anything short of that (a page someone else holds, no
 * aligned run of free frames, a page that failed) leaves base pages: the
 * kernel's split.  chunks[] are the block's, start, vpn and n set.
 */
struct block {
	struct chunk *chunks;             /* PMD_PAGES / CHUNK_PAGES */
	size_t nchunks;
	size_t *count;                    /* per chunk: claimed, then moved */
	uint32_t *frames;                 /* PMD_PAGES, the huge page's */
};

static struct block *block_new(void)
{
	struct block *b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->nchunks = PMD_PAGES / CHUNK_PAGES;
	b->chunks = calloc(b->nchunks, sizeof(*b->chunks));
	b->count = calloc(b->nchunks, sizeof(*b->count));
	b->frames = calloc(PMD_PAGES, sizeof(*b->frames));
	if (!b->chunks || !b->count || !b->frames) {
		free(b->chunks);
		free(b->count);
		free(b->frames);
		free(b);
		return NULL;
	}
	return b;
}

static void block_free(struct block *b)
{
	if (!b)
		return;
	free(b->chunks);
	free(b->count);
	free(b->frames);
	free(b);
}

/* Claimed whole, and one THP mapped by its PMD? */
static bool block_is_thp(struct hetmm_ctx *ctx, struct block *b)
{
	for (size_t j = 0; j < b->nchunks; j++)
		if (!chunk_all_thp(ctx, &b->chunks[j], b->count[j]))
			return false;
	return true;
}

/* Frames for each chunk: its share of a huge page's, or its own. */
static void block_frames(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			 struct block *b, bool huge)
{
	for (size_t j = 0; j < b->nchunks; j++) {
		struct chunk *c = &b->chunks[j];
		if (!huge) {
			if (b->count[j])
				chunk_alloc_frames(ctx, pgmap, c, b->count[j]);
			continue;
		}
		memcpy(c->frames, b->frames + j * CHUNK_PAGES,
		       CHUNK_PAGES * sizeof(*c->frames));
		c->nframes = CHUNK_PAGES;
		chunk_assign_frames(ctx, pgmap, c);
	}
}

static int block_to_device(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			   struct block *b)
{
	size_t claimed = 0;
	for (size_t j = 0; j < b->nchunks; j++)
		claimed += b->count[j] = chunk_begin(ctx, pgmap,
						       &b->chunks[j]);
	bool huge = claimed == PMD_PAGES && block_is_thp(ctx, b) &&
		    pagemap_alloc_huge(pgmap, b->frames);
	block_frames(ctx, pgmap, b, huge);

	int rc = 0;
	size_t worked = 0;   /* chunks copied, to be committed */
	for (; worked < b->nchunks && !rc; worked++)
		if (b->chunks[worked].nframes)
			rc = chunk_work(ctx, pgmap, &b->chunks[worked]);
	if (rc) {
		/* chunk worked - 1 gave itself back; the rest never began */
		for (size_t j = worked; j < b->nchunks; j++)
			chunk_abort(ctx, pgmap, &b->chunks[j]);
		worked--;
	}
	huge &= !rc;
	for (size_t j = 0; huge && j < b->nchunks; j++)
		huge = chunk_whole(&b->chunks[j]);
	for (size_t j = 0; j < worked; j++)
		b->count[j] = b->chunks[j].nframes ?
			      chunk_publish(ctx, pgmap, &b->chunks[j],
					    huge ? PAGE_HUGE : 0) : 0;
	for (size_t j = 0; j < worked; j++)
		if (b->chunks[j].nframes)
			chunk_done(ctx, &b->chunks[j], b->count[j]);
	return rc;
}

struct to_device_totals {
	size_t moved;
	size_t nomem;
	size_t error;
};

static void chunk_report(struct chunk *c, size_t page0,
			 struct hetmm_migrate_report *rep,
			 struct to_device_totals *t, struct hetmm_ctx *ctx)
{
	size_t skipped = 0;
	for (size_t i = 0; i < c->n; i++) {
		report_page(rep, page0 + i,
			      (enum hetmm_migrate_status)c->status[i]);
		if (c->status[i] == HETMM_MIGRATE_MOVED)
			t->moved++;
		else
			skipped++;
		if (c->status[i] == HETMM_MIGRATE_SKIP_NOMEM)
			t->nomem++;
		if (c->status[i] == HETMM_MIGRATE_SKIP_ERROR)
			t->error++;
	}
	STAT_ADD(ctx, skipped_pages, skipped);
}

/*
 * A shared or file mapping is not migrated; but the process's own pages
 * on a coherent device are mapped that way, and the shadow knows them:
 * already there, or on another device.
 */
static void report_mapped(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			  const struct vma *v, uintptr_t a, uintptr_t end,
			  size_t page0, struct hetmm_migrate_report *rep)
{
	enum hetmm_migrate_status other = (v->flags & VMA_SHARED) ?
		HETMM_MIGRATE_SKIP_SHARED : HETMM_MIGRATE_SKIP_FILE;
	size_t n = (end - a) >> PAGE_SHIFT;
	for (size_t i = 0; i < n; i++) {
		uint64_t e = shadow_get(&ctx->shadow, addr_to_vpn(a) + i);
		report_page(rep, page0 + i, shadow_on_device(e) ?
			      classify_unclaimable(e, pgmap) : other);
	}
	STAT_ADD(ctx, skipped_pages, n);
}

/* Chunks end at chunk-aligned boundaries so that huge pages move whole
 * where a chunk is a PMD (4 KiB pages: base.h), and a PMD block of
 * several chunks starts at one (block_to_device). */
static size_t chunk_pages(uintptr_t a, uintptr_t end)
{
	uintptr_t boundary = (a + CHUNK_SIZE) & ~(uintptr_t)(CHUNK_SIZE - 1);
	return (MIN(boundary, end) - a) >> PAGE_SHIFT;
}

/* Where the pages go: page i of the call to frame place + i of a placed
 * pagemap, holes with their frames' bytes if populated. */
struct placement {
	uint64_t place;
	bool populated;
};

/* Work the PMD block at a as one (block_to_device)?  Where a PMD is
 * several chunks, the block lies whole in [a, end) and its first page is
 * mapped by a PMD: a look before the claims, which decide. */
static bool block_wanted(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			 const struct vma *v, uintptr_t a, uintptr_t end)
{
	uint8_t pf = 0;
	return PMD_PAGES > CHUNK_PAGES && !pagemap_is_placed(pgmap) &&
	       !(a & (PMD_SIZE - 1)) && end - a >= PMD_SIZE &&
	       !vma_page_huge(&ctx->vmaq, v, a, 1, &pf) && (pf & PG_HUGE);
}

/* The PMD block at a, reported as migrate_segment reports a chunk. */
static int migrate_block(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			 const struct vma *v, struct block *b, uintptr_t a,
			 size_t page0, struct hetmm_migrate_report *rep,
			 struct to_device_totals *t)
{
	for (size_t j = 0; j < b->nchunks; j++) {
		struct chunk *c = &b->chunks[j];
		memset(c, 0, sizeof(*c));
		c->vma = v;
		c->start = a + j * CHUNK_SIZE;
		c->vpn = addr_to_vpn(c->start);
		c->n = CHUNK_PAGES;
	}
	int rc = block_to_device(ctx, pgmap, b);
	if (rc)
		return rc;
	for (size_t j = 0; j < b->nchunks; j++) {
		struct chunk *c = &b->chunks[j];
		peer_migrate(ctx, pgmap, c->start, c->n, c->status);
		chunk_report(c, page0 + j * CHUNK_PAGES, rep, t, ctx);
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * A train of chunks: asynchronous copies kept in flight across chunks
 *
 * Chunk by chunk, the copy path of an asynchronous pagemap fills the
 * queue with one chunk's copies (8 of HETMM_COPY_MAX_PAGES) and lets it
 * drain before the next chunk is claimed, and each chunk waits for the
 * handler twice in its zap (madvise until the REMOVE is read, the sync
 * until it is handled).  A train keeps up to TRAIN_CHUNKS chunks claimed
 * at once: each is claimed, looked at and protected, and its copies join
 * one pipeline (copy.h) that stays full across chunks, as a transport's
 * own stream is kept full.  The oldest chunks retire as soon as their
 * copies are done, those done together with one sync for all their zaps
 * (migrator_zap_sync), then each committed, while the newer chunks'
 * copies are in flight.  Retiring no later keeps short the time a zap's
 * range stands for the migrator's (migrators_zapping), in which a
 * discard of the process's there is taken for the zap's and lost.
 *
 * Not for a pagemap that evicts to make room: the eviction's own copies
 * would wait for queue slots the train holds.
 */
/* More chunks than a full queue's copies span (48 of 64 pages: 6). */
#define TRAIN_CHUNKS 8
/* A stage each (chunk_stage). */
_Static_assert(TRAIN_CHUNKS <= MIGRATOR_STAGES, "a stage per chunk");

struct train {
	struct hetmm_ctx *ctx;
	struct hetmm_pagemap *pgmap;
	struct migrator *m;          /* for the copies and the zaps */
	struct copy_pipe pipe;
	struct chunk *c;             /* cap of them, a ring */
	size_t cap, head, count;     /* chunks in the train, oldest first */
	struct hetmm_migrate_report *rep;
	struct to_device_totals *t;
};

static bool train_wanted(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap)
{
	return copy_is_async(pgmap) && !pagemap_is_coherent(pgmap) &&
	       !back_can_move(ctx, pgmap) &&
	       !(pgmap->flags & HETMM_PAGEMAP_EVICT) &&
	       PMD_PAGES <= CHUNK_PAGES;   /* no PMD block of chunks */
}

/* The k-th oldest chunk of the train. */
static struct chunk *train_chunk(struct train *tr, size_t k)
{
	return &tr->c[(tr->head + k) % tr->cap];
}

/* A piece of chunk r->flags is copied, or failed. */
static void train_copied(void *arg, const struct copy_req *r, int err,
			 void *staging)
{
	(void)staging;
	struct chunk *c = &((struct train *)arg)->c[r->flags];
	chunk_copied(c, r->tag, r->nr, err);
	c->copying -= r->nr;
}

/* The pages the driver may be copying (migrator_copying): the train's
 * chunks from the k-th oldest on, one run of addresses. */
static void train_copying(struct train *tr, size_t k)
{
	if (k >= tr->count) {
		migrator_copying(tr->m, 0, 0, false);
		return;
	}
	struct chunk *last = train_chunk(tr, tr->count - 1);
	migrator_copying(tr->m, train_chunk(tr, k)->start,
			 chunk_addr(last, last->n), true);
}

/* Move the pending run of pages [*i, *i + run) into the chunk's stage,
 * *i past those moved and the first the kernel would not take: false if
 * it refused it (a hole the process made meanwhile is not refused). */
static bool stage_run(struct hetmm_ctx *ctx, struct chunk *c, size_t *ip,
		      size_t run)
{
	size_t i = *ip;
	long got = uffd_fill(ctx->frames.fd, FILL_MOVE, stage_addr(c, i),
			     chunk_addr(c, i), run * PAGE_SIZE, 0);
	size_t moved = got > 0 ? (size_t)got / PAGE_SIZE : 0;
	memset(&c->status[i], ST_STAGED, moved);
	memset(&c->staged[i], 1, moved);
	*ip = i += moved;
	if (moved == run)
		return true;
	/* Stopped at page i: got is its error if it was the first, else
	 * ask again about that page alone. */
	if (moved)
		got = uffd_fill(ctx->frames.fd, FILL_MOVE, stage_addr(c, i),
				chunk_addr(c, i), PAGE_SIZE, 0);
	*ip = i + 1;
	if (got > 0) {
		c->status[i] = ST_STAGED;
		c->staged[i] = true;
	} else if (got == -ENOENT) {   /* a hole now: discarded */
		c->status[i] = c->populated ? ST_DONE_DATA : ST_DONE_ZERO;
	}
	return got > 0 || got == -ENOENT;
}

/*
 * Move the chunk's pending pages into its stage, a PMD of the sink
 * (order.h, migrator_stage), for the copy to read there.  UFFDIO_MOVE is
 * atomic per page: a CPU access then misses and waits on BUSY, as it
 * would on the write protection, so the pages need none.  No munmap of
 * the process's can pull them from under the copy, so the driver's
 * hetmm_copy_from_process is a memcpy (procread.c), not the pinning
 * process_vm_readv.  The pages leave an empty page table, which the zap
 * still frees (a PMD with a table takes no THP back whole: pmdback.c),
 * with no page to free.  Not a THP: moved into a stage whose PMD has a
 * page table (base pages were there, and 6.12 keeps empty tables where
 * 6.18 frees them) it would be split, and its PMD in the process keep
 * a table too; it takes the copy path, and leaves by migrator_take.
 * Nor a placed pagemap's chunk, whose frames are taken by name and
 * which is not looked at for a THP (chunk_take_frames).
 *
 * All of the chunk or none of it: the handler must tell the process's
 * fault on a staged page (to wait for the commit) from the driver's
 * read of a page the process zapped under a copy (to fill with zeroes:
 * migrators_copying), and it tells them by the chunk's range
 * (migrator_staged).  So where the kernel refuses a page (shared with a
 * fork child, pinned, mlocked), the staged ones go back and the whole
 * chunk takes the copy path.
 */
static void chunk_stage(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			struct chunk *c, struct migrator *m, unsigned k)
{
	if (c->thp || pagemap_is_placed(pgmap))
		return;
	c->stage = migrator_stage(ctx, m, k);
	if (!c->stage)
		return;
	c->migrator = m;
	c->stage_slot = k;
	bool whole = true;
	for (size_t i = 0; i < c->n && whole;) {
		size_t run = 0;
		while (i + run < c->n && st_pending(c->status[i + run]))
			run++;
		if (!run)
			i++;
		else
			whole = stage_run(ctx, c, &i, run);
	}
	if (!whole) {
		chunk_unstage(ctx, pgmap, c);
		return;
	}
	migrator_staged(m, k, c->start, chunk_addr(c, c->n));
}

/* The train's newest chunk c: claimed, looked at, protected, its copies
 * started.  An error gives the chunk back (chunk_look). */
static int train_start(struct train *tr, struct chunk *c)
{
	if (!chunk_take(tr->ctx, tr->pgmap, c))
		return 0;   /* nothing to copy: its last_piece an older's */
	int rc = chunk_look(tr->ctx, tr->pgmap, c);
	if (rc)
		return rc;
	chunk_stage(tr->ctx, tr->pgmap, c, tr->m, (unsigned)(c - tr->c));
	c->protect_rc = chunk_protect(tr->ctx, c);
	if (c->protect_rc)
		return 0;
	train_copying(tr, 0);
	TEST_HOOK(TEST_HOOK_TO_DEVICE_COPYING, c->start, c->n * PAGE_SIZE);
	struct chunk_pipe p = { c, 0 };
	struct copy_req r;
	while (chunk_next_run(&p, &r)) {
		r.flags = (unsigned)(c - tr->c);
		c->copying += r.nr;
		copy_pipe_add(&tr->pipe, &r);
	}
	c->last_piece = copy_pipe_added(&tr->pipe);
	return 0;
}

/* How many of the oldest chunks have their copies done. */
static size_t train_done(struct train *tr)
{
	copy_pipe_finish_done(&tr->pipe);
	size_t n = 0;
	while (n < tr->count && !train_chunk(tr, n)->copying)
		n++;
	return n;
}

/* Retire the n oldest chunks: wait for their copies, zap them with one
 * sync for all, commit and report each. */
static void train_retire(struct train *tr, size_t n)
{
	struct hetmm_ctx *ctx = tr->ctx;
	int rc[TRAIN_CHUNKS];
	if (!n)
		return;
	/* One wait for the lot, not one per copy (copy_pipe_wait_until). */
	copy_pipe_wait_until(&tr->pipe, train_chunk(tr, n - 1)->last_piece);
	for (size_t k = 0; k < n; k++)
		while (train_chunk(tr, k)->copying)
			copy_pipe_finish_oldest(&tr->pipe);
	train_copying(tr, n);   /* before the zap: see migrator_copying */
	for (size_t k = 0; k < n; k++) {
		struct chunk *c = train_chunk(tr, k);
		rc[k] = c->protect_rc;
		c->migrator = tr->m;
		if (c->nframes && !rc[k])
			rc[k] = chunk_zap(ctx, c);
	}
	migrator_zap_sync(ctx, tr->m);
	for (size_t k = 0; k < n; k++) {
		struct chunk *c = train_chunk(tr, k);
		if (c->nframes) {
			chunk_copy_end(ctx, tr->pgmap, c, rc[k]);
			TEST_HOOK(TEST_HOOK_TO_DEVICE_COPIED, c->start,
				  c->n * PAGE_SIZE);
			chunk_commit(ctx, tr->pgmap, c);
		}
		peer_migrate(ctx, tr->pgmap, c->start, c->n, c->status);
		chunk_report(c, c->page0, tr->rep, tr->t, ctx);
	}
	tr->head = (tr->head + n) % tr->cap;
	tr->count -= n;
}

/*
 * The segment [a, end) through a train, reported as migrate_segment
 * reports it: false, having done nothing, if there is no memory for one.
 */
static bool train_segment(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			  const struct vma *v, uintptr_t a, uintptr_t end,
			  size_t page0, struct hetmm_migrate_report *rep,
			  struct to_device_totals *t,
			  const struct placement *pl, int *rcp)
{
	size_t chunks = (end - a + CHUNK_SIZE - 1) / CHUNK_SIZE + 1;
	struct train tr = { .ctx = ctx, .pgmap = pgmap, .rep = rep, .t = t,
			    .cap = MIN(chunks, (size_t)TRAIN_CHUNKS) };
	tr.c = malloc(tr.cap * sizeof(*tr.c));
	if (!tr.c)
		return false;
	tr.m = migrator_enter(ctx, gettid());
	copy_pipe_open(&tr.pipe, pgmap, true, false, train_copied, &tr);
	int rc = 0;
	while (a < end && !rc) {
		if (tr.count == tr.cap)
			train_retire(&tr, 1);   /* waits for its copies */
		struct chunk *c = train_chunk(&tr, tr.count++);
		c->vma = v;
		c->start = a;
		c->vpn = addr_to_vpn(a);
		c->n = chunk_pages(a, end);
		c->place = pl->place + page0;
		c->populated = pl->populated;
		c->page0 = page0;
		c->copying = 0;
		c->last_piece = copy_pipe_added(&tr.pipe);
		c->protect_rc = 0;
		rc = train_start(&tr, c);
		if (rc)
			tr.count--;     /* given back, not reported */
		page0 += c->n;
		a += c->n * PAGE_SIZE;
		train_retire(&tr, train_done(&tr));
	}
	train_retire(&tr, tr.count);
	copy_pipe_drain(&tr.pipe);
	migrator_leave(tr.m);
	free(tr.c);
	*rcp = rc;
	return true;
}

static int migrate_segment(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			   const struct vma *v, uintptr_t a, uintptr_t end,
			   size_t page0, struct hetmm_migrate_report *rep,
			   struct to_device_totals *t,
			   const struct placement *pl)
{
	int rc = 0;
	if (train_wanted(ctx, pgmap) &&
	    train_segment(ctx, pgmap, v, a, end, page0, rep, t, pl, &rc))
		return rc;
	struct chunk c = { .vma = v, .populated = pl->populated };
	struct block *b = NULL;   /* allocated at the first block, if any */
	while (a < end && !rc) {
		if (block_wanted(ctx, pgmap, v, a, end) &&
		    (b || (b = block_new()))) {
			rc = migrate_block(ctx, pgmap, v, b, a, page0, rep, t);
			page0 += PMD_PAGES;
			a += PMD_SIZE;
			continue;
		}
		c.place = pl->place + page0;
		c.start = a;
		c.vpn = addr_to_vpn(a);
		c.n = chunk_pages(a, end);
		rc = chunk_to_device(ctx, pgmap, &c);
		if (rc)
			break;
		/* Pages on a peer device come straight across. */
		peer_migrate(ctx, pgmap, c.start, c.n, c.status);
		chunk_report(&c, page0, rep, t, ctx);
		page0 += c.n;
		a += c.n * PAGE_SIZE;
	}
	block_free(b);
	return rc;
}

static int migrate_to(struct hetmm_pagemap *pgmap, void *addr, size_t len,
		      const struct placement *pl,
		      struct hetmm_migrate_report *report)
{
	struct hetmm_ctx *ctx = pgmap->ctx;
	if (copyq_dead(pgmap))
		return -EIO;   /* a copy timed out and may still run */
	uintptr_t start = (uintptr_t)addr, end = start + len;
	int rc = vma_check_accessible(&ctx->vmaq, start, end);
	if (rc)
		return rc;
	rc = pagemap_get(pgmap);
	if (rc)
		return rc;
	/* Events of munmap and mremap calls that returned are handled
	 * before any page of ours is published: see handler_sync(). */
	handler_sync(ctx);
	/* Before any page is published (release): what the fault path
	 * knows of density may be stale from now on. */
	atomic_fetch_add_explicit(&ctx->dense_gen, 1, memory_order_relaxed);
	/* A fork waits for us, and we for a fork to finish. */
	pthread_rwlock_rdlock(&ctx->fork_lock);
	if (report) {
		report->moved = 0;
		report->skipped = 0;
	}

	struct to_device_totals t = { 0, 0, 0 };
	struct vma v;
	for (uintptr_t a = start; a < end && !rc; a = v.end) {
		rc = vma_find(&ctx->vmaq, a, &v);
		if (rc) {
			rc = -EINVAL;   /* unmapped while we worked */
			break;
		}
		uintptr_t seg_end = MIN(v.end, end);
		size_t page0 = (a - start) >> PAGE_SHIFT;
		if (vma_is_private_anon(&v))
			rc = migrate_segment(ctx, pgmap, &v, a, seg_end, page0,
					     report, &t, pl);
		else
			report_mapped(ctx, pgmap, &v, a, seg_end, page0,
				      report);
	}
	pthread_rwlock_unlock(&ctx->fork_lock);
	pagemap_put(pgmap);
	if (rc)
		return rc;
	if (t.moved)
		return 0;
	if (t.error)
		return -EIO;
	return t.nomem ? -ENOMEM : -ENOENT;
}

/* The checks both calls make: 0, or the errno. */
static int migrate_check(struct hetmm_pagemap *pgmap, void *addr, size_t len)
{
	if (!pgmap)
		return -EINVAL;
	struct hetmm_ctx *ctx = pgmap->ctx;
	int rc = entry_user_range(ctx, addr, len);
	if (rc)
		return rc;
	if (!(ctx->uffd.features & UFFD_FEATURE_PAGEFAULT_FLAG_WP) ||
	    pagemap_is_fixed(pgmap))
		return -EOPNOTSUPP;   /* FS_DAX, GENERIC: nothing migrates */
	return 0;
}

int hetmm_migrate_to_device(struct hetmm_pagemap *pgmap, void *addr,
			    size_t len, struct hetmm_migrate_report *report)
{
	int rc = migrate_check(pgmap, addr, len);
	if (rc)
		return rc;
	if (pagemap_is_placed(pgmap))
		return -EOPNOTSUPP;   /* its frames have homes */
	struct placement pl = { 0, false };
	return migrate_to(pgmap, addr, len, &pl, report);
}

int hetmm_migrate_to_frames(struct hetmm_pagemap *pgmap, void *addr,
			    size_t len, uint64_t index, uint32_t flags,
			    struct hetmm_migrate_report *report)
{
	int rc = migrate_check(pgmap, addr, len);
	if (rc)
		return rc;
	if (flags & ~HETMM_MIGRATE_POPULATED)
		return -EINVAL;
	uint64_t npages = len >> PAGE_SHIFT;
	if (index > pgmap->nr_pages || npages > pgmap->nr_pages - index)
		return -EINVAL;
	if (!pagemap_is_placed(pgmap))
		return -EOPNOTSUPP;
	struct placement pl = { index, flags & HETMM_MIGRATE_POPULATED };
	return migrate_to(pgmap, addr, len, &pl, report);
}
