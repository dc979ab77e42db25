/* SPDX-License-Identifier: MIT */
/*
 * gup_test.c - /sys/kernel/debug/gup_test: get and pin user pages.
 *
 * The kernel's test takes references or pins on the pages of a range,
 * nr_pages_per_call at a time, stopping at the first call that gets none,
 * then drops them again and reports how far it got and how long it took.
 * What a test can see afterwards is what taking them did to the pages:
 *
 *   - every page is present, written to if FOLL_WRITE (a hole filled, a
 *     copy-on-write broken);
 *   - a device-private page came back to system memory, since the CPU
 *     can't address it: here the fault that populating raises brings it
 *     back, as the kernel's fault does;
 *   - a long-term pin (FOLL_LONGTERM in either series' encoding, shim.h;
 *     PIN_LONGTERM_BENCHMARK) also takes a page off any device memory,
 *     coherent too, before pinning it.
 *
 * The references themselves end within the call, so none outlives it.
 *
 * The long-term pin test (PIN_LONGTERM_TEST_START, STOP, READ; 6.3 on)
 * is different: START pins a range long term with hetmm's pin API and
 * keeps it pinned until STOP, one test at a time (the kernel's is one for
 * the whole machine, the shim's one per process).  Its rules are the
 * kernel's as far as a process can see them: the pin API's (device pages
 * come back to system memory first, held pages never move), and the one
 * a long-term pin for writing adds, checked here (longterm_write_ok).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

#define PS HETMM_PAGE_SIZE

static uint64_t now_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int populate(uintptr_t addr, size_t npages, bool write)
{
	return madvise((void *)addr, npages * PS,
		       write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ);
}

/* Take nr pages from addr: how many were taken, 0 or less for none. */
static long gup_pages(uintptr_t addr, long nr, bool write, bool longterm)
{
	if (nr <= 0)
		return 0;
	addr &= ~(uintptr_t)(PS - 1);
	struct hetmm_ctx *ctx = shim_ctx_peek();
	if (longterm && ctx)
		hetmm_migrate_to_system(ctx, (void *)addr, (size_t)nr * PS,
					NULL);
	if (!populate(addr, (size_t)nr, write))
		return nr;
	/* Some page failed: as many as come before it. */
	long i;
	for (i = 0; i < nr; i++) {
		uintptr_t a = addr + (uintptr_t)i * PS;
		if (populate(a, 1, write) &&
		    (!ctx || hetmm_migrate_to_system(ctx, (void *)a, PS, NULL) ||
		     populate(a, 1, write)))
			break;
	}
	return i ? i : -EFAULT;
}

/* ------------------------------------------------------------------------
 * The long-term pin test
 */

/* Filesystems whose pages are never written back (mm/gup.c's
 * vma_needs_dirty_tracking() is false for them): tmpfs and shmem (memfd,
 * shared anonymous memory), hugetlbfs, ramfs. */
#define SHIM_TMPFS_MAGIC 0x01021994
#define SHIM_HUGETLBFS_MAGIC 0x958458f6
#define SHIM_RAMFS_MAGIC 0x858458f6

/*
 * May this shared, writable file mapping, [start, end) in the maps file
 * with path, be pinned long term for writing?  Not where its filesystem
 * writes pages back: it could not tell a page written through a pin that
 * never ends is dirty.  The filesystem comes from the mapping's own file
 * (/proc/self/map_files, which needs privilege), else from its path; a
 * mapping whose filesystem can't be told is let through.
 */
