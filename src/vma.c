/* SPDX-License-Identifier: MIT */
/*
 * vma.c - ask the kernel about a range of the process.
 *
 * VMAs come from the PROCMAP_QUERY ioctl when the kernel has it (one VMA
 * per call, no text) and from /proc/self/maps otherwise.  Page presence
 * and zero-page and huge-page state come from the PAGEMAP_SCAN ioctl
 * where it exists (6.7); else presence from /proc/self/pagemap, and the
 * rest from the frames pagemap shows root (kframes.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compat.h"
#include "kframes.h"
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
	kframes_open(&q->kf, q->pagemap_fd);
	return 0;
}

void vmaq_close(struct vmaq *q)
{
	if (q->maps_fd >= 0)
		close(q->maps_fd);
	if (q->pagemap_fd >= 0)
		close(q->pagemap_fd);
	q->maps_fd = q->pagemap_fd = -1;
	kframes_close(&q->kf);
}

/*
 * A VMA with a kernel name in brackets that is not anonymous memory
 * ([vvar], [vdso], [vsyscall], ...): special mappings that userfaultfd
 * refuses, and that no call of hetmm may touch.  [heap], [stack] and
 * named anonymous memory ([anon:...], [anon_shmem:...]) are ordinary.
 */
static bool name_is_special(const char *name)
{
	static const char *const ordinary[] = {
		"[heap]", "[stack]", "[anon:", "[anon_shmem:",
	};
	if (name[0] != '[')
		return false;
	for (size_t i = 0; i < sizeof(ordinary) / sizeof(ordinary[0]); i++)
		if (!strncmp(name, ordinary[i], strlen(ordinary[i])))
			return false;
	return true;
}

static bool name_is_heap_stack(const char *name)
{
	return !strncmp(name, "[heap]", 6) || !strncmp(name, "[stack]", 7);
}

/* The VMA covering addr, or with NEXT, the first above it if none. */
static int vma_find_query(struct vmaq *q, uintptr_t addr, bool next,
			  struct vma *vma)
{
	char name[32];
	struct procmap_query pq = {
		.size = sizeof(pq), .query_addr = addr,
		.query_flags = next ? PROCMAP_QUERY_COVERING_OR_NEXT_VMA : 0,
		.vma_name_addr = (uintptr_t)name, .vma_name_size = sizeof(name),
	};
	if (ioctl(q->maps_fd, PROCMAP_QUERY, &pq) < 0) {
		/* A name longer than the buffer: a file's path, not one of
		 * the kernel's short names; ask again without it. */
		if (errno != ENAMETOOLONG)
			return -errno;
		pq.vma_name_addr = 0;
		pq.vma_name_size = 0;
		if (ioctl(q->maps_fd, PROCMAP_QUERY, &pq) < 0)
			return -errno;
	}
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
	if (pq.vma_name_size && !pq.inode && name_is_special(name))
		vma->flags |= VMA_SPECIAL;
	if (pq.vma_name_size && !pq.inode && name_is_heap_stack(name))
		vma->flags |= VMA_HEAP_STACK;
	return 0;
}

/* One line of /proc/self/maps: the VMA, and whether it holds addr (or,
 * with next, whether it ends above addr: the lines are in address order,
 * so the first such line covers addr or is the first VMA above it). */
static bool maps_line(const char *line, uintptr_t addr, bool next,
		      struct vma *vma)
{
	uintptr_t lo, hi;
	char perms[8];
	unsigned long long off, inode;
	unsigned maj, min;
	int name_at = 0;
	if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %7s %llx %x:%x %llu %n",
		   &lo, &hi, perms, &off, &maj, &min, &inode, &name_at) < 7 ||
	    addr >= hi || (addr < lo && !next))
		return false;
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
	else if (name_at && name_is_special(line + name_at))
		vma->flags |= VMA_SPECIAL;
	else if (name_at && name_is_heap_stack(line + name_at))
		vma->flags |= VMA_HEAP_STACK;
	return true;
}

/*
 * The fallback: /proc/self/maps, read with read(2) into a buffer on our
 * stack, a line at a time.  Not stdio: its buffers come from the
 * program's heap, which a program may have broken (the kernel's 6.1
 * hmm2.snapshot test overruns it on purpose) and hetmm must not touch
 * (sscanf reads a string, and takes nothing from the heap).
 */
static int find_in_maps(uintptr_t addr, bool next, struct vma *vma)
{
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	char buf[4096];   /* pagecheck: bytes of a read */
	size_t have = 0;
	int rc = -ENOENT;
	for (;;) {
		ssize_t got = read(fd, buf + have, sizeof(buf) - 1 - have);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			rc = -errno;
			break;
		}
		have += (size_t)got;
		buf[have] = '\0';
		char *line = buf, *nl;
		while ((nl = strchr(line, '\n'))) {
			*nl = '\0';
			if (maps_line(line, addr, next, vma)) {
				rc = 0;
				goto out;
			}
			line = nl + 1;
		}
		/* Keep the partial last line; a line longer than the buffer
		 * (a very long path) is cut, which only loses its name. */
		have = strlen(line);
		if (have == sizeof(buf) - 1)
			have = 0;
		memmove(buf, line, have);
		if (got == 0) {
			if (have && maps_line(buf, addr, next, vma))
				rc = 0;
			break;
		}
	}
