/* SPDX-License-Identifier: MIT */
/*
 * test_drvlock - the handler waits for a driver's lock in the driver's
 * invalidation while the thread that holds the lock waits in a fault
 * on a hole of a mapping hetmm registered whole (issue 18).  Only a
 * reader of the userfaultfd can serve that fault, and the handler waits
 * for the lock: before the fix neither moved, for good (the child is
 * killed).  Now the handler runs a driver's callbacks away (away.h), and
 * the deputy fills the hole meanwhile, in the middle of a discard, of an
 * unmap, of an mremap (outside its two ranges) and of a fault-back's
 * migration alike.
 *
 * The window is opened on purpose: a driver's thread takes its lock,
 * waits until the handler is in the driver's invalidation (which takes
 * the same lock), and then touches a page never touched of a mapping
 * registered whole, as a thread of a driver's library would touch memory
 * its malloc arena hands out (test_mirrorlock: the emulated mirror's page
 * table did).  Public API only, but for the last case's hook.
 *
 * And what the deputy must not serve while the handler is in the middle
 * of an event: a fault on a page the event moves device pages to.  An
 * mremap's invalidation holds the handler, away, until a thread touches
 * the new range and a few of the deputy's ticks have gone by: the page
 * must come with the device's bytes, not the zeroes the deputy would
 * have given the hole it looks like until the handler moves the entries.
 *
 * And the hole in the handler's own batch: the driver's thread faults on
 * it, holding its lock, after another thread's fault on a device page
 * was queued, and the handler reads both in one batch.  The fault back
 * waits for the lock away, the deputy reads nothing new, and the hole
 * is behind the fault back in the handler's batch: the deputy must serve
 * it from there (before the fix, hung: test_stress did so under TSan,
 * with the runtime's own lock).  A test hook holds the handler, busy,
 * while both faults queue, in that order.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "t.h"
#include "testhook.h"

#define ARENA_PAGES 16
#define DATA_PAGES 4

enum trigger { T_DISCARD, T_UNMAP, T_FAULT_BACK, T_REMAP };

static const enum hetmm_event trigger_event[] = {
	[T_DISCARD] = HETMM_EVENT_DISCARD,
	[T_UNMAP] = HETMM_EVENT_UNMAP,
	[T_FAULT_BACK] = HETMM_EVENT_MIGRATE,
	[T_REMAP] = HETMM_EVENT_REMAP,
};

/* The driver's lock, and the window's flags. */
static pthread_mutex_t drv_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int armed = -1;          /* the event that takes the lock */
static atomic_bool in_invalidate, holding, touched;
static char *arena;                     /* registered; pages 1.. holes */

/* The driver's invalidation: takes its lock, as a mirror's does. */
static void lock_invalidate(struct hetmm_notifier *n, uintptr_t start,
			    uintptr_t end, enum hetmm_event why, void *arg)
{
	(void)n, (void)start, (void)end, (void)arg;
	if ((int)why != atomic_load(&armed))
		return;
	atomic_store(&in_invalidate, true);
	pthread_mutex_lock(&drv_lock);
	pthread_mutex_unlock(&drv_lock);
}

static const struct hetmm_notifier_ops lock_ops = {
	.invalidate = lock_invalidate,
};

/* The driver's thread, holding its lock: touch the arena's hole, then
 * let go of the lock. */
static void touch_hole_and_unlock(void)
{
	volatile char *hole = arena + PS;
	hole[0] = 5;
	atomic_store(&touched, true);
	pthread_mutex_unlock(&drv_lock);
}

/* The driver's thread: under its lock, once the handler is in the
 * invalidation, a hole of the arena. */
static void *driver_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&drv_lock);
	atomic_store(&holding, true);
	t_wait_flag(&in_invalidate, 10.0 * t_time_scale());
	touch_hole_and_unlock();
	return NULL;
}

/* A context with an emulated device; the arena registered whole by the
 * migration of its first page, the rest never touched; DATA_PAGES of
 * data (seed 7) on the device, under the driver's locking notifier. */
struct rig {
	struct hetmm_ctx *ctx;
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	struct hetmm_notifier *n;
	char *data;
};

