/* SPDX-License-Identifier: MIT */
/*
 * back.h - device pages back to system memory.
 *
 * Whole migrations back (hetmm_migrate_to_system, hot-remove, pins, fork)
 * call migrate_back_range(); callers that claimed pages themselves (the
 * fault engine, eviction, munmap) use the pieces.
 */
#ifndef HETMM_BACK_H
#define HETMM_BACK_H

#include "base.h"
#include "copy.h"
#include "uffd.h"

struct hetmm_ctx;
struct hetmm_pagemap;

/* Staging for copies out of a device: n chunks of CHUNK_PAGES pages,
 * aligned to a chunk's size and advised MADV_HUGEPAGE, so that a huge
 * page can come back through it as a THP (back.c, thp_source; pmdback.c);
 * not inherited by a fork child.  NULL if it can't be mapped; unmapped by
 * its user. */
void *staging_map(size_t n);

/* Move every device page of [start, end) back; -ENOENT if none moved. */
int migrate_back_range(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end,
		       struct hetmm_migrate_report *report);

/* Record page's status st in a migration's report, if there is one. */
static inline void report_page(struct hetmm_migrate_report *rep, size_t page,
			       enum hetmm_migrate_status st)
{
	if (!rep)
		return;
	if (st == HETMM_MIGRATE_MOVED)
		rep->moved++;
	else
		rep->skipped++;
	if (rep->status)
		rep->status[page] = (uint8_t)st;
}

/* Pages of pgmap move in and out by UFFDIO_MOVE (HETMM_PAGEMAP_REMAP, and
 * the kernel can). */
bool back_can_move(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap);

/* How a run is installed (back_install, migrate_back_claimed). */
#define BACK_NO_WAKE (1u << 0)    /* the caller wakes the range later */
/* Give up where the kernel says EAGAIN (an event waits to be read): only
 * the handler reads events, so the handler must not retry. */
#define BACK_ONCE (1u << 1)
/* A frame copied out of keeps its bytes (PAGE_STALE) until a page next
 * moves into it, instead of being emptied now. */
#define BACK_LAZY_EMPTY (1u << 2)
/* A PMD-aligned block may come back as one THP (pmdback.c); its pieces
 * carry it through the pipeline. */
#define BACK_PMD (1u << 3)

struct back_pipe;
struct copy_req;
/* What finishes a piece of a BACK_PMD block (pmdback.c, which lies above
 * back.c: hence a pointer), with its state. */
struct back_pmd;
typedef void back_pmd_piece_fn(struct back_pipe *bp, const struct copy_req *r,
			       int err);

/*
 * Pages coming back, their asynchronous copies kept in flight across
 * runs and chunks (one pipeline for the pagemap in use, copy.h): each
 * piece is installed (or kept on the device) as it completes, in order.
 * Its counts grow as pieces finish; back_pipe_drain() finishes them all.
 * Each page's status goes to rep (page vpn - rep_vpn), if not NULL.
 * The fault handler's (handler) installs with BACK_ONCE, keeps the pages
 * of a failed copy quietly (back_keep_quiet) and may take every slot.
 */
struct back_pipe {
	struct hetmm_ctx *ctx;
	bool handler;
	struct hetmm_migrate_report *rep;
	uint64_t rep_vpn;
	struct copy_pipe cp;              /* cp.pgmap NULL: none open */
	size_t left;                      /* pages that left the device */
	size_t installed;                 /* of those, mapped in the process */
	size_t failed;                    /* pages whose copy failed */
	size_t queued;                    /* pages ever handed to copies */
	size_t in_flight;                 /* of those, not finished yet */
	struct back_pmd *pmd;             /* the handler's, or NULL */
	back_pmd_piece_fn *pmd_piece;
};

void back_pipe_init(struct back_pipe *bp, struct hetmm_ctx *ctx,
		    bool handler, struct hetmm_migrate_report *rep,
		    uint64_t rep_vpn);
/* Finish every piece in flight. */
void back_pipe_drain(struct back_pipe *bp);
/* Open bp's pipeline on pgmap, the one open drained first if another. */
void back_pipe_use(struct back_pipe *bp, struct hetmm_pagemap *pgmap);
/* A piece [vpn, vpn + nr) of claims keep, frames from idx0 on, whose
 * bytes are at src: installed by op, what could not leave kept on the
 * device, its status and counts in bp. */
void back_piece_install(struct back_pipe *bp, struct hetmm_pagemap *pgmap,
			uint64_t vpn, uint64_t idx0, size_t nr,
			const uint64_t *keep, enum uffd_fill op,
			uintptr_t src, unsigned how);
/* Frames [idx0, idx0 + run) of pages that left the device are free
 * (their entries are 0), as back_free_flags() says. */
void back_release_frames(struct hetmm_pagemap *pgmap, uint64_t idx0,
			 size_t run, uint64_t free_flags);

