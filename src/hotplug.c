/* SPDX-License-Identifier: MIT */
/*
 * hotplug.c - hot-add and hot-remove of device memory (the kernel's
 * memremap_pages and memunmap_pages).
 *
 * Hot-add checks what the driver describes, gives the pagemap its frame
 * numbers and, for memory the CPU uses in place, its pages' entries.
 * Hot-remove refuses new migrations, lets those in flight finish, brings
 * every page home (or waits a bounded time for the pins on pages that
 * can't move), and only then frees the metadata.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>

#include "altmap.h"
#include "back.h"
#include "compat.h"
#include "copy.h"
#include "ctx.h"
#include "entry.h"
#include "fault.h"
#include "fixed.h"
#include "hotplug.h"
#include "order.h"
#include "pagemap.h"

static bool type_is_valid(enum hetmm_memory_type type)
{
	return type >= HETMM_MEMORY_DEVICE_PRIVATE &&
	       type <= HETMM_MEMORY_PCI_P2PDMA;
}

/* Metadata inside the device: memory the CPU addresses, big enough to
 * hold its own metadata and a frame besides. */
static int check_altmap(const struct hetmm_pagemap_desc *d)
{
	if (!(d->flags & HETMM_PAGEMAP_ALTMAP))
		return 0;
	if (d->type != HETMM_MEMORY_FS_DAX && d->type != HETMM_MEMORY_GENERIC &&
	    d->type != HETMM_MEMORY_DEVICE_COHERENT)
		return -EINVAL;
	return altmap_pages(d->nr_pages) < d->nr_pages ? 0 : -ENOSPC;
}

