/* SPDX-License-Identifier: MIT */
/*
 * devices/remote.c - the remote device: DEVICE_PRIVATE memory in memory
 * servers (hetmm-memd, tools/memd.c), reached through UCX.
 *
 * A driver on the public header alone, as emu.c.  Each server gives the
 * device one region and its remote key after a challenge and response on
 * a TCP connection (remote_wire.h); pages then move with ucp_put_nbx and
 * ucp_get_nbx from hetmm's asynchronous copy ops, up to the pagemap's
 * queue depth at once.  A copy to the device is done when a flush of the
 * server's endpoint says the bytes are there, not when the put left, so a
 * page the server never got is never counted moved.
 *
 * Pages are striped over the servers in runs of HETMM_REMOTE_STRIPE_PAGES
 * (one asynchronous copy's most), so a copy reaches at most two stripes
 * and a sequential stream keeps every server busy.  With replicas, each
 * stripe is on two servers (locate): puts go to both, and the copy is
 * done when every server alive among them has flushed them; a get goes
 * to the first alive, and to the other if it fails.  A server that
 * fails a part of a copy is dead for good (usable), which is what makes
 * reading either copy safe: a server never misses a put and stays in
 * use.
 *
 * The device's own thread drives UCX: it posts the copies of many pages
 * handed to it (REMOTE_HANDOFF_PAGES), progresses the worker while
 * copies are in flight, and otherwise sleeps in poll() on the servers'
 * TCP connections and an eventfd its submitters kick.  A get of a few
 * pages, which its submitter waits for at once (a random fault), is
 * progressed by the submitter itself (get_progress).  Every call on the
 * worker is made under the device's lock (a SERIALIZED worker).
 *
 * Over shared memory every server's region is mapped into this process
 * too (ucp_rkey_ptr), and a get or put would be UCX's memcpy from or to
 * it on the calling thread, under the device's lock: the device makes
 * that memcpy itself, with no lock (copy_local), so that two threads
 * copy at once: the submitting thread (the fault handler, a migration)
 * and the device's own, which takes a copy of many pages while it has
 * fewer than REMOTE_LOCAL_QUEUE waiting
 * (submit_local).  The submitter then overlaps its own work
 * (zeroing staging, installing, zapping) with the copies on the other
 * core where one is free, and where none is (a busy machine), it copies
 * the rest itself rather than sleep until the device's thread runs.
 * A server whose connection closes or errs (its process died; TCP
 * keepalive gives up on a silent host after REMOTE_KEEPALIVE_S seconds)
 * is dead: its endpoint is closed, copies in flight to it fail, and every
 * later copy fails at once, so faults on its pages get SIGBUS and
 * migrations to it keep their pages (hetmm's device-error path).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "hetmm.h"
#include "handles.h"

#ifndef HETMM_HAVE_UCX

int hetmm_remote_create(struct hetmm_ctx *ctx,
			const struct hetmm_remote_desc *desc,
			struct hetmm_remote **devp)
{
	(void)ctx;
	(void)desc;
	(void)devp;
	return -EOPNOTSUPP;
}

int hetmm_remote_destroy(struct hetmm_remote *dev)
{
	(void)dev;
	return -EINVAL;
}

int hetmm_remote_pagemap(struct hetmm_remote *dev,
			 struct hetmm_pagemap **pgmapp)
{
	(void)dev;
	(void)pgmapp;
	return -EINVAL;
}

int hetmm_remote_get_stats(struct hetmm_remote *dev,
			   struct hetmm_remote_stats *st)
{
	(void)dev;
	(void)st;
	return -EINVAL;
}

#else

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "remote_ucx.h"
#include "remote_wire.h"

#define PS HETMM_PAGE_SIZE
#define STRIPE HETMM_REMOTE_STRIPE_PAGES
#define REMOTE_TIMEOUT_DEFAULT_MS 2000
#define REMOTE_KEEPALIVE_S 1            /* idle, interval; 3 probes */
/* With a replica, a copy waits out the time TCP keepalive takes to find a
 * silent server dead (about 4 s), and then goes to the other copy, rather
 * than time out and stop the pagemap's migrations. */
#define REMOTE_TIMEOUT_REPLICA_MS 6000
#define REMOTE_QUEUE HETMM_COPY_DEPTH_MAX
_Static_assert(HETMM_COPY_MAX_PAGES <= STRIPE, "a copy spans two stripes");
/* Copy slots: a queue's worth, twice, as copies that timed out may hold
 * theirs until their server is declared dead. */
#define REMOTE_SLOTS (2 * REMOTE_QUEUE)
/* Their staging for puts not over shared memory (put_staged): address
 * space, touched only by the slots in use (the free list is a stack). */
#define PUT_STAGE_BYTES ((size_t)REMOTE_SLOTS * STRIPE * PS)
/* A copy of at least this many pages may go to the device's thread (on
 * TCP always, over shared memory while it has fewer than
 * REMOTE_LOCAL_QUEUE waiting): the threads that submit many
 * pages (the fault handler bringing a range back, a migration) have work
 * of their own to overlap with it (zeroing staging, installing the pages
 * copied before, zapping those sent).  A copy of a few pages (a lone
 * fault's), waited for at once, is made or posted in the submit: no
 * hand-off on a fault's latency. */
#define REMOTE_HANDOFF_PAGES 16
/* Over shared memory, copies handed over wait for the device's thread at
 * most this many at once (the submitter copies the next ones itself),
 * and a submitter takes back one that waited longer than
 * REMOTE_STALE_NS: the thread is not running (a busy machine), and the
 * submitter would only wait for it later.  A whole PMD block's copies
 * (8 of 64 pages), in both directions, since the submitter's own work
 * per block is as long as the copy or longer: fault-back's handler
 * faults the next block's staging THP in (the kernel zeroes it, slower
 * than the copy on these VMs); a migration claims the next chunk, reads
 * its presence, moves its pages into a stage, and frees and zaps the
 * chunks sent.  With 2, the submitter made most of the copies itself
 * while the device's thread idled: a tenth less fault-back, and a
 * migration on one thread (89% of its samples), 0.57-0.60x of UCX's put
 * stream against 0.60-0.71x with 8 (docs/PERFORMANCE.md, "Remote"). */
#define REMOTE_LOCAL_QUEUE 8
#define REMOTE_STALE_NS 200000
/* The longest a submitter progresses its own get of a few pages
 * (get_progress) before it leaves it to the device's thread: a TCP get
 * of a page takes 8-25 us here, and a thread that polls much longer
 * than that is moved off the faulting thread's vCPU by the scheduler
 * (docs/PERFORMANCE.md, "Remote"). */
