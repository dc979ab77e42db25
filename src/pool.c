/* SPDX-License-Identifier: MIT */
/*
 * pool.c - huge pages the process gave up, kept to stage fault-back in
 * (pool.h).
 *
 * Why: a fault-back in whole PMDs (pmdback.c) reads each block into a
 * staging THP and moves it into place, and a fresh staging THP is zeroed
 * by the kernel first: half or more of a file device's fault-in time
 * here went to clear_page_erms (docs/PERFORMANCE.md, "Storage").  A
 * stream that reuses one buffer never pays that, and neither need we
 * where the process has just given up a populated THP: a migration's
 * copy path takes a THP copied whole out of the process by one
 * UFFDIO_MOVE of its PMD (order.c), an attached file's resident bound
 * sends its oldest THPs back that way, and until now they were freed.
 *
 * How: a slot is a PMD of an area registered with the frames
 * userfaultfd; a THP moves in from the process (pool_give, a migrator's
 * thread) and out to a staging block (pool_take, the handler), one PMD
 * move each way, a few microseconds against the zeroing of 2 MiB.  A
 * slot's state is claimed by compare-and-swap, so that givers and the
 * taker need no lock.
 *
 * The bytes a kept THP holds are those of the address it left.  Only
 * pmdback takes from the pool, and only for a block every page of which
 * a device read overwrites before the block moves into place (a block
 * whose read fails does not move in): no old byte can reach another
 * address.
 *
 * What bounds its memory: POOL_SLOTS PMDs at most, freed with the
 * context; a fork child has none (MADV_DONTFORK).  The library has no
 * reaction to memory pressure for the pool to join: under pressure the
 * kernel may swap a kept THP out like any anonymous page (a take then
 * moves its entries, and the read brings them in, correct if slower).
 */
#include <sys/mman.h>

#include "compat.h"
#include "ctx.h"
#include "entry.h"
#include "pool.h"

enum { POOL_EMPTY, POOL_BUSY, POOL_FULL };

char *frames_area_map(struct hetmm_ctx *ctx, size_t n)
{
	if (ctx->frames.fd < 0)
		return NULL;
	size_t len = n * PMD_SIZE;
	char *p = mmap(NULL, len + PMD_SIZE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	char *a = (char *)(((uintptr_t)p + PMD_SIZE - 1) &
			   ~(uintptr_t)(PMD_SIZE - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	munmap(a + len, (size_t)(p + PMD_SIZE - a));
	if (uffd_register(ctx->frames.fd, (uintptr_t)a, len,
			  UFFDIO_REGISTER_MODE_WP, NULL)) {
		munmap(a, len);
		return NULL;
	}
	madvise(a, len, MADV_HUGEPAGE);
	madvise(a, len, MADV_DONTFORK);
	return a;
}

void pool_init(struct hetmm_ctx *ctx)
{
	struct thp_pool *pl = &ctx->pool;
	if (PMD_PAGES != CHUNK_PAGES)
		return;   /* no THP leaves the process whole */
	pl->area = frames_area_map(ctx, POOL_SLOTS);
	if (pl->area)
		entry_own(ctx, &pl->own, pl->area, POOL_SLOTS * PMD_SIZE);
}

void pool_fini(struct hetmm_ctx *ctx)
{
	struct thp_pool *pl = &ctx->pool;
	if (!pl->area)
		return;
	entry_disown(ctx, &pl->own);
	munmap(pl->area, POOL_SLOTS * PMD_SIZE);
	pl->area = NULL;
}

/* A slot in state from, now BUSY: its index, or -1. */
static int slot_claim(struct thp_pool *pl, unsigned from)
{
	for (int i = 0; i < POOL_SLOTS; i++) {
		unsigned s = from;
		if (atomic_load_explicit(&pl->slot[i], memory_order_relaxed) ==
		    from &&
		    atomic_compare_exchange_strong_explicit(&pl->slot[i], &s,
				POOL_BUSY, memory_order_acquire,
				memory_order_relaxed))
			return i;
	}
	return -1;
}

static uintptr_t slot_addr(struct thp_pool *pl, int i)
{
	return (uintptr_t)pl->area + (size_t)i * PMD_SIZE;
}

/* Slot i, BUSY, ends in state to; emptied first if it is to be empty
 * (a move that stopped part way leaves base pages, a page table too). */
static void slot_settle(struct thp_pool *pl, int i, unsigned to)
{
	if (to == POOL_EMPTY)
		madvise((void *)slot_addr(pl, i), PMD_SIZE, MADV_DONTNEED);
	atomic_store_explicit(&pl->slot[i], to, memory_order_release);
}

size_t pool_give(struct hetmm_ctx *ctx, uintptr_t start)
{
	struct thp_pool *pl = &ctx->pool;
	int i = pl->area ? slot_claim(pl, POOL_EMPTY) : -1;
	if (i < 0)
		return 0;
	long got = uffd_fill(ctx->frames.fd, FILL_MOVE, slot_addr(pl, i),
			     start, PMD_SIZE, 0);
	slot_settle(pl, i, got == (long)PMD_SIZE ? POOL_FULL : POOL_EMPTY);
	return got > 0 ? (size_t)got : 0;
}

bool pool_take(struct hetmm_ctx *ctx, uintptr_t dst)
{
	struct thp_pool *pl = &ctx->pool;
	int i = pl->area ? slot_claim(pl, POOL_FULL) : -1;
	if (i < 0)
		return false;
	long got = uffd_fill(ctx->frames.fd, FILL_MOVE, dst, slot_addr(pl, i),
			     PMD_SIZE, 0);
	/* Moved whole, the slot is empty and its PMD none again. */
	if (got == (long)PMD_SIZE) {
		atomic_store_explicit(&pl->slot[i], POOL_EMPTY,
				      memory_order_release);
		STAT_ADD(ctx, recycled_pages, PMD_PAGES);
		return true;
	}
	slot_settle(pl, i, POOL_EMPTY);
	return false;
}
