/* SPDX-License-Identifier: MIT */
/*
 * watch.c - registering the process's memory with the context's
 * userfaultfd, a whole mapping at a time.
 *
 * The context hears of munmap, madvise and mremap, and serves faults,
 * only in ranges registered with its userfaultfd, so what it migrates or
 * a device faults in must be registered.  Registering part of a mapping
 * splits it (the kernel keeps the registration per mapping), and mremap()
 * moves one mapping: the process's own mremap of a mapping it made as
 * one would fail with EFAULT, where the kernel's HMM leaves the mapping
 * whole.  Linux 6.1 also never merges a registration that starts inside
 * a mapping with a registered neighbour, so migrating a region in pieces
 * left it split for good there.  So the whole mapping is registered, once
 * (registering it again is one cheap ioctl: the kernel skips a mapping
 * registered alike, whatever its size).
 *
 * The rest of the mapping is then the handler's to serve: a first touch
 * of a page hetmm has no entry for is a hole, filled as the kernel would
 * (fault.c, fault_zero), and munmap, madvise and mremap there raise
 * events that find no entries (lifecycle.c).  Memory hetmm owns is left
 * out even where the kernel merged it into the process's mapping: the
 * handler faulting on its own pages would wait for itself.
 */
#include "compat.h"
#include "entry.h"
#include "uffd.h"
#include "watch.h"

#define WATCH_MODE (UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP)

int watch_vma(struct hetmm_ctx *ctx, const struct vma *v, uintptr_t start,
	      uintptr_t end)
{
	start = MAX(start, v->start);
	end = MIN(end, v->end);
	uintptr_t lo = v->start, hi = v->end;
	entry_unowned_span(ctx, start, end, &lo, &hi);
	if (uffd_register(ctx->uffd.fd, lo, hi - lo, WATCH_MODE, NULL) == 0)
		return 0;
	/* Unmapped or remapped since v was read: register what was asked,
	 * which fails as the caller needs to hear if that is gone too. */
	return uffd_register(ctx->uffd.fd, start, end - start, WATCH_MODE,
			     NULL);
}

void watch_range(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	struct vma v;
	for (uintptr_t a = start; a < end; a = v.end) {
		if (vma_find(&ctx->vmaq, a, &v) < 0)
			return;
		if (vma_is_private_anon(&v) && !(v.flags & VMA_SPECIAL))
			watch_vma(ctx, &v, a, end);
	}
}
