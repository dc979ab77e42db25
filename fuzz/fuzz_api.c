/* SPDX-License-Identifier: MIT */
/*
 * fuzz_api.c - libFuzzer target: the public API's argument checks.
 *
 * Contexts, emulated devices and mirrors are made once per process: two
 * contexts (so that objects of the wrong one can be passed), a private
 * and a coherent device of the first, a private device of the second, a
 * mirror of each.  Each input then lays the world out (world.h) and makes
 * up to MAX_OPS calls, every public call with arguments from the input:
 * sizes, flags, addresses inside and outside the world's mappings, NULL
 * and stale handles where the API says it checks them (frame numbers and
 * page pointers of removed pagemaps, pages not held), objects of the other
 * context; plus hot-add of pagemaps with drivers of the input's choosing,
 * notifiers, emulated devices made and destroyed, and the process's own
 * reads, writes, mprotect, madvise, munmap and mremap between calls.
 *
 * Besides the world's oracle it checks what include/hetmm.h promises:
 *   - every call returns 0, a count, or a negative errno;
 *   - bad input (NULL, empty, unaligned, wrapping or out-of-range ranges)
 *     gives -EINVAL, and a call refused with -EINVAL changed no counter;
 *     a range not fully mapped and accessible is -EINVAL for migrations,
 *     -EFAULT for mirror accesses;
 *   - a mirror read gives the bytes the CPU wrote; a mirror write leaves
 *     the bytes it was given; a snapshot gives HETMM_PROT_ERROR exactly
 *     where nothing readable is mapped;
 *   - a migration's report agrees with its status array, and its pages
 *     are where it says; after a migration back no page of the range is on
 *     a device of the context;
 *   - get/pin return at most nr_pages, hold exactly those pages (the
 *     counts hetmm_user_page_holds reports are the harness's own), and
 *     bring device-private pages back first; put/unpin either release
 *     every entry or, refusing with -EINVAL, release none;
 *   - the counters are monotonic; notifier callbacks get a non-empty
 *     range inside the notifier's and a valid event;
 *   - a driver's ops are called with page indices inside its pagemap;
 *   - frame numbers and page pointers resolve only to live pages.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "world.h"

#define MAX_OPS 24
#define BUF_MAX_PAGES 64          /* harness buffers up to this */
#define BIG_LEN (256ULL << 20)    /* a lazily mapped buffer beyond */
#define PAGES_MAX 4096            /* gup pages[] entries */
#define MAX_HOLDS 512
#define MAX_DRV 2
#define DRV_MAX_PAGES 32
#define MAX_NOTIFIERS 4
#define MAX_STALE 4

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
static bool api_coherent(uintptr_t a);
static void api_sync(void);

/* ------------------------------------------------------------------------
 * The objects made once
 */

static struct hetmm_ctx *ctx, *ctx2;
static struct hetmm_emu *emu_p, *emu_c, *emu_x;
static struct hetmm_pagemap *pg_p, *pg_c, *pg_x;
static struct hetmm_mirror *m_p, *m_c, *m_x;
static uint8_t *bigbuf;

static void must_ok(int rc, const char *what)
{
	if (rc)
		fuzz_fail("setup: %s: %d", what, rc);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	world_init("fuzz_api");
	must_ok(hetmm_ctx_create(&ctx, NULL), "hetmm_ctx_create");
	struct hetmm_ctx_params params = { .fault_around_max = 1 };
	must_ok(hetmm_ctx_create(&ctx2, &params), "hetmm_ctx_create 2");
	/* Small devices: full ones are a path to cover. */
	must_ok(hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_PRIVATE, 24, &emu_p),
		"private device");
	if (hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_COHERENT, 24, &emu_c))
		emu_c = NULL;   /* a kernel without what it needs */
	must_ok(hetmm_emu_create(ctx2, HETMM_MEMORY_DEVICE_PRIVATE, 8, &emu_x),
		"private device of the second context");
	must_ok(hetmm_emu_pagemap(emu_p, &pg_p), "pagemap");
	must_ok(hetmm_emu_pagemap(emu_x, &pg_x), "pagemap");
	must_ok(hetmm_mirror_create(emu_p, &m_p), "mirror");
	must_ok(hetmm_mirror_create(emu_x, &m_x), "mirror");
	if (emu_c) {
		must_ok(hetmm_emu_pagemap(emu_c, &pg_c), "pagemap");
		must_ok(hetmm_mirror_create(emu_c, &m_c), "mirror");
	}
	world_coherent_hook = api_coherent;
	world_sync_hook = api_sync;
	bigbuf = mmap(NULL, BIG_LEN, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (bigbuf == MAP_FAILED)
		fuzz_fail("setup: big buffer: %s", strerror(errno));
	return 0;
}

/* ------------------------------------------------------------------------
 * Names, for the trace
 */

static struct hetmm_mirror *tmp_mirror;
static struct hetmm_emu *tmp_emu;

static const char *name_of(const void *p)
{
	static char buf[4][32];
	static int k;
	if (!p)
		return "NULL";
	if (p == ctx) return "ctx";
	if (p == ctx2) return "ctx2";
	if (p == pg_p) return "pg_private";
	if (p == pg_c) return "pg_coherent";
	if (p == pg_x) return "pg_private(ctx2)";
	if (p == m_p) return "mirror_private";
	if (p == m_c) return "mirror_coherent";
	if (p == m_x) return "mirror_private(ctx2)";
	if (p == tmp_mirror) return "mirror_tmp";
	char *b = buf[k++ % 4];
	snprintf(b, sizeof(buf[0]), "%p", p);
	return b;
}

/* ------------------------------------------------------------------------
 * Results
 */

static bool is_errno(long rc)
{
	return rc < 0 && rc > -4096;
}

#define CHECK_RC(rc, what)                                                \
	FUZZ_ASSERT((rc) == 0 || is_errno(rc), "%s: returned %ld", what,  \
		    (long)(rc))

/* The counters a refused call must leave alone. */
struct counters {
	uint64_t to_device, to_system, pins, mirror_faults, faults;
};

static struct counters counters_of(struct hetmm_ctx *c)
{
	struct hetmm_stats st;
	if (hetmm_ctx_get_stats(c, &st))
		fuzz_fail("hetmm_ctx_get_stats failed");
	return (struct counters){ st.to_device_pages, st.to_system_pages,
				  st.pins, st.mirror_faults, st.faults };
}

static struct counters before1, before2;

static void counters_save(void)
{
	/* The handler may still be finishing what an earlier access began
	 * (the rest of a fault-around window, woken once at the end): let
	 * it, so that what changes now is the call's doing. */
	api_sync();
	before1 = counters_of(ctx);
	before2 = counters_of(ctx2);
}

static void counters_same(long rc, const char *what)
{
	if (rc != -EINVAL)
		return;
	struct counters a = counters_of(ctx), b = counters_of(ctx2);
	if (memcmp(&a, &before1, sizeof(a)) || memcmp(&b, &before2, sizeof(b)))
		fuzz_fail("%s: refused with -EINVAL, yet counters changed "
			  "(to_device %" PRIu64 "->%" PRIu64 ", to_system %"
			  PRIu64 "->%" PRIu64 ", pins %" PRIu64 "->%" PRIu64
			  ", mirror_faults %" PRIu64 "->%" PRIu64 ")", what,
			  before1.to_device, a.to_device, before1.to_system,
			  a.to_system, before1.pins, a.pins,
			  before1.mirror_faults, a.mirror_faults);
}

/* The counters only grow (device_resident is a gauge). */
static struct hetmm_stats last_st[2];

static void stats_monotonic(void)
{
	struct hetmm_ctx *cs[2] = { ctx, ctx2 };
	for (int i = 0; i < 2; i++) {
		struct hetmm_stats st;
		if (hetmm_ctx_get_stats(cs[i], &st))
			fuzz_fail("hetmm_ctx_get_stats failed");
		const uint64_t *a = (const uint64_t *)&last_st[i];
		const uint64_t *b = (const uint64_t *)&st;
		for (size_t k = 0; k < sizeof(st) / 8; k++) {
			if (k == offsetof(struct hetmm_stats,
					  device_resident) / 8)
				continue;
			if (b[k] < a[k])
				fuzz_fail("counter %zu of context %d went "
					  "down: %" PRIu64 " -> %" PRIu64, k,
					  i + 1, a[k], b[k]);
		}
		last_st[i] = st;
	}
}

static void check_none(const char *what)
{
	struct asked none;
	asked_clear(&none);
	world_check(&none, false, what);
}

/* ------------------------------------------------------------------------
 * Arguments
 */

static struct hetmm_ctx *pick_ctx(struct input *in)
{
	uint8_t k = in_u8(in) % 8;
	return k < 6 ? ctx : k == 6 ? ctx2 : NULL;
}

/* A documented-invalid range: NULL, empty, unaligned, wrapping, or past
 * the user half.  (check_user_range in the library's words.) */
static bool range_invalid(uintptr_t addr, uint64_t len)
{
	return !addr || !len || (addr & (PS - 1)) || (len & (PS - 1)) ||
	       addr + len < addr || addr + len > FUZZ_USER_VA_END;
}

/* Is some page of the range known to be unmapped or inaccessible? */
static bool range_has_hole(uintptr_t addr, uint64_t len)
{
	for (uint64_t off = 0; off < len && off <= WORLD_PAGES * PS;
	     off += PS) {
		uintptr_t a = addr + off;
		if (a < addr)
			return true;
		if (in_world(a) && (!W.pg[world_index(a)].mapped ||
				    !W.pg[world_index(a)].readable))
			return true;
		if (a >= W.lo && a < W.hi && !in_world(a) &&
		    !range_readable(a, 1))
			return true;   /* a reservation: PROT_NONE */
	}
	return false;
}

/* A buffer of len bytes the caller owns, for the library to write
 * (writable) or read: NULL, a harness buffer, the big lazily mapped one,
 * or a place in the world the model allows.  *own is set when the
 * harness allocated it. */
