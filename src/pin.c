/* SPDX-License-Identifier: MIT */
/*
 * pin.c - get_user_pages, pin_user_pages and their fast variants.
 *
 * A system page's hold lives in its shadow word, the word every migration
 * and fault claims by compare-and-swap (shadow.h: shadow_hold): a held
 * word is never 0, so a migration's claim fails on it and the page is
 * skipped as pinned, and a claimed or device word is never a count, so a
 * hold can't start while a migration or fault owns the page.  Migrating
 * back only ever claims device words: no path can overwrite a count.
 *
 * Pages of FS_DAX and GENERIC pagemaps (shadow FIXED | pfn) keep their
 * holds in their metadata instead; pagemap.c keeps those.  So do pages of
 * a DEVICE_COHERENT pagemap held in place (DEVICE | pfn): the CPU reaches
 * them where they are, so a short-term hold needs no migration, while a
 * long-term pin would keep device memory from ever being freed or moved:
 * FOLL_LONGTERM migrates them to system memory first, and the fast path
 * does exactly what the slow one does, since it never holds a device word.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "back.h"
#include "compat.h"
#include "ctx.h"
#include "entry.h"
#include "pagemap.h"
#include "shadow.h"
#include "trace.h"

#define FOLL_KNOWN (HETMM_FOLL_WRITE | HETMM_FOLL_LONGTERM | \
		    HETMM_FOLL_PCI_P2PDMA)
/* Tries to bring a device page back before calling the page lost. */
#define BACK_TRIES 4

struct gup {
	struct hetmm_ctx *ctx;
	uintptr_t start;
	size_t n;
	bool write;
	bool pin;
	bool longterm;
	bool p2p;          /* HETMM_FOLL_PCI_P2PDMA */
	void **pages;
};

static uintptr_t gup_addr(const struct gup *g, size_t i)
{
	return g->start + i * PAGE_SIZE;
}

static int gup_init(struct gup *g, struct hetmm_ctx *ctx, void *addr,
		    size_t nr, unsigned int flags, bool pin, void **pages)
{
	if (!ctx || !pages || !nr || (flags & ~FOLL_KNOWN))
		return -EINVAL;
	/* As the kernel: only a pin may be long term. */
	if (!pin && (flags & HETMM_FOLL_LONGTERM))
		return -EINVAL;
	if (nr > (USER_VA_END >> PAGE_SHIFT))
		return -EINVAL;
	int rc = entry_user_range(ctx, addr, nr * PAGE_SIZE);
	if (rc)
		return rc;
	*g = (struct gup){ .ctx = ctx, .start = (uintptr_t)addr, .n = nr,
			   .write = flags & HETMM_FOLL_WRITE, .pin = pin,
			   .longterm = flags & HETMM_FOLL_LONGTERM,
			   .p2p = flags & HETMM_FOLL_PCI_P2PDMA,
			   .pages = pages };
	return 0;
}

/*
 * How many pages from the start lie in mappings that allow the access;
 * the kernel's check_vma_flags().  Touching a page is safe only there.
 */
static size_t gup_accessible(const struct gup *g)
{
	int why;
	unsigned need = VMA_READ | (g->write ? VMA_WRITE : 0);
	return vma_accessible(&g->ctx->vmaq, g->start, gup_addr(g, g->n), need,
			      &why) >> PAGE_SHIFT;
}

/* Make the held page present for the access: a read, or a write of
 * nothing (atomic, so a write racing from another thread is not lost). */
static void touch(uintptr_t a, bool write)
{
	if (write)
		__atomic_fetch_add((unsigned char *)a, 0, __ATOMIC_RELAXED);
	else
		(void)*(volatile const unsigned char *)a;
}

/*
 * The fast path: for each page whose shadow word exists and is a count,
 * one CAS and one touch.  No lock, no allocation.  Stops at the first page
 * that needs more; returns how many it held.
 */
static size_t gup_fast_run(struct gup *g, size_t limit)
{
	uint64_t vpn0 = addr_to_vpn(g->start);
	_Atomic uint64_t *slot = NULL;
	size_t i;
	for (i = 0; i < limit; i++) {
		slot = shadow_next(&g->ctx->shadow, slot, vpn0 + i, false);
		if (!slot || shadow_hold(slot, g->pin))
			break;
		touch(gup_addr(g, i), g->write);
		g->pages[i] = (void *)gup_addr(g, i);
	}
	return i;
}

