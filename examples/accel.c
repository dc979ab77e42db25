/* SPDX-License-Identifier: MIT */
/*
 * accel.c - an accelerator runtime on hetmm's driver interface.
 *
 * The runtime owns a device with memory of its own (here an allocation
 * standing in for VRAM, with memcpy standing in for the copy engine) and
 * hot-adds it as a DEVICE_PRIVATE pagemap with its own ops.  A program
 * hands it an ordinary heap array; the runtime
 *
 *   1. prefetches the array to the device (hetmm_migrate_to_device, as
 *      cudaMemPrefetchAsync would), so the CPU page tables no longer map
 *      it;
 *   2. fills the device's own page table for the array with
 *      hetmm_range_fault, under an interval notifier whose callback drops
 *      entries when the CPU side changes (the kernel's hmm_range_fault and
 *      mmu_interval_notifier pattern);
 *   3. runs a "kernel" (y = a * x + b, in place) over that page table:
 *      device pages are used where they are, in VRAM; system pages are
 *      reached at their addresses, as a device with shared virtual memory
 *      reaches them.
 *
 * Then the CPU reads the array: each touch faults its pages back from the
 * device, the notifier drops the device's entries, and a second launch
 * faults them in again as system pages.  The program checks every element
 * after each step and exits 1 on a wrong value or a failed call.
 *
 * Build: cc accel.c $(pkg-config --cflags --libs hetmm) -o accel
 */
#define _DEFAULT_SOURCE          /* MAP_ANONYMOUS */
#include <errno.h>
#include <hetmm.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define PS HETMM_PAGE_SIZE
#define VRAM_PAGES 4096   /* pagecheck: pages, 16 MiB at 4 KiB pages */
#define N (2u * 1024 * 1024)             /* floats in the array: 8 MiB */

#define CHECK(call)                                                        \
	do {                                                               \
		int rc_ = (call);                                          \
		if (rc_ < 0) {                                             \
			fprintf(stderr, "accel: %s: %s\n", #call,          \
				hetmm_strerror(rc_));                      \
			exit(1);                                           \
		}                                                          \
	} while (0)

/* ------------------------------------------------------------------------
 * The device and its driver
 */

struct accel {
	struct hetmm_ctx *ctx;
	unsigned char *vram;
	struct hetmm_pagemap *pgmap;
	uint64_t first_pfn;              /* frame number of VRAM page 0 */

	/* The device's page table over one buffer: one hetmm_range entry a
	 * page, 0 where the device has no translation. */
	pthread_mutex_t lock;
	struct hetmm_notifier *notifier;
	unsigned char *base;
	uint64_t npages;
	uint64_t *pte;
	uint64_t invalidations;
};

/* The copy engine: system memory to VRAM and back. */
static int copy_to_vram(struct hetmm_pagemap *pgmap, uint64_t index,
			const void *src, size_t nr)
{
	struct accel *a = hetmm_pagemap_drvdata(pgmap);

	if (index + nr > VRAM_PAGES)
		return -EINVAL;
	memcpy(a->vram + index * PS, src, nr * PS);
	return 0;
}

static int copy_from_vram(struct hetmm_pagemap *pgmap, void *dst,
			  uint64_t index, size_t nr)
{
	struct accel *a = hetmm_pagemap_drvdata(pgmap);

	if (index + nr > VRAM_PAGES)
		return -EINVAL;
	memcpy(dst, a->vram + index * PS, nr * PS);
	return 0;
}

static const struct hetmm_pagemap_ops accel_ops = {
	.copy_to_device = copy_to_vram,
	.copy_from_device = copy_from_vram,
};

/* The CPU side of [start, end) changed: drop the device's entries. */
static void accel_invalidate(struct hetmm_notifier *n, uintptr_t start,
			     uintptr_t end, enum hetmm_event why, void *arg)
{
	struct accel *a = arg;
	uintptr_t lo = (uintptr_t)a->base;
	uintptr_t hi = lo + a->npages * PS;

	(void)n;
	(void)why;
	if (start < lo)
		start = lo;
	if (end > hi)
		end = hi;
	pthread_mutex_lock(&a->lock);
	for (uintptr_t p = start; p < end; p += PS)
		a->pte[(p - lo) / PS] = 0;
	a->invalidations++;
	pthread_mutex_unlock(&a->lock);
}

