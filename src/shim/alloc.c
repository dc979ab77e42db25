/* SPDX-License-Identifier: MIT */
/*
 * alloc.c - the shim's allocator (see alloc.h).
 *
 * Blocks come from one arena of address space reserved when the library is
 * loaded, before the program runs: not from the program's malloc heap,
 * which a program may overrun as the tests do, and not from fresh mappings
 * either, which the kernel would place in whatever hole the program has
 * just punched into its own ranges (hmm2.snapshot checks that its hole
 * stays one).  The arena is reserved without commitment; a freed block's
 * pages are given back at once.  Blocks are whole pages: hetmm allocates
 * when contexts, devices, mirrors and page-table nodes are made, and the
 * shim its bounce buffers, nothing small and frequent.
 *
 * What is calloc'd is committed as it is touched (a device's page
 * metadata, most of which may never be).  What is malloc'd is written
 * through at once (the bounce buffers, a device's list of free frames,
 * which for a private device is 4 bytes a page of the machine's memory),
 * so a large malloc'd block is populated in one call, with huge pages
 * where the kernel gives them, rather than a fault at a time: that made
 * a private device of 24 GiB ready in 20 ms instead of 190 (medians, on a
 * busy 2-core VM, where faults are dear).
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/mman.h>

#include "shim.h"

#define ARENA_SIZE (1ULL << 30)
#define HDR 64                  /* block header: its length; max_align_t */
#define MAX_EXTENTS 1024
#define HUGE_BLOCK hetmm_pmd_size()   /* a huge page */

struct extent {
	uintptr_t start;
	size_t len;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uintptr_t arena, arena_end;
static struct extent free_ext[MAX_EXTENTS];   /* sorted by address */
static size_t nr_ext;

/* Reserve the arena; called from the library's constructor. */
void shim_alloc_init(void)
{
	pthread_mutex_lock(&lock);
	if (!arena) {
		void *p = shim_real_mmap(NULL, ARENA_SIZE,
					 PROT_READ | PROT_WRITE,
					 MAP_PRIVATE | MAP_ANONYMOUS |
					 MAP_NORESERVE, -1, 0);
		if (p != MAP_FAILED) {
			arena = (uintptr_t)p;
			arena_end = arena + ARENA_SIZE;
			free_ext[0] = (struct extent){ arena, ARENA_SIZE };
			nr_ext = 1;
		}
	}
	pthread_mutex_unlock(&lock);
}

/* After fork, in the child: a lock a parent's thread held is free. */
void shim_alloc_atfork_child(void)
{
	pthread_mutex_init(&lock, NULL);
}

static uintptr_t arena_take(size_t len)
{
	uintptr_t p = 0;
	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < nr_ext; i++) {
		if (free_ext[i].len < len)
			continue;
		p = free_ext[i].start;
		free_ext[i].start += len;
		free_ext[i].len -= len;
		if (!free_ext[i].len) {
			for (size_t k = i; k + 1 < nr_ext; k++)
				free_ext[k] = free_ext[k + 1];
			nr_ext--;
		}
		break;
	}
	pthread_mutex_unlock(&lock);
	return p;
}

/* Give [start, start + len) back: its pages at once, its addresses to
 * the free table (lost if the table is full). */
static void arena_give(uintptr_t start, size_t len)
{
	madvise((void *)start, len, MADV_DONTNEED);
	/* Whatever is placed here next gets no huge page it didn't ask for
	 * (a calloc'd block is committed as it is touched). */
	if (len >= HUGE_BLOCK)
		madvise((void *)start, len, MADV_NOHUGEPAGE);
	pthread_mutex_lock(&lock);
	size_t i = 0;
	while (i < nr_ext && free_ext[i].start < start)
		i++;
	bool merge_prev = i > 0 &&
			  free_ext[i - 1].start + free_ext[i - 1].len == start;
	bool merge_next = i < nr_ext && start + len == free_ext[i].start;
	if (merge_prev && merge_next) {
		free_ext[i - 1].len += len + free_ext[i].len;
		for (size_t k = i; k + 1 < nr_ext; k++)
			free_ext[k] = free_ext[k + 1];
		nr_ext--;
	} else if (merge_prev) {
		free_ext[i - 1].len += len;
	} else if (merge_next) {
		free_ext[i].start = start;
		free_ext[i].len += len;
	} else if (nr_ext < MAX_EXTENTS) {
		for (size_t k = nr_ext; k > i; k--)
			free_ext[k] = free_ext[k - 1];
		free_ext[i] = (struct extent){ start, len };
		nr_ext++;
	}
	pthread_mutex_unlock(&lock);
}

static void *map_block(size_t size)
{
	if (size > SIZE_MAX - HDR - HETMM_PAGE_SIZE) {
		errno = ENOMEM;
		return NULL;
	}
	size_t len = (size + HDR + HETMM_PAGE_SIZE - 1) &
		     ~(size_t)(HETMM_PAGE_SIZE - 1);
	char *p = (char *)arena_take(len);
	if (!p) {
		/* Arena full: a mapping of its own, the last resort. */
		p = shim_real_mmap(NULL, len, PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			errno = ENOMEM;
			return NULL;
		}
	}
	*(size_t *)p = len;
	return p + HDR;
}

void *shim_malloc(size_t size)
{
	char *p = map_block(size);
	if (p && size >= HUGE_BLOCK) {
		/* Best effort: without either the pages fault in as used. */
		size_t len = *(size_t *)(p - HDR);
		madvise(p - HDR, len, MADV_HUGEPAGE);
		madvise(p - HDR, len, MADV_POPULATE_WRITE);
	}
	return p;
}

void *shim_calloc(size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size) {
		errno = ENOMEM;
		return NULL;
	}
	return map_block(n * size);   /* untouched or given-back: zero */
}

void shim_free(void *p)
{
	if (!p)
		return;
	uintptr_t base = (uintptr_t)p - HDR;
	size_t len = *(size_t *)base;
	if (base >= arena && base < arena_end)
		arena_give(base, len);
	else
		munmap((void *)base, len);
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
