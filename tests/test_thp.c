/* SPDX-License-Identifier: MIT */
/*
 * test_thp: device huge pages.  A PMD-aligned transparent huge page
 * migrates to a device as one huge device page (a PMD-aligned run of
 * frames), reported with the PMD order by the range fault and the
 * mirror's snapshot, and comes back as a THP: on a CPU fault and on an
 * explicit migration back, by UFFDIO_MOVE out of the device's frames or
 * through a THP-backed copy (HETMM_EMU_COPY_ONLY); a coherent device's
 * likewise, mapped in place while there.  A device with no
 * aligned run of free frames takes it as base pages, as it does a THP
 * of which one page can't move (pinned); a block part of which left is
 * base pages from then on.  A THP that takes the copy path leaves the
 * process by a move of its PMD where the kernel has UFFDIO_MOVE (no
 * REMOVE event: the test hooks count them), by a zap where a fork child
 * shares it, and each side keeps its bytes.  THP-ness is read from
 * /proc/self/smaps (AnonHugePages of the mapping), every byte checked.
 *
 * At 16 and 64 KiB pages a PMD is several migration chunks (base.h), and
 * each case checks the same: the huge page moves and comes back whole.
 *
 * Needs a kernel that shows huge mappings to hetmm (PAGEMAP_SCAN, or root
 * for kpageflags) and THP enabled.  Elsewhere it says why and exits 77,
 * which ctest counts as skipped (SKIP_RETURN_CODE), not passed.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "base.h"
#include "t.h"
#include "tbus.h"
#include "tdrv.h"
#include "testhook.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

static struct hetmm_ctx *ctx;
static struct hetmm_kernel_info ki;
static size_t pmd;
static size_t npmd;          /* pages in a PMD */

/* A PMD-aligned PMD of private anonymous memory, in a mapping of its
 * own (two PMDs mapped, the rest unmapped). */