/* The handler thread counts them: read under the page table's lock. */
static uint64_t accel_invalidations(struct accel *a)
{
	uint64_t n;

	pthread_mutex_lock(&a->lock);
	n = a->invalidations;
	pthread_mutex_unlock(&a->lock);
	return n;
}

static const struct hetmm_notifier_ops accel_notifier_ops = {
	.invalidate = accel_invalidate,
};

static void accel_open(struct accel *a)
{
	struct hetmm_pagemap_desc desc = {
		.type = HETMM_MEMORY_DEVICE_PRIVATE,
		.nr_pages = VRAM_PAGES,
		.ops = &accel_ops,
		.drvdata = a,
		.owner = a,     /* our range faults see our pages as LOCAL */
	};
	struct hetmm_pagemap_info info;

	memset(a, 0, sizeof(*a));
	pthread_mutex_init(&a->lock, NULL);
	a->vram = mmap(NULL, VRAM_PAGES * PS, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a->vram == MAP_FAILED) {
		perror("accel: mmap");
		exit(1);
	}
	CHECK(hetmm_ctx_create(&a->ctx, NULL));
	CHECK(hetmm_pagemap_add(a->ctx, &desc, &a->pgmap));
	CHECK(hetmm_pagemap_get_info(a->pgmap, &info));
	a->first_pfn = hetmm_pfn_number(info.first_pfn);
}

static void accel_close(struct accel *a)
{
	if (a->notifier)
		CHECK(hetmm_notifier_remove(a->notifier));
	CHECK(hetmm_pagemap_remove(a->pgmap));   /* pages come home first */
	CHECK(hetmm_ctx_destroy(a->ctx));
	munmap(a->vram, VRAM_PAGES * PS);
	free(a->pte);
	pthread_mutex_destroy(&a->lock);
}

/* Give the device a page table over [buf, buf + len). */
static void accel_map(struct accel *a, void *buf, size_t len)
{
	a->base = buf;
	a->npages = len / PS;
	a->pte = calloc(a->npages, sizeof(*a->pte));
	if (!a->pte) {
		perror("accel: calloc");
		exit(1);
	}
	CHECK(hetmm_notifier_insert(a->ctx, buf, len, &accel_notifier_ops, a,
				    &a->notifier));
}

/* Move the buffer's pages into VRAM; returns how many moved. */
static uint64_t accel_prefetch(struct accel *a)
{
	struct hetmm_migrate_report rep = { 0 };

	CHECK(hetmm_migrate_to_device(a->pgmap, a->base, a->npages * PS, &rep));
	return rep.moved;
}

/*
 * Fill every entry of the device page table the kernel's way: range
 * fault without the lock, then under the lock keep the result only if no
 * invalidation came in between.  Returns with the lock held.
 */
static void accel_fault_locked(struct accel *a, uint64_t *pfns)
{
	struct hetmm_range range = {
		.notifier = a->notifier,
		.start = a->base,
		.npages = a->npages,
		.pfns = pfns,
		.default_flags = HETMM_RANGE_REQ_FAULT | HETMM_RANGE_REQ_WRITE,
		.dev_private_owner = a,
	};
	int rc;

	for (;;) {
		CHECK(hetmm_notifier_read_begin(a->notifier,
						&range.notifier_seq));
		rc = hetmm_range_fault(&range);
		if (rc == -EBUSY)
			continue;
		CHECK(rc);
		pthread_mutex_lock(&a->lock);
		if (!hetmm_notifier_read_retry(a->notifier,
					       range.notifier_seq))
			break;
		pthread_mutex_unlock(&a->lock);
	}
	memcpy(a->pte, pfns, a->npages * sizeof(*pfns));
}

/* Where the device reaches page i of the buffer, and whether in VRAM. */
static float *accel_page(struct accel *a, uint64_t i, int *in_vram)
{
	uint64_t e = a->pte[i];
	uint64_t number = e & HETMM_RANGE_NUMBER_MASK;

	*in_vram = (e & HETMM_RANGE_DEVICE) != 0;
	if (*in_vram)
		return (float *)(a->vram + (number - a->first_pfn) * PS);
	return (float *)(uintptr_t)(number << HETMM_PAGE_SHIFT);
}

struct launch {
	uint64_t vram_pages;
	uint64_t system_pages;
};

/* The kernel: y = alpha * y + beta over the whole buffer, in place. */
static struct launch accel_saxpy(struct accel *a, float alpha, float beta)
{
	uint64_t *pfns = calloc(a->npages, sizeof(*pfns));
	struct launch l = { 0, 0 };

