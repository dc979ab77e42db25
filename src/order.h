/* SPDX-License-Identifier: MIT */
/*
 * order.h - ordering other threads with the fault handler.
 *
 * The handler reads the process's events (munmap, madvise, mremap) after
 * the fact.  A thread that changes mappings itself (a migration's zap, a
 * coherent mapping swap) must know when the handler has seen its events,
 * and the handler must tell those events from the process's own.
 */
#ifndef HETMM_ORDER_H
#define HETMM_ORDER_H

#include <stdatomic.h>
#include <sys/types.h>

#include "base.h"

#define MAX_MIGRATORS 16
/* Zaps a migrator makes before one sync covers them all (migrator_zap). */
#define MIGRATOR_ZAPS 16
/* PMDs of the sink a migrator may stage pages in (migrator_stage). */
#define MIGRATOR_STAGES 8

struct hetmm_ctx;

/*
 * A thread in the copy path of a migration to a device.  Its zaps of the
 * copied pages (MADV_DONTNEED) raise REMOVE events like any madvise; the
 * handler tells them by their ranges, and the migrator publishes the
 * pages only once the handler has handled them all (migrator_zap_sync),
 * so that the handler cannot take its own zap for the process
 * discarding them.  A huge page it moves out instead (migrator_take),
 * which raises no event.
 */
struct migrator {
	_Atomic pid_t tid;
	/* The zaps since the last sync (nzaps of them, the migrator's). */
	_Atomic uintptr_t zap_start[MIGRATOR_ZAPS];
	_Atomic uintptr_t zap_end[MIGRATOR_ZAPS];
	unsigned nzaps;
	/* Pages being copied to a device for us, read by this thread (a
	 * synchronous driver's copy) or, copy_by_driver, by an
	 * asynchronous driver's own threads (migrator_copying). */
	_Atomic uintptr_t copy_start;
	_Atomic uintptr_t copy_end;
	_Atomic bool copy_by_driver;
	/* The chunks whose pages wait in its stages (migrator_staged):
	 * nobody's copy reads the process there. */
	_Atomic uintptr_t staged_start[MIGRATOR_STAGES];
	_Atomic uintptr_t staged_end[MIGRATOR_STAGES];
	/* A coherent remap of ours (coherent.c): the UNMAP and REMAP events
	 * it raises for these two ranges are not the process's doing.
	 * [0] is the range it remaps over, [1] the prepared one it moves
	 * there. */
	_Atomic uintptr_t own_start[2];
	_Atomic uintptr_t own_end[2];
};

struct handler_order {
	char *sync_pages;                 /* one per migrator slot, write
					   * protected: see handler_sync() */
	struct migrator migrators[MAX_MIGRATORS];
	struct own_range own;             /* the sync pages */
	/* 1 + MIGRATOR_STAGES PMDs per migrator slot, registered with the
	 * frames userfaultfd (ctx.h), which has no events: huge pages the
	 * copy path took out of the process move there and are freed
	 * (migrator_take), and pages to copy are staged there
	 * (migrator_stage).  NULL where the kernel cannot move pages. */
	char *sink;
	struct own_range sink_own;
	bool sink_held;                   /* procread_hold took it */
	/* Bumped by the handler as it answers a sync: see
	 * handler_sync_answering(). */
	_Atomic uint64_t syncs_answered;
};

/* Map and protect the sync pages, map the sink (ctx's userfaultfds are
 * open). */
int order_init(struct hetmm_ctx *ctx);
/* After the userfaultfd is closed. */
void order_fini(struct hetmm_ctx *ctx);

struct migrator *migrator_enter(struct hetmm_ctx *ctx, pid_t tid);
void migrator_leave(struct migrator *m);
/* madvise(MADV_DONTNEED) of [start, end) by migrator m, its REMOVE
 * events known to the handler for the migrator's until the next
 * migrator_zap_sync(), which the pages must wait for before they are
 * published. */
int migrator_zap(struct hetmm_ctx *ctx, struct migrator *m, uintptr_t start,
		 uintptr_t end);
/* Return once the handler has handled the REMOVE events of every zap of
 * m's since the last sync: one wait for any number of zaps. */
