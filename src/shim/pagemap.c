/* SPDX-License-Identifier: MIT */
/*
 * pagemap.c - /proc/self/pagemap as the program would read it under the
 * kernel's HMM.
 *
 * The kernel keeps a device-private page in its page table as a swap
 * entry, and pagemap shows it swapped (PM_SWAP), not present.  hetmm
 * keeps such a page out of the page tables (a hole userfaultfd fills), so
 * the kernel's pagemap shows nothing there.  A program's pread of its own
 * pagemap (the descriptor it opened) gets the kernel's entries with every
 * page on a device-private pagemap of hetmm's shown as PM_SWAP (frame
 * field 0: the kernel shows a swap entry's type and offset to root only,
 * and hetmm's frame is no swap offset).  hetmm's own reads of pagemap,
 * through the same calls from inside this library, are left alone, told
 * by the caller's address or the path's (shim_pagemap_opened).  Entries
 * read with read(2) after lseek are not changed (the tests use pread).
 */
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "shim.h"

#define PM_SWAP (1ULL << 62)
#define PM_ENTRY_BYTES 8

/* Descriptors the program opened on its pagemap (below this). */
#define TRACKED_FDS 1024
static atomic_bool tracked[TRACKED_FDS];

/* Is addr code of this library (hetmm, or the shim itself)? */
static bool ours(const void *addr)
{
	Dl_info self, caller;
	return dladdr((const void *)ours, &self) && dladdr(addr, &caller) &&
	       self.dli_fbase == caller.dli_fbase;
}

static bool is_own_pagemap(const char *path)
{
	return path && (!strcmp(path, "/proc/self/pagemap") ||
			!strcmp(path, "/proc/thread-self/pagemap"));
}

/* hetmm's own open: called from this library, or, where a sanitizer's
 * interceptor calls us (ThreadSanitizer's open), with a path this
 * library holds.  Tracked under TSan, hetmm's own descriptor had the
 * handler take proc_lock on every pread, which a thread of the test held
 * while it waited in a fault on the runtime's memory (test_shim hung). */
void shim_pagemap_opened(int fd, const char *path, const void *caller)
{
	if (fd >= 0 && fd < TRACKED_FDS && is_own_pagemap(path) &&
	    !ours(caller) && !ours(path))
		atomic_store(&tracked[fd], true);
}

void shim_pagemap_closed(int fd)
{
	if (fd >= 0 && fd < TRACKED_FDS)
		atomic_store(&tracked[fd], false);
}

bool shim_pagemap_tracked(int fd)
{
	return fd >= 0 && fd < TRACKED_FDS &&
	       atomic_load_explicit(&tracked[fd], memory_order_relaxed);
}

/* Is the page at addr on a device-private pagemap? */
static bool device_private(struct hetmm_ctx *ctx, uintptr_t addr)
{
	hetmm_pfn_t pfn;
	struct hetmm_page *page;
	struct hetmm_page_info pi;
	struct hetmm_pagemap_info mi;
	return hetmm_addr_to_pfn(ctx, (const void *)addr, &pfn) == 0 &&
	       hetmm_pfn_to_page(pfn, &page) == 0 &&
	       hetmm_page_get_info(page, &pi) == 0 &&
	       hetmm_pagemap_get_info(pi.pagemap, &mi) == 0 &&
	       mi.type == HETMM_MEMORY_DEVICE_PRIVATE;
}

void shim_pagemap_fix(void *buf, size_t got, off_t off)
{
	struct hetmm_ctx *ctx = shim_ctx_peek();
	if (!ctx || off < 0)
		return;
	/* Whole entries only: the first one that starts in the buffer. */
	size_t skip = (PM_ENTRY_BYTES - (size_t)off % PM_ENTRY_BYTES) %
		      PM_ENTRY_BYTES;
	for (size_t at = skip; at + PM_ENTRY_BYTES <= got;
	     at += PM_ENTRY_BYTES) {
		uint64_t page = ((uint64_t)off + at) / PM_ENTRY_BYTES;
		if (!device_private(ctx, (uintptr_t)(page * hetmm_page_size())))
			continue;
		uint64_t e = PM_SWAP;
		memcpy((char *)buf + at, &e, sizeof(e));
	}
}
