/* SPDX-License-Identifier: MIT */
/*
 * test_badinput: every public call, fed NULL, zero lengths, unaligned and
 * wrapping ranges, unmapped memory and objects of another context, answers
 * with a negative errno and changes nothing: after each refusal the data,
 * the counters, the device residency and the free frames are what they
 * were.
 */
#include <stdbool.h>
#include <stdint.h>

#include "tdrv.h"

#define N 16             /* pages of the buffer: 0-7 on a device, 8-15 not */
#define SEED 0xbad

static struct hetmm_ctx *ctx, *ctx2;
static struct hetmm_emu *emu, *emu2;
static struct hetmm_pagemap *pg, *pg2;
static struct hetmm_mirror *mir, *mir2;
static char *buf;
static char *hole;       /* N pages, unmapped while their cases run */
static hetmm_pfn_t pfns[N / 2];

static struct {
	struct hetmm_stats st, st2;
	uint64_t free1, free2;
} saved;

static void save_state(void)
{
	saved.st = t_stats(ctx);
	saved.st2 = t_stats(ctx2);
	saved.free1 = t_nr_free(pg);
	saved.free2 = t_nr_free(pg2);
}

/* Nothing of the fixture changed; reading it faults nothing back. */
static void check_unchanged_at(int line)
{
	struct hetmm_stats st = t_stats(ctx), st2 = t_stats(ctx2);
	int before = __atomic_load_n(&t_failures, __ATOMIC_RELAXED);

	CHECK_STATS_EQ(st, saved.st);
	CHECK_STATS_EQ(st2, saved.st2);
	CHECK_EQ(t_nr_free(pg), saved.free1);
	CHECK_EQ(t_nr_free(pg2), saved.free2);
	for (size_t i = 0; i < N / 2; i++) {
		hetmm_pfn_t pfn = { 0 };

		CHECK_OK(hetmm_addr_to_pfn(ctx, buf + i * PS, &pfn));
		CHECK_EQ(pfn.val, pfns[i].val);
		CHECK(!t_present(buf + i * PS));
	}
	for (size_t i = N / 2; i < N; i++) {
		hetmm_pfn_t pfn;

		CHECK_EQ(hetmm_addr_to_pfn(ctx, buf + i * PS, &pfn), -ENOENT);
		CHECK(t_present(buf + i * PS));
	}
	CHECK_EQ(t_verify_from(buf + N / 2 * PS, N / 2, SEED, N / 2), 0);
	CHECK_EQ(t_stats(ctx).faults, st.faults);
	if (__atomic_load_n(&t_failures, __ATOMIC_RELAXED) != before)
		fprintf(stderr, "  (state changed by the call before line %d)\n",
			line);
}
#define check_unchanged() check_unchanged_at(__LINE__)

