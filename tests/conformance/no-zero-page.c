/* SPDX-License-Identifier: MIT */
/*
 * no-zero-page: the condition of that name in known-failures, built and
 * run by conformance.sh.  Prints "yes" where this kernel does not map its
 * shared zero page on a read fault of untouched private anonymous memory
 * (it gives a fresh page instead), "no" where it does (as Linux 6.1).
 * Where that can't be told (not root) it prints nothing and fails.  It
 * asks the kernel as test_mirror does: t_read_maps_zero_page in t.h.
 */
/* Built alone, without the library: the kernel's page size. */
#define PS ((size_t)sysconf(_SC_PAGESIZE))
#include "t.h"

int main(void)
{
	int zp = t_read_maps_zero_page();

	if (zp < 0) {
		fprintf(stderr, "no-zero-page: can't tell: /proc/self/pagemap's"
			" PFNs and /proc/kpageflags need root\n");
		return 2;
	}
	printf("%s\n", zp ? "no" : "yes");
	return 0;
}
