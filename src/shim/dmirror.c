/* SPDX-License-Identifier: MIT */
/*
 * dmirror.c - /dev/hmm_dmirrorN: the kernel test driver's ioctls, served
 * by a hetmm mirror of an emulated device.
 *
 * Each command is checked as the driver checks it (the command block is
 * read first, -EFAULT if it can't be; an unaligned or wrapping range is
 * -EINVAL; an unknown command -EINVAL), then translated to the public API:
 *
 *   READ, WRITE        hetmm_mirror_read/write through a bounce buffer
 *   SNAPSHOT           hetmm_mirror_snapshot
 *   MIGRATE_TO_DEV     hetmm_migrate_to_device, then the device reads the
 *                      range back: every page must be on this device, or
 *                      -ENOENT, as the driver's read of its page table
 *   MIGRATE_TO_SYS     hetmm_migrate_to_system of the pages on this device
 *   EXCLUSIVE          device atomics: the pages move to this device, so
 *                      any CPU access faults them back, which is what
 *                      revokes exclusive access in the kernel
 *   CHECK_EXCLUSIVE    -EPERM while a page still is held that way
 *   RELEASE            every page of the device goes back to system memory
 *   FLAGS              the mirror's flags word becomes npages (the newer
 *                      driver's; 6.1's has no such command and refuses it
 *                      with -EINVAL, as it does any number it lacks, so no
 *                      caller built for it sends it)
 *
 * and close of the last descriptor of an open (the driver's release)
 * evicts the device as the driver does.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shim.h"

#define PS HETMM_PAGE_SIZE
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

static bool unit_coherent(int unit)
{
	return unit >= 2;
}

int dmirror_open(struct shim_file *f)
{
	struct hetmm_emu *emu;
	int rc = shim_emu(f->unit, &emu);
	/* A device this build can't host is a device node that isn't there,
	 * as on a kernel whose test driver was loaded without it. */
	if (rc == -EOPNOTSUPP)
		return -ENOENT;
	if (rc)
		return rc;
	return hetmm_mirror_create(emu, &f->mirror);
}

/* Sort without allocating (qsort may take the program's heap). */
static void sort_addrs(uintptr_t *a, size_t n)
{
	for (size_t gap = n / 2; gap; gap /= 2) {
		for (size_t i = gap; i < n; i++) {
			uintptr_t v = a[i];
			size_t j = i;
			for (; j >= gap && a[j - gap] > v; j -= gap)
				a[j] = a[j - gap];
			a[j] = v;
		}
	}
}

/*
 * Every page of the device back to system memory, whoever migrated it:
 * the driver's eviction of its memory.  Found through the pages'
 * metadata, migrated back a run of consecutive addresses at a time.
 */
static void dmirror_evict(int unit)
{
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pgmap;
	struct hetmm_pagemap_info info;
	struct hetmm_ctx *ctx = shim_ctx_peek();
	if (!ctx || shim_emu(unit, &emu) || hetmm_emu_pagemap(emu, &pgmap) ||
	    hetmm_pagemap_get_info(pgmap, &info))
		return;
	uint64_t used = info.nr_pages - info.nr_free;
	if (!used)
		return;
	uintptr_t *owners = malloc(used * sizeof(*owners));
	if (!owners)
		return;
	size_t n = 0;
	for (uint64_t i = 0; i < info.nr_pages && n < used; i++) {
		hetmm_pfn_t pfn = { info.first_pfn.val + i };
		struct hetmm_page *page;
		struct hetmm_page_info pi;
		if (hetmm_pfn_to_page(pfn, &page) ||
		    hetmm_page_get_info(page, &pi))
			continue;
		if (pi.refcount && pi.owner)
			owners[n++] = pi.owner;
	}
	sort_addrs(owners, n);
	for (size_t i = 0; i < n;) {
		size_t k = 1;
		while (i + k < n && owners[i + k] == owners[i] + k * PS)
			k++;
		hetmm_migrate_to_system(ctx, (void *)owners[i], k * PS, NULL);
		i += k;
	}
	free(owners);
}