static void *pick_buf(struct input *in, uint64_t len, bool writable,
		      bool world_ok, bool *own)
{
	*own = false;
	uint8_t k = in_u8(in) % 5;
	if (k == 0)
		return NULL;
	if (k == 1) {
		uintptr_t a = gen_addr(in);
		bool ok = world_ok && in_world(a) && len <= WORLD_PAGES * PS &&
			  in_world(a + len - 1) &&
			  (writable ? range_writable(a, len)
				    : range_readable(a, len));
		if (ok)
			return (void *)a;
	}
	if (len <= BUF_MAX_PAGES * PS) {
		uint8_t *b = malloc(len ? len : 1);
		if (!b)
			fuzz_fail("out of memory");
		for (size_t i = 0; i < len; i++)
			b[i] = (uint8_t)(i * 31 + 7);
		*own = true;
		known_buffer(b, len);
		return b;
	}
	if (len <= BIG_LEN) {
		known_buffer(bigbuf, len);
		return bigbuf;
	}
	return NULL;
}

static void drop_buf(void *b, uint64_t len, bool own)
{
	if (own)
		free(b);
	else if (b == bigbuf)
		madvise(bigbuf, len, MADV_DONTNEED);
	known_buffers_clear();
}

/* ------------------------------------------------------------------------
 * Holds taken by get and pin
 */

static struct hold {
	uintptr_t addr;
	bool pin;
} holds[MAX_HOLDS];
static int nr_holds;

static void hold_counts(uintptr_t a, uint64_t *refs, uint64_t *pins)
{
	*refs = *pins = 0;
	for (int i = 0; i < nr_holds; i++) {
		if (holds[i].addr != a)
			continue;
		if (holds[i].pin)
			(*pins)++;
		else
			(*refs)++;
	}
}

static void world_busy(uintptr_t a, int delta)
{
	if (in_world(a))
		W.busy[world_index(a)] += delta;
}

static void check_holds_at(uintptr_t a, const char *what)
{
	uint64_t want_r, want_p, r = 0, p = 0;
	hold_counts(a, &want_r, &want_p);
	int rc = hetmm_user_page_holds(ctx, (void *)a, &r, &p);
	FUZZ_ASSERT(rc == 0, "%s: hetmm_user_page_holds(%#" PRIxPTR "): %d",
		    what, a, rc);
	FUZZ_ASSERT(r == want_r && p == want_p,
		    "%s: page %#" PRIxPTR " has %" PRIu64 " refs and %" PRIu64
		    " pins, the harness holds %" PRIu64 " and %" PRIu64, what,
		    a, r, p, want_r, want_p);
}

static void release_all_holds(void)
{
	for (int i = 0; i < nr_holds; i++) {
		void *pg = (void *)holds[i].addr;
		int rc = holds[i].pin ? hetmm_unpin_user_pages(ctx, &pg, 1)
				      : hetmm_put_user_pages(ctx, &pg, 1);
		FUZZ_ASSERT(rc == 0, "releasing a %s of %p the harness holds: "
			    "%d", holds[i].pin ? "pin" : "ref", pg, rc);
		world_busy(holds[i].addr, -1);
	}
	nr_holds = 0;
}

/* ------------------------------------------------------------------------
 * Drivers of the input's choosing (hetmm_pagemap_add)
 */

struct drv {
	struct hetmm_pagemap *pg;
	struct hetmm_pagemap_ops ops;
	enum hetmm_memory_type type;
	uint64_t nr;
	uint8_t *mem;        /* its memory: page_address(0) */
	bool own;            /* mapped by the harness (else world pages) */
	int fd;              /* the memfd behind mem, or -1 */
	hetmm_pfn_t first;
	bool placed;         /* HETMM_PAGEMAP_PLACED: frames named */
};

static struct drv drvs[MAX_DRV];
static struct hetmm_pagemap *pfn_owner(hetmm_pfn_t pfn);
static struct drv *adding;          /* the one hetmm_pagemap_add runs for */
static struct {
	hetmm_pfn_t first;
	uint64_t nr;
	struct hetmm_page *page0;
} stale[MAX_STALE];
static int nr_stale;

static struct drv *drv_of(struct hetmm_pagemap *pg)
{
	for (int i = 0; i < MAX_DRV; i++)
		if (drvs[i].pg && drvs[i].pg == pg)
			return &drvs[i];
	if (adding)
		return adding;
	fuzz_fail("a driver op called for a pagemap %p the harness never "
		  "added", (void *)pg);
}

static void drv_range(struct drv *d, uint64_t index, size_t nr,
		      const char *op)
{
	if (index >= d->nr || nr > d->nr - index || !nr)
		fuzz_fail("driver op %s called with pages [%" PRIu64 ", +%zu) "
			  "of a pagemap of %" PRIu64, op, index, nr, d->nr);
}

static int drv_copy_to(struct hetmm_pagemap *pg, uint64_t index,
		       const void *src, size_t nr)
{
	struct drv *d = drv_of(pg);
	drv_range(d, index, nr, "copy_to_device");
	memcpy(d->mem + index * PS, src, nr * PS);
	return 0;
}

static int drv_copy_from(struct hetmm_pagemap *pg, void *dst, uint64_t index,
			 size_t nr)
{
	struct drv *d = drv_of(pg);
	drv_range(d, index, nr, "copy_from_device");
	memcpy(dst, d->mem + index * PS, nr * PS);
	return 0;
}

static void *drv_page_address(struct hetmm_pagemap *pg, uint64_t index)
{
	struct drv *d = drv_of(pg);
	drv_range(d, index, 1, "page_address");
	return d->mem + index * PS;
}

static void drv_page_free(struct hetmm_pagemap *pg, uint64_t index)
{
	drv_range(drv_of(pg), index, 1, "page_free");
}

static int drv_page_fd(struct hetmm_pagemap *pg, uint64_t index,
		       uint64_t *offset)
{
	struct drv *d = drv_of(pg);
	drv_range(d, index, 1, "page_fd");
	*offset = index * PS;
	return d->fd;
}

static void drv_unmap(struct drv *d)
{
	if (d->own && d->mem)
		munmap(d->mem, d->nr * PS);
	if (d->fd >= 0)
		close(d->fd);
	if (!d->own && d->mem)
		for (uint64_t i = 0; i < d->nr; i++)
			world_busy((uintptr_t)d->mem + i * PS, -1);
	*d = (struct drv){ .fd = -1 };
}

static void drv_remove(struct drv *d, bool must)
{
	if (!d->pg)
		return;
	struct hetmm_pagemap_info info;
	FUZZ_ASSERT(hetmm_pagemap_get_info(d->pg, &info) == 0,
		    "get_info of a live pagemap failed");
	int rc = hetmm_pagemap_remove(d->pg);
	TRACE("hetmm_pagemap_remove(%s) = %d", name_of(d->pg), rc);
	CHECK_RC(rc, "hetmm_pagemap_remove");
	if (rc) {
		FUZZ_ASSERT(!must, "hetmm_pagemap_remove of an idle pagemap: "
			    "%d", rc);
		return;
	}
	stale[nr_stale % MAX_STALE].first = d->first;
	stale[nr_stale % MAX_STALE].nr = d->nr;
	struct hetmm_page *p0 = NULL;
	(void)p0;
	nr_stale++;
	drv_unmap(d);
	check_none("hetmm_pagemap_remove");
}

static void op_pagemap(struct input *in)
{
	uint8_t k = in_u8(in);
	if (k % 4 == 0) {
		drv_remove(&drvs[in_u8(in) % MAX_DRV], false);
		return;
	}
	struct drv *d = NULL;
	for (int i = 0; i < MAX_DRV; i++)
		if (!drvs[i].pg && !drvs[i].mem)
			d = &drvs[i];
	if (!d)
		return;
	*d = (struct drv){ .fd = -1 };
	struct hetmm_pagemap_desc desc = { 0 };
	desc.type = (enum hetmm_memory_type)(in_u8(in) % 7);
	uint8_t nm = in_u8(in);
	static const uint64_t bad_nr[] = { 0, (1ULL << 32) + 1, UINT64_MAX };
	bool nr_ok = nm % 8 != 0;
	desc.nr_pages = nr_ok ? 1u + in_u8(in) % DRV_MAX_PAGES
			      : bad_nr[in_u8(in) % 3];
	uint8_t om = in_u8(in);
	d->ops = (struct hetmm_pagemap_ops){
		.copy_to_device = om & 1 ? drv_copy_to : NULL,
		.copy_from_device = om & 2 ? drv_copy_from : NULL,
		.page_address = om & 4 ? drv_page_address : NULL,
		.page_free = om & 8 ? drv_page_free : NULL,
		.page_fd = om & 16 ? drv_page_fd : NULL,
	};
	desc.ops = om & 0x80 ? NULL : &d->ops;
	uint8_t fm = in_u8(in);
	desc.flags = fm & 0x80 ? in_u32(in) :
		     (fm & 3) | (fm & 0x40 ? HETMM_PAGEMAP_PLACED : 0);
	desc.owner = fm & 4 ? (void *)d : (void *)emu_p;  /* another's */
	desc.drvdata = d;
	d->type = desc.type;
	d->nr = nr_ok ? desc.nr_pages : 0;

	/* Its memory: world pages for memory the CPU uses in place, if the
	 * input says so; else a mapping of its own, as the type wants. */
	uint8_t mm = in_u8(in);
	bool fixed = desc.type == HETMM_MEMORY_FS_DAX ||
		     desc.type == HETMM_MEMORY_GENERIC;
	if (nr_ok && fixed && (mm & 1)) {
		size_t first = (size_t)(mm >> 1) % WORLD_PAGES;
		if (first + d->nr <= WORLD_PAGES) {
			d->mem = (uint8_t *)(W.base + first * PS);
			for (uint64_t i = 0; i < d->nr; i++)
				W.busy[first + i]++;
		}
	}
	if (nr_ok && !d->mem) {
		bool file = desc.type == HETMM_MEMORY_FS_DAX ||
			    desc.type == HETMM_MEMORY_DEVICE_COHERENT ||
			    (mm & 2);
		if (file) {
			d->fd = memfd_create("fuzz-device", MFD_CLOEXEC);
			if (d->fd < 0 || ftruncate(d->fd, (off_t)(d->nr * PS)))
				fuzz_fail("memfd: %s", strerror(errno));
		}
		void *p = mmap(NULL, d->nr * PS, PROT_READ | PROT_WRITE,
			       file ? MAP_SHARED : MAP_PRIVATE | MAP_ANONYMOUS,
			       d->fd, 0);
		if (p == MAP_FAILED)
			fuzz_fail("device memory: %s", strerror(errno));
		d->mem = p;
		d->own = true;
	}
	struct hetmm_ctx *c = pick_ctx(in);
	struct hetmm_pagemap *pg = NULL;
	uint8_t pm = in_u8(in);
	counters_save();
	adding = d;
	int rc = hetmm_pagemap_add(c, &desc, pm % 8 ? &pg : NULL);
	adding = NULL;
	TRACE("hetmm_pagemap_add(%s, {type %d, nr %#" PRIx64 ", ops %s mask "
	      "%#x, flags %#x, memory %p%s}) = %d (%s)", name_of(c),
	      (int)desc.type, desc.nr_pages, desc.ops ? "" : "NULL", om & 31,
	      desc.flags, (void *)d->mem, d->own ? "" : " (world)", rc,
	      name_of(pg));
	CHECK_RC(rc, "hetmm_pagemap_add");
	counters_same(rc, "hetmm_pagemap_add");
	if (!c || !desc.ops || !nr_ok || !(pm % 8) ||
	    desc.type < HETMM_MEMORY_DEVICE_PRIVATE ||
	    desc.type > HETMM_MEMORY_PCI_P2PDMA)
		FUZZ_ASSERT(rc == -EINVAL, "hetmm_pagemap_add with a bad "
			    "argument: %d, want -EINVAL", rc);
	if (rc) {
		drv_unmap(d);
		check_none("hetmm_pagemap_add");
		return;
	}
	FUZZ_ASSERT(pg, "hetmm_pagemap_add: 0 and no pagemap");
	d->pg = pg;
	struct hetmm_pagemap_info info;
	FUZZ_ASSERT(hetmm_pagemap_get_info(pg, &info) == 0, "get_info");
	FUZZ_ASSERT(info.type == desc.type && info.nr_pages == desc.nr_pages &&
		    info.drvdata == desc.drvdata && info.owner == desc.owner &&
		    info.nr_free <= info.nr_pages &&
		    (hetmm_pfn_flags(info.first_pfn) & HETMM_PFN_DEV),
		    "hetmm_pagemap_get_info disagrees with the description");
	d->first = info.first_pfn;
	d->placed = desc.flags & HETMM_PAGEMAP_PLACED;
	check_none("hetmm_pagemap_add");
}

