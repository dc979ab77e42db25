/* SPDX-License-Identifier: MIT */
/*
 * marker.c - uffd-wp markers on pages whose data is on a private device
 * (marker.h says what the kernel does with them and why hetmm keeps
 * them).
 */
#include "compat.h"
#include "ctx.h"
#include "marker.h"
#include "uffd.h"
#include "vma.h"

bool markers_kept(const struct hetmm_ctx *ctx)
{
	return ctx->uffd.features & UFFD_FEATURE_WP_UNPOPULATED;
}

void markers_set(struct hetmm_ctx *ctx, uintptr_t start, size_t npages)
{
	/* A range unmapped meanwhile has nothing to mark: ENOENT. */
	if (markers_kept(ctx))
		uffd_writeprotect(ctx->uffd.fd, start, npages * PAGE_SIZE,
				  WP_ON);
}

unsigned markers_fill(const struct hetmm_ctx *ctx)
{
	return markers_kept(ctx) ? FILL_UNMARK : 0;
}

int markers_read(struct hetmm_ctx *ctx, uintptr_t start, size_t npages,
		 bool *marked)
{
	uint8_t pf[CHUNK_PAGES];
	for (size_t off = 0; off < npages;) {
		size_t n = MIN(npages - off, (size_t)CHUNK_PAGES);
		int rc = vma_page_presence(&ctx->vmaq,
					   start + off * PAGE_SIZE, n, pf);
		if (rc)
			return rc;
		for (size_t k = 0; k < n; k++)
			marked[off + k] = (pf[k] & (PG_UFFD_WP | PG_PRESENT)) ==
					  PG_UFFD_WP;
		off += n;
	}
	return 0;
}
