/* SPDX-License-Identifier: MIT */
/*
 * test_pagesize - the page size is the kernel's, never 4 KiB assumed
 * (issue 20 item 7; seeds 000 and 002: arm64 with 16 and 64 KiB pages).
 *
 *   first_use_races  threads that ask for the page size at once, in a
 *                    process that never asked, all get the kernel's
 *   sizes            hetmm_page_size/shift/pmd_size and HETMM_PAGE_SIZE
 *                    against sysconf, the aux vector and sysfs, and the
 *                    sizes the library derives from them
 *   fault_is_a_page  a CPU fault on the last byte of a device page brings
 *                    back that page whole, and not the next one: the
 *                    unit hetmm moves is the kernel's page
 */
#include <pthread.h>
#include <sys/auxv.h>

#include "base.h"
#include "t.h"

/* The kernel's own answers. */
static size_t kernel_page_size(void)
{
	long s = sysconf(_SC_PAGESIZE);
	REQUIRE(s > 0);
	CHECK_EQ(getauxval(AT_PAGESZ), s);
	return (size_t)s;
}

/* The sysfs PMD size, 0 where the kernel has no THP. */
static size_t sysfs_pmd_size(void)
{
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size",
			"r");
	unsigned long long v = 0;
	if (!f)
		return 0;
	if (fscanf(f, "%llu", &v) != 1)
		v = 0;
	fclose(f);
	return (size_t)v;
}

#define RACERS 8

static pthread_barrier_t start_line;

static void *ask_shift(void *arg)
{
	pthread_barrier_wait(&start_line);
	*(unsigned int *)arg = hetmm_page_shift();
	return NULL;
}

/* In a child that has never asked: the one read, raced by RACERS. */
static void first_use_races(void)
{
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		if (page_shift_now != 0)
			_exit(2);   /* the test asked before forking */
		pthread_t th[RACERS];
		unsigned int got[RACERS];
		pthread_barrier_init(&start_line, NULL, RACERS);
		for (int i = 0; i < RACERS; i++)
			if (pthread_create(&th[i], NULL, ask_shift, &got[i]))
				_exit(3);
		for (int i = 0; i < RACERS; i++)
			pthread_join(th[i], NULL);
		for (int i = 0; i < RACERS; i++)
			if ((size_t)1 << got[i] != (size_t)sysconf(_SC_PAGESIZE))
				_exit(4);
		_exit(0);
	}
	int st = 0;
	REQUIRE(waitpid(pid, &st, 0) == pid);
	CHECK(WIFEXITED(st));
	CHECK_EQ(WEXITSTATUS(st), 0);
}

static void sizes(void)
{
	size_t ps = kernel_page_size();
	unsigned int shift = hetmm_page_shift();

	CHECK_EQ(hetmm_page_size(), ps);
	CHECK_EQ((size_t)1 << shift, ps);
	CHECK_EQ(HETMM_PAGE_SIZE, ps);
	CHECK_EQ(HETMM_PAGE_SHIFT, shift);
	CHECK_EQ(PS, ps);

	/* The PMD: what sysfs says, else a page table page's worth of
	 * pages (page size / 8 entries). */
	size_t pmd = hetmm_pmd_size(), fs = sysfs_pmd_size();
	if (fs)
		CHECK_EQ(pmd, fs);
	else
		CHECK_EQ(pmd, ps * (ps / 8));
	CHECK_EQ(pmd & (pmd - 1), 0);
	CHECK_EQ(pmd % ps, 0);

	/* What the library derives, inside. */
	CHECK_EQ(PAGE_SIZE, ps);
	CHECK_EQ(PAGE_SHIFT, shift);
	CHECK_EQ(PAGE_MASK, ~(uintptr_t)(ps - 1));
	CHECK_EQ(PMD_SIZE, pmd);
	CHECK_EQ(PMD_PAGES, pmd / ps);
	CHECK_EQ((size_t)1 << pmd_order(), pmd / ps);
	CHECK(CHUNK_PAGES <= PMD_PAGES);
	CHECK_EQ(CHUNK_SIZE, CHUNK_PAGES * ps);
	uintptr_t a = (uintptr_t)&ps;
	CHECK_EQ(addr_to_vpn(a), a / ps);
	CHECK_EQ(vpn_to_addr(addr_to_vpn(a)), a & ~(uintptr_t)(ps - 1));

	printf("page size %zu (shift %u), PMD %zu (order %u), chunk %zu "
	       "bytes\n", ps, shift, pmd, pmd_order(), (size_t)CHUNK_SIZE);
}

static void fault_is_a_page(void)
{
	struct hetmm_ctx_params params = { .fault_around_max = 1 };
	struct hetmm_ctx *ctx;
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	enum { N = 4 };

	t_emu_up(&ctx, &params, 64, &emu, &pg);
	char *p = t_map(N);
	t_fill(p, N, 7);
	CHECK_OK(hetmm_migrate_to_device(pg, p, N * PS, NULL));
	for (size_t i = 0; i < N; i++)
		CHECK_EQ(t_present(p + i * PS), 0);

	/* The last byte of page 1: page 1 comes back whole, 0, 2, 3 stay. */
	(void)*(volatile char *)(p + 2 * PS - 1);
	CHECK_EQ(t_present(p), 0);
	CHECK_EQ(t_present(p + PS), 1);
	CHECK_EQ(t_present(p + 2 * PS), 0);
	CHECK_EQ(t_present(p + 3 * PS), 0);
	CHECK_EQ(t_verify_from(p + PS, 1, 7, 1), 0);
	/* A write at the first byte of page 2 the same way. */
	(p + 2 * PS)[0] ^= 0;
	CHECK_EQ(t_present(p + 3 * PS), 0);
	CHECK_EQ(t_verify(p, N, 7), 0);

	t_unmap(p, N);
	CHECK_OK(hetmm_emu_destroy(emu));
	CHECK_OK(hetmm_ctx_destroy(ctx));
}

int main(void)
{
	first_use_races();
	sizes();
	fault_is_a_page();
	return t_done();
}
