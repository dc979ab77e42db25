/* SPDX-License-Identifier: MIT */
/*
 * fault.c - the fault engine: one thread per context resolves every
 * userfaultfd fault of the context's registered ranges.
 *
 * A MISSING fault on a device-resident page is the CPU touching
 * device-private memory (the kernel's do_swap_page -> migrate_to_ram):
 * the page comes back, with fault-around, before the thread resumes.  A
 * MISSING fault on any other page of a registered range is a hole and gets
 * a zero page.  A write-protect fault is a write racing a migration to the
 * device; the migration wakes it when it commits.
 *
 * The handler never blocks on a page another thread holds BUSY: whoever
 * set BUSY wakes the range when it lets go.  It allocates nothing and
 * takes no lock on the fault path, except the mirrors' when a page leaves
 * a device that mirrors may be using.
 *
 * While it runs a driver's code or waits for a driver's copy (away.h), a
 * second thread, the deputy, serves the faults that need no device page:
 * the driver's own thread may be waiting in one.  And when the handler's
 * own thread waits in a fault on a hole, the deputy fills it (the
 * rescue).  The deputy is deputy.c's; what it may serve, and how, this
 * file says (deputy_fault).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "away.h"
#include "back.h"
#include "coherent.h"
#include "compat.h"
#include "ctx.h"
#include "deputy.h"
#include "entry.h"
#include "fault.h"
#include "lifecycle.h"
#include "marker.h"
#include "order.h"
#include "pagemap.h"
#include "pmdback.h"
#include "shadow.h"
#include "testhook.h"
#include "trace.h"

#define FAULT_AROUND_GROWTH 8
/* Faults the handler holds back for their devices (fault_room) at
 * once: one per thread that faults on such a device, in most
 * processes; past it, faults are served (a bound overshot, not a
 * thread left waiting for a slot). */
#define FAULT_HELD_MAX 64

/* One sequential stream the fault-around logic is following, upward or
 * downward (memcpy runs backwards for some alignments). */
struct fault_stream {
	uintptr_t next;                   /* where an upward scan faults next */
	uintptr_t prev;                   /* where a downward one does */
	uint32_t window;
	/* Whether the mapping [thp_lo, thp_hi) (page numbers; thp_hi 0:
	 * not asked yet) may have THPs: asked once per stream. */
	uint64_t thp_lo, thp_hi;
	bool thp;
};

#define FAULT_STREAMS 4
/* Claims the fault path holds at once: a chunk, or a huge page of
 * several (fault_back_huge). */
#define CLAIMS_MAX MAX((size_t)CHUNK_PAGES, PMD_PAGES)

/*
 * Which pages of one chunk-sized block of virtual memory (base.h) the
 * fault path has brought back lately: density-based fault-around
 * (fault.c).  The table is direct-mapped, so it follows up to 64 blocks
 * (128 MiB at 4 KiB pages) at once.  gen is
 * hetmm_ctx.dense_gen when the block was first seen; a migration to a
 * device since then makes the bits stale.
 */
#define DENSE_BLOCK_PAGES CHUNK_PAGES
#define DENSE_BLOCKS 64
struct fault_dense {
	uint64_t block;                   /* vpn / DENSE_BLOCK_PAGES, + 1 */
	uint64_t gen;
	unsigned nset;                    /* bits set */
	uint64_t bits[DENSE_BLOCK_PAGES / 64];
};

/* The handler's own state: only the handler thread touches it. */
struct fault_engine {
	pthread_t handler;
	bool handler_running;
	void *doorbell;                   /* touched to stop the handler */
	bool doorbell_served;
	/* The handler's way out (handler_release): EXIT_READING while it
	 * reads, EXIT_DONE once it has stopped, EXIT_GO once the
	 * userfaultfd is closed. */
	_Atomic uint32_t exit_word;

	struct fault_stream streams[FAULT_STREAMS];
	unsigned stream_next;
	struct fault_dense dense[DENSE_BLOCKS];
	/* Messages of the batch being handled after the current one, up
	 * to its last event: see fault_handler_main(). */
	const struct uffd_msg *pending;
	size_t npending;
	uintptr_t last_fill_start;        /* the last fault-around window */
	uintptr_t last_fill_end;
	/* A driver's copy back failed since the fault began: see
	 * fault_back_failed(). */
	bool copy_failed;
	/* Sync faults (handler_sync) read ahead of events later in their
	 * batch: answered at the batch's end. */
	uintptr_t syncs[MAX_MIGRATORS];
	unsigned nsyncs;
	/* The message being handled: the deputy leaves everything to the
	 * handler while that is an event. */
	const struct uffd_msg *current;
	/* Allocated with the engine: the fault path allocates nothing. */
	uint64_t *claims;                 /* CLAIMS_MAX entries */
	void *staging;                    /* CHUNK_PAGES pages */
	/* Pages coming back by a driver's asynchronous copies, and blocks
	 * of them as whole THPs (NULL: not here). */
	struct back_pipe bp;
	struct back_pmd *pmd;
	struct own_range own_doorbell, own_staging, own_stack;

	/* The handler's trips and batches, and its deputy (deputy.c),
	 * which keeps what it read but left to the handler. */
	struct handler_away away;
	struct deputy *deputy;
	/* handler_refused(): until when it tries an install again. */
	uint64_t refused_until;
	/* Faults their devices held back (fault_admit), oldest first,
	 * and the eventfd hetmm_pagemap_room_made() rings. */
	struct uffd_msg held[FAULT_HELD_MAX];
	size_t nheld;
	int room_fd;
	struct own_range own_recall;
};

/*
 * Adaptive fault-around.  A fault that lands where a recent stream of
 * faults predicted, just past its last window either way, grows that
 * stream's window eightfold, up to fault_around_max; any other fault
 * starts a new stream of one page.  A sequential scan of 1 GiB thus costs
 * about 36 round trips instead of 262144, while a random access pays for
 * exactly the page it touches.
 */
static struct fault_stream *fault_stream_of(struct hetmm_ctx *ctx,
					    uintptr_t addr, bool *down)
{
	for (unsigned i = 0; i < FAULT_STREAMS; i++) {
		struct fault_stream *s = &ctx->fault->streams[i];
		if (s->next == addr || s->prev == addr) {
			*down = s->prev == addr;
			s->window = MIN(s->window * FAULT_AROUND_GROWTH,
					ctx->fault_around_max);
			return s;
		}
	}
	struct fault_engine *f = ctx->fault;
	struct fault_stream *s = &f->streams[f->stream_next++ % FAULT_STREAMS];
	s->window = 1;
	s->thp_hi = 0;
	*down = false;
	return s;
}

/* Pages that left the device for a fault: counted as back_count() does,
 * and as fault pages. */
static void count_fault_back(struct hetmm_ctx *ctx, int64_t installed,
			     int64_t left)
{
	back_count(ctx, installed, left);
	STAT_ADD(ctx, fault_pages, (uint64_t)installed);
}

static bool handler_refused(struct hetmm_ctx *ctx, uintptr_t start,
			    size_t len, unsigned tries);

/*
 * A lone page a thread waits for, on the fault path (a random access).
 * The fill itself wakes the thread: a UFFDIO_WAKE after it would be one
 * more system call on the fault's critical path.  The thread may then run
 * before we return, and must find everything as the kernel's
 * migrate_to_ram leaves it.  So before the fill the page's entry becomes
 * bare BUSY (a system page being filled, which every claimer waits out,
 * as for a hole: fault_zero), the counters move, and its frame says free
 * and counts as free (an allocation short of frames waits for it).  The
 * frame goes back to the pool after the fill, which reads it.  A fill
 * the kernel refuses while an event waits is tried again as a window's
 * is (handler_refused): given up, the page would be copied from its
 * device again when the thread faults again, a second read of a file.
 * Returns as back_install().
 */
