/* SPDX-License-Identifier: MIT */
/*
 * devices/emu.c - the emulated device: memory, copy engine and mirrors,
 * our lib/test_hmm.c.
 *
 * A driver written as one outside the library would write it: hetmm.h and
 * nothing else of hetmm's.  The device's memory is an allocation of its
 * own, which hetmm registers and migrates into by moving pages
 * (HETMM_PAGEMAP_REMAP); its copy engine is memcpy, for pages the kernel
 * won't move and for device writes.  A mirror is the device's page table
 * over the process, filled by hetmm_range_fault() and emptied by its
 * notifier, as dmirror keeps an xarray filled by hmm_range_fault().
 *
 * A mirror's lock covers its page table and device-memory copies, never a
 * touch of process memory, the caller's buffer included (device pages are
 * copied through a bounce page): that can fault, and the fault handler may
 * need the lock to invalidate.  Process memory is reached with
 * process_vm_readv/writev, so a page that lost its access since the entry
 * was made yields EFAULT, not a signal.
 *
 * The device goes with its context: hetmm_ctx_destroy() removes its
 * pagemap (every page comes home through this copy engine), then tells
 * every notifier HETMM_EVENT_RELEASE.  The device keeps one notifier over
 * a page of its own memory, which no change of the process touches, to
 * hear that and free itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "hetmm.h"
#include "handles.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define PS HETMM_PAGE_SIZE
#define PAGE_SHIFT HETMM_PAGE_SHIFT
/* Device memory is PMD aligned (2 MiB at 4 KiB pages, 512 MiB of address
 * space at 64 KiB), so that huge pages can move in whole. */
#define EMU_ALIGN hetmm_pmd_size()
/* Pages per range fault and per exclusive grab. */
#define EMU_CHUNK 512
/* The user half hetmm manages: x86-64 and arm64 with 48-bit addresses. */
#define EMU_VA_END (1ULL << 47)

#define MIN(a, b) ((a) < (b) ? (a) : (b))

struct hetmm_emu {
	struct drv_handle handle;         /* first: in emus */
	struct hetmm_ctx *ctx;
	struct hetmm_pagemap *pgmap;
	uint64_t first_pfn;               /* frame number of device page 0 */
	uint64_t nr_pages;
	struct hetmm_notifier *life;      /* hears the context's release */
	char *map;                        /* the mapping, for munmap */
	size_t map_size;
	char *mem;                        /* device page 0, PMD aligned */
	size_t size;
	int fd;                           /* coherent: the memfd, else -1 */
	pthread_mutex_t lock;             /* mirrors */
	struct hetmm_mirror *mirrors;
	/* Pages its copy engine copied, by direction. */
	atomic_uint_fast64_t copied_to, copied_from, copied_peer;
};

/* The live devices, so that a stale handle is refused. */
static struct drv_handles emus = DRV_HANDLES_INIT;

/* ------------------------------------------------------------------------
 * The device page table: a radix tree keyed by virtual page number, four
 * levels of 512 slots (36 bits, the 47-bit user half and more), nodes
 * made on first store and freed with the table.  Under the mirror's lock.
 */
#define PT_SHIFT 9
#define PT_SLOTS (1u << PT_SHIFT)
#define PT_LEVELS 4

union pt_node {
	union pt_node *child[PT_SLOTS];
	uint64_t ent[PT_SLOTS];
};

/* An entry: how the device reaches one process page. */
#define ENT_VALID (1ULL << 63)
#define ENT_WRITE (1ULL << 62)
#define ENT_DEVICE (1ULL << 61)   /* a page of this device: index below */
#define ENT_EXCL (1ULL << 60)     /* held exclusive (make_exclusive) */
#define ENT_INDEX_MASK ((1ULL << 48) - 1)

/*
 * Nodes the table takes under the mirror's lock come from spares,
 * allocated and written without it (mirror_fill_spare): memory a malloc
 * arena hands out may lie in a mapping hetmm registered whole (the
 * kernel merged the arena's mapping with the process's), where a page
 * never touched is a hole that only the fault handler fills, and the
 * handler may be waiting for this very lock meanwhile, in
 * mirror_invalidate (test_mirrorlock: neither moved again).  A store of
 * EMU_CHUNK pages at most spans two leaves: a root and two paths below.
 */
#define PT_SPARE (1 + 2 * (PT_LEVELS - 1))

struct pt_spare {
	union pt_node *node[PT_SPARE];
	unsigned n;
};

/* The entry of vpn; with spare, made (NULL if the spares run out). */
static uint64_t *pt_slot(union pt_node **root, uint64_t vpn,
			 struct pt_spare *spare)
{
	union pt_node **np = root;
	for (int level = PT_LEVELS - 1;; level--) {
		if (!*np) {
			if (!spare || !spare->n)
				return NULL;
			*np = spare->node[--spare->n];
		}
		unsigned i = (unsigned)(vpn >> (level * PT_SHIFT)) &
			     (PT_SLOTS - 1);
		if (!level)
			return &(*np)->ent[i];
		np = &(*np)->child[i];
	}
}

static uint64_t pt_get(union pt_node **root, uint64_t vpn)
{
	uint64_t *slot = pt_slot(root, vpn, NULL);
	return slot ? *slot : 0;
}

/* Put n entries from vpn: -EAGAIN if the spares ran out first. */
static int pt_put(union pt_node **root, struct pt_spare *spare, uint64_t vpn,
		  size_t n, const uint64_t *ents)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t *slot = pt_slot(root, vpn + i, spare);
		if (!slot)
			return -EAGAIN;
		*slot = ents[i];
	}
	return 0;
}