void dmirror_release(struct shim_file *f)
{
	if (!f->mirror)
		return;
	hetmm_mirror_destroy(f->mirror);
	f->mirror = NULL;
	dmirror_evict(f->unit);
}

/* ------------------------------------------------------------------------
 * Exclusive ranges
 */

/* Under f->lock: room for n more ranges. */
static int excl_reserve(struct shim_file *f, size_t n)
{
	if (f->nr_excl + n <= f->cap_excl)
		return 0;
	size_t cap = f->cap_excl ? f->cap_excl : 8;
	while (cap < f->nr_excl + n)
		cap *= 2;
	struct shim_range *r = realloc(f->excl, cap * sizeof(*r));
	if (!r)
		return -ENOMEM;
	f->excl = r;
	f->cap_excl = cap;
	return 0;
}

/* Under f->lock: forget [start, end); a range it splits keeps both ends. */
static int excl_remove(struct shim_file *f, uintptr_t start, uintptr_t end)
{
	size_t n = f->nr_excl;
	for (size_t i = 0; i < n; i++) {
		struct shim_range *r = &f->excl[i];
		if (r->end <= start || r->start >= end)
			continue;
		if (r->start < start && r->end > end) {
			if (excl_reserve(f, 1))
				return -ENOMEM;
			r = &f->excl[i];
			f->excl[f->nr_excl++] = (struct shim_range){ end,
								     r->end };
			r->end = start;
		} else if (r->start < start) {
			r->end = start;
		} else if (r->end > end) {
			r->start = end;
		} else {
			r->start = r->end = 0;  /* emptied */
		}
	}
	size_t out = 0;
	for (size_t i = 0; i < f->nr_excl; i++)
		if (f->excl[i].start < f->excl[i].end)
			f->excl[out++] = f->excl[i];
	f->nr_excl = out;
	return 0;
}

static int excl_add(struct shim_file *f, uintptr_t start, uintptr_t end)
{
	int rc = excl_remove(f, start, end);
	if (!rc)
		rc = excl_reserve(f, 1);
	if (!rc)
		f->excl[f->nr_excl++] = (struct shim_range){ start, end };
	return rc;
}

static bool excl_has(struct shim_file *f, uintptr_t addr)
{
	for (size_t i = 0; i < f->nr_excl; i++)
		if (addr >= f->excl[i].start && addr < f->excl[i].end)
			return true;
	return false;
}

/* ------------------------------------------------------------------------
 * The commands
 */

static bool prot_local(uint8_t p)
{
	return p != HETMM_PROT_ERROR &&
	       ((p & 0xf0) == HETMM_PROT_DEV_PRIVATE_LOCAL ||
		(p & 0xf0) == HETMM_PROT_DEV_COHERENT_LOCAL);
}

/* A range the caller gave: the mirror's -EINVAL for it (outside the
 * user half) is the kernel's -EFAULT for memory with nothing there. */
static int range_errno(int rc)
{
	return rc == -EINVAL ? -EFAULT : rc;
}

/*
 * A device write to pages it holds exclusively: the driver's entries for
 * them are not writable, so the write faults, and the fault gives the
 * pages back to the CPU (ending the hold) before it checks the access
 * against the mapping as it is now.  Here: the held pages go back to
 * system memory, which drops the mirror's entries, so the write refaults.
 */
static void excl_end(struct shim_file *f, struct hetmm_ctx *ctx,
		     uintptr_t start, uintptr_t end)
{
	for (;;) {
		struct shim_range r = { 0, 0 };
		pthread_mutex_lock(&f->lock);
		for (size_t i = 0; i < f->nr_excl; i++) {
			if (f->excl[i].end > start && f->excl[i].start < end) {
				r.start = MAX(f->excl[i].start, start);
				r.end = MIN(f->excl[i].end, end);
				break;
			}
		}
		if (r.start < r.end && excl_remove(f, r.start, r.end))
			r.end = r.start;   /* no memory: leave it held */
		pthread_mutex_unlock(&f->lock);
		if (r.start >= r.end)
			return;
		if (ctx)
			hetmm_migrate_to_system(ctx, (void *)r.start,
						r.end - r.start, NULL);
	}
}

