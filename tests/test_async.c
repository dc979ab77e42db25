/* SPDX-License-Identifier: MIT */
/*
 * test_async - asynchronous copies: a driver (tests/adrv.h, public header
 * only) whose own thread completes copies late and out of order.
 * Migration to the device, fault-back with fault-around (sequential,
 * random, several threads at once) and explicit migration back keep many
 * copies in flight, and every byte arrives.  A random access's dense
 * region comes back with its copies in flight together, and a region
 * with nothing left on the device but the faulting page comes back as a
 * lone page (dense_region).
 */
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "adrv.h"
#include "t.h"
#include "testhook.h"

#define NP 4096   /* pagecheck: pages, 16 MiB at 4 KiB */

static struct hetmm_ctx *ctx;
static struct adrv dev;

/* The library's copy timeout, scaled on a slow machine (t_time_scale():
 * under software emulation a copy behind a busy handler took longer). */
static void up(uint64_t latency_ns)
{
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	REQUIRE_OK(adrv_create(ctx, &dev, 2 * NP, true, latency_ns, 16,
			       HETMM_COPY_TIMEOUT_DEFAULT_MS * t_time_scale(),
			       0));
}

static void down(void)
{
	REQUIRE_OK(hetmm_ctx_destroy(ctx));
	adrv_destroy(&dev);
	CHECK_EQ(atomic_load(&dev.done_errors), 0);
	CHECK_EQ(atomic_load(&dev.failures), 0);
}

/* Many copies in flight, completed out of order, both ways. */
static void check_in_flight(void)
{
	printf("  copies %u, most in flight %u, out of order %u\n",
	       atomic_load(&dev.copies), atomic_load(&dev.max_in_flight),
	       atomic_load(&dev.out_of_order));
	CHECK(atomic_load(&dev.max_in_flight) >= 4);
	CHECK(atomic_load(&dev.out_of_order) > 0);
}

/* Sequential read: fault-around windows come back piece by piece. */
static void sequential(void)
{
	up(50000);
	char *p = t_map(NP);
	t_fill(p, NP, 1);
	CHECK_OK(hetmm_migrate_to_device(dev.pg, p, NP * PS, NULL));
	CHECK_EQ(t_count_on_device(ctx, p, NP), NP);
	check_in_flight();
	atomic_store(&dev.max_in_flight, 0);
	CHECK_EQ(t_verify(p, NP, 1), 0);
	CHECK_EQ(t_count_on_device(ctx, p, NP), 0);
	check_in_flight();
	t_unmap(p, NP);
	down();
}

/* Random reads, then the rest by explicit migration back. */
static void random_then_explicit(void)
{
	up(20000);
	char *p = t_map(NP);
	t_fill(p, NP, 2);
	CHECK_OK(hetmm_migrate_to_device(dev.pg, p, NP * PS, NULL));
	uint64_t x = 99;
	for (int i = 0; i < 300; i++) {
		x = t_mix(x);
		size_t pg = x % NP;
		CHECK_EQ(t_verify_from(p + pg * PS, 1, 2, pg), 0);
	}
	int rc = hetmm_migrate_to_system(ctx, p, NP * PS, NULL);
	CHECK(rc == 0 || rc == -ENOENT);
	CHECK_EQ(t_count_on_device(ctx, p, NP), 0);
	CHECK_EQ(t_verify(p, NP, 2), 0);
	check_in_flight();
	t_unmap(p, NP);
	down();
}

struct reader {
	char *p;
	size_t first, n;
	uint64_t seed;
	size_t bad;
};

static void *read_part(void *arg)
{
	struct reader *r = arg;
	r->bad = t_verify_from(r->p + r->first * PS, r->n, r->seed, r->first);
	return NULL;
}

/* Four threads fault their quarters back at once, writers between
 * migrations; twice round. */