static struct hetmm_pagemap *pick_pagemap(struct input *in)
{
	uint8_t k = in_u8(in) % 8;
	switch (k) {
	case 0: case 1: case 2:
		return pg_p;
	case 3:
		return pg_c ? pg_c : pg_p;
	case 4:
		return pg_x;
	case 5:
	case 6:
		return drvs[k - 5].pg;   /* may be NULL */
	default:
		return NULL;
	}
}

static struct hetmm_ctx *ctx_of_pagemap(struct hetmm_pagemap *pg)
{
	if (pg == pg_x)
		return ctx2;
	return ctx;   /* custom ones may be ctx2's too: see op_pagemap */
}

/* Which pagemap a frame number belongs to, among the live ones: those
 * of the harness's devices and drivers, and of the device an input made
 * (tmp_emu). */
static struct hetmm_pagemap *pfn_owner(hetmm_pfn_t pfn)
{
	struct hetmm_pagemap *all[4 + MAX_DRV] = { pg_p, pg_c, pg_x, NULL };
	if (tmp_emu && hetmm_emu_pagemap(tmp_emu, &all[3]))
		all[3] = NULL;
	for (int i = 0; i < MAX_DRV; i++)
		all[4 + i] = drvs[i].pg;
	for (int i = 0; i < 4 + MAX_DRV; i++) {
		struct hetmm_pagemap_info info;
		if (!all[i] || hetmm_pagemap_get_info(all[i], &info))
			continue;
		uint64_t n = hetmm_pfn_number(pfn),
			 f = hetmm_pfn_number(info.first_pfn);
		if (n >= f && n < f + info.nr_pages)
			return all[i];
	}
	return NULL;
}

static bool api_coherent(uintptr_t a)
{
	hetmm_pfn_t pfn;
	struct hetmm_pagemap_info info;
	if (hetmm_addr_to_pfn(ctx, (void *)a, &pfn))
		return false;
	struct hetmm_pagemap *o = pfn_owner(pfn);
	return o && !hetmm_pagemap_get_info(o, &info) &&
	       info.type == HETMM_MEMORY_DEVICE_COHERENT;
}

static void api_sync(void)
{
	uint8_t prot;
	hetmm_mirror_snapshot(m_p, (void *)W.base, 1, &prot);
	hetmm_mirror_snapshot(m_x, (void *)W.base, 1, &prot);
}

/* ------------------------------------------------------------------------
 * Migration
 */

static void check_report(const struct hetmm_migrate_report *rep,
			 uint64_t npages, int rc, const char *what)
{
	if (rc && rc != -ENOENT && rc != -ENOMEM)
		return;
	if (rc == 0)
		FUZZ_ASSERT(rep->moved > 0, "%s: 0 with nothing moved", what);
	else
		FUZZ_ASSERT(rep->moved == 0, "%s: %d with %" PRIu64 " moved",
			    what, rc, rep->moved);
	FUZZ_ASSERT(rep->moved + rep->skipped <= npages,
		    "%s: %" PRIu64 " moved and %" PRIu64 " skipped of %" PRIu64
		    " pages", what, rep->moved, rep->skipped, npages);
	if (!rep->status)
		return;
	uint64_t moved = 0;
	for (uint64_t i = 0; i < npages; i++) {
		uint8_t s = rep->status[i];
		FUZZ_ASSERT(s >= HETMM_MIGRATE_MOVED &&
			    s <= HETMM_MIGRATE_SKIP_SYSTEM,
			    "%s: status[%" PRIu64 "] = %u", what, i, s);
		moved += s == HETMM_MIGRATE_MOVED;
	}
	FUZZ_ASSERT(moved == rep->moved, "%s: report says %" PRIu64 " moved, "
		    "the status array %" PRIu64, what, rep->moved, moved);
}

static void op_migrate(struct input *in, bool to_device)
{
	struct hetmm_pagemap *pg = to_device ? pick_pagemap(in) : NULL;
	struct hetmm_ctx *c = to_device ? NULL : pick_ctx(in);
	uintptr_t addr = gen_addr(in);
	uint8_t lm = in_u8(in);
	uint64_t len = lm % 8 == 0 ? in_u64(in) : gen_npages(in) * PS;
	if (lm & 0x80)
		len += in_u16(in) % PS;
	uint64_t npages = len / PS;
	uint8_t rm = in_u8(in);
	/* Or to frames the input names (HETMM_PAGEMAP_PLACED). */
	bool frames = to_device && (rm & 0x10);
	uint64_t index = frames ? in_u8(in) % (DRV_MAX_PAGES + 8) : 0;
	uint32_t fflags = rm & 0x40 ? in_u32(in) :
			  rm & 0x20 ? HETMM_MIGRATE_POPULATED : 0;
	struct drv *pd = NULL;
	for (int i = 0; i < MAX_DRV; i++)
		if (pg && drvs[i].pg == pg)
			pd = &drvs[i];
	bool placed = pd && pd->placed;
	struct hetmm_migrate_report rep = { 7, 7, NULL }, *r = NULL;
	if (rm % 4) {
		r = &rep;
		if (rm % 4 == 2 && npages <= PAGES_MAX)
			rep.status = malloc(npages ? npages : 1);
	}
	char what[64];
	snprintf(what, sizeof(what), "hetmm_migrate_to_%s",
		 frames ? "frames" : to_device ? "device" : "system");

	TRACE("calling %s(%s, %#" PRIxPTR ", %#" PRIx64 ")", what,
	      to_device ? name_of(pg) : name_of(c), addr, len);
	counters_save();
	int rc = frames ? hetmm_migrate_to_frames(pg, (void *)addr, len,
						  index, fflags, r) :
		 to_device ? hetmm_migrate_to_device(pg, (void *)addr, len, r) :
			     hetmm_migrate_to_system(c, (void *)addr, len, r);
	TRACE("%s(%s, %#" PRIxPTR ", %#" PRIx64 ", %s) = %d", what,
	      to_device ? name_of(pg) : name_of(c), addr, len,
	      !r ? "NULL" : rep.status ? "report+status" : "report", rc);
	CHECK_RC(rc, what);
	counters_same(rc, what);
	if ((to_device ? !pg : !c) || range_invalid(addr, len))
		FUZZ_ASSERT(rc == -EINVAL, "%s(%#" PRIxPTR ", %#" PRIx64 "): "
			    "bad arguments, %d, want -EINVAL", what, addr, len,
			    rc);
	else if (range_has_hole(addr, len))
		FUZZ_ASSERT(rc == -EINVAL || rc == -EOPNOTSUPP || rc == -ENXIO,
			    "%s(%#" PRIxPTR ", %#" PRIx64 "): the range has "
			    "a hole or PROT_NONE pages: %d, want -EINVAL",
			    what, addr, len, rc);
	else if (to_device && frames != placed)
		FUZZ_ASSERT(rc == -EOPNOTSUPP || (frames && rc == -EINVAL),
			    "%s to a pagemap %s HETMM_PAGEMAP_PLACED: %d, want "
			    "-EOPNOTSUPP", what, placed ? "with" : "without",
			    rc);
	else if (frames && ((fflags & ~HETMM_MIGRATE_POPULATED) ||
			    index + npages > pd->nr))
		FUZZ_ASSERT(rc == -EINVAL, "%s(index %" PRIu64 ", %" PRIu64
			    " pages, flags %#x) of %" PRIu64 " frames: %d, "
			    "want -EINVAL", what, index, npages, fflags,
			    pd->nr, rc);
	if (r)
		check_report(r, npages, rc, what);
	/* Pages moved to frames are on the frames named. */
	if (frames && rc == 0 && rep.status) {
		for (uint64_t i = 0; i < npages; i++) {
			hetmm_pfn_t pfn;
			/* (A custom pagemap may be ctx2's: only pages
			 * found on it are checked.) */
			if (rep.status[i] != HETMM_MIGRATE_MOVED ||
			    hetmm_addr_to_pfn(ctx_of_pagemap(pg),
					      (void *)(addr + i * PS), &pfn) ||
			    pfn_owner(pfn) != pg)
				continue;
			FUZZ_ASSERT(hetmm_pfn_number(pfn) ==
				    hetmm_pfn_number(pd->first) + index + i,
				    "%s: page %" PRIu64 " is on frame %#" PRIx64
				    ", not the one named", what, i, pfn.val);
		}
	}
	/* Where the pages are now. */
	if (to_device && rc == 0 && rep.status && !range_invalid(addr, len)) {
		struct hetmm_ctx *pc = ctx_of_pagemap(pg);
		struct drv *d = NULL;
		for (int i = 0; i < MAX_DRV; i++)
			if (drvs[i].pg == pg)
				d = &drvs[i];
		for (uint64_t i = 0; i < npages; i++) {
			if (rep.status[i] != HETMM_MIGRATE_MOVED)
				continue;
			hetmm_pfn_t pfn;
			int q = hetmm_addr_to_pfn(pc, (void *)(addr + i * PS),
						  &pfn);
			if (d || q)   /* a custom one may evict; and ctx2's */
				continue;
			FUZZ_ASSERT(pfn_owner(pfn) == pg,
				    "%s: page %" PRIu64 " MOVED, but it is on "
				    "pfn %#" PRIx64 ", not the pagemap's", what,
				    i, pfn.val);
		}
	}
	if (!to_device && c && (rc == 0 || rc == -ENOENT)) {
		for (uint64_t i = 0; i < npages && i < WORLD_PAGES; i++) {
			hetmm_pfn_t pfn;
			int q = hetmm_addr_to_pfn(c, (void *)(addr + i * PS),
						  &pfn);
			FUZZ_ASSERT(q == -ENOENT || q == -EINVAL,
				    "%s: %d, yet page %" PRIu64 " is still on "
				    "pfn %#" PRIx64, what, rc, i, pfn.val);
		}
	}
	free(rep.status);
	check_none(what);
}