/*
 * Before fork: the kernel gives device-exclusive pages back to the CPU
 * when it copies the page tables, so parent and child get them as
 * ordinary copy-on-write pages.  So here, for every hold of f.
 */
void dmirror_fork(struct shim_file *f, struct hetmm_ctx *ctx)
{
	excl_end(f, ctx, 0, UINTPTR_MAX);
}

static int do_read(struct shim_file *f, struct shim_dmirror_cmd *c,
		   uint64_t size)
{
	uint64_t n = size / PS, faults = 0;
	void *buf = malloc(size);
	if (!buf)
		return -ENOMEM;
	int rc = hetmm_mirror_read(f->mirror, (void *)(uintptr_t)c->addr, buf,
				   n, &faults);
	if (!rc)
		rc = shim_copy_out(c->ptr, buf, size);
	free(buf);
	c->cpages = n;
	c->faults = faults;
	return range_errno(rc);
}

static int do_write(struct shim_file *f, struct shim_dmirror_cmd *c,
		    uint64_t size)
{
	uint64_t n = size / PS, faults = 0;
	void *buf = malloc(size);
	if (!buf)
		return -ENOMEM;
	int rc = shim_copy_in(buf, c->ptr, size);
	if (!rc) {
		excl_end(f, shim_ctx_peek(), c->addr, c->addr + size);
		rc = range_errno(hetmm_mirror_write(f->mirror,
						    (void *)(uintptr_t)c->addr,
						    buf, n, &faults));
	}
	free(buf);
	c->cpages = n;
	c->faults = faults;
	return rc;
}

/*
 * The driver snapshots a range 64 pages at a time (its arrays on the
 * stack) and acts on each piece before the next: SNAPSHOT copies it out,
 * MIGRATE_TO_SYS migrates it or stops with -EINVAL at a hole.  So does
 * the shim, so that a command costs memory of one piece whatever npages
 * says, and ends where the driver's would: at once for a buffer too short
 * (fuzzer finding F4: the whole range snapshotted first took gigabytes
 * and minutes before that -EFAULT).  A piece is what one snapshot call
 * takes in one range fault (512 pages): each call waits for the fault
 * handler once, so smaller pieces would only cost more.  The bytes
 * copied before an EFAULT are the same either way.
 */
#define SNAP_PIECE 512

/* What a command does with one piece: 0 to go on, or how to stop. */
typedef int (*piece_fn)(struct shim_file *f, uint64_t addr,
			const uint8_t *prot, uint64_t n, void *arg);

static int snapshot_pieces(struct shim_file *f, uint64_t addr, uint64_t n,
			   piece_fn fn, void *arg)
{
	uint8_t prot[SNAP_PIECE];
	for (uint64_t done = 0; done < n;) {
		uint64_t k = MIN(n - done, (uint64_t)SNAP_PIECE);
		uint64_t a = addr + done * PS;
		int rc = hetmm_mirror_snapshot(f->mirror, (void *)(uintptr_t)a,
					       k, prot);
		if (rc)
			return range_errno(rc);
		rc = fn(f, a, prot, k, arg);
		if (rc)
			return rc;
		done += k;
	}
	return 0;
}

/* read_back(): -ENOENT at the first page not on this device. */
static int all_local(struct shim_file *f, uint64_t addr, const uint8_t *prot,
		     uint64_t n, void *arg)
{
	(void)f, (void)addr, (void)arg;
	for (uint64_t i = 0; i < n; i++)
		if (!prot_local(prot[i]))
			return -ENOENT;
	return 0;
}

/* The most read_back() holds at once: what a migration costs in memory
 * beyond the pages it moves, however large the range. */
#define READ_BACK_PIECE (32u << 20)

/*
 * The device reads back what it holds of the range: -ENOENT unless every
 * page is in this device's memory.  Piece by piece through one buffer, so
 * that a migration of gigabytes needs no bounce buffer of its size; only
 * a failure after the check (a racing munmap, a bad buffer) can leave the
 * caller's buffer partly written, which copy_to_user() may too.
 */
