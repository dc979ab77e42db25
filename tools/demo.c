/* SPDX-License-Identifier: MIT */
/*
 * demo.c - `hetmm demo`: the whole life of device memory on the emulated
 * device, in about a second.
 *
 * 64 MiB of ordinary heap memory (posix_memalign) is filled with a pattern,
 * migrated to an emulated DEVICE_PRIVATE device, read by the device through
 * its mirror, faulted back by the CPU page by page and verified byte for
 * byte; then half of it visits a second device and is brought back
 * explicitly, and finally both devices are hot-removed with pages still on
 * them.  Returns nonzero if any byte is wrong or any call fails.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hetmm.h"

int hetmm_demo_main(int argc, char **argv);

#define PAGE ((size_t)HETMM_PAGE_SIZE)
#define MIB ((size_t)1 << 20)
#define DEMO_SIZE (64 * MIB)
#define DEMO_PAGES (DEMO_SIZE / PAGE)

static uint64_t t_start;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double ms_since(uint64_t t0)
{
	return (double)(now_ns() - t0) / 1e6;
}

static void stamp(void)
{
	printf("[%7.3f s] ", (double)(now_ns() - t_start) / 1e9);
}

static double gbps(size_t bytes, double ms)
{
	return ms > 0 ? (double)bytes / (ms * 1e6) : 0;
}

#define FAIL(call, rc)                                                      \
	do {                                                                \
		fprintf(stderr, "hetmm demo: %s failed: %s (%d)\n", call,   \
			strerror(-(rc)), (rc));                             \
		status = 1;                                                 \
		goto out;                                                   \
	} while (0)

/* The pattern: 64-bit word k of the buffer. */
static inline uint64_t pattern(uint64_t k)
{
	return (k * 0x9e3779b97f4a7c15ull) ^ 0x0123456789abcdefull;
}

static void fill(uint64_t *w, size_t first, size_t nwords)
{
	for (size_t k = first; k < first + nwords; k++)
		w[k] = pattern(k);
}

/*
 * Read every byte of words [first, first + nwords) in address order and
 * count the bytes that differ from the pattern.
 */
static uint64_t verify(const uint64_t *w, size_t first, size_t nwords)
{
	uint64_t bad = 0, reported = 0;

	for (size_t k = first; k < first + nwords; k++) {
		uint64_t got = ((const volatile uint64_t *)w)[k];
		uint64_t want = pattern(k);

		if (got == want)
			continue;
		for (int b = 0; b < 8; b++)
			if (((got ^ want) >> (8 * b)) & 0xff)
				bad++;
		if (reported++ < 5)
			fprintf(stderr,
				"hetmm demo: MISMATCH at byte offset %zu "
				"(page %zu): got 0x%016" PRIx64
				" want 0x%016" PRIx64 "\n",
				k * 8, k * 8 / PAGE, got, want);
	}
	return bad;
}

static const char *prot_kind(uint8_t p)
{
	if (p == HETMM_PROT_ERROR)
		return "ERROR (no CPU access)";
	switch (p & 0xf0) {
	case 0x00:
		return (p & (HETMM_PROT_READ | HETMM_PROT_WRITE))
			       ? "system memory" : "NONE (not populated)";
	case HETMM_PROT_ZERO:
		return "zero page";
	case HETMM_PROT_DEV_PRIVATE_LOCAL:
		return "DEV_PRIVATE_LOCAL";
	case HETMM_PROT_DEV_PRIVATE_REMOTE:
		return "DEV_PRIVATE_REMOTE";
	case HETMM_PROT_DEV_COHERENT_LOCAL:
		return "DEV_COHERENT_LOCAL";
	case HETMM_PROT_DEV_COHERENT_REMOTE:
		return "DEV_COHERENT_REMOTE";
	}
	return "?";
}

static void print_prot(const char *who, size_t page, uint8_t p)
{
	printf("      %-5s page %5zu: 0x%02x %-22s%s%s%s%s\n", who, page, p,
	       prot_kind(p),
	       p != HETMM_PROT_ERROR && (p & HETMM_PROT_READ) ? " R" : "",
	       p != HETMM_PROT_ERROR && (p & HETMM_PROT_WRITE) ? " W" : "",
	       p != HETMM_PROT_ERROR && (p & HETMM_PROT_PMD) ? " PMD" : "",
	       p != HETMM_PROT_ERROR && (p & HETMM_PROT_PUD) ? " PUD" : "");
}

