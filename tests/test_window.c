/* SPDX-License-Identifier: MIT */
/*
 * test_window: races whose window a test hook holds open (src/testhook.h),
 * so that each run takes the path that loses bytes, instead of a soak
 * hoping to hit it.
 *
 * Part 1, mremap learnt of after the fact: a thread bringing device pages
 * back (a migration back, an eviction) holds them claimed while the
 * process mremaps their range, with and without MREMAP_DONTUNMAP, before
 * and after the holder installed them; or the holder installs them and
 * lets go while the handler, having read the REMAP, has not handled it
 * yet.  Every byte must be at the new address, the old range (DONTUNMAP)
 * empty, no frame lost.  The same on a coherent device, whose pages are
 * its memory mapped shared at the process's addresses, swapped for
 * private memory by the holder, before and after the swap, and while
 * the handler holds the REMAP the holder's swap must not take for its own.
 *
 * Part 2, mremap's late UNMAP: the handler is held on an event while one
 * thread mremaps X away and another mremaps Z onto the vacated X; the
 * kernel queues the first thread's UNMAP of X only once its REMAP is read,
 * after the second thread's REMAP onto X.  Z's pages, on a device, must
 * survive at X.
 *
 * Part 3, munmap of a coherent page a short-term pin holds: its frame
 * stays allocated, and its bytes where the device keeps them, until the
 * last unpin, which succeeds and frees it.  No hook needed: the pin
 * holds the window open.
 *
 * Part 4, two REMAPs read in the other order than the kernel's moves:
 * X moves onto a registered Y, whose UNMAP holds its REMAP back, while
 * Z moves onto the vacated X.  X's pages must be at Y, Z's at X.
 *
 * Part 5, mremap of pages a migration to a device holds, before and
 * after it took them out of the process: every byte at the new address.
 *
 * Part 6, hot-remove while a fault-back through a driver's asynchronous
 * copies has installed its last piece (every frame free) but not yet
 * given its copy slot back: the removal waits for the slot instead of
 * freeing the queue under it (test_file died of that under load).
 *
 * Part 7, a context's end while its deputy's exit unmaps memory in a
 * mapping registered whole (ASan's per-thread memory): the end must not
 * wait for a handler that reads no more.
 *
 * Part 8, two mremaps in the other order than part 2's: Z moves onto the
 * still-mapped X first, then X (Z's pages now) moves on to Y; the handler
 * reads the REMAP of X to Y before the REMAP of Z to X.  Z's pages must
 * be at Y, where the kernel put them; on a private device and on a
 * coherent one.
 *
 * Part 9, the late UNMAP of an mremap's old range against a fresh mapping
 * there, whose migration syncs with the handler before the REMAP is read
 * and so before that UNMAP is queued: the migration must not publish its
 * pages before the UNMAP is handled.
 *
 * Part 10, part 4's order with nothing of X's on a device: Z's pages must
 * stay at X, X's at Y; on a private device and on a coherent one.
 *
 * Part 11, MREMAP_DONTUNMAP of X to Y racing a move of Z onto the empty
 * mapping it leaves at X, the handler reading Z's move (its UNMAP of X
 * first) before X's: X's pages must be at Y, Z's at X.  And the same
 * read order from the moves made the other way round (Z onto X, then X
 * to Y): Z's pages at Y, X empty, X's first pages freed.
 *
 * And, Z's move read first, a third thread unmapping X or moving it on
 * before A's move is read: X's pages at Y, Z's gone with X or where X
 * went.
 *
 * Part 12, part 2's order with a third thread unmapping X, or moving it
 * on, after Z moved onto it and before Z's move is read: X's pages must
 * be at Y, Z's gone with X or where X went.
 */
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "adrv.h"
#include "t.h"
#include "compat.h"
#include "pagemap.h"
#include "tdrv.h"
#include "testhook.h"

static struct hetmm_ctx *ctx;
static bool moves;                 /* ctx moves pages (UFFDIO_MOVE) */

/* ------------------------------------------------------------------------
 * The hook: each stop holds the first thread that reaches its point with
 * a range overlapping [lo, hi), until released; a note only records that
 * one did.
 */
#define NSTOPS 4

struct stop {
	int point;                 /* -1: none */
	uintptr_t lo, hi;
	bool note;                 /* record the thread, don't hold it */
	int state;                 /* 0 armed, 1 a thread stopped, 2 go */
};
static struct stop stops[NSTOPS] = {
	{ .point = -1 }, { .point = -1 }, { .point = -1 }, { .point = -1 },
};

static char *_Atomic deputy_exit_unmaps;   /* part 7 */

static void hook(enum test_hook_point point, uintptr_t addr, size_t len)
{
	if (point == TEST_HOOK_DEPUTY_EXIT) {
		char *p = atomic_exchange(&deputy_exit_unmaps, NULL);
		if (p)
			REQUIRE(munmap(p, PS) == 0);
		return;
	}
	for (int i = 0; i < NSTOPS; i++) {
		struct stop *s = &stops[i];
		int armed = 0;

		if ((int)point != __atomic_load_n(&s->point, __ATOMIC_ACQUIRE) ||
		    addr >= s->hi || addr + len <= s->lo)
			continue;
		if (!__atomic_compare_exchange_n(&s->state, &armed, 1, 0,
						 __ATOMIC_ACQ_REL,
						 __ATOMIC_ACQUIRE))
			continue;
		if (s->note)
			continue;
		while (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != 2)
			usleep(100);
		return;
	}
}

static void stop_set(int i, enum test_hook_point point, const void *p,
		     size_t n, bool note)
{
	stops[i].lo = (uintptr_t)p;
	stops[i].hi = stops[i].lo + n * PS;
	stops[i].note = note;
	__atomic_store_n(&stops[i].state, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&stops[i].point, (int)point, __ATOMIC_RELEASE);
}

static void stop_arm(int i, enum test_hook_point point, const void *p,
		     size_t n)
{
	stop_set(i, point, p, n, false);
}

static void note_arm(int i, enum test_hook_point point, const void *p,
		     size_t n)
{
	stop_set(i, point, p, n, true);
}

/* Wait (bounded) for a thread to reach stop i. */
static void stop_wait(int i)
{
	double until = t_now() + 20;

	while (__atomic_load_n(&stops[i].state, __ATOMIC_ACQUIRE) != 1) {
		REQUIRE(t_now() < until);
		usleep(100);
	}
}

static void stop_release(int i)
{
	__atomic_store_n(&stops[i].point, -1, __ATOMIC_RELEASE);
	__atomic_store_n(&stops[i].state, 2, __ATOMIC_RELEASE);
}

/* A join that fails the test, instead of hanging it, if the thread
 * does not end in time. */
static void join(pthread_t th)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 30;
	REQUIRE(pthread_timedjoin_np(th, NULL, &until) == 0);
}

static void hook_arm(enum test_hook_point point, const void *p, size_t n)
{
	stop_arm(0, point, p, n);
}

static void hook_wait_stopped(void)
{
	stop_wait(0);
}

static void hook_release(void)
{
	stop_release(0);
}

/*
 * The test's mappings, each between PROT_NONE guard pages.  hetmm
 * registers whole mappings, and one the kernel had merged with the
 * sanitizer's own memory (ASan maps its allocator's next to them) stays
 * registered after the test unmaps its part: the sanitizer's first touch
 * of a page there is a fault only the handler serves, while the test
 * holds the handler in a hook (3 runs of 4 hung under ASan, the main
 * thread in ASan's code waiting in handle_userfault).
 */
