/* SPDX-License-Identifier: MIT */
/*
 * pagemap.h - hot-added device memory: its frame numbers, its per-page
 * metadata and its pool of free frames (the kernel's struct dev_pagemap
 * and struct page).  Hot-add and hot-remove themselves are hotplug.c's.
 */
#ifndef HETMM_PAGEMAP_H
#define HETMM_PAGEMAP_H

#include <pthread.h>
#include <stdatomic.h>

#include "base.h"

/*
 * Metadata of one device page: 16 bytes, half the kernel's struct page.
 * owner holds the page-aligned process address the frame backs; its low
 * bits hold the HETMM_PAGE_* flags.
 */
struct hetmm_page {
	_Atomic uint64_t owner;
	_Atomic uint32_t refcount;
	_Atomic uint32_t pincount;
};

/* In the owner word of a free frame of a remapping pagemap: a page was
 * copied out of it, not moved, and its memory still holds that page.  No
 * page can move into it until it is emptied (migrate.c:
 * frames_empty_stale, before anything moves in; pagemap_free keeps the
 * flag for a frame given back unused).  Never reported. */
#define PAGE_STALE (1u << 11)

/* In the owner word of an allocated coherent frame: the process
 * unmapped its page while the pin API held it.  The frame stays
 * allocated, its bytes where they are, until the last hold is dropped,
 * which frees it (pagemap_unhold).  Never reported. */
#define PAGE_ORPHAN (1u << 10)

/* In the owner word of each frame of a huge device page: PMD_PAGES
 * frames from a PMD-aligned index, given by pagemap_alloc_huge() to a
 * transparent huge page that migrated whole (migrate.c), and backing one
 * PMD-aligned block of the process.  Cleared with the rest of the word
 * when a frame is freed; a block some of whose pages left is no longer
 * huge (pagemap_block_huge).  Never reported as a flag. */
#define PAGE_HUGE (1u << 9)

/* Pagemap number s owns the frame numbers [s << 32, (s << 32) + n). */
#define PFN_SECTION_SHIFT 32
#define PFN_MAX_SECTIONS 256

struct hetmm_pagemap {
	struct hetmm_ctx *ctx;
	struct hetmm_pagemap *next;      /* ctx->pagemaps, under ctx->lock */
	enum hetmm_memory_type type;
	uint64_t nr_pages;
	const struct hetmm_pagemap_ops *ops;
	void *drvdata;
	const void *owner;
	uint32_t flags;                   /* HETMM_PAGEMAP_* */
	uintptr_t remap_base;             /* HETMM_PAGEMAP_REMAP memory */
	struct own_range own;             /* it, as hetmm's (entry.c) */
	unsigned section;
	/* Per-page metadata: an array of nr_pages of system memory, or with
	 * HETMM_PAGEMAP_ALTMAP the device's own first nr_reserved pages
	 * (altmap.c), which are never frames. */
	struct hetmm_page *pages;
	uint64_t nr_reserved;
	struct own_range altmap_own;

	pthread_mutex_t free_lock;
	uint32_t *free_stack;             /* indices, top at nr_free - 1 */
	uint64_t nr_free;
	/* HETMM_PAGEMAP_PLACED instead of the stack: 1 per free frame,
	 * taken by name (pagemap_take). */
	uint8_t *placed_free;
	/* Frames whose pages have left, freed once the fill reading them
	 * is done (fault.c, fault_back_lone): counted free already, and
	 * waited for by an allocation that finds the pool short. */
	_Atomic uint64_t nr_leaving;
	/* Frames flagged HETMM_PAGE_ZERO (counted at the commit that flags
	 * one, uncounted by pagemap_page_written and pagemap_free).  While
	 * there are none, a run coming back needs no look at its metadata
	 * before it moves. */
	_Atomic uint64_t nr_zero;

	atomic_bool dying;                /* hot-remove started */
	atomic_int users;                 /* migrations to it in flight */
	uintptr_t fixed_base;             /* FS_DAX, GENERIC: the mapping */
	_Atomic uint64_t clock_hand;      /* eviction: next frame to look at */
	struct copyq *copyq;              /* asynchronous copies (copy.c) */
	/* The sections of its peers (hetmm_p2pdma_add_peer), a bit each;
	 * changed under ctx->lock, read without it. */
	_Atomic uint64_t peers[PFN_MAX_SECTIONS / 64];
};

static inline bool pagemap_is_placed(const struct hetmm_pagemap *pgmap)
{
	return pgmap->flags & HETMM_PAGEMAP_PLACED;
}

