/* SPDX-License-Identifier: MIT */
/*
 * test_evict: a device smaller than the data.  With HETMM_PAGEMAP_EVICT a
 * migration to the full device evicts its oldest pages to system memory
 * (every byte intact, evictions counted, pages asked for again spared
 * once); without it the migration fails with -ENOMEM.  Both the moving
 * (remap) and the copying driver, and two threads thrashing one device.
 */
#include <pthread.h>

#include "tdrv.h"

#define DEV_PAGES 64
#define DATA_PAGES 256

static struct hetmm_ctx *ctx;

/* Slices of a device's size, one after another: each evicts the last. */
static void test_slices(enum td_mode mode)
{
	struct td d;
	/* Each slice straddles a 2 MiB boundary, so it goes in two chunks:
	 * the second must not evict what the first just moved in. */
	char *buf = t_map_chunk_at(DATA_PAGES, 32);
	uint8_t st[DEV_PAGES];
	struct hetmm_migrate_report rep = { 0, 0, st };

	REQUIRE_OK(td_add(ctx, &d, DEV_PAGES, mode,
			  HETMM_MEMORY_DEVICE_PRIVATE, HETMM_PAGEMAP_EVICT));
	t_fill(buf, DATA_PAGES, 11 + mode);
	struct hetmm_stats s0 = t_stats(ctx);
	for (size_t a = 0; a < DATA_PAGES; a += DEV_PAGES) {
		CHECK_OK(hetmm_migrate_to_device(d.pg, buf + a * PS,
						 DEV_PAGES * PS, &rep));
		CHECK_EQ(rep.moved, DEV_PAGES);
		for (size_t i = 0; i < DATA_PAGES; i++)
			CHECK_EQ(t_on_device(ctx, buf + i * PS),
				 i >= a && i < a + DEV_PAGES);
	}
	struct hetmm_stats s1 = t_stats(ctx);
	CHECK_EQ(s1.evictions - s0.evictions, DATA_PAGES - DEV_PAGES);
	CHECK_EQ(s1.device_resident - s0.device_resident, DEV_PAGES);
	t_verify(buf, DATA_PAGES, 11 + mode);

	/* Everything in one call: what fits moves, no error, bytes kept. */
	CHECK_OK(hetmm_migrate_to_device(d.pg, buf, DATA_PAGES * PS, NULL));
	t_verify(buf, DATA_PAGES, 11 + mode);
	CHECK_OK(hetmm_pagemap_remove(d.pg));
	td_free(&d);
	t_unmap(buf, DATA_PAGES);
}

/* A page asked for again survives one pass of the clock. */
static void test_second_chance(void)
{
	struct td d;
	char *a = t_map(DEV_PAGES), *b = t_map(8);

	REQUIRE_OK(td_add(ctx, &d, DEV_PAGES, TD_REMAP,
			  HETMM_MEMORY_DEVICE_PRIVATE, HETMM_PAGEMAP_EVICT));
	t_fill(a, DEV_PAGES, 21);
	t_fill(b, 8, 22);
	CHECK_OK(hetmm_migrate_to_device(d.pg, a, DEV_PAGES * PS, NULL));
	/* Already there: referenced. */
	CHECK_EQ(hetmm_migrate_to_device(d.pg, a, 8 * PS, NULL), -ENOENT);
	CHECK_OK(hetmm_migrate_to_device(d.pg, b, 8 * PS, NULL));
	for (size_t i = 0; i < 16; i++)
		CHECK_EQ(t_on_device(ctx, a + i * PS), i < 8);
	for (size_t i = 0; i < 8; i++)
		CHECK(t_on_device(ctx, b + i * PS));
	t_verify(a, DEV_PAGES, 21);
	t_verify(b, 8, 22);
	CHECK_OK(hetmm_pagemap_remove(d.pg));
	td_free(&d);
	t_unmap(a, DEV_PAGES);
	t_unmap(b, 8);
}