/* A new node, every page of it written: see PT_SPARE.  Atomic stores:
 * the compiler drops plain ones, even volatile ones, as calloc's memory
 * reads zero already. */
static union pt_node *pt_node_new(void)
{
	union pt_node *node = calloc(1, sizeof(*node));
	if (!node)
		return NULL;
	char *p = (char *)node;
	for (size_t off = 0; off < sizeof(*node); off += PS)
		__atomic_store_n(&p[off], 0, __ATOMIC_RELAXED);
	__atomic_store_n(&p[sizeof(*node) - 1], 0, __ATOMIC_RELAXED);
	return node;
}

static void pt_spare_free(struct pt_spare *spare)
{
	while (spare->n)
		free(spare->node[--spare->n]);
}

/* Clear [first, last) in the subtree of node, whose slot 0 is page base;
 * only the nodes there are, are visited. */
static void pt_clear(union pt_node *node, int level, uint64_t base,
		     uint64_t first, uint64_t last)
{
	if (!node)
		return;
	uint64_t span = 1ULL << (level * PT_SHIFT);   /* pages per slot */
	uint64_t i = first > base ? (first - base) / span : 0;
	uint64_t end = (last - base + span - 1) / span;
	for (; i < PT_SLOTS && i < end; i++) {
		if (!level)
			node->ent[i] = 0;
		else
			pt_clear(node->child[i], level - 1, base + i * span,
				 first, last);
	}
}

/* Does an entry of [first, last) in the subtree of node have every bit
 * of want?  As pt_clear, only the nodes there are are visited: the cost
 * follows what the table holds, not the length of the range. */
static bool pt_any(const union pt_node *node, int level, uint64_t base,
		   uint64_t first, uint64_t last, uint64_t want)
{
	if (!node)
		return false;
	uint64_t span = 1ULL << (level * PT_SHIFT);
	uint64_t i = first > base ? (first - base) / span : 0;
	uint64_t end = (last - base + span - 1) / span;
	for (; i < PT_SLOTS && i < end; i++) {
		if (!level ? (node->ent[i] & want) == want
			   : pt_any(node->child[i], level - 1, base + i * span,
				    first, last, want))
			return true;
	}
	return false;
}

static void pt_free(union pt_node *node, int level)
{
	if (!node)
		return;
	if (level)
		for (unsigned i = 0; i < PT_SLOTS; i++)
			pt_free(node->child[i], level - 1);
	free(node);
}

/* ------------------------------------------------------------------------
 * Device memory and its copy engine
 */

struct hetmm_mirror {
	struct hetmm_mirror *next;        /* emu->mirrors, under emu->lock */
	struct hetmm_emu *emu;
	struct hetmm_notifier *notifier;  /* the whole address space */
	pthread_mutex_t lock;             /* the device page table */
	union pt_node *pt;
	struct pt_spare spare;            /* its next nodes, under the lock */
	atomic_uint_fast64_t faults;
	atomic_uint_fast64_t events[HETMM_EVENT_COUNT];
};

static char *emu_page(struct hetmm_emu *emu, uint64_t index)
{
	return emu->mem + index * PS;
}

/* The device a pagemap op is for: its drvdata. */
static struct hetmm_emu *emu_of(struct hetmm_pagemap *pgmap)
{
	return hetmm_pagemap_drvdata(pgmap);
}

static void emu_count(atomic_uint_fast64_t *counter, size_t nr)
{
	atomic_fetch_add_explicit(counter, nr, memory_order_relaxed);
}

static int emu_copy_to_device(struct hetmm_pagemap *pgmap, uint64_t index,
			      const void *src, size_t nr)
{
	struct hetmm_emu *emu = emu_of(pgmap);
	if (!emu || index + nr > emu->nr_pages)
		return -EINVAL;
	/* src is the process's: it may be unmapped under us. */
	int rc = hetmm_copy_from_process(emu_page(emu, index), src, nr * PS);
	if (!rc)
		emu_count(&emu->copied_to, nr);
	return rc;
}

static int emu_copy_from_device(struct hetmm_pagemap *pgmap, void *dst,
				uint64_t index, size_t nr)
{
	struct hetmm_emu *emu = emu_of(pgmap);
	if (!emu || index + nr > emu->nr_pages)
		return -EINVAL;
	memcpy(dst, emu_page(emu, index), nr * PS);
	emu_count(&emu->copied_from, nr);
	return 0;
}

static void *emu_page_address(struct hetmm_pagemap *pgmap, uint64_t index)
{
	struct hetmm_emu *emu = emu_of(pgmap);
	return emu && index < emu->nr_pages ? emu_page(emu, index) : NULL;
}

/*
 * Peers.  The emulated bus is the process's address space: a device
 * page's bus address is where its memory is mapped, and a peer's engine
 * copies from there into its own memory, one copy, device to device.
 */
static int emu_p2p_bus_addr(struct hetmm_pagemap *pgmap, uint64_t index,
			    uint64_t *addr)
{
	struct hetmm_emu *emu = emu_of(pgmap);
	if (!emu || index >= emu->nr_pages)
		return -EINVAL;
	*addr = (uint64_t)(uintptr_t)emu_page(emu, index);
	return 0;
}

static int emu_copy_from_peer(struct hetmm_pagemap *pgmap, uint64_t index,
			      uint64_t bus_addr, size_t nr)
{
	struct hetmm_emu *emu = emu_of(pgmap);
	if (!emu || index + nr > emu->nr_pages || !bus_addr)
		return -EINVAL;
	memcpy(emu_page(emu, index), (const void *)(uintptr_t)bus_addr,
	       nr * PS);
	emu_count(&emu->copied_peer, nr);
	return 0;
}

