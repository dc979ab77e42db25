/* SPDX-License-Identifier: MIT */
/*
 * test_notifier: interval notifiers (mmu_interval_notifier) written by
 * the test, as a device driver would, and the emulated mirrors that use
 * them.
 *
 *   protocol     read_begin / read_retry: a lookup is good until an
 *                invalidation of the range begins; migration to the device
 *                and back, munmap (UNMAP), MADV_DONTNEED (DISCARD), mremap
 *                (REMAP, old and new range) and fork (FORK) each make
 *                read_retry say so
 *   args         the callback gets [start, end) clamped to its range and
 *                the reason; changes outside the range never call it
 *   remove       no callback after remove; the notifier is gone
 *   bad input    -EINVAL for NULL, empty, unaligned or wrapping ranges,
 *                missing ops, a removed notifier
 *   release      every notifier left gets RELEASE at context destroy
 *   mirror       mirror stats count invalidations by reason; a device
 *                read after munmap gives -EFAULT and after DONTNEED reads
 *                zeroes, never the stale bytes its page table had
 */
#include <pthread.h>

#include "t.h"

static struct hetmm_ctx *ctx;
static struct hetmm_emu *emu;
static struct hetmm_pagemap *pg;
static struct hetmm_mirror *mir;

#define NDEV 256
#define MAXCALLS 64

/* What a notifier saw: every call, in order. */
struct seen {
	unsigned n;
	struct {
		uintptr_t start, end;
		enum hetmm_event why;
	} call[MAXCALLS];
	unsigned by[HETMM_EVENT_COUNT];
};

/*
 * Callbacks run on the handler thread, and what orders them before the
 * test's checks is the kernel (a fault resolved, a wake): invisible to
 * ThreadSanitizer, so the record is kept under a lock as a driver's page
 * table would be, and read through look().
 */
static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;

static void record(struct hetmm_notifier *n, uintptr_t start, uintptr_t end,
		   enum hetmm_event why, void *arg)
{
	struct seen *s = arg;
	unsigned i;

	(void)n;
	pthread_mutex_lock(&seen_lock);
	i = s->n++;
	if (i < MAXCALLS) {
		s->call[i].start = start;
		s->call[i].end = end;
		s->call[i].why = why;
	}
	if (why > 0 && why < HETMM_EVENT_COUNT)
		s->by[why]++;
	pthread_mutex_unlock(&seen_lock);
}

static struct seen look(const struct seen *s)
{
	struct seen c;

	pthread_mutex_lock(&seen_lock);
	c = *s;
	pthread_mutex_unlock(&seen_lock);
	return c;
}

static const struct hetmm_notifier_ops rec_ops = { record };

static void seen_reset(struct seen *s)
{
	pthread_mutex_lock(&seen_lock);
	memset(s, 0, sizeof(*s));
	pthread_mutex_unlock(&seen_lock);
}

/* Did s see a call for why, with exactly [start, end)? */
static int saw(const struct seen *sp, enum hetmm_event why,
	       const void *start, const void *end)
{
	struct seen c = look(sp), *s = &c;

	for (unsigned i = 0; i < s->n && i < MAXCALLS; i++)
		if (s->call[i].why == why &&
		    s->call[i].start == (uintptr_t)start &&
		    s->call[i].end == (uintptr_t)end)
			return 1;
	return 0;
}

/* Every call s saw lies within [lo, hi). */
static int all_within(const struct seen *sp, const void *lo, const void *hi)
{
	struct seen c = look(sp), *s = &c;

	for (unsigned i = 0; i < s->n && i < MAXCALLS; i++)
		if (s->call[i].start < (uintptr_t)lo ||
		    s->call[i].end > (uintptr_t)hi ||
		    s->call[i].start >= s->call[i].end)
			return 0;
	return 1;
}

/*
 * munmap, madvise and mremap return once the handler has read their
 * event, not handled it.  A migration to the device first waits until
 * every event handed out before it is handled (handler_sync), so one of
 * a page far from everything tested is a barrier.
 */
static char *barrier_page;

static void sync_events(void)
{
	struct hetmm_migrate_report rep;

	memset(&rep, 0, sizeof(rep));
	CHECK_OK(hetmm_migrate_to_device(pg, barrier_page, PS, &rep));
	CHECK_OK(hetmm_migrate_to_system(ctx, barrier_page, PS, &rep));
}

