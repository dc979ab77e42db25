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

/* The contexts of the process, which may have to hand memory over to
 * one another: a context joins once created, leaves before it goes. */
void watch_join(struct hetmm_ctx *ctx);
void watch_leave(struct hetmm_ctx *ctx);
/* In a fork child: the parent's contexts are dead. */
void watch_forget_all(void);

#endif /* HETMM_WATCH_H */
