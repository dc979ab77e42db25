/* SPDX-License-Identifier: MIT */
/*
 * fixed.h - FS_DAX and GENERIC pagemaps: CPU memory mapped in place.
 */
#ifndef HETMM_FIXED_H
#define HETMM_FIXED_H

struct hetmm_ctx;
struct hetmm_pagemap;

/* The driver's mapping: contiguous, accessible and, for FS_DAX, a file. */
int fixed_check_mapping(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap);
/* Every page in use at its address: shadow entries FIXED | pfn; -EBUSY if
 * hetmm holds one of the pages otherwise (nothing changed then). */
int fixed_publish(struct hetmm_pagemap *pgmap);
/* Hot-remove: wait a bounded time (HETMM_REMOVE_PIN_WAIT_MS) for the
 * holds there are (-EBUSY), then take the entries back. */
int fixed_drain(struct hetmm_pagemap *pgmap);

#endif /* HETMM_FIXED_H */
