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
 *
 * Memory of hetmm's own that the application cannot unmap (a migration's
 * staging, order.c, where the pages to copy were moved out of the
 * process) is listed here (procread_hold): a read entirely inside it is
 * a memcpy, which ran a quarter faster than process_vm_readv's pinning,
 * page by page copy here (docs/PERFORMANCE.md, "Remote memory").
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

/* The held ranges: [start, end), start 0 for a free entry. */
#define HELD_RANGES 64
static _Atomic uintptr_t held_start[HELD_RANGES], held_end[HELD_RANGES];

bool procread_hold(const void *addr, size_t len)
{
	for (unsigned i = 0; i < HELD_RANGES; i++) {
		uintptr_t free_entry = 0;   /* whose end is 0 */
		if (atomic_compare_exchange_strong(&held_start[i], &free_entry,
						   (uintptr_t)addr)) {
			atomic_store(&held_end[i], (uintptr_t)addr + len);
			return true;
		}
	}
	return false;
}

void procread_release(const void *addr)
{
	for (unsigned i = 0; i < HELD_RANGES; i++) {
		if (atomic_load(&held_start[i]) != (uintptr_t)addr)
			continue;
		atomic_store(&held_end[i], 0);
		atomic_store(&held_start[i], 0);
		return;
	}
}

/* Is [src, src + len) inside one held range?  An entry being filled in
 * reads end 0 and holds nothing yet. */
static bool held(const void *src, size_t len)
{
	uintptr_t s = (uintptr_t)src;
	for (unsigned i = 0; i < HELD_RANGES; i++) {
		uintptr_t start = atomic_load_explicit(&held_start[i],
						       memory_order_acquire);
		if (start && start <= s &&
		    s + len <= atomic_load_explicit(&held_end[i],
						    memory_order_acquire))
			return true;
	}
	return false;
}

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
	if (procread_safe() && !held(src, len)) {
		int rc = vm_read(dst, src, len);
		if (!refused(-rc))
			return rc;
		atomic_store_explicit(&vm_read_state, -1,
				      memory_order_relaxed);
	}
	memcpy(dst, src, len);
	return 0;
}