out:
	close(fd);
	return rc;
}

int vma_find_maps(uintptr_t addr, struct vma *vma)
{
	return find_in_maps(addr, false, vma);
}

int vma_find(struct vmaq *q, uintptr_t addr, struct vma *vma)
{
	return q->has_query ? vma_find_query(q, addr, false, vma)
			    : find_in_maps(addr, false, vma);
}

int vma_find_next(struct vmaq *q, uintptr_t addr, struct vma *vma)
{
	return q->has_query ? vma_find_query(q, addr, true, vma)
			    : find_in_maps(addr, true, vma);
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
		else if ((need & VMA_NEED_ORDINARY) &&
			 (v.flags & VMA_SPECIAL))
			*why = -EINVAL;
		if (*why)
			return a - start;
	}
	return end - start;
}

int vma_check_accessible(struct vmaq *q, uintptr_t start, uintptr_t end)
{
	int why;
	return vma_accessible(q, start, end, VMA_NEED_SOME | VMA_NEED_ORDINARY,
			      &why) == end - start ?
	       0 : -EINVAL;
}

/* /proc/self/pagemap bits (Documentation/admin-guide/mm/pagemap.rst). */
#define PM_PRESENT (1ULL << 63)
#define PM_SWAP (1ULL << 62)
#define PM_FILE (1ULL << 61)
#define PM_MMAP_EXCLUSIVE (1ULL << 56)
#define PM_UFFD_WP (1ULL << 57)

/* Presence bits of a raw pagemap entry. */
static uint8_t presence(uint64_t e)
{
	uint8_t f = 0;
	if (e & PM_PRESENT)
		f |= PG_PRESENT;
	if (e & PM_SWAP)
		f |= PG_SWAPPED;
	if (e & PM_MMAP_EXCLUSIVE)
		f |= PG_EXCLUSIVE;
	if (e & PM_FILE)
		f |= PG_FILE;
	if (e & PM_UFFD_WP)
		f |= PG_UFFD_WP;
	return f;
}

/* Presence of npages from start, a pread of CHUNK_PAGES entries at a
 * time; with v, the zero page and huge mappings from the frames too
 * (kframes.c), where there is no PAGEMAP_SCAN to ask. */
static int page_entries(struct vmaq *q, const struct vma *v, uintptr_t start,
			size_t npages, uint8_t *flags)
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
		for (size_t i = 0; i < n; i++)
			flags[done + i] = presence(buf[i]);
		if (v)
			kframes_page_flags(&q->kf, q->pagemap_fd, v->start,
					   v->end, start + done * PAGE_SIZE, n,
					   buf, flags + done);
		done += n;
	}
	return 0;
}

/*
 * Or into flags[i], for each page i of npages from start that PAGEMAP_SCAN
 * finds in any of the categories anyof, what to_flags makes of the
 * categories of its region (those of ret); others are left alone.  Runs
 * of pages alike come back as one region.
 */
