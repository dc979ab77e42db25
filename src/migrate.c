/* SPDX-License-Identifier: MIT */
/*
 * migrate.c - moving process pages to device memory and back.
 *
 * To the device, per chunk of at most 2 MiB, in the kernel's three phases:
 *
 *   collect  claim each page's shadow entry (0 -> BUSY); pages that are
 *            pinned, on a device or claimed by someone else are skipped.
 *            Allocate frames and register the range with userfaultfd.  A
 *            CPU access that misses a claimed page now waits for a wake.
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
 * Back to system memory, a claimed run of device pages is installed
 * atomically (the page appears filled, then waiters wake): UFFDIO_MOVE
 * from a remapping pagemap, UFFDIO_ZEROPAGE for zero pages, UFFDIO_COPY
 * from the device's CPU-readable address or a staging copy otherwise.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat.h"
#include "internal.h"

int check_user_range(const void *addr, size_t len)
{
	uintptr_t a = (uintptr_t)addr;
	if (!addr || !len || (a & ~PAGE_MASK) || (len & ~PAGE_MASK))
		return -EINVAL;
	if (a + len < a || a + len > USER_VA_END)
		return -EINVAL;
	return 0;
}

/* ------------------------------------------------------------------------
 * Page metadata
 */

static struct hetmm_page *pgmap_page(struct hetmm_pagemap *pgmap,
				     uint64_t idx)
{
	return &pgmap->pages[idx];
}

/* A claim we hold orders us after the commit that counted its frame in
 * nr_zero, and the frame is not freed under us: a count of 0 means none
 * of the claimed frames is a zero page, without touching their
 * metadata (cold, in a large migration back). */
static bool page_is_zero(struct hetmm_pagemap *pgmap, uint64_t idx)
{
	if (!atomic_load_explicit(&pgmap->nr_zero, memory_order_relaxed))
		return false;
	return atomic_load_explicit(&pgmap_page(pgmap, idx)->owner,
				    memory_order_relaxed) & HETMM_PAGE_ZERO;
}

static uintptr_t remap_addr(struct hetmm_pagemap *pgmap, uint64_t idx)
{
	return pgmap->remap_base + idx * PAGE_SIZE;
}

static bool can_move(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap)
{
	return (pgmap->flags & HETMM_PAGEMAP_REMAP) && ctx->frames.fd >= 0;
}

/* ------------------------------------------------------------------------
 * Back to system memory
 */

/*
 * Batch claims.  Claiming a page by compare-and-swap costs about 6 ns, as
 * much as a fifteenth of moving the page back, so a run is claimed a leaf
 * of the shadow (512 entries) at a time with plain loads and stores
 * instead, while the batch holds CLAIM_BATCH in the leaf's claim word.
 * Every other claim of a device page is a compare-and-swap that counts
 * itself in the same word while it runs (shadow_claim): it waits for a
 * batch to finish, and a batch waits for the ones under way before it
 * looks at an entry.  So no entry a batch read as unclaimed can be
 * claimed before its store: the store is as good as the CAS.  Writes to
 * claimed entries (GONE, releases) need no CAS, and no batch touches
 * those.
 */
#define CLAIM_BATCH 1u
#define CLAIM_ONE 2u
#define CLAIM_BATCH_MIN 16   /* pages; fewer are claimed one by one */

static _Atomic uint32_t *claim_word(struct hetmm_ctx *ctx, uint64_t vpn)
{
	return &ctx->claim_words[(vpn / VTAB_LEAF_SLOTS) % CLAIM_WORDS];
}

bool shadow_claim(struct hetmm_ctx *ctx, uint64_t vpn,
		  _Atomic uint64_t *slot, uint64_t *expected,
		  uint64_t desired)
{
	_Atomic uint32_t *w = claim_word(ctx, vpn);
	while (atomic_fetch_add(w, CLAIM_ONE) & CLAIM_BATCH) {
		atomic_fetch_sub(w, CLAIM_ONE);
		while (atomic_load_explicit(w, memory_order_acquire) &
		       CLAIM_BATCH)
			sched_yield();   /* a batch: a few hundred loads */
	}
	bool ok = atomic_compare_exchange_strong(slot, expected, desired);
	atomic_fetch_sub_explicit(w, CLAIM_ONE, memory_order_release);
	return ok;
}

