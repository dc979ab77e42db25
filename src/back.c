/* SPDX-License-Identifier: MIT */
/*
 * back.c - device pages back to system memory (the kernel's
 * migrate_vma_* with the device as the source, and the zap of device
 * entries whose process page is gone).
 *
 * A claimed run of device pages is installed atomically (the page appears
 * filled, then waiters wake): UFFDIO_MOVE from a remapping pagemap,
 * UFFDIO_ZEROPAGE for zero pages, UFFDIO_COPY from the device's
 * CPU-readable address or a staging copy otherwise.  The shadow is
 * cleared and frames freed before the wake, so a thread that resumes
 * finds the page where hetmm says it is.  Mirrors are invalidated before
 * any content moves.  The fault engine brings pages back with these same
 * pieces (fault.c), with its own policy for a lone page.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "away.h"
#include "back.h"
#include "coherent.h"
#include "compat.h"
#include "copy.h"
#include "ctx.h"
#include "entry.h"
#include "marker.h"
#include "notifier.h"
#include "order.h"
#include "pagemap.h"
#include "shadow.h"
#include "testhook.h"
#include "trace.h"

/* A claim we hold orders us after the commit that counted its frame in
 * nr_zero, and the frame is not freed under us: a count of 0 means none
 * of the claimed frames is a zero page, without touching their
 * metadata (cold, in a large migration back). */
static bool page_is_zero(struct hetmm_pagemap *pgmap, uint64_t idx)
{
	if (!atomic_load_explicit(&pgmap->nr_zero, memory_order_relaxed))
		return false;
	return atomic_load_explicit(&pagemap_page(pgmap, idx)->owner,
				    memory_order_relaxed) & HETMM_PAGE_ZERO;
}

bool back_can_move(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap)
{
	return (pgmap->flags & HETMM_PAGEMAP_REMAP) && ctx->frames.fd >= 0;
}
/* Free the frame meant for a page that is gone. */
/* What a frame whose page is dropped is freed with: in a remapping
 * pagemap its memory still holds the page, to be emptied before a page
 * moves in (PAGE_STALE), one madvise per run, not one failed move each. */
static uint64_t dropped_free_flags(const struct hetmm_pagemap *pgmap)
{
	return (pgmap->flags & HETMM_PAGEMAP_REMAP) ? PAGE_STALE : 0;
}

void frame_drop(struct hetmm_ctx *ctx, uint64_t pfn, bool resident)
{
	uint64_t idx;
	struct hetmm_pagemap *pgmap = pfn_pagemap(pfn, &idx);
	uint32_t i = (uint32_t)idx;
	pagemap_free(pgmap, &i, 1, dropped_free_flags(pgmap));
	if (resident)
		atomic_fetch_sub(&ctx->stats.device_resident, 1);
}

/* Where the process page the frame of a claimed device entry backs is
 * now: mremap may have carried the claim (lifecycle.c, carry_claim). */
static uint64_t claim_owner_vpn(uint64_t claim)
{
	uint64_t idx;
	struct hetmm_pagemap *pgmap = pfn_pagemap(shadow_pfn(claim), &idx);
	return addr_to_vpn(atomic_load(&pagemap_page(pgmap, idx)->owner) &
			   PAGE_MASK);
}

bool publish_or_drop(struct hetmm_ctx *ctx, uint64_t vpn, uint64_t claim,
		     uint64_t e, bool resident)
{
	uint64_t at = vpn;
	enum shadow_let_go st;
	/* A claim mremap carried is published where it went; only claims
	 * of device pages are ever carried. */
	while ((st = shadow_release(&ctx->shadow, at, claim, e)) ==
	       LET_GO_MOVED && shadow_on_device(claim))
		at = claim_owner_vpn(claim);
	if (st == LET_GO_DONE) {
		if (at != vpn)
			uffd_wake(ctx->uffd.fd, vpn_to_addr(at), PAGE_SIZE);
		return true;
	}
	if (shadow_on_device(e))
		frame_drop(ctx, shadow_pfn(e), resident);
	return false;
}