static int check_desc(const struct hetmm_pagemap_desc *d)
{
	if (!d || !d->ops || !type_is_valid(d->type))
		return -EINVAL;
	if (d->nr_pages == 0 || d->nr_pages > (1ULL << PFN_SECTION_SHIFT))
		return -EINVAL;
	/* CPU memory mapped in place: an address, no copies, no policy. */
	if (d->type == HETMM_MEMORY_FS_DAX || d->type == HETMM_MEMORY_GENERIC ||
	    d->type == HETMM_MEMORY_PCI_P2PDMA)
		return !d->ops->page_address ||
		       (d->flags & ~(HETMM_PAGEMAP_MANAGED |
				     HETMM_PAGEMAP_ALTMAP)) ? -EINVAL :
		       check_altmap(d);
	/* One pair of copy ops: synchronous or asynchronous. */
	bool sync = d->ops->copy_to_device && d->ops->copy_from_device;
	bool async = d->ops->submit_to_device && d->ops->submit_from_device;
	if (sync == async || (!async && (d->ops->submit_to_device ||
					 d->ops->submit_from_device)) ||
	    (!sync && (d->ops->copy_to_device || d->ops->copy_from_device)))
		return -EINVAL;
	if (d->queue_depth > HETMM_COPY_DEPTH_MAX ||
	    (sync && (d->queue_depth || d->copy_timeout_ms)))
		return -EINVAL;
	if (d->flags & ~(HETMM_PAGEMAP_REMAP | HETMM_PAGEMAP_EVICT |
			 HETMM_PAGEMAP_MANAGED | HETMM_PAGEMAP_ALTMAP |
			 HETMM_PAGEMAP_PLACED))
		return -EINVAL;
	/* Placed frames have homes: nothing else hands them out. */
	if ((d->flags & HETMM_PAGEMAP_PLACED) &&
	    (d->type != HETMM_MEMORY_DEVICE_PRIVATE ||
	     (d->flags & (HETMM_PAGEMAP_REMAP | HETMM_PAGEMAP_EVICT))))
		return -EINVAL;
	int rc = check_altmap(d);
	if (rc)
		return rc;
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

/* A coherent device's own view of its memory, through which hetmm zeroes
 * and copies its pages, with no failure to fall back on: refused without
 * an address for its first or last page (hetmm.h: every page has one). */
static int check_coherent_view(struct hetmm_pagemap *pgmap)
{
	if (!pagemap_is_coherent(pgmap))
		return 0;
	return pgmap->ops->page_address(pgmap, 0) &&
	       pgmap->ops->page_address(pgmap, pgmap->nr_pages - 1) ?
	       0 : -EINVAL;
}

/* Undo pagemap_register_remap(). */
static void pagemap_unregister_remap(struct hetmm_ctx *ctx,
				     struct hetmm_pagemap *pgmap)
{
	if ((pgmap->flags & HETMM_PAGEMAP_REMAP) && ctx->frames.fd >= 0)
		uffd_unregister(ctx->frames.fd, pgmap->remap_base,
				pgmap->nr_pages * PAGE_SIZE);
}

int hetmm_pagemap_add(struct hetmm_ctx *ctx,
		      const struct hetmm_pagemap_desc *desc,
		      struct hetmm_pagemap **pgmapp)
{
	int rc = entry_ctx(ctx);
	if (rc)
		return rc;
	if (!pgmapp)
		return -EINVAL;
	rc = check_desc(desc);
	if (rc)
		return rc;
	/* Coherent mappings are swapped by mremap: the events must come. */
	const uint64_t coherent_needs = UFFD_FEATURE_EVENT_UNMAP |
		UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE |
		UFFD_FEATURE_PAGEFAULT_FLAG_WP;
	if (desc->type == HETMM_MEMORY_DEVICE_COHERENT &&
	    (ctx->uffd.features & coherent_needs) != coherent_needs)
		return -EOPNOTSUPP;
	/* Placed pages come back write-protected, to be told clean. */
	if ((desc->flags & HETMM_PAGEMAP_PLACED) &&
	    !(ctx->uffd.features & UFFD_FEATURE_PAGEFAULT_FLAG_WP))
		return -EOPNOTSUPP;

	struct hetmm_pagemap *pgmap;
	rc = pagemap_create(ctx, desc, &pgmap);
	if (rc)
		return rc;
	rc = pagemap_is_fixed(pgmap) ? fixed_check_mapping(ctx, pgmap)
				     : pagemap_register_remap(ctx, pgmap);
	if (!rc)
		rc = check_coherent_view(pgmap);
	if (!rc && (pgmap->flags & HETMM_PAGEMAP_ALTMAP))
		rc = altmap_place(ctx, pgmap);
	if (rc)
		goto fail;
	rc = copyq_create(ctx, pgmap, desc->queue_depth, desc->copy_timeout_ms);
	if (rc)
		goto fail_registered;
	rc = pagemap_section_alloc(pgmap);
	if (rc)
		goto fail_registered;
	if (pagemap_is_fixed(pgmap)) {
		rc = fixed_publish(pgmap);
		if (rc) {
			pagemap_section_free(pgmap);
			goto fail;
		}
	}

	/* Memory hetmm moves pages into is its own from now on. */
	if (pgmap->flags & HETMM_PAGEMAP_REMAP)
		entry_own(ctx, &pgmap->own, (void *)pgmap->remap_base,
			  pgmap->nr_pages * PAGE_SIZE);
	pthread_mutex_lock(&ctx->lock);
	pgmap->next = ctx->pagemaps;
	ctx->pagemaps = pgmap;
	pthread_mutex_unlock(&ctx->lock);
	*pgmapp = pgmap;
	return 0;

fail_registered:
	copyq_destroy(ctx, pgmap);
	pagemap_unregister_remap(ctx, pgmap);
fail:
	altmap_release(ctx, pgmap);
	pagemap_destroy(pgmap);
	return rc;
}

/* Mark section a peer of pgmap's, or not; under ctx->lock. */
static void peer_set(struct hetmm_pagemap *pgmap, unsigned section, bool on)
{
	uint64_t bit = 1ULL << (section % 64);
	if (on)
		atomic_fetch_or(&pgmap->peers[section / 64], bit);
	else
		atomic_fetch_and(&pgmap->peers[section / 64], ~bit);
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
	uint64_t deadline = monotonic_ms() + HETMM_REMOVE_PIN_WAIT_MS;
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
			/* -EIO: the driver could not give a page back; it
			 * stays, and so does the pagemap. */
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
		if (pagemap_is_coherent(pgmap) && monotonic_ms() >= deadline &&
		    coherent_pinned(pgmap))
			return -EBUSY;
		/* Pages busy in a racing fault are done on the next pass. */
		sched_yield();
	}
}

