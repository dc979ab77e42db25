/* SPDX-License-Identifier: MIT */
/*
 * alloc.c - the shim's allocator: every block a private mapping of its own,
 * outside the program's malloc heap (see alloc.h).  hetmm allocates only
 * when contexts, devices, mirrors and page-table nodes are made, so a
 * mapping per block costs little; the kernel merges neighbouring ones.
 */
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>

#include "shim.h"

/* Header in front of each block: the mapping's length.  Keeps the block
 * aligned for anything (max_align_t). */
#define HDR 64

static void *map_block(size_t size)
{
	if (size > SIZE_MAX - HDR - HETMM_PAGE_SIZE) {
		errno = ENOMEM;
		return NULL;
	}
	size_t len = (size + HDR + HETMM_PAGE_SIZE - 1) &
		     ~(size_t)(HETMM_PAGE_SIZE - 1);
	char *p = shim_real_mmap(NULL, len, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		errno = ENOMEM;
		return NULL;
	}
	*(size_t *)p = len;
	return p + HDR;
}

void *shim_malloc(size_t size)
{
	return map_block(size);
}

void *shim_calloc(size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size) {
		errno = ENOMEM;
		return NULL;
	}
	return map_block(n * size);   /* fresh mappings are zero */
}

void shim_free(void *p)
{
	if (!p)
		return;
	char *base = (char *)p - HDR;
	munmap(base, *(size_t *)base);
}

void *shim_realloc(void *p, size_t size)
{
	if (!p)
		return map_block(size);
	char *base = (char *)p - HDR;
	size_t have = *(size_t *)base - HDR;
	if (size <= have)
		return p;
	void *q = map_block(size);
	if (!q)
		return NULL;
	memcpy(q, p, have);
	shim_free(p);
	return q;
}
