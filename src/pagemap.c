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

#include "away.h"
#include "altmap.h"
#include "copy.h"
#include "ctx.h"
#include "entry.h"
#include "pagemap.h"
#include "testhook.h"

static pthread_rwlock_t sections_lock = PTHREAD_RWLOCK_INITIALIZER;
static _Atomic(struct hetmm_pagemap *) sections[PFN_MAX_SECTIONS];
/* Each live section's memory type, readable without the pagemap: a
 * lookup that holds no claim must not touch a pagemap hot-remove may be
 * freeing. */
_Atomic int section_types[PFN_MAX_SECTIONS];
_Atomic(const void *) section_owners[PFN_MAX_SECTIONS];

int hetmm_page_metadata_size(void)
{
	return (int)sizeof(struct hetmm_page);
}

int pagemap_section_alloc(struct hetmm_pagemap *pgmap)
{
	int rc = -ENOSPC;
	away_wrlock(&sections_lock);
	/* Section 0 stays empty so that frame number 0 is never valid. */
	for (unsigned s = 1; s < PFN_MAX_SECTIONS; s++) {
		if (atomic_load(&sections[s]))
			continue;
		pgmap->section = s;
		atomic_store(&section_owners[s], pgmap->owner);
		atomic_store(&section_types[s], (int)pgmap->type);
		atomic_store_explicit(&sections[s], pgmap, memory_order_release);
		rc = 0;
		break;
	}
	pthread_rwlock_unlock(&sections_lock);
	return rc;
}

/* The write lock waits out every call that found the pagemap under the
 * read lock. */
