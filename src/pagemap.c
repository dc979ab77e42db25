/* SPDX-License-Identifier: MIT */
/*
 * pagemap.c - hot-added device memory: frame numbers, metadata, frames.
 *
 * Like memremap_pages(), hot-add gives a range of device memory a place in
 * one frame-number space shared by every pagemap of the process: pagemap
 * number s owns the frame numbers [s << 32, (s << 32) + nr_pages).  The
 * section table turns a frame number into its pagemap with one load, and
 * any number outside a live section fails cleanly with -ENXIO.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "compat.h"
#include "internal.h"

static pthread_rwlock_t sections_lock = PTHREAD_RWLOCK_INITIALIZER;
static _Atomic(struct hetmm_pagemap *) sections[PFN_MAX_SECTIONS];
/* Each live section's memory type, readable without the pagemap: a
 * lookup that holds no claim must not touch a pagemap hot-remove may be
 * freeing. */
_Atomic int section_types[PFN_MAX_SECTIONS];

int hetmm_page_metadata_size(void)
{
	return (int)sizeof(struct hetmm_page);
}

static int section_alloc(struct hetmm_pagemap *pgmap)
{
	int rc = -ENOSPC;
	pthread_rwlock_wrlock(&sections_lock);
	/* Section 0 stays empty so that frame number 0 is never valid. */
	for (unsigned s = 1; s < PFN_MAX_SECTIONS; s++) {
		if (atomic_load(&sections[s]))
			continue;
		pgmap->section = s;
		atomic_store(&section_types[s], (int)pgmap->type);
		atomic_store_explicit(&sections[s], pgmap, memory_order_release);
		rc = 0;
		break;
	}
	pthread_rwlock_unlock(&sections_lock);
	return rc;
}

static void section_free(struct hetmm_pagemap *pgmap)
{
	pthread_rwlock_wrlock(&sections_lock);
	atomic_store_explicit(&sections[pgmap->section], NULL,
			      memory_order_release);
	atomic_store(&section_types[pgmap->section], 0);
	pthread_rwlock_unlock(&sections_lock);
}

struct hetmm_pagemap *pfn_pagemap(uint64_t pfn, uint64_t *index)
{
	uint64_t s = pfn >> PFN_SECTION_SHIFT;
	if (s == 0 || s >= PFN_MAX_SECTIONS)
		return NULL;
	struct hetmm_pagemap *pgmap =
		atomic_load_explicit(&sections[s], memory_order_acquire);
	uint64_t idx = pfn & ((1ULL << PFN_SECTION_SHIFT) - 1);
	if (!pgmap || idx >= pgmap->nr_pages)
		return NULL;
	*index = idx;
	return pgmap;
}

bool coherent_page_held(uint64_t e)
{
	bool held = false;
	uint64_t idx;
	pthread_rwlock_rdlock(&sections_lock);
	struct hetmm_pagemap *pgmap = pfn_pagemap(shadow_pfn(e), &idx);
	if (pgmap && pagemap_is_coherent(pgmap)) {
		struct hetmm_page *p = &pgmap->pages[idx];
		held = atomic_load(&p->refcount) > 1 ||
		       atomic_load(&p->pincount);
	}
	pthread_rwlock_unlock(&sections_lock);
	return held;
}

int hetmm_pfn_to_page(hetmm_pfn_t pfn, struct hetmm_page **pagep)
{
	if (!pagep)
		return -EINVAL;
	if (!(hetmm_pfn_flags(pfn) & HETMM_PFN_DEV))
		return -ENXIO;
	int rc = -ENXIO;
	uint64_t idx;
	pthread_rwlock_rdlock(&sections_lock);
	struct hetmm_pagemap *pgmap = pfn_pagemap(hetmm_pfn_number(pfn), &idx);
	if (pgmap && ctx_forked(pgmap->ctx)) {
		rc = -ECHILD;
	} else if (pgmap && !atomic_load(&pgmap->dying)) {
		*pagep = &pgmap->pages[idx];
		rc = 0;
	}
	pthread_rwlock_unlock(&sections_lock);
	return rc;
}