void migrate_drop_claimed(struct hetmm_ctx *ctx, const uint64_t *vpns,
			  const uint64_t *claims, size_t n,
			  enum hetmm_event why)
{
	if (!n)
		return;
	/* Devices stop using the frames before they are reused. */
	notifiers_invalidate(ctx, vpn_to_addr(vpns[0]),
			     vpn_to_addr(vpns[n - 1] + 1), why);
	/* The frames go back a pagemap at a time, in one call, so that
	 * they are handed out again in the order they came, as runs. */
	uint32_t idx[CHUNK_PAGES];
	for (size_t i = 0; i < n;) {
		uint64_t first;
		struct hetmm_pagemap *pgmap =
			pfn_pagemap(shadow_pfn(claims[i]), &first);
		size_t k = 0;
		for (; i < n && k < CHUNK_PAGES; i++, k++) {
			uint64_t at;
			if (pfn_pagemap(shadow_pfn(claims[i]), &at) != pgmap)
				break;
			shadow_store(&ctx->shadow, vpns[i], 0);
			idx[k] = (uint32_t)at;
		}
		pagemap_free(pgmap, idx, k, dropped_free_flags(pgmap));
		atomic_fetch_sub(&ctx->stats.device_resident, (int64_t)k);
	}
}

/* Length of the run of claims from i with consecutive frames, all zero or
 * all holding data. */
size_t back_frame_run(const uint64_t *claims, size_t i, size_t n,
			struct hetmm_pagemap *pgmap, uint64_t idx0)
{
	bool zero = page_is_zero(pgmap, idx0);
	size_t run = 1;
	while (i + run < n && idx0 + run < pgmap->nr_pages &&
	       shadow_pfn(claims[i + run]) == shadow_pfn(claims[i]) + run &&
	       page_is_zero(pgmap, idx0 + run) == zero)
		run++;
	return run;
}

void back_count(struct hetmm_ctx *ctx, int64_t installed, int64_t left)
{
	STAT_ADD(ctx, to_system_pages, (uint64_t)installed);
	atomic_fetch_sub(&ctx->stats.device_resident, left);
}

void back_release_frames(struct hetmm_pagemap *pgmap, uint64_t idx0,
			 size_t run, uint64_t free_flags)
{
	uint32_t idx[CHUNK_PAGES];
	for (size_t k = 0; k < run; k++)
		idx[k] = (uint32_t)(idx0 + k);
	pagemap_free(pgmap, idx, run, free_flags);
}

/* ------------------------------------------------------------------------
 * Claims mremap carried
 *
 * The process can mremap a range while a thread other than the handler
 * holds device pages of it (eviction, a migration back): the kernel moves
 * the mapping at once, the handler learns of it from the REMAP event
 * after the fact, and carries the claims to the new addresses
 * (lifecycle.c).  The holder may meanwhile have put its pages at the old
 * addresses: before the move (the kernel took them along), or after it,
 * into the empty range MREMAP_DONTUNMAP leaves, or nowhere (the old range
 * is gone).  When it lets go, each page whose claim went elsewhere goes
 * where its process page is now.  An install the kernel refused may be
 * such a page whose claim is not carried yet: the kernel lets no install
 * in while an event waits to be read, so the REMAP has been read, and the
 * holder waits for the handler to handle it (handler_sync) first.
 *
 * An install that went into the empty range was let in after the REMAP
 * was read, maybe before it was handled.  With UFFDIO_MOVE a holder that
 * lets go then leaves the page to the handler, which moves it to the new
 * address (lifecycle.c: remnant_rescue).  Without it the handler could
 * only copy it, since it may not zap the old place (its madvise would
 * wait for its own read of the REMOVE): there the holder always waits
 * for the handler before it lets go, so that every REMAP read before its
 * install has carried its claims, and it moves the pages itself.
 */

/* Bits of a run: which pages the holder installed. */
#define RUN_WORDS (CHUNK_PAGES / 64)

static bool run_bit(const uint64_t *bits, size_t k)
{
	return (bits[k / 64] >> (k % 64)) & 1;
}

static void run_set(uint64_t *bits, size_t from, size_t n)
{
	for (size_t k = from; k < from + n; k++)
		bits[k / 64] |= 1ULL << (k % 64);
}

/* Move the page installed at from (a range MREMAP_DONTUNMAP emptied) to
 * to, where its process page is now. */
static bool move_installed(struct hetmm_ctx *ctx, uintptr_t from,
			   uintptr_t to)
{
	if (ctx->frames.fd >= 0 &&
	    uffd_fill(ctx->uffd.fd, FILL_MOVE, to, from, PAGE_SIZE,
		      markers_fill(ctx)) > 0)
		return true;
	if (uffd_fill(ctx->uffd.fd, FILL_COPY, to, from, PAGE_SIZE, 0) <= 0)
		return false;
	madvise((void *)from, PAGE_SIZE, MADV_DONTNEED);
	return true;
}

/*
 * Put one page at to, its claim's new place: it is at from if here (or
 * at to already, if the kernel's move took it along), else it comes from
 * the run's source.  Returns whether the page is at to.
 */
