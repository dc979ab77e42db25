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
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "shim.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

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

long gup_test_ioctl(unsigned int cmd, void *arg)
{
	bool longterm = false;
	switch (cmd) {
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
