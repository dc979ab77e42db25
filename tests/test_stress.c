/* SPDX-License-Identifier: MIT */
/*
 * test_stress: everything at once, for a bounded time.
 *
 * Threads share one region and each own another.  All the while they
 *   - fault the same and different pages (reads and writes),
 *   - migrate them to two devices (one small enough to fill) and back,
 *   - pin and unpin their own pages (pinned pages must stay put),
 *   - munmap their own region and map a new one, mremap it elsewhere,
 *   - MADV_DONTNEED parts of it (which must read as zeroes after),
 *   - read shared pages through device mirrors.
 * Every page carries a pattern of (version, page) and is checked whenever
 * its owner (or the holder of its lock) knows what it must hold, so a lost
 * write, a stale page or a page at the wrong place fails the test.  At the
 * end: no frame leaked, nothing device resident, no pin left.
 *
 * HETMM_STRESS_SECONDS sets the duration (default 2); `make soak` runs it
 * for SOAK_SECONDS (1800).  HETMM_STRESS_OPS (a bit mask) picks the ops: see op_mask.
 */
#include <pthread.h>

#include "t.h"

#define NDEV_A 1024
#define NDEV_B 192           /* fills up: migrations to it see -ENOMEM */
#define NTHREADS 4
#define SHARED_PAGES 64
#define OWN_PAGES 48

static struct hetmm_ctx *ctx;
static struct hetmm_emu *emu_a, *emu_b;
static struct hetmm_pagemap *pg_a, *pg_b;
static struct hetmm_mirror *mir_a, *mir_b;
static double deadline;
/*
 * Which ops run (bit k: ops[k] in worker_main): all of them, unless
 * HETMM_STRESS_OPS (a bit mask) says otherwise.
 *
 * op_unmap was long left out of the default: plain 4-second runs with
 * every op failed now and then (1 of 123, then 1 of 40), a shared page
 * (never unmapped or discarded) reading zeroes through the CPU and
 * through a mirror.  The copy path's zap then lost pages whose REMOVE
 * event the handler handled after the commit (fixed in order.c,
 * migrator_zap); after that fix 0 of 108 and 0 of 135.  A sync with the
 * handler could still complete before an event the kernel queued before
 * it, read later in the same batch, was handled (the kernel hands out
 * faults before events; fixed in fault.c); test_window covers the
 * mremap races this test used to steer clear of.  A fault the handler
 * read went stale (its thread woken by another's install and gone on to
 * a sync, so in a migrator slot) and was answered with a zero page over
 * a page on its way to a device, as a migrator's copy reading a page
 * zapped under it is (fixed in order.c, migrators_copying; test_stale).
 */
#define OPS_ALL 0xffu
#define OPS_DEFAULT OPS_ALL
static unsigned op_mask = OPS_DEFAULT;

/* The shared region: page i holds the pattern (shared_ver[i], i). */
static char *shared;
static pthread_mutex_t shared_lock[SHARED_PAGES];
static uint64_t shared_ver[SHARED_PAGES];

struct worker {
	unsigned id;
	uint64_t rng;
	char *own;                  /* OWN_PAGES, pattern (ver, page) */
	char *slot[2];              /* where own may be: see op_remap */
	unsigned cur;               /* own == slot[cur] */
	uint64_t ver;
	uint8_t zero[OWN_PAGES];    /* discarded since the last fill */
	uint64_t ops[8];
	/* The last ops (index into ops[]), newest at (nlast - 1) % 16:
	 * printed when an own page is wrong, as a trace to go on. */
	uint8_t last[16];
	uint64_t nlast;
};

