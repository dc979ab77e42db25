/* SPDX-License-Identifier: MIT */
/*
 * test_ctx: contexts come and go without leaking descriptors or threads,
 * refuse bad parameters, report their userfaultfd, keep separate counters,
 * and bring resident device pages home when destroyed.
 */
#include <pthread.h>

#include "compat.h"
#include "t.h"

/*
 * A thread that pthread_join has reaped may still be listed in
 * /proc/self/task for a moment (the kernel wakes the joiner before it
 * releases the task); wait, boundedly, for the count to settle.
 */
static int settled_threads(int want)
{
	double end = t_now() + 10.0;
	int n;

	while ((n = t_count_threads()) != want && t_now() < end)
		usleep(1000);
	return n;
}

/*
 * The thread count once it has stopped changing for 200 ms (at most
 * 10 s): the warm-up context's handler, joined, can still be listed for a
 * moment, much longer under software emulation, and counting it would
 * make the baseline one too high.
 */
static int stable_threads(void)
{
	double end = t_now() + 10.0, since = t_now();
	int n = t_count_threads();

	while (t_now() < end && t_now() - since < 0.2) {
		usleep(1000);
		int m = t_count_threads();
		if (m != n) {
			n = m;
			since = t_now();
		}
	}
	return n;
}

static void create_destroy_cycles(void)
{
	int fds = t_count_fds();
	int threads = stable_threads();
	struct hetmm_ctx_params params;

	for (int i = 0; i < 64; i++) {
		struct hetmm_ctx *ctx = NULL;

		REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
		REQUIRE(ctx != NULL);
		/* The handler runs: at least one more fd (the uffd). */
		CHECK(t_count_fds() > fds);
		CHECK_OK(hetmm_ctx_destroy(ctx));
	}
	CHECK_EQ(t_count_fds(), fds);
	CHECK_EQ(settled_threads(threads), threads);

	memset(&params, 0, sizeof(params));
	params.fault_around_max = 16;
	for (int i = 0; i < 16; i++) {
		struct hetmm_ctx *ctx = NULL;

		REQUIRE_OK(hetmm_ctx_create(&ctx, &params));
		CHECK_OK(hetmm_ctx_destroy(ctx));
	}
	CHECK_EQ(t_count_fds(), fds);
	CHECK_EQ(settled_threads(threads), threads);

	/* Several alive at once, destroyed in another order. */
	{
		struct hetmm_ctx *c[8];

		for (int i = 0; i < 8; i++)
			REQUIRE_OK(hetmm_ctx_create(&c[i], NULL));
		for (int i = 0; i < 8; i += 2)
			CHECK_OK(hetmm_ctx_destroy(c[i]));
		for (int i = 7; i > 0; i -= 2)
			CHECK_OK(hetmm_ctx_destroy(c[i]));
	}
	CHECK_EQ(t_count_fds(), fds);
	CHECK_EQ(settled_threads(threads), threads);
}

static void bad_params(void)
{
	struct hetmm_ctx_params params;
	struct hetmm_ctx *ctx = (struct hetmm_ctx *)&params; /* sentinel */
	int fds = t_count_fds();
	int threads = stable_threads();

	memset(&params, 0, sizeof(params));
	params.flags = 1;
	CHECK_EQ(hetmm_ctx_create(&ctx, &params), -EINVAL);
	params.flags = 0x80000000u;
	CHECK_EQ(hetmm_ctx_create(&ctx, &params), -EINVAL);
	CHECK(ctx == (struct hetmm_ctx *)&params);
	CHECK_EQ(hetmm_ctx_create(NULL, NULL), -EINVAL);
	CHECK_EQ(hetmm_ctx_destroy(NULL), -EINVAL);
	CHECK_EQ(t_count_fds(), fds);
	CHECK_EQ(settled_threads(threads), threads);
}