static size_t fault_back_lone(struct hetmm_ctx *ctx,
			      struct hetmm_pagemap *pgmap, uint64_t vpn,
			      uint64_t idx, uint64_t claim,
			      enum uffd_fill op, uintptr_t src)
{
	uintptr_t dst = vpn_to_addr(vpn);
	shadow_store(&ctx->shadow, vpn, shadow_filling());
	count_fault_back(ctx, 1, 1);
	struct frame_owner was = pagemap_leave_begin(pgmap, (uint32_t)idx,
			back_free_flags(pgmap, op, true));
	unsigned flags = FILL_ONCE | FILL_WAKE | markers_fill(ctx) |
			 back_fill_wp(ctx, pgmap, op, vpn, idx, 1);
	TEST_HOOK(TEST_HOOK_FAULT_LONE, dst, PAGE_SIZE);
	long got;
	for (unsigned tries = 0;; tries++) {
		got = uffd_fill(ctx->uffd.fd, op, dst, src, PAGE_SIZE, flags);
		if (got != -EAGAIN || !handler_refused(ctx, dst, PAGE_SIZE,
						       tries))
			break;
		flags |= FILL_EVENTS_SEEN;
	}
	/* As in back_install: there already, refused for good, or not now. */
	bool installed = got > 0 || vma_page_present(&ctx->vmaq, dst);
	if (!installed && got != -EEXIST && got != -ENOENT && got != -EFAULT) {
		pagemap_leave_undo(pgmap, (uint32_t)idx, was);
		count_fault_back(ctx, -1, -1);
		shadow_store(&ctx->shadow, vpn, claim);
		return 0;
	}
	if (!installed)
		count_fault_back(ctx, -1, 0);
	shadow_store(&ctx->shadow, vpn, 0);
	pagemap_leave_done(pgmap, (uint32_t)idx);
	if (got <= 0)
		uffd_wake(ctx->uffd.fd, dst, PAGE_SIZE);
	return 1;
}

/*
 * A lone page of a device with asynchronous copies (the file device's
 * random fault): copied in one slot of its queue and waited for, then
 * installed as any lone page is, the fill waking the thread.  In the
 * window's pipeline it would be installed unwoken and woken after, one
 * more system call between the read and the thread's resuming.
 */
static size_t fault_back_lone_async(struct hetmm_ctx *ctx,
				    struct hetmm_pagemap *pgmap, uint64_t vpn,
				    uint64_t idx, uint64_t claim)
{
	struct hetmm_copy *slot;
	void *bytes;
	if (copy_from_device_wait(pgmap, idx, 1, &slot, &bytes)) {
		/* The faulting thread stays in its fault: see
		 * fault_back_failed(). */
		back_keep_quiet(ctx, vpn, &claim, 1);
		ctx->fault->copy_failed = true;
		return 0;
	}
	size_t gone = fault_back_lone(ctx, pgmap, vpn, idx, claim, FILL_COPY,
				      (uintptr_t)bytes);
	if (!gone)
		back_keep(ctx, vpn, &claim, 1);
	TEST_HOOK(TEST_HOOK_BACK_PIECE_DONE, vpn_to_addr(vpn), PAGE_SIZE);
	copy_slot_put(slot);
	return gone;
}

/*
 * Bring one run back for a fault.  A lone page a thread waits for is
 * copied, not moved: the thread resumes sooner (a move also unmaps the
 * frame, whose page tables, folio and anon_vma are cold in a random
 * access), and the frame is emptied off the fault path, when a page next
 * moves into it.  The handler gives up where an event waits to be read
 * (BACK_ONCE).  Returns pages that left the device.
 */
static size_t fault_back_one_run(struct hetmm_ctx *ctx,
				 struct hetmm_pagemap *pgmap, uint64_t vpn,
				 uint64_t idx0, size_t run,
				 const uint64_t *claims, void **staging,
				 unsigned how)
{
	enum uffd_fill op;
	uintptr_t src;
	size_t installed;
	if (back_source(ctx, pgmap, idx0, run, run == 1, staging, &op, &src)) {
		/* The faulting thread stays in its fault: see
		 * fault_back_failed(). */
		back_keep_quiet(ctx, vpn, claims, run);
		ctx->fault->copy_failed = true;
		return 0;
	}
	size_t gone;
	if (run == 1 && op != FILL_MOVE && !(how & BACK_NO_WAKE)) {
		gone = fault_back_lone(ctx, pgmap, vpn, idx0, claims[0], op,
				       src);
	} else {
		/* Counted before the wake: a thread that resumes sees its
		 * fault in the counters. */
		gone = back_install(ctx, pgmap, vpn, idx0, run, op, src,
				    how | BACK_ONCE | BACK_LAZY_EMPTY |
				    BACK_NO_WAKE, &installed);
		STAT_ADD(ctx, fault_pages, installed);
		if (gone && !(how & BACK_NO_WAKE))
			uffd_wake(ctx->uffd.fd, vpn_to_addr(vpn),
				  gone * PAGE_SIZE);
	}
	/* Pages that could not leave stay on the device. */
	back_keep(ctx, vpn + gone, claims + gone, run - gone);
	return gone;
}

/*
 * Bring the claimed pages [vpn, vpn + n) back for a fault, as
 * migrate_back_claimed() does, but coherent pages stay: the handler
 * faults them in place (coherent_fault), and may not swap their mapping,
 * whose events it would have to read itself.
 */
static size_t fault_back_claimed(struct hetmm_ctx *ctx, uint64_t vpn,
				 size_t n, const uint64_t *claims,
				 void **staging, unsigned how)
{
	back_invalidate(ctx, vpn, n, claims);
	size_t left = 0;
	for (size_t i = 0; i < n;) {
		uint64_t idx0;
		struct hetmm_pagemap *pgmap =
			pfn_pagemap(shadow_pfn(claims[i]), &idx0);
		if (back_is_async(pgmap, idx0) && n == 1 &&
		    !(how & BACK_NO_WAKE)) {
			left += fault_back_lone_async(ctx, pgmap, vpn, idx0,
						      claims[0]);
			break;
		}
		if (back_is_async(pgmap, idx0)) {
			/* Its runs from here join the pipeline, each piece
			 * installed and woken as it lands: a thread that
			 * caught up with the window runs on while the device
			 * reads the rest (a wake per piece costs little
			 * beside a device's copy of it). */
			back_runs_async(&ctx->fault->bp, pgmap, vpn, claims,
					&i, n, how & ~BACK_NO_WAKE);
			continue;
		}
		size_t run = back_frame_run(claims, i, n, pgmap, idx0);
		if (pagemap_is_coherent(pgmap))
			back_keep(ctx, vpn + i, claims + i, run);
		else
			left += fault_back_one_run(ctx, pgmap, vpn + i, idx0,
						   run, claims + i, staging,
						   how);
		i += run;
	}
	return left;
}

/* The handler's pipeline, empty. */
static void handler_pipe_init(struct hetmm_ctx *ctx)
{
	back_pipe_init(&ctx->fault->bp, ctx, true, NULL, 0);
	back_pmd_attach(&ctx->fault->bp, ctx->fault->pmd);
}

/* Finish the asynchronous copies in flight: their pages are installed,
 * or stay on the device (copy_failed).  Returns the pages that left
 * since the last drain. */
static size_t fault_back_drain(struct hetmm_ctx *ctx)
{
	struct back_pipe *bp = &ctx->fault->bp;
	back_pmd_drain(bp);
	back_pipe_drain(bp);
	size_t left = bp->left;
	STAT_ADD(ctx, fault_pages, bp->installed);
	ctx->fault->copy_failed |= bp->failed != 0;
	handler_pipe_init(ctx);
	return left;
}

/*
 * Claim and bring back up to n device pages from vpn upward; returns how
 * many left the device.  With more, the caller brings back more runs
 * after this one and then calls fault_back_drain(): the asynchronous
 * copies of this run stay in flight meanwhile, and count as left.  With
 * BACK_PMD in how, a whole PMD-aligned block claimed comes back as one
 * THP where it fits (pmdback.c), woken as it lands.
 */
static size_t fault_back_run(struct hetmm_ctx *ctx, uint64_t vpn, size_t n,
			     void **staging, unsigned how, bool more)
{
	struct back_pipe *bp = &ctx->fault->bp;
	size_t got = claim_device_run(&ctx->shadow, vpn, n, ctx->fault->claims);
	if (!got)
		return 0;
	size_t queued = bp->queued, left = bp->left;
	if ((how & BACK_PMD) && got == PMD_PAGES &&
	    back_pmd_start(bp, vpn, ctx->fault->claims, 0))
		got = 0;   /* counted as queued */
	else
		got = fault_back_claimed(ctx, vpn, got, ctx->fault->claims,
					 staging, how & ~BACK_PMD);
	if (more)
		return got + (bp->queued - queued);
	return got + (fault_back_drain(ctx) - left);
}