static void own_report(struct worker *w, size_t page)
{
	static const char *const name[] = {
		"migrate", "write", "pin", "dontneed",
		"remap", "unmap", "shared", "shared_migrate",
	};
	char trace[256];
	size_t len = 0;
	hetmm_pfn_t pfn;
	uint8_t vec = 0;
	int rc = hetmm_addr_to_pfn(ctx, w->own + page * PS, &pfn);

	for (uint64_t k = w->nlast > 16 ? w->nlast - 16 : 0; k < w->nlast; k++)
		len += (size_t)snprintf(trace + len, sizeof(trace) - len, " %s",
					name[w->last[k % 16]]);
	mincore(w->own + page * PS, PS, &vec);
	fprintf(stderr,
		"stress: worker %u own page %zu (slot %u, %p): %s, %s;"
		" last ops, oldest first:%s\n",
		w->id, page, w->cur, (void *)(w->own + page * PS),
		rc == 0 ? "on a device" : "not on a device",
		(vec & 1) ? "resident" : "not resident", trace);
}

static uint64_t rnd(struct worker *w)
{
	w->rng ^= w->rng << 13;
	w->rng ^= w->rng >> 7;
	w->rng ^= w->rng << 17;
	return w->rng;
}

static int migrate_ok(int rc)
{
	return rc == 0 || rc == -ENOENT || rc == -ENOMEM;
}

/* The owner's pages hold what it last wrote, or zeroes where discarded. */
static void own_verify(struct worker *w)
{
	for (size_t i = 0; i < OWN_PAGES; i++) {
		int bad = w->zero[i] ? t_nonzero_pages(w->own + i * PS, 1) != 0
				     : t_verify_from(w->own + i * PS, 1, w->ver,
						     i) != 0;

		CHECK(!bad);
		if (bad)
			own_report(w, i);
	}
}

static void own_fill(struct worker *w)
{
	w->ver = t_mix(w->ver + w->id + 1);
	t_fill(w->own, OWN_PAGES, w->ver);
	memset(w->zero, 0, sizeof(w->zero));
}

static struct hetmm_pagemap *pick_dev(struct worker *w)
{
	return rnd(w) & 1 ? pg_a : pg_b;
}

/* Migrate a random part of the own region to a device, or back. */
static void op_migrate(struct worker *w)
{
	size_t a = rnd(w) % OWN_PAGES, n = 1 + rnd(w) % (OWN_PAGES - a);
	struct hetmm_migrate_report rep;
	int rc;

	memset(&rep, 0, sizeof(rep));
	if (rnd(w) % 3)
		rc = hetmm_migrate_to_device(pick_dev(w), w->own + a * PS,
					     n * PS, &rep);
	else
		rc = hetmm_migrate_to_system(ctx, w->own + a * PS, n * PS,
					     &rep);
	CHECK(migrate_ok(rc));
}

/* Write a few own pages (faulting them back if on a device). */
static void op_write(struct worker *w)
{
	own_verify(w);
	own_fill(w);
}

/* Pinned pages stay where they are through a migration, bytes intact. */
static void op_pin(struct worker *w)
{
	enum { NP = 4 };
	size_t a = rnd(w) % (OWN_PAGES - NP);
	void *pages[NP];
	uint8_t status[OWN_PAGES];
	struct hetmm_migrate_report rep;
	long got;
	int rc;

	got = (rnd(w) & 1)
		      ? hetmm_pin_user_pages_fast(ctx, w->own + a * PS, NP,
						  HETMM_FOLL_WRITE, pages)
		      : hetmm_pin_user_pages(ctx, w->own + a * PS, NP,
					     HETMM_FOLL_WRITE |
						     HETMM_FOLL_LONGTERM,
					     pages);
	CHECK_EQ(got, NP);
	if (got != NP) {
		if (got > 0)
			CHECK_OK(hetmm_unpin_user_pages(ctx, pages,
							(size_t)got));
		return;
	}
	memset(&rep, 0, sizeof(rep));
	memset(status, 0, sizeof(status));
	rep.status = status;
	rc = hetmm_migrate_to_device(pick_dev(w), w->own, OWN_PAGES * PS,
				     &rep);
	CHECK(migrate_ok(rc));
	for (size_t i = a; i < a + NP; i++) {
		hetmm_pfn_t pfn;

		CHECK_EQ(status[i], HETMM_MIGRATE_SKIP_PINNED);
		CHECK_EQ(hetmm_addr_to_pfn(ctx, w->own + i * PS, &pfn),
			 -ENOENT);
	}
	/* A pinned page held for write can be written (by "DMA"). */
	t_fill_from(w->own + a * PS, NP, w->ver, a);
	CHECK_OK(hetmm_unpin_user_pages(ctx, pages, NP));
	for (size_t i = a; i < a + NP; i++)
		w->zero[i] = 0;
}

