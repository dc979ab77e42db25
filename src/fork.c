/* SPDX-License-Identifier: MIT */
/*
 * fork.c - fork with pages on a device.
 *
 * pthread_atfork: before the child exists every device page of every
 * context comes home, with new migrations held off, so the kernel's
 * copy-on-write covers all the bytes.
 *
 * Why fork works that way: the kernel shares a device-private page
 * between parent and child and lets either fault it back.  Here the
 * child's copy of a device page would be a hole in the child's page
 * tables with nobody to fill it: the parent's handler cannot reach into
 * the child, and the child would lose the bytes once the parent exits.
 * UFFD_FEATURE_EVENT_FORK would hand the parent a userfaultfd of the
 * child's, but serving it means a handler per child in the parent, for
 * as long as the child lives.  Bringing the pages home costs one
 * migration back per fork and keeps both processes self-contained.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>

#include "back.h"
#include "compat.h"
#include "ctx.h"
#include "entry.h"
#include "fork.h"
#include "marker.h"
#include "notifier.h"
#include "shadow.h"
#include "watch.h"

static pthread_mutex_t ctx_list_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hetmm_ctx *ctx_list;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

struct home {
	uint64_t vpn;
	bool busy;                        /* a page in someone's hands */
};

static int find_device_page(void *arg, uint64_t vpn, _Atomic uint64_t *slot)
{
	struct home *h = arg;
	uint64_t e = atomic_load(slot);
	if (!shadow_on_device(e))
		return 0;
	/* A coherent page a device holds in place can't come home; the
	 * child makes its own copy (child_copy_coherent). */
	if (!shadow_is_busy(e) && shadow_coherent_held(e))
		return 0;
	if (shadow_is_busy(e)) {
		h->busy = true;
		return 0;
	}
	h->vpn = vpn;
	return 1;
}

/*
 * Pages whose copy back failed stay on the device, and the child would
 * read zeroes there.  Each is tried once more alone (a copy of a run
 * fails whole, for the one page the device could not read, say); where
 * the kernel can, those that still fail are poisoned: fork copies the
 * marker, so parent and child get SIGBUS on access, as both would in the
 * kernel, whose fork shares the device entry and whose migrate_to_ram
 * fails for both.  (Without UFFDIO_POISON, 6.1, the child reads zeroes
 * there: see hetmm.h.)
 */
static void poison_failed(struct hetmm_ctx *ctx, uintptr_t a,
			  const uint8_t *st)
{
	for (size_t k = 0; k < CHUNK_PAGES; k++) {
		uintptr_t p = a + k * PAGE_SIZE;
		if (st[k] != HETMM_MIGRATE_SKIP_ERROR)
			continue;
		int rc = migrate_back_range(ctx, p, p + PAGE_SIZE, NULL);
		if (rc == 0)
			STAT_ADD(ctx, fork_pages, 1);
		if (rc != -EIO)
			continue;
		if (ctx->uffd.features & UFFD_FEATURE_POISON)
			uffd_poison(ctx->uffd.fd, p, PAGE_SIZE,
				    markers_fill(ctx));
	}
}

/*
 * Bring every device page of ctx back, a chunk at a time from the first
 * one found.  Pages in someone else's hands (a fault or a migration back
 * under way) are waited for: until their claimer lets go their bytes are
 * not in the process page tables yet, and a fork now would give the child
 * holes.  A pass that saw one, wherever in the pass, is followed by
 * another from the start.
 */
static void bring_all_home(struct hetmm_ctx *ctx)
{
	for (;;) {
		bool busy = false;
		uint64_t from = 0;
		for (;;) {
			struct home h = { 0, false };
			int found = shadow_for_each(&ctx->shadow, from,
						  addr_to_vpn(USER_VA_END),
						  find_device_page, &h);
			busy |= h.busy;
			if (!found)
				break;
			uintptr_t a = vpn_to_addr(h.vpn);
			uint8_t st[CHUNK_PAGES];
			struct hetmm_migrate_report rep = { 0, 0, st };
			int rc = migrate_back_range(ctx, a,
					a + CHUNK_PAGES * PAGE_SIZE, &rep);
			STAT_ADD(ctx, fork_pages, rep.moved);
			if (rc == -EIO)
				poison_failed(ctx, a, st);
			/* Past a page the driver could not give back. */
			from = rc == -EIO ? h.vpn + 1 : h.vpn;
		}
		if (!busy)
			return;
		sched_yield();
	}
}