/* A negative errno, and state unchanged. */
#define REFUSED(expr)                                                     \
	do {                                                              \
		long long r_ = (long long)(expr);                         \
		if (r_ >= 0)                                              \
			t_fail(__FILE__, __LINE__,                        \
			       "%s: %lld, want a negative errno", #expr, r_); \
		check_unchanged();                                        \
	} while (0)

#define REFUSED_WITH(expr, err)                                           \
	do {                                                              \
		CHECK_EQ((expr), (err));                                  \
		check_unchanged();                                        \
	} while (0)

static void setup(void)
{
	struct hetmm_migrate_report rep;

	t_emu_up(&ctx, NULL, 64, &emu, &pg);
	t_emu_up(&ctx2, NULL, 64, &emu2, &pg2);
	REQUIRE_OK(hetmm_mirror_create(emu, &mir));
	REQUIRE_OK(hetmm_mirror_create(emu2, &mir2));

	/* N pages, and N right after them reserved for a hole. */
	buf = t_map(2 * N);
	t_unmap(buf + N * PS, N);
	t_hole_close(buf + N * PS, N);
	t_fill(buf, N, SEED);
	/* All of it goes through ctx once (so ctx watches the whole range),
	 * then the second half comes back. */
	memset(&rep, 0, sizeof(rep));
	REQUIRE_OK(hetmm_migrate_to_device(pg, buf, N * PS, &rep));
	REQUIRE(rep.moved == N);
	memset(&rep, 0, sizeof(rep));
	REQUIRE_OK(hetmm_migrate_to_system(ctx, buf + N / 2 * PS, N / 2 * PS,
					   &rep));
	REQUIRE(rep.moved == N / 2);
	for (size_t i = 0; i < N / 2; i++)
		REQUIRE_OK(hetmm_addr_to_pfn(ctx, buf + i * PS, &pfns[i]));

	hole = t_reserve(N);
	save_state();
	check_unchanged();
}

static void no_context_calls(void)
{
	struct hetmm_ctx_params params;
	struct hetmm_ctx *c = (struct hetmm_ctx *)&params;
	struct hetmm_page *page = (struct hetmm_page *)&params;
	struct hetmm_page_info pi;
	hetmm_pfn_t pfn;
	int fds = t_count_fds();

	REFUSED_WITH(hetmm_kernel_probe(NULL), -EINVAL);

	memset(&params, 0, sizeof(params));
	REFUSED_WITH(hetmm_ctx_create(NULL, NULL), -EINVAL);
	REFUSED_WITH(hetmm_ctx_create(NULL, &params), -EINVAL);
	params.flags = 2;
	REFUSED_WITH(hetmm_ctx_create(&c, &params), -EINVAL);
	CHECK(c == (struct hetmm_ctx *)&params);
	CHECK_EQ(t_count_fds(), fds);
	REFUSED_WITH(hetmm_ctx_destroy(NULL), -EINVAL);
	REFUSED_WITH(hetmm_ctx_uffd_info(NULL, NULL, NULL), -EINVAL);
	REFUSED_WITH(hetmm_ctx_get_stats(NULL, NULL), -EINVAL);
	REFUSED_WITH(hetmm_ctx_get_stats(ctx, NULL), -EINVAL);

	pfn.val = 0;
	REFUSED_WITH(hetmm_pfn_to_page(pfn, &page), -ENXIO);
	pfn.val = HETMM_PFN_DEV;
	REFUSED_WITH(hetmm_pfn_to_page(pfn, &page), -ENXIO);
	pfn.val = (uintptr_t)buf; /* an address is not a frame */
	REFUSED_WITH(hetmm_pfn_to_page(pfn, &page), -ENXIO);
	pfn.val = pfns[0].val & ~HETMM_PFN_DEV;
	REFUSED_WITH(hetmm_pfn_to_page(pfn, &page), -ENXIO);
	REFUSED_WITH(hetmm_pfn_to_page(pfns[0], NULL), -EINVAL);
	CHECK(page == (struct hetmm_page *)&params);
	REFUSED_WITH(hetmm_page_get_info(NULL, &pi), -EINVAL);
	page = NULL;
	CHECK_OK(hetmm_pfn_to_page(pfns[0], &page));
	REQUIRE(page != NULL);
	REFUSED_WITH(hetmm_page_get_info(page, NULL), -EINVAL);

	REFUSED_WITH(hetmm_addr_to_pfn(NULL, buf, &pfn), -EINVAL);
	REFUSED_WITH(hetmm_addr_to_pfn(ctx, buf, NULL), -EINVAL);
	REFUSED(hetmm_addr_to_pfn(ctx, (void *)~(uintptr_t)(PS - 1), &pfn));
	t_hole_open(hole, N);
	REFUSED(hetmm_addr_to_pfn(ctx, hole, &pfn));
	t_hole_close(hole, N);
	/* The other context doesn't know ctx's pages. */
	REFUSED_WITH(hetmm_addr_to_pfn(ctx2, buf, &pfn), -ENOENT);
}

static void pagemap_calls(void)
{
	static const struct hetmm_pagemap_ops ops = { 0 };
	struct hetmm_pagemap_desc desc;
	struct hetmm_pagemap *p = (struct hetmm_pagemap *)&desc;
	struct hetmm_pagemap_info info;
	struct hetmm_emu *e = (struct hetmm_emu *)&desc;

	memset(&desc, 0, sizeof(desc));
	desc.type = HETMM_MEMORY_DEVICE_PRIVATE;
	desc.nr_pages = 4;
	desc.ops = &ops; /* copy callbacks missing */
	REFUSED_WITH(hetmm_pagemap_add(ctx, &desc, &p), -EINVAL);
	desc.ops = NULL;
	REFUSED_WITH(hetmm_pagemap_add(ctx, &desc, &p), -EINVAL);
	REFUSED_WITH(hetmm_pagemap_add(ctx, NULL, &p), -EINVAL);
	REFUSED_WITH(hetmm_pagemap_add(NULL, NULL, NULL), -EINVAL);
	CHECK(p == (struct hetmm_pagemap *)&desc);
	REFUSED_WITH(hetmm_pagemap_remove(NULL), -EINVAL);
	/* The emulated device's pagemap is its driver's to remove: the
	 * device keeps working (it once crashed on its next call). */
	REFUSED_WITH(hetmm_pagemap_remove(pg), -EBUSY);
	REFUSED_WITH(hetmm_pagemap_remove_managed(pg, &desc), -EPERM);
	REFUSED_WITH(hetmm_pagemap_remove_managed(NULL, &desc), -EINVAL);
	REFUSED_WITH(hetmm_pagemap_get_info(NULL, &info), -EINVAL);
	REFUSED_WITH(hetmm_pagemap_get_info(pg, NULL), -EINVAL);

	REFUSED_WITH(hetmm_emu_create(NULL, HETMM_MEMORY_DEVICE_PRIVATE, 4,
				      &e), -EINVAL);
	REFUSED_WITH(hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_PRIVATE, 4,
				      NULL), -EINVAL);
	REFUSED_WITH(hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_PRIVATE, 0,
				      &e), -EINVAL);
	REFUSED_WITH(hetmm_emu_create(ctx, (enum hetmm_memory_type)0, 4, &e),
		     -EINVAL);
	REFUSED_WITH(hetmm_emu_create(ctx, (enum hetmm_memory_type)99, 4, &e),
		     -EINVAL);
	/* A size whose byte count overflows. */
	REFUSED(hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_PRIVATE, UINT64_MAX,
				 &e));
	REFUSED(hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_PRIVATE,
				 (UINT64_MAX >> HETMM_PAGE_SHIFT) + 2, &e));
	CHECK(e == (struct hetmm_emu *)&desc);
	REFUSED_WITH(hetmm_emu_destroy(NULL), -EINVAL);
	REFUSED_WITH(hetmm_emu_pagemap(NULL, &p), -EINVAL);
	REFUSED_WITH(hetmm_emu_pagemap(emu, NULL), -EINVAL);
	REFUSED_WITH(hetmm_mirror_create(NULL, &mir2), -EINVAL);
	REFUSED_WITH(hetmm_mirror_create(emu, NULL), -EINVAL);
	REFUSED_WITH(hetmm_mirror_destroy(NULL), -EINVAL);
}

