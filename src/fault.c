/* SPDX-License-Identifier: MIT */
/*
 * fault.c - the fault engine: one thread per context resolves every
 * userfaultfd fault of the context's registered ranges.
 *
 * A MISSING fault on a device-resident page is the CPU touching
 * device-private memory (the kernel's do_swap_page -> migrate_to_ram):
 * the page comes back, with fault-around, before the thread resumes.  A
 * MISSING fault on any other page of a registered range is a hole and gets
 * a zero page.  A write-protect fault is a write racing a migration to the
 * device; the migration wakes it when it commits.
 *
 * The handler never blocks on a page another thread holds BUSY: whoever
 * set BUSY wakes the range when it lets go.  It allocates nothing and
 * takes no lock on the fault path, except the mirrors' when a page leaves
 * a device that mirrors may be using.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat.h"
#include "internal.h"

#define FAULT_AROUND_GROWTH 8
#define FAULT_READ_BATCH 32

/*
 * Adaptive fault-around.  A fault that lands where a recent stream of
 * faults predicted, just past its last window either way, grows that
 * stream's window eightfold, up to fault_around_max; any other fault
 * starts a new stream of one page.  A sequential scan of 1 GiB thus costs
 * about 36 round trips instead of 262144, while a random access pays for
 * exactly the page it touches.
 */
static struct fault_stream *fault_stream_of(struct hetmm_ctx *ctx,
					    uintptr_t addr, bool *down)
{
	for (unsigned i = 0; i < FAULT_STREAMS; i++) {
		struct fault_stream *s = &ctx->streams[i];
		if (s->next == addr || s->prev == addr) {
			*down = s->prev == addr;
			s->window = MIN(s->window * FAULT_AROUND_GROWTH,
					ctx->fault_around_max);
			return s;
		}
	}
	struct fault_stream *s = &ctx->streams[ctx->stream_next++ %
					       FAULT_STREAMS];
	s->window = 1;
	*down = false;
	return s;
}

/* Claim and bring back up to n device pages from vpn upward; returns how
 * many left the device. */
static size_t fault_back_run(struct hetmm_ctx *ctx, uint64_t vpn, size_t n,
			     void **staging, unsigned how)
{
	size_t got = claim_device_run(ctx, vpn, n, ctx->fault_claims);
	if (got)
		got = migrate_back_claimed(ctx, vpn, got, ctx->fault_claims,
					   staging, BACK_FAULT | how);
	return got;
}

/* How many pages below and including top, at most max, are unclaimed
 * device pages: the run a downward chunk can take. */
static size_t device_run_down(struct hetmm_ctx *ctx, uint64_t top, size_t max)
{
	size_t n = 0;
	while (n < max && n <= top) {
		uint64_t e = vtab_get(&ctx->shadow, top - n);
		if (!shadow_claimable(e))
			break;
		n++;
	}
	return n;
}

/* The faulting page's mapping in page numbers: fault-around stays inside
 * it (the next one is another thread's business: it may be mremapping
 * it).  False, and *lo, *hi untouched, if it can't be found. */
static bool fault_vma(struct hetmm_ctx *ctx, uintptr_t addr, uint64_t *lo,
		      uint64_t *hi)
{
	struct vma v;
	if (vma_find(&ctx->vmaq, addr, &v))
		return false;
	*lo = addr_to_vpn(v.start);
	*hi = addr_to_vpn(v.end);
	return true;
}

/* [lo, hi) came back around a fault: where stream s goes on, and what a
 * fault queued meanwhile finds in place. */
static void fault_around_done(struct hetmm_ctx *ctx, struct fault_stream *s,
			      uint64_t lo, uint64_t hi)
{
	s->next = vpn_to_addr(hi);
	s->prev = vpn_to_addr(lo) - PAGE_SIZE;
	ctx->last_fill_start = vpn_to_addr(lo);
	ctx->last_fill_end = vpn_to_addr(hi);
}

/*
 * Density-based fault-around, for a fault no stream predicted: the way
 * GPU drivers prefetch for a device fault.  The 2 MiB block around the
 * page is a tree of aligned regions (2 pages, 4, ... 512); the largest
 * region around the page of which more than half has come back by faults
 * comes back whole.  A lone random access brings back one page; a block
 * read in random order comes back in ever larger pieces once half of
 * each piece has been asked for.
 */
