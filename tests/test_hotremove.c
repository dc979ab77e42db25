/* SPDX-License-Identifier: MIT */
/*
 * test_hotremove: removing a pagemap under load.
 *
 * DEVICE_PRIVATE: reader threads fault the device's pages back, a writer
 * rewrites its own pages, pinners pin (fast and slow) pages of the device
 * while hetmm_pagemap_remove() evacuates it: every byte is where it should
 * be, nothing stays held, no frame number resolves afterwards.
 *
 * FS_DAX and GENERIC pages stay put and may be pinned: a pin held makes
 * removal wait, then fail with -EBUSY and leave the pagemap usable; pins
 * taken and released meanwhile only delay it.
 */
#include <pthread.h>

#include "tdrv.h"

#define MIN(a, b) ((a) < (b) ? (a) : (b))

#define NPAGES 1024
#define WPAGES 128
#define SEED 5

static struct hetmm_ctx *ctx;
static char *buf;       /* readers and pinners: fixed pattern */
static char *wbuf;      /* the writer's own pages */
static int stop;

static int stopped(void)
{
	return __atomic_load_n(&stop, __ATOMIC_ACQUIRE);
}

static void *reader(void *arg)
{
	size_t off = (size_t)(uintptr_t)arg;

	do {
		for (size_t i = 0; i < NPAGES; i += 64) {
			size_t p = (i + off) % NPAGES;
			size_t n = MIN((size_t)64, NPAGES - p);
			t_verify_from(buf + p * PS, n, SEED, p);
		}
	} while (!stopped());
	return NULL;
}

static void *writer(void *arg)
{
	uint64_t gen = 0;

	(void)arg;
	do {
		gen++;
		for (size_t i = 0; i < WPAGES; i++)
			((volatile uint64_t *)(wbuf + i * PS))[i % 512] = gen;
		for (size_t i = 0; i < WPAGES; i++)
			CHECK_EQ(((volatile uint64_t *)(wbuf + i * PS))[i % 512],
				 gen);
	} while (!stopped());
	return (void *)(uintptr_t)gen;
}

static void *pinner(void *arg)
{
	unsigned s = (unsigned)(uintptr_t)arg;
	void *pages[16];

	do {
		s = s * 1103515245u + 12345u;
		size_t a = (s >> 8) % (NPAGES - 16);
		long got = (s & 1) ?
			hetmm_pin_user_pages_fast(ctx, buf + a * PS, 16, 0, pages) :
			hetmm_pin_user_pages(ctx, buf + a * PS, 16, 0, pages);
		CHECK_EQ(got, 16);
		if (got <= 0)
			continue;
		for (long i = 0; i < got; i++) {
			hetmm_pfn_t pfn;
			CHECK_EQ(hetmm_addr_to_pfn(ctx, pages[i], &pfn), -ENOENT);
		}
		t_verify_from(buf + a * PS, (size_t)got, SEED, a);
		CHECK_OK(hetmm_unpin_user_pages(ctx, pages, (size_t)got));
	} while (!stopped());
	return NULL;
}

