/* SPDX-License-Identifier: MIT */
/*
 * lifecycle.h - what the process does to its memory: munmap, madvise and
 * mremap, as the handler reads them from userfaultfd events.
 */
#ifndef HETMM_LIFECYCLE_H
#define HETMM_LIFECYCLE_H

#include "base.h"

struct hetmm_ctx;

void lifecycle_unmap(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end);
void lifecycle_discard(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end);
void lifecycle_remap(struct hetmm_ctx *ctx, uintptr_t from, uintptr_t to,
		     size_t len);

#endif /* HETMM_LIFECYCLE_H */
