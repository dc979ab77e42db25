/* SPDX-License-Identifier: MIT */
/*
 * emu.c - the emulated device: memory, copy engine and mirrors.
 *
 * The device's memory is an allocation of its own, which hetmm registers
 * and migrates into by moving pages (HETMM_PAGEMAP_REMAP); its copy engine
 * is memcpy, for pages the kernel won't move and for device writes.  A mirror is the device's page table over the process, filled by
 * range_fault() and emptied by invalidations, as lib/test_hmm.c's dmirror
 * keeps an xarray filled by hmm_range_fault().
 *
 * A mirror's lock covers its page table and device-memory copies, never a
 * touch of process memory: that can fault, and the fault handler may need
 * the lock to invalidate.  Process memory is reached with
 * process_vm_readv/writev, so a page that lost its access since the entry
 * was made yields EFAULT, not a signal.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "compat.h"
#include "back.h"
#include "ctx.h"
#include "emu.h"
#include "entry.h"
#include "notifier.h"
#include "pagemap.h"
#include "range.h"
#include "shadow.h"
#include "vma.h"
#include "vtab.h"

struct hetmm_mirror {
	struct hetmm_mirror *next;        /* emu->mirrors, under ctx->lock */
	struct hetmm_emu *emu;
	struct hetmm_notifier *notifier;  /* the whole address space */
	pthread_mutex_t lock;             /* the device page table */
	struct vtab pt;
	atomic_uint_fast64_t faults;
	atomic_uint_fast64_t events[HETMM_EVENT_COUNT];
};

struct hetmm_emu {
	struct hetmm_emu *next;           /* ctx->emus, under ctx->lock */
	struct hetmm_ctx *ctx;
	struct hetmm_pagemap *pgmap;
	char *map;                        /* the mapping, for munmap */
	size_t map_size;
	char *mem;                        /* device page 0, 2 MiB aligned */
	size_t size;
	int fd;                           /* coherent: the memfd, else -1 */
	struct hetmm_mirror *mirrors;     /* under ctx->lock */
};

static char *emu_page(struct hetmm_emu *emu, uint64_t index)
{
	return emu->mem + index * PAGE_SIZE;
}

static int emu_copy_to_device(struct hetmm_pagemap *pgmap, uint64_t index,
			      const void *src, size_t nr)
{
	struct hetmm_emu *emu = pgmap->drvdata;
	memcpy(emu_page(emu, index), src, nr * PAGE_SIZE);
	return 0;
}

static int emu_copy_from_device(struct hetmm_pagemap *pgmap, void *dst,
				uint64_t index, size_t nr)
{
	struct hetmm_emu *emu = pgmap->drvdata;
	memcpy(dst, emu_page(emu, index), nr * PAGE_SIZE);
	return 0;
}

static void *emu_page_address(struct hetmm_pagemap *pgmap, uint64_t index)
{
	return emu_page(pgmap->drvdata, index);
}

static const struct hetmm_pagemap_ops emu_ops = {
	.copy_to_device = emu_copy_to_device,
	.copy_from_device = emu_copy_from_device,
	.page_address = emu_page_address,
};

static int emu_page_fd(struct hetmm_pagemap *pgmap, uint64_t index,
		       uint64_t *offset)
{
	struct hetmm_emu *emu = pgmap->drvdata;
	*offset = index * PAGE_SIZE;
	return emu->fd;
}

/* A free coherent frame gives its memory back and reads as zeroes. */
static void emu_page_free(struct hetmm_pagemap *pgmap, uint64_t index)
{
	struct hetmm_emu *emu = pgmap->drvdata;
	fallocate(emu->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		  (off_t)(index * PAGE_SIZE), PAGE_SIZE);
}

/*
 * The copy engine of the coherent device reads process pages that other
 * threads may be writing: the write protection hetmm set makes those
 * writes wait, which a race detector can't see; word loads it can.
 */
static int emu_coherent_copy_to(struct hetmm_pagemap *pgmap, uint64_t index,
				const void *src, size_t nr)
{
	struct hetmm_emu *emu = pgmap->drvdata;
	const uint64_t *s = src;
	uint64_t *d = (uint64_t *)emu_page(emu, index);
	for (size_t w = 0; w < nr * (PAGE_SIZE / 8); w++)
		d[w] = __atomic_load_n(&s[w], __ATOMIC_RELAXED);
	return 0;
}

