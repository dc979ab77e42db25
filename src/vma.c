/* SPDX-License-Identifier: MIT */
/*
 * vma.c - ask the kernel about a range of the process.
 *
 * VMAs come from the PROCMAP_QUERY ioctl when the kernel has it (one VMA
 * per call, no text) and from /proc/self/maps otherwise.  Page presence
 * comes from /proc/self/pagemap; zero-page and huge-page state from the
 * PAGEMAP_SCAN ioctl where it exists.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compat.h"
#include "vma.h"

int vmaq_open(struct vmaq *q)
{
	q->maps_fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (q->maps_fd < 0)
		return -errno;
	q->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (q->pagemap_fd < 0) {
		int err = -errno;
		close(q->maps_fd);
		return err;
	}

	struct procmap_query pq = {
		.size = sizeof(pq),
		.query_addr = (uintptr_t)&pq,   /* the stack is mapped */
	};
	q->has_query = ioctl(q->maps_fd, PROCMAP_QUERY, &pq) == 0;

	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.start = (uintptr_t)&arg & PAGE_MASK,
		.end = ((uintptr_t)&arg & PAGE_MASK) + PAGE_SIZE,
	};
	q->has_scan = ioctl(q->pagemap_fd, PAGEMAP_SCAN, &arg) >= 0;
	return 0;
}

void vmaq_close(struct vmaq *q)
{
	if (q->maps_fd >= 0)
		close(q->maps_fd);
	if (q->pagemap_fd >= 0)
		close(q->pagemap_fd);
	q->maps_fd = q->pagemap_fd = -1;
}

static int vma_find_query(struct vmaq *q, uintptr_t addr, struct vma *vma)
{
	struct procmap_query pq = { .size = sizeof(pq), .query_addr = addr };
	if (ioctl(q->maps_fd, PROCMAP_QUERY, &pq) < 0)
		return -errno;
	vma->start = pq.vma_start;
	vma->end = pq.vma_end;
	vma->flags = 0;
	if (pq.vma_flags & PROCMAP_QUERY_VMA_READABLE)
		vma->flags |= VMA_READ;
	if (pq.vma_flags & PROCMAP_QUERY_VMA_WRITABLE)
		vma->flags |= VMA_WRITE;
	if (pq.vma_flags & PROCMAP_QUERY_VMA_EXECUTABLE)
		vma->flags |= VMA_EXEC;
	if (pq.vma_flags & PROCMAP_QUERY_VMA_SHARED)
		vma->flags |= VMA_SHARED;
	/* Anonymous VMAs have no inode; shmem and hugetlb do. */
	if (pq.inode || pq.vma_page_size != PAGE_SIZE)
		vma->flags |= VMA_FILE;
	return 0;
}

/* The fallback: read /proc/self/maps line by line. */
int vma_find_maps(uintptr_t addr, struct vma *vma)
{
	FILE *f = fopen("/proc/self/maps", "re");
	if (!f)
		return -errno;
	char line[512];
	int rc = -ENOENT;
	while (fgets(line, sizeof(line), f)) {
		uintptr_t lo, hi;
		char perms[8];
		unsigned long long off, inode;
		unsigned maj, min;
		if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %7s %llx %x:%x %llu",
			   &lo, &hi, perms, &off, &maj, &min, &inode) != 7)
			continue;
		if (addr < lo || addr >= hi)
			continue;
		vma->start = lo;
		vma->end = hi;
		vma->flags = 0;
		if (perms[0] == 'r')
			vma->flags |= VMA_READ;
		if (perms[1] == 'w')
			vma->flags |= VMA_WRITE;
		if (perms[2] == 'x')
			vma->flags |= VMA_EXEC;
		if (perms[3] == 's')
			vma->flags |= VMA_SHARED;
		if (inode)
			vma->flags |= VMA_FILE;
		rc = 0;
		break;
	}
	fclose(f);
	return rc;
}

int vma_find(struct vmaq *q, uintptr_t addr, struct vma *vma)
{
	return q->has_query ? vma_find_query(q, addr, vma)
			    : vma_find_maps(addr, vma);
}