/* read_retry says 0 now, after read_begin. */
static uint64_t begin(struct hetmm_notifier *n)
{
	uint64_t seq = 0;

	CHECK_OK(hetmm_notifier_read_begin(n, &seq));
	CHECK_EQ(hetmm_notifier_read_retry(n, seq), 0);
	return seq;
}

/* ------------------------------------------------------------------------
 * protocol and args: the notifier covers the middle of a larger mapping
 */

static void migrate_events(void)
{
	enum { N = 32, LO = 8, HI = 24 };
	char *p = t_map(N);
	struct seen s;
	struct hetmm_notifier *n;
	struct hetmm_migrate_report rep;
	uint64_t seq;

	t_fill(p, N, 1);
	seen_reset(&s);
	REQUIRE_OK(hetmm_notifier_insert(ctx, p + LO * PS, (HI - LO) * PS,
					 &rec_ops, &s, &n));

	/* Nothing happens: no call, seq still good. */
	seq = begin(n);
	CHECK_EQ(t_verify(p, N, 1), 0);
	CHECK_EQ(hetmm_notifier_read_retry(n, seq), 0);
	CHECK_EQ(look(&s).n, 0);

	/* Outside the range: not called, seq still good. */
	memset(&rep, 0, sizeof(rep));
	CHECK_OK(hetmm_migrate_to_device(pg, p, LO * PS, &rep));
	CHECK_OK(hetmm_migrate_to_system(ctx, p, LO * PS, &rep));
	CHECK_OK(hetmm_migrate_to_device(pg, p + HI * PS, (N - HI) * PS,
					 &rep));
	CHECK_EQ(look(&s).n, 0);
	CHECK_EQ(hetmm_notifier_read_retry(n, seq), 0);

	/* Over the whole mapping: told, clamped to our range, as MIGRATE. */
	CHECK_OK(hetmm_migrate_to_device(pg, p, N * PS, &rep));
	CHECK(look(&s).n >= 1);
	CHECK_EQ(look(&s).by[HETMM_EVENT_MIGRATE], look(&s).n);
	CHECK(all_within(&s, p + LO * PS, p + HI * PS));
	CHECK_EQ(hetmm_notifier_read_retry(n, seq), 1);

	/* And back, by an explicit migration. */
	seq = begin(n);
	seen_reset(&s);
	CHECK_OK(hetmm_migrate_to_system(ctx, p + 4 * PS, 8 * PS, &rep));
	CHECK_EQ(hetmm_notifier_read_retry(n, seq), 1);
	CHECK(look(&s).n >= 1 && look(&s).by[HETMM_EVENT_MIGRATE] == look(&s).n);
	CHECK(all_within(&s, p + LO * PS, p + 12 * PS));

	/* And back by a CPU fault. */
	seq = begin(n);
	seen_reset(&s);
	CHECK_EQ(t_verify_from(p + 16 * PS, 1, 1, 16), 0);
	CHECK_EQ(hetmm_notifier_read_retry(n, seq), 1);
	CHECK(look(&s).n >= 1 && look(&s).by[HETMM_EVENT_MIGRATE] == look(&s).n);
	CHECK(all_within(&s, p + LO * PS, p + HI * PS));

	/* A fault outside the range, far from it: not told. */
	CHECK_OK(hetmm_migrate_to_system(ctx, p, N * PS, &rep));
	CHECK_OK(hetmm_migrate_to_device(pg, p + (N - 1) * PS, PS, &rep));
	seq = begin(n);
	seen_reset(&s);
	CHECK_EQ(t_verify_from(p + (N - 1) * PS, 1, 1, N - 1), 0);
	CHECK_EQ(look(&s).n, 0);
	CHECK_EQ(hetmm_notifier_read_retry(n, seq), 0);

	CHECK_OK(hetmm_notifier_remove(n));
	CHECK_EQ(t_verify(p, N, 1), 0);
	t_unmap(p, N);
}