/* A page of a fixed pagemap: held in its metadata, populated by the
 * kernel so that a file page past the end gives an error, not SIGBUS. */
static int hold_fixed(struct gup *g, _Atomic uint64_t *slot, uint64_t e,
		      uintptr_t a)
{
	/* Peer memory only for a caller that can DMA to it, as the
	 * kernel's FOLL_PCI_P2PDMA. */
	if (!g->p2p && pagemap_section_type(shadow_pfn(e)) ==
	    HETMM_MEMORY_PCI_P2PDMA)
		return -EREMOTEIO;
	int rc = pagemap_hold(shadow_pfn(e), slot, e, g->pin, g->longterm);
	if (rc)
		return rc;
	if (madvise((void *)a, PAGE_SIZE, g->write ? MADV_POPULATE_WRITE :
		    MADV_POPULATE_READ)) {
		pagemap_unhold(shadow_pfn(e), g->pin);
		return -EFAULT;
	}
	return 0;
}

/* A device page comes back to system memory; -EFAULT if it can't. */
static int bring_back(struct gup *g, _Atomic uint64_t *slot, uint64_t e,
		      uintptr_t a, int *tries)
{
	if (migrate_back_range(g->ctx, a, a + PAGE_SIZE, NULL) == 0)
		return 0;
	/* Nothing moved: lost a race (the word changed), or the driver
	 * could not give the page back (it did not). */
	if (atomic_load(slot) == e && ++*tries >= BACK_TRIES)
		return -EFAULT;
	sched_yield();
	return 0;
}

/*
 * The slow path for one page: wait out claims, bring device pages back,
 * hold what is left.  A fixed page whose pagemap is being removed is
 * waited for only while the call holds nothing yet: holding pages while
 * waiting could hold the removal up until it gives up.  Otherwise it ends
 * the call short, as the kernel's get_dev_pagemap() failing does.
 */
static int gup_slow_page(struct gup *g, size_t i)
{
	uintptr_t a = gup_addr(g, i);
	_Atomic uint64_t *slot = shadow_slot(&g->ctx->shadow, addr_to_vpn(a),
					     true);
	if (!slot)
		return -ENOMEM;
	int tries = 0;
	for (;;) {
		uint64_t e = atomic_load_explicit(slot, memory_order_acquire);
		int rc;
		if (shadow_is_busy(e)) {
			sched_yield();   /* a migration or fault finishing */
			continue;
		}
		if (shadow_on_device(e) && !g->longterm &&
		    shadow_is_coherent(e)) {
			rc = hold_fixed(g, slot, e, a);
			if (rc == 0)
				break;
			/* Changed, or its pagemap is going: look again
			 * (a dying pagemap's pages come home). */
			if (rc == -EAGAIN || rc == -ENXIO) {
				if (rc == -ENXIO)
					bring_back(g, slot, e, a, &tries);
				sched_yield();
				rc = 0;
			}
		} else if (shadow_on_device(e)) {
			rc = bring_back(g, slot, e, a, &tries);
		} else if (shadow_is_fixed(e)) {
			rc = hold_fixed(g, slot, e, a);
			if (rc == 0)
				break;
			if (rc == -EAGAIN || (rc == -ENXIO && i == 0)) {
				sched_yield();
				rc = 0;
			} else if (rc == -ENXIO) {
				rc = -EFAULT;
			}
		} else {
			rc = shadow_hold(slot, g->pin);
			if (rc == 0) {
				touch(a, g->write);
				break;
			}
			if (rc == -EAGAIN)
				rc = 0;   /* changed under us: look again */
		}
		if (rc)
			return rc;
	}
	g->pages[i] = (void *)a;
	return 0;
}

/*
 * Bring the device pages of [start, end) back in runs, except coherent
 * pages a short-term hold takes in place.
 */
static void gup_bring_back(struct gup *g, uintptr_t start, uintptr_t end)
{
	if (g->longterm) {
		migrate_back_range(g->ctx, start, end, NULL);
		return;
	}
	uint64_t vpn = addr_to_vpn(start), last = addr_to_vpn(end);
	while (vpn < last) {
		uint64_t e = shadow_get(&g->ctx->shadow, vpn);
		if (!shadow_on_device(e) || shadow_is_coherent(e)) {
			vpn++;
			continue;
		}
		uint64_t n = 1;
		while (vpn + n < last) {
			uint64_t f = shadow_get(&g->ctx->shadow, vpn + n);
			if (!shadow_on_device(f) ||
			    shadow_is_coherent(f))
				break;
			n++;
		}
		migrate_back_range(g->ctx, vpn_to_addr(vpn),
				   vpn_to_addr(vpn + n), NULL);
		vpn += n;
	}
}

