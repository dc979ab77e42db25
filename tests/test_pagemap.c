/* SPDX-License-Identifier: MIT */
/*
 * test_pagemap: hot-adding device memory driven by this test's own tiny
 * driver (copying, with a page address, and remapping), frame number
 * lookups across several pagemaps, per-page metadata through a migration
 * and back, zero pages, hot-remove.
 */
#include "t.h"

/* ------------------------------------------------------------------------
 * A tiny driver.  Device memory is a malloc'd array of pages (COPY and
 * ADDR modes) or, for HETMM_PAGEMAP_REMAP, an untouched private anonymous
 * mapping that hetmm moves pages into.
 */
enum tmode {
	T_COPY,   /* copy callbacks only */
	T_ADDR,   /* plus page_address */
	T_REMAP,  /* page_address over anonymous memory, HETMM_PAGEMAP_REMAP */
};

struct tdev {
	uint64_t nr;
	unsigned char *mem;
	enum tmode mode;
	/* Written from the fault handler and migrating threads. */
	uint64_t pages_to, pages_from, freed, calls;
	int bad_index;
	unsigned *free_count; /* page_free calls per index */
};

/* What a real driver does: drvdata of the pagemap it is called for. */
static struct tdev *pgmap_dev(struct hetmm_pagemap *pg)
{
	struct hetmm_pagemap_info info;

	if (hetmm_pagemap_get_info(pg, &info))
		return NULL;
	return info.drvdata;
}

#define LD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

static int range_ok(struct tdev *d, uint64_t index, size_t nr)
{
	if (!d || nr == 0 || index >= d->nr || nr > d->nr - index) {
		if (d)
			__atomic_store_n(&d->bad_index, 1, __ATOMIC_RELAXED);
		return 0;
	}
	return 1;
}

static int tdev_copy_to(struct hetmm_pagemap *pg, uint64_t index,
			const void *src, size_t nr)
{
	struct tdev *d = pgmap_dev(pg);

	if (!range_ok(d, index, nr))
		return -EINVAL;
	memcpy(d->mem + index * PS, src, nr * PS);
	__atomic_fetch_add(&d->pages_to, nr, __ATOMIC_RELAXED);
	__atomic_fetch_add(&d->calls, 1, __ATOMIC_RELAXED);
	return 0;
}

static int tdev_copy_from(struct hetmm_pagemap *pg, void *dst,
			  uint64_t index, size_t nr)
{
	struct tdev *d = pgmap_dev(pg);

	if (!range_ok(d, index, nr))
		return -EINVAL;
	memcpy(dst, d->mem + index * PS, nr * PS);
	__atomic_fetch_add(&d->pages_from, nr, __ATOMIC_RELAXED);
	__atomic_fetch_add(&d->calls, 1, __ATOMIC_RELAXED);
	return 0;
}

static void *tdev_address(struct hetmm_pagemap *pg, uint64_t index)
{
	struct tdev *d = pgmap_dev(pg);

	if (!range_ok(d, index, 1))
		return NULL;
	return d->mem + index * PS;
}

static void tdev_free(struct hetmm_pagemap *pg, uint64_t index)
{
	struct tdev *d = pgmap_dev(pg);

	if (!range_ok(d, index, 1))
		return;
	__atomic_fetch_add(&d->free_count[index], 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&d->freed, 1, __ATOMIC_RELAXED);
}

static const struct hetmm_pagemap_ops ops_plain = {
	.copy_to_device = tdev_copy_to,
	.copy_from_device = tdev_copy_from,
	.page_free = tdev_free,
};

static const struct hetmm_pagemap_ops ops_addr = {
	.copy_to_device = tdev_copy_to,
	.copy_from_device = tdev_copy_from,
	.page_address = tdev_address,
	.page_free = tdev_free,
};

static struct tdev *tdev_new(uint64_t nr, enum tmode mode)
{
	struct tdev *d = calloc(1, sizeof(*d));