/* How many pages below and including top, at most max, are unclaimed
 * device pages: the run a downward chunk can take. */
static size_t device_run_down(struct hetmm_ctx *ctx, uint64_t top, size_t max)
{
	size_t n = 0;
	while (n < max && n <= top) {
		uint64_t e = shadow_get(&ctx->shadow, top - n);
		if (!shadow_claimable(e))
			break;
		n++;
	}
	return n;
}

/* The faulting page's mapping in page numbers: fault-around stays inside
 * it (the next one is another thread's business: it may be mremapping
 * it).  False, and *lo, *hi untouched, if it can't be found. */
static bool fault_vma(struct hetmm_ctx *ctx, uintptr_t addr, uint64_t *lo,
		      uint64_t *hi)
{
	struct vma v;
	if (vma_find(&ctx->vmaq, addr, &v))
		return false;
	*lo = addr_to_vpn(v.start);
	*hi = addr_to_vpn(v.end);
	return true;
}

/* [lo, hi) came back around a fault: where stream s goes on, and what a
 * fault queued meanwhile finds in place. */
static void fault_around_done(struct hetmm_ctx *ctx, struct fault_stream *s,
			      uint64_t lo, uint64_t hi)
{
	s->next = vpn_to_addr(hi);
	s->prev = vpn_to_addr(lo) - PAGE_SIZE;
	ctx->fault->last_fill_start = vpn_to_addr(lo);
	ctx->fault->last_fill_end = vpn_to_addr(hi);
}

/*
 * Density-based fault-around, for a fault no stream predicted: the way
 * GPU drivers prefetch for a device fault.  The chunk-sized block around
 * the page is a tree of aligned regions (2 pages, 4, ... 512); the largest
 * region around the page of which more than half has come back by faults
 * comes back whole.  A lone random access brings back one page; a block
 * read in random order comes back in ever larger pieces once half of
 * each piece has been asked for.
 */
static struct fault_dense *dense_block_of(struct hetmm_ctx *ctx,
					  uint64_t vpn)
{
	uint64_t block = vpn / DENSE_BLOCK_PAGES + 1;
	uint64_t gen = atomic_load_explicit(&ctx->dense_gen,
					    memory_order_relaxed);
	struct fault_dense *d = &ctx->fault->dense[block % DENSE_BLOCKS];
	if (d->block != block || d->gen != gen) {
		memset(d->bits, 0, sizeof(d->bits));
		d->nset = 0;
		d->block = block;
		d->gen = gen;
	}
	return d;
}

static unsigned dense_count(const struct fault_dense *d, unsigned lo,
			    unsigned n)
{
	if (n < 64) {
		uint64_t mask = ((1ull << n) - 1) << (lo % 64);
		return (unsigned)__builtin_popcountll(d->bits[lo / 64] & mask);
	}
	unsigned set = 0;
	for (unsigned w = lo / 64; w < (lo + n) / 64; w++)
		set += (unsigned)__builtin_popcountll(d->bits[w]);
	return set;
}

static void dense_mark(struct fault_dense *d, unsigned lo, unsigned n)
{
	for (unsigned i = lo; i < lo + n; i++) {
		uint64_t bit = 1ull << (i % 64);
		d->nset += !(d->bits[i / 64] & bit);
		d->bits[i / 64] |= bit;
	}
}

/* The number of pages of the region to bring back around vpn: the
 * largest aligned region more than half asked for, fault_around_max at
 * most, or 1.  No region twice the size of all that was asked for can
 * qualify, which keeps a sparse block's fault to a few instructions. */
static unsigned dense_region(struct hetmm_ctx *ctx, uint64_t vpn,
			     struct fault_dense *d, size_t room)
{
	unsigned idx = (unsigned)(vpn % DENSE_BLOCK_PAGES), best = 1;
	dense_mark(d, idx, 1);
	for (unsigned size = 2; size < 2 * d->nset &&
	     size <= DENSE_BLOCK_PAGES && size <= ctx->fault_around_max &&
	     size <= room; size *= 2)
		if (2 * dense_count(d, idx & ~(size - 1), size) > size)
			best = size;
	return best;
}

/* Bring back every device page of [lo, hi), waking no one, the runs'
 * copies in flight together (the region's pages need not follow one
 * another: one copy after the other, a region of a random access's
 * block took a read per run); true if vpn came back (or was back
 * already). */
static bool fault_back_region(struct hetmm_ctx *ctx, uint64_t lo,
			      uint64_t hi, uint64_t vpn)
{
	void *staging = ctx->fault->staging;
	for (uint64_t v = lo; v < hi;) {
		if (!shadow_claimable(shadow_get(&ctx->shadow, v))) {
			v++;
			continue;
		}
		size_t got = fault_back_run(ctx, v, hi - v, &staging,
					    BACK_NO_WAKE, true);
		v += got ? got : 1;
	}
	fault_back_drain(ctx);
	uint64_t e = shadow_get(&ctx->shadow, vpn);
	return !shadow_claimable(e) && !shadow_is_busy(e);
}

/* Is a page of [lo, hi) other than vpn on a device, to come back? */
static bool region_has_more(struct hetmm_ctx *ctx, uint64_t lo, uint64_t hi,
			    uint64_t vpn)
{
	for (uint64_t v = lo; v < hi; v++)
		if (v != vpn && shadow_claimable(shadow_get(&ctx->shadow, v)))
			return true;
	return false;
}

/*
 * If the fault's block is dense enough, bring back its region and wake
 * it; false leaves the fault to the one-page path.  So does a region in
 * which only the faulting page is left on the device (a random access
 * whose neighbours came back before it): the one-page path installs it
 * with the fill that wakes its thread, where the region's way waits for
 * its copies and wakes after them, for an asynchronous device a wake-up
 * of the handler by the device's completion thread more.
 */
static bool fault_back_dense(struct hetmm_ctx *ctx, uintptr_t addr,
			     struct fault_stream *s, size_t room)
{
	uint64_t vpn = addr_to_vpn(addr);
	struct fault_dense *d = dense_block_of(ctx, vpn);
	unsigned size = dense_region(ctx, vpn, d, room);
	uint64_t vma_lo, vma_hi;
	if (size == 1 || !fault_vma(ctx, addr, &vma_lo, &vma_hi))
		return false;
	uint64_t lo = MAX(vpn & ~(uint64_t)(size - 1), vma_lo);
	uint64_t hi = MIN((vpn | (size - 1)) + 1, vma_hi);
	if (!region_has_more(ctx, lo, hi, vpn))
		return false;
	bool back = fault_back_region(ctx, lo, hi, vpn);
	if (!back && ctx->fault->copy_failed) {
		/* The faulting thread stays in its fault: see
		 * fault_back_failed(). */
		uffd_wake(ctx->uffd.fd, vpn_to_addr(lo), (vpn - lo) * PAGE_SIZE);
		uffd_wake(ctx->uffd.fd, vpn_to_addr(vpn + 1),
			  (hi - vpn - 1) * PAGE_SIZE);
		return false;
	}
	uffd_wake(ctx->uffd.fd, vpn_to_addr(lo), (hi - lo) * PAGE_SIZE);
	if (!back)
		return false;   /* raced for it: the one-page path decides */
	dense_mark(d, (unsigned)(lo % DENSE_BLOCK_PAGES), (unsigned)(hi - lo));
	fault_around_done(ctx, s, lo, hi);
	return true;
}

/*
 * The faulting page's frame metadata is written when the page leaves the
 * device, after the fill: a random access finds it cold, and its miss,
 * fetched now, overlaps the fill instead of following it.
 */
static void frame_prefetch(uint64_t e)
{
	uint64_t idx;
	struct hetmm_pagemap *pgmap = pfn_pagemap(shadow_pfn(e), &idx);
	if (pgmap)
		__builtin_prefetch(&pgmap->pages[idx], 1);
}

/*
 * A huge device page of several chunks (16 and 64 KiB pages: base.h),
 * claimed whole from head (got pages): it comes back a chunk at a time,
 * unwoken, and is collapsed into one THP once all of it is back; then
 * the block is woken.  True if vpn came back.
 */