void migrator_zap_sync(struct hetmm_ctx *ctx, struct migrator *m);
/*
 * Take the huge page mapped at start (PMD-aligned) out of the process
 * for migrator m with no event: UFFDIO_MOVE into m's sink, where it is
 * freed.  Returns the bytes taken from start on: PMD_SIZE, or less (0
 * without UFFDIO_MOVE) where the kernel stopped, at a page shared with
 * a fork child, say, or at a hole (the process discarded or moved the
 * page meanwhile); the rest is for migrator_zap, whose sync orders the
 * process's events that made a hole before the commit.
 */
size_t migrator_take(struct hetmm_ctx *ctx, struct migrator *m,
		     uintptr_t start);
/*
 * Migrator m's k-th stage (k < MIGRATOR_STAGES): a PMD of the sink that
 * pages to copy move into by UFFDIO_MOVE (frames userfaultfd), out of
 * the process's reach, for the copy to read with a memcpy.  NULL without
 * a sink.  The migrator empties it (MADV_DONTNEED: no event).
 */
char *migrator_stage(struct hetmm_ctx *ctx, const struct migrator *m,
		     unsigned k);
/* Stage k of m holds the pages to copy of [start, end), all of them
 * (0, 0: none), so that no copy reads the process there. */
void migrator_staged(struct migrator *m, unsigned k, uintptr_t start,
		     uintptr_t end);
/*
 * Return once the handler has processed every event the kernel handed it
 * before this call.  munmap returns when its event is read, not handled:
 * without this, memory mapped anew at the same address and migrated at
 * once could meet the late UNMAP meant for the old mapping.
 */
void handler_sync(struct hetmm_ctx *ctx);
/*
 * The handler is about to answer a sync.  The kernel's wake orders what
 * it did before with the synced thread's return, but not where the C
 * memory model, and so a race detector, can see: this release, and the
 * synced thread's acquire, make it a happens-before.  Whoever frees what
 * the handler may have looked at until then (a pagemap hot-remove
 * unpublished, say) relies on it.
 */
void handler_sync_answering(struct hetmm_ctx *ctx);
/* A fault on a sync page: handler_sync's, not the process's. */
bool is_sync_page(const struct hetmm_ctx *ctx, uintptr_t addr);
/* Is [start, end) inside a range a migrator remaps on its own account:
 * either of the two for an UNMAP, only the prepared one for the old range
 * of a REMAP (remap_from)?  A REMAP from the range remapped over is the
 * process's own mremap of the mapping being swapped, which it may make
 * just before the swap; its claims must follow it. */
bool migrators_own(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end,
		   bool remap_from);
/*
 * Migrator m's copies of [start, end) run (start 0: they are over), on
 * its own thread or, by_driver, on an asynchronous driver's threads too:
 * a copy that reads a page the process discarded meanwhile gets zeroes,
 * as the kernel's would, instead of waiting for a commit that waits for
 * it.  Cleared before the zap, whose REMOVE event the handler reads only
 * after any zero page it gave such a read.
 */
void migrator_copying(struct migrator *m, uintptr_t start, uintptr_t end,
		      bool by_driver);
/*
 * Is a missing fault of thread tid on [start, end) such a copy's read?
 * Being in a migrator slot is not enough: a thread is in one for every
 * sync with the handler, and a fault the handler read may be stale by
 * the time it is served (its thread woken meanwhile, by a signal or
 * another install's wake, and gone on, to a sync say), while the page
 * is out of the process on its way to a device: a zero page there would
 * stand over the device page once published (test_stale).  A copy
 * reads only the pages of its chunk, after its migration's first sync,
 * which the handler answers only once every fault it read before is
 * served: so a fault of the copying thread itself on its own range is
 * not stale.
 */
bool migrators_copying(struct hetmm_ctx *ctx, uintptr_t start,
		       uintptr_t end, pid_t tid);
/* [start, end) lies within a migrator's zap under way. */
bool migrators_zapping(struct hetmm_ctx *ctx, uintptr_t start,
		       uintptr_t end);

#endif /* HETMM_ORDER_H */