#define REMOTE_LONE_SPIN_NS 50000

/* Longest "host:port" a server is named by, with its NUL. */
#define SERVER_NAME_MAX 128

struct server {
	char name[SERVER_NAME_MAX];
	int fd;                       /* the control connection, our lease */
	ucp_ep_h ep;                  /* NULL once closed */
	ucp_rkey_h rkey;
	uint64_t base;                /* the region's address there */
	char *local;                  /* the region mapped here, or NULL */
	uint64_t bytes;
	atomic_bool dead;
	atomic_bool closed;           /* ep (and rkey) released */
};

/* A part of a copy in flight, waited for: a get of a run of pages from
 * one copy of their stripe, or the flush of one server's puts. */
struct rpart {
	struct rop *op;
	struct rpart *next_retry;     /* a failed get, to send elsewhere */
	char *buf;                    /* a get's: where its pages go */
	uint64_t index;               /* a get's first page */
	uint32_t n;                   /* a get's pages; 0 for a flush */
	uint8_t server;               /* the server it waits on */
	uint8_t tried;                /* a get's copies tried, a bit each */
};

/* A copy (at most STRIPE pages) spans two stripes at most: two gets, or
 * a flush of each server holding a copy of either. */
#define ROP_PARTS (2 * HETMM_REMOTE_MAX_REPLICAS)

/* One copy in flight: the parts it waits for. */
struct rop {
	struct hetmm_remote *dev;
	struct hetmm_copy *copy;
	char *buf;                    /* the pages' memory here */
	int64_t queued_ns;            /* handed over when */
	uint64_t index;
	size_t nr;
	unsigned pending;
	int error;
	bool to_device;
	bool *done;                   /* set true when done (get_progress) */
	unsigned nparts;
	struct rpart parts[ROP_PARTS];
	struct rop *next_free;        /* in free_slots, or queued */
};

struct hetmm_remote {
	struct drv_handle handle;     /* first: in devs */
	struct hetmm_ctx *ctx;
	struct hetmm_pagemap *pgmap;
	struct hetmm_notifier *life;  /* hears the context's release */
	void *quiet;                  /* the page it watches */
	const struct ucx_api *u;
	ucp_context_h ucp;
	ucp_worker_h worker;
	int wakefd;                   /* eventfd: the thread wakes (kick) */
	pthread_t thread;
	bool thread_started;
	atomic_bool stop;
	atomic_bool thread_ready;
	pthread_mutex_t lock;         /* the worker, servers' eps */
	struct rop slots[REMOTE_SLOTS];
	/* Taken alone by a submit, or under lock, never the other way:
	 * the thread holds lock while it posts (a memcpy, over shared
	 * memory), and a submit that hands its copy over must not wait
	 * for that. */
	pthread_mutex_t qlock;        /* free_slots, queued */
	struct rop *free_slots;
	struct rop *queued;           /* copies for the thread to post */
	struct rop **queued_tail;
	unsigned nqueued;
	bool local;                   /* every server's region mapped here */
	char *put_stage;              /* else: STRIPE pages a slot (put_staged) */
	atomic_uint inflight;         /* copies taken, queued or posted */
	struct rpart *retries;        /* failed gets, for the thread */
	uint32_t nr_servers;
	uint32_t replicas;            /* copies of each page */
	uint64_t per_server;          /* stripes of one copy per server */
	struct server srv[HETMM_REMOTE_MAX_SERVERS];
	atomic_uint_fast64_t pages_put, pages_got, copy_errors;
	atomic_uint_fast64_t replica_reads, failovers;
};

/* The live devices, so that a stale handle is refused. */
static struct drv_handles devs = DRV_HANDLES_INIT;
/* server_open's buffer. */
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;

/* ------------------------------------------------------------------------
 * Copies
 */

/* Page index to the server holding its copy r, and the byte offset in
 * that server's region; *run is how many pages from index stay in that
 * stripe.  Stripe k's copy r is on server (k + r) % N, in the r-th part
 * of its region (per_server stripes a part), so that the copies of a
 * stripe are on as many servers and a sequential stream keeps them all
 * busy. */
static unsigned locate(const struct hetmm_remote *dev, uint64_t index,
		       unsigned r, uint64_t *off, uint64_t *run)
{
	uint64_t k = index / STRIPE, in = index % STRIPE;

	*off = ((r * dev->per_server + k / dev->nr_servers) * STRIPE + in) *
	       PS;
	*run = STRIPE - in;
	return (unsigned)((k + r) % dev->nr_servers);
}

/* A server is taken for dead for good: it never gets another copy, so a
 * copy it missed is never read from it. */
static bool usable(const struct hetmm_remote *dev, unsigned i)
{
	return !atomic_load(&dev->srv[i].dead) &&
	       !atomic_load(&dev->srv[i].closed);
}

static void server_fail(struct hetmm_remote *dev, unsigned i)
{
	atomic_store(&dev->srv[i].dead, true);
}

/* Every stripe of [index, index + nr) has a copy on a live server. */
static bool range_held(const struct hetmm_remote *dev, uint64_t index,
		       size_t nr)
{
	while (nr) {
		uint64_t off, run = 0;
		bool any = false;
		for (unsigned r = 0; r < dev->replicas && !any; r++)
			any = usable(dev, locate(dev, index, r, &off, &run));
		if (!any)
			return false;
		run = run < nr ? run : nr;
		index += run;
		nr -= run;
	}
	return true;
}

/* A copy of nr pages ended with err: counted. */
static void copy_count(struct hetmm_remote *dev, size_t nr, bool to_device,
		       int err)
{
	if (err == -EFAULT)
		return;   /* the process took the source away: no error */
	if (err)
		atomic_fetch_add(&dev->copy_errors, 1);
	else if (to_device)
		atomic_fetch_add(&dev->pages_put, nr);
	else
		atomic_fetch_add(&dev->pages_got, nr);
}

/* Under the lock, as every rop_ and part function (but rop_local's, over
 * shared memory, with none). */
static void rop_finish(struct rop *op)
{
	struct hetmm_remote *dev = op->dev;

	/* A copy to the device is done when every stripe of it is on a
	 * server still alive, every server alive having flushed it: the
	 * failure of one replica's server costs nothing. */
	if (!op->error && op->to_device &&
	    !range_held(dev, op->index, op->nr))
		op->error = -EIO;
	copy_count(dev, op->nr, op->to_device, op->error);
	hetmm_copy_done(op->copy, op->error);
	op->copy = NULL;
	if (op->done)
		*op->done = true;
	op->done = NULL;
	pthread_mutex_lock(&dev->qlock);
	op->next_free = dev->free_slots;
	dev->free_slots = op;
	pthread_mutex_unlock(&dev->qlock);
	atomic_fetch_sub(&dev->inflight, 1);
}