static char *map_apart(size_t npages)
{
	char *g = mmap(NULL, (npages + 2) * PS, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	REQUIRE(g != MAP_FAILED);
	REQUIRE(mprotect(g + PS, npages * PS, PROT_READ | PROT_WRITE) == 0);
	return g + PS;
}

/* A thread running fn(arg), stopped at the hook point over npages at p. */
static pthread_t start_stopped(void *(*fn)(void *), void *arg,
			       enum test_hook_point point, const void *p,
			       size_t npages)
{
	pthread_t th;

	stop_arm(0, point, p, npages);
	REQUIRE(pthread_create(&th, NULL, fn, arg) == 0);
	stop_wait(0);
	return th;
}

/* Every frame of pg free again, nothing of ctx's left on a device. */
static void check_all_home(struct hetmm_pagemap *pg)
{
	struct hetmm_pagemap_info info;

	REQUIRE_OK(hetmm_pagemap_get_info(pg, &info));
	CHECK_EQ(t_settled_free(pg, info.nr_pages), info.nr_pages);
	CHECK_EQ(t_stats(ctx).device_resident, 0);
}

/* The npages at p that a move emptied (MREMAP_DONTUNMAP's old range):
 * zeroes to read, and no entry of ctx's on a device. */
static void check_left_empty(const void *p, size_t npages)
{
	CHECK_EQ(t_nonzero_pages(p, npages), 0);
	CHECK_EQ(t_count_on_device(ctx, p, npages), 0);
}

/* ------------------------------------------------------------------------
 * Part 1: mremap while another thread holds the pages.
 */
#define P1_PAGES 16

struct back_job {
	struct hetmm_pagemap *pg;      /* eviction: migrate filler here */
	char *p;                       /* the range to bring back */
	char *filler;
	int rc;
};

static void *migrate_back_main(void *arg)
{
	struct back_job *j = arg;

	j->rc = hetmm_migrate_to_system(ctx, j->p, P1_PAGES * PS, NULL);
	return NULL;
}

/* Migrating the filler to a full evicting device evicts p's pages. */
static void *evict_main(void *arg)
{
	struct back_job *j = arg;

	j->rc = hetmm_migrate_to_device(j->pg, j->filler, P1_PAGES * PS, NULL);
	return NULL;
}

/* When the mremap comes, for the holder of the pages. */
enum when {
	HELD_CLAIMED,     /* it claimed them, installed nothing yet */
	HELD_INSTALLED,   /* it installed them, holds the claims still */
	HANDLER_LATE,     /* it installs them and lets go between the
			   * handler's read of the REMAP and its handling */
};
static const char *const when_name[] = {
	"mremap before the install", "mremap after the install",
	"install before the REMAP is handled",
};

struct p1_remap {
	char *from, *to;
	int flags;
	char *r;
};

static void *p1_remap_main(void *arg)
{
	struct p1_remap *m = arg;

	m->r = mremap(m->from, P1_PAGES * PS, P1_PAGES * PS,
		      MREMAP_MAYMOVE | MREMAP_FIXED | m->flags, m->to);
	return NULL;
}

/*
 * p's pages, filled with seed's pattern, to pg's device; then the holder,
 * fn(j), started and stopped with them claimed (and installed, for
 * HELD_INSTALLED).
 */
static pthread_t p1_hold(struct hetmm_pagemap *pg, char *p, uint64_t seed,
			 enum when when, void *(*fn)(void *),
			 struct back_job *j)
{
	t_fill(p, P1_PAGES, seed);
	REQUIRE_OK(hetmm_migrate_to_device(pg, p, P1_PAGES * PS, NULL));
	REQUIRE(t_count_on_device(ctx, p, P1_PAGES) == P1_PAGES);
	return start_stopped(fn, j, when == HELD_INSTALLED ?
				    TEST_HOOK_BACK_INSTALLED :
				    TEST_HOOK_BACK_CLAIMED,
			     p, P1_PAGES);
}

/* The mremap under the feet of the stopped thread, which then goes on. */
static void p1_remap_under(struct p1_remap *m, pthread_t stopped)
{
	p1_remap_main(m);
	stop_release(0);
	join(stopped);
}

static void remap_while_held(struct hetmm_pagemap *pg, bool evict,
			     bool dontunmap, enum when when)
{
	const uint64_t seed = 0xa110 + (uint64_t)evict * 8 + dontunmap * 4 +
			      (uint64_t)when;
	char *p = map_apart(P1_PAGES);
	char *q = t_reserve(P1_PAGES);
	struct back_job j = { .pg = pg, .p = p };
	struct p1_remap m = { .from = p, .to = q,
			      .flags = dontunmap ? MREMAP_DONTUNMAP : 0 };
	pthread_t th, tr;

	fprintf(stderr, "part 1: %s, %s, %s\n",
		evict ? "eviction" : "migration back",
		dontunmap ? "MREMAP_DONTUNMAP" : "plain mremap",
		when_name[when]);
	if (evict) {
		j.filler = map_apart(P1_PAGES);
		t_fill(j.filler, P1_PAGES, seed + 100);
	}
	th = p1_hold(pg, p, seed, when, evict ? evict_main : migrate_back_main,
		     &j);
	if (when != HANDLER_LATE) {
		/* The pages are claimed (and installed, for the second
		 * point): move the range under the holder's feet. */
		p1_remap_under(&m, th);
	} else {
		/* Hold the handler once it has read the REMAP (so the
		 * mremap may return), and let the holder run meanwhile. */
		stop_arm(1, TEST_HOOK_EVENT_REMAP, p, P1_PAGES);
		note_arm(2, TEST_HOOK_BACK_PUT, p, P1_PAGES);
		note_arm(3, TEST_HOOK_BACK_LET_GO, p, P1_PAGES);
		REQUIRE(pthread_create(&tr, NULL, p1_remap_main, &m) == 0);
		stop_wait(1);
		stop_release(0);
		/* With DONTUNMAP the holder installs into the empty range
		 * left behind.  With UFFDIO_MOVE it lets go at once; without,
		 * it waits for the handler first (back.c).  Without
		 * DONTUNMAP the kernel holds its install off until the
		 * UNMAP is read. */
		if (dontunmap)
			stop_wait(moves ? 3 : 2);
		stop_release(1);
		join(th);
		join(tr);
		stop_release(2);
		stop_release(3);
	}
	REQUIRE(m.r == q);
	CHECK_OK(j.rc);
	/* The handler has handled the REMAP (it may still be at it when
	 * the mremap returns). */
	CHECK_OK(hetmm_ctx_sync(ctx));

	/* Every byte at the new address; nothing left behind. */
	CHECK_EQ(t_verify(q, P1_PAGES, seed), 0);
	if (dontunmap) {
		CHECK_EQ(t_nonzero_pages(p, P1_PAGES), 0);
		t_unmap(p, P1_PAGES);
	}
	if (evict) {
		CHECK_EQ(t_verify(j.filler, P1_PAGES, seed + 100), 0);
		t_unmap(j.filler, P1_PAGES);
	}
	CHECK_EQ(t_count_on_device(ctx, q, P1_PAGES), 0);
	t_unmap(q, P1_PAGES);
	check_all_home(pg);
}

/*
 * The same on a coherent device, whose pages are the device's own memory
 * mapped shared at the process's addresses: the holder swaps private
 * memory in for the mapping, then installs the bytes.  Moved before the
 * swap, the mapping takes the pages along, mapped, and they stay on the
 * device there; moved after, the private memory takes them along and
 * they come back there.  Either way every byte is at the new address,
 * the old range (DONTUNMAP) empty, no frame lost.  Before, moved with
 * MREMAP_DONTUNMAP before the swap, the bytes went back to the old
 * range and the frames were freed under the new one (16 pages read
 * zeroes there).
 */
static void remap_coherent_while_held(struct hetmm_pagemap *pg,
				      bool dontunmap, enum when when)
{
	const uint64_t seed = 0xc0e0 + dontunmap * 4 + (uint64_t)when;
	const bool stays = when != HELD_INSTALLED;
	char *p = map_apart(P1_PAGES);
	char *q = t_reserve(P1_PAGES);
	struct back_job j = { .p = p };
	struct p1_remap m = { .from = p, .to = q,
			      .flags = dontunmap ? MREMAP_DONTUNMAP : 0 };
	pthread_t th;

	fprintf(stderr, "part 1: coherent, %s, %s\n",
		dontunmap ? "MREMAP_DONTUNMAP" : "plain mremap",
		when_name[when]);
	th = p1_hold(pg, p, seed, when, migrate_back_main, &j);
	if (when != HANDLER_LATE) {
		p1_remap_under(&m, th);
	} else {
		/* The handler holds the REMAP it read while the holder
		 * swaps: the REMAP is still the process's, not the swap's
		 * (it was taken for the swap's own, and skipped).  The
		 * holder waits for the handler before it records the swap
		 * as its own; the note waits a second to see if it does. */
		pthread_t tr;
		double until;

		stop_arm(1, TEST_HOOK_EVENT_REMAP, p, P1_PAGES);
		note_arm(2, TEST_HOOK_OWN_REMAP, p, P1_PAGES);
		REQUIRE(pthread_create(&tr, NULL, p1_remap_main, &m) == 0);
		stop_wait(1);
		stop_release(0);
		until = t_now() + 1;
		while (__atomic_load_n(&stops[2].state, __ATOMIC_ACQUIRE) != 1 &&
		       t_now() < until)
			usleep(1000);
		stop_release(1);
		join(th);
		join(tr);
		stop_release(2);
	}
	REQUIRE(m.r == q);
	CHECK_EQ(j.rc, stays ? -ENOENT : 0);
	CHECK_OK(hetmm_ctx_sync(ctx));

	CHECK_EQ(t_count_on_device(ctx, q, P1_PAGES), stays ? P1_PAGES : 0);
	CHECK_EQ(t_verify(q, P1_PAGES, seed), 0);
	if (dontunmap) {
		CHECK_EQ(t_nonzero_pages(p, P1_PAGES), 0);
		t_unmap(p, P1_PAGES);
	}
	/* Those that stayed come back from their new place. */
	CHECK_EQ(hetmm_migrate_to_system(ctx, q, P1_PAGES * PS, NULL),
		 stays ? 0 : -ENOENT);
	CHECK_EQ(t_count_on_device(ctx, q, P1_PAGES), 0);
	CHECK_EQ(t_verify(q, P1_PAGES, seed), 0);
	t_unmap(q, P1_PAGES);
	check_all_home(pg);
}

static void part1(void)
{
	struct hetmm_emu *emu, *cemu;
	struct hetmm_pagemap *pg, *cpg;
	struct td copying, evicting;

	/* Pages move back by UFFDIO_MOVE (emulated), or are copied from a
	 * staging copy (copying); the evicting device holds exactly one
	 * range, so that the filler evicts it all. */
	t_emu_add(ctx, HETMM_MEMORY_DEVICE_PRIVATE, 64, &emu, &pg);
	REQUIRE_OK(td_add(ctx, &copying, 64, TD_COPY,
			  HETMM_MEMORY_DEVICE_PRIVATE, 0));
	REQUIRE_OK(td_add(ctx, &evicting, P1_PAGES, TD_REMAP,
			  HETMM_MEMORY_DEVICE_PRIVATE, HETMM_PAGEMAP_EVICT));
	t_emu_add(ctx, HETMM_MEMORY_DEVICE_COHERENT, 64, &cemu, &cpg);
	for (int dontunmap = 0; dontunmap < 2; dontunmap++)
		for (enum when w = HELD_CLAIMED; w <= HANDLER_LATE; w++)
			remap_coherent_while_held(cpg, dontunmap, w);
	CHECK_OK(hetmm_emu_destroy(cemu));
	for (int dontunmap = 0; dontunmap < 2; dontunmap++)
		for (enum when w = HELD_CLAIMED; w <= HANDLER_LATE; w++) {
			remap_while_held(pg, false, dontunmap, w);
			remap_while_held(copying.pg, false, dontunmap, w);
			remap_while_held(evicting.pg, true, dontunmap, w);
		}
	CHECK_OK(hetmm_pagemap_remove(evicting.pg));
	CHECK_OK(hetmm_pagemap_remove(copying.pg));
	td_free(&evicting);
	td_free(&copying);
	CHECK_OK(hetmm_emu_destroy(emu));
}

/* ------------------------------------------------------------------------
 * Part 2: the late UNMAP of an mremap's old range.
 */
#define P2_PAGES 16

struct remapper {
	char *from, *to;           /* to NULL: munmap from instead */
	int flags;                 /* MREMAP_DONTUNMAP, or 0 */
	pid_t tid;
	int go;
	char *r;
};

static void *remapper_main(void *arg)
{
	struct remapper *m = arg;

	__atomic_store_n(&m->tid, gettid(), __ATOMIC_RELEASE);
	while (!__atomic_load_n(&m->go, __ATOMIC_ACQUIRE))
		usleep(100);
	if (!m->to)
		m->r = munmap(m->from, P2_PAGES * PS) ? MAP_FAILED : NULL;
	else
		m->r = mremap(m->from, P2_PAGES * PS, P2_PAGES * PS,
			      MREMAP_MAYMOVE | MREMAP_FIXED | m->flags, m->to);
	return NULL;
}

/* The thread's scheduler state ('D': waiting for its event to be read,
 * which the kernel does uninterruptibly). */
static char task_state(pid_t tid)
{
	char path[64], buf[256], *s;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
	f = fopen(path, "r");
	if (!f)
		return '?';
	s = fgets(buf, sizeof(buf), f);
	fclose(f);
	s = s ? strrchr(buf, ')') : NULL;
	return s && s[1] == ' ' ? s[2] : '?';
}

/* Wait until the remapper thread runs the test's code: its start is
 * over, and with it what a sanitizer maps for the thread itself.  Under
 * load ASan mapped the second remapper's own memory late, in the range
 * the first had just vacated; the thread moved Z over it, and its exit
 * unmapped it, Z's pages with it (1 run of 6 died of SEGV reading X). */
static pid_t remapper_ready(struct remapper *m)
{
	double until = t_now() + 20;
	pid_t tid;

	while (!(tid = __atomic_load_n(&m->tid, __ATOMIC_ACQUIRE))) {
		REQUIRE(t_now() < until);
		usleep(100);
	}
	return tid;
}

static bool mapped(const void *p, size_t npages)
{
	unsigned char vec[P2_PAGES];

	return mincore((void *)p, npages * PS, vec) == 0;
}

/*
 * Let a remapper thread (started and ready beforehand: a thread's start
 * maps its stack and more, which could take the range the first
 * remapper vacates) go, and wait until the kernel moved the mapping and the thread
 * waits for its REMAP to be read.  'D' alone does not say so: a thread
 * waiting for the mmap lock (khugepaged, another thread's fault) is in
 * 'D' too, before its move, and the second remapper could then take the
 * lock first and move Z onto X before X moved (under ASan and load: Z's
 * pages went to Y, X was left unmapped and the test's read of it died
 * of SEGV).  Its old range gone and its new one there, the thread has
 * moved the mapping and dropped the lock; in 'D' after that, it waits
 * for its event.
 */
static void start_remapper(struct remapper *m)
{
	double until = t_now() + 20;
	pid_t tid;

	tid = remapper_ready(m);
	__atomic_store_n(&m->go, 1, __ATOMIC_RELEASE);
	while (mapped(m->from, P2_PAGES) ||
	       (m->to && !mapped(m->to, P2_PAGES)) ||
	       task_state(tid) != 'D') {
		REQUIRE(t_now() < until);
		usleep(200);
	}
}

static void *discard_main(void *arg)
{
	REQUIRE(madvise(arg, PS, MADV_DONTNEED) == 0);
	return NULL;
}

/*
 * The remappers' moves (or munmaps), in turn, while the handler is held
 * on the discard of the trigger page (registered): their events queue
 * behind it, in the order the kernel raises them, and the handler reads
 * them once let go.  All are started, and ready, before the handler is
 * held.
 */
static void remaps_while_held(struct remapper *const *m, int n, char *trig)
{
	pthread_t th[3], thd;

	REQUIRE(n <= 3);
	for (int i = 0; i < n; i++)
		REQUIRE(pthread_create(&th[i], NULL, remapper_main, m[i]) == 0);
	for (int i = 0; i < n; i++)
		remapper_ready(m[i]);
	hook_arm(TEST_HOOK_EVENT_DISCARD, trig, 1);
	REQUIRE(pthread_create(&thd, NULL, discard_main, trig) == 0);
	hook_wait_stopped();
	join(thd);
	for (int i = 0; i < n; i++)
		start_remapper(m[i]);
	hook_release();
	for (int i = 0; i < n; i++) {
		join(th[i]);
		REQUIRE(m[i]->r == m[i]->to);
	}
}

static void remap_two_while_held(struct remapper *first,
				 struct remapper *second, char *trig)
{
	remaps_while_held((struct remapper *const[]){ first, second }, 2,
			  trig);
}

/*
 * X's and Z's pages, filled with seed's and seed + 1's patterns, on pg's
 * device, and the trigger page registered with the userfaultfd (it has
 * been on a device): its discard reaches the handler.
 */
static void p2_on_device(struct hetmm_pagemap *pg, char *x, char *z,
			 char *trig, uint64_t seed)
{
	t_fill(x, P2_PAGES, seed);
	t_fill(z, P2_PAGES, seed + 1);
	t_fill(trig, 1, seed + 2);
	REQUIRE_OK(hetmm_migrate_to_device(pg, x, P2_PAGES * PS, NULL));
	REQUIRE_OK(hetmm_migrate_to_device(pg, z, P2_PAGES * PS, NULL));
	REQUIRE_OK(hetmm_migrate_to_device(pg, trig, PS, NULL));
	REQUIRE_OK(hetmm_migrate_to_system(ctx, trig, PS, NULL));
}

/* Both moves survived, X's pages (seed) at Y, Z's at X; then the test's
 * mappings go, and the device with them, every frame home first. */
static void p2_check_moved(struct hetmm_emu *emu, struct hetmm_pagemap *pg,
			   char *x, char *y, char *trig, uint64_t seed)
{
	CHECK_EQ(t_verify(y, P2_PAGES, seed), 0);
	CHECK_EQ(t_verify(x, P2_PAGES, seed + 1), 0);
	t_unmap(y, P2_PAGES);
	t_unmap(x, P2_PAGES);
	t_unmap(trig, 1);
	check_all_home(pg);
	CHECK_OK(hetmm_emu_destroy(emu));
}

static void part2(void)
{
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	char *trig = map_apart(1);
	char *x = map_apart(P2_PAGES), *z = map_apart(P2_PAGES);
	char *y = t_reserve(P2_PAGES);
	struct remapper m1 = { .from = x, .to = y };
	struct remapper m2 = { .from = z, .to = x };

	fprintf(stderr, "part 2: late UNMAP of a vacated range\n");
	t_emu_add(ctx, HETMM_MEMORY_DEVICE_PRIVATE, 64, &emu, &pg);
	p2_on_device(pg, x, z, trig, 21);

	/* X moves to Y: its REMAP waits to be read, its UNMAP of X will
	 * follow only then.  Z moves onto the vacated X: its REMAP queues
	 * before that UNMAP. */
	remap_two_while_held(&m1, &m2, trig);
	p2_check_moved(emu, pg, x, y, trig, 21);
}

/* ------------------------------------------------------------------------
 * Part 4: two REMAPs read in the other order than the kernel's moves.
 * X moves onto Y, a mapping registered with the userfaultfd: the kernel
 * queues the UNMAP of what was at Y first, and the REMAP of X only once
 * that is read.  Meanwhile Z moves onto the vacated X, and its REMAP
 * queues behind that UNMAP: the handler reads Z -> X before X -> Y, and
 * finds X's entries still where Z's pages go.  Both must survive: X's at
 * Y, Z's at X.
 */
static void part4(void)
{
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	char *trig = map_apart(1);
	char *x = map_apart(P2_PAGES), *z = map_apart(P2_PAGES);
	char *y = map_apart(P2_PAGES);
	struct remapper m1 = { .from = x, .to = y };
	struct remapper m2 = { .from = z, .to = x };

	fprintf(stderr, "part 4: two REMAPs read in the other order\n");
	t_emu_add(ctx, HETMM_MEMORY_DEVICE_PRIVATE, 64, &emu, &pg);
	p2_on_device(pg, x, z, trig, 41);
	/* Registered, so that moving X over it raises an UNMAP first. */
	t_fill(y, P2_PAGES, 44);
	REQUIRE_OK(hetmm_migrate_to_device(pg, y, P2_PAGES * PS, NULL));

	/* X is at Y once the first waits (for its UNMAP of Y to be read,
	 * its REMAP still to queue); Z then moves onto X. */
	remap_two_while_held(&m1, &m2, trig);
	CHECK_OK(hetmm_ctx_sync(ctx));
	p2_check_moved(emu, pg, x, y, trig, 41);
}

/* ------------------------------------------------------------------------
 * Part 8: Z moves onto the still-mapped X, then X on to Y.  The kernel
 * does Z -> X (its early UNMAP of X first) and then X -> Y, so Y holds
 * Z's pages; the handler reads UNMAP(X), REMAP(X -> Y), then REMAP(Z ->
 * X), UNMAP(X), UNMAP(Z).  Before, it moved nothing at REMAP(X -> Y) and
 * put Z's entries at X, where the kernel has nothing: 16 pages read
 * zeroes at Y.
 */
static void part8_type(enum hetmm_memory_type type)
{
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	char *trig = map_apart(1);
	char *x = map_apart(P2_PAGES), *z = map_apart(P2_PAGES);
	char *y = t_reserve(P2_PAGES);
	struct remapper m1 = { .from = x, .to = y };
	struct remapper m2 = { .from = z, .to = x };

	fprintf(stderr, "part 8: Z onto the mapped X, then X to Y (%s)\n",
		type == HETMM_MEMORY_DEVICE_COHERENT ? "coherent" : "private");
	t_emu_add(ctx, type, 64, &emu, &pg);
	p2_on_device(pg, x, z, trig, 81);

	/* Z onto X: the thread waits for its UNMAP of X to be read.  Then
	 * X (Z's mapping now) to Y: its REMAP queues behind that UNMAP,
	 * before Z's REMAP. */
	remap_two_while_held(&m2, &m1, trig);
	CHECK_OK(hetmm_ctx_sync(ctx));

	CHECK(!mapped(x, P2_PAGES));
	CHECK_EQ(t_verify(y, P2_PAGES, 82), 0);
	/* A coherent device's pages moved with their mapping, still its. */
	CHECK_EQ(t_count_on_device(ctx, y, P2_PAGES),
		 type == HETMM_MEMORY_DEVICE_COHERENT ? P2_PAGES : 0);
	t_unmap(y, P2_PAGES);
	t_unmap(trig, 1);
	check_all_home(pg);
	CHECK_OK(hetmm_emu_destroy(emu));
}

static void part8(void)
{
	part8_type(HETMM_MEMORY_DEVICE_PRIVATE);
	/* Before, Z's coherent entries went to X, where the kernel has
	 * nothing: their 16 frames stayed allocated after Y's munmap. */
	part8_type(HETMM_MEMORY_DEVICE_COHERENT);
}

/* ------------------------------------------------------------------------
 * Part 9: the late UNMAP of X, which X's mremap queues only once its
 * REMAP is read, against a fresh mapping at X migrated meanwhile.  The
 * handler is held before it reads the REMAP; the migration's sync fault
 * is queued before the REMAP is read, so before that UNMAP is queued.
 * The kernel prepared the UNMAP with the move and refuses to lift the
 * sync's protection until it is read: the migration must not publish a
 * page before the handler has handled it.
 */
struct p9_fresh {
	char *x;
	struct hetmm_pagemap *pg;
	pid_t tid;
	int go, done;
	int rc;
};

/* Started before X is vacated, as the remappers are (see
 * remapper_ready): a thread's start maps memory of its own. */
static void *p9_fresh_main(void *arg)
{
	struct p9_fresh *f = arg;

	__atomic_store_n(&f->tid, gettid(), __ATOMIC_RELEASE);
	while (!__atomic_load_n(&f->go, __ATOMIC_ACQUIRE))
		usleep(100);
	REQUIRE(mmap(f->x, P2_PAGES * PS, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1,
		     0) == f->x);
	t_fill(f->x, P2_PAGES, 92);
	f->rc = hetmm_migrate_to_device(f->pg, f->x, P2_PAGES * PS, NULL);
	__atomic_store_n(&f->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* Is the thread waiting for the handler: in a userfault (the sync's),
 * or for an event of its own to be read? */
static bool waits_for_handler(pid_t tid)
{
	char path[64], buf[64] = "";
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/wchan", (int)tid);
	f = fopen(path, "r");
	if (!f)
		return false;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = 0;
	fclose(f);
	return strcmp(buf, "handle_userfault") == 0 ||
	       strcmp(buf, "userfaultfd_event_wait_completion") == 0;
}

static void part9(void)
{
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	char *trig = map_apart(1);
	char *x = map_apart(P2_PAGES), *y = t_reserve(P2_PAGES);
	struct remapper m1 = { .from = x, .to = y };
	struct p9_fresh f = { .x = x };
	pthread_t th1, thf, thd;
	double until;

	fprintf(stderr, "part 9: late UNMAP against a fresh mapping\n");
	t_emu_add(ctx, HETMM_MEMORY_DEVICE_PRIVATE, 64, &emu, &pg);
	f.pg = pg;
	t_fill(x, P2_PAGES, 91);
	t_fill(trig, 1, 93);
	REQUIRE_OK(hetmm_migrate_to_device(pg, x, P2_PAGES * PS, NULL));
	REQUIRE_OK(hetmm_migrate_to_device(pg, trig, PS, NULL));
	REQUIRE_OK(hetmm_migrate_to_system(ctx, trig, PS, NULL));

	REQUIRE(pthread_create(&th1, NULL, remapper_main, &m1) == 0);
	REQUIRE(pthread_create(&thf, NULL, p9_fresh_main, &f) == 0);
	remapper_ready(&m1);
	until = t_now() + 20;
	while (!__atomic_load_n(&f.tid, __ATOMIC_ACQUIRE)) {
		REQUIRE(t_now() < until);
		usleep(100);
	}
	hook_arm(TEST_HOOK_EVENT_DISCARD, trig, 1);
	REQUIRE(pthread_create(&thd, NULL, discard_main, trig) == 0);
	hook_wait_stopped();
	join(thd);
	/* X moves to Y; its REMAP waits to be read, its UNMAP of X is
	 * queued only after that. */
	start_remapper(&m1);
	/* A fresh mapping at X, migrated: its sync waits for the handler. */
	__atomic_store_n(&f.go, 1, __ATOMIC_RELEASE);
	until = t_now() + 20;
	while (!waits_for_handler(f.tid) &&
	       !__atomic_load_n(&f.done, __ATOMIC_ACQUIRE)) {
		REQUIRE(t_now() < until);
		usleep(200);
	}
	hook_release();
	join(thf);
	join(th1);
	REQUIRE(m1.r == y);
	CHECK_OK(f.rc);
	CHECK_OK(hetmm_ctx_sync(ctx));

	CHECK_EQ(t_verify(y, P2_PAGES, 91), 0);
	CHECK_EQ(t_count_on_device(ctx, x, P2_PAGES), P2_PAGES);
	CHECK_EQ(t_verify(x, P2_PAGES, 92), 0);
	t_unmap(x, P2_PAGES);
	t_unmap(y, P2_PAGES);
	t_unmap(trig, 1);
	check_all_home(pg);
	CHECK_OK(hetmm_emu_destroy(emu));
}

/* ------------------------------------------------------------------------
 * Part 10: part 4's order with no device page at X.  X (its pages all in
 * memory, the mapping registered) moves onto a registered Y, whose UNMAP
 * holds its REMAP back, while Z moves onto the vacated X: the handler
 * reads Z -> X, then X -> Y, and X has no entries of its own to park.
 * Before, X -> Y took Z's entries on to Y, where the kernel has X's
 * pages: 16 pages read zeroes at X.  On a coherent device Z's pages are
 * a shared mapping of the device's memory, which the kernel moved to X:
 * their entries must stay there too.
 */
static void part10_type(enum hetmm_memory_type type)
{
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	char *trig = map_apart(1);
	char *x = map_apart(P2_PAGES), *z = map_apart(P2_PAGES);
	char *y = map_apart(P2_PAGES);
	struct remapper m1 = { .from = x, .to = y };
	struct remapper m2 = { .from = z, .to = x };

	fprintf(stderr, "part 10: part 4 with nothing of X's on the device "
		"(%s)\n",
		type == HETMM_MEMORY_DEVICE_COHERENT ? "coherent" : "private");
	t_emu_add(ctx, type, 64, &emu, &pg);
	t_fill(x, P2_PAGES, 101);
	t_fill(z, P2_PAGES, 102);
	t_fill(y, P2_PAGES, 103);
	t_fill(trig, 1, 104);
	/* X registered, its pages back in memory. */
	REQUIRE_OK(hetmm_migrate_to_device(pg, x, P2_PAGES * PS, NULL));
	REQUIRE_OK(hetmm_migrate_to_system(ctx, x, P2_PAGES * PS, NULL));
	REQUIRE_OK(hetmm_migrate_to_device(pg, z, P2_PAGES * PS, NULL));
	REQUIRE_OK(hetmm_migrate_to_device(pg, y, P2_PAGES * PS, NULL));
	REQUIRE_OK(hetmm_migrate_to_device(pg, trig, PS, NULL));
	REQUIRE_OK(hetmm_migrate_to_system(ctx, trig, PS, NULL));

	/* X is at Y once the first waits (for its UNMAP of Y to be read,
	 * its REMAP still to queue); Z then moves onto X. */
	remap_two_while_held(&m1, &m2, trig);
	CHECK_OK(hetmm_ctx_sync(ctx));

	CHECK_EQ(t_count_on_device(ctx, y, P2_PAGES), 0);
	CHECK_EQ(t_count_on_device(ctx, x, P2_PAGES), P2_PAGES);
	CHECK_EQ(t_verify(y, P2_PAGES, 101), 0);
	/* Y's munmap frees no frame of Z's (a coherent one X maps). */
	t_unmap(y, P2_PAGES);
	CHECK_EQ(t_settled_free(pg, 64 - P2_PAGES), 64 - P2_PAGES);
	CHECK_EQ(t_verify(x, P2_PAGES, 102), 0);
	t_unmap(x, P2_PAGES);
	t_unmap(trig, 1);
	check_all_home(pg);
	CHECK_OK(hetmm_emu_destroy(emu));
}

static void part10(void)
{
	part10_type(HETMM_MEMORY_DEVICE_PRIVATE);
	part10_type(HETMM_MEMORY_DEVICE_COHERENT);
}

/* ------------------------------------------------------------------------
 * Part 11: MREMAP_DONTUNMAP of X to Y (thread A), then Z moved onto the
 * empty mapping left at X (thread B); the handler reads B's UNMAP of X,
 * Z -> X, then A's X -> Y.  The kernel queues each thread's events once
 * it drops the mmap lock, so that order is the kernel's to give; here a
 * gate holds A: the last page of Y is registered with a userfaultfd of
 * the test's own, with UNMAP events, and A, having moved X, waits for
 * the test to read the UNMAP of that page before it queues its REMAP.
 * Y's other pages are plain memory, or have pages on the device
 * (registered: the handler reads their UNMAP first).  Before, the UNMAP
 * of X freed X's entries, whose pages the kernel had taken to Y: Y read
 * zeroes there, and with X's pages all on the device X -> Y took Z's on
 * to Y too.
 */
#define P11_SOME 4                 /* pages of X brought back: present */

/* A userfaultfd of the test's own over the last page of Y. */
static int p11_gate_open(char *y)
{
	struct uffdio_api api = { .api = UFFD_API,
				  .features = UFFD_FEATURE_EVENT_UNMAP };
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)y + (P2_PAGES - 1) * PS,
			   .len = PS },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);

	REQUIRE(fd >= 0);
	REQUIRE(ioctl(fd, UFFDIO_API, &api) == 0);
	REQUIRE(ioctl(fd, UFFDIO_REGISTER, &reg) == 0);
	return fd;
}

/* Wait until the gate holds A, the move done.  The UNMAP of Y's last
 * page can be read before the move (the kernel queues it with the
 * munmap of Y, under the mmap lock); A waits for an event to be read
 * only after the move, once the lock is dropped. */
static void p11_gate_wait(int fd, pid_t a)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	double until = t_now() + 20;

	REQUIRE(poll(&p, 1, 20000) == 1);
	while (!waits_for_handler(a)) {
		REQUIRE(t_now() < until);
		usleep(200);
	}
}

