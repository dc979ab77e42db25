/* SPDX-License-Identifier: MIT */
/*
 * lifecycle.h - what the process does to its memory: munmap, madvise and
 * mremap, as the handler reads them from userfaultfd events.
 */
#ifndef HETMM_LIFECYCLE_H
#define HETMM_LIFECYCLE_H

#include "base.h"

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

struct vacated_ranges {
	struct vacated r[VACATED_MAX];
	unsigned next;                    /* the slot to reuse next */
};

void lifecycle_unmap(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end);
void lifecycle_discard(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end);
void lifecycle_remap(struct hetmm_ctx *ctx, uintptr_t from, uintptr_t to,
		     size_t len);

#endif /* HETMM_LIFECYCLE_H */
