/* SPDX-License-Identifier: MIT */
/*
 * pmdback.c - a PMD-aligned block of device pages back as one
 * transparent huge page, for a device whose copies are asynchronous (the
 * file device's io_uring reads, the remote device's ucp_get).
 *
 * Why: on a VM with shadow page tables a thread's first touch of each
 * PTE someone else installed costs an exit (the bench's "first touch of
 * mapped pages", ~0.3-0.6 GB/s here), and that, not the device, bounded
 * a sequential fault-in.  A PMD costs one such touch per 2 MiB.
 *
 * How: the block's copies land in a staging block of the handler's, a
 * PMD-aligned range advised MADV_HUGEPAGE, which the kernel backs with a
 * THP (see below); when the last piece
 * has landed, one UFFDIO_MOVE takes the PMD into the process's range.
 * Pieces finish in the pipeline's order (copy.h), so a block is done when
 * its last page's piece is, and several blocks stay in flight as chunks
 * do.  Anything else (the kernel moves less than the PMD: an event waits
 * to be read, the staging got base pages) falls back to installing the
 * block's pages from staging as any piece (back_piece_install).
 *
 * Where the staging THPs come from: the handler faults one into the
 * block (MADV_POPULATE_WRITE) as it starts the block's copies, and the
 * move leaves the block empty again.  The kernel zeroes a fresh THP, at
 * about the cost of copying it; left to the device's first store, the
 * zeroing would come on top of the copy on the device's thread, where
 * the remote device copies over shared memory (a memcpy on its own
 * thread), so the handler zeroes block N + 1 while it copies block N.
 * A pool refilled ahead would zero the same 2 MiB for the same copy,
 * and hold memory while idle.
 *
 * Which pagemaps.  Per 2 MiB a block costs a fresh THP zeroed and a
 * move, where a piece's install costs a copy and, on such a VM, a first
 * touch per page.  A placed pagemap's block (below) costs two passes
 * more, a copy aside and a comparison, and a device that copies by DMA
 * (the file device: io_uring O_DIRECT) leaves the install copy as the
 * only CPU pass of a base-page window.  So a placed pagemap's blocks
 * come back whole only where a first touch is dear (placed_whole):
 * elsewhere the block costs three passes over 2 MiB against one.  On a
 * VM whose first touch costs a TLB miss (160 GB/s) with free page
 * reporting, whose THPs come back from the host unbacked and zero at
 * 1-6 GB/s, a 256 MiB file's sequential fault-in went from 0.22-0.92x
 * to 0.82-1.14x of io_uring O_DIRECT without them (docs/PERFORMANCE.md,
 * "Storage").  HETMM_PMD_BACK=always or never in the environment
 * overrides the choice (tests, measurements).
 *
 * Dirty tracking.  A placed pagemap's pages (the file device) come back
 * write-protected, to be told clean (back.c, back_fill_wp), but a move
 * can't write-protect: the PMD lands writable, and is write-protected
 * whole right after.  A thread that first touches the block between the
 * two writes without a fault.  So the block's bytes as read are kept (a
 * memcpy before the move) and compared after the protection: a page that
 * differs was written, and is left dirty (no frame noted in placed_src),
 * so its bytes reach the file.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "back.h"
#include "copy.h"
#include "ctx.h"
#include "entry.h"
#include "pagemap.h"
#include "pmdback.h"
#include "shadow.h"
#include "testhook.h"
#include "vma.h"

/* Blocks in flight at once: a queue of HETMM_COPY_DEPTH_DEFAULT pieces
 * holds two; more blocks than the queue holds only wait. */
#define PMD_BLOCKS 4

struct pmd_block {
	uint64_t head;                    /* first page number */
	struct hetmm_pagemap *pgmap;
	char *staging;                    /* PMD_SIZE of its own */
	size_t left;                      /* pages whose copy is out */
	int err;                          /* a piece's error */
	unsigned how;
	uint64_t *claims;                 /* PMD_PAGES */
	uint64_t last_piece;              /* copy_pipe_added after its own */
};

struct back_pmd {
	bool placed_whole;                /* placed pagemaps' blocks too */
	struct pmd_block blk[PMD_BLOCKS];
	unsigned oldest, count;           /* blocks in flight, a ring */
	char *area;                       /* PMD_BLOCKS + 1 PMDs: staging,
					   * then the check copy */
	char *check;                      /* a placed block as read */
	uint64_t *claims;
	struct own_range own;
};