int hotplug_remove(struct hetmm_pagemap *pgmap)
{
	struct hetmm_ctx *ctx = pgmap->ctx;
	int rc;

	pthread_mutex_lock(&ctx->lock);
	bool was_dying = atomic_exchange(&pgmap->dying, true);
	pthread_mutex_unlock(&ctx->lock);
	if (was_dying)
		return -EINVAL;

	/* No new migrations now; let those in flight finish. */
	while (atomic_load(&pgmap->users))
		sched_yield();
	/* munmap returns once its UNMAP is read, not handled: pages the
	 * process unmapped just before are not its own any more, and must
	 * not be brought back (from a device that may be dead, for -EIO)
	 * as if they were resident.  After a sync every event read before
	 * is handled.  (The handler itself can't wait for itself; a driver
	 * removing its pagemap from a callback on it gets no sync.) */
	if (!fault_on_handler(ctx))
		handler_sync(ctx);

	rc = pagemap_is_fixed(pgmap) ? fixed_drain(pgmap)
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
	/* Its section may be another pagemap's next: no peer of anyone. */
	for (struct hetmm_pagemap *p = ctx->pagemaps; p; p = p->next)
		peer_set(p, pgmap->section, false);
	pthread_mutex_unlock(&ctx->lock);

	/* Its frame numbers name nothing from now on, and the threads
	 * that looked it up under the sections' lock, holding nothing of
	 * it (a range fault: pfn_block_huge), are done with it once this
	 * returns.  The handler may still be looking at it through one it
	 * read before, in a shadow entry someone else held (a fault on a
	 * page this removal was bringing back: claimed_to_device,
	 * frame_prefetch): a sync waits until it is done with the message
	 * it is on, and every later look finds no pagemap. */
	pagemap_section_free(pgmap);
	if (!fault_on_handler(ctx))
		handler_sync(ctx);

	/* The memory is the driver's again, registered nowhere. */
	if (pgmap->flags & HETMM_PAGEMAP_REMAP) {
		pagemap_unregister_remap(ctx, pgmap);
		entry_disown(ctx, &pgmap->own);
	}
	copyq_destroy(ctx, pgmap);
	altmap_release(ctx, pgmap);
	pagemap_destroy(pgmap);
	return 0;
}

/*
 * A handle the caller may remove: a live pagemap of a live context (the
 * context is checked first; a pagemap hetmm freed is no longer listed in
 * any, which hetmm_ctx_destroy and a removal leave true).
 */
static int removable(struct hetmm_pagemap *pgmap)
{
	if (!pgmap)
		return -EINVAL;
	struct hetmm_ctx *ctx = pgmap->ctx;
	int rc = entry_ctx(ctx);
	if (rc)
		return rc;
	pthread_mutex_lock(&ctx->lock);
	bool listed = pagemap_is_listed(ctx, pgmap);
	pthread_mutex_unlock(&ctx->lock);
	return listed ? 0 : -EINVAL;
}

int hetmm_pagemap_remove(struct hetmm_pagemap *pgmap)
{
	int rc = removable(pgmap);
	if (rc)
		return rc;
	if (pgmap->flags & HETMM_PAGEMAP_MANAGED)
		return -EBUSY;
	return hotplug_remove(pgmap);
}

int hetmm_pagemap_remove_managed(struct hetmm_pagemap *pgmap,
				 const void *owner)
{
	int rc = removable(pgmap);
	if (rc)
		return rc;
	if (!(pgmap->flags & HETMM_PAGEMAP_MANAGED))
		return -EINVAL;
	if (pgmap->owner != owner)
		return -EPERM;
	return hotplug_remove(pgmap);
}

/* Declare a and b peers of each other, or no longer (on). */
static int peers_set(struct hetmm_pagemap *a, struct hetmm_pagemap *b,
		     bool on)
{
	if (!a || !b || a == b)
		return -EINVAL;
	struct hetmm_ctx *ctx = a->ctx;
	int rc = entry_ctx(ctx);
	if (rc)
		return rc;
	/* Both listed in a's context: both live, one context. */
	pthread_mutex_lock(&ctx->lock);
	if (!pagemap_is_listed(ctx, a) || !pagemap_is_listed(ctx, b) ||
	    atomic_load(&a->dying) || atomic_load(&b->dying))
		rc = -EINVAL;
	else if (!on && !pagemap_reaches(a, b->section))
		rc = -ENOENT;
	if (!rc) {
		peer_set(a, b->section, on);
		peer_set(b, a->section, on);
	}
	pthread_mutex_unlock(&ctx->lock);
	return rc;
}

int hetmm_p2pdma_add_peer(struct hetmm_pagemap *a, struct hetmm_pagemap *b)
{
	return peers_set(a, b, true);
}

int hetmm_p2pdma_remove_peer(struct hetmm_pagemap *a,
			     struct hetmm_pagemap *b)
{
	return peers_set(a, b, false);
}