/*
 * Bring the claimed pages [vpn, vpn + n) back to system memory.  claims[i]
 * is the shadow entry with BUSY set.  Runs that come back by a driver's
 * asynchronous copies join bp's pipeline and end as their pieces finish;
 * the rest are done on return.  Every entry ends 0 again, or the page's
 * device entry where it could not leave, and every waiter on the range
 * woken; bp counts the pages that left (a page whose mapping vanished
 * meanwhile leaves it dropped) and reports each page's status: MOVED,
 * SKIP_BUSY, or SKIP_ERROR where the driver's copy failed.
 */
void migrate_back_claimed(struct back_pipe *bp, uint64_t vpn, size_t n,
			  const uint64_t *claims, void **staging);
/* Forget claimed device pages whose process page is gone: free their
 * frames and clear their entries, copying nothing.  Notifiers are told
 * again, for the reason the pages went (why), before the frames are. */
void migrate_drop_claimed(struct hetmm_ctx *ctx, const uint64_t *vpns,
			  const uint64_t *claims, size_t n,
			  enum hetmm_event why);

/* Free the frame of a device page whose process page is gone; resident:
 * it counted in the context's device_resident. */
void frame_drop(struct hetmm_ctx *ctx, uint64_t pfn, bool resident);
/* --- the pieces of migrate_back_claimed -------------------------------- */

/* Tell devices that the claimed pages leave (EXCLUSIVE if a device held
 * one of them exclusive, else MIGRATE), before any content moves. */
void back_invalidate(struct hetmm_ctx *ctx, uint64_t vpn, size_t n,
		     const uint64_t *claims);
/* Length of the run of claims from i with consecutive frames of pgmap
 * (claims[i]'s is idx0), all zero pages or all holding data. */
size_t back_frame_run(const uint64_t *claims, size_t i, size_t n,
		      struct hetmm_pagemap *pgmap, uint64_t idx0);
/* How to install a run: zero pages, a move out of a remapping pagemap
 * (unless copy), or a copy from the device's address or from *staging
 * (mapped on first use).  -EIO if the driver's copy failed. */
int back_source(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
		uint64_t idx0, size_t run, bool copy, void **staging,
		enum uffd_fill *op, uintptr_t *src);
/*
 * Install a run by op from src; returns pages that left the device,
 * installed or dropped (that count says which claims are gone: the rest
 * of the run stays claimed), and in *installed those mapped in the
 * process.  A page the kernel refuses because its mapping is gone
 * (ENOENT, EFAULT) or was replaced by a fresh one (EEXIST) has no process
 * page left to restore: its device copy is dropped, like the kernel's zap
 * of a device-private entry.
 */
size_t back_install(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
		    uint64_t vpn, uint64_t idx0, size_t run,
		    enum uffd_fill op, uintptr_t src, unsigned how,
		    size_t *installed);
/* Claims [vpn, vpn + n) stay on the device: published again, woken. */
void back_keep(struct hetmm_ctx *ctx, uint64_t vpn, const uint64_t *claims,
	       size_t n);
/* The same, waking nobody: for the handler, whose claims nobody waits
 * on (each thread's fault is a message of its own), after a failed copy:
 * the faulting thread must stay in its fault until it gets SIGBUS. */
void back_keep_quiet(struct hetmm_ctx *ctx, uint64_t vpn,
		     const uint64_t *claims, size_t n);
/* Does a run of pgmap from frame idx0 come back by asynchronous copies? */
bool back_is_async(struct hetmm_pagemap *pgmap, uint64_t idx0);
/*
 * Hand claimed pages [vpn + *i, ...) to bp's pipeline: the runs from
 * claims[*i] on (of n) that are pgmap's and come back by asynchronous
 * copies; *i moves past them.  how: as back_install's (BACK_ONCE is
 * added for the handler).  Pieces whose copy failed stay on the device,
 * counted in bp->failed; pieces the kernel refused are kept and woken.
 */
void back_runs_async(struct back_pipe *bp, struct hetmm_pagemap *pgmap,
		     uint64_t vpn, const uint64_t *claims, size_t *i,
		     size_t n, unsigned how);
/* Count pages that left the device (negative counts take some back):
 * left of them, installed of those mapped in the process. */
void back_count(struct hetmm_ctx *ctx, int64_t installed, int64_t left);
/* The fill flag for installing pages of pgmap by op: FILL_WP for a
 * placed pagemap's copies, which come back write-protected (clean until
 * written), with the frame each came from noted in ctx->placed_src; 0
 * otherwise. */
unsigned back_fill_wp(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
		      enum uffd_fill op, uint64_t vpn, uint64_t idx0,
		      size_t run);
/* What a frame a page left by op is freed with: PAGE_STALE if its bytes
 * stay there (a copy out of a remapping pagemap, emptied lazily). */
uint64_t back_free_flags(struct hetmm_pagemap *pgmap, enum uffd_fill op,
			 bool lazy);
/*
 * Let go of a claim by publishing e, unless the process unmapped the page
 * meanwhile and marked the claim GONE: then the entry is cleared and the
 * frame e names, if any, freed.  Returns whether e was published.
 */
bool publish_or_drop(struct hetmm_ctx *ctx, uint64_t vpn, uint64_t claim,
		     uint64_t e, bool resident);

#endif /* HETMM_BACK_H */
