/* SPDX-License-Identifier: MIT */
/*
 * coherent.h - DEVICE_COHERENT pages mapped at the process's addresses
 * (MEMORY_DEVICE_COHERENT): the CPU reaches them where they are.
 */
#ifndef HETMM_COHERENT_H
#define HETMM_COHERENT_H

#include "base.h"

struct hetmm_ctx;
struct hetmm_pagemap;

/* The pagemap of a device entry e if it is coherent, else NULL.  Only
 * for a claimed entry: hot-remove may free the pagemap of another. */
struct hetmm_pagemap *coherent_pagemap(uint64_t e, uint64_t *idx);
/* Replace [addr, addr + n pages) with a shared mapping of device pages
 * [idx, idx + n) of pgmap, registered for MISSING faults. */
int coherent_map(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
		 uintptr_t addr, uint64_t idx, size_t n);
/* Replace the coherent mapping at [addr, addr + up to n pages) with an
 * empty private anonymous range, registered for MISSING and WP faults,
 * with the same protection; returns pages done (stops at a mapping's
 * end), 0 if the mapping is not there. */
size_t coherent_unmap(struct hetmm_ctx *ctx, uintptr_t addr, size_t n);
/* A MISSING fault on a coherent page (its file page was punched out):
 * fill it with zeroes.  False if e is not a coherent page. */
bool coherent_fault(struct hetmm_ctx *ctx, uint64_t e, uintptr_t addr);
/* madvise discard of a coherent page: it reads as zeroes again. */
void coherent_zero(uint64_t e);

#endif /* HETMM_COHERENT_H */