static long gup(struct hetmm_ctx *ctx, void *addr, size_t nr,
		unsigned int flags, bool pin, void **pages, bool fast)
{
	struct gup g;
	int rc = entry_ctx(ctx);
	if (rc)
		return rc;
	rc = gup_init(&g, ctx, addr, nr, flags, pin, pages);
	if (rc)
		return rc;
	size_t limit = gup_accessible(&g);
	size_t done = fast ? gup_fast_run(&g, limit) : 0;
	rc = -EFAULT;   /* what stops us at limit */
	if (done < limit) {
		/* Device pages of the rest come back in runs first. */
		gup_bring_back(&g, gup_addr(&g, done), gup_addr(&g, limit));
		for (rc = 0; done < limit && !rc; done += !rc)
			rc = gup_slow_page(&g, done);
	}
	if (done)
		STAT_ADD(ctx, pins, done);
	long ret = done ? (long)done : rc;
	TRACE4(pin, addr, nr, flags | (pin ? TRACE_PIN_PIN : 0) |
	       (fast ? TRACE_PIN_FAST : 0), ret);
	return ret;
}

long hetmm_get_user_pages(struct hetmm_ctx *ctx, void *addr, size_t nr_pages,
			  unsigned int flags, void **pages)
{
	return gup(ctx, addr, nr_pages, flags, false, pages, false);
}

long hetmm_get_user_pages_fast(struct hetmm_ctx *ctx, void *addr,
			       size_t nr_pages, unsigned int flags,
			       void **pages)
{
	return gup(ctx, addr, nr_pages, flags, false, pages, true);
}

long hetmm_pin_user_pages(struct hetmm_ctx *ctx, void *addr, size_t nr_pages,
			  unsigned int flags, void **pages)
{
	return gup(ctx, addr, nr_pages, flags, true, pages, false);
}

long hetmm_pin_user_pages_fast(struct hetmm_ctx *ctx, void *addr,
			       size_t nr_pages, unsigned int flags,
			       void **pages)
{
	return gup(ctx, addr, nr_pages, flags, true, pages, true);
}

/* ------------------------------------------------------------------------
 * Release
 */

/* Drop one hold of the kind asked for. */
static int release_one(_Atomic uint64_t *slot, bool pin)
{
	uint64_t e = atomic_load_explicit(slot, memory_order_acquire);
	/* Fixed pages, and coherent pages held in place (a claim on one
	 * that is held backs off: the word may say BUSY for a moment). */
	if (shadow_is_fixed(e) || shadow_on_device(e)) {
		int rc = pagemap_unhold(shadow_pfn(e), pin);
		/* The last hold of a coherent page the process unmapped
		 * (lifecycle.c: an orphan): its frame is free now. */
		if (rc > 0) {
			shadow_forget_orphan(slot, shadow_pfn(e));
			rc = 0;
		}
		return rc;
	}
	return shadow_unhold(slot, pin);
}

/* How many holds of the kind the page has: what release_one() could
 * drop, one by one. */
static uint64_t holds_of(_Atomic uint64_t *slot, bool pin)
{
	uint64_t e = atomic_load_explicit(slot, memory_order_acquire);
	uint64_t refs = 0, pins = 0;
	if (shadow_is_fixed(e) || shadow_on_device(e)) {
		if (pagemap_hold_counts(shadow_pfn(e), &refs, &pins))
			return 0;
	} else {
		shadow_hold_counts(e, &refs, &pins);
	}
	return pin ? pins : refs;
}

static _Atomic uint64_t *held_slot(struct hetmm_ctx *ctx, const void *page)
{
	uintptr_t a = (uintptr_t)page;
	if (!a || (a & ~PAGE_MASK) || a >= USER_VA_END)
		return NULL;
	return shadow_slot(&ctx->shadow, addr_to_vpn(a), false);
}

