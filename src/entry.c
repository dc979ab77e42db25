/* SPDX-License-Identifier: MIT */
/*
 * entry.c - the checks every public call makes before it changes anything.
 */
#include <errno.h>

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
