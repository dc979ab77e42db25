/* SPDX-License-Identifier: MIT */
/*
 * test_drvtouch - a driver's own thread touches process memory while the
 * fault handler waits for that driver's copy (issue 23's hazard).
 *
 * hetmm registers whole mappings with userfaultfd, and the kernel merges
 * a driver library's anonymous memory (UCX's pools, a malloc arena) into
 * them.  A driver thread that touches a page of such a mapping that is
 * not there (a hole: never touched, or discarded) raises a fault only the
 * context can serve, and the handler may be waiting, at that moment, for
 * a copy that same thread is to make.  The driver here (public header
 * only) is such a driver: its copy thread works under the driver's lock,
 * as UCX's serialized worker does, and before each copy back touches a
 * page of a mapping hetmm registered whole that has no device entry.
 * Its submit ops take the lock too, so the handler is stuck either in
 * the wait or in the next submit; the copy timeout is a minute, so that
 * it does not end the wait first.
 *
 * Each case runs in a child under a watchdog: a hang fails the case
 * instead of ctest's whole run.  Checked: every byte of the pages that
 * came back, the touched page as the kernel would give it (zeroes, or
 * the thread's write), no copy error, no SIGBUS, and that the thread did
 * touch the page while a copy was waited for.
 *
 * A page on the driver's own device cannot be served while the handler
 * waits for that driver (its copy back needs the thread that waits in
 * the fault): the driver contract in hetmm.h forbids it, and it is not
 * tested here.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "t.h"

#define NPAGES 64            /* the mapping; the first half migrates */
#define NMIGRATE 32
#define TOUCHED 40           /* a page of the second half: a hole */
#define QDEPTH 64

struct req {
	bool to_device;
	uint64_t index;
	void *mem;
	size_t nr;
	struct hetmm_copy *copy;     /* NULL: a synchronous copy */
	int *rc;                     /* a synchronous copy's result */
	bool *done;
};

struct tdev {
	unsigned char *mem;
	uint64_t nr;
	pthread_mutex_t lock;        /* the driver's: held by its thread */
	pthread_cond_t cond, done_cond;
	struct req q[QDEPTH];
	unsigned head, n;
	bool stop;
	pthread_t thread;
	/* Touched by the thread before each copy back, once set. */
	_Atomic(volatile char *) touch;
	bool touch_write;
	atomic_uint touches;
	struct hetmm_pagemap *pg;
};

static void tdev_copy(struct tdev *d, const struct req *r)
{
	unsigned char *dev = d->mem + r->index * PS;
	if (r->to_device)
		memcpy(dev, r->mem, r->nr * PS);
	else
		memcpy(r->mem, dev, r->nr * PS);
}

