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
/* Words that batch claims of device pages take: hetmm_ctx.claim_words. */
#define CLAIM_WORDS 64
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
 *   BUSY                    a system page claimed by a migration to a
 *                           device, or being filled: a hole, or a page a
 *                           fault brought back, whose thread may run
 *                           already (0 in a moment: migrate.c)
 *   BUSY | GONE [| ...]     claimed, and the process unmapped the page
 *                           meanwhile: the claimer must not publish it
 *   n (no flag bits)        system page with references or pins taken
 *                           by the pin API (pin.c: n = refs + pins * BIAS)
 *   FIXED | pfn             CPU-addressable device memory (FS_DAX,
 *                           GENERIC) mapped at this address by its driver:
 *                           never migrated; pins count in the metadata
 */
#define SHADOW_DEVICE (1ULL << 63)
#define SHADOW_BUSY (1ULL << 62)
#define SHADOW_FIXED (1ULL << 61)
#define SHADOW_GONE (1ULL << 60)
#define SHADOW_FLAGS (SHADOW_DEVICE | SHADOW_BUSY | SHADOW_FIXED | SHADOW_GONE)
#define SHADOW_PFN_MASK ((1ULL << 56) - 1)

static inline uint64_t shadow_pfn(uint64_t e)
{
	return e & SHADOW_PFN_MASK;
}

/* On a device, and nobody holds it: a page a claim may take. */
static inline bool shadow_claimable(uint64_t e)
{
	return (e & (SHADOW_DEVICE | SHADOW_BUSY)) == SHADOW_DEVICE;
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
#define WP_ON (1u << 2)  /* protect; without it, lift and wake */
/* UFFDIO_WRITEPROTECT; flags WP_ON and FILL_ONCE (below). */
int uffd_writeprotect(int fd, uintptr_t start, size_t len, unsigned flags);
enum uffd_fill { FILL_COPY, FILL_ZERO, FILL_MOVE };
#define FILL_WAKE (1u << 0)  /* wake the range's waiters when filled */
/* Don't retry EAGAIN.  The kernel gives it while an event (munmap,
 * madvise, mremap) waits to be read; only the handler reads events, so
 * the handler must give up, read, and let the thread fault again. */
#define FILL_ONCE (1u << 1)
/* Fill [dst, dst + len) by UFFDIO_COPY/ZEROPAGE/MOVE from src: bytes
 * done, or -errno if it stopped at the first page. */
long uffd_fill(int fd, enum uffd_fill op, uintptr_t dst, uintptr_t src,
	       size_t len, unsigned flags);
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
/* The same from a fresh read of /proc/self/maps (a fork child's own). */
int vma_find_maps(uintptr_t addr, struct vma *vma);
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

/* In the owner word of a free frame of a remapping pagemap: a page was
 * copied out of it, not moved, and its memory still holds that page.  No
 * page can move into it until it is emptied (migrate.c:
 * frames_empty_stale, before anything moves in; pagemap_free keeps the
 * flag for a frame given back unused).  Never reported. */
#define PAGE_STALE (1u << 11)

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
	/* Frames whose pages have left, freed once the fill reading them
	 * is done (migrate.c, install_lone): counted free already, and
	 * waited for by an allocation that finds the pool short. */
	_Atomic uint64_t nr_leaving;
	/* Frames flagged HETMM_PAGE_ZERO (counted at the commit that flags
	 * one, uncounted by pagemap_page_written and pagemap_free).  While
	 * there are none, a run coming back needs no look at its metadata
	 * before it moves. */
	_Atomic uint64_t nr_zero;

	atomic_bool dying;                /* hot-remove started */
	atomic_int users;                 /* migrations to it in flight */
	uintptr_t fixed_base;             /* FS_DAX, GENERIC: the mapping */
	_Atomic uint64_t clock_hand;      /* eviction: next frame to look at */
};

static inline bool pagemap_is_coherent(const struct hetmm_pagemap *pgmap)
{
	return pgmap->type == HETMM_MEMORY_DEVICE_COHERENT;
}