/*
 * Claim up to n device pages from vpn, all in vpn's leaf, as a batch;
 * stops at the first page it can't take with a plain store (claimed,
 * not on a device, coherent: a hold on a coherent page needs the CAS).
 * 0 if another batch has the word.
 */
static size_t claim_batch(struct hetmm_ctx *ctx, uint64_t vpn, size_t n,
			  uint64_t *claims)
{
	_Atomic uint32_t *w = claim_word(ctx, vpn);
	if (atomic_fetch_or(w, CLAIM_BATCH) & CLAIM_BATCH)
		return 0;
	while (atomic_load_explicit(w, memory_order_acquire) != CLAIM_BATCH)
		sched_yield();   /* a CAS claim finishing */
	_Atomic uint64_t *slot = vtab_slot(&ctx->shadow, vpn, false);
	size_t i = 0;
	for (; slot && i < n; i++, slot++) {
		uint64_t e = atomic_load_explicit(slot, memory_order_relaxed);
		if (!shadow_claimable(e) || shadow_is_coherent(e))
			break;
		atomic_store_explicit(slot, e | SHADOW_BUSY,
				      memory_order_relaxed);
		claims[i] = e | SHADOW_BUSY;
	}
	/* The claims are seen before anything read after them, as after a
	 * CAS: claims_exclusive() relies on that (see excl_mark()). */
	atomic_thread_fence(memory_order_seq_cst);
	atomic_fetch_and_explicit(w, ~CLAIM_BATCH, memory_order_release);
	return i;
}

bool claim_device_page(struct hetmm_ctx *ctx, uint64_t vpn,
		       _Atomic uint64_t *slot, uint64_t e)
{
	if (!shadow_claim(ctx, vpn, slot, &e, e | SHADOW_BUSY))
		return false;
	/* A coherent page held in place stays: a hold raises its count,
	 * then looks at the word; we set the word, then look at the count.
	 * One of the two sees the other. */
	if (unlikely(coherent_held(e))) {
		atomic_store(slot, e);
		return false;
	}
	return true;
}

static bool claim_one(struct hetmm_ctx *ctx, uint64_t vpn, uint64_t *claim)
{
	_Atomic uint64_t *slot = vtab_slot(&ctx->shadow, vpn, false);
	if (!slot)
		return false;
	uint64_t e = atomic_load_explicit(slot, memory_order_acquire);
	if (!shadow_claimable(e) || !claim_device_page(ctx, vpn, slot, e))
		return false;
	*claim = e | SHADOW_BUSY;
	return true;
}

size_t claim_device_run(struct hetmm_ctx *ctx, uint64_t vpn, size_t n,
			uint64_t *claims)
{
	size_t i = 0;
	while (i < n) {
		size_t leaf_left = VTAB_LEAF_SLOTS - (vpn + i) % VTAB_LEAF_SLOTS;
		size_t want = MIN(n - i, leaf_left);
		size_t got = want >= CLAIM_BATCH_MIN ?
			     claim_batch(ctx, vpn + i, want, claims + i) : 0;
		/* What the batch left of the leaf (a short run, a coherent
		 * page, a word another batch holds): one page at a time. */
		for (i += got; got < want; got++, i++)
			if (!claim_one(ctx, vpn + i, &claims[i]))
				return i;
	}
	return i;
}

static void shadow_store(struct hetmm_ctx *ctx, uint64_t vpn, uint64_t e)
{
	_Atomic uint64_t *slot = vtab_slot(&ctx->shadow, vpn, false);
	atomic_store_explicit(slot, e, memory_order_release);
}

/* Free the frame meant for a page that is gone. */
static void frame_drop(struct hetmm_ctx *ctx, uint64_t pfn, bool resident)
{
	uint64_t idx;
	struct hetmm_pagemap *pgmap = pfn_pagemap(pfn, &idx);
	uint32_t i = (uint32_t)idx;
	pagemap_free(pgmap, &i, 1, 0);
	if (resident)
		atomic_fetch_sub(&ctx->stats.device_resident, 1);
}

/*
 * Let go of a claim by publishing e, unless the process unmapped the page
 * meanwhile and marked the claim GONE: then the slot is cleared and the
 * frame e names, if any, freed.  Returns whether e was published.
 */
static bool shadow_publish(struct hetmm_ctx *ctx, uint64_t vpn,
			   uint64_t claim, uint64_t e, bool resident)
{
	_Atomic uint64_t *slot = vtab_slot(&ctx->shadow, vpn, false);
	if (atomic_compare_exchange_strong(slot, &claim, e))
		return true;
	atomic_store_explicit(slot, 0, memory_order_release);
	if (e & SHADOW_DEVICE)
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
	for (size_t i = 0; i < n; i++) {
		shadow_store(ctx, vpns[i], 0);
		frame_drop(ctx, shadow_pfn(claims[i]), true);
	}
}

