/* SPDX-License-Identifier: MIT */
/*
 * entry.h - the checks every public call makes before it changes anything.
 */
#ifndef HETMM_ENTRY_H
#define HETMM_ENTRY_H

#include "ctx.h"

/* Counts forks seen by this process image (fork.c advances it in the
 * child): an object created before the last one is its parent's. */
extern atomic_uint fork_generation;

/* An object inherited across fork: its handler and device are the
 * parent's, so the child may not use it. */
static inline bool ctx_forked(const struct hetmm_ctx *ctx)
{
	return ctx->fork_gen !=
	       atomic_load_explicit(&fork_generation, memory_order_relaxed);
}

/*
 * Validate a user range: non-NULL, page aligned, non-empty, not wrapping,
 * inside the user half.  Returns 0 or -EINVAL.
 */
int check_user_range(const void *addr, size_t len);

/* A call on ctx: -EINVAL without one, -ECHILD in a fork child. */
int entry_ctx(const struct hetmm_ctx *ctx);
/* The same, and [addr, addr + len) a valid user range (-EINVAL). */
int entry_range(const struct hetmm_ctx *ctx, const void *addr, size_t len);

#endif /* HETMM_ENTRY_H */