static struct fault_dense *dense_block_of(struct hetmm_ctx *ctx,
					  uint64_t vpn)
{
	uint64_t block = vpn / DENSE_BLOCK_PAGES + 1;
	uint64_t gen = atomic_load_explicit(&ctx->dense_gen,
					    memory_order_relaxed);
	struct fault_dense *d = &ctx->dense[block % DENSE_BLOCKS];
	if (d->block != block || d->gen != gen) {
		memset(d->bits, 0, sizeof(d->bits));
		d->nset = 0;
		d->block = block;
		d->gen = gen;
	}
	return d;
}

static unsigned dense_count(const struct fault_dense *d, unsigned lo,
			    unsigned n)
{
	if (n < 64) {
		uint64_t mask = ((1ull << n) - 1) << (lo % 64);
		return (unsigned)__builtin_popcountll(d->bits[lo / 64] & mask);
	}
	unsigned set = 0;
	for (unsigned w = lo / 64; w < (lo + n) / 64; w++)
		set += (unsigned)__builtin_popcountll(d->bits[w]);
	return set;
}

static void dense_mark(struct fault_dense *d, unsigned lo, unsigned n)
{
	for (unsigned i = lo; i < lo + n; i++) {
		uint64_t bit = 1ull << (i % 64);
		d->nset += !(d->bits[i / 64] & bit);
		d->bits[i / 64] |= bit;
	}
}

/* The number of pages of the region to bring back around vpn: the
 * largest aligned region more than half asked for, fault_around_max at
 * most, or 1.  No region twice the size of all that was asked for can
 * qualify, which keeps a sparse block's fault to a few instructions. */
static unsigned dense_region(struct hetmm_ctx *ctx, uint64_t vpn,
			     struct fault_dense *d)
{
	unsigned idx = (unsigned)(vpn % DENSE_BLOCK_PAGES), best = 1;
	dense_mark(d, idx, 1);
	for (unsigned size = 2; size < 2 * d->nset &&
	     size <= DENSE_BLOCK_PAGES && size <= ctx->fault_around_max;
	     size *= 2)
		if (2 * dense_count(d, idx & ~(size - 1), size) > size)
			best = size;
	return best;
}

/* Bring back every device page of [lo, hi), run by run, waking no one;
 * true if vpn came back (or was back already). */
static bool fault_back_region(struct hetmm_ctx *ctx, uint64_t lo,
			      uint64_t hi, uint64_t vpn)
{
	void *staging = ctx->fault_staging;
	bool ok = false;
	for (uint64_t v = lo; v < hi;) {
		uint64_t e = vtab_get(&ctx->shadow, v);
		if (!shadow_claimable(e)) {
			ok |= v == vpn && !(e & SHADOW_BUSY);
			v++;
			continue;
		}
		size_t got = fault_back_run(ctx, v, hi - v, &staging,
					    BACK_NO_WAKE);
		ok |= vpn >= v && vpn < v + got;
		v += got ? got : 1;
	}
	return ok;
}

/*
 * If the fault's block is dense enough, bring back its region and wake
 * it; false leaves the fault to the one-page path.
 */
static bool fault_back_dense(struct hetmm_ctx *ctx, uintptr_t addr,
			     struct fault_stream *s)
{
	uint64_t vpn = addr_to_vpn(addr);
	struct fault_dense *d = dense_block_of(ctx, vpn);
	unsigned size = dense_region(ctx, vpn, d);
	uint64_t vma_lo, vma_hi;
	if (size == 1 || !fault_vma(ctx, addr, &vma_lo, &vma_hi))
		return false;
	uint64_t lo = MAX(vpn & ~(uint64_t)(size - 1), vma_lo);
	uint64_t hi = MIN((vpn | (size - 1)) + 1, vma_hi);
	bool back = fault_back_region(ctx, lo, hi, vpn);
	uffd_wake(ctx->uffd.fd, vpn_to_addr(lo), (hi - lo) * PAGE_SIZE);
	if (!back)
		return false;   /* raced for it: the one-page path decides */
	dense_mark(d, (unsigned)(lo % DENSE_BLOCK_PAGES), (unsigned)(hi - lo));
	fault_around_done(ctx, s, lo, hi);
	return true;
}

/*
 * The faulting page's frame metadata is written when the page leaves the
 * device, after the fill: a random access finds it cold, and its miss,
 * fetched now, overlaps the fill instead of following it.
 */
static void frame_prefetch(uint64_t e)
{
	uint64_t idx;
	struct hetmm_pagemap *pgmap = pfn_pagemap(shadow_pfn(e), &idx);
	if (pgmap)
		__builtin_prefetch(&pgmap->pages[idx], 1);
}