/* A part of op finished. */
static void rop_part_done(struct rop *op, int error)
{
	if (error && !op->error)
		op->error = error;
	if (--op->pending == 0)
		rop_finish(op);
}

/* A part's request finished.  A failed one takes its server for dead;
 * a failed get goes to the thread, to be sent to another copy. */
static void part_cb(void *req, ucs_status_t st, void *arg)
{
	struct rpart *pt = arg;
	struct rop *op = pt->op;
	struct hetmm_remote *dev = op->dev;

	dev->u->ucp_request_free(req);
	if (st != UCS_OK) {
		server_fail(dev, pt->server);
		if (!op->to_device) {
			pt->next_retry = dev->retries;
			dev->retries = pt;
			return;
		}
	}
	rop_part_done(op, 0);
}

static ucp_request_param_t part_param(struct rpart *pt)
{
	ucp_request_param_t p = {
		.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK |
				UCP_OP_ATTR_FIELD_USER_DATA,
		.cb.send = part_cb,
		.user_data = pt,
	};
	return p;
}

static struct rpart *rop_part(struct rop *op, unsigned server, char *buf,
			      uint64_t index, size_t n)
{
	struct rpart *pt = &op->parts[op->nparts++];
	*pt = (struct rpart){ .op = op, .buf = buf, .index = index,
			      .n = (uint32_t)n, .server = (uint8_t)server };
	return pt;
}

/* A free slot for a copy of nr pages at index to or from buf; under
 * qlock.  Counted in flight from now, so that the thread keeps
 * progressing until it is done; *idle says whether it was the only one
 * (the thread may be asleep). */
static struct rop *rop_get(struct hetmm_remote *dev,
			   struct hetmm_copy *copy, char *buf, uint64_t index,
			   size_t nr, bool to_device, bool *idle)
{
	struct rop *op = dev->free_slots;
	if (!op)
		return NULL;
	dev->free_slots = op->next_free;
	op->copy = copy;
	op->buf = buf;
	op->index = index;
	op->nr = nr;
	op->to_device = to_device;
	op->done = NULL;
	op->error = 0;
	op->nparts = 0;
	/* One for the posting itself, so that parts done at once can't
	 * finish the copy before every part is posted. */
	op->pending = 1;
	*idle = atomic_fetch_add(&dev->inflight, 1) == 0;
	return op;
}

/* Put the pages on every live server holding a copy of their stripe,
 * then flush each server put to: the flushes are the parts waited for. */
static void post_puts(struct hetmm_remote *dev, struct rop *op,
		      const char *p)
{
	const struct ucx_api *u = dev->u;
	bool flush[HETMM_REMOTE_MAX_SERVERS] = { false };
	uint64_t index = op->index;
	size_t nr = op->nr;

	while (nr) {
		uint64_t off, run = 0;
		for (unsigned r = 0; r < dev->replicas; r++) {
			unsigned i = locate(dev, index, r, &off, &run);
			struct server *s = &dev->srv[i];
			if (!usable(dev, i))
				continue;
			/* No callback: the flush stands for it. */
			ucp_request_param_t none = { .op_attr_mask = 0 };
			size_t n = run < nr ? (size_t)run : nr;
			ucs_status_ptr_t x = u->ucp_put_nbx(
				s->ep, p, n * PS, s->base + off, s->rkey,
				&none);
			if (UCS_PTR_IS_ERR(x)) {
				server_fail(dev, i);
				continue;
			}
			if (x)
				u->ucp_request_free(x);
			flush[i] = true;
		}
		run = run < nr ? run : nr;
		p += run * PS;
		index += run;
		nr -= run;
	}
	for (unsigned i = 0; i < dev->nr_servers; i++) {
		if (!flush[i] || !usable(dev, i))
			continue;
		struct rpart *pt = rop_part(op, i, NULL, 0, 0);
		ucp_request_param_t prm = part_param(pt);
		ucs_status_ptr_t x = u->ucp_ep_flush_nbx(dev->srv[i].ep, &prm);
		if (UCS_PTR_IS_ERR(x))
			server_fail(dev, i);
		else if (x)
			op->pending++;
	}
}

/* Send pt's get to the first copy of its stripe not tried yet whose
 * server is alive; false if none is left. */
static bool get_post(struct hetmm_remote *dev, struct rpart *pt)
{
	const struct ucx_api *u = dev->u;

	for (unsigned r = 0; r < dev->replicas; r++) {
		uint64_t off, run;
		unsigned i = locate(dev, pt->index, r, &off, &run);
		struct server *s = &dev->srv[i];

		if (pt->tried & (1u << r))
			continue;
		pt->tried |= (uint8_t)(1u << r);
		if (!usable(dev, i))
			continue;
		pt->server = (uint8_t)i;
		ucp_request_param_t prm = part_param(pt);
		ucs_status_ptr_t x = u->ucp_get_nbx(s->ep, pt->buf, pt->n * PS,
						    s->base + off, s->rkey,
						    &prm);
		if (UCS_PTR_IS_ERR(x)) {
			server_fail(dev, i);
			continue;
		}
		if (r)
			atomic_fetch_add(&dev->replica_reads, pt->n);
		if (x)
			pt->op->pending++;
		return true;
	}
	return false;
}

static void post_gets(struct hetmm_remote *dev, struct rop *op, char *p)
{
	uint64_t index = op->index;
	size_t nr = op->nr;

	while (nr && !op->error) {
		uint64_t off, run;
		locate(dev, index, 0, &off, &run);
		size_t n = run < nr ? (size_t)run : nr;
		if (!get_post(dev, rop_part(op, 0, p, index, n)))
			op->error = -EIO;
		p += n * PS;
		index += n;
		nr -= n;
	}
}

/* Gets that failed (their server died under them), each sent to another
 * copy of its pages, or failed for good when none is left. */
static void retry_gets(struct hetmm_remote *dev)
{
	struct rpart *pt;

	while ((pt = dev->retries)) {
		dev->retries = pt->next_retry;
		bool sent = get_post(dev, pt);
		if (sent)
			atomic_fetch_add(&dev->failovers, 1);
		rop_part_done(pt->op, sent ? 0 : -EIO);
	}
}

/* Wake the thread to progress what is pending (or to stop). */
static void kick(struct hetmm_remote *dev)
{
	uint64_t one = 1;
	/* Fails only with the counter full: the thread is woken then. */
	(void)!write(dev->wakefd, &one, sizeof(one));
}