/* Pages first_touch_dear() touches per round, and the cost per page
 * above which a first touch is dear: a TLB miss costs tens of ns, an
 * exit to a hypervisor that shadows page tables about 10 us. */
#define TOUCH_PROBE_PAGES 32
#define TOUCH_DEAR_NS 1000u

/*
 * Does a thread's first touch of a page the kernel mapped cost it an
 * exit to the hypervisor (shadowed page tables)?  Measured once per
 * process: the cheapest of three rounds, since a preemption can only
 * make a round dearer.
 */
static bool first_touch_dear(void)
{
	static atomic_int known;          /* 0 not yet, 1 cheap, 2 dear */
	int k = atomic_load_explicit(&known, memory_order_relaxed);
	if (k)
		return k == 2;
	uint64_t best = UINT64_MAX;
	for (int round = 0; round < 3; round++) {
		size_t len = TOUCH_PROBE_PAGES * PAGE_SIZE;
		volatile char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
					MAP_PRIVATE | MAP_ANONYMOUS |
					MAP_POPULATE, -1, 0);
		if (p == MAP_FAILED)
			return false;
		uint64_t t0 = monotonic_ns();
		for (size_t off = 0; off < len; off += PAGE_SIZE)
			(void)p[off];
		best = MIN(best, monotonic_ns() - t0);
		munmap((void *)p, len);
	}
	k = best > (uint64_t)TOUCH_PROBE_PAGES * TOUCH_DEAR_NS ? 2 : 1;
	atomic_store_explicit(&known, k, memory_order_relaxed);
	return k == 2;
}

/* Whether a placed pagemap's blocks come back whole: HETMM_PMD_BACK in
 * the environment ("always", "never"), else where a first touch is
 * dear.  *none: no block comes back whole at all ("never"). */
static bool placed_whole(bool *none)
{
	const char *env = getenv("HETMM_PMD_BACK");
	*none = env && !strcmp(env, "never");
	if (env && !strcmp(env, "always"))
		return true;
	return !*none && first_touch_dear();
}

struct back_pmd *back_pmd_create(struct hetmm_ctx *ctx)
{
	bool none;
	bool placed = placed_whole(&none);
	if (none || ctx->frames.fd < 0 || PMD_PAGES != CHUNK_PAGES ||
	    !vma_thp_enabled())
		return NULL;
	struct back_pmd *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->placed_whole = placed;
	m->area = staging_map(PMD_BLOCKS + 1);
	m->claims = calloc(PMD_BLOCKS * PMD_PAGES, sizeof(uint64_t));
	if (!m->area || !m->claims) {
		back_pmd_destroy(ctx, m);
		return NULL;
	}
	touch_pages(m->claims, PMD_BLOCKS * PMD_PAGES * sizeof(uint64_t));
	/* The handler installs from it: no call may ever register it. */
	entry_own(ctx, &m->own, m->area, (PMD_BLOCKS + 1) * PMD_SIZE);
	for (unsigned i = 0; i < PMD_BLOCKS; i++) {
		m->blk[i].staging = m->area + i * PMD_SIZE;
		m->blk[i].claims = m->claims + i * PMD_PAGES;
	}
	m->check = m->area + PMD_BLOCKS * PMD_SIZE;
	return m;
}

void back_pmd_destroy(struct hetmm_ctx *ctx, struct back_pmd *m)
{
	if (!m)
		return;
	if (m->own.end)
		entry_disown(ctx, &m->own);
	if (m->area)
		munmap(m->area, (PMD_BLOCKS + 1) * PMD_SIZE);
	free(m->claims);
	free(m);
}

static void pmd_piece(struct back_pipe *bp, const struct copy_req *r,
		      int err);

void back_pmd_attach(struct back_pipe *bp, struct back_pmd *m)
{
	bp->pmd = m;
	bp->pmd_piece = m ? pmd_piece : NULL;
}

/* Do claims [0, PMD_PAGES) all come back by pgmap's asynchronous copies
 * (each run of frames checked once: back_frame_run keeps zero pages and
 * data apart), pgmap not a placed one unless m takes those? */
static bool block_fits(const struct back_pmd *m, const uint64_t *claims,
		       struct hetmm_pagemap **pgmapp)
{
	uint64_t idx;
	struct hetmm_pagemap *pgmap = pfn_pagemap(shadow_pfn(claims[0]), &idx);
	for (size_t i = 0; i < PMD_PAGES; i += back_frame_run(claims, i,
				PMD_PAGES, pgmap, idx))
		if (pfn_pagemap(shadow_pfn(claims[i]), &idx) != pgmap ||
		    !pgmap || !back_is_async(pgmap, idx))
			return false;
	if (pagemap_is_placed(pgmap) && !m->placed_whole)
		return false;
	*pgmapp = pgmap;
	return true;
}

