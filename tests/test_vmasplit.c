/* SPDX-License-Identifier: MIT */
/*
 * test_vmasplit: what hetmm does to part of a mapping leaves the mapping
 * whole, as the kernel's HMM does (fuzz/FINDINGS.md F5).
 *
 * hetmm hears of munmap, madvise and mremap through its userfaultfd, so it
 * registers the memory it migrates or a device faults in.  Registering
 * part of a mapping splits it in two or three, and mremap() moves one
 * mapping only: the process's own mremap of the mapping it made as one
 * then fails with EFAULT.  Each case here touches part of a mapping and
 * then expects
 *   - the mapping to still be one in /proc/self/maps,
 *   - mremap of all of it, growing or with MREMAP_DONTUNMAP, to work,
 *   - every byte at the new address, device pages included, and
 *   - the rest of the mapping, never touched, to read as zeroes and take
 *     writes, as fresh memory does.
 */
#include <link.h>

#include "t.h"

#include "ctx.h"

static struct hetmm_ctx *ctx;
static struct hetmm_emu *emu;
static struct hetmm_pagemap *pg;
static struct hetmm_mirror *mir;

#define NDEV 1024

/* How many mappings of /proc/self/maps cover some of [p, p + n pages). */
static int maps_in(const void *p, size_t n)
{
	uintptr_t lo = (uintptr_t)p, hi = lo + n * PS;
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	int count = 0;

	REQUIRE(f);
	while (fgets(line, sizeof(line), f)) {
		uintptr_t s, e;

		if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR, &s, &e) == 2 &&
		    s < hi && lo < e)
			count++;
	}
	fclose(f);
	return count;
}

/* Grow the n pages at p to 2n with MREMAP_MAYMOVE: the pages keep their
 * bytes (seed) and the new half reads as zeroes. */
static char *grow_and_verify(char *p, size_t n, uint64_t seed)
{
	char *r = mremap(p, n * PS, 2 * n * PS, MREMAP_MAYMOVE);

	CHECK(r != MAP_FAILED);
	if (r == MAP_FAILED) {
		fprintf(stderr, "mremap: %s\n", strerror(errno));
		t_unmap(p, n);
		return NULL;
	}
	CHECK_EQ(t_verify(r, n, seed), 0);
	CHECK_EQ(t_nonzero_pages(r + n * PS, n), 0);
	CHECK_EQ(t_count_on_device(ctx, r, 2 * n), 0);
	return r;
}

/* The case: 4 pages, 2-3 on the device, then mremap to 8. */
static void migrate_part_then_grow(void)
{
	enum { N = 4 };
	uint64_t before = t_nr_free(pg);
	char *p = t_map(N), *r;

	t_fill(p, N, 1);
	t_to_device(pg, p + 2 * PS, 2);
	CHECK_EQ(maps_in(p, N), 1);
	r = grow_and_verify(p, N, 1);
	if (r)
		t_unmap(r, 2 * N);
	CHECK_EQ(t_settled_free(pg, before), before);
}

/* A part crossing the 2 MiB boundary at which migration starts a new
 * chunk: two registrations, still one mapping. */
static void migrate_across_chunks_then_grow(void)
{
	enum { N = 16 };
	char *p = t_map_chunk_at(N, 8), *r;

	t_fill(p, N, 2);
	t_to_device(pg, p + 5 * PS, 6);
	CHECK_EQ(maps_in(p, N), 1);
	r = grow_and_verify(p, N, 2);
	if (r)
		t_unmap(r, 2 * N);
}

/* A device reading part of a mapping (a range fault) watches it too. */
static void mirror_read_part_then_grow(void)
{
	enum { N = 4 };
	char *p = t_map(N), *r, *buf = t_alloc_pages(2);
	uint64_t faults = 0;

	t_fill(p, N, 3);
	CHECK_OK(hetmm_mirror_read(mir, p + 2 * PS, buf, 2, &faults));
	CHECK_EQ(t_verify_from(buf, 2, 3, 2), 0);
	CHECK_EQ(maps_in(p, N), 1);
	r = grow_and_verify(p, N, 3);
	if (r) {
		/* The mirror follows the mapping to its new place. */
		memset(buf, 0, 2 * PS);
		CHECK_OK(hetmm_mirror_read(mir, r, buf, 2, &faults));
		CHECK_EQ(t_verify(buf, 2, 3), 0);
		t_unmap(r, 2 * N);
	}
	free(buf);
}

