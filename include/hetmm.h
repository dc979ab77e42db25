/* SPDX-License-Identifier: MIT */
/*
 * hetmm.h - heterogeneous memory management in userspace.
 *
 * hetmm gives a process the kernel's ZONE_DEVICE/HMM model on a stock
 * kernel, built on userfaultfd:
 *
 *   context   one userfaultfd and the thread that resolves its faults
 *             (the kernel's mm, as far as device memory is concerned);
 *   pagemap   a hot-added range of device memory of one memory type, with
 *             per-page metadata and the driver's ops (struct dev_pagemap);
 *   pfn       a typed frame number naming one device page, valid across
 *             every hot-added range (pfn_t);
 *   migrate   moving private anonymous memory to a device and back
 *             (migrate_vma_setup/pages/finalize);
 *   notifier  a driver's watch over a range of the process, told when
 *             the CPU side changes (mmu_interval_notifier);
 *   range     a driver's look at the process through its notifier, and
 *             faulting pages in for it: hetmm_range_fault
 *             (hmm_range_fault), hetmm_make_device_exclusive
 *             (make_device_exclusive);
 *   mirror    the emulated device's page table over the process, built
 *             on the range fault (lib/test_hmm.c's dmirror).
 *
 * A page migrated to a DEVICE_PRIVATE pagemap leaves the CPU page tables;
 * a CPU access to it raises a userfaultfd fault and the context's handler
 * migrates it back, with fault-around, before the thread resumes.
 *
 * Device errors on the fault path.  If the driver cannot copy the page
 * back (struct hetmm_pagemap_ops: a copy that fails or times out), the
 * handler tries it alone HETMM_COPY_RETRIES more times, then gives the
 * faulting thread SIGBUS, as the kernel's fault does when migrate_to_ram
 * returns VM_FAULT_SIGBUS.  The page stays on the device with its bytes;
 * no thread ever reads a wrong byte.  Where the kernel has UFFDIO_POISON
 * (6.6 and later) hetmm poisons the page: the thread, and any access to
 * the page after it, gets the kernel's own SIGBUS, si_addr the address
 * accessed and si_code BUS_ADRERR (6.18; kernels that report a poisoned
 * page as a memory failure say BUS_MCEERR_AR), without another fault,
 * until a
 * migration back succeeds (hetmm_migrate_to_system, or a fault-around of
 * a neighbour) or munmap/madvise(MADV_DONTNEED) discards the page.  On
 * older kernels (Debian 12's 6.1) the faulting thread alone is sent
 * SIGBUS with rt_tgsigqueueinfo(2), which lets one thread signal another
 * only with a negative si_code: si_code is SI_QUEUE, si_addr the address
 * accessed (the fields lie where a fault's do), and every later access
 * faults and tries the copy again, as the kernel's does.  A thread that
 * blocks SIGBUS there faults again at once, tries again, and so on, until
 * the page comes back.  Either way SIGBUS's default action ends the
 * process.
 *
 * Conventions: every call returns 0 (or a count where documented) or a
 * negative errno.  Bad input (NULL, zero length, unaligned or overflowing
 * ranges, unmapped memory, an object of the wrong context) is refused with
 * -EINVAL, -EFAULT or -ENXIO before anything changes.
 *
 * Process lifecycle.  munmap, mremap and madvise(MADV_DONTNEED/FREE/
 * REMOVE) of memory with pages on a device do what they do to the kernel's
 * device-private pages: unmapped and discarded pages free their device
 * frames (a discarded page reads as zeroes again), remapped pages keep
 * their device residency at the new address.  fork() first brings every
 * device page of every context back to system memory, so the kernel's
 * copy-on-write applies to the bytes as they are; the child inherits
 * system memory only.  hetmm objects belong to the process that created
 * them: in a fork child every call on an inherited one returns -ECHILD,
 * and the child creates its own context if it wants a device.  (fork()
 * here means the C library's, which runs pthread_atfork handlers; a raw
 * clone() without CLONE_VM bypasses them and the child reads zeroes where
 * the parent had device pages.)  A page the driver fails to copy back for
 * the fork stays on the device; where the kernel has UFFDIO_POISON it is
 * poisoned first, and the child inherits the poison: parent and child get
 * SIGBUS on access, as both would when the kernel's fork shares a
 * device-private entry and migrate_to_ram fails.  On older kernels (6.1)
 * the child reads zeroes there.
 *
 * Mappings hetmm watches.  To hear of munmap, mremap and madvise, hetmm
 * registers with its userfaultfd the private anonymous mapping around any
 * range it migrates or a device faults in: the whole mapping, so that the
 * process's own mremap() of it moves it as one (registering part of a
 * mapping would split it, and mremap of a range of several mappings fails
 * with EFAULT).  The rest of such a mapping is then served by hetmm's
 * handler: a page first touched there is a zeroed page, as the kernel
 * gives, but costs a round trip through the handler (a few microseconds)
 * and never comes as a transparent huge page; munmap, mremap and madvise
 * there wait until the handler has read their event.  The brk heap and
 * the main thread's stack are registered only as far as asked.  With
 * several contexts, a mapping two of them were asked for parts of is one
 * per context (a mapping has one userfaultfd): it is split, and its
 * mremap fails with EFAULT.  A context is handed a part of a mapping
 * another registered whole if that one was not asked for any of it and
 * holds no page there; otherwise, and for a range another userfaultfd of
 * the program holds, the call gives -EBUSY.
 */
#ifndef HETMM_H
#define HETMM_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The version of this header.  The shared library's SONAME carries the
 * major number (libhetmm.so.0); hetmm_version() gives the library's own,
 * HETMM_VERSION_NUMBER of the header it was built from, so a program can
 * tell which one it runs on.
 */
#define HETMM_VERSION_MAJOR 0
#define HETMM_VERSION_MINOR 1
#define HETMM_VERSION_PATCH 0
#define HETMM_VERSION_NUMBER \
	(HETMM_VERSION_MAJOR * 10000 + HETMM_VERSION_MINOR * 100 + \
	 HETMM_VERSION_PATCH)

/* The library's HETMM_VERSION_NUMBER (major * 10000 + minor * 100 +
 * patch); never fails. */
int hetmm_version(void);

/*
 * The kernel's page size, read once per process at first use
 * (sysconf(_SC_PAGESIZE)): 4 KiB on x86-64; 4, 16 or 64 KiB on arm64.
 * Every length, address and count in pages of this header is in these
 * pages.  hetmm_page_shift() is its log2.  Never fail.
 */
size_t hetmm_page_size(void);
unsigned int hetmm_page_shift(void);
/* The size of a PMD mapping, a transparent huge page
 * (/sys/kernel/mm/transparent_hugepage/hpage_pmd_size where the kernel
 * has it, else page size * page size / 8): 2 MiB at 4 KiB pages, 32 MiB
 * at 16 KiB, 512 MiB at 64 KiB.  Never fails. */
size_t hetmm_pmd_size(void);

/* The same as expressions, for code written when they were constants:
 * they are calls, so never use them where C wants a constant (array
 * sizes, static initializers, case labels). */
#define HETMM_PAGE_SIZE (hetmm_page_size())
#define HETMM_PAGE_SHIFT (hetmm_page_shift())

struct hetmm_ctx;
struct hetmm_pagemap;
struct hetmm_page;
struct hetmm_emu;
struct hetmm_mirror;

/* ------------------------------------------------------------------------
 * Errors
 *
 * What an errno means coming from hetmm, whichever call returned it;
 * each call's comment lists the ones it returns and their causes there.
 *
 *   -EINVAL      bad input: a NULL or stale handle, an empty, unaligned,
 *                overflowing or unmapped range, unknown flags, an object
 *                of another context; nothing changed
 *   -EFAULT      a page has no mapping, or not the access the call needs
 *   -ENXIO       no such device memory: a frame or page of no live
 *                pagemap, or a pagemap being hot-removed
 *   -ENOENT      nothing to do: no page of the range could migrate, or
 *                none is on a device, or no device frame backs the address
 *   -ENOMEM      the device has no free frame, or hetmm could not allocate
 *   -ENOSPC      no room: every frame-number section is in use, device
 *                memory too small to hold its own metadata, or a memory
 *                server full (remote)
 *   -EBUSY       held or moving: pages pinned or claimed, a notifier
 *                sequence moved (begin again), a managed pagemap, a range
 *                another userfaultfd of the program holds
 *   -EOPNOTSUPP  the memory type or the kernel can't do it
 *   -EPERM       not permitted: a write to a read-only mapping, a pagemap
 *                of another owner, no permission to open a userfaultfd
 *   -ECHILD      an object of the parent process, used in a fork child
 *   -EDEADLK     called where it would wait for itself (the fault
 *                handler: a pagemap op or a notifier callback)
 *   -EAGAIN      the pages kept changing under a device access; again
 *   -EIO         the driver's copy failed
 *   -EREMOTEIO   peer-to-peer memory out of reach: not a peer, or a pin
 *                without HETMM_FOLL_PCI_P2PDMA
 *   -ENOSYS      the kernel has no userfaultfd
 *   -EACCES      not admitted: a secret file others may read, or a
 *                proof of the secret the other side refused (remote)
 *   -EPROTO      a memory server or client broke the protocol (remote)
 *
 * Others come from the kernel unchanged (opening a userfaultfd, say).
 */

/*
 * hetmm's meaning of err (negative or positive), a static string, never
 * NULL: for the errnos above, what the table says, which the C library's
 * strerror() can't know (-ENOENT is not a missing file here); for 0,
 * "success"; for any other, one string saying that it is the kernel's,
 * passed through.  Thread safe.  (No kernel call: the kernel's are
 * errno names.)
 */
const char *hetmm_strerror(int err);

/* ------------------------------------------------------------------------
 * Kernel capabilities
 */

/* How the context's userfaultfd was opened, best first. */
enum hetmm_uffd_route {
	HETMM_UFFD_SYSCALL = 1,     /* userfaultfd(2), kernel faults included */
	HETMM_UFFD_DEVNODE,         /* /dev/userfaultfd, kernel faults included */
	HETMM_UFFD_USER_MODE_ONLY,  /* userfaultfd(UFFD_USER_MODE_ONLY): a
				     * syscall that touches a device-resident
				     * buffer (read(2) into it, say) gets
				     * EFAULT instead of a migration back */
};

struct hetmm_kernel_info {
	enum hetmm_uffd_route route; /* best route that works, 0 if none */
	int route_errno;             /* why the better routes failed */
	uint64_t uffd_features;      /* UFFDIO_API features offered */
	uint64_t uffd_ioctls;        /* ioctls offered on an anon range */
	int has_move;                /* UFFDIO_MOVE */
	int has_wp;                  /* write-protect faults on anon memory */
	int has_pagemap_scan;        /* PAGEMAP_SCAN ioctl */
	int has_procmap_query;       /* PROCMAP_QUERY ioctl */
	int has_thp;                 /* transparent huge pages enabled */
	char release[65];            /* uname -r */
	/* Range faults and snapshots tell the kernel's zero page (ZERO) and
	 * huge mappings (PMD order, 9 at 4 KiB pages): from PAGEMAP_SCAN (6.7), or without
	 * it from the frame numbers of /proc/self/pagemap and from
	 * /proc/kpageflags, which only root (CAP_SYS_ADMIN) may read.  0:
	 * neither, and pages are reported without ZERO and order 0. */
	int has_page_state;
	/* process_vm_readv(2) on the process's own pid works, so that
	 * hetmm_copy_from_process() fails rather than faults; 0: a seccomp
	 * filter refuses it, and a munmap racing a copy to the device
	 * kills the process (SIGSEGV in the driver's copy). */
	int has_process_read;
};

/* Probe what the running kernel offers; needs no context.  -EINVAL for a
 * NULL info; else 0, with what failed in the fields. */
int hetmm_kernel_probe(struct hetmm_kernel_info *info);

/* ------------------------------------------------------------------------
 * Contexts
 */