int hetmm_page_get_info(const struct hetmm_page *page,
			struct hetmm_page_info *info)
{
	if (!page || !info)
		return -EINVAL;
	int rc = -ENXIO;
	pthread_rwlock_rdlock(&sections_lock);
	for (unsigned s = 1; s < PFN_MAX_SECTIONS; s++) {
		struct hetmm_pagemap *pgmap = atomic_load(&sections[s]);
		if (!pgmap || page < pgmap->pages ||
		    page >= pgmap->pages + pgmap->nr_pages)
			continue;
		if (ctx_forked(pgmap->ctx)) {
			rc = -ECHILD;
			break;
		}
		uint64_t owner = atomic_load(&page->owner);
		info->refcount = atomic_load(&page->refcount);
		info->pincount = atomic_load(&page->pincount);
		info->owner = (uintptr_t)(owner & PAGE_MASK);
		info->flags = (uint32_t)(owner & ~PAGE_MASK & ~PAGE_STALE);
		info->pagemap = pgmap;
		info->index = (uint64_t)(page - pgmap->pages);
		rc = 0;
		break;
	}
	pthread_rwlock_unlock(&sections_lock);
	return rc;
}

static bool type_is_valid(enum hetmm_memory_type type)
{
	return type >= HETMM_MEMORY_DEVICE_PRIVATE &&
	       type <= HETMM_MEMORY_PCI_P2PDMA;
}

static int check_desc(const struct hetmm_pagemap_desc *d)
{
	if (!d || !d->ops || !type_is_valid(d->type))
		return -EINVAL;
	if (d->nr_pages == 0 || d->nr_pages > (1ULL << PFN_SECTION_SHIFT))
		return -EINVAL;
	/* CPU memory mapped in place: an address, no copies, no policy. */
	if (d->type == HETMM_MEMORY_FS_DAX || d->type == HETMM_MEMORY_GENERIC)
		return d->ops->page_address && !d->flags ? 0 : -EINVAL;
	if (!d->ops->copy_to_device || !d->ops->copy_from_device)
		return -EINVAL;
	if (d->flags & ~(HETMM_PAGEMAP_REMAP | HETMM_PAGEMAP_EVICT))
		return -EINVAL;
	if ((d->flags & HETMM_PAGEMAP_REMAP) && !d->ops->page_address)
		return -EINVAL;
	/* Coherent pages are mapped from the device's file and copied
	 * out of its own view; they are never moved as anonymous memory. */
	if (d->type == HETMM_MEMORY_DEVICE_COHERENT)
		return d->ops->page_address && d->ops->page_fd &&
		       !(d->flags & HETMM_PAGEMAP_REMAP) ? 0 : -EINVAL;
	if (d->type != HETMM_MEMORY_DEVICE_PRIVATE)
		return -EOPNOTSUPP;
	return 0;
}

/*
 * Remapped device memory is registered with the context's second
 * userfaultfd, for write-protect faults (which never come: nothing
 * protects a frame): UFFDIO_MOVE wants a registered destination and equal
 * protections on both sides.  A read of a free frame is the kernel's
 * business, and giving a frame back (madvise) raises no event.
 */
static int pagemap_register_remap(struct hetmm_ctx *ctx,
				  struct hetmm_pagemap *pgmap)
{
	if (!(pgmap->flags & HETMM_PAGEMAP_REMAP))
		return 0;
	uintptr_t base = (uintptr_t)pgmap->ops->page_address(pgmap, 0);
	if (!base || (base & ~PAGE_MASK))
		return -EINVAL;
	pgmap->remap_base = base;
	if (ctx->frames.fd < 0)
		return 0;
	return uffd_register(ctx->frames.fd, base, pgmap->nr_pages * PAGE_SIZE,
			     UFFDIO_REGISTER_MODE_WP, NULL);
}

