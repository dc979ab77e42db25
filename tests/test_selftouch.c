/* SPDX-License-Identifier: MIT */
/*
 * test_selftouch - the fault handler's own thread touches a hole of a
 * mapping hetmm registered whole (issue 18).
 *
 * hetmm registers a whole mapping with userfaultfd (watch.c), and the
 * kernel merges other anonymous memory into a process's mapping: a
 * malloc arena, a block of the sanitizer runtime's.  The handler's own
 * code may touch such memory (ThreadSanitizer's instrumentation does,
 * on any access), and where the page was never touched the fault goes
 * to the userfaultfd only the handler reads: it waited on itself for
 * ever.  Here a test hook on the handler, while it handles a discard,
 * touches a never-touched page of the mapping's half that was never
 * migrated (no hetmm entry: a hole).
 *
 * Checked: the touch is served (zeroes, or the handler's write), the
 * discard that ran the hook is handled, and in "queued" a fault on a
 * device page and a discard of another, raised while the handler is
 * held in its own fault, are handled after it as usual (the page's
 * bytes back, the discarded page zeroes).
 *
 * "away": the handler touches the hole away, in a driver's copy back
 * (a driver's code, or the runtime's under TSan, may touch such memory
 * there too), so that its deputy, serving the trip, reads the fault.
 * A hook on the deputy touches the page of each fault it is about to
 * serve through the engine, as ThreadSanitizer's runtime did when the
 * handler's fault was on a new page of its stack depot (the engine's
 * compare-and-swap records its stack there): the handler's own fault
 * must be filled without the engine, or the deputy waits on itself.
 * Checked as above, and that the page came back.
 *
 * Each case runs in a child under a watchdog: a hang fails the case.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ctx.h"
#include "fault.h"
#include "tdrv.h"
#include "testhook.h"

#define NP 64                /* the mapping; the first half migrates */
#define NMIGRATE 32
#define DISCARDED 0          /* discarded by the test: runs the hook */
#define FAULTED 5            /* "queued": a helper faults it back */
#define DISCARDED2 6         /* "queued": a helper discards it */
#define SEED 11

struct tcase {
	const char *name;
	bool write;                  /* the handler writes the hole */
	bool queued;                 /* others' messages queue meanwhile */
	bool away;                   /* ... in a driver's copy back */
};

static const struct tcase *tc;
static struct hetmm_ctx *ctx;
static char *p;
static char *hole;               /* the page the handler touches */
static atomic_int hook_state;    /* 0 armed, 1 touching, 2 touched */
static int seen;                 /* what the handler read there */
static pthread_t helpers[2];
static atomic_int deputy_touched; /* the deputy's hook touched the hole */

static void *fault_back(void *arg)
{
	(void)arg;
	CHECK_EQ(t_verify_from(p + FAULTED * PS, 1, SEED, FAULTED), 0);
	return NULL;
}

static void *discard(void *arg)
{
	(void)arg;
	CHECK_OK(madvise(p + DISCARDED2 * PS, PS, MADV_DONTNEED));
	return NULL;
}

/* Queue a fault on a device page, and a discard, behind the handler's
 * own fault to come.  The fault waits before the hook goes on; the
 * discard may come before the handler's fault or after it. */
static void queue_others(void)
{
	REQUIRE(pthread_create(&helpers[0], NULL, fault_back, NULL) == 0);
	double until = t_now() + 10 * t_time_scale();
	while (!t_uffd_waits(ctx->uffd.fd) && t_now() < until)
		usleep(100);
	CHECK(t_uffd_waits(ctx->uffd.fd));
	REQUIRE(pthread_create(&helpers[1], NULL, discard, NULL) == 0);
	usleep(10000);
}

/* On the handler: touch the hole, once. */
static void touch_hole(void)
{
	int armed = 0;
	if (!atomic_compare_exchange_strong(&hook_state, &armed, 1))
		return;
	CHECK(fault_on_handler(ctx));
	if (tc->queued)
		queue_others();
	volatile char *h = hole;
	if (tc->write)
		*h = 0x5a;
	seen = *h;
	atomic_store(&hook_state, 2);
}

/* On the handler, handling the test's discard. */
static void touch_hook(enum test_hook_point point, uintptr_t addr,
		       size_t len)
{
	if (point == TEST_HOOK_EVENT_DISCARD &&
	    addr == (uintptr_t)(p + DISCARDED * PS) && len == PS)
		touch_hole();
}

/* On the deputy, about to serve a fault through the engine: touch its
 * page, as the runtime's instrumentation would (file comment). */
static void deputy_hook(enum test_hook_point point, uintptr_t addr,
			size_t len)
{
	if (point != TEST_HOOK_DEPUTY_SERVE || addr != (uintptr_t)hole ||
	    len != PS)
		return;
	atomic_store(&deputy_touched, 1);
	volatile char *h = hole;
	(void)*h;
}

/* The driver's copy back: on the handler, away, it touches the hole
 * first, once armed. */
static int copy_from_touching(struct hetmm_pagemap *pg, void *dst,
			      uint64_t index, size_t nr)
{
	if (atomic_load(&hook_state) == 0 && fault_on_handler(ctx))
		touch_hole();
	return td_copy_from(pg, dst, index, nr);
}

