/* SPDX-License-Identifier: MIT */
/*
 * copy.c - asynchronous copies: a pagemap's driver starts them with its
 * submit ops and finishes them with hetmm_copy_done(), from any thread
 * (the kernel's dmaengine: a descriptor submitted, its callback later).
 *
 * The queue is a fixed ring of slots (struct hetmm_copy), made with the
 * pagemap, each with HETMM_COPY_MAX_PAGES pages of staging for copies
 * from the device.  A slot is free (its bit set in free_mask), in flight,
 * done, or abandoned: its waiter gave up on it (timeout), and it stays
 * out of use until the driver's late done frees it, so that late bytes
 * land in staging nobody reads.  Waits are futex waits on the slot's
 * state word, bounded by the pagemap's copy timeout: a driver that never
 * completes costs the caller one timeout, never a hang.  A done call or a
 * slot's release wakes only a waiter that said it waits: a copy done
 * before anyone waits for it (a driver that copies in its submit op, as
 * the file device does a lone page) and a release nobody waits for cost
 * no system call, on the path of a random fault.  The fault handler
 * marks each wait and each submit op away (away.h), so that its deputy
 * serves the faults a driver's thread may raise meanwhile.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "away.h"
#include "copy.h"
#include "ctx.h"
#include "entry.h"
#include "pagemap.h"

enum slot_state {
	SLOT_FREE,
	SLOT_IN_FLIGHT,
	SLOT_DONE,
	SLOT_ABANDONED,
};

/* A done slot's state word holds its error too, so that a done call
 * changes one word: SLOT_DONE | -error << SLOT_ERROR_SHIFT. */
#define SLOT_ERROR_SHIFT 8
/* Or'ed into SLOT_IN_FLIGHT by a waiter about to sleep on the word: the
 * done call wakes it. */
#define SLOT_WAITED 0x80u

struct hetmm_copy {
	struct copyq *q;
	_Atomic uint32_t state;           /* enum slot_state; futex word */
	unsigned bit;
	void *staging;
	/* The piece it copies, for the pipeline that started it. */
	struct copy_req req;
	uint64_t keep[HETMM_COPY_MAX_PAGES];
};

struct copyq {
	struct hetmm_copy slots[HETMM_COPY_DEPTH_MAX];
	uint32_t depth;
	uint32_t timeout_ms;
	_Atomic uint64_t free_mask;
	_Atomic uint32_t released;        /* futex word: bumped per free */
	_Atomic uint32_t release_waiters; /* threads waiting on released */
	atomic_bool dead;                 /* a copy timed out */
	/* Held by a slot's release, so that the queue's destruction comes
	 * after the last one in an order a race detector can see too (the
	 * handler's releases reach the remover through the kernel). */
	pthread_mutex_t release_lock;
	_Atomic(struct hetmm_ctx *) ctx; /* NULL once a kept queue's is gone */
	void *staging;
	struct own_range own;
	struct copyq *kept_next;          /* kept_queues */
};

/* Queues of removed pagemaps a driver's late done may still reach. */
static _Atomic(struct copyq *) kept_queues;

static long futex(_Atomic uint32_t *word, int op, uint32_t val,
		  const struct timespec *ts)
{
	return syscall(SYS_futex, word, op, val, ts, NULL, 0);
}

/* Wait while *word is val, until deadline (monotonic ms). */
static void futex_wait_until(_Atomic uint32_t *word, uint32_t val,
			     uint64_t deadline)
{
	uint64_t now = monotonic_ms();
	if (now >= deadline)
		return;
	struct timespec ts = {
		.tv_sec = (time_t)((deadline - now) / 1000),
		.tv_nsec = (long)((deadline - now) % 1000) * 1000000,
	};
	futex(word, FUTEX_WAIT_PRIVATE, val, &ts);
}

bool copy_is_async(const struct hetmm_pagemap *pgmap)
{
	return pgmap->copyq != NULL;
}