struct hetmm_ctx_params {
	/* Largest fault-around window in pages (0: the default and most,
	 * 8192, i.e. 32 MiB at 4 KiB pages; 1: no fault-around).  A window
	 * starts at one page and grows eightfold while faults stay
	 * sequential, so random access pays for one page only; past the
	 * first chunk (512 pages, 2 MiB at 4 KiB) the faulting thread runs
	 * on while the handler brings back the rest.  Faults in no sequence
	 * bring back the largest aligned region of their chunk of which
	 * more than half was faulted on (at most 512 pages, and this
	 * bound).  A huge device page comes back whole on any fault, as the
	 * kernel's device THP does: it is one page, not a window. */
	uint32_t fault_around_max;
	uint32_t flags;              /* must be 0 */
};

/*
 * Open a userfaultfd by the best route and start the fault handler.
 * -EINVAL for a NULL ctxp, params with flags or fault_around_max above
 * the most; -ENOMEM; when no route opens a userfaultfd, the first route's
 * errno (-EPERM without the permission "Requirements" in README lists,
 * -ENOSYS without userfaultfd); a thread's or mapping's errno otherwise.
 */
int hetmm_ctx_create(struct hetmm_ctx **ctxp,
		     const struct hetmm_ctx_params *params /* may be NULL */);

/*
 * Migrate every device page of the context back to system memory, remove
 * every pagemap, stop the handler and close the userfaultfd.  Pagemaps
 * that cannot be removed (a driver still holds a page) keep the call from
 * completing: it returns -EBUSY and the context stays usable.
 */
int hetmm_ctx_destroy(struct hetmm_ctx *ctx);

/* Which route the context's userfaultfd came from, and its features
 * (features may be NULL).  -EINVAL for a NULL ctx or route, -ECHILD in a
 * fork child: drivers use it to ask whether a context is theirs to use. */
int hetmm_ctx_uffd_info(struct hetmm_ctx *ctx, enum hetmm_uffd_route *route,
			uint64_t *features);

/* Counters; all monotonic except the *_resident gauges. */
struct hetmm_stats {
	uint64_t faults;             /* userfaultfd faults handled */
	uint64_t fault_pages;        /* pages migrated back by faults */
	uint64_t fault_zero;         /* holes filled with zeroes */
	uint64_t to_device_pages;    /* pages migrated to a device */
	uint64_t to_system_pages;    /* pages migrated back, all causes */
	uint64_t skipped_pages;      /* pages a migration could not move */
	uint64_t mirror_faults;      /* range faults that faulted pages in
				      * (hetmm_range_fault), for mirrors */
	uint64_t device_resident;    /* pages on a device now */
	uint64_t discarded_pages;    /* device pages freed by munmap/madvise */
	uint64_t remapped_pages;     /* device pages carried by mremap */
	uint64_t fork_pages;         /* device pages brought back for fork */
	uint64_t evictions;          /* pages evicted from a full device */
	uint64_t pins;               /* pages got or pinned (pin API) */
	uint64_t copy_errors;        /* driver copies that failed or never
				      * completed (struct hetmm_pagemap_ops) */
	uint64_t fault_sigbus;       /* faults answered with SIGBUS: the
				      * page could not come back */
};

/* A snapshot of the counters; -EINVAL for NULL, -ECHILD. */
int hetmm_ctx_get_stats(struct hetmm_ctx *ctx, struct hetmm_stats *stats);

/* ------------------------------------------------------------------------
 * Frame numbers and per-page metadata
 */

/*
 * A device frame number.  The wrapper keeps it from being mixed up with a
 * plain integer or an address; the flags say what it refers to.  A frame
 * number with HETMM_PFN_DEV set names one page of one hot-added pagemap
 * and stays valid until that pagemap is removed.
 */
typedef struct {
	uint64_t val;
} hetmm_pfn_t;

#define HETMM_PFN_DEV (1ULL << 63)   /* device memory with metadata */
#define HETMM_PFN_FLAGS_MASK (0xffULL << 56)

static inline uint64_t hetmm_pfn_number(hetmm_pfn_t pfn)
{
	return pfn.val & ~HETMM_PFN_FLAGS_MASK;
}

static inline uint64_t hetmm_pfn_flags(hetmm_pfn_t pfn)
{
	return pfn.val & HETMM_PFN_FLAGS_MASK;
}

/* A snapshot of one device page's metadata. */
struct hetmm_page_info {
	uint32_t refcount;           /* 0: free; 1: backs a process page */
	uint32_t pincount;
	uintptr_t owner;             /* process address it backs, 0 if free */
	uint32_t flags;              /* HETMM_PAGE_* */
	struct hetmm_pagemap *pagemap;
	uint64_t index;              /* page index within its pagemap */
};

#define HETMM_PAGE_ALLOCATED (1u << 0)
#define HETMM_PAGE_ZERO (1u << 1)    /* backs a page never written: reads
				      * as zeroes, device copy not made */
#define HETMM_PAGE_REFERENCED (1u << 2) /* asked for again since the
					 * eviction clock last passed */
#define HETMM_PAGE_EXCLUSIVE (1u << 3) /* held for a mirror's exclusive
					* access (make_exclusive) */

/* Frame number to page metadata; -ENXIO for anything not hot-added. */
int hetmm_pfn_to_page(hetmm_pfn_t pfn, struct hetmm_page **pagep);
int hetmm_page_get_info(const struct hetmm_page *page,
			struct hetmm_page_info *info);

/* The device frame now backing a process address; -ENOENT if none, or
 * if the page is on its way back to system memory (a fault or migration
 * holds it, and its bytes may be in place already). */
int hetmm_addr_to_pfn(struct hetmm_ctx *ctx, const void *addr,
		      hetmm_pfn_t *pfn);

/* Size of the metadata hetmm keeps per device page, in bytes.  It
 * never fails. */
int hetmm_page_metadata_size(void);

/* ------------------------------------------------------------------------
 * Pagemaps: hot-added device memory
 */

/*
 * Values match the kernel's enum memory_type.  What this build hosts:
 *
 * DEVICE_PRIVATE  memory the CPU cannot address; process pages migrate to
 *                 it and fault back on a CPU access.  Needs the copy ops.
 * FS_DAX          a file's pages mapped straight into the process, as a
 *                 DAX filesystem maps persistent memory: the driver maps a
 *                 regular file (or a /dev/shm file) and page_address()
 *                 gives that mapping, which must be file backed and
 *                 contiguous.  Nothing migrates to or from it; its pages
 *                 take references and short-term pins through their own
 *                 mapping, and refuse a long-term pin with -EOPNOTSUPP
 *                 (the kernel's rule: a long-term pin would block the
 *                 filesystem's truncate and hole punch indefinitely).
 * GENERIC         CPU-addressable memory the driver mapped at
 *                 page_address() (contiguous, any mapping): per-page
 *                 metadata, references and pins of either term, no
 *                 migration: hetmm_migrate_to_device() to it gives
 *                 -EOPNOTSUPP.
 * PCI_P2PDMA      a device's memory exposed for peer-to-peer DMA (a PCI
 *                 BAR, as the kernel's p2pmem): the driver maps it at
 *                 page_address() and the process uses it in place, as
 *                 GENERIC, with the kernel's rule for holds: a get or pin
 *                 of its pages fails with -EREMOTEIO unless the caller
 *                 passes HETMM_FOLL_PCI_P2PDMA (FOLL_PCI_P2PDMA), saying
 *                 that it can DMA to peer memory (see "Peer devices").
 *
 * DEVICE_COHERENT memory the CPU can address, which process pages migrate
 *                 to: after migration the device page itself is mapped
 *                 (shared) at the process page's address, so CPU accesses
 *                 reach device memory without a fault.  Needs the copy
 *                 ops, page_address() (the device's own view) and
 *                 page_fd(); not HETMM_PAGEMAP_REMAP.  Migration back
 *                 (explicit, hot-remove, fork, a long-term pin) puts a
 *                 private anonymous page with the bytes at the address
 *                 again.  Its pages take short-term references and pins in
 *                 place; a long-term pin migrates the page back first.
 *
 * For FS_DAX, GENERIC and PCI_P2PDMA the copy ops are optional and
 * unused, and every page is in use from hot-add on (refcount 1, owner its
 * address, no free frames).  Hot-remove waits for their references and
 * pins to go.
 *
 * Coherent pages and the process's mappings.  A device-coherent page is a
 * shared mapping of the device's file while it is on the device: the
 * range it belongs to is split in the process's maps, so an mremap() of a
 * range holding coherent pages among private ones fails with EFAULT
 * (mremap moves one mapping); mprotect(), munmap() and madvise() work.  A
 * coherent page discarded by madvise(MADV_DONTNEED) stays on the device
 * and reads as zeroes once the handler has handled the REMOVE event: the
 * kernel lets madvise() return when the event is read, and unlike a
 * private page's, a shared page's bytes are not dropped by the kernel's
 * own zap, so there is a short window in which the old bytes still read.
 * madvise(MADV_FREE) over a range holding coherent pages fails with
 * EINVAL (the kernel takes it on private anonymous memory only), and the
 * coherent pages of the first shared mapping it reached are discarded all
 * the same (the kernel reports that mapping removed before it refuses);
 * libhetmm-dmirror.so finishes such a call as the kernel would have.
 * hetmm replaces mappings with MAP_FIXED semantics (by mremap) while a
 * page is claimed: a munmap() racing the migration of the same page, with
 * another mapping placed there meanwhile, is not supported.
 */
enum hetmm_memory_type {
	HETMM_MEMORY_DEVICE_PRIVATE = 1,  /* not CPU addressable */
	HETMM_MEMORY_DEVICE_COHERENT,     /* CPU addressable, migratable */
	HETMM_MEMORY_FS_DAX,              /* file backed, CPU addressable */
	HETMM_MEMORY_GENERIC,             /* CPU addressable, never migrates */
	HETMM_MEMORY_PCI_P2PDMA,          /* peer-to-peer DMA target */
};

/* One asynchronous copy a driver was asked to make (see below). */
struct hetmm_copy;

