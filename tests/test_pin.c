/* SPDX-License-Identifier: MIT */
/*
 * test_pin: get_user_pages / pin_user_pages, fast and slow, FOLL_WRITE and
 * FOLL_LONGTERM; device pages come back before a hold returns; held pages
 * are skipped by migration as pinned and migrate again once released;
 * holes in registered ranges; FS_DAX and GENERIC pages held in place;
 * concurrent pinners against concurrent migrators with byte checks; bad
 * input changes nothing.
 */
#include <pthread.h>

#include "tdrv.h"

typedef long (*gup_fn)(struct hetmm_ctx *, void *, size_t, unsigned int,
		       void **);

struct variant {
	const char *name;
	gup_fn fn;
	int pin;
};

static const struct variant variants[] = {
	{ "get", hetmm_get_user_pages, 0 },
	{ "get_fast", hetmm_get_user_pages_fast, 0 },
	{ "pin", hetmm_pin_user_pages, 1 },
	{ "pin_fast", hetmm_pin_user_pages_fast, 1 },
};
#define NVARIANTS (sizeof(variants) / sizeof(variants[0]))

static struct hetmm_ctx *ctx;
static struct hetmm_pagemap *dev;

static int release(const struct variant *v, void **pages, size_t n)
{
	return v->pin ? hetmm_unpin_user_pages(ctx, pages, n)
		      : hetmm_put_user_pages(ctx, pages, n);
}

static void check_holds(const void *p, uint64_t refs, uint64_t pins)
{
	uint64_t r = 99, q = 99;

	CHECK_OK(hetmm_user_page_holds(ctx, p, &r, &q));
	CHECK_EQ(r, refs);
	CHECK_EQ(q, pins);
}

/* Holes and filled pages, read and write, every variant. */
static void test_basic(void)
{
	const size_t n = 16;
	void *pages[16];

	for (size_t k = 0; k < NVARIANTS; k++) {
		const struct variant *v = &variants[k];
		for (int write = 0; write < 2; write++) {
			char *buf = t_map(n);
			unsigned fl = write ? HETMM_FOLL_WRITE : 0;

			/* Holes: made present by the hold. */
			CHECK_EQ(v->fn(ctx, buf, n, fl, pages), n);
			for (size_t i = 0; i < n; i++) {
				CHECK(pages[i] == buf + i * PS);
				CHECK(t_present(buf + i * PS));
				check_holds(buf + i * PS, !v->pin, v->pin);
			}
			CHECK_EQ(t_nonzero_pages(buf, n), 0);
			/* A second hold stacks; release both. */
			CHECK_EQ(v->fn(ctx, buf, n, fl, pages), n);
			check_holds(buf, 2 * !v->pin, 2 * v->pin);
			CHECK_OK(release(v, pages, n));
			CHECK_OK(release(v, pages, n));
			check_holds(buf, 0, 0);
			/* Releasing what is not held fails, changes nothing. */
			CHECK_EQ(release(v, pages, n), -EINVAL);

			t_fill(buf, n, 7 + k);
			CHECK_EQ(v->fn(ctx, buf, n, fl, pages), n);
			t_verify(buf, n, 7 + k);
			CHECK_OK(release(v, pages, n));
			t_unmap(buf, n);
		}
	}
}

/* A device page is migrated back before a hold returns it. */
static void test_device_back(void)
{
	const size_t n = 64;
	void *pages[64];

	for (size_t k = 0; k < NVARIANTS; k++) {
		const struct variant *v = &variants[k];
		char *buf = t_map(n);
		t_fill(buf, n, 100 + k);
		CHECK_OK(hetmm_migrate_to_device(dev, buf, n * PS, NULL));
		for (size_t i = 0; i < n; i++)
			CHECK(t_on_device(ctx, buf + i * PS));
		/* Hold the middle half: only it comes back. */
		CHECK_EQ(v->fn(ctx, buf + 16 * PS, 32,
			       k % 2 ? HETMM_FOLL_WRITE : 0, pages), 32);
		for (size_t i = 0; i < n; i++) {
			int held = i >= 16 && i < 48;
			CHECK_EQ(t_on_device(ctx, buf + i * PS), !held);
			if (held)
				CHECK(t_present(buf + i * PS));
		}
		t_verify_from(buf + 16 * PS, 32, 100 + k, 16);
		CHECK_OK(release(v, pages, 32));
		t_verify(buf, n, 100 + k);
		t_unmap(buf, n);
	}
}

