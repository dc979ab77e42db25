/* SPDX-License-Identifier: MIT */
/*
 * evict.h - making room on a full device (HETMM_PAGEMAP_EVICT).
 */
#ifndef HETMM_EVICT_H
#define HETMM_EVICT_H

#include "base.h"

struct hetmm_pagemap;

/* Frames for a full HETMM_PAGEMAP_EVICT pagemap, by evicting its least
 * recently used pages to system memory; returns frames taken. */
size_t pagemap_alloc_evict(struct hetmm_pagemap *pgmap, uint32_t *idx,
			   size_t nr);

#endif /* HETMM_EVICT_H */