static void threads(void)
{
	up(30000);
	char *p = t_map(NP);
	for (int round = 0; round < 2; round++) {
		uint64_t seed = 10 + (uint64_t)round;
		t_fill(p, NP, seed);
		CHECK_OK(hetmm_migrate_to_device(dev.pg, p, NP * PS, NULL));
		pthread_t th[4];
		struct reader r[4];
		for (int i = 0; i < 4; i++) {
			r[i] = (struct reader){ p, (size_t)i * NP / 4, NP / 4,
						seed, 0 };
			REQUIRE(pthread_create(&th[i], NULL, read_part,
					       &r[i]) == 0);
		}
		for (int i = 0; i < 4; i++) {
			pthread_join(th[i], NULL);
			CHECK_EQ(r[i].bad, 0);
		}
	}
	check_in_flight();
	t_unmap(p, NP);
	down();
}

/* Scattered frames: runs of one page each, many small copies at once. */
static void scattered(void)
{
	up(10000);
	char *p = t_map(NP);
	t_fill(p, NP, 3);
	CHECK_OK(hetmm_migrate_to_device(dev.pg, p, NP * PS, NULL));
	/* Bring every other page back, then migrate other memory into the
	 * holes it leaves, so that frames and addresses interleave. */
	for (size_t i = 0; i < NP; i += 2)
		CHECK_OK(hetmm_migrate_to_system(ctx, p + i * PS, PS, NULL));
	char *q = t_map(NP / 2);
	t_fill(q, NP / 2, 4);
	CHECK_OK(hetmm_migrate_to_device(dev.pg, q, NP / 2 * PS, NULL));
	CHECK_OK(hetmm_migrate_to_device(dev.pg, p, NP * PS, NULL));
	CHECK_EQ(t_verify(p, NP, 3), 0);
	CHECK_EQ(t_verify(q, NP / 2, 4), 0);
	check_in_flight();
	t_unmap(p, NP);
	t_unmap(q, NP / 2);
	down();
}

struct discarder {
	char *p;
	atomic_bool stop;
	unsigned rounds;
};

/* Discard the odd pages of the first chunk again and again, a round
 * every half copy latency (faster starves the migration of the handler,
 * which reads each discard's event; on a slow machine, slower still). */
static void *discard_loop(void *arg)
{
	struct discarder *d = arg;
	while (!atomic_load(&d->stop)) {
		for (size_t i = 1; i < 512; i += 2)
			madvise(d->p + i * PS, PS, MADV_DONTNEED);
		d->rounds++;
		adrv_sleep_ns(1000000ull * t_time_scale());
	}
	return NULL;
}

/*
 * The process discards pages while the driver's thread copies them: its
 * read of a discarded page gets zeroes, as the migrating thread's would,
 * instead of waiting for a commit that waits for it (no copy may time
 * out).  Discarded pages read as zeroes, the others as written.
 */
static void discard_racing(void)
{
	up(2000000);   /* 2 ms a copy: the race window is wide */
	char *p = t_map(NP);
	for (int round = 0; round < 3; round++) {
		t_fill(p, NP, 5);
		struct discarder d = { .p = p };
		pthread_t th;
		REQUIRE(pthread_create(&th, NULL, discard_loop, &d) == 0);
		double t0 = t_now();
		int rc = hetmm_migrate_to_device(dev.pg, p, NP * PS, NULL);
		double t1 = t_now();
		atomic_store(&d.stop, true);
		pthread_join(th, NULL);
		printf("  migration %.3f s, join %.3f s, %u discard rounds\n",
		       t1 - t0, t_now() - t1, d.rounds);
		CHECK_OK(rc);
		if (!d.rounds)   /* every odd page discarded once at least */
			for (size_t i = 1; i < 512; i += 2)
				madvise(p + i * PS, PS, MADV_DONTNEED);
		for (size_t i = 0; i < NP; i++) {
			if (i < 512 && (i & 1))
				CHECK_EQ(t_nonzero_pages(p + i * PS, 1), 0);
			else
				CHECK_EQ(t_verify_from(p + i * PS, 1, 5, i), 0);
		}
	}
	CHECK_EQ(t_stats(ctx).copy_errors, 0);
	t_unmap(p, NP);
	down();
}

/* A thread that writes its round into the first word of every page,
 * again and again, until told to stop; `written` once the first round
 * is in every page. */