/* ------------------------------------------------------------------------
 * Mirrors
 */

static struct hetmm_mirror *pick_mirror(struct input *in)
{
	uint8_t k = in_u8(in) % 8;
	switch (k) {
	case 0: case 1: case 2:
		return m_p;
	case 3:
		return m_c ? m_c : m_p;
	case 4:
		return m_x;
	case 5:
		return tmp_mirror;
	default:
		return k == 6 ? m_p : NULL;
	}
}

static bool prot_ok(uint8_t p)
{
	return p == HETMM_PROT_ERROR || (p & 0xf0) <= 0x50;
}

static void op_mirror(struct input *in, int kind)
{
	static const char *const names[] = {
		"hetmm_mirror_read", "hetmm_mirror_write",
		"hetmm_mirror_snapshot", "hetmm_mirror_make_exclusive",
		"hetmm_mirror_check_exclusive",
	};
	const char *what = names[kind];
	struct hetmm_mirror *m = pick_mirror(in);
	uintptr_t addr = gen_addr(in);
	uint64_t npages = gen_npages(in);
	uint64_t len = npages << HETMM_PAGE_SHIFT;
	bool len_ok = npages <= (UINT64_MAX >> HETMM_PAGE_SHIFT);
	/* F3 (fixed) made a snapshot take a system call per page of a
	 * hole.  Its cost is still linear in npages, as the kernel driver's
	 * is: a range fault, and so one wait for the fault handler, per 512
	 * pages (2^26 pages, the reproducer's, take seconds; 2^32 minutes).
	 * Fuzzing time is better spent below that; the replay (which never
	 * avoids) runs the reproducer in full. */
	if (kind == 2 && npages > (1ULL << 12) && len_ok &&
	    !range_invalid(addr, len) && fuzz_avoid("snapshot_huge"))
		npages = 1ULL << 12, len = npages << HETMM_PAGE_SHIFT;
	/* The buffer the call reads or writes, as the API wants it. */
	uint64_t blen = kind == 2 ? npages : len;
	bool own = false;
	void *buf = NULL;
	/* The buffer may be in the world, on a device too (F7, fixed). */
	if (kind <= 2 && len_ok)
		buf = pick_buf(in, blen, kind != 1, true, &own);
	uint64_t faults = 0;
	uint64_t *fp = in_u8(in) & 1 ? &faults : NULL;

	static uint8_t src[(WORLD_PAGES + BUF_MAX_PAGES) * PS_MAX];
	bool small = len_ok && npages <= WORLD_PAGES + BUF_MAX_PAGES;
	bool overlap = buf && ranges_overlap(addr, len, (uintptr_t)buf, blen);
	bool known = false;
	struct asked asked;
	asked_clear(&asked);
	if (kind == 0) {
		known = small && !overlap && known_bytes(addr, len, src);
		if (buf)
			asked_add(&asked, (uintptr_t)buf, blen,
				  known ? src : NULL);
	} else if (kind == 1) {
		known = small && buf && !overlap &&
			known_bytes((uintptr_t)buf, len, src);
		asked_add(&asked, addr, len, known ? src : NULL);
	} else if (kind == 2 && buf) {
		asked_add(&asked, (uintptr_t)buf, blen, NULL);
	}

	TRACE("calling %s(%s, %#" PRIxPTR ", buf %p, %#" PRIx64 " pages)",
	      what, name_of(m), addr, buf, npages);
	counters_save();
	int rc;
	switch (kind) {
	case 0:
		rc = hetmm_mirror_read(m, (void *)addr, buf, npages, fp);
		break;
	case 1:
		rc = hetmm_mirror_write(m, (void *)addr, buf, npages, fp);
		break;
	case 2:
		rc = hetmm_mirror_snapshot(m, (void *)addr, npages, buf);
		break;
	case 3:
		rc = hetmm_mirror_make_exclusive(m, (void *)addr, npages);
		break;
	default:
		rc = hetmm_mirror_check_exclusive(m, (void *)addr, npages);
		break;
	}
	TRACE("%s(%s, %#" PRIxPTR ", buf %p, %#" PRIx64 " pages) = %d", what,
	      name_of(m), addr, buf, npages, rc);
	CHECK_RC(rc, what);
	counters_same(rc, what);
	bool bad = !m || (kind <= 2 && !buf) || !len_ok ||
		   range_invalid(addr, len);
	if (bad)
		FUZZ_ASSERT(rc == -EINVAL, "%s(%#" PRIxPTR ", %#" PRIx64
			    " pages): bad arguments, %d, want -EINVAL", what,
			    addr, npages, rc);
	else if (kind <= 1 && range_has_hole(addr, len))
		/* (A write may find a read-only page first: -EPERM.) */
		FUZZ_ASSERT(rc == -EFAULT || (kind == 1 && rc == -EPERM),
			    "%s(%#" PRIxPTR ", %#" PRIx64 " pages): a hole or "
			    "PROT_NONE page: %d, want -EFAULT", what, addr,
			    npages, rc);
	if (rc == 0 && kind == 0)
		FUZZ_ASSERT(range_readable(addr, len), "%s: success on memory "
			    "that is not all readable", what);
	if (rc == 0 && kind == 1)
		FUZZ_ASSERT(range_writable(addr, len), "%s: success on memory "
			    "that is not all writable", what);
	world_check(&asked, rc == 0, what);
	if (rc == 0 && kind == 2 && small && buf) {
		const uint8_t *prot = buf;
		for (uint64_t i = 0; i < npages; i++) {
			uintptr_t a = addr + i * PS;
			FUZZ_ASSERT(prot_ok(prot[i]), "%s: prot[%" PRIu64
				    "] = %#x", what, i, prot[i]);
			if (!in_world(a))
				continue;
			const struct wpage *pg = &W.pg[world_index(a)];
			bool err = !pg->mapped || !pg->readable;
			FUZZ_ASSERT(err == (prot[i] == HETMM_PROT_ERROR),
				    "%s: world page %zu (%s) reported %#x",
				    what, world_index(a),
				    !pg->mapped ? "unmapped" :
				    !pg->readable ? "PROT_NONE" : "readable",
				    prot[i]);
			FUZZ_ASSERT(err || pg->writable ||
				    !(prot[i] & HETMM_PROT_WRITE),
				    "%s: read-only world page %zu reported "
				    "writable (%#x)", what, world_index(a),
				    prot[i]);
		}
	}
	if (rc == 0 && kind == 3 && (m == m_p || m == m_x)) {
		struct hetmm_ctx *c = m == m_p ? ctx : ctx2;
		struct hetmm_pagemap *want = m == m_p ? pg_p : pg_x;
		for (uint64_t i = 0; i < npages && i < WORLD_PAGES; i++) {
			hetmm_pfn_t pfn;
			if (hetmm_addr_to_pfn(c, (void *)(addr + i * PS),
					      &pfn))
				continue;   /* a CPU access took it back */
			FUZZ_ASSERT(pfn_owner(pfn) == want, "%s: page %" PRIu64
				    " held on another device", what, i);
		}
	}
	drop_buf(buf, blen, own);
}

/* ------------------------------------------------------------------------
 * Get and pin
 */