static void uffd_info_and_stats(void)
{
	struct hetmm_kernel_info ki;
	struct hetmm_ctx *ctx;
	enum hetmm_uffd_route route = 0;
	uint64_t features = 0;
	struct hetmm_stats st;

	REQUIRE_OK(hetmm_kernel_probe(&ki));
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));

	CHECK_OK(hetmm_ctx_uffd_info(ctx, &route, &features));
	CHECK_EQ(route, ki.route);
	/* Enabled features are a subset of the offered ones. */
	CHECK_EQ(features & ~ki.uffd_features, 0);
	/* Device-private pages need write-protect faults where offered,
	 * so that a racing write is never lost. */
	if (ki.has_wp)
		CHECK(features & UFFD_FEATURE_PAGEFAULT_FLAG_WP);
	CHECK_EQ(hetmm_ctx_uffd_info(NULL, &route, &features), -EINVAL);

	memset(&st, 0xff, sizeof(st));
	CHECK_OK(hetmm_ctx_get_stats(ctx, &st));
	CHECK_EQ(st.faults, 0);
	CHECK_EQ(st.fault_pages, 0);
	CHECK_EQ(st.fault_zero, 0);
	CHECK_EQ(st.to_device_pages, 0);
	CHECK_EQ(st.to_system_pages, 0);
	CHECK_EQ(st.skipped_pages, 0);
	CHECK_EQ(st.mirror_faults, 0);
	CHECK_EQ(st.device_resident, 0);
	CHECK_EQ(hetmm_ctx_get_stats(NULL, &st), -EINVAL);
	CHECK_EQ(hetmm_ctx_get_stats(ctx, NULL), -EINVAL);

	CHECK_OK(hetmm_ctx_destroy(ctx));
}

/* Two contexts at once, each with its own device and buffer. */
static void two_contexts(void)
{
	enum { NA = 24, NB = 40 };
	struct hetmm_ctx *a, *b;
	struct hetmm_emu *ea, *eb;
	struct hetmm_pagemap *pa, *pb;
	struct hetmm_migrate_report ra, rb;
	struct hetmm_stats sa, sb;
	char *ba = t_map(NA), *bb = t_map(NB);
	hetmm_pfn_t pfn;

	t_emu_up(&a, NULL, 64, &ea, &pa);
	t_emu_up(&b, NULL, 64, &eb, &pb);

	t_fill(ba, NA, 0xa);
	t_fill(bb, NB, 0xb);
	memset(&ra, 0, sizeof(ra));
	memset(&rb, 0, sizeof(rb));
	CHECK_OK(hetmm_migrate_to_device(pa, ba, NA * PS, &ra));
	CHECK_OK(hetmm_migrate_to_device(pb, bb, NB * PS, &rb));
	CHECK_EQ(ra.moved, NA);
	CHECK_EQ(rb.moved, NB);

	/* Each context knows its own pages only. */
	CHECK_OK(hetmm_addr_to_pfn(a, ba, &pfn));
	CHECK_OK(hetmm_addr_to_pfn(b, bb, &pfn));
	CHECK_EQ(hetmm_addr_to_pfn(a, bb, &pfn), -ENOENT);
	CHECK_EQ(hetmm_addr_to_pfn(b, ba, &pfn), -ENOENT);

	sa = t_stats(a);
	sb = t_stats(b);
	CHECK_EQ(sa.to_device_pages, NA);
	CHECK_EQ(sb.to_device_pages, NB);
	CHECK_EQ(sa.device_resident, NA);
	CHECK_EQ(sb.device_resident, NB);

	/* CPU touches fault back through each context's own handler. */
	CHECK_EQ(t_verify(ba, NA, 0xa), 0);
	CHECK_EQ(t_verify(bb, NB, 0xb), 0);
	sa = t_stats(a);
	sb = t_stats(b);
	CHECK(sa.faults > 0);
	CHECK(sb.faults > 0);
	CHECK_EQ(sa.fault_pages, NA);
	CHECK_EQ(sb.fault_pages, NB);
	CHECK_EQ(sa.device_resident, 0);
	CHECK_EQ(sb.device_resident, 0);

	CHECK_OK(hetmm_emu_destroy(ea));
	CHECK_OK(hetmm_emu_destroy(eb));
	CHECK_OK(hetmm_ctx_destroy(a));
	CHECK_OK(hetmm_ctx_destroy(b));
	/* Memory stays usable after its context is gone. */
	CHECK_EQ(t_verify(ba, NA, 0xa), 0);
	CHECK_EQ(t_verify(bb, NB, 0xb), 0);
	ba[0] ^= 1;
	bb[0] ^= 1;
	t_unmap(ba, NA);
	t_unmap(bb, NB);
}

/*
 * Destroying a context with pages still on its device migrates them home
 * first: afterwards every page is mapped again and holds its bytes.
 */