static void op_dontneed(struct worker *w)
{
	size_t a = rnd(w) % OWN_PAGES, n = 1 + rnd(w) % (OWN_PAGES - a);

	REQUIRE(madvise(w->own + a * PS, n * PS, MADV_DONTNEED) == 0);
	memset(w->zero + a, 1, n);
	own_verify(w);
}

/*
 * mremap the own region to the worker's other slot, whatever other ops
 * left on the devices: hetmm registers the mapping whole, never splits it
 * (fuzz/FINDINGS.md F5), so it moves as one.
 *
 * Each worker keeps to its own two slots, mapped with MAP_FIXED, so that
 * no address one thread gives up is mapped by another: the kernel's
 * events of two threads' mremaps can reach the handler in another order
 * than the kernel made the moves (test_window, part 2, for the one such
 * order hetmm sorts out), and this test checks bytes, not that.
 */
static void op_remap(struct worker *w)
{
	char *q = w->slot[!w->cur], *r;

	/* DONTUNMAP leaves an empty mapping behind: the slot is never a
	 * hole that another thread's mmap (the sanitizer's, the library's)
	 * could take, and that the reservation below would then clobber. */
	r = mremap(w->own, OWN_PAGES * PS, OWN_PAGES * PS,
		   MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, q);
	REQUIRE(r == q);
	/* Keep the slot left behind ours. */
	REQUIRE(mmap(w->own, OWN_PAGES * PS, PROT_NONE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
		     -1, 0) == w->own);
	w->cur = !w->cur;
	w->own = r;
	own_verify(w);
}

/*
 * Map a new own region over the old one: MAP_FIXED unmaps the old one
 * (an UNMAP event, as munmap raises) and maps the new one in one call.
 * munmap then mmap would leave a hole that another thread's mmap could
 * take in between, to be clobbered by ours.
 */
static void op_unmap(struct worker *w)
{
	REQUIRE(mmap(w->own, OWN_PAGES * PS, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) ==
		w->own);
	memset(w->zero, 1, sizeof(w->zero));
	own_verify(w);
	own_fill(w);
}

/* Mirror reads that timed out (-EBUSY) and were tried again. */
static uint64_t mirror_busy;

/* Shared pages: under a page's lock its contents are known. */
static void op_shared(struct worker *w)
{
	size_t i = rnd(w) % SHARED_PAGES;
	char buf[PS] __attribute__((aligned(16)));
	uint64_t faults;
	int rc;

	pthread_mutex_lock(&shared_lock[i]);
	CHECK_EQ(t_verify_from(shared + i * PS, 1, shared_ver[i], i), 0);
	if (rnd(w) & 1) {
		struct hetmm_mirror *mir = rnd(w) & 1 ? mir_a : mir_b;

		/* -EBUSY: invalidated for a whole second (the emulated
		 * device's timeout, as lib/test_hmm.c's), which a loaded
		 * machine and three threads migrating shared pages can
		 * make; the kernel's caller tries again too.  A few tries
		 * must do. */
		for (int tries = 0; tries < 5; tries++) {
			rc = hetmm_mirror_read(mir, shared + i * PS, buf, 1,
					       &faults);
			if (rc != -EBUSY)
				break;
			__atomic_fetch_add(&mirror_busy, 1, __ATOMIC_RELAXED);
		}
		CHECK_OK(rc);
		if (!rc)
			CHECK_EQ(t_verify_from(buf, 1, shared_ver[i], i), 0);
	}
	shared_ver[i] = t_mix(shared_ver[i] + 1);
	t_fill_from(shared + i * PS, 1, shared_ver[i], i);
	pthread_mutex_unlock(&shared_lock[i]);
}

