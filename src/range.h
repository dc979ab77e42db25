/* SPDX-License-Identifier: MIT */
/*
 * range.h - the device's view of the process: range fault and snapshot
 * (the kernel's hmm_range_fault).
 */
#ifndef HETMM_RANGE_H
#define HETMM_RANGE_H

#include "base.h"

struct hetmm_ctx;

/* A mirror entry: how a device may reach one process page. */
#define MENT_VALID (1ULL << 63)
#define MENT_WRITE (1ULL << 62)
#define MENT_DEVICE (1ULL << 61)   /* payload: device pfn (local) */
#define MENT_EXCL (1ULL << 60)     /* exclusive access (make_exclusive) */

int range_fault(struct hetmm_ctx *ctx, const void *owner, uintptr_t start,
		size_t npages, bool write, uint64_t *entries);
int range_snapshot(struct hetmm_ctx *ctx, const void *owner, uintptr_t start,
		   size_t npages, uint8_t *prot);

#endif /* HETMM_RANGE_H */
