/* SPDX-License-Identifier: MIT */
/*
 * test_coherent: DEVICE_COHERENT memory of the emulated device.  Pages
 * migrated to it are device memory mapped at their own addresses: the CPU
 * reads and writes them with no fault, a mirror of the device uses them in
 * place, snapshots say COHERENT_LOCAL/REMOTE.  Migration back (explicit,
 * hot-remove, fork) restores private anonymous pages with every byte, and
 * they migrate again.  munmap frees the frames, madvise zeroes, mprotect
 * carries over, and a write racing the migrations is never lost.  Pins:
 * short-term holds keep a coherent page in place, long-term pins migrate
 * it first, on the fast path as on the slow one.
 */
#include <pthread.h>

#include "t.h"

static struct hetmm_ctx *ctx;
static struct hetmm_emu *coh, *coh2, *priv;
static struct hetmm_pagemap *pg, *pg2, *pgp;

static uint64_t faults(void)
{
	struct hetmm_stats st;

	REQUIRE_OK(hetmm_ctx_get_stats(ctx, &st));
	return st.faults;
}

/* The mapping's kind at addr from /proc/self/maps: 's' or 'p', and
 * whether it is writable. */
static char map_kind(const void *addr, int *writable)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	char kind = 0;

	REQUIRE(f != NULL);
	while (fgets(line, sizeof(line), f)) {
		uintptr_t lo, hi;
		char perms[8];

		if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %7s", &lo, &hi,
			   perms) != 3)
			continue;
		if ((uintptr_t)addr < lo || (uintptr_t)addr >= hi)
			continue;
		kind = perms[3];
		if (writable)
			*writable = perms[1] == 'w';
		break;
	}
	fclose(f);
	return kind;
}

