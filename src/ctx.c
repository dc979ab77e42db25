/* SPDX-License-Identifier: MIT */
/*
 * ctx.c - contexts: a userfaultfd, its handler, the shadow of where each
 * process page lives, and the pagemaps and notifiers that hang off it.
 * Creation builds the modules' state bottom up; destruction removes the
 * pagemaps (every page comes home), then tells the notifiers RELEASE (a
 * device's driver frees itself on it) before it takes it down.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "compat.h"
#include "ctx.h"
#include "entry.h"
#include "fault.h"
#include "fork.h"
#include "hotplug.h"
#include "notifier.h"
#include "order.h"
#include "testhook.h"
#include "watch.h"

/* What the context asks of UFFDIO_API; it runs with what is offered. */
#define CTX_WANTED_FEATURES \
	(UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_THREAD_ID | \
	 UFFD_FEATURE_MOVE | UFFD_FEATURE_EVENT_UNMAP | \
	 UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_REMAP | \
	 UFFD_FEATURE_POISON | UFFD_FEATURE_EXACT_ADDRESS | \
	 UFFD_FEATURE_WP_UNPOPULATED)

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
	fork_unregister(ctx);
	fault_handler_stop(ctx);
	uffd_close(&ctx->uffd);
	uffd_close(&ctx->frames);
	order_fini(ctx);
	fault_engine_destroy(ctx);
	vmaq_close(&ctx->vmaq);
	shadow_destroy(&ctx->shadow);
	vtab_destroy(&ctx->vacated.parked_tab);
	vtab_destroy(&ctx->placed_src);
	watch_fini(ctx);
	if (ctx->zero_src) {
		entry_disown(ctx, &ctx->own_zero);
		munmap(ctx->zero_src, CHUNK_PAGES * PAGE_SIZE);
	}
	pthread_mutex_destroy(&ctx->lock);
	pthread_mutex_destroy(&ctx->own_lock);
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
	touch_pages(ctx, sizeof(*ctx));
	ctx->uffd.fd = ctx->frames.fd = -1;
	ctx->vmaq.maps_fd = ctx->vmaq.pagemap_fd = -1;
	ctx->fault_around_max = params && params->fault_around_max ?
				params->fault_around_max : DEFAULT_FAULT_AROUND;
	shadow_init(&ctx->shadow);
	vtab_init(&ctx->vacated.parked_tab);
	vtab_init(&ctx->placed_src);
	watch_init(ctx);
	pthread_mutex_init(&ctx->lock, NULL);
	pthread_mutex_init(&ctx->own_lock, NULL);
	pthread_rwlock_init(&ctx->notifiers_lock, NULL);
	fork_lock_init(&ctx->fork_lock);

	ctx->zero_src = map_pages(CHUNK_PAGES, PROT_READ);
	if (!ctx->zero_src) {
		rc = -ENOMEM;
		goto fail;
	}
	entry_own(ctx, &ctx->own_zero, ctx->zero_src, CHUNK_PAGES * PAGE_SIZE);
	rc = vmaq_open(&ctx->vmaq);
	if (rc)
		goto fail;
	rc = uffd_open(&ctx->uffd, CTX_WANTED_FEATURES &
		       ~(TEST_NO_MOVE() ? UFFD_FEATURE_MOVE : 0));
	if (rc)
		goto fail;
	if (ctx->uffd.features & UFFD_FEATURE_MOVE)
		open_frames_uffd(ctx);
	rc = order_init(ctx);
	if (!rc)
		rc = fault_engine_create(ctx);
	if (!rc)
		rc = fault_handler_start(ctx);
	if (!rc)
		rc = fork_register(ctx);
	if (rc)
		goto fail;
	watch_join(ctx);
	*ctxp = ctx;
	return 0;
fail:
	ctx_free(ctx);
	return rc;
}

int hetmm_ctx_destroy(struct hetmm_ctx *ctx)
{
	int rc = entry_ctx(ctx);
	if (rc)
		return rc;
	for (;;) {
		pthread_mutex_lock(&ctx->lock);
		struct hetmm_pagemap *pgmap = ctx->pagemaps;
		pthread_mutex_unlock(&ctx->lock);
		if (!pgmap)
			break;
		rc = hotplug_remove(pgmap);
		if (rc)
			return rc;
	}
	notifiers_release(ctx);
	watch_leave(ctx);
	ctx_free(ctx);
	return 0;
}

int hetmm_ctx_uffd_info(struct hetmm_ctx *ctx, enum hetmm_uffd_route *route,
			uint64_t *features)
{
	int rc = entry_ctx(ctx);
	if (rc)
		return rc;
	if (!route && !features)
		return -EINVAL;
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
	int rc = entry_ctx(ctx);
	if (rc)
		return rc;
	if (!st)
		return -EINVAL;
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
	st->copy_errors = STAT_LOAD(ctx, copy_errors);
	st->fault_sigbus = STAT_LOAD(ctx, fault_sigbus);
	return 0;
}

int hetmm_addr_to_pfn(struct hetmm_ctx *ctx, const void *addr,
		      hetmm_pfn_t *pfn)
{
	int rc = entry_ctx(ctx);
	if (rc)
		return rc;
	if (!pfn || (uintptr_t)addr >= USER_VA_END)
		return -EINVAL;
	uint64_t e = shadow_get(&ctx->shadow, addr_to_vpn((uintptr_t)addr));
	/* A claimed device page is leaving its frame: a fault-back may have
	 * put it in place already, and the thread that touched it run on. */
	if (!shadow_claimable(e))
		return -ENOENT;
	pfn->val = HETMM_PFN_DEV | shadow_pfn(e);
	return 0;
}

