/* SPDX-License-Identifier: MIT */
/*
 * test_race: no CPU write is ever lost, whatever migrations do meanwhile.
 *
 * Part 1: writer threads increment counters in every page of a range -
 * each its own pages, and all of them the same shared pages (an atomic
 * counter plus one word per thread) - while two migrators move the range
 * to a device, to another device and back, over and over.  At the end
 * every counter equals the number of increments its writers recorded.
 *
 * Part 2: several threads fault the same device pages back at once, in
 * the same and in different orders, reading the pattern and writing their
 * own word of every page; every byte must be right afterwards.
 *
 * Devices: two emulated ones (pages move by UFFDIO_MOVE) and a copying
 * one of this test's (write-protect, copy, zap), so both paths race.
 *
 * Part 3: migrations back claim pages in batches while other migrations
 * and faults claim the same pages one by one; each page leaves the device
 * once, with its bytes.
 *
 * All parts run for a bounded time (a couple of seconds each) and assert
 * nothing about speed.
 */
#include <pthread.h>
#include <sched.h>

#include "t.h"

static struct hetmm_ctx *ctx;
static struct hetmm_pagemap *pg0, *pg1; /* emulated: pages move (REMAP) */
static struct hetmm_pagemap *pgc;       /* this test's: pages are copied */

/*
 * A copying driver, so that the write-protect-copy-zap path races the
 * writers too.  It reads process memory with relaxed atomic loads: the
 * writers store atomically, and the real ordering (write-protect faults)
 * is the kernel's, which ThreadSanitizer cannot see.
 */
#define CDEV_PAGES 256
static uint64_t *cdev_mem;

static int cdev_copy_to(struct hetmm_pagemap *pg, uint64_t index,
			const void *src, size_t nr)
{
	const uint64_t *s = src;
	uint64_t *d = cdev_mem + index * (PS / 8);

	(void)pg;
	if (index >= CDEV_PAGES || nr > CDEV_PAGES - index)
		return -EINVAL;
	for (size_t w = 0; w < nr * (PS / 8); w++)
		d[w] = __atomic_load_n(&s[w], __ATOMIC_RELAXED);
	return 0;
}

static int cdev_copy_from(struct hetmm_pagemap *pg, void *dst,
			  uint64_t index, size_t nr)
{
	(void)pg;
	if (index >= CDEV_PAGES || nr > CDEV_PAGES - index)
		return -EINVAL;
	memcpy(dst, cdev_mem + index * (PS / 8), nr * PS);
	return 0;
}

static const struct hetmm_pagemap_ops cdev_ops = {
	.copy_to_device = cdev_copy_to,
	.copy_from_device = cdev_copy_from,
};

#define NWRITERS 3
#define OWN 24             /* pages per writer */
#define SHARED 8           /* pages every writer writes */
#define NPAGES (NWRITERS * OWN + SHARED)
#define SEED 0x5eed

/* Words of a page: 0 the counter, 8 + t thread t's word on shared pages;
 * every other word keeps the pattern. */
#define W_COUNT 0
#define W_THREAD(t) (8 + (t))

static char *region;
static int stop;
static int started;
static uint64_t iters[NWRITERS];

static uint64_t *page_words(size_t page)
{
	return (uint64_t *)(region + page * PS);
}

static void *writer_main(void *arg)
{
	int t = (int)(intptr_t)arg;
	uint64_t n = 0;

	__atomic_fetch_add(&started, 1, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
		/* Own pages: load and store, so a page that went back in
		 * time would make every later count come out short. */
		for (size_t i = 0; i < OWN; i++) {
			uint64_t *w = page_words((size_t)t * OWN + i);
			uint64_t v = __atomic_load_n(&w[W_COUNT],
						     __ATOMIC_RELAXED);
			__atomic_store_n(&w[W_COUNT], v + 1, __ATOMIC_RELAXED);
		}
		for (size_t i = 0; i < SHARED; i++) {
			uint64_t *w = page_words(NWRITERS * OWN + i);
			uint64_t v;

			__atomic_fetch_add(&w[W_COUNT], 1, __ATOMIC_RELAXED);
			v = __atomic_load_n(&w[W_THREAD(t)], __ATOMIC_RELAXED);
			__atomic_store_n(&w[W_THREAD(t)], v + 1,
					 __ATOMIC_RELAXED);
		}
		n++;
		__atomic_store_n(&iters[t], n, __ATOMIC_RELEASE);
	}
	return NULL;
}