/* Frames of FS_DAX and GENERIC pagemaps are CPU memory mapped in place. */
static inline bool pagemap_is_fixed(const struct hetmm_pagemap *pgmap)
{
	return pgmap->type == HETMM_MEMORY_FS_DAX ||
	       pgmap->type == HETMM_MEMORY_GENERIC;
}

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
/* Give frames back; free_flags is 0, or PAGE_STALE for frames whose
 * memory still holds the page copied out of them. */
void pagemap_free(struct hetmm_pagemap *pgmap, const uint32_t *idx,
		  size_t nr, uint64_t free_flags);
/*
 * A frame whose page leaves before the fill that reads it has run
 * (migrate.c, install_lone): begin makes its metadata say free and counts
 * it as free (nr_leaving), keeping it out of the pool; done puts it in
 * the pool; undo, if the page stays, makes it the page's again.
 */
struct frame_owner {
	uint64_t owner;
	uint32_t refcount;
};
struct frame_owner pagemap_leave_begin(struct hetmm_pagemap *pgmap,
				       uint32_t idx, uint64_t free_flags);
void pagemap_leave_done(struct hetmm_pagemap *pgmap, uint32_t idx);
void pagemap_leave_undo(struct hetmm_pagemap *pgmap, uint32_t idx,
			struct frame_owner was);
/* A device write gave the page data: it is no zero page any more. */
void pagemap_page_written(struct hetmm_pagemap *pgmap, struct hetmm_page *p);
/* Enter/leave a migration to pgmap; enter fails with -ENXIO if dying. */
int pagemap_get(struct hetmm_pagemap *pgmap);
void pagemap_put(struct hetmm_pagemap *pgmap);

/*
 * A reference (pin false) or pin (pin true) on the page of a fixed
 * pagemap that the shadow entry e (FIXED | pfn) names.  0, -ENXIO if the
 * pagemap is being removed, -EAGAIN if e is stale (look again),
 * -EOPNOTSUPP for a long-term pin of FS_DAX memory, -ENOMEM on overflow.
 */
int pagemap_fixed_grab(_Atomic uint64_t *slot, uint64_t e, bool pin,
		       bool longterm);
/* Drop what grab took; -EINVAL if the page holds none. */
int pagemap_fixed_release(uint64_t e, bool pin, bool check_only);
/* References and pins held on the fixed page e names. */
int pagemap_fixed_counts(uint64_t e, uint64_t *refs, uint64_t *pins);

/* evict.c: frames for a full HETMM_PAGEMAP_EVICT pagemap, by evicting its
 * least recently used pages to system memory; returns frames taken. */
size_t pagemap_alloc_evict(struct hetmm_pagemap *pgmap, uint32_t *idx,
			   size_t nr);

/* ------------------------------------------------------------------------
 * ctx.c, fault.c - the context and its fault handler.
 */

/* One sequential stream the fault-around logic is following, upward or
 * downward (memcpy runs backwards for some alignments). */
struct fault_stream {
	uintptr_t next;                   /* where an upward scan faults next */
	uintptr_t prev;                   /* where a downward one does */
	uint32_t window;
};

#define FAULT_STREAMS 4

/*
 * Which pages of one 2 MiB block of virtual memory the fault path has
 * brought back lately: density-based fault-around (fault.c).  The table
 * is direct-mapped, so it follows up to 128 MiB at once.  gen is
 * hetmm_ctx.dense_gen when the block was first seen; a migration to a
 * device since then makes the bits stale.
 */
#define DENSE_BLOCK_PAGES CHUNK_PAGES
#define DENSE_BLOCKS 64
struct fault_dense {
	uint64_t block;                   /* vpn / DENSE_BLOCK_PAGES, + 1 */
	uint64_t gen;
	unsigned nset;                    /* bits set */
	uint64_t bits[DENSE_BLOCK_PAGES / 64];
};

#define MAX_MIGRATORS 16

/*
 * A thread in the copy path of a migration to a device.  Its zap of the
 * copied pages (MADV_DONTNEED) raises REMOVE events like any madvise;
 * the handler tells them by the zap range, and the migrator publishes
 * the pages only once the handler has handled them all (migrator_zap),
 * so that the handler cannot take its own zap for the process
 * discarding them.
 */
