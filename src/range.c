/* SPDX-License-Identifier: MIT */
/*
 * range.c - the device's view of the process: range fault and snapshot.
 *
 * range_fault() is hmm_range_fault() with HMM_PFN_REQ_FAULT: every page of
 * the range is made present for the access asked for, and each gets an
 * entry a device can use.  Pages on a device whose owner matches the
 * caller's stay where they are and are reported by frame number; pages on
 * any other device come back to system memory first.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "back.h"
#include "compat.h"
#include "ctx.h"
#include "pagemap.h"
#include "range.h"
#include "shadow.h"
#include "vma.h"

static const void *entry_owner(uint64_t e, enum hetmm_memory_type *type)
{
	uint64_t idx;
	struct hetmm_pagemap *pgmap = pfn_pagemap(shadow_pfn(e), &idx);
	if (!pgmap)
		return NULL;
	if (type)
		*type = pgmap->type;
	return pgmap->owner;
}

static bool is_local(uint64_t e, const void *owner)
{
	return shadow_claimable(e) &&
	       entry_owner(e, NULL) == owner;
}

/* Permission check of the whole range, the way a CPU access would fail. */
static int range_check_access(struct hetmm_ctx *ctx, uintptr_t start,
			      uintptr_t end, bool write)
{
	struct vma v;
	for (uintptr_t a = start; a < end; a = v.end) {
		if (vma_find(&ctx->vmaq, a, &v) < 0)
			return -EFAULT;
		if (!(v.flags & VMA_READ))
			return -EFAULT;
		if (write && !(v.flags & VMA_WRITE))
			return -EPERM;
	}
	return 0;
}

/* Bring back every page that sits on a device not owned by owner. */
static int range_repatriate(struct hetmm_ctx *ctx, const void *owner,
			    uintptr_t start, size_t npages)
{
	uint64_t first = addr_to_vpn(start);
	for (size_t i = 0; i < npages;) {
		uint64_t e = shadow_get(&ctx->shadow, first + i);
		/* Coherent pages are CPU pages to a device: used where
		 * they are, as hmm_range_fault() leaves them. */
		if (!(shadow_on_device(e) || shadow_is_busy(e)) || is_local(e, owner) ||
		    shadow_is_coherent(e)) {
			i++;
			continue;
		}
		if (shadow_is_busy(e)) {
			sched_yield();   /* a migration is finishing */
			continue;
		}
		size_t n = 1;
		while (i + n < npages) {
			uint64_t f = shadow_get(&ctx->shadow, first + i + n);
			if (!shadow_on_device(f) || is_local(f, owner) ||
			    shadow_is_coherent(f))
				break;
			n++;
		}
		migrate_back_range(ctx, vpn_to_addr(first + i),
				   vpn_to_addr(first + i + n), NULL);
	}
	return 0;
}

/* Fault in the runs of the range that are not local device pages. */
static int range_populate(struct hetmm_ctx *ctx, const void *owner,
			  uintptr_t start, size_t npages, bool write)
{
	uint64_t first = addr_to_vpn(start);
	for (size_t i = 0; i < npages;) {
		if (is_local(shadow_get(&ctx->shadow, first + i), owner)) {
			i++;
			continue;
		}
		size_t n = 1;
		while (i + n < npages &&
		       !is_local(shadow_get(&ctx->shadow, first + i + n), owner))
			n++;
		if (madvise((void *)vpn_to_addr(first + i), n * PAGE_SIZE,
			    write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ))
			return errno == EINVAL ? -EFAULT : -errno;
		i += n;
	}
	return 0;
}

/*
 * The context hears of munmap, madvise and mremap only in ranges
 * registered with its userfaultfd, so a range a device mirrors must be
 * registered, as migration registers what it moves.  Only private
 * anonymous memory can be; changes to file and shared mappings are not
 * seen, and a device reaching them through a stale entry gets what the
 * kernel has there now, or EFAULT.
 */
static void range_watch(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	struct vma v;
	for (uintptr_t a = start; a < end; a = v.end) {
		if (vma_find(&ctx->vmaq, a, &v) < 0)
			return;
		if (vma_is_private_anon(&v))
			uffd_register(ctx->uffd.fd, a, MIN(v.end, end) - a,
				      UFFDIO_REGISTER_MODE_MISSING |
				      UFFDIO_REGISTER_MODE_WP, NULL);
	}
}