static void op_gup(struct input *in)
{
	uint8_t k = in_u8(in);
	int variant = k % 4;   /* get, get_fast, pin, pin_fast */
	bool pin = variant >= 2;
	struct hetmm_ctx *c = pick_ctx(in);
	uintptr_t addr = gen_addr(in);
	uint64_t nr = gen_npages(in);
	uint8_t fm = in_u8(in);
	unsigned flags = fm % 8 == 0 ? in_u32(in) : fm & 3;
	/* pages[] has nr entries, as the API wants; a huge nr only where at
	 * most the world can be held. */
	bool world_only = (addr >= W.lo && addr < W.hi) ||
			  range_invalid(addr, nr * PS) || nr * PS / PS != nr;
	void **pages = NULL;
	if ((k & 0x80) == 0 && (nr <= PAGES_MAX || world_only)) {
		size_t n = nr <= PAGES_MAX ? (size_t)nr : PAGES_MAX;
		pages = calloc(n ? n : 1, sizeof(void *));
	}
	static const char *const names[] = {
		"hetmm_get_user_pages", "hetmm_get_user_pages_fast",
		"hetmm_pin_user_pages", "hetmm_pin_user_pages_fast",
	};
	const char *what = names[variant];
	TRACE("calling %s(%s, %#" PRIxPTR ", %" PRIu64 ", %#x)", what,
	      name_of(c), addr, nr, flags);
	counters_save();
	long got;
	switch (variant) {
	case 0:
		got = hetmm_get_user_pages(c, (void *)addr, nr, flags, pages);
		break;
	case 1:
		got = hetmm_get_user_pages_fast(c, (void *)addr, nr, flags,
						pages);
		break;
	case 2:
		got = hetmm_pin_user_pages(c, (void *)addr, nr, flags, pages);
		break;
	default:
		got = hetmm_pin_user_pages_fast(c, (void *)addr, nr, flags,
						pages);
		break;
	}
	TRACE("%s(%s, %#" PRIxPTR ", %" PRIu64 ", %#x, pages %p) = %ld", what,
	      name_of(c), addr, nr, flags, (void *)pages, got);
	FUZZ_ASSERT(got > 0 || is_errno(got), "%s: returned %ld", what, got);
	counters_same(got, what);
	bool bad = !c || !pages || !nr ||
		   (flags & ~(HETMM_FOLL_WRITE | HETMM_FOLL_LONGTERM)) ||
		   (!pin && (flags & HETMM_FOLL_LONGTERM)) ||
		   nr > (FUZZ_USER_VA_END >> HETMM_PAGE_SHIFT) ||
		   range_invalid(addr, nr * PS);
	if (bad)
		FUZZ_ASSERT(got == -EINVAL, "%s(%#" PRIxPTR ", %" PRIu64
			    ", %#x): bad arguments, %ld, want -EINVAL", what,
			    addr, nr, flags, got);
	if (got > 0) {
		FUZZ_ASSERT((uint64_t)got <= nr, "%s: %ld of %" PRIu64, what,
			    got, nr);
		for (long i = 0; i < got; i++) {
			uintptr_t a = addr + (uintptr_t)i * PS;
			FUZZ_ASSERT((uintptr_t)pages[i] == a, "%s: pages[%ld] "
				    "= %p, want %#" PRIxPTR, what, i, pages[i],
				    a);
			FUZZ_ASSERT(range_readable(a, 1) ||
				    !(a >= W.lo && a < W.hi),
				    "%s: held page %ld, which is not readable",
				    what, i);
			if ((flags & HETMM_FOLL_WRITE) && in_world(a))
				FUZZ_ASSERT(W.pg[world_index(a)].writable,
					    "%s: held read-only page %ld for "
					    "writing", what, i);
			/* On a DEVICE_PRIVATE device no more. */
			hetmm_pfn_t pfn;
			if (!hetmm_addr_to_pfn(c, (void *)a, &pfn)) {
				struct hetmm_pagemap *o = pfn_owner(pfn);
				struct hetmm_pagemap_info info;
				FUZZ_ASSERT(!o || (!hetmm_pagemap_get_info(o,
								&info) &&
					    info.type !=
					    HETMM_MEMORY_DEVICE_PRIVATE),
					    "%s: held page %ld is on a "
					    "device-private pagemap", what, i);
			}
			if (nr_holds < MAX_HOLDS && c == ctx) {
				holds[nr_holds++] = (struct hold){ a, pin };
				world_busy(a, 1);
			} else {
				void *p = (void *)a;
				int rc = pin ? hetmm_unpin_user_pages(c, &p, 1)
					     : hetmm_put_user_pages(c, &p, 1);
				FUZZ_ASSERT(rc == 0, "%s: releasing page %ld: "
					    "%d", what, i, rc);
			}
		}
		for (long i = 0; i < got && i < 8; i++)
			if (c == ctx)
				check_holds_at(addr + (uintptr_t)i * PS, what);
	}
	free(pages);
	check_none(what);
}

static void op_release(struct input *in)
{
	bool pin = in_u8(in) & 1;
	struct hetmm_ctx *c = pick_ctx(in);
	size_t n = in_u8(in) % 9;
	void *pages[8] = { 0 };
	for (size_t i = 0; i < n && i < 8; i++) {
		uint8_t k = in_u8(in);
		if (k % 4 && nr_holds)
			pages[i] = (void *)holds[in_u8(in) % nr_holds].addr;
		else if (k % 4 == 1)
			pages[i] = NULL;
		else
			pages[i] = (void *)gen_addr(in);
	}
	size_t nr = n == 8 ? 8 : n;
	bool null_array = in_u8(in) % 16 == 0;

	/* Would every entry be released?  Each entry takes one hold of the
	 * kind asked for from its page. */
	bool valid = c == ctx && nr && !null_array;
	int used[8] = { 0 };
	for (size_t i = 0; i < nr && valid; i++) {
		uint64_t r, p;
		hold_counts((uintptr_t)pages[i], &r, &p);
		uint64_t have = pin ? p : r;
		int same = 0;
		for (size_t j = 0; j < i; j++)
			same += pages[j] == pages[i];
		used[i] = same;
		if (!pages[i] || (uint64_t)same >= have)
			valid = false;
	}
	(void)used;
	uint64_t before_r[8], before_p[8];
	for (size_t i = 0; i < nr; i++)
		if (c == ctx && pages[i] && ((uintptr_t)pages[i] & (PS - 1)) == 0 &&
		    (uintptr_t)pages[i] < FUZZ_USER_VA_END)
			hetmm_user_page_holds(ctx, pages[i], &before_r[i],
					      &before_p[i]);
	const char *what = pin ? "hetmm_unpin_user_pages"
			       : "hetmm_put_user_pages";
	int rc = pin ? hetmm_unpin_user_pages(c, null_array ? NULL : pages, nr)
		     : hetmm_put_user_pages(c, null_array ? NULL : pages, nr);
	TRACE("%s(%s, %s, %zu) = %d (entries %p %p %p %p ...)", what,
	      name_of(c), null_array ? "NULL" : "pages", nr, rc, pages[0],
	      pages[1], pages[2], pages[3]);
	CHECK_RC(rc, what);
	if (valid) {
		FUZZ_ASSERT(rc == 0, "%s: %zu entries, each held: %d", what, nr,
			    rc);
		/* Drop them from the harness's book. */
		for (size_t i = 0; i < nr; i++) {
			for (int h = 0; h < nr_holds; h++) {
				if (holds[h].addr == (uintptr_t)pages[i] &&
				    holds[h].pin == pin) {
					world_busy(holds[h].addr, -1);
					holds[h] = holds[--nr_holds];
					break;
				}
			}
		}
	} else {
		FUZZ_ASSERT(rc == -EINVAL, "%s: an entry not held (or NULL, "
			    "or of another context): %d, want -EINVAL", what,
			    rc);
	}
	/* Refused: nothing released.  Either way the counts are the
	 * harness's. */
	for (size_t i = 0; i < nr; i++)
		if (pages[i] && ((uintptr_t)pages[i] & (PS - 1)) == 0 &&
		    (uintptr_t)pages[i] < FUZZ_USER_VA_END)
			check_holds_at((uintptr_t)pages[i], what);
	check_none(what);
}

/* ------------------------------------------------------------------------
 * Frame numbers, pages, holds
 */

static void check_page(struct hetmm_page *page, const char *what)
{
	struct hetmm_page_info info;
	int rc = hetmm_page_get_info(page, &info);
	FUZZ_ASSERT(rc == 0, "%s: a page pointer from hetmm_pfn_to_page has "
		    "no info: %d", what, rc);
	struct hetmm_pagemap_info pi;
	FUZZ_ASSERT(hetmm_pagemap_get_info(info.pagemap, &pi) == 0 &&
		    info.index < pi.nr_pages,
		    "%s: page of index %" PRIu64 " of a pagemap of %" PRIu64,
		    what, info.index, pi.nr_pages);
	FUZZ_ASSERT(info.refcount <= 1 + MAX_HOLDS &&
		    info.pincount <= MAX_HOLDS, "%s: refcount %u pincount %u",
		    what, info.refcount, info.pincount);
}

static void op_query(struct input *in)
{
	struct hetmm_ctx *c = pick_ctx(in);
	uintptr_t addr = gen_addr(in);
	hetmm_pfn_t pfn = { 0 };
	int rc = hetmm_addr_to_pfn(c, (void *)addr, in_u8(in) % 8 ? &pfn : NULL);
	TRACE("hetmm_addr_to_pfn(%s, %#" PRIxPTR ") = %d (pfn %#" PRIx64 ")",
	      name_of(c), addr, rc, pfn.val);
	CHECK_RC(rc, "hetmm_addr_to_pfn");
	if (rc == 0) {
		struct hetmm_page *page = NULL;
		int q = hetmm_pfn_to_page(pfn, &page);
		/* A page on its way back may be gone already; else live. */
		if (q == 0) {
			check_page(page, "hetmm_addr_to_pfn");
			struct hetmm_page_info info;
			if (!hetmm_page_get_info(page, &info) && info.owner)
				FUZZ_ASSERT(info.owner ==
					    (addr & ~(uintptr_t)(PS - 1)),
					    "hetmm_addr_to_pfn(%#" PRIxPTR
					    "): its page's owner is %#" PRIxPTR,
					    addr, info.owner);
		}
	}
	uint64_t r = 0, p = 0;
	uint8_t k = in_u8(in);
	rc = hetmm_user_page_holds(c, (void *)addr, k & 1 ? NULL : &r,
				   k & 2 ? NULL : &p);
	TRACE("hetmm_user_page_holds(%s, %#" PRIxPTR ") = %d (%" PRIu64
	      " refs, %" PRIu64 " pins)", name_of(c), addr, rc, r, p);
	CHECK_RC(rc, "hetmm_user_page_holds");
	if (!c || (k & 3) || addr >= FUZZ_USER_VA_END)
		FUZZ_ASSERT(rc == -EINVAL, "hetmm_user_page_holds: bad "
			    "arguments, %d", rc);
	if (rc == 0 && c == ctx && !(addr & (PS - 1)))
		check_holds_at(addr, "hetmm_user_page_holds");
	check_none("a query");
}