static void rig_up(struct rig *r)
{
	REQUIRE_OK(hetmm_ctx_create(&r->ctx, NULL));
	t_emu_add(r->ctx, HETMM_MEMORY_DEVICE_PRIVATE, 64, &r->emu, &r->pg);
	arena = t_map(ARENA_PAGES);
	arena[0] = 1;
	t_to_device(r->pg, arena, 1);
	r->data = t_map(DATA_PAGES);
	t_fill(r->data, DATA_PAGES, 7);
	t_to_device(r->pg, r->data, DATA_PAGES);
	REQUIRE_OK(hetmm_notifier_insert(r->ctx, r->data, DATA_PAGES * PS,
					 &lock_ops, NULL, &r->n));
}

/* Every case's end: the hole was touched under the lock, in the driver's
 * invalidation; the rig goes; the child's verdict. */
static int rig_down(struct rig *r)
{
	atomic_store(&armed, -1);
	CHECK(atomic_load(&in_invalidate));
	CHECK(atomic_load(&touched));
	CHECK_EQ(arena[PS], 5);
	CHECK_OK(hetmm_notifier_remove(r->n));
	CHECK_OK(hetmm_emu_destroy(r->emu));
	CHECK_OK(hetmm_ctx_destroy(r->ctx));
	fflush(NULL);
	return t_failures != 0;
}

static int lock_across_hole(const void *arg)
{
	enum trigger how = *(const enum trigger *)arg;
	struct rig r;
	rig_up(&r);
	char *data = r.data;

	pthread_t drv;
	REQUIRE(pthread_create(&drv, NULL, driver_main, NULL) == 0);
	t_wait_flag(&holding, 10.0 * t_time_scale());
	CHECK(atomic_load(&holding));
	atomic_store(&armed, (int)trigger_event[how]);
	switch (how) {
	case T_DISCARD:
		CHECK(madvise(data, PS, MADV_DONTNEED) == 0);
		CHECK_EQ(t_nonzero_pages(data, 1), 0);
		CHECK_EQ(t_verify_from(data + PS, 1, 7, 1), 0);
		break;
	case T_UNMAP:
		CHECK(munmap(data, PS) == 0);
		CHECK_EQ(t_verify_from(data + PS, 1, 7, 1), 0);
		break;
	case T_FAULT_BACK:
		CHECK_EQ(t_verify(data, DATA_PAGES, 7), 0);
		break;
	case T_REMAP: {
		/* Onto a reservation (not registered): moved for sure. */
		char *dst = t_reserve(DATA_PAGES);
		char *to = mremap(data, DATA_PAGES * PS, DATA_PAGES * PS,
				  MREMAP_MAYMOVE | MREMAP_FIXED, dst);
		REQUIRE(to == dst);
		data = to;
		REQUIRE(pthread_join(drv, NULL) == 0);
		CHECK_EQ(t_verify(data, DATA_PAGES, 7), 0);
		break;
	}
	}
	if (how != T_REMAP)
		REQUIRE(pthread_join(drv, NULL) == 0);
	return rig_down(&r);
}

/* The mremap case: the thread that touches the new range. */
static _Atomic(char *) moved_to;
static _Atomic pid_t toucher_tid;
static atomic_bool toucher_done;
static _Atomic uint64_t toucher_saw;   /* its first word */

/* Called for the old range: hold the handler, away, until the toucher
 * waits in its fault and the deputy has had a few ticks to read it. */
static void hold_invalidate(struct hetmm_notifier *n, uintptr_t start,
			    uintptr_t end, enum hetmm_event why, void *arg)
{
	(void)n, (void)start, (void)end, (void)arg;
	if (why != HETMM_EVENT_REMAP || atomic_exchange(&in_invalidate, true))
		return;
	double limit = t_now() + 10.0 * t_time_scale();
	while (!atomic_load(&toucher_done) &&
	       !t_in_userfault(atomic_load(&toucher_tid)) && t_now() < limit)
		usleep(1000);
	usleep(200000u * t_time_scale());
}

static const struct hetmm_notifier_ops hold_ops = {
	.invalidate = hold_invalidate,
};

static void *toucher_main(void *arg)
{
	(void)arg;
	atomic_store(&toucher_tid, gettid());
	char *p;
	while (!(p = atomic_load(&moved_to)))
		usleep(100);
	atomic_store(&toucher_saw, *(volatile uint64_t *)p);
	atomic_store(&toucher_done, true);
	return NULL;
}

