/* SPDX-License-Identifier: MIT */
/*
 * test_p2p: peer devices (PCI peer-to-peer DMA).
 *
 *   - two emulated devices declared peers: a migration from one to the
 *     other copies device to device with the destination's engine
 *     (copied_from_peer), zero pages with no copy; no page passes through
 *     system memory (to_system_pages, faults, copies out: none), every
 *     frame where it should be, every byte kept; both ways, with the
 *     moving and the copying device, and into a device too small;
 *   - two devices that are not peers: the same migration skips the pages
 *     (SKIP_OTHER_DEVICE, no peer copy); the caller's bounce through
 *     system memory is what it costs (copies out and in, counted);
 *   - a peer copy that fails leaves the pages where they were, reported
 *     SKIP_ERROR;
 *   - hetmm_p2pdma_bus_addr: a peer reads the page at the address the
 *     owner gives; not a peer: -EREMOTEIO; a peer removed is no peer of
 *     the pagemap that takes its section;
 *   - hetmm_p2pdma_remove_peer: no longer peers, both ways (bus address
 *     -EREMOTEIO, migration skips the other's pages), declared again
 *     they are;
 *   - a PCI_P2PDMA pagemap: pins and gets, fast or not, refused with
 *     -EREMOTEIO unless the caller passes HETMM_FOLL_PCI_P2PDMA;
 *   - a CPU writer racing migrations back and forth between peers loses
 *     no write.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "t.h"

static struct hetmm_ctx *ctx;

static struct hetmm_emu *emu_new(uint64_t nr, uint32_t flags)
{
	struct hetmm_emu_desc d = { HETMM_MEMORY_DEVICE_PRIVATE, nr, flags };
	struct hetmm_emu *emu = NULL;

	REQUIRE_OK(hetmm_emu_create_desc(ctx, &d, &emu));
	return emu;
}

static struct hetmm_pagemap *pg_of(struct hetmm_emu *emu)
{
	struct hetmm_pagemap *pg = NULL;

	REQUIRE_OK(hetmm_emu_pagemap(emu, &pg));
	return pg;
}

static struct hetmm_emu_stats es(struct hetmm_emu *emu)
{
	struct hetmm_emu_stats s;

	REQUIRE_OK(hetmm_emu_get_stats(emu, &s));
	return s;
}

static struct hetmm_pagemap_info info_of(struct hetmm_pagemap *pg)
{
	struct hetmm_pagemap_info info;

	REQUIRE_OK(hetmm_pagemap_get_info(pg, &info));
	return info;
}

/* How many of the n pages at p are on pagemap pg. */
static size_t count_on(struct hetmm_pagemap *pg, const char *p, size_t n)
{
	uint64_t first = hetmm_pfn_number(info_of(pg).first_pfn);
	uint64_t nr = info_of(pg).nr_pages;
	size_t c = 0;

	for (size_t i = 0; i < n; i++) {
		hetmm_pfn_t pfn;
		if (hetmm_addr_to_pfn(ctx, p + i * PS, &pfn))
			continue;
		uint64_t num = hetmm_pfn_number(pfn);
		c += num >= first && num < first + nr;
	}
	return c;
}

#define DATA 64
#define HOLES 32
#define ALL (DATA + HOLES)

/* Move every page of buf (on from) to to, peers, and check that it went
 * device to device. */
