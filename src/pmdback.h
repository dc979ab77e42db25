/* SPDX-License-Identifier: MIT */
/*
 * pmdback.h - a PMD-aligned block of device pages back as one
 * transparent huge page, through the handler's copy pipeline.
 */
#ifndef HETMM_PMDBACK_H
#define HETMM_PMDBACK_H

#include "back.h"

struct hetmm_ctx;

/* The handler's blocks and their staging; NULL where no block can come
 * back whole (no UFFDIO_MOVE, THP disabled, a PMD of several chunks, no
 * memory, HETMM_PMD_BACK=never): fault-around then brings pages back as
 * before.  A placed pagemap's blocks come whole only where a thread's
 * first touch of a mapped page is dear, or HETMM_PMD_BACK=always. */
struct back_pmd *back_pmd_create(struct hetmm_ctx *ctx);
void back_pmd_destroy(struct hetmm_ctx *ctx, struct back_pmd *m);
/* bp (the handler's, just initialised) takes m's blocks. */
void back_pmd_attach(struct back_pipe *bp, struct back_pmd *m);

/*
 * The claimed pages [head, head + PMD_PAGES) (head PMD aligned, claims
 * their BUSY entries, the faulting page's mapping holding them all and
 * allowed THPs) join bp's pipeline as one block, if they fit: all on one
 * device whose copies are asynchronous, none a zero page.  Its copies
 * land in a THP-backed staging block, and when the last one has landed
 * the PMD moves into place in one UFFDIO_MOVE, and the block is woken
 * (how: BACK_NO_WAKE, or 0).  Counted in bp as back_runs_async counts.
 * False, and the claims untouched, if the block does not fit.
 */
bool back_pmd_start(struct back_pipe *bp, uint64_t head,
		    const uint64_t *claims, unsigned how);
/* Finish bp's blocks in flight, oldest first, before its pipeline is
 * drained. */
void back_pmd_drain(struct back_pipe *bp);

#endif /* HETMM_PMDBACK_H */
