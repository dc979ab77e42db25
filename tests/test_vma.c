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

int main(int argc, char **argv)
{
	RUN(both_ways_agree);
	RUN(ordinary_memory_is_not_special);
	return t_done();
}