static bool fault_back_block(struct hetmm_ctx *ctx, uint64_t head,
			     size_t got, uint64_t vpn)
{
	void *staging = ctx->fault->staging;
	size_t left = ctx->fault->bp.left, back = 0;
	for (size_t off = 0; off < got; off += CHUNK_PAGES)
		back += fault_back_claimed(ctx, head + off,
					   MIN((size_t)CHUNK_PAGES, got - off),
					   ctx->fault->claims + off, &staging,
					   BACK_NO_WAKE);
	back += fault_back_drain(ctx) - left;
	if (back == PMD_PAGES)
		madvise((void *)vpn_to_addr(head), PMD_SIZE, MADV_COLLAPSE);
	bool ok = !shadow_claimable(shadow_get(&ctx->shadow, vpn));
	if (!ok && ctx->fault->copy_failed) {
		/* The faulting thread stays in its fault: see
		 * fault_back_failed(). */
		uffd_wake(ctx->uffd.fd, vpn_to_addr(head),
			  (vpn - head) * PAGE_SIZE);
		uffd_wake(ctx->uffd.fd, vpn_to_addr(vpn + 1),
			  (head + got - vpn - 1) * PAGE_SIZE);
		return false;
	}
	uffd_wake(ctx->uffd.fd, vpn_to_addr(head), got * PAGE_SIZE);
	return ok;
}

/*
 * A fault on a huge device page brings the whole page back, as one THP
 * (back.c), where its PMD block lies within the faulting page's mapping:
 * the kernel's migrate_to_ram of a device THP.  False leaves the fault
 * to the usual path: not huge, or not all of it could be claimed.
 */
static bool fault_back_huge(struct hetmm_ctx *ctx, uintptr_t addr, uint64_t e)
{
	uint64_t vpn = addr_to_vpn(addr), idx;
	uint64_t head = vpn & ~(uint64_t)(PMD_PAGES - 1);
	struct hetmm_pagemap *pgmap = pfn_pagemap(shadow_pfn(e), &idx);
	uint64_t lo, hi;
	if (!pgmap || !(atomic_load_explicit(&pagemap_page(pgmap, idx)->owner,
					     memory_order_relaxed) & PAGE_HUGE) ||
	    !fault_vma(ctx, addr, &lo, &hi) || head < lo ||
	    head + PMD_PAGES > hi)
		return false;
	void *staging = ctx->fault->staging;
	if (PMD_PAGES == CHUNK_PAGES) {
		/* An asynchronous device's copies land in a THP (BACK_PMD):
		 * the page was one when it left. */
		size_t got = fault_back_run(ctx, head, PMD_PAGES, &staging,
					    BACK_PMD, false);
		return vpn < head + got;
	}
	size_t got = claim_device_run(&ctx->shadow, head, PMD_PAGES,
				      ctx->fault->claims);
	return got && fault_back_block(ctx, head, got, vpn);
}

/*
 * May a window of stream s, in the mapping [vma_lo, vma_hi), come back
 * in whole PMDs?  Only a window of a PMD or more (a random access never
 * fetches 2 MiB), where the handler can (f->pmd) and the mapping may
 * have THPs.  Asked of the kernel once per stream: a mapping's
 * MADV_NOHUGEPAGE given in the middle of a stream holds from the next.
 */
static bool window_in_pmds(struct hetmm_ctx *ctx, struct fault_stream *s,
			   size_t window, uint64_t vma_lo, uint64_t vma_hi)
{
	if (!ctx->fault->pmd || window < PMD_PAGES ||
	    vma_hi - vma_lo < PMD_PAGES)
		return false;
	if (s->thp_lo != vma_lo || s->thp_hi != vma_hi) {
		s->thp_lo = vma_lo;
		s->thp_hi = vma_hi;
		s->thp = vma_thp_allowed(vpn_to_addr(vma_lo));
	}
	return s->thp;
}

/*
 * An upward window in PMDs, cut to end on a PMD boundary where it
 * crosses one: the window after it then starts on a boundary, and comes
 * back in whole blocks.  Left as it is, a window starting k pages into a
 * PMD ends k pages into one, and every later window brings its first and
 * last PMD back in base pages, a UFFDIO_COPY each, one page allocation
 * and one copy more a page than a block's (a 64 MiB scan: 2048 of its
 * 16384 pages, the windows growing eightfold from one page; with a
 * fault_around_max of one PMD, every page).
 */
static size_t window_to_pmd_end(uint64_t vpn, size_t window)
{
	uint64_t end = (vpn + window) & ~(uint64_t)(PMD_PAGES - 1);
	return end > vpn ? (size_t)(end - vpn) : window;
}

/*
 * Bring back the faulting page and the rest of its window, a chunk at a
 * time, moving away from the faulting page in the stream's direction.
 * The faulting page's chunk wakes its waiters as it lands, so the thread
 * runs on at once; the rest of the window is woken once, at the end.  A
 * thread that catches up with the handler sleeps until then: waking it
 * chunk by chunk costs a cross-CPU wake-up per chunk, as long as moving
 * the chunk itself on these machines.  An asynchronous device's copies
 * stay in flight from chunk to chunk, its queue full over the whole
 * window, and each of its pieces wakes as it lands (fault_back_claimed):
 * there a wake costs little beside the device's copy.  A chunk that comes
 * up short (someone holds the next page, or an event waits to be read and
 * the rest was woken to fault again after it) ends the window.  The
 * device may allow fewer pages than that, room (fault_admit): a window,
 * or a huge page or dense region, never brings back more.
 */
static void fault_back(struct hetmm_ctx *ctx, uintptr_t addr, uint64_t e,
		       size_t room)
{
	uint64_t vpn = addr_to_vpn(addr);
	void *staging = ctx->fault->staging;
	frame_prefetch(e);
	bool down;
	struct fault_stream *s;
	if (ctx->fault->npending) {
		/* Fault-around could reach a range an event changes: the
		 * page alone.  Its stream goes on past it, so that the next
		 * fault of a scan gets the whole window again, where it
		 * would start over at one page (under a resident bound
		 * every eviction's zap raises such an event). */
		s = fault_stream_of(ctx, addr, &down);
		if (fault_back_run(ctx, vpn, 1, &staging, 0, false))
			fault_around_done(ctx, s, vpn, vpn + 1);
		return;
	}
	if (room >= PMD_PAGES && fault_back_huge(ctx, addr, e))
		return;
	s = fault_stream_of(ctx, addr, &down);
	if (s->window == 1 && fault_back_dense(ctx, addr, s, room))
		return;
	size_t window = MIN(s->window, room);
	uint64_t lo = vpn, hi = vpn;     /* [lo, hi) is back */
	uint64_t woke_lo = vpn, woke_hi = vpn;
	uint64_t vma_lo = 0, vma_hi = UINT64_MAX;   /* unbounded if unknown */
	unsigned pmd = 0;
	if (window > 1 && fault_vma(ctx, addr, &vma_lo, &vma_hi) && !down &&
	    window_in_pmds(ctx, s, window, vma_lo, vma_hi)) {
		pmd = BACK_PMD;
		window = window_to_pmd_end(vpn, window);
	}
	while (hi - lo < window) {
		size_t want = MIN(window - (hi - lo), (size_t)CHUNK_PAGES);
		want = MIN(want, down ? (lo == hi ? vpn + 1 : lo) - vma_lo
				      : vma_hi - hi);
		/* In PMDs, the first chunk ends at a PMD's boundary. */
		if (pmd && hi % PMD_PAGES)
			want = MIN(want, PMD_PAGES - hi % PMD_PAGES);
		if (!want)
			break;
		unsigned how = (hi == lo ? 0 : BACK_NO_WAKE) | pmd;
		size_t got;
		if (!down) {
			got = fault_back_run(ctx, hi, want, &staging, how,
					     true);
			hi += got;
		} else {
			uint64_t top = lo == hi ? vpn : lo - 1;
			size_t n = device_run_down(ctx, top, want);
			got = n ? fault_back_run(ctx, top + 1 - n, n, &staging,
						 how, true) : 0;
			if (got < n) {
				/* raced: the run is not whole (a failed
				 * copy's pages wait for fault_back_failed) */
				if (!ctx->fault->copy_failed)
					uffd_wake(ctx->uffd.fd,
						  vpn_to_addr(top + 1 - n),
						  n * PAGE_SIZE);
				break;
			}
			if (lo == hi)
				hi = top + 1;
			lo = top + 1 - got;
		}
		if (!how) {
			woke_lo = lo;
			woke_hi = hi;
		}
		if (got < want)
			break;
	}
	/* The window's copies in flight land before it is woken. */
	fault_back_drain(ctx);
	if (lo < woke_lo)
		uffd_wake(ctx->uffd.fd, vpn_to_addr(lo),
			  (woke_lo - lo) * PAGE_SIZE);
	if (woke_hi < hi)
		uffd_wake(ctx->uffd.fd, vpn_to_addr(woke_hi),
			  (hi - woke_hi) * PAGE_SIZE);
	fault_around_done(ctx, s, lo, hi);
}

