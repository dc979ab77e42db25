/* SPDX-License-Identifier: MIT */
/*
 * test_fork: fork() of a process with pages on a device, on real
 * processes (fork, waitpid, _exit) and real threads.
 *
 *   at_fork        the child reads what the parent had at fork, whether
 *                  all of it or half of it was on the device; writes on
 *                  either side, made while both live, are invisible to the
 *                  other; stats.fork_pages counts the pages brought home
 *   own_context    the child creates its own context, emulated device and
 *                  mirror, migrates the inherited memory to its device and
 *                  reads and writes it through the CPU and the mirror
 *   inherited      every call on an inherited object in the child returns
 *                  -ECHILD and changes nothing: not the child's memory, not
 *                  the parent's (a hole of the parent stays a hole, the
 *                  parent's counters and free frames stay as they were)
 *   outlives       a grandchild whose parent exits first (with pages back
 *                  on its device) keeps the bytes it inherited
 *   shared         a shared anonymous mapping is reported SKIP_SHARED by
 *                  migration and stays shared between parent and child
 *   mirror_fork    a mirror in the parent gets a FORK invalidation and has
 *                  to fault its range in again
 *   mt_fork        a parent with threads migrating, faulting and writing
 *                  forks again and again: no deadlock, every child sees a
 *                  consistent snapshot, the parent loses nothing
 */
#include <pthread.h>

#include "t.h"

/*
 * ThreadSanitizer cannot follow a fork child of a multi-threaded process
 * that starts threads of its own (it dies, or with die_after_fork=0 trips
 * over the parent's thread ids), and a child's context starts its fault
 * handler thread.  Under TSan the two cases whose child opens a context
 * say so and do not run; `make test` and `make asan` run them.
 */
#if defined(__SANITIZE_THREAD__)
#define TSAN_CANNOT_FOLLOW(name)                                          \
	do {                                                              \
		fprintf(stderr, "test_fork: %s not run under "            \
			"ThreadSanitizer (its fork child starts a thread)\n", \
			name);                                            \
		return;                                                   \
	} while (0)
#else
#define TSAN_CANNOT_FOLLOW(name) do { } while (0)
#endif

static struct hetmm_ctx *ctx;
static struct hetmm_emu *emu;
static struct hetmm_pagemap *pg;
static struct hetmm_mirror *mir;

#define NDEV 1024

static void xwrite(int fd, char c)
{
	REQUIRE(write(fd, &c, 1) == 1);
}

static char xread(int fd)
{
	char c = 0;

	REQUIRE(read(fd, &c, 1) == 1);
	return c;
}

/* ------------------------------------------------------------------------
 * at_fork: both sides keep their own copy
 */

struct cow_arg {
	char *p;
	size_t n;
	uint64_t seed;
	int to_parent, from_parent;
};

static void cow_child(void *v)
{
	struct cow_arg *a = v;

	/* What the parent had at fork. */
	CHECK_EQ(t_verify(a->p, a->n, a->seed), 0);
	xwrite(a->to_parent, 'r');
	/* The parent has written its copy since: ours is unchanged. */
	CHECK_EQ(xread(a->from_parent), 'w');
	CHECK_EQ(t_verify(a->p, a->n, a->seed), 0);
	/* Now our own writes, which the parent must not see. */
	t_fill(a->p, a->n / 2, a->seed + 1000);
	CHECK_EQ(t_verify(a->p, a->n / 2, a->seed + 1000), 0);
	CHECK_EQ(t_verify_from(a->p + a->n / 2 * PS, a->n - a->n / 2,
			       a->seed, a->n / 2), 0);
	xwrite(a->to_parent, 'w');
	CHECK_EQ(xread(a->from_parent), 'x');
}