struct migrator {
	int id;
	double deadline;
	uint64_t rounds, to_dev, to_sys;
	int bad_rc;
};

static int acceptable(int rc)
{
	/* Nothing movable right now (all busy, faulted back or already
	 * there) is fine; anything else is not. */
	return rc == 0 || rc == -ENOENT;
}

static void *migrator_main(void *arg)
{
	struct migrator *m = arg;
	struct hetmm_migrate_report rep;
	uint8_t status[NPAGES];

	while (t_now() < m->deadline && m->rounds < 100000) {
		/* Migrator 0: the whole range, to each device in turn.
		 * Migrator 1: a window sliding over the range, to the
		 * copying device and an emulated one in turn. */
		struct hetmm_pagemap *const all[3] = { pg0, pg1, pgc };
		char *a = region;
		size_t n = NPAGES;
		struct hetmm_pagemap *pg = all[m->rounds % 3];
		int rc;

		if (m->id == 1) {
			size_t first = (size_t)(m->rounds * 7) % (NPAGES - 16);

			a = region + first * PS;
			n = 16;
			pg = (m->rounds & 1) ? pg1 : pgc;
		}
		memset(&rep, 0, sizeof(rep));
		rep.status = status;
		rc = hetmm_migrate_to_device(pg, a, n * PS, &rep);
		if (!acceptable(rc)) {
			t_fail(__FILE__, __LINE__, "migrator %d to device: %d",
			       m->id, rc);
			m->bad_rc++;
		}
		if (rep.moved + rep.skipped != n) {
			t_fail(__FILE__, __LINE__,
			       "moved %llu + skipped %llu != %zu",
			       (unsigned long long)rep.moved,
			       (unsigned long long)rep.skipped, n);
			m->bad_rc++;
		}
		for (size_t i = 0; i < n; i++) {
			/* Moved, or left where it is because it is there,
			 * on the other device or held by the other
			 * migrator; nothing else applies here. */
			if (status[i] != HETMM_MIGRATE_MOVED &&
			    status[i] != HETMM_MIGRATE_ALREADY &&
			    status[i] != HETMM_MIGRATE_SKIP_OTHER_DEVICE &&
			    status[i] != HETMM_MIGRATE_SKIP_BUSY) {
				t_fail(__FILE__, __LINE__,
				       "status[%zu] = %u", i, status[i]);
				m->bad_rc++;
				break;
			}
		}
		m->to_dev += rep.moved;
		/* Let the writers run into the device pages. */
		for (int k = 0; k < 3; k++)
			sched_yield();
		memset(&rep, 0, sizeof(rep));
		rc = hetmm_migrate_to_system(ctx, a, n * PS, &rep);
		if (!acceptable(rc)) {
			t_fail(__FILE__, __LINE__, "migrator %d to system: %d",
			       m->id, rc);
			m->bad_rc++;
		}
		m->to_sys += rep.moved;
		m->rounds++;
		if (m->bad_rc > 10)
			break;
	}
	return NULL;
}

static void check_pattern_except(size_t page, const uint64_t *w, int shared)
{
	uint64_t s = t_page_seed(SEED, page);

	for (size_t j = 0; j < PS / 8; j++) {
		if (j == W_COUNT)
			continue;
		if (shared && j >= W_THREAD(0) && j < W_THREAD(NWRITERS))
			continue;
		if (w[j] != t_word(s, j)) {
			t_fail(__FILE__, __LINE__,
			       "page %zu word %zu: 0x%016" PRIx64
			       " != 0x%016" PRIx64,
			       page, j, w[j], t_word(s, j));
			return;
		}
	}
}