static const struct hetmm_pagemap_ops emu_ops = {
	.copy_to_device = emu_copy_to_device,
	.copy_from_device = emu_copy_from_device,
	.page_address = emu_page_address,
	.p2p_bus_addr = emu_p2p_bus_addr,
	.copy_from_peer = emu_copy_from_peer,
};

/* HETMM_EMU_COPY_ONLY: memory the CPU can't address, so hetmm copies
 * through its engine, staging included, and never moves pages in. */
static const struct hetmm_pagemap_ops emu_copy_ops = {
	.copy_to_device = emu_copy_to_device,
	.copy_from_device = emu_copy_from_device,
	.p2p_bus_addr = emu_p2p_bus_addr,
	.copy_from_peer = emu_copy_from_peer,
};

static int emu_page_fd(struct hetmm_pagemap *pgmap, uint64_t index,
		       uint64_t *offset)
{
	struct hetmm_emu *emu = emu_of(pgmap);
	if (!emu || index >= emu->nr_pages)
		return -EINVAL;
	*offset = index * PS;
	return emu->fd;
}

/* A free coherent frame gives its memory back and reads as zeroes. */
static void emu_page_free(struct hetmm_pagemap *pgmap, uint64_t index)
{
	struct hetmm_emu *emu = emu_of(pgmap);
	if (emu && index < emu->nr_pages)
		fallocate(emu->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			  (off_t)(index * PS), PS);
}

static const struct hetmm_pagemap_ops emu_coherent_ops = {
	.copy_to_device = emu_copy_to_device,
	.copy_from_device = emu_copy_from_device,
	.page_address = emu_page_address,
	.page_free = emu_page_free,
	.page_fd = emu_page_fd,
	.p2p_bus_addr = emu_p2p_bus_addr,
};

/*
 * Coherent device memory is a memfd: the device's own view is a shared
 * mapping of it, and hetmm maps its pages at the process's addresses.
 */
static int emu_map_coherent(struct hetmm_emu *emu, uint64_t nr_pages)
{
	emu->size = nr_pages * PS;
	emu->map_size = emu->size + EMU_ALIGN;
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
	emu->mem = (char *)(((uintptr_t)p + EMU_ALIGN - 1) &
			    ~(uintptr_t)(EMU_ALIGN - 1));
	if (mmap(emu->mem, emu->size, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_FIXED, emu->fd, 0) == MAP_FAILED)
		return -errno;
	madvise(p, emu->map_size, MADV_DONTFORK);
	return 0;
}

/*
 * Device memory is private anonymous memory, PMD aligned so that huge
 * pages can move in whole, and registered by hetmm as a remapping pagemap:
 * migration moves the process's pages into it rather than copying.  Free
 * frames are holes and cost nothing.
 */