/* Wait for the oldest block's copies, then finish it (and any older
 * piece of the pipeline): one wait for the block, where waiting for
 * each piece in turn sleeps and is woken up to once a piece. */
static void block_finish_oldest(struct back_pipe *bp, struct back_pmd *m)
{
	unsigned count = m->count;
	copy_pipe_wait_until(&bp->cp, m->blk[m->oldest].last_piece);
	while (m->count == count && bp->cp.count)
		copy_pipe_finish_oldest(&bp->cp);
}

bool back_pmd_start(struct back_pipe *bp, uint64_t head,
		    const uint64_t *claims, unsigned how)
{
	struct back_pmd *m = bp->pmd;
	struct hetmm_pagemap *pgmap;
	if (!m || head % PMD_PAGES || !block_fits(m, claims, &pgmap))
		return false;
	back_pipe_use(bp, pgmap);
	if (m->count == PMD_BLOCKS)
		block_finish_oldest(bp, m);
	struct pmd_block *b = &m->blk[(m->oldest + m->count++) % PMD_BLOCKS];
	/* Its THP faulted in (zeroed) here rather than by the device's
	 * first store (see the top of the file). */
	(void)madvise(b->staging, PMD_SIZE, MADV_POPULATE_WRITE);
	b->head = head;
	b->pgmap = pgmap;
	b->left = PMD_PAGES;
	b->err = 0;
	b->how = how;
	memcpy(b->claims, claims, PMD_PAGES * sizeof(*claims));
	/* Devices stop using the pages before their contents move. */
	back_invalidate(bp->ctx, head, PMD_PAGES, b->claims);
	bp->queued += PMD_PAGES;
	bp->in_flight += PMD_PAGES;
	uint64_t idx;
	for (size_t i = 0, run; i < PMD_PAGES; i += run) {
		pfn_pagemap(shadow_pfn(b->claims[i]), &idx);
		run = back_frame_run(b->claims, i, PMD_PAGES, pgmap, idx);
		struct copy_req r = { .index = idx,
				      .mem = b->staging + i * PAGE_SIZE,
				      .nr = run, .tag = head + i,
				      .flags = BACK_PMD };
		copy_pipe_add(&bp->cp, &r);
	}
	b->last_piece = copy_pipe_added(&bp->cp);
	return true;
}

void back_pmd_drain(struct back_pipe *bp)
{
	while (bp->pmd && bp->pmd->count)
		block_finish_oldest(bp, bp->pmd);
}

/*
 * Are the page's bytes at dst still those at check?  A thread of the
 * process may be writing the page meanwhile (a page of the block it
 * touches after the move, before the protection): that write is what
 * the comparison is there to catch, so the read races it by design.
 * ThreadSanitizer is told not to see it (its memcmp interceptor would):
 * a word loop it does not instrument, in its builds alone (base.h).
 */
#ifdef UNDER_TSAN
__attribute__((no_sanitize("thread")))
static bool page_unchanged(const char *dst, const char *check)
{
	const volatile uint64_t *a = (const volatile uint64_t *)dst;
	const uint64_t *b = (const uint64_t *)check;
	for (size_t i = 0; i < PAGE_SIZE / sizeof(uint64_t); i++)
		if (a[i] != b[i])
			return false;
	return true;
}
#else
static bool page_unchanged(const char *dst, const char *check)
{
	return !memcmp(dst, check, PAGE_SIZE);
}
#endif

/*
 * The block's pages, write-protected whole (wp) or not, are clean where
 * their bytes are still those read (check): their frames are noted, as
 * back_fill_wp notes a copy's; every other page's note is cleared, so
 * that it counts as written.
 */
static void note_clean(struct hetmm_ctx *ctx, struct back_pmd *m,
		       struct pmd_block *b, bool wp)
{
	_Atomic uint64_t *slot = NULL;
	const char *dst = (const char *)vpn_to_addr(b->head);
	for (size_t k = 0; k < PMD_PAGES; k++) {
		slot = vtab_next(&ctx->placed_src, slot, b->head + k, false);
		if (!slot)
			continue;
		bool clean = wp && page_unchanged(dst + k * PAGE_SIZE,
						  m->check + k * PAGE_SIZE);
		atomic_store_explicit(slot, clean ? shadow_pfn(b->claims[k]) : 0,
				      memory_order_relaxed);
	}
}