struct writer {
	char *p;
	atomic_bool stop, written;
	uint64_t rounds;
};

static void *write_loop(void *arg)
{
	struct writer *w = arg;
	while (!atomic_load(&w->stop)) {
		w->rounds++;
		for (size_t i = 0; i < NP; i++)
			memcpy(w->p + i * PS, &w->rounds, sizeof(w->rounds));
		atomic_store(&w->written, true);
	}
	return NULL;
}

/*
 * The process writes pages while they move to the device: where the
 * kernel moves pages (UFFDIO_MOVE), a chunk's pages leave the process
 * for hetmm's stage before the driver copies them, and a write there
 * faults and must wait for the commit, then land on the page brought
 * back.  Taken for the driver's own read of a page the process
 * discarded (the zero fill of discard_racing), the write landed on a
 * zero page that the migration then zapped: lost.  Every page ends
 * with the writer's last round and the rest of its bytes as filled.
 */
static void writes_racing(void)
{
	up(500000);
	char *p = t_map(NP);
	t_fill(p, NP, 6);
	struct writer w = { .p = p };
	pthread_t th;
	REQUIRE(pthread_create(&th, NULL, write_loop, &w) == 0);
	/* The writer is under way before the first migration: on a loaded
	 * machine it did not run before the last (0 write rounds), nothing
	 * raced, and its pages held the fill, not a round. */
	while (!atomic_load(&w.written))
		sched_yield();
	/* The first moves every page; a later one may find none the writer
	 * brought back yet (-ENOENT, under emulation). */
	CHECK_OK(hetmm_migrate_to_device(dev.pg, p, NP * PS, NULL));
	for (int round = 1; round < 10; round++) {
		int rc = hetmm_migrate_to_device(dev.pg, p, NP * PS, NULL);
		CHECK(rc == 0 || rc == -ENOENT);
	}
	atomic_store(&w.stop, true);
	pthread_join(th, NULL);
	printf("  %" PRIu64 " write rounds\n", w.rounds);
	size_t bad = 0;
	for (size_t i = 0; i < NP; i++) {
		uint64_t got;
		memcpy(&got, p + i * PS, sizeof(got));
		uint64_t want = t_word(t_page_seed(6, i), 0);
		memcpy(p + i * PS, &want, sizeof(want));
		bad += got != w.rounds || t_verify_from(p + i * PS, 1, 6, i);
	}
	CHECK_EQ(bad, 0);
	CHECK_EQ(t_stats(ctx).copy_errors, 0);
	t_unmap(p, NP);
	down();
}

/*
 * Pages the kernel will not move (shared with a fork child) take the
 * copy path, and so does the rest of their chunk: a chunk is staged
 * whole or not at all (migrate.c, chunk_stage), so the pages it staged
 * before the refused one go back first.  Here every chunk's first 100
 * pages are the parent's own (written after the fork) and the rest
 * shared: each chunk stages 100 pages, meets a refusal, and gives them
 * back.  Every page reaches the device, and every byte comes back.
 */
static void shared_with_child(void)
{
	up(50000);
	char *p = t_map(NP);
	t_fill(p, NP, 7);
	pid_t child = fork();
	REQUIRE(child >= 0);
	if (child == 0) {
		pause();
		_exit(0);
	}
	for (size_t c = 0; c < NP; c += 512)
		t_fill_from(p + c * PS, 100, 7, c);
	CHECK_OK(hetmm_migrate_to_device(dev.pg, p, NP * PS, NULL));
	CHECK_EQ(t_count_on_device(ctx, p, NP), NP);
	CHECK_EQ(t_verify(p, NP, 7), 0);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	t_unmap(p, NP);
	down();
}

/* ------------------------------------------------------------------------
 * The pipeline kept full across chunks
 */

/* Pieces of one chunk (512 pages, base.h): no more could be in flight if
 * each chunk's copies were waited for before the next chunk's. */
#define CHUNK_PIECES (512 / HETMM_COPY_MAX_PAGES)