/*
 * A driver's ops.  Indices are page indices within the pagemap; ranges of
 * consecutive indices are handed over in one call so a copy engine can
 * batch them.  Calls may come from the fault handler thread and from any
 * thread that migrates, concurrently, for distinct pages.
 *
 * What a driver's own threads may touch.  A thread of the driver's (its
 * completion or progress thread, or a thread a copy op waits for) may
 * fault on process memory while hetmm waits for its copy: hetmm
 * registers whole mappings, and the kernel merges a library's anonymous
 * memory (a transport's buffer pool, a malloc arena) into them.  A fault
 * on a page that is on no device is served meanwhile, as the kernel would
 * serve it (zeroes for a hole), though only after the handler has waited
 * some tens of milliseconds: a driver that cares for speed touches its
 * pools once before use.  A driver's threads must not touch a page that
 * is on a device of the context (this driver's or another's) while the
 * handler may be waiting for them: bringing that page back needs the
 * handler, and a copy from this very driver; the handler waits until the
 * copy times out (asynchronous copies) or for ever (synchronous ones).
 * The kernel's rule is the same: a driver's migrate_to_ram cannot fault
 * on device-private pages.
 *
 * Copies, synchronous or asynchronous.  A DEVICE_PRIVATE or
 * DEVICE_COHERENT pagemap gives either pair:
 *
 *   copy_to_device, copy_from_device      the copy is made when the call
 *                                         returns (a CPU copy, or a DMA
 *                                         the driver waits for itself);
 *   submit_to_device, submit_from_device  the copy is started and the
 *                                         driver tells hetmm_copy_done()
 *                                         when it has finished (a DMA
 *                                         engine, io_uring, a network
 *                                         transport).
 *
 * Asynchronous copies (the kernel's dmaengine: a descriptor submitted,
 * its completion callback later).  hetmm keeps up to the desc's
 * queue_depth copies of a pagemap in flight, each of at most
 * HETMM_COPY_MAX_PAGES pages: a migration to the device copies the
 * pieces of a 2 MiB chunk at once; a migration back, an eviction and a
 * fault's fault-around window keep the queue full across their chunks,
 * installing each piece as it completes, in the order they were
 * submitted.  A submit op returns 0 once the copy
 * is started, and the driver then calls hetmm_copy_done(copy, ...)
 * exactly once, from any thread (its completion thread, or this one
 * before the op returns), in any order; src and dst stay valid until
 * then, unless the copy timed out (below).  A negative return means the copy was not started (no done call
 * follows) and counts as its failure.  hetmm allocates nothing per copy.
 *
 * Device errors.  A copy that fails (an op returning non-zero, done with
 * an error; -EFAULT to the device is not one: "Process memory", below)
 * or that does not complete within the desc's copy_timeout_ms
 * (asynchronous copies only) changes nothing: to the device, the page
 * stays in system memory, untouched, reported HETMM_MIGRATE_SKIP_ERROR;
 * back, it stays on the device, whole, and is tried again on its next
 * fault or migration back.  A CPU fault on a page that cannot come back
 * after HETMM_COPY_RETRIES more tries gets SIGBUS (see "Device errors on
 * the fault path" below); an explicit migration back and hot-remove
 * return -EIO.  A copy that timed out may still be running: hetmm never
 * reuses its staging memory, never hands its frames to another page
 * (the pagemap takes no new migration from then on: -EIO), and keeps the
 * pagemap's queue (its depth times HETMM_COPY_MAX_PAGES pages of staging)
 * for the process's life, so that a late done is harmless even after
 * hot-remove.
 *
 * Process memory.  src of every copy to the device is the process's own
 * memory, which another thread may munmap or mremap at any moment, while
 * the copy runs too (and a late copy reads it after hetmm gave up on
 * it).  The kernel's copy reads the pages it isolated and never meets
 * that; a driver reads src with a call that fails rather than faults:
 * hetmm_copy_from_process() (or a DMA engine's own mapping of the pages),
 * never a plain load or memcpy, which would take SIGSEGV and kill the
 * process.  Where that read fails, the copy fails with -EFAULT (the op's
 * return, or its done), and hetmm takes it for what it is: not a device
 * error (not counted in copy_errors, never -EIO) but pages the process
 * took away, which the migration leaves out as the kernel's leaves out
 * pages unmapped under it, HETMM_MIGRATE_SKIP_BUSY, with the rest of that
 * copy's pages, which stay in system memory, untouched.  Pages mremap
 * moved are whole at their new address, in system memory.  src may also
 * be hetmm's own staging of the pages (where the kernel has UFFDIO_MOVE,
 * a migration moves them out of the process before the copy), which no
 * application call can unmap: hetmm_copy_from_process() reads it with a
 * memcpy, and its address says nothing about the page's.
 */
struct hetmm_pagemap_ops {
	/* Copy nr pages of system memory at src into device pages.  0, or
	 * the copy failed. */
	int (*copy_to_device)(struct hetmm_pagemap *pgmap, uint64_t index,
			      const void *src, size_t nr);
	/* Copy nr device pages into system memory at dst.  0, or the copy
	 * failed. */
	int (*copy_from_device)(struct hetmm_pagemap *pgmap, void *dst,
				uint64_t index, size_t nr);
	/* Start the same copies; complete them with hetmm_copy_done().
	 * src and dst are readable and writable from any thread; dst is
	 * hetmm's own staging memory. */
	int (*submit_to_device)(struct hetmm_pagemap *pgmap, uint64_t index,
				const void *src, size_t nr,
				struct hetmm_copy *copy);
	int (*submit_from_device)(struct hetmm_pagemap *pgmap, void *dst,
				  uint64_t index, size_t nr,
				  struct hetmm_copy *copy);
	/* Optional: a CPU-readable address of a device page, so that the
	 * handler can install it with one kernel copy instead of two.  A
	 * DEVICE_PRIVATE pagemap's may return NULL for a page it can't
	 * give now (its memory lost): hetmm takes that for a failed copy
	 * back (the device-error path: SIGBUS for a fault, -EIO for an
	 * explicit migration).  Every other type's, the CPU's own view of
	 * the memory, which hetmm zeroes and maps through, must give every
	 * page's address for as long as the pagemap lives
	 * (hetmm_pagemap_add refuses one that gives none for its first or
	 * last page, -EINVAL). */
	void *(*page_address)(struct hetmm_pagemap *pgmap, uint64_t index);
	/* Optional: a page went back to the free pool (page_free). */
	void (*page_free)(struct hetmm_pagemap *pgmap, uint64_t index);
	/* DEVICE_COHERENT only, required there: the file (a memfd, say)
	 * holding device page index, and its offset in it.  Pages
	 * [index, index + n) must lie at consecutive offsets of one file:
	 * hetmm maps runs of them with one mmap. */
	int (*page_fd)(struct hetmm_pagemap *pgmap, uint64_t index,
		       uint64_t *offset);
	/* Optional, for peers (hetmm_p2pdma_add_peer): the bus address at
	 * which a peer device reaches device page index (the kernel's
	 * pci_p2pdma_bus_addr_map: the page's address in the BAR plus the
	 * bus offset).  Pages [index, index + n) must lie at consecutive
	 * addresses.  0, or a negative errno if the page has none. */
	int (*p2p_bus_addr)(struct hetmm_pagemap *pgmap, uint64_t index,
			    uint64_t *addr);
	/* Optional, for peers: copy nr pages of a peer's memory, at the bus
	 * address its p2p_bus_addr gave, into device pages from index,
	 * device to device (a migration between peers, below). */
	int (*copy_from_peer)(struct hetmm_pagemap *pgmap, uint64_t index,
			      uint64_t bus_addr, size_t nr);
	/* Optional, DEVICE_PRIVATE: how many pages a CPU fault on device
	 * page index may bring back now, its fault-around included (a
	 * driver that bounds the memory its pages take in the process:
	 * the file device's attached files).  0 holds the fault back: its
	 * thread waits in it while the handler serves everything else,
	 * and the fault is tried again after every batch of messages the
	 * handler reads and whenever the driver calls
	 * hetmm_pagemap_room_made(), which a driver that answered 0 must
	 * call once it has room (from its own thread: the fault's wait
	 * must not depend on another fault).  The kernel's counterpart is
	 * a fault that reclaims past a memory cgroup's limit before it
	 * maps its page.  Called on the fault handler's thread: no call
	 * into hetmm that waits for it (hetmm.h, "What a driver's own
	 * threads may touch").  Without it, or with 64 faults of the
	 * context held back already, a fault is served at once. */
	size_t (*fault_room)(struct hetmm_pagemap *pgmap, uint64_t index);
};

struct hetmm_pagemap_desc {
	enum hetmm_memory_type type;
	uint64_t nr_pages;
	const struct hetmm_pagemap_ops *ops;
	void *drvdata;
	/* Mirrors whose owner equals this see its pages as local and use
	 * them in place; others see them as remote (pgmap->owner). */
	const void *owner;
	uint32_t flags;              /* HETMM_PAGEMAP_* */
	/* Asynchronous copies only (0: the defaults): most copies in
	 * flight, at most HETMM_COPY_DEPTH_MAX, and how long one may take
	 * before it counts as failed. */
	uint32_t queue_depth;
	uint32_t copy_timeout_ms;
};

#define HETMM_COPY_MAX_PAGES 64        /* pages of one asynchronous copy */
#define HETMM_COPY_DEPTH_MAX 64
#define HETMM_COPY_DEPTH_DEFAULT 16
/* As the kernel's dma_sync_wait(), which gives a DMA 5 s. */
#define HETMM_COPY_TIMEOUT_DEFAULT_MS 5000
/* Tries a fault makes after its first failed copy back, before SIGBUS. */
#define HETMM_COPY_RETRIES 3

/*
 * A driver finished the asynchronous copy `copy` (given to its submit
 * op): error 0 if every byte was copied, else a negative errno (the copy
 * failed; what it wrote is ignored).  Callable from any thread, with no
 * lock of hetmm's held, and from the submit op itself; it never blocks.
 * The kernel's counterpart is a DMA descriptor's completion callback.
 * -EINVAL for NULL, for an error that is positive or below -4095, and
 * for a copy not in flight (done twice, if hetmm has not given its slot
 * to another copy yet: a second done is a driver bug hetmm cannot always
 * tell).
 */
int hetmm_copy_done(struct hetmm_copy *copy, int error);

/*
 * A driver's read of process memory (the src of a copy to the device:
 * see "Process memory" above): len bytes from src to dst, 0, or -EFAULT
 * where part of src has no readable mapping any more (unmapped, moved
 * by mremap, PROT_NONE): dst then holds what was read before it, and
 * the copy is to fail with -EFAULT.  A page of src on a device or
 * discarded is faulted in as by any access.  It is process_vm_readv(2)
 * on the process's own pid, which pins the pages while it reads: a
 * copy-on-write page shared with a fork child is unshared first (the
 * process gets its own copy, as with any pin).  Memory of hetmm's own
 * staging (see "Process memory") is read with a memcpy.  Where a seccomp filter
 * refuses the call, it is a memcpy, which faults as before
 * (hetmm_kernel_probe: has_process_read).
 * Callable from any thread, with no lock of hetmm's held (the read may
 * wait for the fault handler); -EINVAL for a NULL dst or src.
 */
int hetmm_copy_from_process(void *dst, const void *src, size_t len);

/*
 * The driver has room again for the faults its fault_room op held back
 * (see there): the handler tries them again.  Callable from any thread,
 * the handler's included, with no lock of hetmm's held; it never blocks.
 * -EINVAL for NULL, -ECHILD in a fork child.
 */
int hetmm_pagemap_room_made(struct hetmm_pagemap *pgmap);

/*
 * Start a driver's thread (its copy engine, completion reaper, progress
 * or eviction thread) as hetmm starts its own: with every asynchronous
 * signal blocked, those the CPU raises on the thread itself (SIGSEGV,
 * SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS) left open.  The kernel gives a
 * process-directed signal to any thread that does not block it; were that
 * a driver's thread whose copy the fault handler waits for, and the
 * signal's handler touched a page on the device, the thread would fault
 * and wait for the handler, which waits for it: the context would hang.
 * The kernel's own drivers run in kernel threads, which take no signals.
 * Start every thread a driver's copies can wait on this way.  The
 * caller's signal mask is unchanged.  Returns 0; -EINVAL for NULL thread
 * or fn; pthread_create's errno, negated (-EAGAIN).
 */
int hetmm_thread_create(pthread_t *thread, void *(*fn)(void *), void *arg);

/*
 * The device memory is private anonymous memory of this process at the
 * linear addresses page_address() gives, not populated when first added.
 * hetmm registers it with a userfaultfd of the context's own and migrates
 * by moving the pages themselves (UFFDIO_MOVE), which beats any copy;
 * pages the kernel won't move (shared after fork, read-only, mlocked)
 * take the copy path.  A page the CPU faults back on its own is copied
 * out instead, for latency, so a free frame may still hold the bytes of
 * the page it last backed until hetmm next moves a page into it.  The
 * emulated device works this way.
 */
#define HETMM_PAGEMAP_REMAP (1u << 0)

/*
 * Eviction policy of a DEVICE_PRIVATE pagemap.  Without this flag a
 * migration to a full device skips the pages it has no frame for
 * (HETMM_MIGRATE_SKIP_NOMEM, -ENOMEM if none moved).  With it, the
 * migration first evicts pages of the device to system memory, oldest
 * first: a clock over frame indices passes over pages that were asked
 * for again (HETMM_PAGE_REFERENCED: a migration found them already
 * there) once, and evicts the rest, in runs, through the ordinary
 * migrate-back path.  Pages of the chunk (512 pages) under way are never its
 * victims; a migration larger than the device evicts its own earlier
 * chunks.  Counted in hetmm_stats.evictions.
 */
#define HETMM_PAGEMAP_EVICT (1u << 1)
/*
 * The pagemap belongs to an object of its driver's (a device, as the
 * kernel's devm_memremap_pages ties a pagemap to its struct device): only
 * the driver removes it, with hetmm_pagemap_remove_managed() naming the
 * owner it gave in the desc; hetmm_pagemap_remove() refuses it with
 * -EBUSY, so that nobody removes memory from under a driver still using
 * it.  hetmm_ctx_destroy() removes it like any other.
 */
