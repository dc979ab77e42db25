/* SPDX-License-Identifier: MIT */
/*
 * lifecycle.c - what the process does to memory that has pages on a
 * device, and what hetmm does about it.
 *
 *   munmap     UNMAP event: the device frames of the range are freed and
 *              their entries forgotten.  A page claimed by a migration in
 *              flight is marked GONE so its claimer drops it.
 *   madvise    REMOVE event (DONTNEED, FREE, REMOVE): device frames are
 *              freed, and the next access finds a hole and reads zeroes,
 *              as the kernel zaps a device-private entry.
 *   mremap     REMAP event: device entries move to the new address.
 *   fork       pthread_atfork: before the child exists every device page
 *              of every context comes home, with new migrations held off,
 *              so the kernel's copy-on-write covers all the bytes.
 *
 * Why fork works that way: the kernel shares a device-private page
 * between parent and child and lets either fault it back.  Here the
 * child's copy of a device page would be a hole in the child's page
 * tables with nobody to fill it: the parent's handler cannot reach into
 * the child, and the child would lose the bytes once the parent exits.
 * UFFD_FEATURE_EVENT_FORK would hand the parent a userfaultfd of the
 * child's, but serving it means a handler per child in the parent, for
 * as long as the child lives.  Bringing the pages home costs one
 * migration back per fork and keeps both processes self-contained.
 *
 * UNMAP and REMAP arrive after the fact, REMOVE before; the caller of
 * munmap, madvise or mremap waits until the handler has read the event.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

atomic_uint fork_generation;

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
 * they wait for the handler to see it before they publish: ctx.c).
 */
static int discard_one(void *arg, uint64_t vpn, _Atomic uint64_t *slot)
{
	struct discard *d = arg;
	uint64_t e = atomic_load(slot);
	while (e & (SHADOW_DEVICE | SHADOW_BUSY)) {
		uint64_t want;
		if (e & SHADOW_BUSY) {
			if (!d->unmap || (e & SHADOW_GONE))
				return 0;
			want = e | SHADOW_GONE;
		} else {
			want = e | SHADOW_BUSY;
		}
		bool ok = (e & SHADOW_BUSY) ?
			  atomic_compare_exchange_weak(slot, &e, want) :
			  shadow_claim(d->drop.ctx, vpn, slot, &e, want);
		if (!ok)
			continue;
		if (e & SHADOW_BUSY)
			return 0;
		/* A discarded coherent page stays mapped where it is, a
		 * page of the device's file: it reads as zeroes again. */
		if (!d->unmap && shadow_is_coherent(e)) {
			coherent_zero(e);
			atomic_store(slot, e);
			return 0;
		}
		drop_add(&d->drop, vpn, want);
		return 0;
	}
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
	vtab_for_each(&ctx->shadow, addr_to_vpn(start), addr_to_vpn(end),
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
	    !shadow_claim(r->drop.ctx, vpn, slot, &e, e | SHADOW_BUSY))
		return 0;   /* in a migration's hands: see the notes above */

	uint64_t to = r->to_vpn + (vpn - r->from_vpn);
	_Atomic uint64_t *dst = vtab_slot(&r->drop.ctx->shadow, to, true);
	uint64_t empty = 0;
	frame_set_owner(shadow_pfn(e), vpn_to_addr(to));
	if (dst && atomic_compare_exchange_strong(dst, &empty, e)) {
		atomic_store(slot, 0);
		r->moved++;
		return 0;
	}
	/* Nowhere to put it (out of memory, or the target is claimed). */
	drop_add(&r->drop, vpn, e | SHADOW_BUSY);
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
	vtab_for_each(&ctx->shadow, r.from_vpn, r.from_vpn + addr_to_vpn(len),
		      remap_one, &r);
	drop_flush(&r.drop);
	STAT_ADD(ctx, remapped_pages, r.moved);
}

/* ------------------------------------------------------------------------
 * fork
 */

static pthread_mutex_t ctx_list_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hetmm_ctx *ctx_list;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

struct home {
	uint64_t vpn;
	bool busy;                        /* a page in someone's hands */
};

static int find_device_page(void *arg, uint64_t vpn, _Atomic uint64_t *slot)
{
	struct home *h = arg;
	uint64_t e = atomic_load(slot);
	if (!(e & SHADOW_DEVICE))
		return 0;
	/* A coherent page a device holds in place can't come home; the
	 * child makes its own copy (fork_child_coherent). */
	if (!(e & SHADOW_BUSY) && coherent_held(e))
		return 0;
	if (e & SHADOW_BUSY) {
		h->busy = true;
		return 0;
	}
	h->vpn = vpn;
	return 1;
}