static void test_private(enum td_mode mode)
{
	struct td d;
	pthread_t r[2], w, p[2];
	struct hetmm_pagemap_info info;
	struct hetmm_page *pg;

	buf = t_map(NPAGES);
	wbuf = t_map(WPAGES);
	t_fill(buf, NPAGES, SEED);
	memset(wbuf, 0, WPAGES * PS);
	REQUIRE_OK(td_add(ctx, &d, NPAGES + WPAGES, mode,
			  HETMM_MEMORY_DEVICE_PRIVATE, 0));
	REQUIRE_OK(hetmm_pagemap_get_info(d.pg, &info));
	REQUIRE_OK(hetmm_migrate_to_device(d.pg, buf, NPAGES * PS, NULL));
	REQUIRE_OK(hetmm_migrate_to_device(d.pg, wbuf, WPAGES * PS, NULL));

	__atomic_store_n(&stop, 0, __ATOMIC_RELEASE);
	for (uintptr_t i = 0; i < 2; i++) {
		REQUIRE(pthread_create(&r[i], NULL, reader,
				       (void *)(i * NPAGES / 2)) == 0);
		REQUIRE(pthread_create(&p[i], NULL, pinner,
				       (void *)(i + 3)) == 0);
	}
	REQUIRE(pthread_create(&w, NULL, writer, NULL) == 0);
	CHECK_OK(hetmm_pagemap_remove(d.pg));
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < 2; i++) {
		pthread_join(r[i], NULL);
		pthread_join(p[i], NULL);
	}
	void *gen;
	pthread_join(w, &gen);

	CHECK_EQ(hetmm_pfn_to_page(info.first_pfn, &pg), -ENXIO);
	CHECK_EQ(t_stats(ctx).device_resident, 0);
	t_verify(buf, NPAGES, SEED);
	for (size_t i = 0; i < NPAGES; i++) {
		uint64_t refs, pins;
		CHECK_OK(hetmm_user_page_holds(ctx, buf + i * PS, &refs, &pins));
		CHECK_EQ(refs + pins, 0);
	}
	for (size_t i = 0; i < WPAGES; i++)
		CHECK_EQ(((uint64_t *)(wbuf + i * PS))[i % 512],
			 (uint64_t)(uintptr_t)gen);
	td_free(&d);
	t_unmap(buf, NPAGES);
	t_unmap(wbuf, WPAGES);
}

/* Fixed memory: churning pinners, then a pin held across the removal. */
struct churn {
	unsigned char *mem;
	size_t n;
	unsigned seed;
	/* When the pin or get in hand was asked for (ms, t_now; 0: none
	 * in hand), and when the last one asked for before the removal
	 * began was let go. */
	_Atomic uint64_t asked_ms, held_until_ms;
};

/* When the removal began (ms, t_now; 0: not yet). */
static _Atomic uint64_t removal_ms;

static uint64_t now_ms(void)
{
	return (uint64_t)(t_now() * 1000) + 1;
}

static void *churner(void *arg)
{
	struct churn *c = arg;
	void *pages[4];
	unsigned s = c->seed;

	do {
		s = s * 1103515245u + 12345u;
		size_t a = (s >> 8) % (c->n - 4);
		uint64_t asked = now_ms();
		atomic_store(&c->asked_ms, asked);
		long got = (s & 1) ?
			hetmm_pin_user_pages_fast(ctx, c->mem + a * PS, 4, 0, pages) :
			hetmm_get_user_pages(ctx, c->mem + a * PS, 4, 0, pages);
		/* Short only while the pagemap goes away, never empty. */
		CHECK(got >= 1 && got <= 4);
		if (got <= 0)
			continue;
		t_verify_from(c->mem + a * PS, (size_t)got, SEED + 1, a);
		CHECK_OK((s & 1) ? hetmm_unpin_user_pages(ctx, pages, (size_t)got)
				 : hetmm_put_user_pages(ctx, pages, (size_t)got));
		uint64_t began = atomic_load(&removal_ms);
		if (began && asked <= began)
			atomic_store(&c->held_until_ms, now_ms());
		atomic_store(&c->asked_ms, 0);
	} while (!stopped());
	return NULL;
}

/*
 * Remove d's pagemap while the churners c[0, 2) pin and let go.  A short
 * pin is gone within HETMM_REMOVE_PIN_WAIT_MS unless the thread holding
 * it does not run meanwhile: under TSan at load 13.8 a churner went 500
 * ms without the CPU, and the removal rightly said -EBUSY (1 full `make
 * tsan` run in 5).  A caller tries again then, and so does this, then
 * only: the removal waited its whole time, and a churner held through
 * it a pin asked for before it began.
 */