/*
 * A put's source is the process's memory, which it may unmap under the
 * copy (hetmm.h, "Process memory"), and UCX reads it with plain loads:
 * over TCP a munmap there killed the process (SIGSEGV, test_unmapcopy).
 * So the pages are read into the slot's staging first, with a read that
 * fails rather than faults (-EFAULT: the copy fails, no server does),
 * and put from there; the slot and its staging stay the copy's until
 * it is done.
 */
static void put_staged(struct hetmm_remote *dev, struct rop *op)
{
	char *stage = dev->put_stage + (size_t)(op - dev->slots) * STRIPE * PS;
	op->error = hetmm_copy_from_process(stage, op->buf, op->nr * PS);
	if (!op->error)
		post_puts(dev, op, stage);
}

/* Post op's parts (under the lock): true if some are still to complete,
 * for the thread to progress.  A copy whose pages lost every server
 * fails at once. */
static bool rop_post(struct hetmm_remote *dev, struct rop *op)
{
	if (!range_held(dev, op->index, op->nr))
		op->error = -EIO;
	else if (op->to_device)
		put_staged(dev, op);
	else
		post_gets(dev, op, op->buf);
	bool pending = op->pending > 1;
	rop_part_done(op, 0);
	return pending;
}

/* Over shared memory, the copy by the calling thread, with no lock: a
 * memcpy from the first live copy of each stripe, or to every live copy
 * a read of the process's pages that fails rather than faults (they may
 * be unmapped under us: -EFAULT).  -EIO if a stripe has no server
 * left. */
static int copy_local(struct hetmm_remote *dev, char *buf, uint64_t index,
		      size_t nr, bool to_device)
{
	while (nr) {
		uint64_t off, run = 0;
		bool any = false;
		for (unsigned r = 0; r < dev->replicas && (to_device || !any);
		     r++) {
			unsigned i = locate(dev, index, r, &off, &run);
			if (!usable(dev, i))
				continue;
			size_t n = run < nr ? (size_t)run : nr;
			if (to_device) {
				int rc = hetmm_copy_from_process(
					dev->srv[i].local + off, buf, n * PS);
				if (rc)
					return rc;
			} else {
				memcpy(buf, dev->srv[i].local + off, n * PS);
			}
			if (r && !to_device)
				atomic_fetch_add(&dev->replica_reads, n);
			any = true;
		}
		if (!any)
			return -EIO;
		run = run < nr ? run : nr;
		buf += run * PS;
		index += run;
		nr -= run;
	}
	return 0;
}

/* A handed-over copy over shared memory, made by whoever takes it. */
static void rop_local(struct hetmm_remote *dev, struct rop *op)
{
	op->error = copy_local(dev, op->buf, op->index, op->nr,
			       op->to_device);
	rop_finish(op);
}

/* The oldest copy handed over and not taken yet, taken (under qlock);
 * NULL if none. */
static struct rop *queue_take(struct hetmm_remote *dev)
{
	struct rop *op = dev->queued;
	if (op) {
		dev->nqueued--;
		if (!(dev->queued = op->next_free))
			dev->queued_tail = &dev->queued;
	}
	return op;
}

static struct rop *queue_pop(struct hetmm_remote *dev)
{
	pthread_mutex_lock(&dev->qlock);
	struct rop *op = queue_take(dev);
	pthread_mutex_unlock(&dev->qlock);
	return op;
}

/* The device's thread: the copies handed over, in the order given. */
static void run_queued(struct hetmm_remote *dev)
{
	struct rop *op;
	while ((op = queue_pop(dev))) {
		if (dev->local) {
			rop_local(dev, op);
			continue;
		}
		pthread_mutex_lock(&dev->lock);
		rop_post(dev, op);
		pthread_mutex_unlock(&dev->lock);
	}
}