#define HETMM_PAGEMAP_MANAGED (1u << 2)
/*
 * Metadata inside the device (the kernel's struct vmem_altmap), for
 * memory the CPU addresses: GENERIC, FS_DAX, DEVICE_COHERENT.  The
 * per-page metadata (hetmm_page_metadata_size() bytes a page) lives in
 * the pagemap's own first pages, page_address(0) on, instead of in system
 * memory, so that hot-adding a large persistent-memory or CXL range costs
 * no memory of the process's for it.  Those pages, reported in
 * hetmm_pagemap_info.nr_reserved, are never frames: never handed out to
 * a migration, never a fixed page anyone can hold, and from hot-add to
 * hot-remove hetmm's: their bytes are overwritten at hot-add, a
 * migration or range fault naming them is refused with -EINVAL, and the
 * driver and the process must not write them (through any mapping).
 * After hot-remove they are the driver's again.  hetmm_pagemap_add()
 * gives -EINVAL for this flag on another type, or if those pages are not
 * mapped readable and writable at consecutive addresses; -ENOSPC if the
 * memory is too small to hold its own metadata and one page besides.
 */
#define HETMM_PAGEMAP_ALTMAP (1u << 3)
/*
 * Frames with homes, for a DEVICE_PRIVATE pagemap whose memory is where
 * the pages live between uses: a file's block for the page at its
 * offset (the file device's attached files), a swap slot.  The driver
 * places pages, as a kernel driver allocates the destination pages of a
 * migrate_vma itself:
 *
 *   - pages go to the frames the caller names (hetmm_migrate_to_frames);
 *     hetmm_migrate_to_device() refuses the pagemap with -EOPNOTSUPP, and
 *     hetmm never hands its frames to a migration or evicts from it;
 *   - a frame keeps its bytes when its page comes back, and the page
 *     comes back write-protected: the first CPU write to it is a
 *     write-protect fault that the handler resolves at once (a round
 *     trip, once per page).  A page not written since is clean: migrated
 *     again to the frame it came from, it goes without a copy (the frame
 *     has its bytes; the driver is not called) and counts as moved.
 *     A page hetmm installs as zeroes, or one the process wrote, is
 *     copied as any other.
 *
 * Not with HETMM_PAGEMAP_REMAP or HETMM_PAGEMAP_EVICT (-EINVAL); a
 * context without write-protect faults (hetmm_kernel_info.has_wp) gives
 * -EOPNOTSUPP.
 */
#define HETMM_PAGEMAP_PLACED (1u << 4)

/* How long hot-remove of an FS_DAX or GENERIC pagemap waits for its
 * pages' references and pins to go before it gives up with -EBUSY. */
#define HETMM_REMOVE_PIN_WAIT_MS 500

/* Hot-add device memory.  -EINVAL for a bad desc (NULL ops, no type, 0
 * or more than 2^32 pages, flags the type doesn't take, ops the type
 * needs missing, a mapping that isn't as the type says); -EOPNOTSUPP for
 * types this build can't host, or a coherent pagemap on a kernel without
 * the userfaultfd events it needs; -ENOSPC when every frame-number
 * section is in use (HETMM_PAGEMAP_ALTMAP: see there); -EBUSY when a page
 * of a fixed pagemap's mapping is held by hetmm otherwise (migrating,
 * pinned); -ENOMEM; -ECHILD. */
int hetmm_pagemap_add(struct hetmm_ctx *ctx,
		      const struct hetmm_pagemap_desc *desc,
		      struct hetmm_pagemap **pgmapp);

/*
 * Hot-remove: new migrations to the pagemap are refused, every resident
 * page is migrated back to system memory, then its frame numbers stop
 * resolving and the metadata is freed.  Pages the process unmapped
 * before the call are not resident: they are freed, never copied back.  Threads faulting on its pages
 * meanwhile get them back with their data.  DEVICE_PRIVATE pages are never
 * pinned (a pin migrates them back first), so nothing holds the removal
 * up.  FS_DAX and GENERIC pages stay where they are and may be pinned:
 * removal refuses new references, waits up to HETMM_REMOVE_PIN_WAIT_MS for
 * those held to go, and otherwise returns -EBUSY with the pagemap intact
 * and usable.  After removal their addresses are ordinary memory.  If the
 * driver fails to copy a page back (a device error), removal returns -EIO
 * with the pagemap intact, the pages it could not move still on it: the
 * kernel's memunmap_pages cannot fail, but hetmm would otherwise lose
 * their bytes.
 */
int hetmm_pagemap_remove(struct hetmm_pagemap *pgmap);
/* Hot-remove of a HETMM_PAGEMAP_MANAGED pagemap by its driver: owner is
 * the desc's.  -EPERM for another owner, -EINVAL if it is not managed. */
int hetmm_pagemap_remove_managed(struct hetmm_pagemap *pgmap,
				 const void *owner);

struct hetmm_pagemap_info {
	enum hetmm_memory_type type;
	uint64_t nr_pages;
	uint64_t nr_free;
	/* Pages at the start holding the metadata (HETMM_PAGEMAP_ALTMAP),
	 * never frames; 0 without it. */
	uint64_t nr_reserved;
	hetmm_pfn_t first_pfn;
	void *drvdata;
	const void *owner;
	/* Asynchronous copies: the staging memory every submit_from_device
	 * dst lies in, fixed from hot-add to hot-remove, for a driver that
	 * registers it with its engine once (io_uring fixed buffers, an
	 * RDMA memory region), as the kernel maps a bounce buffer for DMA
	 * once.  NULL and 0 for a pagemap with synchronous copies. */
	void *copy_staging;
	size_t copy_staging_len;
};

/* A snapshot of the pagemap's state; -EINVAL for NULL, -ECHILD. */
int hetmm_pagemap_get_info(struct hetmm_pagemap *pgmap,
			   struct hetmm_pagemap_info *info);

/* ------------------------------------------------------------------------
 * Peer devices (PCI peer-to-peer DMA)
 *
 * Devices behind one PCIe switch reach each other's memory over the bus
 * without the host's: the kernel works that out from the topology
 * (pci_p2pdma_distance); a userspace driver, or the program that knows
 * where its devices sit, says it.  Then
 *
 *   - a page of one is reached by the other at the bus address its
 *     pagemap's p2p_bus_addr op gives: hetmm_p2pdma_bus_addr();
 *   - hetmm_migrate_to_device() to one moves the DEVICE_PRIVATE pages of
 *     the range that are on the other straight there, device to device,
 *     with the destination's copy_from_peer op: no bounce through system
 *     memory (no copy out, no fault, hetmm_stats.to_system_pages does not
 *     move), and counted as migrated to a device.  Zero pages move with
 *     no copy.  Pages on a device that is not a peer, or when either op
 *     is missing, are skipped as HETMM_MIGRATE_SKIP_OTHER_DEVICE, as the
 *     kernel's migrate_vma skips another owner's device pages: the caller
 *     brings them back (hetmm_migrate_to_system) first, a bounce.  A peer
 *     op that fails leaves its pages where they were, untouched:
 *     HETMM_MIGRATE_SKIP_ERROR (-EIO if nothing moved);
 *   - pages of a PCI_P2PDMA pagemap are held only by callers that pass
 *     HETMM_FOLL_PCI_P2PDMA.
 */

/* a and b, two live pagemaps of one context, reach each other's memory
 * (both ways).  Lasts until either is removed, or
 * hetmm_p2pdma_remove_peer().  -EINVAL for NULL, a == b, pagemaps of two
 * contexts or one not live; -ECHILD. */
int hetmm_p2pdma_add_peer(struct hetmm_pagemap *a, struct hetmm_pagemap *b);

/* a and b no longer reach each other's memory (a switch reconfigured, a
 * link down; the kernel reads its peers from a topology that does not
 * change): a migration that starts after the return skips the other's
 * pages (HETMM_MIGRATE_SKIP_OTHER_DEVICE), and hetmm_p2pdma_bus_addr()
 * of one for a page of the other gives -EREMOTEIO.  Pages already moved
 * stay where they are.  -ENOENT if they
 * were not peers; -EINVAL and -ECHILD as hetmm_p2pdma_add_peer(). */
int hetmm_p2pdma_remove_peer(struct hetmm_pagemap *a,
			     struct hetmm_pagemap *b);

/*
 * The bus address at which client's device reaches device frame pfn
 * (pci_p2pdma_map_type, then pci_p2pdma_bus_addr_map): its own frames and
 * those of its peers.  -EREMOTEIO if pfn's pagemap is no peer of client
 * (PCI_P2PDMA_MAP_NOT_SUPPORTED); -EOPNOTSUPP if it has no p2p_bus_addr
 * op; its op's error; -ENXIO if pfn names no page of a live pagemap;
 * -EINVAL for NULL; -ECHILD.
 */
int hetmm_p2pdma_bus_addr(struct hetmm_pagemap *client, hetmm_pfn_t pfn,
			  uint64_t *addr);

/*
 * The desc's drvdata, for the driver's ops: one load, no lock, no check,
 * so an op may call it on every copy.  NULL for NULL.  Valid from the
 * first op hot-add calls until hot-remove returns.  (The kernel's drivers
 * reach their device from the struct dev_pagemap they embedded it in,
 * with container_of().)
 */
void *hetmm_pagemap_drvdata(const struct hetmm_pagemap *pgmap);

/* ------------------------------------------------------------------------
 * Migration
 */

/* Per-page outcome of a migration, for callers that pass a status array. */
enum hetmm_migrate_status {
	HETMM_MIGRATE_MOVED = 1,
	HETMM_MIGRATE_ALREADY,        /* already where it was asked to go */
	HETMM_MIGRATE_SKIP_SHARED,    /* shared mapping */
	HETMM_MIGRATE_SKIP_FILE,      /* file-backed or hugetlb mapping */
	HETMM_MIGRATE_SKIP_PINNED,    /* pinned for DMA */
	HETMM_MIGRATE_SKIP_OTHER_DEVICE, /* on another device */
	HETMM_MIGRATE_SKIP_BUSY,      /* another migration holds it */
	HETMM_MIGRATE_SKIP_NOMEM,     /* the device is full */
	HETMM_MIGRATE_SKIP_SYSTEM,    /* not on a device (migrate back) */
	HETMM_MIGRATE_SKIP_ERROR,     /* the driver's copy failed: the page
				       * stays where it was, untouched */
};

struct hetmm_migrate_report {
	uint64_t moved;
	uint64_t skipped;
	uint8_t *status;   /* optional, len / HETMM_PAGE_SIZE entries */
};

/*
 * Collect, copy, commit: move the private anonymous pages of
 * [addr, addr + len) to the pagemap.  Pages that can't move are skipped
 * and reported.  A CPU write racing the migration is never lost: pages are
 * write-protected while they are copied and writers wait for the commit,
 * then fault the page back.
 *
 * Returns 0 when at least one page moved; -ENOENT when nothing in the range
 * could; -EINVAL when the range is not fully mapped or not accessible,
 * unaligned, empty or overflowing; -ENXIO when the pagemap is being
 * removed; -ENOMEM when the device is full before any page moved; -EIO
 * when no page moved because the driver's copies failed (the pages are
 * in system memory, or on their peer device, untouched:
 * HETMM_MIGRATE_SKIP_ERROR), or the
 * pagemap takes no migration since a copy of its timed out.
 *
 * Huge device pages.  A PMD-aligned block (hetmm_pmd_size()) that a
 * transparent huge page maps whole moves as one huge device page: a run
 * of PMD-size frames from a frame index that is a multiple of the PMD's
 * pages, reported with the PMD order by hetmm_range_fault and the
 * mirror's snapshot.  A device whose free frames hold no such run takes
 * it as base pages, as the kernel splits a THP its device cannot hold.
 * A CPU fault on any of its pages brings the whole huge page back, as a
 * THP (moved as one PMD out of a remapping pagemap's frames; copied into
 * a THP and moved as one PMD otherwise, or, without UFFDIO_MOVE,
 * copied and collapsed with MADV_COLLAPSE), where the block lies in one
 * mapping; so does hetmm_migrate_to_system of the whole block.  Once
 * some of its pages have left, or mremap moved it off PMD alignment, the
 * rest are base pages.  At any page size (a PMD of 512 pages at 4 KiB,
 * 2048 at 16 KiB, 8192 at 64 KiB: there the huge page is claimed whole,
 * then copied in pieces, and published huge only if all of it arrived;
 * it comes back as base pages collapsed into a THP with MADV_COLLAPSE).
 * Only where the kernel shows huge mappings
 * (hetmm_kernel_info.has_page_state); elsewhere every page moves as a
 * base page.
 */
