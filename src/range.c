/* SPDX-License-Identifier: MIT */
/*
 * range.c - the device's view of the process: hetmm_range_fault(), the
 * kernel's hmm_range_fault() for userspace drivers, and the two calls a
 * driver that keeps its own page table needs beside it: hetmm_ctx_sync()
 * and hetmm_page_written().
 *
 * A range fault looks at each page of the range as the kernel and the
 * shadow table have it and tells the driver what the page is: a system
 * page (its virtual page number, since a userspace driver reaches it at
 * its own address), a device page (its frame number), or nothing.  Pages
 * asked to be faulted are made present for the access asked for first:
 * pages on a device whose owner is not the caller's come back to system
 * memory, coherent pages stay where they are (they are CPU pages to any
 * device), and the rest are populated by the kernel.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "back.h"
#include "compat.h"
#include "ctx.h"
#include "entry.h"
#include "fault.h"
#include "notifier.h"
#include "order.h"
#include "pagemap.h"
#include "shadow.h"
#include "vma.h"
#include "watch.h"

#define RANGE_REQ (HETMM_RANGE_REQ_FAULT | HETMM_RANGE_REQ_WRITE)

int hetmm_ctx_sync(struct hetmm_ctx *ctx)
{
	if (!ctx)
		return -EINVAL;
	if (ctx_forked(ctx))
		return -ECHILD;
	if (fault_on_handler(ctx))
		return -EDEADLK;
	handler_sync(ctx);
	return 0;
}

int hetmm_page_written(struct hetmm_page *page)
{
	return page ? pagemap_page_written(page) : -EINVAL;
}

/*
 * On a device owned by owner, and nobody holds it: used where it is.
 * The entry is read unclaimed, and a hot-remove may be freeing its
 * pagemap: the owner is the section table's (a removed one has none).
 */
static bool is_local(uint64_t e, const void *owner)
{
	return shadow_claimable(e) &&
	       pagemap_section_owned(shadow_pfn(e), owner);
}

/*
 * A range is done a chunk at a time.  The requests of a chunk are read
 * before any of its entries is written over, so that a pass over it can
 * be done again: as the kernel's walk, which leaves entries it has not
 * reached at their input values.
 */
struct chunk {
	struct hetmm_ctx *ctx;
	const struct hetmm_range *r;
	uintptr_t start;                  /* of the chunk */
	uint64_t vpn;                     /* of its first page */
	uint64_t first;                   /* its first entry in r->pfns */
	uint64_t n;
	uint8_t req[CHUNK_PAGES];         /* REQ_* >> REQ_SHIFT, 0: report */
	bool faulting;                    /* some page asks for a fault */
	struct vma seg;                   /* the last segment found */
};

#define REQ_SHIFT 62
#define REQ_FAULT (HETMM_RANGE_REQ_FAULT >> REQ_SHIFT)
#define REQ_WRITE (HETMM_RANGE_REQ_WRITE >> REQ_SHIFT)

/* REQ_WRITE counts only with REQ_FAULT, as in the kernel. */
static void chunk_requests(struct chunk *c)
{
	const struct hetmm_range *r = c->r;
	c->faulting = false;
	for (uint64_t k = 0; k < c->n; k++) {
		uint64_t req = (r->pfns[c->first + k] & r->pfn_flags_mask) |
			       r->default_flags;
		c->req[k] = (req & HETMM_RANGE_REQ_FAULT) ?
			    (uint8_t)((req & RANGE_REQ) >> REQ_SHIFT) : 0;
		c->faulting |= c->req[k] != 0;
	}
}

/*
 * The VMA covering a or, where nothing is mapped, the whole hole up to
 * the next VMA as a segment with no access: one query for a hole however
 * large (a query a page made a snapshot of a sparse range take minutes).
 * The segment found last serves the chunks after it, in one pass over
 * the range, as the kernel's walk reads the VMAs once under the mmap
 * lock: a large mapping or hole is one query, not one per chunk (without
 * PROCMAP_QUERY each is a read of /proc/self/maps: on 6.1 in an emulated
 * guest, test_mirror's six snapshots of 4 GiB took over a minute).
 */