/* Let A go on: its REMAP queues once the gate's event is read. */
static void p11_gate_release(int fd)
{
	struct uffd_msg m;

	REQUIRE(read(fd, &m, sizeof(m)) == (ssize_t)sizeof(m));
	REQUIRE(m.event == UFFD_EVENT_UNMAP);
	close(fd);
}

/* X's and Z's pages on pg's device, filled with seed's and seed + 1's
 * patterns; with some, P11_SOME of X's back in memory. */
static void p11_on_device(struct hetmm_pagemap *pg, char *x, char *z,
			  uint64_t seed, bool some)
{
	t_fill(x, P2_PAGES, seed);
	t_fill(z, P2_PAGES, seed + 1);
	REQUIRE_OK(hetmm_migrate_to_device(pg, x, P2_PAGES * PS, NULL));
	REQUIRE_OK(hetmm_migrate_to_device(pg, z, P2_PAGES * PS, NULL));
	if (some)
		REQUIRE_OK(hetmm_migrate_to_system(ctx, x + 4 * PS,
						   P11_SOME * PS, NULL));
}

/*
 * The moves of part 11's threads: A moves X to Y and waits at the gate
 * (y's), its REMAP not queued; B moves Z onto X meanwhile (its UNMAP of
 * X, Z -> X and UNMAP of Z read), then C, if any, makes its move; then
 * A's REMAP is read.
 */