static void move_across(struct hetmm_emu *from, struct hetmm_emu *to,
			char *buf)
{
	uint8_t st[ALL];
	struct hetmm_migrate_report rep = { 0, 0, st };
	struct hetmm_stats s0 = t_stats(ctx);
	struct hetmm_emu_stats f0 = es(from), t0 = es(to);

	CHECK_OK(hetmm_migrate_to_device(pg_of(to), buf, ALL * PS, &rep));
	CHECK_EQ(rep.moved, ALL);
	for (size_t i = 0; i < ALL; i++)
		CHECK_EQ(st[i], HETMM_MIGRATE_MOVED);
	CHECK_EQ(count_on(pg_of(to), buf, ALL), ALL);
	CHECK_EQ(count_on(pg_of(from), buf, ALL), 0);

	struct hetmm_stats s1 = t_stats(ctx);
	struct hetmm_emu_stats f1 = es(from), t1 = es(to);
	/* Device to device: the destination's engine copied the data
	 * pages from the peer, the holes went as zero pages, and nothing
	 * passed through system memory. */
	CHECK_EQ(t1.copied_from_peer - t0.copied_from_peer, DATA);
	CHECK_EQ(f1.copied_from_device - f0.copied_from_device, 0);
	CHECK_EQ(t1.copied_to_device - t0.copied_to_device, 0);
	CHECK_EQ(s1.to_system_pages - s0.to_system_pages, 0);
	CHECK_EQ(s1.faults - s0.faults, 0);
	CHECK_EQ(s1.to_device_pages - s0.to_device_pages, ALL);
	CHECK_EQ(s1.device_resident, s0.device_resident);
	CHECK_EQ(info_of(pg_of(from)).nr_free, info_of(pg_of(from)).nr_pages);
}

static void test_peers(uint32_t flags)
{
	struct hetmm_emu *a = emu_new(256, flags), *b = emu_new(256, flags);
	char *buf = t_map(ALL);

	CHECK_OK(hetmm_p2pdma_add_peer(pg_of(a), pg_of(b)));
	t_fill(buf, DATA, 41 + flags);         /* the rest: never touched */
	CHECK_OK(hetmm_migrate_to_device(pg_of(a), buf, ALL * PS, NULL));
	CHECK_EQ(count_on(pg_of(a), buf, ALL), ALL);
	move_across(a, b, buf);
	move_across(b, a, buf);                /* and back: both ways */
	move_across(a, b, buf);
	t_verify(buf, DATA, 41 + flags);       /* the CPU faults them back */
	CHECK_EQ(t_nonzero_pages(buf + DATA * PS, HOLES), 0);
	CHECK_EQ(count_on(pg_of(b), buf, ALL), 0);
	CHECK_OK(hetmm_emu_destroy(a));
	CHECK_OK(hetmm_emu_destroy(b));
	t_unmap(buf, ALL);
}

/* A peer too small for it all: what fits moves, the rest stays. */
static void test_peer_full(void)
{
	struct hetmm_emu *a = emu_new(256, 0), *b = emu_new(16, 0);
	char *buf = t_map(DATA);
	uint8_t st[DATA];
	struct hetmm_migrate_report rep = { 0, 0, st };

	CHECK_OK(hetmm_p2pdma_add_peer(pg_of(b), pg_of(a)));
	t_fill(buf, DATA, 43);
	CHECK_OK(hetmm_migrate_to_device(pg_of(a), buf, DATA * PS, NULL));
	CHECK_OK(hetmm_migrate_to_device(pg_of(b), buf, DATA * PS, &rep));
	CHECK_EQ(rep.moved, 16);
	size_t nomem = 0;
	for (size_t i = 0; i < DATA; i++)
		nomem += st[i] == HETMM_MIGRATE_SKIP_NOMEM;
	CHECK_EQ(nomem, DATA - 16);
	CHECK_EQ(count_on(pg_of(b), buf, DATA), 16);
	CHECK_EQ(count_on(pg_of(a), buf, DATA), DATA - 16);
	CHECK_EQ(es(b).copied_from_peer, 16);
	t_verify(buf, DATA, 43);
	CHECK_OK(hetmm_emu_destroy(a));
	CHECK_OK(hetmm_emu_destroy(b));
	t_unmap(buf, DATA);
}

/* Not peers: skipped as the kernel skips another owner's pages; the
 * bounce through system memory is the caller's, and costs copies. */
