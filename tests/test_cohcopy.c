/* SPDX-License-Identifier: MIT */
/*
 * test_cohcopy - a migration to a DEVICE_COHERENT device copies the
 * chunk's pages (it never moves them: the device's memory is a file's),
 * while the process discards, reads and writes them (issue 18).
 *
 * The copy reads the process's pages at their own addresses, write-
 * protected and claimed (bare BUSY: coherent claims name no frame).  A
 * page the process discarded meanwhile is missing there, and a missing
 * fault on a claimed page waits for the claim's wake, which only the
 * commit gives, after the copy: unless the handler knows the fault for
 * the copy's read (migrator_copying) and gives it zeroes, as the
 * kernel's copy would read.  The coherent copy ran in no migrator slot,
 * so the migration waited on itself for good.
 *
 * Each part opens its window on purpose: the migration stops where its
 * copy is about to read (TEST_HOOK_TO_DEVICE_COPYING) while a second
 * thread discards or writes, and goes on only once the handler has
 * handled that (a sync through it) or the writer waits in its fault.
 * Each part runs in a child (t_run_child), so that a hang is a failure
 * after a timeout, not a stuck test.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

#include "t.h"
#include "testhook.h"

#define NPAGES 4
#define TARGET 1   /* the page the second thread touches */
#define SEED 0xc0c0
#define WRITTEN 0x5eed0f0a11ULL   /* the writer's word 0 of page TARGET */

static struct hetmm_ctx *ctx;
static struct hetmm_pagemap *pg;
static char *pages;
static pthread_t migrator;
static _Atomic pid_t toucher_tid;
static atomic_bool copy_reached, touch_done;
/* Where the migration is held: TEST_HOOK_TO_DEVICE_COPYING, or
 * TEST_HOOK_TO_DEVICE_COPIED (copied and mapped, not yet published). */
static enum test_hook_point hold_at;

/* The migration's copy reads the chunk next: hold it until the second
 * thread has touched the page. */
static void hook(enum test_hook_point point, uintptr_t addr, size_t len)
{
	uintptr_t at = (uintptr_t)pages + TARGET * PS;
	if (point != hold_at || at < addr ||
	    at >= addr + len || !pthread_equal(pthread_self(), migrator))
		return;
	atomic_store(&copy_reached, true);
	t_wait_flag(&touch_done, 10.0 * t_time_scale());
}

/* The process discards the page while the copy is held, and syncs: the
 * handler has handled the discard before the copy reads. */
static void *discarder_main(void *arg)
{
	(void)arg;
	t_wait_flag(&copy_reached, 10.0 * t_time_scale());
	CHECK(madvise(pages + TARGET * PS, PS, MADV_DONTNEED) == 0);
	CHECK_OK(hetmm_ctx_sync(ctx));
	atomic_store(&touch_done, true);
	return NULL;
}

/* The process writes the page while the copy is held: the write waits
 * in its write-protect fault, and the copy goes on meanwhile. */
static void *writer_main(void *arg)
{
	(void)arg;
	atomic_store(&toucher_tid, gettid());
	t_wait_flag(&copy_reached, 10.0 * t_time_scale());
	/* Atomic: the write protection that orders it after the copy's
	 * read is hidden from a race detector. */
	__atomic_store_n((uint64_t *)(pages + TARGET * PS), WRITTEN,
			 __ATOMIC_RELAXED);
	return NULL;
}

static void *writer_watch(void *arg)
{
	(void)arg;
	t_wait_flag(&copy_reached, 10.0 * t_time_scale());
	for (double end = t_now() + 10.0 * t_time_scale();
	     !t_thread_sleeps(atomic_load(&toucher_tid)) && t_now() < end;)
		usleep(1000);
	usleep(20000);   /* in its fault, not on its way */
	atomic_store(&touch_done, true);
	return NULL;
}

/* Migrate the chunk with the hook set while thread fn touches page
 * TARGET (watch, if any, says when it has); moved: how many pages must
 * reach the device (all but TARGET if it is left out). */
