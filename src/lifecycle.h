/* SPDX-License-Identifier: MIT */
/*
 * lifecycle.h - what the process does to its memory: munmap, madvise and
 * mremap, as the handler reads them from userfaultfd events.
 */
#ifndef HETMM_LIFECYCLE_H
#define HETMM_LIFECYCLE_H

#include "base.h"
#include "vtab.h"

struct hetmm_ctx;

/*
 * A range an mremap vacated, whose UNMAP event is still to come: the
 * kernel queues it only once the REMAP is read, so another thread's
 * REMAP into the range can come first.  keep_lo..keep_hi spans what such
 * REMAPs put there since, which the late UNMAP must spare.  The
 * handler's alone (lifecycle.c).
 */
struct vacated {
	uintptr_t start, end;             /* none while start is 0 */
	uintptr_t keep_lo, keep_hi;       /* none while equal */
};
#define VACATED_MAX 16

/* A page to move from an mremap's old place to its new one, once the
 * kernel lets us (lifecycle.c: remnant_rescue). */
struct rescue {
	uintptr_t from, to;
};
#define RESCUE_MAX 16

/* A range a REMAP moved pages onto while device entries of what was
 * there still stood: the event that took that away is still to come
 * (lifecycle.c, "REMAPs read out of order").  Those entries wait in
 * vacated_ranges.parked_tab, by page number, for it.  Or (unmapped) a
 * range an UNMAP was read for while an mremap's REMAP may still have
 * been to come, whose entries that REMAP may have taken along
 * (lifecycle.c, "An UNMAP read while a move is in flight"). */
struct parked {
	uintptr_t start, end;
	bool unmapped;
};
#define PARKED_MAX 16

/* A REMAP the handler read: a REMAP onto exactly [from, from + len) read
 * later may be of a move the kernel made before this one (lifecycle.c,
 * "A move onto a range that had moved on"). */
struct forward {
	uintptr_t from, to;
	size_t len;                       /* none while 0 */
	bool carried;                     /* it moved entries on */
	bool unmapped;                    /* an UNMAP of from read since */
};
#define FORWARD_MAX 16

struct vacated_ranges {
	struct vacated r[VACATED_MAX];
	unsigned next;                    /* the slot to reuse next */
	struct rescue rescue[RESCUE_MAX];
	unsigned nrescue;
	struct parked parked[PARKED_MAX]; /* disjoint */
	unsigned nparked;
	struct vtab parked_tab;
	struct forward fwd[FORWARD_MAX];
	unsigned fwd_next;                /* the slot to reuse next */
	/* Where the REMAP being handled puts the old range's entries,
	 * once forward_follow said; 0 before and after. */
	_Atomic uintptr_t remap_dest;
};

void lifecycle_unmap(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end);
void lifecycle_discard(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end);
void lifecycle_remap(struct hetmm_ctx *ctx, uintptr_t from, uintptr_t to,
		     size_t len);
/* On the deputy, while the handler is away in the middle of a REMAP:
 * where it puts the old range's entries, the one range besides the old
 * one where it gives entries to pages; 0 while it does not know yet. */
uintptr_t lifecycle_remap_dest(const struct hetmm_ctx *ctx);
/* After a batch of messages: pages an mremap left behind that the kernel
 * would not let us move yet (an event was waiting to be read). */
void lifecycle_retry(struct hetmm_ctx *ctx);
/* A sync through the handler succeeded: the kernel had no event of any
 * mremap left to hand out, and the handler has handled all it read.
 * Entries an UNMAP parked are freed: no REMAP is left to claim them. */
void lifecycle_settled(struct hetmm_ctx *ctx);

#endif /* HETMM_LIFECYCLE_H */
