/* SPDX-License-Identifier: MIT */
/*
 * test_vma.c - the two ways hetmm learns a VMA agree.
 *
 * Kernels before 6.11 have no PROCMAP_QUERY, and hetmm reads
 * /proc/self/maps instead (vma_find_maps, also what a fork child uses).
 * Where the kernel has both, every VMA of this process is asked both
 * ways, and special mappings ([vvar], [vdso]) must be told apart from
 * ordinary anonymous memory ([heap], [stack], a plain mmap) either way.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "t.h"
#include "compat.h"
#include "uffd.h"
#include "vma.h"

/* Every VMA start of this process, from our own read of the maps file,
 * with whether its name is one of the kernel's special mappings. */
static size_t list_vmas(uintptr_t *starts, int *special, size_t max)
{
	char buf[1 << 16];
	int fd = open("/proc/self/maps", O_RDONLY);
	size_t have = 0, n = 0;
	ssize_t got;

	REQUIRE(fd >= 0);
	while ((got = read(fd, buf + have, sizeof(buf) - 1 - have)) > 0)
		have += (size_t)got;
	close(fd);
	buf[have] = '\0';
	for (char *line = strtok(buf, "\n"); line && n < max;
	     line = strtok(NULL, "\n")) {
		unsigned long lo;
		REQUIRE(sscanf(line, "%lx-", &lo) == 1);
		starts[n] = lo;
		special[n] = strstr(line, "[vvar") || strstr(line, "[vdso]") ||
			     strstr(line, "[vsyscall]");
		n++;
	}
	return n;
}

static void both_ways_agree(void)
{
	struct vmaq q;
	uintptr_t starts[512];
	int special[512];
	size_t n, specials = 0;

	REQUIRE_OK(vmaq_open(&q));
	n = list_vmas(starts, special, 512);
	CHECK(n > 5);
	for (size_t i = 0; i < n; i++) {
		struct vma a, b;
		CHECK_OK(vma_find_maps(starts[i], &a));
		CHECK_EQ(a.start, starts[i]);
		CHECK_EQ(!!(a.flags & VMA_SPECIAL), special[i]);
		specials += special[i];
		/* [vsyscall], above the user half, is no VMA to the query
		 * (nor to anything hetmm manages). */
		if (!q.has_query || starts[i] >= (1ULL << 47))
			continue;
		CHECK_OK(vma_find(&q, starts[i], &b));
		CHECK_EQ(b.start, a.start);
		CHECK_EQ(b.end, a.end);
		CHECK_EQ(b.flags, a.flags);
	}
	/* Every process has a vDSO on these machines. */
	CHECK(specials > 0);
	vmaq_close(&q);
}

static void ordinary_memory_is_not_special(void)
{
	struct vma v;
	char *p = t_map(4);
	char *h = malloc(1);
	int local = 0;

	REQUIRE(h != NULL);
	CHECK_OK(vma_find_maps((uintptr_t)p, &v));
	CHECK_EQ(v.flags & (VMA_SPECIAL | VMA_FILE), 0);
	CHECK_OK(vma_find_maps((uintptr_t)&local, &v));   /* [stack] */
	CHECK_EQ(v.flags & (VMA_SPECIAL | VMA_FILE), 0);
	CHECK_OK(vma_find_maps((uintptr_t)h, &v));        /* [heap] */
	CHECK_EQ(v.flags & VMA_SPECIAL, 0);
	free(h);
	t_unmap(p, 4);
}

/*
 * vma_find_next: the VMA covering an address or, in a hole, the first
 * one above it, so that a hole is one query.  Both ways: PROCMAP_QUERY's
 * COVERING_OR_NEXT_VMA (where the kernel has it) and the maps file.
 */
static void next_vma_each_way(struct vmaq *q, const char *how)
{
	char *p = t_map(7);
	struct vma v;

	/* Pages 1, 3 and 5 left as one-page VMAs, the rest holes (0 and 6
	 * keep them from merging with mappings around). */
	for (int i = 0; i < 7; i += 2)
		REQUIRE(munmap(p + i * PS, PS) == 0);
	for (int i = 1; i < 6; i++) {
		/* In a hole (2, 4): the VMA above it. */
		uintptr_t a = (uintptr_t)(p + i * PS) + (i == 2 ? 17 : 0);
		uintptr_t want = (uintptr_t)(p + (i | 1) * PS);
		if (vma_find_next(q, a, &v)) {
			t_fail(__FILE__, __LINE__, "%s: page %d: no VMA", how,
			       i);
			continue;
		}
		if (v.start != want || v.end != want + PS)
			t_fail(__FILE__, __LINE__, "%s: page %d: VMA %#lx-%#lx,"
			       " want %#lx-%#lx", how, i, (unsigned long)v.start,
			       (unsigned long)v.end, (unsigned long)want,
			       (unsigned long)(want + PS));
		CHECK_EQ(vma_find(q, a, &v) == 0, i & 1);
	}
	/* Nothing above the top of the user half but what no query of
	 * hetmm's reaches ([vsyscall], in the maps file only). */
	int rc = vma_find_next(q, (1ULL << 47) - PS, &v);
	CHECK(rc == -ENOENT || (rc == 0 && v.start >= (1ULL << 47)));
	for (int i = 1; i < 6; i += 2)
		REQUIRE(munmap(p + i * PS, PS) == 0);
}