static void test_not_peers(void)
{
	struct hetmm_emu *c = emu_new(256, HETMM_EMU_COPY_ONLY);
	struct hetmm_emu *d = emu_new(256, HETMM_EMU_COPY_ONLY);
	char *buf = t_map(DATA);
	uint8_t st[DATA];
	struct hetmm_migrate_report rep = { 0, 0, st };

	t_fill(buf, DATA, 47);
	CHECK_OK(hetmm_migrate_to_device(pg_of(c), buf, DATA * PS, NULL));
	CHECK_EQ(es(c).copied_to_device, DATA);
	CHECK_EQ(hetmm_migrate_to_device(pg_of(d), buf, DATA * PS, &rep),
		 -ENOENT);
	CHECK_EQ(rep.moved, 0);
	for (size_t i = 0; i < DATA; i++)
		CHECK_EQ(st[i], HETMM_MIGRATE_SKIP_OTHER_DEVICE);
	CHECK_EQ(es(d).copied_from_peer, 0);
	CHECK_EQ(count_on(pg_of(c), buf, DATA), DATA);

	/* The bounce: out to system memory, then in. */
	struct hetmm_stats s0 = t_stats(ctx);
	CHECK_OK(hetmm_migrate_to_system(ctx, buf, DATA * PS, NULL));
	CHECK_OK(hetmm_migrate_to_device(pg_of(d), buf, DATA * PS, NULL));
	struct hetmm_stats s1 = t_stats(ctx);
	CHECK_EQ(s1.to_system_pages - s0.to_system_pages, DATA);
	CHECK_EQ(es(c).copied_from_device, DATA);
	CHECK_EQ(es(d).copied_to_device, DATA);
	CHECK_EQ(es(d).copied_from_peer, 0);
	t_verify(buf, DATA, 47);
	CHECK_OK(hetmm_emu_destroy(c));
	CHECK_OK(hetmm_emu_destroy(d));
	t_unmap(buf, DATA);
}

static void test_bus_addr(void)
{
	struct hetmm_emu *a = emu_new(64, 0), *b = emu_new(64, 0);
	struct hetmm_emu *c = emu_new(64, 0);
	char *buf = t_map(4);
	hetmm_pfn_t pfn, none = { 0 }, bogus = { HETMM_PFN_DEV | 12345 };
	uint64_t addr = 0;

	CHECK_OK(hetmm_p2pdma_add_peer(pg_of(a), pg_of(b)));
	CHECK_OK(hetmm_p2pdma_add_peer(pg_of(a), pg_of(b)));   /* again */
	t_fill(buf, 4, 53);
	CHECK_OK(hetmm_migrate_to_device(pg_of(a), buf, 4 * PS, NULL));
	REQUIRE_OK(hetmm_addr_to_pfn(ctx, buf + 2 * PS, &pfn));
	/* The peer reaches the page where the owner says it is. */
	CHECK_OK(hetmm_p2pdma_bus_addr(pg_of(b), pfn, &addr));
	REQUIRE(addr != 0);
	t_verify_from((const void *)(uintptr_t)addr, 1, 53, 2);
	CHECK_OK(hetmm_p2pdma_bus_addr(pg_of(a), pfn, &addr));   /* own */
	CHECK_EQ(hetmm_p2pdma_bus_addr(pg_of(c), pfn, &addr), -EREMOTEIO);
	CHECK_EQ(hetmm_p2pdma_bus_addr(pg_of(b), none, &addr), -ENXIO);
	CHECK_EQ(hetmm_p2pdma_bus_addr(pg_of(b), bogus, &addr), -ENXIO);
	CHECK_EQ(hetmm_p2pdma_bus_addr(NULL, pfn, &addr), -EINVAL);
	CHECK_EQ(hetmm_p2pdma_bus_addr(pg_of(b), pfn, NULL), -EINVAL);
	CHECK_EQ(hetmm_p2pdma_add_peer(pg_of(a), pg_of(a)), -EINVAL);
	CHECK_EQ(hetmm_p2pdma_add_peer(pg_of(a), NULL), -EINVAL);
	CHECK_EQ(hetmm_p2pdma_add_peer(NULL, pg_of(a)), -EINVAL);

	/* A removed peer is nobody's: the pagemap that takes its section
	 * next is no peer of a. */
	struct hetmm_pagemap *gone = pg_of(b);
	uint64_t gone_first = hetmm_pfn_number(info_of(gone).first_pfn);
	CHECK_OK(hetmm_emu_destroy(b));
	CHECK_EQ(hetmm_p2pdma_add_peer(pg_of(a), gone), -EINVAL);
	struct hetmm_emu *e = emu_new(64, 0);
	CHECK_EQ(hetmm_pfn_number(info_of(pg_of(e)).first_pfn), gone_first);
	CHECK_EQ(hetmm_p2pdma_bus_addr(pg_of(e), pfn, &addr), -EREMOTEIO);
	CHECK_EQ(hetmm_migrate_to_device(pg_of(e), buf, 4 * PS, NULL),
		 -ENOENT);
	CHECK_EQ(count_on(pg_of(a), buf, 4), 4);
	t_verify(buf, 4, 53);
	CHECK_OK(hetmm_emu_destroy(a));
	CHECK_OK(hetmm_emu_destroy(c));
	CHECK_OK(hetmm_emu_destroy(e));
	t_unmap(buf, 4);
}