static void cow_case(size_t n, size_t on_dev, uint64_t seed)
{
	char *p = t_map(n);
	int up[2], down[2];
	struct cow_arg a;
	struct hetmm_stats s0, s1;
	uint64_t free0 = t_nr_free(pg);
	pid_t pid;

	t_fill(p, n, seed);
	if (on_dev)
		t_to_device(pg, p, on_dev);
	CHECK_EQ(t_count_on_device(ctx, p, n), on_dev);
	REQUIRE(pipe(up) == 0 && pipe(down) == 0);
	a = (struct cow_arg){ p, n, seed, up[1], down[0] };
	s0 = t_stats(ctx);
	pid = t_spawn(cow_child, &a);

	/* Brought home for the fork, and counted. */
	s1 = t_stats(ctx);
	CHECK_EQ(s1.fork_pages - s0.fork_pages, on_dev);
	CHECK_EQ(s1.device_resident, 0);
	CHECK_EQ(t_count_on_device(ctx, p, n), 0);
	CHECK_EQ(t_nr_free(pg), free0);

	CHECK_EQ(xread(up[0]), 'r');
	/* Our writes, some through the device. */
	t_to_device(pg, p, n);
	t_fill(p, n / 4, seed + 2000);
	xwrite(down[1], 'w');
	CHECK_EQ(xread(up[0]), 'w');
	/* The child wrote its first half: nothing of it here. */
	CHECK_EQ(t_verify(p, n / 4, seed + 2000), 0);
	CHECK_EQ(t_verify_from(p + n / 4 * PS, n - n / 4, seed, n / 4), 0);
	xwrite(down[1], 'x');
	t_reap(pid);
	/* And still so once it is gone. */
	CHECK_EQ(t_verify(p, n / 4, seed + 2000), 0);
	CHECK_EQ(t_verify_from(p + n / 4 * PS, n - n / 4, seed, n / 4), 0);
	close(up[0]);
	close(up[1]);
	close(down[0]);
	close(down[1]);
	t_unmap(p, n);
	CHECK_EQ(t_nr_free(pg), free0);
}

static void at_fork(void)
{
	cow_case(64, 64, 100);   /* all on the device */
	cow_case(64, 32, 101);   /* half on the device */
	cow_case(64, 0, 102);    /* none: the plain kernel case */
}

/* ------------------------------------------------------------------------
 * own_context: the child opens its own device and uses it
 */

struct own_arg {
	char *p;
	size_t n;
	uint64_t seed;
};

static void own_child(void *v)
{
	struct own_arg *a = v;
	struct hetmm_ctx *c = NULL;
	struct hetmm_emu *e = NULL;
	struct hetmm_pagemap *cp = NULL;
	struct hetmm_mirror *m = NULL;
	char *out = t_alloc_pages(a->n);
	uint64_t faults = 0;
	struct hetmm_stats s;

	t_emu_up(&c, NULL, 64, &e, &cp);
	REQUIRE_OK(hetmm_mirror_create(e, &m));

	/* Inherited memory migrates to the child's device. */
	t_to_device(cp, a->p, a->n);
	CHECK_EQ(t_count_on_device(c, a->p, a->n), a->n);
	CHECK_EQ(t_nr_free(cp), 64 - a->n);
	/* The mirror reads it where it is, without bringing it back. */
	CHECK_OK(hetmm_mirror_read(m, a->p, out, a->n, &faults));
	CHECK_EQ(t_verify(out, a->n, a->seed), 0);
	CHECK_EQ(t_count_on_device(c, a->p, a->n), a->n);
	/* The device writes half; the CPU reads all back by faults. */
	t_fill(out, a->n / 2, a->seed + 1);
	CHECK_OK(hetmm_mirror_write(m, a->p, out, a->n / 2, &faults));
	CHECK_EQ(t_verify(a->p, a->n / 2, a->seed + 1), 0);
	CHECK_EQ(t_verify_from(a->p + a->n / 2 * PS, a->n - a->n / 2,
			       a->seed, a->n / 2), 0);
	s = t_stats(c);
	CHECK(s.faults > 0);
	CHECK_EQ(s.to_device_pages, a->n);
	CHECK_EQ(s.device_resident, 0);

	CHECK_OK(hetmm_mirror_destroy(m));
	CHECK_OK(hetmm_emu_destroy(e));
	CHECK_OK(hetmm_ctx_destroy(c));
	free(out);
}