static void writers_vs_migrations(void)
{
	pthread_t wt[NWRITERS], mt[2];
	struct migrator mig[2];
	struct hetmm_stats s0, s1;
	uint64_t total = 0;
	double deadline;

	region = t_map(NPAGES);
	t_fill(region, NPAGES, SEED);
	for (size_t p = 0; p < NPAGES; p++) {
		page_words(p)[W_COUNT] = 0;
		if (p >= NWRITERS * OWN)
			for (int t = 0; t < NWRITERS; t++)
				page_words(p)[W_THREAD(t)] = 0;
	}
	s0 = t_stats(ctx);

	for (int t = 0; t < NWRITERS; t++)
		REQUIRE(pthread_create(&wt[t], NULL, writer_main,
				       (void *)(intptr_t)t) == 0);
	/* Start migrating only once every writer is writing. */
	while (__atomic_load_n(&started, __ATOMIC_ACQUIRE) < NWRITERS)
		sched_yield();
	for (int t = 0; t < NWRITERS; t++)
		while (__atomic_load_n(&iters[t], __ATOMIC_ACQUIRE) == 0)
			sched_yield();

	deadline = t_now() + 2.5;
	for (int i = 0; i < 2; i++) {
		memset(&mig[i], 0, sizeof(mig[i]));
		mig[i].id = i;
		mig[i].deadline = deadline;
		REQUIRE(pthread_create(&mt[i], NULL, migrator_main,
				       &mig[i]) == 0);
	}
	for (int i = 0; i < 2; i++)
		REQUIRE(pthread_join(mt[i], NULL) == 0);
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	for (int t = 0; t < NWRITERS; t++)
		REQUIRE(pthread_join(wt[t], NULL) == 0);

	s1 = t_stats(ctx);
	printf("writers: %llu %llu %llu iterations; migrator rounds %llu"
	       " %llu; to device %llu, back %llu; faults %llu, fault pages"
	       " %llu\n",
	       (unsigned long long)iters[0], (unsigned long long)iters[1],
	       (unsigned long long)iters[2],
	       (unsigned long long)mig[0].rounds,
	       (unsigned long long)mig[1].rounds,
	       (unsigned long long)(s1.to_device_pages - s0.to_device_pages),
	       (unsigned long long)(s1.to_system_pages - s0.to_system_pages),
	       (unsigned long long)(s1.faults - s0.faults),
	       (unsigned long long)(s1.fault_pages - s0.fault_pages));

	/* The race really happened: pages moved and writers faulted them
	 * back. */
	CHECK(mig[0].to_dev + mig[1].to_dev > 0);
	CHECK(s1.fault_pages > s0.fault_pages);
	CHECK_EQ(s1.to_device_pages - s0.to_device_pages,
		 mig[0].to_dev + mig[1].to_dev);

	/* Every count, whether the page is on a device now or not. */
	for (int t = 0; t < NWRITERS; t++) {
		total += iters[t];
		for (size_t i = 0; i < OWN; i++) {
			size_t p = (size_t)t * OWN + i;
			uint64_t *w = page_words(p);

			if (w[W_COUNT] != iters[t])
				t_fail(__FILE__, __LINE__,
				       "thread %d page %zu: count %" PRIu64
				       " != %" PRIu64 " writes",
				       t, p, w[W_COUNT], iters[t]);
			check_pattern_except(p, w, 0);
		}
	}
	for (size_t i = 0; i < SHARED; i++) {
		size_t p = NWRITERS * OWN + i;
		uint64_t *w = page_words(p);

		if (w[W_COUNT] != total)
			t_fail(__FILE__, __LINE__,
			       "shared page %zu: count %" PRIu64 " != %" PRIu64
			       " writes", p, w[W_COUNT], total);
		for (int t = 0; t < NWRITERS; t++)
			if (w[W_THREAD(t)] != iters[t])
				t_fail(__FILE__, __LINE__,
				       "shared page %zu thread %d: %" PRIu64
				       " != %" PRIu64, p, t, w[W_THREAD(t)],
				       iters[t]);
		check_pattern_except(p, w, 1);
	}

	/* And all of it is home, with nothing left on a device. */
	{
		struct hetmm_migrate_report rep;
		hetmm_pfn_t pfn;
		int rc;

		memset(&rep, 0, sizeof(rep));
		rc = hetmm_migrate_to_system(ctx, region, NPAGES * PS, &rep);
		CHECK(rc == -ENOENT); /* the checks above faulted all back */
		for (size_t p = 0; p < NPAGES; p++)
			CHECK_EQ(hetmm_addr_to_pfn(ctx, region + p * PS, &pfn),
				 -ENOENT);
		CHECK_EQ(t_stats(ctx).device_resident, 0);
	}
	t_unmap(region, NPAGES);
}

/*
 * The handler counts a page off the device just after putting it in
 * place, and a thread that finds it there runs on without waiting (nor
 * waits for the rest of a fault-around window): give the count a bounded
 * moment to reach want.
 */
static uint64_t settled_resident(uint64_t want)
{
	double until = t_now() + 10.0;
	uint64_t n;

	while ((n = t_stats(ctx).device_resident) != want && t_now() < until)
		sched_yield();
	return n;
}

/* ------------------------------------------------------------------------
 * Part 2: concurrent fault-back of the same pages.
 */