static bool relocate(struct hetmm_ctx *ctx, uint64_t from_vpn,
		     uint64_t to_vpn, bool here, enum uffd_fill op,
		     uintptr_t src)
{
	uintptr_t from = vpn_to_addr(from_vpn), to = vpn_to_addr(to_vpn);
	if (here && vma_page_present(&ctx->vmaq, to))
		return true;
	if (here && vma_page_present(&ctx->vmaq, from) &&
	    move_installed(ctx, from, to))
		return true;
	/* Not installed, or lost with the old range: a copy or a zero page
	 * is still at the source; a move's frame still holds the page
	 * unless the move took it. */
	if (op == FILL_MOVE && here)
		return false;
	return uffd_fill(ctx->uffd.fd, op, to, src, PAGE_SIZE,
			 markers_fill(ctx)) > 0 ||
	       vma_page_present(&ctx->vmaq, to);
}

/*
 * Let go of the claims of a run whose pages left the device (installed
 * where inst says, from src by op): each entry becomes 0 where its claim
 * is now, after its page went there.  Returns the change in pages
 * installed.
 */
static int64_t let_go_run(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			  uint64_t vpn, uint64_t idx0, size_t run,
			  const uint64_t *inst, enum uffd_fill op,
			  uintptr_t src)
{
	int64_t delta = 0;
	for (size_t k = 0; k < run; k++) {
		uint64_t claim = shadow_busy(shadow_device(
					pagemap_pfn(pgmap, idx0 + k)));
		uint64_t at = vpn + k;
		bool here = run_bit(inst, k), was = here;
		while (shadow_release(&ctx->shadow, at, claim, 0) ==
		       LET_GO_MOVED) {
			uint64_t to = claim_owner_vpn(claim);
			here = relocate(ctx, at, to, here, op,
					src ? src + k * PAGE_SIZE : 0);
			at = to;
		}
		if (at != vpn + k)
			uffd_wake(ctx->uffd.fd, vpn_to_addr(at), PAGE_SIZE);
		delta += (int64_t)here - (int64_t)was;
	}
	return delta;
}