static void own_context(void)
{
	enum { N = 16 };
	char *p;
	struct own_arg a;

	TSAN_CANNOT_FOLLOW("own_context");
	p = t_map(N);
	a = (struct own_arg){ p, N, 200 };

	t_fill(p, N, 200);
	t_to_device(pg, p, N);
	t_reap(t_spawn(own_child, &a));
	/* The child's device work changed nothing here. */
	CHECK_EQ(t_verify(p, N, 200), 0);
	t_unmap(p, N);
}

/* ------------------------------------------------------------------------
 * inherited: -ECHILD for every call on an inherited object
 */

/* Invalidations by reason. */
static void count_invalidate(struct hetmm_notifier *n, uintptr_t start,
			     uintptr_t end, enum hetmm_event why, void *arg)
{
	(void)n;
	(void)start;
	(void)end;
	if (why > 0 && why < HETMM_EVENT_COUNT)
		__atomic_fetch_add((int *)arg + why, 1, __ATOMIC_RELAXED);
}

struct inh_arg {
	char *p;          /* N pages, pattern 300, on the device at fork */
	char *hole;       /* a page the parent never touched */
	struct hetmm_notifier *n;
	size_t np;
	hetmm_pfn_t pfn;          /* of p, taken on the device */
	struct hetmm_page *page;  /* its metadata */
};

static void inh_child(void *v)
{
	struct inh_arg *a = v;
	struct hetmm_stats st;
	struct hetmm_pagemap_info pi;
	struct hetmm_mirror_stats ms;
	struct hetmm_mirror *m2 = NULL;
	struct hetmm_emu *e2 = NULL;
	struct hetmm_pagemap *p2 = NULL;
	struct hetmm_notifier *n2 = NULL;
	struct hetmm_migrate_report rep;
	struct hetmm_pagemap_desc desc;
	enum hetmm_uffd_route route;
	uint64_t feat, seq = 0, refs, pins;
	hetmm_pfn_t pfn;
	struct hetmm_page *pgp = NULL;
	struct hetmm_page_info info;
	void *pages[2];
	char *buf = t_alloc_pages(a->np);
	static const struct hetmm_notifier_ops nops = { count_invalidate };

	memset(&rep, 0, sizeof(rep));
	memset(&desc, 0, sizeof(desc));
	desc.type = HETMM_MEMORY_DEVICE_PRIVATE;
	desc.nr_pages = 16;

	CHECK_EQ(hetmm_ctx_get_stats(ctx, &st), -ECHILD);
	CHECK_EQ(hetmm_ctx_uffd_info(ctx, &route, &feat), -ECHILD);
	CHECK_EQ(hetmm_addr_to_pfn(ctx, a->p, &pfn), -ECHILD);
	CHECK_EQ(hetmm_pagemap_get_info(pg, &pi), -ECHILD);
	CHECK_EQ(hetmm_pfn_to_page(a->pfn, &pgp), -ECHILD);
	CHECK_EQ(hetmm_page_get_info(a->page, &info), -ECHILD);
	CHECK_EQ(hetmm_pagemap_add(ctx, &desc, &p2), -ECHILD);
	CHECK_EQ(hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_PRIVATE, 16, &e2),
		 -ECHILD);
	CHECK_EQ(hetmm_emu_pagemap(emu, &p2), -ECHILD);
	CHECK_EQ(hetmm_mirror_create(emu, &m2), -ECHILD);
	CHECK_EQ(hetmm_mirror_get_stats(mir, &ms), -ECHILD);
	CHECK_EQ(hetmm_mirror_read(mir, a->p, buf, a->np, NULL), -ECHILD);
	CHECK_EQ(hetmm_mirror_write(mir, a->p, buf, 1, NULL), -ECHILD);
	CHECK_EQ(hetmm_mirror_snapshot(mir, a->p, 1, (uint8_t *)buf),
		 -ECHILD);
	CHECK_EQ(hetmm_migrate_to_device(pg, a->p, a->np * PS, &rep),
		 -ECHILD);
	CHECK_EQ(hetmm_migrate_to_system(ctx, a->p, a->np * PS, &rep),
		 -ECHILD);
	CHECK_EQ(hetmm_get_user_pages(ctx, a->hole, 1, HETMM_FOLL_WRITE,
				      pages), -ECHILD);
	CHECK_EQ(hetmm_get_user_pages_fast(ctx, a->hole, 1,
					   HETMM_FOLL_WRITE, pages), -ECHILD);
	CHECK_EQ(hetmm_pin_user_pages(ctx, a->hole, 1,
				      HETMM_FOLL_WRITE | HETMM_FOLL_LONGTERM,
				      pages), -ECHILD);
	CHECK_EQ(hetmm_pin_user_pages_fast(ctx, a->p, 2, HETMM_FOLL_WRITE,
					   pages), -ECHILD);
	pages[0] = a->p;
	CHECK_EQ(hetmm_put_user_pages(ctx, pages, 1), -ECHILD);
	CHECK_EQ(hetmm_unpin_user_pages(ctx, pages, 1), -ECHILD);
	CHECK_EQ(hetmm_user_page_holds(ctx, a->p, &refs, &pins), -ECHILD);
	CHECK_EQ(hetmm_notifier_insert(ctx, a->p, PS, &nops, NULL, &n2),
		 -ECHILD);
	CHECK_EQ(hetmm_notifier_read_begin(a->n, &seq), -ECHILD);
	CHECK_EQ(hetmm_notifier_read_retry(a->n, seq), -ECHILD);
	CHECK_EQ(hetmm_notifier_remove(a->n), -ECHILD);
	CHECK_EQ(hetmm_mirror_destroy(mir), -ECHILD);
	CHECK_EQ(hetmm_pagemap_remove(pg), -ECHILD);
	CHECK_EQ(hetmm_emu_destroy(emu), -ECHILD);
	CHECK_EQ(hetmm_ctx_destroy(ctx), -ECHILD);
	CHECK(p2 == NULL && e2 == NULL && m2 == NULL && n2 == NULL &&
	      pgp == NULL);

	/* Nothing changed here: the bytes are the parent's at fork, the
	 * hole is still a hole. */
	CHECK_EQ(t_verify(a->p, a->np, 300), 0);
	CHECK_EQ(t_present(a->hole), 0);
	CHECK_EQ(t_nonzero_pages(a->hole, 1), 0);
	free(buf);
}