static void unmap_events(void)
{
	enum { N = 32, LO = 8, HI = 24 };
	char *p = t_map(N);
	struct seen s;
	struct hetmm_notifier *n;
	struct hetmm_migrate_report rep;
	uint64_t seq, free0 = t_nr_free(pg);

	t_fill(p, N, 2);
	memset(&rep, 0, sizeof(rep));
	CHECK_OK(hetmm_migrate_to_device(pg, p, N * PS, &rep));
	seen_reset(&s);
	REQUIRE_OK(hetmm_notifier_insert(ctx, p + LO * PS, (HI - LO) * PS,
					 &rec_ops, &s, &n));

	/* munmap of a part outside: no call. */
	seq = begin(n);
	REQUIRE(munmap(p, 4 * PS) == 0);
	sync_events();
	CHECK_EQ(t_settled_free(pg, free0 - N + 4), free0 - N + 4);
	CHECK_EQ(look(&s).n, 0);
	CHECK_EQ(hetmm_notifier_read_retry(n, seq), 0);

	/* munmap straddling the start: UNMAP for [LO, 12). */
	REQUIRE(munmap(p + 4 * PS, 8 * PS) == 0);
	sync_events();
	CHECK_EQ(t_settled_free(pg, free0 - N + 12), free0 - N + 12);
	CHECK(look(&s).n >= 1);
	CHECK_EQ(look(&s).by[HETMM_EVENT_UNMAP], look(&s).n);
	CHECK(all_within(&s, p + LO * PS, p + 12 * PS));
	CHECK(saw(&s, HETMM_EVENT_UNMAP, p + LO * PS, p + 12 * PS));
	CHECK_EQ(hetmm_notifier_read_retry(n, seq), 1);

	/* munmap of the rest: UNMAP clamped to [12, HI). */
	seq = begin(n);
	seen_reset(&s);
	REQUIRE(munmap(p + 12 * PS, (N - 12) * PS) == 0);
	sync_events();
	CHECK_EQ(t_settled_free(pg, free0), free0);
	CHECK(look(&s).n >= 1);
	CHECK_EQ(look(&s).by[HETMM_EVENT_UNMAP], look(&s).n);
	CHECK(all_within(&s, p + 12 * PS, p + HI * PS));
	CHECK(saw(&s, HETMM_EVENT_UNMAP, p + 12 * PS, p + HI * PS));
	CHECK_EQ(hetmm_notifier_read_retry(n, seq), 1);

	CHECK_OK(hetmm_notifier_remove(n));
}

static void discard_events(void)
{
	enum { N = 16 };
	char *p = t_map(N);
	struct seen s;
	struct hetmm_notifier *n;
	struct hetmm_migrate_report rep;
	uint64_t seq;

	t_fill(p, N, 3);
	memset(&rep, 0, sizeof(rep));
	CHECK_OK(hetmm_migrate_to_device(pg, p, N * PS, &rep));
	seen_reset(&s);
	REQUIRE_OK(hetmm_notifier_insert(ctx, p, N * PS, &rec_ops, &s, &n));

	seq = begin(n);
	REQUIRE(madvise(p + 2 * PS, 4 * PS, MADV_DONTNEED) == 0);
	sync_events();
	CHECK(saw(&s, HETMM_EVENT_DISCARD, p + 2 * PS, p + 6 * PS));
	CHECK(look(&s).n >= 1);
	CHECK_EQ(look(&s).by[HETMM_EVENT_DISCARD], look(&s).n);
	CHECK(all_within(&s, p + 2 * PS, p + 6 * PS));
	CHECK_EQ(hetmm_notifier_read_retry(n, seq), 1);
	CHECK_EQ(t_nonzero_pages(p + 2 * PS, 4), 0);
	CHECK_EQ(t_verify(p, 2, 3), 0);
	CHECK_EQ(t_verify_from(p + 6 * PS, N - 6, 3, 6), 0);

	/* MADV_FREE too (system memory now: still told). */
	seq = begin(n);
	seen_reset(&s);
	REQUIRE(madvise(p, 2 * PS, MADV_FREE) == 0);
	sync_events();
	CHECK_EQ(hetmm_notifier_read_retry(n, seq), 1);
	CHECK(saw(&s, HETMM_EVENT_DISCARD, p, p + 2 * PS));

	CHECK_OK(hetmm_notifier_remove(n));
	t_unmap(p, N);
}