static bool file_longterm_write_ok(uintptr_t start, uintptr_t end,
				   const char *path)
{
	char mf[64];
	struct statfs st;
	snprintf(mf, sizeof(mf), "/proc/self/map_files/%lx-%lx",
		 (unsigned long)start, (unsigned long)end);
	int fd = open(mf, O_RDONLY | O_CLOEXEC);
	int rc = fd >= 0 ? fstatfs(fd, &st) : statfs(path, &st);
	if (fd >= 0)
		shim_real_close(fd);
	if (rc)
		return true;
	/* A magic is 32 bits, whatever f_type's width and sign. */
	uint32_t type = (uint32_t)st.f_type;
	return type == SHIM_TMPFS_MAGIC || type == SHIM_HUGETLBFS_MAGIC ||
	       type == SHIM_RAMFS_MAGIC;
}

/* A mapping of the range: does it refuse the pin (-EFAULT)? */
static int vma_refuses_longterm_write(const struct shim_vma *v, void *arg)
{
	(void)arg;
	if (!v->ino || v->perms[1] != 'w' || v->perms[3] != 's')
		return 0;
	return file_longterm_write_ok(v->start, v->end, v->path) ? 0 : -EFAULT;
}

/*
 * The kernel's rule for a long-term pin for writing (check_vma_flags(),
 * writable_file_mapping_allowed()): -EFAULT if any page of the range is
 * in a shared writable mapping of a file whose filesystem writes back,
 * else 0.
 */
static int longterm_write_ok(uintptr_t start, uintptr_t end)
{
	return shim_vmas_walk(start, end, vma_refuses_longterm_write, NULL);
}

/* The test's pins, one test at a time; a fork child's copy of them is
 * its parent's, and forgotten. */
static pthread_mutex_t lt_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t lt_pid;
static void **lt_pages;
static size_t lt_nr;

/* Under lt_lock. */
static void lt_stop(void)
{
	if (lt_pages && lt_pid == getpid())
		hetmm_unpin_user_pages(shim_ctx_peek(), lt_pages, lt_nr);
	free(lt_pages);
	lt_pages = NULL;
	lt_nr = 0;
}

/* Under lt_lock: every page of the range pinned long term, or none and
 * the first page's errno. */
static int lt_start(const struct shim_pin_longterm_test *t)
{
	if (lt_pages && lt_pid == getpid())
		return -EINVAL;
	lt_stop();
	if (t->flags & ~(uint32_t)(SHIM_PIN_LONGTERM_FLAG_USE_WRITE |
				   SHIM_PIN_LONGTERM_FLAG_USE_FAST))
		return -EINVAL;
	if ((t->addr | t->size) & (PS - 1) || t->size > LONG_MAX ||
	    !t->size)
		return -EINVAL;
	bool write = t->flags & SHIM_PIN_LONGTERM_FLAG_USE_WRITE;
	bool fast = t->flags & SHIM_PIN_LONGTERM_FLAG_USE_FAST;
	size_t nr = t->size / PS;
	if (t->addr + t->size < t->addr)
		return -EFAULT;
	if (write) {
		int rc = longterm_write_ok(t->addr, t->addr + t->size);
		if (rc)
			return rc;
	}
	struct hetmm_ctx *ctx = shim_ctx();
	if (!ctx)
		return -ENOMEM;
	void **pages = calloc(nr, sizeof(*pages));
	if (!pages)
		return -ENOMEM;
	unsigned flags = HETMM_FOLL_LONGTERM | (write ? HETMM_FOLL_WRITE : 0);
	size_t done = 0;
	while (done < nr) {
		void *a = (void *)(uintptr_t)(t->addr + done * PS);
		long got = fast ? hetmm_pin_user_pages_fast(ctx, a, nr - done,
							    flags, pages + done)
				: hetmm_pin_user_pages(ctx, a, nr - done, flags,
						       pages + done);
		if (got <= 0) {
			if (done)
				hetmm_unpin_user_pages(ctx, pages, done);
			free(pages);
			return got ? (int)got : -EFAULT;
		}
		done += (size_t)got;
	}
	lt_pages = pages;
	lt_nr = nr;
	lt_pid = getpid();
	return 0;
}

