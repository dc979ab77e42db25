/* SPDX-License-Identifier: MIT */
/*
 * adrv.h - a device driver for tests, written against the public header
 * only (hetmm.h): private memory with no CPU address (no page_address,
 * so every copy back goes through the driver), copies synchronous or
 * asynchronous, and errors on command.
 *
 * Asynchronous mode: the submit ops queue the copy with a due time
 * (submission + latency) and the driver's own completion thread makes it
 * and calls hetmm_copy_done() once it is due, taking the due ones in
 * random order, so that copies complete out of order.  Copies age in
 * parallel, as on a device with a queue: a latency of L costs L per
 * batch in flight, not per copy.  Synchronous mode sleeps L in each op.
 *
 * Errors on command (set any time; atomics):
 *   bad_word     a copy to the device of a page whose first 8 bytes are
 *                this word fails (-EIO): by content, since the source
 *                may be the process's pages or hetmm's stage of them
 *   bad_index    a copy back of a range holding this frame fails
 *   fail_back    every copy back fails (a dead device)
 *   stall        asynchronous copies are taken but never completed
 *                until adrv_unstall() (a hung device)
 */
#ifndef HETMM_ADRV_H
#define HETMM_ADRV_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <hetmm.h>

#define ADRV_QUEUE 256

struct adrv_req {
	bool to_device;
	uint64_t index;
	void *mem;
	size_t nr;
	struct hetmm_copy *copy;
	uint64_t due_ns;
	uint64_t seq;
};

struct adrv {
	uint64_t nr;
	unsigned char *mem;
	bool async;
	uint64_t latency_ns;
	struct hetmm_pagemap *pg;

	_Atomic uint64_t bad_word;            /* 0: none */
	_Atomic int64_t bad_index;            /* -1: none */
	atomic_bool fail_back;
	atomic_bool stall;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct adrv_req q[ADRV_QUEUE];
	unsigned nq;
	bool stop;
	pthread_t thread;
	uint64_t next_seq, done_seq;          /* under lock */
	unsigned rnd;

	/* What the test looks at afterwards. */
	atomic_uint copies, failures, max_in_flight, out_of_order;
	atomic_uint in_flight;
	atomic_int done_errors;               /* hetmm_copy_done != 0 */
};

static inline uint64_t adrv_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void adrv_sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000ull),
			       (long)(ns % 1000000000ull) };
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static inline struct adrv *adrv_of(struct hetmm_pagemap *pg)
{
	return hetmm_pagemap_drvdata(pg);
}

/* Does the copy back fail on command?  -EIO if so. */
static inline int adrv_fault_back(struct adrv *d, uint64_t index, size_t nr)
{
	int64_t bi = atomic_load(&d->bad_index);
	if (atomic_load(&d->fail_back) ||
	    (bi >= 0 && (uint64_t)bi >= index && (uint64_t)bi < index + nr))
		return -EIO;
	return 0;
}

/* A copy to the device at dev: the source is the process's, which it
 * may unmap under the copy (hetmm.h, "Process memory").  -EIO on
 * command (bad_word): the device memory's bytes then don't count. */
static inline int adrv_copy_to(struct adrv *d, unsigned char *dev,
			       const void *src, size_t nr)
{
	int rc = hetmm_copy_from_process(dev, src, nr * HETMM_PAGE_SIZE);
	uint64_t bad = atomic_load(&d->bad_word), w;
	for (size_t i = 0; !rc && bad && i < nr; i++) {
		memcpy(&w, dev + i * HETMM_PAGE_SIZE, sizeof(w));
		if (w == bad)
			rc = -EIO;
	}
	return rc;
}

/* Make the copy: 0, or its error (a failed copy back copies nothing). */
static inline int adrv_copy(struct adrv *d, bool to_device, uint64_t index,
			    void *mem, size_t nr)
{
	if (index + nr > d->nr)
		return -EINVAL;
	atomic_fetch_add(&d->copies, 1);
	unsigned char *dev = d->mem + index * HETMM_PAGE_SIZE;
	int rc = to_device ? adrv_copy_to(d, dev, mem, nr) :
		 adrv_fault_back(d, index, nr);
	if (rc == -EIO)
		atomic_fetch_add(&d->failures, 1);
	if (!rc && !to_device)
		memcpy(mem, dev, nr * HETMM_PAGE_SIZE);
	return rc;
}