/*
 * A hole in a page the pin API holds (or in fixed device memory): no
 * migration may take it, so fill it for the thread touching it, with a
 * reference of our own (a count word's low bits) so that the holder
 * can't let go and a migration claim it meanwhile.  If the word stopped
 * being a hold, wake the thread to fault again.
 */
static void fault_zero_held(struct hetmm_ctx *ctx, _Atomic uint64_t *slot,
			    uintptr_t addr, bool write)
{
	uint64_t e;
	bool ref = shadow_ref_held(slot, &e);
	if (!ref && !shadow_is_fixed(e)) {
		uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
		return;
	}
	if (uffd_fill(ctx->uffd.fd, write ? FILL_COPY : FILL_ZERO, addr,
		      (uintptr_t)ctx->zero_src, PAGE_SIZE,
		      FILL_ONCE | markers_fill(ctx)) > 0)
		STAT_ADD(ctx, fault_zero, 1);
	/* Our reference goes before the thread resumes: it may release its
	 * own hold and expect the word back where it left it. */
	if (ref)
		shadow_unref(slot);
	uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
}

/* A hole in a registered range: fill it as the kernel would have. */
static void fault_zero(struct hetmm_ctx *ctx, uintptr_t addr, bool write)
{
	/* A stale fault for a page that is back already: don't claim it
	 * (others would see it BUSY), just let the thread go. */
	uint8_t pf = 0;
	if (vma_page_presence(&ctx->vmaq, addr, 1, &pf) == 0 && (pf & PG_PRESENT)) {
		uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
		return;
	}
	_Atomic uint64_t *slot = shadow_slot(&ctx->shadow, addr_to_vpn(addr),
					     true);
	uint64_t e = 0;
	if (!slot ||
	    !atomic_compare_exchange_strong(slot, &e, shadow_filling())) {
		/* Changed under us; the new owner wakes us, or, with no slot
		 * at all, waking lets the thread retry.  A held page has no
		 * owner to wake us: fill it here. */
		if (slot && shadow_is_system(e))
			fault_zero_held(ctx, slot, addr, write);
		else if (!slot)
			uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
		return;
	}
	/* A write would take a second fault to break a zero-page mapping,
	 * so give it a private zeroed page at once. */
	long rc = uffd_fill(ctx->uffd.fd, write ? FILL_COPY : FILL_ZERO, addr,
			    (uintptr_t)ctx->zero_src, PAGE_SIZE,
			    FILL_WAKE | FILL_ONCE | markers_fill(ctx));
	atomic_store_explicit(slot, 0, memory_order_release);
	if (rc < 0)
		uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
	else
		STAT_ADD(ctx, fault_zero, 1);
}

/*
 * A write-protect fault on a page no migration holds: the first write to
 * a page of a placed pagemap, which came back write-protected to be told
 * clean (back_fill_wp), or a stale fault (every migration lifts its
 * protection before it lets go of the page).  The protection is lifted
 * with the page claimed, or with a reference on a page the pin API
 * holds, so that no migration can protect it meanwhile and have its
 * protection undone here.  A claim that fails means someone holds the
 * page now and will wake the thread.
 */
static void fault_unprotect(struct hetmm_ctx *ctx, uintptr_t addr)
{
	_Atomic uint64_t *slot = shadow_slot(&ctx->shadow, addr_to_vpn(addr),
					     true);
	uint64_t e = 0;
	if (!slot) {
		uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
		return;
	}
	if (atomic_compare_exchange_strong(slot, &e, shadow_filling())) {
		int rc = uffd_writeprotect(ctx->uffd.fd, addr, PAGE_SIZE,
					   FILL_ONCE);
		atomic_store_explicit(slot, 0, memory_order_release);
		if (rc)
			uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
		return;
	}
	bool ref = shadow_ref_held(slot, &e);
	if (ref && uffd_writeprotect(ctx->uffd.fd, addr, PAGE_SIZE, FILL_ONCE))
		uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
	if (ref)
		shadow_unref(slot);
	else if (!shadow_is_busy(e))
		uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
}

/* Is the page at vpn on a device, and nobody's claim? */
static bool still_on_device(struct hetmm_ctx *ctx, uint64_t vpn)
{
	return shadow_claimable(shadow_get(&ctx->shadow, vpn));
}

/*
 * SIGBUS for the thread of fault m, whose page cannot come back.  Where
 * the kernel can, the page is poisoned (UFFDIO_POISON, 6.6): the kernel
 * wakes the thread, whose access then raises its own SIGBUS
 * (at the address accessed), and so does every access after until a
 * migration back installs the page over the marker or a zap drops it.
 * Elsewhere the thread is sent SIGBUS itself: rt_tgsigqueueinfo lets a
 * thread signal another only with a negative si_code, so SI_QUEUE, with
 * si_addr where a fault puts it.  The signal ends the thread's wait in
 * its fault; woken as well, a thread that blocks SIGBUS faults again and
 * the copy is tried again.
 */
static void fault_sigbus(struct hetmm_ctx *ctx, const struct uffd_msg *m,
			 uintptr_t addr)
{
	STAT_ADD(ctx, fault_sigbus, 1);
	if ((ctx->uffd.features & UFFD_FEATURE_POISON) && !TEST_NO_POISON() &&
	    uffd_poison(ctx->uffd.fd, addr, PAGE_SIZE,
			FILL_ONCE | markers_fill(ctx)) == 0)
		return;
	pid_t tid = (pid_t)m->arg.pagefault.feat.ptid;
	if (tid) {
		siginfo_t si;
		memset(&si, 0, sizeof(si));
		si.si_signo = SIGBUS;
		si.si_code = SI_QUEUE;
		si.si_addr = (void *)(uintptr_t)m->arg.pagefault.address;
		syscall(SYS_rt_tgsigqueueinfo, getpid(), tid, SIGBUS, &si);
	}
	uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
}

/*
 * The faulting page's copy back failed (the driver's, a device error):
 * its fault-around left it on the device, and its thread waiting in the
 * fault.  Try the page alone HETMM_COPY_RETRIES more times, then SIGBUS,
 * as the kernel's fault does when migrate_to_ram says VM_FAULT_SIGBUS.
 * A try that fails for another reason (a claim, an event to read first)
 * has woken the thread to fault again.
 */
static void fault_back_failed(struct hetmm_ctx *ctx, const struct uffd_msg *m,
			      uintptr_t addr)
{
	uint64_t vpn = addr_to_vpn(addr);
	void *staging = ctx->fault->staging;
	for (int t = 0; t < HETMM_COPY_RETRIES; t++) {
		if (!still_on_device(ctx, vpn))
			return;   /* back, or someone else's now */
		ctx->fault->copy_failed = false;
		fault_back_run(ctx, vpn, 1, &staging, 0, false);
		if (!ctx->fault->copy_failed)
			return;
	}
	if (still_on_device(ctx, vpn))
		fault_sigbus(ctx, m, addr);
	else
		uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
}

/* Does an event read after the current message of the batch change the
 * mapping of addr? */
static bool event_pending_at(const struct hetmm_ctx *ctx, uintptr_t addr)
{
	return uffd_event_in(ctx->fault->pending, ctx->fault->npending, addr,
			     addr + PAGE_SIZE);
}

/* Lift a sync page's protection; if the kernel says an event waits to be
 * read, the thread faults again and asks anew. */
static void sync_answer(struct hetmm_ctx *ctx, uintptr_t addr)
{
	handler_sync_answering(ctx);
	if (uffd_writeprotect(ctx->uffd.fd, addr, PAGE_SIZE, FILL_ONCE))
		uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
	else
		lifecycle_settled(ctx);
}