static int emu_map_memory(struct hetmm_emu *emu, uint64_t nr_pages)
{
	emu->size = nr_pages * PS;
	emu->map_size = emu->size + EMU_ALIGN;
	char *p = mmap(NULL, emu->map_size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	emu->map = p;
	emu->mem = (char *)(((uintptr_t)p + EMU_ALIGN - 1) &
			    ~(uintptr_t)(EMU_ALIGN - 1));
	/* A fork child gets no device: fork brings every page home first. */
	madvise(p, emu->map_size, MADV_DONTFORK);
	return 0;
}

/*
 * The last page of the mapping: never device memory (the aligned memory
 * starts at most EMU_ALIGN - PS in), never a process page hetmm watches.
 * The device's own notifier covers it: only the context's release, told
 * to every notifier, reaches it.
 */
static void *emu_quiet_page(struct hetmm_emu *emu)
{
	return emu->map + emu->map_size - PS;
}

static void emu_free(struct hetmm_emu *emu)
{
	if (emu->map)
		munmap(emu->map, emu->map_size);
	if (emu->fd >= 0)
		close(emu->fd);
	pthread_mutex_destroy(&emu->lock);
	free(emu);
}

/* hetmm calls on an object of a context inherited across fork give
 * -ECHILD; the device's own calls do the same. */
static int ctx_usable(struct hetmm_ctx *ctx)
{
	enum hetmm_uffd_route route;
	return hetmm_ctx_uffd_info(ctx, &route, NULL);
}

static bool emu_listed(struct hetmm_emu *emu)
{
	return drv_handles_has(&emus, &emu->handle);
}

static bool emu_unlist(struct hetmm_emu *emu)
{
	return drv_handles_take(&emus, &emu->handle);
}

static void mirror_free(struct hetmm_mirror *m, bool remove_notifier)
{
	if (remove_notifier)
		hetmm_notifier_remove(m->notifier);
	pt_free(m->pt, PT_LEVELS - 1);
	pt_spare_free(&m->spare);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

/* Unlink and free every mirror of emu; their notifiers too unless the
 * context is freeing them. */
static void emu_drop_mirrors(struct hetmm_emu *emu, bool remove_notifiers)
{
	pthread_mutex_lock(&emu->lock);
	struct hetmm_mirror *m = emu->mirrors;
	emu->mirrors = NULL;
	pthread_mutex_unlock(&emu->lock);
	while (m) {
		struct hetmm_mirror *next = m->next;
		mirror_free(m, remove_notifiers);
		m = next;
	}
}

/* The context's release (drv_life_insert): the notifiers, the mirrors'
 * too, are freed by the context as their callbacks return. */
static void emu_release(struct drv_handle *h)
{
	struct hetmm_emu *emu = (struct hetmm_emu *)h;   /* handle is first */
	emu_drop_mirrors(emu, false);
	emu_free(emu);
}

/* The flags the device takes: hetmm's, passed on, and its own. */
#define EMU_PAGEMAP_FLAGS (HETMM_PAGEMAP_EVICT | HETMM_PAGEMAP_ALTMAP)
#define EMU_FLAGS (EMU_PAGEMAP_FLAGS | HETMM_EMU_COPY_ONLY)

static int emu_check_desc(const struct hetmm_emu_desc *d)
{
	if (!d || !d->nr_pages || d->nr_pages > (1ULL << 32) ||
	    (d->flags & ~EMU_FLAGS))
		return -EINVAL;
	if (d->type < HETMM_MEMORY_DEVICE_PRIVATE ||
	    d->type > HETMM_MEMORY_PCI_P2PDMA)
		return -EINVAL;
	if (d->type != HETMM_MEMORY_DEVICE_PRIVATE &&
	    d->type != HETMM_MEMORY_DEVICE_COHERENT)
		return -EOPNOTSUPP;
	/* Coherent memory is the CPU's by definition. */
	if (d->type == HETMM_MEMORY_DEVICE_COHERENT &&
	    (d->flags & HETMM_EMU_COPY_ONLY))
		return -EINVAL;
	return 0;
}

/* What the device hot-adds for desc d. */
static struct hetmm_pagemap_desc emu_pagemap_desc(struct hetmm_emu *emu,
		const struct hetmm_emu_desc *d)
{
	bool coherent = d->type == HETMM_MEMORY_DEVICE_COHERENT;
	bool copy_only = d->flags & HETMM_EMU_COPY_ONLY;
	struct hetmm_pagemap_desc desc = {
		.type = d->type,
		.nr_pages = d->nr_pages,
		.ops = coherent ? &emu_coherent_ops :
		       copy_only ? &emu_copy_ops : &emu_ops,
		.drvdata = emu,
		.owner = emu,
		.flags = HETMM_PAGEMAP_MANAGED |
			 (d->flags & EMU_PAGEMAP_FLAGS) |
			 (coherent || copy_only ? 0 : HETMM_PAGEMAP_REMAP),
	};
	return desc;
}

int hetmm_emu_create_desc(struct hetmm_ctx *ctx,
			  const struct hetmm_emu_desc *d,
			  struct hetmm_emu **emup)
{
	if (!ctx || !emup)
		return -EINVAL;
	int rc = ctx_usable(ctx);
	if (rc)
		return rc;
	/* Validate before paying for the memory. */
	rc = emu_check_desc(d);
	if (rc)
		return rc;
	struct hetmm_emu *emu = calloc(1, sizeof(*emu));
	if (!emu)
		return -ENOMEM;
	emu->ctx = ctx;
	emu->fd = -1;
	emu->nr_pages = d->nr_pages;
	pthread_mutex_init(&emu->lock, NULL);

	struct hetmm_pagemap_desc desc = emu_pagemap_desc(emu, d);
	struct hetmm_pagemap_info info;
	rc = d->type == HETMM_MEMORY_DEVICE_COHERENT ?
	     emu_map_coherent(emu, d->nr_pages) :
	     emu_map_memory(emu, d->nr_pages);
	if (!rc)
		rc = hetmm_pagemap_add(ctx, &desc, &emu->pgmap);
	if (rc) {
		emu_free(emu);
		return rc;
	}
	rc = hetmm_pagemap_get_info(emu->pgmap, &info);
	if (!rc)
		rc = drv_life_insert(ctx, emu_quiet_page(emu), &emus,
				     &emu->handle, emu_release, &emu->life);
	if (rc) {
		hetmm_pagemap_remove_managed(emu->pgmap, emu);
		emu_free(emu);
		return rc;
	}
	emu->first_pfn = hetmm_pfn_number(info.first_pfn);
	drv_handles_add(&emus, &emu->handle);
	*emup = emu;
	return 0;
}

int hetmm_emu_create(struct hetmm_ctx *ctx, enum hetmm_memory_type type,
		     uint64_t nr_pages, struct hetmm_emu **emup)
{
	struct hetmm_emu_desc d = { .type = type, .nr_pages = nr_pages };
	return hetmm_emu_create_desc(ctx, &d, emup);
}

int hetmm_emu_destroy(struct hetmm_emu *emu)
{
	if (!emu || !emu_listed(emu))
		return -EINVAL;
	int rc = ctx_usable(emu->ctx);
	if (rc)
		return rc;
	rc = hetmm_pagemap_remove_managed(emu->pgmap, emu);
	if (rc)
		return rc;
	if (!emu_unlist(emu))
		return -EINVAL;
	hetmm_notifier_remove(emu->life);
	emu_drop_mirrors(emu, true);
	emu_free(emu);
	return 0;
}

int hetmm_emu_get_stats(struct hetmm_emu *emu, struct hetmm_emu_stats *st)
{
	if (!emu || !st || !emu_listed(emu))
		return -EINVAL;
	int rc = ctx_usable(emu->ctx);
	if (rc)
		return rc;
	st->copied_to_device = atomic_load(&emu->copied_to);
	st->copied_from_device = atomic_load(&emu->copied_from);
	st->copied_from_peer = atomic_load(&emu->copied_peer);
	return 0;
}

int hetmm_emu_pagemap(struct hetmm_emu *emu, struct hetmm_pagemap **pgmapp)
{
	if (!emu || !pgmapp || !emu_listed(emu))
		return -EINVAL;
	int rc = ctx_usable(emu->ctx);
	if (rc)
		return rc;
	*pgmapp = emu->pgmap;
	return 0;
}

/* ------------------------------------------------------------------------
 * Mirrors
 */

static uint64_t vpn_of(uintptr_t addr)
{
	return (uint64_t)addr >> PAGE_SHIFT;
}

static uintptr_t addr_of(uint64_t vpn)
{
	return (uintptr_t)(vpn << PAGE_SHIFT);
}

static void mirror_clear(struct hetmm_mirror *m, uint64_t first,
			 uint64_t last)
{
	pt_clear(m->pt, PT_LEVELS - 1, 0, first, last);
}

/* Drop the entry of one page, which the CPU side changed under. */
static void mirror_drop(struct hetmm_mirror *m, uint64_t vpn)
{
	pthread_mutex_lock(&m->lock);
	mirror_clear(m, vpn, vpn + 1);
	pthread_mutex_unlock(&m->lock);
}

/* The notifier's callback: drop the entries, note why. */
static void mirror_invalidate(struct hetmm_notifier *n, uintptr_t start,
			      uintptr_t end, enum hetmm_event why, void *arg)
{
	(void)n;
	/* The context's release: the device frees its mirrors itself
	 * (emu_release), perhaps before this. */
	if (why == HETMM_EVENT_RELEASE)
		return;
	struct hetmm_mirror *m = arg;
	pthread_mutex_lock(&m->lock);
	mirror_clear(m, vpn_of(start), vpn_of(end + PS - 1));
	pthread_mutex_unlock(&m->lock);
	atomic_fetch_add_explicit(&m->events[why], 1, memory_order_relaxed);
}

static const struct hetmm_notifier_ops mirror_notifier_ops = {
	.invalidate = mirror_invalidate,
};

int hetmm_mirror_create(struct hetmm_emu *emu, struct hetmm_mirror **mirrorp)
{
	if (!emu || !mirrorp || !emu_listed(emu))
		return -EINVAL;
	int rc = ctx_usable(emu->ctx);
	if (rc)
		return rc;
	struct hetmm_mirror *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->emu = emu;
	pthread_mutex_init(&m->lock, NULL);
	/* Like dmirror, one notifier over the whole address space. */
	rc = hetmm_notifier_insert(emu->ctx, (void *)PS, EMU_VA_END - PS,
				   &mirror_notifier_ops, m, &m->notifier);
	if (rc) {
		pthread_mutex_destroy(&m->lock);
		free(m);
		return rc;
	}
	pthread_mutex_lock(&emu->lock);
	m->next = emu->mirrors;
	emu->mirrors = m;
	pthread_mutex_unlock(&emu->lock);
	*mirrorp = m;
	return 0;
}

int hetmm_mirror_destroy(struct hetmm_mirror *mirror)
{
	if (!mirror)
		return -EINVAL;
	struct hetmm_emu *emu = mirror->emu;
	int rc = ctx_usable(emu->ctx);
	if (rc)
		return rc;
	bool found = false;
	pthread_mutex_lock(&emu->lock);
	for (struct hetmm_mirror **pp = &emu->mirrors; *pp;
	     pp = &(*pp)->next) {
		if (*pp == mirror) {
			*pp = mirror->next;
			found = true;
			break;
		}
	}
	pthread_mutex_unlock(&emu->lock);
	if (!found)
		return -EINVAL;
	mirror_free(mirror, true);
	return 0;
}

int hetmm_mirror_get_stats(struct hetmm_mirror *mirror,
			   struct hetmm_mirror_stats *st)
{
	if (!mirror || !st)
		return -EINVAL;
	int rc = ctx_usable(mirror->emu->ctx);
	if (rc)
		return rc;
	st->faults = atomic_load(&mirror->faults);
	for (unsigned i = 0; i < HETMM_EVENT_COUNT; i++)
		st->invalidations[i] = atomic_load(&mirror->events[i]);
	return 0;
}

/* A range entry as the device's own: pages of this device by index, the
 * rest (system pages, another device's coherent pages) by address. */
static uint64_t entry_from_range(struct hetmm_emu *emu, uint64_t r)
{
	if (!(r & HETMM_RANGE_VALID))
		return 0;
	uint64_t w = (r & HETMM_RANGE_WRITE) ? ENT_WRITE : 0;
	if ((r & HETMM_RANGE_DEVICE) && (r & HETMM_RANGE_LOCAL)) {
		uint64_t idx = (r & HETMM_RANGE_NUMBER_MASK) - emu->first_pfn;
		if (idx >= emu->nr_pages)
			return 0;   /* not ours after all: fault again */
		return ENT_VALID | ENT_DEVICE | w | idx;
	}
	return ENT_VALID | w;
}

/* Top the spare nodes up, without the lock (PT_SPARE). */
static int mirror_fill_spare(struct hetmm_mirror *m)
{
	struct pt_spare fresh = { .n = 0 };
	while (fresh.n < PT_SPARE &&
	       (fresh.node[fresh.n] = pt_node_new()) != NULL)
		fresh.n++;
	if (!fresh.n)
		return -ENOMEM;
	pthread_mutex_lock(&m->lock);
	while (fresh.n && m->spare.n < PT_SPARE)
		m->spare.node[m->spare.n++] = fresh.node[--fresh.n];
	pthread_mutex_unlock(&m->lock);
	pt_spare_free(&fresh);
	return 0;
}

/*
 * Put the device's entries ents of n pages from vpn into its page table,
 * under the lock, unless an invalidation came since seq (-EBUSY).
 */
static int mirror_store(struct hetmm_mirror *m, uint64_t seq, uint64_t vpn,
			size_t n, const uint64_t *ents)
{
	for (;;) {
		int rc = -EBUSY;
		pthread_mutex_lock(&m->lock);
		if (!hetmm_notifier_read_retry(m->notifier, seq))
			rc = pt_put(&m->pt, &m->spare, vpn, n, ents);
		pthread_mutex_unlock(&m->lock);
		if (rc != -EAGAIN)
			return rc;
		rc = mirror_fill_spare(m);
		if (rc)
			return rc;
	}
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
 * A range fault of n pages from vpn, the notifier way: -EBUSY from the
 * fault, or an invalidation since read_begin, means again, until the
 * timeout.  With store, the entries go into the page table under the lock
 * if still good; without, the caller only reads them (a snapshot).
 */
static int mirror_range(struct hetmm_mirror *m, uint64_t vpn, size_t n,
			uint64_t flags, uint64_t *ents, bool store)
{
	struct hetmm_range r = {
		.notifier = m->notifier,
		.start = (void *)addr_of(vpn),
		.npages = n,
		.pfns = ents,
		.default_flags = flags,
		.dev_private_owner = m->emu,
	};
	int64_t deadline = now_ns() + MIRROR_FAULT_TIMEOUT_NS;
	for (;;) {
		int rc = hetmm_notifier_read_begin(m->notifier, &r.notifier_seq);
		if (!rc)
			rc = hetmm_range_fault(&r);
		if (rc && rc != -EBUSY)
			return rc;
		if (!rc && !store)
			return 0;
		if (!rc) {
			for (size_t i = 0; i < n; i++)
				ents[i] = entry_from_range(m->emu, ents[i]);
			rc = mirror_store(m, r.notifier_seq, vpn, n, ents);
			if (rc != -EBUSY)
				return rc;
		}
		if (now_ns() > deadline)
			return -EBUSY;
	}
}

/* Fault the rest of a request into the mirror: one fault, however long. */
static int mirror_fault(struct hetmm_mirror *m, uint64_t vpn, size_t npages,
			bool write)
{
	uint64_t ents[EMU_CHUNK];
	uint64_t flags = HETMM_RANGE_REQ_FAULT |
			 (write ? HETMM_RANGE_REQ_WRITE : 0);
	atomic_fetch_add_explicit(&m->faults, 1, memory_order_relaxed);
	for (size_t done = 0; done < npages;) {
		size_t n = MIN(npages - done, (size_t)EMU_CHUNK);
		int rc = mirror_range(m, vpn + done, n, flags, ents, true);
		if (rc)
			return rc;
		done += n;
	}
	return 0;
}

/* Copy a run of system pages between the process and buf. */
static int mirror_copy_system(uintptr_t addr, char *buf, size_t n, bool write)
{
	struct iovec local = { .iov_base = buf, .iov_len = n * PS };
	struct iovec remote = { .iov_base = (void *)addr, .iov_len = n * PS };
	ssize_t got = write ? process_vm_writev(getpid(), &local, 1, &remote,
						1, 0)
			    : process_vm_readv(getpid(), &local, 1, &remote,
					       1, 0);
	if (got < 0)
		return -errno;
	return (size_t)got == n * PS ? 0 : -EFAULT;
}

static bool entry_usable(uint64_t e, bool write)
{
	return (e & ENT_VALID) && (!write || (e & ENT_WRITE));
}

/* How many entries from vpn are usable system entries, up to max; under
 * the mirror lock. */
static size_t system_run(struct hetmm_mirror *m, uint64_t vpn, size_t max,
			 bool write)
{
	size_t n = 0;
	while (n < max) {
		uint64_t e = pt_get(&m->pt, vpn + n);
		if (!entry_usable(e, write) || (e & ENT_DEVICE))
			break;
		n++;
	}
	return n;
}

/* Has the frame memory behind it?  Asking doesn't fault, touching would. */
static bool frame_populated(const char *dev)
{
	unsigned char vec = 0;
	return mincore((void *)dev, PS, &vec) == 0 && (vec & 1);
}

static void mirror_prepare_frame(struct hetmm_mirror *m, uint64_t e)
{
	madvise(emu_page(m->emu, e & ENT_INDEX_MASK), PS, MADV_POPULATE_WRITE);
}

/* The metadata of frame idx of this device, and whether it is a zero
 * page: migrated in as one, no device copy made. */
static int emu_frame(struct hetmm_emu *emu, uint64_t idx,
		     struct hetmm_page **pagep, bool *zero)
{
	hetmm_pfn_t pfn = { HETMM_PFN_DEV | (emu->first_pfn + idx) };
	struct hetmm_page_info info;
	int rc = hetmm_pfn_to_page(pfn, pagep);
	if (!rc)
		rc = hetmm_page_get_info(*pagep, &info);
	if (!rc)
		*zero = info.flags & HETMM_PAGE_ZERO;
	return rc;
}

/*
 * Device access to one of its own pages, under the mirror lock, to or from
 * the caller's bounce page (never the caller's buffer: see mirror_access).
 * A zero page reads as zeroes; writing one needs its frame populated
 * first, which may fault, so that is left to the caller without the lock
 * (-EAGAIN).  Its frame's metadata gone (the device being removed):
 * -ENXIO.
 */
static int mirror_device_page(struct hetmm_mirror *m, uint64_t e, char *buf,
			      bool write)
{
	struct hetmm_page *page;
	bool zero;
	char *dev = emu_page(m->emu, e & ENT_INDEX_MASK);
	int rc = emu_frame(m->emu, e & ENT_INDEX_MASK, &page, &zero);
	if (rc)
		return rc;
	if (!write) {
		if (zero)
			memset(buf, 0, PS);
		else
			memcpy(buf, dev, PS);
		return 0;
	}
	if (zero && !frame_populated(dev))
		return -EAGAIN;
	memcpy(dev, buf, PS);
	/* Under the lock: the page's migration back tells our notifier,
	 * which waits for it, before it looks at the zero flag. */
	if (zero)
		hetmm_page_written(page);
	return 0;
}

/*
 * Does the mapping still allow the device's writes to the exclusive page
 * vpn?  mprotect() raises no userfaultfd event, so ask a range fault,
 * which reports a page of this device writable if its mapping is: 1 yes,
 * -EPERM no, -EFAULT no access at all, -EAGAIN not our page any more (a
 * revocation's invalidation is on its way) or not settled: look again.
 */
static int excl_writable(struct hetmm_mirror *m, uint64_t vpn)
{
	uint64_t e = 0;
	int rc = mirror_range(m, vpn, 1, 0, &e, false);
	if (rc)
		return rc == -EBUSY ? -EAGAIN : rc;
	if (e & HETMM_RANGE_ERROR)
		return -EFAULT;
	if (!(e & HETMM_RANGE_DEVICE) || !(e & HETMM_RANGE_LOCAL))
		return -EAGAIN;
	return (e & HETMM_RANGE_WRITE) ? 1 : -EPERM;
}

/* Retries of one page before giving up: each one is a full range fault
 * that something undid before we could use it. */
#define MIRROR_RETRIES 64

/*
 * The caller's buffer is process memory like any other, perhaps on this
 * very device: touching it can fault, and the fault, bringing the page
 * back, invalidates the mirrors, which takes the mirror lock.  So pages of
 * the device are copied through a bounce page, to or from the buffer with
 * no lock held, as the kernel's dmirror copies from and to the user.
 * (Faulting the buffer in before taking the lock would not do: another
 * thread can send it back to the device in between.)  The bounce is on
 * this thread's stack, which is running here and so not on a device.
 */
static int mirror_access(struct hetmm_mirror *m, uintptr_t addr, char *buf,
			 uint64_t npages, bool write, uint64_t *faults)
{
	uint64_t vpn = vpn_of(addr);
	uint64_t nfaults = 0;
	uint64_t excl_ok = UINT64_MAX;    /* the exclusive page checked */
	uint64_t bounced = UINT64_MAX;    /* the page a write's bounce holds */
	char bounce[PS];
	unsigned retries = 0;
	bool synced = false;
	int rc = 0;

	for (uint64_t i = 0; i < npages;) {
		if (retries > MIRROR_RETRIES) {
			rc = -EAGAIN;
			break;
		}
		pthread_mutex_lock(&m->lock);
		uint64_t e = pt_get(&m->pt, vpn + i);
		if (!entry_usable(e, write)) {
			pthread_mutex_unlock(&m->lock);
			rc = mirror_fault(m, vpn + i, npages - i, write);
			if (rc)
				break;
			nfaults++;
			retries++;
			synced = true;   /* the range fault caught up */
			continue;
		}
		/* A munmap, madvise or mremap that returned before this
		 * call may not have reached our notifier yet: its entries
		 * would stand for pages gone (the kernel's notifiers run
		 * before such a call returns).  A new mapping at the address
		 * would then read as mirrored, not fault, and a frame that
		 * is no longer the page's would be used.  Once per call. */
		if (!synced) {
			pthread_mutex_unlock(&m->lock);
			rc = hetmm_ctx_sync(m->emu->ctx);
			if (rc)
				break;
			synced = true;
			continue;
		}
		if (!(e & ENT_DEVICE)) {
			size_t n = system_run(m, vpn + i,
					      MIN(npages - i, (uint64_t)EMU_CHUNK),
					      write);
			pthread_mutex_unlock(&m->lock);
			if (!mirror_copy_system(addr_of(vpn + i),
						buf + i * PS, n, write)) {
				i += n;
				retries = 0;
				continue;
			}
			/* The CPU side changed under the entry: refault. */
			mirror_drop(m, vpn + i);
			retries++;
			continue;
		}
		if (write && (e & ENT_EXCL) && excl_ok != vpn + i) {
			/* mprotect()ed since?  No event tells. */
			pthread_mutex_unlock(&m->lock);
			rc = excl_writable(m, vpn + i);
			if (rc == 1) {
				excl_ok = vpn + i;
				rc = 0;
				continue;
			}
			/* Like the kernel's refault of a read-only
			 * range: the entry goes. */
			mirror_drop(m, vpn + i);
			if (rc != -EAGAIN)
				break;
			rc = 0;
			retries++;
			continue;
		}
		if (write && bounced != vpn + i) {
			pthread_mutex_unlock(&m->lock);
			memcpy(bounce, buf + i * PS, PS);   /* may fault */
			bounced = vpn + i;
			continue;   /* the entry may have gone meanwhile */
		}
		rc = mirror_device_page(m, e, bounce, write);
		pthread_mutex_unlock(&m->lock);
		if (!rc && !write)
			memcpy(buf + i * PS, bounce, PS);   /* may fault */
		if (rc == -EAGAIN) {
			/* A zero page to write: give the frame memory
			 * first, outside the lock, since that faults. */
			mirror_prepare_frame(m, e);
		} else if (rc) {
			mirror_drop(m, vpn + i);
		}
		if (rc) {
			rc = 0;
			retries++;
			continue;
		}
		i++;
		retries = 0;
	}
	if (faults)
		*faults = nfaults;
	return rc;
}

/* Check a mirror call's arguments, as hetmm checks a range: -EINVAL
 * unless page aligned, non-empty, not wrapping, in the user half. */
static int mirror_call_begin(struct hetmm_mirror *m, const void *addr,
			     const void *buf, uint64_t npages)
{
	uintptr_t a = (uintptr_t)addr;
	if (!m || !buf || !addr || !npages || (a & (PS - 1)) ||
	    npages > (EMU_VA_END >> PAGE_SHIFT) ||
	    a + npages * PS > EMU_VA_END || a + npages * PS < a)
		return -EINVAL;
	return ctx_usable(m->emu->ctx);
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

/*
 * As dmirror reports a range fault's entries: a device-private page is
 * visible to its own device only (local, with the mapping's permission);
 * to any other it is not present.  Coherent pages are CPU pages, local or
 * remote.
 */
static uint8_t snapshot_prot(uint64_t e)
{
	if (e & HETMM_RANGE_ERROR)
		return HETMM_PROT_ERROR;
	if (!(e & HETMM_RANGE_VALID))
		return HETMM_PROT_NONE;
	uint8_t prot = (e & HETMM_RANGE_WRITE) ? HETMM_PROT_WRITE
					       : HETMM_PROT_READ;
	if (e & HETMM_RANGE_DEVICE) {
		if (e & HETMM_RANGE_COHERENT)
			prot |= (e & HETMM_RANGE_LOCAL) ?
				HETMM_PROT_DEV_COHERENT_LOCAL :
				HETMM_PROT_DEV_COHERENT_REMOTE;
		else
			prot |= HETMM_PROT_DEV_PRIVATE_LOCAL;
	} else if (e & HETMM_RANGE_ZERO) {
		prot = HETMM_PROT_ZERO | HETMM_PROT_READ;
	}
	/* A PMD maps a page table's worth of pages (9 orders at 4 KiB
	 * pages, 11 at 16 KiB, 13 at 64 KiB), a PUD a table of PMDs. */
	unsigned int pmd = (unsigned int)__builtin_ctzll(hetmm_pmd_size()) -
			   PAGE_SHIFT;
	if (hetmm_range_order(e) == pmd)
		prot |= HETMM_PROT_PMD;
	else if (hetmm_range_order(e) == 2 * pmd)
		prot |= HETMM_PROT_PUD;
	return prot;
}

int hetmm_mirror_snapshot(struct hetmm_mirror *mirror, const void *addr,
			  uint64_t npages, uint8_t *prot)
{
	int rc = mirror_call_begin(mirror, addr, prot, npages);
	if (rc)
		return rc;
	uint64_t ents[EMU_CHUNK];
	uint64_t vpn = vpn_of((uintptr_t)addr);
	for (uint64_t done = 0; done < npages;) {
		size_t n = MIN(npages - done, (uint64_t)EMU_CHUNK);
		rc = mirror_range(mirror, vpn + done, n, 0, ents, false);
		if (rc)
			return rc;
		for (size_t k = 0; k < n; k++)
			prot[done + k] = snapshot_prot(ents[k]);
		done += n;
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * Exclusive access (dmirror's EXCLUSIVE), on hetmm_make_device_exclusive:
 * the mirror maps the frames it gives, marked exclusive, unless a CPU
 * access took one back before the mirror's lock was taken; the migration
 * back that revokes one later drops the entry with HETMM_EVENT_EXCLUSIVE,
 * which hetmm_mirror_check_exclusive() then tells by its absence.
 */

/* Tries of one chunk while CPU accesses take pages back. */
#define EXCL_TRIES 16

static int mirror_excl_chunk(struct hetmm_mirror *m, uint64_t vpn, size_t n)
{
	struct hetmm_emu *emu = m->emu;
	hetmm_pfn_t pfns[EMU_CHUNK];
	uint64_t ents[EMU_CHUNK];
	for (int tries = 0; tries < EXCL_TRIES; tries++) {
		uint64_t seq;
		int rc = hetmm_make_device_exclusive(emu->pgmap, m->notifier,
						     (void *)addr_of(vpn), n,
						     pfns, &seq);
		if (rc)
			return rc;
		/* Entries up to the first frame not ours (-EIO). */
		size_t k = 0;
		for (; k < n; k++) {
			uint64_t idx = hetmm_pfn_number(pfns[k]) -
				       emu->first_pfn;
			if (idx >= emu->nr_pages)
				break;
			ents[k] = ENT_VALID | ENT_WRITE | ENT_DEVICE |
				  ENT_EXCL | idx;
		}
		rc = mirror_store(m, seq, vpn, k, ents);
		if (rc != -EBUSY)
			return rc ? rc : k < n ? -EIO : 0;
		sched_yield();
	}
	return -EBUSY;
}

int hetmm_mirror_make_exclusive(struct hetmm_mirror *mirror, void *addr,
				uint64_t npages)
{
	int rc = mirror_call_begin(mirror, addr, addr, npages);
	if (rc)
		return rc;
	uint64_t vpn = vpn_of((uintptr_t)addr);
	for (uint64_t done = 0; done < npages;) {
		size_t n = MIN(npages - done, (uint64_t)EMU_CHUNK);
		rc = mirror_excl_chunk(mirror, vpn + done, n);
		if (rc)
			return rc;
		done += n;
	}
	return 0;
}

int hetmm_mirror_check_exclusive(struct hetmm_mirror *mirror,
				 const void *addr, uint64_t npages)
{
	int rc = mirror_call_begin(mirror, addr, addr, npages);
	if (!rc)
		rc = hetmm_ctx_sync(mirror->emu->ctx);   /* a late munmap */
	if (rc)
		return rc;
	uint64_t vpn = vpn_of((uintptr_t)addr);
	/* Held under the lock the invalidations take: a walk of the
	 * entries there are, as dmirror's xa_for_each_range, never of
	 * every page of what may be the whole address space. */
	pthread_mutex_lock(&mirror->lock);
	if (pt_any(mirror->pt, PT_LEVELS - 1, 0, vpn, vpn + npages,
		   ENT_VALID | ENT_EXCL))
		rc = -EPERM;
	pthread_mutex_unlock(&mirror->lock);
	return rc;
}