bool copyq_dead(const struct hetmm_pagemap *pgmap)
{
	return pgmap->copyq &&
	       atomic_load_explicit(&pgmap->copyq->dead, memory_order_relaxed);
}

static size_t staging_bytes(uint32_t depth)
{
	return (size_t)depth * HETMM_COPY_MAX_PAGES * PAGE_SIZE;
}

void *copyq_staging(const struct hetmm_pagemap *pgmap, size_t *len)
{
	*len = pgmap->copyq ? staging_bytes(pgmap->copyq->depth) : 0;
	return pgmap->copyq ? pgmap->copyq->staging : NULL;
}

int copyq_create(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
		 uint32_t depth, uint32_t timeout_ms)
{
	if (!pgmap->ops->submit_to_device || pagemap_is_fixed(pgmap))
		return 0;
	struct copyq *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->depth = depth ? depth : HETMM_COPY_DEPTH_DEFAULT;
	q->timeout_ms = timeout_ms ? timeout_ms : HETMM_COPY_TIMEOUT_DEFAULT_MS;
	atomic_init(&q->ctx, ctx);
	pthread_mutex_init(&q->release_lock, NULL);
	void *p = mmap(NULL, staging_bytes(q->depth), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		pthread_mutex_destroy(&q->release_lock);
		free(q);
		return -ENOMEM;
	}
	q->staging = p;
	/* The handler installs from it: no call may ever register it. */
	entry_own(ctx, &q->own, p, staging_bytes(q->depth));
	for (unsigned i = 0; i < q->depth; i++) {
		q->slots[i].q = q;
		q->slots[i].bit = i;
		q->slots[i].staging = (char *)p +
				      (size_t)i * HETMM_COPY_MAX_PAGES * PAGE_SIZE;
	}
	q->free_mask = q->depth == 64 ? ~0ULL : (1ULL << q->depth) - 1;
	pgmap->copyq = q;
	return 0;
}

/*
 * Wait until every slot is back: true, or false once a copy was abandoned
 * (its slot comes back only with the driver's late done).  A pipeline
 * hands a completed piece on (its pages installed, their frames free)
 * before it gives the slot back, so a remover that saw every frame free
 * may still find a slot out, for as long as the pipeline takes to return
 * it or to give up on its copy.
 */
static bool copyq_slots_back(struct copyq *q)
{
	uint64_t all = q->depth == 64 ? ~0ULL : (1ULL << q->depth) - 1;
	bool back;
	atomic_fetch_add(&q->release_waiters, 1);
	for (;;) {
		uint32_t seen = atomic_load(&q->released);
		if (atomic_load(&q->dead)) {
			back = false;
			break;
		}
		if (atomic_load(&q->free_mask) == all) {
			back = true;
			break;
		}
		futex_wait_until(&q->released, seen,
				 monotonic_ms() + q->timeout_ms);
	}
	atomic_fetch_sub(&q->release_waiters, 1);
	return back;
}

bool copyq_kept_forget(struct hetmm_ctx *ctx)
{
	bool kept = false;
	for (struct copyq *q = atomic_load(&kept_queues); q; q = q->kept_next) {
		struct hetmm_ctx *mine = ctx;
		if (atomic_compare_exchange_strong(&q->ctx, &mine, NULL))
			kept = true;
	}
	return kept;
}

void copyq_destroy(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap)
{
	struct copyq *q = pgmap->copyq;
	if (!q)
		return;
	pgmap->copyq = NULL;
	/* A copy that timed out, even one completed since, may still be
	 * in hetmm_copy_done() on the driver's thread: the queue is kept,
	 * listed so that it is not a leak either. */
	if (!copyq_slots_back(q)) {
		q->kept_next = atomic_load(&kept_queues);
		while (!atomic_compare_exchange_weak(&kept_queues,
						     &q->kept_next, q))
			;
		return;
	}
	pthread_mutex_lock(&q->release_lock);   /* after every release */
	pthread_mutex_unlock(&q->release_lock);
	pthread_mutex_destroy(&q->release_lock);
	entry_disown(ctx, &q->own);
	munmap(q->staging, staging_bytes(q->depth));
	free(q);
}

