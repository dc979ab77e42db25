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
 *   mremap     REMAP event: device entries move to the new address,
 *              claimed ones too (their holder follows them), and pages
 *              put at the old address after the move follow them.  The
 *              UNMAP of the old range that comes after spares what
 *              other REMAPs put there meanwhile.  A REMAP read before
 *              an earlier move away from its new range parks the
 *              entries it finds there for that move's REMAP; one read
 *              after a later move away from its new range follows that
 *              move on.
 *
 * A coherent page a short-term pin holds outlives its munmap (orphan).
 *
 * UNMAP and REMAP arrive after the fact, REMOVE before; the caller of
 * munmap, madvise or mremap waits until the handler has read the event.
 * docs/DESIGN.md, "Process lifecycle", tells the races this answers.
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
#include "marker.h"
#include "notifier.h"
#include "order.h"
#include "pagemap.h"
#include "shadow.h"
#include "testhook.h"
#include "watch.h"

/* ------------------------------------------------------------------------
 * Pages put at an mremap's old place after the move
 *
 * A thread bringing device pages back installs them where their process
 * pages were when it claimed them.  If the kernel moved the mapping in
 * between and left an empty one behind (MREMAP_DONTUNMAP), the install
 * lands there, and the holder may have let go of the claim before we
 * carry it (carry_claim): the page then sits at the old address while
 * the new one is empty.  The kernel moved every page the old range had,
 * and the range is registered (a fault there waits for us), so a page
 * present there now was put there since, by such a holder: it moves to
 * the new address.  A fault at the new address waits meanwhile (its entry
 * says "being filled").  The kernel refuses the move while an event waits
 * to be read; then the move waits for the end of the batch that read
 * it, and an event that changes either address since calls it off (what
 * is at the old address then is another mapping's).  Without UFFDIO_MOVE
 * the handler could only copy the page and leave it at the old address
 * as well (it may not zap it: its madvise would wait for its own read of
 * the REMOVE), so there holders never let go before the REMAP is handled
 * and move such pages themselves (back.c), and nothing is rescued here.
 */

static bool rescue_overlaps(const struct rescue *q, uintptr_t start,
			    uintptr_t end)
{
	return (q->from >= start && q->from < end) ||
	       (q->to >= start && q->to < end);
}

/* The rescue's new place is the process's again (0), its waiters woken. */
static void rescue_end(struct hetmm_ctx *ctx, const struct rescue *q)
{
	_Atomic uint64_t *slot = shadow_slot(&ctx->shadow,
					     addr_to_vpn(q->to), false);
	uint64_t filling = shadow_filling();
	if (slot)
		atomic_compare_exchange_strong(slot, &filling, 0);
	uffd_wake(ctx->uffd.fd, q->to, PAGE_SIZE);
}

/* Move the page now; false if the kernel says not yet. */
static bool rescue_try(struct hetmm_ctx *ctx, const struct rescue *q)
{
	long got = uffd_fill(ctx->uffd.fd, FILL_MOVE, q->to, q->from,
			     PAGE_SIZE, FILL_ONCE | markers_fill(ctx));
	if (got == -EAGAIN)
		return false;
	rescue_end(ctx, q);
	return true;
}

static void rescue_cancel(struct hetmm_ctx *ctx, uintptr_t start,
			  uintptr_t end)
{
	struct vacated_ranges *vr = &ctx->vacated;
	for (unsigned i = 0; i < vr->nrescue;) {
		if (rescue_overlaps(&vr->rescue[i], start, end)) {
			rescue_end(ctx, &vr->rescue[i]);
			vr->rescue[i] = vr->rescue[--vr->nrescue];
		} else {
			i++;
		}
	}
}

void lifecycle_retry(struct hetmm_ctx *ctx)
{
	struct vacated_ranges *vr = &ctx->vacated;
	for (unsigned i = 0; i < vr->nrescue;) {
		if (rescue_try(ctx, &vr->rescue[i]))
			vr->rescue[i] = vr->rescue[--vr->nrescue];
		else
			i++;
	}
}

static void rescue_one(struct hetmm_ctx *ctx, uintptr_t from, uintptr_t to)
{
	_Atomic uint64_t *slot = shadow_slot(&ctx->shadow, addr_to_vpn(to),
					     true);
	uint64_t e = 0;
	/* A claim carried there: its holder moves the page itself. */
	if (!slot || !atomic_compare_exchange_strong(slot, &e,
						     shadow_filling()))
		return;
	struct rescue q = { .from = from, .to = to };
	if (rescue_try(ctx, &q))
		return;
	if (ctx->vacated.nrescue < RESCUE_MAX)
		ctx->vacated.rescue[ctx->vacated.nrescue++] = q;
	else
		rescue_end(ctx, &q);   /* no room: the page stays behind */
}

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
	bool process;                     /* the process's, not a migrator's
					   * own zap (order.c) */
};

/*
 * An unmapped coherent page a short-term hold of the pin API keeps (the
 * kernel keeps a pinned page until its last unpin): its frame stays
 * allocated, its bytes in the device's memory, and the word an orphan
 * that the last release frees (pin.c, pagemap_unhold).  The address is
 * the process's to map anew meanwhile; only a migration of its new page
 * waits for that release.  Returns whether the page is dealt with.
 */