static void inherited(void)
{
	enum { N = 8 };
	static const struct hetmm_notifier_ops ops = { count_invalidate };
	char *p = t_map(N), *hole = t_map(1);
	struct inh_arg a = { p, hole, NULL, N, { 0 }, NULL };
	struct hetmm_stats s0, s1;
	uint64_t free0, seq;
	int calls[HETMM_EVENT_COUNT] = { 0 };

	t_fill(p, N, 300);
	t_to_device(pg, p, N);
	REQUIRE_OK(hetmm_addr_to_pfn(ctx, p, &a.pfn));
	REQUIRE_OK(hetmm_pfn_to_page(a.pfn, &a.page));
	REQUIRE_OK(hetmm_notifier_insert(ctx, p, N * PS, &ops, calls, &a.n));
	free0 = t_nr_free(pg);
	s0 = t_stats(ctx);
	t_reap(t_spawn(inh_child, &a));
	s1 = t_stats(ctx);

	/* Nothing the child tried reached the parent. */
	CHECK_EQ(t_present(hole), 0);
	CHECK_EQ(t_nr_free(pg), free0 + N);   /* home for the fork only */
	/* The FORK, and the migration home before it; nothing else. */
	CHECK_EQ(calls[HETMM_EVENT_FORK], 1);
	CHECK_EQ(calls[HETMM_EVENT_UNMAP] + calls[HETMM_EVENT_DISCARD] +
		 calls[HETMM_EVENT_REMAP] + calls[HETMM_EVENT_EXCLUSIVE] +
		 calls[HETMM_EVENT_RELEASE], 0);
	CHECK_EQ(s1.fork_pages - s0.fork_pages, N);
	CHECK_EQ(s1.to_device_pages, s0.to_device_pages);
	CHECK_EQ(s1.pins, s0.pins);
	CHECK_EQ(s1.mirror_faults, s0.mirror_faults);
	CHECK_EQ(s1.device_resident, 0);
	CHECK_EQ(t_verify(p, N, 300), 0);
	/* The parent's objects still work. */
	CHECK_OK(hetmm_notifier_read_begin(a.n, &seq));
	t_to_device(pg, p, N);
	CHECK_EQ(hetmm_notifier_read_retry(a.n, seq), 1);
	CHECK_OK(hetmm_notifier_remove(a.n));
	CHECK_EQ(t_verify(p, N, 300), 0);
	t_unmap(p, N);
	t_unmap(hole, 1);
}