void *staging_map(size_t n)
{
	size_t align = CHUNK_SIZE, size = n * CHUNK_SIZE;
	char *p = mmap(NULL, size + align, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	char *a = (char *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	munmap(a + size, (size_t)(p + align - a));
	madvise(a, size, MADV_HUGEPAGE);
	madvise(a, size, MADV_DONTFORK);
	return a;
}

/* A synchronous driver's copy back into dst, counted if it fails; away
 * for the handler (away.h): the driver may wait on a thread of its own. */
static int copy_from_sync(struct hetmm_pagemap *pgmap, void *dst,
			  uint64_t idx0, size_t n)
{
	away_begin();
	int rc = pgmap->ops->copy_from_device(pgmap, dst, idx0, n);
	away_end();
	if (rc)
		STAT_ADD(pgmap->ctx, copy_errors, 1);
	return rc;
}

/* Source for UFFDIO_COPY of a run: the device itself, or staging; 0 if
 * the copy failed (page_address NULL: a page the device can't give). */
static uintptr_t copy_source(struct hetmm_pagemap *pgmap, uint64_t idx0,
			     size_t run, void **staging)
{
	if (pgmap->ops->page_address)
		return (uintptr_t)pgmap->ops->page_address(pgmap, idx0);
	if (!*staging && !(*staging = staging_map(1)))
		return 0;
	if (copy_from_sync(pgmap, *staging, idx0, run))
		return 0;
	return (uintptr_t)*staging;
}

unsigned back_fill_wp(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
		      enum uffd_fill op, uint64_t vpn, uint64_t idx0,
		      size_t run)
{
	if (!pagemap_is_placed(pgmap) || op != FILL_COPY)
		return 0;
	_Atomic uint64_t *slot = NULL;
	for (size_t k = 0; k < run; k++) {
		slot = vtab_next(&ctx->placed_src, slot, vpn + k, true);
		if (!slot)
			return 0;   /* unprotected: copied as dirty */
		atomic_store_explicit(slot, pagemap_pfn(pgmap, idx0 + k),
				      memory_order_relaxed);
	}
	return FILL_WP;
}

/* A whole huge device page (pagemap.h, PAGE_HUGE). */
static bool run_is_huge(struct hetmm_pagemap *pgmap, uint64_t idx0,
			size_t run)
{
	return run == PMD_PAGES && pagemap_block_huge(pgmap, idx0);
}

/*
 * A huge page that cannot move out of its frames comes back as a
 * transparent huge page all the same: its bytes go into staging, a
 * PMD-aligned range the kernel backs with a THP on first touch, and the
 * PMD moves from there (UFFDIO_MOVE).  Measured against copying it in
 * base pages and collapsing them (MADV_COLLAPSE), about 4x faster here
 * (the benchmark's thp rows).  0 where it can't (no UFFDIO_MOVE: the
 * caller copies, and collapses after).
 */
static uintptr_t thp_source(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			    uint64_t idx0, void **staging)
{
	if (ctx->frames.fd < 0 || PMD_PAGES != CHUNK_PAGES)
		return 0;
	if (!*staging && !(*staging = staging_map(1)))
		return 0;
	if (pgmap->ops->page_address) {
		/* NULL: a page the device can't give now, a failed copy
		 * (hetmm.h); the caller's copy_source fails it so. */
		const void *from = pgmap->ops->page_address(pgmap, idx0);
		if (!from)
			return 0;
		memcpy(*staging, from, PMD_SIZE);
	} else if (copy_from_sync(pgmap, *staging, idx0, PMD_PAGES)) {
		return 0;
	}
	return (uintptr_t)*staging;
}

uint64_t back_free_flags(struct hetmm_pagemap *pgmap, enum uffd_fill op,
			 bool lazy)
{
	bool stale = op == FILL_COPY && (pgmap->flags & HETMM_PAGEMAP_REMAP);
	return stale && lazy ? PAGE_STALE : 0;
}

/*
 * Install one run; returns pages that left the device, installed or
 * dropped (that count, not the installed one, says which claims are
 * gone: the rest of the run stays on the device).  A page the kernel
 * refuses because its mapping is gone (ENOENT, EFAULT) or was replaced by
 * a fresh one (EEXIST) has no process page left to restore: its device
 * copy is dropped, like the kernel's zap of a device-private entry.
 */
int back_source(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
		uint64_t idx0, size_t run, bool copy, void **staging,
		enum uffd_fill *op, uintptr_t *src)
{
	*src = 0;
	if (page_is_zero(pgmap, idx0)) {
		*op = FILL_ZERO;
	} else if (back_can_move(ctx, pgmap) && !copy) {
		*op = FILL_MOVE;
		*src = pagemap_remap_addr(pgmap, idx0);
	} else if (run_is_huge(pgmap, idx0, run) &&
		   (*src = thp_source(ctx, pgmap, idx0, staging))) {
		*op = FILL_MOVE;
	} else {
		*op = FILL_COPY;
		*src = copy_source(pgmap, idx0, run, staging);
		if (!*src)
			return -EIO;
	}
	return 0;
}

/*
 * A page a move was refused for (EEXIST) may have only a marker there:
 * the poison of a fault that got SIGBUS while the device failed
 * (fault.c, fault_sigbus).  The kernel moves nothing over a marker but
 * copies over one, so the page goes in by a copy from where the move
 * would have taken it, which is then emptied as a move leaves it (a
 * remapped frame goes back free; the handler's staging must hold no
 * page, or the next huge page staged there is base pages); a real page
 * there refuses the copy too.
 */
static bool copy_over_marker(struct hetmm_ctx *ctx, uintptr_t dst,
			     uintptr_t src, unsigned fill)
{
	if (uffd_fill(ctx->uffd.fd, FILL_COPY, dst, src, PAGE_SIZE, fill) <= 0)
		return false;
	madvise((void *)src, PAGE_SIZE, MADV_DONTNEED);
	return true;
}

size_t back_install(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
		    uint64_t vpn, uint64_t idx0, size_t run,
		    enum uffd_fill op, uintptr_t src, unsigned how,
		    size_t *installedp)
{
	size_t installed = 0;
	*installedp = 0;
	uintptr_t dst = vpn_to_addr(vpn);
	bool huge = run_is_huge(pgmap, idx0, run);
	size_t done = 0;
	bool single = false;
	uint64_t inst[RUN_WORDS] = { 0 };
	unsigned wp = back_fill_wp(ctx, pgmap, op, vpn, idx0, run);
	unsigned fill = ((how & BACK_ONCE) ? FILL_ONCE : 0) | markers_fill(ctx);
	unsigned refused = 0;
	while (done < run) {
		size_t off = done * PAGE_SIZE;
		size_t len = (single ? 1 : run - done) * PAGE_SIZE;
		long got = uffd_fill(ctx->uffd.fd, op, dst + off,
				     src ? src + off : 0, len,
				     fill | (op == FILL_COPY ? wp : 0));
		if (got > 0) {
			run_set(inst, done, (size_t)got / PAGE_SIZE);
			installed += (size_t)got / PAGE_SIZE;
			done += (size_t)got / PAGE_SIZE;
			continue;
		}
		/* An event waits to be read: the handler reads it, and the
		 * run goes in once the kernel lets it, if the event leaves
		 * it alone (fault.c); else the rest stays on the device. */
		if (got == -EAGAIN && (fill & FILL_ONCE) &&
		    ctx->handler_refused &&
		    ctx->handler_refused(ctx, dst + off, len, refused++)) {
			fill |= FILL_EVENTS_SEEN;
			continue;
		}
		/* The page is there already: the kernel moved it and still
		 * said EAGAIN, say.  We hold the page, so nobody else put
		 * it there. */
		if (vma_page_present(&ctx->vmaq, dst + off)) {
			run_set(inst, done, 1);
			installed++;
			done++;
			continue;
		}
		/* The kernel won't move it (the range was mprotect()ed
		 * since, say): the remapped page is still readable. */
		if (op == FILL_MOVE && (got == -EINVAL || got == -EBUSY)) {
			op = FILL_COPY;
			continue;
		}
		if (got != -EEXIST && got != -ENOENT && got != -EFAULT)
			break;
		if (single && got == -EEXIST && op == FILL_MOVE &&
		    copy_over_marker(ctx, dst + off, src + off, fill)) {
			run_set(inst, done, 1);
			installed++;
			done++;
			continue;
		}
		/* A run can span two mappings (its frames were consecutive,
		 * its pages in adjacent VMAs): the kernel refuses the whole
		 * request (ENOENT: not within one VMA), which says nothing
		 * of its first page.  Only a one-page refusal does. */
		if (!single && run - done > 1) {
			single = true;
			continue;
		}
		done++;
	}
	if (!done)
		return 0;
	/* Wake only once the shadow says "system": a thread that resumes
	 * must find the page where hetmm says it is.  The handler handles
	 * events itself, in order: none can have carried its claims. */
	if (how & BACK_ONCE) {
		shadow_store_run(&ctx->shadow, vpn, done, 0);
	} else {
		/* A page the kernel refused may have moved with its mapping
		 * (the kernel lets no install in while an event waits to be
		 * read, so it has been read): wait until the handler has
		 * carried its claim.  A page installed where the mapping
		 * used to be is the handler's to move, if it can move pages
		 * (see "Claims mremap carried" above). */
		TEST_HOOK(TEST_HOOK_BACK_PUT, dst, done * PAGE_SIZE);
		if (installed < done || ctx->frames.fd < 0)
			handler_sync(ctx);   /* never the handler: BACK_ONCE */
		TEST_HOOK(TEST_HOOK_BACK_INSTALLED, dst, done * PAGE_SIZE);
		installed = (size_t)((int64_t)installed +
			let_go_run(ctx, pgmap, vpn, idx0, done, inst, op, src));
		TEST_HOOK(TEST_HOOK_BACK_LET_GO, dst, done * PAGE_SIZE);
	}
	/* Unless it is left for later, a frame copied out of gives its
	 * memory back now. */
	if (op == FILL_COPY && (pgmap->flags & HETMM_PAGEMAP_REMAP) &&
	    !(how & BACK_LAZY_EMPTY))
		madvise((void *)src, done * PAGE_SIZE, MADV_DONTNEED);
	back_release_frames(pgmap, idx0, done,
			    back_free_flags(pgmap, op, how & BACK_LAZY_EMPTY));
	/* A huge page back whole is a THP: moved as one PMD already (a
	 * microsecond's look), or its base pages collapsed now. */
	if (huge && installed == run)
		madvise((void *)dst, PMD_SIZE, MADV_COLLAPSE);
	back_count(ctx, (int64_t)installed, (int64_t)done);
	*installedp = installed;
	if (!(how & BACK_NO_WAKE))
		uffd_wake(ctx->uffd.fd, dst, done * PAGE_SIZE);
	return done;
}

/* Is any of the claimed pages held for a mirror's exclusive access? */
static bool claims_exclusive(struct hetmm_ctx *ctx, const uint64_t *claims,
			     size_t n)
{
	if (!atomic_load_explicit(&ctx->exclusive_used, memory_order_acquire))
		return false;
	for (size_t i = 0; i < n; i++) {
		uint64_t idx;
		struct hetmm_pagemap *pgmap =
			pfn_pagemap(shadow_pfn(claims[i]), &idx);
		if (pgmap && (atomic_load_explicit(&pgmap->pages[idx].owner,
				memory_order_relaxed) & HETMM_PAGE_EXCLUSIVE))
			return true;
	}
	return false;
}

void back_invalidate(struct hetmm_ctx *ctx, uint64_t vpn, size_t n,
		     const uint64_t *claims)
{
	notifiers_invalidate(ctx, vpn_to_addr(vpn), vpn_to_addr(vpn + n),
			     claims_exclusive(ctx, claims, n) ?
			     HETMM_EVENT_EXCLUSIVE : HETMM_EVENT_MIGRATE);
}

void back_keep(struct hetmm_ctx *ctx, uint64_t vpn, const uint64_t *claims,
	       size_t n)
{
	back_keep_quiet(ctx, vpn, claims, n);
	if (n)
		uffd_wake(ctx->uffd.fd, vpn_to_addr(vpn), n * PAGE_SIZE);
}

void back_keep_quiet(struct hetmm_ctx *ctx, uint64_t vpn,
		     const uint64_t *claims, size_t n)
{
	for (size_t k = 0; k < n; k++)
		publish_or_drop(ctx, vpn + k, claims[k],
				shadow_unbusy(claims[k]), true);
}

bool back_is_async(struct hetmm_pagemap *pgmap, uint64_t idx0)
{
	return copy_is_async(pgmap) && !pgmap->ops->page_address &&
	       !page_is_zero(pgmap, idx0);
}

void back_pipe_init(struct back_pipe *bp, struct hetmm_ctx *ctx,
		    bool handler, struct hetmm_migrate_report *rep,
		    uint64_t rep_vpn)
{
	*bp = (struct back_pipe){ .ctx = ctx, .handler = handler,
				  .rep = rep, .rep_vpn = rep_vpn };
}

void back_pipe_drain(struct back_pipe *bp)
{
	if (bp->cp.pgmap)
		copy_pipe_drain(&bp->cp);
}

/* Record the status of pages [vpn, vpn + n). */
static void back_status(struct back_pipe *bp, uint64_t vpn, size_t n,
			enum hetmm_migrate_status st)
{
	if (st == HETMM_MIGRATE_SKIP_ERROR)
		bp->failed += n;
	for (size_t k = 0; bp->rep && k < n; k++)
		report_page(bp->rep, vpn - bp->rep_vpn + k, st);
}

void back_piece_install(struct back_pipe *bp, struct hetmm_pagemap *pgmap,
			uint64_t vpn, uint64_t idx0, size_t nr,
			const uint64_t *keep, enum uffd_fill op,
			uintptr_t src, unsigned how)
{
	size_t installed = 0;
	size_t gone = back_install(bp->ctx, pgmap, vpn, idx0, nr, op, src, how,
				   &installed);
	back_keep(bp->ctx, vpn + gone, keep + gone, nr - gone);
	back_status(bp, vpn, gone, HETMM_MIGRATE_MOVED);
	back_status(bp, vpn + gone, nr - gone, HETMM_MIGRATE_SKIP_BUSY);
	bp->left += gone;
	bp->installed += installed;
}

/* A piece completed: install it from staging, or keep it on the device
 * if its copy failed (quietly for the handler: its faulting thread stays
 * in its fault, fault.c's fault_back_failed).  A piece of a block coming
 * back as one THP is its block's business. */
static void back_pipe_finish(void *arg, const struct copy_req *r, int err,
			     void *staging)
{
	struct back_pipe *bp = arg;
	uint64_t vpn = r->tag;
	if (r->flags & BACK_PMD) {
		bp->pmd_piece(bp, r, err);
		return;
	}
	bp->in_flight -= r->nr;
	if (err) {
		if (bp->handler)
			back_keep_quiet(bp->ctx, vpn, r->keep, r->nr);
		else
			back_keep(bp->ctx, vpn, r->keep, r->nr);
		back_status(bp, vpn, r->nr, HETMM_MIGRATE_SKIP_ERROR);
		return;
	}
	back_piece_install(bp, bp->cp.pgmap, vpn, r->index, r->nr, r->keep,
			   FILL_COPY, (uintptr_t)staging, r->flags);
	TEST_HOOK(TEST_HOOK_BACK_PIECE_DONE, vpn_to_addr(vpn),
		  r->nr * PAGE_SIZE);
}

void back_pipe_use(struct back_pipe *bp, struct hetmm_pagemap *pgmap)
{
	if (bp->cp.pgmap == pgmap)
		return;
	back_pipe_drain(bp);
	copy_pipe_open(&bp->cp, pgmap, false, bp->handler, back_pipe_finish,
		       bp);
}

void back_runs_async(struct back_pipe *bp, struct hetmm_pagemap *pgmap,
		     uint64_t vpn, const uint64_t *claims, size_t *i,
		     size_t n, unsigned how)
{
	back_pipe_use(bp, pgmap);
	if (bp->handler)
		how |= BACK_ONCE;
	uint64_t idx0;
	while (*i < n &&
	       pfn_pagemap(shadow_pfn(claims[*i]), &idx0) == pgmap &&
	       back_is_async(pgmap, idx0)) {
		size_t run = back_frame_run(claims, *i, n, pgmap, idx0);
		struct copy_req r = { .index = idx0, .nr = run,
				      .tag = vpn + *i, .flags = how,
				      .keep = claims + *i };
		bp->queued += run;
		bp->in_flight += run;
		*i += run;
		copy_pipe_add(&bp->cp, &r);
	}
}

/* Did mremap carry the claim to where the coherent device's mapping went
 * along (a shared mapping there, not the private memory of a swap)? */
static bool carried_mapped(struct hetmm_ctx *ctx, uint64_t vpn,
			   uint64_t claim)
{
	uint64_t to = claim_owner_vpn(claim);
	struct vma v;
	return to != vpn && vma_find(&ctx->vmaq, vpn_to_addr(to), &v) == 0 &&
	       v.start <= vpn_to_addr(to) && (v.flags & VMA_SHARED);
}

/* Bring one run back, moving it where the pagemap allows; what could not
 * leave stays on the device. */
static void back_run(struct back_pipe *bp, struct hetmm_pagemap *pgmap,
		     uint64_t vpn, uint64_t idx0, size_t run,
		     const uint64_t *claims, void **staging)
{
	enum uffd_fill op;
	uintptr_t src;
	size_t installed;
	size_t gone = 0;
	bool err = back_source(bp->ctx, pgmap, idx0, run, false, staging, &op,
			       &src) != 0;
	if (!err)
		gone = back_install(bp->ctx, pgmap, vpn, idx0, run, op, src, 0,
				    &installed);
	back_keep(bp->ctx, vpn + gone, claims + gone, run - gone);
	back_status(bp, vpn, gone, HETMM_MIGRATE_MOVED);
	back_status(bp, vpn + gone, run - gone,
		    err ? HETMM_MIGRATE_SKIP_ERROR : HETMM_MIGRATE_SKIP_BUSY);
	bp->left += gone;
}

/*
 * A coherent run: private anonymous memory takes the device's mapping's
 * place first (coherent.c), then the pages come back as any run.  The
 * process may have mremapped the mapping just before the swap: the
 * claims went along (the handler has handled that REMAP when the swap
 * returns), and the device's pages are mapped at their new place, where
 * they stay; the swap found the old place empty, or took the empty range
 * MREMAP_DONTUNMAP left, which reads as zeroes as the old range of an
 * mremap does.  Copied back to the old place instead, their frames freed
 * under the new one, the process lost them (test_window part 1,
 * coherent).  Moved after the swap, the private memory took the claims
 * along and they come back there, as for any device page.  Returns the
 * pages of the run done with.
 */
static size_t back_coherent_run(struct back_pipe *bp,
				struct hetmm_pagemap *pgmap, uint64_t vpn,
				uint64_t idx0, size_t run,
				const uint64_t *claims, void **staging)
{
	struct hetmm_ctx *ctx = bp->ctx;
	size_t k = coherent_unmap(ctx, vpn_to_addr(vpn), run);
	if (!k) {
		back_keep(ctx, vpn, claims, run);
		back_status(bp, vpn, run, HETMM_MIGRATE_SKIP_BUSY);
		return run;
	}
	for (size_t j = 0, n; j < k; j += n) {
		bool away = carried_mapped(ctx, vpn + j, claims[j]);
		for (n = 1; j + n < k &&
			    carried_mapped(ctx, vpn + j + n, claims[j + n]) == away;
		     n++)
			;
		if (away) {
			back_keep(ctx, vpn + j, claims + j, n);
			back_status(bp, vpn + j, n, HETMM_MIGRATE_SKIP_BUSY);
		} else {
			back_run(bp, pgmap, vpn + j, idx0 + j, n, claims + j,
				 staging);
		}
	}
	return k;
}

void migrate_back_claimed(struct back_pipe *bp, uint64_t vpn, size_t n,
			  const uint64_t *claims, void **staging)
{
	struct hetmm_ctx *ctx = bp->ctx;
	TEST_HOOK(TEST_HOOK_BACK_CLAIMED, vpn_to_addr(vpn), n * PAGE_SIZE);
	/* Devices stop using the pages before their contents move; a
	 * device that held one exclusive learns that it lost it. */
	back_invalidate(ctx, vpn, n, claims);

	size_t i = 0;
	while (i < n) {
		uint64_t idx0;
		struct hetmm_pagemap *pgmap =
			pfn_pagemap(shadow_pfn(claims[i]), &idx0);
		if (back_is_async(pgmap, idx0)) {
			/* Its runs from here join the pipeline. */
			back_runs_async(bp, pgmap, vpn, claims, &i, n, 0);
			continue;
		}
		size_t run = back_frame_run(claims, i, n, pgmap, idx0);
		if (pagemap_is_coherent(pgmap)) {
			i += back_coherent_run(bp, pgmap, vpn + i, idx0, run,
					       claims + i, staging);
			continue;
		}
		back_run(bp, pgmap, vpn + i, idx0, run, claims + i, staging);
		i += run;
	}
}

/*
 * A huge device page of several chunks (16 and 64 KiB pages: base.h)
 * whose whole block is asked for, from vpn (entry e), comes back whole:
 * every page claimed first (into *big, allocated at the first), brought
 * back a chunk at a time, then collapsed into one THP.  Returns the
 * pages claimed; 0 if this is no such page, and the caller goes on a
 * chunk at a time.
 */
static size_t back_huge_block(struct back_pipe *bp, uint64_t vpn, uint64_t e,
			      uint64_t last, uint64_t **big, void **staging)
{
	struct hetmm_ctx *ctx = bp->ctx;
	if (PMD_PAGES <= CHUNK_PAGES || vpn % PMD_PAGES ||
	    last - vpn < PMD_PAGES || !pfn_block_huge(shadow_pfn(e)) ||
	    (!*big && !(*big = malloc(PMD_PAGES * sizeof(**big)))))
		return 0;
	size_t n = claim_device_run(&ctx->shadow, vpn, PMD_PAGES, *big);
	size_t left = bp->left;
	for (size_t off = 0; off < n; off += CHUNK_PAGES)
		migrate_back_claimed(bp, vpn + off,
				     MIN((size_t)CHUNK_PAGES, n - off),
				     *big + off, staging);
	back_pipe_drain(bp);
	if (bp->left - left == PMD_PAGES)
		madvise((void *)vpn_to_addr(vpn), PMD_SIZE, MADV_COLLAPSE);
	return n;
}

int migrate_back_range(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end,
		       struct hetmm_migrate_report *rep)
{
	uint64_t claims[CHUNK_PAGES];
	uint64_t *big = NULL;
	void *staging = NULL;
	uint64_t first = addr_to_vpn(start), last = addr_to_vpn(end);
	int spins_left = SHADOW_FILLING_SPINS;
	struct back_pipe bp;
	back_pipe_init(&bp, ctx, false, rep, first);

	for (uint64_t vpn = first; vpn < last;) {
		size_t page = vpn - first;
		uint64_t e = shadow_settled(&ctx->shadow, vpn, &spins_left);
		if (!shadow_claimable(e)) {
			report_page(rep, page, shadow_is_busy(e) ?
				      HETMM_MIGRATE_SKIP_BUSY :
				      HETMM_MIGRATE_SKIP_SYSTEM);
			vpn++;
			continue;
		}
		if (shadow_coherent_held(e)) {
			report_page(rep, page, HETMM_MIGRATE_SKIP_PINNED);
			vpn++;
			continue;
		}
		size_t n = back_huge_block(&bp, vpn, e, last, &big, &staging);
		if (!n) {
			size_t want = MIN((size_t)(last - vpn),
					  (size_t)CHUNK_PAGES);
			n = claim_device_run(&ctx->shadow, vpn, want, claims);
			if (n == 0)
				continue;   /* lost a race; look again */
			migrate_back_claimed(&bp, vpn, n, claims, &staging);
		}
		vpn += n;
	}
	back_pipe_drain(&bp);
	free(big);
	if (staging)
		munmap(staging, CHUNK_PAGES * PAGE_SIZE);
	if (bp.failed)
		return -EIO;
	return bp.left ? 0 : -ENOENT;
}

int hetmm_migrate_to_system(struct hetmm_ctx *ctx, void *addr, size_t len,
			    struct hetmm_migrate_report *report)
{
	int rc = entry_range(ctx, addr, len);
	if (rc)
		return rc;
	uintptr_t start = (uintptr_t)addr, end = start + len;
	rc = vma_check_accessible(&ctx->vmaq, start, end);
	if (rc)
		return rc;
	if (report) {
		report->moved = 0;
		report->skipped = 0;
	}
	rc = migrate_back_range(ctx, start, end, report);
	TRACE3(migrate_to_system, start, len, rc);
	return rc;
}