static void p11_moves(struct remapper *a, struct remapper *b,
		      struct remapper *c, int gate)
{
	pthread_t tha, thb, thc;
	pid_t ta;

	REQUIRE(pthread_create(&tha, NULL, remapper_main, a) == 0);
	REQUIRE(pthread_create(&thb, NULL, remapper_main, b) == 0);
	if (c)
		REQUIRE(pthread_create(&thc, NULL, remapper_main, c) == 0);
	ta = remapper_ready(a);
	remapper_ready(b);
	if (c)
		remapper_ready(c);
	__atomic_store_n(&a->go, 1, __ATOMIC_RELEASE);
	p11_gate_wait(gate, ta);
	__atomic_store_n(&b->go, 1, __ATOMIC_RELEASE);
	join(thb);
	REQUIRE(b->r == b->to);
	if (c) {
		__atomic_store_n(&c->go, 1, __ATOMIC_RELEASE);
		join(thc);
		REQUIRE(c->r == c->to);
	}
	p11_gate_release(gate);
	join(tha);
	REQUIRE(a->r == a->to);
}

/* Timeline (a): A first, its REMAP read last. */
static void p11_a(struct hetmm_pagemap *pg, bool y_registered, bool some)
{
	const uint64_t seed = 0x1100 + y_registered * 4 + some * 2;
	char *x = map_apart(P2_PAGES), *z = map_apart(P2_PAGES);
	char *y = map_apart(P2_PAGES);
	struct remapper a = { .from = x, .to = y, .flags = MREMAP_DONTUNMAP };
	struct remapper b = { .from = z, .to = x };
	int gate;

	fprintf(stderr, "part 11: DONTUNMAP X to Y (%s), then Z onto X, "
		"X's pages %s the device; Z's move read first\n",
		y_registered ? "registered" : "plain",
		some ? "partly on" : "all on");
	p11_on_device(pg, x, z, seed, some);
	gate = p11_gate_open(y);
	if (y_registered) {
		t_fill(y, P2_PAGES - 1, seed + 3);
		REQUIRE_OK(hetmm_migrate_to_device(pg, y, (P2_PAGES - 1) * PS,
						   NULL));
	}

	p11_moves(&a, &b, NULL, gate);
	CHECK_OK(hetmm_ctx_sync(ctx));

	CHECK_EQ(t_verify(y, P2_PAGES, seed), 0);
	CHECK_EQ(t_verify(x, P2_PAGES, seed + 1), 0);
	t_unmap(y, P2_PAGES);
	t_unmap(x, P2_PAGES);
	check_all_home(pg);
}