/* Peers no longer: what two devices that never were get, until they are
 * declared again. */
static void test_remove_peer(void)
{
	struct hetmm_emu *a = emu_new(64, 0), *b = emu_new(64, 0);
	struct hetmm_emu *c = emu_new(64, 0);
	char *buf = t_map(DATA);
	uint8_t st[DATA];
	struct hetmm_migrate_report rep = { 0, 0, st };
	hetmm_pfn_t pfn;
	uint64_t addr = 0;

	t_fill(buf, DATA, 59);
	CHECK_OK(hetmm_p2pdma_add_peer(pg_of(a), pg_of(b)));
	CHECK_OK(hetmm_migrate_to_device(pg_of(a), buf, DATA * PS, NULL));
	REQUIRE_OK(hetmm_addr_to_pfn(ctx, buf + PS, &pfn));
	CHECK_OK(hetmm_p2pdma_bus_addr(pg_of(b), pfn, &addr));

	CHECK_OK(hetmm_p2pdma_remove_peer(pg_of(b), pg_of(a)));  /* any order */
	CHECK_EQ(hetmm_p2pdma_bus_addr(pg_of(b), pfn, &addr), -EREMOTEIO);
	CHECK_OK(hetmm_p2pdma_bus_addr(pg_of(a), pfn, &addr));   /* own */
	CHECK_EQ(hetmm_migrate_to_device(pg_of(b), buf, DATA * PS, &rep),
		 -ENOENT);
	for (size_t i = 0; i < DATA; i++)
		CHECK_EQ(st[i], HETMM_MIGRATE_SKIP_OTHER_DEVICE);
	CHECK_EQ(es(b).copied_from_peer, 0);
	CHECK_EQ(count_on(pg_of(a), buf, DATA), DATA);

	/* Refused before anything changes. */
	CHECK_EQ(hetmm_p2pdma_remove_peer(pg_of(a), pg_of(b)), -ENOENT);
	CHECK_EQ(hetmm_p2pdma_remove_peer(pg_of(a), pg_of(c)), -ENOENT);
	CHECK_EQ(hetmm_p2pdma_remove_peer(pg_of(a), pg_of(a)), -EINVAL);
	CHECK_EQ(hetmm_p2pdma_remove_peer(pg_of(a), NULL), -EINVAL);
	CHECK_EQ(hetmm_p2pdma_remove_peer(NULL, pg_of(a)), -EINVAL);

	/* Declared again, peers as before: device to device. */
	CHECK_OK(hetmm_p2pdma_add_peer(pg_of(a), pg_of(b)));
	CHECK_OK(hetmm_migrate_to_device(pg_of(b), buf, DATA * PS, &rep));
	CHECK_EQ(rep.moved, DATA);
	CHECK_EQ(es(b).copied_from_peer, DATA);
	CHECK_EQ(count_on(pg_of(b), buf, DATA), DATA);

	/* A removed pagemap is no handle to remove a peer by. */
	struct hetmm_pagemap *gone = pg_of(b);
	CHECK_OK(hetmm_emu_destroy(b));
	CHECK_EQ(hetmm_p2pdma_remove_peer(pg_of(a), gone), -EINVAL);
	t_verify(buf, DATA, 59);
	CHECK_OK(hetmm_emu_destroy(a));
	CHECK_OK(hetmm_emu_destroy(c));
	t_unmap(buf, DATA);
}

