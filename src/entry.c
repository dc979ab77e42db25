/* SPDX-License-Identifier: MIT */
/*
 * entry.c - the checks every public call makes before it changes anything.
 */
#include <errno.h>

#include "away.h"
#include "entry.h"

atomic_uint fork_generation;

int check_user_range(const void *addr, size_t len)
{
	uintptr_t a = (uintptr_t)addr;
	if (!addr || !len || (a & ~PAGE_MASK) || (len & ~PAGE_MASK))
		return -EINVAL;
	if (a + len < a || a + len > USER_VA_END)
		return -EINVAL;
	return 0;
}

int entry_ctx(const struct hetmm_ctx *ctx)
{
	if (!ctx)
		return -EINVAL;
	return ctx_forked(ctx) ? -ECHILD : 0;
}

int entry_range(const struct hetmm_ctx *ctx, const void *addr, size_t len)
{
	int rc = entry_ctx(ctx);
	return rc ? rc : check_user_range(addr, len);
}

void entry_own(struct hetmm_ctx *ctx, struct own_range *r, const void *addr,
	       size_t len)
{
	r->start = (uintptr_t)addr;
	r->end = r->start + len;
	away_mutex_lock(&ctx->own_lock);
	r->next = ctx->own;
	ctx->own = r;
	pthread_mutex_unlock(&ctx->own_lock);
}

void entry_disown(struct hetmm_ctx *ctx, struct own_range *r)
{
	away_mutex_lock(&ctx->own_lock);
	for (struct own_range **pp = &ctx->own; *pp; pp = &(*pp)->next) {
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	}
	pthread_mutex_unlock(&ctx->own_lock);
}

static bool owns_any(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	bool owned = false;
	away_mutex_lock(&ctx->own_lock);
	for (struct own_range *r = ctx->own; r && !owned; r = r->next)
		owned = start < r->end && r->start < end;
	pthread_mutex_unlock(&ctx->own_lock);
	return owned;
}

void entry_unowned_span(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end,
			uintptr_t *lo, uintptr_t *hi)
{
	away_mutex_lock(&ctx->own_lock);
	for (struct own_range *r = ctx->own; r; r = r->next) {
		if (r->end <= start && r->end > *lo)
			*lo = r->end;
		if (r->start >= end && r->start < *hi)
			*hi = r->start;
	}
	pthread_mutex_unlock(&ctx->own_lock);
}

int entry_user_range(struct hetmm_ctx *ctx, const void *addr, size_t len)
{
	int rc = entry_range(ctx, addr, len);
	if (rc)
		return rc;
	uintptr_t start = (uintptr_t)addr;
	return owns_any(ctx, start, start + len) ? -EINVAL : 0;
}

/*
 * The handler's stack, and the deputy's, are memory hetmm owns: a
 * thread's stack is anonymous memory the kernel may merge with a mapping
 * of the process's, and were it registered with the rest (watch.c), the
 * thread would take a missing fault on its own stack as it grows, and
 * wait for itself.
 */
int entry_own_thread_stack(struct hetmm_ctx *ctx, pthread_t th,
			   struct own_range *own)
{
	pthread_attr_t a;
	void *addr;
	size_t size;
	int rc = -pthread_getattr_np(th, &a);
	if (rc)
		return rc;
	rc = -pthread_attr_getstack(&a, &addr, &size);
	if (!rc)
		entry_own(ctx, own, addr, size);
	pthread_attr_destroy(&a);
	return rc;
}