/* Migrate, no fault, bytes, snapshots, mirror in place, back, again. */
static void test_basic(void)
{
	const size_t n = 64;
	char *p = t_map(n);
	struct hetmm_migrate_report rep = { 0, 0, NULL };
	uint64_t before = t_nr_free(pg);

	t_fill(p, n - 8, 1);   /* the last 8 pages stay holes */
	REQUIRE_OK(hetmm_migrate_to_device(pg, p, n * PS, &rep));
	CHECK_EQ(rep.moved, n);
	CHECK_EQ(t_nr_free(pg), before - n);
	CHECK(t_on_device(ctx, p) && t_on_device(ctx, p + (n - 1) * PS));
	CHECK_EQ(map_kind(p, NULL), 's');

	/* The CPU reaches device memory directly: no fault. */
	uint64_t f0 = faults();
	t_verify(p, n - 8, 1);
	CHECK_EQ(t_nonzero_pages(p + (n - 8) * PS, 8), 0);
	t_fill(p, n, 2);
	t_verify(p, n, 2);
	CHECK_EQ(faults(), f0);
	CHECK(t_on_device(ctx, p));

	/* Asking again: already there; another device: skipped. */
	uint8_t st[64];
	rep.status = st;
	CHECK_EQ(hetmm_migrate_to_device(pg, p, n * PS, &rep), -ENOENT);
	CHECK_EQ(st[0], HETMM_MIGRATE_ALREADY);
	CHECK_EQ(hetmm_migrate_to_device(pgp, p, n * PS, &rep), -ENOENT);
	CHECK_EQ(st[0], HETMM_MIGRATE_SKIP_OTHER_DEVICE);
	rep.status = NULL;

	/* Snapshots: local to its own device, remote to others. */
	struct hetmm_mirror *m, *m2, *mp;
	REQUIRE_OK(hetmm_mirror_create(coh, &m));
	REQUIRE_OK(hetmm_mirror_create(coh2, &m2));
	REQUIRE_OK(hetmm_mirror_create(priv, &mp));
	uint8_t prot[4];
	REQUIRE_OK(hetmm_mirror_snapshot(m, p, 4, prot));
	CHECK_EQ(prot[0], HETMM_PROT_DEV_COHERENT_LOCAL | HETMM_PROT_WRITE);
	REQUIRE_OK(hetmm_mirror_snapshot(m2, p, 4, prot));
	CHECK_EQ(prot[0], HETMM_PROT_DEV_COHERENT_REMOTE | HETMM_PROT_WRITE);
	REQUIRE_OK(hetmm_mirror_snapshot(mp, p, 4, prot));
	CHECK_EQ(prot[0], HETMM_PROT_DEV_COHERENT_REMOTE | HETMM_PROT_WRITE);

	/* Mirrors read and write in place, local or remote: the page stays
	 * on the device and the CPU sees the device's writes at once. */
	char *buf = malloc(4 * PS);
	REQUIRE(buf != NULL);
	REQUIRE_OK(hetmm_mirror_read(m, p, buf, 4, NULL));
	t_verify(buf, 4, 2);
	t_fill(buf, 4, 3);
	REQUIRE_OK(hetmm_mirror_write(m, p, buf, 4, NULL));
	t_fill(buf, 4, 4);
	REQUIRE_OK(hetmm_mirror_write(m2, p + 4 * PS, buf, 4, NULL));
	REQUIRE_OK(hetmm_mirror_read(mp, p + 4 * PS, buf, 4, NULL));
	t_verify(buf, 4, 4);
	CHECK(t_on_device(ctx, p) && t_on_device(ctx, p + 4 * PS));
	t_verify(p, 4, 3);
	t_verify(p + 4 * PS, 4, 4);
	CHECK_EQ(faults(), f0);
	free(buf);

	/* Back: private anonymous memory with the bytes, frames freed. */
	t_fill(p, n, 5);
	REQUIRE_OK(hetmm_migrate_to_system(ctx, p, n * PS, &rep));
	CHECK_EQ(rep.moved, n);
	CHECK(!t_on_device(ctx, p));
	CHECK_EQ(map_kind(p, NULL), 'p');
	CHECK_EQ(t_nr_free(pg), before);
	t_verify(p, n, 5);
	REQUIRE_OK(hetmm_mirror_snapshot(m, p, 1, prot));
	CHECK_EQ(prot[0], HETMM_PROT_WRITE);

	/* The restored range is registered again: private migration and
	 * fault-back work there, and so does coherent once more. */
	REQUIRE_OK(hetmm_migrate_to_device(pgp, p, n * PS, &rep));
	CHECK_EQ(rep.moved, n);
	CHECK_EQ(t_present(p), 0);
	t_verify(p, n, 5);
	CHECK(faults() > f0);
	CHECK(!t_on_device(ctx, p));
	REQUIRE_OK(hetmm_migrate_to_device(pg, p + PS, 8 * PS, &rep));
	CHECK_EQ(rep.moved, 8);
	t_verify(p, n, 5);
	REQUIRE_OK(hetmm_migrate_to_system(ctx, p, n * PS, NULL));

	hetmm_mirror_destroy(m);
	hetmm_mirror_destroy(m2);
	hetmm_mirror_destroy(mp);
	t_unmap(p, n);
	CHECK_EQ(t_settled_free(pg, before), before);
}