/* A claim of a migration to a device: a bare one, or its page's device
 * entry before the commit (the frame is not allocated yet). */
static bool claimed_to_device(uint64_t e, uintptr_t addr)
{
	uint64_t idx;
	struct hetmm_pagemap *pgmap;
	if (!shadow_on_device(e))
		return true;
	pgmap = pfn_pagemap(shadow_pfn(e), &idx);
	if (!pgmap)
		return false;
	TEST_HOOK(TEST_HOOK_FAULT_CLAIMED_FRAME, addr, PAGE_SIZE);
	return !(atomic_load(&pagemap_page(pgmap, idx)->owner) &
		 HETMM_PAGE_ALLOCATED);
}

/*
 * May the fault m on device page e be served now, and how many pages may
 * come back for it (*room)?  The device's fault_room op says (all of
 * them without one).  A fault it holds back is kept, its thread left
 * waiting in it, as the kernel's fault waits for reclaim past a memory
 * cgroup's limit: the handler serves everything else meanwhile, the
 * device's evictor's events and syncs included, and tries it again
 * after each batch and when the device makes room (fault_retry_held).
 * A page held already is held once: answering it wakes every thread
 * waiting there.  Out of slots, a fault is served a page.
 */
static bool fault_admit(struct hetmm_ctx *ctx, const struct uffd_msg *m,
			uint64_t e, size_t *room)
{
	struct fault_engine *f = ctx->fault;
	uint64_t idx;
	struct hetmm_pagemap *pgmap = pfn_pagemap(shadow_pfn(e), &idx);
	*room = SIZE_MAX;
	if (!pgmap || !pgmap->ops->fault_room)
		return true;
	away_begin();   /* a driver's op, its locks: see notifier_call */
	*room = pgmap->ops->fault_room(pgmap, idx);
	away_end();
	if (*room)
		return true;
	uint64_t addr = m->arg.pagefault.address & PAGE_MASK;
	for (size_t i = 0; i < f->nheld; i++)
		if ((f->held[i].arg.pagefault.address & PAGE_MASK) == addr)
			return false;
	if (f->nheld == FAULT_HELD_MAX) {
		*room = 1;
		return true;
	}
	f->held[f->nheld++] = *m;
	return false;
}

/* Fault m, counted, on a page of the process's. */
static void fault_serve(struct hetmm_ctx *ctx, const struct uffd_msg *m)
{
	uintptr_t addr = (uintptr_t)m->arg.pagefault.address & PAGE_MASK;
	uint64_t flags = m->arg.pagefault.flags;
	uint64_t e = shadow_get(&ctx->shadow, addr_to_vpn(addr));
	size_t room;
	if (flags & UFFD_PAGEFAULT_FLAG_WP) {
		/* BUSY: a migration holds it, lifts the protection and
		 * wakes us. */
		if (!shadow_is_busy(e))
			fault_unprotect(ctx, addr);
		return;
	}
	if (shadow_is_busy(e)) {
		/* A migration's copy (its thread's, or a driver's thread
		 * copying for it) reading a page the process zapped under
		 * it: the kernel would have read zeroes.  Only a copy: see
		 * migrators_copying. */
		if (claimed_to_device(e, addr) &&
		    migrators_copying(ctx, addr, addr + PAGE_SIZE,
				      (pid_t)m->arg.pagefault.feat.ptid))
			if (uffd_fill(ctx->uffd.fd, FILL_ZERO, addr, 0,
				      PAGE_SIZE, FILL_WAKE | FILL_ONCE |
				      markers_fill(ctx)) < 0)
				uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
		return;
	}
	if (shadow_on_device(e) && coherent_fault(ctx, e, addr)) {
		/* CPU-addressable device memory: filled in place. */
	} else if (shadow_on_device(e)) {
		if (!fault_admit(ctx, m, e, &room))
			return;
		ctx->fault->copy_failed = false;
		fault_back(ctx, addr, e, room);
		if (ctx->fault->copy_failed)
			fault_back_failed(ctx, m, addr);
	} else if (addr >= ctx->fault->last_fill_start &&
		   addr < ctx->fault->last_fill_end) {
		/* Queued while we brought its page back with a window: it
		 * is there now.  Forget the window so that a real hole
		 * there (zapped since) gets filled on the next try. */
		ctx->fault->last_fill_end = 0;
		uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
	} else {
		fault_zero(ctx, addr, flags & UFFD_PAGEFAULT_FLAG_WRITE);
	}
}

/*
 * The faults held back, tried again in the order they came (each may be
 * held again).  Their pages may have come back since, or gone (a
 * discard, an unmap): fault_serve finds them as a stale fault does.
 */
static void fault_retry_held(struct hetmm_ctx *ctx)
{
	struct fault_engine *f = ctx->fault;
	struct uffd_msg held[FAULT_HELD_MAX];
	size_t n = f->nheld;
	memcpy(held, f->held, n * sizeof(*held));
	f->nheld = 0;
	for (size_t i = 0; i < n; i++)
		fault_serve(ctx, &held[i]);
}

static void handle_pagefault(struct hetmm_ctx *ctx, const struct uffd_msg *m)
{
	uintptr_t addr = (uintptr_t)m->arg.pagefault.address & PAGE_MASK;
	uint64_t flags = m->arg.pagefault.flags;

	if (is_sync_page(ctx, addr)) {
		/* handler_sync(): everything before it is handled now.  Not
		 * a fault of the process's: not counted.  The kernel hands
		 * out faults before events, so an event queued before the
		 * sync may come later in this batch: then the answer waits
		 * for the batch's end. */
		if (ctx->fault->npending &&
		    ctx->fault->nsyncs < MAX_MIGRATORS)
			ctx->fault->syncs[ctx->fault->nsyncs++] = addr;
		else
			sync_answer(ctx, addr);
		return;
	}
	if (event_pending_at(ctx, addr)) {
		/* See fault_handler_main(): fault again, after the event. */
		uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
		return;
	}
	STAT_ADD(ctx, faults, 1);
	TRACE2(fault, addr, flags);
	if (addr == (uintptr_t)ctx->fault->doorbell) {
		if (uffd_fill(ctx->uffd.fd, FILL_ZERO, addr, 0, PAGE_SIZE,
			      FILL_WAKE | FILL_ONCE) > 0)
			ctx->fault->doorbell_served = true;
		else
			uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
		return;
	}
	fault_serve(ctx, m);
}

/* The process changed a registered range: see lifecycle.c. */
static void handle_msg(struct hetmm_ctx *ctx, const struct uffd_msg *m)
{
	switch (m->event) {
	case UFFD_EVENT_PAGEFAULT:
		handle_pagefault(ctx, m);
		break;
	case UFFD_EVENT_UNMAP:
		lifecycle_unmap(ctx, m->arg.remove.start, m->arg.remove.end);
		break;
	case UFFD_EVENT_REMOVE:
		lifecycle_discard(ctx, m->arg.remove.start, m->arg.remove.end);
		break;
	case UFFD_EVENT_REMAP:
		lifecycle_remap(ctx, m->arg.remap.from, m->arg.remap.to,
				m->arg.remap.len);
		break;
	default:        /* MSG_SERVED: the deputy served it (deputy.h) */
		break;
	}
}

/*
 * How many messages to ask the kernel for.  A thread has one message at
 * most waiting for us (a fault or an event it waits on), so while they
 * come one at a time from one thread, nothing else can be queued behind
 * the one it raised, and a read for more costs that fault the kernel's
 * second look at empty queues.  A message from another thread, or a
 * batch, means several threads fault at once: read batches again.  So
 * does the same fault again: it was woken unserved, because the kernel
 * refused the fill while an event waits to be read, and the kernel hands
 * out faults before events: reading one message at a time, the handler
 * would never get to the event while the thread keeps faulting.
 */
static size_t read_want(const struct uffd_msg *msgs, size_t n,
			uint32_t *last_tid, uint64_t *last_addr)
{
	uint32_t tid = msgs[0].event == UFFD_EVENT_PAGEFAULT ?
		       msgs[0].arg.pagefault.feat.ptid : 0;
	uint64_t addr = msgs[0].arg.pagefault.address & PAGE_MASK;
	bool alone = n == 1 && tid && tid == *last_tid && addr != *last_addr;
	*last_tid = n == 1 ? tid : 0;
	*last_addr = addr;
	return alone ? 1 : FAULT_READ_BATCH;
}