/* At the end: copies handed over that nobody took fail. */
static void fail_queued(struct hetmm_remote *dev)
{
	struct rop *op;
	while ((op = queue_pop(dev))) {
		op->error = -EIO;
		rop_finish(op);
	}
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A copy for the thread (REMOTE_HANDOFF_PAGES), under qlock; NULL if no
 * slot is free.  *kick: the thread may be asleep, to be woken. */
static struct rop *queue_add(struct hetmm_remote *dev,
			     struct hetmm_copy *copy, char *buf,
			     uint64_t index, size_t nr, bool to_device,
			     bool *kick)
{
	struct rop *op = rop_get(dev, copy, buf, index, nr, to_device, kick);
	if (op) {
		op->queued_ns = now_ns();
		op->next_free = NULL;
		*dev->queued_tail = op;
		dev->queued_tail = &op->next_free;
		dev->nqueued++;
	}
	return op;
}

/* The thread sleeps only once nothing is in flight (progress_thread):
 * with other copies in flight, it is awake, or woken by the one that was
 * first. */
static int submit_handoff(struct hetmm_remote *dev, struct hetmm_copy *copy,
			  char *buf, uint64_t index, size_t nr, bool to_device)
{
	bool idle = false;
	pthread_mutex_lock(&dev->qlock);
	struct rop *op = queue_add(dev, copy, buf, index, nr, to_device,
				   &idle);
	pthread_mutex_unlock(&dev->qlock);
	if (!op)
		return -EAGAIN;
	if (idle)
		kick(dev);
	return 0;
}

/*
 * Over shared memory, a copy of many pages goes to the thread while it
 * has fewer than REMOTE_LOCAL_QUEUE waiting; else the caller
 * makes it, and first the oldest waiting, if it waited too long
 * (REMOTE_STALE_NS).
 * True if handed over; else *stale is the one taken back, or NULL.
 */
static bool local_handoff(struct hetmm_remote *dev, struct hetmm_copy *copy,
			  char *buf, uint64_t index, size_t nr, bool to_device,
			  struct rop **stale)
{
	bool idle = false;
	struct rop *op = NULL;
	*stale = NULL;
	pthread_mutex_lock(&dev->qlock);
	if (dev->nqueued < REMOTE_LOCAL_QUEUE)
		op = queue_add(dev, copy, buf, index, nr, to_device, &idle);
	else if (now_ns() - dev->queued->queued_ns > REMOTE_STALE_NS)
		*stale = queue_take(dev);
	pthread_mutex_unlock(&dev->qlock);
	if (idle)
		kick(dev);
	return op != NULL;
}

/*
 * A get of a few pages, which its submitter waits for at once (a random
 * fault's), progressed here by that thread until it is done, as UCX's
 * own client waits for a get: handed to the device's thread, it cost
 * two more wake-ups a fault (the thread woken to progress it, the
 * submitter woken by its completion), and the thread's polling made
 * the scheduler put the fault's threads on two vCPUs
 * (docs/PERFORMANCE.md, "Remote").  A get not done within
 * REMOTE_LONE_SPIN_NS (a busy machine, a silent server) is left to the
 * thread, and the submitter waits for it as for any copy, within the
 * pagemap's copy timeout.  Called and returns with the lock held; true
 * if done (*done).
 */
static bool get_progress(struct hetmm_remote *dev, struct rop *op,
			 bool *done)
{
	int64_t end = now_ns() + REMOTE_LONE_SPIN_NS;
	for (;;) {
		dev->u->ucp_worker_progress(dev->worker);
		retry_gets(dev);
		if (*done)
			return true;
		if (now_ns() > end) {
			op->done = NULL;   /* still ours: not finished */
			return false;
		}
		/* Not held between rounds: the device's thread, busy with
		 * other copies, is not held up by a submitter that the
		 * scheduler preempted (and may finish this get for it). */
		pthread_mutex_unlock(&dev->lock);
		pthread_mutex_lock(&dev->lock);
	}
}

/* A copy over shared memory: handed over, or made here. */
static int submit_local(struct hetmm_remote *dev, struct hetmm_copy *copy,
			char *buf, uint64_t index, size_t nr, bool to_device)
{
	if (!range_held(dev, index, nr)) {
		atomic_fetch_add(&dev->copy_errors, 1);
		return -EIO;
	}
	if (nr >= REMOTE_HANDOFF_PAGES) {
		struct rop *stale;
		if (local_handoff(dev, copy, buf, index, nr, to_device,
				  &stale))
			return 0;
		if (stale)
			rop_local(dev, stale);
	}
	int err = copy_local(dev, buf, index, nr, to_device);
	if (!err && to_device && !range_held(dev, index, nr))
		err = -EIO;   /* as rop_finish */
	copy_count(dev, nr, to_device, err);
	hetmm_copy_done(copy, err);
	return 0;
}

static int remote_submit(struct hetmm_pagemap *pgmap, uint64_t index,
			 void *buf, size_t nr, struct hetmm_copy *copy,
			 bool to_device)
{
	struct hetmm_remote *dev = hetmm_pagemap_drvdata(pgmap);

	if (nr > STRIPE)        /* the core's copies are never longer */
		return -EINVAL;
	if (dev->local)
		return submit_local(dev, copy, buf, index, nr, to_device);
	if (nr >= REMOTE_HANDOFF_PAGES)
		return submit_handoff(dev, copy, buf, index, nr, to_device);
	pthread_mutex_lock(&dev->lock);
	if (!range_held(dev, index, nr)) {
		pthread_mutex_unlock(&dev->lock);
		atomic_fetch_add(&dev->copy_errors, 1);
		return -EIO;
	}
	bool idle, done = false;
	pthread_mutex_lock(&dev->qlock);
	struct rop *op = rop_get(dev, copy, buf, index, nr, to_device, &idle);
	pthread_mutex_unlock(&dev->qlock);
	if (op && !to_device)
		op->done = &done;
	bool pending = op && rop_post(dev, op);
	if (pending && !to_device)
		pending = !get_progress(dev, op, &done);
	pthread_mutex_unlock(&dev->lock);
	if (!op)
		return -EAGAIN;
	/* A get progressed here was counted in flight meanwhile: a copy
	 * handed over then took the thread for awake and did not kick it. */
	if (pending || (!to_device && atomic_load(&dev->inflight)))
		kick(dev);
	return 0;
}

static int remote_submit_to(struct hetmm_pagemap *pgmap, uint64_t index,
			    const void *src, size_t nr,
			    struct hetmm_copy *copy)
{
	/* A put only reads src. */
	return remote_submit(pgmap, index, (void *)(uintptr_t)src, nr, copy,
			     true);
}

static int remote_submit_from(struct hetmm_pagemap *pgmap, void *dst,
			      uint64_t index, size_t nr,
			      struct hetmm_copy *copy)
{
	return remote_submit(pgmap, index, dst, nr, copy, false);
}

static const struct hetmm_pagemap_ops remote_ops = {
	.submit_to_device = remote_submit_to,
	.submit_from_device = remote_submit_from,
};

/* ------------------------------------------------------------------------
 * Servers: the handshake, and death
 */

static void ep_err_cb(void *arg, ucp_ep_h ep, ucs_status_t st)
{
	struct server *s = arg;
	(void)ep;
	(void)st;
	atomic_store(&s->dead, true);
}

/* Release a server's endpoint, and its key unless its region is mapped
 * here: a copy_local may be reading it, and the mapping goes with the
 * key (server_drop_key, once no copy is).  Under the lock.  Copies in
 * flight to it complete with an error as the endpoint closes. */
static void server_close(struct hetmm_remote *dev, struct server *s)
{
	const struct ucx_api *u = dev->u;

	if (atomic_load(&s->closed))
		return;
	atomic_store(&s->closed, true);
	if (s->ep) {
		ucp_request_param_t prm = {
			.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
			.flags = UCP_EP_CLOSE_FLAG_FORCE,
		};
		ucs_status_ptr_t r = u->ucp_ep_close_nbx(s->ep, &prm);
		while (r && !UCS_PTR_IS_ERR(r) &&
		       u->ucp_request_check_status(r) == UCS_INPROGRESS)
			u->ucp_worker_progress(dev->worker);
		if (r && !UCS_PTR_IS_ERR(r))
			u->ucp_request_free(r);
		s->ep = NULL;
	}
	if (s->rkey && !s->local) {
		u->ucp_rkey_destroy(s->rkey);
		s->rkey = NULL;
	}
}

static void server_drop_key(struct hetmm_remote *dev, struct server *s)
{
	if (s->rkey)
		dev->u->ucp_rkey_destroy(s->rkey);
	s->rkey = NULL;
	s->local = NULL;
}

static int64_t now_ms(void)
{
	return now_ns() / 1000000;
}

/* A TCP connection to addr within timeout_ms, with keepalive on. */
static int tcp_connect(const char *addr, int timeout_ms)
{
	char host[256], port[32];
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
	}, *ai;
	int fd = -1, err = -EHOSTUNREACH;
	int64_t deadline = now_ms() + timeout_ms;

	if (rw_split_addr(addr, host, sizeof(host), port, sizeof(port)))
		return -EINVAL;
	if (getaddrinfo(host, port, &hints, &ai))
		return -EHOSTUNREACH;
	for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC |
			    SOCK_NONBLOCK, 0);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		if (connect(fd, a->ai_addr, a->ai_addrlen) && errno !=
		    EINPROGRESS) {
			err = -errno;
			close(fd);
			fd = -1;
			continue;
		}
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		int left = (int)(deadline - now_ms()), soerr = 0;
		socklen_t sl = sizeof(soerr);
		int r = left > 0 ? poll(&pfd, 1, left) : 0;
		if (r <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr,
					 &sl) || soerr) {
			err = r == 0 ? -ETIMEDOUT : soerr ? -soerr : -errno;
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(ai);
	if (fd < 0)
		return err;
	int one = 1, idle = REMOTE_KEEPALIVE_S, cnt = 3;
	unsigned user_to = 3000 * REMOTE_KEEPALIVE_S;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_to,
		   sizeof(user_to));
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return fd;
}