/* Exclusive access to part of a mapping (a migration to the device). */
static void exclusive_part_then_grow(void)
{
	enum { N = 4 };
	char *p = t_map(N), *r;

	t_fill(p, N, 4);
	CHECK_OK(hetmm_mirror_make_exclusive(mir, p + 2 * PS, 2));
	CHECK_EQ(maps_in(p, N), 1);
	r = grow_and_verify(p, N, 4);
	if (r) {
		CHECK_OK(hetmm_mirror_check_exclusive(mir, r, 2 * N));
		t_unmap(r, 2 * N);
	}
}

/*
 * test_stress's op_remap: several partial migrations, then a move with
 * MREMAP_DONTUNMAP, which leaves the old mapping in place and empty.  On
 * Linux 6.1, registering a range that starts inside a mapping never
 * merges it with a registered neighbour, so even migrating every page in
 * pieces used to leave the mapping split there.
 */
static void chunked_migrations_then_dontunmap(void)
{
	enum { N = 24 };
	char *p = t_map(N), *q = t_map(N), *r;

	t_fill(p, N, 5);
	t_to_device(pg, p + 2 * PS, 3);
	t_to_device(pg, p + 9 * PS, 4);
	t_to_device(pg, p + 20 * PS, 1);
	CHECK_EQ(maps_in(p, N), 1);
	r = mremap(p, N * PS, N * PS,
		   MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, q);
	CHECK(r == q);
	if (r != q) {
		fprintf(stderr, "mremap DONTUNMAP: %s\n", strerror(errno));
		t_unmap(q, N);
		t_unmap(p, N);
		return;
	}
	CHECK_EQ(t_verify(q, N, 5), 0);
	CHECK_EQ(t_count_on_device(ctx, q, N), 0);
	/* What stays behind is an empty mapping: zeroes, and writable. */
	CHECK_EQ(t_nonzero_pages(p, N), 0);
	t_fill(p, N, 6);
	CHECK_EQ(t_verify(p, N, 6), 0);

	/* Every page migrated, in pieces, then moved back whole. */
	t_to_device(pg, q, 8);
	t_to_device(pg, q + 8 * PS, 8);
	t_to_device(pg, q + 16 * PS, 8);
	CHECK_EQ(maps_in(q, N), 1);
	r = mremap(q, N * PS, N * PS,
		   MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, p);
	CHECK(r == p);
	if (r == p) {
		CHECK_EQ(t_verify(p, N, 5), 0);
		CHECK_EQ(t_nonzero_pages(q, N), 0);
	}
	t_unmap(q, N);
	t_unmap(p, N);
}

/*
 * The rest of a watched mapping is fresh memory the handler now serves:
 * a read of a page never touched reads zeroes, a write sticks, a page
 * MADV_DONTNEED discarded reads zeroes again, and a later migration of
 * those pages moves what was written.
 */
static void untouched_rest_is_fresh_memory(void)
{
	enum { N = 64 };
	char *p = t_map(N);

	t_fill(p, 2, 7);
	t_to_device(pg, p, 2);
	CHECK_EQ(t_nonzero_pages(p + 2 * PS, N - 2), 0);
	t_fill_from(p + 10 * PS, 20, 8, 10);
	CHECK_EQ(t_verify_from(p + 10 * PS, 20, 8, 10), 0);
	REQUIRE(madvise(p + 12 * PS, 4 * PS, MADV_DONTNEED) == 0);
	CHECK_EQ(t_nonzero_pages(p + 12 * PS, 4), 0);
	t_to_device(pg, p + 16 * PS, 14);
	CHECK_EQ(t_verify_from(p + 16 * PS, 14, 8, 16), 0);
	CHECK_EQ(t_verify(p, 2, 7), 0);
	CHECK_EQ(maps_in(p, N), 1);
	t_unmap(p, N);
}

/*
 * Memory hetmm uses itself is never registered with the rest of a
 * mapping, even where the kernel made the two one mapping: its zero
 * source is read-only anonymous memory, never written, and a read-only
 * mapping of the process placed right next to it becomes one with it.
 * Were it registered, the handler, filling a hole for a write by a copy
 * from it, would fault on its own source of zeroes and wait for itself
 * (the test would hang).  Run first: before any such fill has touched
 * the zero source.  The zero source is the first thing a context maps,
 * so main() holds the place above it (mmap places mappings top down)
 * while the context is created, and gives it back for this.
 */