/* ------------------------------------------------------------------------
 * outlives: a grandchild keeps its data after its parent exits
 */

struct gc_arg {
	char *p;
	size_t n;
	int result_fd;   /* to the test process */
};

static void outlives_middle(void *v)
{
	struct gc_arg *a = v;
	struct hetmm_ctx *c = NULL;
	struct hetmm_emu *e = NULL;
	struct hetmm_pagemap *cp = NULL;
	int gone[2];
	pid_t me = getpid(), gc;

	/* The middle process has a device of its own, with the pages on it. */
	t_emu_up(&c, NULL, 64, &e, &cp);
	t_fill(a->p, a->n, 400);
	t_to_device(cp, a->p, a->n);
	REQUIRE(pipe(gone) == 0);
	fflush(NULL);
	gc = fork();
	REQUIRE(gc >= 0);
	if (gc == 0) {
		char c0 = 0;
		int bad;

		/* EOF on the pipe: the middle process is gone. */
		close(gone[1]);
		while (read(gone[0], &c0, 1) > 0)
			;
		while (getppid() == me)
			usleep(1000);
		bad = t_verify(a->p, a->n, 400) != 0;
		t_fill(a->p, a->n / 2, 401);
		bad |= t_verify(a->p, a->n / 2, 401) != 0;
		bad |= t_verify_from(a->p + a->n / 2 * PS, a->n - a->n / 2,
				     400, a->n / 2) != 0;
		xwrite(a->result_fd, bad ? 'F' : 'K');
		_exit(0);
	}
	close(gone[0]);
	/* Back on the device and overwritten here, then exit without
	 * tearing anything down: none of it may reach the grandchild. */
	t_to_device(cp, a->p, a->n);
	t_fill(a->p, 1, 402);
	t_to_device(cp, a->p, 1);
	CHECK_EQ(t_count_on_device(c, a->p, a->n), a->n);
}

static void outlives(void)
{
	enum { N = 32 };
	char *p;
	int res[2];
	struct gc_arg a;

	TSAN_CANNOT_FOLLOW("outlives");
	p = t_map(N);
	REQUIRE(pipe(res) == 0);
	a = (struct gc_arg){ p, N, res[1] };
	t_reap(t_spawn(outlives_middle, &a));
	close(res[1]);
	CHECK_EQ(xread(res[0]), 'K');
	close(res[0]);
	t_unmap(p, N);
}

/* ------------------------------------------------------------------------
 * shared: shared anonymous memory stays shared
 */

static void shared_child(void *v)
{
	char *s = v;

	CHECK_EQ(t_verify(s, 8, 500), 0);
	t_fill(s, 4, 501);
}