static void remap_events(void)
{
	enum { N = 16 };
	char *p = t_map(N), *q = t_map(N), *r;
	struct seen so, sn;
	struct hetmm_notifier *no, *nn;
	struct hetmm_migrate_report rep;
	uint64_t seqo, seqn;
	hetmm_pfn_t pfn;

	t_fill(p, N, 4);
	memset(&rep, 0, sizeof(rep));
	CHECK_OK(hetmm_migrate_to_device(pg, p, N * PS, &rep));
	seen_reset(&so);
	seen_reset(&sn);
	/* One notifier over the old range, one over the new. */
	REQUIRE_OK(hetmm_notifier_insert(ctx, p, N * PS, &rec_ops, &so, &no));
	REQUIRE_OK(hetmm_notifier_insert(ctx, q, N * PS, &rec_ops, &sn, &nn));
	seqo = begin(no);
	seqn = begin(nn);
	r = mremap(p, N * PS, N * PS, MREMAP_MAYMOVE | MREMAP_FIXED, q);
	REQUIRE(r == q);
	sync_events();
	CHECK_EQ(hetmm_notifier_read_retry(no, seqo), 1);
	CHECK_EQ(hetmm_notifier_read_retry(nn, seqn), 1);
	CHECK(saw(&so, HETMM_EVENT_REMAP, p, p + N * PS));
	CHECK(saw(&sn, HETMM_EVENT_REMAP, q, q + N * PS));
	/* The old range may be told UNMAP too: the kernel unmaps it.  So
	 * may the new one: the kernel unmaps what was mapped there first,
	 * and hetmm hears of it when that mapping is registered (p and q,
	 * mapped one after the other, are one mapping to the kernel, and
	 * hetmm registers mappings whole). */
	CHECK_EQ(look(&so).by[HETMM_EVENT_REMAP] + look(&so).by[HETMM_EVENT_UNMAP], look(&so).n);
	CHECK_EQ(look(&sn).by[HETMM_EVENT_REMAP] + look(&sn).by[HETMM_EVENT_UNMAP], look(&sn).n);
	/* Residency went with the bytes. */
	CHECK_EQ(hetmm_addr_to_pfn(ctx, q + (N - 1) * PS, &pfn), 0);
	CHECK_EQ(hetmm_addr_to_pfn(ctx, p + (N - 1) * PS, &pfn), -ENOENT);
	CHECK_EQ(t_verify(q, N, 4), 0);

	CHECK_OK(hetmm_notifier_remove(no));
	CHECK_OK(hetmm_notifier_remove(nn));
	t_unmap(q, N);
}

static void fork_events(void)
{
	enum { N = 8 };
	char *p = t_map(N);
	struct seen s;
	struct hetmm_notifier *n;
	uint64_t seq;
	pid_t pid;

	t_fill(p, N, 5);
	seen_reset(&s);
	REQUIRE_OK(hetmm_notifier_insert(ctx, p, N * PS, &rec_ops, &s, &n));
	seq = begin(n);
	fflush(NULL);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0)
		_exit(t_verify(p, N, 5) != 0);
	t_reap(pid);
	CHECK_EQ(hetmm_notifier_read_retry(n, seq), 1);
	CHECK_EQ(look(&s).by[HETMM_EVENT_FORK], 1);
	/* The whole address space changes: clamped to our range. */
	CHECK(saw(&s, HETMM_EVENT_FORK, p, p + N * PS));
	CHECK_OK(hetmm_notifier_remove(n));
	t_unmap(p, N);
}

/* ------------------------------------------------------------------------
 * read_begin waits out a running invalidation
 */

struct slow {
	int in_cb;         /* the callback is running */
	int release;       /* let it return */
};

static void slow_cb(struct hetmm_notifier *n, uintptr_t start, uintptr_t end,
		    enum hetmm_event why, void *arg)
{
	struct slow *s = arg;

	(void)n;
	(void)start;
	(void)end;
	(void)why;
	__atomic_store_n(&s->in_cb, 1, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&s->release, __ATOMIC_ACQUIRE))
		sched_yield();
	__atomic_store_n(&s->in_cb, 2, __ATOMIC_RELEASE);
}

static const struct hetmm_notifier_ops slow_ops = { slow_cb };

struct mig_arg {
	char *p;
	size_t n;
	int rc;
};

static void *migrate_thread(void *v)
{
	struct mig_arg *a = v;
	struct hetmm_migrate_report rep;

	memset(&rep, 0, sizeof(rep));
	a->rc = hetmm_migrate_to_device(pg, a->p, a->n * PS, &rep);
	return NULL;
}