int hetmm_migrate_to_device(struct hetmm_pagemap *pgmap, void *addr,
			    size_t len, struct hetmm_migrate_report *report);

/* hetmm_migrate_to_frames: the frames hold the pages' bytes already. */
#define HETMM_MIGRATE_POPULATED (1u << 0)

/*
 * Move the private anonymous pages of [addr, addr + len) to frames the
 * caller names, of a HETMM_PAGEMAP_PLACED pagemap: page i to frame
 * index + i, as hetmm_migrate_to_device() moves pages otherwise (same
 * phases, same rules for racing writes and for pages that can't move).
 * A page whose frame is in use is skipped as HETMM_MIGRATE_SKIP_BUSY.
 * A clean page (see HETMM_PAGEMAP_PLACED) going back to the frame it
 * came from moves without a copy.
 *
 * flags:
 *   HETMM_MIGRATE_POPULATED  the frames hold the pages' bytes already
 *                            (a file's blocks): a page that is a hole
 *                            (never touched, or discarded) goes to its
 *                            frame as a page with the frame's bytes,
 *                            with no copy, instead of as a zero page.
 *                            This is how a driver declares memory it
 *                            filled itself to be the process's: a CPU
 *                            touch then faults the frame's bytes in.
 *                            Pages with data are copied as without it.
 *
 * Returns as hetmm_migrate_to_device(), and -EOPNOTSUPP for a pagemap
 * without HETMM_PAGEMAP_PLACED; -EINVAL as well for unknown flags and
 * for frames past the pagemap's end.
 */
int hetmm_migrate_to_frames(struct hetmm_pagemap *pgmap, void *addr,
			    size_t len, uint64_t index, uint32_t flags,
			    struct hetmm_migrate_report *report);

/*
 * Move every device page of [addr, addr + len) back to system memory.
 * -ENOENT when no page of the range is on a device; -EINVAL as above;
 * -EIO when the driver's copy of a page failed: that page stays on the
 * device with its bytes (HETMM_MIGRATE_SKIP_ERROR), the others moved.
 * (The kernel's migrate_vma leaves a page whose copy failed where it
 * was; its caller learns it from the page's migrate flag.)
 */
int hetmm_migrate_to_system(struct hetmm_ctx *ctx, void *addr, size_t len,
			    struct hetmm_migrate_report *report);

/* ------------------------------------------------------------------------
 * Getting and pinning user pages (get_user_pages, pin_user_pages)
 *
 * A device about to DMA to or from process memory holds the pages so that
 * they stay where they are.  hetmm gives the kernel's two kinds of hold:
 *
 *   get   a reference (FOLL_GET): the page is held in place and can't be
 *         migrated, evicted or hot-removed until hetmm_put_user_pages().
 *         For short uses: reading a page, a brief copy.
 *   pin   a pin (FOLL_PIN): the same hold, counted apart from references
 *         so that hetmm_user_page_holds() can tell a page is pinned for
 *         DMA (the kernel's page_maybe_dma_pinned()), and the only hold
 *         that may be long term.  Released by hetmm_unpin_user_pages().
 *
 * Rules, as the kernel's:
 *   - a page on a DEVICE_PRIVATE device is migrated back to system memory
 *     before any get or pin returns it;
 *   - a page on a DEVICE_COHERENT device is held in place by a get or a
 *     short-term pin (the hold is in its metadata), and migrated back to
 *     system memory first by a FOLL_LONGTERM pin, by the _fast variants
 *     exactly as by the slow ones;
 *   - a held page is never migrated (migration skips it and reports
 *     HETMM_MIGRATE_SKIP_PINNED), evicted or hot-removed;
 *   - a get or pin makes the page present for the access asked for: read,
 *     or write with HETMM_FOLL_WRITE (a hole gets its own zeroed page);
 *   - HETMM_FOLL_LONGTERM is for pins only (-EINVAL on a get) and is
 *     refused on FS_DAX pages with -EOPNOTSUPP;
 *   - pages of an FS_DAX or GENERIC pagemap reached through the driver's
 *     own mapping are held in place: the hold is in their metadata.
 * hetmm holds pages against hetmm: the kernel may still reclaim or swap a
 * held system page under memory pressure unless the caller mlock()s it.
 *
 * pages[] (nr_pages entries, required) receives each page's address, to
 * be passed back to put or unpin.  The return value is the number of pages
 * held, from addr on, or a negative errno if the first page could not be
 * held: -EFAULT for an unmapped or inaccessible page, or one not writable
 * with HETMM_FOLL_WRITE; -EOPNOTSUPP as above; -EINVAL for bad arguments,
 * including nr_pages == 0 (the kernel returns 0 there; hetmm refuses an
 * empty range everywhere).  A short count means page [count] failed; the
 * pages before it are held and must be released.
 *
 * The _fast variants do what the kernel's do: a system page with nobody
 * migrating it is held with one compare-and-swap on its shadow word and a
 * one-byte touch (read, or an atomic add of zero for a write), with no
 * lock and no allocation; the range's mappings are checked with one
 * PROCMAP_QUERY per mapping so that bad input fails instead of crashing.
 * Where the kernel's fast path would give up (the page is on a device, a
 * migration or fault holds it, a page of a fixed pagemap, a page hetmm
 * never tracked) they go on with the slow variant, which waits for busy
 * pages, migrates device pages back and takes the locks it needs.
 */
#define HETMM_FOLL_WRITE (1u << 0)
#define HETMM_FOLL_LONGTERM (1u << 1)
/* The caller can DMA to peer memory: pages of a PCI_P2PDMA pagemap may
 * be held (FOLL_PCI_P2PDMA); without it they give -EREMOTEIO. */
#define HETMM_FOLL_PCI_P2PDMA (1u << 2)

/* Pages held, or -EFAULT, -EOPNOTSUPP, -EINVAL as above; -EREMOTEIO for
 * a PCI_P2PDMA page without HETMM_FOLL_PCI_P2PDMA; -ENOMEM if a count
 * would overflow or hetmm could not allocate; -ECHILD. */
long hetmm_get_user_pages(struct hetmm_ctx *ctx, void *addr, size_t nr_pages,
			  unsigned int flags, void **pages);
long hetmm_get_user_pages_fast(struct hetmm_ctx *ctx, void *addr,
			       size_t nr_pages, unsigned int flags,
			       void **pages);
long hetmm_pin_user_pages(struct hetmm_ctx *ctx, void *addr, size_t nr_pages,
			  unsigned int flags, void **pages);
long hetmm_pin_user_pages_fast(struct hetmm_ctx *ctx, void *addr,
			       size_t nr_pages, unsigned int flags,
			       void **pages);

/*
 * Release what get (put) or pin (unpin) took on each page of pages[].
 * -EINVAL, and nothing released, if an entry is NULL, unaligned or not
 * held that way, or a page is listed more often than it is held; pass
 * pinned pages to unpin and got pages to put.
 */
int hetmm_put_user_pages(struct hetmm_ctx *ctx, void *const *pages,
			 size_t nr_pages);
int hetmm_unpin_user_pages(struct hetmm_ctx *ctx, void *const *pages,
			   size_t nr_pages);

/* The references and pins held on the page at addr (0 and 0 if none).
 * -EINVAL for NULL counts or an address past the user half, -ECHILD. */
int hetmm_user_page_holds(struct hetmm_ctx *ctx, const void *addr,
			  uint64_t *refs, uint64_t *pins);

/* ------------------------------------------------------------------------
 * Interval notifiers (mmu_interval_notifier)
 *
 * A device that keeps its own page table over process memory (a mirror)
 * must drop entries when the CPU side changes.  It registers a notifier
 * over the range it mirrors and follows the kernel's pattern:
 *
 *	again:
 *		hetmm_notifier_read_begin(n, &seq);
 *		... look the range up (fault it in) without the device lock ...
 *		lock(device page table);
 *		if (hetmm_notifier_read_retry(n, seq)) {
 *			unlock(device page table);
 *			goto again;
 *		}
 *		... program the device page table ...
 *		unlock(device page table);
 *
 * and its invalidate callback takes the same lock and drops the entries of
 * [start, end).  Why the range changed is told in the callback.
 */

enum hetmm_event {
	HETMM_EVENT_MIGRATE = 1,  /* pages move between system and device
				   * memory; before the move */
	HETMM_EVENT_UNMAP,        /* munmap, or the part of a range mremap
				   * dropped; after the kernel unmapped it */
	HETMM_EVENT_DISCARD,      /* madvise DONTNEED/FREE/REMOVE; before
				   * the kernel drops the pages */
	HETMM_EVENT_REMAP,        /* mremap moved the range; told for the
				   * old and the new range, after the move */
	HETMM_EVENT_FORK,         /* fork: the whole address space, before
				   * the child exists */
	HETMM_EVENT_EXCLUSIVE,    /* exclusive device access changed hands */
	HETMM_EVENT_RELEASE,      /* the context is being destroyed; the
				   * notifier is freed when this returns */
};
#define HETMM_EVENT_COUNT 8   /* array size for per-event counters */

struct hetmm_notifier;

struct hetmm_notifier_ops {
	/*
	 * [start, end) of the notifier's range is changing or changed, for
	 * the reason given.  Called from the fault handler thread or from a
	 * thread that migrates, possibly concurrently for different ranges.
	 * It must not touch process memory that may fault, nor munmap or
	 * madvise memory of the context: the handler may be waiting on it.
	 * Nor may a lock it takes be held across such a touch: a page a
	 * malloc arena hands out may be one never touched of a mapping
	 * hetmm registered whole, which only the handler fills.
	 */
	void (*invalidate)(struct hetmm_notifier *n, uintptr_t start,
			   uintptr_t end, enum hetmm_event why, void *arg);
};

/* Watch [addr, addr + len) of ctx's process (page aligned).  -EINVAL for
 * NULL, no invalidate op, a bad range; -ENOMEM; -ECHILD. */
int hetmm_notifier_insert(struct hetmm_ctx *ctx, const void *addr, size_t len,
			  const struct hetmm_notifier_ops *ops, void *arg,
			  struct hetmm_notifier **np);
/* Stop watching; no callback runs once this returns.  -EINVAL for NULL
 * or a notifier removed already, -ECHILD. */
int hetmm_notifier_remove(struct hetmm_notifier *n);
/* The sequence count to check later; waits out an invalidation that is
 * running, so a lookup that follows sees what it left behind.  -EINVAL
 * for NULL, -ECHILD. */
int hetmm_notifier_read_begin(struct hetmm_notifier *n, uint64_t *seq);
/* 1 if an invalidation began since read_begin gave seq: the lookup may
 * be stale, do it again.  0 if it is still good.  -EINVAL on bad input. */
int hetmm_notifier_read_retry(const struct hetmm_notifier *n, uint64_t seq);