/* munmap frees the frames; madvise zeroes; mprotect carries over. */
static void test_lifecycle(void)
{
	const size_t n = 32;
	uint64_t before = t_nr_free(pg);
	char *p = t_map(n);

	t_fill(p, n, 7);
	REQUIRE_OK(hetmm_migrate_to_device(pg, p, n * PS, NULL));
	CHECK_EQ(t_nr_free(pg), before - n);
	/* Part of it, then all of it (private and coherent mappings). */
	REQUIRE(munmap(p + 8 * PS, 8 * PS) == 0);
	CHECK_EQ(t_settled_free(pg, before - n + 8), before - n + 8);
	t_verify(p, 8, 7);
	REQUIRE(munmap(p, n * PS) == 0);
	CHECK_EQ(t_settled_free(pg, before), before);

	p = t_map(n);
	t_fill(p, n, 8);
	REQUIRE_OK(hetmm_migrate_to_device(pg, p, n * PS, NULL));
	REQUIRE(madvise(p, 4 * PS, MADV_DONTNEED) == 0);
	/* Zeroed by the handler once it has the event (documented). */
	for (int i = 0; i < 1000 && t_nonzero_pages(p, 4); i++)
		usleep(1000);
	CHECK_EQ(t_nonzero_pages(p, 4), 0);
	t_verify_from(p + 4 * PS, n - 4, 8, 4);
	CHECK(t_on_device(ctx, p + 4 * PS));

	/* mprotect: read-only on the device, read-only when back. */
	REQUIRE(mprotect(p, n * PS, PROT_READ) == 0);
	struct hetmm_mirror *m;
	REQUIRE_OK(hetmm_mirror_create(coh, &m));
	char buf[PS];
	memset(buf, 1, PS);
	CHECK_EQ(hetmm_mirror_write(m, p + 8 * PS, buf, 1, NULL), -EPERM);
	REQUIRE_OK(hetmm_migrate_to_system(ctx, p, n * PS, NULL));
	int w = 1;
	CHECK_EQ(map_kind(p + 8 * PS, &w), 'p');
	CHECK_EQ(w, 0);
	t_verify_from(p + 4 * PS, n - 4, 8, 4);
	REQUIRE(mprotect(p, n * PS, PROT_READ | PROT_WRITE) == 0);
	t_fill(p, n, 9);
	REQUIRE_OK(hetmm_migrate_to_device(pg, p, n * PS, NULL));
	t_verify(p, n, 9);
	hetmm_mirror_destroy(m);
	t_unmap(p, n);
	CHECK_EQ(t_settled_free(pg, before), before);
}

/* fork: copy on write between parent and child, bytes on both sides. */
static void test_fork(void)
{
	const size_t n = 16;
	char *p = t_map(n);
	int to_child[2], to_parent[2];
	char c = 0;

	t_fill(p, n, 11);
	REQUIRE_OK(hetmm_migrate_to_device(pg, p, n * PS, NULL));
	/* Page 2 is pinned in place: it stays on the device through fork
	 * and the child gets a private copy of it all the same. */
	void *pinned[1];
	CHECK_EQ(hetmm_pin_user_pages_fast(ctx, p + 2 * PS, 1, 0, pinned), 1);
	REQUIRE(pipe(to_child) == 0 && pipe(to_parent) == 0);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		/* The parent's bytes; our writes stay ours. */
		int bad = t_verify(p, n, 11) != 0;
		t_fill(p, n, 12);
		bad |= write(to_parent[1], "x", 1) != 1;
		bad |= read(to_child[0], &c, 1) != 1;
		bad |= t_verify(p, n, 12) != 0;   /* not the parent's 13 */
		bad |= map_kind(p, NULL) != 'p';
		bad |= map_kind(p + 2 * PS, NULL) != 'p';
		_exit(bad);
	}
	CHECK(!t_on_device(ctx, p));
	CHECK_EQ(map_kind(p, NULL), 'p');
	CHECK(t_on_device(ctx, p + 2 * PS));
	CHECK_EQ(map_kind(p + 2 * PS, NULL), 's');
	REQUIRE(read(to_parent[0], &c, 1) == 1);
	t_verify(p, n, 11);   /* the child's writes are invisible */
	t_fill(p, n, 13);
	REQUIRE(write(to_child[1], "x", 1) == 1);
	t_reap(pid);
	t_verify(p, n, 13);
	CHECK_OK(hetmm_unpin_user_pages(ctx, pinned, 1));
	/* And it migrates again. */
	REQUIRE_OK(hetmm_migrate_to_device(pg, p, n * PS, NULL));
	CHECK(t_on_device(ctx, p));
	t_verify(p, n, 13);
	close(to_child[0]);
	close(to_child[1]);
	close(to_parent[0]);
	close(to_parent[1]);
	t_unmap(p, n);
}