static void segment_at(struct chunk *c, uintptr_t a, struct vma *v)
{
	if (c->seg.start <= a && a < c->seg.end) {
		*v = c->seg;
		return;
	}
	struct vma next;
	bool found = vma_find_next(&c->ctx->vmaq, a, &next) == 0;
	if (found && next.start <= a) {
		*v = next;
	} else {
		v->start = a;
		v->end = found ? next.start : UINTPTR_MAX;
		v->flags = 0;
	}
	c->seg = *v;
}

/*
 * The pages asked to be faulted must be accessible the way a CPU access
 * would need them, as the kernel checks a VMA: -EFAULT where there is no
 * mapping or no read access, -EPERM for a write to a read-only mapping.
 */
static int chunk_check(struct chunk *c)
{
	uintptr_t end = c->start + c->n * PAGE_SIZE;
	struct vma v;
	if (!c->faulting)
		return 0;   /* a report only: nothing to refuse */
	for (uintptr_t a = c->start; a < end; a = v.end) {
		segment_at(c, a, &v);
		uint64_t k = (a - c->start) >> PAGE_SHIFT;
		uint64_t last = (MIN(v.end, end) - c->start) >> PAGE_SHIFT;
		for (; k < last; k++) {
			if (!c->req[k])
				continue;
			if (!(v.flags & VMA_READ))
				return -EFAULT;
			if ((c->req[k] & REQ_WRITE) && !(v.flags & VMA_WRITE))
				return -EPERM;
		}
	}
	return 0;
}

/* Must page k, entry e, come back from another device first? */
static bool must_come_back(const struct chunk *c, uint64_t k, uint64_t e)
{
	/* Coherent pages are CPU pages to a device: used where they are,
	 * as hmm_range_fault() leaves them. */
	return c->req[k] && shadow_on_device(e) &&
	       !is_local(e, c->r->dev_private_owner) && !shadow_is_coherent(e);
}

/* Bring back every page asked for that sits on a device not owned by
 * the caller, waiting for migrations under way to finish. */
static void chunk_repatriate(const struct chunk *c)
{
	struct shadow *shadow = &c->ctx->shadow;
	for (uint64_t k = 0; k < c->n;) {
		uint64_t e = shadow_get(shadow, c->vpn + k);
		if (c->req[k] && shadow_is_busy(e)) {
			sched_yield();   /* a migration is finishing */
			continue;
		}
		if (!must_come_back(c, k, e)) {
			k++;
			continue;
		}
		uint64_t n = 1;
		while (k + n < c->n &&
		       must_come_back(c, k + n, shadow_get(shadow, c->vpn + k + n)))
			n++;
		migrate_back_range(c->ctx, vpn_to_addr(c->vpn + k),
				   vpn_to_addr(c->vpn + k + n), NULL);
		k += n;
	}
}

/* Fault in the runs of pages asked for that are not local device pages,
 * each run with the access its pages ask for. */
static int chunk_populate(const struct chunk *c)
{
	struct shadow *shadow = &c->ctx->shadow;
	const void *owner = c->r->dev_private_owner;
	for (uint64_t k = 0; k < c->n;) {
		uint8_t req = c->req[k];
		if (!req || is_local(shadow_get(shadow, c->vpn + k), owner)) {
			k++;
			continue;
		}
		uint64_t n = 1;
		while (k + n < c->n && c->req[k + n] == req &&
		       !is_local(shadow_get(shadow, c->vpn + k + n), owner))
			n++;
		int advice = (req & REQ_WRITE) ? MADV_POPULATE_WRITE
					       : MADV_POPULATE_READ;
		if (madvise((void *)vpn_to_addr(c->vpn + k), n * PAGE_SIZE,
			    advice)) {
			/* EINVAL: a mapping that can't be populated;
			 * ENOMEM: unmapped since it was checked. */
			return errno == EINVAL || errno == ENOMEM ? -EFAULT
								  : -errno;
		}
		k += n;
	}
	return 0;
}

/*
 * A device page.  Coherent pages are reported to every device, local or
 * remote; a device-private page only to its own (a mapping's permission
 * comes with it), and to any other it is not present.
 */