static void own_memory_is_left_alone(void)
{
	enum { N = 4 };
	char *zero = ctx->zero_src;
	char *at = zero + CHUNK_PAGES * PS, *p;

	p = mmap(at, N * PS, PROT_READ,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (p == MAP_FAILED) {
		at = zero - N * PS;
		p = mmap(at, N * PS, PROT_READ,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
			 -1, 0);
	}
	REQUIRE(p == at);
	/* One mapping with the zero source, as far as the kernel goes. */
	CHECK_EQ(maps_in(zero < p ? zero : p, CHUNK_PAGES + N), 1);
	t_to_device(pg, p, N);
	REQUIRE(mprotect(p, N * PS, PROT_READ | PROT_WRITE) == 0);
	/* Page 0 a hole again, the rest on the device: a write to each. */
	REQUIRE(madvise(p, PS, MADV_DONTNEED) == 0);
	t_fill(p, N, 9);
	CHECK_EQ(t_verify(p, N, 9), 0);
	t_unmap(p, N);
}

/*
 * A loaded object's .bss with a mapping of the process's placed right
 * after it, which the kernel merges with the .bss: migrating the
 * mapping's pages registers the process's part, never the .bss.  A
 * .bss registered whole with it had holes only the handler fills, and
 * the handler touches .bss pages itself (hetmm's statics, TSan's stack
 * depot in libtsan's .bss: TSan runs hung so, every thread in
 * handle_userfault), as does LeakSanitizer's exit check with the handler
 * stopped (test_shim hung at exit under ASan).  The first object whose
 * .bss has room after it serves.
 */
enum { BSS_N = 4 };

struct bss_room {
	uintptr_t end;      /* of the .bss: where the mapping goes */
	char *p;
};

/* A mapping at the end of the .bss of a segment of info's object, if
 * there is room and the kernel merged the two. */
static int map_after_bss(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct bss_room *r = arg;
	(void)size;
	for (size_t i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t at = info->dlpi_addr + ph->p_vaddr;
		uintptr_t bss = (at + ph->p_filesz + PS - 1) & ~(PS - 1);
		uintptr_t end = (at + ph->p_memsz + PS - 1) & ~(PS - 1);
		if (ph->p_type != PT_LOAD || end <= bss)
			continue;
		char *p = mmap((void *)end, BSS_N * PS, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS |
			       MAP_FIXED_NOREPLACE, -1, 0);
		if (p == MAP_FAILED)
			continue;
		if (p == (char *)end && maps_in((char *)end - PS, 1 + BSS_N) == 1) {
			r->end = end;
			r->p = p;
			return 1;
		}
		munmap(p, BSS_N * PS);
	}
	return 0;
}

/* Does the mapping holding p have a userfaultfd registration? */
static bool registered(const void *p)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	bool in = false, reg = false;
	REQUIRE(f);
	while (fgets(line, sizeof(line), f)) {
		uintptr_t s, e;
		if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR, &s, &e) == 2 &&
		    strchr(line, ' ') && strchr(line, '-') < strchr(line, ' ')) {
			in = (uintptr_t)p >= s && (uintptr_t)p < e;
			continue;
		}
		if (in && !strncmp(line, "VmFlags:", 8)) {
			reg = strstr(line, " um") || strstr(line, " uw");
			break;
		}
	}
	fclose(f);
	return reg;
}

static void a_bss_is_left_alone(void)
{
	struct bss_room r = { 0 };
	dl_iterate_phdr(map_after_bss, &r);
	if (!r.p) {
		t_fail(__FILE__, __LINE__, "no loaded object's .bss has %d "
		       "free pages after it to map", BSS_N);
		return;
	}
	char *bss_last = (char *)r.end - PS;
	CHECK(!registered(bss_last));
	t_fill(r.p, BSS_N, 12);
	t_to_device(pg, r.p, BSS_N);
	CHECK(registered(r.p));
	CHECK(!registered(bss_last));
	CHECK_EQ(t_verify(r.p, BSS_N, 12), 0);
	t_unmap(r.p, BSS_N);
}

/*
 * Two contexts on two mappings the kernel merged into one: the second
 * context registers the merged mapping whole for pages of its own in
 * other, then the first is asked for part of p.  It takes over the
 * widest span nobody else holds: p whole, so that p stays one mapping
 * (split only where the process's two mappings meet) and mremap moves
 * it whole.  Before, it took the two pages it was asked for and p was
 * three mappings: mremap failed with EFAULT (F5 with several contexts).
 */