struct migrator {
	_Atomic pid_t tid;
	_Atomic uintptr_t zap_start;
	_Atomic uintptr_t zap_end;
	/* A coherent remap of ours (coherent.c): the UNMAP and REMAP events
	 * it raises for these two ranges are not the process's doing. */
	_Atomic uintptr_t own_start[2];
	_Atomic uintptr_t own_end[2];
};

struct hetmm_stats_atomic {
	atomic_uint_fast64_t faults;
	atomic_uint_fast64_t fault_pages;
	atomic_uint_fast64_t fault_zero;
	atomic_uint_fast64_t to_device_pages;
	atomic_uint_fast64_t to_system_pages;
	atomic_uint_fast64_t skipped_pages;
	atomic_uint_fast64_t mirror_faults;
	atomic_int_fast64_t device_resident;
	atomic_uint_fast64_t discarded_pages;
	atomic_uint_fast64_t remapped_pages;
	atomic_uint_fast64_t fork_pages;
	atomic_uint_fast64_t evictions;
	atomic_uint_fast64_t pins;
};

/* ------------------------------------------------------------------------
 * notifier.c - interval notifiers.
 *
 * seq counts invalidations begun; active counts those running.  An
 * invalidation raises active before seq, and a reader reads seq before
 * checking active, so a reader either sees the invalidation running and
 * waits, or gets a seq that the invalidation will change.
 */
struct hetmm_notifier {
	struct hetmm_notifier *next;      /* ctx->notifiers */
	struct hetmm_ctx *ctx;
	uintptr_t start, end;
	const struct hetmm_notifier_ops *ops;
	void *arg;
	_Atomic uint64_t seq;
	atomic_uint active;
};

/* Tell every notifier overlapping [start, end) that it changes. */
void notifiers_invalidate(struct hetmm_ctx *ctx, uintptr_t start,
			  uintptr_t end, enum hetmm_event why);
/* Context teardown: RELEASE to all, then free them. */
void notifiers_release(struct hetmm_ctx *ctx);

struct hetmm_ctx {
	struct uffd uffd;
	/* Device memory that pages move into (HETMM_PAGEMAP_REMAP) is
	 * registered here, write-protect mode only and with no events:
	 * UFFDIO_MOVE wants a registered destination, and a frame given back
	 * by madvise must not raise an event the handler has to read.  Its
	 * fd is -1 when the kernel cannot move pages. */
	struct uffd frames;
	struct vmaq vmaq;
	struct vtab shadow;
	uint32_t fault_around_max;

	pthread_t handler;
	bool handler_running;
	void *doorbell;                   /* touched to stop the handler */
	char *sync_pages;                 /* one per migrator slot, write
					   * protected: see handler_sync() */
	bool doorbell_served;             /* handler-owned */
	void *zero_src;                   /* CHUNK_PAGES readable zero pages */

	/* Handler-owned state: no lock, only the handler touches it. */
	struct fault_stream streams[FAULT_STREAMS];
	unsigned stream_next;
	struct fault_dense dense[DENSE_BLOCKS];
	/* Messages of the batch being handled after the current one, up
	 * to its last event: see fault_handler_main(). */
	const struct uffd_msg *pending;
	size_t npending;
	uintptr_t last_fill_start;        /* the last fault-around window */
	uintptr_t last_fill_end;
	uint64_t *fault_claims;           /* CHUNK_PAGES entries */
	void *fault_staging;              /* CHUNK_PAGES pages */

	/* Threads inside a copy-to-device phase: a MISSING fault they take
	 * on their own claimed page means the page vanished under them. */
	struct migrator migrators[MAX_MIGRATORS];

	pthread_mutex_t lock;             /* pagemaps, emus */
	struct hetmm_pagemap *pagemaps;
	struct hetmm_emu *emus;

	pthread_rwlock_t notifiers_lock;
	struct hetmm_notifier *notifiers;

	/* Migrations to a device hold it shared; fork preparation holds
	 * it exclusive while it brings every device page home. */
	pthread_rwlock_t fork_lock;
	unsigned fork_gen;                /* fork_generation at creation */
	struct hetmm_ctx *next;           /* every context, for fork */

	/* Some mirror was ever granted exclusive access: until then no
	 * migration back needs to look for exclusive frames. */
	atomic_bool exclusive_used;

	/* Counts migrations to a device: what the fault path learnt of a
	 * block's density before one is stale (struct fault_dense). */
	_Atomic uint64_t dense_gen;