static int remove_churned(struct td *d, struct churn *c)
{
	for (int tries = 0;; tries++) {
		uint64_t t0 = now_ms();
		atomic_store(&removal_ms, t0);
		int rc = hetmm_pagemap_remove(d->pg);
		uint64_t t1 = now_ms();
		bool starved = false;
		for (int i = 0; i < 2; i++) {
			uint64_t a = atomic_load(&c[i].asked_ms);
			starved |= (a && a <= t0) ||
				   atomic_load(&c[i].held_until_ms) >= t1;
		}
		atomic_store(&removal_ms, 0);
		if (rc != -EBUSY || !starved || tries == 5 ||
		    t1 - t0 < HETMM_REMOVE_PIN_WAIT_MS)
			return rc;
		fprintf(stderr, "removal: a churner held its pin through the "
			"wait (%" PRIu64 " ms): again\n", t1 - t0);
	}
}

static void test_fixed(enum hetmm_memory_type type)
{
	struct td d;
	void *held[1];
	const size_t n = 64;
	struct churn c[2];
	pthread_t th[2];

	REQUIRE_OK(td_add(ctx, &d, n, TD_FIXED, type, 0));
	t_fill(d.mem, n, SEED + 1);

	/* A held pin: -EBUSY after the wait, pagemap intact. */
	CHECK_EQ(hetmm_pin_user_pages(ctx, d.mem + 7 * PS, 1, 0, held), 1);
	CHECK_EQ(hetmm_pagemap_remove(d.pg), -EBUSY);
	struct hetmm_pagemap_info info;
	CHECK_OK(hetmm_pagemap_get_info(d.pg, &info));
	uint64_t refs = 9, pins = 9;
	CHECK_OK(hetmm_user_page_holds(ctx, d.mem + 7 * PS, &refs, &pins));
	CHECK_EQ(pins, 1);
	void *more[2];
	CHECK_EQ(hetmm_pin_user_pages_fast(ctx, d.mem, 2, 0, more), 2);
	CHECK_OK(hetmm_unpin_user_pages(ctx, more, 2));
	CHECK_OK(hetmm_unpin_user_pages(ctx, held, 1));

	/* Short pins and gets churning: removal waits them out. */
	__atomic_store_n(&stop, 0, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < 2; i++) {
		c[i] = (struct churn){ d.mem, n, 17 + i, 0, 0 };
		REQUIRE(pthread_create(&th[i], NULL, churner, &c[i]) == 0);
	}
	struct timespec nap = { 0, 2000000 };
	nanosleep(&nap, NULL);   /* let them start: not a timing assert */
	CHECK_OK(remove_churned(&d, c));
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	CHECK_EQ(hetmm_pfn_to_page(info.first_pfn, (struct hetmm_page **)more),
		 -ENXIO);
	for (size_t i = 0; i < n; i++) {
		CHECK_OK(hetmm_user_page_holds(ctx, d.mem + i * PS, &refs,
					       &pins));
		CHECK_EQ(refs + pins, 0);
	}
	t_verify(d.mem, n, SEED + 1);
	td_free(&d);
}

#ifdef HETMM_TEST_HOOKS
#include <stdatomic.h>
#include <stdbool.h>

#include "testhook.h"

/*
 * Removal right after a munmap of device pages.  munmap returns once the
 * handler has read its UNMAP, not handled it: the hook holds the
 * handler there a while, as a loaded machine would.  The pages are the
 * process's no more: the removal must not bring them back (here the
 * device is dead by then, as a remote server may be, and every copy back
 * fails: the removal would return -EIO for pages nobody is owed), and
 * the UNMAP frees them, as discarded pages.
 */
static _Atomic uintptr_t slow_unmap_at;
static atomic_bool dead;
static atomic_uint copies_back;

static void slow_unmap(enum test_hook_point point, uintptr_t addr,
		       size_t len)
{
	(void)len;
	if (point == TEST_HOOK_EVENT_UNMAP &&
	    addr == atomic_load(&slow_unmap_at))
		usleep(200000);
}

static int dying_copy_from(struct hetmm_pagemap *pg, void *dst,
			   uint64_t index, size_t nr)
{
	atomic_fetch_add(&copies_back, 1);
	return atomic_load(&dead) ? -EIO : td_copy_from(pg, dst, index, nr);
}