static bool orphan_if_held(struct hetmm_ctx *ctx, _Atomic uint64_t *slot,
			   uint64_t claim)
{
	uint64_t pfn = shadow_pfn(claim);
	switch (pagemap_orphan(pfn)) {
	case ORPHAN_NOT_HELD:
		return false;
	case ORPHAN_KEPT:
		atomic_store(slot, shadow_orphan(claim));
		/* A last release between the two saw our claim, not the
		 * orphan, and left the word to us. */
		if (!pagemap_is_orphan(pfn))
			shadow_forget_orphan(slot, pfn);
		break;
	case ORPHAN_FREED:
		atomic_store(slot, 0);
		break;
	}
	atomic_fetch_sub(&ctx->stats.device_resident, 1);
	return true;
}

/* Is e a page a migration to a device holds, its frame named but not yet
 * published (chunk_claim in migrate.c)? */
static bool migrating_to_device(uint64_t e)
{
	uint64_t idx;
	struct hetmm_pagemap *pgmap;
	if (!shadow_is_busy(e) || !shadow_on_device(e))
		return false;
	pgmap = pfn_pagemap(shadow_pfn(e), &idx);
	return pgmap && !(atomic_load(&pagemap_page(pgmap, idx)->owner) &
			  HETMM_PAGE_ALLOCATED);
}

/*
 * Claim a device page for discarding.  A page someone else holds is
 * theirs to finish: on munmap it is marked GONE, so that they drop it
 * rather than publish it.  madvise leaves it alone, since our own
 * migrations zap pages they hold and that comes back as REMOVE too (and
 * they wait for the handler to see it before they publish: order.c);
 * but a page the process itself discards while a migration to a device
 * holds it is marked GONE as well: the migration may have copied its
 * bytes before the discard, and must not publish them (the kernel's
 * migration finds its migration entry zapped and leaves the page out;
 * a coherent page already mapped reads zeroes: migrate.c).  Such a hold
 * is a device entry claimed with its frame not yet published, or a bare
 * claim: the only ones left at a discard are migrations' (collect's,
 * and a coherent device's throughout), as the handler's own fills are
 * done and its rescues in the range cancelled before this.
 */
static bool migration_holds(uint64_t e)
{
	return shadow_is_filling(e) || migrating_to_device(e);
}

static int discard_one(void *arg, uint64_t vpn, _Atomic uint64_t *slot)
{
	struct discard *d = arg;
	uint64_t claim;
	bool mark_gone = d->unmap ||
			 (d->process && migration_holds(atomic_load(slot)));
	if (!shadow_claim_to_drop(&d->drop.ctx->shadow, vpn, slot, mark_gone,
				  &claim))
		return 0;
	if (d->unmap && shadow_is_coherent(claim) &&
	    orphan_if_held(d->drop.ctx, slot, claim))
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
			  uintptr_t end, bool unmap, bool process)
{
	struct discard d = {
		.drop = { .ctx = ctx, .why = unmap ? HETMM_EVENT_UNMAP
						   : HETMM_EVENT_DISCARD },
		.unmap = unmap,
		.process = process,
	};
	shadow_for_each(&ctx->shadow, addr_to_vpn(start), addr_to_vpn(end),
		      discard_one, &d);
	drop_flush(&d.drop);
	STAT_ADD(ctx, discarded_pages, d.drop.dropped);
}

static void unmap_range(struct hetmm_ctx *ctx, uintptr_t start,
			uintptr_t end)
{
	if (start >= end)
		return;
	notifiers_invalidate(ctx, start, end, HETMM_EVENT_UNMAP);
	discard_range(ctx, start, end, true, true);
	watch_forget(ctx, start, end);
}

/* The record of the mremap that vacated exactly [start, end), taken. */
static bool vacated_take(struct hetmm_ctx *ctx, uintptr_t start,
			 uintptr_t end, struct vacated *out)
{
	for (unsigned i = 0; i < VACATED_MAX; i++) {
		struct vacated *v = &ctx->vacated.r[i];
		if (v->start == start && v->end == end) {
			*out = *v;
			v->start = v->end = 0;
			return true;
		}
	}
	return false;
}

static bool unmap_parked(struct hetmm_ctx *ctx, uintptr_t start,
			 uintptr_t end);
static bool park_unmapped(struct hetmm_ctx *ctx, uintptr_t start,
			  uintptr_t end);
static void forward_unmapped(struct hetmm_ctx *ctx, uintptr_t start,
			     uintptr_t end);

void lifecycle_unmap(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	TEST_HOOK(TEST_HOOK_EVENT_UNMAP, start, end - start);
	/* A coherent mapping swapped by a migrator: nothing was lost. */
	if (migrators_own(ctx, start, end, false))
		return;
	forward_unmapped(ctx, start, end);
	if (ctx->vacated.nrescue)
		rescue_cancel(ctx, start, end);
	if (unmap_parked(ctx, start, end))
		return;
	/* The late UNMAP of an mremap's old range: the REMAP carried what
	 * was there; what later REMAPs put there stays. */
	struct vacated v;
	if (vacated_take(ctx, start, end, &v)) {
		if (v.keep_lo < v.keep_hi) {
			unmap_range(ctx, start, v.keep_lo);
			unmap_range(ctx, v.keep_hi, end);
		} else {
			unmap_range(ctx, start, end);
		}
		return;
	}
	if (!park_unmapped(ctx, start, end))
		unmap_range(ctx, start, end);
}