static void destroy_with_resident_pages(void)
{
	enum { N = 96 };
	int fds = t_count_fds();
	int threads = stable_threads();

	for (int round = 0; round < 4; round++) {
		struct hetmm_ctx *ctx;
		struct hetmm_emu *emu;
		struct hetmm_pagemap *pg;
		char *buf = t_map(N);
		size_t present = 0;

		t_fill(buf, N, 100 + round);
		t_emu_up(&ctx, NULL, N, &emu, &pg);
		t_to_device(pg, buf, N);
		for (size_t i = 0; i < N; i++)
			present += (size_t)t_present(buf + i * PS);
		CHECK_EQ(present, 0);

		/* Half of the rounds leave the emulated device to the
		 * context's destroy, the other half remove it first. */
		if (round & 1)
			CHECK_OK(hetmm_emu_destroy(emu));
		CHECK_OK(hetmm_ctx_destroy(ctx));

		present = 0;
		for (size_t i = 0; i < N; i++)
			present += (size_t)t_present(buf + i * PS);
		CHECK_EQ(present, N);
		CHECK_EQ(t_verify(buf, N, 100 + round), 0);
		t_unmap(buf, N);
	}
	CHECK_EQ(t_count_fds(), fds);
	CHECK_EQ(settled_threads(threads), threads);
}

/*
 * glibc keeps the stacks of joined threads for reuse, up to 40 MiB, and
 * unmaps the oldest when a join takes it past that.  A cached stack is
 * process memory like any other, and lies in a mapping the context
 * registered once a page of it went to a device.  The context's destroy
 * joins its own threads: that join may unmap such a stack, and its UNMAP
 * event needs a reader.  (Before 6.7 a stack's mapping merges with the
 * anonymous mappings next to it, MAP_STACK or not: test_stress hung so on
 * Debian 12's 6.1, its workers' stacks merged with its regions.)  A
 * thread with a 36 MiB stack (more than 4 times a default one: never
 * reused for the context's threads) exits before the context is made; a
 * page of its stack goes to the device and back by a fault, bytes
 * checked; then the destroy must return (before the fix it waited for
 * ever in the deputy's join, whose munmap of that stack raised an UNMAP
 * nobody read).
 */
#define BIG_STACK (36u << 20)

static void *note_stack(void *arg)
{
	pthread_attr_t a;
	void *addr;
	size_t size;

	REQUIRE(pthread_getattr_np(pthread_self(), &a) == 0);
	REQUIRE(pthread_attr_getstack(&a, &addr, &size) == 0);
	pthread_attr_destroy(&a);
	*(char **)arg = (char *)addr + size / 2;
	return NULL;
}

static void destroy_frees_a_cached_stack(void)
{
	struct hetmm_ctx *ctx;
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	pthread_attr_t a;
	pthread_t th;
	char *page = NULL;

	REQUIRE(pthread_attr_init(&a) == 0);
	REQUIRE(pthread_attr_setstacksize(&a, BIG_STACK) == 0);
	REQUIRE(pthread_create(&th, &a, note_stack, &page) == 0);
	REQUIRE(pthread_join(th, NULL) == 0);
	pthread_attr_destroy(&a);
	page = (char *)((uintptr_t)page & ~(uintptr_t)(PS - 1));

	t_emu_up(&ctx, NULL, 16, &emu, &pg);
	t_fill(page, 1, 77);
	t_to_device(pg, page, 1);
	CHECK_EQ(t_verify(page, 1, 77), 0);   /* back by a fault */
	CHECK_OK(hetmm_emu_destroy(emu));
	/* A hang here fails the test (SIGALRM) instead of its timeout. */
	alarm(30 * t_time_scale());
	CHECK_OK(hetmm_ctx_destroy(ctx));
	alarm(0);
}

/*
 * A context made with fault_around_max and an emulated private device of
 * n pages, the n pages at buf filled with seed's pattern and on it.
 */
static struct hetmm_ctx *ctx_with_pages_on_device(uint32_t fault_around_max,
						  char *buf, size_t n,
						  uint64_t seed,
						  struct hetmm_emu **emu)
{
	struct hetmm_ctx_params params;
	struct hetmm_ctx *ctx;
	struct hetmm_pagemap *pg;

	memset(&params, 0, sizeof(params));
	params.fault_around_max = fault_around_max;
	t_emu_up(&ctx, &params, n, emu, &pg);
	t_fill(buf, n, seed);
	t_to_device(pg, buf, n);
	return ctx;
}

/*
 * fault_around_max bounds how many pages one fault brings back: with 1,
 * a sequential read of N device pages takes N faults; with the default
 * the window grows while the faults stay sequential, so it takes far
 * fewer.
 */
static int sequential_read_faults(uint32_t fault_around_max, size_t n)
{
	struct hetmm_emu *emu;
	struct hetmm_stats s0, s1;
	char *buf = t_map(n);
	struct hetmm_ctx *ctx = ctx_with_pages_on_device(fault_around_max, buf,
							 n, 7, &emu);

	s0 = t_stats(ctx);
	CHECK_EQ(t_verify(buf, n, 7), 0);
	s1 = t_stats(ctx);
	CHECK_EQ(s1.fault_pages - s0.fault_pages, n);
	CHECK_OK(hetmm_emu_destroy(emu));
	CHECK_OK(hetmm_ctx_destroy(ctx));
	t_unmap(buf, n);
	return (int)(s1.faults - s0.faults);
}