/* The deepest queue, and copies slow enough (4 ms) to pile up in it
 * even where submitting a piece is slow: at 1 ms, a loaded 6.12 guest
 * under software emulation had no more than 8 in flight at once. */
static void deep_up(void)
{
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	REQUIRE_OK(adrv_create(ctx, &dev, 2 * NP, true, 4000000,
			       HETMM_COPY_DEPTH_MAX,
			       HETMM_COPY_TIMEOUT_DEFAULT_MS * t_time_scale(),
			       0));
}

static unsigned most_in_flight(const char *what)
{
	unsigned m = atomic_load(&dev.max_in_flight);
	printf("  %s: most in flight %u (a chunk has %u pieces)\n", what, m,
	       CHUNK_PIECES);
	atomic_store(&dev.max_in_flight, 0);
	return m;
}

/* A migration back and a fault-around window of several chunks each keep
 * more than one chunk's copies in flight, and every byte arrives. */
static void pipeline_depth(void)
{
	deep_up();
	char *p = t_map(NP);
	t_fill(p, NP, 6);
	CHECK_OK(hetmm_migrate_to_device(dev.pg, p, NP * PS, NULL));
	most_in_flight("to the device");
	struct hetmm_migrate_report rep = { 0 };
	CHECK_OK(hetmm_migrate_to_system(ctx, p, NP * PS, &rep));
	CHECK_EQ(rep.moved, NP);
	CHECK(most_in_flight("migration back") > CHUNK_PIECES);
	CHECK_EQ(t_verify(p, NP, 6), 0);

	CHECK_OK(hetmm_migrate_to_device(dev.pg, p, NP * PS, NULL));
	most_in_flight("to the device");
	CHECK_EQ(t_verify(p, NP, 6), 0);      /* sequential faults */
	CHECK_EQ(t_count_on_device(ctx, p, NP), 0);
	CHECK(most_in_flight("fault-around") > CHUNK_PIECES);
	t_unmap(p, NP);
	down();
}

/* Pages [from, to) read right, skipping those on the device. */
static size_t verify_back(struct hetmm_ctx *c, const char *p, size_t from,
			  size_t to, uint64_t seed)
{
	size_t bad = 0;
	for (size_t i = from; i < to; i++)
		if (!t_count_on_device(c, p + i * PS, 1))
			bad += t_verify_from(p + i * PS, 1, seed, i);
	return bad;
}

/*
 * The handler held where a fault-around window's piece that reaches
 * hold_at is done with (installed and woken): the window's later pieces
 * stay in flight, while the faulting thread, woken piece by piece, runs
 * on up to there.  Held until the test lets go (bounded: a test that
 * never does costs 20 s, not a hang).
 */
static uintptr_t hold_at;
static atomic_int hold_state;        /* 0 armed, 1 holding, 2 let go */

static void hold_hook(enum test_hook_point point, uintptr_t addr, size_t len)
{
	int armed = 0;
	if (point != TEST_HOOK_BACK_PIECE_DONE || addr + len <= hold_at ||
	    !atomic_compare_exchange_strong(&hold_state, &armed, 1))
		return;
	double until = t_now() + 20 * t_time_scale();
	while (atomic_load(&hold_state) == 1 && t_now() < until)
		usleep(100);
}

/* A copy that fails in the middle of a long pipeline leaves its piece on
 * the device, whole, and every other page right: explicit migration back
 * (-EIO, SKIP_ERROR for that piece alone) and a fault-around window. */
