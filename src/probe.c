/* SPDX-License-Identifier: MIT */
/*
 * probe.c - what the running kernel offers, found by trying it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "compat.h"
#include "procread.h"
#include "uffd.h"
#include "vma.h"

/* The ioctls a MISSING|WP registration of an anonymous page offers. */
static uint64_t probe_range_ioctls(int fd)
{
	void *p = mmap(NULL, PAGE_SIZE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 0;
	uint64_t ioctls = 0;
	if (uffd_register(fd, (uintptr_t)p, PAGE_SIZE,
			  UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
			  &ioctls) &&
	    uffd_register(fd, (uintptr_t)p, PAGE_SIZE,
			  UFFDIO_REGISTER_MODE_MISSING, &ioctls))
		ioctls = 0;
	munmap(p, PAGE_SIZE);
	return ioctls;
}

int hetmm_kernel_probe(struct hetmm_kernel_info *info)
{
	if (!info)
		return -EINVAL;
	memset(info, 0, sizeof(*info));

	struct uffd u;
	/* Fault features only: an event feature (UNMAP, REMOVE, ...) would
	 * make our own munmap wait for a reader that isn't there, and FORK
	 * may need CAP_SYS_PTRACE. */
	int rc = uffd_open(&u, UFFD_FEATURE_PAGEFAULT_FLAG_WP |
			   UFFD_FEATURE_MOVE | UFFD_FEATURE_THREAD_ID);
	info->route_errno = u.route_errno;
	if (rc == 0) {
		info->route = u.route;
		info->uffd_features = u.offered;
		info->uffd_ioctls = probe_range_ioctls(u.fd);
		uffd_close(&u);
	} else if (!info->route_errno) {
		info->route_errno = rc;
	}
	info->has_move = !!(info->uffd_features & UFFD_FEATURE_MOVE);
	info->has_wp = !!(info->uffd_features & UFFD_FEATURE_PAGEFAULT_FLAG_WP);

	struct vmaq q;
	if (vmaq_open(&q) == 0) {
		info->has_pagemap_scan = q.has_scan;
		info->has_procmap_query = q.has_query;
		info->has_page_state = q.has_scan || kframes_usable(&q.kf);
		vmaq_close(&q);
	}
	info->has_thp = vma_thp_enabled();
	info->has_process_read = procread_safe();

	struct utsname uts;
	if (uname(&uts) == 0)
		snprintf(info->release, sizeof(info->release), "%s",
			 uts.release);
	return 0;
}