	if (!pfns) {
		perror("accel: calloc");
		exit(1);
	}
	accel_fault_locked(a, pfns);
	for (uint64_t i = 0; i < a->npages; i++) {
		int in_vram;
		float *v = accel_page(a, i, &in_vram);

		for (size_t k = 0; k < PS / sizeof(float); k++)
			v[k] = alpha * v[k] + beta;
		if (in_vram) {
			/* Tell hetmm the device wrote the frame, so that a
			 * page that went over as a zero page comes back
			 * with these bytes. */
			hetmm_pfn_t pfn = hetmm_range_pfn(a->pte[i]);
			struct hetmm_page *page;

			CHECK(hetmm_pfn_to_page(pfn, &page));
			CHECK(hetmm_page_written(page));
			l.vram_pages++;
		} else {
			l.system_pages++;
		}
	}
	pthread_mutex_unlock(&a->lock);
	free(pfns);
	return l;
}

/* ------------------------------------------------------------------------
 * The program
 */

static int check(const float *x, float (*want)(size_t), const char *when)
{
	for (size_t i = 0; i < N; i++) {
		if (x[i] != want(i)) {
			fprintf(stderr, "accel: %s: x[%zu] = %g, want %g\n",
				when, i, (double)x[i], (double)want(i));
			return 1;
		}
	}
	return 0;
}

/* Small integers stay exact in float through both launches. */
static float initial(size_t i) { return (float)(i % 1000); }
static float after_one(size_t i) { return 2 * initial(i) + 1; }
static float after_two(size_t i) { return 2 * after_one(i) + 1; }

int main(void)
{
	struct accel a;
	struct hetmm_stats st0, st1;
	struct launch l;
	size_t len = N * sizeof(float);
	float *x;
	uint64_t moved, inval;

	/* A heap array; the device works in whole pages, so page aligned. */
	if (posix_memalign((void **)&x, PS, len)) {
		fprintf(stderr, "accel: posix_memalign failed\n");
		return 1;
	}
	for (size_t i = 0; i < N; i++)
		x[i] = initial(i);

	accel_open(&a);
	accel_map(&a, x, len);

	moved = accel_prefetch(&a);
	CHECK(hetmm_ctx_get_stats(a.ctx, &st0));
	l = accel_saxpy(&a, 2, 1);
	CHECK(hetmm_ctx_get_stats(a.ctx, &st1));
	printf("launch 1: %" PRIu64 " of %" PRIu64 " pages prefetched, kernel "
	       "ran on %" PRIu64 " pages in VRAM and %" PRIu64 " in system "
	       "memory, %" PRIu64 " CPU faults meanwhile\n", moved, a.npages,
	       l.vram_pages, l.system_pages, st1.faults - st0.faults);
	if (moved != a.npages || l.vram_pages != a.npages ||
	    st1.faults != st0.faults) {
		fprintf(stderr, "accel: the kernel should have run in VRAM "
			"alone, with no CPU fault\n");
		return 1;
	}

	/* The CPU reads the result: its pages fault back from VRAM, and the
	 * device's entries for them are invalidated. */
	inval = accel_invalidations(&a);
	if (check(x, after_one, "after launch 1"))
		return 1;
	CHECK(hetmm_ctx_get_stats(a.ctx, &st1));
	inval = accel_invalidations(&a) - inval;
	printf("CPU read back: %" PRIu64 " faults brought %" PRIu64 " pages "
	       "home, %" PRIu64 " invalidations of the device page table\n",
	       st1.faults - st0.faults, st1.fault_pages - st0.fault_pages,
	       inval);
	if (st1.fault_pages - st0.fault_pages != a.npages ||
	    inval == 0) {
		fprintf(stderr, "accel: every page should have faulted back, "
			"with its device entry invalidated\n");
		return 1;
	}

	/* No prefetch this time: the device works on system memory. */
	l = accel_saxpy(&a, 2, 1);
	printf("launch 2: kernel ran on %" PRIu64 " pages in VRAM and %"
	       PRIu64 " in system memory\n", l.vram_pages, l.system_pages);
	if (l.system_pages != a.npages ||
	    check(x, after_two, "after launch 2"))
		return 1;

	accel_close(&a);
	free(x);
	printf("accel: ok\n");
	return 0;
}