/* Every malformed range, for both migration directions. */
static void migrate_calls(void)
{
	struct hetmm_migrate_report rep;
	const size_t wrap = (size_t)0 - 2 * PS; /* aligned, buf + wrap wraps */
	char *top = (char *)(uintptr_t)((1ULL << 47) - PS);
	char *kernel = (char *)(uintptr_t)0xffff888000000000ULL;

	struct {
		void *addr;
		size_t len;
		int err;
	} cases[] = {
		{ NULL, PS, -EINVAL },
		{ NULL, 0, -EINVAL },
		{ buf, 0, -EINVAL },
		{ buf + 1, PS, -EINVAL },
		{ buf + PS - 1, PS, -EINVAL },
		{ buf, 1, -EINVAL },
		{ buf, PS + 1, -EINVAL },
		{ buf, PS - 1, -EINVAL },
		{ buf, wrap, -EINVAL },
		{ buf, SIZE_MAX & ~(PS - 1), -EINVAL },
		{ buf + N / 2 * PS, wrap, -EINVAL },
		{ top, 2 * PS, -EINVAL },
		{ kernel, PS, -EINVAL },
		{ hole, N * PS, -EINVAL },
		{ hole + PS, PS, -EINVAL },
		/* Mapped, then running into the hole kept after buf. */
		{ buf, 2 * N * PS, -EINVAL },
	};

	t_hole_open(hole, N);
	t_hole_open(buf + N * PS, N);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc;

		memset(&rep, 0, sizeof(rep));
		rc = hetmm_migrate_to_device(pg, cases[i].addr, cases[i].len,
					     &rep);
		CHECK_EQ(rc, cases[i].err);
		CHECK_EQ(rep.moved, 0);
		check_unchanged();

		memset(&rep, 0, sizeof(rep));
		rc = hetmm_migrate_to_system(ctx, cases[i].addr, cases[i].len,
					     &rep);
		CHECK_EQ(rc, cases[i].err);
		CHECK_EQ(rep.moved, 0);
		check_unchanged();
		if (rc != cases[i].err)
			fprintf(stderr, "  (case %zu: addr %p len 0x%zx)\n", i,
				cases[i].addr, cases[i].len);
	}
	t_hole_close(buf + N * PS, N);
	t_hole_close(hole, N);

	memset(&rep, 0, sizeof(rep));
	REFUSED_WITH(hetmm_migrate_to_device(NULL, buf, PS, &rep), -EINVAL);
	REFUSED_WITH(hetmm_migrate_to_system(NULL, buf, PS, &rep), -EINVAL);
}

