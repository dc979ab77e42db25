/* SPDX-License-Identifier: MIT */
/*
 * kframes.c - the zero page and huge mappings, told from the frames the
 * kernel maps, for kernels without PAGEMAP_SCAN (before 6.7: Debian 12's
 * 6.1).  Both sources are root's: /proc/self/pagemap shows frame numbers
 * only to a reader with CAP_SYS_ADMIN (0 to anyone else), and
 * /proc/kpageflags is readable by root only.  Without them nothing
 * exact is left, and pages are reported without ZERO and without a huge
 * order (hetmm.h says so; hetmm_kernel_info.has_page_state tells).
 *
 * The zero page: one frame the kernel maps read-only wherever a page
 * reads as zeroes and was never written.  Its number is found once, by
 * making the kernel map it: a read fault of fresh private anonymous
 * memory (6.1 maps the zero page there), else UFFDIO_ZEROPAGE (which
 * maps it on kernels that give read faults a fresh page, as some 6.18
 * builds do).  Two pages mapped that way must share the frame, so a
 * fresh page is never taken for it.
 *
 * Huge mappings: the kernel maps a huge page (a transparent huge page,
 * or hugetlbfs) with one PMD where a whole PMD-aligned virtual block
 * (2 MiB at 4 KiB pages, 512 MiB at 64 KiB: page.c) holds the frames of
 * one PMD-aligned huge page in order.
 * /proc/kpageflags tells the frames' kind (KPF_THP, KPF_HUGE) and whether
 * they make one compound page (a head, then tails).  What it cannot tell:
 * whether a transparent huge page mapped whole is mapped by a PMD or by
 * PTEs (after an mprotect, munmap or mremap of part of it split the
 * PMD and the mappings merged back, until khugepaged collapses it): such
 * a block is reported huge.  The huge zero page is ZERO and huge, as
 * PAGEMAP_SCAN reports it.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kernel-page-flags.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat.h"
#include "kframes.h"
#include "uffd.h"
#include "vma.h"

/* /proc/self/pagemap entries (Documentation/admin-guide/mm/pagemap.rst). */
#define PM_PRESENT (1ULL << 63)
#define PM_PFN_MASK ((1ULL << 55) - 1)

/* The frame of the present page at addr, 0 if absent or not shown. */
static uint64_t frame_at(int pagemap_fd, uintptr_t addr)
{
	uint64_t e = 0;
	if (pread(pagemap_fd, &e, sizeof(e),
		  (off_t)(addr_to_vpn(addr) * sizeof(e))) != sizeof(e) ||
	    !(e & PM_PRESENT))
		return 0;
	return e & PM_PFN_MASK;
}

void kframes_open(struct kframes *kf, int pagemap_fd)
{
	/* Our stack is present: a frame number of 0 means hidden. */
	volatile char here = 0;
	kf->frames_shown = frame_at(pagemap_fd, (uintptr_t)&here) != 0;
	kf->kpageflags_fd = kf->frames_shown ?
			    open("/proc/kpageflags", O_RDONLY | O_CLOEXEC) : -1;
}

void kframes_close(struct kframes *kf)
{
	if (kf->kpageflags_fd >= 0)
		close(kf->kpageflags_fd);
	kf->kpageflags_fd = -1;
}

/* The zero page's frame, found once per process; 0 while unknown. */
static pthread_once_t zero_once = PTHREAD_ONCE_INIT;
static uint64_t zero_frame;

/* The shared frame of two fresh pages the kernel mapped, or 0 if the
 * two are not one frame (so not the zero page). */
static uint64_t shared_frame(int pagemap_fd, uintptr_t p)
{
	uint64_t a = frame_at(pagemap_fd, p);
	return a && a == frame_at(pagemap_fd, p + PAGE_SIZE) ? a : 0;
}

static uint64_t zero_by_read_fault(int pagemap_fd)
{
	char *p = mmap(NULL, 2 * PAGE_SIZE, PROT_READ,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 0;
	(void)*(volatile char *)p;
	(void)*(volatile char *)(p + PAGE_SIZE);
	uint64_t f = shared_frame(pagemap_fd, (uintptr_t)p);
	munmap(p, 2 * PAGE_SIZE);
	return f;
}

/* A userfaultfd of our own, with no events: the ioctl alone. */
static uint64_t zero_by_uffd(int pagemap_fd)
{
	struct uffd u;
	if (uffd_open(&u, 0))
		return 0;
	uint64_t f = 0;
	char *p = mmap(NULL, 2 * PAGE_SIZE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p != MAP_FAILED) {
		uintptr_t a = (uintptr_t)p;
		if (uffd_register(u.fd, a, 2 * PAGE_SIZE,
				  UFFDIO_REGISTER_MODE_MISSING, NULL) == 0) {
			if (uffd_fill(u.fd, FILL_ZERO, a, 0, 2 * PAGE_SIZE, 0) ==
			    (long)(2 * PAGE_SIZE))
				f = shared_frame(pagemap_fd, a);
			uffd_unregister(u.fd, a, 2 * PAGE_SIZE);
		}
		munmap(p, 2 * PAGE_SIZE);
	}
	uffd_close(&u);
	return f;
}

static void find_zero_frame(void)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	uint64_t f = zero_by_read_fault(fd);
	zero_frame = f ? f : zero_by_uffd(fd);
	close(fd);
}

