/* SPDX-License-Identifier: MIT */
/*
 * internal.h - what the modules of libhetmm share and users never see.
 */
#ifndef HETMM_INTERNAL_H
#define HETMM_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "hetmm.h"

#define PAGE_SHIFT HETMM_PAGE_SHIFT
#define PAGE_SIZE HETMM_PAGE_SIZE
#define PAGE_MASK (~(PAGE_SIZE - 1))

/* Userspace addresses hetmm manages: the 48-bit x86-64/arm64 user half. */
#define USER_VA_END (1ULL << 47)

/* Migrations work in chunks of at most this many pages (2 MiB). */
#define CHUNK_PAGES 512
/* A fault brings back at most this many pages, a chunk at a time. */
#define FAULT_AROUND_MAX (16 * CHUNK_PAGES)

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

static inline uint64_t addr_to_vpn(uintptr_t addr)
{
	return (uint64_t)addr >> PAGE_SHIFT;
}

static inline uintptr_t vpn_to_addr(uint64_t vpn)
{
	return (uintptr_t)(vpn << PAGE_SHIFT);
}

/*
 * Validate a user range: non-NULL, page aligned, non-empty, not wrapping,
 * inside the user half.  Returns 0 or -EINVAL.
 */
int check_user_range(const void *addr, size_t len);

/* ------------------------------------------------------------------------
 * vtab.c - a sparse table of 64-bit entries keyed by virtual page number.
 *
 * Four levels of 512 slots, like an x86-64 page table, so a lookup is four
 * dependent loads and no lock.  Nodes are allocated on first store and only
 * freed with the table; a zero entry means "nothing here".
 */
struct vtab {
	_Atomic(void *) root;
};

void vtab_init(struct vtab *t);
void vtab_destroy(struct vtab *t);
/* The slot for vpn, or NULL if absent and !create (or out of memory). */
_Atomic uint64_t *vtab_slot(struct vtab *t, uint64_t vpn, bool create);
uint64_t vtab_get(struct vtab *t, uint64_t vpn);

/* The slot after slot (that of vpn - 1): leaves are arrays, so only a
 * walk into the next leaf costs more than an increment. */
#define VTAB_LEAF_SLOTS 512
static inline _Atomic uint64_t *vtab_next(struct vtab *t,
					  _Atomic uint64_t *slot,
					  uint64_t vpn, bool create)
{
	if (slot && vpn % VTAB_LEAF_SLOTS)
		return slot + 1;
	return vtab_slot(t, vpn, create);
}
/* Call fn for each non-zero entry in [first, last); stop if it returns !0. */
int vtab_for_each(struct vtab *t, uint64_t first, uint64_t last,
		  int (*fn)(void *arg, uint64_t vpn, _Atomic uint64_t *slot),
		  void *arg);

/* ------------------------------------------------------------------------
 * Shadow entries: the context's record of where each process page lives.
 *
 * The kernel keeps a device-private swap entry in the PTE; hetmm keeps this
 * instead, one word per page, changed only by compare-and-swap:
 *
 *   0                       system memory, unpinned, nobody migrating it
 *   DEVICE | pfn            on the device frame pfn
 *   BUSY [| DEVICE | pfn]   claimed by a migration or a fault in flight;
 *                           whoever set BUSY clears it and wakes waiters
 *   n (no flag bits)        system page pinned n times (pin API)
 */
#define SHADOW_DEVICE (1ULL << 63)
#define SHADOW_BUSY (1ULL << 62)
#define SHADOW_PFN_MASK ((1ULL << 56) - 1)

static inline uint64_t shadow_pfn(uint64_t e)
{
	return e & SHADOW_PFN_MASK;
}

/* ------------------------------------------------------------------------
 * uffd.c - opening and driving a userfaultfd.
 */
struct uffd {
	int fd;
	enum hetmm_uffd_route route;
	int route_errno;
	uint64_t offered;  /* what UFFDIO_API offers */
	uint64_t features; /* what this fd was opened with */
};

int uffd_open(struct uffd *u, uint64_t want_features);
void uffd_close(struct uffd *u);
int uffd_register(int fd, uintptr_t start, size_t len, uint64_t mode,
		  uint64_t *ioctls);
int uffd_writeprotect(int fd, uintptr_t start, size_t len, bool wp);
enum uffd_fill { FILL_COPY, FILL_ZERO, FILL_MOVE };
/* Fill [dst, dst + len) by UFFDIO_COPY/ZEROPAGE/MOVE from src, retrying
 * EAGAIN: bytes done, or -errno if it stopped at the first page. */