void lifecycle_discard(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	TEST_HOOK(TEST_HOOK_EVENT_DISCARD, start, end - start);
	if (ctx->vacated.nrescue)
		rescue_cancel(ctx, start, end);
	/* A migrator's own zap of pages it copied to a device: the
	 * migration told notifiers already. */
	bool process = !migrators_zapping(ctx, start, end);
	if (process)
		notifiers_invalidate(ctx, start, end, HETMM_EVENT_DISCARD);
	discard_range(ctx, start, end, false, process);
}

/* ------------------------------------------------------------------------
 * REMAPs read out of order
 *
 * Thread A moves X to Y, then thread B moves Z onto the vacated X.  Each
 * queues its REMAP only after the kernel's move, and A's can queue after
 * B's (A first waits for the UNMAP of what was at Y to be read, say):
 * the handler then reads Z -> X while X's device entries still stand
 * for the pages A took to Y.  The kernel moves nothing onto a mapping
 * with entries of ours without an UNMAP of it first, which would have
 * dropped them: so they belong to an event still to come.  They are
 * parked (parked_tab, by page number), the range noted, and Z's entries
 * take their place.  The next REMAP from the range is that event: it
 * carries the parked entries, leaves Z's where they are, and its late
 * UNMAP spares them; the next UNMAP (a munmap of X that raced B the same
 * way) frees them instead.  Entries someone holds stay (the page moving
 * onto one is dropped, as without parking).  If X had no device entries
 * nothing is parked, and the kernel's mappings when A's REMAP is read
 * tell whether what stands at X is Z's (moved_in_later, below).
 */

/* Sorted overlaps of [start, end) with parked ranges, clipped to it. */
static unsigned parked_overlaps(const struct vacated_ranges *vr,
				uintptr_t start, uintptr_t end,
				struct parked *ov)
{
	unsigned n = 0;
	for (unsigned i = 0; i < vr->nparked; i++) {
		const struct parked *p = &vr->parked[i];
		if (p->end <= start || p->start >= end)
			continue;
		struct parked o = { MAX(p->start, start), MIN(p->end, end),
				    p->unmapped };
		unsigned k = n++;
		for (; k && ov[k - 1].start > o.start; k--)
			ov[k] = ov[k - 1];
		ov[k] = o;
	}
	return n;
}

static bool in_overlaps(const struct parked *ov, unsigned n, uintptr_t a)
{
	for (unsigned i = 0; i < n; i++)
		if (a >= ov[i].start && a < ov[i].end)
			return true;
	return false;
}

/* fn on each piece of [start, end) outside the sorted overlaps. */
static void outside_overlaps(struct hetmm_ctx *ctx, uintptr_t start,
			     uintptr_t end, const struct parked *ov,
			     unsigned n, uintptr_t to,
			     void (*fn)(struct hetmm_ctx *, uintptr_t,
					uintptr_t, uintptr_t))
{
	uintptr_t a = start;
	for (unsigned i = 0; i <= n; i++) {
		uintptr_t b = i < n ? ov[i].start : end;
		if (a < b)
			fn(ctx, a, b, to + (a - start));
		if (i < n)
			a = ov[i].end;
	}
}

/* Parked entries of [first, last) leave the table: to their new place
 * (delta pages on), or, with no place (unmapped, or it is taken), their
 * frames are freed. */
