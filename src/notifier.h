/* SPDX-License-Identifier: MIT */
/*
 * notifier.h - interval notifiers (mmu_interval_notifier): what the rest
 * of hetmm calls to tell devices that a range changes.
 */
#ifndef HETMM_NOTIFIER_H
#define HETMM_NOTIFIER_H

#include "base.h"

struct hetmm_ctx;

/* Tell every notifier overlapping [start, end) that it changes. */
void notifiers_invalidate(struct hetmm_ctx *ctx, uintptr_t start,
			  uintptr_t end, enum hetmm_event why);
/* Context teardown: RELEASE to all, then free them. */
void notifiers_release(struct hetmm_ctx *ctx);
/* The context of a notifier a driver hands in, and whether its range
 * covers [start, end). */
struct hetmm_ctx *notifier_ctx(const struct hetmm_notifier *n);
bool notifier_covers(const struct hetmm_notifier *n, uintptr_t start,
		     uintptr_t end);

#endif /* HETMM_NOTIFIER_H */