	REQUIRE(d != NULL);
	d->nr = nr;
	d->mode = mode;
	if (mode == T_REMAP) {
		d->mem = mmap(NULL, nr * PS, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		REQUIRE(d->mem != MAP_FAILED);
	} else {
		REQUIRE(posix_memalign((void **)&d->mem, PS, nr * PS) == 0);
		memset(d->mem, 0x5a, nr * PS);
	}
	d->free_count = calloc(nr, sizeof(*d->free_count));
	REQUIRE(d->free_count != NULL);
	return d;
}

static void tdev_free_all(struct tdev *d)
{
	free(d->free_count);
	if (d->mode == T_REMAP)
		munmap(d->mem, d->nr * PS);
	else
		free(d->mem);
	free(d);
}

static int add(struct hetmm_ctx *ctx, struct tdev *d, const void *owner,
	       struct hetmm_pagemap **pgp)
{
	struct hetmm_pagemap_desc desc;
	int rc;

	memset(&desc, 0, sizeof(desc));
	desc.type = HETMM_MEMORY_DEVICE_PRIVATE;
	desc.nr_pages = d->nr;
	desc.ops = d->mode == T_COPY ? &ops_plain : &ops_addr;
	desc.flags = d->mode == T_REMAP ? HETMM_PAGEMAP_REMAP : 0;
	desc.drvdata = d;
	desc.owner = owner;
	rc = hetmm_pagemap_add(ctx, &desc, pgp);
	return rc;
}

static hetmm_pfn_t pfn_plus(hetmm_pfn_t p, int64_t delta)
{
	hetmm_pfn_t r = { p.val + (uint64_t)delta };
	return r;
}

/* ------------------------------------------------------------------------
 */

/* A driver that lost every page's address, and has no file for them
 * (never asked: the add is refused before). */
static void *no_address(struct hetmm_pagemap *pg, uint64_t index)
{
	(void)pg;
	(void)index;
	return NULL;
}

static int no_fd(struct hetmm_pagemap *pg, uint64_t index, uint64_t *off)
{
	(void)pg;
	(void)index;
	(void)off;
	return -EBADF;
}

static void add_validation(struct hetmm_ctx *ctx)
{
	static const struct hetmm_pagemap_ops no_to = {
		.copy_from_device = tdev_copy_from,
	};
	static const struct hetmm_pagemap_ops no_from = {
		.copy_to_device = tdev_copy_to,
	};
	struct tdev *d = tdev_new(8, T_COPY);
	struct hetmm_pagemap_desc desc;
	struct hetmm_pagemap *pg = NULL, *sentinel = (void *)&desc;

	memset(&desc, 0, sizeof(desc));
	desc.type = HETMM_MEMORY_DEVICE_PRIVATE;
	desc.nr_pages = 8;
	desc.ops = &ops_plain;
	desc.drvdata = d;

	/* Every memory type the header names: 0 or -EOPNOTSUPP; only
	 * DEVICE_PRIVATE must be hostable.  FS_DAX, GENERIC and PCI_P2PDMA
	 * need a page_address() mapping, which this driver lacks (test_pin
	 * and test_p2p have them). */
	for (int type = HETMM_MEMORY_DEVICE_PRIVATE;
	     type <= HETMM_MEMORY_PCI_P2PDMA; type++) {
		struct hetmm_pagemap_info info;
		int rc;

		desc.type = (enum hetmm_memory_type)type;
		pg = NULL;
		rc = hetmm_pagemap_add(ctx, &desc, &pg);
		if (type == HETMM_MEMORY_DEVICE_PRIVATE)
			CHECK_EQ(rc, 0);
		else if (type == HETMM_MEMORY_FS_DAX ||
			 type == HETMM_MEMORY_GENERIC ||
			 type == HETMM_MEMORY_PCI_P2PDMA ||
			 type == HETMM_MEMORY_DEVICE_COHERENT)
			CHECK_EQ(rc, -EINVAL);   /* no page_address/page_fd */
		else
			CHECK(rc == 0 || rc == -EOPNOTSUPP);
		if (rc == 0) {
			REQUIRE(pg != NULL);
			CHECK_OK(hetmm_pagemap_get_info(pg, &info));
			CHECK_EQ(info.type, type);
			CHECK_EQ(info.nr_pages, 8);
			CHECK_EQ(info.nr_free, 8);
			CHECK(info.drvdata == d);
			CHECK_OK(hetmm_pagemap_remove(pg));
		}
		printf("pagemap type %d: %s\n", type,
		       rc == 0 ? "supported" : strerror(-rc));
	}
	desc.type = HETMM_MEMORY_DEVICE_PRIVATE;

	pg = sentinel;
	desc.type = (enum hetmm_memory_type)0;
	CHECK_EQ(hetmm_pagemap_add(ctx, &desc, &pg), -EINVAL);
	desc.type = (enum hetmm_memory_type)99;
	CHECK_EQ(hetmm_pagemap_add(ctx, &desc, &pg), -EINVAL);
	desc.type = (enum hetmm_memory_type)-1;
	CHECK_EQ(hetmm_pagemap_add(ctx, &desc, &pg), -EINVAL);
	desc.type = HETMM_MEMORY_DEVICE_PRIVATE;

	desc.nr_pages = 0;
	CHECK_EQ(hetmm_pagemap_add(ctx, &desc, &pg), -EINVAL);
	desc.nr_pages = 8;

	desc.ops = NULL;
	CHECK_EQ(hetmm_pagemap_add(ctx, &desc, &pg), -EINVAL);
	/* The copy callbacks are not optional. */
	desc.ops = &no_to;
	CHECK_EQ(hetmm_pagemap_add(ctx, &desc, &pg), -EINVAL);
	desc.ops = &no_from;
	CHECK_EQ(hetmm_pagemap_add(ctx, &desc, &pg), -EINVAL);
	desc.ops = &ops_plain;

	/* A coherent device with no address for its pages: hetmm zeroes
	 * and copies them through it (hetmm.h), so it is refused, where
	 * the kernel lets coherent memory be hosted at all. */
	{
		static const struct hetmm_pagemap_ops no_view = {
			.copy_to_device = tdev_copy_to,
			.copy_from_device = tdev_copy_from,
			.page_address = no_address,
			.page_fd = no_fd,
		};
		desc.type = HETMM_MEMORY_DEVICE_COHERENT;
		desc.ops = &no_view;
		int rc = hetmm_pagemap_add(ctx, &desc, &pg);
		if (rc != -EOPNOTSUPP)
			CHECK_EQ(rc, -EINVAL);
		desc.type = HETMM_MEMORY_DEVICE_PRIVATE;
		desc.ops = &ops_plain;
	}

	/* Unknown flags; remapping without a page address to remap to. */
	desc.flags = 1u << 7;
	CHECK_EQ(hetmm_pagemap_add(ctx, &desc, &pg), -EINVAL);
	desc.flags = HETMM_PAGEMAP_REMAP;
	CHECK_EQ(hetmm_pagemap_add(ctx, &desc, &pg), -EINVAL);
	desc.flags = 0;

	CHECK_EQ(hetmm_pagemap_add(NULL, &desc, &pg), -EINVAL);
	CHECK_EQ(hetmm_pagemap_add(ctx, NULL, &pg), -EINVAL);
	CHECK_EQ(hetmm_pagemap_add(ctx, &desc, NULL), -EINVAL);
	CHECK(pg == sentinel);

	CHECK_EQ(hetmm_pagemap_remove(NULL), -EINVAL);
	CHECK_EQ(hetmm_pagemap_get_info(NULL, NULL), -EINVAL);
	{
		struct hetmm_page_info pi;
		CHECK_EQ(hetmm_page_get_info(NULL, &pi), -EINVAL);
	}
	CHECK_EQ(__atomic_load_n(&d->calls, __ATOMIC_RELAXED), 0);
	tdev_free_all(d);
}

/* Does pfn fall in [first, first + nr) of pagemap info i? */
static int in_map(const struct hetmm_pagemap_info *i, hetmm_pfn_t pfn)
{
	return hetmm_pfn_flags(pfn) == hetmm_pfn_flags(i->first_pfn) &&
	       hetmm_pfn_number(pfn) >= hetmm_pfn_number(i->first_pfn) &&
	       hetmm_pfn_number(pfn) - hetmm_pfn_number(i->first_pfn) <
		       i->nr_pages;
}

/*
 * A pfn at the edge of one pagemap: it must either name the right page of
 * another pagemap that happens to start or end there, or be -ENXIO.
 */
static void check_edge(struct hetmm_pagemap **pgs,
		       const struct hetmm_pagemap_info *infos, int n,
		       hetmm_pfn_t pfn)
{
	struct hetmm_page *page = NULL;
	int rc = hetmm_pfn_to_page(pfn, &page);
	int owner = -1;

	for (int k = 0; k < n; k++)
		if (in_map(&infos[k], pfn))
			owner = k;
	if (owner < 0) {
		CHECK_EQ(rc, -ENXIO);
	} else {
		struct hetmm_page_info pi;

		CHECK_EQ(rc, 0);
		if (rc == 0) {
			CHECK_OK(hetmm_page_get_info(page, &pi));
			CHECK(pi.pagemap == pgs[owner]);
			CHECK_EQ(pi.index,
				 hetmm_pfn_number(pfn) -
					 hetmm_pfn_number(infos[owner].first_pfn));
		}
	}
}

static void pfn_lookups(struct hetmm_ctx *ctx)
{
	enum { NA = 40, NB = 13 };
	struct tdev *da = tdev_new(NA, T_COPY), *db = tdev_new(NB, T_ADDR);
	struct hetmm_pagemap *pgs[2];
	struct hetmm_pagemap_info infos[2];
	int owner_a, owner_b;
	struct hetmm_page *page;
	struct hetmm_page_info pi;

	REQUIRE_OK(add(ctx, da, &owner_a, &pgs[0]));
	REQUIRE_OK(add(ctx, db, &owner_b, &pgs[1]));
	for (int k = 0; k < 2; k++) {
		REQUIRE_OK(hetmm_pagemap_get_info(pgs[k], &infos[k]));
		CHECK_EQ(infos[k].type, HETMM_MEMORY_DEVICE_PRIVATE);
		CHECK(hetmm_pfn_flags(infos[k].first_pfn) & HETMM_PFN_DEV);
	}
	CHECK_EQ(infos[0].nr_pages, NA);
	CHECK_EQ(infos[1].nr_pages, NB);
	CHECK_EQ(infos[0].nr_free, NA);
	CHECK_EQ(infos[1].nr_free, NB);
	CHECK(infos[0].drvdata == da);
	CHECK(infos[1].drvdata == db);
	CHECK(infos[0].owner == &owner_a);
	CHECK(infos[1].owner == &owner_b);

	/* The two frame ranges don't overlap. */
	for (uint64_t i = 0; i < NB; i++)
		CHECK(!in_map(&infos[0], pfn_plus(infos[1].first_pfn, (int64_t)i)));

	/* Every page of both resolves to itself, free and unowned. */
	for (int k = 0; k < 2; k++) {
		for (uint64_t i = 0; i < infos[k].nr_pages; i++) {
			page = NULL;
			CHECK_OK(hetmm_pfn_to_page(
				pfn_plus(infos[k].first_pfn, (int64_t)i), &page));
			if (!page)
				continue;
			memset(&pi, 0xee, sizeof(pi));
			CHECK_OK(hetmm_page_get_info(page, &pi));
			CHECK(pi.pagemap == pgs[k]);
			CHECK_EQ(pi.index, i);
			CHECK_EQ(pi.refcount, 0);
			CHECK_EQ(pi.pincount, 0);
			CHECK_EQ(pi.owner, 0);
			CHECK_EQ(pi.flags & HETMM_PAGE_ALLOCATED, 0);
		}
	}
	/* Distinct pfns give distinct pages. */
	{
		struct hetmm_page *p0 = NULL, *p1 = NULL;

		CHECK_OK(hetmm_pfn_to_page(infos[0].first_pfn, &p0));
		CHECK_OK(hetmm_pfn_to_page(pfn_plus(infos[0].first_pfn, 1), &p1));
		CHECK(p0 != p1);
	}

	/* Edges: one before and one past each range. */
	for (int k = 0; k < 2; k++) {
		check_edge(pgs, infos, 2,
			   pfn_plus(infos[k].first_pfn,
				    (int64_t)infos[k].nr_pages));
		if (hetmm_pfn_number(infos[k].first_pfn) > 0)
			check_edge(pgs, infos, 2,
				   pfn_plus(infos[k].first_pfn, -1));
	}

	/* Garbage: raw integers, a valid number without the DEV flag, a
	 * huge number with it. */
	{
		hetmm_pfn_t g;

		g.val = 0;
		CHECK_EQ(hetmm_pfn_to_page(g, &page), -ENXIO);
		g.val = 0x12345;
		CHECK_EQ(hetmm_pfn_to_page(g, &page), -ENXIO);
		g.val = (uintptr_t)&owner_a;
		CHECK_EQ(hetmm_pfn_to_page(g, &page), -ENXIO);
		g.val = infos[0].first_pfn.val & ~HETMM_PFN_DEV;
		CHECK_EQ(hetmm_pfn_to_page(g, &page), -ENXIO);
		g.val = infos[1].first_pfn.val & ~HETMM_PFN_DEV;
		CHECK_EQ(hetmm_pfn_to_page(g, &page), -ENXIO);
		g.val = HETMM_PFN_DEV | ~HETMM_PFN_FLAGS_MASK;
		CHECK_EQ(hetmm_pfn_to_page(g, &page), -ENXIO);
		g.val = ~0ULL;
		CHECK_EQ(hetmm_pfn_to_page(g, &page), -ENXIO);
		CHECK_EQ(hetmm_pfn_to_page(infos[0].first_pfn, NULL), -EINVAL);
	}

	/* Remove the first: its pfns stop resolving, the second's don't. */
	CHECK_OK(hetmm_pagemap_remove(pgs[0]));
	for (uint64_t i = 0; i < NA; i++)
		CHECK_EQ(hetmm_pfn_to_page(pfn_plus(infos[0].first_pfn,
						    (int64_t)i), &page),
			 -ENXIO);
	for (uint64_t i = 0; i < NB; i++) {
		page = NULL;
		CHECK_OK(hetmm_pfn_to_page(
			pfn_plus(infos[1].first_pfn, (int64_t)i), &page));
		if (page) {
			CHECK_OK(hetmm_page_get_info(page, &pi));
			CHECK(pi.pagemap == pgs[1]);
			CHECK_EQ(pi.index, i);
		}
	}

	/* A third pagemap added now may reuse the freed numbers; whatever it
	 * gets must resolve to it, not to the removed one. */
	{
		struct tdev *dc = tdev_new(NA, T_REMAP);
		struct hetmm_pagemap *pc;
		struct hetmm_pagemap_info ic;

		REQUIRE_OK(add(ctx, dc, NULL, &pc));
		REQUIRE_OK(hetmm_pagemap_get_info(pc, &ic));
		for (uint64_t i = 0; i < NA; i++) {
			page = NULL;
			CHECK_OK(hetmm_pfn_to_page(
				pfn_plus(ic.first_pfn, (int64_t)i), &page));
			if (page) {
				CHECK_OK(hetmm_page_get_info(page, &pi));
				CHECK(pi.pagemap == pc);
				CHECK_EQ(pi.index, i);
			}
		}
		CHECK_OK(hetmm_pagemap_remove(pc));
		for (uint64_t i = 0; i < NA; i++)
			CHECK_EQ(hetmm_pfn_to_page(pfn_plus(ic.first_pfn,
							    (int64_t)i),
						   &page),
				 -ENXIO);
		tdev_free_all(dc);
	}

	CHECK_OK(hetmm_pagemap_remove(pgs[1]));
	for (uint64_t i = 0; i < NB; i++)
		CHECK_EQ(hetmm_pfn_to_page(pfn_plus(infos[1].first_pfn,
						    (int64_t)i), &page),
			 -ENXIO);
	CHECK_EQ(LD(da->calls) + LD(db->calls), 0);
	tdev_free_all(da);
	tdev_free_all(db);
}

/*
 * Migrate through the driver and back; watch the metadata, the driver's
 * calls and the bytes in "device memory".  N pages hold data, Z more were
 * never written: those become zero device pages, with no copy made.
 */
static void metadata_through_migration(struct hetmm_ctx *ctx,
				       enum tmode mode)
{
	enum { NDEV = 32, N = 12, Z = 3, NB = N + Z };
	struct tdev *d = tdev_new(NDEV, mode);
	struct hetmm_pagemap *pg;
	struct hetmm_pagemap_info info;
	struct hetmm_migrate_report rep;
	uint8_t status[NB];
	hetmm_pfn_t pfns[NB];
	char *buf = t_map(NB);
	int owner;
	uint64_t seed = 0x1000 + (uint64_t)mode;