/* Timeline (b): Z onto X first, then X (Z's pages now) to Y with
 * MREMAP_DONTUNMAP.  The handler reads the same events in the same
 * order as in (a); here X's first pages are gone, Z's are at Y and X is
 * empty. */
static void p11_b(struct hetmm_pagemap *pg, bool some)
{
	const uint64_t seed = 0x1180 + some * 2;
	char *x = map_apart(P2_PAGES), *z = map_apart(P2_PAGES);
	char *y = t_reserve(P2_PAGES);

	fprintf(stderr, "part 11: Z onto X, then DONTUNMAP X to Y, "
		"X's pages %s the device\n", some ? "partly on" : "all on");
	p11_on_device(pg, x, z, seed, some);
	REQUIRE(mremap(z, P2_PAGES * PS, P2_PAGES * PS,
		       MREMAP_MAYMOVE | MREMAP_FIXED, x) == x);
	REQUIRE(mremap(x, P2_PAGES * PS, P2_PAGES * PS,
		       MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP,
		       y) == y);
	CHECK_OK(hetmm_ctx_sync(ctx));

	CHECK_EQ(t_verify(y, P2_PAGES, seed + 1), 0);
	check_left_empty(x, P2_PAGES);
	t_unmap(y, P2_PAGES);
	t_unmap(x, P2_PAGES);
	check_all_home(pg);
}