/*
 * Wait until the context's handler has handled every userfaultfd event
 * the kernel queued before this call, so that every notifier has been
 * told of every munmap, mremap and madvise that returned before it.  The
 * kernel runs mmu notifiers inside those calls; userfaultfd lets them
 * return once the handler has read their event, and the handler tells
 * the notifiers after.  A driver that uses entries of its own page table
 * without a range fault (which does this itself) calls it first where a
 * late invalidation would matter: entries naming device frames, which a
 * late munmap frees, and any entry whose presence the device reports
 * (an entry kept past a munmap makes a new mapping there look mirrored
 * already, where the kernel's device would fault it).  Not from a
 * pagemap op or a notifier callback: on the handler thread it returns
 * -EDEADLK, on a migrating thread it would wait for the migration it is
 * part of.  -ECHILD in a fork child.
 */
int hetmm_ctx_sync(struct hetmm_ctx *ctx);

/* ------------------------------------------------------------------------
 * Range fault (hmm_range_fault, struct hmm_range)
 *
 * A driver's look at the process through its notifier: for each page of a
 * range, what the page is and where its bytes are, optionally faulting it
 * in first.  Used with the notifier pattern above:
 *
 *	again:
 *		hetmm_notifier_read_begin(n, &range.notifier_seq);
 *		rc = hetmm_range_fault(&range);
 *		if (rc == -EBUSY)
 *			goto again;
 *		lock(device page table);
 *		if (hetmm_notifier_read_retry(n, range.notifier_seq)) {
 *			unlock(device page table);
 *			goto again;
 *		}
 *		... program the device page table from range.pfns ...
 *		unlock(device page table);
 *
 * One 64-bit entry per page, laid out as the kernel's hmm_pfns: flags in
 * the high bits, a number in the low 48.  In, each entry may ask for a
 * fault (REQ_FAULT, with REQ_WRITE for write access); what page i asks is
 * (pfns[i] & pfn_flags_mask) | default_flags, so pfn_flags_mask 0 applies
 * default_flags to every page.  REQ_WRITE without REQ_FAULT asks nothing.
 * Out, each entry is one of:
 *
 *   0                       not present (not faulted in, or a private
 *                           page of another device), or asked nothing
 *   ERROR                   no mapping there, or no read access
 *   VALID [|WRITE|ZERO|order] | vpn
 *                           a system page: the number is its virtual page
 *                           number (its address >> HETMM_PAGE_SHIFT), the
 *                           address the driver reaches it at; ZERO: the
 *                           kernel's shared zero page, read-only; the
 *                           PMD order (log2(hetmm_pmd_size() / page
 *                           size): 9 at 4 KiB pages, 13 at 64 KiB):
 *                           part of a huge page (PMD) mapping
 *   VALID|DEVICE|LOCAL [|WRITE|order] | pfn
 *                           a device-private page of a pagemap whose
 *                           owner is dev_private_owner, used where it is:
 *                           hetmm_range_pfn() gives its frame
 *   VALID|DEVICE|COHERENT [|LOCAL] [|WRITE|order] | pfn
 *                           a device-coherent page, reported to every
 *                           device where it is (it is a CPU page too);
 *                           LOCAL if its owner is dev_private_owner
 *
 * A device page has the PMD order when it is part of a huge device page
 * (see "Huge device pages" at hetmm_migrate_to_device): its whole
 * PMD-aligned block is on the frames of one, in order.
 *
 * ZERO and the PMD order need the kernel to show them
 * (hetmm_kernel_info.has_page_state): its PAGEMAP_SCAN ioctl (6.7), or
 * without it, as root, /proc/self/pagemap's frame numbers and
 * /proc/kpageflags.  Elsewhere (an older kernel, not root) nothing exact
 * tells them, and every system page is reported without ZERO, order 0.
 * Without PAGEMAP_SCAN a transparent huge page mapped whole by PTEs
 * (its PMD split by an mprotect or munmap of part of it, the mappings
 * merged back, until khugepaged collapses it) is reported huge too.
 *
 * WRITE: the CPU mapping allows writes now (device pages: the mapping
 * does).  With REQ_FAULT a page is made present for the access asked
 * for, as a CPU access would: a private page of a device whose owner is
 * not dev_private_owner is migrated back to system memory first (its
 * pagemap's driver and mirrors are told HETMM_EVENT_MIGRATE, so the
 * caller's own notifier sequence changes and the first call returns
 * -EBUSY, as the kernel's does); coherent pages stay where they are.
 * Without REQ_FAULT anywhere the call only reports and changes nothing.
 *
 * Only the private anonymous mappings of a range that was faulted in or
 * migrated are watched for munmap, mremap and madvise: a driver's entries
 * for file and shared mappings are not invalidated by them.
 *
 * Returns 0 with every entry filled; -EBUSY when the notifier's sequence
 * moved since notifier_seq (the entries may be stale: begin again);
 * -EFAULT when a page asked to be faulted has no mapping or no read
 * access, or the kernel can't populate it; -EPERM when one asked for
 * writing is in a read-only mapping; -EINVAL for bad arguments (a range
 * not page aligned, empty, overflowing or outside the notifier's, default
 * flags other than the REQ ones); -ECHILD in a fork child.  On an error
 * entries may be partly filled.  It waits for the handler as
 * hetmm_ctx_sync() does, and is called from the same places only.
 */
#define HETMM_RANGE_VALID (1ULL << 63)
#define HETMM_RANGE_WRITE (1ULL << 62)
#define HETMM_RANGE_ERROR (1ULL << 61)
#define HETMM_RANGE_ORDER_SHIFT 56         /* 5 bits: log2 of the mapping */
#define HETMM_RANGE_DEVICE (1ULL << 55)    /* the number is a device frame */
#define HETMM_RANGE_COHERENT (1ULL << 54)  /* DEVICE_COHERENT memory */
#define HETMM_RANGE_LOCAL (1ULL << 53)     /* owner is dev_private_owner */
#define HETMM_RANGE_ZERO (1ULL << 52)      /* the shared zero page */
#define HETMM_RANGE_NUMBER_MASK ((1ULL << 48) - 1)
#define HETMM_RANGE_REQ_FAULT HETMM_RANGE_VALID
#define HETMM_RANGE_REQ_WRITE HETMM_RANGE_WRITE

struct hetmm_range {
	struct hetmm_notifier *notifier;   /* covers the whole range */
	uint64_t notifier_seq;             /* from read_begin */
	void *start;                       /* page aligned */
	uint64_t npages;
	uint64_t *pfns;                    /* npages entries, in and out */
	uint64_t default_flags;            /* REQ_* for every page */
	uint64_t pfn_flags_mask;           /* which REQ_* of pfns[] count */
	const void *dev_private_owner;     /* the caller's pagemap owner */
};

/* 0, or -EBUSY, -EFAULT, -EPERM, -EINVAL, -ECHILD as above. */
int hetmm_range_fault(struct hetmm_range *range);

/* The mapping order of an entry (hmm_pfn_to_map_order). */
static inline unsigned int hetmm_range_order(uint64_t entry)
{
	return (unsigned int)(entry >> HETMM_RANGE_ORDER_SHIFT) & 0x1f;
}

/* The frame of a DEVICE entry (hmm_pfn_to_page); val 0 for any other. */
static inline hetmm_pfn_t hetmm_range_pfn(uint64_t entry)
{
	hetmm_pfn_t pfn = { 0 };
	if ((entry & HETMM_RANGE_VALID) && (entry & HETMM_RANGE_DEVICE))
		pfn.val = HETMM_PFN_DEV | (entry & HETMM_RANGE_NUMBER_MASK);
	return pfn;
}

/*
 * A driver wrote device page `page` with its own copy engine (a device
 * write through its page table).  A page migrated to a device as a zero
 * page (HETMM_PAGE_ZERO) has no device copy and reads as zeroes; after
 * this it holds data, and a migration back copies the frame's bytes.  Call
 * it after the write and before the driver lets go of the lock its
 * notifier callback takes, as the page's migration back tells the
 * notifier before it looks at the page.  No kernel call: a kernel device
 * page always has its bytes.  -EINVAL for NULL, -ENXIO for a page of no
 * live pagemap.
 */
int hetmm_page_written(struct hetmm_page *page);

/* ------------------------------------------------------------------------
 * Exclusive access (make_device_exclusive), for device atomics
 *
 * The kernel swaps the PTEs of a range for device-exclusive entries: the
 * device may do atomics on the pages while any CPU access faults, restores
 * the mapping and tells the notifiers (MMU_NOTIFY_EXCLUSIVE).  hetmm takes
 * the pages out of the CPU page tables the one way userspace can: into the
 * custody of a DEVICE_PRIVATE pagemap (a migration, bytes and all), with
 * their frames marked HETMM_PAGE_EXCLUSIVE.  Any CPU access, read or
 * write, is then a fault that brings the page back, and its migration back
 * tells the notifiers HETMM_EVENT_EXCLUSIVE; so does any other migration
 * back (explicit, hot-remove, fork, another device's range fault).  munmap
 * and madvise end it as they end any device page.
 *
 * hetmm_make_device_exclusive() makes every page of [addr, addr + npages
 * pages) exclusive to pgmap and gives their frames in pfns[], with the
 * sequence of notifier n (which must cover the range) at which they were
 * all held: the driver maps them as with a range fault, under its lock
 * and only if hetmm_notifier_read_retry(n, *seq) says 0; otherwise a CPU
 * access took some back meanwhile, and it calls again.  Pages on another
 * device come back first.  The mapping must allow the device's
 * read-modify-write: -EFAULT for an unmapped or inaccessible page, -EPERM
 * for a read-only one or one not private anonymous (nothing to take
 * custody of); -EOPNOTSUPP unless pgmap is DEVICE_PRIVATE (coherent pages
 * stay CPU mapped); -ENOMEM if the device is full; -ENXIO if it is being
 * removed; -EBUSY if CPU accesses kept taking pages back; -EINVAL for bad
 * arguments or a pgmap of another context than n's; -EDEADLK on the
 * handler thread.
 */
int hetmm_make_device_exclusive(struct hetmm_pagemap *pgmap,
				struct hetmm_notifier *n, void *addr,
				uint64_t npages, hetmm_pfn_t *pfns,
				uint64_t *seq);

/* ------------------------------------------------------------------------
 * The emulated device
 *
 * Device memory in its own allocation (a memfd, never part of any process
 * range hetmm migrates), a copy engine, and mirrors with the semantics of
 * the kernel's lib/test_hmm.c dmirror.  A driver like any other: it uses
 * the calls above and nothing else of hetmm's (src/devices/emu.c), and
 * goes with its context when hetmm_ctx_destroy() removes its pagemap.
 */

#define HETMM_EMU_COPY_ONLY (1u << 16)

struct hetmm_emu_desc {
	enum hetmm_memory_type type;
	uint64_t nr_pages;
	uint32_t flags;
};

/*
 * A device of what desc says:
 *
 *   type      DEVICE_PRIVATE or DEVICE_COHERENT (-EOPNOTSUPP for the
 *             other types, -EINVAL for no type)
 *   nr_pages  its memory, 1 to 2^32 pages
 *   flags     hetmm's, for its pagemap: HETMM_PAGEMAP_EVICT (a full
 *             device evicts instead of refusing), HETMM_PAGEMAP_ALTMAP
 *             (DEVICE_COHERENT: the metadata in the device's memory);
 *             and the device's own: HETMM_EMU_COPY_ONLY (DEVICE_PRIVATE
 *             only)
 *
 * A private device's memory is registered with hetmm, which moves pages
 * into it (HETMM_PAGEMAP_REMAP) and reads it in place; with COPY_ONLY it
 * is memory the CPU can't address, as a real device's behind PCIe is,
 * and every page goes through its copy engine (and a staging page on the
 * way back).  Every device can be a peer (hetmm_p2pdma_add_peer): its
 * bus addresses are where its memory is mapped in the process, and a
 * private device copies from a peer's with its own engine.
 *
 * Returns 0; -EINVAL for NULL, bad sizes or unknown flags, a flag of
 * hetmm's the type doesn't take; -EOPNOTSUPP as above, or a coherent
 * device where the kernel lacks the userfaultfd events coherent mappings
 * need; -ENOMEM or the mmap/memfd errno if its memory could not be made;
 * -ENOSPC if every pagemap section is in use, or with ALTMAP for a device
 * too small to hold its metadata; -ECHILD in a fork child.
 */