static void fault_around(void)
{
	enum { N = 256 };
	int one = sequential_read_faults(1, N);
	int dflt = sequential_read_faults(0, N);

	printf("sequential read of %d device pages: %d faults with"
	       " fault_around_max 1, %d by default\n", N, one, dflt);
	CHECK_EQ(one, N);
	CHECK(dflt > 0);
	CHECK(dflt <= N / 8);
}

/*
 * Density-based fault-around.  One thread reads pages of a 2 MiB block of
 * device pages in random order, checking each page's bytes as it goes:
 * every stride-th page, or all of them.  Returns the faults taken; the
 * pages the faults brought back go to *pages, and how many pages of the
 * next block, never touched, are still on the device to *next_left.
 */
static int random_block_reads(uint32_t fault_around_max, size_t stride,
			      int *pages, size_t *next_left)
{
	enum { B = 512 };
	struct hetmm_emu *emu;
	struct hetmm_stats s0, s1;
	char *map = t_map(3 * B);
	char *blk = (char *)(((uintptr_t)map + B * PS - 1) & ~(B * PS - 1));
	size_t order[B], n = 0;
	uint64_t rng = 0x2545f4914f6cdd1dULL + stride;
	/* Base pages, whatever the kernel's THP setting: a transparent
	 * huge page (THP "always", Debian's default) would go to the
	 * device as one huge page and come back whole on one fault, as
	 * the kernel's device THP does (test_thp). */
	REQUIRE(madvise(blk, 2 * B * PS, MADV_NOHUGEPAGE) == 0);
	struct hetmm_ctx *ctx = ctx_with_pages_on_device(fault_around_max, blk,
							 2 * B, 11, &emu);

	for (size_t i = 0; i < B; i += stride)
		order[n++] = i;
	for (size_t i = n - 1; i > 0; i--) {
		size_t j, tmp;

		rng = t_mix(rng);
		j = rng % (i + 1);
		tmp = order[i];
		order[i] = order[j];
		order[j] = tmp;
	}
	s0 = t_stats(ctx);
	for (size_t i = 0; i < n; i++)
		CHECK_EQ(t_verify_from(blk + order[i] * PS, 1, 11, order[i]),
			 0);
	s1 = t_stats(ctx);
	*pages = (int)(s1.fault_pages - s0.fault_pages);
	*next_left = t_count_on_device(ctx, blk + B * PS, B);
	CHECK_EQ(t_verify(blk, B, 11), 0);
	CHECK_OK(hetmm_emu_destroy(emu));
	CHECK_OK(hetmm_ctx_destroy(ctx));
	t_unmap(map, 3 * B);
	return (int)(s1.faults - s0.faults);
}

static void dense_fault_around(void)
{
	enum { B = 512 };
	int pages, faults;
	size_t next_left;

	/* All of a block, in random order: it comes back in pieces. */
	faults = random_block_reads(0, 1, &pages, &next_left);
	printf("random-order read of a 2 MiB block: %d faults for %d pages\n",
	       faults, pages);
	CHECK_EQ(pages, B);
	CHECK(faults < B / 2);
	CHECK_EQ(next_left, B);
	/* The same with fault-around off: a fault a page. */
	faults = random_block_reads(1, 1, &pages, &next_left);
	CHECK_EQ(faults, B);
	CHECK_EQ(pages, B);
	CHECK_EQ(next_left, B);
	/* One page in four: never more than half of any region, so each
	 * fault brings back its own page and nothing else. */
	faults = random_block_reads(0, 4, &pages, &next_left);
	CHECK_EQ(faults, B / 4);
	CHECK_EQ(pages, B / 4);
	CHECK_EQ(next_left, B);
}

int main(void)
{
	struct hetmm_ctx *warm = NULL;

	/* One context first, so that threads a sanitizer runtime starts
	 * lazily (TSan's) already exist when the counting begins. */
	REQUIRE_OK(hetmm_ctx_create(&warm, NULL));
	CHECK_OK(hetmm_ctx_destroy(warm));

	int fds = t_count_fds();
	int threads = stable_threads();

	create_destroy_cycles();
	bad_params();
	uffd_info_and_stats();
	two_contexts();
	destroy_with_resident_pages();
	destroy_frees_a_cached_stack();
	fault_around();
	dense_fault_around();

	CHECK_EQ(t_count_fds(), fds);
	CHECK_EQ(settled_threads(threads), threads);
	return t_done();
}