/* Shared pages: moved about by everyone, without any lock. */
static void op_shared_migrate(struct worker *w)
{
	size_t a = rnd(w) % SHARED_PAGES, n = 1 + rnd(w) % (SHARED_PAGES - a);
	struct hetmm_migrate_report rep;
	int rc;

	memset(&rep, 0, sizeof(rep));
	if (rnd(w) % 3)
		rc = hetmm_migrate_to_device(pick_dev(w), shared + a * PS,
					     n * PS, &rep);
	else
		rc = hetmm_migrate_to_system(ctx, shared + a * PS, n * PS,
					     &rep);
	CHECK(migrate_ok(rc));
}

/* Shared pages: faulted by plain reads, no lock, nothing to check.  The
 * reads race with the writers on purpose (they only need the fault), so
 * ThreadSanitizer is told not to watch them. */
__attribute__((no_sanitize("thread")))
static void op_shared_touch(struct worker *w)
{
	volatile uint64_t sink = 0;
	size_t i = rnd(w) % SHARED_PAGES;

	for (size_t k = 0; k < 8; k++)
		sink += __atomic_load_n(
			(uint64_t *)(shared + ((i + k) % SHARED_PAGES) * PS),
			__ATOMIC_RELAXED);
	(void)sink;
}

static void *worker_main(void *v)
{
	struct worker *w = v;
	static void (*const ops[])(struct worker *) = {
		op_migrate, op_write, op_pin, op_dontneed,
		op_remap, op_unmap, op_shared, op_shared_migrate,
	};
	/* How often each op comes up, out of the sum. */
	static const unsigned weight[] = { 6, 3, 2, 2, 1, 1, 6, 4 };
	unsigned total = 0, wt[8];

	for (size_t k = 0; k < 8; k++) {
		wt[k] = (op_mask >> k) & 1 ? weight[k] : 0;
		total += wt[k];
	}
	while (t_now() < deadline) {
		unsigned r = (unsigned)(rnd(w) % total), k = 0;

		while (r >= wt[k])
			r -= wt[k++];
		w->last[w->nlast++ % 16] = (uint8_t)k;
		ops[k](w);
		w->ops[k]++;
		op_shared_touch(w);
	}
	own_verify(w);
	return NULL;
}

static void check_no_holds(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t refs = 1, pins = 1;

		CHECK_OK(hetmm_user_page_holds(ctx, p + i * PS, &refs, &pins));
		CHECK_EQ(refs, 0);
		CHECK_EQ(pins, 0);
	}
}