/* ------------------------------------------------------------------------
 * FS_DAX and GENERIC: CPU memory the driver mapped, used in place.
 */

/* The driver's mapping: contiguous, accessible and, for FS_DAX, a file. */
static int fixed_check_mapping(struct hetmm_ctx *ctx,
			       struct hetmm_pagemap *pgmap)
{
	uintptr_t base = (uintptr_t)pgmap->ops->page_address(pgmap, 0);
	uint64_t last = pgmap->nr_pages - 1;
	if (check_user_range((void *)base, pgmap->nr_pages * PAGE_SIZE) ||
	    (uintptr_t)pgmap->ops->page_address(pgmap, last) !=
	    base + last * PAGE_SIZE)
		return -EINVAL;
	struct vma v;
	uintptr_t end = base + pgmap->nr_pages * PAGE_SIZE;
	for (uintptr_t a = base; a < end; a = v.end) {
		if (vma_find(&ctx->vmaq, a, &v) < 0 || !(v.flags & VMA_READ))
			return -EINVAL;
		if (pgmap->type == HETMM_MEMORY_FS_DAX &&
		    !(v.flags & VMA_FILE))
			return -EINVAL;
	}
	pgmap->fixed_base = base;
	return 0;
}

/* Undo the shadow entries of pages [0, n). */
static void fixed_unpublish(struct hetmm_pagemap *pgmap, uint64_t n)
{
	struct hetmm_ctx *ctx = pgmap->ctx;
	uint64_t vpn0 = addr_to_vpn(pgmap->fixed_base);
	_Atomic uint64_t *slot = NULL;
	for (uint64_t i = 0; i < n; i++) {
		slot = vtab_next(&ctx->shadow, slot, vpn0 + i, false);
		uint64_t e = SHADOW_FIXED | pagemap_pfn(pgmap, i);
		if (slot)
			atomic_compare_exchange_strong(slot, &e, 0);
	}
}

/*
 * Every page is in use from the start, owned by its own address.  The
 * shadow entries go from 0 to FIXED | pfn by CAS, so a page hetmm holds
 * otherwise (on a device, pinned, migrating) makes hot-add fail -EBUSY.
 */
static int fixed_publish(struct hetmm_pagemap *pgmap)
{
	struct hetmm_ctx *ctx = pgmap->ctx;
	uint64_t vpn0 = addr_to_vpn(pgmap->fixed_base);
	_Atomic uint64_t *slot = NULL;
	pgmap->nr_free = 0;
	for (uint64_t i = 0; i < pgmap->nr_pages; i++) {
		struct hetmm_page *p = &pgmap->pages[i];
		atomic_store(&p->refcount, 1);
		atomic_store(&p->owner, vpn_to_addr(vpn0 + i) |
			     HETMM_PAGE_ALLOCATED);
		slot = vtab_next(&ctx->shadow, slot, vpn0 + i, true);
		uint64_t e = 0;
		if (!slot || !atomic_compare_exchange_strong(slot, &e,
				SHADOW_FIXED | pagemap_pfn(pgmap, i))) {
			fixed_unpublish(pgmap, i);
			return slot ? -EBUSY : -ENOMEM;
		}
	}
	return 0;
}