static int begun;

static void *begin_thread(void *v)
{
	struct hetmm_notifier *n = v;
	uint64_t seq = 0;

	CHECK_OK(hetmm_notifier_read_begin(n, &seq));
	__atomic_store_n(&begun, 1, __ATOMIC_RELEASE);
	return (void *)(uintptr_t)seq;
}

static void begin_waits(void)
{
	enum { N = 4 };
	char *p = t_map(N);
	struct slow s = { 0, 0 };
	struct hetmm_notifier *n;
	struct mig_arg a = { p, N, -1 };
	pthread_t mt, bt;
	void *ret;
	uint64_t seq;

	t_fill(p, N, 6);
	REQUIRE_OK(hetmm_notifier_insert(ctx, p, N * PS, &slow_ops, &s, &n));
	seq = begin(n);
	REQUIRE(pthread_create(&mt, NULL, migrate_thread, &a) == 0);
	while (!__atomic_load_n(&s.in_cb, __ATOMIC_ACQUIRE))
		sched_yield();
	/* Mid-invalidation: the old seq is already stale... */
	CHECK_EQ(hetmm_notifier_read_retry(n, seq), 1);
	/* ...and a reader waits until the callback is done. */
	REQUIRE(pthread_create(&bt, NULL, begin_thread, n) == 0);
	/* However long we give it, it must not return meanwhile. */
	usleep(20000);
	CHECK_EQ(__atomic_load_n(&begun, __ATOMIC_ACQUIRE), 0);
	__atomic_store_n(&s.release, 1, __ATOMIC_RELEASE);
	REQUIRE(pthread_join(bt, &ret) == 0);
	/* It returned after the callback did (in_cb == 2 was stored
	 * before the callback returned, and read_begin waits for that). */
	CHECK_EQ(__atomic_load_n(&s.in_cb, __ATOMIC_ACQUIRE), 2);
	REQUIRE(pthread_join(mt, NULL) == 0);
	CHECK_OK(a.rc);
	CHECK_OK(hetmm_notifier_remove(n));
	CHECK_EQ(t_verify(p, N, 6), 0);
	t_unmap(p, N);
}

/* ------------------------------------------------------------------------
 * remove, bad input, release
 */

static void remove_stops(void)
{
	enum { N = 4 };
	char *p = t_map(N);
	struct seen s;
	struct hetmm_notifier *n;
	struct hetmm_migrate_report rep;

	t_fill(p, N, 7);
	seen_reset(&s);
	REQUIRE_OK(hetmm_notifier_insert(ctx, p, N * PS, &rec_ops, &s, &n));
	memset(&rep, 0, sizeof(rep));
	CHECK_OK(hetmm_migrate_to_device(pg, p, N * PS, &rep));
	CHECK(look(&s).n >= 1);
	CHECK_OK(hetmm_notifier_remove(n));
	seen_reset(&s);
	CHECK_EQ(t_verify(p, N, 7), 0);
	CHECK_OK(hetmm_migrate_to_device(pg, p, N * PS, &rep));
	REQUIRE(madvise(p, PS, MADV_DONTNEED) == 0);
	t_unmap(p, N);
	sync_events();
	CHECK_EQ(look(&s).n, 0);
}