int range_fault(struct hetmm_ctx *ctx, const void *owner, uintptr_t start,
		size_t npages, bool write, uint64_t *entries)
{
	uintptr_t end = start + npages * PAGE_SIZE;
	int rc = range_check_access(ctx, start, end, write);
	if (rc)
		return rc;
	range_watch(ctx, start, end);
	rc = range_repatriate(ctx, owner, start, npages);
	if (rc)
		return rc;
	rc = range_populate(ctx, owner, start, npages, write);
	if (rc)
		return rc;

	uint64_t first = addr_to_vpn(start);
	struct vma v = { 0, 0, 0 };
	uint8_t pflags[CHUNK_PAGES];
	for (size_t i = 0; i < npages; i++) {
		uintptr_t a = vpn_to_addr(first + i);
		if (a >= v.end && vma_find(&ctx->vmaq, a, &v) < 0)
			return -EFAULT;
		if (i % CHUNK_PAGES == 0) {
			rc = vma_page_flags(&ctx->vmaq, a,
					    MIN(npages - i, (size_t)CHUNK_PAGES),
					    pflags);
			if (rc)
				return rc;
		}
		uint64_t e = shadow_get(&ctx->shadow, first + i);
		bool writable = v.flags & VMA_WRITE;
		if (is_local(e, owner)) {
			entries[i] = MENT_VALID | MENT_DEVICE | shadow_pfn(e) |
				     (writable ? MENT_WRITE : 0);
			continue;
		}
		uint8_t pf = pflags[i % CHUNK_PAGES];
		bool wpte = write || (writable && (pf & PG_EXCLUSIVE) &&
				      !(pf & PG_ZERO));
		entries[i] = MENT_VALID | (wpte ? MENT_WRITE : 0);
	}
	STAT_ADD(ctx, mirror_faults, 1);
	return 0;
}

/*
 * As hmm_range_fault() reports it: a device-private page is visible to its
 * own device only (local, with the mapping's permission); to any other it
 * is not present.  Coherent pages are CPU pages, local or remote.
 */
static uint8_t snapshot_device(uint64_t e, const void *owner,
			       const struct vma *v)
{
	enum hetmm_memory_type type = HETMM_MEMORY_DEVICE_PRIVATE;
	const void *o = entry_owner(e, &type);
	bool local = o == owner;
	uint8_t perm = (v->flags & VMA_WRITE) ? HETMM_PROT_WRITE
					      : HETMM_PROT_READ;
	if (type == HETMM_MEMORY_DEVICE_COHERENT)
		return perm | (local ? HETMM_PROT_DEV_COHERENT_LOCAL
				     : HETMM_PROT_DEV_COHERENT_REMOTE);
	return local ? (uint8_t)(perm | HETMM_PROT_DEV_PRIVATE_LOCAL)
		     : HETMM_PROT_NONE;
}

static uint8_t snapshot_system(const struct vma *v, uint8_t pf)
{
	if (!(pf & PG_PRESENT))
		return HETMM_PROT_NONE;
	uint8_t prot = 0;
	if (pf & PG_ZERO)
		prot = HETMM_PROT_ZERO | HETMM_PROT_READ;
	else if ((v->flags & VMA_WRITE) &&
		 ((v->flags & VMA_SHARED) ||
		  ((pf & PG_EXCLUSIVE) && !(pf & PG_FILE))))
		prot = HETMM_PROT_WRITE;   /* a file page in a private mapping
					    * stays read-only until written */
	else
		prot = HETMM_PROT_READ;
	if (pf & PG_HUGE)
		prot |= HETMM_PROT_PMD;
	return prot;
}

int range_snapshot(struct hetmm_ctx *ctx, const void *owner, uintptr_t start,
		   size_t npages, uint8_t *prot)
{
	uint64_t first = addr_to_vpn(start);
	uint8_t pflags[CHUNK_PAGES];
	for (size_t i = 0; i < npages;) {
		uintptr_t a = vpn_to_addr(first + i);
		struct vma v;
		if (vma_find(&ctx->vmaq, a, &v) < 0) {
			/* Unmapped up to the next VMA, or the end. */
			prot[i++] = HETMM_PROT_ERROR;
			continue;
		}
		size_t n = MIN((v.end - a) >> PAGE_SHIFT, npages - i);
		n = MIN(n, (size_t)CHUNK_PAGES);
		bool readable = v.flags & VMA_READ;
		int rc = readable ? vma_page_flags(&ctx->vmaq, a, n, pflags) : 0;
		if (rc)
			return rc;
		for (size_t k = 0; k < n; k++) {
			uint64_t e = shadow_get(&ctx->shadow, first + i + k);
			if (!readable)
				prot[i + k] = HETMM_PROT_ERROR;
			else if (shadow_on_device(e))
				prot[i + k] = snapshot_device(e, owner, &v);
			else
				prot[i + k] = snapshot_system(&v, pflags[k]);
		}
		i += n;
	}
	return 0;
}