static char *map_pmd(void)
{
	char *p = mmap(NULL, 3 * pmd, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	REQUIRE(p != MAP_FAILED);
	char *a = (char *)(((uintptr_t)p + pmd - 1) & ~(uintptr_t)(pmd - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	munmap(a + pmd, (size_t)(p + 3 * pmd - a - pmd));
	return a;
}

/* A THP there, filled with the pattern of seed. */
static char *thp_filled(uint64_t seed)
{
	char *a = map_pmd();
	REQUIRE_OK(madvise(a, pmd, MADV_HUGEPAGE) ? -errno : 0);
	t_fill(a, npmd, seed);
	if (t_anon_huge_kb(a) != (long)(pmd >> 10))
		REQUIRE_OK(madvise(a, pmd, MADV_COLLAPSE) ? -errno : 0);
	REQUIRE(t_anon_huge_kb(a) == (long)(pmd >> 10));
	return a;
}

/* The snapshot's view of every page of [a, a + pmd). */
static void check_snapshot(struct hetmm_mirror *m, const char *a,
			   uint8_t want)
{
	uint8_t *prot = malloc(npmd);
	REQUIRE(prot != NULL);
	CHECK_OK(hetmm_mirror_snapshot(m, a, npmd, prot));
	size_t bad = 0;
	for (size_t i = 0; i < npmd; i++)
		bad += prot[i] != want;
	if (bad)
		fprintf(stderr, "  snapshot: %zu pages not 0x%x (page 0: 0x%x)\n",
			bad, want, prot[0]);
	CHECK_EQ(bad, 0);
	free(prot);
}

/* The device's copy of every byte: read through the mirror. */
static void check_device_bytes(struct hetmm_mirror *m, const char *a,
			       uint64_t seed)
{
	char *buf = malloc(pmd);
	REQUIRE(buf != NULL);
	uint64_t faults = 0;
	CHECK_OK(hetmm_mirror_read(m, a, buf, npmd, &faults));
	CHECK_EQ(t_verify(buf, npmd, seed), 0);
	free(buf);
}

static const uint8_t DEV_HUGE = HETMM_PROT_DEV_PRIVATE_LOCAL |
				HETMM_PROT_WRITE | HETMM_PROT_PMD;
static const uint8_t DEV_BASE = HETMM_PROT_DEV_PRIVATE_LOCAL |
				HETMM_PROT_WRITE;

/* An emulated device of d, its pagemap and a mirror of it. */
static void device_up(const struct hetmm_emu_desc *d, struct hetmm_emu **emu,
		      struct hetmm_pagemap **pg, struct hetmm_mirror **m)
{
	REQUIRE_OK(hetmm_emu_create_desc(ctx, d, emu));
	REQUIRE_OK(hetmm_emu_pagemap(*emu, pg));
	REQUIRE_OK(hetmm_mirror_create(*emu, m));
}

static void device_down(struct hetmm_emu *emu, struct hetmm_mirror *m)
{
	CHECK_OK(hetmm_mirror_destroy(m));
	CHECK_OK(hetmm_emu_destroy(emu));
}

/*
 * To the device and back by a CPU fault: one huge device page, then one
 * THP again, every byte where it was.  how says which device.
 */
static void round_trip(uint32_t emu_flags, const char *how)
{
	fprintf(stderr, "round trip, %s\n", how);
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	struct hetmm_mirror *m;
	struct hetmm_emu_desc d = { HETMM_MEMORY_DEVICE_PRIVATE, 4 * npmd,
				    emu_flags };
	device_up(&d, &emu, &pg, &m);

	char *a = thp_filled(11);
	CHECK_OK(hetmm_migrate_to_device(pg, a, pmd, NULL));
	CHECK_EQ(t_anon_huge_kb(a), 0);
	check_snapshot(m, a, DEV_HUGE);
	check_device_bytes(m, a, 11);

	/* One byte faults the whole huge page back, as a THP. */
	volatile char c = a[pmd / 2 + 5];
	(void)c;
	CHECK_EQ(t_anon_huge_kb(a), (long)(pmd >> 10));
	CHECK_EQ(t_verify(a, npmd, 11), 0);
	check_snapshot(m, a, HETMM_PROT_WRITE | HETMM_PROT_PMD);

	/* And by an explicit migration back. */
	CHECK_OK(hetmm_migrate_to_device(pg, a, pmd, NULL));
	check_snapshot(m, a, DEV_HUGE);
	CHECK_OK(hetmm_migrate_to_system(ctx, a, pmd, NULL));
	CHECK_EQ(t_anon_huge_kb(a), (long)(pmd >> 10));
	CHECK_EQ(t_verify(a, npmd, 11), 0);

	munmap(a, pmd);
	device_down(emu, m);
}

/* A coherent device holds a THP as one huge page too, mapped in place;
 * migrated back it is a THP again. */
static void coherent(void)
{
	fprintf(stderr, "coherent\n");
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	struct hetmm_mirror *m;
	struct hetmm_emu_desc d = { HETMM_MEMORY_DEVICE_COHERENT, 2 * npmd, 0 };
	device_up(&d, &emu, &pg, &m);
	char *a = thp_filled(16);
	CHECK_OK(hetmm_migrate_to_device(pg, a, pmd, NULL));
	check_snapshot(m, a, HETMM_PROT_DEV_COHERENT_LOCAL | HETMM_PROT_WRITE |
			     HETMM_PROT_PMD);
	CHECK_EQ(t_verify(a, npmd, 16), 0);
	CHECK_OK(hetmm_migrate_to_system(ctx, a, pmd, NULL));
	CHECK_EQ(t_anon_huge_kb(a), (long)(pmd >> 10));
	CHECK_EQ(t_verify(a, npmd, 16), 0);
	munmap(a, pmd);
	device_down(emu, m);
}

/* Base pages stay base pages on the device. */
static void base_pages(void)
{
	fprintf(stderr, "base pages\n");
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	struct hetmm_mirror *m;
	struct hetmm_emu_desc d = { HETMM_MEMORY_DEVICE_PRIVATE, 2 * npmd, 0 };
	device_up(&d, &emu, &pg, &m);
	char *a = map_pmd();
	REQUIRE_OK(madvise(a, pmd, MADV_NOHUGEPAGE) ? -errno : 0);
	t_fill(a, npmd, 12);
	CHECK_EQ(t_anon_huge_kb(a), 0);
	CHECK_OK(hetmm_migrate_to_device(pg, a, pmd, NULL));
	check_snapshot(m, a, DEV_BASE);
	CHECK_EQ(t_verify(a, npmd, 12), 0);
	munmap(a, pmd);
	device_down(emu, m);
}

/*
 * A device whose free frames hold no aligned PMD run takes a THP as base
 * pages (the kernel's split): every byte still moves and comes back.
 */
static void fragmented_device(void)
{
	fprintf(stderr, "fragmented device\n");
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	struct hetmm_mirror *m;
	struct hetmm_emu_desc d = { HETMM_MEMORY_DEVICE_PRIVATE, 2 * npmd, 0 };
	device_up(&d, &emu, &pg, &m);
	/* Fill the device with base pages, then free every other one: a
	 * PMD's worth free, no aligned run of it. */
	char *holder = mmap(NULL, 2 * pmd, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	REQUIRE(holder != MAP_FAILED);
	REQUIRE_OK(madvise(holder, 2 * pmd, MADV_NOHUGEPAGE) ? -errno : 0);
	t_fill(holder, 2 * npmd, 13);
	CHECK_OK(hetmm_migrate_to_device(pg, holder, 2 * pmd, NULL));
	for (size_t i = 0; i < 2 * npmd; i += 2)
		CHECK_OK(hetmm_migrate_to_system(ctx, holder + i * PS, PS,
						 NULL));
	char *a = thp_filled(14);
	CHECK_OK(hetmm_migrate_to_device(pg, a, pmd, NULL));
	check_snapshot(m, a, DEV_BASE);
	check_device_bytes(m, a, 14);
	CHECK_EQ(t_verify(a, npmd, 14), 0);
	CHECK_EQ(t_verify(holder, 2 * npmd, 13), 0);
	munmap(a, pmd);
	munmap(holder, 2 * pmd);
	device_down(emu, m);
}

/*
 * A huge page is claimed whole or not at all: with its last page pinned
 * (in the last migration chunk of the block, where a PMD is several) no
 * page of it becomes huge on the device, every other page moves as a
 * base page, and every byte comes back.
 */
static void held_page(void)
{
	fprintf(stderr, "held page\n");
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	struct hetmm_mirror *m;
	struct hetmm_emu_desc d = { HETMM_MEMORY_DEVICE_PRIVATE, 2 * npmd, 0 };
	device_up(&d, &emu, &pg, &m);
	char *a = thp_filled(17);
	void *held[1];
	CHECK_EQ(hetmm_pin_user_pages(ctx, a + pmd - PS, 1, 0, held), 1);
	uint8_t *st = malloc(npmd);
	REQUIRE(st != NULL);
	struct hetmm_migrate_report rep = { 0, 0, st };
	CHECK_OK(hetmm_migrate_to_device(pg, a, pmd, &rep));
	CHECK_EQ(rep.moved, npmd - 1);
	CHECK_EQ(st[npmd - 1], HETMM_MIGRATE_SKIP_PINNED);
	uint8_t *prot = malloc(npmd);
	REQUIRE(prot != NULL);
	CHECK_OK(hetmm_mirror_snapshot(m, a, npmd, prot));
	size_t base = 0;
	for (size_t i = 0; i + 1 < npmd; i++)
		base += prot[i] == DEV_BASE;
	CHECK_EQ(base, npmd - 1);
	CHECK_EQ(prot[npmd - 1] & HETMM_PROT_DEV_PRIVATE_LOCAL, 0);
	CHECK_OK(hetmm_unpin_user_pages(ctx, held, 1));
	CHECK_EQ(t_verify(a, npmd, 17), 0);
	free(prot);
	free(st);
	munmap(a, pmd);
	device_down(emu, m);
}

/* Half of a huge page back: the other half is base pages on the device
 * (a split), and a fault there brings back base pages only. */
static void split(void)
{
	fprintf(stderr, "split\n");
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	struct hetmm_mirror *m;
	struct hetmm_emu_desc d = { HETMM_MEMORY_DEVICE_PRIVATE, 2 * npmd, 0 };
	device_up(&d, &emu, &pg, &m);
	char *a = thp_filled(15);
	CHECK_OK(hetmm_migrate_to_device(pg, a, pmd, NULL));
	check_snapshot(m, a, DEV_HUGE);
	CHECK_OK(hetmm_migrate_to_system(ctx, a, pmd / 2, NULL));
	uint8_t *prot = malloc(npmd);
	REQUIRE(prot != NULL);
	CHECK_OK(hetmm_mirror_snapshot(m, a, npmd, prot));
	size_t huge = 0, dev = 0;
	for (size_t i = 0; i < npmd; i++) {
		huge += (prot[i] & HETMM_PROT_PMD) != 0;
		dev += (prot[i] & HETMM_PROT_DEV_PRIVATE_LOCAL) != 0;
	}
	CHECK_EQ(huge, 0);
	CHECK_EQ(dev, npmd / 2);
	free(prot);
	volatile char c = a[pmd - 1];
	(void)c;
	CHECK_EQ(t_verify(a, npmd, 15), 0);
	munmap(a, pmd);
	device_down(emu, m);
}

#ifdef HETMM_TEST_HOOKS
/* REMOVE events the handler handled over [watch_lo, watch_lo + pmd). */
static atomic_size_t discards;
static _Atomic uintptr_t watch_lo;

static void count_discards(enum test_hook_point point, uintptr_t addr,
			   size_t len)
{
	uintptr_t lo = atomic_load(&watch_lo);
	if (point == TEST_HOOK_EVENT_DISCARD && addr < lo + pmd &&
	    addr + len > lo)
		atomic_fetch_add(&discards, 1);
}

/* a's THP to a copy-path device: the REMOVE events its leaving raised
 * (the migration waits for the handler to handle those: order.c). */
static size_t migrate_counting(struct hetmm_pagemap *pg, char *a)
{
	atomic_store(&discards, 0);
	atomic_store(&watch_lo, (uintptr_t)a);
	__atomic_store_n(&test_hook, count_discards, __ATOMIC_RELEASE);
	CHECK_OK(hetmm_migrate_to_device(pg, a, pmd, NULL));
	__atomic_store_n(&test_hook, NULL, __ATOMIC_RELEASE);
	return atomic_load(&discards);
}

/*
 * A THP copied to the device whole leaves the process by a move of its
 * PMD into the migrator's sink (UFFDIO_MOVE, where a chunk is a PMD):
 * no REMOVE event, nothing of it left mapped, every byte on the device
 * and back.  Without UFFDIO_MOVE it is zapped: one event at least.
 */
static void taken(void)
{
	fprintf(stderr, "copied THP taken out of the process\n");
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	struct hetmm_mirror *m;
	struct hetmm_emu_desc d = { HETMM_MEMORY_DEVICE_PRIVATE, 2 * npmd,
				    HETMM_EMU_COPY_ONLY };
	device_up(&d, &emu, &pg, &m);
	bool moves = ki.has_move && CHUNK_PAGES == npmd;
	for (uint64_t seed = 21; seed < 24; seed++) {   /* the sink reused */
		char *a = thp_filled(seed);
		size_t events = migrate_counting(pg, a);
		if (moves)
			CHECK_EQ(events, 0);
		else
			CHECK(events >= 1);
		CHECK_EQ(t_smaps_kb(a, "Rss:"), 0);
		check_snapshot(m, a, DEV_HUGE);
		check_device_bytes(m, a, seed);
		CHECK_EQ(t_verify(a, npmd, seed), 0);
		CHECK_EQ(t_anon_huge_kb(a), (long)(pmd >> 10));
		munmap(a, pmd);
	}
	device_down(emu, m);
}

/*
 * The same THP shared with a fork child, and each side keeps its bytes:
 * the parent's from the device, the child's its own, written after the
 * migration.  The kernel will not move a page another process maps; but
 * the copy's read (process_vm_readv, hetmm_copy_from_process) pins the
 * page, and the kernel unshares a copy-on-write page it pins, so the
 * parent's is its own by the time it leaves the process: moved where
 * pages move, else zapped (the event seen).
 */
static void shared_with_child(void)
{
	fprintf(stderr, "copied THP shared with a fork child\n");
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	struct hetmm_mirror *m;
	struct hetmm_emu_desc d = { HETMM_MEMORY_DEVICE_PRIVATE, 2 * npmd,
				    HETMM_EMU_COPY_ONLY };
	device_up(&d, &emu, &pg, &m);
	char *a = thp_filled(31);
	int go[2];
	REQUIRE_OK(pipe(go) ? -errno : 0);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		char c;
		close(go[1]);
		int ok = read(go[0], &c, 1) == 1 &&
			 t_verify(a, npmd, 31) == 0;
		t_fill(a, npmd, 32);
		_exit(ok && t_verify(a, npmd, 32) == 0 ? 0 : 1);
	}
	close(go[0]);
	size_t events = migrate_counting(pg, a);
	if (!(ki.has_move && CHUNK_PAGES == npmd))
		CHECK(events >= 1);
	CHECK_EQ(t_smaps_kb(a, "Rss:"), 0);
	check_device_bytes(m, a, 31);
	REQUIRE(write(go[1], "g", 1) == 1);
	close(go[1]);
	int status = 0;
	REQUIRE(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK_EQ(t_verify(a, npmd, 31), 0);
	munmap(a, pmd);
	device_down(emu, m);
}
#endif

/*
 * A driver whose page_address() gives NULL for the pages it lost: for a
 * DEVICE_PRIVATE pagemap, a failed copy back (hetmm.h).  A huge device
 * page of them, whose THP comes back from that address, gives -EIO to an
 * explicit migration back and SIGBUS to a thread that touches it, and
 * stays on the device (before: a read of NULL in the handler, the
 * process killed); once the driver has them again, a touch brings the
 * page back whole, as a THP, and so does a migration after a SIGBUS.
 */
static atomic_bool pages_lost;

static void *lost_address(struct hetmm_pagemap *pg, uint64_t index)
{
	return atomic_load(&pages_lost) ? NULL : td_address(pg, index);
}

static const struct hetmm_pagemap_ops lost_ops = {
	.copy_to_device = td_copy_to,
	.copy_from_device = td_copy_from,
	.page_address = lost_address,
};

static void lost_huge_page(void)
{
	fprintf(stderr, "huge page the driver lost (page_address NULL)\n");
	struct td d;
	REQUIRE_OK(td_add_ops(ctx, &d, 4 * npmd, TD_COPY,
			      HETMM_MEMORY_DEVICE_PRIVATE, 0, &lost_ops));
	char *a = thp_filled(41);
	CHECK_OK(hetmm_migrate_to_device(d.pg, a, pmd, NULL));
	CHECK_EQ(t_anon_huge_kb(a), 0);
	atomic_store(&pages_lost, true);
	CHECK_EQ(hetmm_migrate_to_system(ctx, a, pmd, NULL), -EIO);
	CHECK_EQ(t_count_on_device(ctx, a, npmd), npmd);
	atomic_store(&pages_lost, false);
	CHECK_EQ(t_verify(a, npmd, 41), 0);
	CHECK_EQ(t_anon_huge_kb(a), (long)(pmd >> 10));

	/* A thread's touch: SIGBUS, its page poisoned where the kernel
	 * can (UFFDIO_POISON).  Back once the driver has them again: the
	 * poisoned page too, whose marker refuses the PMD's move (it was
	 * dropped, and stayed poisoned, before back.c copied over it). */
	CHECK_OK(hetmm_migrate_to_device(d.pg, a, pmd, NULL));
	atomic_store(&pages_lost, true);
	t_bus_catch();
	struct t_touch t = { .addr = a + 5 * PS + 3 };
	t_touch(&t);
	CHECK_EQ(t.bus, 1);
	CHECK_EQ(t_bus_addr, (uintptr_t)(a + 5 * PS + 3));
	CHECK(t_on_device(ctx, a + 5 * PS));
	atomic_store(&pages_lost, false);
	CHECK_OK(hetmm_migrate_to_system(ctx, a, pmd, NULL));
	CHECK_EQ(t_count_on_device(ctx, a, npmd), 0);
	t = (struct t_touch){ .addr = a + 5 * PS };
	t_touch(&t);
	CHECK_EQ(t.bus, 0);
	CHECK_EQ(t_verify(a, npmd, 41), 0);
	fprintf(stderr, "  back over the poison: AnonHugePages %ld kB\n",
		t_anon_huge_kb(a));
	munmap(a, pmd);
	CHECK_OK(hetmm_pagemap_remove(d.pg));
	td_free(&d);
}

int main(void)
{
	REQUIRE_OK(hetmm_kernel_probe(&ki));
	pmd = hetmm_pmd_size();
	npmd = pmd / PS;
	if (!ki.has_thp || !ki.has_page_state) {
		fprintf(stderr, "SKIP: needs THP (%d) and huge mappings shown "
			"(PAGEMAP_SCAN or root: %d)\n", ki.has_thp,
			ki.has_page_state);
		return 77;
	}
	fprintf(stderr, "%zu KiB pages, PMD %zu pages\n", PS >> 10, npmd);
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	round_trip(0, "moved out of the frames (UFFDIO_MOVE)");
	round_trip(HETMM_EMU_COPY_ONLY, "copied (THP-backed fill)");
	coherent();
	base_pages();
	fragmented_device();
	split();
	held_page();
	lost_huge_page();
#ifdef HETMM_TEST_HOOKS
	taken();
	shared_with_child();
#endif
	CHECK_OK(hetmm_ctx_destroy(ctx));
	return t_done();
}
