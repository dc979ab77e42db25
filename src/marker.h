/* SPDX-License-Identifier: MIT */
/*
 * marker.h - uffd-wp markers: where a page's data is on a private
 * device, a trace of it in the kernel's own page table, which mremap
 * carries along as it carries the kernel's device-private entries.
 *
 * With UFFD_FEATURE_WP_UNPOPULATED (Linux 6.5) UFFDIO_WRITEPROTECT of
 * an empty anonymous PTE installs a marker: pagemap shows it
 * uffd-wp (bit 57) and not present; mremap moves it, MREMAP_DONTUNMAP's
 * empty source included; munmap and MADV_DONTNEED drop it; a CPU access
 * raises a missing fault, which UFFDIO_COPY or _ZEROPAGE answer over
 * it; UFFDIO_MOVE refuses it as it refuses a page (FILL_UNMARK lifts it
 * first).  The events alone cannot say which of two mremaps took a
 * range's device pages (lifecycle.c, "An UNMAP read while a move is in
 * flight"); the markers the kernel moved can.
 */
#ifndef HETMM_MARKER_H
#define HETMM_MARKER_H

#include "base.h"

struct hetmm_ctx;

/* Does ctx keep markers on its private device pages? */
bool markers_kept(const struct hetmm_ctx *ctx);
/* Mark npages from start, empty of pages: the process's data there is
 * on a private device now.  One ioctl. */
void markers_set(struct hetmm_ctx *ctx, uintptr_t start, size_t npages);
/* The flag a UFFDIO_MOVE into the process passes (uffd.h). */
unsigned markers_fill(const struct hetmm_ctx *ctx);
/* marked[k] = whether page k of npages from start holds a marker; an
 * unmapped page holds none.  -errno if pagemap would not say.  A read
 * of pagemap: for the rare event paths only. */
int markers_read(struct hetmm_ctx *ctx, uintptr_t start, size_t npages,
		 bool *marked);

#endif /* HETMM_MARKER_H */