static uint64_t report_device(uint64_t e, const void *owner,
			      const struct vma *v)
{
	int type = pagemap_section_type(shadow_pfn(e));
	if (!type)
		return 0;   /* its pagemap is gone */
	bool local = pagemap_section_owned(shadow_pfn(e), owner);
	uint64_t out = HETMM_RANGE_VALID | HETMM_RANGE_DEVICE | shadow_pfn(e) |
		       ((v->flags & VMA_WRITE) ? HETMM_RANGE_WRITE : 0) |
		       (local ? HETMM_RANGE_LOCAL : 0);
	if (type == HETMM_MEMORY_DEVICE_COHERENT)
		return out | HETMM_RANGE_COHERENT;
	return local ? out : 0;
}

/*
 * Is the device page vpn (entry e) part of a huge device page: its PMD
 * block of the process all on the frames of one, in order (pagemap.h,
 * PAGE_HUGE)?  A block some of whose pages left, or that mremap moved off
 * PMD alignment, is base pages now, as the kernel splits its folio.
 */
static bool device_block_huge(struct shadow *sh, uint64_t vpn, uint64_t e)
{
	uint64_t head = vpn & ~(uint64_t)(PMD_PAGES - 1);
	uint64_t pfn0 = shadow_pfn(e) - (vpn - head);
	if (shadow_pfn(e) < vpn - head)
		return false;
	for (uint64_t k = 0; k < PMD_PAGES; k++) {
		uint64_t ek = shadow_get(sh, head + k);
		if (!shadow_on_device(ek) || shadow_pfn(ek) != pfn0 + k)
			return false;
	}
	return pfn_block_huge(pfn0);
}

/* A device page's mapping order, once per PMD block of a chunk. */
struct huge_memo {
	uint64_t head;                    /* block asked about, + 1 */
	bool huge;
};

static uint64_t device_order(struct shadow *sh, uint64_t vpn, uint64_t e,
			     struct huge_memo *m)
{
	uint64_t head = (vpn & ~(uint64_t)(PMD_PAGES - 1)) + 1;
	if (m->head != head) {
		m->head = head;
		m->huge = device_block_huge(sh, vpn, e);
	}
	return m->huge ? (uint64_t)pmd_order() << HETMM_RANGE_ORDER_SHIFT : 0;
}

/*
 * A system page as the kernel maps it: the zero page read-only, a page a
 * private mapping holds alone (or a shared mapping's page) writable if the
 * mapping is, a private mapping's file page read-only until written.  A
 * page faulted in for writing is writable.
 */
static uint64_t report_system(uint64_t vpn, const struct vma *v, uint8_t pf,
			      uint8_t req)
{
	if (!(pf & PG_PRESENT) && !req)
		return 0;
	uint64_t out = HETMM_RANGE_VALID | vpn;
	if (pf & PG_HUGE)
		out |= (uint64_t)pmd_order() << HETMM_RANGE_ORDER_SHIFT;
	if (req & REQ_WRITE)
		return out | HETMM_RANGE_WRITE;
	if (pf & PG_ZERO)
		return out | HETMM_RANGE_ZERO;
	if ((v->flags & VMA_WRITE) &&
	    ((v->flags & VMA_SHARED) ||
	     ((pf & PG_EXCLUSIVE) && !(pf & PG_FILE))))
		out |= HETMM_RANGE_WRITE;
	return out;
}

/* Does out give page k what it asked for? */
static bool satisfied(uint8_t req, uint64_t e, uint64_t out)
{
	if (!req)
		return true;
	/* Held by a migration or a fault finishing: not there yet. */
	if (shadow_is_busy(e))
		return false;
	return (out & HETMM_RANGE_VALID) &&
	       (!(req & REQ_WRITE) || (out & HETMM_RANGE_WRITE));
}

/*
 * Fill in the chunk's entries, a VMA at a time.  Returns how many pages
 * asked for a fault and did not get what they asked for (taken by a
 * migration meanwhile, or a fault still finishing), or -errno.
 */