/*
 * Timeline (a) with a third thread C: once B's events are read, before
 * A's REMAP is, C unmaps X (Z's pages now) or moves it on to W.  Before,
 * C's UNMAP of X freed the entries B's UNMAP had parked (X's, at Y now)
 * and spared Z's, which A's REMAP then took to Y: Y read Z's bytes where
 * X's pages were on the device.  C's REMAP judged the parked entries not
 * its own and freed them: Y read zeroes there.  X's pages must be at Y,
 * Z's at W or gone with X.
 */
static void p11_third(struct hetmm_pagemap *pg, bool move, bool some)
{
	const uint64_t seed = 0x11c0 + move * 4 + some * 2;
	const size_t x_on = P2_PAGES - some * P11_SOME;
	char *x = map_apart(P2_PAGES), *z = map_apart(P2_PAGES);
	char *y = map_apart(P2_PAGES), *w = t_reserve(P2_PAGES);
	struct remapper a = { .from = x, .to = y, .flags = MREMAP_DONTUNMAP };
	struct remapper b = { .from = z, .to = x };
	struct remapper c = { .from = x, .to = move ? w : NULL };
	int gate;

	fprintf(stderr, "part 11: DONTUNMAP X to Y, then Z onto X, then X "
		"%s, X's pages %s the device; A's move read last\n",
		move ? "to W" : "unmapped", some ? "partly on" : "all on");
	p11_on_device(pg, x, z, seed, some);
	gate = p11_gate_open(y);
	p11_moves(&a, &b, &c, gate);
	CHECK_OK(hetmm_ctx_sync(ctx));

	CHECK(!mapped(x, P2_PAGES));
	CHECK_EQ(t_count_on_device(ctx, y, P2_PAGES), x_on);
	if (move)
		CHECK_EQ(t_count_on_device(ctx, w, P2_PAGES), P2_PAGES);
	/* Z's frames went with C's munmap, or are W's. */
	CHECK_EQ(t_settled_free(pg, 64 - x_on - move * P2_PAGES),
		 64 - x_on - move * P2_PAGES);
	CHECK_EQ(t_verify(y, P2_PAGES, seed), 0);
	if (move)
		CHECK_EQ(t_verify(w, P2_PAGES, seed + 1), 0);
	t_unmap(y, P2_PAGES);
	t_unmap(w, P2_PAGES);
	check_all_home(pg);
}