int hetmm_emu_create_desc(struct hetmm_ctx *ctx,
			  const struct hetmm_emu_desc *desc,
			  struct hetmm_emu **emup);
/* The same with flags 0; its errnos likewise (-EINVAL, -EOPNOTSUPP...). */
int hetmm_emu_create(struct hetmm_ctx *ctx, enum hetmm_memory_type type,
		     uint64_t nr_pages, struct hetmm_emu **emup);
/* Hot-remove its memory (every page comes home) and free it, its
 * mirrors too: -EBUSY if the pagemap can't go yet (see
 * hetmm_pagemap_remove), -EINVAL for a device that is not live, -ECHILD
 * in a fork child. */
int hetmm_emu_destroy(struct hetmm_emu *emu);
/* Its pagemap; -EINVAL for a device that is not live, -ECHILD. */
int hetmm_emu_pagemap(struct hetmm_emu *emu, struct hetmm_pagemap **pgmapp);

/* Pages the device's copy engine copied, by direction: from system
 * memory, to system memory (or staging), from a peer device's memory
 * (hetmm_p2pdma_add_peer).  Pages hetmm moved in or out without a copy
 * (HETMM_PAGEMAP_REMAP) are not counted. */
struct hetmm_emu_stats {
	uint64_t copied_to_device;
	uint64_t copied_from_device;
	uint64_t copied_from_peer;
};

/* -EINVAL for NULL or a device that is not live, -ECHILD. */
int hetmm_emu_get_stats(struct hetmm_emu *emu, struct hetmm_emu_stats *stats);

/* A device mirror: the device's page table over the process, empty.
 * -EINVAL for NULL or a device that is not live, -ENOMEM, -ECHILD. */
int hetmm_mirror_create(struct hetmm_emu *emu, struct hetmm_mirror **mirrorp);
/* Free it; -EINVAL for NULL, -ECHILD. */
int hetmm_mirror_destroy(struct hetmm_mirror *mirror);

/*
 * Device reads and writes of process memory.  Pages the mirror lacks are
 * faulted in with one range fault over the rest of the request, counted in
 * *faults.  Pages of this device are used where they are; pages of another
 * device are migrated back first.  -EFAULT where the CPU has no access
 * (unmapped, PROT_NONE), -EPERM for a write to a read-only mapping.
 */
int hetmm_mirror_read(struct hetmm_mirror *mirror, const void *addr,
		      void *buf, uint64_t npages, uint64_t *faults);
int hetmm_mirror_write(struct hetmm_mirror *mirror, void *addr,
		       const void *buf, uint64_t npages, uint64_t *faults);

/* Per-page state of a snapshot, the kernel's HMM_DMIRROR_PROT_* values. */
#define HETMM_PROT_ERROR 0xff
#define HETMM_PROT_NONE 0x00
#define HETMM_PROT_READ 0x01
#define HETMM_PROT_WRITE 0x02
#define HETMM_PROT_PMD 0x04
#define HETMM_PROT_PUD 0x08
#define HETMM_PROT_ZERO 0x10
#define HETMM_PROT_DEV_PRIVATE_LOCAL 0x20
#define HETMM_PROT_DEV_PRIVATE_REMOTE 0x30
#define HETMM_PROT_DEV_COHERENT_LOCAL 0x40
#define HETMM_PROT_DEV_COHERENT_REMOTE 0x50

/*
 * One HETMM_PROT_* byte per page, without faulting anything in, as the
 * kernel's dmirror snapshot reports it: unmapped and inaccessible pages
 * are HETMM_PROT_ERROR; a device-private page is DEV_PRIVATE_LOCAL with
 * READ or WRITE to its own device and NONE (not present) to any other;
 * coherent pages are local or remote.  ZERO and PMD as the range fault
 * tells them: only where hetmm_kernel_info.has_page_state.  Its cost is
 * linear in npages, a range fault per 512 pages; a hole is one query.
 * -EINVAL for NULL or a bad range, -EBUSY if invalidations kept undoing
 * its range faults for a second, -ECHILD.
 */
int hetmm_mirror_snapshot(struct hetmm_mirror *mirror, const void *addr,
			  uint64_t npages, uint8_t *prot);

/*
 * What happened to a mirror: range faults it took, and invalidations by
 * reason (indexed by enum hetmm_event; slot 0 unused).  A mirror's page
 * table follows the notifier pattern above, so an entry an invalidation
 * dropped is never used again.
 */
struct hetmm_mirror_stats {
	uint64_t faults;
	uint64_t invalidations[HETMM_EVENT_COUNT];
};

/* -EINVAL for NULL, -ECHILD. */
int hetmm_mirror_get_stats(struct hetmm_mirror *mirror,
			   struct hetmm_mirror_stats *stats);

/*
 * Exclusive access for the mirror, as dmirror's EXCLUSIVE, built on
 * hetmm_make_device_exclusive(): the pages of [addr, addr + npages pages)
 * are taken out of the CPU page tables into the device's custody
 * (DEVICE_PRIVATE devices: migrated to the device, with their bytes) and
 * the mirror maps them for reading and writing, marked exclusive.  Any CPU access, read or write, ends it: the
 * page comes back to system memory with its bytes, and the mirror is
 * invalidated with HETMM_EVENT_EXCLUSIVE.  So does explicit migration,
 * munmap, madvise, fork.  A mirror write to an exclusive page of a range
 * the process has since made read-only fails with -EPERM.
 * -EOPNOTSUPP for coherent devices (their pages stay CPU mapped), -EFAULT
 * for an unmapped or inaccessible page, -EPERM for a read-only one,
 * -ENOMEM if the device is full; other pages already on another device
 * come back first.  Returns 0 when every page is held.
 */
int hetmm_mirror_make_exclusive(struct hetmm_mirror *mirror, void *addr,
				uint64_t npages);
/*
 * As dmirror's CHECK_EXCLUSIVE: 0 if no page of the range is still held
 * exclusive by the mirror (a CPU access revoked it), -EPERM if any is.
 */
int hetmm_mirror_check_exclusive(struct hetmm_mirror *mirror,
				 const void *addr, uint64_t npages);

/* ------------------------------------------------------------------------
 * The file device: storage as device memory
 *
 * A DEVICE_PRIVATE pagemap whose frames are blocks of a file: frame i is
 * the page at byte offset + i * page size of a regular file (any
 * filesystem) or a block device.  Pages migrated to it are written
 * there, and a CPU touch reads them back, as the kernel's swap does, but
 * where the program says and through the ordinary driver interface: a
 * driver like any other (src/devices/file.c), on the calls above alone.
 *
 * Its copies go through io_uring where the kernel allows it: the
 * asynchronous submit ops, as many requests in flight as the pagemap's
 * queue depth, reads into hetmm's staging memory registered once as a
 * fixed buffer (hetmm_pagemap_info.copy_staging), the file registered
 * too, and completions reaped by a thread of the device's own, which
 * calls hetmm_copy_done().  Writes come from the process's own pages,
 * which no registration can cover: plain writes.  Where io_uring is
 * refused (a container's seccomp filter, io_uring_disabled, a build
 * without liburing) or the program asks (HETMM_FILE_PREAD, or the
 * environment variable HETMM_FILE_IO=pread), the copies are synchronous
 * pread(2)/pwrite(2) calls instead; hetmm_file_get_info() says which,
 * and `hetmm info` says what this machine gives.
 *
 * The file is opened with O_DIRECT unless HETMM_FILE_BUFFERED is given:
 * pages go between the process and the disk without a second copy in the
 * page cache.  A filesystem that refuses O_DIRECT (the open fails with
 * EINVAL) is used through the page cache instead, and the info says so.
 *
 * A frame freed (its page came back, or was unmapped or discarded) has
 * its blocks deallocated (fallocate(FALLOC_FL_PUNCH_HOLE)), so the file
 * takes the disk space of the pages on the device, not more; where the
 * filesystem can't punch, the blocks stay, holding stale bytes no page
 * reads.
 */

struct hetmm_file;

/* Copies with pread(2)/pwrite(2) even where io_uring works. */
#define HETMM_FILE_PREAD (1u << 16)
/* Through the page cache even where O_DIRECT works. */
#define HETMM_FILE_BUFFERED (1u << 17)

struct hetmm_file_desc {
	const char *path;       /* a regular file (made if missing, and
				 * grown to offset + nr_pages pages if
				 * shorter) or a block device as large */
	uint64_t offset;        /* bytes, page aligned: where frame 0 is */
	uint64_t nr_pages;      /* its memory, 1 to 2^32 pages */
	uint32_t flags;         /* HETMM_PAGEMAP_EVICT, HETMM_FILE_* */
	uint32_t queue_depth;   /* copies in flight (0: the default,
				 * HETMM_COPY_DEPTH_DEFAULT; at most
				 * HETMM_COPY_DEPTH_MAX) */
	uint64_t max_resident;  /* hetmm_file_attach only: the most pages
				 * of the range in memory (0: no bound) */
};

/*
 * A file device of what desc says.  Returns 0; -EINVAL for NULL, a
 * relative or empty path, an unaligned offset, bad sizes or unknown
 * flags; the kernel's errno where open(2), ftruncate(2) or fstat(2)
 * fail (a directory, a full disk); -ENOSPC for a block device too small
 * or when every pagemap section is in use; -ENOMEM; -ECHILD in a fork
 * child.
 */
int hetmm_file_create(struct hetmm_ctx *ctx, const struct hetmm_file_desc *desc,
		      struct hetmm_file **filep);
/* Hot-remove its memory (every page comes home, read from the file),
 * stop its completion thread and close the file, which is left as it
 * is.  An attached file is synced first (hetmm_file_sync), then its
 * range unmapped: nothing is read.  -EBUSY or -EIO as
 * hetmm_pagemap_remove() or hetmm_file_sync() (the device stays usable),
 * -EINVAL for a device that is not live, -ECHILD. */
int hetmm_file_destroy(struct hetmm_file *file);
/* Its pagemap; -EINVAL for a device that is not live, -ECHILD. */
int hetmm_file_pagemap(struct hetmm_file *file, struct hetmm_pagemap **pgmapp);

/* How the device reaches its file. */
enum hetmm_file_io {
	HETMM_FILE_IO_URING = 1,     /* io_uring, asynchronous */
	HETMM_FILE_IO_PREAD,         /* pread/pwrite, synchronous */
};

struct hetmm_file_info {
	enum hetmm_file_io io;
	int uring_errno;        /* why io_uring is not used: the negative
				 * errno io_uring_queue_init gave, -ENOSYS
				 * for a build without liburing, or 0 (in
				 * use, or not asked for) */
	int direct;             /* 1: O_DIRECT; 0: the page cache */
	int direct_errno;       /* why not O_DIRECT (0 if not asked) */
	int fixed_buffers;      /* 1: reads land in registered buffers */
	uint64_t pages_read;    /* pages read from the file (read
				 * ahead: once copied out to memory) */
	uint64_t pages_written; /* pages written to it */
	uint64_t io_errors;     /* reads and writes that failed */
	uint64_t holes_punched; /* frames whose blocks were freed */
	/* Attached files: */
	uint64_t resident;      /* pages of the range in memory now, as
				 * the bound counts them */
	uint64_t evicted;       /* pages the bound sent back to the file */
};

/* -EINVAL for NULL or a device that is not live, -ECHILD. */
int hetmm_file_get_info(struct hetmm_file *file, struct hetmm_file_info *info);

/*
 * For tests, as a block device's fault injection is: reads (write 0) or
 * writes (write 1) of frames [index, index + nr) fail with err (a
 * negative errno, -EIO say) from now on; err 0 ends it.  One range per
 * direction.  -EINVAL for NULL, a range past the device, err positive or
 * below -4095; -ECHILD.
 */
int hetmm_file_inject_error(struct hetmm_file *file, int write,
			    uint64_t index, uint64_t nr, int err);