static int scan_pages(struct vmaq *q, uintptr_t start, size_t npages,
		      uint64_t anyof, uint64_t ret,
		      uint8_t (*to_flags)(uint64_t), uint8_t *flags)
{
	struct page_region regs[64];
	uintptr_t end = start + npages * PAGE_SIZE;
	for (uintptr_t cur = start; cur < end;) {
		struct pm_scan_arg arg = {
			.size = sizeof(arg),
			.start = cur,
			.end = end,
			.vec = (uintptr_t)regs,
			.vec_len = 64,
			.category_anyof_mask = anyof,
			.return_mask = ret,
		};
		long n = ioctl(q->pagemap_fd, PAGEMAP_SCAN, &arg);
		if (n < 0)
			return -errno;
		for (long r = 0; r < n; r++) {
			uint8_t f = to_flags(regs[r].categories);
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

/* The bits vma_page_presence gives, from a pagemap entry's or a scan's. */
#define PRESENCE_FLAGS (PG_PRESENT | PG_SWAPPED | PG_UFFD_WP)

/* What PAGEMAP_SCAN says of a region's presence: a page that is not
 * "written" is write-protected by userfaultfd, as a marker is (the
 * kernel shows a marker as swapped, as pagemap does). */
static uint8_t scan_presence(uint64_t categories)
{
	uint8_t f = 0;
	if (categories & PAGE_IS_PRESENT)
		f |= PG_PRESENT;
	if (categories & PAGE_IS_SWAPPED)
		f |= PG_SWAPPED;
	if (!(categories & PAGE_IS_WRITTEN))
		f |= PG_UFFD_WP;
	return f;
}

/*
 * Presence by PAGEMAP_SCAN: the kernel looks up no page (no file or
 * exclusive bit asked for), where a pread of pagemap fills an entry per
 * page and looks each present page up for its map count: the pread was
 * 6% of a migration's samples, two per chunk (docs/PERFORMANCE.md,
 * "Remote").
 */
static int presence_scan(struct vmaq *q, uintptr_t start, size_t npages,
			 uint8_t *flags)
{
	memset(flags, 0, npages);
	return scan_pages(q, start, npages, PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
			  PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_WRITTEN,
			  scan_presence, flags);
}

int vma_page_presence(struct vmaq *q, uintptr_t start, size_t npages,
		      uint8_t *flags)
{
	if (q->has_scan)
		return presence_scan(q, start, npages, flags);
	int rc = page_entries(q, NULL, start, npages, flags);
	for (size_t i = 0; i < npages && !rc; i++)
		flags[i] &= PRESENCE_FLAGS;
	return rc;
}

/* What PAGEMAP_SCAN says of a region's zero-page and huge-page state,
 * which plain pagemap doesn't tell. */
static uint8_t scan_zero_huge(uint64_t categories)
{
	uint8_t f = 0;
	if (categories & PAGE_IS_PFNZERO)
		f |= PG_ZERO;
	if (categories & PAGE_IS_HUGE)
		f |= PG_HUGE;
	return f;
}

static int page_flags_scan(struct vmaq *q, uintptr_t start, size_t npages,
			   uint8_t *flags)
{
	return scan_pages(q, start, npages, PAGE_IS_PFNZERO | PAGE_IS_HUGE,
			  PAGE_IS_PFNZERO | PAGE_IS_HUGE, scan_zero_huge,
			  flags);
}

int vma_page_flags(struct vmaq *q, const struct vma *v, uintptr_t start,
		   size_t npages, uint8_t *flags)
{
	if (!q->has_scan)
		return page_entries(q, v, start, npages, flags);
	int rc = page_entries(q, NULL, start, npages, flags);
	if (rc == 0)
		rc = page_flags_scan(q, start, npages, flags);
	return rc;
}

int vma_page_huge(struct vmaq *q, const struct vma *v, uintptr_t start,
		  size_t npages, uint8_t *flags)
{
	if (!q->has_scan)
		return page_entries(q, v, start, npages, flags);
	memset(flags, 0, npages);
	return page_flags_scan(q, start, npages, flags);
}

/* THP's mode (sysfs "enabled"): 'a'lways, 'm'advise, 'n'ever, or 0 if
 * it can't be read. */
static char thp_mode(void)
{
	char buf[128] = "";
	int fd = open("/sys/kernel/mm/transparent_hugepage/enabled",
		      O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	const char *sel = strchr(buf, '[');
	return sel ? sel[1] : 0;
}

bool vma_thp_enabled(void)
{
	char m = thp_mode();
	return m == 'a' || m == 'm';
}

/* One line of smaps: is it a mapping's header ("start-end perms ..."),
 * and does it hold addr?  Sets *in accordingly.  Else, in addr's
 * mapping, is it its VmFlags line: *flags then points at its flags.
 * Returns whether they are found. */
static bool smaps_line(char *line, uintptr_t addr, bool *in, char **flags)
{
	unsigned long a, b;
	char c;
	if (sscanf(line, "%lx-%lx %c", &a, &b, &c) == 3) {
		*in = addr >= a && addr < b;
		return false;
	}
	if (!*in || strncmp(line, "VmFlags:", 8))
		return false;
	*flags = line + 8;
	return true;
}

/* The kernel's rule for a mapping's THPs: in mode "always" any mapping
 * not advised MADV_NOHUGEPAGE ("nh"), in mode "madvise" those advised
 * MADV_HUGEPAGE ("hg").  (Elsewhere its faults take a page table for
 * base pages, which a huge page moved in later would be split into.) */
static bool thp_flags_allow(char mode, const char *flags)
{
	if (strstr(flags, " nh"))
		return false;
	return mode == 'a' || (mode == 'm' && strstr(flags, " hg"));
}

bool vma_thp_allowed(uintptr_t addr)
{
	char mode = thp_mode();
	if (mode != 'a' && mode != 'm')
		return false;
	int fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	/* Lines read into a buffer on the stack: the fault handler asks,
	 * and allocates nothing. */
	char buf[4096];   /* pagecheck: bytes of text */
	size_t have = 0;
	bool in = false, allowed = false, done = false;
	while (!done) {
		ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);
		if (n <= 0)
			break;
		have += (size_t)n;
		buf[have] = 0;
		char *line = buf, *nl, *flags;
		while (!done && (nl = strchr(line, '\n'))) {
			*nl = 0;
			done = smaps_line(line, addr, &in, &flags);
			if (done)
				allowed = thp_flags_allow(mode, flags);
			line = nl + 1;
		}
		have -= (size_t)(line - buf);
		memmove(buf, line, have);
		if (have == sizeof(buf) - 1)
			have = 0;   /* a line longer than the buffer: skipped */
	}
	close(fd);
	return allowed;
}
