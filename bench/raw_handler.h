/* SPDX-License-Identifier: MIT */
/*
 * raw_handler.h - a bare userfaultfd fault handler thread, the baseline
 * hetmm's fault path is measured against: the raw fault-driven sequential
 * read (throughput.c) and the single-page fault latency test (latency.c).
 */
#ifndef HETMM_BENCH_RAW_HANDLER_H
#define HETMM_BENCH_RAW_HANDLER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A bare fault handler thread: blocking read() of one uffd_msg, then one
 * UFFDIO_COPY (window bytes from the faulting page, clamped to the region).
 * A fault on stop_page ends the thread.
 */
struct raw_handler {
	int fd;
	pthread_t thr;
	char *stop_page;
	/* Where the bytes come from: the same offset of src, or src's one
	 * page if src_single, or, given an entry table (one word a page of
	 * the region), the offset its entry for the page says.  Atomic: the
	 * latency test switches source between phases while the thread
	 * waits in read(). */
	_Atomic uintptr_t src;
	atomic_int src_single;
	_Atomic uintptr_t entries;
	int use_move;             /* UFFDIO_MOVE from src instead of COPY */
	size_t window;
	_Atomic uintptr_t base;   /* current region */
	_Atomic size_t len;
	atomic_ulong faults;
	atomic_int error;
	atomic_int tid;
};

/* Opens the handler's own uffd and starts its thread; 0 or -errno
 * (-EOPNOTSUPP for use_move without UFFD_FEATURE_MOVE).  The caller
 * registers regions with h->fd and sets h->base and h->len to the one
 * being touched. */
int raw_handler_start(struct raw_handler *h, const char *src,
		      int src_single, size_t window, int use_move);
/* Ends the thread (a fault on its stop page) and closes its uffd. */
void raw_handler_stop(struct raw_handler *h);

#endif /* HETMM_BENCH_RAW_HANDLER_H */