/* The server's ERROR, as our errno (only errnos we know to mean what they
 * say; anything else is the server's failure). */
static int server_error(const uint8_t *b, uint32_t len)
{
	int e = len >= 4 ? (int)rw_get32(b) : -EPROTO;
	switch (e) {
	case -EACCES: case -ENOSPC: case -EINVAL: case -ENOMEM:
	case -EPROTO:
		return e;
	}
	return -EPROTO;
}

/* Handshake with server s for pages pages; the endpoint and key made. */
static int server_open(struct hetmm_remote *dev, struct server *s,
		       const struct rw_secret *secret, uint64_t pages,
		       int timeout_ms)
{
	static uint8_t buf[RW_MAX_BODY];   /* under open_lock */
	uint8_t auth[RW_AUTH_LEN], nonce_s[RW_NONCE], mac[SHA256_LEN];
	enum rw_type type;
	uint32_t len;
	int rc;

	s->fd = tcp_connect(s->name, timeout_ms);
	if (s->fd < 0)
		return s->fd;
	rc = rw_recv(s->fd, &type, buf, sizeof(buf), &len, timeout_ms);
	if (rc)
		return rc;
	if (type == RW_ERROR)
		return server_error(buf, len);
	if (type != RW_HELLO || len != RW_NONCE)
		return -EPROTO;
	memcpy(nonce_s, buf, RW_NONCE);
	rc = rw_random(auth, RW_NONCE);
	if (rc)
		return rc;
	rw_client_mac(secret, nonce_s, auth, PS, pages, auth + RW_NONCE);
	rw_put64(auth + RW_NONCE + SHA256_LEN, PS);
	rw_put64(auth + RW_NONCE + SHA256_LEN + 8, pages);
	rc = rw_send(s->fd, RW_AUTH, auth, sizeof(auth));
	if (!rc)
		rc = rw_recv(s->fd, &type, buf, sizeof(buf), &len,
			     timeout_ms);
	if (rc)
		return rc;
	if (type == RW_ERROR)
		return server_error(buf, len);
	if (type != RW_ACCEPT || len < RW_ACCEPT_FIXED)
		return -EPROTO;

	/* The server proves it holds the secret too, and that it sent
	 * this region: a server that can't is refused. */
	const uint8_t *t = buf + SHA256_LEN;
	size_t tail = len - SHA256_LEN;
	rw_server_mac(secret, auth, nonce_s, t, tail, mac);
	if (!sha256_equal(mac, buf))
		return -EACCES;
	uint32_t rkey_len = rw_get32(t + 16), waddr_len = rw_get32(t + 20);
	if ((uint64_t)24 + rkey_len + waddr_len != tail ||
	    rw_get64(t + 8) != pages * PS)
		return -EPROTO;
	s->base = rw_get64(t);
	s->bytes = rw_get64(t + 8);

	ucp_ep_params_t ep = {
		.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS |
			      UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
			      UCP_EP_PARAM_FIELD_ERR_HANDLER,
		.address = (const ucp_address_t *)(t + 24 + rkey_len),
		.err_mode = UCP_ERR_HANDLING_MODE_PEER,
		.err_handler = { .cb = ep_err_cb, .arg = s },
	};
	if (dev->u->ucp_ep_create(dev->worker, &ep, &s->ep) != UCS_OK) {
		s->ep = NULL;
		return -EPROTO;
	}
	if (dev->u->ucp_ep_rkey_unpack(s->ep, t + 24, &s->rkey) != UCS_OK) {
		s->rkey = NULL;
		return -EPROTO;
	}
	void *local;
	if (dev->u->ucp_rkey_ptr(s->rkey, s->base, &local) == UCS_OK)
		s->local = local;
	return 0;
}

/* ------------------------------------------------------------------------
 * The progress thread
 */

/* A readable control connection: the server closed it or broke the
 * protocol (it sends nothing after ACCEPT).  Either way it is gone. */
static void check_control(struct hetmm_remote *dev, struct pollfd *pfd)
{
	for (uint32_t i = 0; i < dev->nr_servers; i++)
		if (pfd[i].revents)
			atomic_store(&dev->srv[i].dead, true);
}

/* The kicks that woke the thread, taken: it looks for work after. */
static void drain(struct hetmm_remote *dev, const struct pollfd *wake)
{
	uint64_t kicks;
	if (wake->revents & POLLIN)
		(void)!read(dev->wakefd, &kicks, sizeof(kicks));
}

/*
 * Idle (nothing in flight), the thread sleeps on its kicks and the
 * servers' connections, not on the worker's event fd: the only traffic
 * then is the reply to a get its submitter progresses itself
 * (get_progress), which would wake the thread for nothing and have it
 * wait for the lock the submitter holds.  A server's death is seen on
 * its connection.
 */
static void *progress_thread(void *arg)
{
	struct hetmm_remote *dev = arg;
	const struct ucx_api *u = dev->u;
	struct pollfd pfd[HETMM_REMOTE_MAX_SERVERS + 2];
	uint32_t n = dev->nr_servers;
	unsigned spins = 0;

	/* UCX allocates on this thread: its arena now, settled with the
	 * rest. */
	free(malloc(64));
	atomic_store(&dev->thread_ready, true);
	for (uint32_t i = 0; i < n; i++)
		pfd[i] = (struct pollfd){ .fd = dev->srv[i].fd,
					  .events = POLLIN | POLLRDHUP };
	pfd[n] = (struct pollfd){ .fd = dev->wakefd, .events = POLLIN };
	while (!atomic_load(&dev->stop)) {
		run_queued(dev);
		pthread_mutex_lock(&dev->lock);
		while (u->ucp_worker_progress(dev->worker))
			;
		for (uint32_t i = 0; i < n; i++)
			if (atomic_load(&dev->srv[i].dead))
				server_close(dev, &dev->srv[i]);
		retry_gets(dev);
		/* Copies in flight: keep progressing, for latency; the
		 * connections are looked at every so often meanwhile. */
		bool idle = !atomic_load(&dev->inflight);
		pthread_mutex_unlock(&dev->lock);
		if (!idle && ++spins % 256) {
			sched_yield();
			continue;
		}
		if (poll(pfd, n + 1, idle ? -1 : 0) > 0) {
			check_control(dev, pfd);
			drain(dev, &pfd[n]);
		}
		for (uint32_t i = 0; i < n; i++)
			if (atomic_load(&dev->srv[i].dead))
				pfd[i].fd = -1;
	}
	return NULL;
}