/*
 * A waiter on released counts itself in release_waiters before it reads
 * released and looks at the slots; a release bumps released before it
 * reads release_waiters (both sequentially consistent).  So either the
 * release sees the waiter and wakes it, or the waiter's read of released
 * comes after the bump and it finds the slot free without sleeping.
 */
static void slot_release(struct hetmm_copy *s)
{
	struct copyq *q = s->q;
	away_mutex_lock(&q->release_lock);
	atomic_store_explicit(&s->state, SLOT_FREE, memory_order_relaxed);
	atomic_fetch_or(&q->free_mask, 1ULL << s->bit);
	atomic_fetch_add(&q->released, 1);
	/* Woken under the lock: once the remover has taken it after the
	 * last release, nothing touches the queue any more. */
	if (atomic_load(&q->release_waiters))
		futex(&q->released, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
	pthread_mutex_unlock(&q->release_lock);
}

/* A free slot, if more than reserve are free. */
static struct hetmm_copy *slot_try_get(struct copyq *q, unsigned reserve)
{
	uint64_t m = atomic_load(&q->free_mask);
	while ((unsigned)__builtin_popcountll(m) > reserve) {
		unsigned bit = (unsigned)__builtin_ctzll(m);
		if (atomic_compare_exchange_weak(&q->free_mask, &m,
						 m & ~(1ULL << bit))) {
			struct hetmm_copy *s = &q->slots[bit];
			atomic_store(&s->state, SLOT_IN_FLIGHT);
			return s;
		}
	}
	return NULL;
}

/* A free slot as slot_try_get's, waiting for one at most the timeout;
 * NULL if none came (every slot is held by copies that never complete). */
static struct hetmm_copy *slot_get_wait(struct copyq *q, unsigned reserve)
{
	uint64_t deadline = monotonic_ms() + q->timeout_ms;
	struct hetmm_copy *s = slot_try_get(q, reserve);
	if (s)
		return s;
	atomic_fetch_add(&q->release_waiters, 1);
	for (;;) {
		uint32_t seen = atomic_load(&q->released);
		s = slot_try_get(q, reserve);
		if (s || monotonic_ms() >= deadline)
			break;
		futex_wait_until(&q->released, seen, deadline);
	}
	atomic_fetch_sub(&q->release_waiters, 1);
	return s;
}

/* Wait for slot s to complete: its error, or -ETIMEDOUT (the slot is
 * then abandoned if abandon, and the caller must not touch it again). */
static int slot_wait(struct hetmm_copy *s, bool abandon)
{
	struct copyq *q = s->q;
	uint64_t deadline = monotonic_ms() + q->timeout_ms;
	uint32_t st;
	while (((st = atomic_load_explicit(&s->state, memory_order_acquire)) &
		~SLOT_WAITED) == SLOT_IN_FLIGHT) {
		if (monotonic_ms() >= deadline && !abandon)
			return -ETIMEDOUT;
		if (monotonic_ms() >= deadline &&
		    atomic_compare_exchange_strong(&s->state, &st,
						   SLOT_ABANDONED)) {
			atomic_store(&q->dead, true);
			return -ETIMEDOUT;
		}
		if (st == SLOT_IN_FLIGHT &&
		    !atomic_compare_exchange_strong(&s->state, &st,
						    SLOT_IN_FLIGHT |
						    SLOT_WAITED))
			continue;   /* done meanwhile */
		futex_wait_until(&s->state, SLOT_IN_FLIGHT | SLOT_WAITED,
				 deadline);
	}
	return -(int)(st >> SLOT_ERROR_SHIFT);
}

int hetmm_copy_done(struct hetmm_copy *copy, int error)
{
	if (!copy || error > 0 || error < -4095)
		return -EINVAL;
	uint32_t done = SLOT_DONE | (uint32_t)-error << SLOT_ERROR_SHIFT;
	uint32_t st = atomic_load_explicit(&copy->state, memory_order_relaxed);
	while ((st & ~SLOT_WAITED) == SLOT_IN_FLIGHT) {
		if (!atomic_compare_exchange_weak_explicit(&copy->state, &st,
				done, memory_order_release,
				memory_order_relaxed))
			continue;
		if (st & SLOT_WAITED)
			futex(&copy->state, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
		return 0;
	}
	if (st == SLOT_ABANDONED) {
		slot_release(copy);   /* nobody waits for it any more */
		return 0;
	}
	return -EINVAL;
}

/* ------------------------------------------------------------------------
 * The pipeline
 */

void copy_pipe_open(struct copy_pipe *p, struct hetmm_pagemap *pgmap,
		    bool to_device, bool handler, copy_finish_fn *finish,
		    void *arg)
{
	uint32_t depth = pgmap->copyq->depth;
	*p = (struct copy_pipe){
		.pgmap = pgmap, .to_device = to_device,
		.reserve = handler || depth == 1 ? 0 : MAX(depth / 4, 1u),
		.finish = finish, .arg = arg,
	};
}

bool copy_error_is_device(bool to_device, int err)
{
	return !to_device || err != -EFAULT;
}

static void pipe_fail(struct copy_pipe *p, const struct copy_req *r, int err)
{
	p->failed++;
	if (copy_error_is_device(p->to_device, err))
		STAT_ADD(p->pgmap->ctx, copy_errors, 1);
	p->finish(p->arg, r, err, NULL);
}

/* Wait for the oldest piece in flight and hand it to finish(). */
static void pipe_complete_oldest(struct copy_pipe *p)
{
	struct hetmm_copy *s = p->slot[p->head];
	p->head = (p->head + 1) % HETMM_COPY_DEPTH_MAX;
	p->count--;
	away_begin();
	int err = slot_wait(s, true);
	away_end();
	if (err == -ETIMEDOUT) {
		pipe_fail(p, &s->req, err);   /* s is abandoned */
		return;
	}
	if (err)
		pipe_fail(p, &s->req, err < 0 ? err : -EIO);
	else
		p->finish(p->arg, &s->req, 0,
			  p->to_device ? NULL : s->req.mem);
	slot_release(s);
}

void copy_pipe_finish_oldest(struct copy_pipe *p)
{
	if (p->count)
		pipe_complete_oldest(p);
}

void copy_pipe_wait_until(struct copy_pipe *p, uint64_t added)
{
	uint64_t oldest = p->added - p->count;
	if (added <= oldest || added > p->added)
		return;   /* finished already, or never started */
	struct hetmm_copy *s = p->slot[(p->head + (added - 1 - oldest)) %
				       HETMM_COPY_DEPTH_MAX];
	away_begin();
	slot_wait(s, false);   /* a timeout is the finish's to tell */
	away_end();
}

void copy_pipe_finish_done(struct copy_pipe *p)
{
	while (p->count &&
	       (atomic_load_explicit(&p->slot[p->head]->state,
				     memory_order_acquire) & ~SLOT_WAITED) !=
	       SLOT_IN_FLIGHT)
		pipe_complete_oldest(p);
}

/* A slot for the next piece: a free one, else the oldest of ours once it
 * completes, else (we hold none) one another thread gives back. */
static struct hetmm_copy *pipe_slot(struct copy_pipe *p)
{
	struct copyq *q = p->pgmap->copyq;
	for (;;) {
		struct hetmm_copy *s = slot_try_get(q, p->reserve);
		if (s)
			return s;
		if (!p->count) {
			away_begin();
			s = slot_get_wait(q, p->reserve);
			away_end();
			return s;
		}
		pipe_complete_oldest(p);
	}
}

static void pipe_start(struct copy_pipe *p, const struct copy_req *r)
{
	struct hetmm_pagemap *pgmap = p->pgmap;
	struct hetmm_copy *s = pipe_slot(p);
	if (!s) {
		pipe_fail(p, r, -ETIMEDOUT);
		return;
	}
	s->req = *r;
	if (!p->to_device && !r->mem)
		s->req.mem = s->staging;
	if (r->keep) {
		memcpy(s->keep, r->keep, r->nr * sizeof(*r->keep));
		s->req.keep = s->keep;
	}
	p->slot[(p->head + p->count) % HETMM_COPY_DEPTH_MAX] = s;
	p->count++;
	p->added++;
	away_begin();   /* a driver's submit may wait on its own thread */
	int rc = p->to_device ?
		pgmap->ops->submit_to_device(pgmap, r->index, r->mem, r->nr, s) :
		pgmap->ops->submit_from_device(pgmap, s->req.mem, r->index,
					       r->nr, s);
	away_end();
	if (rc) {
		/* Not started: no done will come.  It is the newest. */
		p->count--;
		p->added--;
		slot_release(s);
		pipe_fail(p, r, rc < 0 ? rc : -EIO);
	}
}

void copy_pipe_add(struct copy_pipe *p, const struct copy_req *r)
{
	for (size_t off = 0; off < r->nr; off += HETMM_COPY_MAX_PAGES) {
		struct copy_req piece = {
			.index = r->index + off,
			.mem = r->mem ? (char *)r->mem + off * PAGE_SIZE : NULL,
			.nr = MIN(r->nr - off, (size_t)HETMM_COPY_MAX_PAGES),
			.tag = r->tag + off,
			.flags = r->flags,
			.keep = r->keep ? r->keep + off : NULL,
		};
		pipe_start(p, &piece);
	}
}

size_t copy_pipe_drain(struct copy_pipe *p)
{
	while (p->count)
		pipe_complete_oldest(p);
	p->pgmap = NULL;
	return p->failed;
}

size_t copy_pipe(struct hetmm_pagemap *pgmap, bool to_device,
		 bool (*next)(void *arg, struct copy_req *r),
		 copy_finish_fn *finish, void *arg)
{
	struct copy_pipe p;
	copy_pipe_open(&p, pgmap, to_device, false, finish, arg);
	struct copy_req r;
	while (next(arg, &r))
		copy_pipe_add(&p, &r);
	return copy_pipe_drain(&p);
}

/* ------------------------------------------------------------------------
 * One copy from the device, waited for
 */

int copy_from_device_wait(struct hetmm_pagemap *pgmap, uint64_t index,
			  size_t nr, struct hetmm_copy **slotp, void **bytes)
{
	away_begin();
	struct hetmm_copy *s = slot_get_wait(pgmap->copyq, 0);
	away_end();
	if (!s) {
		STAT_ADD(pgmap->ctx, copy_errors, 1);
		return -ETIMEDOUT;
	}
	away_begin();
	int rc = pgmap->ops->submit_from_device(pgmap, s->staging, index, nr,
						s);
	bool started = rc == 0;
	if (started)
		rc = slot_wait(s, true);
	away_end();
	if (!rc) {
		*slotp = s;
		*bytes = s->staging;
		return 0;
	}
	/* As pipe_complete_oldest: a copy that timed out keeps its slot
	 * (abandoned) until the driver's late done. */
	if (!started || rc != -ETIMEDOUT)
		slot_release(s);
	STAT_ADD(pgmap->ctx, copy_errors, 1);
	return rc < 0 ? rc : -EIO;
}

void copy_slot_put(struct hetmm_copy *slot)
{
	slot_release(slot);
}
