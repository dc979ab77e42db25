/* SPDX-License-Identifier: MIT */
/*
 * vma.h - what the kernel knows about a range: VMAs (PROCMAP_QUERY, else
 * /proc/self/maps) and page presence (/proc/self/pagemap, PAGEMAP_SCAN).
 */
#ifndef HETMM_VMA_H
#define HETMM_VMA_H

#include "base.h"
#include "kframes.h"

#define VMA_READ (1u << 0)
#define VMA_WRITE (1u << 1)
#define VMA_EXEC (1u << 2)
#define VMA_SHARED (1u << 3)
#define VMA_FILE (1u << 4)   /* file backed, shmem or hugetlb */
#define VMA_SPECIAL (1u << 5) /* [vvar], [vdso]...: no userfaultfd there */
#define VMA_HEAP_STACK (1u << 6) /* [heap] or [stack]: malloc's and the
				  * main thread's, never the process's mmap */

struct vma {
	uintptr_t start;
	uintptr_t end;
	unsigned flags;
};

struct vmaq {
	int maps_fd;       /* /proc/self/maps, for PROCMAP_QUERY */
	int pagemap_fd;    /* /proc/self/pagemap */
	bool has_query;
	bool has_scan;
	struct kframes kf; /* without PAGEMAP_SCAN: zero page, huge pages */
};

int vmaq_open(struct vmaq *q);
void vmaq_close(struct vmaq *q);
/* The VMA covering addr, -ENOENT if none. */
int vma_find(struct vmaq *q, uintptr_t addr, struct vma *vma);
/* The VMA covering addr or, if none, the first VMA above addr (then
 * vma->start > addr: [addr, vma->start) is a hole); -ENOENT if neither,
 * nothing mapped from addr up.  One query for a whole hole. */
int vma_find_next(struct vmaq *q, uintptr_t addr, struct vma *vma);
/* The same from a fresh read of /proc/self/maps (a fork child's own). */
int vma_find_maps(uintptr_t addr, struct vma *vma);
/* -EINVAL unless [start, end) is covered by accessible VMAs. */
int vma_check_accessible(struct vmaq *q, uintptr_t start, uintptr_t end);

/* What an access needs of every VMA it crosses (vma_accessible): each of
 * VMA_READ and VMA_WRITE it names, and: */
#define VMA_NEED_ANON (1u << 8)   /* private anonymous memory */
#define VMA_NEED_SOME (1u << 9)   /* some access: read, write or exec */
#define VMA_NEED_ORDINARY (1u << 10) /* no special mapping */
/*
 * The one walk of the VMAs behind every access check (the kernel's
 * check_vma_flags): how many bytes from start lie in VMAs that give
 * need; where it stops, *why says how the access would fail there:
 * -EFAULT (nothing mapped, or not readable when reading is needed),
 * -EPERM (not writable, or not private anonymous memory), -EINVAL (a
 * special mapping, with VMA_NEED_ORDINARY).
 */
size_t vma_accessible(struct vmaq *q, uintptr_t start, uintptr_t end,
		      unsigned need, int *why);

static inline bool vma_is_private_anon(const struct vma *v)
{
	return !(v->flags & (VMA_SHARED | VMA_FILE));
}

/* Per-page presence, as /proc/self/pagemap and PAGEMAP_SCAN tell it. */
#define PG_PRESENT (1u << 0)
#define PG_SWAPPED (1u << 1)
#define PG_EXCLUSIVE (1u << 2)
#define PG_ZERO (1u << 3)
#define PG_HUGE (1u << 4)
#define PG_FILE (1u << 5)    /* a file (or shmem) page, not anonymous */
#define PG_UFFD_WP (1u << 6) /* write-protected by userfaultfd */

/* All of the above for npages from start, inside the VMA v: PG_ZERO and
 * PG_HUGE from PAGEMAP_SCAN, or without it from the frames where root
 * may see them (kframes.c); nothing tells them otherwise. */
int vma_page_flags(struct vmaq *q, const struct vma *v, uintptr_t start,
		   size_t npages, uint8_t *flags);
/* PG_HUGE and PG_ZERO as vma_page_flags tells them, and the rest only
 * where the kernel has no PAGEMAP_SCAN: one scan, no pread (a migration
 * asks whether a chunk is a THP before it reads the chunk's presence). */
int vma_page_huge(struct vmaq *q, const struct vma *v, uintptr_t start,
		  size_t npages, uint8_t *flags);
/* PG_PRESENT, PG_SWAPPED and PG_UFFD_WP only: one PAGEMAP_SCAN walk
 * where the kernel has it, else one pread of /proc/self/pagemap. */
int vma_page_presence(struct vmaq *q, uintptr_t start, size_t npages,
		      uint8_t *flags);

/* Transparent huge pages are enabled (sysfs: not "never"). */
bool vma_thp_enabled(void);
/* May the mapping holding addr have transparent huge pages, by the
 * kernel's rule: THP "always" and the mapping not advised
 * MADV_NOHUGEPAGE, or "madvise" and the mapping advised MADV_HUGEPAGE
 * (its VmFlags in /proc/self/smaps)?  A read of smaps (the kernel walks
 * the page tables of every mapping up to addr's): for a sequential
 * stream, not a fault.  False if unknown. */
bool vma_thp_allowed(uintptr_t addr);

/* Is the page at addr present in the process page tables? */
static inline bool vma_page_present(struct vmaq *q, uintptr_t addr)
{
	uint8_t pf = 0;
	return vma_page_presence(q, addr, 1, &pf) == 0 && (pf & PG_PRESENT);
}

#endif /* HETMM_VMA_H */