/* ------------------------------------------------------------------------
 * A driver of the test's own whose peer copies fail on command: the
 * pages stay where they are, reported as a device error.
 */
struct flaky {
	char *mem;
	uint64_t nr;
	int fail;
};

static int flaky_to(struct hetmm_pagemap *pg, uint64_t index,
		    const void *src, size_t nr)
{
	struct flaky *f = hetmm_pagemap_drvdata(pg);

	memcpy(f->mem + index * PS, src, nr * PS);
	return 0;
}

static int flaky_from(struct hetmm_pagemap *pg, void *dst, uint64_t index,
		      size_t nr)
{
	struct flaky *f = hetmm_pagemap_drvdata(pg);

	memcpy(dst, f->mem + index * PS, nr * PS);
	return 0;
}

static int flaky_bus_addr(struct hetmm_pagemap *pg, uint64_t index,
			  uint64_t *addr)
{
	struct flaky *f = hetmm_pagemap_drvdata(pg);

	*addr = (uint64_t)(uintptr_t)(f->mem + index * PS);
	return 0;
}

static int flaky_from_peer(struct hetmm_pagemap *pg, uint64_t index,
			   uint64_t bus_addr, size_t nr)
{
	struct flaky *f = hetmm_pagemap_drvdata(pg);

	if (f->fail)
		return -EIO;
	memcpy(f->mem + index * PS, (const void *)(uintptr_t)bus_addr,
	       nr * PS);
	return 0;
}

static const struct hetmm_pagemap_ops flaky_ops = {
	.copy_to_device = flaky_to,
	.copy_from_device = flaky_from,
	.p2p_bus_addr = flaky_bus_addr,
	.copy_from_peer = flaky_from_peer,
};

static void test_peer_error(void)
{
	struct flaky f = { t_map(32), 32, 1 };
	struct hetmm_pagemap_desc desc = {
		.type = HETMM_MEMORY_DEVICE_PRIVATE, .nr_pages = 32,
		.ops = &flaky_ops, .drvdata = &f,
	};
	struct hetmm_pagemap *pg;
	struct hetmm_emu *a = emu_new(32, 0);
	char *buf = t_map(8);
	uint8_t st[8];
	struct hetmm_migrate_report rep = { 0, 0, st };

	REQUIRE_OK(hetmm_pagemap_add(ctx, &desc, &pg));
	CHECK_OK(hetmm_p2pdma_add_peer(pg, pg_of(a)));
	t_fill(buf, 8, 59);
	CHECK_OK(hetmm_migrate_to_device(pg_of(a), buf, 8 * PS, NULL));
	CHECK_EQ(hetmm_migrate_to_device(pg, buf, 8 * PS, &rep), -EIO);
	for (size_t i = 0; i < 8; i++)
		CHECK_EQ(st[i], HETMM_MIGRATE_SKIP_ERROR);
	CHECK_EQ(count_on(pg_of(a), buf, 8), 8);
	CHECK_EQ(info_of(pg).nr_free, 32);
	f.fail = 0;
	CHECK_OK(hetmm_migrate_to_device(pg, buf, 8 * PS, &rep));
	CHECK_EQ(rep.moved, 8);
	CHECK_EQ(count_on(pg, buf, 8), 8);
	t_verify(buf, 8, 59);                   /* back through flaky_from */
	CHECK_OK(hetmm_emu_destroy(a));
	CHECK_OK(hetmm_pagemap_remove(pg));
	t_unmap(f.mem, 32);
	t_unmap(buf, 8);
}