static const struct hetmm_pagemap_ops dying_ops = {
	.copy_to_device = td_copy_to,
	.copy_from_device = dying_copy_from,
};

static void test_remove_after_munmap(void)
{
	struct td d;
	struct hetmm_pagemap_info info;
	struct hetmm_page *pg;
	REQUIRE_OK(td_add_ops(ctx, &d, 64, TD_COPY,
			      HETMM_MEMORY_DEVICE_PRIVATE, 0, &dying_ops));
	REQUIRE_OK(hetmm_pagemap_get_info(d.pg, &info));
	char *p = t_map(64);
	t_fill(p, 64, SEED);
	REQUIRE_OK(hetmm_migrate_to_device(d.pg, p, 64 * PS, NULL));
	struct hetmm_stats before = t_stats(ctx);
	atomic_store(&slow_unmap_at, (uintptr_t)p);
	__atomic_store_n(&test_hook, slow_unmap, __ATOMIC_RELEASE);
	t_unmap(p, 64);
	atomic_store(&dead, true);
	atomic_store(&copies_back, 0);
	CHECK_OK(hetmm_pagemap_remove(d.pg));
	__atomic_store_n(&test_hook, NULL, __ATOMIC_RELEASE);
	CHECK_EQ(atomic_load(&copies_back), 0);
	CHECK_EQ(hetmm_pfn_to_page(info.first_pfn, &pg), -ENXIO);
	struct hetmm_stats st = t_stats(ctx);
	CHECK_EQ(st.device_resident, before.device_resident - 64);
	CHECK_EQ(st.to_system_pages, before.to_system_pages);
	CHECK_EQ(st.discarded_pages, before.discarded_pages + 64);
	td_free(&d);
}

/*
 * Removal while the handler looks at one of the pagemap's frames: a
 * thread touches a page the removal holds claimed on its way back, and
 * the handler, serving that fault, looks the claim's frame up (no claim
 * of its own keeps the pagemap alive) and reads its metadata.  The hooks
 * stop the removal once it has claimed the page until the handler is
 * there, and hold the handler between the look-up and the read (500 ms
 * at most).  The removal must not free the pagemap meanwhile: it has to
 * wait for the handler to be done with that fault, as the kernel's
 * memunmap_pages waits for its references.  (Freed, the read is a use
 * after free: ASan's report, TSan's race.)
 */
static pthread_t remover;
static _Atomic(char *) touched;
static atomic_bool touch_now, handler_there, removed, handler_done;
static atomic_bool freed_under_handler;

static void claimed_frame(enum test_hook_point point, uintptr_t addr,
			  size_t len)
{
	uintptr_t at = (uintptr_t)atomic_load(&touched);
	if (point == TEST_HOOK_BACK_CLAIMED && at >= addr &&
	    at < addr + len && pthread_equal(pthread_self(), remover) &&
	    !atomic_exchange(&touch_now, true)) {
		for (double end = t_now() + 10.0;
		     !atomic_load(&handler_there) && t_now() < end;)
			usleep(1000);
	} else if (point == TEST_HOOK_FAULT_CLAIMED_FRAME && addr == at &&
		   !atomic_exchange(&handler_there, true)) {
		for (double end = t_now() + 0.5;
		     !atomic_load(&removed) && t_now() < end;)
			usleep(1000);
		atomic_store(&freed_under_handler, atomic_load(&removed));
		atomic_store(&handler_done, true);
	}
}

static void *toucher(void *arg)
{
	(void)arg;
	while (!atomic_load(&touch_now))
		usleep(100);
	return (void *)(uintptr_t)t_verify(atomic_load(&touched), 1, SEED);
}