/* Held pages are skipped as pinned; released, they migrate again. */
static void test_skip_pinned(void)
{
	const size_t n = 8;
	uint8_t status[8];
	void *pages[8];
	struct hetmm_migrate_report rep = { 0, 0, status };

	for (size_t k = 0; k < NVARIANTS; k++) {
		const struct variant *v = &variants[k];
		char *buf = t_map(n);
		t_fill(buf, n, 200 + k);
		CHECK_EQ(v->fn(ctx, buf + 2 * PS, 2, 0, pages), 2);
		CHECK_OK(hetmm_migrate_to_device(dev, buf, n * PS, &rep));
		CHECK_EQ(rep.moved, 6);
		CHECK_EQ(rep.skipped, 2);
		for (size_t i = 0; i < n; i++) {
			int held = i == 2 || i == 3;
			CHECK_EQ(status[i], held ? HETMM_MIGRATE_SKIP_PINNED
						 : HETMM_MIGRATE_MOVED);
			CHECK_EQ(t_on_device(ctx, buf + i * PS), !held);
		}
		/* All held: nothing can move. */
		CHECK_OK(hetmm_migrate_to_system(ctx, buf, n * PS, NULL));
		CHECK_EQ(v->fn(ctx, buf, n, 0, pages + 0), n);
		CHECK_EQ(hetmm_migrate_to_device(dev, buf, n * PS, &rep),
			 -ENOENT);
		CHECK_OK(release(v, pages + 2, 2));   /* the first hold */
		CHECK_OK(release(v, pages, n));
		CHECK_OK(hetmm_migrate_to_device(dev, buf, n * PS, &rep));
		CHECK_EQ(rep.moved, n);
		t_verify(buf, n, 200 + k);
		t_unmap(buf, n);
	}
}

/*
 * A page zapped in a range hetmm registered is a hole the handler fills;
 * held, it must still be filled (no migration owns it to wake us).
 */
static void test_hole_in_registered(void)
{
	const size_t n = 4;
	void *pages[4];

	for (size_t k = 0; k < NVARIANTS; k++) {
		const struct variant *v = &variants[k];
		char *buf = t_map(n);
		t_fill(buf, n, 300);
		CHECK_OK(hetmm_migrate_to_device(dev, buf, n * PS, NULL));
		CHECK_OK(hetmm_migrate_to_system(ctx, buf, n * PS, NULL));
		REQUIRE(madvise(buf, n * PS, MADV_DONTNEED) == 0);
		CHECK_EQ(v->fn(ctx, buf, n, k % 2 ? HETMM_FOLL_WRITE : 0,
			       pages), n);
		/* Hold first, then zap, then touch. */
		REQUIRE(madvise(buf, n * PS, MADV_DONTNEED) == 0);
		CHECK_EQ(t_nonzero_pages(buf, n), 0);
		buf[5] = 1;
		CHECK_EQ(buf[5], 1);
		CHECK_OK(release(v, pages, n));
		t_unmap(buf, n);
	}
}

static void test_longterm(void)
{
	char *buf = t_map(4);
	void *pages[4];

	CHECK_EQ(hetmm_pin_user_pages(ctx, buf, 4, HETMM_FOLL_LONGTERM, pages),
		 4);
	CHECK_OK(hetmm_unpin_user_pages(ctx, pages, 4));
	CHECK_EQ(hetmm_pin_user_pages_fast(ctx, buf, 4,
		 HETMM_FOLL_LONGTERM | HETMM_FOLL_WRITE, pages), 4);
	CHECK_OK(hetmm_unpin_user_pages(ctx, pages, 4));
	/* A long-term get is not a thing. */
	CHECK_EQ(hetmm_get_user_pages(ctx, buf, 4, HETMM_FOLL_LONGTERM, pages),
		 -EINVAL);
	CHECK_EQ(hetmm_get_user_pages_fast(ctx, buf, 4, HETMM_FOLL_LONGTERM,
					   pages), -EINVAL);
	check_holds(buf, 0, 0);
	t_unmap(buf, 4);
}