/*
 * Under lt_lock: the pinned pages' bytes to the caller's buffer, whose
 * address arg points to.  Read through the pinned addresses: the same
 * bytes as the kernel's read of the pinned frames while the process keeps
 * the pages mapped where they were pinned (hetmm never moves a pinned
 * page), not after it unmaps or replaces them.
 */
static int lt_read(void *arg)
{
	uint64_t dst;
	if (!lt_pages || lt_pid != getpid())
		return -EINVAL;
	if (shim_copy_in(&dst, (uintptr_t)arg, sizeof(dst)))
		return -EFAULT;
	for (size_t i = 0; i < lt_nr; i++) {
		char page[PS];
		if (shim_copy_in(page, (uintptr_t)lt_pages[i], PS) ||
		    shim_copy_out(dst + i * PS, page, PS))
			return -EFAULT;
	}
	return 0;
}

static long pin_longterm_test_ioctl(unsigned int cmd, void *arg)
{
	struct shim_pin_longterm_test t;
	int rc;
	pthread_mutex_lock(&lt_lock);
	switch (cmd) {
	case SHIM_PIN_LONGTERM_TEST_START:
		rc = shim_copy_in(&t, (uintptr_t)arg, sizeof(t)) ? -EFAULT
								 : lt_start(&t);
		break;
	case SHIM_PIN_LONGTERM_TEST_STOP:
		lt_stop();
		rc = 0;
		break;
	default:
		rc = lt_read(arg);
		break;
	}
	pthread_mutex_unlock(&lt_lock);
	return rc;
}

long gup_test_ioctl(unsigned int cmd, void *arg)
{
	bool longterm = false;
	switch (cmd) {
	case SHIM_PIN_LONGTERM_TEST_START:
	case SHIM_PIN_LONGTERM_TEST_STOP:
	case SHIM_PIN_LONGTERM_TEST_READ:
		return pin_longterm_test_ioctl(cmd, arg);
	case SHIM_PIN_LONGTERM_BENCHMARK:
		longterm = true;
		break;
	case SHIM_GUP_FAST_BENCHMARK:
	case SHIM_GUP_BASIC_TEST:
	case SHIM_PIN_FAST_BENCHMARK:
	case SHIM_PIN_BASIC_TEST:
	case SHIM_DUMP_USER_PAGES_TEST:
		break;
	default:
		return -EINVAL;
	}

	struct shim_gup_test g;
	if (shim_copy_in(&g, (uintptr_t)arg, sizeof(g)))
		return -EFAULT;
	if (g.gup_flags & (SHIM_FOLL_LONGTERM | SHIM_FOLL_LONGTERM_6_1))
		longterm = true;
	bool write = g.gup_flags & SHIM_FOLL_WRITE;

	uint64_t start = now_usec(), end = g.addr + g.size, addr, next;
	uint64_t taken = 0;
	long per_call = (long)g.nr_pages_per_call, nr = per_call;
	for (addr = g.addr; addr < end; addr = next) {
		if (nr != per_call)
			break;
		next = addr + (uint64_t)nr * PS;
		if (next > end) {
			next = end;
			nr = (long)((next - addr) / PS);
		}
		nr = gup_pages((uintptr_t)addr, nr, write, longterm);
		if (nr <= 0)
			break;
		taken += (uint64_t)nr;
	}
	g.get_delta_usec = now_usec() - start;
	g.size = addr - g.addr;

	if (cmd == SHIM_DUMP_USER_PAGES_TEST) {
		/* Indices past the pages taken are cleared, as the kernel
		 * does before dumping (which it does to its log only). */
		for (int i = 0; i < SHIM_GUP_MAX_PAGES_TO_DUMP; i++)
			if (g.which_pages[i] > taken)
				g.which_pages[i] = 0;
	}
	g.put_delta_usec = 0;

	if (shim_copy_out((uintptr_t)arg, &g, sizeof(g)))
		return -EFAULT;
	return 0;
}
