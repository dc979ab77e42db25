/* SPDX-License-Identifier: MIT */
/*
 * altmap.h - per-page metadata inside the device memory it describes
 * (the kernel's struct vmem_altmap): HETMM_PAGEMAP_ALTMAP.
 */
#ifndef HETMM_ALTMAP_H
#define HETMM_ALTMAP_H

#include <stdint.h>

struct hetmm_ctx;
struct hetmm_pagemap;

/* Pages at the start of nr_pages of device memory that its metadata
 * takes. */
uint64_t altmap_pages(uint64_t nr_pages);
/*
 * Put pgmap's metadata in its first pages (page_address 0 on, which must
 * be contiguous, mapped readable and writable): zeroed, and hetmm's until
 * altmap_release(), so no call of the process's may migrate or register
 * them.  -EINVAL if the memory there won't do.
 */
int altmap_place(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap);
/* The pages are the driver's again (hot-remove, or a failed hot-add). */
void altmap_release(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap);

#endif /* HETMM_ALTMAP_H */
