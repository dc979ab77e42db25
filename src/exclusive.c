/* SPDX-License-Identifier: MIT */
/*
 * exclusive.c - exclusive device access: hetmm_make_device_exclusive(),
 * the kernel's make_device_exclusive().
 *
 * The kernel swaps the PTEs for device-exclusive entries; hetmm revokes
 * the CPU mapping the one way userspace can: the pages go into the custody
 * of a DEVICE_PRIVATE pagemap (a migration, so they leave the CPU page
 * tables with their bytes), and their frames are marked
 * HETMM_PAGE_EXCLUSIVE.  Any CPU access, read or write, is then a
 * userfaultfd fault that brings the page back, and the migration back
 * tells the notifiers HETMM_EVENT_EXCLUSIVE since the frame is marked
 * (migrate.c); the mark goes with the frame when it is freed.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>

#include "back.h"
#include "ctx.h"
#include "entry.h"
#include "fault.h"
#include "notifier.h"
#include "pagemap.h"
#include "shadow.h"
#include "vma.h"

/* Retries of the mark step when a CPU access takes pages back under it. */
#define EXCL_RETRIES 16

/*
 * The mapping must allow the device's read-modify-write, as the kernel
 * asks for a writable page: -EFAULT if inaccessible, -EPERM if not
 * writable or not private anonymous (nothing to take custody of).
 */
static int excl_check_access(struct hetmm_ctx *ctx, uintptr_t start,
			     uintptr_t end)
{
	int why;
	size_t ok = vma_accessible(&ctx->vmaq, start, end,
				   VMA_READ | VMA_WRITE | VMA_NEED_ANON, &why);
	return ok == end - start ? 0 : why;
}

/* Pages on another device come back first: the kernel's exclusive
 * entries are for system pages. */
static void excl_repatriate(struct hetmm_ctx *ctx, struct hetmm_pagemap *pg,
			    uint64_t vpn, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		uint64_t e = shadow_get(&ctx->shadow, vpn + i);
		uint64_t idx;
		if (shadow_on_device(e) &&
		    !pagemap_has_pfn(pg, shadow_pfn(e), &idx))
			migrate_back_range(ctx, vpn_to_addr(vpn + i),
					   vpn_to_addr(vpn + i + 1), NULL);
	}
}

/*
 * Every page must be on pg, unclaimed: mark its frame.  -EAGAIN if a CPU
 * access took one back.  The frame is marked before the shadow entry is
 * looked at again, and a fault claims the entry before it looks at the
 * mark: either we see its claim, or it sees the mark and tells the
 * notifiers HETMM_EVENT_EXCLUSIVE, which moves the sequence the caller
 * checks before it maps the frames.
 */
static int excl_mark(struct hetmm_ctx *ctx, struct hetmm_pagemap *pg,
		     uint64_t vpn, uint64_t n, hetmm_pfn_t *pfns)
{
	atomic_store_explicit(&ctx->exclusive_used, true, memory_order_release);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t e = shadow_get(&ctx->shadow, vpn + i);
		uint64_t idx;
		if (!shadow_claimable(e) ||
		    !pagemap_has_pfn(pg, shadow_pfn(e), &idx))
			return -EAGAIN;
		atomic_fetch_or(&pg->pages[idx].owner,
				(uint64_t)HETMM_PAGE_EXCLUSIVE);
		if (shadow_get(&ctx->shadow, vpn + i) != e)
			return -EAGAIN;
		pfns[i].val = HETMM_PFN_DEV | shadow_pfn(e);
	}
	return 0;
}

int hetmm_make_device_exclusive(struct hetmm_pagemap *pgmap,
				struct hetmm_notifier *n, void *addr,
				uint64_t npages, hetmm_pfn_t *pfns,
				uint64_t *seq)
{
	if (!pgmap || !n || !pfns || !seq || !npages ||
	    npages > (SIZE_MAX >> PAGE_SHIFT))
		return -EINVAL;
	int rc = check_user_range(addr, npages << PAGE_SHIFT);
	if (rc)
		return rc;
	struct hetmm_ctx *ctx = notifier_ctx(n);
	uintptr_t start = (uintptr_t)addr, end = start + npages * PAGE_SIZE;
	if (pgmap->ctx != ctx || !notifier_covers(n, start, end))
		return -EINVAL;
	rc = entry_user_range(ctx, addr, npages << PAGE_SHIFT);
	if (rc)
		return rc;
	if (fault_on_handler(ctx))
		return -EDEADLK;
	if (pgmap->type != HETMM_MEMORY_DEVICE_PRIVATE)
		return -EOPNOTSUPP;

	uint64_t vpn = addr_to_vpn(start);
	for (int tries = 0; tries < EXCL_RETRIES; tries++) {
		rc = excl_check_access(ctx, start, end);
		if (rc)
			return rc;
		excl_repatriate(ctx, pgmap, vpn, npages);
		rc = hetmm_migrate_to_device(pgmap, addr, npages * PAGE_SIZE,
					     NULL);
		/* -ENOENT: all there already, or none could move (the
		 * mark below tells which); -EINVAL: unmapped meanwhile
		 * (the check above tells, next time round). */
		if (rc == -ENOMEM || rc == -ENXIO || rc == -ECHILD)
			return rc;
		uint64_t s;
		rc = hetmm_notifier_read_begin(n, &s);
		if (rc)
			return rc;
		rc = excl_mark(ctx, pgmap, vpn, npages, pfns);
		if (!rc) {
			*seq = s;
			return 0;
		}
		if (rc != -EAGAIN)
			return rc;
		sched_yield();
	}
	return -EBUSY;
}