	REQUIRE_OK(add(ctx, d, &owner, &pg));
	t_fill(buf, N, seed);

	memset(&rep, 0, sizeof(rep));
	memset(status, 0, sizeof(status));
	rep.status = status;
	CHECK_OK(hetmm_migrate_to_device(pg, buf, NB * PS, &rep));
	CHECK_EQ(rep.moved, NB);
	CHECK_EQ(rep.skipped, 0);
	for (int i = 0; i < NB; i++)
		CHECK_EQ(status[i], HETMM_MIGRATE_MOVED);
	/* Copying drivers got the data pages, and only those. */
	if (mode != T_REMAP)
		CHECK_EQ(LD(d->pages_to), N);
	CHECK_EQ(LD(d->bad_index), 0);

	CHECK_OK(hetmm_pagemap_get_info(pg, &info));
	CHECK_EQ(info.nr_free, NDEV - NB);

	for (int i = 0; i < NB; i++) {
		struct hetmm_page *page = NULL;
		struct hetmm_page_info pi;

		CHECK(!t_present(buf + i * PS));
		pfns[i].val = 0;
		CHECK_OK(hetmm_addr_to_pfn(ctx, buf + i * PS, &pfns[i]));
		/* An address inside the page names the same frame. */
		{
			hetmm_pfn_t mid = { 0 };
			CHECK_OK(hetmm_addr_to_pfn(ctx, buf + i * PS + 123, &mid));
			CHECK_EQ(mid.val, pfns[i].val);
		}
		CHECK(hetmm_pfn_flags(pfns[i]) & HETMM_PFN_DEV);
		CHECK(in_map(&info, pfns[i]));
		CHECK_OK(hetmm_pfn_to_page(pfns[i], &page));
		if (!page)
			continue;
		memset(&pi, 0, sizeof(pi));
		CHECK_OK(hetmm_page_get_info(page, &pi));
		CHECK_EQ(pi.refcount, 1);
		CHECK_EQ(pi.pincount, 0);
		CHECK_EQ(pi.owner, (uintptr_t)(buf + i * PS));
		CHECK(pi.flags & HETMM_PAGE_ALLOCATED);
		CHECK(pi.pagemap == pg);
		CHECK_EQ(pi.index, hetmm_pfn_number(pfns[i]) -
					   hetmm_pfn_number(info.first_pfn));
		if (i < N) {
			/* The driver holds the page's bytes at that index. */
			CHECK_EQ(pi.flags & HETMM_PAGE_ZERO, 0);
			CHECK_EQ(t_verify_from(d->mem + pi.index * PS, 1, seed,
					       (size_t)i), 0);
		} else {
			CHECK(pi.flags & HETMM_PAGE_ZERO);
		}
		for (int j = 0; j < i; j++)
			CHECK(pfns[j].val != pfns[i].val);
	}