	/* Batch claims of device pages (migrate.c: claim_batch), one word
	 * per group of vtab leaves: CLAIM_BATCH while a batch claims in
	 * the leaf, plus CLAIM_ONE per compare-and-swap claim under way. */
	_Atomic uint32_t claim_words[CLAIM_WORDS];

	struct hetmm_stats_atomic stats;
};

/* ------------------------------------------------------------------------
 * lifecycle.c - what the process does to its memory: munmap, madvise,
 * mremap (userfaultfd events, read by the handler) and fork.
 */
extern atomic_uint fork_generation;

/* An object inherited across fork: its handler and device are the
 * parent's, so the child may not use it. */
static inline bool ctx_forked(const struct hetmm_ctx *ctx)
{
	return ctx->fork_gen !=
	       atomic_load_explicit(&fork_generation, memory_order_relaxed);
}

int lifecycle_register(struct hetmm_ctx *ctx);
void lifecycle_unregister(struct hetmm_ctx *ctx);
void lifecycle_unmap(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end);
void lifecycle_discard(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end);
void lifecycle_remap(struct hetmm_ctx *ctx, uintptr_t from, uintptr_t to,
		     size_t len);

#define STAT_ADD(ctx, field, n) \
	atomic_fetch_add_explicit(&(ctx)->stats.field, (n), memory_order_relaxed)

int fault_handler_start(struct hetmm_ctx *ctx);
void fault_handler_stop(struct hetmm_ctx *ctx);

struct migrator *migrator_enter(struct hetmm_ctx *ctx, pid_t tid);
void migrator_leave(struct migrator *m);
bool is_migrator(struct hetmm_ctx *ctx, pid_t tid);
/* madvise(MADV_DONTNEED) of [start, end) by migrator m, returning once
 * the handler has seen the REMOVE events it raised. */
int migrator_zap(struct hetmm_ctx *ctx, struct migrator *m, uintptr_t start,
		 uintptr_t end);
/*
 * Return once the handler has processed every event the kernel handed it
 * before this call.  munmap returns when its event is read, not handled:
 * without this, memory mapped anew at the same address and migrated at
 * once could meet the late UNMAP meant for the old mapping.
 */
void handler_sync(struct hetmm_ctx *ctx);
bool is_sync_page(const struct hetmm_ctx *ctx, uintptr_t addr);
/* Is [start, end) inside a range a migrator remaps on its own account? */
bool migrators_own(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end);
/* [start, end) lies within a migrator's zap under way. */
bool migrators_zapping(struct hetmm_ctx *ctx, uintptr_t start,
		       uintptr_t end);

/* ------------------------------------------------------------------------
 * migrate.c
 */

/*
 * Bring the claimed pages [vpn, vpn + n) back to system memory.  claims[i]
 * is the shadow entry with BUSY set; on return every entry is 0 again and
 * every waiter on the range was woken (unless BACK_NO_WAKE).  Returns
 * pages that left the device (a page whose mapping vanished meanwhile
 * leaves it dropped).
 */
#define BACK_FAULT (1u << 0)    /* on the handler, for a fault */
#define BACK_NO_WAKE (1u << 1)  /* the caller wakes the range later */
size_t migrate_back_claimed(struct hetmm_ctx *ctx, uint64_t vpn, size_t n,
			    const uint64_t *claims, void **staging,
			    unsigned how);
/*
 * Every compare-and-swap that claims a device page (its expected value
 * has DEVICE, not BUSY) goes through here, for claim_device_run's
 * batches: it is atomic_compare_exchange_strong(slot, expected,
 * desired), made while no batch claims pages of vpn's leaf.
 */
bool shadow_claim(struct hetmm_ctx *ctx, uint64_t vpn,
		  _Atomic uint64_t *slot, uint64_t *expected,
		  uint64_t desired);
/* Claim the device page vpn whose entry is e (DEVICE, not BUSY): false
 * if the entry changed, or if it is a coherent page held in place. */
bool claim_device_page(struct hetmm_ctx *ctx, uint64_t vpn,
		       _Atomic uint64_t *slot, uint64_t e);
/* Claim up to n consecutive device-resident pages from vpn; returns how
 * many, their entries as claimed (e | BUSY) in claims. */