static int read_back(struct shim_file *f, struct shim_dmirror_cmd *c,
		     uint64_t size)
{
	uint64_t n = size / PS;
	int rc = snapshot_pieces(f, c->addr, n, all_local, NULL);
	if (rc)
		return rc;
	uint64_t piece = MIN(size, (uint64_t)READ_BACK_PIECE);
	char *buf = malloc(piece);
	if (!buf)
		return -ENOMEM;
	for (uint64_t off = 0; off < size && !rc; off += piece) {
		uint64_t len = MIN(piece, size - off);
		rc = range_errno(hetmm_mirror_read(
			f->mirror, (void *)(uintptr_t)(c->addr + off), buf,
			len / PS, NULL));
		if (!rc)
			rc = shim_copy_out(c->ptr + off, buf, len);
	}
	free(buf);
	c->cpages = n;
	c->faults = 0;
	return rc;
}

/*
 * HMM_DMIRROR_FLAG_FAIL_ALLOC makes the driver's next allocation of a
 * device page fail once, to test its fallback: a huge page that can't be
 * had is migrated as base pages instead, either way.  hetmm's devices
 * take their frames from hetmm's pool, not from a driver allocator the
 * shim could fail, and a THP moves as base pages only where the pool has
 * no aligned run: the flag is spent by the next migration, which goes as
 * it would have (the test checks only that every byte arrives).
 */
static void spend_fail_alloc(struct shim_file *f)
{
	atomic_fetch_and(&f->flags, ~SHIM_DMIRROR_FLAG_FAIL_ALLOC);
}

static int do_migrate_to_dev(struct shim_file *f, struct shim_dmirror_cmd *c,
			     uint64_t size)
{
	spend_fail_alloc(f);
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pgmap;
	int rc = shim_emu(f->unit, &emu);
	if (!rc)
		rc = hetmm_emu_pagemap(emu, &pgmap);
	if (rc)
		return rc;
	struct hetmm_migrate_report rep = { 0, 0, NULL };
	rc = hetmm_migrate_to_device(pgmap, (void *)(uintptr_t)c->addr, size,
				     &rep);
	/* Pages that could not move show up in the read back. */
	if (rc && rc != -ENOENT && rc != -ENOMEM && rc != -ENXIO)
		return rc;
	pthread_mutex_lock(&f->lock);
	excl_remove(f, c->addr, c->addr + size);
	pthread_mutex_unlock(&f->lock);
	return read_back(f, c, size);
}

/*
 * MIGRATE_TO_SYS, a piece at a time: the runs of this device's pages
 * move (the driver selects its own); a hole or an unreadable mapping
 * ends the command with -EINVAL once the pages before it have moved, as
 * the driver's walk of the VMAs does.
 */
static int migrate_piece(struct shim_file *f, uint64_t addr,
			 const uint8_t *prot, uint64_t n, void *arg)
{
	struct shim_dmirror_cmd *c = arg;
	struct hetmm_ctx *ctx = shim_ctx();
	(void)f;
	uint64_t end = 0;
	while (end < n && prot[end] != HETMM_PROT_ERROR)
		end++;
	for (uint64_t i = 0; i < end;) {
		if (!prot_local(prot[i])) {
			i++;
			continue;
		}
		uint64_t k = 1;
		while (i + k < end && prot_local(prot[i + k]))
			k++;
		struct hetmm_migrate_report rep = { 0, 0, NULL };
		int rc = hetmm_migrate_to_system(ctx,
						 (void *)(uintptr_t)(addr + i * PS),
						 k * PS, &rep);
		c->cpages += rep.moved;
		if (rc && rc != -ENOENT)
			return rc;
		i += k;
	}
	return end < n ? -EINVAL : 0;
}

static int do_migrate_to_sys(struct shim_file *f, struct shim_dmirror_cmd *c,
			     uint64_t size)
{
	if (!shim_ctx())
		return -ENOMEM;
	spend_fail_alloc(f);
	return snapshot_pieces(f, c->addr, size / PS, migrate_piece, c);
}

/* SNAPSHOT: each piece copied out as it is taken. */
static int copy_piece(struct shim_file *f, uint64_t addr, const uint8_t *prot,
		      uint64_t n, void *arg)
{
	struct shim_dmirror_cmd *c = arg;
	(void)f, (void)addr;
	if (shim_copy_out(c->ptr + c->cpages, prot, n))
		return -EFAULT;
	c->cpages += n;
	return 0;
}

