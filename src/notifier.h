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

#endif /* HETMM_NOTIFIER_H */