static inline bool pagemap_is_coherent(const struct hetmm_pagemap *pgmap)
{
	return pgmap->type == HETMM_MEMORY_DEVICE_COHERENT;
}

/* Frames of FS_DAX, GENERIC and PCI_P2PDMA pagemaps are CPU memory
 * mapped in place. */
static inline bool pagemap_is_fixed(const struct hetmm_pagemap *pgmap)
{
	return pgmap->type == HETMM_MEMORY_FS_DAX ||
	       pgmap->type == HETMM_MEMORY_GENERIC ||
	       pgmap->type == HETMM_MEMORY_PCI_P2PDMA;
}

/* Does pgmap reach the memory of pagemap number section (its own, or a
 * peer's)? */
static inline bool pagemap_reaches(const struct hetmm_pagemap *pgmap,
				   unsigned section)
{
	return section == pgmap->section ||
	       (atomic_load_explicit(&pgmap->peers[section / 64],
				     memory_order_acquire) >>
		(section % 64) & 1);
}

static inline uint64_t pagemap_pfn(const struct hetmm_pagemap *pgmap,
				   uint64_t index)
{
	return ((uint64_t)pgmap->section << PFN_SECTION_SHIFT) | index;
}

static inline struct hetmm_page *pagemap_page(struct hetmm_pagemap *pgmap,
					      uint64_t idx)
{
	return &pgmap->pages[idx];
}

/* Where frame idx of a remapping pagemap lives in the process. */
static inline uintptr_t pagemap_remap_addr(const struct hetmm_pagemap *pgmap,
					   uint64_t idx)
{
	return pgmap->remap_base + idx * PAGE_SIZE;
}

/* ------------------------------------------------------------------------
 * Frame numbers
 */

/* Internal pfn (number only) to its pagemap and index; NULL if unknown.
 * The caller must keep the pagemap alive (hold a claim on a page of it,
 * or be the handler, which a removal syncs with before it frees). */
struct hetmm_pagemap *pfn_pagemap(uint64_t pfn, uint64_t *index);

/* Is frame pfn one of pgmap's, a pagemap the caller keeps alive?  Its
 * index in *index.  Reads nothing of any other pagemap, so it is safe
 * whatever pfn names, removed or not. */
static inline bool pagemap_has_pfn(const struct hetmm_pagemap *pgmap,
				   uint64_t pfn, uint64_t *index)
{
	uint64_t idx = pfn & ((1ULL << PFN_SECTION_SHIFT) - 1);
	if (pfn >> PFN_SECTION_SHIFT != pgmap->section ||
	    idx >= pgmap->nr_pages)
		return false;
	*index = idx;
	return true;
}

/* Each live section's memory type (0 for none) and owner
 * (hetmm_pagemap_desc.owner), readable without the pagemap: a lookup
 * that holds no claim must not touch a pagemap hot-remove may be
 * freeing. */
extern _Atomic int section_types[PFN_MAX_SECTIONS];
extern _Atomic(const void *) section_owners[PFN_MAX_SECTIONS];

static inline int pagemap_section_type(uint64_t pfn)
{
	uint64_t s = pfn >> PFN_SECTION_SHIFT;
	return s < PFN_MAX_SECTIONS ?
	       atomic_load_explicit(&section_types[s], memory_order_relaxed) :
	       0;
}

/* Is frame pfn in a live section of owner's? */
static inline bool pagemap_section_owned(uint64_t pfn, const void *owner)
{
	return pagemap_section_type(pfn) &&
	       atomic_load_explicit(&section_owners[pfn >> PFN_SECTION_SHIFT],
				    memory_order_relaxed) == owner;
}

/* ------------------------------------------------------------------------
 * Life of a pagemap (for hotplug.c)
 */

/* A pagemap for desc (checked by the caller), with every frame free and
 * no frame number yet; with HETMM_PAGEMAP_ALTMAP, no metadata yet either
 * (altmap_place gives it). */
int pagemap_create(struct hetmm_ctx *ctx,
		   const struct hetmm_pagemap_desc *desc,
		   struct hetmm_pagemap **pgmapp);
/* Give it frame numbers, and take them back. */
int pagemap_section_alloc(struct hetmm_pagemap *pgmap);
void pagemap_section_free(struct hetmm_pagemap *pgmap);
void pagemap_destroy(struct hetmm_pagemap *pgmap);
/* The first frame that can back a page: those before hold metadata. */
static inline uint64_t pagemap_first_frame(const struct hetmm_pagemap *pgmap)
{
	return pgmap->nr_reserved;
}

/* Every frame in the pool: the last page has left. */
bool pagemap_all_free(struct hetmm_pagemap *pgmap);