/* Length of the run of claims from i with consecutive frames, all zero or
 * all holding data. */
static size_t frame_run(const uint64_t *claims, size_t i, size_t n,
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

/* Set the run's entries to e. */
static void shadow_store_run(struct hetmm_ctx *ctx, uint64_t vpn, size_t run,
			     uint64_t e)
{
	_Atomic uint64_t *slot = NULL;
	for (size_t k = 0; k < run; k++) {
		slot = vtab_next(&ctx->shadow, slot, vpn + k, false);
		atomic_store_explicit(slot, e, memory_order_release);
	}
}

/* Count pages that left the device (negative counts take some back):
 * left of them, installed of those mapped in the process. */
static void count_back(struct hetmm_ctx *ctx, int64_t installed,
		       int64_t left, bool fault)
{
	STAT_ADD(ctx, to_system_pages, (uint64_t)installed);
	if (fault)
		STAT_ADD(ctx, fault_pages, (uint64_t)installed);
	atomic_fetch_sub(&ctx->stats.device_resident, left);
}

/* The pages left the device: clear the shadow, free the frames. */
static void release_frames(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			   uint64_t vpn, uint64_t idx0, size_t run,
			   uint64_t free_flags)
{
	uint32_t idx[CHUNK_PAGES];
	for (size_t k = 0; k < run; k++)
		idx[k] = (uint32_t)(idx0 + k);
	shadow_store_run(ctx, vpn, run, 0);
	pagemap_free(pgmap, idx, run, free_flags);
}

/* Source for UFFDIO_COPY of a run: the device itself, or staging. */
static uintptr_t copy_source(struct hetmm_pagemap *pgmap, uint64_t idx0,
			     size_t run, void **staging)
{
	if (pgmap->ops->page_address)
		return (uintptr_t)pgmap->ops->page_address(pgmap, idx0);
	if (!*staging) {
		void *p = mmap(NULL, CHUNK_PAGES * PAGE_SIZE,
			       PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return 0;
		*staging = p;
	}
	if (pgmap->ops->copy_from_device(pgmap, *staging, idx0, run))
		return 0;
	return (uintptr_t)*staging;
}

static bool dst_present(struct hetmm_ctx *ctx, uintptr_t addr)
{
	uint8_t pf = 0;
	return vma_page_presence(&ctx->vmaq, addr, 1, &pf) == 0 &&
	       (pf & PG_PRESENT);
}

/* Frames copied out of still hold their pages: on the fault path they
 * are emptied later, when a page next moves in (PAGE_STALE). */
static uint64_t copied_free_flags(struct hetmm_pagemap *pgmap,
				  enum uffd_fill op, bool fault)
{
	bool stale = op == FILL_COPY && (pgmap->flags & HETMM_PAGEMAP_REMAP);
	return stale && fault ? PAGE_STALE : 0;
}

/*
 * A lone page a thread waits for, on the fault path (a random access).
 * The fill itself wakes the thread: a UFFDIO_WAKE after it would be one
 * more system call on the fault's critical path.  The thread may then run
 * before we return, and must find everything as the kernel's
 * migrate_to_ram leaves it.  So before the fill the page's entry becomes
 * bare BUSY (a system page being filled, which every claimer waits out,
 * as for a hole: fault_zero), the counters move, and its frame says free
 * and counts as free (an allocation short of frames waits for it).  The
 * frame goes back to the pool after the fill, which reads it.  Returns
 * as install_run().
 */
static size_t install_lone(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			   uint64_t vpn, uint64_t idx, uint64_t claim,
			   enum uffd_fill op, uintptr_t src)
{
	uintptr_t dst = vpn_to_addr(vpn);
	shadow_store(ctx, vpn, SHADOW_BUSY);
	count_back(ctx, 1, 1, true);
	struct frame_owner was = pagemap_leave_begin(pgmap, (uint32_t)idx,
			copied_free_flags(pgmap, op, true));
	long got = uffd_fill(ctx->uffd.fd, op, dst, src, PAGE_SIZE,
			     FILL_ONCE | FILL_WAKE);
	/* As in install_run: there already, refused for good, or not now. */
	bool installed = got > 0 || dst_present(ctx, dst);
	if (!installed && got != -EEXIST && got != -ENOENT && got != -EFAULT) {
		pagemap_leave_undo(pgmap, (uint32_t)idx, was);
		count_back(ctx, -1, -1, true);
		shadow_store(ctx, vpn, claim);
		return 0;
	}
	if (!installed)
		count_back(ctx, -1, 0, true);
	shadow_store(ctx, vpn, 0);
	pagemap_leave_done(pgmap, (uint32_t)idx);
	if (got <= 0)
		uffd_wake(ctx->uffd.fd, dst, PAGE_SIZE);
	return 1;
}

/*
 * Install one run; returns pages that left the device, installed or
 * dropped (that count, not the installed one, says which claims are
 * gone: the rest of the run stays on the device).  A page the kernel
 * refuses because its mapping is gone (ENOENT, EFAULT) or was replaced by
 * a fresh one (EEXIST) has no process page left to restore: its device
 * copy is dropped, like the kernel's zap of a device-private entry.
 */
static size_t install_run(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			  uint64_t vpn, uint64_t idx0, size_t run,
			  const uint64_t *claims, void **staging,
			  unsigned how)
{
	bool fault = how & BACK_FAULT;
	size_t installed = 0;
	enum uffd_fill op;
	uintptr_t src = 0;
	/* A lone page a thread waits for is copied, not moved: the thread
	 * resumes sooner (a move also unmaps the frame, whose page tables,
	 * folio and anon_vma are cold in a random access), and the frame
	 * is emptied off the fault path, when a page next moves into it. */
	bool copy_lone = fault && run == 1 && pgmap->ops->page_address;
	if (page_is_zero(pgmap, idx0)) {
		op = FILL_ZERO;
	} else if (can_move(ctx, pgmap) && !copy_lone) {
		op = FILL_MOVE;
		src = remap_addr(pgmap, idx0);
	} else {
		op = FILL_COPY;
		src = copy_source(pgmap, idx0, run, staging);
		if (!src)
			return 0;
	}
	if (fault && run == 1 && op != FILL_MOVE && !(how & BACK_NO_WAKE))
		return install_lone(ctx, pgmap, vpn, idx0, claims[0], op, src);

	uintptr_t dst = vpn_to_addr(vpn);
	size_t done = 0;
	bool single = false;
	while (done < run) {
		size_t off = done * PAGE_SIZE;
		long got = uffd_fill(ctx->uffd.fd, op, dst + off,
				     src ? src + off : 0,
				     (single ? 1 : run - done) * PAGE_SIZE,
				     fault ? FILL_ONCE : 0);
		if (got > 0) {
			installed += (size_t)got / PAGE_SIZE;
			done += (size_t)got / PAGE_SIZE;
			continue;
		}
		/* The page is there already: the kernel moved it and still
		 * said EAGAIN, say.  We hold the page, so nobody else put
		 * it there. */
		if (dst_present(ctx, dst + off)) {
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
	/* Off the fault path, a frame copied out of gives its memory back
	 * now. */
	if (op == FILL_COPY && (pgmap->flags & HETMM_PAGEMAP_REMAP) && !fault)
		madvise((void *)src, done * PAGE_SIZE, MADV_DONTNEED);
	/* Wake only once the shadow says "system": a thread that resumes
	 * must find the page where hetmm says it is. */
	release_frames(ctx, pgmap, vpn, idx0, done,
		       copied_free_flags(pgmap, op, fault));
	count_back(ctx, (int64_t)installed, (int64_t)done, fault);
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

size_t migrate_back_claimed(struct hetmm_ctx *ctx, uint64_t vpn, size_t n,
			    const uint64_t *claims, void **staging,
			    unsigned how)
{
	bool fault = how & BACK_FAULT;
	/* Devices stop using the pages before their contents move; a
	 * device that held one exclusive learns that it lost it. */
	notifiers_invalidate(ctx, vpn_to_addr(vpn), vpn_to_addr(vpn + n),
			     claims_exclusive(ctx, claims, n) ? HETMM_EVENT_EXCLUSIVE
							 : HETMM_EVENT_MIGRATE);

	size_t left = 0;
	size_t i = 0;
	while (i < n) {
		uint64_t idx0;
		struct hetmm_pagemap *pgmap =
			pfn_pagemap(shadow_pfn(claims[i]), &idx0);
		size_t run = frame_run(claims, i, n, pgmap, idx0);
		size_t gone;
		if (pagemap_is_coherent(pgmap)) {
			/* Private anonymous memory takes the mapping's
			 * place first; never on the handler, whose events
			 * the swap raises (it faults coherent pages in
			 * place: coherent_fault). */
			size_t k = fault ? 0 : coherent_unmap(ctx,
					vpn_to_addr(vpn + i), run);
			run = k ? k : run;
			gone = k ? install_run(ctx, pgmap, vpn + i, idx0, run,
					       claims + i, staging, how) : 0;
		} else {
			gone = install_run(ctx, pgmap, vpn + i, idx0, run,
					   claims + i, staging, how);
		}
		left += gone;
		/* Pages that could not leave stay on the device. */
		for (size_t k = gone; k < run; k++)
			shadow_publish(ctx, vpn + i + k, claims[i + k],
				       claims[i + k] & ~SHADOW_BUSY, true);
		if (gone < run)
			uffd_wake(ctx->uffd.fd, vpn_to_addr(vpn + i + gone),
				  (run - gone) * PAGE_SIZE);
		i += run;
	}
	return left;
}

/*
 * A bare BUSY entry is a system page being filled: a hole (fault_zero), or
 * a page a fault brought back, whose thread may run already.  It is a
 * system page in a moment, so callers wait a little for it (yielding: the
 * filler may be waiting for this CPU) before they call it busy.  A
 * migration to a device claims system pages with bare BUSY too, and holds
 * them far longer: *spins_left is the caller's budget of yields for all
 * its pages, so a range such a migration holds costs it one page's wait,
 * not one per page.
 */
#define FILLING_SPINS 64

static uint64_t settled_entry(struct hetmm_ctx *ctx, uint64_t vpn,
			      int *spins_left)
{
	uint64_t e = vtab_get(&ctx->shadow, vpn);
	while (e == SHADOW_BUSY && *spins_left > 0) {
		--*spins_left;
		sched_yield();
		e = vtab_get(&ctx->shadow, vpn);
	}
	return e;
}

static void report_status(struct hetmm_migrate_report *rep, size_t page,
			  enum hetmm_migrate_status st)
{
	if (!rep)
		return;
	if (st == HETMM_MIGRATE_MOVED)
		rep->moved++;
	else
		rep->skipped++;
	if (rep->status)
		rep->status[page] = (uint8_t)st;
}

int migrate_back_range(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end,
		       struct hetmm_migrate_report *rep)
{
	uint64_t claims[CHUNK_PAGES];
	void *staging = NULL;
	uint64_t first = addr_to_vpn(start), last = addr_to_vpn(end);
	size_t moved = 0;
	int spins_left = FILLING_SPINS;

	for (uint64_t vpn = first; vpn < last;) {
		size_t page = vpn - first;
		uint64_t e = settled_entry(ctx, vpn, &spins_left);
		if (!shadow_claimable(e)) {
			report_status(rep, page, (e & SHADOW_BUSY) ?
				      HETMM_MIGRATE_SKIP_BUSY :
				      HETMM_MIGRATE_SKIP_SYSTEM);
			vpn++;
			continue;
		}
		if (coherent_held(e)) {
			report_status(rep, page, HETMM_MIGRATE_SKIP_PINNED);
			vpn++;
			continue;
		}
		size_t want = MIN((size_t)(last - vpn), (size_t)CHUNK_PAGES);
		size_t n = claim_device_run(ctx, vpn, want, claims);
		if (n == 0)
			continue;   /* lost a race; look at the page again */
		size_t got = migrate_back_claimed(ctx, vpn, n, claims,
						  &staging, 0);
		for (size_t k = 0; k < n; k++)
			report_status(rep, page + k, k < got ?
				      HETMM_MIGRATE_MOVED :
				      HETMM_MIGRATE_SKIP_BUSY);
		moved += got;
		vpn += n;
	}
	if (staging)
		munmap(staging, CHUNK_PAGES * PAGE_SIZE);
	return moved ? 0 : -ENOENT;
}

int hetmm_migrate_to_system(struct hetmm_ctx *ctx, void *addr, size_t len,
			    struct hetmm_migrate_report *report)
{
	if (!ctx)
		return -EINVAL;
	if (ctx_forked(ctx))
		return -ECHILD;
	int rc = check_user_range(addr, len);
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
	return migrate_back_range(ctx, start, end, report);
}

/* ------------------------------------------------------------------------
 * To the device
 */

/* Chunk page states beyond the public ones, while the chunk is worked. */
enum {
	ST_PENDING = 0,      /* claimed, not yet on the device */
	ST_DONE_DATA = 0x80, /* on the device */
	ST_DONE_ZERO,        /* a hole: on the device as a zero page */
	ST_COPIED,           /* copied; still mapped until the zap */
};

struct chunk {
	uintptr_t start;
	uint64_t vpn;
	size_t n;
	bool wp[CHUNK_PAGES];           /* we write-protected the page */
	uint8_t status[CHUNK_PAGES];
	uint32_t frame[CHUNK_PAGES];    /* per page */
	uint32_t frames[CHUNK_PAGES];   /* as allocated */
	size_t nframes;
	uint8_t pflags[CHUNK_PAGES];
	struct migrator *migrator;      /* while in the copy path */
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
	if (e & SHADOW_BUSY)
		return HETMM_MIGRATE_SKIP_BUSY;
	if (e & (SHADOW_DEVICE | SHADOW_FIXED)) {
		uint64_t idx;
		if (pfn_pagemap(shadow_pfn(e), &idx) != pgmap)
			return HETMM_MIGRATE_SKIP_OTHER_DEVICE;
		/* Asked for again: the eviction clock spares it once. */
		atomic_fetch_or(&pgmap_page(pgmap, idx)->owner,
				(uint64_t)HETMM_PAGE_REFERENCED);
		return HETMM_MIGRATE_ALREADY;
	}
	return HETMM_MIGRATE_SKIP_PINNED;
}

/*
 * Claim a system page.  BUSY on a system page is brief (a hole being
 * filled, a page on its way back), so wait a little for it before calling
 * the page busy; a device or pinned page is final.
 */
static bool claim_system_page(_Atomic uint64_t *slot, uint64_t *e)
{
	for (int spins = 0; spins < FILLING_SPINS; spins++) {
		*e = 0;
		if (atomic_compare_exchange_strong(slot, e, SHADOW_BUSY))
			return true;
		if (*e != SHADOW_BUSY)
			return false;
		sched_yield();
	}
	return false;
}

/* Collect: claim every page nobody else holds. */
static size_t chunk_collect(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			    struct chunk *c)
{
	size_t claimed = 0;
	_Atomic uint64_t *slot = NULL;
	for (size_t i = 0; i < c->n; i++) {
		slot = vtab_next(&ctx->shadow, slot, c->vpn + i, true);
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

/* Frames for the claimed pages, in order; the rest are left unclaimed. */
static void chunk_alloc_frames(struct hetmm_ctx *ctx,
			       struct hetmm_pagemap *pgmap, struct chunk *c,
			       size_t claimed)
{
	c->nframes = pagemap_alloc(pgmap, c->frames, claimed);
	if (c->nframes < claimed && (pgmap->flags & HETMM_PAGEMAP_EVICT))
		c->nframes += pagemap_alloc_evict(pgmap, c->frames + c->nframes,
						  claimed - c->nframes);
	size_t k = 0;
	bool unclaimed = false;
	for (size_t i = 0; i < c->n; i++) {
		if (!st_pending(c->status[i]))
			continue;
		if (k < c->nframes) {
			c->frame[i] = c->frames[k++];
			continue;
		}
		shadow_store(ctx, c->vpn + i, 0);
		c->status[i] = HETMM_MIGRATE_SKIP_NOMEM;
		unclaimed = true;
	}
	if (unclaimed)
		chunk_wake(ctx, c);
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
		shadow_store(ctx, c->vpn + i, 0);
		frames[n++] = c->frame[i];
		c->status[i] = HETMM_MIGRATE_SKIP_BUSY;
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
			c->status[i] = ST_DONE_ZERO;
}

/* A frame moved into must be a hole; make it one if a stray read of the
 * free frame left a zero page there. */
static void frame_clear(struct hetmm_pagemap *pgmap, uint32_t idx)
{
	madvise((void *)remap_addr(pgmap, idx), PAGE_SIZE, MADV_DONTNEED);
}

static bool frame_is_stale(struct hetmm_pagemap *pgmap, uint32_t idx)
{
	return atomic_load_explicit(&pgmap_page(pgmap, idx)->owner,
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
			madvise((void *)remap_addr(pgmap, c->frames[k]),
				run * PAGE_SIZE, MADV_DONTNEED);
			for (size_t i = k; i < k + run; i++)
				atomic_fetch_and(&pgmap_page(pgmap,
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
				     remap_addr(pgmap, c->frame[i]),
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
					remap_addr(pgmap, c->frame[p]),
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

static int run_zap(struct hetmm_ctx *ctx, struct chunk *c, size_t i, size_t n)
{
	return migrator_zap(ctx, c->migrator, chunk_addr(c, i),
			    chunk_addr(c, i + n));
}

/* Copy runs of pending pages with consecutive frames. */
static int chunk_copy_pending(struct hetmm_pagemap *pgmap, struct chunk *c)
{
	for (size_t i = 0; i < c->n;) {
		if (!st_pending(c->status[i])) {
			i++;
			continue;
		}
		size_t run = chunk_frame_run(c, i, st_pending);
		int rc = pgmap->ops->copy_to_device(pgmap, c->frame[i],
				(const void *)chunk_addr(c, i), run);
		if (rc)
			return rc < 0 ? rc : -EIO;
		for (size_t k = 0; k < run; k++)
			c->status[i + k] = ST_COPIED;
		i += run;
	}
	return 0;
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
 */
static void chunk_unprotect(struct hetmm_ctx *ctx, struct chunk *c)
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
		memset(&c->wp[i], 0, run);
		i += run;
	}
}

/* Let go of the pages the copy path could not finish. */
static void chunk_drop_unfinished(struct hetmm_ctx *ctx,
				  struct hetmm_pagemap *pgmap, struct chunk *c)
{
	chunk_unprotect(ctx, c);
	bool drop[CHUNK_PAGES];
	for (size_t i = 0; i < c->n; i++)
		drop[i] = st_pending(c->status[i]) || st_copied(c->status[i]);
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

/*
 * The copy path, for pages that could not be moved: write-protect, copy,
 * zap.  A write racing it waits in a write-protect fault until the commit
 * lifts the protection, then faults the page back with the write to come.
 */
static void chunk_copy(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
		       struct chunk *c)
{
	int rc = for_each_run(ctx, c, st_pending, run_mark_wp);
	c->migrator = migrator_enter(ctx, gettid());
	if (rc == 0)
		rc = chunk_copy_pending(pgmap, c);
	if (rc == 0)
		rc = for_each_run(ctx, c, st_copied, run_zap);
	migrator_leave(c->migrator);
	if (rc) {
		chunk_keep_zapped(ctx, c);
		chunk_drop_unfinished(ctx, pgmap, c);
		return;
	}
	for (size_t i = 0; i < c->n; i++)
		if (st_copied(c->status[i]))
			c->status[i] = ST_DONE_DATA;
}

/* Map runs of copied pages with consecutive frames over their addresses. */
static void chunk_map_coherent(struct hetmm_ctx *ctx,
			       struct hetmm_pagemap *pgmap, struct chunk *c)
{
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
	if (rc == 0)
		rc = chunk_copy_pending(pgmap, c);
	if (rc == 0)
		chunk_map_coherent(ctx, pgmap, c);
	/* What could not be mapped stays in system memory. */
	chunk_drop_unfinished(ctx, pgmap, c);
}

/* Commit: metadata, then publish, then wake everyone who waited. */
static size_t chunk_commit(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			   struct chunk *c)
{
	size_t moved = 0;
	chunk_unprotect(ctx, c);
	for (size_t i = 0; i < c->n; i++) {
		uint8_t st = c->status[i];
		if (st != ST_DONE_DATA && st != ST_DONE_ZERO)
			continue;
		struct hetmm_page *p = pgmap_page(pgmap, c->frame[i]);
		if (st == ST_DONE_ZERO)
			atomic_fetch_add(&pgmap->nr_zero, 1);
		atomic_store(&p->refcount, 1);
		atomic_store(&p->owner, chunk_addr(c, i) | HETMM_PAGE_ALLOCATED |
			     (st == ST_DONE_ZERO ? HETMM_PAGE_ZERO : 0));
		if (!shadow_publish(ctx, c->vpn + i, SHADOW_BUSY, SHADOW_DEVICE |
				    pagemap_pfn(pgmap, c->frame[i]), false)) {
			c->status[i] = HETMM_MIGRATE_SKIP_BUSY;  /* unmapped */
			continue;
		}
		c->status[i] = HETMM_MIGRATE_MOVED;
		moved++;
	}
	chunk_wake(ctx, c);
	atomic_fetch_add(&ctx->stats.device_resident, (int64_t)moved);
	STAT_ADD(ctx, to_device_pages, moved);
	return moved;
}

/* Give back every claim and frame: nothing of the chunk moved yet. */
static void chunk_abort(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			struct chunk *c)
{
	for (size_t i = 0; i < c->n; i++)
		if (st_claimed(c->status[i]))
			shadow_store(ctx, c->vpn + i, 0);
	pagemap_free(pgmap, c->frames, c->nframes, 0);
	chunk_wake(ctx, c);
}

static int chunk_to_device(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			   struct chunk *c)
{
	memset(c->wp, 0, c->n);
	size_t claimed = chunk_collect(ctx, pgmap, c);
	if (!claimed)
		return 0;
	chunk_alloc_frames(ctx, pgmap, c, claimed);
	if (!c->nframes)
		return 0;

	int rc = uffd_register(ctx->uffd.fd, c->start, c->n * PAGE_SIZE,
			       UFFDIO_REGISTER_MODE_MISSING |
			       UFFDIO_REGISTER_MODE_WP, NULL);
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
	if (pagemap_is_coherent(pgmap)) {
		chunk_copy_coherent(ctx, pgmap, c);
	} else {
		if (can_move(ctx, pgmap))
			chunk_move(ctx, pgmap, c);
		chunk_copy(ctx, pgmap, c);
	}
	chunk_commit(ctx, pgmap, c);
	return 0;
}

struct to_device_totals {
	size_t moved;
	size_t nomem;
};

static void chunk_report(struct chunk *c, size_t page0,
			 struct hetmm_migrate_report *rep,
			 struct to_device_totals *t, struct hetmm_ctx *ctx)
{
	size_t skipped = 0;
	for (size_t i = 0; i < c->n; i++) {
		report_status(rep, page0 + i,
			      (enum hetmm_migrate_status)c->status[i]);
		if (c->status[i] == HETMM_MIGRATE_MOVED)
			t->moved++;
		else
			skipped++;
		if (c->status[i] == HETMM_MIGRATE_SKIP_NOMEM)
			t->nomem++;
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
		uint64_t e = vtab_get(&ctx->shadow, addr_to_vpn(a) + i);
		report_status(rep, page0 + i, (e & SHADOW_DEVICE) ?
			      classify_unclaimable(e, pgmap) : other);
	}
	STAT_ADD(ctx, skipped_pages, n);
}

/* Chunks end at 2 MiB boundaries so that huge pages move whole. */
static size_t chunk_pages(uintptr_t a, uintptr_t end)
{
	uintptr_t boundary = (a + CHUNK_PAGES * PAGE_SIZE) &
			     ~(uintptr_t)(CHUNK_PAGES * PAGE_SIZE - 1);
	return (MIN(boundary, end) - a) >> PAGE_SHIFT;
}

static int migrate_segment(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
			   uintptr_t a, uintptr_t end, size_t page0,
			   struct hetmm_migrate_report *rep,
			   struct to_device_totals *t)
{
	struct chunk c;
	while (a < end) {
		c.start = a;
		c.vpn = addr_to_vpn(a);
		c.n = chunk_pages(a, end);
		int rc = chunk_to_device(ctx, pgmap, &c);
		if (rc)
			return rc;
		chunk_report(&c, page0, rep, t, ctx);
		page0 += c.n;
		a += c.n * PAGE_SIZE;
	}
	return 0;
}

int hetmm_migrate_to_device(struct hetmm_pagemap *pgmap, void *addr,
			    size_t len, struct hetmm_migrate_report *report)
{
	if (!pgmap)
		return -EINVAL;
	int rc = check_user_range(addr, len);
	if (rc)
		return rc;
	struct hetmm_ctx *ctx = pgmap->ctx;
	if (ctx_forked(ctx))
		return -ECHILD;
	if (!(ctx->uffd.features & UFFD_FEATURE_PAGEFAULT_FLAG_WP) ||
	    pagemap_is_fixed(pgmap))
		return -EOPNOTSUPP;   /* FS_DAX, GENERIC: nothing migrates */
	uintptr_t start = (uintptr_t)addr, end = start + len;
	rc = vma_check_accessible(&ctx->vmaq, start, end);
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

	struct to_device_totals t = { 0, 0 };
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
			rc = migrate_segment(ctx, pgmap, a, seg_end, page0,
					     report, &t);
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
	return t.nomem ? -ENOMEM : -ENOENT;
}
