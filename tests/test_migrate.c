/* SPDX-License-Identifier: MIT */
/*
 * test_migrate: private anonymous memory to an emulated DEVICE_PRIVATE
 * device and back, by CPU faults and explicitly; what may not move and
 * why; ranges that are refused; a full device; hot-remove.
 */
#include <sched.h>
#include <stdbool.h>

#include "tdrv.h"

static struct hetmm_ctx *ctx;
static struct hetmm_emu *emu0, *emu1;
static struct hetmm_pagemap *pg0, *pg1;
static struct hetmm_mirror *mir0, *mir1;

#define NDEV 256

static const char *status_name(unsigned s)
{
	static const char *names[] = {
		"0", "MOVED", "ALREADY", "SKIP_SHARED", "SKIP_FILE",
		"SKIP_PINNED", "SKIP_OTHER_DEVICE", "SKIP_BUSY", "SKIP_NOMEM",
		"SKIP_SYSTEM",
	};
	return s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

#define CHECK_STATUS(st, i, want)                                          \
	do {                                                               \
		if ((st)[i] != (want))                                     \
			t_fail(__FILE__, __LINE__,                         \
			       "status[%zu] = %s (%u), want %s", (size_t)(i), \
			       status_name((st)[i]), (unsigned)(st)[i],    \
			       status_name(want));                         \
	} while (0)

static size_t count_present(const char *p, size_t n)
{
	size_t c = 0;

	for (size_t i = 0; i < n; i++)
		c += (size_t)t_present(p + i * PS);
	return c;
}

static void check_snapshot(struct hetmm_mirror *m, const char *p, size_t n,
			   uint8_t want, int line)
{
	uint8_t *prot = malloc(n);

	REQUIRE(prot != NULL);
	memset(prot, 0xee, n);
	CHECK_OK(hetmm_mirror_snapshot(m, p, n, prot));
	for (size_t i = 0; i < n; i++) {
		if (prot[i] != want) {
			t_fail(__FILE__, line, "snapshot page %zu: 0x%02x != 0x%02x",
			       i, prot[i], want);
			break;
		}
	}
	free(prot);
}

/* ------------------------------------------------------------------------
 */

static void basic_round_trip(void)
{
	enum { N = 64 };
	char *buf = t_map_alone(N);   /* faults counted */
	uint8_t status[N];
	struct hetmm_migrate_report rep;
	struct hetmm_stats s0, s1, s2;
	hetmm_pfn_t pfns[N];
	struct hetmm_pagemap_info info;

	REQUIRE_OK(hetmm_pagemap_get_info(pg0, &info));
	t_fill(buf, N, 1);
	s0 = t_stats(ctx);

	memset(&rep, 0, sizeof(rep));
	memset(status, 0, sizeof(status));
	rep.status = status;
	CHECK_OK(hetmm_migrate_to_device(pg0, buf, N * PS, &rep));
	CHECK_EQ(rep.moved, N);
	CHECK_EQ(rep.skipped, 0);
	for (size_t i = 0; i < N; i++)
		CHECK_STATUS(status, i, HETMM_MIGRATE_MOVED);

	s1 = t_stats(ctx);
	CHECK_EQ(s1.to_device_pages - s0.to_device_pages, N);
	CHECK_EQ(s1.device_resident - s0.device_resident, N);
	CHECK_EQ(s1.faults, s0.faults);
	CHECK_EQ(t_nr_free(pg0), info.nr_free - N);

	/* The pages left the CPU page tables and each has its own frame,
	 * owned by its address. */
	CHECK_EQ(count_present(buf, N), 0);
	for (size_t i = 0; i < N; i++) {
		struct hetmm_page *page = NULL;
		struct hetmm_page_info pi;

		pfns[i].val = 0;
		CHECK_OK(hetmm_addr_to_pfn(ctx, buf + i * PS, &pfns[i]));
		CHECK(hetmm_pfn_flags(pfns[i]) & HETMM_PFN_DEV);
		CHECK(hetmm_pfn_number(pfns[i]) >=
			      hetmm_pfn_number(info.first_pfn) &&
		      hetmm_pfn_number(pfns[i]) <
			      hetmm_pfn_number(info.first_pfn) + info.nr_pages);
		CHECK_OK(hetmm_pfn_to_page(pfns[i], &page));
		if (page) {
			CHECK_OK(hetmm_page_get_info(page, &pi));
			CHECK_EQ(pi.owner, (uintptr_t)(buf + i * PS));
			CHECK_EQ(pi.refcount, 1);
			CHECK(pi.pagemap == pg0);
		}
		for (size_t j = 0; j < i; j++)
			CHECK(pfns[j].val != pfns[i].val);
	}

	/* Mirrors see the pages as local on their device, not at all from
	 * the other, and a snapshot faults nothing back. */
	check_snapshot(mir0, buf, N, LOCAL_RW, __LINE__);
	check_snapshot(mir1, buf, N, REMOTE_PRIVATE, __LINE__);
	s2 = t_stats(ctx);
	CHECK_EQ(s2.device_resident, s1.device_resident);
	CHECK_EQ(s2.faults, s1.faults);
	CHECK_EQ(count_present(buf, N), 0);

	/* The CPU reads every byte: faults bring the pages back. */
	CHECK_EQ(t_verify(buf, N, 1), 0);
	s2 = t_stats(ctx);
	CHECK(s2.faults > s1.faults);
	CHECK(s2.faults - s1.faults <= N);
	CHECK_EQ(s2.fault_pages - s1.fault_pages, N);
	CHECK_EQ(s2.to_system_pages - s1.to_system_pages, N);
	CHECK_EQ(s2.device_resident, s0.device_resident);
	CHECK_EQ(count_present(buf, N), N);
	CHECK_EQ(t_count_on_device(ctx, buf, N), 0);
	CHECK_EQ(t_nr_free(pg0), info.nr_free);
	for (size_t i = 0; i < N; i++) {
		struct hetmm_page *page = NULL;
		struct hetmm_page_info pi;

		CHECK_OK(hetmm_pfn_to_page(pfns[i], &page));
		if (page) {
			CHECK_OK(hetmm_page_get_info(page, &pi));
			CHECK_EQ(pi.refcount, 0);
			CHECK_EQ(pi.owner, 0);
		}
	}

	/* A write first (not a read) also faults back, and sticks. */
	t_to_device(pg0, buf, N);
	for (size_t i = 0; i < N; i++) /* a pure store, no load before */
		((volatile uint64_t *)(buf + i * PS))[3] =
			t_word(t_page_seed(1, i), 3);
	CHECK_EQ(t_verify(buf, N, 1), 0);
	CHECK_EQ(t_count_on_device(ctx, buf, N), 0);
	t_unmap_alone(buf, N);
}

static void explicit_to_system(void)
{
	enum { N = 48 };
	char *buf = t_map_alone(N);   /* faults counted */
	uint8_t status[N];
	struct hetmm_migrate_report rep;
	struct hetmm_stats s0, s1;

	t_fill(buf, N, 2);
	t_to_device(pg0, buf, N);

	/* Already there: nothing moves, every page says so. */
	memset(&rep, 0, sizeof(rep));
	memset(status, 0, sizeof(status));
	rep.status = status;
	CHECK_EQ(hetmm_migrate_to_device(pg0, buf, N * PS, &rep), -ENOENT);
	CHECK_EQ(rep.moved, 0);
	for (size_t i = 0; i < N; i++)
		CHECK_STATUS(status, i, HETMM_MIGRATE_ALREADY);
	CHECK_EQ(t_count_on_device(ctx, buf, N), N);

	s0 = t_stats(ctx);
	memset(&rep, 0, sizeof(rep));
	memset(status, 0, sizeof(status));
	rep.status = status;
	CHECK_OK(hetmm_migrate_to_system(ctx, buf, N * PS, &rep));
	CHECK_EQ(rep.moved, N);
	CHECK_EQ(rep.skipped, 0);
	for (size_t i = 0; i < N; i++)
		CHECK_STATUS(status, i, HETMM_MIGRATE_MOVED);
	s1 = t_stats(ctx);
	CHECK_EQ(s1.to_system_pages - s0.to_system_pages, N);
	CHECK_EQ(s1.device_resident + N, s0.device_resident);
	CHECK_EQ(s1.faults, s0.faults);
	CHECK_EQ(count_present(buf, N), N);
	CHECK_EQ(t_count_on_device(ctx, buf, N), 0);

	/* The pages are mapped: reading them takes no fault. */
	CHECK_EQ(t_verify(buf, N, 2), 0);
	s0 = t_stats(ctx);
	CHECK_EQ(s0.faults, s1.faults);

	/* Nothing left on a device. */
	memset(&rep, 0, sizeof(rep));
	memset(status, 0, sizeof(status));
	rep.status = status;
	CHECK_EQ(hetmm_migrate_to_system(ctx, buf, N * PS, &rep), -ENOENT);
	CHECK_EQ(rep.moved, 0);
	for (size_t i = 0; i < N; i++)
		CHECK_STATUS(status, i, HETMM_MIGRATE_SKIP_SYSTEM);
	/* ...also for memory hetmm never saw. */
	{
		char *other = t_map(4);

		other[0] = 1;
		memset(&rep, 0, sizeof(rep));
		CHECK_EQ(hetmm_migrate_to_system(ctx, other, 4 * PS, &rep),
			 -ENOENT);
		CHECK_EQ(rep.moved, 0);
		CHECK_EQ(other[0], 1);
		t_unmap(other, 4);
	}

	/* Half back explicitly, half by faults. */
	memset(&rep, 0, sizeof(rep));
	CHECK_OK(hetmm_migrate_to_device(pg0, buf, N * PS, &rep));
	memset(&rep, 0, sizeof(rep));
	CHECK_OK(hetmm_migrate_to_system(ctx, buf + N / 2 * PS, N / 2 * PS,
					 &rep));
	CHECK_EQ(rep.moved, N / 2);
	CHECK_EQ(t_count_on_device(ctx, buf, N / 2), N / 2);
	CHECK_EQ(count_present(buf + N / 2 * PS, N / 2), N / 2);
	CHECK_EQ(t_verify(buf, N, 2), 0);
	t_unmap_alone(buf, N);
}

static int make_file(size_t npages, uint64_t seed)
{
	char path[] = "/tmp/hetmm-test-XXXXXX";
	int fd = mkstemp(path);

	REQUIRE(fd >= 0);
	unlink(path);
	t_write_pattern(fd, npages, seed);
	return fd;
}

static void not_movable(void)
{
	enum { N = 8 };
	uint8_t status[N];
	struct hetmm_migrate_report rep;
	struct hetmm_stats s0, s1;
	char *shared, *file;
	int fd;

	/* MAP_SHARED anonymous: skipped as shared, -ENOENT. */
	shared = mmap(NULL, N * PS, PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	REQUIRE(shared != MAP_FAILED);
	t_fill(shared, N, 3);
	s0 = t_stats(ctx);
	memset(&rep, 0, sizeof(rep));
	memset(status, 0, sizeof(status));
	rep.status = status;
	CHECK_EQ(hetmm_migrate_to_device(pg0, shared, N * PS, &rep), -ENOENT);
	CHECK_EQ(rep.moved, 0);
	CHECK_EQ(rep.skipped, N);
	for (size_t i = 0; i < N; i++)
		CHECK_STATUS(status, i, HETMM_MIGRATE_SKIP_SHARED);
	s1 = t_stats(ctx);
	CHECK_EQ(s1.to_device_pages, s0.to_device_pages);
	CHECK_EQ(s1.skipped_pages - s0.skipped_pages, N);
	CHECK_EQ(count_present(shared, N), N);
	CHECK_EQ(t_count_on_device(ctx, shared, N), 0);
	CHECK_EQ(t_verify(shared, N, 3), 0);
	REQUIRE(munmap(shared, N * PS) == 0);

	/* File-backed MAP_PRIVATE, read and partly written (copied on
	 * write): skipped as file-backed, -ENOENT. */
	fd = make_file(N, 4);
	file = mmap(NULL, N * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	REQUIRE(file != MAP_FAILED);
	CHECK_EQ(t_verify(file, N, 4), 0);
	t_fill_from(file + 2 * PS, 2, 5, 2);
	memset(&rep, 0, sizeof(rep));
	memset(status, 0, sizeof(status));
	rep.status = status;
	CHECK_EQ(hetmm_migrate_to_device(pg0, file, N * PS, &rep), -ENOENT);
	CHECK_EQ(rep.moved, 0);
	CHECK_EQ(rep.skipped, N);
	for (size_t i = 0; i < N; i++)
		CHECK_STATUS(status, i, HETMM_MIGRATE_SKIP_FILE);
	CHECK_EQ(t_count_on_device(ctx, file, N), 0);
	CHECK_EQ(t_verify(file, 2, 4), 0);
	CHECK_EQ(t_verify_from(file + 2 * PS, 2, 5, 2), 0);
	CHECK_EQ(t_verify_from(file + 4 * PS, N - 4, 4, 4), 0);
	REQUIRE(munmap(file, N * PS) == 0);
	close(fd);
}

/*
 * One range, one page of each kind:
 *   0,1 anon written   -> MOVED       2,3 shared anon  -> SKIP_SHARED
 *   4,5 file private   -> SKIP_FILE   6   on this dev  -> ALREADY
 *   7   on other dev   -> SKIP_OTHER_DEVICE
 *   8   anon untouched -> MOVED       9   anon written -> MOVED
 */
static void mixed_range(void)
{
	enum { N = 10 };
	static const uint8_t want[N] = {
		HETMM_MIGRATE_MOVED, HETMM_MIGRATE_MOVED,
		HETMM_MIGRATE_SKIP_SHARED, HETMM_MIGRATE_SKIP_SHARED,
		HETMM_MIGRATE_SKIP_FILE, HETMM_MIGRATE_SKIP_FILE,
		HETMM_MIGRATE_ALREADY, HETMM_MIGRATE_SKIP_OTHER_DEVICE,
		HETMM_MIGRATE_MOVED, HETMM_MIGRATE_MOVED,
	};
	uint8_t status[N], prot[N];
	struct hetmm_migrate_report rep;
	hetmm_pfn_t pfn6, pfn7, pfn;
	char *r = t_map(N);
	int fd = make_file(2, 7);

	t_fill(r, N, 6);
	REQUIRE(mmap(r + 2 * PS, 2 * PS, PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0) ==
		r + 2 * PS);
	t_fill_from(r + 2 * PS, 2, 6, 2);
	REQUIRE(mmap(r + 4 * PS, 2 * PS, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_FIXED, fd, 0) == r + 4 * PS);
	close(fd);
	/* Page 8 never touched: drop what t_fill wrote. */
	REQUIRE(madvise(r + 8 * PS, PS, MADV_DONTNEED) == 0);

	memset(&rep, 0, sizeof(rep));
	CHECK_OK(hetmm_migrate_to_device(pg0, r + 6 * PS, PS, &rep));
	CHECK_EQ(rep.moved, 1);
	memset(&rep, 0, sizeof(rep));
	CHECK_OK(hetmm_migrate_to_device(pg1, r + 7 * PS, PS, &rep));
	CHECK_EQ(rep.moved, 1);
	CHECK_OK(hetmm_addr_to_pfn(ctx, r + 6 * PS, &pfn6));
	CHECK_OK(hetmm_addr_to_pfn(ctx, r + 7 * PS, &pfn7));

	memset(&rep, 0, sizeof(rep));
	memset(status, 0, sizeof(status));
	rep.status = status;
	CHECK_OK(hetmm_migrate_to_device(pg0, r, N * PS, &rep));
	CHECK_EQ(rep.moved, 4);
	/* Shared, file and other-device pages were skipped; whether the
	 * page already there counts as skipped is the library's choice. */
	CHECK(rep.skipped == 5 || rep.skipped == 6);
	for (size_t i = 0; i < N; i++)
		CHECK_STATUS(status, i, want[i]);

	/* Page 6 kept its frame, page 7 stayed on the other device. */
	pfn.val = 0;
	CHECK_OK(hetmm_addr_to_pfn(ctx, r + 6 * PS, &pfn));
	CHECK_EQ(pfn.val, pfn6.val);
	pfn.val = 0;
	CHECK_OK(hetmm_addr_to_pfn(ctx, r + 7 * PS, &pfn));
	CHECK_EQ(pfn.val, pfn7.val);

	memset(prot, 0xee, sizeof(prot));
	CHECK_OK(hetmm_mirror_snapshot(mir0, r, N, prot));
	for (size_t i = 0; i < N; i++) {
		if (want[i] == HETMM_MIGRATE_MOVED || i == 6)
			CHECK_EQ(prot[i], LOCAL_RW);
		else if (i == 7)
			CHECK_EQ(prot[i], REMOTE_PRIVATE);
		else /* system memory: no device value, no error */
			CHECK(prot[i] != HETMM_PROT_ERROR &&
			      (prot[i] & 0x60) == 0);
	}
	CHECK_OK(hetmm_mirror_snapshot(mir1, r + 6 * PS, 2, prot));
	CHECK_EQ(prot[0], REMOTE_PRIVATE);
	CHECK_EQ(prot[1], LOCAL_RW);

	/* Every byte, from wherever it is. */
	CHECK_EQ(t_verify(r, 4, 6), 0);
	CHECK_EQ(t_verify_from(r + 4 * PS, 2, 7, 0), 0);
	CHECK_EQ(t_verify_from(r + 6 * PS, 2, 6, 6), 0);
	CHECK_EQ(t_nonzero_pages(r + 8 * PS, 1), 0);
	CHECK_EQ(t_verify_from(r + 9 * PS, 1, 6, 9), 0);
	CHECK_EQ(t_count_on_device(ctx, r, N), 0);
	t_unmap(r, N);
}

/* Refused ranges change nothing. */
static void check_refused(char *p, size_t npages, size_t len, int want_rc)
{
	struct hetmm_migrate_report rep;
	struct hetmm_stats s0, s1;
	uint8_t status[16];

	REQUIRE(npages <= 16);
	s0 = t_stats(ctx);
	memset(&rep, 0, sizeof(rep));
	rep.status = status;
	CHECK_EQ(hetmm_migrate_to_device(pg0, p, len, &rep), want_rc);
	CHECK_EQ(rep.moved, 0);
	memset(&rep, 0, sizeof(rep));
	rep.status = status;
	CHECK_EQ(hetmm_migrate_to_system(ctx, p, len, &rep), want_rc);
	CHECK_EQ(rep.moved, 0);
	s1 = t_stats(ctx);
	CHECK_STATS_EQ(s0, s1);
	CHECK_EQ(t_count_on_device(ctx, p, npages), 0);
}

static void refused_ranges(void)
{
	enum { N = 6 };
	char *p = t_map(N + 1);

	/* Keep a hole right after the range, whatever gets mapped later. */
	t_unmap(p + N * PS, 1);
	t_fill(p, N, 8);

	/* A hole in the middle. */
	REQUIRE(munmap(p + 2 * PS, PS) == 0);
	check_refused(p, N, N * PS, -EINVAL);
	CHECK_EQ(count_present(p, 2), 2);
	CHECK_EQ(count_present(p + 3 * PS, 3), 3);
	CHECK_EQ(t_verify(p, 2, 8), 0);
	CHECK_EQ(t_verify_from(p + 3 * PS, 3, 8, 3), 0);

	/* A range running past the end of the mapping. */
	check_refused(p + 3 * PS, 3, 4 * PS, -EINVAL);
	CHECK_EQ(t_verify_from(p + 3 * PS, 3, 8, 3), 0);

	/* PROT_NONE in the middle, and all PROT_NONE. */
	REQUIRE(mprotect(p + 4 * PS, PS, PROT_NONE) == 0);
	check_refused(p + 3 * PS, 3, 3 * PS, -EINVAL);
	check_refused(p + 4 * PS, 1, PS, -EINVAL);
	REQUIRE(mprotect(p + 4 * PS, PS, PROT_READ | PROT_WRITE) == 0);
	CHECK_EQ(t_verify_from(p + 3 * PS, 3, 8, 3), 0);

	/* Fully unmapped. */
	REQUIRE(munmap(p + 3 * PS, 3 * PS) == 0);
	check_refused(p + 3 * PS, 3, 3 * PS, -EINVAL);

	REQUIRE(munmap(p, 2 * PS) == 0);
}

static void never_touched(void)
{
	enum { N = 16 };
	char *p = t_map(N);
	struct hetmm_migrate_report rep;

	t_to_device(pg0, p, N);
	CHECK_EQ(t_count_on_device(ctx, p, N), N);
	check_snapshot(mir0, p, N, LOCAL_RW, __LINE__);
	CHECK_EQ(t_nonzero_pages(p, N), 0);
	CHECK_EQ(t_count_on_device(ctx, p, N), 0);

	/* Never touched again, now migrated back explicitly. */
	REQUIRE(madvise(p, N * PS, MADV_DONTNEED) == 0);
	t_to_device(pg0, p, N);
	memset(&rep, 0, sizeof(rep));
	CHECK_OK(hetmm_migrate_to_system(ctx, p, N * PS, &rep));
	CHECK_EQ(rep.moved, N);
	CHECK_EQ(t_nonzero_pages(p, N), 0);

	/* And they are ordinary memory afterwards. */
	t_fill(p, N, 9);
	CHECK_EQ(t_verify(p, N, 9), 0);
	t_unmap(p, N);
}

/*
 * Holes go to the device as zero pages (no copy made) and come back as
 * the zero page; pages with data are moved.  A migration back skips the
 * per-frame look for zero pages while its pagemap holds none, so here
 * both kinds come back together, from a device whose free frames are
 * holes: a zero page moved like data would leave a hole behind.  Then
 * again with a mirror write turning one zero page into data on the
 * device.  Every page must come back mapped, with its bytes.
 */
static void zero_round(struct hetmm_pagemap *pg, struct hetmm_mirror *mir,
		       char *p, size_t n, size_t written)
{
	char buf[PS];
	struct hetmm_migrate_report rep;
	uint64_t faults;

	memset(buf, 0x5c, sizeof(buf));
	t_to_device(pg, p, n);
	if (written < n)
		CHECK_OK(hetmm_mirror_write(mir, p + written * PS, buf, 1,
					    &faults));
	memset(&rep, 0, sizeof(rep));
	CHECK_OK(hetmm_migrate_to_system(ctx, p, n * PS, &rep));
	CHECK_EQ(rep.moved, n);
	for (size_t i = 0; i < n; i++)
		CHECK_EQ(t_present(p + i * PS), 1);
	for (size_t i = 0; i < n; i++) {
		if (i == written)
			CHECK(memcmp(p + i * PS, buf, PS) == 0);
		else if (i % 3)
			CHECK_EQ(t_verify_from(p + i * PS, 1, 21, i), 0);
		else
			CHECK_EQ(t_nonzero_pages(p + i * PS, 1), 0);
	}
	/* The holes again, for the next round. */
	for (size_t i = 0; i < n; i += 3)
		REQUIRE(madvise(p + i * PS, PS, MADV_DONTNEED) == 0);
}

static void zero_and_data_frames(void)
{
	enum { N = 24 };
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	struct hetmm_mirror *mir;
	char *p = t_map(N);

	t_emu_add(ctx, HETMM_MEMORY_DEVICE_PRIVATE, N, &emu, &pg);
	REQUIRE_OK(hetmm_mirror_create(emu, &mir));
	for (size_t i = 0; i < N; i++)
		if (i % 3)
			t_fill_from(p + i * PS, 1, 21, i);
	zero_round(pg, mir, p, N, N);
	zero_round(pg, mir, p, N, 3);
	t_unmap(p, N);
	CHECK_OK(hetmm_mirror_destroy(mir));
	CHECK_OK(hetmm_emu_destroy(emu));
}

static void device_full(void)
{
	enum { NSMALL = 8, N = 12 };
	struct hetmm_emu *small;
	struct hetmm_pagemap *pg;
	struct hetmm_migrate_report rep;
	uint8_t status[N];
	char *p = t_map(N), *q = t_map(4);
	size_t moved = 0, nomem = 0;

	t_emu_add(ctx, HETMM_MEMORY_DEVICE_PRIVATE, NSMALL, &small, &pg);
	t_fill(p, N, 10);
	t_fill(q, 4, 11);

	memset(&rep, 0, sizeof(rep));
	memset(status, 0, sizeof(status));
	rep.status = status;
	CHECK_OK(hetmm_migrate_to_device(pg, p, N * PS, &rep));
	CHECK_EQ(rep.moved, NSMALL);
	CHECK_EQ(rep.skipped, N - NSMALL);
	for (size_t i = 0; i < N; i++) {
		hetmm_pfn_t pfn;

		if (status[i] == HETMM_MIGRATE_MOVED) {
			moved++;
			CHECK_OK(hetmm_addr_to_pfn(ctx, p + i * PS, &pfn));
			CHECK(!t_present(p + i * PS));
		} else if (status[i] == HETMM_MIGRATE_SKIP_NOMEM) {
			nomem++;
			CHECK_EQ(hetmm_addr_to_pfn(ctx, p + i * PS, &pfn),
				 -ENOENT);
			CHECK(t_present(p + i * PS));
		} else {
			CHECK_STATUS(status, i, HETMM_MIGRATE_SKIP_NOMEM);
		}
	}
	CHECK_EQ(moved, NSMALL);
	CHECK_EQ(nomem, N - NSMALL);
	CHECK_EQ(t_nr_free(pg), 0);

	/* No free page at all: -ENOMEM, nothing moves. */
	memset(&rep, 0, sizeof(rep));
	memset(status, 0, sizeof(status));
	rep.status = status;
	CHECK_EQ(hetmm_migrate_to_device(pg, q, 4 * PS, &rep), -ENOMEM);
	CHECK_EQ(rep.moved, 0);
	for (size_t i = 0; i < 4; i++)
		CHECK_STATUS(status, i, HETMM_MIGRATE_SKIP_NOMEM);
	CHECK_EQ(count_present(q, 4), 4);
	CHECK_EQ(t_verify(q, 4, 11), 0);

	/* Room again after migrating back. */
	memset(&rep, 0, sizeof(rep));
	CHECK_OK(hetmm_migrate_to_system(ctx, p, N * PS, &rep));
	CHECK_EQ(rep.moved, NSMALL);
	CHECK_EQ(t_nr_free(pg), NSMALL);
	CHECK_EQ(t_verify(p, N, 10), 0);
	t_to_device(pg, q, 4);
	CHECK_EQ(t_nr_free(pg), NSMALL - 4);
	CHECK_EQ(t_verify(q, 4, 11), 0);

	CHECK_OK(hetmm_emu_destroy(small));
	t_unmap(p, N);
	t_unmap(q, 4);
}

/* Hot-remove with pages resident: every byte comes home. */
static void hot_remove(void)
{
	enum { N = 48 };
	struct hetmm_emu *e;
	struct hetmm_pagemap *pg;
	struct hetmm_stats s0, s1;
	char *p = t_map_alone(N);   /* faults counted */

	t_fill(p, N, 12);
	s0 = t_stats(ctx);
	t_emu_add(ctx, HETMM_MEMORY_DEVICE_PRIVATE, 64, &e, &pg);
	t_to_device(pg, p, N);
	/* Some come back by fault before the removal. */
	CHECK_EQ(t_verify_from(p + 5 * PS, 1, 12, 5), 0);
	CHECK_OK(hetmm_emu_destroy(e));

	s1 = t_stats(ctx);
	CHECK_EQ(s1.device_resident, s0.device_resident);
	CHECK_EQ(s1.to_system_pages - s0.to_system_pages, N);
	CHECK_EQ(count_present(p, N), N);
	CHECK_EQ(t_count_on_device(ctx, p, N), 0);
	CHECK_EQ(t_verify(p, N, 12), 0);
	/* No fault was needed to read them. */
	CHECK_EQ(t_stats(ctx).faults, s1.faults);
	t_unmap_alone(p, N);
}

/*
 * The kernel itself touching device-resident memory: write(2) from it and
 * read(2) into it.  With a userfaultfd that sees kernel-mode faults (any
 * route but USER_MODE_ONLY) the pages come back and the syscalls see and
 * leave the right bytes; USER_MODE_ONLY documents EFAULT instead.
 */
static void kernel_access(void)
{
	enum { N = 16 };
	char *src = t_map(N), *dst = t_map(N);
	struct hetmm_migrate_report rep;
	enum hetmm_uffd_route route;
	uint64_t features;
	int fds[2];
	ssize_t got = 0;

	REQUIRE_OK(hetmm_ctx_uffd_info(ctx, &route, &features));
	REQUIRE(pipe(fds) == 0);
	REQUIRE(fcntl(fds[1], F_SETPIPE_SZ, (int)(N * PS)) >= (int)(N * PS));
	t_fill(src, N, 13);
	t_fill(dst, N, 14);
	memset(&rep, 0, sizeof(rep));
	CHECK_OK(hetmm_migrate_to_device(pg0, src, N * PS, &rep));
	memset(&rep, 0, sizeof(rep));
	CHECK_OK(hetmm_migrate_to_device(pg0, dst, N * PS, &rep));
	CHECK_EQ(t_count_on_device(ctx, src, N) + t_count_on_device(ctx, dst, N), 2 * N);

	if (route == HETMM_UFFD_USER_MODE_ONLY) {
		CHECK_EQ(write(fds[1], src, N * PS), -1);
		CHECK_EQ(errno, EFAULT);
	} else {
		for (size_t done = 0; done < N * PS; done += (size_t)got) {
			got = write(fds[1], src + done, N * PS - done);
			CHECK(got > 0);
			if (got <= 0)
				break;
		}
		for (size_t done = 0; done < N * PS; done += (size_t)got) {
			got = read(fds[0], dst + done, N * PS - done);
			CHECK(got > 0);
			if (got <= 0)
				break;
		}
		/* dst now holds src's pattern: what read(2) wrote was not
		 * overwritten by a late migration back. */
		CHECK_EQ(t_count_on_device(ctx, dst, N), 0);
		CHECK_EQ(t_verify(dst, N, 13), 0);
		CHECK_EQ(t_verify(src, N, 13), 0);
	}
	close(fds[0]);
	close(fds[1]);
	t_unmap(src, N);
	t_unmap(dst, N);
}

static void stats_balance(void)
{
	struct hetmm_stats s = t_stats(ctx);

	CHECK_EQ(s.device_resident, 0);
	CHECK_EQ(s.to_device_pages, s.to_system_pages);
	CHECK(s.fault_pages <= s.to_system_pages);
	CHECK(s.faults <= s.fault_pages + s.fault_zero);
}

/*
 * Fault-around follows a scan either way: reading a device-resident
 * buffer from the top page down (as memcpy does for some alignments)
 * costs a handful of faults, not one per page, and every byte is right.
 */
static void scan_both_ways(void)
{
	enum { N = 256 };
	char *buf = t_map(N);
	struct hetmm_stats s0, s1;
	size_t bad = 0;

	t_fill(buf, N, 77);
	for (int down = 0; down < 2; down++) {
		t_to_device(pg0, buf, N);
		s0 = t_stats(ctx);
		for (size_t k = 0; k < N; k++) {
			size_t p = down ? N - 1 - k : k;
			uint64_t s = t_page_seed(77, p);

			bad += ((uint64_t *)(buf + p * PS))[5] != t_word(s, 5);
		}
		s1 = t_stats(ctx);
		CHECK_EQ(s1.fault_pages - s0.fault_pages, N);
		/* 1, 8, 64, 512 pages: four faults cover 256 pages. */
		CHECK(s1.faults - s0.faults <= 8);
		CHECK_EQ(t_count_on_device(ctx, buf, N), 0);
	}
	CHECK_EQ(bad, 0);
	CHECK_EQ(t_verify(buf, N, 77), 0);
	t_unmap(buf, N);
}

/*
 * The copy path (write-protect, copy, zap) with the process unmapping a
 * page of the range meanwhile: the zap's madvise then zaps the rest and
 * fails on the hole.  The pages it did zap exist only on the device and
 * must stay there; the unmapped one is dropped.  A copying driver of the
 * test's own does the unmapping from inside its copy.
 *
 * Migrations go a 2 MiB chunk at a time.  With the range inside one
 * chunk, the hole is unmapped while its chunk holds it.  With the hole
 * starting the next chunk, it is unmapped before that chunk is
 * registered, so no UNMAP event tells the migration: it must still not
 * send an address with no mapping to the device.
 */
static char *zap_hole;

/* td_copy_to, and the process unmaps zap_hole meanwhile. */
static int unmapping_copy_to(struct hetmm_pagemap *pg, uint64_t index,
			     const void *src, size_t nr)
{
	int rc = td_copy_to(pg, index, src, nr);

	if (zap_hole) {
		REQUIRE(munmap(zap_hole, PS) == 0);
		zap_hole = NULL;
	}
	return rc;
}

static void unmapped_during_copy(size_t first_of_chunk)
{
	enum { N = 4, HOLE = 1 };
	static const struct hetmm_pagemap_ops ops = {
		.copy_to_device = unmapping_copy_to,
		.copy_from_device = td_copy_from,
	};
	struct td d;
	struct hetmm_pagemap *pg;
	struct hetmm_migrate_report rep;
	uint8_t status[N];
	char *p = t_map_chunk_at(N, first_of_chunk);

	REQUIRE_OK(td_add_ops(ctx, &d, 2 * N, TD_COPY,
			      HETMM_MEMORY_DEVICE_PRIVATE, 0, &ops));
	pg = d.pg;
	t_fill(p, N, 0x2a9);
	zap_hole = p + HOLE * PS;
	memset(&rep, 0, sizeof(rep));
	memset(status, 0, sizeof(status));
	rep.status = status;
	CHECK_OK(hetmm_migrate_to_device(pg, p, N * PS, &rep));
	CHECK(zap_hole == NULL);
	CHECK_EQ(rep.moved, N - 1);
	for (size_t i = 0; i < N; i++)
		CHECK_STATUS(status, i, i == HOLE ? HETMM_MIGRATE_SKIP_BUSY
						  : HETMM_MIGRATE_MOVED);
	CHECK_EQ(t_count_on_device(ctx, p, HOLE), HOLE);
	CHECK_EQ(t_count_on_device(ctx, p + (HOLE + 1) * PS, N - HOLE - 1),
		 N - HOLE - 1);
	/* Read back by faults: every page that was not unmapped, intact. */
	CHECK_EQ(t_verify(p, HOLE, 0x2a9), 0);
	CHECK_EQ(t_verify_from(p + (HOLE + 1) * PS, N - HOLE - 1, 0x2a9,
			       HOLE + 1), 0);
	t_unmap(p, HOLE);
	t_unmap(p + (HOLE + 1) * PS, N - HOLE - 1);
	CHECK_OK(hetmm_pagemap_remove(pg));
	td_free(&d);
}


/* ------------------------------------------------------------------------
 * A thread resumes from a fault with everything final, as after the
 * kernel's migrate_to_ram: its page is a system page to every call, the
 * frame is free and can be had at once, the counters have moved.  The
 * fault handler shares the thread's CPU here, so the thread runs as soon
 * as the handler's call that wakes it returns, before the handler's next
 * instruction: whatever the handler left for after the wake shows.
 */

#define MAX_TIDS 64

static int list_tids(int *tids)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	REQUIRE(d != NULL);
	while ((e = readdir(d)) != NULL && n < MAX_TIDS)
		if (atoi(e->d_name) > 0)
			tids[n++] = atoi(e->d_name);
	closedir(d);
	return n;
}

/* Pin the calling thread, and every thread not in old[], to cpu. */
static void pin_new_threads(const int *old, int nold, int cpu)
{
	int tids[MAX_TIDS];
	int n = list_tids(tids);
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	REQUIRE(sched_setaffinity(0, sizeof(set), &set) == 0);
	for (int i = 0; i < n; i++) {
		bool known = false;

		for (int j = 0; j < nold; j++)
			known |= tids[i] == old[j];
		if (!known)
			REQUIRE(sched_setaffinity(tids[i], sizeof(set),
						  &set) == 0);
	}
}

static void fault_leaves_nothing_behind(void)
{
	/* One page of each aligned group of 4, in a scrambled order: no
	 * fault-around finds a neighbour asked for, so each fault brings
	 * back exactly its page. */
	enum { N = 64, STEP = 4, TOUCHED = N / STEP };
	int old[MAX_TIDS], nold = list_tids(old);
	cpu_set_t all;
	struct hetmm_ctx *c;
	struct hetmm_emu *e;
	struct hetmm_pagemap *pg;
	struct hetmm_migrate_report rep;
	uint8_t status;
	char *p = t_map(N), *q = t_map(1);

	REQUIRE(sched_getaffinity(0, sizeof(all), &all) == 0);
	REQUIRE_OK(hetmm_ctx_create(&c, NULL));
	pin_new_threads(old, nold, sched_getcpu());
	/* Exactly as many frames as pages: full once they are all there. */
	t_emu_add(c, HETMM_MEMORY_DEVICE_PRIVATE, N, &e, &pg);
	t_fill(p, N, 41);
	t_fill(q, 1, 42);
	t_to_device(pg, p, N);
	CHECK_EQ(t_nr_free(pg), 0);

	struct hetmm_stats s0 = t_stats(c);
	for (size_t k = 0; k < TOUCHED; k++) {
		size_t i = ((k * 7) % TOUCHED) * STEP + k % STEP;
		char *page = p + i * PS;
		hetmm_pfn_t pfn, none;
		struct hetmm_page *frame = NULL;
		struct hetmm_page_info pi;

		CHECK_OK(hetmm_addr_to_pfn(c, page, &pfn));
		/* The touch: a fault brings the page back.  Nothing after
		 * it makes a system call: the handler, which gets the CPU
		 * back only when this thread blocks or yields, can't run
		 * between the touch and the checks. */
		CHECK_EQ(t_verify_from(page, 1, 41, i), 0);
		if (k == 0) {
			/* The full device has the frame for another page
			 * at once. */
			memset(&rep, 0, sizeof(rep));
			CHECK_OK(hetmm_migrate_to_device(pg, q, PS, &rep));
			CHECK_EQ(rep.moved, 1);
		}
		CHECK_EQ(hetmm_addr_to_pfn(c, page, &none), -ENOENT);
		CHECK_OK(hetmm_pfn_to_page(pfn, &frame));
		REQUIRE(frame != NULL);
		CHECK_OK(hetmm_page_get_info(frame, &pi));
		/* Free, or q's: the only free frame, at k == 0. */
		CHECK_EQ(pi.owner, k ? 0 : (uintptr_t)q);
		CHECK_EQ(pi.refcount, k ? 0 : 1);
		CHECK_EQ(!(pi.flags & HETMM_PAGE_ALLOCATED), k != 0);
		struct hetmm_stats s = t_stats(c);
		CHECK_EQ(s.fault_pages - s0.fault_pages, k + 1);
		CHECK_EQ(s.to_system_pages - s0.to_system_pages, k + 1);
		/* Every page so far left, and q took a frame. */
		CHECK_EQ(s0.device_resident - s.device_resident, k);
		CHECK_EQ(t_nr_free(pg), k);
		/* Migrate back: a system page already, not a busy one.  The
		 * handler may still be between the fill that woke us and
		 * its last store (a page being filled is busy for a moment,
		 * and a migration waits for it a few yields only): under
		 * software emulation on a loaded machine its CPU can stall
		 * there, so let it finish first. */
		CHECK_OK(hetmm_ctx_sync(c));
		memset(&rep, 0, sizeof(rep));
		rep.status = &status;
		CHECK_EQ(hetmm_migrate_to_system(c, page, PS, &rep), -ENOENT);
		CHECK_STATUS(&status, 0, HETMM_MIGRATE_SKIP_SYSTEM);
	}
	CHECK_EQ(t_verify(q, 1, 42), 0);
	for (size_t i = 0; i < N; i++)
		CHECK_EQ(t_verify_from(p + i * PS, 1, 41, i), 0);
	CHECK_OK(hetmm_emu_destroy(e));
	CHECK_OK(hetmm_ctx_destroy(c));
	REQUIRE(sched_setaffinity(0, sizeof(all), &all) == 0);
	t_unmap(p, N);
	t_unmap(q, 1);
}

int main(void)
{
	t_emu_up(&ctx, NULL, NDEV, &emu0, &pg0);
	t_emu_add(ctx, HETMM_MEMORY_DEVICE_PRIVATE, NDEV, &emu1, &pg1);
	REQUIRE_OK(hetmm_mirror_create(emu0, &mir0));
	REQUIRE_OK(hetmm_mirror_create(emu1, &mir1));

	basic_round_trip();
	explicit_to_system();
	not_movable();
	mixed_range();
	refused_ranges();
	never_touched();
	zero_and_data_frames();
	device_full();
	hot_remove();
	kernel_access();
	stats_balance();
	scan_both_ways();
	unmapped_during_copy(0);
	unmapped_during_copy(1);   /* the hole starts the next chunk */
	fault_leaves_nothing_behind();

	CHECK_OK(hetmm_mirror_destroy(mir0));
	CHECK_OK(hetmm_mirror_destroy(mir1));
	CHECK_OK(hetmm_emu_destroy(emu0));
	CHECK_OK(hetmm_emu_destroy(emu1));
	CHECK_OK(hetmm_ctx_destroy(ctx));
	return t_done();
}