/* ------------------------------------------------------------------------
 * The frame pool
 */

/* Take up to nr free frames; returns how many, indices into idx[].
 * None from a placed pagemap: its frames are taken by name. */
size_t pagemap_alloc(struct hetmm_pagemap *pgmap, uint32_t *idx, size_t nr);
/* HETMM_PAGEMAP_PLACED: take frame idx by name; false if it is in use
 * (or still leaving). */
bool pagemap_take(struct hetmm_pagemap *pgmap, uint32_t idx);
/* PMD_PAGES consecutive free frames from an index that is a multiple of
 * PMD_PAGES (a huge device page), in idx[], ascending; false, taking
 * nothing, where the pool has no such run (the caller falls back to
 * base pages, as the kernel splits a THP its device cannot hold). */
bool pagemap_alloc_huge(struct hetmm_pagemap *pgmap, uint32_t *idx);
/* Do the PMD_PAGES frames from idx0 all carry PAGE_HUGE (one huge page,
 * none of whose pages has left)? */
bool pagemap_block_huge(struct hetmm_pagemap *pgmap, uint64_t idx0);
/* The same for the block from frame pfn0, for a thread that holds
 * nothing of its pagemap (an entry read unclaimed): false if the frame
 * names no live pagemap.  Looked at under the sections' lock, which a
 * hot-remove takes before it frees the pagemap. */
bool pfn_block_huge(uint64_t pfn0);
/* Give frames back; free_flags is 0, or PAGE_STALE for frames whose
 * memory still holds the page copied out of them. */
void pagemap_free(struct hetmm_pagemap *pgmap, const uint32_t *idx,
		  size_t nr, uint64_t free_flags);
/*
 * A frame whose page leaves before the fill that reads it has run
 * (fault.c, fault_back_lone): begin makes its metadata say free and
 * counts it as free (nr_leaving), keeping it out of the pool; done puts
 * it in the pool; undo, if the page stays, makes it the page's again.
 */
struct frame_owner {
	uint64_t owner;
	uint32_t refcount;
};
struct frame_owner pagemap_leave_begin(struct hetmm_pagemap *pgmap,
				       uint32_t idx, uint64_t free_flags);
void pagemap_leave_done(struct hetmm_pagemap *pgmap, uint32_t idx);
void pagemap_leave_undo(struct hetmm_pagemap *pgmap, uint32_t idx,
			struct frame_owner was);
/* A device write gave the page data: it is no zero page any more.  0,
 * or -ENXIO if p is no live pagemap's, -ECHILD in a fork child. */
int pagemap_page_written(struct hetmm_page *p);
/* Enter/leave a migration to pgmap; enter fails with -ENXIO if dying. */
int pagemap_get(struct hetmm_pagemap *pgmap);
void pagemap_put(struct hetmm_pagemap *pgmap);

/* ------------------------------------------------------------------------
 * Holds on device pages the CPU reaches in place (fixed pagemaps, and
 * coherent pages held where they are): counted in their metadata.
 */

/*
 * A reference (pin false) or pin (pin true) on the page pfn, which *slot
 * names with the entry e.  0, -ENXIO if the pagemap is being removed,
 * -EAGAIN if *slot no longer holds e (look again), -EOPNOTSUPP for a
 * long-term pin of FS_DAX memory, -ENOMEM on overflow.
 */
int pagemap_hold(uint64_t pfn, _Atomic uint64_t *slot, uint64_t e, bool pin,
		 bool longterm);
/* Drop what a hold took; -EINVAL if the page holds none, 1 if that was
 * the last hold of an orphaned frame (PAGE_ORPHAN), now freed. */
int pagemap_unhold(uint64_t pfn, bool pin);
/*
 * The process unmapped the claimed coherent page of frame pfn: orphan
 * the frame if holds keep it (ORPHAN_KEPT); else it is the caller's to
 * drop (ORPHAN_NOT_HELD), unless the last hold was dropped meanwhile and
 * freed it (ORPHAN_FREED).
 */
enum pagemap_orphan { ORPHAN_NOT_HELD, ORPHAN_KEPT, ORPHAN_FREED };
enum pagemap_orphan pagemap_orphan(uint64_t pfn);
/* Is frame pfn still orphaned (not freed by its last release yet)? */
bool pagemap_is_orphan(uint64_t pfn);
/* References and pins held on the page. */
int pagemap_hold_counts(uint64_t pfn, uint64_t *refs, uint64_t *pins);
/* Does the coherent page pfn carry references or pins?  (Looked at under
 * the section lock.) */
bool coherent_page_held(uint64_t pfn);

#endif /* HETMM_PAGEMAP_H */