/*
 * Objects of the other context.  ctx watches all of buf; ctx2 must not
 * take its pages, steal its system pages, or bring them back.
 */
static void other_context(void)
{
	struct hetmm_migrate_report rep;

	/* ctx's device pages, to ctx2's device. */
	memset(&rep, 0, sizeof(rep));
	REFUSED(hetmm_migrate_to_device(pg2, buf, N / 2 * PS, &rep));
	CHECK_EQ(rep.moved, 0);
	/* ctx's system pages (ctx watches them), to ctx2's device. */
	memset(&rep, 0, sizeof(rep));
	REFUSED(hetmm_migrate_to_device(pg2, buf + N / 2 * PS, N / 2 * PS,
					&rep));
	CHECK_EQ(rep.moved, 0);
	/* ctx2 bringing back pages it doesn't have. */
	memset(&rep, 0, sizeof(rep));
	REFUSED_WITH(hetmm_migrate_to_system(ctx2, buf, N * PS, &rep),
		     -ENOENT);
	CHECK_EQ(rep.moved, 0);
}

static void mirror_calls(void)
{
	char *out, *src;
	uint8_t prot[N];
	uint64_t faults;
	char *top = (char *)(uintptr_t)((1ULL << 47) - PS);

	REQUIRE(posix_memalign((void **)&out, PS, N * PS) == 0);
	REQUIRE(posix_memalign((void **)&src, PS, N * PS) == 0);
	memset(out, 0xab, N * PS);
	t_fill(src, N, 0x51);

	struct {
		void *addr;
		uint64_t npages;
		int err;
	} cases[] = {
		{ NULL, 1, -EINVAL },
		{ buf, 0, -EINVAL },
		{ buf + 1, 1, -EINVAL },
		{ buf + 64, 1, -EINVAL },
		{ buf, 1ULL << (64 - HETMM_PAGE_SHIFT), -EINVAL }, /* == 2^64 B */
		{ buf, (1ULL << (64 - HETMM_PAGE_SHIFT)) + 1, -EINVAL },
		{ buf, UINT64_MAX, -EINVAL },
		{ top, 2, -EINVAL },
		{ hole, N, -EFAULT },
		{ hole + PS, 1, -EFAULT },
	};

	t_hole_open(hole, N);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t n = cases[i].npages;

		/* Never hand a buffer shorter than the request unless the
		 * request must be refused before it is looked at. */
		if (cases[i].err == -EFAULT)
			REQUIRE(n <= N);
		faults = 77;
		CHECK_EQ(hetmm_mirror_read(mir, cases[i].addr, out, n, &faults),
			 cases[i].err);
		check_unchanged();
		CHECK_EQ(hetmm_mirror_write(mir, cases[i].addr, src, n, &faults),
			 cases[i].err);
		check_unchanged();
		if (cases[i].err == -EINVAL) {
			CHECK_EQ(hetmm_mirror_snapshot(mir, cases[i].addr, n,
						       prot), -EINVAL);
			check_unchanged();
		}
	}
	t_hole_close(hole, N);
	for (size_t i = 0; i < N * PS; i++) {
		if ((unsigned char)out[i] != 0xab) {
			t_fail(__FILE__, __LINE__,
			       "refused mirror read wrote byte %zu", i);
			break;
		}
	}

	REFUSED_WITH(hetmm_mirror_read(NULL, buf, out, 1, &faults), -EINVAL);
	REFUSED_WITH(hetmm_mirror_write(NULL, buf, src, 1, &faults), -EINVAL);
	REFUSED_WITH(hetmm_mirror_read(mir, buf, NULL, 1, &faults), -EINVAL);
	REFUSED_WITH(hetmm_mirror_write(mir, buf, NULL, 1, &faults), -EINVAL);
	REFUSED_WITH(hetmm_mirror_snapshot(NULL, buf, 1, prot), -EINVAL);
	REFUSED_WITH(hetmm_mirror_snapshot(mir, buf, 1, NULL), -EINVAL);

	/* Partly mapped: the write is refused and the mapped part keeps its
	 * bytes. */
	{
		char *p = t_map(4);

		t_fill(p, 4, 0x52);
		REQUIRE(munmap(p + 3 * PS, PS) == 0);
		CHECK_EQ(hetmm_mirror_write(mir, p, src, 4, &faults), -EFAULT);
		CHECK_EQ(t_verify(p, 3, 0x52), 0);
		REQUIRE(mprotect(p + PS, PS, PROT_NONE) == 0);
		CHECK_EQ(hetmm_mirror_write(mir, p, src, 3, &faults), -EFAULT);
		REQUIRE(mprotect(p + PS, PS, PROT_READ) == 0);
		CHECK_EQ(hetmm_mirror_write(mir, p, src, 3, &faults), -EPERM);
		CHECK_EQ(t_verify(p, 3, 0x52), 0);
		REQUIRE(munmap(p, 3 * PS) == 0);
		check_unchanged();
	}
	free(out);
	free(src);
}