typedef long (*gup_fn)(struct hetmm_ctx *, void *, size_t, unsigned int,
		       void **);

/* Short-term holds keep coherent pages in place; long-term pins migrate
 * them first, fast path as slow path. */
static void test_pins(void)
{
	static const struct {
		gup_fn fn;
		int pin;
		unsigned flags;
	} v[] = {
		{ hetmm_get_user_pages, 0, 0 },
		{ hetmm_get_user_pages_fast, 0, HETMM_FOLL_WRITE },
		{ hetmm_pin_user_pages, 1, HETMM_FOLL_WRITE },
		{ hetmm_pin_user_pages_fast, 1, 0 },
		{ hetmm_pin_user_pages, 1, HETMM_FOLL_LONGTERM },
		{ hetmm_pin_user_pages_fast, 1,
		  HETMM_FOLL_LONGTERM | HETMM_FOLL_WRITE },
	};
	const size_t n = 8;

	for (size_t k = 0; k < sizeof(v) / sizeof(v[0]); k++) {
		int longterm = !!(v[k].flags & HETMM_FOLL_LONGTERM);
		char *p = t_map(n);
		void *pages[8];
		uint64_t refs, pins;

		t_fill(p, n, 20 + k);
		REQUIRE_OK(hetmm_migrate_to_device(pg, p, n * PS, NULL));
		CHECK_EQ(v[k].fn(ctx, p, n, v[k].flags, pages), (long)n);
		CHECK_EQ(pages[3], p + 3 * PS);
		CHECK_EQ(t_on_device(ctx, p + 3 * PS), !longterm);
		CHECK_EQ(map_kind(p, NULL), longterm ? 'p' : 's');
		REQUIRE_OK(hetmm_user_page_holds(ctx, p + 3 * PS, &refs, &pins));
		CHECK_EQ(refs, v[k].pin ? 0 : 1);
		CHECK_EQ(pins, v[k].pin ? 1 : 0);
		t_verify(p, n, 20 + k);

		/* Held pages stay where they are. */
		struct hetmm_migrate_report rep = { 0, 0, NULL };
		uint8_t st[8];
		rep.status = st;
		int rc = longterm ? hetmm_migrate_to_device(pg, p, n * PS, &rep)
				  : hetmm_migrate_to_system(ctx, p, n * PS, &rep);
		CHECK_EQ(rc, -ENOENT);
		CHECK_EQ(st[0], HETMM_MIGRATE_SKIP_PINNED);
		CHECK_EQ(t_on_device(ctx, p), !longterm);

		CHECK_OK(v[k].pin ? hetmm_unpin_user_pages(ctx, pages, n)
				  : hetmm_put_user_pages(ctx, pages, n));
		REQUIRE_OK(hetmm_user_page_holds(ctx, p, &refs, &pins));
		CHECK_EQ(refs + pins, 0);
		/* Free to move again. */
		rc = longterm ? hetmm_migrate_to_device(pg, p, n * PS, NULL)
			      : hetmm_migrate_to_system(ctx, p, n * PS, NULL);
		CHECK_EQ(rc, 0);
		t_verify(p, n, 20 + k);
		t_unmap(p, n);
	}
}

/* Hot-remove waits for a short-term pin, then gives up with -EBUSY. */
static void test_remove_pinned(void)
{
	struct hetmm_emu *e;
	struct hetmm_pagemap *ep;
	char *p = t_map(4);
	void *pages[1];

	t_emu_add(ctx, HETMM_MEMORY_DEVICE_COHERENT, 64, &e, &ep);
	t_fill(p, 4, 30);
	REQUIRE_OK(hetmm_migrate_to_device(ep, p, 4 * PS, NULL));
	CHECK_EQ(hetmm_pin_user_pages(ctx, p + PS, 1, 0, pages), 1);
	CHECK_EQ(hetmm_emu_destroy(e), -EBUSY);
	CHECK(t_on_device(ctx, p + PS));
	CHECK(!t_on_device(ctx, p));
	t_verify(p, 4, 30);
	CHECK_OK(hetmm_unpin_user_pages(ctx, pages, 1));
	CHECK_OK(hetmm_emu_destroy(e));
	CHECK(!t_on_device(ctx, p + PS));
	CHECK_EQ(map_kind(p + PS, NULL), 'p');
	t_verify(p, 4, 30);
	t_unmap(p, 4);
}

