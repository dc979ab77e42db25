/* SPDX-License-Identifier: MIT */
/*
 * alloc.h - keep the shim's state out of the program's malloc heap.
 *
 * Force-included (-include) into every file of libhetmm-dmirror.so,
 * hetmm's own sources too, as they are compiled for it.  The kernel's test
 * driver keeps its state in kernel memory, where nothing the program does
 * to its heap can reach it, and the tests rely on that: hmm2.snapshot has
 * the driver copy a page into a 7-byte malloc'd buffer.  A preload shares
 * the program's address space, so its state at least lives in mappings of
 * its own rather than next to the program's heap blocks.
 */
#ifndef HETMM_SHIM_ALLOC_H
#define HETMM_SHIM_ALLOC_H

#include <stdlib.h>
#include <string.h>

void *shim_malloc(size_t size);
void *shim_calloc(size_t n, size_t size);
void *shim_realloc(void *p, size_t size);
void shim_free(void *p);

#define malloc(n) shim_malloc(n)
#define calloc(n, s) shim_calloc(n, s)
#define realloc(p, n) shim_realloc(p, n)
#define free(p) shim_free(p)

#endif /* HETMM_SHIM_ALLOC_H */