static void op_pfn(struct input *in)
{
	uint8_t k = in_u8(in);
	hetmm_pfn_t pfn;
	struct hetmm_pagemap *pgs[3] = { pg_p, pg_c, pg_x };
	struct hetmm_pagemap *pg = pgs[in_u8(in) % 3];
	struct hetmm_pagemap_info info;
	if (!pg || hetmm_pagemap_get_info(pg, &info))
		info = (struct hetmm_pagemap_info){ 0 };
	uint64_t idx = in_u8(in) % 32;
	switch (k % 6) {
	case 0:
	case 1:
		pfn.val = info.first_pfn.val + idx;   /* maybe past the end */
		break;
	case 2:
		pfn.val = in_u64(in);
		break;
	case 3:
		pfn.val = nr_stale ? stale[in_u8(in) % (nr_stale < MAX_STALE ?
							  nr_stale : MAX_STALE)]
					     .first.val + idx
				   : HETMM_PFN_DEV | idx;
		break;
	case 4:
		pfn.val = (info.first_pfn.val + idx) & ~HETMM_PFN_DEV;
		break;
	default:
		pfn.val = (info.first_pfn.val + idx) | (uint64_t)in_u8(in) << 56;
		break;
	}
	struct hetmm_page *page = NULL;
	int rc = hetmm_pfn_to_page(pfn, k & 0x80 ? NULL : &page);
	TRACE("hetmm_pfn_to_page(%#" PRIx64 ") = %d", pfn.val, rc);
	CHECK_RC(rc, "hetmm_pfn_to_page");
	if (k & 0x80)
		FUZZ_ASSERT(rc == -EINVAL, "hetmm_pfn_to_page(NULL): %d", rc);
	if (rc == 0) {
		struct hetmm_pagemap *o = pfn_owner(pfn);
		FUZZ_ASSERT(o, "hetmm_pfn_to_page(%#" PRIx64 "): a page, but no "
			    "live pagemap has that frame", pfn.val);
		check_page(page, "hetmm_pfn_to_page");
	} else if ((hetmm_pfn_flags(pfn) & HETMM_PFN_DEV) && pfn_owner(pfn) &&
		   !(k & 0x80)) {
		fuzz_fail("hetmm_pfn_to_page(%#" PRIx64 ") of a live pagemap: "
			  "%d", pfn.val, rc);
	}

	/* Page pointers: one of a live page, a neighbour of it, stale ones,
	 * made-up ones.  hetmm_page_get_info looks a pointer up before it
	 * reads it. */
	struct hetmm_page *q = NULL;
	uint8_t m = in_u8(in) % 4;
	hetmm_pfn_t p0 = { info.first_pfn.val + idx };
	struct hetmm_page *live = NULL;
	if (pg && hetmm_pfn_to_page(p0, &live))
		live = NULL;
	switch (m) {
	case 0:
		q = live;
		break;
	case 1:
		/* A neighbour: in the same array, or just outside it.  (A
		 * pointer not aligned as a struct hetmm_page would be the
		 * caller's undefined behaviour, not a stale handle.) */
		q = live ? (struct hetmm_page *)((char *)live +
			   ((int)(in_u8(in) % 64) - 32) *
			   hetmm_page_metadata_size()) : NULL;
		break;
	case 2:
		q = (struct hetmm_page *)(uintptr_t)in_u64(in);
		break;
	default:
		q = NULL;
		break;
	}
	struct hetmm_page_info pi;
	int r2 = hetmm_page_get_info(q, in_u8(in) % 8 ? &pi : NULL);
	TRACE("hetmm_page_get_info(%p) = %d", (void *)q, r2);
	CHECK_RC(r2, "hetmm_page_get_info");
	if (r2 == 0) {
		struct hetmm_pagemap_info gi;
		FUZZ_ASSERT(hetmm_pagemap_get_info(pi.pagemap, &gi) == 0 &&
			    pi.index < gi.nr_pages,
			    "hetmm_page_get_info(%p): index %" PRIu64
			    " of a pagemap that is not live or smaller",
			    (void *)q, pi.index);
	}
	check_none("frame numbers");
}

/* ------------------------------------------------------------------------
 * Notifiers
 */

struct nf {
	struct hetmm_notifier *n;
	struct hetmm_ctx *c;
	uintptr_t start, end;
};
static struct nf nfs[MAX_NOTIFIERS];

static void nf_invalidate(struct hetmm_notifier *n, uintptr_t start,
			  uintptr_t end, enum hetmm_event why, void *arg)
{
	struct nf *f = arg;
	if (why < HETMM_EVENT_MIGRATE || why > HETMM_EVENT_RELEASE)
		fuzz_fail("notifier: event %d", (int)why);
	if (f->n && f->n != n)
		fuzz_fail("notifier: called for %p with the arg of %p",
			  (void *)n, (void *)f->n);
	if (start >= end || start < f->start || end > f->end)
		fuzz_fail("notifier over [%#" PRIxPTR ", %#" PRIxPTR
			  ") told of [%#" PRIxPTR ", %#" PRIxPTR ") (event %d)",
			  f->start, f->end, start, end, (int)why);
}

static const struct hetmm_notifier_ops nf_ops = { nf_invalidate };
static const struct hetmm_notifier_ops nf_ops_null = { NULL };

static void op_notifier(struct input *in)
{
	uint8_t k = in_u8(in);
	struct nf *f = &nfs[in_u8(in) % MAX_NOTIFIERS];
	switch (k % 4) {
	case 0: {
		if (f->n)
			return;
		struct hetmm_ctx *c = pick_ctx(in);
		uintptr_t addr = gen_addr(in);
		uint64_t len = gen_npages(in) * PS + (k & 0x80 ? 1 : 0);
		uint8_t om = in_u8(in);
		const struct hetmm_notifier_ops *ops =
			om % 8 == 0 ? NULL : om % 8 == 1 ? &nf_ops_null : &nf_ops;
		struct hetmm_notifier *n = NULL;
		f->start = addr;
		f->end = addr + len;
		int rc = hetmm_notifier_insert(c, (void *)addr, len, ops, f,
					       om & 0x80 ? NULL : &n);
		TRACE("hetmm_notifier_insert(%s, %#" PRIxPTR ", %#" PRIx64
		      ") = %d", name_of(c), addr, len, rc);
		CHECK_RC(rc, "hetmm_notifier_insert");
		if (!c || !ops || !ops->invalidate || (om & 0x80) ||
		    range_invalid(addr, len))
			FUZZ_ASSERT(rc == -EINVAL, "hetmm_notifier_insert: bad "
				    "arguments, %d", rc);
		if (rc == 0) {
			FUZZ_ASSERT(n, "hetmm_notifier_insert: no notifier");
			f->n = n;
			f->c = c;
		}
		break;
	}
	case 1: {
		int rc = hetmm_notifier_remove(f->n);
		TRACE("hetmm_notifier_remove(%p) = %d", (void *)f->n, rc);
		CHECK_RC(rc, "hetmm_notifier_remove");
		FUZZ_ASSERT(f->n ? rc == 0 : rc == -EINVAL,
			    "hetmm_notifier_remove: %d", rc);
		f->n = NULL;
		break;
	}
	default: {
		uint64_t seq = in_u64(in);
		int rc = hetmm_notifier_read_begin(f->n,
						   k & 0x80 ? NULL : &seq);
		TRACE("hetmm_notifier_read_begin(%p) = %d", (void *)f->n, rc);
		CHECK_RC(rc, "hetmm_notifier_read_begin");
		FUZZ_ASSERT(f->n && !(k & 0x80) ? rc == 0 : rc == -EINVAL,
			    "hetmm_notifier_read_begin: %d", rc);
		rc = hetmm_notifier_read_retry(f->n, seq);
		FUZZ_ASSERT(f->n ? rc == 0 || rc == 1 : rc == -EINVAL,
			    "hetmm_notifier_read_retry: %d", rc);
		break;
	}
	}
	check_none("a notifier call");
}

/* ------------------------------------------------------------------------
 * Range faults, exclusive access, peers
 */

static uint64_t pfns_buf[PAGES_MAX];
static hetmm_pfn_t frames_buf[PAGES_MAX];

/* npages of a range call: past the buffers only where the call must
 * refuse the range anyway. */
static uint64_t clamp_npages(uint64_t npages, bool refused)
{
	return npages > PAGES_MAX && !refused ? 1 + npages % PAGES_MAX
					      : npages;
}

/* An entry of a range-fault request: nothing, a fault, a write fault, or
 * raw bits. */
static uint64_t gen_req(struct input *in)
{
	static const uint64_t reqs[] = {
		0, HETMM_RANGE_REQ_FAULT,
		HETMM_RANGE_REQ_FAULT | HETMM_RANGE_REQ_WRITE,
		HETMM_RANGE_REQ_WRITE,
	};
	uint8_t k = in_u8(in);
	return k & 0x80 ? in_u64(in) : reqs[k % 4];
}

/* Entry i of a successful range fault over addr, checked against the
 * world: what it says of the page must be true. */
static void check_range_entry(uintptr_t addr, uint64_t i, uint64_t e,
			      uint64_t asked)
{
	uintptr_t a = addr + i * PS;
	const struct wpage *w = in_world(a) ? &W.pg[world_index(a)] : NULL;
	bool fault = asked & HETMM_RANGE_REQ_FAULT;
	if (e & HETMM_RANGE_ERROR) {
		FUZZ_ASSERT(!fault, "hetmm_range_fault: 0, yet page %" PRIu64
			    " asked to fault is ERROR", i);
		FUZZ_ASSERT(!w || !w->mapped || !w->readable,
			    "hetmm_range_fault: page %" PRIu64 " at %#" PRIxPTR
			    " is readable, reported ERROR", i, a);
		return;
	}
	if (!(e & HETMM_RANGE_VALID)) {
		FUZZ_ASSERT(!fault, "hetmm_range_fault: 0, yet page %" PRIu64
			    " asked to fault is not present", i);
		return;
	}
	FUZZ_ASSERT(!w || (w->mapped && w->readable),
		    "hetmm_range_fault: page %" PRIu64 " at %#" PRIxPTR
		    " reported VALID, but it is not readable", i, a);
	if ((asked & HETMM_RANGE_REQ_WRITE) && fault)
		FUZZ_ASSERT(e & HETMM_RANGE_WRITE, "hetmm_range_fault: page %"
			    PRIu64 " asked to fault for writing is not "
			    "writable", i);
	if (e & HETMM_RANGE_WRITE)
		FUZZ_ASSERT(!w || w->writable, "hetmm_range_fault: page %"
			    PRIu64 " at %#" PRIxPTR " reported WRITE in a "
			    "read-only mapping", i, a);
	if (e & HETMM_RANGE_DEVICE) {
		FUZZ_ASSERT(pfn_owner(hetmm_range_pfn(e)),
			    "hetmm_range_fault: page %" PRIu64 " on frame %#"
			    PRIx64 " of no live pagemap", i,
			    (uint64_t)(e & HETMM_RANGE_NUMBER_MASK));
		return;
	}
	FUZZ_ASSERT((e & HETMM_RANGE_NUMBER_MASK) == a / PS,
		    "hetmm_range_fault: system page %" PRIu64 " at %#" PRIxPTR
		    " numbered %#" PRIx64, i, a,
		    (uint64_t)(e & HETMM_RANGE_NUMBER_MASK));
}