/* ------------------------------------------------------------------------
 * The device
 */

static int ctx_usable(struct hetmm_ctx *ctx)
{
	enum hetmm_uffd_route route;
	return hetmm_ctx_uffd_info(ctx, &route, NULL);
}

static void remote_free(struct hetmm_remote *dev)
{
	if (dev->thread_started) {
		atomic_store(&dev->stop, true);
		kick(dev);
		pthread_join(dev->thread, NULL);
	}
	if (dev->worker) {
		pthread_mutex_lock(&dev->lock);
		for (uint32_t i = 0; i < dev->nr_servers; i++)
			server_close(dev, &dev->srv[i]);
		retry_gets(dev);        /* none is left to go to */
		fail_queued(dev);
		for (uint32_t i = 0; i < dev->nr_servers; i++)
			server_drop_key(dev, &dev->srv[i]);
		pthread_mutex_unlock(&dev->lock);
		dev->u->ucp_worker_destroy(dev->worker);
		dev->u->ucp_cleanup(dev->ucp);
	}
	/* Closing the connections frees the regions on the servers. */
	for (uint32_t i = 0; i < dev->nr_servers; i++)
		if (dev->srv[i].fd >= 0)
			close(dev->srv[i].fd);
	if (dev->wakefd >= 0)
		close(dev->wakefd);
	if (dev->quiet)
		munmap(dev->quiet, PS);
	if (dev->put_stage)
		munmap(dev->put_stage, PUT_STAGE_BYTES);
	pthread_mutex_destroy(&dev->qlock);
	pthread_mutex_destroy(&dev->lock);
	free(dev);
}

static bool remote_listed(struct hetmm_remote *dev, bool unlist)
{
	return unlist ? drv_handles_take(&devs, &dev->handle)
		      : drv_handles_has(&devs, &dev->handle);
}

/* The context's release (drv_life_insert). */
static void remote_release(struct drv_handle *h)
{
	remote_free((struct hetmm_remote *)h);   /* handle is first */
}

static int check_desc(const struct hetmm_remote_desc *d)
{
	if (!d || !d->servers || !d->nr_servers ||
	    d->nr_servers > HETMM_REMOTE_MAX_SERVERS || !d->nr_pages ||
	    d->nr_pages > (1ULL << 32) || !d->secret_file ||
	    (d->flags & ~HETMM_PAGEMAP_EVICT) || d->timeout_ms > 600000 ||
	    d->replicas > HETMM_REMOTE_MAX_REPLICAS ||
	    d->replicas > d->nr_servers)
		return -EINVAL;
	for (uint32_t i = 0; i < d->nr_servers; i++) {
		char h[256], p[32];
		if (!d->servers[i] ||
		    strlen(d->servers[i]) >= SERVER_NAME_MAX ||
		    rw_split_addr(d->servers[i], h, sizeof(h), p, sizeof(p)))
			return -EINVAL;
	}
	return 0;
}

static uint64_t stripes_of(const struct hetmm_remote_desc *d)
{
	return (d->nr_pages + STRIPE - 1) / STRIPE;
}

/* Pages server i holds (see locate): a part of per_server stripes for
 * each copy but the last, then the last copy's stripes, whole. */
static uint64_t server_pages(const struct hetmm_remote *dev,
			     const struct hetmm_remote_desc *d, uint32_t i)
{
	uint32_t n = dev->nr_servers, last = dev->replicas - 1;
	uint64_t stripes = stripes_of(d);
	/* The last copy's stripes k here: k % n == (i - last) mod n. */
	uint32_t first = (i + n - last) % n;
	uint64_t mine = stripes / n + (first < stripes % n ? 1 : 0);

	return (last * dev->per_server + (mine ? mine : 1)) * STRIPE;
}

static int remote_connect(struct hetmm_remote *dev,
			  const struct hetmm_remote_desc *d, int timeout_ms)
{
	struct rw_secret *secret = malloc(sizeof(*secret));
	int rc = secret ? rw_secret_load(d->secret_file, secret) : -ENOMEM;

	pthread_mutex_lock(&open_lock);
	for (uint32_t i = 0; i < d->nr_servers && !rc; i++)
		rc = server_open(dev, &dev->srv[i], secret,
				 server_pages(dev, d, i), timeout_ms);
	pthread_mutex_unlock(&open_lock);
	if (secret) {
		memset(secret, 0, sizeof(*secret));
		free(secret);
	}
	/* Over shared memory every region is mapped here (copy_local). */
	dev->local = rc == 0;
	for (uint32_t i = 0; i < d->nr_servers; i++)
		dev->local = dev->local && dev->srv[i].local;
	if (rc == 0 && !dev->local) {
		void *p = mmap(NULL, PUT_STAGE_BYTES, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			       -1, 0);
		if (p == MAP_FAILED)
			return -ENOMEM;
		dev->put_stage = p;
	}
	return rc;
}

static struct hetmm_remote *remote_alloc(const struct hetmm_remote_desc *d)
{
	struct hetmm_remote *dev = calloc(1, sizeof(*dev));
	if (!dev)
		return NULL;
	pthread_mutex_init(&dev->lock, NULL);
	pthread_mutex_init(&dev->qlock, NULL);
	dev->queued_tail = &dev->queued;
	dev->wakefd = -1;
	dev->nr_servers = d->nr_servers;
	dev->replicas = d->replicas ? d->replicas : 1;
	dev->per_server = (stripes_of(d) + d->nr_servers - 1) / d->nr_servers;
	for (uint32_t i = 0; i < d->nr_servers; i++) {
		dev->srv[i].fd = -1;
		strcpy(dev->srv[i].name, d->servers[i]);
	}
	for (int i = REMOTE_SLOTS - 1; i >= 0; i--) {
		dev->slots[i].dev = dev;
		dev->slots[i].next_free = dev->free_slots;
		dev->free_slots = &dev->slots[i];
	}
	return dev;
}

/* A put and a get of one page on every server, waited for: UCX fills
 * its transports' buffer pools now, before the maps are settled. */