static const struct hetmm_pagemap_ops emu_coherent_ops = {
	.copy_to_device = emu_coherent_copy_to,
	.copy_from_device = emu_copy_from_device,
	.page_address = emu_page_address,
	.page_free = emu_page_free,
	.page_fd = emu_page_fd,
};

/*
 * Coherent device memory is a memfd: the device's own view is a shared
 * mapping of it, and hetmm maps its pages at the process's addresses.
 */
static int emu_map_coherent(struct hetmm_emu *emu, uint64_t nr_pages)
{
	const size_t align = CHUNK_PAGES * PAGE_SIZE;
	emu->size = nr_pages * PAGE_SIZE;
	emu->map_size = emu->size + align;
	emu->fd = memfd_create("hetmm-coherent", MFD_CLOEXEC);
	if (emu->fd < 0)
		return -errno;
	if (ftruncate(emu->fd, (off_t)emu->size))
		return -errno;
	/* Reserve room to align, then map the file at the aligned spot. */
	char *p = mmap(NULL, emu->map_size, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	emu->map = p;
	emu->mem = (char *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
	if (mmap(emu->mem, emu->size, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_FIXED, emu->fd, 0) == MAP_FAILED)
		return -errno;
	madvise(p, emu->map_size, MADV_DONTFORK);
	return 0;
}

/*
 * Device memory is private anonymous memory, 2 MiB aligned so that huge
 * pages can move in whole, and registered by hetmm as a remapping pagemap:
 * migration moves the process's pages into it rather than copying.  Free
 * frames are holes and cost nothing.
 */
static int emu_map_memory(struct hetmm_emu *emu, uint64_t nr_pages)
{
	const size_t align = CHUNK_PAGES * PAGE_SIZE;
	emu->size = nr_pages * PAGE_SIZE;
	emu->map_size = emu->size + align;
	char *p = mmap(NULL, emu->map_size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	emu->map = p;
	emu->mem = (char *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
	/* A fork child gets no device: fork brings every page home first. */
	madvise(p, emu->map_size, MADV_DONTFORK);
	return 0;
}

static void emu_free(struct hetmm_emu *emu)
{
	if (emu->map)
		munmap(emu->map, emu->map_size);
	if (emu->fd >= 0)
		close(emu->fd);
	free(emu);
}

int hetmm_emu_create(struct hetmm_ctx *ctx, enum hetmm_memory_type type,
		     uint64_t nr_pages, struct hetmm_emu **emup)
{
	if (!ctx || !emup || !nr_pages || nr_pages > (1ULL << 32))
		return -EINVAL;
	if (ctx_forked(ctx))
		return -ECHILD;
	struct hetmm_emu *emu = calloc(1, sizeof(*emu));
	if (!emu)
		return -ENOMEM;
	emu->ctx = ctx;
	emu->fd = -1;
	bool coherent = type == HETMM_MEMORY_DEVICE_COHERENT;

	struct hetmm_pagemap_desc desc = {
		.type = type,
		.nr_pages = nr_pages,
		.ops = coherent ? &emu_coherent_ops : &emu_ops,
		.drvdata = emu,
		.owner = emu,
		.flags = coherent ? 0 : HETMM_PAGEMAP_REMAP,
	};
	/* Validate the type before paying for the memory. */
	int rc = type < HETMM_MEMORY_DEVICE_PRIVATE ||
		 type > HETMM_MEMORY_PCI_P2PDMA ? -EINVAL :
		 type != HETMM_MEMORY_DEVICE_PRIVATE && !coherent ?
		 -EOPNOTSUPP : 0;
	if (!rc)
		rc = coherent ? emu_map_coherent(emu, nr_pages)
			      : emu_map_memory(emu, nr_pages);
	if (!rc)
		rc = hetmm_pagemap_add(ctx, &desc, &emu->pgmap);
	if (rc) {
		emu_free(emu);
		return rc;
	}
	pthread_mutex_lock(&ctx->lock);
	emu->next = ctx->emus;
	ctx->emus = emu;
	pthread_mutex_unlock(&ctx->lock);
	*emup = emu;
	return 0;
}

static bool emu_unlink(struct hetmm_emu *emu)
{
	struct hetmm_ctx *ctx = emu->ctx;
	bool found = false;
	pthread_mutex_lock(&ctx->lock);
	for (struct hetmm_emu **pp = &ctx->emus; *pp; pp = &(*pp)->next) {
		if (*pp == emu) {
			*pp = emu->next;
			found = true;
			break;
		}
	}
	pthread_mutex_unlock(&ctx->lock);
	return found;
}

static void mirror_free(struct hetmm_mirror *m)
{
	hetmm_notifier_remove(m->notifier);
	vtab_destroy(&m->pt);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

/* Unlink and free every mirror of emu. */
static void emu_drop_mirrors(struct hetmm_emu *emu)
{
	pthread_mutex_lock(&emu->ctx->lock);
	struct hetmm_mirror *m = emu->mirrors;
	emu->mirrors = NULL;
	pthread_mutex_unlock(&emu->ctx->lock);
	while (m) {
		struct hetmm_mirror *next = m->next;
		mirror_free(m);
		m = next;
	}
}

int hetmm_emu_destroy(struct hetmm_emu *emu)
{
	if (!emu)
		return -EINVAL;
	if (ctx_forked(emu->ctx))
		return -ECHILD;
	int rc = hetmm_pagemap_remove(emu->pgmap);
	if (rc)
		return rc;
	if (!emu_unlink(emu))
		return -EINVAL;
	emu_drop_mirrors(emu);
	emu_free(emu);
	return 0;
}

void emu_destroy_all(struct hetmm_ctx *ctx)
{
	for (;;) {
		pthread_mutex_lock(&ctx->lock);
		struct hetmm_emu *emu = ctx->emus;
		pthread_mutex_unlock(&ctx->lock);
		if (!emu || hetmm_emu_destroy(emu))
			return;
	}
}

int hetmm_emu_pagemap(struct hetmm_emu *emu, struct hetmm_pagemap **pgmapp)
{
	if (!emu || !pgmapp)
		return -EINVAL;
	if (ctx_forked(emu->ctx))
		return -ECHILD;
	*pgmapp = emu->pgmap;
	return 0;
}

/* ------------------------------------------------------------------------
 * Mirrors
 */

static int clear_entry(void *arg, uint64_t vpn, _Atomic uint64_t *slot)
{
	(void)arg;
	(void)vpn;
	atomic_store_explicit(slot, 0, memory_order_relaxed);
	return 0;
}

static void mirror_clear(struct hetmm_mirror *m, uintptr_t start,
			 uintptr_t end)
{
	vtab_for_each(&m->pt, addr_to_vpn(start), addr_to_vpn(end),
		      clear_entry, NULL);
}

/* The notifier's callback: drop the entries, note why. */
static void mirror_invalidate(struct hetmm_notifier *n, uintptr_t start,
			      uintptr_t end, enum hetmm_event why, void *arg)
{
	struct hetmm_mirror *m = arg;
	(void)n;
	pthread_mutex_lock(&m->lock);
	mirror_clear(m, start, end);
	pthread_mutex_unlock(&m->lock);
	atomic_fetch_add_explicit(&m->events[why], 1, memory_order_relaxed);
}

static const struct hetmm_notifier_ops mirror_notifier_ops = {
	.invalidate = mirror_invalidate,
};

int hetmm_mirror_create(struct hetmm_emu *emu, struct hetmm_mirror **mirrorp)
{
	if (!emu || !mirrorp)
		return -EINVAL;
	struct hetmm_ctx *ctx = emu->ctx;
	if (ctx_forked(ctx))
		return -ECHILD;
	struct hetmm_mirror *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->emu = emu;
	pthread_mutex_init(&m->lock, NULL);
	vtab_init(&m->pt);
	/* Like dmirror, one notifier over the whole address space. */
	int rc = hetmm_notifier_insert(ctx, (void *)PAGE_SIZE,
				       USER_VA_END - PAGE_SIZE,
				       &mirror_notifier_ops, m, &m->notifier);
	if (rc) {
		vtab_destroy(&m->pt);
		pthread_mutex_destroy(&m->lock);
		free(m);
		return rc;
	}
	pthread_mutex_lock(&ctx->lock);
	m->next = emu->mirrors;
	emu->mirrors = m;
	pthread_mutex_unlock(&ctx->lock);
	*mirrorp = m;
	return 0;
}

int hetmm_mirror_destroy(struct hetmm_mirror *mirror)
{
	if (!mirror)
		return -EINVAL;
	struct hetmm_ctx *ctx = mirror->emu->ctx;
	if (ctx_forked(ctx))
		return -ECHILD;
	bool found = false;
	pthread_mutex_lock(&ctx->lock);
	for (struct hetmm_mirror **pp = &mirror->emu->mirrors; *pp;
	     pp = &(*pp)->next) {
		if (*pp == mirror) {
			*pp = mirror->next;
			found = true;
			break;
		}
	}
	pthread_mutex_unlock(&ctx->lock);
	if (!found)
		return -EINVAL;
	mirror_free(mirror);
	return 0;
}

int hetmm_mirror_get_stats(struct hetmm_mirror *mirror,
			   struct hetmm_mirror_stats *st)
{
	if (!mirror || !st)
		return -EINVAL;
	if (ctx_forked(mirror->emu->ctx))
		return -ECHILD;
	st->faults = atomic_load(&mirror->faults);
	for (unsigned i = 0; i < HETMM_EVENT_COUNT; i++)
		st->invalidations[i] = atomic_load(&mirror->events[i]);
	return 0;
}

/* Store the entries of one range fault, under the mirror lock. */
static int mirror_store(struct hetmm_mirror *m, uint64_t vpn, size_t n,
			const uint64_t *ents)
{
	for (size_t i = 0; i < n; i++) {
		_Atomic uint64_t *slot = vtab_slot(&m->pt, vpn + i, true);
		if (!slot)
			return -ENOMEM;
		atomic_store_explicit(slot, ents[i], memory_order_relaxed);
	}
	return 0;
}

/* How long a range fault keeps retrying while invalidations undo it,
 * like the kernel's HMM_RANGE_DEFAULT_TIMEOUT. */
#define MIRROR_FAULT_TIMEOUT_NS 1000000000LL

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/*
 * One chunk of a mirror fault, the notifier way: look the range up, then
 * store the result only if no invalidation began since; else again.
 */
static int mirror_fault_chunk(struct hetmm_mirror *m, uint64_t vpn, size_t n,
			      bool write, uint64_t *ents)
{
	int64_t deadline = now_ns() + MIRROR_FAULT_TIMEOUT_NS;
	for (;;) {
		uint64_t seq;
		hetmm_notifier_read_begin(m->notifier, &seq);
		int rc = range_fault(m->emu->ctx, m->emu, vpn_to_addr(vpn), n,
				     write, ents);
		if (rc)
			return rc;
		pthread_mutex_lock(&m->lock);
		if (!hetmm_notifier_read_retry(m->notifier, seq)) {
			rc = mirror_store(m, vpn, n, ents);
			pthread_mutex_unlock(&m->lock);
			return rc;
		}
		pthread_mutex_unlock(&m->lock);
		if (now_ns() > deadline)
			return -EBUSY;
	}
}

/* Fault the rest of a request into the mirror: one fault, however long. */
static int mirror_fault(struct hetmm_mirror *m, uint64_t vpn, size_t npages,
			bool write)
{
	uint64_t ents[CHUNK_PAGES];
	atomic_fetch_add_explicit(&m->faults, 1, memory_order_relaxed);
	for (size_t done = 0; done < npages;) {
		size_t n = MIN(npages - done, (size_t)CHUNK_PAGES);
		int rc = mirror_fault_chunk(m, vpn + done, n, write, ents);
		if (rc)
			return rc;
		done += n;
	}
	return 0;
}

/* Copy a run of system pages between the process and buf. */
static int mirror_copy_system(uintptr_t addr, char *buf, size_t n, bool write)
{
	struct iovec local = { .iov_base = buf, .iov_len = n * PAGE_SIZE };
	struct iovec remote = { .iov_base = (void *)addr,
				.iov_len = n * PAGE_SIZE };
	ssize_t got = write ? process_vm_writev(getpid(), &local, 1, &remote,
						1, 0)
			    : process_vm_readv(getpid(), &local, 1, &remote,
					       1, 0);
	if (got < 0)
		return -errno;
	return (size_t)got == n * PAGE_SIZE ? 0 : -EFAULT;
}

static bool entry_usable(uint64_t e, bool write)
{
	return (e & MENT_VALID) && (!write || (e & MENT_WRITE));
}

/* How many entries from vpn are usable system entries, up to max. */
static size_t system_run(struct hetmm_mirror *m, uint64_t vpn, size_t max,
			 bool write)
{
	size_t n = 0;
	while (n < max) {
		uint64_t e = vtab_get(&m->pt, vpn + n);
		if (!entry_usable(e, write) || (e & MENT_DEVICE))
			break;
		n++;
	}
	return n;
}

/* Has the frame memory behind it?  Asking doesn't fault, touching would. */
static bool frame_populated(const char *dev)
{
	unsigned char vec = 0;
	return mincore((void *)dev, PAGE_SIZE, &vec) == 0 && (vec & 1);
}

static void mirror_prepare_frame(struct hetmm_mirror *m, uint64_t e)
{
	uint64_t idx;
	pfn_pagemap(shadow_pfn(e), &idx);
	madvise(emu_page(m->emu, idx), PAGE_SIZE, MADV_POPULATE_WRITE);
}

/*
 * Device access to one of its own pages, under the mirror lock.  A zero
 * page reads as zeroes; writing one needs its frame populated first, which
 * may fault, so that is left to the caller without the lock (-EAGAIN).
 */
static int mirror_device_page(struct hetmm_mirror *m, uint64_t e, char *buf,
			      bool write)
{
	uint64_t idx;
	struct hetmm_pagemap *pgmap = pfn_pagemap(shadow_pfn(e), &idx);
	struct hetmm_page *page = &pgmap->pages[idx];
	char *dev = emu_page(m->emu, idx);
	bool zero = atomic_load(&page->owner) & HETMM_PAGE_ZERO;

	if (!write) {
		if (zero)
			memset(buf, 0, PAGE_SIZE);
		else
			memcpy(buf, dev, PAGE_SIZE);
		return 0;
	}
	if (zero && !frame_populated(dev))
		return -EAGAIN;
	memcpy(dev, buf, PAGE_SIZE);
	pagemap_page_written(pgmap, page);
	return 0;
}

/* Does the mapping at addr still allow writes?  mprotect() raises no
 * userfaultfd event, so a write through an exclusive entry (one granted
 * for device atomics) asks the mapping itself. */
static bool excl_writable(struct hetmm_ctx *ctx, uintptr_t addr)
{
	struct vma v;
	return vma_find(&ctx->vmaq, addr, &v) == 0 && v.start <= addr &&
	       (v.flags & VMA_WRITE);
}

/* Retries of one page before giving up: each one is a full range fault
 * that something undid before we could use it. */
#define MIRROR_RETRIES 64

static int mirror_access(struct hetmm_mirror *m, uintptr_t addr, char *buf,
			 uint64_t npages, bool write, uint64_t *faults)
{
	uint64_t vpn = addr_to_vpn(addr);
	uint64_t nfaults = 0;
	unsigned retries = 0;
	int rc = 0;

	for (uint64_t i = 0; i < npages;) {
		if (retries > MIRROR_RETRIES) {
			rc = -EAGAIN;
			break;
		}
		pthread_mutex_lock(&m->lock);
		uint64_t e = vtab_get(&m->pt, vpn + i);
		if (!entry_usable(e, write)) {
			pthread_mutex_unlock(&m->lock);
			rc = mirror_fault(m, vpn + i, npages - i, write);
			if (rc)
				break;
			nfaults++;
			retries++;
			continue;
		}
		if (write && (e & MENT_EXCL) &&
		    !excl_writable(m->emu->ctx, vpn_to_addr(vpn + i))) {
			/* mprotect()ed since: no event told us.  Like
			 * the kernel's refault of a read-only range. */
			mirror_clear(m, vpn_to_addr(vpn + i),
				     vpn_to_addr(vpn + i + 1));
			pthread_mutex_unlock(&m->lock);
			rc = -EPERM;
			break;
		}
		if (e & MENT_DEVICE) {
			rc = mirror_device_page(m, e, buf + i * PAGE_SIZE,
						write);
			pthread_mutex_unlock(&m->lock);
			if (rc == -EAGAIN) {
				/* A zero page to write: give the frame
				 * memory first, outside the lock, since
				 * that faults. */
				mirror_prepare_frame(m, e);
				retries++;
				rc = 0;
				continue;
			}
			i++;
			retries = 0;
			continue;
		}
		pthread_mutex_unlock(&m->lock);
		size_t n = system_run(m, vpn + i, MIN(npages - i,
						      (uint64_t)CHUNK_PAGES),
				      write);
		if (n && !mirror_copy_system(vpn_to_addr(vpn + i),
					     buf + i * PAGE_SIZE, n, write)) {
			i += n;
			retries = 0;
			continue;
		}
		/* The CPU side changed under the entry: drop it, refault. */
		pthread_mutex_lock(&m->lock);
		mirror_clear(m, vpn_to_addr(vpn + i), vpn_to_addr(vpn + i + 1));
		pthread_mutex_unlock(&m->lock);
		retries++;
	}
	if (faults)
		*faults = nfaults;
	return rc;
}

/*
 * Check a mirror call's arguments, then let the handler catch up with the
 * process: a munmap that returned may still have its invalidation queued,
 * and the device must not use an entry it is about to drop.
 */
static int mirror_call_begin(struct hetmm_mirror *m, const void *addr,
			     const void *buf, uint64_t npages)
{
	if (!m || !buf || !npages || npages > (SIZE_MAX >> PAGE_SHIFT))
		return -EINVAL;
	int rc = check_user_range(addr, npages << PAGE_SHIFT);
	if (rc)
		return rc;
	if (ctx_forked(m->emu->ctx))
		return -ECHILD;
	handler_sync(m->emu->ctx);
	return 0;
}

int hetmm_mirror_read(struct hetmm_mirror *mirror, const void *addr,
		      void *buf, uint64_t npages, uint64_t *faults)
{
	int rc = mirror_call_begin(mirror, addr, buf, npages);
	if (rc)
		return rc;
	return mirror_access(mirror, (uintptr_t)addr, buf, npages, false,
			     faults);
}

int hetmm_mirror_write(struct hetmm_mirror *mirror, void *addr,
		       const void *buf, uint64_t npages, uint64_t *faults)
{
	int rc = mirror_call_begin(mirror, addr, buf, npages);
	if (rc)
		return rc;
	return mirror_access(mirror, (uintptr_t)addr, (char *)buf, npages, true,
			     faults);
}

int hetmm_mirror_snapshot(struct hetmm_mirror *mirror, const void *addr,
			  uint64_t npages, uint8_t *prot)
{
	int rc = mirror_call_begin(mirror, addr, prot, npages);
	if (rc)
		return rc;
	return range_snapshot(mirror->emu->ctx, mirror->emu, (uintptr_t)addr,
			      npages, prot);
}

/* ------------------------------------------------------------------------
 * Exclusive access (make_device_exclusive_range, dmirror's EXCLUSIVE)
 *
 * The kernel swaps the PTEs of the range for device-exclusive entries: the
 * device may do atomics on the pages while any CPU access faults, restores
 * the mapping and tells the device (MMU_NOTIFY_EXCLUSIVE).  hetmm revokes
 * the CPU mapping the one way userspace can: the pages go into the
 * device's custody (a DEVICE_PRIVATE migration, bytes and all, so they
 * leave the CPU page tables), and their frames are marked exclusive.  Any
 * CPU access, read or write, is then a userfaultfd fault that brings the
 * page back, and the migration back tells the mirrors HETMM_EVENT_EXCLUSIVE
 * since the frame was marked; the mirror's entries, marked MENT_EXCL, go
 * with that invalidation, which hetmm_mirror_check_exclusive() reports.
 */

/* Retries of the mark step when a CPU access takes pages back under it. */
#define EXCL_RETRIES 16

/* The mapping must allow the device's read-modify-write, as the kernel
 * asks for a writable page: -EFAULT if inaccessible, -EPERM if not
 * writable. */
static int excl_check_access(struct hetmm_ctx *ctx, uintptr_t start,
			     uintptr_t end)
{
	struct vma v;
	for (uintptr_t a = start; a < end; a = v.end) {
		if (vma_find(&ctx->vmaq, a, &v) < 0 || v.start > a ||
		    !(v.flags & VMA_READ))
			return -EFAULT;
		if (!(v.flags & VMA_WRITE))
			return -EPERM;
		if (!vma_is_private_anon(&v))
			return -EPERM;   /* nothing to take custody of */
	}
	return 0;
}

/* Pages on another device come back first (the kernel's exclusive
 * entries are for system pages). */
static void excl_repatriate(struct hetmm_ctx *ctx, struct hetmm_pagemap *pg,
			    uint64_t vpn, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		uint64_t e = shadow_get(&ctx->shadow, vpn + i);
		uint64_t idx;
		if (shadow_on_device(e) && pfn_pagemap(shadow_pfn(e), &idx) != pg)
			migrate_back_range(ctx, vpn_to_addr(vpn + i),
					   vpn_to_addr(vpn + i + 1), NULL);
	}
}

/*
 * Under the mirror lock: every page must be on our device, unclaimed;
 * mark frames and entries.  -EAGAIN if a CPU access took one back.  The
 * frame is marked before the shadow is looked at again, and a fault
 * claims the word before it looks at the mark: either we see its claim,
 * or it sees the mark and tells the mirror HETMM_EVENT_EXCLUSIVE (its
 * invalidation waits for our lock, then drops what we stored).
 */
static int excl_mark(struct hetmm_mirror *m, uint64_t vpn, uint64_t n)
{
	struct hetmm_ctx *ctx = m->emu->ctx;
	struct hetmm_pagemap *pg = m->emu->pgmap;
	atomic_store_explicit(&ctx->exclusive_used, true, memory_order_release);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t e = shadow_get(&ctx->shadow, vpn + i);
		uint64_t idx;
		if (!shadow_claimable(e) ||
		    pfn_pagemap(shadow_pfn(e), &idx) != pg)
			return -EAGAIN;
		atomic_fetch_or(&pg->pages[idx].owner,
				(uint64_t)HETMM_PAGE_EXCLUSIVE);
		if (shadow_get(&ctx->shadow, vpn + i) != e)
			return -EAGAIN;
		_Atomic uint64_t *slot = vtab_slot(&m->pt, vpn + i, true);
		if (!slot)
			return -ENOMEM;
		atomic_store_explicit(slot, MENT_VALID | MENT_WRITE |
				      MENT_DEVICE | MENT_EXCL | shadow_pfn(e),
				      memory_order_relaxed);
	}
	return 0;
}

int hetmm_mirror_make_exclusive(struct hetmm_mirror *mirror, void *addr,
				uint64_t npages)
{
	int rc = mirror_call_begin(mirror, addr, addr, npages);
	if (rc)
		return rc;
	struct hetmm_ctx *ctx = mirror->emu->ctx;
	struct hetmm_pagemap *pg = mirror->emu->pgmap;
	if (pg->type != HETMM_MEMORY_DEVICE_PRIVATE)
		return -EOPNOTSUPP;
	uintptr_t start = (uintptr_t)addr, end = start + npages * PAGE_SIZE;
	uint64_t vpn = addr_to_vpn(start);
	rc = excl_check_access(ctx, start, end);
	if (rc)
		return rc;

	for (int tries = 0; tries < EXCL_RETRIES; tries++) {
		excl_repatriate(ctx, pg, vpn, npages);
		rc = hetmm_migrate_to_device(pg, addr, npages * PAGE_SIZE,
					     NULL);
		if (rc == -ENOMEM)
			return rc;
		pthread_mutex_lock(&mirror->lock);
		rc = excl_mark(mirror, vpn, npages);
		pthread_mutex_unlock(&mirror->lock);
		if (rc != -EAGAIN)
			return rc;
		sched_yield();
	}
	return -EBUSY;
}

int hetmm_mirror_check_exclusive(struct hetmm_mirror *mirror,
				 const void *addr, uint64_t npages)
{
	int rc = mirror_call_begin(mirror, addr, addr, npages);
	if (rc)
		return rc;
	uint64_t vpn = addr_to_vpn((uintptr_t)addr);
	rc = 0;
	pthread_mutex_lock(&mirror->lock);
	for (uint64_t i = 0; i < npages && !rc; i++) {
		uint64_t e = vtab_get(&mirror->pt, vpn + i);
		if ((e & MENT_VALID) && (e & MENT_EXCL))
			rc = -EPERM;
	}
	pthread_mutex_unlock(&mirror->lock);
	return rc;
}