/*
 * Bring back the faulting page and the rest of its window, a chunk at a
 * time, moving away from the faulting page in the stream's direction.
 * The faulting page's chunk wakes its waiters as it lands, so the thread
 * runs on at once; the rest of the window is woken once, at the end.  A
 * thread that catches up with the handler sleeps until then: waking it
 * chunk by chunk costs a cross-CPU wake-up per chunk, as long as moving
 * the chunk itself on these machines.  A chunk that comes up short
 * (someone holds the next page, or an event waits to be read and the rest
 * was woken to fault again after it) ends the window.
 */
static void fault_back(struct hetmm_ctx *ctx, uintptr_t addr, uint64_t e)
{
	uint64_t vpn = addr_to_vpn(addr);
	void *staging = ctx->fault_staging;
	frame_prefetch(e);
	if (ctx->npending) {
		/* Fault-around could reach a range an event changes. */
		fault_back_run(ctx, vpn, 1, &staging, 0);
		return;
	}
	bool down;
	struct fault_stream *s = fault_stream_of(ctx, addr, &down);
	if (s->window == 1 && fault_back_dense(ctx, addr, s))
		return;
	uint64_t lo = vpn, hi = vpn;     /* [lo, hi) is back */
	uint64_t woke_lo = vpn, woke_hi = vpn;
	uint64_t vma_lo = 0, vma_hi = UINT64_MAX;   /* unbounded if unknown */
	if (s->window > 1)
		(void)fault_vma(ctx, addr, &vma_lo, &vma_hi);
	while (hi - lo < s->window) {
		size_t want = MIN(s->window - (hi - lo), (size_t)CHUNK_PAGES);
		want = MIN(want, down ? (lo == hi ? vpn + 1 : lo) - vma_lo
				      : vma_hi - hi);
		if (!want)
			break;
		unsigned how = hi == lo ? 0 : BACK_NO_WAKE;
		size_t got;
		if (!down) {
			got = fault_back_run(ctx, hi, want, &staging, how);
			hi += got;
		} else {
			uint64_t top = lo == hi ? vpn : lo - 1;
			size_t n = device_run_down(ctx, top, want);
			got = n ? fault_back_run(ctx, top + 1 - n, n, &staging,
						 how) : 0;
			if (got < n) {
				/* raced: the run is not whole */
				uffd_wake(ctx->uffd.fd,
					  vpn_to_addr(top + 1 - n),
					  n * PAGE_SIZE);
				break;
			}
			if (lo == hi)
				hi = top + 1;
			lo = top + 1 - got;
		}
		if (!how) {
			woke_lo = lo;
			woke_hi = hi;
		}
		if (got < want)
			break;
	}
	if (lo < woke_lo)
		uffd_wake(ctx->uffd.fd, vpn_to_addr(lo),
			  (woke_lo - lo) * PAGE_SIZE);
	if (woke_hi < hi)
		uffd_wake(ctx->uffd.fd, vpn_to_addr(woke_hi),
			  (hi - woke_hi) * PAGE_SIZE);
	fault_around_done(ctx, s, lo, hi);
}

/*
 * A hole in a page the pin API holds (or in fixed device memory): no
 * migration may take it, so fill it for the thread touching it, with a
 * reference of our own (a count word's low bits) so that the holder
 * can't let go and a migration claim it meanwhile.  If the word stopped
 * being a hold, wake the thread to fault again.
 */
static void fault_zero_held(struct hetmm_ctx *ctx, _Atomic uint64_t *slot,
			    uintptr_t addr, bool write)
{
	uint64_t e = atomic_load(slot);
	bool ref = false;
	while (e && !(e & SHADOW_FLAGS) && !ref)
		ref = atomic_compare_exchange_weak(slot, &e, e + 1);
	if (!ref && !(e & SHADOW_FIXED)) {
		uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
		return;
	}
	if (uffd_fill(ctx->uffd.fd, write ? FILL_COPY : FILL_ZERO, addr,
		      (uintptr_t)ctx->zero_src, PAGE_SIZE, FILL_ONCE) > 0)
		STAT_ADD(ctx, fault_zero, 1);
	/* Our reference goes before the thread resumes: it may release its
	 * own hold and expect the word back where it left it. */
	if (ref)
		atomic_fetch_sub(slot, 1);
	uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
}