/*
 * Memory hetmm uses itself is no process memory to migrate, pin or fault
 * in for a device: here, device memory that a pagemap's pages move into.
 * (A migration that ran on into hetmm's own pages once took the
 * handler's doorbell, and the context could not be destroyed any more.)
 */
static void own_memory(void)
{
	enum { DEV = 16 };
	/* A page of the process's, the device's memory right after it. */
	char *mem = t_map(1 + DEV);
	struct td d = { .nr = DEV, .mode = TD_REMAP,
			.mem = (unsigned char *)mem + PS };
	struct hetmm_pagemap_desc desc = {
		.type = HETMM_MEMORY_DEVICE_PRIVATE, .nr_pages = DEV,
		.ops = &td_ops_addr, .drvdata = &d, .owner = &d,
		.flags = HETMM_PAGEMAP_REMAP,
	};
	void *pages[2];

	REQUIRE_OK(hetmm_pagemap_add(ctx, &desc, &d.pg));
	t_fill(mem, 1, 77);
	save_state();
	REFUSED_WITH(hetmm_migrate_to_device(pg, d.mem, PS, NULL), -EINVAL);
	/* A range that only runs into it is refused as a whole: the
	 * process's page before it stays where it is. */
	REFUSED_WITH(hetmm_migrate_to_device(pg, mem, 2 * PS, NULL), -EINVAL);
	CHECK(!t_on_device(ctx, mem));
	REFUSED_WITH(hetmm_pin_user_pages(ctx, d.mem, 1, 0, pages), -EINVAL);
	REFUSED_WITH(hetmm_get_user_pages_fast(ctx, mem, 2, 0, pages),
		     -EINVAL);
	CHECK_EQ(t_verify(mem, 1, 77), 0);
	CHECK_OK(hetmm_pagemap_remove(d.pg));
	/* Its pagemap gone, the memory is the process's again. */
	CHECK_OK(hetmm_migrate_to_device(pg, d.mem, PS, NULL));
	CHECK_OK(hetmm_migrate_to_system(ctx, d.mem, PS, NULL));
	t_unmap(mem, 1 + DEV);
	save_state();
}