static int do_snapshot(struct shim_file *f, struct shim_dmirror_cmd *c,
		       uint64_t size)
{
	return snapshot_pieces(f, c->addr, size / PS, copy_piece, c);
}

/*
 * Exclusive access for device atomics.  The kernel leaves the page where
 * it is and replaces the CPU's mapping by a device-exclusive entry that
 * any CPU access turns back, telling the device.  Moving the page into
 * this device-private memory has the same effect here: the CPU's next
 * access faults it back and the device loses it.  All pages or -EBUSY,
 * then the device reads the range back.
 */
static int do_exclusive(struct shim_file *f, struct shim_dmirror_cmd *c,
			uint64_t size)
{
	/* A coherent device's pages stay CPU-mapped, so its exclusive pages
	 * go into the custody of its device-private sibling (unit - 2). */
	bool coherent = unit_coherent(f->unit);
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pgmap;
	int rc = shim_emu(coherent ? f->unit - 2 : f->unit, &emu);
	if (!rc)
		rc = hetmm_emu_pagemap(emu, &pgmap);
	if (rc)
		return rc;
	/* A coherent mirror's read would take pages out of the sibling's
	 * custody again: it reads the range first. */
	if (coherent) {
		rc = do_read(f, c, size);
		c->faults = 0;
		if (rc)
			return rc;
	}
	uint64_t n = size / PS;
	uint8_t *status = calloc(n, 1);
	if (!status)
		return -ENOMEM;
	struct hetmm_migrate_report rep = { 0, 0, status };
	rc = hetmm_migrate_to_device(pgmap, (void *)(uintptr_t)c->addr, size,
				     &rep);
	for (uint64_t i = 0; i < n && (!rc || rc == -ENOENT); i++)
		if (status[i] != HETMM_MIGRATE_MOVED &&
		    status[i] != HETMM_MIGRATE_ALREADY)
			rc = -EBUSY;
	free(status);
	if (rc && rc != -ENOENT)
		return -EBUSY;
	if (!coherent) {
		rc = read_back(f, c, size);
		if (rc)
			return rc == -ENOENT ? -EBUSY : rc;
	}
	pthread_mutex_lock(&f->lock);
	rc = excl_add(f, c->addr, c->addr + size);
	pthread_mutex_unlock(&f->lock);
	if (!rc)
		c->cpages = n;
	return rc;
}

/* CHECK_EXCLUSIVE: -EPERM at a page of this device still held. */
static int held_piece(struct shim_file *f, uint64_t addr, const uint8_t *prot,
		      uint64_t n, void *arg)
{
	int rc = 0;
	(void)arg;
	pthread_mutex_lock(&f->lock);
	for (uint64_t i = 0; i < n && !rc; i++)
		if (prot_local(prot[i]) && excl_has(f, addr + i * PS))
			rc = -EPERM;
	pthread_mutex_unlock(&f->lock);
	return rc;
}

/* Under f->lock: the lowest part of [start, end) that a hold covers,
 * false if none. */
static bool first_held(struct shim_file *f, uint64_t start, uint64_t end,
		       struct shim_range *r)
{
	bool found = false;
	for (size_t i = 0; i < f->nr_excl; i++) {
		uint64_t lo = MAX(f->excl[i].start, start);
		uint64_t hi = MIN(f->excl[i].end, end);
		if (lo < hi && (!found || lo < r->start)) {
			*r = (struct shim_range){ lo, hi };
			found = true;
		}
	}
	return found;
}

/*
 * Only the pages a hold covers can be held: the driver looks at its own
 * entries, not at every page of the range, so the work is bounded by
 * what was made exclusive, not by npages.
 */
static int do_check_exclusive(struct shim_file *f,
			      struct shim_dmirror_cmd *c, uint64_t size)
{
	uint64_t end = c->addr + size;
	for (uint64_t cur = c->addr; cur < end;) {
		struct shim_range r = { 0, 0 };
		pthread_mutex_lock(&f->lock);
		bool found = first_held(f, cur, end, &r);
		pthread_mutex_unlock(&f->lock);
		if (!found)
			return 0;
		int rc = snapshot_pieces(f, r.start, (r.end - r.start) / PS,
					 held_piece, NULL);
		if (rc)
			return rc;
		cur = r.end;
	}
	return 0;
}