static void bad_input(void)
{
	char *p = t_map(2);
	struct seen s;
	struct hetmm_notifier *n = NULL, *ok;
	static const struct hetmm_notifier_ops no_cb = { NULL };
	uint64_t seq;

	seen_reset(&s);
	CHECK_EQ(hetmm_notifier_insert(NULL, p, PS, &rec_ops, &s, &n),
		 -EINVAL);
	CHECK_EQ(hetmm_notifier_insert(ctx, NULL, PS, &rec_ops, &s, &n),
		 -EINVAL);
	CHECK_EQ(hetmm_notifier_insert(ctx, p, 0, &rec_ops, &s, &n), -EINVAL);
	CHECK_EQ(hetmm_notifier_insert(ctx, p + 1, PS, &rec_ops, &s, &n),
		 -EINVAL);
	CHECK_EQ(hetmm_notifier_insert(ctx, p, PS + 1, &rec_ops, &s, &n),
		 -EINVAL);
	CHECK_EQ(hetmm_notifier_insert(ctx, p, SIZE_MAX & ~(PS - 1), &rec_ops,
				       &s, &n), -EINVAL);
	CHECK_EQ(hetmm_notifier_insert(ctx, p, PS, NULL, &s, &n), -EINVAL);
	CHECK_EQ(hetmm_notifier_insert(ctx, p, PS, &no_cb, &s, &n), -EINVAL);
	CHECK_EQ(hetmm_notifier_insert(ctx, p, PS, &rec_ops, &s, NULL),
		 -EINVAL);
	CHECK(n == NULL);
	CHECK_EQ(hetmm_notifier_remove(NULL), -EINVAL);
	CHECK_EQ(hetmm_notifier_read_begin(NULL, &seq), -EINVAL);
	REQUIRE_OK(hetmm_notifier_insert(ctx, p, PS, &rec_ops, &s, &ok));
	CHECK_EQ(hetmm_notifier_read_begin(ok, NULL), -EINVAL);
	CHECK_EQ(hetmm_notifier_read_retry(NULL, 0), -EINVAL);
	CHECK_OK(hetmm_notifier_remove(ok));
	t_unmap(p, 2);
	CHECK_EQ(look(&s).n, 0);
}

/* RELEASE to each notifier left at destroy, for its whole range, once. */
static void release_at_destroy(void)
{
	struct hetmm_ctx *c;
	struct hetmm_notifier *n1, *n2;
	struct seen s1, s2;
	char *p = t_map(4);

	REQUIRE_OK(hetmm_ctx_create(&c, NULL));
	seen_reset(&s1);
	seen_reset(&s2);
	REQUIRE_OK(hetmm_notifier_insert(c, p, 4 * PS, &rec_ops, &s1, &n1));
	REQUIRE_OK(hetmm_notifier_insert(c, p + PS, PS, &rec_ops, &s2, &n2));
	CHECK_OK(hetmm_ctx_destroy(c));
	CHECK_EQ(look(&s1).n, 1);
	CHECK_EQ(look(&s2).n, 1);
	CHECK(saw(&s1, HETMM_EVENT_RELEASE, p, p + 4 * PS));
	CHECK(saw(&s2, HETMM_EVENT_RELEASE, p + PS, p + 2 * PS));
	t_unmap(p, 4);
}

/* ------------------------------------------------------------------------
 * mirrors: counted by reason, never stale
 */

static struct hetmm_mirror_stats mstats(void)
{
	struct hetmm_mirror_stats m;

	memset(&m, 0, sizeof(m));
	REQUIRE_OK(hetmm_mirror_get_stats(mir, &m));
	return m;
}

#define DELTA(a, b, why) ((b).invalidations[why] - (a).invalidations[why])

static void mirror_reasons(void)
{
	enum { N = 8 };
	char *p = t_map(N), *q = t_map(N), *out = t_alloc_pages(N);
	struct hetmm_mirror_stats m0, m1;
	struct hetmm_migrate_report rep;
	uint64_t faults;
	char *r;

	t_fill(p, N, 8);
	CHECK_OK(hetmm_mirror_read(mir, p, out, N, &faults));

	m0 = mstats();
	memset(&rep, 0, sizeof(rep));
	CHECK_OK(hetmm_migrate_to_device(pg, p, N * PS, &rep));
	m1 = mstats();
	CHECK(DELTA(m0, m1, HETMM_EVENT_MIGRATE) >= 1);

	m0 = m1;
	REQUIRE(madvise(p, PS, MADV_DONTNEED) == 0);
	sync_events();
	m1 = mstats();
	CHECK(DELTA(m0, m1, HETMM_EVENT_DISCARD) >= 1);

	m0 = m1;
	r = mremap(p, N * PS, N * PS, MREMAP_MAYMOVE | MREMAP_FIXED, q);
	REQUIRE(r == q);
	sync_events();
	CHECK_EQ(t_verify_from(q + PS, 1, 8, 1), 0);
	m1 = mstats();
	CHECK(DELTA(m0, m1, HETMM_EVENT_REMAP) >= 2); /* old and new */

	m0 = m1;
	REQUIRE(munmap(q, N * PS) == 0);
	sync_events();
	CHECK_EQ(t_settled_free(pg, NDEV), NDEV);
	m1 = mstats();
	CHECK(DELTA(m0, m1, HETMM_EVENT_UNMAP) >= 1);
	CHECK_EQ(DELTA(m0, m1, HETMM_EVENT_RELEASE), 0);
	free(out);
}