static void next_vma(void)
{
	struct vmaq q;

	REQUIRE_OK(vmaq_open(&q));
	if (q.has_query)
		next_vma_each_way(&q, "PROCMAP_QUERY");
	q.has_query = false;
	next_vma_each_way(&q, "/proc/self/maps");
	vmaq_close(&q);
}

/*
 * The zero page and huge mappings, told without PAGEMAP_SCAN from the
 * frames root may see (kframes.c), as the kernel's own flags of each
 * frame say (t_kpageflags_at), and as PAGEMAP_SCAN says where the kernel
 * has it: both ways must agree.  Root only, and required: this is what
 * a snapshot's ZERO and PMD rest on before 6.7.
 */
static void page_state(struct vmaq *q, struct vmaq *fb, void *addr,
		       size_t n, uint8_t *got)
{
	struct vma v;

	REQUIRE_OK(vma_find(q, (uintptr_t)addr, &v));
	CHECK_OK(vma_page_flags(fb, &v, (uintptr_t)addr, n, got));
	if (!q->has_scan)
		return;
	uint8_t *scan = malloc(n);   /* a PMD's pages: 2048 at 16 KiB */
	REQUIRE(scan);
	CHECK_OK(vma_page_flags(q, &v, (uintptr_t)addr, n, scan));
	for (size_t i = 0; i < n; i++)
		if ((got[i] ^ scan[i]) & (PG_ZERO | PG_HUGE))
			t_fail(__FILE__, __LINE__, "page %zu of %p: frames say"
			       " %#x, PAGEMAP_SCAN %#x", i, addr, got[i],
			       scan[i]);
	free(scan);
}

static void zero_page_from_frames(struct vmaq *q, struct vmaq *fb)
{
	struct uffd u;
	char *p = t_map(4);
	uint8_t f[4];

	/* 0, 1: the zero page as UFFDIO_ZEROPAGE maps it (as hetmm brings
	 * back a page never written); 2 written; 3 read. */
	REQUIRE_OK(uffd_open(&u, 0));
	REQUIRE_OK(uffd_register(u.fd, (uintptr_t)p, 2 * PS,
				 UFFDIO_REGISTER_MODE_MISSING, NULL));
	REQUIRE(uffd_fill(u.fd, FILL_ZERO, (uintptr_t)p, 0, 2 * PS, 0) ==
		(long)(2 * PS));
	p[2 * PS] = 1;
	(void)*(volatile char *)(p + 3 * PS);
	page_state(q, fb, p, 4, f);
	for (int i = 0; i < 4; i++) {
		int zp = t_zero_page_at(p + i * PS);
		CHECK_EQ(zp, i < 2 ? 1 : i == 2 ? 0 : zp);
		CHECK_EQ(!!(f[i] & PG_ZERO), zp);
		CHECK_EQ(f[i] & PG_HUGE, 0);
		CHECK(f[i] & PG_PRESENT);
	}
	uffd_unregister(u.fd, (uintptr_t)p, 2 * PS);
	uffd_close(&u);
	t_unmap(p, 4);
}

static void huge_page_from_frames(struct vmaq *q, struct vmaq *fb)
{
	char *map;
	char *h = t_thp_block(&map);
	const size_t hp = PMD_PAGES;
	uint8_t *f = malloc(hp);

	if (!h)
		fprintf(stderr, "huge_page_from_frames: no transparent huge "
			"page for an MADV_HUGEPAGE block\n");
	REQUIRE(h != NULL);
	/* The whole block, and a piece from its middle (the rest of the
	 * block read apart). */
	page_state(q, fb, h, hp, f);
	for (size_t i = 0; i < hp; i++)
		CHECK_EQ(f[i] & (PG_HUGE | PG_ZERO), PG_HUGE);
	page_state(q, fb, h + 100 * PS, 50, f);
	for (size_t i = 0; i < 50; i++)
		CHECK_EQ(f[i] & (PG_HUGE | PG_ZERO), PG_HUGE);
	/* A small page next to it is not. */
	h[hp * PS] = 1;
	page_state(q, fb, h + hp * PS, 1, f);
	CHECK_EQ(f[0] & (PG_HUGE | PG_PRESENT), PG_PRESENT);
	free(f);
	REQUIRE(munmap(map, 2 * PMD_SIZE) == 0);
}