static void part11(void)
{
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	uint64_t features;

	t_emu_add(ctx, HETMM_MEMORY_DEVICE_PRIVATE, 64, &emu, &pg);
	REQUIRE_OK(hetmm_ctx_uffd_info(ctx, NULL, &features));
	if (features & UFFD_FEATURE_WP_UNPOPULATED) {
		for (int some = 0; some < 2; some++) {
			p11_a(pg, false, some);
			p11_a(pg, true, some);
			for (int move = 0; move < 2; move++)
				p11_third(pg, move, some);
		}
	} else {
		fprintf(stderr, "part 11: DONTUNMAP X to Y, then Z onto X, "
			"Z's move read first: not checked, this kernel has "
			"no UFFD_FEATURE_WP_UNPOPULATED (Linux 6.5), and "
			"without its markers nothing tells that from the "
			"moves made the other way round\n");
	}
	for (int some = 0; some < 2; some++)
		p11_b(pg, some);
	CHECK_OK(hetmm_emu_destroy(emu));
}

/* ------------------------------------------------------------------------
 * Part 12: part 2's order, and a third thread.  A moves X to Y (its
 * REMAP read first), B moves Z onto the vacated X, then C unmaps X (Z's
 * pages now) or moves it on to W, all before Z -> X is read.  Z -> X
 * then finds X unmapped and Y holding a mapping that lacks every page
 * Z has on the device, as when B had moved first (part 8): before, it
 * followed the record X -> Y and put Z's entries in place of X's at Y
 * (16 pages of Y read Z's bytes; with C's move W read 16 pages of
 * zeroes; no frame lost, X's parked at Y and freed with it).  X's pages
 * must be at Y, Z's at W or freed with C's munmap.
 */
static void part12_third(bool move)
{
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	char *trig = map_apart(1);
	char *x = map_apart(P2_PAGES), *z = map_apart(P2_PAGES);
	char *y = t_reserve(P2_PAGES), *w = t_reserve(P2_PAGES);
	struct remapper a = { .from = x, .to = y };
	struct remapper b = { .from = z, .to = x };
	struct remapper c = { .from = x, .to = move ? w : NULL };

	fprintf(stderr, "part 12: X to Y, Z onto X, then X %s, "
		"Z's move read last\n", move ? "to W" : "unmapped");
	t_emu_add(ctx, HETMM_MEMORY_DEVICE_PRIVATE, 64, &emu, &pg);
	p2_on_device(pg, x, z, trig, 121);

	remaps_while_held((struct remapper *const[]){ &a, &b, &c }, 3, trig);
	CHECK_OK(hetmm_ctx_sync(ctx));

	CHECK(!mapped(x, P2_PAGES));
	CHECK_EQ(t_count_on_device(ctx, y, P2_PAGES), P2_PAGES);
	if (move)
		CHECK_EQ(t_count_on_device(ctx, w, P2_PAGES), P2_PAGES);
	/* Z's frames went with C's munmap; X's (Z's at W) remain. */
	CHECK_EQ(t_settled_free(pg, 64 - P2_PAGES * (1 + move)),
		 64 - P2_PAGES * (1 + move));
	CHECK_EQ(t_verify(y, P2_PAGES, 121), 0);
	if (move)
		CHECK_EQ(t_verify(w, P2_PAGES, 122), 0);
	t_unmap(y, P2_PAGES);
	t_unmap(w, P2_PAGES);
	t_unmap(trig, 1);
	check_all_home(pg);
	CHECK_OK(hetmm_emu_destroy(emu));
}

static void part12(void)
{
	part12_third(false);
	part12_third(true);
}

/* ------------------------------------------------------------------------
 * Part 5: mremap of pages a migration to a device holds, before it moved
 * them out of the process (claimed) or after (copied), with and without
 * MREMAP_DONTUNMAP.  Every byte must be at the new address, on the
 * device or not; the old range (DONTUNMAP) empty; no frame lost.
 */
struct to_dev_job {
	struct hetmm_pagemap *pg;
	char *p;
	int rc;
};

static void *to_device_main(void *arg)
{
	struct to_dev_job *j = arg;

	j->rc = hetmm_migrate_to_device(j->pg, j->p, P1_PAGES * PS, NULL);
	return NULL;
}

static void remap_while_migrating(struct hetmm_pagemap *pg, bool copied,
				  bool dontunmap)
{
	const uint64_t seed = 0x5150 + copied * 2 + dontunmap;
	char *p = map_apart(P1_PAGES), *q = t_reserve(P1_PAGES);
	struct to_dev_job j = { .pg = pg, .p = p };
	struct p1_remap m = { .from = p, .to = q,
			      .flags = dontunmap ? MREMAP_DONTUNMAP : 0 };
	pthread_t th;

	fprintf(stderr, "part 5: mremap of pages a migration %s, %s\n",
		copied ? "copied" : "claimed",
		dontunmap ? "MREMAP_DONTUNMAP" : "plain mremap");
	t_fill(p, P1_PAGES, seed);
	/* Registered beforehand: the migration then raises no event of its
	 * own before the hook. */
	REQUIRE_OK(hetmm_migrate_to_device(pg, p, PS, NULL));
	REQUIRE_OK(hetmm_migrate_to_system(ctx, p, PS, NULL));
	th = start_stopped(to_device_main, &j,
			   copied ? TEST_HOOK_TO_DEVICE_COPIED :
				    TEST_HOOK_TO_DEVICE_CLAIMED,
			   p, P1_PAGES);
	p1_remap_under(&m, th);
	REQUIRE(m.r == q);
	CHECK_OK(hetmm_ctx_sync(ctx));

	CHECK_EQ(t_verify(q, P1_PAGES, seed), 0);
	if (dontunmap) {
		check_left_empty(p, P1_PAGES);
		t_unmap(p, P1_PAGES);
	}
	t_unmap(q, P1_PAGES);
	check_all_home(pg);
}

static void part5(void)
{
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;

	t_emu_add(ctx, HETMM_MEMORY_DEVICE_PRIVATE, 64, &emu, &pg);
	for (int copied = 0; copied < 2; copied++)
		for (int dontunmap = 0; dontunmap < 2; dontunmap++)
			remap_while_migrating(pg, copied, dontunmap);
	CHECK_OK(hetmm_emu_destroy(emu));
}

/* ------------------------------------------------------------------------
 * Part 3: munmap of a coherent page a short-term pin holds.
 */
#define P3_FRAMES 8

static const uint64_t *frame_bytes(struct hetmm_pagemap *pg, uint64_t idx)
{
	return pg->ops->page_address(pg, idx);
}