	/* The first half comes back by CPU faults, page by page. */
	for (int i = 0; i < N / 2; i++) {
		struct hetmm_page *page = NULL;
		struct hetmm_page_info pi;

		CHECK_EQ(t_verify_from(buf + i * PS, 1, seed, (size_t)i), 0);
		CHECK(t_present(buf + i * PS));
		/* Fault-around may have brought later pages back too; the
		 * frame of this one must be free whatever happened. */
		CHECK_OK(hetmm_pfn_to_page(pfns[i], &page));
		if (page) {
			CHECK_OK(hetmm_page_get_info(page, &pi));
			CHECK_EQ(pi.refcount, 0);
			CHECK_EQ(pi.owner, 0);
			CHECK_EQ(pi.flags & HETMM_PAGE_ALLOCATED, 0);
		}
		CHECK_EQ(hetmm_addr_to_pfn(ctx, buf + i * PS, &pfns[i]),
			 -ENOENT);
	}
	if (mode == T_COPY)
		CHECK(LD(d->pages_from) >= N / 2);

	/* The rest, if still there, goes with hot-remove: hetmm brings
	 * every byte home before the pfns go away. */
	CHECK_OK(hetmm_pagemap_remove(pg));
	for (int i = 0; i < NB; i++)
		CHECK(t_present(buf + i * PS));
	CHECK_EQ(t_verify(buf, N, seed), 0);
	CHECK_EQ(t_nonzero_pages(buf + N * PS, Z), 0);
	for (int i = N / 2; i < NB; i++) {
		struct hetmm_page *page;

		CHECK_EQ(hetmm_pfn_to_page(pfns[i], &page), -ENXIO);
		CHECK_EQ(hetmm_addr_to_pfn(ctx, buf + i * PS, &pfns[i]),
			 -ENOENT);
	}