static void frames(void)
{
	struct vmaq q, fb;

	REQUIRE_OK(vmaq_open(&q));
	if (!kframes_usable(&q.kf))
		fprintf(stderr, "frames: /proc/self/pagemap's frame numbers "
			"and /proc/kpageflags need root (CAP_SYS_ADMIN)\n");
	REQUIRE(kframes_usable(&q.kf));
	fb = q;
	fb.has_scan = false;
	zero_page_from_frames(&q, &fb);
	huge_page_from_frames(&q, &fb);
	vmaq_close(&q);
}

/* Presence as vma_page_presence tells it by PAGEMAP_SCAN and by a pread
 * of pagemap (kernels before 6.7): both ways agree, page by page. */
static void presence_agrees(struct vmaq *q, struct vmaq *fb, void *addr,
			    size_t n, uint8_t *got)
{
	CHECK_OK(vma_page_presence(fb, (uintptr_t)addr, n, got));
	if (!q->has_scan)
		return;
	uint8_t *scan = malloc(n);
	REQUIRE(scan);
	CHECK_OK(vma_page_presence(q, (uintptr_t)addr, n, scan));
	for (size_t i = 0; i < n; i++)
		if (got[i] != scan[i])
			t_fail(__FILE__, __LINE__, "page %zu of %p: pagemap says"
			       " %#x, PAGEMAP_SCAN %#x", i, addr, got[i],
			       scan[i]);
	free(scan);
}

/*
 * Page by page, in a range registered for write protection: 0 written,
 * 1 a hole, 2 written and write-protected, 3 a hole write-protected (a
 * marker, where the kernel has them: 6.5), 4 the zero page, 5 a hole,
 * 6-7 written; and a THP, written then write-protected whole.
 */
static void presence(void)
{
	struct vmaq q, fb;
	struct uffd u;
	char *p = t_map(8);
	uint8_t f[8];

	REQUIRE_OK(vmaq_open(&q));
	fb = q;
	fb.has_scan = false;
	REQUIRE_OK(uffd_open(&u, UFFD_FEATURE_PAGEFAULT_FLAG_WP |
			     UFFD_FEATURE_WP_UNPOPULATED));
	for (int i = 0; i < 8; i++)
		if (i != 1 && i != 3 && i != 4 && i != 5)
			p[i * PS] = 1;
	REQUIRE_OK(uffd_register(u.fd, (uintptr_t)p, 8 * PS,
				 UFFDIO_REGISTER_MODE_MISSING |
				 UFFDIO_REGISTER_MODE_WP, NULL));
	REQUIRE(uffd_fill(u.fd, FILL_ZERO, (uintptr_t)p + 4 * PS, 0, PS, 0) ==
		(long)PS);
	REQUIRE_OK(uffd_writeprotect(u.fd, (uintptr_t)p + 2 * PS, 2 * PS,
				     WP_ON));
	bool markers = u.features & UFFD_FEATURE_WP_UNPOPULATED;
	presence_agrees(&q, &fb, p, 8, f);
	const uint8_t want[8] = {
		PG_PRESENT, 0, PG_PRESENT | PG_UFFD_WP,
		markers ? PG_SWAPPED | PG_UFFD_WP : 0, PG_PRESENT, 0,
		PG_PRESENT, PG_PRESENT,
	};
	for (int i = 0; i < 8; i++)
		if (f[i] != want[i])
			t_fail(__FILE__, __LINE__, "page %d: %#x, want %#x", i,
			       f[i], want[i]);
	/* Pieces of it, starting and ending anywhere. */
	presence_agrees(&q, &fb, p + 3 * PS, 3, f);
	CHECK_EQ(f[2], 0);
	presence_agrees(&q, &fb, p + 5 * PS, 1, f);
	CHECK_EQ(f[0], 0);
	uffd_unregister(u.fd, (uintptr_t)p, 8 * PS);
	t_unmap(p, 8);

	char *map;
	char *h = t_thp_block(&map);
	uint8_t *hf = malloc(PMD_PAGES);
	REQUIRE(hf);
	if (h) {
		REQUIRE_OK(uffd_register(u.fd, (uintptr_t)h, PMD_SIZE,
					 UFFDIO_REGISTER_MODE_MISSING |
					 UFFDIO_REGISTER_MODE_WP, NULL));
		REQUIRE_OK(uffd_writeprotect(u.fd, (uintptr_t)h, PMD_SIZE,
					     WP_ON));
		presence_agrees(&q, &fb, h, PMD_PAGES, hf);
		for (size_t i = 0; i < PMD_PAGES; i++)
			CHECK_EQ(hf[i], PG_PRESENT | PG_UFFD_WP);
		uffd_unregister(u.fd, (uintptr_t)h, PMD_SIZE);
		REQUIRE(munmap(map, 2 * PMD_SIZE) == 0);
	} else {
		fprintf(stderr, "presence: no transparent huge page here; "
			"the THP case not run\n");
	}
	free(hf);
	uffd_close(&u);
	vmaq_close(&q);
}

int main(int argc, char **argv)
{
	RUN(both_ways_agree);
	RUN(ordinary_memory_is_not_special);
	RUN(next_vma);
	RUN(frames);
	RUN(presence);
	return t_done();
}
