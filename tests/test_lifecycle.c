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
#include "t.h"

static struct hetmm_ctx *ctx;
static struct hetmm_emu *emu;
static struct hetmm_pagemap *pg;
static struct hetmm_mirror *mir;

#define NDEV 128

struct child_arg {
	char *p;
	size_t n;
	uint64_t seed;
};

/* In the fork child: the parent's bytes, and the child's writes are its
 * own. */
static void child_reads_and_writes(void *v)
{
	struct child_arg *a = v;

	CHECK_EQ(t_verify(a->p, a->n, a->seed), 0);
	t_fill(a->p, a->n / 2, 41);
	CHECK_EQ(t_verify(a->p, a->n / 2, 41), 0);
	CHECK_EQ(t_verify_from(a->p + a->n / 2 * PS, a->n - a->n / 2,
			       a->seed, a->n / 2), 0);
}

static void fork_keeps_bytes(void)
{
	enum { N = 16 };
	char *p = t_map(N);

	t_fill(p, N, 40);
	t_to_device(pg, p, N);
	t_reap(t_spawn(child_reads_and_writes,
		       &(struct child_arg){ p, N, 40 }));
	/* The parent's copy is untouched by the child's writes. */
	CHECK_EQ(t_verify(p, N, 40), 0);

	/* Half on the device, half written by the parent since. */
	t_fill(p, N, 42);
	t_to_device(pg, p, N / 2);
	t_reap(t_spawn(child_reads_and_writes,
		       &(struct child_arg){ p, N, 42 }));
	CHECK_EQ(t_verify(p, N, 42), 0);
	t_unmap(p, N);
}

static void munmap_frees_and_forgets(void)
{
	enum { N = 16 };
	uint64_t before = t_nr_free(pg);
	char *p = t_map(N), *out;
	uint64_t faults;

	t_fill(p, N, 43);
	t_to_device(pg, p, N);
	CHECK_EQ(t_nr_free(pg), before - N);
	REQUIRE(munmap(p, N * PS) == 0);
	CHECK_EQ(t_settled_free(pg, before), before);
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
	t_to_device(pg, p, N);
	CHECK_EQ(t_verify(p, N, 44), 0);
	free(out);
	t_unmap(p, N);
	CHECK_EQ(t_settled_free(pg, before), before);
}

/*
 * Frames freed by a munmap come back in the order they had, as runs:
 * pages that go to the device next get consecutive frames again, which
 * the move and copy paths batch (they used to come back one at a time,
 * in reverse, and still holding their pages: every page of the next
 * migration then failed its move once).  And their old bytes are gone.
 */
static void munmap_keeps_frame_runs(void)
{
	enum { N = 64 };
	uint64_t before = t_nr_free(pg);
	char *p = t_map(N);
	hetmm_pfn_t was[N], now[N];

	t_fill(p, N, 46);
	t_to_device(pg, p, N);
	for (size_t i = 0; i < N; i++)
		CHECK_OK(hetmm_addr_to_pfn(ctx, p + i * PS, &was[i]));
	t_unmap(p, N);
	CHECK_EQ(t_settled_free(pg, before), before);

	p = t_map(N);
	t_fill(p, N, 47);
	t_to_device(pg, p, N);
	size_t same = 0;
	for (size_t i = 0; i < N; i++) {
		CHECK_OK(hetmm_addr_to_pfn(ctx, p + i * PS, &now[i]));
		same += hetmm_pfn_number(now[i]) == hetmm_pfn_number(was[i]);
	}
	CHECK_EQ(same, N);
	CHECK_EQ(t_verify(p, N, 47), 0);
	t_unmap(p, N);
	CHECK_EQ(t_settled_free(pg, before), before);
}

static void dontneed_zeroes(void)
{
	enum { N = 16 };
	uint64_t before = t_nr_free(pg);
	char *p = t_map(N);

	t_fill(p, N, 45);
	t_to_device(pg, p, N);
	REQUIRE(madvise(p, N / 2 * PS, MADV_DONTNEED) == 0);
	CHECK_EQ(t_settled_free(pg, before - N / 2), before - N / 2);
	CHECK_EQ(t_count_on_device(ctx, p, N / 2), 0);
	CHECK_EQ(t_nonzero_pages(p, N / 2), 0);
	CHECK_EQ(t_verify_from(p + N / 2 * PS, N / 2, 45, N / 2), 0);
	t_unmap(p, N);
	CHECK_EQ(t_nr_free(pg), before);
}

static void mremap_moves_bytes(void)
{
	enum { N = 16 };
	uint64_t before = t_nr_free(pg);
	char *p = t_map(N), *q;
	char *target = t_map(N);

	t_fill(p, N, 46);
	t_to_device(pg, p, N);
	q = mremap(p, N * PS, N * PS, MREMAP_MAYMOVE | MREMAP_FIXED, target);
	REQUIRE(q == target);
	CHECK_EQ(t_verify(q, N, 46), 0);
	CHECK_EQ(t_count_on_device(ctx, q, N), 0);
	/* The old range is gone, and nothing of it stays on the device. */
	CHECK_EQ(t_count_on_device(ctx, p, N), 0);
	CHECK_EQ(t_settled_free(pg, before), before);

	/* Growing in place keeps the device pages reachable too. */
	t_to_device(pg, q, N);
	{
		char *r = mremap(q, N * PS, 2 * N * PS, MREMAP_MAYMOVE);

		REQUIRE(r != MAP_FAILED);
		CHECK_EQ(t_verify(r, N, 46), 0);
		CHECK_EQ(t_nonzero_pages(r + N * PS, N), 0);
		t_unmap(r, 2 * N);
	}
	CHECK_EQ(t_settled_free(pg, before), before);
}

static void mprotect_then_read(void)
{
	enum { N = 8 };
	char *p = t_map(N);

	t_fill(p, N, 47);
	t_to_device(pg, p, N);
	REQUIRE(mprotect(p, N * PS, PROT_READ) == 0);
	CHECK_EQ(t_verify(p, N, 47), 0);
	CHECK_EQ(t_count_on_device(ctx, p, N), 0);
	REQUIRE(mprotect(p, N * PS, PROT_READ | PROT_WRITE) == 0);

	t_to_device(pg, p, N);
	REQUIRE(mprotect(p, N * PS, PROT_NONE) == 0);
	REQUIRE(mprotect(p, N * PS, PROT_READ | PROT_WRITE) == 0);
	CHECK_EQ(t_verify(p, N, 47), 0);
	t_unmap(p, N);
}

int main(void)
{
	t_emu_up(&ctx, NULL, NDEV, &emu, &pg);
	REQUIRE_OK(hetmm_mirror_create(emu, &mir));

	fork_keeps_bytes();
	munmap_frees_and_forgets();
	munmap_keeps_frame_runs();
	dontneed_zeroes();
	mremap_moves_bytes();
	mprotect_then_read();

	CHECK_OK(hetmm_mirror_destroy(mir));
	CHECK_OK(hetmm_emu_destroy(emu));
	CHECK_OK(hetmm_ctx_destroy(ctx));
	return t_done();
}
