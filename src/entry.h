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

/*
 * Memory hetmm itself uses: the handler's pages (its doorbell, the sync
 * pages, staging, zeroes) and the device memory pages move into.  No
 * call may migrate it, fault it in for a device or pin it: the handler
 * would end up faulting on itself, or the page it waits for would never
 * fault.  The owner keeps the node (base.h), as long as the memory is
 * there.
 */
void entry_own(struct hetmm_ctx *ctx, struct own_range *r, const void *addr,
	       size_t len);
void entry_disown(struct hetmm_ctx *ctx, struct own_range *r);
/* The same for the stack of thread th, one of hetmm's own: 0 or
 * -errno. */
int entry_own_thread_stack(struct hetmm_ctx *ctx, pthread_t th,
			   struct own_range *own);
/* Narrow [*lo, *hi), which holds [start, end) and no memory hetmm owns
 * there, to the largest span around [start, end) with none at all. */
void entry_unowned_span(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end,
			uintptr_t *lo, uintptr_t *hi);

/* A call on ctx: -EINVAL without one, -ECHILD in a fork child. */
int entry_ctx(const struct hetmm_ctx *ctx);
/* The same, and [addr, addr + len) a valid user range (-EINVAL). */
int entry_range(const struct hetmm_ctx *ctx, const void *addr, size_t len);
/* The same for a call that touches the pages of the range on the
 * process's behalf (migration, range fault, pin, exclusive access): also
 * -EINVAL if the range reaches memory hetmm owns. */
int entry_user_range(struct hetmm_ctx *ctx, const void *addr, size_t len);

#endif /* HETMM_ENTRY_H */
