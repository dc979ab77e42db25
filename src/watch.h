/* SPDX-License-Identifier: MIT */
/*
 * watch.h - registering the process's memory with the context's
 * userfaultfd, a whole mapping at a time.
 */
#ifndef HETMM_WATCH_H
#define HETMM_WATCH_H

#include "ctx.h"

/* Register v, a private anonymous mapping holding [start, end), whole
 * (less memory hetmm owns), for MISSING and WP faults; the part in
 * [start, end) alone if v changed since it was looked up.  0 or -errno. */
int watch_vma(struct hetmm_ctx *ctx, const struct vma *v, uintptr_t start,
	      uintptr_t end);
/* The same for every private anonymous mapping [start, end) reaches;
 * other mappings, and gaps, are left alone. */
void watch_range(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end);

#endif /* HETMM_WATCH_H */