static int remap_kept(const void *arg)
{
	(void)arg;
	struct hetmm_ctx *ctx;
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	struct hetmm_notifier *n;
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	t_emu_add(ctx, HETMM_MEMORY_DEVICE_PRIVATE, 64, &emu, &pg);
	char *data = t_map(DATA_PAGES);
	t_fill(data, DATA_PAGES, 9);
	t_to_device(pg, data, DATA_PAGES);
	REQUIRE_OK(hetmm_notifier_insert(ctx, data, DATA_PAGES * PS,
					 &hold_ops, NULL, &n));
	pthread_t toucher;
	REQUIRE(pthread_create(&toucher, NULL, toucher_main, NULL) == 0);
	while (!atomic_load(&toucher_tid))
		usleep(100);
	/* Moved for sure: onto a reservation (not registered). */
	char *dst = t_reserve(DATA_PAGES);
	char *to = mremap(data, DATA_PAGES * PS, DATA_PAGES * PS,
			  MREMAP_MAYMOVE | MREMAP_FIXED, dst);
	REQUIRE(to == dst);
	atomic_store(&moved_to, to);
	REQUIRE(pthread_join(toucher, NULL) == 0);
	CHECK(atomic_load(&in_invalidate));
	CHECK(atomic_load(&toucher_saw) == t_word(t_page_seed(9, 0), 0));
	CHECK_EQ(t_verify(to, DATA_PAGES, 9), 0);

	CHECK_OK(hetmm_notifier_remove(n));
	CHECK_OK(hetmm_emu_destroy(emu));
	CHECK_OK(hetmm_ctx_destroy(ctx));
	fflush(NULL);
	return t_failures != 0;
}

/* The hole in the handler's batch: the thread that faults on the device
 * page (backer), the driver's thread (holder), and the discard whose
 * handling holds the handler until both wait in their faults. */
static _Atomic pid_t backer_tid, holder_tid;
static atomic_bool in_hook;
static _Atomic uintptr_t hold_at;       /* the discard to hold on */

static void wait_in_userfault(_Atomic pid_t *tid)
{
	double limit = t_now() + 10.0 * t_time_scale();
	while (!(atomic_load(tid) && t_in_userfault(atomic_load(tid))) &&
	       t_now() < limit)
		usleep(1000);
}

static void hold_handler(enum test_hook_point point, uintptr_t addr,
			 size_t len)
{
	(void)len;
	if (point != TEST_HOOK_EVENT_DISCARD || addr != atomic_load(&hold_at))
		return;
	atomic_store(&in_hook, true);
	wait_in_userfault(&holder_tid);
}

static void *backer_main(void *arg)
{
	volatile char *page = arg;
	t_wait_flag(&in_hook, 10.0 * t_time_scale());
	atomic_store(&backer_tid, gettid());
	(void)page[0];
	return NULL;
}

static void *holder_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&drv_lock);
	wait_in_userfault(&backer_tid);
	atomic_store(&holder_tid, gettid());
	touch_hole_and_unlock();
	return NULL;
}

static int hole_in_batch(const void *arg)
{
	(void)arg;
	struct rig r;
	rig_up(&r);
	atomic_store(&armed, (int)HETMM_EVENT_MIGRATE);

	pthread_t backer, holder;
	REQUIRE(pthread_create(&holder, NULL, holder_main, NULL) == 0);
	REQUIRE(pthread_create(&backer, NULL, backer_main, r.data) == 0);
	char *discard = arena + 2 * PS;         /* a hole: nothing to lose */
	atomic_store(&hold_at, (uintptr_t)discard);
	__atomic_store_n(&test_hook, hold_handler, __ATOMIC_RELEASE);
	CHECK(madvise(discard, PS, MADV_DONTNEED) == 0);
	REQUIRE(pthread_join(backer, NULL) == 0);
	REQUIRE(pthread_join(holder, NULL) == 0);
	__atomic_store_n(&test_hook, NULL, __ATOMIC_RELEASE);
	atomic_store(&armed, -1);
	CHECK(atomic_load(&in_hook));
	CHECK_EQ(t_verify(r.data, DATA_PAGES, 7), 0);
	return rig_down(&r);
}

int main(void)
{
	static const enum trigger discard = T_DISCARD, unmap = T_UNMAP,
				  back = T_FAULT_BACK, remap = T_REMAP;
	unsigned limit = 30 * t_time_scale();
	fflush(NULL);
	t_run_child("discard", lock_across_hole, &discard, limit);
	t_run_child("unmap", lock_across_hole, &unmap, limit);
	t_run_child("fault back", lock_across_hole, &back, limit);
	t_run_child("mremap", lock_across_hole, &remap, limit);
	t_run_child("mremap's new range kept", remap_kept, NULL, limit);
	t_run_child("the hole in the handler's batch", hole_in_batch, NULL,
		    limit);
	return t_done();
}
