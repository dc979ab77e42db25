/* SPDX-License-Identifier: MIT */
/*
 * test_stale - a fault the handler read may be stale by the time it
 * handles it: its thread was woken meanwhile (by a signal, or by a wake
 * of its range another thread's install made) and has gone on.  What
 * the handler decides from "who faulted" must hold for what that thread
 * does now, or not be decided so.
 *
 * The case (issue 18, test_stress: a shared page reading zeroes through
 * the CPU while its bytes sat on the device).  A missing fault on a page
 * a migration to a device holds, moved out and not yet published, is
 * answered with zeroes when it is the migration's own copy reading a
 * page the process discarded under it: else the commit would wait for a
 * thread that waits for the commit.  It was taken for that whenever the
 * faulting thread was in a migrator slot at all, and a thread is in one
 * for every sync with the handler (handler_sync: every migration, range
 * fault, mirror access), where it waits until the handler is done with
 * everything it read before.  So a fault on such a page, read by the
 * handler, whose thread was then woken and went on to a sync, was
 * answered with a zero page at the page's address; the migration then
 * published its device entry over it, and the CPU read zeroes there with
 * no fault, for good.
 *
 * The window is opened on purpose: the migration stops once the page has
 * left (TEST_HOOK_TO_DEVICE_COPIED); a reader faults on it; the handler,
 * serving that fault, stops where it looks at the claim
 * (TEST_HOOK_FAULT_CLAIMED_FRAME) while a signal ends the reader's wait
 * (the kernel's fault wait is interruptible, the message stays read) and
 * the reader, out of its signal handler, syncs with the handler.  The
 * page must read its bytes after the migration, on the device and back.
 * (Before the fix: zeroes, a zero page mapped over a device page.)
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

#include "t.h"
#include "testhook.h"

#define SEED 0x5ca1e

static struct hetmm_ctx *ctx;
static struct hetmm_pagemap *pg;
static char *page;
static pthread_t migrator, reader;
static _Atomic pid_t reader_tid;
static atomic_bool moved, reader_jumped, reader_synced, handler_there;
static sigjmp_buf reader_env;

static void reader_signal(int sig)
{
	(void)sig;
	siglongjmp(reader_env, 1);
}

static void hook(enum test_hook_point point, uintptr_t addr, size_t len)
{
	uintptr_t at = (uintptr_t)page;
	if (point == TEST_HOOK_TO_DEVICE_COPIED && at >= addr &&
	    at < addr + len && pthread_equal(pthread_self(), migrator)) {
		/* The page has left; hold the commit until the reader's
		 * fault is served and its sync answered. */
		atomic_store(&moved, true);
		t_wait_flag(&reader_synced, 10.0);
	} else if (point == TEST_HOOK_FAULT_CLAIMED_FRAME && addr == at &&
		   !atomic_exchange(&handler_there, true)) {
		/* The handler serves the reader's fault: end the reader's
		 * wait, and let it reach its sync first. */
		pthread_kill(reader, SIGUSR1);
		t_wait_flag(&reader_jumped, 10.0);
		for (double end = t_now() + 10.0;
		     !t_thread_sleeps(atomic_load(&reader_tid)) &&
		     t_now() < end;)
			usleep(1000);
		usleep(20000);   /* in the sync's fault, not on its way */
	}
}

static void *reader_main(void *arg)
{
	(void)arg;
	atomic_store(&reader_tid, gettid());
	t_wait_flag(&moved, 10.0);
	if (!sigsetjmp(reader_env, 1)) {
		/* Faults: the page is on its way to the device. */
		(void)*(volatile uint64_t *)page;
		return NULL;   /* served without the signal: nothing shown */
	}
	atomic_store(&reader_jumped, true);
	CHECK_OK(hetmm_ctx_sync(ctx));
	atomic_store(&reader_synced, true);
	return NULL;
}

static void test_stale_fault_of_a_syncing_thread(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = reader_signal;
	REQUIRE(sigaction(SIGUSR1, &sa, NULL) == 0);

	page = t_map(1);
	t_fill(page, 1, SEED);
	migrator = pthread_self();
	REQUIRE(pthread_create(&reader, NULL, reader_main, NULL) == 0);
	__atomic_store_n(&test_hook, hook, __ATOMIC_RELEASE);
	CHECK_OK(hetmm_migrate_to_device(pg, page, PS, NULL));
	__atomic_store_n(&test_hook, NULL, __ATOMIC_RELEASE);
	REQUIRE(pthread_join(reader, NULL) == 0);

	/* The window was open: the handler served the reader's fault
	 * after the reader had left it for its sync. */
	CHECK(atomic_load(&handler_there));
	CHECK(atomic_load(&reader_jumped));
	CHECK(atomic_load(&reader_synced));
	/* On the device, nothing of it left in the process (a zero page
	 * there would be read with no fault)... */
	CHECK_EQ(t_on_device(ctx, page), 1);
	CHECK_EQ(t_present(page), 0);
	/* ...and its bytes back from the device. */
	CHECK_OK(hetmm_migrate_to_system(ctx, page, PS, NULL));
	CHECK_EQ(t_verify(page, 1, SEED), 0);
	t_unmap(page, 1);
}

int main(void)
{
	struct hetmm_emu *emu;

#if defined(__SANITIZE_THREAD__)
	/* ThreadSanitizer's runtime defers an asynchronous signal until its
	 * thread's next intercepted call: the reader, in a load's fault,
	 * faults again instead and the window never opens. */
	fprintf(stderr, "test_stale: not under ThreadSanitizer (a signal "
			"must end a fault's wait)\n");
	return 77;
#endif

	t_emu_up(&ctx, NULL, 16, &emu, &pg);
	test_stale_fault_of_a_syncing_thread();
	CHECK_OK(hetmm_emu_destroy(emu));
	CHECK_OK(hetmm_ctx_destroy(ctx));
	return t_done();
}