#define FB_THREADS 4
#define FB_PAGES 128
#define FB_SEED 0xfb
#define W_FB(t) (16 + (t))

static char *fb;
static pthread_barrier_t fb_start, fb_end;
static int fb_done;
static uint64_t fb_round;
static uint64_t fb_bad[FB_THREADS];

static void *fb_main(void *arg)
{
	int t = (int)(intptr_t)arg;
	uint64_t rng = 0x1234567ULL * (uint64_t)(t + 1);
	size_t perm[FB_PAGES];

	for (;;) {
		pthread_barrier_wait(&fb_start);
		if (__atomic_load_n(&fb_done, __ATOMIC_ACQUIRE))
			break;
		uint64_t round = __atomic_load_n(&fb_round, __ATOMIC_ACQUIRE);
		/* Thread 3 visits every page too, in a random order. */
		for (size_t k = 0; k < FB_PAGES; k++)
			perm[k] = k;
		for (size_t k = FB_PAGES - 1; k > 0; k--) {
			size_t j, tmp;

			rng = rng * 6364136223846793005ULL +
			      1442695040888963407ULL;
			j = (size_t)(rng >> 33) % (k + 1);
			tmp = perm[k];
			perm[k] = perm[j];
			perm[j] = tmp;
		}
		for (size_t k = 0; k < FB_PAGES; k++) {
			size_t page;

			switch (t) {
			case 0:
			case 1: /* the same order: the same page at once */
				page = k;
				break;
			case 2:
				page = FB_PAGES - 1 - k;
				break;
			default:
				page = perm[k];
				break;
			}
			uint64_t *w = (uint64_t *)(fb + page * PS);
			uint64_t s = t_page_seed(FB_SEED, page);

			/* Read words no thread writes, then write ours. */
			for (size_t j = 0; j < 16; j++)
				if (w[j * 31 + 32] != t_word(s, j * 31 + 32))
					fb_bad[t]++;
			__atomic_store_n(&w[W_FB(t)], round, __ATOMIC_RELAXED);
		}
		pthread_barrier_wait(&fb_end);
	}
	return NULL;
}

static void concurrent_fault_back(void)
{
	pthread_t th[FB_THREADS];
	struct hetmm_stats s0, s1;
	double deadline;
	uint64_t rounds = 0;

	fb = t_map(FB_PAGES);
	t_fill(fb, FB_PAGES, FB_SEED);
	REQUIRE(pthread_barrier_init(&fb_start, NULL, FB_THREADS + 1) == 0);
	REQUIRE(pthread_barrier_init(&fb_end, NULL, FB_THREADS + 1) == 0);
	for (int t = 0; t < FB_THREADS; t++)
		REQUIRE(pthread_create(&th[t], NULL, fb_main,
				       (void *)(intptr_t)t) == 0);
	s0 = t_stats(ctx);

	deadline = t_now() + 2.0;
	while (rounds < 3 || (t_now() < deadline && rounds < 2000)) {
		struct hetmm_migrate_report rep;

		memset(&rep, 0, sizeof(rep));
		struct hetmm_pagemap *const all[3] = { pg0, pg1, pgc };

		CHECK_OK(hetmm_migrate_to_device(all[rounds % 3], fb,
						 FB_PAGES * PS, &rep));
		CHECK_EQ(rep.moved, FB_PAGES);
		__atomic_store_n(&fb_round, rounds + 1, __ATOMIC_RELEASE);
		pthread_barrier_wait(&fb_start);
		pthread_barrier_wait(&fb_end);
		rounds++;

		/* Every page back, every thread's write in it, the rest of
		 * the pattern intact. */
		for (size_t p = 0; p < FB_PAGES; p++) {
			uint64_t *w = (uint64_t *)(fb + p * PS);
			uint64_t s = t_page_seed(FB_SEED, p);

			for (size_t j = 0; j < PS / 8; j++) {
				uint64_t want = (j >= W_FB(0) &&
						 j < W_FB(FB_THREADS)) ?
						rounds : t_word(s, j);
				if (w[j] != want) {
					t_fail(__FILE__, __LINE__,
					       "round %llu page %zu word %zu:"
					       " %" PRIx64 " != %" PRIx64,
					       (unsigned long long)rounds, p,
					       j, w[j], want);
					break;
				}
			}
		}
		/* Every thread touched every page: none is left. */
		{
			size_t left = 0;
			hetmm_pfn_t pfn;

			for (size_t p = 0; p < FB_PAGES; p++)
				left += hetmm_addr_to_pfn(ctx, fb + p * PS,
							  &pfn) == 0;
			CHECK_EQ(left, 0);
		}
		CHECK_EQ(settled_resident(s0.device_resident),
			 s0.device_resident);
		if (__atomic_load_n(&t_failures, __ATOMIC_RELAXED))
			break;
	}
	__atomic_store_n(&fb_done, 1, __ATOMIC_RELEASE);
	pthread_barrier_wait(&fb_start);
	for (int t = 0; t < FB_THREADS; t++) {
		REQUIRE(pthread_join(th[t], NULL) == 0);
		CHECK_EQ(fb_bad[t], 0);
	}
	s1 = t_stats(ctx);
	printf("fault-back: %llu rounds, %llu faults, %llu pages\n",
	       (unsigned long long)rounds,
	       (unsigned long long)(s1.faults - s0.faults),
	       (unsigned long long)(s1.fault_pages - s0.fault_pages));
	CHECK_EQ(s1.fault_pages - s0.fault_pages, rounds * FB_PAGES);
	CHECK_EQ(s1.to_system_pages - s0.to_system_pages, rounds * FB_PAGES);
	pthread_barrier_destroy(&fb_start);
	pthread_barrier_destroy(&fb_end);
	t_unmap(fb, FB_PAGES);
}