static void op_range(struct input *in)
{
	uint8_t k = in_u8(in);
	struct nf *f = &nfs[in_u8(in) % MAX_NOTIFIERS];
	uintptr_t addr = gen_addr(in);
	uint64_t npages = gen_npages(in);
	uint64_t dflt = gen_req(in), mask = gen_req(in);
	uint64_t asks[16];
	for (int i = 0; i < 16; i++)
		asks[i] = gen_req(in);
	const uint64_t reqs = HETMM_RANGE_REQ_FAULT | HETMM_RANGE_REQ_WRITE;
	struct hetmm_notifier *n = k & 0x80 ? NULL : f->n;
	bool bad = (k & 0x08) || !n || (k & 0x20) ||
		   range_invalid(addr, npages * PS) ||
		   npages > UINT64_MAX / PS || addr < f->start ||
		   addr + npages * PS > f->end || (dflt & ~reqs);
	npages = clamp_npages(npages, bad);
	for (uint64_t i = 0; i < npages && i < PAGES_MAX; i++)
		pfns_buf[i] = asks[i % 16];
	uint8_t om = in_u8(in);
	struct hetmm_range r = {
		.notifier = n,
		.start = (void *)addr,
		.npages = npages,
		.pfns = k & 0x20 ? NULL : pfns_buf,
		.default_flags = dflt,
		.pfn_flags_mask = mask,
		.dev_private_owner = om % 4 == 0 ? NULL : om % 4 == 1 ?
			(const void *)emu_p : (const void *)(uintptr_t)om,
	};
	if (r.notifier && hetmm_notifier_read_begin(r.notifier,
						    &r.notifier_seq))
		fuzz_fail("hetmm_notifier_read_begin of a live notifier");
	if (k & 0x10)
		r.notifier_seq += 1 + in_u8(in);   /* stale */
	counters_save();
	int rc = hetmm_range_fault(k & 0x08 ? NULL : &r);
	TRACE("hetmm_range_fault(%p, %#" PRIxPTR ", %" PRIu64 " pages, "
	      "default %#" PRIx64 ", mask %#" PRIx64 ") = %d",
	      (void *)r.notifier, addr, npages, dflt, mask, rc);
	CHECK_RC(rc, "hetmm_range_fault");
	counters_same(rc, "hetmm_range_fault");
	FUZZ_ASSERT(rc == 0 || rc == -EBUSY || rc == -EFAULT ||
		    rc == -EPERM || rc == -EINVAL,
		    "hetmm_range_fault: %d, not an errno it documents", rc);
	if (bad)
		FUZZ_ASSERT(rc == -EINVAL, "hetmm_range_fault: bad arguments, "
			    "%d, want -EINVAL", rc);
	if (rc == 0) {
		for (uint64_t i = 0; i < npages; i++)
			check_range_entry(addr, i, pfns_buf[i],
					  (asks[i % 16] & mask) | dflt);
	}
	check_none("hetmm_range_fault");
}

static void op_exclusive(struct input *in)
{
	uint8_t k = in_u8(in);
	struct nf *f = &nfs[in_u8(in) % MAX_NOTIFIERS];
	struct hetmm_pagemap *pg = pick_pagemap(in);
	uintptr_t addr = gen_addr(in);
	uint64_t npages = gen_npages(in);
	hetmm_pfn_t *pfns = k & 0x20 ? NULL : frames_buf;
	uint64_t seq = 0;
	struct hetmm_notifier *n = k & 0x80 ? NULL : f->n;
	bool bad = !pg || !n || !pfns || (k & 0x10) ||
		   range_invalid(addr, npages * PS) ||
		   npages > UINT64_MAX / PS || addr < f->start ||
		   addr + npages * PS > f->end;
	npages = clamp_npages(npages, bad);
	counters_save();
	int rc = hetmm_make_device_exclusive(pg, n, (void *)addr, npages,
					     pfns, k & 0x10 ? NULL : &seq);
	TRACE("hetmm_make_device_exclusive(%s, %p, %#" PRIxPTR ", %" PRIu64
	      ") = %d", name_of(pg), (void *)n, addr, npages, rc);
	CHECK_RC(rc, "hetmm_make_device_exclusive");
	counters_same(rc, "hetmm_make_device_exclusive");
	FUZZ_ASSERT(rc == 0 || rc == -EFAULT || rc == -EPERM ||
		    rc == -EOPNOTSUPP || rc == -ENOMEM || rc == -ENXIO ||
		    rc == -EBUSY || rc == -EINVAL,
		    "hetmm_make_device_exclusive: %d, not an errno it "
		    "documents", rc);
	if (bad)
		FUZZ_ASSERT(rc == -EINVAL, "hetmm_make_device_exclusive: bad "
			    "arguments, %d, want -EINVAL", rc);
	else if (range_has_hole(addr, npages * PS))
		FUZZ_ASSERT(rc == -EFAULT || rc == -EINVAL ||
			    rc == -EOPNOTSUPP,
			    "hetmm_make_device_exclusive: a range with a hole: "
			    "%d, want -EFAULT", rc);
	if (rc == 0) {
		FUZZ_ASSERT(ctx_of_pagemap(pg) == f->c || drv_of(pg),
			    "hetmm_make_device_exclusive: a pagemap of "
			    "another context than the notifier's taken");
		for (uint64_t i = 0; i < npages; i++) {
			uintptr_t a = addr + i * PS;
			FUZZ_ASSERT(pfn_owner(pfns[i]) == pg,
				    "hetmm_make_device_exclusive: page %"
				    PRIu64 " given frame %#" PRIx64 ", not "
				    "the pagemap's", i, pfns[i].val);
			if (in_world(a)) {
				const struct wpage *w =
					&W.pg[world_index(a)];
				FUZZ_ASSERT(w->priv_anon && w->writable,
					    "hetmm_make_device_exclusive: "
					    "page %" PRIu64 " taken from a "
					    "mapping that is not private "
					    "anonymous and writable", i);
			}
		}
	}
	check_none("hetmm_make_device_exclusive");
}

/* Peer pairs made and not yet removed (a pagemap's removal ends its
 * pairs too: only pairs of the long-lived pagemaps are relied on). */
#define MAX_PEERS 8
static struct peer { struct hetmm_pagemap *a, *b; } peers[MAX_PEERS];

static bool lasting(struct hetmm_pagemap *p)
{
	return p && (p == pg_p || p == pg_c || p == pg_x);
}

static struct peer *peer_find(struct hetmm_pagemap *a,
			      struct hetmm_pagemap *b)
{
	for (int i = 0; i < MAX_PEERS; i++)
		if ((peers[i].a == a && peers[i].b == b) ||
		    (peers[i].a == b && peers[i].b == a))
			return &peers[i];
	return NULL;
}

static void op_peer(struct input *in)
{
	uint8_t k = in_u8(in);
	struct hetmm_pagemap *a = pick_pagemap(in), *b = pick_pagemap(in);
	bool both_lasting = lasting(a) && lasting(b) && a != b;
	bool two_ctx = (a == pg_x) != (b == pg_x);
	switch (k % 3) {
	case 0: {
		int rc = hetmm_p2pdma_add_peer(a, b);
		TRACE("hetmm_p2pdma_add_peer(%s, %s) = %d", name_of(a),
		      name_of(b), rc);
		CHECK_RC(rc, "hetmm_p2pdma_add_peer");
		if (!a || !b || a == b || (both_lasting && two_ctx))
			FUZZ_ASSERT(rc == -EINVAL, "hetmm_p2pdma_add_peer: "
				    "bad arguments, %d", rc);
		else if (both_lasting)
			FUZZ_ASSERT(rc == 0, "hetmm_p2pdma_add_peer: %d", rc);
		struct peer *p = rc ? NULL : peer_find(a, b);
		if (!rc && !p && (p = peer_find(NULL, NULL)))
			*p = (struct peer){ a, b };
		break;
	}
	case 1: {
		int rc = hetmm_p2pdma_remove_peer(a, b);
		TRACE("hetmm_p2pdma_remove_peer(%s, %s) = %d", name_of(a),
		      name_of(b), rc);
		CHECK_RC(rc, "hetmm_p2pdma_remove_peer");
		struct peer *p = a && b ? peer_find(a, b) : NULL;
		if (!a || !b || a == b || (both_lasting && two_ctx))
			FUZZ_ASSERT(rc == -EINVAL, "hetmm_p2pdma_remove_peer: "
				    "bad arguments, %d", rc);
		else if (both_lasting)
			FUZZ_ASSERT(p ? rc == 0 : rc == -ENOENT,
				    "hetmm_p2pdma_remove_peer: %d (%s peers)",
				    rc, p ? "were" : "were not");
		if (p && (rc == 0 || rc == -ENOENT || rc == -EINVAL))
			*p = (struct peer){ NULL, NULL };
		break;
	}
	default: {
		hetmm_pfn_t pfn = { in_u64(in) };
		uintptr_t at = gen_addr(in);
		if (!(k & 0x80) && hetmm_addr_to_pfn(ctx, (void *)at, &pfn))
			pfn.val = in_u64(in);
		uint64_t bus = 0;
		int rc = hetmm_p2pdma_bus_addr(a, pfn, k & 0x40 ? NULL : &bus);
		TRACE("hetmm_p2pdma_bus_addr(%s, %#" PRIx64 ") = %d",
		      name_of(a), pfn.val, rc);
		CHECK_RC(rc, "hetmm_p2pdma_bus_addr");
		struct hetmm_pagemap *o = pfn_owner(pfn);
		if (!a || (k & 0x40))
			FUZZ_ASSERT(rc == -EINVAL, "hetmm_p2pdma_bus_addr: bad "
				    "arguments, %d", rc);
		else if (!o && lasting(a))
			FUZZ_ASSERT(rc == -ENXIO || rc == -EINVAL,
				    "hetmm_p2pdma_bus_addr: frame %#" PRIx64
				    " of no live pagemap: %d", pfn.val, rc);
		if (rc == 0 && lasting(a) && lasting(o))
			FUZZ_ASSERT(o == a || peer_find(a, o),
				    "hetmm_p2pdma_bus_addr: %s reaches a frame "
				    "of %s, no peer of it", name_of(a),
				    name_of(o));
		break;
	}
	}
	check_none("a peer call");
}