/*
 * Bring every device page of ctx back, a chunk at a time from the first
 * one found.  Pages in someone else's hands (a fault or a migration back
 * under way) are waited for: until their claimer lets go their bytes are
 * not in the process page tables yet, and a fork now would give the child
 * holes.  A pass that saw one, wherever in the pass, is followed by
 * another from the start.
 */
static void bring_all_home(struct hetmm_ctx *ctx)
{
	for (;;) {
		bool busy = false;
		uint64_t from = 0;
		for (;;) {
			struct home h = { 0, false };
			int found = vtab_for_each(&ctx->shadow, from,
						  addr_to_vpn(USER_VA_END),
						  find_device_page, &h);
			busy |= h.busy;
			if (!found)
				break;
			uintptr_t a = vpn_to_addr(h.vpn);
			struct hetmm_migrate_report rep = { 0, 0, NULL };
			migrate_back_range(ctx, a, a + CHUNK_PAGES * PAGE_SIZE,
					   &rep);
			STAT_ADD(ctx, fork_pages, rep.moved);
			from = h.vpn;
		}
		if (!busy)
			return;
		sched_yield();
	}
}

static void fork_prepare(void)
{
	pthread_mutex_lock(&ctx_list_lock);
	for (struct hetmm_ctx *ctx = ctx_list; ctx; ctx = ctx->next) {
		pthread_rwlock_wrlock(&ctx->fork_lock);
		notifiers_invalidate(ctx, 0, USER_VA_END, HETMM_EVENT_FORK);
		bring_all_home(ctx);
	}
}

static void fork_parent(void)
{
	for (struct hetmm_ctx *ctx = ctx_list; ctx; ctx = ctx->next)
		pthread_rwlock_unlock(&ctx->fork_lock);
	pthread_mutex_unlock(&ctx_list_lock);
}

/*
 * A coherent page held in place (a short-term pin) stayed on the device
 * through fork, so the child inherited its shared mapping.  The kernel
 * copies a pinned page for the child at fork; the child does it here,
 * first thing: a private anonymous page with the bytes takes the shared
 * mapping's place.  (A parent write between fork() and this handler
 * reaches the child's copy too: the one window the kernel doesn't have.)
 */
static int child_copy_coherent(void *arg, uint64_t vpn, _Atomic uint64_t *slot)
{
	(void)arg;
	uint64_t e = atomic_load(slot);
	struct vma v;
	uintptr_t a = vpn_to_addr(vpn);
	if (!shadow_is_coherent(e) || vma_find_maps(a, &v) ||
	    !(v.flags & VMA_SHARED))
		return 0;
	static char copy[PAGE_SIZE];
	int prot = ((v.flags & VMA_READ) ? PROT_READ : 0) |
		   ((v.flags & VMA_WRITE) ? PROT_WRITE : 0) |
		   ((v.flags & VMA_EXEC) ? PROT_EXEC : 0);
	if (!(v.flags & VMA_READ))
		return 0;
	memcpy(copy, (void *)a, PAGE_SIZE);
	if (mmap((void *)a, PAGE_SIZE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
		return 0;
	memcpy((void *)a, copy, PAGE_SIZE);
	mprotect((void *)a, PAGE_SIZE, prot);
	return 0;
}

/* The child has none of the parent's threads: its contexts are dead. */
static void fork_child(void)
{
	for (struct hetmm_ctx *ctx = ctx_list; ctx; ctx = ctx->next)
		vtab_for_each(&ctx->shadow, 0, addr_to_vpn(USER_VA_END),
			      child_copy_coherent, NULL);
	atomic_fetch_add(&fork_generation, 1);
	ctx_list = NULL;
	pthread_mutex_init(&ctx_list_lock, NULL);
}

static void atfork_install(void)
{
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

int lifecycle_register(struct hetmm_ctx *ctx)
{
	int rc = pthread_once(&atfork_once, atfork_install);
	if (rc)
		return -rc;
	pthread_mutex_lock(&ctx_list_lock);
	ctx->fork_gen = atomic_load(&fork_generation);
	ctx->next = ctx_list;
	ctx_list = ctx;
	pthread_mutex_unlock(&ctx_list_lock);
	return 0;
}

void lifecycle_unregister(struct hetmm_ctx *ctx)
{
	pthread_mutex_lock(&ctx_list_lock);
	for (struct hetmm_ctx **pp = &ctx_list; *pp; pp = &(*pp)->next) {
		if (*pp == ctx) {
			*pp = ctx->next;
			break;
		}
	}
	pthread_mutex_unlock(&ctx_list_lock);
}