static void mirror_never_stale(void)
{
	enum { N = 8 };
	char *p = t_map(N), *out = t_alloc_pages(N);
	uint64_t faults;
	struct hetmm_migrate_report rep;

	/* Device pages in the mirror's page table, used in place. */
	t_fill(p, N, 9);
	memset(&rep, 0, sizeof(rep));
	CHECK_OK(hetmm_migrate_to_device(pg, p, N * PS, &rep));
	CHECK_OK(hetmm_mirror_read(mir, p, out, N, &faults));
	CHECK_EQ(t_verify(out, N, 9), 0);

	/* DONTNEED: the device reads zeroes, not what its entry had. */
	REQUIRE(madvise(p, N / 2 * PS, MADV_DONTNEED) == 0);
	memset(out, 0xa5, N * PS);
	CHECK_OK(hetmm_mirror_read(mir, p, out, N, &faults));
	CHECK_EQ(t_nonzero_pages(out, N / 2), 0);
	CHECK_EQ(t_verify_from(out + N / 2 * PS, N / 2, 9, N / 2), 0);

	/* System pages in the mirror, then DONTNEED: zeroes too. */
	CHECK_OK(hetmm_migrate_to_system(ctx, p, N * PS, &rep));
	t_fill(p, N, 10);
	CHECK_OK(hetmm_mirror_read(mir, p, out, N, &faults));
	CHECK_EQ(t_verify(out, N, 10), 0);
	REQUIRE(madvise(p, N / 2 * PS, MADV_DONTNEED) == 0);
	memset(out, 0xa5, N * PS);
	CHECK_OK(hetmm_mirror_read(mir, p, out, N, &faults));
	CHECK_EQ(t_nonzero_pages(out, N / 2), 0);
	CHECK_EQ(t_verify_from(out + N / 2 * PS, N / 2, 10, N / 2), 0);

	/* munmap: -EFAULT, whether the pages were on the device or not. */
	t_fill(p, N, 11);
	CHECK_OK(hetmm_migrate_to_device(pg, p, N / 2 * PS, &rep));
	CHECK_OK(hetmm_mirror_read(mir, p, out, N, &faults));
	CHECK_EQ(t_verify(out, N, 11), 0);
	REQUIRE(munmap(p, N * PS) == 0);
	/* At once, with no wait for the handler. */
	CHECK_EQ(hetmm_mirror_read(mir, p, out, 1, &faults), -EFAULT);
	CHECK_EQ(hetmm_mirror_read(mir, p + (N - 1) * PS, out, 1, &faults),
		 -EFAULT);
	CHECK_EQ(hetmm_mirror_write(mir, p, out, 1, &faults), -EFAULT);
	CHECK_EQ(t_settled_free(pg, NDEV), NDEV);

	/* New memory at the same place: the mirror sees the new bytes. */
	REQUIRE(mmap(p, N * PS, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == p);
	CHECK_OK(hetmm_mirror_read(mir, p, out, N, &faults));
	CHECK_EQ(t_nonzero_pages(out, N), 0);
	t_fill(p, N, 12);
	CHECK_OK(hetmm_mirror_read(mir, p, out, N, &faults));
	CHECK_EQ(t_verify(out, N, 12), 0);
	t_unmap(p, N);
	free(out);
}

int main(int argc, char **argv)
{
	t_emu_up(&ctx, NULL, NDEV, &emu, &pg);
	REQUIRE_OK(hetmm_mirror_create(emu, &mir));
	barrier_page = t_map(1);

	RUN(migrate_events);
	RUN(unmap_events);
	RUN(discard_events);
	RUN(remap_events);
	RUN(fork_events);
	RUN(begin_waits);
	RUN(remove_stops);
	RUN(bad_input);
	RUN(release_at_destroy);
	RUN(mirror_reasons);
	RUN(mirror_never_stale);

	CHECK_EQ(t_nr_free(pg), NDEV);
	CHECK_EQ(t_stats(ctx).device_resident, 0);
	t_unmap(barrier_page, 1);
	CHECK_OK(hetmm_mirror_destroy(mir));
	CHECK_OK(hetmm_emu_destroy(emu));
	CHECK_OK(hetmm_ctx_destroy(ctx));
	return t_done();
}