static void pipeline_error(void)
{
	deep_up();
	char *p = t_map(NP);
	t_fill(p, NP, 7);
	size_t bad = NP / 2 + 10;
	CHECK_OK(hetmm_migrate_to_device(dev.pg, p, NP * PS, NULL));
	int64_t idx = adrv_index_at(ctx, p + bad * PS);
	REQUIRE(idx >= 0);
	atomic_store(&dev.bad_index, idx);
	uint8_t *st = calloc(NP, 1);
	REQUIRE(st);
	struct hetmm_migrate_report rep = { .status = st };
	CHECK_EQ(hetmm_migrate_to_system(ctx, p, NP * PS, &rep), -EIO);
	size_t failed = 0, lo = NP, hi = 0;
	for (size_t i = 0; i < NP; i++) {
		if (st[i] != HETMM_MIGRATE_SKIP_ERROR) {
			CHECK_EQ(st[i], HETMM_MIGRATE_MOVED);
			continue;
		}
		failed++;
		lo = i < lo ? i : lo;
		hi = i + 1;
	}
	/* One piece, holding the bad page, and nothing else. */
	CHECK_EQ(st[bad], HETMM_MIGRATE_SKIP_ERROR);
	CHECK(failed >= 1 && failed <= HETMM_COPY_MAX_PAGES);
	CHECK_EQ(hi - lo, failed);
	CHECK_EQ(rep.moved, NP - failed);
	CHECK_EQ(t_count_on_device(ctx, p, NP), failed);
	CHECK_EQ(t_count_on_device(ctx, p + lo * PS, failed), failed);
	CHECK_EQ(verify_back(ctx, p, 0, NP, 7), 0);
	atomic_store(&dev.bad_index, -1);
	CHECK_EQ(t_verify(p, NP, 7), 0);      /* the piece comes back now */

	/* The same on the fault path: sequential reads up to the bad
	 * page's piece grow a window over it and past it.  Each piece wakes
	 * as it lands, so the reads return while the rest of the window,
	 * the bad piece with it, is still in flight (held open here, as a
	 * slow machine leaves it: the 6.12 guest): its pages are on their
	 * way back (-ENOENT, hetmm_addr_to_pfn) until the handler is done
	 * with the fault, which hetmm_ctx_sync() waits for.  Base pages:
	 * a huge device page comes back whole on a fault of its own
	 * (test_thp), and at THP "always" khugepaged could collapse the
	 * pages brought back above. */
	CHECK_OK(madvise(p, NP * PS, MADV_NOHUGEPAGE));
	CHECK_OK(hetmm_migrate_to_device(dev.pg, p, NP * PS, NULL));
	idx = adrv_index_at(ctx, p + bad * PS);
	REQUIRE(idx >= 0);
	atomic_store(&dev.bad_index, idx);
	size_t before = bad - HETMM_COPY_MAX_PAGES;
	hold_at = (uintptr_t)(p + before * PS);
	atomic_store(&hold_state, 0);
	__atomic_store_n(&test_hook, hold_hook, __ATOMIC_RELEASE);
	CHECK_EQ(t_verify(p, before, 7), 0);
	/* The pieces past `before` may land after the reads return (the
	 * 6.1 guest): wait for the one the hook holds. */
	double until = t_now() + 20 * t_time_scale();
	while (atomic_load(&hold_state) != 1 && t_now() < until)
		usleep(100);
	CHECK_EQ(atomic_load(&hold_state), 1);
	hetmm_pfn_t pfn;
	CHECK_EQ(hetmm_addr_to_pfn(ctx, p + bad * PS, &pfn), -ENOENT);
	atomic_store(&hold_state, 2);
	__atomic_store_n(&test_hook, NULL, __ATOMIC_RELEASE);
	CHECK_OK(hetmm_ctx_sync(ctx));
	size_t left = t_count_on_device(ctx, p, NP);
	printf("  after the window: %zu pages on the device\n", left);
	CHECK(t_count_on_device(ctx, p + bad * PS, 1) == 1);
	/* The window went past it, and left its piece alone. */
	CHECK(left >= 1 && left <= HETMM_COPY_MAX_PAGES);
	CHECK_EQ(verify_back(ctx, p, 0, NP, 7), 0);
	CHECK_EQ(t_verify_from(p + (bad + HETMM_COPY_MAX_PAGES) * PS,
			       NP - bad - HETMM_COPY_MAX_PAGES, 7,
			       bad + HETMM_COPY_MAX_PAGES), 0);
	atomic_store(&dev.bad_index, -1);
	CHECK_EQ(t_verify(p, NP, 7), 0);
	CHECK_EQ(t_count_on_device(ctx, p, NP), 0);
	free(st);
	t_unmap(p, NP);
	REQUIRE_OK(hetmm_ctx_destroy(ctx));
	adrv_destroy(&dev);
	CHECK_EQ(atomic_load(&dev.done_errors), 0);
}