/* ------------------------------------------------------------------------
 * A PCI_P2PDMA pagemap: a BAR the process maps, held only by callers
 * that can DMA to it.
 */
struct bar {
	char *mem;
	uint64_t nr;
};

static void *bar_address(struct hetmm_pagemap *pg, uint64_t index)
{
	struct bar *b = hetmm_pagemap_drvdata(pg);

	return b && index < b->nr ? b->mem + index * PS : NULL;
}

static int bar_bus_addr(struct hetmm_pagemap *pg, uint64_t index,
			uint64_t *addr)
{
	struct bar *b = hetmm_pagemap_drvdata(pg);

	if (!b || index >= b->nr)
		return -EINVAL;
	*addr = 0x80000000ULL + index * PS;    /* its bus window */
	return 0;
}

static const struct hetmm_pagemap_ops bar_ops = {
	.page_address = bar_address,
	.p2p_bus_addr = bar_bus_addr,
};

typedef long (*gup_fn)(struct hetmm_ctx *, void *, size_t, unsigned int,
		       void **);

static void test_p2pdma_pins(void)
{
	struct bar b = { t_map(8), 8 };
	struct hetmm_pagemap_desc desc = {
		.type = HETMM_MEMORY_PCI_P2PDMA, .nr_pages = 8,
		.ops = &bar_ops, .drvdata = &b,
	};
	struct hetmm_pagemap *pg;
	REQUIRE_OK(hetmm_pagemap_add(ctx, &desc, &pg));
	void *pages[8];
	uint64_t refs, pins;

	const gup_fn gets[] = { hetmm_get_user_pages,
				hetmm_get_user_pages_fast };
	const gup_fn pinfns[] = { hetmm_pin_user_pages,
				  hetmm_pin_user_pages_fast };
	for (int k = 0; k < 2; k++) {
		CHECK_EQ(gets[k](ctx, b.mem, 8, 0, pages), -EREMOTEIO);
		CHECK_EQ(pinfns[k](ctx, b.mem, 8, HETMM_FOLL_WRITE, pages),
			 -EREMOTEIO);
		CHECK_OK(hetmm_user_page_holds(ctx, b.mem, &refs, &pins));
		CHECK_EQ(refs + pins, 0);
		CHECK_EQ(pinfns[k](ctx, b.mem, 8, HETMM_FOLL_PCI_P2PDMA |
				   HETMM_FOLL_LONGTERM, pages), 8);
		CHECK_OK(hetmm_user_page_holds(ctx, b.mem + 7 * PS, &refs,
					       &pins));
		CHECK_EQ(pins, 1);
		CHECK_OK(hetmm_unpin_user_pages(ctx, pages, 8));
		CHECK_EQ(gets[k](ctx, b.mem, 8, HETMM_FOLL_PCI_P2PDMA,
				 pages), 8);
		CHECK_OK(hetmm_put_user_pages(ctx, pages, 8));
	}
	/* System memory takes the flag as it takes none. */
	char *sys = t_map(1);
	CHECK_EQ(hetmm_pin_user_pages(ctx, sys, 1, HETMM_FOLL_PCI_P2PDMA,
				      pages), 1);
	CHECK_OK(hetmm_unpin_user_pages(ctx, pages, 1));
	/* Nothing migrates to peer memory. */
	CHECK_EQ(hetmm_migrate_to_device(pg, sys, PS, NULL), -EOPNOTSUPP);
	t_unmap(sys, 1);

	/* A peer reaches a BAR page at its bus address. */
	struct hetmm_emu *a = emu_new(16, 0);
	hetmm_pfn_t pfn = info_of(pg).first_pfn;
	uint64_t addr;
	pfn.val += 3;
	CHECK_EQ(hetmm_p2pdma_bus_addr(pg_of(a), pfn, &addr), -EREMOTEIO);
	CHECK_OK(hetmm_p2pdma_add_peer(pg, pg_of(a)));
	CHECK_OK(hetmm_p2pdma_bus_addr(pg_of(a), pfn, &addr));
	CHECK_EQ(addr, 0x80000000ULL + 3 * PS);
	CHECK_OK(hetmm_emu_destroy(a));

	/* A BAR needs its address. */
	struct hetmm_pagemap_ops no_addr = { .p2p_bus_addr = bar_bus_addr };
	struct hetmm_pagemap *pg2;
	desc.ops = &no_addr;
	CHECK_EQ(hetmm_pagemap_add(ctx, &desc, &pg2), -EINVAL);
	CHECK_OK(hetmm_pagemap_remove(pg));
	t_unmap(b.mem, 8);
}