	/* Each page that went to the device was freed exactly once. */
	CHECK_EQ(LD(d->freed), NB);
	for (int i = 0; i < NDEV; i++)
		CHECK(LD(d->free_count[i]) <= 1);
	CHECK_EQ(LD(d->bad_index), 0);
	/* Without page_address, every data page came back through
	 * copy_from_device, and no zero page did. */
	if (mode == T_COPY)
		CHECK_EQ(LD(d->pages_from), N);

	/* The buffer is an ordinary buffer again. */
	buf[0] ^= 0x7f;
	CHECK_EQ(t_verify_from(buf + PS, N - 1, seed, 1), 0);
	t_unmap(buf, NB);
	tdev_free_all(d);
}

static int frame_resident(struct tdev *d, uint64_t index)
{
	unsigned char v = 0;

	REQUIRE(mincore(d->mem + index * PS, PS, &v) == 0);
	return v & 1;
}

static uint64_t frame_index(struct hetmm_ctx *ctx, const void *addr)
{
	hetmm_pfn_t pfn;
	struct hetmm_page *page = NULL;
	struct hetmm_page_info pi;

	REQUIRE_OK(hetmm_addr_to_pfn(ctx, addr, &pfn));
	REQUIRE_OK(hetmm_pfn_to_page(pfn, &page));
	REQUIRE_OK(hetmm_page_get_info(page, &pi));
	return pi.index;
}

/* Every frame reports only the documented flags. */
static void check_frame_flags(struct hetmm_pagemap *pg, uint64_t nr)
{
	struct hetmm_pagemap_info info;
	const uint32_t known = HETMM_PAGE_ALLOCATED | HETMM_PAGE_ZERO |
			       HETMM_PAGE_REFERENCED | HETMM_PAGE_EXCLUSIVE;

	REQUIRE_OK(hetmm_pagemap_get_info(pg, &info));
	for (uint64_t i = 0; i < nr; i++) {
		struct hetmm_page *page = NULL;
		struct hetmm_page_info pi;

		CHECK_OK(hetmm_pfn_to_page(pfn_plus(info.first_pfn,
						    (int64_t)i), &page));
		if (!page)
			continue;
		CHECK_OK(hetmm_page_get_info(page, &pi));
		CHECK_EQ(pi.flags & ~known, 0);
	}
}

/*
 * A remapping pagemap: a page the CPU faults back on its own is copied
 * out, and its frame keeps those bytes while free; a page that moves into
 * the frame later finds it emptied, and no zero page ever shows them.
 * Pages brought back a window at a time move out, leaving holes.
 */
static void remap_lone_faults(void)
{
	/* A context of its own: no earlier scan's stream may take one of
	 * these touches for its continuation. */
	struct hetmm_ctx *ctx;
	enum { NDEV = 16, NB = 8, ND = 6 };
	/* Even pages only, far apart: no touch continues a stream. */
	static const int order[NB] = { 0, 8, 4, 12, 2, 10, 6, 14 };
	struct tdev *d = tdev_new(NDEV, T_REMAP);
	struct hetmm_pagemap *pg;
	struct hetmm_migrate_report rep;
	char *a = t_map(NDEV), *b = t_map(NB);
	uint64_t idx[NDEV];

	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	REQUIRE_OK(add(ctx, d, NULL, &pg));
	t_fill(a, NDEV, 0x2001);
	memset(&rep, 0, sizeof(rep));
	CHECK_OK(hetmm_migrate_to_device(pg, a, NDEV * PS, &rep));
	REQUIRE(rep.moved == NDEV);
	for (int i = 0; i < NDEV; i++) {
		idx[i] = frame_index(ctx, a + i * PS);
		CHECK(frame_resident(d, idx[i]));
	}

	for (int k = 0; k < NB; k++) {
		int i = order[k];
		struct hetmm_stats s0 = t_stats(ctx), s1;

		CHECK_EQ(t_verify_from(a + i * PS, 1, 0x2001, (size_t)i), 0);
		s1 = t_stats(ctx);
		CHECK_EQ(s1.faults - s0.faults, 1);
		CHECK_EQ(s1.fault_pages - s0.fault_pages, 1);
		/* Copied out: the free frame still holds the page. */
		CHECK(frame_resident(d, idx[i]));
		CHECK_EQ(t_verify_from(d->mem + idx[i] * PS, 1, 0x2001,
				       (size_t)i), 0);
	}
	check_frame_flags(pg, NDEV);

	/* b takes the eight free frames, every one of them still full:
	 * ND pages of data move in, two holes become zero pages. */
	t_fill(b, ND, 0x2002);
	t_to_device(pg, b, NB);
	for (int i = 0; i < ND; i++)
		CHECK_EQ(t_verify_from(d->mem + frame_index(ctx, b + i * PS) *
				       PS, 1, 0x2002, (size_t)i), 0);
	check_frame_flags(pg, NDEV);

	/* Back by faults, a window at a time: data, then zeroes. */
	CHECK_EQ(t_verify(b, ND, 0x2002), 0);
	CHECK_EQ(t_nonzero_pages(b + ND * PS, NB - ND), 0);
	/* The odd pages of a were never touched: a window moves them out. */
	memset(&rep, 0, sizeof(rep));
	CHECK_OK(hetmm_migrate_to_system(ctx, a, NDEV * PS, &rep));
	CHECK_EQ(rep.moved, NDEV - NB);
	for (int i = 1; i < NDEV; i += 2)
		CHECK(!frame_resident(d, idx[i]));
	CHECK_EQ(t_verify(a, NDEV, 0x2001), 0);

	CHECK_OK(hetmm_pagemap_remove(pg));
	CHECK_OK(hetmm_ctx_destroy(ctx));
	t_unmap(a, NDEV);
	t_unmap(b, NB);
	tdev_free_all(d);
}

int main(void)
{
	struct hetmm_ctx *ctx;
	int sz = hetmm_page_metadata_size();

	printf("metadata per page: %d bytes\n", sz);
	CHECK(sz > 0);
	CHECK(sz <= 32);

	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	add_validation(ctx);
	pfn_lookups(ctx);
	metadata_through_migration(ctx, T_COPY);
	metadata_through_migration(ctx, T_ADDR);
	metadata_through_migration(ctx, T_REMAP);
	remap_lone_faults();
	CHECK_OK(hetmm_ctx_destroy(ctx));
	return t_done();
}