/*
 * Is addr a page the event the handler is in the middle of may still
 * change?  Its range, for a discard or an unmap: their handling takes
 * entries away only (device pages' and parked ones'), and the kernel
 * changes nothing outside it, so a hole elsewhere is one the handler
 * would fill the same way after the event.  For an mremap, its old
 * range and the one it gives entries to pages in: not always its
 * message's new range (a mapping moved on since, forward_follow), so
 * every page until the handler knows which (lifecycle_remap_dest).
 * Parked pieces it carries go there too (unpark_one).
 */
static bool current_event_at(const struct hetmm_ctx *ctx, uintptr_t addr)
{
	const struct uffd_msg *m = ctx->fault->current;
	if (!m)
		return false;
	if (uffd_event_in(m, 1, addr, addr + PAGE_SIZE))
		return true;
	if (m->event != UFFD_EVENT_REMAP)
		return false;
	uintptr_t dest = lifecycle_remap_dest(ctx);
	return !dest || addr - dest < m->arg.remap.len;
}

/*
 * The deputy's serving of fault m, read while the handler is away
 * (deputy.c): a fault on a page with no entry, none of whose events is
 * read but not handled (the handler's, later in its batch; the deputy
 * checks its own kept ones first), nor in the middle of being handled
 * (current_event_at: the handler waits for a driver's lock there, or
 * one of its own, away).  Handled at once, such a page could land after
 * a discard's zap or where an mremap's device pages are about to go:
 * see fault_handler_main().  Served as fault_zero and fault_unprotect
 * serve it for the handler; whether it was.
 */
static bool deputy_fault(struct hetmm_ctx *ctx, const struct uffd_msg *m)
{
	struct fault_engine *f = ctx->fault;
	uintptr_t addr = (uintptr_t)m->arg.pagefault.address & PAGE_MASK;
	if (current_event_at(ctx, addr) || addr == (uintptr_t)f->doorbell ||
	    is_sync_page(ctx, addr) || event_pending_at(ctx, addr) ||
	    shadow_get(&ctx->shadow, addr_to_vpn(addr)) != 0)
		return false;
	uint64_t flags = m->arg.pagefault.flags;
	STAT_ADD(ctx, faults, 1);
	TRACE2(fault, addr, flags);
	if (flags & UFFD_PAGEFAULT_FLAG_WP)
		fault_unprotect(ctx, addr);
	else
		fault_zero(ctx, addr, flags & UFFD_PAGEFAULT_FLAG_WRITE);
	return true;
}

enum { EXIT_READING, EXIT_DONE, EXIT_GO };

/* The handler has stopped reading: it waits until the userfaultfd is
 * closed (handler_release), uninstrumented, as nothing serves its
 * faults meanwhile. */