static int remote_warm_up(struct hetmm_remote *dev)
{
	const struct ucx_api *u = dev->u;
	void *page = mmap(NULL, PS, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	int rc = 0;

	if (page == MAP_FAILED)
		return -ENOMEM;
	pthread_mutex_lock(&dev->lock);
	for (uint32_t i = 0; i < dev->nr_servers && !rc; i++) {
		struct server *s = &dev->srv[i];
		ucp_request_param_t none = { .op_attr_mask = 0 };
		ucs_status_ptr_t r[3] = {
			u->ucp_put_nbx(s->ep, page, PS, s->base, s->rkey,
				       &none),
			u->ucp_get_nbx(s->ep, page, PS, s->base, s->rkey,
				       &none),
			u->ucp_ep_flush_nbx(s->ep, &none),
		};
		int64_t end = now_ms() + 5000;
		for (int k = 0; k < 3; k++) {
			if (UCS_PTR_IS_ERR(r[k])) {
				rc = -EPROTO;
				continue;
			}
			while (r[k] && u->ucp_request_check_status(r[k]) ==
			       UCS_INPROGRESS && now_ms() < end)
				u->ucp_worker_progress(dev->worker);
			if (r[k] && u->ucp_request_check_status(r[k]) !=
			    UCS_OK)
				rc = -ETIMEDOUT;
			if (r[k])
				u->ucp_request_free(r[k]);
		}
	}
	pthread_mutex_unlock(&dev->lock);
	munmap(page, PS);
	return rc;
}

/* UCX, the servers, the thread: everything that maps memory of its own
 * (see ucx_maps_settle). */
static int remote_open(struct hetmm_remote *dev,
		       const struct hetmm_remote_desc *d, int timeout)
{
	int rc = ucx_open(dev->u, &dev->ucp, &dev->worker);
	if (rc)
		return rc;
	dev->wakefd = eventfd(0, EFD_CLOEXEC);
	if (dev->wakefd < 0)
		return -errno;
	rc = remote_connect(dev, d, timeout);
	if (rc)
		return rc;
	rc = hetmm_thread_create(&dev->thread, progress_thread, dev);
	if (rc)
		return rc;
	dev->thread_started = true;
	/* Its malloc arena made, before the maps are settled. */
	while (!atomic_load(&dev->thread_ready))
		sched_yield();
	return remote_warm_up(dev);
}

static int remote_start(struct hetmm_remote *dev,
			const struct hetmm_remote_desc *d)
{
	int timeout = d->timeout_ms ? (int)d->timeout_ms :
		      dev->replicas > 1 ? REMOTE_TIMEOUT_REPLICA_MS :
					  REMOTE_TIMEOUT_DEFAULT_MS;
	struct ucx_maps maps;
	int rc = ucx_maps_before(&maps);
	if (rc)
		return rc;
	rc = remote_open(dev, d, timeout);
	ucx_maps_settle(&maps);
	if (rc)
		return rc;


	struct hetmm_pagemap_desc pd = {
		.type = HETMM_MEMORY_DEVICE_PRIVATE,
		.nr_pages = d->nr_pages,
		.ops = &remote_ops,
		.drvdata = dev,
		.owner = dev,
		.flags = HETMM_PAGEMAP_MANAGED | d->flags,
		.queue_depth = REMOTE_QUEUE,
		.copy_timeout_ms = (uint32_t)timeout,
	};
	rc = hetmm_pagemap_add(dev->ctx, &pd, &dev->pgmap);
	if (rc)
		return rc;
	/* A page of its own, which no change of the process touches: its
	 * notifier hears only the context's release. */
	dev->quiet = mmap(NULL, PS, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS,
			  -1, 0);
	if (dev->quiet == MAP_FAILED) {
		dev->quiet = NULL;
		rc = -ENOMEM;
	} else {
		madvise(dev->quiet, PS, MADV_DONTFORK);
		rc = drv_life_insert(dev->ctx, dev->quiet, &devs, &dev->handle,
				     remote_release, &dev->life);
	}
	if (rc) {
		hetmm_pagemap_remove_managed(dev->pgmap, dev);
		dev->pgmap = NULL;
	}
	return rc;
}

int hetmm_remote_create(struct hetmm_ctx *ctx,
			const struct hetmm_remote_desc *d,
			struct hetmm_remote **devp)
{
	const struct ucx_api *u;

	if (!ctx || !devp)
		return -EINVAL;
	int rc = ctx_usable(ctx);
	if (rc)
		return rc;
	rc = check_desc(d);
	if (rc)
		return rc;
	rc = ucx_load(&u);
	if (rc)
		return rc;
	struct hetmm_remote *dev = remote_alloc(d);
	if (!dev)
		return -ENOMEM;
	dev->ctx = ctx;
	dev->u = u;
	rc = remote_start(dev, d);
	if (rc) {
		remote_free(dev);
		return rc;
	}
	drv_handles_add(&devs, &dev->handle);
	*devp = dev;
	return 0;
}

int hetmm_remote_destroy(struct hetmm_remote *dev)
{
	if (!dev || !remote_listed(dev, false))
		return -EINVAL;
	int rc = ctx_usable(dev->ctx);
	if (rc)
		return rc;
	/* Pages the process unmapped or discarded just before are freed
	 * once the handler has handled those events: wait for it, so that
	 * removal does not try to bring them home (which fails for the
	 * pages of a dead server). */
	hetmm_ctx_sync(dev->ctx);
	rc = hetmm_pagemap_remove_managed(dev->pgmap, dev);
	if (rc)
		return rc;
	if (!remote_listed(dev, true))
		return -EINVAL;
	hetmm_notifier_remove(dev->life);
	remote_free(dev);
	return 0;
}

int hetmm_remote_pagemap(struct hetmm_remote *dev,
			 struct hetmm_pagemap **pgmapp)
{
	if (!dev || !pgmapp || !remote_listed(dev, false))
		return -EINVAL;
	int rc = ctx_usable(dev->ctx);
	if (rc)
		return rc;
	*pgmapp = dev->pgmap;
	return 0;
}

int hetmm_remote_get_stats(struct hetmm_remote *dev,
			   struct hetmm_remote_stats *st)
{
	if (!dev || !st || !remote_listed(dev, false))
		return -EINVAL;
	int rc = ctx_usable(dev->ctx);
	if (rc)
		return rc;
	memset(st, 0, sizeof(*st));
	st->nr_servers = dev->nr_servers;
	st->replicas = dev->replicas;
	for (uint32_t i = 0; i < dev->nr_servers; i++)
		st->servers_alive += !atomic_load(&dev->srv[i].dead);
	st->pages_put = atomic_load(&dev->pages_put);
	st->pages_got = atomic_load(&dev->pages_got);
	st->copy_errors = atomic_load(&dev->copy_errors);
	st->replica_reads = atomic_load(&dev->replica_reads);
	st->failovers = atomic_load(&dev->failovers);
	return 0;
}
#endif