void pagemap_section_free(struct hetmm_pagemap *pgmap)
{
	away_wrlock(&sections_lock);
	atomic_store_explicit(&sections[pgmap->section], NULL,
			      memory_order_release);
	atomic_store(&section_types[pgmap->section], 0);
	atomic_store(&section_owners[pgmap->section], NULL);
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

bool coherent_page_held(uint64_t pfn)
{
	bool held = false;
	uint64_t idx;
	away_rdlock(&sections_lock);
	struct hetmm_pagemap *pgmap = pfn_pagemap(pfn, &idx);
	if (pgmap && pagemap_is_coherent(pgmap)) {
		struct hetmm_page *p = &pgmap->pages[idx];
		held = atomic_load(&p->refcount) > 1 ||
		       atomic_load(&p->pincount);
	}
	pthread_rwlock_unlock(&sections_lock);
	return held;
}

/*
 * The live pagemap that holds device frame pfn, and its index there, with
 * the sections' lock read-held so that it stays (live_frame_unlock());
 * NULL with the lock not held and *rc -ENXIO (no device frame, or its
 * pagemap is gone or going) or -ECHILD (its context's, in a fork child).
 */
static struct hetmm_pagemap *live_frame_lock(hetmm_pfn_t pfn, uint64_t *idx,
					     int *rc)
{
	*rc = -ENXIO;
	if (!(hetmm_pfn_flags(pfn) & HETMM_PFN_DEV))
		return NULL;
	away_rdlock(&sections_lock);
	struct hetmm_pagemap *pgmap = pfn_pagemap(hetmm_pfn_number(pfn), idx);
	if (pgmap && ctx_forked(pgmap->ctx))
		*rc = -ECHILD;
	else if (pgmap && !atomic_load(&pgmap->dying))
		return pgmap;
	pthread_rwlock_unlock(&sections_lock);
	return NULL;
}

static void live_frame_unlock(void)
{
	pthread_rwlock_unlock(&sections_lock);
}

int hetmm_pfn_to_page(hetmm_pfn_t pfn, struct hetmm_page **pagep)
{
	if (!pagep)
		return -EINVAL;
	int rc;
	uint64_t idx;
	struct hetmm_pagemap *pgmap = live_frame_lock(pfn, &idx, &rc);
	if (!pgmap)
		return rc;
	*pagep = &pgmap->pages[idx];
	live_frame_unlock();
	return 0;
}

int hetmm_p2pdma_bus_addr(struct hetmm_pagemap *client, hetmm_pfn_t pfn,
			  uint64_t *addr)
{
	if (!client || !addr)
		return -EINVAL;
	if (ctx_forked(client->ctx))
		return -ECHILD;
	int rc;
	uint64_t idx;
	struct hetmm_pagemap *pgmap = live_frame_lock(pfn, &idx, &rc);
	if (!pgmap)
		return rc;
	if (!pagemap_reaches(client, pgmap->section))
		rc = -EREMOTEIO;
	else if (!pgmap->ops->p2p_bus_addr)
		rc = -EOPNOTSUPP;
	else
		rc = pgmap->ops->p2p_bus_addr(pgmap, idx, addr);
	live_frame_unlock();
	return rc;
}

/* The live pagemap that page is the metadata of, with the sections' lock
 * read-held; NULL and *rc -ENXIO (none) or -ECHILD (in a fork child). */
static struct hetmm_pagemap *page_pagemap_locked(const struct hetmm_page *page,
						 int *rc)
{
	*rc = -ENXIO;
	for (unsigned s = 1; s < PFN_MAX_SECTIONS; s++) {
		struct hetmm_pagemap *pgmap = atomic_load(&sections[s]);
		if (!pgmap || page < pgmap->pages ||
		    page >= pgmap->pages + pgmap->nr_pages)
			continue;
		if (ctx_forked(pgmap->ctx)) {
			*rc = -ECHILD;
			return NULL;
		}
		*rc = 0;
		return pgmap;
	}
	return NULL;
}

int hetmm_page_get_info(const struct hetmm_page *page,
			struct hetmm_page_info *info)
{
	if (!page || !info)
		return -EINVAL;
	int rc;
	away_rdlock(&sections_lock);
	struct hetmm_pagemap *pgmap = page_pagemap_locked(page, &rc);
	if (pgmap) {
		uint64_t owner = atomic_load(&page->owner);
		info->refcount = atomic_load(&page->refcount);
		info->pincount = atomic_load(&page->pincount);
		info->owner = (uintptr_t)(owner & PAGE_MASK);
		info->flags = (uint32_t)(owner & ~PAGE_MASK & ~PAGE_STALE &
				      ~PAGE_ORPHAN & ~PAGE_HUGE);
		info->pagemap = pgmap;
		info->index = (uint64_t)(page - pgmap->pages);
	}
	pthread_rwlock_unlock(&sections_lock);
	return rc;
}

int pagemap_create(struct hetmm_ctx *ctx,
		   const struct hetmm_pagemap_desc *desc,
		   struct hetmm_pagemap **pgmapp)
{
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
	bool altmap = desc->flags & HETMM_PAGEMAP_ALTMAP;
	pgmap->nr_reserved = altmap ? altmap_pages(desc->nr_pages) : 0;
	uint64_t nr_frames = desc->nr_pages - pgmap->nr_reserved;
	if (!altmap)
		pgmap->pages = calloc(desc->nr_pages,
				      sizeof(struct hetmm_page));
	/* Fixed pages are in use from hot-add on: no pool.  Placed frames
	 * are taken by name. */
	bool pool = !pagemap_is_fixed(pgmap);
	if (pool && pagemap_is_placed(pgmap)) {
		pgmap->placed_free = malloc(nr_frames);
		if (pgmap->placed_free)
			memset(pgmap->placed_free, 1, nr_frames);
	} else if (pool) {
		pgmap->free_stack = malloc(nr_frames * sizeof(uint32_t));
	}
	if ((!altmap && !pgmap->pages) ||
	    (pool && !pgmap->free_stack && !pgmap->placed_free)) {
		free(pgmap->pages);
		free(pgmap->free_stack);
		free(pgmap->placed_free);
		free(pgmap);
		return -ENOMEM;
	}
	/* Pop order is ascending so that a fresh device hands out
	 * contiguous frames, which the copy paths batch. */
	for (uint64_t i = 0; pgmap->free_stack && i < nr_frames; i++)
		pgmap->free_stack[i] = (uint32_t)(desc->nr_pages - 1 - i);
	pgmap->nr_free = pool ? nr_frames : 0;
	pthread_mutex_init(&pgmap->free_lock, NULL);
	*pgmapp = pgmap;
	return 0;
}

void pagemap_destroy(struct hetmm_pagemap *pgmap)
{
	pthread_mutex_destroy(&pgmap->free_lock);
	if (!(pgmap->flags & HETMM_PAGEMAP_ALTMAP))
		free(pgmap->pages);
	free(pgmap->free_stack);
	free(pgmap->placed_free);
	free(pgmap);
}

/*
 * Frames in ascending order, in place (a shell sort: no allocation, a
 * chunk's 512 at most).  A range whose frames were freed in pieces, as a
 * partial munmap frees them, gets its frames back as one run when it is
 * freed whole: the pieces pop in the order they were freed, and sorted
 * they are the run again.  A coherent device maps each run of frames as
 * one mapping, so a range is one mapping again, which mremap() needs.
 */
static void frames_sort(uint32_t *idx, size_t n)
{
	size_t i = 1;
	while (i < n && idx[i - 1] < idx[i])
		i++;
	if (i >= n)
		return;   /* the usual case: one freed run, or a fresh device */
	for (size_t gap = n / 2; gap; gap /= 2) {
		for (i = gap; i < n; i++) {
			uint32_t v = idx[i];
			size_t j = i;
			for (; j >= gap && idx[j - gap] > v; j -= gap)
				idx[j] = idx[j - gap];
			idx[j] = v;
		}
	}
}

size_t pagemap_alloc(struct hetmm_pagemap *pgmap, uint32_t *idx, size_t nr)
{
	if (pgmap->placed_free)
		return 0;
	for (;;) {
		away_mutex_lock(&pgmap->free_lock);
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
		frames_sort(idx, n);
		return n;
	}
}

bool pagemap_take(struct hetmm_pagemap *pgmap, uint32_t idx)
{
	away_mutex_lock(&pgmap->free_lock);
	bool free = pgmap->placed_free[idx];
	if (free) {
		pgmap->placed_free[idx] = 0;
		pgmap->nr_free--;
	}
	pthread_mutex_unlock(&pgmap->free_lock);
	return free;
}

/* Is there a huge run whose head sits at free_stack[top]: the next
 * PMD_PAGES - 1 entries down the stack the frames that follow it? */
static bool stack_run_at(const struct hetmm_pagemap *pgmap, size_t top)
{
	uint32_t head = pgmap->free_stack[top];
	if (head % PMD_PAGES || top + 1 < PMD_PAGES)
		return false;
	for (size_t k = 1; k < PMD_PAGES; k++)
		if (pgmap->free_stack[top - k] != head + k)
			return false;
	return true;
}

/*
 * A freed run sits on the stack in its order (frames_push), so a huge
 * page's frames are found as one: a look at each aligned frame number on
 * the stack, O(free frames) in the worst case, like the kernel's search
 * of its buddy lists for an order-9 block.
 */
bool pagemap_alloc_huge(struct hetmm_pagemap *pgmap, uint32_t *idx)
{
	bool found = false;
	if (!pgmap->free_stack)
		return false;   /* HETMM_PAGEMAP_PLACED: frames by name */
	away_mutex_lock(&pgmap->free_lock);
	for (size_t top = pgmap->nr_free; top-- > 0 && !found;) {
		if (!stack_run_at(pgmap, top))
			continue;
		size_t low = top + 1 - PMD_PAGES;
		for (size_t k = 0; k < PMD_PAGES; k++)
			idx[k] = pgmap->free_stack[top - k];
		memmove(&pgmap->free_stack[low], &pgmap->free_stack[top + 1],
			(pgmap->nr_free - top - 1) * sizeof(uint32_t));
		pgmap->nr_free -= PMD_PAGES;
		found = true;
	}
	pthread_mutex_unlock(&pgmap->free_lock);
	return found;
}

bool pagemap_block_huge(struct hetmm_pagemap *pgmap, uint64_t idx0)
{
	if (idx0 % PMD_PAGES || idx0 + PMD_PAGES > pgmap->nr_pages)
		return false;
	for (size_t k = 0; k < PMD_PAGES; k++)
		if (!(atomic_load_explicit(&pgmap->pages[idx0 + k].owner,
					   memory_order_relaxed) & PAGE_HUGE))
			return false;
	return true;
}

bool pfn_block_huge(uint64_t pfn0)
{
	uint64_t idx0;
	bool huge = false;
	away_rdlock(&sections_lock);
	struct hetmm_pagemap *pgmap = pfn_pagemap(pfn0, &idx0);
	if (pgmap) {
		TEST_HOOK(TEST_HOOK_PAGEMAP_LOOK, (uintptr_t)pfn0, PMD_PAGES);
		huge = pagemap_block_huge(pgmap, idx0);
	}
	pthread_rwlock_unlock(&sections_lock);
	return huge;
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
	if (pgmap->ops->page_free) {
		away_begin();   /* a driver's op: see notifier_call */
		for (size_t i = 0; i < nr; i++)
			pgmap->ops->page_free(pgmap, idx[i]);
		away_end();
	}
	/* Push in reverse so the run pops in its order again: a freed run
	 * is handed out as a run, which the move and copy paths batch. */
	away_mutex_lock(&pgmap->free_lock);
	for (size_t i = nr; i-- > 0;) {
		if (pgmap->placed_free)
			pgmap->placed_free[idx[i]] = 1;
		else
			pgmap->free_stack[pgmap->nr_free] = idx[i];
		pgmap->nr_free++;
	}
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

/* Under the sections' lock: a hot-remove frees neither the metadata
 * nor the count meanwhile. */
int pagemap_page_written(struct hetmm_page *p)
{
	int rc;
	away_rdlock(&sections_lock);
	struct hetmm_pagemap *pgmap = page_pagemap_locked(p, &rc);
	if (pgmap) {
		uint64_t idx = (uint64_t)(p - pgmap->pages);
		TEST_HOOK(TEST_HOOK_PAGEMAP_LOOK,
			  (uintptr_t)pagemap_pfn(pgmap, idx), 1);
		if (atomic_fetch_and(&p->owner, ~(uint64_t)HETMM_PAGE_ZERO) &
		    HETMM_PAGE_ZERO)
			atomic_fetch_sub(&pgmap->nr_zero, 1);
	}
	pthread_rwlock_unlock(&sections_lock);
	return rc;
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

bool pagemap_all_free(struct hetmm_pagemap *pgmap)
{
	away_mutex_lock(&pgmap->free_lock);
	bool all = pgmap->nr_free == pgmap->nr_pages - pgmap->nr_reserved;
	pthread_mutex_unlock(&pgmap->free_lock);
	return all;
}

int pagemap_hold(uint64_t pfn, _Atomic uint64_t *slot, uint64_t e, bool pin,
		 bool longterm)
{
	uint64_t idx;
	int rc = -EAGAIN;
	away_rdlock(&sections_lock);
	struct hetmm_pagemap *pgmap = pfn_pagemap(pfn, &idx);
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
static _Atomic uint32_t *hold_count(uint64_t pfn, bool pin, uint32_t *floor)
{
	uint64_t idx;
	struct hetmm_pagemap *pgmap = pfn_pagemap(pfn, &idx);
	if (!pgmap || !(pagemap_is_fixed(pgmap) || pagemap_is_coherent(pgmap)))
		return NULL;
	*floor = pin ? 0 : 1;      /* the mapping itself is a reference */
	return pin ? &pgmap->pages[idx].pincount : &pgmap->pages[idx].refcount;
}

/* No hold left on p beyond the mapping's own reference. */
static bool page_unheld(struct hetmm_page *p)
{
	return atomic_load(&p->refcount) <= 1 && !atomic_load(&p->pincount);
}

/* Take the orphan mark off p: true for the one caller that did. */
static bool orphan_take(struct hetmm_page *p)
{
	return atomic_fetch_and(&p->owner, ~(uint64_t)PAGE_ORPHAN) &
	       PAGE_ORPHAN;
}

int pagemap_unhold(uint64_t pfn, bool pin)
{
	uint32_t floor = 0;
	int rc = -EINVAL;
	away_rdlock(&sections_lock);
	_Atomic uint32_t *cnt = hold_count(pfn, pin, &floor);
	uint32_t v = cnt ? atomic_load(cnt) : 0;
	while (cnt && v > floor) {
		if (atomic_compare_exchange_weak(cnt, &v, v - 1)) {
			rc = 0;
			break;
		}
	}
	/* The last hold of a page the process unmapped: the frame is
	 * free now, as the kernel frees a pinned page at the last unpin. */
	uint64_t idx;
	struct hetmm_pagemap *pgmap = rc == 0 ? pfn_pagemap(pfn, &idx) : NULL;
	if (pgmap && (atomic_load(&pgmap->pages[idx].owner) & PAGE_ORPHAN) &&
	    page_unheld(&pgmap->pages[idx]) &&
	    orphan_take(&pgmap->pages[idx])) {
		uint32_t i = (uint32_t)idx;
		pagemap_free(pgmap, &i, 1, 0);
		rc = 1;
	}
	pthread_rwlock_unlock(&sections_lock);
	return rc;
}

/*
 * A hold raises its count and then looks at the entry (pagemap_hold);
 * the caller claimed the entry before this.  Our mark goes on before we
 * look at the counts, a last release drops its count before it looks at
 * the mark: one of the two sees the other, and orphan_take() makes sure
 * only one of us frees the frame.
 */
enum pagemap_orphan pagemap_orphan(uint64_t pfn)
{
	enum pagemap_orphan r = ORPHAN_NOT_HELD;
	uint64_t idx;
	away_rdlock(&sections_lock);
	struct hetmm_pagemap *pgmap = pfn_pagemap(pfn, &idx);
	if (pgmap && pagemap_is_coherent(pgmap)) {
		struct hetmm_page *p = &pgmap->pages[idx];
		atomic_fetch_or(&p->owner, PAGE_ORPHAN);
		if (!page_unheld(p))
			r = ORPHAN_KEPT;
		else
			r = orphan_take(p) ? ORPHAN_NOT_HELD : ORPHAN_FREED;
	}
	pthread_rwlock_unlock(&sections_lock);
	return r;
}

bool pagemap_is_orphan(uint64_t pfn)
{
	uint64_t idx;
	bool orphan = false;
	away_rdlock(&sections_lock);
	struct hetmm_pagemap *pgmap = pfn_pagemap(pfn, &idx);
	if (pgmap)
		orphan = atomic_load(&pgmap->pages[idx].owner) & PAGE_ORPHAN;
	pthread_rwlock_unlock(&sections_lock);
	return orphan;
}

int pagemap_hold_counts(uint64_t pfn, uint64_t *refs, uint64_t *pins)
{
	uint32_t floor = 0;
	int rc = -EINVAL;
	away_rdlock(&sections_lock);
	_Atomic uint32_t *r = hold_count(pfn, false, &floor);
	if (r) {
		uint32_t v = atomic_load(r);
		*refs = v > floor ? v - floor : 0;   /* a frame being freed */
		*pins = atomic_load(hold_count(pfn, true, &floor));
		rc = 0;
	}
	pthread_rwlock_unlock(&sections_lock);
	return rc;
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
	info->nr_reserved = pgmap->nr_reserved;
	away_mutex_lock(&pgmap->free_lock);
	info->nr_free = pgmap->nr_free + atomic_load(&pgmap->nr_leaving);
	pthread_mutex_unlock(&pgmap->free_lock);
	info->first_pfn.val = HETMM_PFN_DEV | pagemap_pfn(pgmap, 0);
	info->drvdata = pgmap->drvdata;
	info->owner = pgmap->owner;
	info->copy_staging = copyq_staging(pgmap, &info->copy_staging_len);
	return 0;
}

void *hetmm_pagemap_drvdata(const struct hetmm_pagemap *pgmap)
{
	return pgmap ? pgmap->drvdata : NULL;
}