NO_TSAN static void handler_wait_exit(struct fault_engine *f)
{
	atomic_store(&f->exit_word, EXIT_DONE);
	futex_word(&f->exit_word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
	while (atomic_load(&f->exit_word) != EXIT_GO)
		futex_word(&f->exit_word, FUTEX_WAIT_PRIVATE, EXIT_DONE, NULL);
}

/*
 * The kernel refused an install of the handler's into [start, start +
 * len) (EAGAIN): an event waits to be read, or uffd.c refused it for an
 * event the deputy read and the handler has not handled (away.h).
 * Giving up would leave the rest of a fault-around window on the
 * device, to be copied back again when its thread faults again: under
 * a resident bound each eviction's zap raises such an event, and a
 * bounded scan read a good part of its file twice (docs/PERFORMANCE.md,
 * "Storage").  So the handler reads what waits, keeps it for after the
 * batch, and says to try again unless an event read but not handled
 * changes the range (its install could outlive a zap, or land where a
 * mapping left: see fault_handler_main) or the kernel still refuses
 * after REFUSED_WAIT_MS (it does until the thread that raised the event
 * has run again after the read).  Then the rest stays on the device, as
 * before.
 */
static bool handler_refused(struct hetmm_ctx *ctx, uintptr_t start,
			    size_t len, unsigned tries)
{
	struct fault_engine *f = ctx->fault;
	uint64_t now = monotonic_ms();
	if (!tries) {
		f->refused_until = now + REFUSED_WAIT_MS;
	} else {
		/* Sleep, not spin: the thread to run may want this CPU. */
		struct timespec nap = { 0, 1000L * MIN(20u << MIN(tries, 6u),
						       1000u) };
		if (now > f->refused_until || kept_full(f->deputy))
			return false;
		nanosleep(&nap, NULL);
	}
	kept_read_waiting(f->deputy);
	uintptr_t end = start + len;
	return !kept_event_in(f->deputy, start, end) &&
	       !uffd_event_in(f->pending, f->npending, start, end);
}

/*
 * The handler's next messages, as read(2) gives them, or 0 and nothing
 * read when it found messages a rescue kept (now the handler's:
 * kept_take).  With faults held back it waits for a message or for a
 * device to make room (hetmm_pagemap_room_made), whichever comes first,
 * and room made, tries the held faults again (-1, EAGAIN if no message
 * came).  A userfaultfd polls only while it does not block (poll says
 * POLLERR otherwise), and a fault may be woken between the poll and the
 * read: both go O_NONBLOCK, the flags put back before the held faults
 * are tried (the deputy, serving while the handler waits for a copy,
 * reads blocking).  Not busy between away_read_begin and away_read_end
 * (away.h), so nothing there may fault: no rescue would come (NO_TSAN,
 * raw system calls).
 */
NO_TSAN static ssize_t handler_wait(struct hetmm_ctx *ctx,
				    struct uffd_msg *msgs, size_t want,
				    bool *room)
{
	struct fault_engine *f = ctx->fault;
	int fd = ctx->uffd.fd;
	ssize_t got = 0;
	away_read_begin(&f->away);
	bool rescued = rescued_pending(f->deputy);
	long fl = f->nheld && !rescued ? syscall(SYS_fcntl, fd, F_GETFL) : -1;
	if (rescued) {
		rescued_merge(f->deputy);
	} else if (fl < 0 ||
		   syscall(SYS_fcntl, fd, F_SETFL, fl | O_NONBLOCK) != 0) {
		got = syscall(SYS_read, fd, msgs, want * sizeof(*msgs));
	} else {
		struct pollfd p[2] = { { .fd = fd, .events = POLLIN },
				       { .fd = f->room_fd, .events = POLLIN } };
		got = -1;
		errno = EAGAIN;
		if (syscall(SYS_ppoll, p, 2, NULL, NULL, 0) > 0 &&
		    p[0].revents)
			got = syscall(SYS_read, fd, msgs, want * sizeof(*msgs));
		int err = errno;
		syscall(SYS_fcntl, fd, F_SETFL, fl);
		errno = err;
		*room = p[1].revents;
	}
	int err = errno;
	away_read_end(&f->away);
	errno = err;
	return got;
}

static ssize_t handler_read(struct hetmm_ctx *ctx, struct uffd_msg *msgs,
			    size_t want)
{
	struct fault_engine *f = ctx->fault;
	bool room = false;
	ssize_t got = handler_wait(ctx, msgs, want, &room);
	int err = errno;
	if (room) {
		uint64_t rung;
		ssize_t rc = read(f->room_fd, &rung, sizeof(rung));
		(void)rc;   /* emptied: rung again, it wakes the next poll */
		fault_retry_held(ctx);
	}
	errno = err;
	return got;
}

static void *fault_handler_main(void *arg)
{
	struct hetmm_ctx *ctx = arg;
	struct uffd_msg msgs[FAULT_READ_BATCH];
	size_t want = FAULT_READ_BATCH;
	uint32_t last_tid = 0;
	uint64_t last_addr = 0;

	away_attach(&ctx->fault->away);
	deputy_attach(ctx->fault->deputy);
	away_read_end(&ctx->fault->away);   /* busy from here */
	/* Leave only once the doorbell fault is served: leaving on the
	 * stop flag alone could strand the thread that rang it. */
	while (!ctx->fault->doorbell_served) {
		/* What the deputy kept was read after everything before. */
		size_t n = kept_take(ctx->fault->deputy, msgs);
		bool kept = n;
		if (!kept) {
			ssize_t got = handler_read(ctx, msgs, want);
			if (got < 0) {
				if (errno == EINTR || errno == EAGAIN)
					continue;
				break;
			}
			n = (size_t)got / sizeof(msgs[0]);
		}
		if (!n)
			continue;
		/*
		 * Reading an event (munmap, madvise, mremap) lets the thread
		 * that raised it go on: its range may be zapped, unmapped or
		 * moved before the faults read with it in this batch are
		 * handled.  A page brought back or filled for one of them
		 * then could outlive the zap with stale bytes, be dropped for
		 * a mapping that only moved, or take the place of the device
		 * page about to follow an mremap.  So a fault in the range of
		 * an event later in the batch is not handled: its thread is
		 * woken to fault again, after the event.  And until the
		 * batch's last event a fault brings back its own page only,
		 * since fault-around could reach into such a range.
		 */
		size_t events = 0;
		for (size_t i = 0; i < n; i++)
			if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
				events = i + 1;
		for (size_t i = 0; i < n; i++) {
			ctx->fault->pending = &msgs[i + 1];
			ctx->fault->npending = i < events ? events - i - 1 : 0;
			ctx->fault->current = &msgs[i];
			deputy_batch_rest(ctx->fault->deputy, &msgs[i + 1],
					  n - i - 1);
			handle_msg(ctx, &msgs[i]);
		}
		ctx->fault->current = NULL;
		ctx->fault->npending = 0;
		deputy_batch_rest(ctx->fault->deputy, NULL, 0);
		for (unsigned k = 0; k < ctx->fault->nsyncs; k++)
			sync_answer(ctx, ctx->fault->syncs[k]);
		ctx->fault->nsyncs = 0;
		if (ctx->vacated.nrescue)
			lifecycle_retry(ctx);
		if (ctx->fault->nheld)
			fault_retry_held(ctx);
		if (!kept)
			want = read_want(msgs, n, &last_tid, &last_addr);
	}
	away_read_begin(&ctx->fault->away);
	handler_wait_exit(ctx->fault);
	return NULL;
}

static void *map_pages(size_t npages, int prot)
{
	void *p = mmap(NULL, npages * PAGE_SIZE, prot,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

int fault_engine_create(struct hetmm_ctx *ctx)
{
	struct fault_engine *f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	touch_pages(f, sizeof(*f));
	f->away.recall_len = PAGE_SIZE;
	ctx->fault = f;
	f->room_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (f->room_fd < 0)
		return -errno;
	f->deputy = deputy_create(ctx, &f->away, deputy_fault);
	if (!f->deputy)
		return -ENOMEM;
	f->pmd = back_pmd_create(ctx);
	handler_pipe_init(ctx);
	ctx->handler_refused = handler_refused;
	/* Everything the fault path needs is allocated here, not there. */
	f->staging = staging_map(1);
	f->claims = calloc(CLAIMS_MAX, sizeof(uint64_t));
	f->doorbell = map_pages(1, PROT_READ);
	f->away.recall = map_pages(1, PROT_READ);
	if (!f->staging || !f->claims || !f->doorbell || !f->away.recall)
		return -ENOMEM;
	touch_pages(f->claims, CLAIMS_MAX * sizeof(uint64_t));
	entry_own(ctx, &f->own_doorbell, f->doorbell, PAGE_SIZE);
	entry_own(ctx, &f->own_staging, f->staging, CHUNK_PAGES * PAGE_SIZE);
	entry_own(ctx, &f->own_recall, f->away.recall, PAGE_SIZE);
	int rc = uffd_register(ctx->uffd.fd, (uintptr_t)f->doorbell, PAGE_SIZE,
			       UFFDIO_REGISTER_MODE_MISSING, NULL);
	/* Registered, its discard raises the event that recalls the
	 * deputy (away.c). */
	if (!rc)
		rc = uffd_register(ctx->uffd.fd, (uintptr_t)f->away.recall,
				   PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING,
				   NULL);
	return rc;
}

void fault_engine_destroy(struct hetmm_ctx *ctx)
{
	struct fault_engine *f = ctx->fault;
	if (!f)
		return;
	entry_disown(ctx, &f->own_doorbell);   /* harmless if never owned */
	entry_disown(ctx, &f->own_staging);
	entry_disown(ctx, &f->own_stack);
	entry_disown(ctx, &f->own_recall);
	deputy_destroy(f->deputy);
	if (f->doorbell)
		munmap(f->doorbell, PAGE_SIZE);
	if (f->away.recall)
		munmap(f->away.recall, PAGE_SIZE);
	if (f->staging)
		munmap(f->staging, CHUNK_PAGES * PAGE_SIZE);
	free(f->claims);
	if (f->room_fd >= 0)
		close(f->room_fd);
	back_pmd_destroy(ctx, f->pmd);
	free(f);
	ctx->fault = NULL;
}

int fault_handler_start(struct hetmm_ctx *ctx)
{
	struct fault_engine *f = ctx->fault;
	atomic_store(&f->exit_word, EXIT_READING);
	/* Never the application's signals: thread.c says why. */
	int rc = hetmm_thread_create(&f->handler, fault_handler_main, ctx);
	if (rc)
		return rc;
	f->handler_running = true;
	rc = entry_own_thread_stack(ctx, f->handler, &f->own_stack);
	/* The deputy is recalled by a REMOVE event (away.c). */
	if (rc || !(ctx->uffd.features & UFFD_FEATURE_EVENT_REMOVE))
		return rc;
	return deputy_start(f->deputy);
}

/*
 * The handler sleeps in a blocking read(); the way to reach it is a fault.
 * Touch the doorbell page: the handler resolves that last fault and
 * leaves its loop.  The doorbell stays mapped: unmapping a registered page
 * now would wait for a reader that is gone, so the userfaultfd is closed
 * first.  And closed before the handler thread or the deputy exits, and
 * before either join: what a thread's exit unmaps (a sanitizer's
 * per-thread memory, say), and the oldest stacks glibc keeps for reuse,
 * which it unmaps once a joined thread's stack takes them past its cap,
 * may lie in a mapping registered whole (watch.c), and their event would
 * wait for a handler that reads no more (the deputy's exit under ASan: 1
 * run of 4 of test_window hung so, under load; its join on 6.1, where a
 * thread stack's mapping merges with its neighbours: test_stress, every
 * run).
 */
/*
 * Once the handler has stopped reading, nobody serves a fault until the
 * userfaultfd is closed: from then until the close this thread takes no
 * lock and makes no call a runtime intercepts (a mutex's wait took
 * ThreadSanitizer's into its own memory, a hole of a mapping registered
 * whole, and the context's destruction hung there: test_deverr, about 1
 * run in 5 under TSan).  The userfaultfd is closed with a raw system
 * call for the same reason.
 */
NO_TSAN static void handler_release(struct hetmm_ctx *ctx)
{
	struct fault_engine *f = ctx->fault;
	while (atomic_load(&f->exit_word) != EXIT_DONE)
		futex_word(&f->exit_word, FUTEX_WAIT_PRIVATE, EXIT_READING,
			   NULL);
	deputy_stop(f->deputy);
	if (ctx->uffd.fd >= 0)
		syscall(SYS_close, ctx->uffd.fd);
	ctx->uffd.fd = -1;
	atomic_store(&f->exit_word, EXIT_GO);
	futex_word(&f->exit_word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
}

void fault_handler_stop(struct hetmm_ctx *ctx)
{
	struct fault_engine *f = ctx->fault;
	if (!f || !f->handler_running)
		return;
	(void)*(volatile const char *)f->doorbell;
	handler_release(ctx);
	deputy_join(f->deputy);
	pthread_join(f->handler, NULL);
	f->handler_running = false;
}

int hetmm_pagemap_room_made(struct hetmm_pagemap *pgmap)
{
	if (!pgmap)
		return -EINVAL;
	if (ctx_forked(pgmap->ctx))
		return -ECHILD;
	uint64_t one = 1;
	/* Fails only with the counter at its top: rung already. */
	ssize_t rc = write(pgmap->ctx->fault->room_fd, &one, sizeof(one));
	(void)rc;
	return 0;
}

bool fault_on_handler(const struct hetmm_ctx *ctx)
{
	return ctx->fault && ctx->fault->handler_running &&
	       pthread_equal(pthread_self(), ctx->fault->handler);
}