static void part3(void)
{
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	struct hetmm_pagemap_info pinfo;
	struct hetmm_page_info info;
	struct hetmm_page *page;
	hetmm_pfn_t pfn;
	/* Mapped first: the filler must not take the address p gives up. */
	char *p = map_apart(4), *filler = map_apart(P3_FRAMES);
	void *pinned[1];
	uint64_t idx, refs, pins;
	uint64_t want[PS / 8];

	fprintf(stderr, "part 3: munmap of a pinned coherent page\n");
	t_emu_add(ctx, HETMM_MEMORY_DEVICE_COHERENT, P3_FRAMES, &emu, &pg);
	REQUIRE_OK(hetmm_pagemap_get_info(pg, &pinfo));
	t_fill(p, 4, 31);
	memcpy(want, p + PS, PS);
	REQUIRE_OK(hetmm_migrate_to_device(pg, p, 4 * PS, NULL));
	REQUIRE_OK(hetmm_addr_to_pfn(ctx, p + PS, &pfn));
	idx = hetmm_pfn_number(pfn) - hetmm_pfn_number(pinfo.first_pfn);
	/* A short-term pin holds the coherent page in place. */
	REQUIRE(hetmm_pin_user_pages(ctx, p + PS, 1, 0, pinned) == 1);
	REQUIRE_OK(hetmm_addr_to_pfn(ctx, p + PS, &pfn));
	CHECK_EQ(hetmm_pfn_number(pfn) - hetmm_pfn_number(pinfo.first_pfn),
		 idx);

	t_unmap(p, 4);
	/* The three unpinned frames are free, the pinned one is not. */
	CHECK_EQ(t_settled_free(pg, P3_FRAMES - 1), P3_FRAMES - 1);
	REQUIRE_OK(hetmm_pfn_to_page(pfn, &page));
	REQUIRE_OK(hetmm_page_get_info(page, &info));
	CHECK(info.flags & HETMM_PAGE_ALLOCATED);
	CHECK_EQ(info.pincount, 1);
	/* Fill the device: the pinned frame is not handed out, its bytes
	 * stay what the pin saw. */
	t_fill(filler, P3_FRAMES, 32);
	CHECK(hetmm_migrate_to_device(pg, filler, P3_FRAMES * PS, NULL) == 0);
	CHECK_EQ(t_count_on_device(ctx, filler, P3_FRAMES), P3_FRAMES - 1);
	CHECK(memcmp(frame_bytes(pg, idx), want, PS) == 0);
	/* The address is the process's again: mapped anew, it reads the
	 * new mapping's zeroes. */
	REQUIRE(mmap(p, 4 * PS, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == p);
	CHECK_EQ(t_nonzero_pages(p, 4), 0);
	CHECK_EQ(hetmm_addr_to_pfn(ctx, p + PS, &pfn), -ENOENT);
	CHECK_OK(hetmm_user_page_holds(ctx, p + PS, &refs, &pins));
	CHECK_EQ(pins, 1);

	/* The last unpin succeeds and frees the frame. */
	CHECK_OK(hetmm_unpin_user_pages(ctx, pinned, 1));
	CHECK_EQ(hetmm_unpin_user_pages(ctx, pinned, 1), -EINVAL);
	REQUIRE_OK(hetmm_page_get_info(page, &info));
	CHECK(!(info.flags & HETMM_PAGE_ALLOCATED));
	CHECK_EQ(info.pincount, 0);
	CHECK_EQ(t_settled_free(pg, 1), 1);
	/* And the new page at the address migrates like any other. */
	t_fill(p, 4, 33);
	t_unmap(filler, P3_FRAMES);
	CHECK_OK(hetmm_migrate_to_device(pg, p, 4 * PS, NULL));
	CHECK_EQ(t_count_on_device(ctx, p, 4), 4);
	CHECK_EQ(t_verify(p, 4, 33), 0);
	t_unmap(p, 4);
	CHECK_EQ(t_settled_free(pg, P3_FRAMES), P3_FRAMES);
	CHECK_EQ(t_stats(ctx).device_resident, 0);
	CHECK_OK(hetmm_emu_destroy(emu));
}

/* ------------------------------------------------------------------------
 * Part 6: hot-remove against a fault-back's copy slot.
 */

static void *touch_page(void *arg)
{
	return (void *)(uintptr_t)*(volatile char *)arg;
}

static int p6_rc;                  /* hetmm_pagemap_remove's */
static atomic_bool p6_returned;

static void *remove_pagemap(void *arg)
{
	p6_rc = hetmm_pagemap_remove(arg);
	atomic_store(&p6_returned, true);
	return NULL;
}

static void part6(void)
{
	struct adrv dev;
	pthread_t toucher, remover;
	char *p = map_apart(1);

	fprintf(stderr, "part 6: hot-remove against a fault-back's copy\n");
	atomic_store(&p6_returned, false);
	REQUIRE_OK(adrv_create(ctx, &dev, 16, true, 0, 4,
			       HETMM_COPY_TIMEOUT_DEFAULT_MS * t_time_scale(),
			       0));
	t_fill(p, 1, 61);
	REQUIRE_OK(hetmm_migrate_to_device(dev.pg, p, PS, NULL));
	stop_arm(0, TEST_HOOK_BACK_PIECE_DONE, p, 1);
	REQUIRE(pthread_create(&toucher, NULL, touch_page, p) == 0);
	stop_wait(0);
	/* The page is home and its frame free; the handler holds its
	 * slot.  The removal must not end (nor free the queue) before the
	 * slot is back. */
	REQUIRE(pthread_create(&remover, NULL, remove_pagemap, dev.pg) == 0);
	usleep(500000);
	CHECK(!atomic_load(&p6_returned));
	stop_release(0);
	join(remover);
	CHECK_OK(p6_rc);
	join(toucher);
	CHECK_EQ(t_verify(p, 1, 61), 0);
	adrv_destroy(&dev);
	t_unmap(p, 1);
}

/* ------------------------------------------------------------------------
 * Part 7: a context's end while its deputy's exit unmaps memory in a
 * mapping registered whole, as ASan's does for the thread's own memory
 * (1 run of 4 of this test hung so, under load).  The userfaultfd must
 * be closed by then: its UNMAP event would wait for a handler that
 * reads no more.
 */
static void *destroy_main(void *arg)
{
	CHECK_OK(hetmm_ctx_destroy(arg));
	return NULL;
}

static void part7(void)
{
	struct hetmm_ctx *c;
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	char *p = map_apart(2);
	pthread_t th;

	fprintf(stderr, "part 7: the deputy's exit unmaps registered memory\n");
	t_emu_up(&c, NULL, 4, &emu, &pg);
	t_fill(p, 2, 71);
	/* Registered whole once a page of it has been on the device. */
	REQUIRE_OK(hetmm_migrate_to_device(pg, p, PS, NULL));
	REQUIRE_OK(hetmm_migrate_to_system(c, p, PS, NULL));
	CHECK_OK(hetmm_emu_destroy(emu));
	atomic_store(&deputy_exit_unmaps, p + PS);
	REQUIRE(pthread_create(&th, NULL, destroy_main, c) == 0);
	join(th);
	CHECK(atomic_load(&deputy_exit_unmaps) == NULL);
	CHECK_EQ(t_verify(p, 1, 71), 0);
	t_unmap(p, 1);
}

int main(void)
{
	uint64_t features;

	__atomic_store_n(&test_hook, hook, __ATOMIC_RELEASE);
	/* As the kernel offers, then as on one without UFFDIO_MOVE. */
	for (int no_move = 0; no_move < 2; no_move++) {
		fprintf(stderr, "%s\n", no_move ? "copy path (no UFFDIO_MOVE)"
						: "as the kernel offers");
		__atomic_store_n(&test_no_move, no_move,
				 __ATOMIC_RELEASE);
		REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
		REQUIRE_OK(hetmm_ctx_uffd_info(ctx, NULL, &features));
		moves = features & UFFD_FEATURE_MOVE;
		CHECK(!(no_move && moves));
		part1();
		part2();
		part3();
		part4();
		part5();
		part6();
		part8();
		part9();
		part10();
		part11();
		part12();
		CHECK_OK(hetmm_ctx_destroy(ctx));
	}
	part7();
	__atomic_store_n(&test_hook, NULL, __ATOMIC_RELEASE);
	return t_done();
}
