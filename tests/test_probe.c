/* SPDX-License-Identifier: MIT */
/*
 * test_probe: hetmm_kernel_probe against what the kernel says when asked
 * directly, in this test, through the same syscalls.
 */
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>

#include "compat.h"
#include "t.h"

/* Features offered by userfaultfd(2), or -errno if it can't be opened. */
static long long raw_uffd_features(int flags)
{
	struct uffdio_api api;
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | flags);
	long long ret;

	if (fd < 0)
		return -errno;
	memset(&api, 0, sizeof(api));
	api.api = UFFD_API;
	api.features = 0;
	ret = ioctl(fd, UFFDIO_API, &api) ? -errno : (long long)api.features;
	close(fd);
	return ret;
}

/* Does PAGEMAP_SCAN answer on /proc/self/pagemap? */
static int raw_has_pagemap_scan(void)
{
	char *page = t_map(1);
	struct page_region regions[4];
	struct pm_scan_arg arg;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	int ok;

	REQUIRE(fd >= 0);
	page[0] = 1;
	memset(&arg, 0, sizeof(arg));
	arg.size = sizeof(arg);
	arg.start = (uintptr_t)page;
	arg.end = (uintptr_t)page + PS;
	arg.vec = (uintptr_t)regions;
	arg.vec_len = 4;
	arg.category_anyof_mask = PAGE_IS_PRESENT;
	arg.return_mask = PAGE_IS_PRESENT;
	ok = ioctl(fd, PAGEMAP_SCAN, &arg) >= 0;
	close(fd);
	t_unmap(page, 1);
	return ok;
}

/* Does PROCMAP_QUERY answer on /proc/self/maps? */
static int raw_has_procmap_query(void)
{
	static int here;
	struct procmap_query q;
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	int ok;

	REQUIRE(fd >= 0);
	memset(&q, 0, sizeof(q));
	q.size = sizeof(q);
	q.query_addr = (uintptr_t)&here;
	ok = ioctl(fd, PROCMAP_QUERY, &q) == 0;
	if (ok)
		CHECK(q.vma_start <= (uintptr_t)&here &&
		      (uintptr_t)&here < q.vma_end);
	close(fd);
	return ok;
}

int main(void)
{
	struct hetmm_kernel_info info, again;
	struct utsname uts;
	long long raw, raw_um;
	int fds = t_count_fds();

	CHECK_EQ(hetmm_kernel_probe(NULL), -EINVAL);

	memset(&info, 0xa5, sizeof(info));
	REQUIRE_OK(hetmm_kernel_probe(&info));

	/* This machine runs as root: userfaultfd(2) works. */
	raw = raw_uffd_features(0);
	raw_um = raw_uffd_features(UFFD_USER_MODE_ONLY);
	CHECK(raw > 0);
	CHECK(info.route != 0);
	CHECK(info.route >= HETMM_UFFD_SYSCALL &&
	      info.route <= HETMM_UFFD_USER_MODE_ONLY);
	/* "best first": when the syscall with kernel faults works, that is
	 * the route, and the features are the ones it offers. */
	if (raw > 0) {
		CHECK_EQ(info.route, HETMM_UFFD_SYSCALL);
		CHECK_EQ(info.route_errno, 0); /* no better route failed */
		CHECK_EQ(info.uffd_features, (uint64_t)raw);
	} else if (info.route == HETMM_UFFD_USER_MODE_ONLY) {
		CHECK(raw_um > 0);
		CHECK_EQ(info.uffd_features, (uint64_t)raw_um);
	}

	/* Flags agree with the feature bits they stand for. */
	CHECK_EQ(info.has_wp,
		 !!(info.uffd_features & UFFD_FEATURE_PAGEFAULT_FLAG_WP));
	if (info.has_move)
		CHECK(info.uffd_features & UFFD_FEATURE_MOVE);
	if (raw > 0)
		CHECK_EQ(info.has_move, !!((uint64_t)raw & UFFD_FEATURE_MOVE));

	/* Range ioctls of an anonymous range: the basic three always, the
	 * write-protect one iff WP faults are offered. */
	CHECK(info.uffd_ioctls & (1ULL << _UFFDIO_COPY));
	CHECK(info.uffd_ioctls & (1ULL << _UFFDIO_ZEROPAGE));
	CHECK(info.uffd_ioctls & (1ULL << _UFFDIO_WAKE));
	CHECK_EQ(!!(info.uffd_ioctls & (1ULL << _UFFDIO_WRITEPROTECT)),
		 info.has_wp);

	CHECK_EQ(info.has_pagemap_scan, raw_has_pagemap_scan());
	CHECK_EQ(info.has_procmap_query, raw_has_procmap_query());
	/* The zero page and huge mappings: PAGEMAP_SCAN, or the frames of
	 * a page we own and their flags, which only root may read. */
	{
		uint64_t flags;
		int frames = t_kpageflags_at(&flags, &flags) == 1;

		CHECK_EQ(info.has_page_state,
			 info.has_pagemap_scan || frames);
	}

	/* THP: "[never]" means off, "[always]" means on; "[madvise]" may be
	 * reported either way. */
	{
		char buf[256] = "";
		FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled",
				"r");

		if (f) {
			if (!fgets(buf, sizeof(buf), f))
				buf[0] = 0;
			fclose(f);
		}
		if (strstr(buf, "[never]") || !f)
			CHECK_EQ(info.has_thp, 0);
		if (strstr(buf, "[always]"))
			CHECK_EQ(info.has_thp, 1);
		CHECK(info.has_thp == 0 || info.has_thp == 1);
	}

	REQUIRE(uname(&uts) == 0);
	CHECK(memchr(info.release, 0, sizeof(info.release)) != NULL);
	CHECK(strcmp(info.release, uts.release) == 0);

	/* The probe is repeatable and leaves no descriptor behind. */
	memset(&again, 0, sizeof(again));
	REQUIRE_OK(hetmm_kernel_probe(&again));
	CHECK_EQ(again.route, info.route);
	CHECK_EQ(again.uffd_features, info.uffd_features);
	CHECK_EQ(again.uffd_ioctls, info.uffd_ioctls);
	CHECK_EQ(again.has_wp, info.has_wp);
	CHECK_EQ(again.has_move, info.has_move);
	CHECK_EQ(again.has_page_state, info.has_page_state);
	for (int i = 0; i < 20; i++)
		REQUIRE_OK(hetmm_kernel_probe(&again));
	CHECK_EQ(t_count_fds(), fds);

	printf("route %d features 0x%llx ioctls 0x%llx wp %d move %d scan %d"
	       " procmap %d thp %d page state %d release %s\n",
	       (int)info.route, (unsigned long long)info.uffd_features,
	       (unsigned long long)info.uffd_ioctls, info.has_wp,
	       info.has_move, info.has_pagemap_scan, info.has_procmap_query,
	       info.has_thp, info.has_page_state, info.release);
	return t_done();
}