/* A hole in a registered range: fill it as the kernel would have. */
static void fault_zero(struct hetmm_ctx *ctx, uintptr_t addr, bool write)
{
	/* A stale fault for a page that is back already: don't claim it
	 * (others would see it BUSY), just let the thread go. */
	uint8_t pf = 0;
	if (vma_page_presence(&ctx->vmaq, addr, 1, &pf) == 0 && (pf & PG_PRESENT)) {
		uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
		return;
	}
	_Atomic uint64_t *slot = vtab_slot(&ctx->shadow, addr_to_vpn(addr),
					   true);
	uint64_t e = 0;
	if (!slot || !atomic_compare_exchange_strong(slot, &e, SHADOW_BUSY)) {
		/* Changed under us; the new owner wakes us, or, with no slot
		 * at all, waking lets the thread retry.  A held page has no
		 * owner to wake us: fill it here. */
		if (slot && !(e & (SHADOW_DEVICE | SHADOW_BUSY)))
			fault_zero_held(ctx, slot, addr, write);
		else if (!slot)
			uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
		return;
	}
	/* A write would take a second fault to break a zero-page mapping,
	 * so give it a private zeroed page at once. */
	long rc = uffd_fill(ctx->uffd.fd, write ? FILL_COPY : FILL_ZERO, addr,
			    (uintptr_t)ctx->zero_src, PAGE_SIZE,
			    FILL_WAKE | FILL_ONCE);
	atomic_store_explicit(slot, 0, memory_order_release);
	if (rc < 0)
		uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
	else
		STAT_ADD(ctx, fault_zero, 1);
}

/* Does an event read after the current message of the batch change the
 * mapping of addr (for mremap, its old place or its new one)? */
static bool event_pending_at(const struct hetmm_ctx *ctx, uintptr_t addr)
{
	for (size_t k = 0; k < ctx->npending; k++) {
		const struct uffd_msg *m = &ctx->pending[k];
		uintptr_t lo, hi;
		switch (m->event) {
		case UFFD_EVENT_UNMAP:
		case UFFD_EVENT_REMOVE:
			lo = m->arg.remove.start;
			hi = m->arg.remove.end;
			break;
		case UFFD_EVENT_REMAP:
			if (addr - m->arg.remap.to < m->arg.remap.len)
				return true;
			lo = m->arg.remap.from;
			hi = lo + m->arg.remap.len;
			break;
		default:
			continue;
		}
		if (addr >= lo && addr < hi)
			return true;
	}
	return false;
}

static void handle_pagefault(struct hetmm_ctx *ctx, const struct uffd_msg *m)
{
	uintptr_t addr = (uintptr_t)m->arg.pagefault.address & PAGE_MASK;
	uint64_t flags = m->arg.pagefault.flags;

	if (is_sync_page(ctx, addr)) {
		/* handler_sync(): everything before it is handled now.  Not
		 * a fault of the process's: not counted. */
		if (uffd_writeprotect(ctx->uffd.fd, addr, PAGE_SIZE, FILL_ONCE))
			uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
		return;
	}
	if (event_pending_at(ctx, addr)) {
		/* See fault_handler_main(): fault again, after the event. */
		uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
		return;
	}
	STAT_ADD(ctx, faults, 1);
	if (addr == (uintptr_t)ctx->doorbell) {
		if (uffd_fill(ctx->uffd.fd, FILL_ZERO, addr, 0, PAGE_SIZE,
			      FILL_WAKE | FILL_ONCE) > 0)
			ctx->doorbell_served = true;
		else
			uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
		return;
	}
	uint64_t e = vtab_get(&ctx->shadow, addr_to_vpn(addr));
	if (flags & UFFD_PAGEFAULT_FLAG_WP) {
		/* BUSY: a migration holds it, lifts the protection and
		 * wakes us.  Otherwise the fault is stale: every migration
		 * lifts its protection before it lets go of the page, so
		 * the thread only needs to retry.  Lifting it here could
		 * undo the protection of a migration that began since. */
		if (!(e & SHADOW_BUSY))
			uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
		return;
	}
	if (e & SHADOW_BUSY) {
		/* A migrating thread reading a page the process zapped
		 * under it: the kernel would have read zeroes. */
		if (!(e & SHADOW_DEVICE) &&
		    is_migrator(ctx, (pid_t)m->arg.pagefault.feat.ptid))
			if (uffd_fill(ctx->uffd.fd, FILL_ZERO, addr, 0,
				      PAGE_SIZE, FILL_WAKE | FILL_ONCE) < 0)
				uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
		return;
	}
	if ((e & SHADOW_DEVICE) && coherent_fault(ctx, e, addr)) {
		/* CPU-addressable device memory: filled in place. */
	} else if (e & SHADOW_DEVICE) {
		fault_back(ctx, addr, e);
	} else if (addr >= ctx->last_fill_start && addr < ctx->last_fill_end) {
		/* Queued while we brought its page back with a window: it
		 * is there now.  Forget the window so that a real hole
		 * there (zapped since) gets filled on the next try. */
		ctx->last_fill_end = 0;
		uffd_wake(ctx->uffd.fd, addr, PAGE_SIZE);
	} else {
		fault_zero(ctx, addr, flags & UFFD_PAGEFAULT_FLAG_WRITE);
	}
}

