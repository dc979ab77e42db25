/* SPDX-License-Identifier: MIT */
/*
 * test_lifecycle: what the process does to memory while it sits on a
 * device - fork, munmap, MADV_DONTNEED, mremap, mprotect - and what the
 * kernel would give it back for device-private pages:
 *
 *   fork           parent and child both keep every byte (copy on write)
 *   munmap         the device frames are freed; a new mapping at the same
 *                  address is new memory, not the old device pages
 *   MADV_DONTNEED  the pages read as zeroes, the frames are freed
 *   mremap         the bytes move with the mapping
 *   mprotect       reads still bring the bytes back
 */
#include <signal.h>
#include <sys/wait.h>

#include "t.h"

static struct hetmm_ctx *ctx;
static struct hetmm_emu *emu;
static struct hetmm_pagemap *pg;
static struct hetmm_mirror *mir;

#define NDEV 128

static uint64_t nr_free(void)
{
	struct hetmm_pagemap_info info;

	REQUIRE_OK(hetmm_pagemap_get_info(pg, &info));
	return info.nr_free;
}

/* Frames come back when hetmm has read the kernel's event: give it a
 * bounded while, asserting only the end state. */
static uint64_t settled_free(uint64_t want)
{
	double end = t_now() + 10.0;
	uint64_t n;

	while ((n = nr_free()) != want && t_now() < end)
		usleep(1000);
	return n;
}

static void to_device(char *p, size_t n)
{
	struct hetmm_migrate_report rep;

	memset(&rep, 0, sizeof(rep));
	CHECK_OK(hetmm_migrate_to_device(pg, p, n * PS, &rep));
	CHECK_EQ(rep.moved, n);
}

/* Run fn in a child; its exit status is the number of bad checks. */
static int in_child(int (*fn)(char *p, size_t n), char *p, size_t n)
{
	int st = 0;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0)
		_exit(fn(p, n) ? 1 : 0);
	REQUIRE(waitpid(pid, &st, 0) == pid);
	if (WIFSIGNALED(st)) {
		t_fail(__FILE__, __LINE__, "child killed by signal %d",
		       WTERMSIG(st));
		return -1;
	}
	return WEXITSTATUS(st);
}

static uint64_t child_seed;

static int child_reads_and_writes(char *p, size_t n)
{
	size_t bad = t_verify(p, n, child_seed);

	/* The child's writes are its own. */
	t_fill(p, n / 2, 41);
	bad += t_verify(p, n / 2, 41);
	bad += t_verify_from(p + n / 2 * PS, n - n / 2, child_seed, n / 2);
	return bad != 0;
}

static void fork_keeps_bytes(void)
{
	enum { N = 16 };
	char *p = t_map(N);

	t_fill(p, N, 40);
	to_device(p, N);
	child_seed = 40;
	CHECK_EQ(in_child(child_reads_and_writes, p, N), 0);
	/* The parent's copy is untouched by the child's writes. */
	CHECK_EQ(t_verify(p, N, 40), 0);

	/* Half on the device, half written by the parent since. */
	t_fill(p, N, 42);
	to_device(p, N / 2);
	child_seed = 42;
	CHECK_EQ(in_child(child_reads_and_writes, p, N), 0);
	CHECK_EQ(t_verify(p, N, 42), 0);
	t_unmap(p, N);
}