/* A slot in placed_src for every page of the block, so that none is
 * left holding an old note: false if one can't be had. */
static bool notes_ready(struct hetmm_ctx *ctx, uint64_t head)
{
	_Atomic uint64_t *slot = NULL;
	for (size_t k = 0; k < PMD_PAGES; k++)
		if (!(slot = vtab_next(&ctx->placed_src, slot, head + k, true)))
			return false;
	return true;
}

/* The PMD moved in whole: the pages are the process's now. */
static void block_settle(struct back_pipe *bp, struct back_pmd *m,
			 struct pmd_block *b)
{
	struct hetmm_ctx *ctx = bp->ctx;
	uintptr_t dst = vpn_to_addr(b->head);
	if (pagemap_is_placed(b->pgmap)) {
		bool ready = notes_ready(ctx, b->head);
		note_clean(ctx, m, b, ready &&
			   uffd_writeprotect(ctx->uffd.fd, dst, PMD_SIZE,
					     WP_ON | FILL_ONCE) == 0);
	}
	/* Wake only once the shadow says "system" (back_install). */
	uint64_t idx;
	for (size_t i = 0, run; i < PMD_PAGES; i += run) {
		pfn_pagemap(shadow_pfn(b->claims[i]), &idx);
		run = back_frame_run(b->claims, i, PMD_PAGES, b->pgmap, idx);
		shadow_store_run(&ctx->shadow, b->head + i, run, 0);
		back_release_frames(b->pgmap, idx, run, 0);
	}
	back_count(ctx, (int64_t)PMD_PAGES, (int64_t)PMD_PAGES);
	bp->left += PMD_PAGES;
	bp->installed += PMD_PAGES;
	if (!(b->how & BACK_NO_WAKE))
		uffd_wake(ctx->uffd.fd, dst, PMD_SIZE);
}

/* The kernel moved less than the PMD: every page not in place yet is
 * copied from staging as a piece's would be (a placed pagemap's
 * write-protected, to be told clean). */
static void block_fallback(struct back_pipe *bp, struct pmd_block *b)
{
	uint64_t idx;
	for (size_t i = 0, run; i < PMD_PAGES; i += run) {
		pfn_pagemap(shadow_pfn(b->claims[i]), &idx);
		run = back_frame_run(b->claims, i, PMD_PAGES, b->pgmap, idx);
		back_piece_install(bp, b->pgmap, b->head + i, idx, run,
				   b->claims + i, FILL_COPY,
				   (uintptr_t)b->staging + i * PAGE_SIZE,
				   b->how | BACK_ONCE);
	}
}

/* Every piece of block b landed (or one failed). */
static void block_done(struct back_pipe *bp, struct back_pmd *m,
		       struct pmd_block *b)
{
	struct hetmm_ctx *ctx = bp->ctx;
	uintptr_t dst = vpn_to_addr(b->head);
	if (b->err) {
		/* The faulting thread stays in its fault: fault.c's
		 * fault_back_failed tries its page alone. */
		back_keep_quiet(ctx, b->head, b->claims, PMD_PAGES);
		bp->failed += PMD_PAGES;
		return;
	}
	if (pagemap_is_placed(b->pgmap))
		memcpy(m->check, b->staging, PMD_SIZE);
	long got = uffd_fill(ctx->uffd.fd, FILL_MOVE, dst,
			     (uintptr_t)b->staging, PMD_SIZE, FILL_ONCE);
	TEST_HOOK(TEST_HOOK_BACK_PMD_MOVED, dst, got > 0 ? (size_t)got : 0);
	if (got == (long)PMD_SIZE)
		block_settle(bp, m, b);
	else
		block_fallback(bp, b);
	/* Staging empty again, its page table too (a move the kernel made
	 * page by page leaves one, and base pages would follow). */
	madvise(b->staging, PMD_SIZE, MADV_DONTNEED);
}

/* A piece of a block finished (in the pipeline's order: the oldest
 * block's). */
static void pmd_piece(struct back_pipe *bp, const struct copy_req *r, int err)
{
	struct back_pmd *m = bp->pmd;
	struct pmd_block *b = &m->blk[m->oldest];
	bp->in_flight -= r->nr;
	b->left -= r->nr;
	if (err)
		b->err = err;
	if (b->left)
		return;
	block_done(bp, m, b);
	m->oldest = (m->oldest + 1) % PMD_BLOCKS;
	m->count--;
	TEST_HOOK(TEST_HOOK_BACK_PIECE_DONE, vpn_to_addr(b->head), PMD_SIZE);
}
