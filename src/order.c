/* SPDX-License-Identifier: MIT */
/*
 * order.c - ordering other threads with the fault handler: migrator
 * slots, the sync through the handler, and the zaps that need it.
 */
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat.h"
#include "copy.h"
#include "ctx.h"
#include "entry.h"
#include "order.h"
#include "procread.h"

#define SYNC_LEN (MAX_MIGRATORS * PAGE_SIZE)
/* Per migrator slot: a PMD for migrator_take, then its stages. */
#define SINK_PMDS (1 + MIGRATOR_STAGES)
#define SINK_LEN ((size_t)MAX_MIGRATORS * SINK_PMDS * PMD_SIZE)

/*
 * The sink, PMD-aligned so that a huge page moves there whole (one PMD,
 * not 512 page table entries).  Registered in write-protect mode, as
 * device memory pages move into is (hotplug.c): nothing protects it, so
 * nothing there ever faults.  A fork child needs none of it.  Without
 * UFFDIO_MOVE, or without the memory, migrators zap, and copy from the
 * process.  No application call can unmap it, so copies read it with a
 * memcpy (procread_hold).  Address space only (MAP_NORESERVE): pages
 * stay there for a migration's copies at most.
 */
static void sink_init(struct hetmm_ctx *ctx)
{
	if (ctx->frames.fd < 0 || CHUNK_PAGES != PMD_PAGES)
		return;   /* nothing to move, or no chunk a huge page */
	char *p = mmap(NULL, SINK_LEN + PMD_SIZE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return;
	char *a = (char *)(((uintptr_t)p + PMD_SIZE - 1) &
			   ~(uintptr_t)(PMD_SIZE - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	munmap(a + SINK_LEN, (size_t)(p + PMD_SIZE - a));
	if (uffd_register(ctx->frames.fd, (uintptr_t)a, SINK_LEN,
			  UFFDIO_REGISTER_MODE_WP, NULL)) {
		munmap(a, SINK_LEN);
		return;
	}
	madvise(a, SINK_LEN, MADV_DONTFORK);
	ctx->order.sink = a;
	ctx->order.sink_held = procread_hold(a, SINK_LEN);
	entry_own(ctx, &ctx->order.sink_own, a, SINK_LEN);
}

/* A copy of this context's that timed out may still read a stage
 * (copy.h): then the sink stays mapped, emptied, for the process's life,
 * as the copy's queue does. */
static void sink_fini(struct hetmm_ctx *ctx, bool copy_kept)
{
	entry_disown(ctx, &ctx->order.sink_own);
	if (copy_kept) {
		madvise(ctx->order.sink, SINK_LEN, MADV_DONTNEED);
		return;
	}
	if (ctx->order.sink_held)
		procread_release(ctx->order.sink);
	munmap(ctx->order.sink, SINK_LEN);
}

int order_init(struct hetmm_ctx *ctx)
{
	sink_init(ctx);
	void *p = mmap(NULL, SYNC_LEN, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -ENOMEM;
	ctx->order.sync_pages = p;
	entry_own(ctx, &ctx->order.own, p, SYNC_LEN);
	memset(p, 0, SYNC_LEN);
	int rc = uffd_register(ctx->uffd.fd, (uintptr_t)p, SYNC_LEN,
			       UFFDIO_REGISTER_MODE_MISSING |
			       UFFDIO_REGISTER_MODE_WP, NULL);
	if (!rc)
		rc = uffd_writeprotect(ctx->uffd.fd, (uintptr_t)p, SYNC_LEN,
				       WP_ON);
	return rc;
}

void order_fini(struct hetmm_ctx *ctx)
{
	if (ctx->order.sync_pages) {
		entry_disown(ctx, &ctx->order.own);
		munmap(ctx->order.sync_pages, SYNC_LEN);
	}
	bool copy_kept = copyq_kept_forget(ctx);
	if (ctx->order.sink)
		sink_fini(ctx, copy_kept);
}


struct migrator *migrator_enter(struct hetmm_ctx *ctx, pid_t tid)
{
	for (;;) {
		for (unsigned i = 0; i < MAX_MIGRATORS; i++) {
			pid_t free_slot = 0;
			struct migrator *m = &ctx->order.migrators[i];
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

/*
 * A write to the slot's own write-protected sync page is a fault.  The
 * kernel refuses to lift the protection while an event raised before
 * waits to be read, and the handler lifts it only once no event is left
 * later in its batch (the kernel hands out faults first: fault.c): then
 * it has handled every event raised before.  A fault, unlike an madvise,
 * holds nobody else's userfaultfd calls up meanwhile.
 */
static void sync_through(struct hetmm_ctx *ctx, struct migrator *m)
{
	char *page = ctx->order.sync_pages + (m - ctx->order.migrators) * PAGE_SIZE;
	*(volatile char *)page = 1;
	(void)atomic_load_explicit(&ctx->order.syncs_answered,
				   memory_order_acquire);
	uffd_writeprotect(ctx->uffd.fd, (uintptr_t)page, PAGE_SIZE, WP_ON);
}

void handler_sync_answering(struct hetmm_ctx *ctx)
{
	atomic_fetch_add_explicit(&ctx->order.syncs_answered, 1,
				  memory_order_release);
}

void handler_sync(struct hetmm_ctx *ctx)
{
	struct migrator *m = migrator_enter(ctx, gettid());
	sync_through(ctx, m);
	migrator_leave(m);
}

/*
 * The pages of a zap are published only once the handler has handled
 * every REMOVE event it raised: until then it could take one of them,
 * handled after our commit, for the process discarding the pages we
 * just published.  madvise returns once the handler has read the
 * events, so a sync through the handler after it is enough, and one
 * sync after several zaps serves them all (a chunk's each, for the
 * chunks a migration publishes together: migrate.c).  The zaps stay
 * recorded until then, since the handler may handle an event of the
 * first after the last is made.  Counting the events' bytes is not
 * enough: a zap that fails on a hole (the process unmapped a page
 * meanwhile) has zapped the rest without an event for the hole, and
 * madvise repeats an event for the part of a range whose mapping was
 * split while it waited for the first one to be read.
 */
int migrator_zap(struct hetmm_ctx *ctx, struct migrator *m, uintptr_t start,
		 uintptr_t end)
{
	if (m->nzaps == MIGRATOR_ZAPS)
		migrator_zap_sync(ctx, m);
	unsigned k = m->nzaps++;
	atomic_store(&m->zap_end[k], end);
	atomic_store(&m->zap_start[k], start);
	return madvise((void *)start, end - start, MADV_DONTNEED) ? -errno : 0;
}

void migrator_zap_sync(struct hetmm_ctx *ctx, struct migrator *m)
{
	if (!m->nzaps)
		return;
	sync_through(ctx, m);
	for (unsigned k = 0; k < m->nzaps; k++) {
		atomic_store(&m->zap_start[k], 0);
		atomic_store(&m->zap_end[k], 0);
	}
	m->nzaps = 0;
}

/* Migrator m's part of the sink: its take PMD, then its stages. */
static char *migrator_sink(struct hetmm_ctx *ctx, const struct migrator *m)
{
	return ctx->order.sink +
	       (size_t)(m - ctx->order.migrators) * SINK_PMDS * PMD_SIZE;
}

char *migrator_stage(struct hetmm_ctx *ctx, const struct migrator *m,
		     unsigned k)
{
	if (!ctx->order.sink || k >= MIGRATOR_STAGES)
		return NULL;
	return migrator_sink(ctx, m) + (1 + (size_t)k) * PMD_SIZE;
}

/*
 * A zap waits for the handler twice (madvise until it reads the REMOVE,
 * the sync until it handles it): under load, milliseconds.  A huge page
 * moves out as one PMD and is freed in the sink as one, which costs
 * about what the zap's own page table work does (docs/PERFORMANCE.md),
 * and no wait.  Base pages would move one by one, a lock, a reverse map
 * update and a TLB flush each, and free apart: slower than the zap with
 * its waits, so they are zapped.
 */
size_t migrator_take(struct hetmm_ctx *ctx, struct migrator *m,
		     uintptr_t start)
{
	if (!ctx->order.sink)
		return 0;
	uintptr_t dst = (uintptr_t)migrator_sink(ctx, m);
	long got = uffd_fill(ctx->frames.fd, FILL_MOVE, dst, start, PMD_SIZE,
			     0);
	if (got <= 0)
		return 0;
	madvise((void *)dst, (size_t)got, MADV_DONTNEED);
	return (size_t)got;
}

bool is_sync_page(const struct hetmm_ctx *ctx, uintptr_t addr)
{
	return addr - (uintptr_t)ctx->order.sync_pages < SYNC_LEN;
}

/* Does the recorded range [*rs, *re) (none while *rs is 0) hold
 * [start, end)? */
static bool recorded_covers(_Atomic uintptr_t *rs, _Atomic uintptr_t *re,
			    uintptr_t start, uintptr_t end)
{
	uintptr_t s = atomic_load(rs), e = atomic_load(re);
	return s && s <= start && end <= e;
}

bool migrators_own(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end,
		   bool remap_from)
{
	for (unsigned i = 0; i < MAX_MIGRATORS; i++) {
		struct migrator *m = &ctx->order.migrators[i];
		for (unsigned k = remap_from; k < 2; k++)
			if (recorded_covers(&m->own_start[k], &m->own_end[k],
					    start, end))
				return true;
	}
	return false;
}

void migrator_copying(struct migrator *m, uintptr_t start, uintptr_t end,
		      bool by_driver)
{
	atomic_store(&m->copy_by_driver, by_driver);
	atomic_store(&m->copy_end, end);
	atomic_store(&m->copy_start, start);
}

void migrator_staged(struct migrator *m, unsigned k, uintptr_t start,
		     uintptr_t end)
{
	atomic_store(&m->staged_start[k], 0);
	atomic_store(&m->staged_end[k], end);
	atomic_store(&m->staged_start[k], start);
}

/* Are [start, end)'s pages in one of m's stages? */
static bool migrator_has_staged(struct migrator *m, uintptr_t start,
				uintptr_t end)
{
	for (unsigned k = 0; k < MIGRATOR_STAGES; k++)
		if (recorded_covers(&m->staged_start[k], &m->staged_end[k],
				    start, end))
			return true;
	return false;
}

/* A staged page is not read where it was: a fault there is the
 * process's, to wait for the commit like any on a claimed page. */
bool migrators_copying(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end,
		       pid_t tid)
{
	for (unsigned i = 0; i < MAX_MIGRATORS; i++) {
		struct migrator *m = &ctx->order.migrators[i];
		if (recorded_covers(&m->copy_start, &m->copy_end, start, end) &&
		    (atomic_load(&m->copy_by_driver) ||
		     atomic_load(&m->tid) == tid) &&
		    !migrator_has_staged(m, start, end))
			return true;
	}
	return false;
}

bool migrators_zapping(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	for (unsigned i = 0; i < MAX_MIGRATORS; i++) {
		struct migrator *m = &ctx->order.migrators[i];
		for (unsigned k = 0; k < MIGRATOR_ZAPS; k++)
			if (recorded_covers(&m->zap_start[k], &m->zap_end[k],
					    start, end))
				return true;
	}
	return false;
}