/* Policy "fail": -ENOMEM, nothing evicted. */
static void test_fail_policy(void)
{
	struct td d;
	char *a = t_map(DEV_PAGES), *b = t_map(8);
	uint8_t st[8];
	struct hetmm_migrate_report rep = { 0, 0, st };

	REQUIRE_OK(td_add(ctx, &d, DEV_PAGES, TD_REMAP,
			  HETMM_MEMORY_DEVICE_PRIVATE, 0));
	t_fill(a, DEV_PAGES, 31);
	t_fill(b, 8, 32);
	CHECK_OK(hetmm_migrate_to_device(d.pg, a, DEV_PAGES * PS, NULL));
	struct hetmm_stats s0 = t_stats(ctx);
	CHECK_EQ(hetmm_migrate_to_device(d.pg, b, 8 * PS, &rep), -ENOMEM);
	for (size_t i = 0; i < 8; i++) {
		CHECK_EQ(st[i], HETMM_MIGRATE_SKIP_NOMEM);
		CHECK(!t_on_device(ctx, b + i * PS));
	}
	struct hetmm_stats s1 = t_stats(ctx);
	CHECK_EQ(s1.evictions, s0.evictions);
	for (size_t i = 0; i < DEV_PAGES; i++)
		CHECK(t_on_device(ctx, a + i * PS));
	t_verify(b, 8, 32);
	t_verify(a, DEV_PAGES, 31);
	CHECK_OK(hetmm_pagemap_remove(d.pg));
	td_free(&d);
	t_unmap(a, DEV_PAGES);
	t_unmap(b, 8);
}

/* Two threads push their own data through one small device. */
struct thrash {
	struct hetmm_pagemap *pg;
	char *buf;
	uint64_t seed;
};

/*
 * One run of 32 pages to the device: moved (0), or the device full
 * (-ENOMEM).  The other thread's eviction may still hold pages of ours
 * it brought home: their PTEs are in, so our reads went on, but its
 * claims go only once it publishes them.  Such a run is skipped whole
 * (-ENOENT, every page HETMM_MIGRATE_SKIP_BUSY, as the kernel's
 * migrate_vma skips pages another migration has locked); the hold must
 * end, so the run is asked again, for at most 10 s.
 */
static void thrash_run(struct thrash *t, size_t a)
{
	uint8_t st[32];
	struct hetmm_migrate_report rep = { 0, 0, st };
	int rc, tries;
	for (tries = 0; tries < 10000; tries++) {
		rc = hetmm_migrate_to_device(t->pg, t->buf + a * PS, 32 * PS,
					     &rep);
		if (rc != -ENOENT)
			break;
		for (size_t i = 0; i < 32; i++)
			CHECK_EQ(st[i], HETMM_MIGRATE_SKIP_BUSY);
		usleep(1000);
	}
	if (tries)
		fprintf(stderr, "  run at page %zu held, asked %d times\n", a,
			tries + 1);
	CHECK(rc == 0 || rc == -ENOMEM);
}

static void *thrasher(void *arg)
{
	struct thrash *t = arg;

	for (int round = 0; round < 20; round++) {
		for (size_t a = 0; a < DATA_PAGES; a += 32)
			thrash_run(t, a);
		t_verify(t->buf, DATA_PAGES, t->seed);
	}
	return NULL;
}

static void test_thrash(void)
{
	struct td d;
	struct thrash t[2];
	pthread_t th[2];

	REQUIRE_OK(td_add(ctx, &d, DEV_PAGES, TD_REMAP,
			  HETMM_MEMORY_DEVICE_PRIVATE, HETMM_PAGEMAP_EVICT));
	struct hetmm_stats s0 = t_stats(ctx);
	for (int i = 0; i < 2; i++) {
		t[i].pg = d.pg;
		t[i].buf = t_map(DATA_PAGES);
		t[i].seed = 41 + (uint64_t)i;
		t_fill(t[i].buf, DATA_PAGES, t[i].seed);
		REQUIRE(pthread_create(&th[i], NULL, thrasher, &t[i]) == 0);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	struct hetmm_stats s1 = t_stats(ctx);
	CHECK(s1.evictions > s0.evictions);
	CHECK_OK(hetmm_pagemap_remove(d.pg));
	for (int i = 0; i < 2; i++) {
		t_verify(t[i].buf, DATA_PAGES, t[i].seed);
		t_unmap(t[i].buf, DATA_PAGES);
	}
	td_free(&d);
}

int main(void)
{
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	test_slices(TD_REMAP);
	test_slices(TD_COPY);
	test_second_chance();
	test_fail_policy();
	test_thrash();
	CHECK_EQ(t_stats(ctx).device_resident, 0);
	CHECK_OK(hetmm_ctx_destroy(ctx));
	return t_done();
}