/* The process changed a registered range: see lifecycle.c. */
static void handle_msg(struct hetmm_ctx *ctx, const struct uffd_msg *m)
{
	switch (m->event) {
	case UFFD_EVENT_PAGEFAULT:
		handle_pagefault(ctx, m);
		break;
	case UFFD_EVENT_UNMAP:
		lifecycle_unmap(ctx, m->arg.remove.start, m->arg.remove.end);
		break;
	case UFFD_EVENT_REMOVE:
		lifecycle_discard(ctx, m->arg.remove.start, m->arg.remove.end);
		break;
	case UFFD_EVENT_REMAP:
		lifecycle_remap(ctx, m->arg.remap.from, m->arg.remap.to,
				m->arg.remap.len);
		break;
	default:
		break;
	}
}

/*
 * How many messages to ask the kernel for.  A thread has one message at
 * most waiting for us (a fault or an event it waits on), so while they
 * come one at a time from one thread, nothing else can be queued behind
 * the one it raised, and a read for more costs that fault the kernel's
 * second look at empty queues.  A message from another thread, or a
 * batch, means several threads fault at once: read batches again.
 */
static size_t read_want(const struct uffd_msg *msgs, size_t n,
			uint32_t *last_tid)
{
	uint32_t tid = msgs[0].event == UFFD_EVENT_PAGEFAULT ?
		       msgs[0].arg.pagefault.feat.ptid : 0;
	bool alone = n == 1 && tid && tid == *last_tid;
	*last_tid = n == 1 ? tid : 0;
	return alone ? 1 : FAULT_READ_BATCH;
}

static void *fault_handler_main(void *arg)
{
	struct hetmm_ctx *ctx = arg;
	struct uffd_msg msgs[FAULT_READ_BATCH];
	size_t want = FAULT_READ_BATCH;
	uint32_t last_tid = 0;

	/* Leave only once the doorbell fault is served: leaving on the
	 * stop flag alone could strand the thread that rang it. */
	while (!ctx->doorbell_served) {
		ssize_t got = read(ctx->uffd.fd, msgs, want * sizeof(msgs[0]));
		if (got < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			break;
		}
		size_t n = (size_t)got / sizeof(msgs[0]);
		if (!n)
			continue;
		/*
		 * Reading an event (munmap, madvise, mremap) lets the thread
		 * that raised it go on: its range may be zapped, unmapped or
		 * moved before the faults read with it in this batch are
		 * handled.  A page brought back or filled for one of them
		 * then could outlive the zap with stale bytes, be dropped for
		 * a mapping that only moved, or take the place of the device
		 * page about to follow an mremap.  So a fault in the range of
		 * an event later in the batch is not handled: its thread is
		 * woken to fault again, after the event.  And until the
		 * batch's last event a fault brings back its own page only,
		 * since fault-around could reach into such a range.
		 */
		size_t events = 0;
		for (size_t i = 0; i < n; i++)
			if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
				events = i + 1;
		for (size_t i = 0; i < n; i++) {
			ctx->pending = &msgs[i + 1];
			ctx->npending = i < events ? events - i - 1 : 0;
			handle_msg(ctx, &msgs[i]);
		}
		ctx->npending = 0;
		want = read_want(msgs, n, &last_tid);
	}
	return NULL;
}

int fault_handler_start(struct hetmm_ctx *ctx)
{
	ctx->doorbell = mmap(NULL, PAGE_SIZE, PROT_READ,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ctx->doorbell == MAP_FAILED) {
		ctx->doorbell = NULL;
		return -ENOMEM;
	}
	int rc = uffd_register(ctx->uffd.fd, (uintptr_t)ctx->doorbell,
			       PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING, NULL);
	if (rc)
		return rc;
	rc = -pthread_create(&ctx->handler, NULL, fault_handler_main, ctx);
	if (rc)
		return rc;
	ctx->handler_running = true;
	return 0;
}

/*
 * The handler sleeps in a blocking read(); the way to reach it is a fault.
 * Touch the doorbell page: the handler resolves that last fault and
 * leaves.  The doorbell stays mapped: unmapping a registered page now
 * would wait for a reader that is gone, so the caller closes the
 * userfaultfd first (see ctx_free).
 */
void fault_handler_stop(struct hetmm_ctx *ctx)
{
	if (ctx->handler_running) {
		(void)*(volatile const char *)ctx->doorbell;
		pthread_join(ctx->handler, NULL);
		ctx->handler_running = false;
	}
}
