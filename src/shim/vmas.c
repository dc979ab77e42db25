/* SPDX-License-Identifier: MIT */
/*
 * vmas.c - the process's mappings as /proc/self/maps shows them, and the
 * one madvise() that needs them: MADV_FREE over device-coherent pages.
 *
 * The maps file is read in pieces into the stack, never the program's
 * heap (alloc.h says why).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shim.h"

#ifndef MADV_FREE
#define MADV_FREE 8
#endif

/* One line; 0 if it is not a mapping's line. */
static int parse_line(char *line, struct shim_vma *v)
{
	unsigned long lo, hi;
	int off = 0;
	if (sscanf(line, "%lx-%lx %4s %*x %*x:%*x %lu %n", &lo, &hi, v->perms,
		   &v->ino, &off) < 4 || !off)
		return 0;
	v->start = lo;
	v->end = hi;
	v->path = line + off;
	return 1;
}

int shim_vmas_walk(uintptr_t start, uintptr_t end, shim_vma_fn fn, void *arg)
{
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	char buf[8192];
	size_t have = 0;
	int rc = 0;
	for (;;) {
		ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);
		if (n < 0) {
			rc = -errno;
			break;
		}
		have += (size_t)n;
		buf[have] = 0;
		char *line = buf, *nl;
		struct shim_vma v;
		while (!rc && (nl = strchr(line, '\n'))) {
			*nl = 0;
			if (parse_line(line, &v) && v.end > start &&
			    v.start < end)
				rc = fn(&v, arg);
			line = nl + 1;
		}
		if (rc || n == 0)
			break;
		/* A line longer than the buffer (a path of thousands of
		 * bytes) is dropped whole rather than misread. */
		have -= (size_t)(line - buf);
		if (have == sizeof(buf) - 1)
			have = 0;
		memmove(buf, line, have);
	}
	shim_real_close(fd);
	return rc;
}

/* ------------------------------------------------------------------------
 * MADV_FREE
 */

/* hetmm's emulated coherent memory, as its device names its memfd. */
static int coherent_vma(const struct shim_vma *v)
{
	return v->perms[3] == 's' && !strncmp(v->path, "/memfd:hetmm-coherent",
					       21);
}

struct free_walk {
	uintptr_t next;   /* the first address not yet covered */
	uintptr_t end;
	int pass;         /* 0: check the range, 1: free its private parts */
};

static int free_vma(const struct shim_vma *v, void *arg)
{
	struct free_walk *w = arg;
	if (v->start > w->next)
		return -ENOMEM;              /* a hole, as the kernel says */
	uintptr_t lo = w->next, hi = v->end < w->end ? v->end : w->end;
	w->next = hi;
	if (coherent_vma(v))
		return 0;
	if (v->perms[3] != 'p' || v->ino)
		return -EINVAL;              /* not anonymous: the kernel's no */
	if (w->pass && shim_real_madvise((void *)lo, hi - lo, MADV_FREE))
		return -errno;
	return 0;
}

/*
 * A program's private anonymous range holding device-coherent pages is
 * split into shared mappings of the device's memfd where those pages are
 * (hetmm.h, "Coherent pages and the process's mappings"), and the kernel
 * takes MADV_FREE only on private anonymous memory: it walks the range's
 * mappings in order, frees the private ones and fails at the first shared
 * one with EINVAL, having told userfaultfd (and so hetmm) that one's
 * range is removed.  hetmm discards the coherent pages of a removed range
 * (they read as zeroes, as pages MADV_FREE has freed may).  The kernel's
 * own coherent pages stay in the anonymous mapping, where MADV_FREE takes
 * them: lazily freeable, kept or freed as memory allows.  So here the
 * call is finished as the kernel's would have gone: the private anonymous
 * parts get the real MADV_FREE, the coherent pages are left as they are
 * (those the kernel's walk reached discarded, the others kept: both what
 * MADV_FREE may do), and 0.  Any other mapping in the range, or a hole,
 * fails as the kernel fails it, checked before anything more is freed.
 */
int shim_madvise_free(void *addr, size_t len)
{
	uintptr_t start = (uintptr_t)addr;
	size_t size = (len + HETMM_PAGE_SIZE - 1) & ~(size_t)(HETMM_PAGE_SIZE - 1);
	if ((start & (HETMM_PAGE_SIZE - 1)) || size < len || start + size < start)
		return -EINVAL;
	for (int pass = 0; pass < 2; pass++) {
		struct free_walk w = { start, start + size, pass };
		int rc = shim_vmas_walk(start, start + size, free_vma, &w);
		if (!rc && w.next < w.end)
			rc = -ENOMEM;
		if (rc)
			return rc;
	}
	return 0;
}