#define NSAMPLES 6


static int snapshot_samples(struct hetmm_mirror *m, const char *who,
			    const char *base)
{
	/* Pages spread over the buffer, whatever the page size. */
	const size_t sample_pages[NSAMPLES] = {
		0, 1, 2, DEMO_PAGES / 4 - 1, DEMO_PAGES / 2, DEMO_PAGES - 1
	};
	for (size_t i = 0; i < NSAMPLES; i++) {
		uint8_t p = 0;
		int rc = hetmm_mirror_snapshot(m, base + sample_pages[i] * PAGE,
					       1, &p);

		if (rc) {
			fprintf(stderr, "hetmm demo: hetmm_mirror_snapshot: %s\n",
				strerror(-rc));
			return rc;
		}
		print_prot(who, sample_pages[i], p);
	}
	return 0;
}

static void print_stats(struct hetmm_ctx *ctx, const char *when)
{
	struct hetmm_stats s;
	int rc = hetmm_ctx_get_stats(ctx, &s);

	if (rc) {
		fprintf(stderr, "hetmm demo: hetmm_ctx_get_stats: %s\n",
			strerror(-rc));
		return;
	}
	stamp();
	printf("stats %s:\n", when);
	printf("      faults %" PRIu64 ", fault_pages %" PRIu64
	       ", fault_zero %" PRIu64 "\n", s.faults, s.fault_pages,
	       s.fault_zero);
	printf("      to_device_pages %" PRIu64 ", to_system_pages %" PRIu64
	       ", skipped_pages %" PRIu64 "\n", s.to_device_pages,
	       s.to_system_pages, s.skipped_pages);
	printf("      mirror_faults %" PRIu64 ", device_resident %" PRIu64
	       "\n", s.mirror_faults, s.device_resident);
}

static int print_page_meta(struct hetmm_ctx *ctx, const char *addr,
			   size_t page)
{
	hetmm_pfn_t pfn;
	struct hetmm_page *pg;
	struct hetmm_page_info pi;
	int rc = hetmm_addr_to_pfn(ctx, addr + page * PAGE, &pfn);

	if (rc) {
		printf("      page %5zu: hetmm_addr_to_pfn: %s\n", page,
		       strerror(-rc));
		return rc;
	}
	rc = hetmm_pfn_to_page(pfn, &pg);
	if (!rc)
		rc = hetmm_page_get_info(pg, &pi);
	if (rc) {
		printf("      page %5zu: pfn 0x%" PRIx64 ": %s\n", page,
		       hetmm_pfn_number(pfn), strerror(-rc));
		return rc;
	}
	printf("      page %5zu: pfn 0x%" PRIx64 "%s index %" PRIu64
	       " refcount %u pincount %u owner %s flags%s%s\n", page,
	       hetmm_pfn_number(pfn),
	       (hetmm_pfn_flags(pfn) & HETMM_PFN_DEV) ? " (DEV)" : "",
	       pi.index, pi.refcount, pi.pincount,
	       pi.owner == (uintptr_t)(addr + page * PAGE) ? "= this address"
							    : "(other!)",
	       (pi.flags & HETMM_PAGE_ALLOCATED) ? " ALLOCATED" : "",
	       (pi.flags & HETMM_PAGE_ZERO) ? " ZERO" : "");
	return 0;
}

static int print_pagemap(const char *name, struct hetmm_emu *emu)
{
	struct hetmm_pagemap *pg;
	struct hetmm_pagemap_info info;
	int rc = hetmm_emu_pagemap(emu, &pg);

	if (!rc)
		rc = hetmm_pagemap_get_info(pg, &info);
	if (rc)
		return rc;
	printf("      %s: type %d (DEVICE_PRIVATE), %" PRIu64 " pages (%" PRIu64
	       " MiB), %" PRIu64 " free, first pfn 0x%" PRIx64 "\n", name,
	       (int)info.type, info.nr_pages, info.nr_pages * PAGE / MIB,
	       info.nr_free, hetmm_pfn_number(info.first_pfn));
	return 0;
}