size_t vma_accessible(struct vmaq *q, uintptr_t start, uintptr_t end,
		      unsigned need, int *why)
{
	struct vma v;
	*why = 0;
	for (uintptr_t a = start; a < end; a = v.end) {
		if (vma_find(q, a, &v) < 0 || v.start > a)
			*why = -EFAULT;
		else if ((need & VMA_NEED_SOME) &&
			 !(v.flags & (VMA_READ | VMA_WRITE | VMA_EXEC)))
			*why = -EFAULT;
		else if ((need & VMA_READ) && !(v.flags & VMA_READ))
			*why = -EFAULT;
		else if ((need & VMA_WRITE) && !(v.flags & VMA_WRITE))
			*why = -EPERM;
		else if ((need & VMA_NEED_ANON) && !vma_is_private_anon(&v))
			*why = -EPERM;
		if (*why)
			return a - start;
	}
	return end - start;
}

int vma_check_accessible(struct vmaq *q, uintptr_t start, uintptr_t end)
{
	int why;
	return vma_accessible(q, start, end, VMA_NEED_SOME, &why) ==
	       end - start ?
	       0 : -EINVAL;
}

/* /proc/self/pagemap bits (Documentation/admin-guide/mm/pagemap.rst). */
#define PM_PRESENT (1ULL << 63)
#define PM_SWAP (1ULL << 62)
#define PM_FILE (1ULL << 61)
#define PM_MMAP_EXCLUSIVE (1ULL << 56)

int vma_page_presence(struct vmaq *q, uintptr_t start, size_t npages,
			      uint8_t *flags)
{
	uint64_t buf[CHUNK_PAGES];
	for (size_t done = 0; done < npages;) {
		size_t n = MIN(npages - done, (size_t)CHUNK_PAGES);
		off_t off = (off_t)(addr_to_vpn(start) + done) * 8;
		ssize_t got = pread(q->pagemap_fd, buf, n * 8, off);
		if (got < 0)
			return -errno;
		if ((size_t)got != n * 8)
			return -EIO;
		for (size_t i = 0; i < n; i++) {
			uint8_t f = 0;
			if (buf[i] & PM_PRESENT)
				f |= PG_PRESENT;
			if (buf[i] & PM_SWAP)
				f |= PG_SWAPPED;
			if (buf[i] & PM_MMAP_EXCLUSIVE)
				f |= PG_EXCLUSIVE;
			if (buf[i] & PM_FILE)
				f |= PG_FILE;
			flags[done + i] = f;
		}
		done += n;
	}
	return 0;
}

/* Zero-page and huge-page state, which plain pagemap doesn't tell. */
static int page_flags_scan(struct vmaq *q, uintptr_t start, size_t npages,
			   uint8_t *flags)
{
	struct page_region regs[64];
	uintptr_t end = start + npages * PAGE_SIZE;
	uintptr_t cur = start;
	while (cur < end) {
		struct pm_scan_arg arg = {
			.size = sizeof(arg),
			.start = cur,
			.end = end,
			.vec = (uintptr_t)regs,
			.vec_len = 64,
			.category_anyof_mask = PAGE_IS_PFNZERO | PAGE_IS_HUGE,
			.return_mask = PAGE_IS_PFNZERO | PAGE_IS_HUGE,
		};
		long n = ioctl(q->pagemap_fd, PAGEMAP_SCAN, &arg);
		if (n < 0)
			return -errno;
		for (long r = 0; r < n; r++) {
			uint8_t f = 0;
			if (regs[r].categories & PAGE_IS_PFNZERO)
				f |= PG_ZERO;
			if (regs[r].categories & PAGE_IS_HUGE)
				f |= PG_HUGE;
			for (uintptr_t a = regs[r].start; a < regs[r].end;
			     a += PAGE_SIZE)
				flags[(a - start) >> PAGE_SHIFT] |= f;
		}
		if (arg.walk_end <= cur)
			break;
		cur = arg.walk_end;
	}
	return 0;
}

int vma_page_flags(struct vmaq *q, uintptr_t start, size_t npages,
		   uint8_t *flags)
{
	int rc = vma_page_presence(q, start, npages, flags);
	if (rc == 0 && q->has_scan)
		rc = page_flags_scan(q, start, npages, flags);
	return rc;
}
