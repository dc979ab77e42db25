/* SPDX-License-Identifier: MIT */
/*
 * ctx.c - contexts: a userfaultfd, its handler, the shadow of where each
 * process page lives, and the pagemaps, devices and mirrors that hang off
 * it.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "compat.h"
#include "internal.h"

/* What the context asks of UFFDIO_API; it runs with what is offered. */
#define CTX_WANTED_FEATURES \
	(UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_THREAD_ID | \
	 UFFD_FEATURE_MOVE | UFFD_FEATURE_EVENT_UNMAP | \
	 UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_REMAP)

#define DEFAULT_FAULT_AROUND FAULT_AROUND_MAX

static int check_params(const struct hetmm_ctx_params *p)
{
	if (!p)
		return 0;
	if (p->flags || p->fault_around_max > FAULT_AROUND_MAX)
		return -EINVAL;
	return 0;
}

/* A fork must not wait behind a stream of migrations: writers first. */
static void fork_lock_init(pthread_rwlock_t *l)
{
	pthread_rwlockattr_t a;
	pthread_rwlockattr_init(&a);
	pthread_rwlockattr_setkind_np(&a,
			PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(l, &a);
	pthread_rwlockattr_destroy(&a);
}

static void *map_pages(size_t npages, int prot)
{
	void *p = mmap(NULL, npages * PAGE_SIZE, prot,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

/* Without a second userfaultfd pages are copied to devices, not moved. */
static void open_frames_uffd(struct hetmm_ctx *ctx)
{
	if (uffd_open(&ctx->frames, UFFD_FEATURE_MOVE) == 0 &&
	    !(ctx->frames.features & UFFD_FEATURE_MOVE))
		uffd_close(&ctx->frames);
}

/* Teardown order matters: once the handler is gone, nothing registered
 * may be unmapped until the userfaultfd is closed (see fault.c). */
static void ctx_free(struct hetmm_ctx *ctx)
{
	lifecycle_unregister(ctx);
	fault_handler_stop(ctx);
	uffd_close(&ctx->uffd);
	uffd_close(&ctx->frames);
	if (ctx->doorbell)
		munmap(ctx->doorbell, PAGE_SIZE);
	if (ctx->sync_pages)
		munmap(ctx->sync_pages, MAX_MIGRATORS * PAGE_SIZE);
	vmaq_close(&ctx->vmaq);
	vtab_destroy(&ctx->shadow);
	if (ctx->zero_src)
		munmap(ctx->zero_src, CHUNK_PAGES * PAGE_SIZE);
	if (ctx->fault_staging)
		munmap(ctx->fault_staging, CHUNK_PAGES * PAGE_SIZE);
	free(ctx->fault_claims);
	pthread_mutex_destroy(&ctx->lock);
	pthread_rwlock_destroy(&ctx->notifiers_lock);
	pthread_rwlock_destroy(&ctx->fork_lock);
	free(ctx);
}

int hetmm_ctx_create(struct hetmm_ctx **ctxp,
		     const struct hetmm_ctx_params *params)
{
	if (!ctxp)
		return -EINVAL;
	int rc = check_params(params);
	if (rc)
		return rc;

	struct hetmm_ctx *ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;
	ctx->uffd.fd = ctx->frames.fd = -1;
	ctx->vmaq.maps_fd = ctx->vmaq.pagemap_fd = -1;
	ctx->fault_around_max = params && params->fault_around_max ?
				params->fault_around_max : DEFAULT_FAULT_AROUND;
	vtab_init(&ctx->shadow);
	pthread_mutex_init(&ctx->lock, NULL);
	pthread_rwlock_init(&ctx->notifiers_lock, NULL);
	fork_lock_init(&ctx->fork_lock);

	/* Everything the fault path needs is allocated here, not there. */
	ctx->zero_src = map_pages(CHUNK_PAGES, PROT_READ);
	ctx->fault_staging = map_pages(CHUNK_PAGES, PROT_READ | PROT_WRITE);
	ctx->fault_claims = calloc(CHUNK_PAGES, sizeof(uint64_t));
	if (!ctx->zero_src || !ctx->fault_staging || !ctx->fault_claims) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = vmaq_open(&ctx->vmaq);
	if (rc)
		goto fail;
	rc = uffd_open(&ctx->uffd, CTX_WANTED_FEATURES);
	if (rc)
		goto fail;
	if (ctx->uffd.features & UFFD_FEATURE_MOVE)
		open_frames_uffd(ctx);
	ctx->sync_pages = map_pages(MAX_MIGRATORS, PROT_READ | PROT_WRITE);
	if (!ctx->sync_pages) {
		rc = -ENOMEM;
		goto fail;
	}
	memset(ctx->sync_pages, 0, MAX_MIGRATORS * PAGE_SIZE);
	rc = uffd_register(ctx->uffd.fd, (uintptr_t)ctx->sync_pages,
			   MAX_MIGRATORS * PAGE_SIZE,
			   UFFDIO_REGISTER_MODE_MISSING |
			   UFFDIO_REGISTER_MODE_WP, NULL);
	if (!rc)
		rc = uffd_writeprotect(ctx->uffd.fd,
				       (uintptr_t)ctx->sync_pages,
				       MAX_MIGRATORS * PAGE_SIZE, WP_ON);
	if (!rc)
		rc = fault_handler_start(ctx);
	if (!rc)
		rc = lifecycle_register(ctx);
	if (rc)
		goto fail;
	*ctxp = ctx;
	return 0;
fail:
	ctx_free(ctx);
	return rc;
}

int hetmm_ctx_destroy(struct hetmm_ctx *ctx)
{
	if (!ctx)
		return -EINVAL;
	if (ctx_forked(ctx))
		return -ECHILD;
	emu_destroy_all(ctx);
	for (;;) {
		pthread_mutex_lock(&ctx->lock);
		struct hetmm_pagemap *pgmap = ctx->pagemaps;
		pthread_mutex_unlock(&ctx->lock);
		if (!pgmap)
			break;
		int rc = hetmm_pagemap_remove(pgmap);
		if (rc)
			return rc;
	}
	notifiers_release(ctx);
	ctx_free(ctx);
	return 0;
}

int hetmm_ctx_uffd_info(struct hetmm_ctx *ctx, enum hetmm_uffd_route *route,
			uint64_t *features)
{
	if (!ctx || (!route && !features))
		return -EINVAL;
	if (ctx_forked(ctx))
		return -ECHILD;
	if (route)
		*route = ctx->uffd.route;
	if (features)
		*features = ctx->uffd.features;
	return 0;
}

#define STAT_LOAD(ctx, f) \
	atomic_load_explicit(&(ctx)->stats.f, memory_order_relaxed)

int hetmm_ctx_get_stats(struct hetmm_ctx *ctx, struct hetmm_stats *st)
{
	if (!ctx || !st)
		return -EINVAL;
	if (ctx_forked(ctx))
		return -ECHILD;
	st->faults = STAT_LOAD(ctx, faults);
	st->fault_pages = STAT_LOAD(ctx, fault_pages);
	st->fault_zero = STAT_LOAD(ctx, fault_zero);
	st->to_device_pages = STAT_LOAD(ctx, to_device_pages);
	st->to_system_pages = STAT_LOAD(ctx, to_system_pages);
	st->skipped_pages = STAT_LOAD(ctx, skipped_pages);
	st->mirror_faults = STAT_LOAD(ctx, mirror_faults);
	int64_t resident = STAT_LOAD(ctx, device_resident);
	st->device_resident = resident > 0 ? (uint64_t)resident : 0;
	st->discarded_pages = STAT_LOAD(ctx, discarded_pages);
	st->remapped_pages = STAT_LOAD(ctx, remapped_pages);
	st->fork_pages = STAT_LOAD(ctx, fork_pages);
	st->evictions = STAT_LOAD(ctx, evictions);
	st->pins = STAT_LOAD(ctx, pins);
	return 0;
}

int hetmm_addr_to_pfn(struct hetmm_ctx *ctx, const void *addr,
		      hetmm_pfn_t *pfn)
{
	if (!ctx || !pfn || (uintptr_t)addr >= USER_VA_END)
		return -EINVAL;
	if (ctx_forked(ctx))
		return -ECHILD;
	uint64_t e = vtab_get(&ctx->shadow, addr_to_vpn((uintptr_t)addr));
	/* A claimed device page is leaving its frame: a fault-back may have
	 * put it in place already, and the thread that touched it run on. */
	if (!shadow_claimable(e))
		return -ENOENT;
	pfn->val = HETMM_PFN_DEV | shadow_pfn(e);
	return 0;
}

/* ------------------------------------------------------------------------
 * Threads in a copy-to-device phase, so the handler can tell their faults.
 */

struct migrator *migrator_enter(struct hetmm_ctx *ctx, pid_t tid)
{
	for (;;) {
		for (unsigned i = 0; i < MAX_MIGRATORS; i++) {
			pid_t free_slot = 0;
			struct migrator *m = &ctx->migrators[i];
			if (atomic_compare_exchange_strong(&m->tid, &free_slot,
							   tid))
				return m;
		}
		sched_yield();
	}
}

void migrator_leave(struct migrator *m)
{
	atomic_store(&m->tid, 0);
}

bool is_migrator(struct hetmm_ctx *ctx, pid_t tid)
{
	for (unsigned i = 0; i < MAX_MIGRATORS; i++)
		if (atomic_load(&ctx->migrators[i].tid) == tid)
			return true;
	return false;
}

/*
 * A write to the slot's own write-protected sync page is a fault, and the
 * handler takes messages in the order the kernel queued them: once it has
 * lifted the protection, it has handled every event read before.  A fault,
 * unlike an madvise, holds nobody else's userfaultfd calls up meanwhile.
 */
static void sync_through(struct hetmm_ctx *ctx, struct migrator *m)
{
	char *page = ctx->sync_pages + (m - ctx->migrators) * PAGE_SIZE;
	*(volatile char *)page = 1;
	uffd_writeprotect(ctx->uffd.fd, (uintptr_t)page, PAGE_SIZE, WP_ON);
}

void handler_sync(struct hetmm_ctx *ctx)
{
	struct migrator *m = migrator_enter(ctx, gettid());
	sync_through(ctx, m);
	migrator_leave(m);
}

/*
 * Zap [start, end) and return only once the handler has handled every
 * REMOVE event the zap raised: until then it could take one of them,
 * handled after our commit, for the process discarding the pages we
 * just published.  madvise returns once the handler has read the
 * events, so a sync through the handler after it is enough.  Counting
 * the events' bytes is not: a zap that fails on a hole (the process
 * unmapped a page meanwhile) has zapped the rest without an event for
 * the hole, and madvise repeats an event for the part of a range whose
 * mapping was split while it waited for the first one to be read.
 */
int migrator_zap(struct hetmm_ctx *ctx, struct migrator *m, uintptr_t start,
		 uintptr_t end)
{
	atomic_store(&m->zap_end, end);
	atomic_store(&m->zap_start, start);
	int rc = madvise((void *)start, end - start, MADV_DONTNEED) ? -errno : 0;
	sync_through(ctx, m);
	atomic_store(&m->zap_start, 0);
	atomic_store(&m->zap_end, 0);
	return rc;
}

bool is_sync_page(const struct hetmm_ctx *ctx, uintptr_t addr)
{
	return addr - (uintptr_t)ctx->sync_pages < MAX_MIGRATORS * PAGE_SIZE;
}

/* Does the recorded range [*rs, *re) (none while *rs is 0) hold
 * [start, end)? */
static bool recorded_covers(_Atomic uintptr_t *rs, _Atomic uintptr_t *re,
			    uintptr_t start, uintptr_t end)
{
	uintptr_t s = atomic_load(rs), e = atomic_load(re);
	return s && s <= start && end <= e;
}

bool migrators_own(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	for (unsigned i = 0; i < MAX_MIGRATORS; i++) {
		struct migrator *m = &ctx->migrators[i];
		for (unsigned k = 0; k < 2; k++)
			if (recorded_covers(&m->own_start[k], &m->own_end[k],
					    start, end))
				return true;
	}
	return false;
}

bool migrators_zapping(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	for (unsigned i = 0; i < MAX_MIGRATORS; i++) {
		struct migrator *m = &ctx->migrators[i];
		if (recorded_covers(&m->zap_start, &m->zap_end, start, end))
			return true;
	}
	return false;
}