static long chunk_report(struct chunk *c)
{
	uintptr_t end = c->start + c->n * PAGE_SIZE;
	uint8_t pflags[CHUNK_PAGES];
	long missed = 0;
	struct huge_memo memo = { 0, false };
	struct vma v;
	for (uintptr_t a = c->start; a < end; a = v.end) {
		segment_at(c, a, &v);
		uint64_t k = (a - c->start) >> PAGE_SHIFT;
		uint64_t n = (MIN(v.end, end) - a) >> PAGE_SHIFT;
		bool readable = v.flags & VMA_READ;
		if (readable) {
			int rc = vma_page_flags(&c->ctx->vmaq, &v, a, n,
						 pflags);
			if (rc)
				return rc;
		}
		for (uint64_t j = 0; j < n; j++, k++) {
			uint64_t e = shadow_get(&c->ctx->shadow, c->vpn + k);
			uint64_t out;
			if (!readable)
				out = HETMM_RANGE_ERROR;
			else if (shadow_on_device(e))
				out = report_device(e, c->r->dev_private_owner,
						    &v);
			else
				out = report_system(c->vpn + k, &v, pflags[j],
						    c->req[k]);
			if (out & HETMM_RANGE_DEVICE)
				out |= device_order(&c->ctx->shadow,
						    c->vpn + k, e, &memo);
			missed += !satisfied(c->req[k], e, out);
			c->r->pfns[c->first + k] = out;
		}
	}
	return missed;
}

/* Passes over a chunk while pages asked for slip away with the sequence
 * unchanged (faults finishing); the kernel's walk retries the same way. */
#define CHUNK_PASSES 1000

static int range_chunk(struct chunk *c)
{
	const struct hetmm_range *r = c->r;
	chunk_requests(c);
	for (unsigned pass = 0; pass < CHUNK_PASSES; pass++) {
		if (hetmm_notifier_read_retry(r->notifier, r->notifier_seq))
			return -EBUSY;
		if (pass)
			c->seg = (struct vma){ 0 };   /* a new look */
		int rc = chunk_check(c);
		if (rc)
			return rc;
		if (c->faulting) {
			/* The context hears of munmap, madvise and mremap
			 * only in memory registered with its userfaultfd
			 * (watch.c).  Only private anonymous memory can be:
			 * changes to file and shared mappings are not seen,
			 * and a device reaching them through a stale entry
			 * gets what the kernel has there now, or EFAULT. */
			watch_range(c->ctx, c->start,
				    c->start + c->n * PAGE_SIZE);
			chunk_repatriate(c);
			rc = chunk_populate(c);
			if (rc)
				return rc;
			/* Registering may have split a mapping. */
			c->seg = (struct vma){ 0 };
		}
		long missed = chunk_report(c);
		if (missed <= 0)
			return (int)missed;
		sched_yield();
	}
	return -EBUSY;
}

static int range_validate(const struct hetmm_range *r)
{
	if (!r || !r->notifier || !r->pfns || !r->npages ||
	    r->npages > (SIZE_MAX >> PAGE_SHIFT) ||
	    (r->default_flags & ~RANGE_REQ))
		return -EINVAL;
	int rc = check_user_range(r->start, r->npages << PAGE_SHIFT);
	if (rc)
		return rc;
	uintptr_t start = (uintptr_t)r->start;
	if (!notifier_covers(r->notifier, start,
			     start + (r->npages << PAGE_SHIFT)))
		return -EINVAL;
	return 0;
}

int hetmm_range_fault(struct hetmm_range *range)
{
	int rc = range_validate(range);
	if (rc)
		return rc;
	struct hetmm_ctx *ctx = notifier_ctx(range->notifier);
	rc = entry_user_range(ctx, range->start, range->npages << PAGE_SHIFT);
	if (rc)
		return rc;
	if (fault_on_handler(ctx))
		return -EDEADLK;
	/* munmap, madvise and mremap return once the handler has read
	 * their event, not handled it: let it catch up, so that what the
	 * process did before this call is seen, as the kernel's notifiers
	 * have run by the time such a call returns. */
	handler_sync(ctx);

	struct chunk c = { .ctx = ctx, .r = range };
	bool faulted = false;
	uintptr_t start = (uintptr_t)range->start;
	for (uint64_t done = 0; done < range->npages; done += c.n) {
		c.first = done;
		c.start = start + done * PAGE_SIZE;
		c.vpn = addr_to_vpn(c.start);
		c.n = MIN(range->npages - done, (uint64_t)CHUNK_PAGES);
		rc = range_chunk(&c);
		if (rc)
			return rc;
		faulted |= c.faulting;
	}
	if (hetmm_notifier_read_retry(range->notifier, range->notifier_seq))
		return -EBUSY;
	if (faulted)
		STAT_ADD(ctx, mirror_faults, 1);
	return 0;
}