struct unpark {
	struct hetmm_ctx *ctx;
	int64_t delta;
	bool carry;
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

static int unpark_one(void *arg, uint64_t vpn, _Atomic uint64_t *slot)
{
	struct unpark *u = arg;
	uint64_t e = atomic_exchange(slot, 0);
	if (!e)
		return 0;
	if (u->carry) {
		uint64_t to = vpn + (uint64_t)u->delta, empty = 0;
		_Atomic uint64_t *dst = shadow_slot(&u->ctx->shadow, to, true);
		frame_set_owner(shadow_pfn(e), vpn_to_addr(to));
		if (dst && atomic_compare_exchange_strong(dst, &empty, e)) {
			u->moved++;
			return 0;
		}
	}
	frame_drop(u->ctx, shadow_pfn(e), true);
	return 0;
}

/* The parked entries of [start, end) freed. */
static void parked_free(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	struct unpark u = { .ctx = ctx };
	vtab_for_each(&ctx->vacated.parked_tab, addr_to_vpn(start),
		      addr_to_vpn(end), unpark_one, &u);
}

/* [start, end) is no longer parked; a piece left over with no room to
 * note it has its entries freed. */
static void parked_cut(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	struct vacated_ranges *vr = &ctx->vacated;
	for (unsigned i = 0; i < vr->nparked;) {
		struct parked p = vr->parked[i];
		if (p.end <= start || p.start >= end) {
			i++;
			continue;
		}
		vr->parked[i] = vr->parked[--vr->nparked];
		struct parked rest[2] = { { p.start, start, p.unmapped },
					  { end, p.end, p.unmapped } };
		for (int k = 0; k < 2; k++) {
			if (rest[k].start >= rest[k].end)
				continue;
			if (vr->nparked < PARKED_MAX) {
				vr->parked[vr->nparked++] = rest[k];
				continue;
			}
			parked_free(ctx, rest[k].start, rest[k].end);
		}
		/* Pieces put back at the end are past i, and disjoint from
		 * [start, end): looked at again, they are kept. */
	}
}

static void unmap_piece(struct hetmm_ctx *ctx, uintptr_t start,
			uintptr_t end, uintptr_t to)
{
	(void)to;
	unmap_range(ctx, start, end);
}

struct park {
	struct hetmm_ctx *ctx;
	size_t parked;
};

static int park_one(void *arg, uint64_t vpn, _Atomic uint64_t *slot)
{
	struct park *k = arg;
	uint64_t e = atomic_load(slot);
	if (!shadow_claimable(e))
		return 0;   /* held: its holder deals with it */
	_Atomic uint64_t *p = vtab_slot(&k->ctx->vacated.parked_tab, vpn,
					true);
	if (p && shadow_claim(&k->ctx->shadow, vpn, slot, &e, 0)) {
		atomic_store(p, e);
		k->parked++;
	}
	return 0;
}

/* Before a REMAP onto [start, end): park the entries still there. */
static void park_stale(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	struct vacated_ranges *vr = &ctx->vacated;
	struct parked ov[PARKED_MAX];
	struct park k = { .ctx = ctx };
	if (vr->nparked == PARKED_MAX || parked_overlaps(vr, start, end, ov))
		return;
	shadow_for_each(&ctx->shadow, addr_to_vpn(start), addr_to_vpn(end),
			park_one, &k);
	if (k.parked)
		vr->parked[vr->nparked++] =
			(struct parked){ start, end, false };
}

/* An UNMAP of [start, end) that meets ranges a REMAP parked: it is the
 * event they waited for, and frees their entries; the rest of the range
 * is unmapped as usual.  False if it meets none.  Those an UNMAP parked
 * wait for a REMAP from the range, or the settle, not for this: a third
 * thread unmapped what was moved there since (parked_judge). */
static bool unmap_parked(struct hetmm_ctx *ctx, uintptr_t start,
			 uintptr_t end)
{
	struct vacated_ranges *vr = &ctx->vacated;
	struct parked ov[PARKED_MAX];
	unsigned n = 0;
	if (vr->nparked) {
		unsigned all = parked_overlaps(vr, start, end, ov);
		for (unsigned i = 0; i < all; i++)
			if (!ov[i].unmapped)
				ov[n++] = ov[i];
	}
	if (!n)
		return false;
	for (unsigned i = 0; i < n; i++) {
		notifiers_invalidate(ctx, ov[i].start, ov[i].end,
				     HETMM_EVENT_UNMAP);
		parked_free(ctx, ov[i].start, ov[i].end);
		parked_cut(ctx, ov[i].start, ov[i].end);
	}
	outside_overlaps(ctx, start, end, ov, n, 0, unmap_piece);
	return true;
}

/* ------------------------------------------------------------------------
 * A move onto a range that had moved on
 *
 * Thread B moves Z onto X while X is still mapped, then thread A moves X
 * (Z's pages now) on to Y.  The kernel queues each thread's events only
 * after its move, in the thread's order: B's early UNMAP of X, its REMAP
 * Z -> X only once that is read, its UNMAP of Z; A's REMAP X -> Y, its
 * UNMAP of X.  So the handler can read X -> Y before Z -> X: it finds no
 * entries at X then (the UNMAP dropped them), and Z -> X, carried to X,
 * would leave Z's entries where the kernel has nothing, while Y, which
 * has Z's pages, read zeroes where they were on a device.  Nothing in
 * the events tells that order from the other (A first, Z moved onto the
 * vacated X: the entries belong at X), so the kernel's mappings as they
 * are when Z -> X is read decide: each REMAP read leaves a record X ->
 * Y, and a REMAP onto exactly X follows it on to Y if X is mapped no
 * more, Y is, and Y lacks every page Z has on a private device (such a
 * page is never present: the kernel moved Z's holes along).  Had A moved
 * first, Z's mapping would be at X, unless a third thread unmapped or
 * moved it since (that event still to come): a race of three threads on
 * one range this does not tell apart.  The records go once a sync
 * through the handler succeeds: the kernel refuses it while an event of
 * any move waits to be read, so a REMAP read after that is of a later
 * move than every one recorded.  Entries the REMAP X -> Y carried before
 * B's UNMAP of X was read (X's own, stale) are parked at Y as any met
 * there (park_stale), and freed with Y.
 *
 * B's UNMAP of X is read before Z -> X, its REMAP queuing only then:
 * so a record whose REMAP carried entries is followed only once an
 * UNMAP of its old range was read after it (those entries were stale).
 * Else they were X's own, A moved first, and a third thread C unmapped
 * or moved X (Z's mapping) since, before Z -> X was read (test_window
 * part 12): followed, Z's entries would take the place of X's at Y, and
 * Y read Z's bytes.  Not told apart still: A's late UNMAP of X read
 * before B's move, then C's; the events and the mappings are those of
 * B's early UNMAP read after X -> Y.
 */

static void forward_note(struct hetmm_ctx *ctx, uintptr_t from, uintptr_t to,
			 size_t len, bool carried)
{
	struct vacated_ranges *vr = &ctx->vacated;
	vr->fwd[vr->fwd_next++ % FORWARD_MAX] = (struct forward){
		.from = from, .to = to, .len = len, .carried = carried };
}

/* An UNMAP of [start, end) read: what a record's REMAP from there
 * carried may have been stale (B's early UNMAP read late), and the
 * record may be followed from now on. */
static void forward_unmapped(struct hetmm_ctx *ctx, uintptr_t start,
			     uintptr_t end)
{
	struct vacated_ranges *vr = &ctx->vacated;
	for (unsigned k = 0; k < FORWARD_MAX && k < vr->fwd_next; k++) {
		struct forward *f = &vr->fwd[k];
		if (f->len && f->from < end && start < f->from + f->len)
			f->unmapped = true;
	}
}

static bool range_unmapped(struct vmaq *q, uintptr_t start, uintptr_t end)
{
	struct vma v;
	return vma_find_next(q, start, &v) < 0 || v.start >= end;
}

static bool range_mapped(struct vmaq *q, uintptr_t start, uintptr_t end)
{
	struct vma v;
	for (uintptr_t a = start; a < end; a = v.end)
		if (vma_find(q, a, &v) < 0)
			return false;
	return true;
}

/* The device entries of a range nobody holds (a holder may have
 * installed its page already), and how many of the private ones' pages
 * another range (or the same) has present. */
struct presence_check {
	uint64_t first;                   /* vpn of pf[0] */
	const uint8_t *pf;
	size_t entries, present;          /* private */
	size_t coherent;
};

static int count_present(void *arg, uint64_t vpn, _Atomic uint64_t *slot)
{
	struct presence_check *c = arg;
	uint64_t e = atomic_load(slot);
	if (!shadow_on_device(e) || shadow_is_busy(e))
		return 0;
	if (shadow_is_coherent(e)) {
		c->coherent++;
		return 0;
	}
	c->entries++;
	c->present += (c->pf[vpn - c->first] & PG_PRESENT) != 0;
	return 0;
}

/* from's device entries, and what at has of their pages (above); false
 * if the kernel would not say. */
static bool entries_presence(struct hetmm_ctx *ctx, uintptr_t from,
			     uintptr_t at, size_t len,
			     struct presence_check *sum)
{
	uint8_t pf[CHUNK_PAGES];
	*sum = (struct presence_check){ 0 };
	for (size_t off = 0; off < len;) {
		size_t n = MIN((len - off) >> PAGE_SHIFT, (size_t)CHUNK_PAGES);
		struct presence_check c = { .first = addr_to_vpn(from + off),
					    .pf = pf };
		if (vma_page_presence(&ctx->vmaq, at + off, n, pf))
			return false;
		shadow_for_each(&ctx->shadow, c.first, c.first + n,
				count_present, &c);
		sum->entries += c.entries;
		sum->present += c.present;
		sum->coherent += c.coherent;
		off += n * PAGE_SIZE;
	}
	return true;
}

/* Is [at, at + len) one shared mapping: a coherent device's pages,
 * mapped at the process's addresses (coherent.c)? */
static bool range_shared(struct vmaq *q, uintptr_t at, size_t len)
{
	struct vma v;
	return vma_find(q, at, &v) == 0 && v.end >= at + len &&
	       !vma_is_private_anon(&v);
}

/* Does at hold the mapping with from's device entries (the pages of the
 * private ones all missing there, the kernel moved its holes along; the
 * coherent ones' shared mapping moved there), and are there any? */
static bool holds_moved_entries(struct hetmm_ctx *ctx, uintptr_t from,
				uintptr_t at, size_t len)
{
	struct presence_check s;
	return entries_presence(ctx, from, at, len, &s) &&
	       (s.entries || s.coherent) && !s.present &&
	       (!s.coherent || range_shared(&ctx->vmaq, at, len));
}

/* Where a REMAP from -> to read now puts from's entries: to, or where
 * the kernel moved the mapping on since (see above). */
static uintptr_t forward_follow(struct hetmm_ctx *ctx, uintptr_t from,
				uintptr_t to, size_t len)
{
	struct vacated_ranges *vr = &ctx->vacated;
	for (unsigned k = 1; k <= FORWARD_MAX; k++) {   /* newest first */
		struct forward *f = &vr->fwd[(vr->fwd_next - k) % FORWARD_MAX];
		if (f->len != len || f->from != to)
			continue;
		if ((f->carried && !f->unmapped) ||
		    !range_unmapped(&ctx->vmaq, to, to + len) ||
		    !range_mapped(&ctx->vmaq, f->to, f->to + len) ||
		    !holds_moved_entries(ctx, from, f->to, len))
			return to;
		f->len = 0;
		return f->to;
	}
	return to;
}

/* Does at hold another mapping than the one with from's device entries:
 * a page present where a private one is on a device, or, where there
 * are coherent ones, not their shared mapping? */
static bool lacks_moved_entries(struct hetmm_ctx *ctx, uintptr_t from,
				uintptr_t at, size_t len)
{
	struct presence_check s;
	return entries_presence(ctx, from, at, len, &s) &&
	       (s.present ||
		(s.coherent && !range_shared(&ctx->vmaq, at, len)));
}

/*
 * The other way round (part 4's order, with nothing of X's to park):
 * the handler reads Z -> X, then X -> Y, whose move came first.  What is
 * at X is Z's, not X -> Y's to carry, if X is mapped now and holds the
 * mapping with those entries, and Y does not (it has a page where a
 * private one is on a device, or is no shared mapping where there are
 * coherent ones: X's private memory the kernel moved there).  Where Y
 * lacks every private one's page the two orders look alike, and X -> Y
 * carries them, as before.
 */
static bool moved_in_later(struct hetmm_ctx *ctx, uintptr_t from,
			   uintptr_t to, size_t len)
{
	struct vacated_ranges *vr = &ctx->vacated;
	for (unsigned k = 1; k <= FORWARD_MAX; k++) {
		struct forward *f = &vr->fwd[(vr->fwd_next - k) % FORWARD_MAX];
		if (f->len != len || f->to != from)
			continue;
		return range_mapped(&ctx->vmaq, from, from + len) &&
		       holds_moved_entries(ctx, from, from, len) &&
		       lacks_moved_entries(ctx, from, to, len);
	}
	return false;
}

/* ------------------------------------------------------------------------
 * An UNMAP read while a move is in flight
 *
 * Thread A moves X to Y with MREMAP_DONTUNMAP, which leaves an empty
 * mapping at X; thread B then moves Z onto X, unmapping that first.
 * Each thread's events queue once it drops the mmap lock, so the handler
 * can read B's UNMAP of X and Z -> X before A's X -> Y: freed at that
 * UNMAP, X's entries, whose pages the kernel had taken to Y, would be
 * lost (Y reading zeroes), and X -> Y would take Z's on to Y.  B moving
 * first and A then moving X, Z's pages by then, gives the same events in
 * the same order, and there X's entries are to be freed and Z's go to
 * Y.  Where the pages were on a device the mappings cannot tell the two
 * apart; the markers the kernel moved can (marker.h).  So an UNMAP of a
 * range that is mapped again (something moved or was mapped onto it),
 * read while the kernel still counts an event pending (a REMAP may be
 * in flight), parks the range's private device entries instead of
 * freeing them.  A REMAP from the range decides (parked_went_along): A
 * first left X empty and Z's pages moved in after, so X has markers of
 * the entries there now; or, with none of those, Y has markers where
 * the parked entries were.  Then the parked entries go to Y and what is
 * at X stays; else X's go to Y, as before, and the parked ones wait on:
 * a third thread C may have moved Z's mapping on from X (this REMAP)
 * before A's REMAP was read.  For the same reason C's UNMAP of X frees
 * what is there, not what is parked (unmap_parked).  A sync through the
 * handler that succeeds frees what is still parked: no move is left to
 * claim it.  Without markers (before Linux 6.5) the UNMAP frees, as
 * before.
 */

static int park_device_one(void *arg, uint64_t vpn, _Atomic uint64_t *slot)
{
	uint64_t e = atomic_load(slot);
	if (!shadow_on_device(e) || shadow_is_coherent(e))
		return 0;
	return park_one(arg, vpn, slot);
}

/* The UNMAP of [start, end), if a move may have taken its entries: they
 * are parked, and the rest unmapped as usual.  False if not. */
static bool park_unmapped(struct hetmm_ctx *ctx, uintptr_t start,
			  uintptr_t end)
{
	struct vacated_ranges *vr = &ctx->vacated;
	struct parked ov[PARKED_MAX];
	if (!markers_kept(ctx) || vr->nparked == PARKED_MAX ||
	    parked_overlaps(vr, start, end, ov) ||
	    !range_mapped(&ctx->vmaq, start, end) ||
	    !uffd_events_pending(ctx->uffd.fd))
		return false;
	struct park k = { .ctx = ctx };
	notifiers_invalidate(ctx, start, end, HETMM_EVENT_UNMAP);
	shadow_for_each(&ctx->shadow, addr_to_vpn(start), addr_to_vpn(end),
			park_device_one, &k);
	if (k.parked)
		vr->parked[vr->nparked++] = (struct parked){ start, end, true };
	discard_range(ctx, start, end, true, true);   /* held: GONE */
	watch_forget(ctx, start, end);
	return true;
}

/* Entries (of the shadow or the parked table) whose page is marked. */
struct marked_count {
	uint64_t first;                   /* vpn of marks[0] */
	const bool *marks;
	size_t n;
};

static int count_marked(void *arg, uint64_t vpn, _Atomic uint64_t *slot)
{
	struct marked_count *m = arg;
	uint64_t e = atomic_load(slot);
	if (shadow_on_device(e) && !shadow_is_coherent(e) &&
	    !shadow_is_busy(e))
		m->n += m->marks[vpn - m->first];
	return 0;
}

/* Of n pages from vpn first: the entries now there (else the parked
 * ones) whose page marks says is marked. */
static size_t marked_entries(struct hetmm_ctx *ctx, bool parked,
			     uint64_t first, size_t n, const bool *marks)
{
	struct marked_count m = { .first = first, .marks = marks };
	if (parked)
		vtab_for_each(&ctx->vacated.parked_tab, first, first + n,
			      count_marked, &m);
	else
		shadow_for_each(&ctx->shadow, first, first + n, count_marked,
				&m);
	return m.n;
}

/* Did the entries an UNMAP parked in ov go along with the REMAP that
 * moves ov delta bytes on?  (See above.)  No if pagemap won't say. */
static bool parked_went_along(struct hetmm_ctx *ctx, const struct parked *ov,
			      uintptr_t delta)
{
	bool at_x[CHUNK_PAGES], at_y[CHUNK_PAGES];
	size_t here_x = 0, here_y = 0, parked_y = 0;
	for (uintptr_t a = ov->start; a < ov->end;) {
		size_t n = MIN((ov->end - a) >> PAGE_SHIFT,
			       (size_t)CHUNK_PAGES);
		uint64_t v = addr_to_vpn(a);
		if (markers_read(ctx, a, n, at_x) ||
		    markers_read(ctx, a + delta, n, at_y))
			return false;
		here_x += marked_entries(ctx, false, v, n, at_x);
		here_y += marked_entries(ctx, false, v, n, at_y);
		parked_y += marked_entries(ctx, true, v, n, at_y);
		a += n * PAGE_SIZE;
	}
	return here_x || (!here_y && parked_y);
}

/* A REMAP from -> to meets the parked ranges ov (n of them): what is at
 * the place of those an UNMAP parked whose entries did not go along is
 * the REMAP's to carry.  They stay parked: a third thread may have
 * moved on what was moved into the range since, before the REMAP they
 * belong to was read; the settle frees them if none is.  Returns how
 * many are left in ov, in order. */
static unsigned parked_judge(struct hetmm_ctx *ctx, struct parked *ov,
			     unsigned n, uintptr_t from, uintptr_t to)
{
	unsigned left = 0;
	for (unsigned i = 0; i < n; i++)
		if (!ov[i].unmapped ||
		    parked_went_along(ctx, &ov[i], to - from))
			ov[left++] = ov[i];
	return left;
}

void lifecycle_settled(struct hetmm_ctx *ctx)
{
	struct vacated_ranges *vr = &ctx->vacated;
	if (vr->fwd_next) {
		memset(vr->fwd, 0, sizeof(vr->fwd));
		vr->fwd_next = 0;
	}
	for (unsigned i = 0; i < vr->nparked;) {
		struct parked p = vr->parked[i];
		if (!p.unmapped) {
			i++;
			continue;
		}
		parked_free(ctx, p.start, p.end);
		vr->parked[i] = vr->parked[--vr->nparked];
	}
}

/* ------------------------------------------------------------------------
 * mremap
 */

struct remap {
	struct drop_batch drop;           /* pages with nowhere to go */
	uint64_t from_vpn;
	uint64_t to_vpn;
	size_t moved;
	const struct parked *parked;      /* of the old range: left alone */
	unsigned nparked;
};

/*
 * A device page someone holds (eviction, a migration back, a pin
 * bringing it home): it stays theirs, but at its new address.  The claim
 * moves there and the frame's owner names the new address; the claimer
 * finds it so when it lets go (back.c: claim_follow), and puts the page
 * there.  A fault at the new address meanwhile finds the claim and waits
 * for the claimer's wake.
 */
static bool carry_claim(struct remap *r, _Atomic uint64_t *slot,
			uint64_t claim, uint64_t to)
{
	_Atomic uint64_t *dst = shadow_slot(&r->drop.ctx->shadow, to, true);
	if (!dst || !shadow_carry_begin(slot, claim, dst))
		return false;
	frame_set_owner(shadow_pfn(claim), vpn_to_addr(to));
	shadow_carry_end(slot);
	r->moved++;
	return true;
}

/*
 * Carry one device entry to its new address.  The handler is the only
 * one to fault pages back, and it is busy here, so the page cannot come
 * back meanwhile; claiming it keeps explicit migrations off it.  A page
 * someone else claimed is carried claimed (carry_claim).
 */
static int remap_one(void *arg, uint64_t vpn, _Atomic uint64_t *slot)
{
	struct remap *r = arg;
	uint64_t to = r->to_vpn + (vpn - r->from_vpn);
	uint64_t e;
	/* A REMAP read early put it here: not this one's to carry. */
	if (r->nparked && in_overlaps(r->parked, r->nparked, vpn_to_addr(vpn)))
		return 0;
	for (;;) {
		e = atomic_load(slot);
		if (shadow_claimed_device(e)) {
			if (carry_claim(r, slot, e, to) ||
			    atomic_load(slot) == e)
				return 0;   /* carried, or nowhere to go */
			continue;           /* let go of meanwhile */
		}
		if (!shadow_claimable(e))
			return 0;   /* a system page in a migration's hands */
		if (shadow_claim(&r->drop.ctx->shadow, vpn, slot, &e,
				 shadow_busy(e)))
			break;
	}

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

/*
 * After a REMAP: its old range may be vacated, with the UNMAP to come
 * (without MREMAP_DONTUNMAP; with it no UNMAP comes, and the record only
 * waits for an UNMAP of exactly that range, which then spares nothing
 * but what REMAPs put there).  Pages this REMAP put into a range still
 * waiting for its UNMAP are spared by it.
 */
static void vacated_note(struct hetmm_ctx *ctx, uintptr_t from, uintptr_t to,
			 size_t len)
{
	for (unsigned i = 0; i < VACATED_MAX; i++) {
		struct vacated *v = &ctx->vacated.r[i];
		uintptr_t lo = MAX(v->start, to), hi = MIN(v->end, to + len);
		if (!v->start || lo >= hi)
			continue;
		if (v->keep_lo >= v->keep_hi) {
			v->keep_lo = lo;
			v->keep_hi = hi;
		} else {
			v->keep_lo = MIN(v->keep_lo, lo);
			v->keep_hi = MAX(v->keep_hi, hi);
		}
	}
	struct vacated *v = &ctx->vacated.r[ctx->vacated.next++ % VACATED_MAX];
	*v = (struct vacated){ .start = from, .end = from + len };
}

static void remnant_rescue(struct hetmm_ctx *ctx, uintptr_t from,
			   uintptr_t to, size_t len)
{
	uint8_t pf[CHUNK_PAGES];
	if (ctx->frames.fd < 0)
		return;   /* no UFFDIO_MOVE: the holders move them (back.c) */
	for (size_t off = 0; off < len;) {
		size_t n = MIN((len - off) >> PAGE_SHIFT, (size_t)CHUNK_PAGES);
		if (vma_page_presence(&ctx->vmaq, from + off, n, pf))
			return;
		for (size_t k = 0; k < n; k++)
			if (pf[k] & PG_PRESENT)
				rescue_one(ctx, from + off + k * PAGE_SIZE,
					   to + off + k * PAGE_SIZE);
		off += n * PAGE_SIZE;
	}
}

/* A piece of an mremap's old range that held what it moved. */
static void moved_piece(struct hetmm_ctx *ctx, uintptr_t from, uintptr_t end,
			uintptr_t to)
{
	watch_moved(ctx, from, to, end - from);
	remnant_rescue(ctx, from, to, end - from);
}

void lifecycle_remap(struct hetmm_ctx *ctx, uintptr_t from, uintptr_t to,
		     size_t len)
{
	TEST_HOOK(TEST_HOOK_EVENT_REMAP, from, len);
	if (migrators_own(ctx, from, from + len, true))
		return;   /* a coherent mapping swapped into place */
	to = forward_follow(ctx, from, to, len);
	atomic_store(&ctx->vacated.remap_dest, to);
	if (ctx->vacated.nrescue) {
		rescue_cancel(ctx, from, from + len);
		rescue_cancel(ctx, to, to + len);
	}
	notifiers_invalidate(ctx, from, from + len, HETMM_EVENT_REMAP);
	notifiers_invalidate(ctx, to, to + len, HETMM_EVENT_REMAP);
	park_stale(ctx, to, to + len);
	struct parked ov[PARKED_MAX];
	struct remap r = {
		.drop = { .ctx = ctx, .why = HETMM_EVENT_REMAP },
		.from_vpn = addr_to_vpn(from), .to_vpn = addr_to_vpn(to),
		.parked = ov,
	};
	/* Parked entries of the old range are this REMAP's to carry; what
	 * is there now is another's. */
	if (ctx->vacated.nparked)
		r.nparked = parked_judge(ctx, ov,
					 parked_overlaps(&ctx->vacated, from,
							 from + len, ov),
					 from, to);
	/* Nothing parked, but all of it another's: the same, unparked. */
	if (!r.nparked && moved_in_later(ctx, from, to, len)) {
		ov[0] = (struct parked){ from, from + len, false };
		r.nparked = 1;
	}
	for (unsigned i = 0; i < r.nparked; i++) {
		struct unpark u = { .ctx = ctx, .carry = true,
				    .delta = (int64_t)(r.to_vpn - r.from_vpn) };
		vtab_for_each(&ctx->vacated.parked_tab,
			      addr_to_vpn(ov[i].start), addr_to_vpn(ov[i].end),
			      unpark_one, &u);
		parked_cut(ctx, ov[i].start, ov[i].end);
		r.moved += u.moved;
	}
	shadow_for_each(&ctx->shadow, r.from_vpn, r.from_vpn + addr_to_vpn(len),
		      remap_one, &r);
	drop_flush(&r.drop);
	STAT_ADD(ctx, remapped_pages, r.moved);
	outside_overlaps(ctx, from, from + len, ov, r.nparked, to,
			 moved_piece);
	vacated_note(ctx, from, to, len);
	forward_note(ctx, from, to, len, r.moved != 0);
	/* Its late UNMAP spares what was put there before it. */
	if (r.nparked) {
		struct vacated *v = &ctx->vacated.r[(ctx->vacated.next - 1) %
						    VACATED_MAX];
		v->keep_lo = ov[0].start;
		v->keep_hi = ov[r.nparked - 1].end;
	}
	atomic_store(&ctx->vacated.remap_dest, 0);
}

uintptr_t lifecycle_remap_dest(const struct hetmm_ctx *ctx)
{
	return atomic_load(&ctx->vacated.remap_dest);
}