long uffd_fill(int fd, enum uffd_fill op, uintptr_t dst, uintptr_t src,
	       size_t len, bool wake);
int uffd_wake(int fd, uintptr_t start, size_t len);

/* ------------------------------------------------------------------------
 * vma.c - what the kernel knows about a range: VMAs and page presence.
 */
#define VMA_READ (1u << 0)
#define VMA_WRITE (1u << 1)
#define VMA_EXEC (1u << 2)
#define VMA_SHARED (1u << 3)
#define VMA_FILE (1u << 4)   /* file backed, shmem or hugetlb */

struct vma {
	uintptr_t start;
	uintptr_t end;
	unsigned flags;
};

struct vmaq {
	int maps_fd;       /* /proc/self/maps, for PROCMAP_QUERY */
	int pagemap_fd;    /* /proc/self/pagemap */
	bool has_query;
	bool has_scan;
};

int vmaq_open(struct vmaq *q);
void vmaq_close(struct vmaq *q);
/* The VMA covering addr, -ENOENT if none. */
int vma_find(struct vmaq *q, uintptr_t addr, struct vma *vma);
/* -EINVAL unless [start, end) is covered by accessible VMAs. */
int vma_check_accessible(struct vmaq *q, uintptr_t start, uintptr_t end);

static inline bool vma_is_private_anon(const struct vma *v)
{
	return !(v->flags & (VMA_SHARED | VMA_FILE));
}

/* Per-page presence, as /proc/self/pagemap and PAGEMAP_SCAN tell it. */
#define PG_PRESENT (1u << 0)
#define PG_SWAPPED (1u << 1)
#define PG_EXCLUSIVE (1u << 2)
#define PG_ZERO (1u << 3)
#define PG_HUGE (1u << 4)
#define PG_FILE (1u << 5)    /* a file (or shmem) page, not anonymous */

int vma_page_flags(struct vmaq *q, uintptr_t start, size_t npages,
		   uint8_t *flags);
/* PG_PRESENT, PG_SWAPPED, PG_EXCLUSIVE and PG_FILE only: one pread, no
 * scan. */
int vma_page_presence(struct vmaq *q, uintptr_t start, size_t npages,
		      uint8_t *flags);

/* ------------------------------------------------------------------------
 * pagemap.c - hot-added device memory and its per-page metadata.
 */

/*
 * Metadata of one device page: 16 bytes, half the kernel's struct page.
 * owner holds the page-aligned process address the frame backs; its low
 * bits hold the HETMM_PAGE_* flags.
 */
struct hetmm_page {
	_Atomic uint64_t owner;
	_Atomic uint32_t refcount;
	_Atomic uint32_t pincount;
};

#define PFN_SECTION_SHIFT 32
#define PFN_MAX_SECTIONS 256

struct hetmm_pagemap {
	struct hetmm_ctx *ctx;
	struct hetmm_pagemap *next;      /* ctx->pagemaps, under ctx->lock */
	enum hetmm_memory_type type;
	uint64_t nr_pages;
	const struct hetmm_pagemap_ops *ops;
	void *drvdata;
	const void *owner;
	uint32_t flags;                   /* HETMM_PAGEMAP_* */
	uintptr_t remap_base;             /* HETMM_PAGEMAP_REMAP memory */
	unsigned section;
	struct hetmm_page *pages;

	pthread_mutex_t free_lock;
	uint32_t *free_stack;             /* indices, top at nr_free - 1 */
	uint64_t nr_free;

	atomic_bool dying;                /* hot-remove started */
	atomic_int users;                 /* migrations to it in flight */
};

static inline uint64_t pagemap_pfn(const struct hetmm_pagemap *pgmap,
				   uint64_t index)
{
	return ((uint64_t)pgmap->section << PFN_SECTION_SHIFT) | index;
}

/* Internal pfn (number only) to its pagemap and index; NULL if unknown.
 * The caller must keep the pagemap alive (hold a claim on a page of it). */
struct hetmm_pagemap *pfn_pagemap(uint64_t pfn, uint64_t *index);

/* Take up to nr free frames; returns how many, indices into idx[]. */
size_t pagemap_alloc(struct hetmm_pagemap *pgmap, uint32_t *idx, size_t nr);
void pagemap_free(struct hetmm_pagemap *pgmap, const uint32_t *idx,
		  size_t nr);
/* Enter/leave a migration to pgmap; enter fails with -ENXIO if dying. */
int pagemap_get(struct hetmm_pagemap *pgmap);
void pagemap_put(struct hetmm_pagemap *pgmap);

/* ------------------------------------------------------------------------
 * ctx.c, fault.c - the context and its fault handler.
 */