static inline int adrv_sync_to(struct hetmm_pagemap *pg, uint64_t index,
			       const void *src, size_t nr)
{
	struct adrv *d = adrv_of(pg);
	if (!d)
		return -EINVAL;
	if (d->latency_ns)
		adrv_sleep_ns(d->latency_ns);
	return adrv_copy(d, true, index, (void *)src, nr);
}

static inline int adrv_sync_from(struct hetmm_pagemap *pg, void *dst,
				 uint64_t index, size_t nr)
{
	struct adrv *d = adrv_of(pg);
	if (!d)
		return -EINVAL;
	if (d->latency_ns)
		adrv_sleep_ns(d->latency_ns);
	return adrv_copy(d, false, index, dst, nr);
}

static inline int adrv_submit(struct hetmm_pagemap *pg, bool to_device,
			      uint64_t index, void *mem, size_t nr,
			      struct hetmm_copy *copy)
{
	struct adrv *d = adrv_of(pg);
	if (!d)
		return -EINVAL;
	pthread_mutex_lock(&d->lock);
	if (d->nq == ADRV_QUEUE) {
		pthread_mutex_unlock(&d->lock);
		return -EBUSY;
	}
	d->q[d->nq++] = (struct adrv_req){
		.to_device = to_device, .index = index, .mem = mem, .nr = nr,
		.copy = copy, .due_ns = adrv_now_ns() + d->latency_ns,
		.seq = d->next_seq++,
	};
	unsigned f = atomic_fetch_add(&d->in_flight, 1) + 1;
	unsigned m = atomic_load(&d->max_in_flight);
	while (f > m && !atomic_compare_exchange_weak(&d->max_in_flight, &m, f))
		;
	pthread_cond_signal(&d->cond);
	pthread_mutex_unlock(&d->lock);
	return 0;
}

static inline int adrv_submit_to(struct hetmm_pagemap *pg, uint64_t index,
				 const void *src, size_t nr,
				 struct hetmm_copy *copy)
{
	return adrv_submit(pg, true, index, (void *)src, nr, copy);
}

static inline int adrv_submit_from(struct hetmm_pagemap *pg, void *dst,
				   uint64_t index, size_t nr,
				   struct hetmm_copy *copy)
{
	return adrv_submit(pg, false, index, dst, nr, copy);
}

/* Take a due request, a random one of those due; false if none is. */
static inline bool adrv_take_due(struct adrv *d, uint64_t now,
				 struct adrv_req *out, uint64_t *next_due)
{
	unsigned due[ADRV_QUEUE], n = 0;
	*next_due = UINT64_MAX;
	for (unsigned i = 0; i < d->nq; i++) {
		if (d->q[i].due_ns <= now)
			due[n++] = i;
		else if (d->q[i].due_ns < *next_due)
			*next_due = d->q[i].due_ns;
	}
	if (!n)
		return false;
	d->rnd = d->rnd * 1103515245u + 12345u;
	unsigned k = due[(d->rnd >> 8) % n];
	*out = d->q[k];
	d->q[k] = d->q[--d->nq];
	if (out->seq != d->done_seq)
		atomic_fetch_add(&d->out_of_order, 1);
	/* done_seq: the oldest not yet taken, as far as we know. */
	uint64_t oldest = UINT64_MAX;
	for (unsigned i = 0; i < d->nq; i++)
		if (d->q[i].seq < oldest)
			oldest = d->q[i].seq;
	d->done_seq = oldest == UINT64_MAX ? d->next_seq : oldest;
	return true;
}