/* ------------------------------------------------------------------------
 * Part 3: claims.  A migration back claims up to a leaf of the shadow
 * (512 pages) at a time with plain stores; a fault on a lone page, and
 * any claim that meets a batch, claims by compare-and-swap.  Two
 * migrators bring the same region back, one forward in one call, one
 * backward a piece at a time, while two threads touch lone pages of it,
 * all from a common start: each page must leave the device exactly once
 * (the migrators' reports and the pages faults brought back add up to
 * the region), with its bytes, and every frame must be free after.
 */

#define CL_PAGES 2048      /* four leaves */
#define CL_PIECE 8         /* the backward migrator's step: claimed one by one */
#define CL_TOUCHES 48
#define CL_SEED 0xc1a1

static char *cl;
static struct hetmm_pagemap *cl_pg;
static pthread_barrier_t cl_start, cl_end;
static int cl_done;
static uint64_t cl_moved[2], cl_bad[2];

static void *cl_migrator_main(void *arg)
{
	int t = (int)(intptr_t)arg;

	for (;;) {
		pthread_barrier_wait(&cl_start);
		if (__atomic_load_n(&cl_done, __ATOMIC_ACQUIRE))
			break;
		struct hetmm_migrate_report rep;
		int rc;

		if (t == 0) {
			memset(&rep, 0, sizeof(rep));
			rc = hetmm_migrate_to_system(ctx, cl, CL_PAGES * PS,
						     &rep);
			CHECK(rc == 0 || rc == -ENOENT);
			cl_moved[t] += rep.moved;
		}
		for (size_t end = CL_PAGES; t == 1 && end > 0;) {
			size_t n = end < CL_PIECE ? end : CL_PIECE;

			memset(&rep, 0, sizeof(rep));
			rc = hetmm_migrate_to_system(ctx, cl + (end - n) * PS,
						     n * PS, &rep);
			CHECK(rc == 0 || rc == -ENOENT);
			cl_moved[t] += rep.moved;
			end -= n;
		}
		pthread_barrier_wait(&cl_end);
	}
	return NULL;
}

static void *cl_toucher_main(void *arg)
{
	int t = (int)(intptr_t)arg;
	uint64_t rng = 0x9e3779b9ULL * (uint64_t)(t + 7);

	for (;;) {
		pthread_barrier_wait(&cl_start);
		if (__atomic_load_n(&cl_done, __ATOMIC_ACQUIRE))
			break;
		for (int k = 0; k < CL_TOUCHES; k++) {
			rng = rng * 6364136223846793005ULL +
			      1442695040888963407ULL;
			size_t page = (size_t)(rng >> 33) % CL_PAGES;
			size_t word = (size_t)(rng >> 13) % (PS / 8);
			const uint64_t *w = (const uint64_t *)(cl + page * PS);

			if (w[word] != t_word(t_page_seed(CL_SEED, page), word))
				cl_bad[t]++;
		}
		pthread_barrier_wait(&cl_end);
	}
	return NULL;
}