/* dense_region: the page a lone fault in it was for, and whether one
 * was. */
static uintptr_t lone_page;
static atomic_int lone_seen;

static void lone_hook(enum test_hook_point point, uintptr_t addr, size_t len)
{
	if (point == TEST_HOOK_FAULT_LONE && addr == lone_page && len == PS)
		atomic_store(&lone_seen, 1);
}

/* A density block of fault.c's, in pages (a migration chunk). */
#define DENSE_BLOCK 512

/* Faults at pages no stream predicts, in a block of their own: every
 * stream forgotten (fault.c keeps 4), the next fault's is new. */
static void forget_streams(char *p, size_t block)
{
	for (size_t k = 0; k < 8; k++)
		CHECK_EQ(t_verify_from(p + (block + 64 * k) * PS, 1, 7,
				       block + 64 * k), 0);
}

/*
 * Pages 0, 2, 4 and 6 faulted alone (one in two of each pair and four:
 * no region more than half asked for), then 1: five of [0, 8) asked for,
 * the region comes back, its four pages left on the device in four runs
 * of one, copied together (one after the other before: four latencies
 * for a random access).  Then 100 alone, and 101: both of their pair
 * asked for, but only 101 is left, and it comes back as a lone page,
 * installed by the fill that wakes its thread.
 */
static void dense_region(void)
{
	up(100 * 1000 * 1000);   /* 100 ms a copy: the four overlap, or not */
	char *p = t_map(2 * DENSE_BLOCK);
	CHECK_OK(madvise(p, 2 * DENSE_BLOCK * PS, MADV_NOHUGEPAGE));
	t_fill(p, 2 * DENSE_BLOCK, 7);
	CHECK_OK(hetmm_migrate_to_device(dev.pg, p, 2 * DENSE_BLOCK * PS,
					 NULL));
	for (size_t pg = 0; pg < 8; pg += 2)
		CHECK_EQ(t_verify_from(p + pg * PS, 1, 7, pg), 0);
	CHECK_EQ(t_count_on_device(ctx, p, 8), 4);
	forget_streams(p, DENSE_BLOCK);
	atomic_store(&dev.max_in_flight, 0);
	CHECK_EQ(t_verify_from(p + PS, 1, 7, 1), 0);
	/* Woken as its own copy landed: the others may still land. */
	unsigned most = atomic_load(&dev.max_in_flight);
	printf("  a region's 4 runs: most in flight %u\n", most);
	CHECK(most >= 4);
	CHECK_EQ(t_verify(p, 8, 7), 0);

	CHECK_EQ(t_verify_from(p + 100 * PS, 1, 7, 100), 0);
	forget_streams(p, DENSE_BLOCK + 32);
	CHECK_EQ(t_count_on_device(ctx, p + 101 * PS, 1), 1);
	lone_page = (uintptr_t)(p + 101 * PS);
	atomic_store(&lone_seen, 0);
	__atomic_store_n(&test_hook, lone_hook, __ATOMIC_RELEASE);
	CHECK_EQ(t_verify_from(p + 101 * PS, 1, 7, 101), 0);
	__atomic_store_n(&test_hook, NULL, __ATOMIC_RELEASE);
	printf("  a region of the faulting page alone: lone %d\n",
	       atomic_load(&lone_seen));
	CHECK_EQ(atomic_load(&lone_seen), 1);
	CHECK_EQ(t_verify(p, 2 * DENSE_BLOCK, 7), 0);
	t_unmap(p, 2 * DENSE_BLOCK);
	down();
}

int main(int argc, char **argv)
{
	RUN(sequential);
	RUN(random_then_explicit);
	RUN(threads);
	RUN(scattered);
	RUN(discard_racing);
	RUN(writes_racing);
	RUN(shared_with_child);
	RUN(pipeline_depth);
	RUN(pipeline_error);
	RUN(dense_region);
	return t_done();
}