/* Is the page listed n times held at least n times? */
static bool held_enough(struct hetmm_ctx *ctx, const void *page, size_t n,
			bool pin)
{
	_Atomic uint64_t *slot = held_slot(ctx, page);
	return slot && holds_of(slot, pin) >= n;
}

static bool ascending(void *const *pages, size_t nr)
{
	for (size_t i = 1; i < nr; i++)
		if ((uintptr_t)pages[i] < (uintptr_t)pages[i - 1])
			return false;
	return true;
}

/* An ascending list: a page's entries are one run. */
static bool check_ascending(struct hetmm_ctx *ctx, void *const *pages,
			    size_t nr, bool pin)
{
	for (size_t i = 0, run; i < nr; i += run) {
		for (run = 1; i + run < nr && pages[i + run] == pages[i]; run++)
			;
		if (!held_enough(ctx, pages[i], run, pin))
			return false;
	}
	return true;
}

/* Any list, in place: each page counted at its first entry.  Quadratic,
 * for short lists and when no sorted copy can be had. */
static bool check_in_place(struct hetmm_ctx *ctx, void *const *pages,
			   size_t nr, bool pin)
{
	for (size_t i = 0; i < nr; i++) {
		size_t seen = 0, n = 0;
		for (size_t j = 0; j < i && !seen; j++)
			seen = pages[j] == pages[i];
		if (seen)
			continue;
		for (size_t j = i; j < nr; j++)
			n += pages[j] == pages[i];
		if (!held_enough(ctx, pages[i], n, pin))
			return false;
	}
	return true;
}

static int by_address(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t)*(void *const *)a;
	uintptr_t y = (uintptr_t)*(void *const *)b;
	return (x > y) - (x < y);
}

/* Lists no longer than this are checked in place when out of order. */
#define CHECK_IN_PLACE_MAX 64

/*
 * Can every entry be released: is each page held, that way, at least as
 * often as the list names it?  The list gup filled in is ascending and is
 * checked as it is, with no allocation; a list out of order is sorted
 * into a copy first (or, short or with no memory, counted in place).
 */
static bool releasable(struct hetmm_ctx *ctx, void *const *pages, size_t nr,
		       bool pin)
{
	if (ascending(pages, nr))
		return check_ascending(ctx, pages, nr, pin);
	void **sorted = nr > CHECK_IN_PLACE_MAX ?
			calloc(nr, sizeof(*sorted)) : NULL;
	if (!sorted)
		return check_in_place(ctx, pages, nr, pin);
	memcpy(sorted, pages, nr * sizeof(*sorted));
	qsort(sorted, nr, sizeof(*sorted), by_address);
	bool ok = check_ascending(ctx, sorted, nr, pin);
	free(sorted);
	return ok;
}

/* Every entry is checked before any is released: bad input changes
 * nothing.  (Only a release of the same holds racing this one, itself a
 * bug of the caller's, can make the second loop fail.) */
static int release(struct hetmm_ctx *ctx, void *const *pages, size_t nr,
		   bool pin)
{
	int rc = entry_ctx(ctx);
	if (rc)
		return rc;
	if (!pages || !nr || !releasable(ctx, pages, nr, pin))
		return -EINVAL;
	for (size_t i = 0; i < nr; i++) {
		_Atomic uint64_t *slot = held_slot(ctx, pages[i]);
		if (!slot || release_one(slot, pin))
			return -EINVAL;
	}
	return 0;
}

int hetmm_put_user_pages(struct hetmm_ctx *ctx, void *const *pages,
			 size_t nr_pages)
{
	return release(ctx, pages, nr_pages, false);
}

int hetmm_unpin_user_pages(struct hetmm_ctx *ctx, void *const *pages,
			   size_t nr_pages)
{
	return release(ctx, pages, nr_pages, true);
}

int hetmm_user_page_holds(struct hetmm_ctx *ctx, const void *addr,
			  uint64_t *refs, uint64_t *pins)
{
	int rc = entry_ctx(ctx);
	if (rc)
		return rc;
	if (!refs || !pins || (uintptr_t)addr >= USER_VA_END)
		return -EINVAL;
	uint64_t e = shadow_get(&ctx->shadow, addr_to_vpn((uintptr_t)addr));
	*refs = *pins = 0;
	if (shadow_is_fixed(e) || shadow_is_coherent(e))
		return pagemap_hold_counts(shadow_pfn(e), refs, pins);
	shadow_hold_counts(e, refs, pins);
	return 0;
}