static bool fixed_idle(struct hetmm_pagemap *pgmap)
{
	for (uint64_t i = 0; i < pgmap->nr_pages; i++)
		if (atomic_load(&pgmap->pages[i].pincount) ||
		    atomic_load(&pgmap->pages[i].refcount) != 1)
			return false;
	return true;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * Hot-remove of a fixed pagemap: dying is set, so no new hold succeeds
 * (grab raises its count, then looks at dying: one of the two sees the
 * other).  Wait a bounded time for the holds there are.
 */
static int fixed_drain(struct hetmm_pagemap *pgmap)
{
	uint64_t deadline = now_ms() + HETMM_REMOVE_PIN_WAIT_MS;
	while (!fixed_idle(pgmap)) {
		if (now_ms() >= deadline)
			return -EBUSY;
		struct timespec nap = { 0, 1000000 };
		nanosleep(&nap, NULL);
	}
	fixed_unpublish(pgmap, pgmap->nr_pages);
	return 0;
}

int pagemap_fixed_grab(_Atomic uint64_t *slot, uint64_t e, bool pin,
		       bool longterm)
{
	uint64_t idx;
	int rc = -EAGAIN;
	pthread_rwlock_rdlock(&sections_lock);
	struct hetmm_pagemap *pgmap = pfn_pagemap(shadow_pfn(e), &idx);
	if (!pgmap || !(pagemap_is_fixed(pgmap) || (pagemap_is_coherent(pgmap)
			&& !longterm)) || atomic_load(slot) != e)
		goto out;
	rc = -EOPNOTSUPP;
	if (longterm && pgmap->type == HETMM_MEMORY_FS_DAX)
		goto out;
	struct hetmm_page *p = &pgmap->pages[idx];
	_Atomic uint32_t *cnt = pin ? &p->pincount : &p->refcount;
	rc = 0;
	if (atomic_fetch_add(cnt, 1) >= UINT32_MAX - 1)
		rc = -ENOMEM;
	else if (atomic_load(&pgmap->dying))
		rc = -ENXIO;
	else if (atomic_load(slot) != e)
		rc = -EAGAIN;
	if (rc)
		atomic_fetch_sub(cnt, 1);
out:
	pthread_rwlock_unlock(&sections_lock);
	return rc;
}

/* The count a hold of this kind lives in, and its floor. */
static _Atomic uint32_t *fixed_count(uint64_t e, bool pin, uint32_t *floor)
{
	uint64_t idx;
	struct hetmm_pagemap *pgmap = pfn_pagemap(shadow_pfn(e), &idx);
	if (!pgmap || !(pagemap_is_fixed(pgmap) || pagemap_is_coherent(pgmap)))
		return NULL;
	*floor = pin ? 0 : 1;      /* the mapping itself is a reference */
	return pin ? &pgmap->pages[idx].pincount : &pgmap->pages[idx].refcount;
}

int pagemap_fixed_release(uint64_t e, bool pin, bool check_only)
{
	uint32_t floor = 0;
	int rc = -EINVAL;
	pthread_rwlock_rdlock(&sections_lock);
	_Atomic uint32_t *cnt = fixed_count(e, pin, &floor);
	uint32_t v = cnt ? atomic_load(cnt) : 0;
	while (cnt && v > floor) {
		if (check_only ||
		    atomic_compare_exchange_weak(cnt, &v, v - 1)) {
			rc = 0;
			break;
		}
	}
	pthread_rwlock_unlock(&sections_lock);
	return rc;
}

int pagemap_fixed_counts(uint64_t e, uint64_t *refs, uint64_t *pins)
{
	uint32_t floor = 0;
	int rc = -EINVAL;
	pthread_rwlock_rdlock(&sections_lock);
	_Atomic uint32_t *r = fixed_count(e, false, &floor);
	if (r) {
		*refs = atomic_load(r) - 1;
		*pins = atomic_load(fixed_count(e, true, &floor));
		rc = 0;
	}
	pthread_rwlock_unlock(&sections_lock);
	return rc;
}

int hetmm_pagemap_add(struct hetmm_ctx *ctx,
		      const struct hetmm_pagemap_desc *desc,
		      struct hetmm_pagemap **pgmapp)
{
	if (!ctx || !pgmapp)
		return -EINVAL;
	if (ctx_forked(ctx))
		return -ECHILD;
	int rc = check_desc(desc);
	if (rc)
		return rc;
	/* Coherent mappings are swapped by mremap: the events must come. */
	const uint64_t coherent_needs = UFFD_FEATURE_EVENT_UNMAP |
		UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE |
		UFFD_FEATURE_PAGEFAULT_FLAG_WP;
	if (desc->type == HETMM_MEMORY_DEVICE_COHERENT &&
	    (ctx->uffd.features & coherent_needs) != coherent_needs)
		return -EOPNOTSUPP;

	struct hetmm_pagemap *pgmap = calloc(1, sizeof(*pgmap));
	if (!pgmap)
		return -ENOMEM;
	pgmap->ctx = ctx;
	pgmap->type = desc->type;
	pgmap->nr_pages = desc->nr_pages;
	pgmap->ops = desc->ops;
	pgmap->drvdata = desc->drvdata;
	pgmap->owner = desc->owner;
	pgmap->flags = desc->flags;
	pgmap->pages = calloc(desc->nr_pages, sizeof(struct hetmm_page));
	pgmap->free_stack = malloc(desc->nr_pages * sizeof(uint32_t));
	if (!pgmap->pages || !pgmap->free_stack) {
		rc = -ENOMEM;
		goto fail;
	}
	/* Pop order is ascending so that a fresh device hands out
	 * contiguous frames, which the copy paths batch. */
	for (uint64_t i = 0; i < desc->nr_pages; i++)
		pgmap->free_stack[i] = (uint32_t)(desc->nr_pages - 1 - i);
	pgmap->nr_free = desc->nr_pages;
	pthread_mutex_init(&pgmap->free_lock, NULL);

	rc = pagemap_is_fixed(pgmap) ? fixed_check_mapping(ctx, pgmap)
				     : pagemap_register_remap(ctx, pgmap);
	if (rc)
		goto fail_lock;
	rc = section_alloc(pgmap);
	if (rc)
		goto fail_lock;
	if (pagemap_is_fixed(pgmap)) {
		rc = fixed_publish(pgmap);
		if (rc) {
			section_free(pgmap);
			goto fail_lock;
		}
	}

	pthread_mutex_lock(&ctx->lock);
	pgmap->next = ctx->pagemaps;
	ctx->pagemaps = pgmap;
	pthread_mutex_unlock(&ctx->lock);
	*pgmapp = pgmap;
	return 0;

fail_lock:
	pthread_mutex_destroy(&pgmap->free_lock);
fail:
	free(pgmap->pages);
	free(pgmap->free_stack);
	free(pgmap);
	return rc;
}

size_t pagemap_alloc(struct hetmm_pagemap *pgmap, uint32_t *idx, size_t nr)
{
	for (;;) {
		pthread_mutex_lock(&pgmap->free_lock);
		size_t n = MIN(nr, pgmap->nr_free);
		/* Short, with frames on their way back: those count as
		 * free, so wait for them rather than come up short. */
		if (n < nr && atomic_load(&pgmap->nr_leaving)) {
			pthread_mutex_unlock(&pgmap->free_lock);
			sched_yield();
			continue;
		}
		for (size_t i = 0; i < n; i++)
			idx[i] = pgmap->free_stack[--pgmap->nr_free];
		pthread_mutex_unlock(&pgmap->free_lock);
		return n;
	}
}

/* The frame's metadata says free; returns what it said before. */
static struct frame_owner frame_unown(struct hetmm_pagemap *pgmap,
				      uint32_t idx, uint64_t free_flags)
{
	struct hetmm_page *p = &pgmap->pages[idx];
	struct frame_owner was = {
		.owner = atomic_load_explicit(&p->owner, memory_order_relaxed),
		.refcount = atomic_load_explicit(&p->refcount,
						 memory_order_relaxed),
	};
	if (was.owner & HETMM_PAGE_ZERO)
		atomic_fetch_sub(&pgmap->nr_zero, 1);
	atomic_store_explicit(&p->owner, (was.owner & PAGE_STALE) | free_flags,
			      memory_order_relaxed);
	atomic_store_explicit(&p->refcount, 0, memory_order_relaxed);
	return was;
}

/* Put unowned frames back in the pool; left of them were counted by
 * pagemap_leave_begin(). */
static void frames_push(struct hetmm_pagemap *pgmap, const uint32_t *idx,
			size_t nr, size_t left)
{
	if (pgmap->ops->page_free)
		for (size_t i = 0; i < nr; i++)
			pgmap->ops->page_free(pgmap, idx[i]);
	/* Push in reverse so the run pops in its order again: a freed run
	 * is handed out as a run, which the move and copy paths batch. */
	pthread_mutex_lock(&pgmap->free_lock);
	for (size_t i = nr; i-- > 0;)
		pgmap->free_stack[pgmap->nr_free++] = idx[i];
	/* Under the lock, so that the count of free frames never sees one
	 * twice or not at all. */
	atomic_fetch_sub(&pgmap->nr_leaving, left);
	pthread_mutex_unlock(&pgmap->free_lock);
}

void pagemap_free(struct hetmm_pagemap *pgmap, const uint32_t *idx, size_t nr,
		  uint64_t free_flags)
{
	for (size_t i = 0; i < nr; i++)
		frame_unown(pgmap, idx[i], free_flags);
	frames_push(pgmap, idx, nr, 0);
}

struct frame_owner pagemap_leave_begin(struct hetmm_pagemap *pgmap,
				       uint32_t idx, uint64_t free_flags)
{
	atomic_fetch_add(&pgmap->nr_leaving, 1);
	return frame_unown(pgmap, idx, free_flags);
}

void pagemap_leave_done(struct hetmm_pagemap *pgmap, uint32_t idx)
{
	frames_push(pgmap, &idx, 1, 1);
}

void pagemap_leave_undo(struct hetmm_pagemap *pgmap, uint32_t idx,
			struct frame_owner was)
{
	struct hetmm_page *p = &pgmap->pages[idx];
	if (was.owner & HETMM_PAGE_ZERO)
		atomic_fetch_add(&pgmap->nr_zero, 1);
	atomic_store_explicit(&p->refcount, was.refcount, memory_order_relaxed);
	atomic_store_explicit(&p->owner, was.owner, memory_order_relaxed);
	atomic_fetch_sub(&pgmap->nr_leaving, 1);
}

void pagemap_page_written(struct hetmm_pagemap *pgmap, struct hetmm_page *p)
{
	if (atomic_fetch_and(&p->owner, ~(uint64_t)HETMM_PAGE_ZERO) &
	    HETMM_PAGE_ZERO)
		atomic_fetch_sub(&pgmap->nr_zero, 1);
}

int pagemap_get(struct hetmm_pagemap *pgmap)
{
	atomic_fetch_add(&pgmap->users, 1);
	if (atomic_load(&pgmap->dying)) {
		atomic_fetch_sub(&pgmap->users, 1);
		return -ENXIO;
	}
	return 0;
}

void pagemap_put(struct hetmm_pagemap *pgmap)
{
	atomic_fetch_sub(&pgmap->users, 1);
}

/* Is pgmap one of ctx's live pagemaps?  Guards against stale handles. */
static bool pagemap_is_listed(struct hetmm_ctx *ctx,
			      struct hetmm_pagemap *pgmap)
{
	for (struct hetmm_pagemap *p = ctx->pagemaps; p; p = p->next)
		if (p == pgmap)
			return true;
	return false;
}

static bool pagemap_all_free(struct hetmm_pagemap *pgmap)
{
	pthread_mutex_lock(&pgmap->free_lock);
	bool all = pgmap->nr_free == pgmap->nr_pages;
	pthread_mutex_unlock(&pgmap->free_lock);
	return all;
}

static bool coherent_pinned(struct hetmm_pagemap *pgmap)
{
	for (uint64_t i = 0; i < pgmap->nr_pages; i++)
		if (atomic_load(&pgmap->pages[i].pincount) ||
		    atomic_load(&pgmap->pages[i].refcount) > 1)
			return true;
	return false;
}

/* Migrate back every allocated page, in runs of consecutive owners. */
static int pagemap_evacuate(struct hetmm_pagemap *pgmap)
{
	uint64_t deadline = now_ms() + HETMM_REMOVE_PIN_WAIT_MS;
	for (;;) {
		bool resident = false;
		uint64_t i = 0;
		while (i < pgmap->nr_pages) {
			uint64_t o = atomic_load(&pgmap->pages[i].owner);
			if (!(o & HETMM_PAGE_ALLOCATED)) {
				i++;
				continue;
			}
			resident = true;
			uintptr_t start = (uintptr_t)(o & PAGE_MASK);
			uint64_t n = 1;
			while (i + n < pgmap->nr_pages && n < CHUNK_PAGES &&
			       (atomic_load(&pgmap->pages[i + n].owner) &
				PAGE_MASK) == start + n * PAGE_SIZE)
				n++;
			int rc = migrate_back_range(pgmap->ctx, start,
						    start + n * PAGE_SIZE,
						    NULL);
			if (rc < 0 && rc != -ENOENT)
				return rc;
			i += n;
		}
		/* Done when every frame is back in the pool: a page's owner
		 * is cleared just before its frame is pushed, under the
		 * lock, by a thread that may still be in pagemap_free(). */
		if (!resident && pagemap_all_free(pgmap))
			return 0;
		/* Coherent pages held in place are waited for a bounded
		 * time, as fixed pages are. */
		if (pagemap_is_coherent(pgmap) && now_ms() >= deadline &&
		    coherent_pinned(pgmap))
			return -EBUSY;
		/* Pages busy in a racing fault are done on the next pass. */
		sched_yield();
	}
}

int hetmm_pagemap_remove(struct hetmm_pagemap *pgmap)
{
	if (!pgmap)
		return -EINVAL;
	struct hetmm_ctx *ctx = pgmap->ctx;
	if (ctx_forked(ctx))
		return -ECHILD;

	pthread_mutex_lock(&ctx->lock);
	bool listed = pagemap_is_listed(ctx, pgmap);
	bool was_dying = listed && atomic_exchange(&pgmap->dying, true);
	pthread_mutex_unlock(&ctx->lock);
	if (!listed || was_dying)
		return -EINVAL;

	/* No new migrations now; let those in flight finish. */
	while (atomic_load(&pgmap->users))
		sched_yield();

	int rc = pagemap_is_fixed(pgmap) ? fixed_drain(pgmap)
					 : pagemap_evacuate(pgmap);
	if (rc < 0) {
		atomic_store(&pgmap->dying, false);
		return rc;
	}

	pthread_mutex_lock(&ctx->lock);
	for (struct hetmm_pagemap **pp = &ctx->pagemaps; *pp;
	     pp = &(*pp)->next) {
		if (*pp == pgmap) {
			*pp = pgmap->next;
			break;
		}
	}
	pthread_mutex_unlock(&ctx->lock);

	section_free(pgmap);
	pthread_mutex_destroy(&pgmap->free_lock);
	free(pgmap->pages);
	free(pgmap->free_stack);
	free(pgmap);
	return 0;
}

int hetmm_pagemap_get_info(struct hetmm_pagemap *pgmap,
			   struct hetmm_pagemap_info *info)
{
	if (!pgmap || !info)
		return -EINVAL;
	if (ctx_forked(pgmap->ctx))
		return -ECHILD;
	info->type = pgmap->type;
	info->nr_pages = pgmap->nr_pages;
	pthread_mutex_lock(&pgmap->free_lock);
	info->nr_free = pgmap->nr_free + atomic_load(&pgmap->nr_leaving);
	pthread_mutex_unlock(&pgmap->free_lock);
	info->first_pfn.val = HETMM_PFN_DEV | pagemap_pfn(pgmap, 0);
	info->drvdata = pgmap->drvdata;
	info->owner = pgmap->owner;
	return 0;
}