static void test_remove_under_handler(void)
{
	struct td d;
	pthread_t th;
	void *bad;
	REQUIRE_OK(td_add(ctx, &d, 64, TD_COPY, HETMM_MEMORY_DEVICE_PRIVATE,
			  0));
	char *p = t_map(64);
	t_fill(p, 64, SEED);
	REQUIRE_OK(hetmm_migrate_to_device(d.pg, p, 64 * PS, NULL));
	remover = pthread_self();
	atomic_store(&touched, p);
	REQUIRE(pthread_create(&th, NULL, toucher, NULL) == 0);
	__atomic_store_n(&test_hook, claimed_frame, __ATOMIC_RELEASE);
	CHECK_OK(hetmm_pagemap_remove(d.pg));
	atomic_store(&removed, true);
	pthread_join(th, &bad);
	for (double end = t_now() + 10.0;
	     !atomic_load(&handler_done) && t_now() < end;)
		usleep(1000);
	__atomic_store_n(&test_hook, NULL, __ATOMIC_RELEASE);
	CHECK(atomic_load(&touch_now));
	CHECK(atomic_load(&handler_done));
	CHECK(!atomic_load(&freed_under_handler));
	CHECK_EQ((uintptr_t)bad, 0);
	CHECK_EQ(t_verify(p, 64, SEED), 0);
	t_unmap(p, 64);
	td_free(&d);
}

/*
 * Removal while another thread looks at the pagemap with nothing of it
 * held.  The hook holds the looker between finding the pagemap and
 * reading it (500 ms at most); meanwhile the removal brings every page
 * home and takes the section out.  It must not free the pagemap until
 * the look is over: it returns after the looker read it.  (Freed, the
 * read is a use after free: ASan's report, TSan's race.)  The lookers:
 *
 *   - a range fault reports a PMD block of device pages on consecutive
 *     frames, read unclaimed, and asks the frames' metadata whether they
 *     are one huge page (range.c: device_block_huge); once a report,
 *     once a fault asked for (the pages are the caller's: they stay);
 *   - a driver tells hetmm_page_written() of a page of the pagemap, by
 *     the metadata address it got before.
 */
struct looker {
	pthread_t th;
	atomic_bool go, held, over, removed, freed_under;
	void *(*look)(struct looker *);
	struct hetmm_range r;             /* range_look */
	struct hetmm_page *page;          /* written_look */
	int rc;
};
static struct looker *the_looker;

static void held_look(enum test_hook_point point, uintptr_t addr, size_t len)
{
	struct looker *l = __atomic_load_n(&the_looker, __ATOMIC_ACQUIRE);
	(void)addr;
	(void)len;
	if (point != TEST_HOOK_PAGEMAP_LOOK || !l ||
	    !pthread_equal(pthread_self(), l->th) ||
	    atomic_exchange(&l->held, true))
		return;
	for (double end = t_now() + 0.5;
	     !atomic_load(&l->removed) && t_now() < end;)
		usleep(1000);
	atomic_store(&l->freed_under, atomic_load(&l->removed));
	atomic_store(&l->over, true);
}

static void *run_looker(void *arg)
{
	struct looker *l = arg;
	while (!atomic_load(&l->go))
		usleep(100);
	return l->look(l);
}

/* Start l's look, remove d's pagemap under it, check. */
static void remove_under_look(struct td *d, struct looker *l)
{
	REQUIRE(pthread_create(&l->th, NULL, run_looker, l) == 0);
	__atomic_store_n(&the_looker, l, __ATOMIC_RELEASE);
	__atomic_store_n(&test_hook, held_look, __ATOMIC_RELEASE);
	atomic_store(&l->go, true);
	for (double end = t_now() + 10.0;
	     !atomic_load(&l->held) && t_now() < end;)
		usleep(1000);
	CHECK(atomic_load(&l->held));
	CHECK_OK(hetmm_pagemap_remove(d->pg));
	/* Returned only once the look was over. */
	CHECK(atomic_load(&l->over));
	atomic_store(&l->removed, true);
	pthread_join(l->th, NULL);
	__atomic_store_n(&test_hook, NULL, __ATOMIC_RELEASE);
	__atomic_store_n(&the_looker, NULL, __ATOMIC_RELEASE);
	CHECK(!atomic_load(&l->freed_under));
}