/* One sequential stream the fault-around logic is following. */
struct fault_stream {
	uintptr_t next;
	uint32_t window;
};

#define FAULT_STREAMS 4
#define MAX_MIGRATORS 16

struct hetmm_stats_atomic {
	atomic_uint_fast64_t faults;
	atomic_uint_fast64_t fault_pages;
	atomic_uint_fast64_t fault_zero;
	atomic_uint_fast64_t to_device_pages;
	atomic_uint_fast64_t to_system_pages;
	atomic_uint_fast64_t skipped_pages;
	atomic_uint_fast64_t mirror_faults;
	atomic_int_fast64_t device_resident;
};

struct hetmm_ctx {
	struct uffd uffd;
	struct vmaq vmaq;
	struct vtab shadow;
	uint32_t fault_around_max;

	pthread_t handler;
	bool handler_running;
	void *doorbell;                   /* touched to stop the handler */
	bool doorbell_served;             /* handler-owned */
	void *zero_src;                   /* CHUNK_PAGES readable zero pages */

	/* Handler-owned state: no lock, only the handler touches it. */
	struct fault_stream streams[FAULT_STREAMS];
	unsigned stream_next;
	uintptr_t last_fill_start;        /* the last fault-around window */
	uintptr_t last_fill_end;
	uint64_t *fault_claims;           /* CHUNK_PAGES entries */
	void *fault_staging;              /* CHUNK_PAGES pages */

	/* Threads inside a copy-to-device phase: a MISSING fault they take
	 * on their own claimed page means the page vanished under them. */
	_Atomic pid_t migrators[MAX_MIGRATORS];

	pthread_mutex_t lock;             /* pagemaps, emus */
	struct hetmm_pagemap *pagemaps;
	struct hetmm_emu *emus;

	pthread_rwlock_t mirrors_lock;
	struct hetmm_mirror *mirrors;

	struct hetmm_stats_atomic stats;
};

#define STAT_ADD(ctx, field, n) \
	atomic_fetch_add_explicit(&(ctx)->stats.field, (n), memory_order_relaxed)

int fault_handler_start(struct hetmm_ctx *ctx);
void fault_handler_stop(struct hetmm_ctx *ctx);

void migrator_enter(struct hetmm_ctx *ctx, pid_t tid);
void migrator_leave(struct hetmm_ctx *ctx, pid_t tid);
bool is_migrator(struct hetmm_ctx *ctx, pid_t tid);

/* ------------------------------------------------------------------------
 * migrate.c
 */

/*
 * Bring the claimed pages [vpn, vpn + n) back to system memory.  claims[i]
 * is the shadow entry with BUSY set; on return every entry is 0 again and
 * every waiter on the range was woken.  Returns pages that left the
 * device (a page whose mapping vanished meanwhile leaves it dropped).
 */
size_t migrate_back_claimed(struct hetmm_ctx *ctx, uint64_t vpn, size_t n,
			    const uint64_t *claims, void **staging, bool fault);
/* Claim up to n consecutive device-resident pages from vpn. */
size_t claim_device_run(struct hetmm_ctx *ctx, uint64_t vpn, size_t n,
			uint64_t *claims);
/* Move every device page of [start, end) back; used by remove/destroy. */
int migrate_back_range(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end,
		       struct hetmm_migrate_report *report);

/* ------------------------------------------------------------------------
 * range.c - the device's view: range fault and snapshot.
 */

/* A mirror entry: how a device may reach one process page. */
#define MENT_VALID (1ULL << 63)
#define MENT_WRITE (1ULL << 62)
#define MENT_DEVICE (1ULL << 61)   /* payload: device pfn (local) */

int range_fault(struct hetmm_ctx *ctx, const void *owner, uintptr_t start,
		size_t npages, bool write, uint64_t *entries);
int range_snapshot(struct hetmm_ctx *ctx, const void *owner, uintptr_t start,
		   size_t npages, uint8_t *prot);

/* ------------------------------------------------------------------------
 * emu.c - the emulated device and its mirrors.
 */
struct hetmm_mirror {
	struct hetmm_mirror *next;        /* ctx->mirrors */
	struct hetmm_emu *emu;
	pthread_mutex_t lock;             /* the device page table */
	struct vtab pt;
};

/* Drop every mirror entry of [start, end): the CPU side changed. */
void mirrors_invalidate(struct hetmm_ctx *ctx, uintptr_t start,
			uintptr_t end);
void emu_destroy_all(struct hetmm_ctx *ctx);

#endif /* HETMM_INTERNAL_H */