static void fork_prepare(void)
{
	pthread_mutex_lock(&ctx_list_lock);
	for (struct hetmm_ctx *ctx = ctx_list; ctx; ctx = ctx->next) {
		pthread_rwlock_wrlock(&ctx->fork_lock);
		notifiers_invalidate(ctx, 0, USER_VA_END, HETMM_EVENT_FORK);
		bring_all_home(ctx);
	}
}

static void fork_parent(void)
{
	for (struct hetmm_ctx *ctx = ctx_list; ctx; ctx = ctx->next)
		pthread_rwlock_unlock(&ctx->fork_lock);
	pthread_mutex_unlock(&ctx_list_lock);
}

/*
 * A coherent page held in place (a short-term pin) stayed on the device
 * through fork, so the child inherited its shared mapping.  The kernel
 * copies a pinned page for the child at fork; the child does it here,
 * first thing: a private anonymous page with the bytes takes the shared
 * mapping's place.  (A parent write between fork() and this handler
 * reaches the child's copy too: the one window the kernel doesn't have.)
 */
static int child_copy_coherent(void *arg, uint64_t vpn, _Atomic uint64_t *slot)
{
	(void)arg;
	uint64_t e = atomic_load(slot);
	struct vma v;
	uintptr_t a = vpn_to_addr(vpn);
	if (!shadow_is_coherent(e) || vma_find_maps(a, &v) ||
	    !(v.flags & VMA_SHARED))
		return 0;
	int prot = ((v.flags & VMA_READ) ? PROT_READ : 0) |
		   ((v.flags & VMA_WRITE) ? PROT_WRITE : 0) |
		   ((v.flags & VMA_EXEC) ? PROT_EXEC : 0);
	if (!(v.flags & VMA_READ))
		return 0;
	/* The copy is made aside and moved into place whole. */
	void *copy = mmap(NULL, PAGE_SIZE, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (copy == MAP_FAILED)
		return 0;
	memcpy(copy, (void *)a, PAGE_SIZE);
	mprotect(copy, PAGE_SIZE, prot);
	if (mremap(copy, PAGE_SIZE, PAGE_SIZE, MREMAP_MAYMOVE | MREMAP_FIXED,
		   (void *)a) == MAP_FAILED)
		munmap(copy, PAGE_SIZE);
	return 0;
}

/* The child has none of the parent's threads: its contexts are dead. */
static void fork_child(void)
{
	for (struct hetmm_ctx *ctx = ctx_list; ctx; ctx = ctx->next)
		shadow_for_each(&ctx->shadow, 0, addr_to_vpn(USER_VA_END),
			      child_copy_coherent, NULL);
	atomic_fetch_add(&fork_generation, 1);
	ctx_list = NULL;
	pthread_mutex_init(&ctx_list_lock, NULL);
	watch_forget_all();
}

static void atfork_install(void)
{
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

int fork_register(struct hetmm_ctx *ctx)
{
	int rc = pthread_once(&atfork_once, atfork_install);
	if (rc)
		return -rc;
	pthread_mutex_lock(&ctx_list_lock);
	ctx->fork_gen = atomic_load(&fork_generation);
	ctx->next = ctx_list;
	ctx_list = ctx;
	pthread_mutex_unlock(&ctx_list_lock);
	return 0;
}

void fork_unregister(struct hetmm_ctx *ctx)
{
	pthread_mutex_lock(&ctx_list_lock);
	for (struct hetmm_ctx **pp = &ctx_list; *pp; pp = &(*pp)->next) {
		if (*pp == ctx) {
			*pp = ctx->next;
			break;
		}
	}
	pthread_mutex_unlock(&ctx_list_lock);
}