/* Bad input: a clear errno, no crash, nothing held. */
static void test_badinput(void)
{
	char *buf = t_map(8);
	void *pages[8];
	char *ro;

	for (size_t k = 0; k < NVARIANTS; k++) {
		gup_fn fn = variants[k].fn;
		CHECK_EQ(fn(NULL, buf, 1, 0, pages), -EINVAL);
		CHECK_EQ(fn(ctx, NULL, 1, 0, pages), -EINVAL);
		CHECK_EQ(fn(ctx, buf, 1, 0, NULL), -EINVAL);
		CHECK_EQ(fn(ctx, buf, 0, 0, pages), -EINVAL);
		CHECK_EQ(fn(ctx, buf + 1, 1, 0, pages), -EINVAL);
		CHECK_EQ(fn(ctx, buf, 1, 1u << 7, pages), -EINVAL);
		CHECK_EQ(fn(ctx, buf, SIZE_MAX / 2, 0, pages), -EINVAL);
		CHECK_EQ(fn(ctx, (void *)(1ULL << 47), 1, 0, pages), -EINVAL);
	}
	/* Unmapped, PROT_NONE, and write to read-only: -EFAULT. */
	t_unmap(buf + 4 * PS, 4);
	CHECK_EQ(hetmm_pin_user_pages_fast(ctx, buf + 4 * PS, 1, 0, pages),
		 -EFAULT);
	CHECK_EQ(hetmm_pin_user_pages(ctx, buf + 4 * PS, 1, 0, pages),
		 -EFAULT);
	/* Partly mapped: the count of pages before the hole. */
	CHECK_EQ(hetmm_pin_user_pages_fast(ctx, buf, 8, 0, pages), 4);
	CHECK_OK(hetmm_unpin_user_pages(ctx, pages, 4));
	ro = mmap(NULL, 2 * PS, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	REQUIRE(ro != MAP_FAILED);
	CHECK_EQ(hetmm_pin_user_pages_fast(ctx, ro, 2, HETMM_FOLL_WRITE,
					   pages), -EFAULT);
	CHECK_EQ(hetmm_get_user_pages(ctx, ro, 2, HETMM_FOLL_WRITE, pages),
		 -EFAULT);
	CHECK_EQ(hetmm_get_user_pages(ctx, ro, 2, 0, pages), 2);
	CHECK_OK(hetmm_put_user_pages(ctx, pages, 2));
	REQUIRE(mprotect(ro, 2 * PS, PROT_NONE) == 0);
	CHECK_EQ(hetmm_pin_user_pages(ctx, ro, 2, 0, pages), -EFAULT);
	munmap(ro, 2 * PS);

	/* Release: bad entries, wrong kind; nothing changes. */
	CHECK_EQ(hetmm_get_user_pages(ctx, buf, 1, 0, pages), 1);
	CHECK_EQ(hetmm_unpin_user_pages(ctx, pages, 1), -EINVAL);
	void *bad[3] = { buf, buf + 1, NULL };
	CHECK_EQ(hetmm_put_user_pages(ctx, bad, 2), -EINVAL);
	check_holds(buf, 1, 0);   /* the first entry was not released */
	bad[1] = NULL;
	CHECK_EQ(hetmm_put_user_pages(ctx, bad, 2), -EINVAL);
	CHECK_EQ(hetmm_put_user_pages(NULL, pages, 1), -EINVAL);
	CHECK_EQ(hetmm_put_user_pages(ctx, NULL, 1), -EINVAL);
	CHECK_EQ(hetmm_put_user_pages(ctx, pages, 0), -EINVAL);
	CHECK_OK(hetmm_put_user_pages(ctx, pages, 1));
	check_holds(buf, 0, 0);
	uint64_t r, q;
	CHECK_EQ(hetmm_user_page_holds(NULL, buf, &r, &q), -EINVAL);
	CHECK_EQ(hetmm_user_page_holds(ctx, buf, NULL, &q), -EINVAL);
	t_unmap(buf, 4);
}

/*
 * A release list naming a page more often than it is held is refused
 * whole (fuzz/FINDINGS.md F6): in order with the duplicates side by side,
 * short and out of order, long and out of order (checked through a sorted
 * copy); and a list with duplicates that are all held goes through.
 */
#define DUP_PAGES 200

static void check_all_holds(const char *p, size_t n, uint64_t want,
			    int pin)
{
	for (size_t i = 0; i < n; i++)
		check_holds(p + i * PS, pin ? 0 : want, pin ? want : 0);
}

static void test_release_duplicates(void)
{
	static void *pages[DUP_PAGES], *list[2 * DUP_PAGES];

	for (int pin = 0; pin < 2; pin++) {
		const struct variant *v = &variants[pin ? 2 : 0];
		char *p = t_map(DUP_PAGES);

		/* In order, one page twice, held once. */
		CHECK_EQ(v->fn(ctx, p, 1, 0, pages), 1);
		list[0] = list[1] = p;
		CHECK_EQ(release(v, list, 2), -EINVAL);
		check_holds(p, pin ? 0 : 1, pin ? 1 : 0);

		/* Short, out of order: p held twice, p + PS once. */
		CHECK_EQ(v->fn(ctx, p, 2, 0, pages), 2);
		void *shortl[4] = { p + PS, p, p, p + PS };
		CHECK_EQ(release(v, shortl, 4), -EINVAL);
		check_holds(p, pin ? 0 : 2, pin ? 2 : 0);
		check_holds(p + PS, pin ? 0 : 1, pin ? 1 : 0);
		CHECK_OK(release(v, shortl, 3));   /* p + PS, p, p */
		check_all_holds(p, 2, 0, pin);

		/* Long, out of order (reversed): the last page twice. */
		CHECK_EQ(v->fn(ctx, p, DUP_PAGES, 0, pages), DUP_PAGES);
		for (size_t i = 0; i < DUP_PAGES; i++)
			list[i] = p + (DUP_PAGES - 1 - i) * PS;
		list[DUP_PAGES] = p + (DUP_PAGES - 1) * PS;
		CHECK_EQ(release(v, list, DUP_PAGES + 1), -EINVAL);
		check_all_holds(p, DUP_PAGES, 1, pin);
		/* In order, with the last page twice at the end. */
		pages[DUP_PAGES - 1] = p + (DUP_PAGES - 2) * PS;
		CHECK_EQ(release(v, pages, DUP_PAGES), -EINVAL);
		check_all_holds(p, DUP_PAGES, 1, pin);

		/* Every page held twice, listed twice, interleaved out of
		 * order: all of it goes. */
		CHECK_EQ(v->fn(ctx, p, DUP_PAGES, 0, pages), DUP_PAGES);
		for (size_t i = 0; i < DUP_PAGES; i++)
			list[DUP_PAGES + i] = p + i * PS;
		char *last = p + (DUP_PAGES - 1) * PS;
		CHECK_OK(release(v, list + 1, 2 * DUP_PAGES - 1));
		check_all_holds(p, DUP_PAGES - 1, 0, pin);
		check_holds(last, pin ? 0 : 1, pin ? 1 : 0);
		CHECK(list[0] == last);
		CHECK_OK(release(v, list, 1));
		check_holds(last, 0, 0);
		t_unmap(p, DUP_PAGES);
	}
}

/* FS_DAX and GENERIC: held in place, long-term refused on FS_DAX. */
static void test_fixed(enum hetmm_memory_type type)
{
	struct td d;
	void *pages[8];
	struct hetmm_pagemap_info info;
	struct hetmm_page *pg;
	struct hetmm_page_info pi;

	REQUIRE_OK(td_add(ctx, &d, 8, TD_FIXED, type, 0));
	CHECK_OK(hetmm_pagemap_get_info(d.pg, &info));
	CHECK_EQ(info.nr_free, 0);
	t_fill(d.mem, 8, 400);

	CHECK_EQ(hetmm_pin_user_pages_fast(ctx, d.mem, 8, HETMM_FOLL_WRITE,
					   pages), 8);
	check_holds(d.mem + 3 * PS, 0, 1);
	hetmm_pfn_t pfn = { info.first_pfn.val + 3 };
	REQUIRE_OK(hetmm_pfn_to_page(pfn, &pg));
	CHECK_OK(hetmm_page_get_info(pg, &pi));
	CHECK_EQ(pi.pincount, 1);
	CHECK_EQ(pi.refcount, 1);
	CHECK(pi.owner == (uintptr_t)(d.mem + 3 * PS));
	CHECK_EQ(hetmm_get_user_pages(ctx, d.mem, 2, 0, pages + 0), 2);
	check_holds(d.mem, 1, 1);
	/* Held in the metadata: a list naming it twice is refused too. */
	void *twice[2] = { d.mem, d.mem };
	CHECK_EQ(hetmm_put_user_pages(ctx, twice, 2), -EINVAL);
	CHECK_EQ(hetmm_unpin_user_pages(ctx, twice, 2), -EINVAL);
	check_holds(d.mem, 1, 1);
	CHECK_OK(hetmm_put_user_pages(ctx, pages, 2));
	CHECK_EQ(hetmm_pin_user_pages(ctx, d.mem, 8, 0, pages), 8);
	CHECK_OK(hetmm_unpin_user_pages(ctx, pages, 8));
	CHECK_OK(hetmm_unpin_user_pages(ctx, pages, 8));
	CHECK_EQ(hetmm_unpin_user_pages(ctx, pages, 1), -EINVAL);
	check_holds(d.mem, 0, 0);

	long lt = hetmm_pin_user_pages_fast(ctx, d.mem, 8,
					    HETMM_FOLL_LONGTERM, pages);
	if (type == HETMM_MEMORY_FS_DAX) {
		CHECK_EQ(lt, -EOPNOTSUPP);
		CHECK_EQ(hetmm_pin_user_pages(ctx, d.mem, 8,
			 HETMM_FOLL_LONGTERM, pages), -EOPNOTSUPP);
	} else {
		CHECK_EQ(lt, 8);
		CHECK_OK(hetmm_unpin_user_pages(ctx, pages, 8));
	}
	check_holds(d.mem, 0, 0);

	/* Nothing migrates to or from it. */
	char *buf = t_map(2);
	CHECK_EQ(hetmm_migrate_to_device(d.pg, buf, 2 * PS, NULL),
		 -EOPNOTSUPP);
	t_unmap(buf, 2);
	uint8_t st[8];
	struct hetmm_migrate_report rep = { 0, 0, st };
	int rc = hetmm_migrate_to_device(dev, d.mem, 8 * PS, &rep);
	CHECK(rc == -ENOENT);
	CHECK_EQ(st[0], type == HETMM_MEMORY_FS_DAX ?
		 HETMM_MIGRATE_SKIP_SHARED : HETMM_MIGRATE_SKIP_OTHER_DEVICE);
	t_verify(d.mem, 8, 400);

	CHECK_OK(hetmm_pagemap_remove(d.pg));
	/* Ordinary memory now. */
	CHECK_EQ(hetmm_pin_user_pages(ctx, d.mem, 8, HETMM_FOLL_LONGTERM,
				      pages), 8);
	CHECK_OK(hetmm_unpin_user_pages(ctx, pages, 8));
	t_verify(d.mem, 8, 400);
	td_free(&d);
}

static void test_fixed_bad(void)
{
	struct td d;
	struct hetmm_pagemap *pg;
	struct hetmm_pagemap_desc desc;

	/* FS_DAX needs a file mapping. */
	CHECK_EQ(td_add(ctx, &d, 4, TD_FIXED, HETMM_MEMORY_GENERIC, 0), 0);
	memset(&desc, 0, sizeof(desc));
	desc.type = HETMM_MEMORY_FS_DAX;
	desc.nr_pages = 4;
	desc.ops = &td_ops_fixed;
	desc.drvdata = &d;
	struct td d2 = d;
	d2.pg = NULL;
	desc.drvdata = &d2;
	/* Same memory twice: already fixed, -EBUSY; anonymous: -EINVAL. */
	desc.type = HETMM_MEMORY_GENERIC;
	CHECK_EQ(hetmm_pagemap_add(ctx, &desc, &pg), -EBUSY);
	desc.type = HETMM_MEMORY_FS_DAX;
	CHECK_EQ(hetmm_pagemap_add(ctx, &desc, &pg), -EINVAL);
	desc.flags = HETMM_PAGEMAP_EVICT;
	desc.type = HETMM_MEMORY_GENERIC;
	CHECK_EQ(hetmm_pagemap_add(ctx, &desc, &pg), -EINVAL);
	desc.flags = 0;
	desc.ops = &td_ops_copy;
	CHECK_EQ(hetmm_pagemap_add(ctx, &desc, &pg), -EINVAL);
	CHECK_OK(hetmm_pagemap_remove(d.pg));
	td_free(&d);
}

/* ------------------------------------------------------------------------
 * Pinners against migrators.  Each pinner makes RACE_ITERS pins, or as
 * many as it can in RACE_SECONDS: under software emulation (the 6.1
 * guest of `make test-kernels`) 3000 take up to two minutes, and the
 * race is as real in fewer.
 */
#define RACE_PAGES 256
#define RACE_SEED 77
#define RACE_ITERS 3000
#define RACE_SECONDS 10.0

static char *race_buf;
static int race_stop;

static unsigned rnd(unsigned *s)
{
	*s = *s * 1103515245u + 12345u;
	return *s >> 8;
}

static void *migrator(void *arg)
{
	unsigned s = (unsigned)(uintptr_t)arg;

	while (!__atomic_load_n(&race_stop, __ATOMIC_RELAXED)) {
		size_t a = rnd(&s) % RACE_PAGES;
		size_t n = 1 + rnd(&s) % (RACE_PAGES - a);
		int rc;
		if (rnd(&s) % 2)
			rc = hetmm_migrate_to_device(dev, race_buf + a * PS,
						     n * PS, NULL);
		else
			rc = hetmm_migrate_to_system(ctx, race_buf + a * PS,
						     n * PS, NULL);
		CHECK(rc == 0 || rc == -ENOENT || rc == -ENOMEM);
	}
	return NULL;
}

static void *pinner(void *arg)
{
	unsigned s = (unsigned)(uintptr_t)arg;
	void *pages[16];
	double end = t_now() + RACE_SECONDS;

	for (int it = 0; it < RACE_ITERS && t_now() < end; it++) {
		const struct variant *v = &variants[rnd(&s) % NVARIANTS];
		size_t a = rnd(&s) % (RACE_PAGES - 16);
		size_t n = 1 + rnd(&s) % 16;
		long got = v->fn(ctx, race_buf + a * PS, n, 0, pages);
		CHECK_EQ(got, n);
		if (got <= 0)
			continue;
		for (size_t i = 0; i < (size_t)got; i++)
			CHECK(!t_on_device(ctx, race_buf + (a + i) * PS));
		t_verify_from(race_buf + a * PS, (size_t)got, RACE_SEED, a);
		for (size_t i = 0; i < (size_t)got; i++)
			CHECK(!t_on_device(ctx, race_buf + (a + i) * PS));
		CHECK_OK(release(v, pages, (size_t)got));
	}
	return NULL;
}

static void test_race(void)
{
	pthread_t m[2], p[2];

	race_buf = t_map(RACE_PAGES);
	t_fill(race_buf, RACE_PAGES, RACE_SEED);
	for (uintptr_t i = 0; i < 2; i++) {
		REQUIRE(pthread_create(&m[i], NULL, migrator,
				       (void *)(i + 1)) == 0);
		REQUIRE(pthread_create(&p[i], NULL, pinner,
				       (void *)(i + 11)) == 0);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(p[i], NULL);
	__atomic_store_n(&race_stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < 2; i++)
		pthread_join(m[i], NULL);
	for (size_t i = 0; i < RACE_PAGES; i++)
		check_holds(race_buf + i * PS, 0, 0);
	t_verify(race_buf, RACE_PAGES, RACE_SEED);
	t_unmap(race_buf, RACE_PAGES);
}

int main(void)
{
	struct hetmm_emu *emu;

	t_emu_up(&ctx, NULL, 1024, &emu, &dev);
	struct hetmm_stats s0 = t_stats(ctx);

	test_basic();
	test_device_back();
	test_skip_pinned();
	test_hole_in_registered();
	test_longterm();
	test_badinput();
	test_release_duplicates();
	test_fixed(HETMM_MEMORY_FS_DAX);
	test_fixed(HETMM_MEMORY_GENERIC);
	test_fixed_bad();
	test_race();

	struct hetmm_stats s1 = t_stats(ctx);
	CHECK(s1.pins > s0.pins);
	CHECK_OK(hetmm_ctx_destroy(ctx));
	return t_done();
}