/* Writers racing migrations to the coherent device and back. */
#define RACE_PAGES 16
static char *race_buf;
static volatile int race_stop;

static void *race_writer(void *arg)
{
	size_t t = (size_t)arg;
	uint64_t i = 0;

	while (!__atomic_load_n(&race_stop, __ATOMIC_RELAXED)) {
		for (size_t pgi = 0; pgi < RACE_PAGES; pgi++) {
			uint64_t *w = (uint64_t *)(race_buf + pgi * PS) + t;
			/* Each counter only grows.  Atomic so that a race
			 * detector sees what the write protection orders. */
			__atomic_store_n(w, i, __ATOMIC_RELAXED);
		}
		i++;
	}
	for (size_t pgi = 0; pgi < RACE_PAGES; pgi++) {
		uint64_t *w = (uint64_t *)(race_buf + pgi * PS) + t;
		__atomic_store_n(w, i, __ATOMIC_RELAXED);
	}
	return (void *)(uintptr_t)i;
}

static void test_race(void)
{
	pthread_t th[2];

	race_buf = t_map(RACE_PAGES);
	memset(race_buf, 0, RACE_PAGES * PS);
	race_stop = 0;
	for (size_t t = 0; t < 2; t++)
		REQUIRE(pthread_create(&th[t], NULL, race_writer,
				       (void *)t) == 0);
	for (int r = 0; r < 40; r++) {
		hetmm_migrate_to_device(pg, race_buf, RACE_PAGES * PS, NULL);
		hetmm_migrate_to_system(ctx, race_buf, RACE_PAGES * PS, NULL);
	}
	hetmm_migrate_to_device(pg, race_buf, RACE_PAGES * PS, NULL);
	__atomic_store_n(&race_stop, 1, __ATOMIC_RELAXED);
	for (size_t t = 0; t < 2; t++) {
		void *last;
		pthread_join(th[t], &last);
		for (size_t pgi = 0; pgi < RACE_PAGES; pgi++)
			CHECK_EQ(((uint64_t *)(race_buf + pgi * PS))[t],
				 (uintptr_t)last);
	}
	hetmm_migrate_to_system(ctx, race_buf, RACE_PAGES * PS, NULL);
	t_unmap(race_buf, RACE_PAGES);
}

int main(void)
{
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	int rc = hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_COHERENT, 256, &coh);
	if (rc == -EOPNOTSUPP) {
		fprintf(stderr, "skip: no coherent devices on this kernel\n");
		hetmm_ctx_destroy(ctx);
		return 0;
	}
	REQUIRE_OK(rc);
	REQUIRE_OK(hetmm_emu_pagemap(coh, &pg));
	t_emu_add(ctx, HETMM_MEMORY_DEVICE_COHERENT, 64, &coh2, &pg2);
	t_emu_add(ctx, HETMM_MEMORY_DEVICE_PRIVATE, 256, &priv, &pgp);

	test_basic();
	test_lifecycle();
	test_fork();
	test_pins();
	test_remove_pinned();
	test_race();

	/* Destroy brings coherent pages home too. */
	char *p = t_map(8);
	t_fill(p, 8, 40);
	REQUIRE_OK(hetmm_migrate_to_device(pg, p, 8 * PS, NULL));
	CHECK_OK(hetmm_ctx_destroy(ctx));
	CHECK_EQ(map_kind(p, NULL), 'p');
	t_verify(p, 8, 40);
	t_unmap(p, 8);
	return t_done();
}