/*
 * A file attached to memory, as umap serves one: [offset, offset +
 * nr_pages pages) of the file at a new address range of the process
 * (*addrp), private anonymous memory every page of which starts on the
 * device, on the file's block for it (a HETMM_PAGEMAP_PLACED pagemap,
 * declared populated: hetmm_migrate_to_frames with
 * HETMM_MIGRATE_POPULATED).  Attaching reads nothing; a CPU touch faults
 * the file's bytes in, with hetmm's fault-around.  The range is aligned
 * to hetmm_pmd_size() and advised MADV_HUGEPAGE: where the kernel has
 * UFFDIO_MOVE, THP is enabled and a thread's first touch of a mapped
 * page is dear (a VM that shadows page tables; measured once per
 * process, or HETMM_PMD_BACK=always or never in the environment), a
 * sequential scan's window brings it back in whole transparent huge
 * pages, each one first touch instead of one per page (MADV_NOHUGEPAGE
 * on it keeps base pages).  desc->flags takes
 * HETMM_FILE_PREAD and HETMM_FILE_BUFFERED; a file shorter than the
 * range is grown (the rest reads as zeroes).
 *
 * The resident bound.  With desc->max_resident, once more pages than
 * that have been faulted in, the device's own thread sends the oldest
 * faulted in back to the file (first in, first out: a userspace driver
 * sees faults, not the accesses that follow them), down to an eighth
 * under the bound (2048 pages under at most), in runs of whole
 * migration chunks where it can.  A page nobody wrote since it came in
 * is clean and goes without a write (its block has its bytes); a
 * written page is written first.  The bound holds during a scan too,
 * give or take a slack of an eighth of it (a migration chunk, 512
 * pages, at most): a fault once the range holds max_resident pages
 * waits until the device's thread has sent some back (the fault
 * handler serves everything else meanwhile), and fault-around stops at
 * max_resident plus the slack, as a fault in a memory cgroup reclaims
 * before it maps its page.  Fault-around brings up to the context's
 * fault_around_max pages at once: give the context a window well under
 * the bound (a quarter, say), or a scan's read-ahead goes back to the
 * file before the scan reaches it.
 *
 * Read-ahead.  With io_uring, a read that goes on from where the last
 * one ended (a sequential scan's windows) has the device read the next
 * 8 MiB (the file's size at most) of pages not in memory into buffers
 * of its own, outside the bound, while the window is installed and,
 * under a bound, while pages go back to the file; the next window is
 * copied from there by the device's thread.  A write to the file drops
 * what it overlaps.
 *
 * What the process does to the range:
 *   - writes are kept in memory until the page goes back to the file
 *     (bound) or hetmm_file_sync();
 *   - madvise(MADV_DONTNEED) drops the pages' memory, unwritten bytes
 *     included, and the range then reads as the file's bytes again, as a
 *     shared file mapping does: the device's thread puts the pages back
 *     on the file right after (a touch before that reads zeroes, and its
 *     writes are the page's);
 *   - munmap() of part or all of it drops those pages, their unwritten
 *     bytes too, and ends the attachment there: sync first to keep them;
 *   - fork() brings every page of the range into memory first, as it
 *     does every device page (see the top of this header): the whole
 *     range is read.
 *
 * Returns 0; the errnos of hetmm_file_create(); -EOPNOTSUPP if the
 * kernel lacks write-protect faults; -ENOMEM if the range can't be
 * mapped.
 */
int hetmm_file_attach(struct hetmm_ctx *ctx, const struct hetmm_file_desc *desc,
		      struct hetmm_file **filep, void **addrp);

/*
 * Write every page of the attached range that was written since it came
 * in, and return when the file has them: the pages are written to their
 * blocks (O_DIRECT or not), then fdatasync(2) makes the file's data and
 * the metadata needed to read it durable, as msync(MS_SYNC) followed by
 * fdatasync would for a shared mapping.  Pages written while it runs may
 * or may not be in.  The range's pages leave memory as they are written
 * (clean ones without a write): after it, the whole range is on the
 * file, and the next touch reads it in again.
 *
 * Returns 0; -EIO if a page could not be written: it stays in memory,
 * dirty, every byte, and a later sync tries it again; fdatasync's errno
 * (-EIO, -ENOSPC); -EBUSY if pages stayed held (pinned), or claimed by
 * other threads for 10 s on end (pages the attachment's own threads
 * hold, its evictor writing them or a fault-around reading them in, are
 * waited for: those holds end with their I/O); -EINVAL for a device not
 * attached or not live; -ECHILD.
 */
int hetmm_file_sync(struct hetmm_file *file);

/* ------------------------------------------------------------------------
 * The remote device: memory on other machines, over UCX
 *
 * A DEVICE_PRIVATE pagemap whose frames live in memory servers
 * (hetmm-memd, installed with hetmm: `hetmm-memd --listen HOST:PORT
 * --capacity SIZE --secret FILE`), reached through UCX on whatever
 * transport it finds between the two (shared memory on one machine, TCP,
 * InfiniBand or RoCE): pages migrated to it are put into the servers'
 * memory with ucp_put_nbx and come back on a CPU fault with ucp_get_nbx,
 * up to HETMM_COPY_DEPTH_MAX copies in flight, driven by a thread of the
 * device's own (over shared memory, where UCX maps a server's region
 * into the process, the device copies to and from that mapping itself,
 * on the thread that asks and on its own at once).  libucp (Debian's libucx0) is loaded at run time, the
 * first time a device is made: a build or a machine without it gives
 * -EOPNOTSUPP here and nothing else changes.  UCX's memory hooks (which
 * patch the process's mmap, munmap and mremap, and with which an
 * application's mremap(MREMAP_FIXED) fails: UCX 1.13 returns NULL) are
 * left off (UCX_MEM_EVENTS=n, unless the environment says otherwise):
 * over shared memory and TCP nothing on this side is registered; over
 * RDMA, UCX then registers the device's buffers per transfer instead of
 * caching them.
 *
 * Who may connect.  Server and device read the same secret from a file
 * of their user's with no access for group or others (mode 0600), 16 to
 * 4096 bytes; each proves it holds it to the other with an HMAC-SHA-256
 * of fresh nonces (challenge and response), so the secret never crosses
 * the wire.  A server gives each device a region of its own and the
 * remote key of that region alone.  (The key is all UCX checks: on
 * transports that emulate remote access in the server's software, TCP's,
 * a client that bypasses hetmm and forges addresses is not stopped by
 * UCX; the secret is what keeps strangers out.)
 *
 * Several servers.  nr_pages device pages are striped over the servers
 * in runs of HETMM_REMOTE_STRIPE_PAGES, each server holding its share,
 * so capacity and bandwidth add up.
 *
 * Replicas.  With replicas 2, each page is on two servers: stripe k on
 * servers k mod N and k + 1 mod N, so each server holds twice its share.
 * A copy to the device (a migration) puts the pages to both and is done
 * when both have flushed them; a copy back (a fault, a migration back,
 * an eviction) gets them from the first of the two alive, and a get
 * that fails there (the server died under it) is sent to the other at
 * once.  A server that fails a copy, or whose connection goes, is taken
 * for dead for good and gets no more copies, so a copy it missed is never
 * read from it; from then on its stripes live on one server, and a copy
 * to the device is done when that one has them.  So the loss of one server
 * loses no byte and the run goes on: a fault in flight on the dead
 * server's pages waits for the death to be noticed (a killed server's
 * connection closes at once; a silent one takes TCP keepalive's 4 s,
 * under the replicas' default timeout of 6 s) and one more get.  Only a
 * page whose two servers are both dead is lost, as below.  What it
 * costs: a migration sends every byte twice (docs/PERFORMANCE.md).
 *
 * Failure.  A device's TCP connection to each server is its lease: when
 * a client ends or dies, its server frees its region; when a server's
 * process dies, its connection closes and the device takes it for dead
 * at once (TCP keepalive gives up on a machine that went silent within
 * about 4 s).  From then on copies to or from its pages fail: a CPU
 * fault there gets SIGBUS (see "Device errors on the fault path"),
 * migrations to the device keep those pages
 * (HETMM_MIGRATE_SKIP_ERROR), hetmm_migrate_to_system() gives -EIO; the
 * pages of the other servers go on working.  (With replicas, this is
 * the fate of the pages whose servers are all dead.)  A copy that hangs
 * fails after timeout_ms (then the pagemap takes no new migration: see
 * copy_timeout_ms).  Nothing waits longer than that.
 */
#define HETMM_REMOTE_MAX_SERVERS 16
#define HETMM_REMOTE_STRIPE_PAGES 64
#define HETMM_REMOTE_MAX_REPLICAS 2

struct hetmm_remote;

struct hetmm_remote_desc {
	const char *const *servers;  /* "host:port" or "[v6]:port" each */
	uint32_t nr_servers;         /* 1 to HETMM_REMOTE_MAX_SERVERS */
	uint32_t flags;              /* HETMM_PAGEMAP_EVICT or 0 */
	uint64_t nr_pages;           /* device pages, 1 to 2^32 */
	const char *secret_file;     /* the servers' secret, mode 0600 */
	/* Connecting and the handshake, per server; and the pagemap's
	 * copy_timeout_ms.  0: 2000 ms (6000 ms with replicas); at most
	 * 600000. */
	uint32_t timeout_ms;
	/* Servers holding each page: 0 or 1, one; 2 (at most
	 * HETMM_REMOTE_MAX_REPLICAS, at most nr_servers), two. */
	uint32_t replicas;
};

/*
 * Connect to every server, prove the secret, get a region on each, and
 * hot-add the pagemap (hetmm_remote_pagemap gives it).  Returns 0;
 * -EINVAL for NULL, a bad desc (no servers or too many, an address not
 * HOST:PORT, no pages or too many, unknown flags, replicas above 2 or
 * above nr_servers); -EOPNOTSUPP if libucp
 * can't be loaded (not installed, or hetmm built without UCX); -EACCES
 * if the secret file is readable by others or not the caller's, if a
 * server refused the proof, or a server could not prove the secret
 * itself; -ENOSPC if a server has no room for its share or serves as
 * many clients as it takes; -EPROTO if a server answers something else
 * than hetmm-memd would; the kernel's socket errno, passed through, if a
 * server can't be reached (ECONNREFUSED; ETIMEDOUT after timeout_ms;
 * EHOSTUNREACH also for a name that does not resolve); the secret
 * file's open errno;
 * hetmm_pagemap_add's errnos; -ECHILD in a fork child.  On an error
 * every connection made is closed (the servers free the regions).
 */
int hetmm_remote_create(struct hetmm_ctx *ctx,
			const struct hetmm_remote_desc *desc,
			struct hetmm_remote **devp);
/* Hot-remove its pagemap (every page comes home from the servers, after
 * the handler has handled what the process unmapped or discarded), close
 * the connections (the servers free the regions) and free it; the
 * context's destroy does the same.  -EBUSY or -EIO as
 * hetmm_pagemap_remove (pages of a dead server can't come home: discard
 * them, munmap or MADV_DONTNEED, first), -EINVAL for a device that is not
 * live, -ECHILD in a fork child. */
int hetmm_remote_destroy(struct hetmm_remote *dev);
/* Its pagemap; -EINVAL for a device that is not live, -ECHILD. */
int hetmm_remote_pagemap(struct hetmm_remote *dev,
			 struct hetmm_pagemap **pgmapp);

struct hetmm_remote_stats {
	uint32_t nr_servers;
	uint32_t servers_alive;      /* not taken for dead */
	uint64_t pages_put;          /* copied to the servers, flushed */
	uint64_t pages_got;          /* copied back */
	uint64_t copy_errors;        /* copies that failed */
	uint64_t replica_reads;      /* pages got from their second server,
					the first being dead */
	uint64_t failovers;          /* gets that failed and went to the
					other server */
	uint32_t replicas;           /* servers holding each page */
};

/* -EINVAL for NULL or a device that is not live, -ECHILD. */
int hetmm_remote_get_stats(struct hetmm_remote *dev,
			   struct hetmm_remote_stats *stats);

#ifdef __cplusplus
}
#endif

#endif /* HETMM_H */