/* The copy engine: one request at a time, under the driver's lock. */
static void *tdev_thread(void *arg)
{
	struct tdev *d = arg;
	pthread_mutex_lock(&d->lock);
	for (;;) {
		while (!d->n && !d->stop)
			pthread_cond_wait(&d->cond, &d->lock);
		if (!d->n)
			break;
		struct req r = d->q[d->head];
		d->head = (d->head + 1) % QDEPTH;
		d->n--;
		volatile char *t = atomic_load(&d->touch);
		if (t && !r.to_device) {
			if (d->touch_write)
				*t = 'w';
			else
				(void)*t;
			atomic_fetch_add(&d->touches, 1);
		}
		tdev_copy(d, &r);
		if (r.copy) {
			CHECK_OK(hetmm_copy_done(r.copy, 0));
		} else {
			*r.rc = 0;
			*r.done = true;
			pthread_cond_broadcast(&d->done_cond);
		}
	}
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

static void tdev_queue(struct tdev *d, const struct req *r)
{
	REQUIRE(d->n < QDEPTH);
	d->q[(d->head + d->n++) % QDEPTH] = *r;
	pthread_cond_signal(&d->cond);
}

static int tdev_submit(struct hetmm_pagemap *pg, bool to_device,
		       uint64_t index, void *mem, size_t nr,
		       struct hetmm_copy *copy)
{
	struct tdev *d = hetmm_pagemap_drvdata(pg);
	pthread_mutex_lock(&d->lock);
	tdev_queue(d, &(struct req){ .to_device = to_device, .index = index,
				     .mem = mem, .nr = nr, .copy = copy });
	pthread_mutex_unlock(&d->lock);
	return 0;
}

static int tdev_submit_to(struct hetmm_pagemap *pg, uint64_t index,
			  const void *src, size_t nr, struct hetmm_copy *copy)
{
	return tdev_submit(pg, true, index, (void *)src, nr, copy);
}

static int tdev_submit_from(struct hetmm_pagemap *pg, void *dst,
			    uint64_t index, size_t nr, struct hetmm_copy *copy)
{
	return tdev_submit(pg, false, index, dst, nr, copy);
}

/* Synchronous ops: a DMA the driver waits for itself, made by its
 * thread. */
static int tdev_sync(struct hetmm_pagemap *pg, bool to_device,
		     uint64_t index, void *mem, size_t nr)
{
	struct tdev *d = hetmm_pagemap_drvdata(pg);
	int rc = -EIO;
	bool done = false;
	pthread_mutex_lock(&d->lock);
	tdev_queue(d, &(struct req){ .to_device = to_device, .index = index,
				     .mem = mem, .nr = nr, .rc = &rc,
				     .done = &done });
	while (!done)
		pthread_cond_wait(&d->done_cond, &d->lock);
	pthread_mutex_unlock(&d->lock);
	return rc;
}

static int tdev_sync_to(struct hetmm_pagemap *pg, uint64_t index,
			const void *src, size_t nr)
{
	return tdev_sync(pg, true, index, (void *)src, nr);
}

static int tdev_sync_from(struct hetmm_pagemap *pg, void *dst, uint64_t index,
			  size_t nr)
{
	return tdev_sync(pg, false, index, dst, nr);
}

static const struct hetmm_pagemap_ops async_ops = {
	.submit_to_device = tdev_submit_to,
	.submit_from_device = tdev_submit_from,
};

static const struct hetmm_pagemap_ops sync_ops = {
	.copy_to_device = tdev_sync_to,
	.copy_from_device = tdev_sync_from,
};

static void tdev_start(struct tdev *d, struct hetmm_ctx *ctx, bool async)
{
	memset(d, 0, sizeof(*d));
	d->nr = 256;
	d->mem = t_map(d->nr);
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	pthread_cond_init(&d->done_cond, NULL);
	REQUIRE(pthread_create(&d->thread, NULL, tdev_thread, d) == 0);
	struct hetmm_pagemap_desc desc = {
		.type = HETMM_MEMORY_DEVICE_PRIVATE,
		.nr_pages = d->nr,
		.ops = async ? &async_ops : &sync_ops,
		.drvdata = d,
		.copy_timeout_ms = async ? 60000 : 0,
	};
	REQUIRE_OK(hetmm_pagemap_add(ctx, &desc, &d->pg));
}

static void tdev_stop(struct tdev *d)
{
	CHECK_OK(hetmm_pagemap_remove(d->pg));
	pthread_mutex_lock(&d->lock);
	d->stop = true;
	pthread_cond_signal(&d->cond);
	pthread_mutex_unlock(&d->lock);
	pthread_join(d->thread, NULL);
	t_unmap(d->mem, d->nr);
}

enum touch_kind {
	TOUCH_HOLE,          /* never touched */
	TOUCH_DISCARDED,     /* migrated, back, then MADV_DONTNEED */
};

struct tcase {
	const char *name;
	bool async;
	bool write;
	enum touch_kind kind;
};

/* One case, arg, in a child: 0 if every check passed. */
static int run_case(const void *arg)
{
	const struct tcase *c = arg;
	struct hetmm_ctx *ctx;
	struct tdev d;
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	tdev_start(&d, ctx, c->async);

	char *buf = t_map(NPAGES);
	t_fill(buf, NMIGRATE, 7);
	char *touched = buf + TOUCHED * PS;
	if (c->kind == TOUCH_DISCARDED) {
		memset(touched, 'd', PS);
		struct hetmm_migrate_report rep = { 0 };
		REQUIRE_OK(hetmm_migrate_to_device(d.pg, touched, PS, &rep));
		CHECK_EQ(touched[0], 'd');   /* back by a fault */
		REQUIRE(madvise(touched, PS, MADV_DONTNEED) == 0);
	}
	/* The whole mapping is registered now: the touched page is a hole
	 * of it, with no device entry. */
	struct hetmm_migrate_report rep = { 0 };
	REQUIRE_OK(hetmm_migrate_to_device(d.pg, buf, NMIGRATE * PS, &rep));
	CHECK_EQ(rep.moved, NMIGRATE);
	d.touch_write = c->write;
	atomic_store(&d.touch, touched);

	/* Every fault now waits on a copy back whose thread first touches
	 * the hole. */
	CHECK_EQ(t_verify(buf, NMIGRATE, 7), 0);
	CHECK(atomic_load(&d.touches) > 0);
	CHECK_EQ(touched[0], c->write ? 'w' : 0);
	CHECK_EQ(touched[1], 0);

	struct hetmm_stats st;
	CHECK_OK(hetmm_ctx_get_stats(ctx, &st));
	CHECK_EQ(st.copy_errors, 0);
	CHECK_EQ(st.fault_sigbus, 0);
	CHECK_EQ(st.device_resident, 0);

	atomic_store(&d.touch, NULL);
	tdev_stop(&d);
	CHECK_OK(hetmm_ctx_destroy(ctx));
	t_unmap(buf, NPAGES);
	return t_failures ? 1 : 0;
}

int main(void)
{
	static const struct tcase cases[] = {
		{ "async_read_hole", true, false, TOUCH_HOLE },
		{ "async_write_hole", true, true, TOUCH_HOLE },
		{ "async_read_discarded", true, false, TOUCH_DISCARDED },
		{ "sync_read_hole", false, false, TOUCH_HOLE },
		{ "sync_write_discarded", false, true, TOUCH_DISCARDED },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		t_run_child(cases[i].name, run_case, &cases[i],
			    20 * t_time_scale());
	return t_done();
}