/* The long-lived pagemaps' pairs end with the input. */
static void peers_end(void)
{
	for (int i = 0; i < MAX_PEERS; i++) {
		struct peer *p = &peers[i];
		if (lasting(p->a) && lasting(p->b))
			FUZZ_ASSERT(hetmm_p2pdma_remove_peer(p->a, p->b) == 0,
				    "hetmm_p2pdma_remove_peer at the end");
		*p = (struct peer){ NULL, NULL };
	}
}

/* ------------------------------------------------------------------------
 * Devices, mirrors, and the calls that only read
 */

static void op_objects(struct input *in)
{
	uint8_t k = in_u8(in);
	switch (k % 6) {
	case 0: {
		if (tmp_emu)
			return;
		struct hetmm_ctx *c = pick_ctx(in);
		int type = (int)(in_u8(in) % 7);
		static const uint64_t nrs[] = { 0, 1, 2, 8, (1ULL << 32) + 1,
						UINT64_MAX };
		uint64_t nr = nrs[in_u8(in) % 6];
		struct hetmm_emu *e = NULL;
		int rc = hetmm_emu_create(c, (enum hetmm_memory_type)type, nr,
					  k & 0x80 ? NULL : &e);
		TRACE("hetmm_emu_create(%s, %d, %#" PRIx64 ") = %d",
		      name_of(c), type, nr, rc);
		CHECK_RC(rc, "hetmm_emu_create");
		if (!c || !nr || nr > (1ULL << 32) || (k & 0x80) ||
		    type < HETMM_MEMORY_DEVICE_PRIVATE ||
		    type > HETMM_MEMORY_PCI_P2PDMA)
			FUZZ_ASSERT(rc == -EINVAL, "hetmm_emu_create: bad "
				    "arguments, %d", rc);
		if (rc == 0)
			tmp_emu = e;
		break;
	}
	case 1: {
		struct hetmm_mirror *mm = NULL;
		int rc = hetmm_mirror_create(k & 0x80 ? NULL : tmp_emu,
					     in_u8(in) & 1 ? NULL : &mm);
		TRACE("hetmm_mirror_create() = %d", rc);
		CHECK_RC(rc, "hetmm_mirror_create");
		if (rc == 0) {
			if (tmp_mirror)
				FUZZ_ASSERT(hetmm_mirror_destroy(tmp_mirror) ==
					    0, "hetmm_mirror_destroy");
			tmp_mirror = mm;
		}
		break;
	}
	case 2: {
		if (k & 0x80) {
			FUZZ_ASSERT(hetmm_mirror_destroy(NULL) == -EINVAL,
				    "hetmm_mirror_destroy(NULL)");
			FUZZ_ASSERT(hetmm_emu_destroy(NULL) == -EINVAL,
				    "hetmm_emu_destroy(NULL)");
			break;
		}
		if (tmp_mirror) {
			FUZZ_ASSERT(hetmm_mirror_destroy(tmp_mirror) == 0,
				    "hetmm_mirror_destroy");
			tmp_mirror = NULL;
		}
		break;
	}
	case 3: {
		struct hetmm_stats st;
		struct hetmm_mirror_stats ms;
		enum hetmm_uffd_route route;
		uint64_t feat;
		struct hetmm_pagemap_info pi;
		struct hetmm_pagemap *pg = NULL;
		uint8_t m = in_u8(in);
		struct hetmm_ctx *c = pick_ctx(in);
		int rc = hetmm_ctx_get_stats(c, m & 1 ? NULL : &st);
		FUZZ_ASSERT(c && !(m & 1) ? rc == 0 : rc == -EINVAL,
			    "hetmm_ctx_get_stats: %d", rc);
		rc = hetmm_ctx_uffd_info(c, m & 2 ? NULL : &route,
					 m & 4 ? NULL : &feat);
		FUZZ_ASSERT(c && (m & 6) != 6 ? rc == 0 : rc == -EINVAL,
			    "hetmm_ctx_uffd_info: %d", rc);
		struct hetmm_mirror *mir = pick_mirror(in);
		rc = hetmm_mirror_get_stats(mir, m & 8 ? NULL : &ms);
		FUZZ_ASSERT(mir && !(m & 8) ? rc == 0 : rc == -EINVAL,
			    "hetmm_mirror_get_stats: %d", rc);
		struct hetmm_pagemap *p = pick_pagemap(in);
		rc = hetmm_pagemap_get_info(p, m & 16 ? NULL : &pi);
		FUZZ_ASSERT(p && !(m & 16) ? rc == 0 : rc == -EINVAL,
			    "hetmm_pagemap_get_info: %d", rc);
		rc = hetmm_emu_pagemap(m & 32 ? NULL : emu_p,
				       m & 64 ? NULL : &pg);
		FUZZ_ASSERT(!(m & 96) ? rc == 0 && pg == pg_p : rc == -EINVAL,
			    "hetmm_emu_pagemap: %d", rc);
		FUZZ_ASSERT(hetmm_page_metadata_size() > 0,
			    "hetmm_page_metadata_size");
		break;
	}
	case 4: {
		struct hetmm_kernel_info ki;
		int rc = hetmm_kernel_probe(k & 0x80 ? NULL : &ki);
		FUZZ_ASSERT(k & 0x80 ? rc == -EINVAL : rc == 0,
			    "hetmm_kernel_probe: %d", rc);
		break;
	}
	default: {
		struct hetmm_ctx *made = NULL;
		struct hetmm_ctx_params params = { in_u32(in), in_u32(in) };
		uint8_t m = in_u8(in);
		/* Only the refusals: a context per input would be slow. */
		if (!params.flags && !(m & 1))
			params.flags = 1;
		int rc = hetmm_ctx_create(m & 2 ? NULL : &made,
					  m & 4 ? NULL : &params);
		if (m & 4) {
			/* NULL params are the defaults. */
			if (rc == 0)
				FUZZ_ASSERT(hetmm_ctx_destroy(made) == 0,
					    "hetmm_ctx_destroy");
			else
				FUZZ_ASSERT(rc == -EINVAL, "hetmm_ctx_create: "
					    "%d", rc);
			break;
		}
		if (rc == 0) {
			FUZZ_ASSERT(!params.flags, "hetmm_ctx_create: flags "
				    "%#x accepted", params.flags);
			FUZZ_ASSERT(hetmm_ctx_destroy(made) == 0,
				    "hetmm_ctx_destroy");
		} else {
			CHECK_RC(rc, "hetmm_ctx_create");
		}
		FUZZ_ASSERT(hetmm_ctx_destroy(NULL) == -EINVAL,
			    "hetmm_ctx_destroy(NULL)");
		break;
	}
	}
	check_none("an object call");
}

/* ------------------------------------------------------------------------
 * The input
 */

static void end_of_input(void)
{
	release_all_holds();
	peers_end();
	for (int i = 0; i < MAX_NOTIFIERS; i++) {
		if (nfs[i].n)
			FUZZ_ASSERT(hetmm_notifier_remove(nfs[i].n) == 0,
				    "hetmm_notifier_remove");
		nfs[i].n = NULL;
	}
	for (int i = 0; i < MAX_DRV; i++) {
		drv_remove(&drvs[i], true);
		if (drvs[i].mem)
			drv_unmap(&drvs[i]);
	}
	if (tmp_mirror)
		FUZZ_ASSERT(hetmm_mirror_destroy(tmp_mirror) == 0,
			    "hetmm_mirror_destroy");
	tmp_mirror = NULL;
	if (tmp_emu)
		FUZZ_ASSERT(hetmm_emu_destroy(tmp_emu) == 0,
			    "hetmm_emu_destroy");
	tmp_emu = NULL;
	world_final_check();
	stats_monotonic();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	world_reset(&in);
	stats_monotonic();
	TRACE("input of %zu bytes", size);
	for (int op = 0; op < MAX_OPS && !in_empty(&in); op++) {
		switch (in_u8(&in) % 19) {
		case 0: case 1:
			op_migrate(&in, true);
			break;
		case 2:
			op_migrate(&in, false);
			break;
		case 3:
			op_mirror(&in, 0);
			break;
		case 4:
			op_mirror(&in, 1);
			break;
		case 5:
			op_mirror(&in, 2);
			break;
		case 6:
			op_mirror(&in, 3 + (in_u8(&in) & 1));
			break;
		case 7: case 8:
			op_gup(&in);
			break;
		case 9:
			op_release(&in);
			break;
		case 10:
			op_query(&in);
			break;
		case 11:
			op_pfn(&in);
			break;
		case 12:
			op_notifier(&in);
			break;
		case 13:
			op_pagemap(&in);
			break;
		case 14:
			op_objects(&in);
			break;
		case 16:
			op_range(&in);
			break;
		case 17:
			op_exclusive(&in);
			break;
		case 18:
			op_peer(&in);
			break;
		default:
			world_cpu_op(&in);
			check_none("a CPU operation");
			break;
		}
		stats_monotonic();
	}
	end_of_input();
	return 0;
}