/* ------------------------------------------------------------------------
 * A writer racing migrations between peers loses nothing.
 */
#define RACE_PAGES 32
#define RACE_ROUNDS 2000
#define RACE_SECONDS 3.0      /* at most: sanitizers make rounds slow */

struct race {
	char *buf;
	int rounds;           /* the writer's, once it stops */
	_Atomic int stop;
};

static void *writer(void *arg)
{
	struct race *r = arg;
	double deadline = t_now() + RACE_SECONDS;
	int n;

	for (n = 0; n < RACE_ROUNDS && t_now() < deadline; n++) {
		for (size_t p = 0; p < RACE_PAGES; p++)
			(*(volatile uint64_t *)(r->buf + p * PS))++;
		/* Let the pages spend a while on the devices. */
		struct timespec nap = { 0, 50000 };
		nanosleep(&nap, NULL);
	}
	r->rounds = n;
	atomic_store(&r->stop, 1);
	return NULL;
}

static void test_race(void)
{
	struct hetmm_emu *a = emu_new(RACE_PAGES, 0);
	struct hetmm_emu *b = emu_new(RACE_PAGES, 0);
	struct race r = { t_map(RACE_PAGES), 0, 0 };
	pthread_t t;
	uint64_t before = es(b).copied_from_peer + es(a).copied_from_peer;

	CHECK_OK(hetmm_p2pdma_add_peer(pg_of(a), pg_of(b)));
	memset(r.buf, 0, RACE_PAGES * PS);
	REQUIRE(pthread_create(&t, NULL, writer, &r) == 0);
	int i;
	for (i = 0; !atomic_load(&r.stop); i++) {
		int rc = hetmm_migrate_to_device(pg_of(i & 1 ? a : b), r.buf,
						 RACE_PAGES * PS, NULL);
		CHECK(rc == 0 || rc == -ENOENT);
	}
	pthread_join(t, NULL);
	printf("race: %d rounds of writes, %d migrations\n", r.rounds, i);
	CHECK(r.rounds > 0);
	for (size_t p = 0; p < RACE_PAGES; p++)
		CHECK_EQ(*(uint64_t *)(r.buf + p * PS), r.rounds);
	uint64_t peer = es(b).copied_from_peer + es(a).copied_from_peer -
			before;
	printf("race: %llu pages copied device to device\n",
	       (unsigned long long)peer);
	CHECK(peer > 0);   /* the race ran across the bus */
	CHECK_OK(hetmm_emu_destroy(a));
	CHECK_OK(hetmm_emu_destroy(b));
	t_unmap(r.buf, RACE_PAGES);
}

int main(void)
{
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	test_peers(0);
	test_peers(HETMM_EMU_COPY_ONLY);
	test_peer_full();
	test_not_peers();
	test_bus_addr();
	test_remove_peer();
	test_peer_error();
	test_p2pdma_pins();
	test_race();
	CHECK_OK(hetmm_ctx_destroy(ctx));
	return t_done();
}
