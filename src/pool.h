/* SPDX-License-Identifier: MIT */
/*
 * pool.h - huge pages the process gave up, kept to stage fault-back in.
 *
 * A THP a migration takes out of the process whole (order.c,
 * migrator_take) is populated memory nobody needs any more; a
 * fault-back's staging block (pmdback.c) is a THP the kernel would zero
 * afresh.  The pool hands the first to the second, so that a block
 * brought back after a migration or an eviction pays no zeroing.
 */
#ifndef HETMM_POOL_H
#define HETMM_POOL_H

#include <stdatomic.h>

#include "base.h"

struct hetmm_ctx;

/*
 * Slots, a PMD each: as many as pmdback has staging blocks in flight,
 * so that every block of a window in flight can start in a recycled
 * THP, and about what one drain of an attached file's resident bound
 * gives back at a time (file.c: 4 chunks at most).  A window of the
 * largest size is 16 PMDs; a pool that deep would hold 32 MiB while
 * idle for a saving only a migration of that much followed by a
 * fault-back of it could use.
 */
#define POOL_SLOTS 4

struct thp_pool {
	char *area;                       /* POOL_SLOTS PMDs; NULL: none */
	_Atomic unsigned slot[POOL_SLOTS];    /* POOL_EMPTY, ... (pool.c) */
	struct own_range own;
};

/*
 * n PMDs, PMD-aligned, registered with the frames userfaultfd in
 * write-protect mode (ctx.h) so that a huge page may move in
 * (UFFDIO_MOVE wants a registered destination), and never inherited by
 * a fork child.  Nothing write-protects it, so nothing there faults to
 * the userfaultfd.  NULL without UFFDIO_MOVE or memory.
 */
char *frames_area_map(struct hetmm_ctx *ctx, size_t n);

/* The pool, empty; none where a PMD is not one chunk, or no
 * UFFDIO_MOVE.  After the frames userfaultfd is open. */
void pool_init(struct hetmm_ctx *ctx);
/* Its huge pages freed: on context destroy, after the userfaultfds are
 * closed. */
void pool_fini(struct hetmm_ctx *ctx);

/*
 * Keep the huge page mapped at start (PMD-aligned, the caller's to give
 * up: its bytes are on a device) in a free slot: the bytes taken from
 * start on, PMD_SIZE, or less where the kernel stopped (then the slot
 * gives back what it got and stays empty); 0 also when no slot is free.
 */
size_t pool_give(struct hetmm_ctx *ctx, uintptr_t start);
/*
 * Move a kept huge page to dst (PMD-aligned in a frames_area_map area,
 * nothing mapped there): true if a whole one landed.  Its bytes are
 * another address's: the caller overwrites every page before the
 * process may see any.
 */
bool pool_take(struct hetmm_ctx *ctx, uintptr_t dst);

#endif /* HETMM_POOL_H */