static void shared(void)
{
	enum { N = 8 };
	char *both = t_map(2 * N), *s = both + N * PS;
	uint8_t status[2 * N];
	struct hetmm_migrate_report rep;

	/* Private first half, shared second half, adjacent. */
	REQUIRE(mmap(s, N * PS, PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == s);
	t_fill(both, N, 499);
	t_fill(s, N, 500);
	memset(status, 0, sizeof(status));
	memset(&rep, 0, sizeof(rep));
	rep.status = status;
	CHECK_OK(hetmm_migrate_to_device(pg, both, 2 * N * PS, &rep));
	CHECK_EQ(rep.moved, N);
	CHECK_EQ(rep.skipped, N);
	for (size_t i = 0; i < 2 * N; i++)
		CHECK_EQ(status[i], i < N ? HETMM_MIGRATE_MOVED
					  : HETMM_MIGRATE_SKIP_SHARED);
	/* Only shared pages: nothing moves at all. */
	memset(&rep, 0, sizeof(rep));
	CHECK_EQ(hetmm_migrate_to_device(pg, s, N * PS, &rep), -ENOENT);
	CHECK_EQ(rep.moved, 0);

	t_reap(t_spawn(shared_child, s));
	/* The child's writes to shared memory are ours too. */
	CHECK_EQ(t_verify(s, 4, 501), 0);
	CHECK_EQ(t_verify_from(s + 4 * PS, 4, 500, 4), 0);
	CHECK_EQ(t_verify(both, N, 499), 0);
	/* And ours are the child's. */
	{
		int up[2];
		pid_t pid;

		REQUIRE(pipe(up) == 0);
		fflush(NULL);
		pid = fork();
		REQUIRE(pid >= 0);
		if (pid == 0) {
			char c0 = 0;

			REQUIRE(read(up[0], &c0, 1) == 1);
			_exit(t_verify(s, N, 502) != 0);
		}
		t_fill(s, N, 502);
		xwrite(up[1], 'g');
		t_reap(pid);
		close(up[0]);
		close(up[1]);
	}
	t_unmap(both, 2 * N);
}

/* ------------------------------------------------------------------------
 * mirror_fork: mirrors are told, and fault again
 */

static void nothing(void *v)
{
	(void)v;
}

static void mirror_fork(void)
{
	enum { N = 8 };
	char *p = t_map(N), *out = t_alloc_pages(N);
	struct hetmm_mirror_stats m0, m1;
	uint64_t faults;

	t_fill(p, N, 600);
	CHECK_OK(hetmm_mirror_read(mir, p, out, N, &faults));
	faults = 99;
	CHECK_OK(hetmm_mirror_read(mir, p, out, N, &faults));
	CHECK_EQ(faults, 0);
	CHECK_OK(hetmm_mirror_get_stats(mir, &m0));
	t_reap(t_spawn(nothing, NULL));
	CHECK_OK(hetmm_mirror_get_stats(mir, &m1));
	CHECK_EQ(m1.invalidations[HETMM_EVENT_FORK] -
		 m0.invalidations[HETMM_EVENT_FORK], 1);
	faults = 0;
	CHECK_OK(hetmm_mirror_read(mir, p, out, N, &faults));
	CHECK_EQ(faults, 1);
	CHECK_EQ(t_verify(out, N, 600), 0);
	free(out);
	t_unmap(p, N);
}

/* ------------------------------------------------------------------------
 * mt_fork: forks while other threads migrate, fault and write
 */

#define MT_WRITERS 3
#define MT_READERS 2
#define MT_PAGES 48
#define MT_FORKS 12

struct region {
	pthread_mutex_t lock;     /* held while the pages are being written */
	char *p;
	uint64_t gen;             /* the pattern seed of every page */
	unsigned idx;
};

static struct region regions[MT_WRITERS];
static int mt_stop;

/* Writers: new generation under the lock, then migrate and check. */
static void *mt_writer(void *v)
{
	struct region *r = v;
	unsigned i = 0;

	while (!__atomic_load_n(&mt_stop, __ATOMIC_ACQUIRE)) {
		struct hetmm_migrate_report rep;
		int rc;

		pthread_mutex_lock(&r->lock);
		t_fill(r->p, MT_PAGES, r->gen + 1);
		r->gen++;
		pthread_mutex_unlock(&r->lock);

		memset(&rep, 0, sizeof(rep));
		rc = hetmm_migrate_to_device(pg, r->p, MT_PAGES * PS, &rep);
		CHECK(rc == 0 || rc == -ENOENT || rc == -ENOMEM);
		if (i++ % 2) {
			rc = hetmm_migrate_to_system(ctx, r->p,
						     MT_PAGES / 2 * PS, &rep);
			CHECK(rc == 0 || rc == -ENOENT);
		}
		pthread_mutex_lock(&r->lock);
		CHECK_EQ(t_verify(r->p, MT_PAGES, r->gen), 0);
		pthread_mutex_unlock(&r->lock);
	}
	return NULL;
}

/* Readers fault pages back without the lock: only whole-page
 * generations are checked under it, so these just touch.  The touch races
 * with the writers on purpose (it only needs the fault), so ThreadSanitizer
 * is told not to watch it. */
__attribute__((no_sanitize("thread")))
static void *mt_reader(void *v)
{
	unsigned k = (unsigned)(uintptr_t)v;
	volatile uint64_t sink = 0;

	while (!__atomic_load_n(&mt_stop, __ATOMIC_ACQUIRE)) {
		struct region *r = &regions[k++ % MT_WRITERS];

		for (size_t i = 0; i < MT_PAGES; i += 3)
			sink += __atomic_load_n((uint64_t *)(r->p + i * PS),
						__ATOMIC_RELAXED);
		sched_yield();
	}
	(void)sink;
	return NULL;
}

struct snap {
	uint64_t gen[MT_WRITERS];
};

static void mt_child(void *v)
{
	struct snap *s = v;

	for (unsigned w = 0; w < MT_WRITERS; w++)
		CHECK_EQ(t_verify(regions[w].p, MT_PAGES, s->gen[w]), 0);
	/* The child's own writes stay its own. */
	t_fill(regions[0].p, 1, 0xc0ffee);
}

static void mt_fork(void)
{
	pthread_t wt[MT_WRITERS], rt[MT_READERS];
	pid_t kids[MT_FORKS];
	struct snap s;
	struct hetmm_stats st;

	for (unsigned w = 0; w < MT_WRITERS; w++) {
		regions[w].p = t_map(MT_PAGES);
		regions[w].gen = 700 + w * 100000;
		regions[w].idx = w;
		pthread_mutex_init(&regions[w].lock, NULL);
		t_fill(regions[w].p, MT_PAGES, regions[w].gen);
	}
	__atomic_store_n(&mt_stop, 0, __ATOMIC_RELEASE);
	for (unsigned w = 0; w < MT_WRITERS; w++)
		REQUIRE(pthread_create(&wt[w], NULL, mt_writer,
				       &regions[w]) == 0);
	for (unsigned r = 0; r < MT_READERS; r++)
		REQUIRE(pthread_create(&rt[r], NULL, mt_reader,
				       (void *)(uintptr_t)r) == 0);

	for (unsigned f = 0; f < MT_FORKS; f++) {
		usleep(2000);
		/* No writer mid-page: the snapshot is whole generations. */
		for (unsigned w = 0; w < MT_WRITERS; w++) {
			pthread_mutex_lock(&regions[w].lock);
			s.gen[w] = regions[w].gen;
		}
		kids[f] = t_spawn(mt_child, &s);
		for (unsigned w = 0; w < MT_WRITERS; w++)
			pthread_mutex_unlock(&regions[w].lock);
	}
	for (unsigned f = 0; f < MT_FORKS; f++)
		t_reap(kids[f]);
	__atomic_store_n(&mt_stop, 1, __ATOMIC_RELEASE);
	for (unsigned w = 0; w < MT_WRITERS; w++)
		REQUIRE(pthread_join(wt[w], NULL) == 0);
	for (unsigned r = 0; r < MT_READERS; r++)
		REQUIRE(pthread_join(rt[r], NULL) == 0);

	for (unsigned w = 0; w < MT_WRITERS; w++) {
		CHECK_EQ(t_verify(regions[w].p, MT_PAGES, regions[w].gen), 0);
		t_unmap(regions[w].p, MT_PAGES);
		pthread_mutex_destroy(&regions[w].lock);
	}
	st = t_stats(ctx);
	CHECK_EQ(st.device_resident, 0);
	CHECK_EQ(t_nr_free(pg), NDEV);
}

int main(int argc, char **argv)
{
	t_emu_up(&ctx, NULL, NDEV, &emu, &pg);
	REQUIRE_OK(hetmm_mirror_create(emu, &mir));

	RUN(at_fork);
	RUN(own_context);
	RUN(inherited);
	RUN(outlives);
	RUN(shared);
	RUN(mirror_fork);
	RUN(mt_fork);

	CHECK_OK(hetmm_mirror_destroy(mir));
	CHECK_OK(hetmm_emu_destroy(emu));
	CHECK_OK(hetmm_ctx_destroy(ctx));
	return t_done();
}