/* Entries of the pagemap and of kpageflags read at a time: a huge page
 * has 512 frames at 4 KiB pages, 8192 at 64 KiB. */
#define PIECE 512

/* The npages pagemap entries from a: from ents where the range holds
 * them all, else read into buf. */
static const uint64_t *entries_at(int pagemap_fd, uintptr_t a, size_t n,
				  uintptr_t start, size_t npages,
				  const uint64_t *ents, uint64_t *buf)
{
	if (a >= start && a + n * PAGE_SIZE <= start + npages * PAGE_SIZE)
		return ents + ((a - start) >> PAGE_SHIFT);
	ssize_t want = (ssize_t)(n * sizeof(uint64_t));
	if (pread(pagemap_fd, buf, (size_t)want,
		  (off_t)(addr_to_vpn(a) * sizeof(uint64_t))) != want)
		return NULL;
	return buf;
}

/* The first frame of the PMD-sized block at base if it maps one
 * PMD-aligned run of frames in order, else 0. */
static uint64_t block_frames(int pagemap_fd, uintptr_t base,
			     uintptr_t start, size_t npages,
			     const uint64_t *ents)
{
	uint64_t buf[PIECE], first = 0;
	for (size_t done = 0; done < PMD_PAGES; done += PIECE) {
		const uint64_t *e = entries_at(pagemap_fd,
					       base + done * PAGE_SIZE, PIECE,
					       start, npages, ents, buf);
		if (!e)
			return 0;
		if (!done)
			first = e[0] & PM_PFN_MASK;
		if (!first || first % PMD_PAGES)
			return 0;
		for (size_t i = 0; i < PIECE; i++)
			if (!(e[i] & PM_PRESENT) ||
			    (e[i] & PM_PFN_MASK) != first + done + i)
				return 0;
	}
	return first;
}

/* Are the PMD_PAGES frames from first one huge page (a hugetlbfs page,
 * or a transparent huge page: a head, then tails), and is it the huge
 * zero page? */
static bool huge_frames(const struct kframes *kf, uint64_t first, bool *zero)
{
	const uint64_t head = 1ULL << KPF_COMPOUND_HEAD;
	const uint64_t tail = 1ULL << KPF_COMPOUND_TAIL;
	const uint64_t thp_bit = 1ULL << KPF_THP;
	/* hugetlbfs: always mapped at its size (a 1 GiB page's block may
	 * begin with a tail). */
	bool hugetlb = true, thp = true;
	uint64_t kpf[PIECE];
	for (size_t done = 0; done < PMD_PAGES; done += PIECE) {
		if (pread(kf->kpageflags_fd, kpf, sizeof(kpf),
			  (off_t)((first + done) * sizeof(uint64_t))) !=
		    sizeof(kpf))
			return false;
		if (!done) {
			thp = (kpf[0] & head) && (kpf[0] & thp_bit);
			*zero = kpf[0] & (1ULL << KPF_ZERO_PAGE);
		}
		for (size_t i = 0; i < PIECE; i++) {
			hugetlb &= (kpf[i] & (1ULL << KPF_HUGE)) &&
				   (kpf[i] & (head | tail));
			thp &= (!done && !i) ||
			       ((kpf[i] & tail) && !(kpf[i] & head) &&
				(kpf[i] & thp_bit));
		}
	}
	*zero &= thp;
	return hugetlb || thp;
}

/* Mark the pages of the range in the block at base, if it is huge. */
static void mark_block(const struct kframes *kf, int pagemap_fd,
		       uintptr_t base, uintptr_t start, size_t npages,
		       const uint64_t *ents, uint8_t *flags)
{
	uint64_t first = block_frames(pagemap_fd, base, start, npages, ents);
	bool zero = false;
	if (!first || !huge_frames(kf, first, &zero))
		return;
	uintptr_t end = start + npages * PAGE_SIZE;
	uintptr_t lo = MAX(base, start), hi = MIN(base + PMD_SIZE, end);
	for (uintptr_t a = lo; a < hi; a += PAGE_SIZE)
		flags[(a - start) >> PAGE_SHIFT] |= PG_HUGE |
						    (zero ? PG_ZERO : 0);
}

void kframes_page_flags(const struct kframes *kf, int pagemap_fd,
			uintptr_t vma_start, uintptr_t vma_end,
			uintptr_t start, size_t npages, const uint64_t *ents,
			uint8_t *flags)
{
	if (!kframes_usable(kf))
		return;
	pthread_once(&zero_once, find_zero_frame);
	for (size_t i = 0; i < npages; i++)
		if (zero_frame && (ents[i] & PM_PRESENT) &&
		    (ents[i] & PM_PFN_MASK) == zero_frame)
			flags[i] |= PG_ZERO;

	/* Each PMD-sized block inside the VMA with a present page in
	 * range; a block the VMA does not hold whole can't be mapped by a
	 * PMD. */
	uintptr_t end = start + npages * PAGE_SIZE;
	const uintptr_t pmd = PMD_SIZE;
	for (uintptr_t base = start & ~(pmd - 1); base < end; base += pmd) {
		if (base < vma_start || base + pmd > vma_end)
			continue;
		uintptr_t lo = MAX(base, start);
		if (ents[(lo - start) >> PAGE_SHIFT] & PM_PRESENT)
			mark_block(kf, pagemap_fd, base, start, npages, ents,
				   flags);
	}
}