/*
 * A range that runs into one of the kernel's special mappings ([vvar],
 * [vdso]: no userfaultfd there) is refused before anything moves, and the
 * context goes on working.  The page next to the special mapping is
 * anonymous memory: ours if there is room to map it below or above one
 * (x86-64 has room below [vvar]; arm64 puts the process's first mappings
 * right below it, and has room above [vdso]), else the small anonymous
 * mapping of libc's or the loader's that the kernel usually puts below
 * (the case found: those pages went to the device, and the context could
 * no longer be used or destroyed).
 */

/* Our own page at addr, if nothing is mapped there. */
static bool map_own_page(uintptr_t addr)
{
	void *p = mmap((void *)addr, PS, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
		       -1, 0);
	if (p == MAP_FAILED)
		return false;
	if (p != (void *)addr) {        /* a kernel that took it as a hint */
		munmap(p, PS);
		return false;
	}
	return true;
}

static void special_mapping(void)
{
	char line[512], prev[512] = "";
	uintptr_t lo = 0, hi, plo = 0, phi = 0;
	FILE *f = fopen("/proc/self/maps", "r");
	char *anon = NULL, *range = NULL;   /* range: 2 pages, anon one */
	bool ours = false;

	REQUIRE(f != NULL);
	while (!anon && fgets(line, sizeof(line), f)) {
		unsigned long long off, inode = 1;
		char perms[8];
		unsigned maj, min;

		if (!strstr(line, "[vvar") && !strstr(line, "[vdso]")) {
			strcpy(prev, line);
			continue;
		}
		REQUIRE(sscanf(line, "%lx-%lx", &lo, &hi) == 2);
		if (map_own_page(lo - PS)) {
			anon = range = (char *)(lo - PS);
			ours = true;
		} else if (map_own_page(hi)) {
			anon = (char *)hi;
			range = (char *)(hi - PS);
			ours = true;
		} else if (sscanf(prev, "%lx-%lx %7s %llx %x:%x %llu", &plo,
				  &phi, perms, &off, &maj, &min, &inode) == 7 &&
			   phi == lo && !inode && !strcmp(perms, "rw-p")) {
			anon = range = (char *)(lo - PS);
		}
		strcpy(prev, line);
	}
	fclose(f);
	REQUIRE(anon != NULL);
	if (ours)
		t_fill(anon, 1, 78);
	save_state();
	REFUSED_WITH(hetmm_migrate_to_device(pg, range, 2 * PS, NULL),
		     -EINVAL);
	CHECK(!t_on_device(ctx, anon));
	/* The context goes on: a page of ours goes and comes back. */
	char *mine = t_map(1);
	t_fill(mine, 1, 79);
	CHECK_OK(hetmm_migrate_to_device(pg, mine, PS, NULL));
	CHECK(t_on_device(ctx, mine));
	CHECK_EQ(t_verify(mine, 1, 79), 0);
	t_unmap(mine, 1);
	if (ours) {
		CHECK_EQ(t_verify(anon, 1, 78), 0);
		munmap(anon, PS);
	}
	CHECK_EQ(t_settled_free(pg, saved.free1), saved.free1);
	save_state();
}

int main(void)
{
	setup();
	no_context_calls();
	pagemap_calls();
	migrate_calls();
	other_context();
	mirror_calls();
	own_memory();
	special_mapping();

	/* Everything still works after all that. */
	CHECK_EQ(t_verify(buf, N, SEED), 0);
	CHECK_EQ(t_stats(ctx).device_resident, 0);
	CHECK_OK(hetmm_mirror_destroy(mir));
	CHECK_OK(hetmm_mirror_destroy(mir2));
	CHECK_OK(hetmm_emu_destroy(emu));
	CHECK_OK(hetmm_emu_destroy(emu2));
	CHECK_OK(hetmm_ctx_destroy(ctx));
	CHECK_OK(hetmm_ctx_destroy(ctx2));
	t_unmap(buf, 2 * N);
	return t_done();
}