long dmirror_ioctl(struct shim_file *f, unsigned int cmd, void *arg)
{
	struct shim_dmirror_cmd c;
	if (!f->mirror)
		return -EINVAL;
	if (shim_copy_in(&c, (uintptr_t)arg, sizeof(c)))
		return -EFAULT;
	if (c.addr & (PS - 1))
		return -EINVAL;
	/* As the driver computes it: the page count shifted, modulo 2^64. */
	uint64_t size = c.npages << HETMM_PAGE_SHIFT;
	if (c.addr >= c.addr + size)
		return -EINVAL;
	c.cpages = 0;
	c.faults = 0;

	int rc;
	switch (cmd) {
	case SHIM_DMIRROR_READ:
		rc = do_read(f, &c, size);
		break;
	case SHIM_DMIRROR_WRITE:
		rc = do_write(f, &c, size);
		break;
	case SHIM_DMIRROR_MIGRATE_TO_DEV:
		rc = do_migrate_to_dev(f, &c, size);
		break;
	case SHIM_DMIRROR_MIGRATE_TO_SYS:
		rc = do_migrate_to_sys(f, &c, size);
		break;
	case SHIM_DMIRROR_EXCLUSIVE:
		rc = do_exclusive(f, &c, size);
		break;
	case SHIM_DMIRROR_CHECK_EXCLUSIVE:
		rc = do_check_exclusive(f, &c, size);
		break;
	case SHIM_DMIRROR_SNAPSHOT:
		rc = do_snapshot(f, &c, size);
		break;
	case SHIM_DMIRROR_RELEASE:
		dmirror_evict(f->unit);
		rc = 0;
		break;
	case SHIM_DMIRROR_FLAGS:
		atomic_store(&f->flags, c.npages);
		rc = 0;
		break;
	default:
		return -EINVAL;
	}
	if (rc)
		return rc;
	if (shim_copy_out((uintptr_t)arg, &c, sizeof(c)))
		return -EFAULT;
	return 0;
}

/*
 * mmap of the device: the driver maps a fresh zeroed page at every address
 * of the new mapping at once, with the mapping's protection (read-only
 * until written, in a private writable mapping).  A new memfd per mapping
 * gives the same: pages of its own, a file page read into each.
 */
void *dmirror_mmap(struct shim_file *f, void *addr, size_t len, int prot,
		   int flags, off_t off)
{
	int err;
	if (!len || (off & (off_t)(PS - 1))) {
		errno = EINVAL;
		return MAP_FAILED;
	}
	if (f->accmode == O_WRONLY ||
	    ((flags & MAP_TYPE) != MAP_PRIVATE && (prot & PROT_WRITE) &&
	     f->accmode != O_RDWR)) {
		errno = EACCES;
		return MAP_FAILED;
	}
	size_t size = (len + PS - 1) & ~(size_t)(PS - 1);
	if (size < len) {
		errno = ENOMEM;
		return MAP_FAILED;
	}
	int fd = memfd_create("hmm_dmirror_pages", MFD_CLOEXEC);
	if (fd < 0)
		return MAP_FAILED;
	if (ftruncate(fd, (off_t)size)) {
		err = errno;
		shim_real_close(fd);
		errno = err;
		return MAP_FAILED;
	}
	void *p = shim_real_mmap(addr, len, prot, flags, fd, 0);
	err = errno;
	shim_real_close(fd);
	if (p == MAP_FAILED) {
		errno = err;
		return MAP_FAILED;
	}
	if (prot & PROT_READ) {
		bool shared_write = (flags & MAP_TYPE) != MAP_PRIVATE &&
				    (prot & PROT_WRITE);
		if (madvise(p, size, shared_write ? MADV_POPULATE_WRITE
						  : MADV_POPULATE_READ)) {
			err = errno;
			munmap(p, len);
			errno = err == EINVAL ? ENOMEM : err;
			return MAP_FAILED;
		}
	}
	return p;
}