static void merged_with_another_contexts(struct hetmm_ctx *ctx2,
					 struct hetmm_pagemap *pg2)
{
	enum { N = 8, M = 4 };
	char *g = mmap(NULL, (N + M + 2) * PS, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *p = g + PS, *other = p + N * PS, *r;

	REQUIRE(g != MAP_FAILED);
	REQUIRE(mmap(p, N * PS, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == p);
	REQUIRE(mmap(other, M * PS, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == other);
	REQUIRE(maps_in(p, N + M) == 1);   /* merged */
	t_fill(p, N, 30);
	t_fill(other, M, 31);
	t_to_device(pg2, other, M);
	t_to_device(pg, p + 2 * PS, 2);
	CHECK_EQ(t_count_on_device(ctx, p, N), 2);
	CHECK_EQ(maps_in(p, N), 1);
	CHECK_EQ(maps_in(other, M), 1);
	r = grow_and_verify(p, N, 30);
	if (r) {
		CHECK_EQ(maps_in(r, 2 * N), 1);
		t_unmap(r, 2 * N);
	}
	CHECK_EQ(t_count_on_device(ctx2, other, M), M);
	CHECK_EQ(t_verify(other, M, 31), 0);
	t_unmap(g, 1);
	t_unmap(other, M + 1);
}

/*
 * Several contexts: the cases above again with a second context in use
 * on memory of its own (its registrations must not make the first one's
 * exact); then two contexts on one mapping.  The first one was asked for
 * pages 0-1 (brought back since: it holds nothing there, but watches
 * them) and registered the mapping whole; it still moves as one, the
 * record of what was asked moving along; the second context may have
 * the part the first was not asked for, and not the rest.
 */
static void several_contexts(void)
{
	enum { N = 8 };
	struct hetmm_ctx *ctx2;
	struct hetmm_emu *emu2;
	struct hetmm_pagemap *pg2;
	struct hetmm_migrate_report rep = { 0 };
	/* p is a mapping of its own between two inaccessible pages: next
	 * to other (or to memory either context registered) the kernel
	 * would merge it into their mapping, which ctx2 then registers
	 * whole (under ASan's layout, 6 runs of 10). */
	char *guarded = mmap(NULL, (N + 2) * PS, PROT_NONE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *other = t_map(4), *p = guarded + PS, *r;

	REQUIRE(guarded != MAP_FAILED);
	REQUIRE(mprotect(p, N * PS, PROT_READ | PROT_WRITE) == 0);
	t_emu_up(&ctx2, NULL, 64, &emu2, &pg2);
	t_fill(other, 4, 20);
	t_to_device(pg2, other, 4);

	migrate_part_then_grow();
	migrate_across_chunks_then_grow();
	mirror_read_part_then_grow();
	exclusive_part_then_grow();
	chunked_migrations_then_dontunmap();

	t_fill(p, N, 21);
	t_to_device(pg, p, 2);
	CHECK_OK(hetmm_migrate_to_system(ctx, p, 2 * PS, NULL));
	CHECK_EQ(maps_in(p, N), 1);
	r = grow_and_verify(p, N, 21);
	if (r) {
		CHECK(hetmm_migrate_to_device(pg2, r, 2 * PS, &rep) < 0);
		CHECK_EQ(rep.moved, 0);
		CHECK_OK(hetmm_migrate_to_device(pg2, r + 4 * PS, 2 * PS,
						 &rep));
		CHECK_EQ(rep.moved, 2);
		CHECK_EQ(t_count_on_device(ctx2, r + 4 * PS, 2), 2);
		CHECK_EQ(t_verify(r, N, 21), 0);
		CHECK_EQ(t_count_on_device(ctx2, r, N), 0);
		t_unmap(r, 2 * N);
	}

	merged_with_another_contexts(ctx2, pg2);

	CHECK_EQ(t_verify(other, 4, 20), 0);
	t_unmap(other, 4);
	t_unmap(guarded, 1);
	t_unmap(guarded + (N + 1) * PS, 1);
	CHECK_OK(hetmm_emu_destroy(emu2));
	CHECK_OK(hetmm_ctx_destroy(ctx2));
}

int main(void)
{
	/* Larger than any gap between the libraries: mapped below them
	 * all, and the zero source right below it. */
	enum { HOLD = 1024 };
	char *above_zero_src = t_map(HOLD);

	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	t_unmap(above_zero_src, HOLD);
	t_emu_add(ctx, HETMM_MEMORY_DEVICE_PRIVATE, NDEV, &emu, &pg);
	REQUIRE_OK(hetmm_mirror_create(emu, &mir));

	own_memory_is_left_alone();
	a_bss_is_left_alone();
	migrate_part_then_grow();
	migrate_across_chunks_then_grow();
	mirror_read_part_then_grow();
	exclusive_part_then_grow();
	chunked_migrations_then_dontunmap();
	untouched_rest_is_fresh_memory();
	several_contexts();

	CHECK_OK(hetmm_mirror_destroy(mir));
	CHECK_OK(hetmm_emu_destroy(emu));
	CHECK_OK(hetmm_ctx_destroy(ctx));
	return t_done();
}