static void munmap_frees_and_forgets(void)
{
	enum { N = 16 };
	uint64_t before = nr_free();
	char *p = t_map(N), *out;
	uint64_t faults;
	struct hetmm_migrate_report rep;

	t_fill(p, N, 43);
	to_device(p, N);
	CHECK_EQ(nr_free(), before - N);
	REQUIRE(munmap(p, N * PS) == 0);
	CHECK_EQ(settled_free(before), before);
	CHECK_EQ(t_stats(ctx).device_resident, 0);

	/* New memory at the same address is new memory. */
	REQUIRE(mmap(p, N * PS, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == p);
	t_fill(p, N, 44);
	CHECK_EQ(t_count_on_device(ctx, p, N), 0);
	out = malloc(N * PS);
	REQUIRE(out != NULL);
	CHECK_OK(hetmm_mirror_read(mir, p, out, N, &faults));
	CHECK_EQ(t_verify(out, N, 44), 0);
	memset(&rep, 0, sizeof(rep));
	CHECK_OK(hetmm_migrate_to_device(pg, p, N * PS, &rep));
	CHECK_EQ(rep.moved, N);
	CHECK_EQ(t_verify(p, N, 44), 0);
	free(out);
	t_unmap(p, N);
	CHECK_EQ(settled_free(before), before);
}

static void dontneed_zeroes(void)
{
	enum { N = 16 };
	uint64_t before = nr_free();
	char *p = t_map(N);

	t_fill(p, N, 45);
	to_device(p, N);
	REQUIRE(madvise(p, N / 2 * PS, MADV_DONTNEED) == 0);
	CHECK_EQ(settled_free(before - N / 2), before - N / 2);
	CHECK_EQ(t_count_on_device(ctx, p, N / 2), 0);
	CHECK_EQ(t_nonzero_pages(p, N / 2), 0);
	CHECK_EQ(t_verify_from(p + N / 2 * PS, N / 2, 45, N / 2), 0);
	t_unmap(p, N);
	CHECK_EQ(nr_free(), before);
}

static void mremap_moves_bytes(void)
{
	enum { N = 16 };
	uint64_t before = nr_free();
	char *p = t_map(N), *q;
	char *target = t_map(N);

	t_fill(p, N, 46);
	to_device(p, N);
	q = mremap(p, N * PS, N * PS, MREMAP_MAYMOVE | MREMAP_FIXED, target);
	REQUIRE(q == target);
	CHECK_EQ(t_verify(q, N, 46), 0);
	CHECK_EQ(t_count_on_device(ctx, q, N), 0);
	/* The old range is gone, and nothing of it stays on the device. */
	CHECK_EQ(t_count_on_device(ctx, p, N), 0);
	CHECK_EQ(settled_free(before), before);

	/* Growing in place keeps the device pages reachable too. */
	to_device(q, N);
	{
		char *r = mremap(q, N * PS, 2 * N * PS, MREMAP_MAYMOVE);

		REQUIRE(r != MAP_FAILED);
		CHECK_EQ(t_verify(r, N, 46), 0);
		CHECK_EQ(t_nonzero_pages(r + N * PS, N), 0);
		t_unmap(r, 2 * N);
	}
	CHECK_EQ(settled_free(before), before);
}

static void mprotect_then_read(void)
{
	enum { N = 8 };
	char *p = t_map(N);

	t_fill(p, N, 47);
	to_device(p, N);
	REQUIRE(mprotect(p, N * PS, PROT_READ) == 0);
	CHECK_EQ(t_verify(p, N, 47), 0);
	CHECK_EQ(t_count_on_device(ctx, p, N), 0);
	REQUIRE(mprotect(p, N * PS, PROT_READ | PROT_WRITE) == 0);

	to_device(p, N);
	REQUIRE(mprotect(p, N * PS, PROT_NONE) == 0);
	REQUIRE(mprotect(p, N * PS, PROT_READ | PROT_WRITE) == 0);
	CHECK_EQ(t_verify(p, N, 47), 0);
	t_unmap(p, N);
}

int main(void)
{
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	REQUIRE_OK(hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_PRIVATE, NDEV,
				    &emu));
	REQUIRE_OK(hetmm_emu_pagemap(emu, &pg));
	REQUIRE_OK(hetmm_mirror_create(emu, &mir));

	fork_keeps_bytes();
	munmap_frees_and_forgets();
	dontneed_zeroes();
	mremap_moves_bytes();
	mprotect_then_read();

	CHECK_OK(hetmm_mirror_destroy(mir));
	CHECK_OK(hetmm_emu_destroy(emu));
	CHECK_OK(hetmm_ctx_destroy(ctx));
	return t_done();
}
