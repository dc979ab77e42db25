/* SPDX-License-Identifier: MIT */
/*
 * procread.c - a driver's read of process memory that fails rather than
 * faults (hetmm_copy_from_process).
 *
 * The source of a copy to the device is the process's own memory, which
 * another thread may munmap or mremap while the copy runs.  The kernel's
 * copy reads the pages it isolated and never meets that; a userspace
 * copy engine's memcpy would take SIGSEGV.  process_vm_readv(2) on our
 * own pid reads through the kernel's page-table walk instead: a page
 * with no mapping ends the read with EFAULT, and a missing page of a
 * registered range raises a userfault like any access (the handler
 * serves it).  One call takes the whole run: the kernel pins and copies
 * it in batches of its own, so more iovecs would only add calls.
 *
 * A seccomp filter may refuse the call (ENOSYS, EPERM): then the read is
 * a memcpy, as before, and the hazard is open; hetmm_kernel_probe()
 * says so (has_process_read), and `hetmm info` prints it.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "hetmm.h"
#include "procread.h"

/* 0 not tried yet, 1 process_vm_readv works, -1 refused. */
static atomic_int vm_read_state;

static bool refused(int err)
{
	return err == ENOSYS || err == EPERM;
}

/* process_vm_readv of the whole of [src, src + len): 0, -EFAULT where
 * part of it has no readable mapping, or the call's own errno. */
static int vm_read(void *dst, const void *src, size_t len)
{
	pid_t self = getpid();
	while (len) {
		struct iovec local = { .iov_base = dst, .iov_len = len };
		struct iovec remote = { .iov_base = (void *)src,
					.iov_len = len };
		ssize_t got = process_vm_readv(self, &local, 1, &remote, 1, 0);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return -errno;
		if (got == 0)
			return -EFAULT;
		/* Short: it stopped at a page it could not read; the next
		 * call says why. */
		dst = (char *)dst + got;
		src = (const char *)src + got;
		len -= (size_t)got;
	}
	return 0;
}

bool procread_safe(void)
{
	int st = atomic_load_explicit(&vm_read_state, memory_order_relaxed);
	if (st == 0) {
		char a = 1, b = 0;
		st = refused(-vm_read(&b, &a, 1)) ? -1 : 1;
		atomic_store_explicit(&vm_read_state, st,
				      memory_order_relaxed);
	}
	return st > 0;
}

int hetmm_copy_from_process(void *dst, const void *src, size_t len)
{
	if (!dst || !src)
		return -EINVAL;
	if (!len)
		return 0;
	if (procread_safe()) {
		int rc = vm_read(dst, src, len);
		if (!refused(-rc))
			return rc;
		atomic_store_explicit(&vm_read_state, -1,
				      memory_order_relaxed);
	}
	memcpy(dst, src, len);
	return 0;
}