static const struct hetmm_pagemap_ops touching_ops = {
	.copy_to_device = td_copy_to,
	.copy_from_device = copy_from_touching,
};

static int run_away_case(void)
{
	struct td dev;
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	REQUIRE_OK(td_add_ops(ctx, &dev, NMIGRATE, TD_COPY,
			      HETMM_MEMORY_DEVICE_PRIVATE, 0, &touching_ops));
	p = t_map(NP);
	CHECK_OK(madvise(p, NP * PS, MADV_NOHUGEPAGE));
	t_fill(p, NMIGRATE, SEED);
	/* Registers the whole mapping, the second half with it. */
	CHECK_OK(hetmm_migrate_to_device(dev.pg, p, NMIGRATE * PS, NULL));
	CHECK_EQ(t_count_on_device(ctx, p, NMIGRATE), NMIGRATE);
	hole = p + (NMIGRATE + 8) * PS;
	CHECK_EQ(t_present(hole), 0);

	atomic_store(&hook_state, 0);   /* armed: hole and ctx published */
	__atomic_store_n(&test_hook, deputy_hook, __ATOMIC_RELEASE);
	/* Brought back by the handler, whose copy touches the hole. */
	CHECK_EQ(t_verify_from(p, 1, SEED, 0), 0);
	__atomic_store_n(&test_hook, NULL, __ATOMIC_RELEASE);
	CHECK_EQ(atomic_load(&hook_state), 2);
	CHECK_EQ(atomic_load(&deputy_touched), 0);
	CHECK_EQ(seen, tc->write ? 0x5a : 0);
	CHECK_EQ(*hole, tc->write ? 0x5a : 0);
	for (size_t i = 1; i < NMIGRATE; i++)
		CHECK_EQ(t_verify_from(p + i * PS, 1, SEED, i), 0);

	struct hetmm_stats st;
	CHECK_OK(hetmm_ctx_get_stats(ctx, &st));
	CHECK_EQ(st.fault_sigbus, 0);
	CHECK_OK(hetmm_ctx_destroy(ctx));
	td_free(&dev);
	t_unmap(p, NP);
	return t_failures ? 1 : 0;
}

/* One case, c, in a child: 0 if every check passed. */
static int run_case(const void *c)
{
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	tc = c;
	if (tc->away)
		return run_away_case();
	t_emu_up(&ctx, NULL, NMIGRATE, &emu, &pg);
	p = t_map(NP);
	CHECK_OK(madvise(p, NP * PS, MADV_NOHUGEPAGE));
	t_fill(p, NMIGRATE, SEED);
	/* Registers the whole mapping, the second half with it. */
	CHECK_OK(hetmm_migrate_to_device(pg, p, NMIGRATE * PS, NULL));
	CHECK_EQ(t_count_on_device(ctx, p, NMIGRATE), NMIGRATE);
	hole = p + (NMIGRATE + 8) * PS;
	CHECK_EQ(t_present(hole), 0);

	__atomic_store_n(&test_hook, touch_hook, __ATOMIC_RELEASE);
	/* Returns once the handler has read the event, before the hook. */
	CHECK_OK(madvise(p + DISCARDED * PS, PS, MADV_DONTNEED));
	/* Answered once the handler has handled the discard. */
	CHECK_OK(hetmm_ctx_sync(ctx));
	__atomic_store_n(&test_hook, NULL, __ATOMIC_RELEASE);
	CHECK_EQ(atomic_load(&hook_state), 2);
	CHECK_EQ(seen, tc->write ? 0x5a : 0);
	CHECK_EQ(*hole, tc->write ? 0x5a : 0);
	if (tc->queued) {
		pthread_join(helpers[0], NULL);
		pthread_join(helpers[1], NULL);
		CHECK_OK(hetmm_ctx_sync(ctx));
		CHECK_EQ(t_count_on_device(ctx, p + FAULTED * PS, 1), 0);
		CHECK_EQ(t_count_on_device(ctx, p + DISCARDED2 * PS, 1), 0);
		CHECK_EQ(t_nonzero_pages(p + DISCARDED2 * PS, 1), 0);
	}
	CHECK_EQ(t_count_on_device(ctx, p + DISCARDED * PS, 1), 0);
	CHECK_EQ(t_nonzero_pages(p + DISCARDED * PS, 1), 0);
	/* Every other page as it was, brought back now. */
	for (size_t i = 1; i < NMIGRATE; i++)
		if (!tc->queued || i != DISCARDED2)
			CHECK_EQ(t_verify_from(p + i * PS, 1, SEED, i), 0);

	struct hetmm_stats st;
	CHECK_OK(hetmm_ctx_get_stats(ctx, &st));
	CHECK_EQ(st.fault_sigbus, 0);
	CHECK_OK(hetmm_ctx_destroy(ctx));
	t_unmap(p, NP);
	return t_failures ? 1 : 0;
}

int main(void)
{
	static const struct tcase cases[] = {
		{ "read_hole", false, false, false },
		{ "write_hole", true, false, false },
		{ "queued", false, true, false },
		{ "away", false, false, true },
		{ "away_write", true, false, true },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		t_run_child(cases[i].name, run_case, &cases[i],
			    20 * t_time_scale());
	return t_done();
}
