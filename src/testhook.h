/* SPDX-License-Identifier: MIT */
/*
 * testhook.h - points where a test can stop a thread of the library, to
 * open a race window on purpose instead of hoping a soak hits it.
 *
 * Built only with the CMake option HETMM_TEST_HOOKS (on by default, as
 * the tests need it; -DHETMM_TEST_HOOKS=OFF builds a library without
 * them).  Where built, a hook costs one load of a pointer that is NULL
 * unless a test set it, and a branch predicted not taken; it sits where a
 * run of pages is claimed or an event is handled, never per page.  Not
 * part of the public API: the shared library does not export the pointer
 * (libhetmm.map), only tests linked with the static library can set it.
 */
#ifndef HETMM_TESTHOOK_H
#define HETMM_TESTHOOK_H

#include <stddef.h>
#include <stdint.h>

enum test_hook_point {
	/* A thread other than the handler claimed device pages [addr,
	 * addr + len) to bring them back (eviction, migration back, a
	 * pin), and copies nothing yet. */
	TEST_HOOK_BACK_CLAIMED,
	/* It put them at [addr, addr + len) (those the kernel let in),
	 * holds the claims still, and waits for the handler next if it
	 * must (back.c: "Claims mremap carried"). */
	TEST_HOOK_BACK_PUT,
	/* It installed them at [addr, addr + len), and the handler has
	 * handled every event read before: it lets go of the claims next. */
	TEST_HOOK_BACK_INSTALLED,
	/* It let go of them. */
	TEST_HOOK_BACK_LET_GO,
	/* The handler is about to handle the process's event on [addr,
	 * addr + len): MADV_* discard (REMOVE), mremap from there (REMAP;
	 * read already, so the mremap may have returned). */
	TEST_HOOK_EVENT_DISCARD,
	TEST_HOOK_EVENT_REMAP,
	/* ... munmap (UNMAP; read already, so munmap has returned). */
	TEST_HOOK_EVENT_UNMAP,
	/* A migration to a device claimed the system pages of its chunk
	 * [addr, addr + len) and has their frames: it moves or copies
	 * them next. */
	TEST_HOOK_TO_DEVICE_CLAIMED,
	/* It moved or copied them out (and zapped them), and publishes
	 * them next. */
	TEST_HOOK_TO_DEVICE_COPIED,
	/* It has write-protected the pages of [addr, addr + len) it could
	 * not move, and its copy reads them next (on its own thread, or
	 * an asynchronous driver's). */
	TEST_HOOK_TO_DEVICE_COPYING,
	/* A piece that came back through a driver's asynchronous copies
	 * (a window's, or a lone page's) is done with at [addr, addr + len)
	 * (installed, its frames free, or kept on the device): its copy
	 * slot goes back to the queue next. */
	TEST_HOOK_BACK_PIECE_DONE,
	/* The handler moved a block of pages back as one PMD into [addr,
	 * addr + len) (len 0: the kernel moved none of it whole), and a
	 * placed pagemap's block is write-protected next (pmdback.c). */
	TEST_HOOK_BACK_PMD_MOVED,
	/* The handler's deputy returns: its thread exits next (addr and
	 * len 0).  A sanitizer's exit unmaps memory of the thread's then,
	 * which may lie in a mapping registered whole. */
	TEST_HOOK_DEPUTY_EXIT,
	/* The deputy, serving the handler's trip, serves the fault at
	 * [addr, addr + len) through the engine next (fault_zero or
	 * fault_unprotect).  Under TSan that code may touch the runtime's
	 * memory: the page itself, if the fault was on a new one. */
	TEST_HOOK_DEPUTY_SERVE,
	/* A migrator recorded the coherent swap of [addr, addr + len) as
	 * its own doing (coherent.c) and moves the prepared range there
	 * next. */
	TEST_HOOK_OWN_REMAP,
	/* The handler has a lone page the CPU faulted on, copied back from
	 * its device for [addr, addr + len), and installs it next. */
	TEST_HOOK_FAULT_LONE,
	/* The handler has a fault at [addr, addr + len) on a device page
	 * another thread holds claimed, has looked up the frame's pagemap
	 * (nothing it holds keeps that alive) and reads the frame's
	 * metadata next. */
	TEST_HOOK_FAULT_CLAIMED_FRAME,
	/* A thread that holds nothing of a pagemap found it, and reads
	 * the metadata of frames [addr, addr + len) (frame numbers) next:
	 * whether they are one huge page (pfn_block_huge: a range fault, a
	 * migration back), or a page a driver wrote (pagemap_page_written,
	 * len 1). */
	TEST_HOOK_PAGEMAP_LOOK,
};

#ifdef HETMM_TEST_HOOKS
/* Set by a test (atomically: the handler reads it); called with the
 * point and the range. */
extern void (*test_hook)(enum test_hook_point point, uintptr_t addr,
			 size_t len);
/* Set by a test: contexts created meanwhile run as on a kernel without
 * UFFDIO_MOVE (before 6.8: Debian 12's 6.1), pages copied, not moved. */
extern _Bool test_no_move;
#define TEST_NO_MOVE() __atomic_load_n(&test_no_move, __ATOMIC_RELAXED)
#define TEST_HOOK(point, addr, len)                                      \
	do {                                                             \
		void (*hook_)(enum test_hook_point, uintptr_t, size_t) = \
			__atomic_load_n(&test_hook, __ATOMIC_ACQUIRE);   \
		if (__builtin_expect(hook_ != NULL, 0))                  \
			hook_((point), (addr), (len));                   \
	} while (0)
/* Set by a test: the fault path sends SIGBUS as on a kernel without
 * UFFDIO_POISON (6.1), so that the host tests that path too. */
extern _Bool test_no_poison;
#define TEST_NO_POISON() __atomic_load_n(&test_no_poison, __ATOMIC_RELAXED)
#else
#define TEST_NO_MOVE() 0
#define TEST_HOOK(point, addr, len) ((void)0)
#define TEST_NO_POISON() 0
#endif

#endif /* HETMM_TESTHOOK_H */
