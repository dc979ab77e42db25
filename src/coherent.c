/* SPDX-License-Identifier: MIT */
/*
 * coherent.c - DEVICE_COHERENT pages at the process's own addresses.
 *
 * A coherent device's memory is a file of its own (the emulated device
 * uses a memfd).  A process page on such a device is that file's page,
 * mapped shared at the process page's address: the CPU reads and writes
 * device memory directly, with no fault, while the shadow word says
 * DEVICE | pfn as for any device page.
 *
 * Mappings are swapped by mremap() of a prepared range, never by mmap()
 * over the old one: the prepared range is registered with the context's
 * userfaultfd before it lands, so there is no instant at which the
 * address is mapped but not watched.  To the device: the file's pages
 * are mapped somewhere, registered for MISSING faults (so that munmap,
 * mremap and madvise of them raise events, and a page punched out of the
 * file faults instead of reading another one), and moved over the
 * claimed, write-protected, copied private pages.  Back: an empty private
 * anonymous range, registered for MISSING and WP faults, is moved over
 * the coherent mapping; a CPU access after the move misses, finds the
 * page claimed and waits; the bytes are then installed atomically by
 * UFFDIO_COPY from the device's own view, as for any device page, and the
 * waiters woken.  The range is private anonymous memory again, so fork's
 * copy-on-write and later migrations treat it as before.
 *
 * The UNMAP and REMAP events such a move raises are ours, not the
 * process's: the migrator slot records the two ranges, the handler skips
 * events inside them (lifecycle.c), and handler_sync() makes sure it has
 * seen them before the record goes.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat.h"
#include "coherent.h"
#include "ctx.h"
#include "order.h"
#include "pagemap.h"
#include "shadow.h"
#include "testhook.h"

struct hetmm_pagemap *coherent_pagemap(uint64_t e, uint64_t *idx)
{
	if (!shadow_on_device(e))
		return NULL;
	struct hetmm_pagemap *pgmap = pfn_pagemap(shadow_pfn(e), idx);
	return pgmap && pagemap_is_coherent(pgmap) ? pgmap : NULL;
}

static int vma_prot(const struct vma *v)
{
	return ((v->flags & VMA_READ) ? PROT_READ : 0) |
	       ((v->flags & VMA_WRITE) ? PROT_WRITE : 0) |
	       ((v->flags & VMA_EXEC) ? PROT_EXEC : 0);
}

/* Move the prepared range from over [to, to + len), as the migrator's
 * own doing; the prepared range is gone either way. */
static int own_remap(struct hetmm_ctx *ctx, uintptr_t from, uintptr_t to,
		     size_t len)
{
	/* The process's events before the swap are handled without the
	 * record: an UNMAP of the range is not ours. */
	handler_sync(ctx);
	struct migrator *m = migrator_enter(ctx, gettid());
	atomic_store(&m->own_end[0], to + len);
	atomic_store(&m->own_start[0], to);
	atomic_store(&m->own_end[1], from + len);
	atomic_store(&m->own_start[1], from);
	TEST_HOOK(TEST_HOOK_OWN_REMAP, to, len);
	void *p = mremap((void *)from, len, len, MREMAP_MAYMOVE | MREMAP_FIXED,
			 (void *)to);
	int rc = p == MAP_FAILED ? -errno : 0;
	if (rc)
		munmap((void *)from, len);
	/* The events it raised are handled before the record goes. */
	handler_sync(ctx);
	for (int i = 0; i < 2; i++) {
		atomic_store(&m->own_start[i], 0);
		atomic_store(&m->own_end[i], 0);
	}
	migrator_leave(m);
	return rc;
}

int coherent_map(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
		 uintptr_t addr, uint64_t idx, size_t n)
{
	size_t len = n * PAGE_SIZE;
	struct vma v;
	if (vma_find(&ctx->vmaq, addr, &v) < 0 || v.start > addr ||
	    v.end < addr + len)
		return -EFAULT;
	uint64_t off = 0;
	int fd = pgmap->ops->page_fd(pgmap, idx, &off);
	if (fd < 0)
		return -EIO;
	void *s = mmap(NULL, len, vma_prot(&v), MAP_SHARED, fd, (off_t)off);
	if (s == MAP_FAILED)
		return -errno;
	/* Registered as the process's memory is (watch.c), write-protect
	 * mode too, though nothing is ever protected there: mappings of
	 * consecutive frames put side by side then merge into one, which
	 * the process can mremap whole, and a later registration of the
	 * whole mapping the range was in changes nothing.  With only
	 * MISSING, a 2 MiB range migrated as two chunks stayed two
	 * mappings (one of them registered again by the second chunk, with
	 * WP), and its mremap failed with EFAULT.  A kernel that cannot
	 * write-protect shared memory gets MISSING alone. */
	int rc = uffd_register(ctx->uffd.fd, (uintptr_t)s, len,
			       UFFDIO_REGISTER_MODE_MISSING |
			       UFFDIO_REGISTER_MODE_WP, NULL);
	if (rc == -EINVAL)
		rc = uffd_register(ctx->uffd.fd, (uintptr_t)s, len,
				   UFFDIO_REGISTER_MODE_MISSING, NULL);
	if (rc) {
		munmap(s, len);
		return rc;
	}
	return own_remap(ctx, (uintptr_t)s, addr, len);
}

size_t coherent_unmap(struct hetmm_ctx *ctx, uintptr_t addr, size_t n)
{
	struct vma v;
	if (vma_find(&ctx->vmaq, addr, &v) < 0 || v.start > addr ||
	    !(v.flags & VMA_SHARED))
		return 0;
	size_t k = MIN(n, (size_t)((v.end - addr) >> PAGE_SHIFT));
	size_t len = k * PAGE_SIZE;
	void *s = mmap(NULL, len, vma_prot(&v),
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (s == MAP_FAILED)
		return 0;
	if (uffd_register(ctx->uffd.fd, (uintptr_t)s, len,
			  UFFDIO_REGISTER_MODE_MISSING |
			  UFFDIO_REGISTER_MODE_WP, NULL)) {
		munmap(s, len);
		return 0;
	}
	return own_remap(ctx, (uintptr_t)s, addr, len) ? 0 : k;
}

bool coherent_fault(struct hetmm_ctx *ctx, uint64_t e, uintptr_t addr)
{
	if (!shadow_is_coherent(e))
		return false;
	/* The file page is gone (MADV_REMOVE, say): a zeroed one, as the
	 * kernel gives a hole.  EEXIST: it is there already. */
	if (uffd_fill(ctx->uffd.fd, FILL_COPY, addr, (uintptr_t)ctx->zero_src,
		      PAGE_SIZE, FILL_WAKE | FILL_ONCE) < 0)
		uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
	return true;
}

void coherent_zero(uint64_t e)
{
	uint64_t idx;
	struct hetmm_pagemap *pgmap = coherent_pagemap(e, &idx);
	if (pgmap)
		memset(pgmap->ops->page_address(pgmap, idx), 0, PAGE_SIZE);
}