size_t claim_device_run(struct hetmm_ctx *ctx, uint64_t vpn, size_t n,
			uint64_t *claims);
/* Move every device page of [start, end) back; used by remove/destroy. */
int migrate_back_range(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end,
		       struct hetmm_migrate_report *report);
/* Forget claimed device pages whose process page is gone: free their
 * frames and clear their entries, copying nothing.  Notifiers are told
 * again, for the reason the pages went (why), before the frames are. */
void migrate_drop_claimed(struct hetmm_ctx *ctx, const uint64_t *vpns,
			  const uint64_t *claims, size_t n,
			  enum hetmm_event why);

/* ------------------------------------------------------------------------
 * coherent.c - DEVICE_COHERENT pages mapped at the process's addresses.
 */

/* The pagemap of a device entry e if it is coherent, else NULL.  Only
 * for a claimed entry: hot-remove may free the pagemap of another. */
struct hetmm_pagemap *coherent_pagemap(uint64_t e, uint64_t *idx);
/* pagemap.c: each live section's memory type (0 for none). */
extern _Atomic int section_types[PFN_MAX_SECTIONS];

/* Is e a device entry of a coherent pagemap?  Any entry; inline, as every
 * claim of a device page asks. */
static inline bool shadow_is_coherent(uint64_t e)
{
	uint64_t s = shadow_pfn(e) >> PFN_SECTION_SHIFT;
	return (e & SHADOW_DEVICE) && s < PFN_MAX_SECTIONS &&
	       atomic_load_explicit(&section_types[s], memory_order_relaxed) ==
	       HETMM_MEMORY_DEVICE_COHERENT;
}

/* pagemap.c: does the coherent page e names carry references or pins?
 * (Looked at under the section lock.) */
bool coherent_page_held(uint64_t e);

/* The same for any entry. */
static inline bool coherent_held(uint64_t e)
{
	return shadow_is_coherent(e) && coherent_page_held(e);
}
/* Replace [addr, addr + n pages) with a shared mapping of device pages
 * [idx, idx + n) of pgmap, registered for MISSING faults. */
int coherent_map(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
		 uintptr_t addr, uint64_t idx, size_t n);
/* Replace the coherent mapping at [addr, addr + up to n pages) with an
 * empty private anonymous range, registered for MISSING and WP faults,
 * with the same protection; returns pages done (stops at a mapping's
 * end), 0 if the mapping is not there. */
size_t coherent_unmap(struct hetmm_ctx *ctx, uintptr_t addr, size_t n);
/* A MISSING fault on a coherent page (its file page was punched out):
 * fill it with zeroes.  False if e is not a coherent page. */
bool coherent_fault(struct hetmm_ctx *ctx, uint64_t e, uintptr_t addr);
/* madvise discard of a coherent page: it reads as zeroes again. */
void coherent_zero(uint64_t e);

/* ------------------------------------------------------------------------
 * range.c - the device's view: range fault and snapshot.
 */

/* A mirror entry: how a device may reach one process page. */
#define MENT_VALID (1ULL << 63)
#define MENT_WRITE (1ULL << 62)
#define MENT_DEVICE (1ULL << 61)   /* payload: device pfn (local) */
#define MENT_EXCL (1ULL << 60)     /* exclusive access (make_exclusive) */

int range_fault(struct hetmm_ctx *ctx, const void *owner, uintptr_t start,
		size_t npages, bool write, uint64_t *entries);
int range_snapshot(struct hetmm_ctx *ctx, const void *owner, uintptr_t start,
		   size_t npages, uint8_t *prot);

/* ------------------------------------------------------------------------
 * emu.c - the emulated device and its mirrors.
 */
struct hetmm_mirror {
	struct hetmm_mirror *next;        /* emu->mirrors, under ctx->lock */
	struct hetmm_emu *emu;
	struct hetmm_notifier *notifier;  /* the whole address space */
	pthread_mutex_t lock;             /* the device page table */
	struct vtab pt;
	atomic_uint_fast64_t faults;
	atomic_uint_fast64_t events[HETMM_EVENT_COUNT];
};

void emu_destroy_all(struct hetmm_ctx *ctx);

#endif /* HETMM_INTERNAL_H */