int hetmm_demo_main(int argc, char **argv)
{
	struct hetmm_ctx *ctx = NULL;
	struct hetmm_emu *dev[2] = { NULL, NULL };
	struct hetmm_pagemap *pgmap[2];
	struct hetmm_mirror *mir[2] = { NULL, NULL };
	struct hetmm_migrate_report rep;
	struct hetmm_stats s0, s1;
	enum hetmm_uffd_route route;
	uint64_t features, bad, t0, faults;
	uint8_t *status_arr = NULL;
	unsigned char *devbuf = NULL;
	char *buf = NULL;
	uint64_t *words;
	const size_t nwords = DEMO_SIZE / 8, half = DEMO_SIZE / 2;
	int rc, status = 0;
	double ms;

	if (argc > 1) {
		int help = !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h");

		fprintf(help ? stdout : stderr,
			"usage: hetmm demo\n"
			"  migrate 64 MiB of heap memory to two emulated "
			"device-private devices\n"
			"  and back (explicitly, by CPU faults, between the "
			"devices), read it\n"
			"  through a device mirror, and check every byte; "
			"exits 1 on a wrong one\n");
		return help ? 0 : 2;
	}
	t_start = now_ns();
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("hetmm demo: 64 MiB of heap memory on two emulated "
	       "DEVICE_PRIVATE devices\n");

	/* 1. context and two devices */
	t0 = now_ns();
	rc = hetmm_ctx_create(&ctx, NULL);
	if (rc)
		FAIL("hetmm_ctx_create", rc);
	rc = hetmm_ctx_uffd_info(ctx, &route, &features);
	if (rc)
		FAIL("hetmm_ctx_uffd_info", rc);
	stamp();
	printf("context up in %.2f ms: uffd route %s, features 0x%" PRIx64 "\n",
	       ms_since(t0),
	       route == HETMM_UFFD_SYSCALL ? "userfaultfd(2)" :
	       route == HETMM_UFFD_DEVNODE ? "/dev/userfaultfd" :
	       route == HETMM_UFFD_USER_MODE_ONLY ? "user-mode-only" : "?",
	       features);

	t0 = now_ns();
	for (int d = 0; d < 2; d++) {
		rc = hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_PRIVATE,
				      DEMO_PAGES, &dev[d]);
		if (rc) {
			dev[d] = NULL;
			FAIL("hetmm_emu_create", rc);
		}
		rc = hetmm_emu_pagemap(dev[d], &pgmap[d]);
		if (rc)
			FAIL("hetmm_emu_pagemap", rc);
		rc = hetmm_mirror_create(dev[d], &mir[d]);
		if (rc) {
			mir[d] = NULL;
			FAIL("hetmm_mirror_create", rc);
		}
	}
	stamp();
	printf("hot-added two emulated devices with mirrors in %.2f ms "
	       "(%d bytes of metadata per device page):\n", ms_since(t0),
	       hetmm_page_metadata_size());
	if ((rc = print_pagemap("dev0", dev[0])) ||
	    (rc = print_pagemap("dev1", dev[1])))
		FAIL("hetmm_pagemap_get_info", rc);

	/* 2. ordinary memory with a pattern */
	t0 = now_ns();
	rc = posix_memalign((void **)&buf, PAGE, DEMO_SIZE);
	if (rc) {
		buf = NULL;
		FAIL("posix_memalign", -rc);
	}
	words = (uint64_t *)buf;
	fill(words, 0, nwords);
	ms = ms_since(t0);
	stamp();
	printf("filled 64 MiB of posix_memalign'd memory at %p in %.1f ms\n",
	       (void *)buf, ms);

	/* 3. migrate it all to dev0 */
	status_arr = calloc(DEMO_PAGES, 1);
	if (!status_arr)
		FAIL("calloc", -ENOMEM);
	memset(&rep, 0, sizeof(rep));
	rep.status = status_arr;
	t0 = now_ns();
	rc = hetmm_migrate_to_device(pgmap[0], buf, DEMO_SIZE, &rep);
	ms = ms_since(t0);
	if (rc)
		FAIL("hetmm_migrate_to_device", rc);
	stamp();
	printf("migrate 64 MiB -> dev0: moved %" PRIu64 " pages, skipped %"
	       PRIu64 " in %.1f ms (%.2f GB/s)\n", rep.moved, rep.skipped, ms,
	       gbps(DEMO_SIZE, ms));
	{
		uint64_t n_moved = 0;

		for (size_t i = 0; i < DEMO_PAGES; i++)
			n_moved += status_arr[i] == HETMM_MIGRATE_MOVED;
		printf("      status array: %" PRIu64 " pages MOVED\n", n_moved);
	}
	if (rep.moved != DEMO_PAGES)
		printf("      (not every page moved: the rest stay in system "
		       "memory)\n");
	printf("      per-page metadata of a few device pages:\n");
	print_page_meta(ctx, buf, 0);
	print_page_meta(ctx, buf, DEMO_PAGES - 1);

	/* 4. what the devices' mirrors see */
	stamp();
	printf("mirror snapshots (no faulting):\n");
	if (snapshot_samples(mir[0], "dev0", buf) ||
	    snapshot_samples(mir[1], "dev1", buf))
		FAIL("hetmm_mirror_snapshot", -EIO);

	/* 5. the device reads through its mirror */
	devbuf = malloc(4 * MIB);
	if (!devbuf)
		FAIL("malloc", -ENOMEM);
	faults = 0;
	hetmm_ctx_get_stats(ctx, &s0);
	t0 = now_ns();
	rc = hetmm_mirror_read(mir[0], buf, devbuf, 4 * MIB / PAGE, &faults);
	ms = ms_since(t0);
	if (rc)
		FAIL("hetmm_mirror_read", rc);
	hetmm_ctx_get_stats(ctx, &s1);
	bad = 0;
	for (size_t k = 0; k < 4 * MIB / 8; k++)
		if (((uint64_t *)devbuf)[k] != pattern(k))
			bad++;
	stamp();
	printf("dev0 read 4 MiB through its mirror in %.2f ms: %" PRIu64
	       " range fault(s), %" PRIu64 " CPU faults, %" PRIu64
	       " pages migrated back, data %s\n", ms, faults,
	       s1.faults - s0.faults, s1.to_system_pages - s0.to_system_pages,
	       bad ? "WRONG" : "ok");
	if (bad) {
		fprintf(stderr, "hetmm demo: %" PRIu64 " words wrong in the "
			"device's mirror read\n", bad);
		status = 1;
	}

	/* 6. the CPU touches every byte in order: every page faults back */
	hetmm_ctx_get_stats(ctx, &s0);
	t0 = now_ns();
	bad = verify(words, 0, nwords);
	ms = ms_since(t0);
	hetmm_ctx_get_stats(ctx, &s1);
	stamp();
	printf("CPU read all 64 MiB sequentially (fault-back) and checked "
	       "every byte in %.1f ms (%.2f GB/s): %" PRIu64 " faults for %"
	       PRIu64 " pages, %" PRIu64 " bytes wrong\n", ms,
	       gbps(DEMO_SIZE, ms), s1.faults - s0.faults,
	       s1.fault_pages - s0.fault_pages, bad);
	if (bad)
		status = 1;
	print_stats(ctx, "after fault-back");

	/* 7. a device write the CPU sees */
	memset(&rep, 0, sizeof(rep));
	rc = hetmm_migrate_to_device(pgmap[0], buf, PAGE, &rep);
	if (rc)
		FAIL("hetmm_migrate_to_device (one page)", rc);
	memset(devbuf, 0xee, PAGE);
	faults = 0;
	rc = hetmm_mirror_write(mir[0], buf, devbuf, 1, &faults);
	if (rc)
		FAIL("hetmm_mirror_write", rc);
	{
		size_t badb = 0;

		for (size_t i = 0; i < PAGE; i++)
			badb += ((volatile unsigned char *)buf)[i] != 0xee;
		stamp();
		printf("dev0 wrote page 0 in place through its mirror; the CPU "
		       "faulted it back and sees the write: %s\n",
		       badb ? "NO" : "yes");
		if (badb) {
			fprintf(stderr, "hetmm demo: %zu bytes of the device "
				"write lost\n", badb);
			status = 1;
		}
	}
	fill(words, 0, PAGE / 8); /* restore the pattern */

	/* 8. half to dev1, then explicitly back */
	memset(&rep, 0, sizeof(rep));
	t0 = now_ns();
	rc = hetmm_migrate_to_device(pgmap[1], buf + half, half, &rep);
	ms = ms_since(t0);
	if (rc)
		FAIL("hetmm_migrate_to_device (dev1)", rc);
	stamp();
	printf("migrate upper 32 MiB -> dev1: moved %" PRIu64 ", skipped %"
	       PRIu64 " in %.1f ms (%.2f GB/s)\n", rep.moved, rep.skipped, ms,
	       gbps(half, ms));
	{
		uint8_t p[2];

		if (!hetmm_mirror_snapshot(mir[0], buf + half, 1, &p[0]) &&
		    !hetmm_mirror_snapshot(mir[1], buf + half, 1, &p[1])) {
			print_prot("dev0", DEMO_PAGES / 2, p[0]);
			print_prot("dev1", DEMO_PAGES / 2, p[1]);
		}
	}
	memset(&rep, 0, sizeof(rep));
	t0 = now_ns();
	rc = hetmm_migrate_to_system(ctx, buf + half, half, &rep);
	ms = ms_since(t0);
	if (rc)
		FAIL("hetmm_migrate_to_system", rc);
	stamp();
	printf("hetmm_migrate_to_system upper 32 MiB: moved %" PRIu64
	       ", skipped %" PRIu64 " in %.1f ms (%.2f GB/s)\n", rep.moved,
	       rep.skipped, ms, gbps(half, ms));
	hetmm_ctx_get_stats(ctx, &s0);
	bad = verify(words, half / 8, half / 8);
	hetmm_ctx_get_stats(ctx, &s1);
	printf("      verified: %" PRIu64 " bytes wrong, %" PRIu64
	       " faults (none expected)\n", bad, s1.faults - s0.faults);
	if (bad)
		status = 1;

	/* 9. hot-remove both devices with pages still on them */
	memset(&rep, 0, sizeof(rep));
	rc = hetmm_migrate_to_device(pgmap[0], buf, 16 * MIB, &rep);
	if (rc)
		FAIL("hetmm_migrate_to_device (before hot-remove)", rc);
	memset(&rep, 0, sizeof(rep));
	rc = hetmm_migrate_to_device(pgmap[1], buf + 16 * MIB, 16 * MIB, &rep);
	if (rc)
		FAIL("hetmm_migrate_to_device (before hot-remove)", rc);
	hetmm_ctx_get_stats(ctx, &s0);
	stamp();
	printf("16 MiB on each device (device_resident %" PRIu64
	       " pages); hot-removing both\n", s0.device_resident);
	t0 = now_ns();
	for (int d = 0; d < 2; d++) {
		rc = hetmm_mirror_destroy(mir[d]);
		mir[d] = NULL;
		if (rc)
			FAIL("hetmm_mirror_destroy", rc);
		rc = hetmm_emu_destroy(dev[d]);
		if (rc)
			FAIL("hetmm_emu_destroy", rc);
		dev[d] = NULL;
	}
	ms = ms_since(t0);
	hetmm_ctx_get_stats(ctx, &s1);
	stamp();
	printf("hot-removed both devices in %.1f ms: %" PRIu64
	       " pages migrated back, device_resident now %" PRIu64 "\n", ms,
	       s1.to_system_pages - s0.to_system_pages, s1.device_resident);
	bad = verify(words, 0, nwords);
	hetmm_ctx_get_stats(ctx, &s0);
	printf("      verified all 64 MiB: %" PRIu64 " bytes wrong, %" PRIu64
	       " faults (none expected)\n", bad, s0.faults - s1.faults);
	if (bad)
		status = 1;
	print_stats(ctx, "final");

out:
	for (int d = 0; d < 2; d++) {
		if (mir[d])
			hetmm_mirror_destroy(mir[d]);
		if (dev[d]) {
			rc = hetmm_emu_destroy(dev[d]);
			if (rc) {
				fprintf(stderr, "hetmm demo: hetmm_emu_destroy:"
					" %s\n", strerror(-rc));
				status = 1;
			}
		}
	}
	if (ctx) {
		t0 = now_ns();
		rc = hetmm_ctx_destroy(ctx);
		if (rc) {
			fprintf(stderr, "hetmm demo: hetmm_ctx_destroy: %s\n",
				strerror(-rc));
			status = 1;
		} else {
			stamp();
			printf("context destroyed in %.2f ms\n", ms_since(t0));
		}
	}
	free(buf);
	free(devbuf);
	free(status_arr);
	stamp();
	printf("demo %s\n", status ? "FAILED" : "passed: every byte intact");
	return status;
}