static void no_invalidate(struct hetmm_notifier *n, uintptr_t start,
			  uintptr_t end, enum hetmm_event why, void *arg)
{
	(void)n;
	(void)start;
	(void)end;
	(void)why;
	(void)arg;
}

static const struct hetmm_notifier_ops quiet_ops = {
	.invalidate = no_invalidate,
};

static void *range_look(struct looker *l)
{
	l->rc = hetmm_notifier_read_begin(l->r.notifier, &l->r.notifier_seq);
	if (!l->rc)
		l->rc = hetmm_range_fault(&l->r);
	return NULL;
}

static void test_remove_under_range_fault(uint64_t req)
{
	const size_t pmd = hetmm_pmd_size() / PS;
	struct td d;
	struct hetmm_notifier *n;
	uint64_t *pfns = calloc(pmd, sizeof(*pfns));
	REQUIRE(pfns != NULL);
	REQUIRE_OK(td_add(ctx, &d, pmd, TD_COPY, HETMM_MEMORY_DEVICE_PRIVATE,
			  0));
	/* A PMD-aligned block, on frames 0 to pmd - 1 of a fresh device. */
	char *m = t_map(2 * pmd);
	char *p = (char *)(((uintptr_t)m + pmd * PS - 1) &
			   ~(uintptr_t)(pmd * PS - 1));
	t_fill(p, pmd, SEED);
	REQUIRE_OK(hetmm_migrate_to_device(d.pg, p, pmd * PS, NULL));
	REQUIRE_OK(hetmm_notifier_insert(ctx, p, pmd * PS, &quiet_ops, NULL,
					 &n));
	struct looker l = { .look = range_look,
			    .r = { .notifier = n, .start = p, .npages = pmd,
				   .pfns = pfns, .default_flags = req,
				   .dev_private_owner = &d } };
	remove_under_look(&d, &l);
	/* The removal moved the pages meanwhile: the fault may be told to
	 * look again. */
	CHECK(l.rc == 0 || l.rc == -EBUSY);
	CHECK_EQ(t_verify(p, pmd, SEED), 0);
	CHECK_OK(hetmm_notifier_remove(n));
	t_unmap(m, 2 * pmd);
	td_free(&d);
	free(pfns);
}

static void *written_look(struct looker *l)
{
	l->rc = hetmm_page_written(l->page);
	return NULL;
}

static void test_remove_under_page_written(void)
{
	struct td d;
	struct hetmm_pagemap_info info;
	REQUIRE_OK(td_add(ctx, &d, 64, TD_COPY, HETMM_MEMORY_DEVICE_PRIVATE,
			  0));
	char *p = t_map(64);
	t_fill(p, 64, SEED);
	REQUIRE_OK(hetmm_migrate_to_device(d.pg, p, 64 * PS, NULL));
	REQUIRE_OK(hetmm_pagemap_get_info(d.pg, &info));
	struct looker l = { .look = written_look };
	REQUIRE_OK(hetmm_pfn_to_page(info.first_pfn, &l.page));
	remove_under_look(&d, &l);
	/* Found live, before the removal. */
	CHECK_OK(l.rc);
	CHECK_EQ(hetmm_page_written(l.page), -ENXIO);
	CHECK_EQ(t_verify(p, 64, SEED), 0);
	t_unmap(p, 64);
	td_free(&d);
}
#endif

int main(void)
{
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	test_private(TD_REMAP);
	test_private(TD_COPY);
	test_fixed(HETMM_MEMORY_FS_DAX);
	test_fixed(HETMM_MEMORY_GENERIC);
#ifdef HETMM_TEST_HOOKS
	test_remove_after_munmap();
	test_remove_under_handler();
	test_remove_under_range_fault(0);
	test_remove_under_range_fault(HETMM_RANGE_REQ_FAULT);
	test_remove_under_page_written();
#endif
	CHECK_OK(hetmm_ctx_destroy(ctx));
	return t_done();
}
