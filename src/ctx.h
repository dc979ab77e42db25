/* SPDX-License-Identifier: MIT */
/*
 * ctx.h - the context: what hetmm keeps for one process address space
 * (the kernel's mm_struct).  Each field names the module that owns it;
 * only that module changes it.
 */
#ifndef HETMM_CTX_H
#define HETMM_CTX_H

#include <pthread.h>
#include <stdatomic.h>

#include "base.h"
#include "lifecycle.h"
#include "order.h"
#include "shadow.h"
#include "uffd.h"
#include "vma.h"
#include "watch.h"

struct hetmm_stats_atomic {
	atomic_uint_fast64_t faults;
	atomic_uint_fast64_t fault_pages;
	atomic_uint_fast64_t fault_zero;
	atomic_uint_fast64_t to_device_pages;
	atomic_uint_fast64_t to_system_pages;
	atomic_uint_fast64_t skipped_pages;
	atomic_uint_fast64_t mirror_faults;
	atomic_int_fast64_t device_resident;
	atomic_uint_fast64_t discarded_pages;
	atomic_uint_fast64_t remapped_pages;
	atomic_uint_fast64_t fork_pages;
	atomic_uint_fast64_t evictions;
	atomic_uint_fast64_t pins;
	atomic_uint_fast64_t copy_errors;
	atomic_uint_fast64_t fault_sigbus;
};

#define STAT_ADD(ctx, field, n) \
	atomic_fetch_add_explicit(&(ctx)->stats.field, (n), memory_order_relaxed)

struct fault_engine;
struct hetmm_notifier;

struct hetmm_ctx {
	/* ctx.c: the process's userfaultfd, and the second one device
	 * memory that pages move into (HETMM_PAGEMAP_REMAP) is registered
	 * with, write-protect mode only and with no events: UFFDIO_MOVE
	 * wants a registered destination, and a frame given back by
	 * madvise must not raise an event the handler has to read.  Its fd
	 * is -1 when the kernel cannot move pages. */
	struct uffd uffd;
	struct uffd frames;
	struct vmaq vmaq;
	uint32_t fault_around_max;
	void *zero_src;                   /* CHUNK_PAGES readable zeroes */

	/* shadow.c: where each process page lives. */
	struct shadow shadow;
	/* back.c: the device frame each page of a HETMM_PAGEMAP_PLACED
	 * pagemap last came back from, by page number (0: none); with the
	 * page still write-protected, that frame holds its bytes. */
	struct vtab placed_src;

	/* fault.c: the handler thread and its fault-around state; and, on
	 * the handler, what to do when the kernel refused an install of
	 * its (BACK_ONCE) because an event waits to be read: read the
	 * events and say whether to try again (tries: how many times it
	 * was asked about this install).  A pointer because back.c, which
	 * asks, lies below fault.c. */
	struct fault_engine *fault;
	bool (*handler_refused)(struct hetmm_ctx *ctx, uintptr_t start,
				size_t len, unsigned tries);

	/* order.c: threads in a copy-to-device phase, and the handler's
	 * ordering with them. */
	struct handler_order order;

	/* hotplug.c: the pagemaps, under lock. */
	pthread_mutex_t lock;
	struct hetmm_pagemap *pagemaps;

	/* lifecycle.c: ranges mremap vacated, their UNMAP still to come
	 * (the handler's alone). */
	struct vacated_ranges vacated;

	/* notifier.c */
	pthread_rwlock_t notifiers_lock;
	struct hetmm_notifier *notifiers;

	/* fork.c: migrations to a device hold it shared; fork preparation
	 * holds it exclusive while it brings every device page home. */
	pthread_rwlock_t fork_lock;
	unsigned fork_gen;                /* fork_generation at creation */
	struct hetmm_ctx *next;           /* every context, for fork */
	/* watch.c: every context, and what this one was asked to watch. */
	struct hetmm_ctx *watch_next;
	struct watch_asked asked;

	/* Some mirror was ever granted exclusive access: until then no
	 * migration back needs to look for exclusive frames. */
	atomic_bool exclusive_used;

	/* migrate.c counts migrations to a device: what the fault path
	 * learnt of a block's density before one is stale (fault.c). */
	_Atomic uint64_t dense_gen;

	/* entry.c: memory hetmm uses itself, which no call may touch for
	 * the process; its nodes belong to the modules that own it. */
	pthread_mutex_t own_lock;
	struct own_range *own;
	struct own_range own_zero;        /* zero_src */

	/* Every module counts its own events here. */
	struct hetmm_stats_atomic stats;
};

#endif /* HETMM_CTX_H */