static void *adrv_thread(void *arg)
{
	struct adrv *d = arg;
	pthread_mutex_lock(&d->lock);
	while (!d->stop) {
		struct adrv_req r;
		uint64_t next_due;
		if (atomic_load(&d->stall) ||
		    !adrv_take_due(d, adrv_now_ns(), &r, &next_due)) {
			if (!d->nq || atomic_load(&d->stall) ||
			    next_due == UINT64_MAX) {
				pthread_cond_wait(&d->cond, &d->lock);
			} else {
				pthread_mutex_unlock(&d->lock);
				uint64_t now = adrv_now_ns();
				if (next_due > now)
					adrv_sleep_ns(next_due - now);
				pthread_mutex_lock(&d->lock);
			}
			continue;
		}
		pthread_mutex_unlock(&d->lock);
		int rc = adrv_copy(d, r.to_device, r.index, r.mem, r.nr);
		atomic_fetch_sub(&d->in_flight, 1);
		if (hetmm_copy_done(r.copy, rc))
			atomic_fetch_add(&d->done_errors, 1);
		pthread_mutex_lock(&d->lock);
	}
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

/* A hung device comes back: its stalled copies complete (late). */
static inline void adrv_unstall(struct adrv *d)
{
	pthread_mutex_lock(&d->lock);
	atomic_store(&d->stall, false);
	pthread_cond_signal(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

static const struct hetmm_pagemap_ops adrv_ops_sync = {
	.copy_to_device = adrv_sync_to,
	.copy_from_device = adrv_sync_from,
};

static const struct hetmm_pagemap_ops adrv_ops_async = {
	.submit_to_device = adrv_submit_to,
	.submit_from_device = adrv_submit_from,
};

/*
 * A device of nr pages, asynchronous or not, each copy taking latency_ns;
 * depth and timeout_ms for the desc (asynchronous only), flags
 * HETMM_PAGEMAP_*.  0 or a negative errno.
 */
static inline int adrv_create(struct hetmm_ctx *ctx, struct adrv *d,
			      uint64_t nr, bool async, uint64_t latency_ns,
			      uint32_t depth, uint32_t timeout_ms,
			      uint32_t flags)
{
	memset(d, 0, sizeof(*d));
	d->nr = nr;
	d->async = async;
	d->latency_ns = latency_ns;
	d->bad_index = -1;
	d->rnd = 12345;
	d->mem = mmap(NULL, nr * HETMM_PAGE_SIZE, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (d->mem == MAP_FAILED)
		return -ENOMEM;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	if (async && pthread_create(&d->thread, NULL, adrv_thread, d))
		return -EAGAIN;
	struct hetmm_pagemap_desc desc = {
		.type = HETMM_MEMORY_DEVICE_PRIVATE,
		.nr_pages = nr,
		.ops = async ? &adrv_ops_async : &adrv_ops_sync,
		.drvdata = d,
		.flags = flags,
		.queue_depth = depth,
		.copy_timeout_ms = timeout_ms,
	};
	return hetmm_pagemap_add(ctx, &desc, &d->pg);
}

/* After the pagemap is gone: stop the thread, completing what is left. */
static inline void adrv_destroy(struct adrv *d)
{
	if (d->async) {
		adrv_unstall(d);
		/* Let queued (late) copies complete before the stop. */
		for (;;) {
			pthread_mutex_lock(&d->lock);
			unsigned n = d->nq;
			pthread_mutex_unlock(&d->lock);
			if (!n)
				break;
			adrv_sleep_ns(1000000);
		}
		pthread_mutex_lock(&d->lock);
		d->stop = true;
		pthread_cond_signal(&d->cond);
		pthread_mutex_unlock(&d->lock);
		pthread_join(d->thread, NULL);
	}
	munmap(d->mem, d->nr * HETMM_PAGE_SIZE);
	pthread_mutex_destroy(&d->lock);
	pthread_cond_destroy(&d->cond);
}

/* The frame index backing addr, or -1. */
static inline int64_t adrv_index_at(struct hetmm_ctx *ctx, const void *addr)
{
	hetmm_pfn_t pfn;
	struct hetmm_page *page;
	struct hetmm_page_info info;
	if (hetmm_addr_to_pfn(ctx, addr, &pfn) ||
	    hetmm_pfn_to_page(pfn, &page) || hetmm_page_get_info(page, &info))
		return -1;
	return (int64_t)info.index;
}

#endif /* HETMM_ADRV_H */