int main(void)
{
	const char *env = getenv("HETMM_STRESS_SECONDS");
	double secs = env ? atof(env) : 2.0;
	struct worker w[NTHREADS];
	pthread_t th[NTHREADS];
	struct hetmm_stats st;
	uint64_t total_ops = 0;

	if (secs <= 0)
		secs = 2.0;
	if (getenv("HETMM_STRESS_OPS"))
		op_mask = (unsigned)strtoul(getenv("HETMM_STRESS_OPS"), NULL, 0);
	if (op_mask != OPS_ALL)
		fprintf(stderr, "stress: ops 0x%x of 0x%x (see op_mask)\n",
			op_mask, OPS_ALL);
	t_emu_up(&ctx, NULL, NDEV_A, &emu_a, &pg_a);
	t_emu_add(ctx, HETMM_MEMORY_DEVICE_PRIVATE, NDEV_B, &emu_b, &pg_b);
	REQUIRE_OK(hetmm_mirror_create(emu_a, &mir_a));
	REQUIRE_OK(hetmm_mirror_create(emu_b, &mir_b));

	shared = t_map(SHARED_PAGES);
	for (size_t i = 0; i < SHARED_PAGES; i++) {
		pthread_mutex_init(&shared_lock[i], NULL);
		shared_ver[i] = i + 1;
		t_fill_from(shared + i * PS, 1, shared_ver[i], i);
	}
	memset(w, 0, sizeof(w));
	deadline = t_now() + secs;
	for (unsigned t = 0; t < NTHREADS; t++) {
		w[t].id = t;
		w[t].rng = t_mix(t + 12345);
		w[t].slot[0] = t_map(2 * OWN_PAGES);
		w[t].slot[1] = w[t].slot[0] + OWN_PAGES * PS;
		REQUIRE(mprotect(w[t].slot[1], OWN_PAGES * PS, PROT_NONE) == 0);
		w[t].own = w[t].slot[0];
		w[t].ver = t;
		own_fill(&w[t]);
		REQUIRE(pthread_create(&th[t], NULL, worker_main, &w[t]) == 0);
	}
	for (unsigned t = 0; t < NTHREADS; t++)
		REQUIRE(pthread_join(th[t], NULL) == 0);

	/* Every byte where it belongs, no hold left. */
	for (size_t i = 0; i < SHARED_PAGES; i++)
		CHECK_EQ(t_verify_from(shared + i * PS, 1, shared_ver[i], i),
			 0);
	check_no_holds(shared, SHARED_PAGES);
	for (unsigned t = 0; t < NTHREADS; t++) {
		own_verify(&w[t]);
		check_no_holds(w[t].own, OWN_PAGES);
		for (size_t k = 0; k < 8; k++)
			total_ops += w[t].ops[k];
	}
	/* Some of everything ran. */
	for (size_t k = 0; k < 8; k++) {
		uint64_t n = 0;

		for (unsigned t = 0; t < NTHREADS; t++)
			n += w[t].ops[k];
		CHECK(n > 0 || !((op_mask >> k) & 1));
	}

	/* Back on the devices, then gone: every frame comes back. */
	{
		struct hetmm_migrate_report rep;

		memset(&rep, 0, sizeof(rep));
		CHECK(migrate_ok(hetmm_migrate_to_device(pg_a, shared,
							 SHARED_PAGES * PS,
							 &rep)));
	}
	t_unmap(shared, SHARED_PAGES);
	for (unsigned t = 0; t < NTHREADS; t++)
		t_unmap(w[t].slot[0], 2 * OWN_PAGES);
	CHECK_EQ(t_settled_free(pg_a, NDEV_A), NDEV_A);
	CHECK_EQ(t_settled_free(pg_b, NDEV_B), NDEV_B);
	st = t_stats(ctx);
	CHECK_EQ(st.device_resident, 0);
	fprintf(stderr,
		"stress: %.0f s, %d threads, %" PRIu64 " ops; %" PRIu64
		" faults, %" PRIu64 " pages to device, %" PRIu64
		" back, %" PRIu64 " discarded, %" PRIu64 " remapped, %" PRIu64
		" pins, %" PRIu64 " mirror reads tried again\n",
		secs, NTHREADS, total_ops, st.faults, st.to_device_pages,
		st.to_system_pages, st.discarded_pages, st.remapped_pages,
		st.pins, mirror_busy);

	CHECK_OK(hetmm_mirror_destroy(mir_a));
	CHECK_OK(hetmm_mirror_destroy(mir_b));
	CHECK_OK(hetmm_emu_destroy(emu_a));
	CHECK_OK(hetmm_emu_destroy(emu_b));
	CHECK_OK(hetmm_ctx_destroy(ctx));
	for (size_t i = 0; i < SHARED_PAGES; i++)
		pthread_mutex_destroy(&shared_lock[i]);
	return t_done();
}