static void batch_claims(void)
{
	enum { NTH = 4 };
	pthread_t th[NTH];
	struct hetmm_emu *emu;
	struct hetmm_pagemap_info info;
	struct hetmm_stats s0, s1;
	uint64_t rounds = 0;
	double deadline;

	t_emu_add(ctx, HETMM_MEMORY_DEVICE_PRIVATE, CL_PAGES, &emu, &cl_pg);
	cl = t_map(CL_PAGES);
	t_fill(cl, CL_PAGES, CL_SEED);
	REQUIRE(pthread_barrier_init(&cl_start, NULL, NTH + 1) == 0);
	REQUIRE(pthread_barrier_init(&cl_end, NULL, NTH + 1) == 0);
	for (int t = 0; t < 2; t++) {
		REQUIRE(pthread_create(&th[t], NULL, cl_migrator_main,
				       (void *)(intptr_t)t) == 0);
		REQUIRE(pthread_create(&th[2 + t], NULL, cl_toucher_main,
				       (void *)(intptr_t)t) == 0);
	}
	s0 = t_stats(ctx);

	deadline = t_now() + 2.0;
	while (rounds < 3 || (t_now() < deadline && rounds < 1000)) {
		struct hetmm_migrate_report rep;

		memset(&rep, 0, sizeof(rep));
		CHECK_OK(hetmm_migrate_to_device(cl_pg, cl, CL_PAGES * PS,
						 &rep));
		CHECK_EQ(rep.moved, CL_PAGES);
		pthread_barrier_wait(&cl_start);
		pthread_barrier_wait(&cl_end);
		rounds++;
		CHECK_EQ(settled_resident(s0.device_resident),
			 s0.device_resident);
		CHECK_EQ(t_count_on_device(ctx, cl, CL_PAGES), 0);
		CHECK_EQ(t_verify(cl, CL_PAGES, CL_SEED), 0);
		s1 = t_stats(ctx);
		CHECK_EQ(cl_moved[0] + cl_moved[1] +
				 (s1.fault_pages - s0.fault_pages),
			 rounds * CL_PAGES);
		REQUIRE_OK(hetmm_pagemap_get_info(cl_pg, &info));
		CHECK_EQ(info.nr_free, CL_PAGES);
		if (__atomic_load_n(&t_failures, __ATOMIC_RELAXED))
			break;
	}
	__atomic_store_n(&cl_done, 1, __ATOMIC_RELEASE);
	pthread_barrier_wait(&cl_start);
	for (int t = 0; t < NTH; t++)
		REQUIRE(pthread_join(th[t], NULL) == 0);
	CHECK_EQ(cl_bad[0] + cl_bad[1], 0);
	s1 = t_stats(ctx);
	printf("claims: %llu rounds; pages back by migrator 0 %llu, "
	       "migrator 1 %llu, faults %llu\n",
	       (unsigned long long)rounds, (unsigned long long)cl_moved[0],
	       (unsigned long long)cl_moved[1],
	       (unsigned long long)(s1.fault_pages - s0.fault_pages));
	/* Both ways of claiming met: each migrator won some pages. */
	CHECK(cl_moved[0] > 0 && cl_moved[1] > 0);
	pthread_barrier_destroy(&cl_start);
	pthread_barrier_destroy(&cl_end);
	t_unmap(cl, CL_PAGES);
	CHECK_OK(hetmm_emu_destroy(emu));
}

int main(void)
{
	struct hetmm_emu *e0, *e1;

	t_emu_up(&ctx, NULL, 256, &e0, &pg0);
	t_emu_add(ctx, HETMM_MEMORY_DEVICE_PRIVATE, 256, &e1, &pg1);

	{
		struct hetmm_pagemap_desc desc;

		REQUIRE(posix_memalign((void **)&cdev_mem, PS,
				       CDEV_PAGES * PS) == 0);
		memset(&desc, 0, sizeof(desc));
		desc.type = HETMM_MEMORY_DEVICE_PRIVATE;
		desc.nr_pages = CDEV_PAGES;
		desc.ops = &cdev_ops;
		REQUIRE_OK(hetmm_pagemap_add(ctx, &desc, &pgc));
	}

	writers_vs_migrations();
	concurrent_fault_back();
	batch_claims();
	CHECK_OK(hetmm_pagemap_remove(pgc));
	free(cdev_mem);

	CHECK_OK(hetmm_emu_destroy(e0));
	CHECK_OK(hetmm_emu_destroy(e1));
	CHECK_OK(hetmm_ctx_destroy(ctx));
	return t_done();
}