static void migrate_touched(void *(*fn)(void *), void *(*watch)(void *),
			    size_t moved)
{
	pthread_t t, w;
	pages = t_map(NPAGES);
	t_fill(pages, NPAGES, SEED);
	migrator = pthread_self();
	REQUIRE(pthread_create(&t, NULL, fn, NULL) == 0);
	if (watch)
		REQUIRE(pthread_create(&w, NULL, watch, NULL) == 0);
	struct hetmm_migrate_report rep = { 0, 0, NULL };
	__atomic_store_n(&test_hook, hook, __ATOMIC_RELEASE);
	CHECK_OK(hetmm_migrate_to_device(pg, pages, NPAGES * PS, &rep));
	__atomic_store_n(&test_hook, NULL, __ATOMIC_RELEASE);
	REQUIRE(pthread_join(t, NULL) == 0);
	if (watch)
		REQUIRE(pthread_join(w, NULL) == 0);
	CHECK(atomic_load(&copy_reached));
	CHECK(atomic_load(&touch_done));
	CHECK_EQ(rep.moved, moved);
	CHECK_EQ(t_count_on_device(ctx, pages, NPAGES), moved);
	CHECK_EQ(t_on_device(ctx, pages + TARGET * PS), moved == NPAGES);
}

/* The other pages keep their bytes, on the device and back. */
static void verify_others(void)
{
	for (size_t i = 0; i < NPAGES; i++)
		if (i != TARGET)
			CHECK_EQ(t_verify_from(pages + i * PS, 1, SEED, i), 0);
}

/* The discarded page reads zeroes and the others their bytes, on the
 * device and back in system memory. */
static void check_discarded(void)
{
	CHECK_EQ(t_nonzero_pages(pages + TARGET * PS, 1), 0);
	verify_others();
	CHECK_OK(hetmm_migrate_to_system(ctx, pages, NPAGES * PS, NULL));
	CHECK_EQ(t_nonzero_pages(pages + TARGET * PS, 1), 0);
	verify_others();
}

/* A page discarded before the copy read it: left out of the migration,
 * as the kernel leaves out a page whose migration entry was zapped, and
 * reading zeroes (before: the copy waited on its own claim, for good). */
static void discard_before_copy(void)
{
	hold_at = TEST_HOOK_TO_DEVICE_COPYING;
	migrate_touched(discarder_main, NULL, NPAGES - 1);
	check_discarded();
}

/* A page discarded once copied and mapped, before the migration
 * published it: on the device, reading zeroes, as a discarded coherent
 * page does (before: the bytes copied before the discard). */
static void discard_after_copy(void)
{
	hold_at = TEST_HOOK_TO_DEVICE_COPIED;
	migrate_touched(discarder_main, NULL, NPAGES);
	check_discarded();
}

/* Page TARGET holds the writer's word, and its own bytes after it. */
static void check_written(void)
{
	const uint64_t *w = (const uint64_t *)(pages + TARGET * PS);
	uint64_t s = t_page_seed(SEED, TARGET);
	CHECK_EQ(w[0], WRITTEN);
	size_t bad = 0;
	for (size_t j = 1; j < PS / 8; j++)
		bad += w[j] != t_word(s, j);
	CHECK_EQ(bad, 0);
}

/* A write while the copy runs: it waits, and lands on the device. */
static void write_during_copy(void)
{
	hold_at = TEST_HOOK_TO_DEVICE_COPYING;
	migrate_touched(writer_main, writer_watch, NPAGES);
	check_written();
	verify_others();
	CHECK_OK(hetmm_migrate_to_system(ctx, pages, NPAGES * PS, NULL));
	check_written();
	verify_others();
}

/* A part, for t_run_child: its own context and coherent device, in a
 * child, whose exit status is its result. */
struct part {
	void (*fn)(void);
};

static int part_child(const void *arg)
{
	struct hetmm_emu *emu;
	t_failures = 0;   /* the child's own checks */
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	REQUIRE_OK(hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_COHERENT, 64,
				    &emu));
	REQUIRE_OK(hetmm_emu_pagemap(emu, &pg));
	((const struct part *)arg)->fn();
	CHECK_OK(hetmm_emu_destroy(emu));
	CHECK_OK(hetmm_ctx_destroy(ctx));
	fflush(NULL);
	return t_failures != 0;
}

int main(void)
{
	static const struct part before = { discard_before_copy },
				 after = { discard_after_copy },
				 write = { write_during_copy };
	unsigned limit = 30 * t_time_scale();
	if (!t_coherent_here()) {
		fprintf(stderr, "test_cohcopy: no coherent devices here\n");
		return 77;
	}
	fflush(NULL);
	t_run_child("discard before the copy", part_child, &before, limit);
	t_run_child("discard after the copy", part_child, &after, limit);
	t_run_child("write during the copy", part_child, &write, limit);
	return t_done();
}
