/* SPDX-License-Identifier: MIT */
/*
 * watch.c - registering the process's memory with the context's
 * userfaultfd, a whole mapping at a time.
 *
 * The context hears of munmap, madvise and mremap, and serves faults,
 * only in ranges registered with its userfaultfd, so what it migrates or
 * a device faults in must be registered.  Registering part of a mapping
 * splits it (the kernel keeps the registration per mapping), and mremap()
 * moves one mapping: the process's own mremap of a mapping it made as
 * one would fail with EFAULT, where the kernel's HMM leaves the mapping
 * whole.  Linux 6.1 also never merges a registration that starts inside
 * a mapping with a registered neighbour, so migrating a region in pieces
 * left it split for good there.  So the whole mapping is registered, once
 * (registering it again is one cheap ioctl: the kernel skips a mapping
 * registered alike, whatever its size).
 *
 * The rest of the mapping is then the handler's to serve: a first touch
 * of a page hetmm has no entry for is a hole, filled as the kernel would
 * (fault.c, fault_zero), and munmap, madvise and mremap there raise
 * events that find no entries (lifecycle.c).  Memory hetmm owns is left
 * out even where the kernel merged it into the process's mapping: the
 * handler faulting on its own pages would wait for itself.  The brk heap
 * and the main stack are registered as asked, not whole: nobody mremaps
 * them, hetmm's own allocations live in the heap, and every first touch
 * of either would otherwise cost a round trip through the handler.  The
 * handler's own data is written when it is allocated (so it is present,
 * and a missing fault can't reach it whatever registration comes later),
 * and its stack is owned (fault.c).
 */
#include <errno.h>
#include <pthread.h>

#include "compat.h"
#include "entry.h"
#include "shadow.h"
#include "uffd.h"
#include "watch.h"

#define WATCH_MODE (UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP)

static pthread_mutex_t watchers_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hetmm_ctx *watchers;
static atomic_int nwatchers;

void watch_join(struct hetmm_ctx *ctx)
{
	pthread_mutex_lock(&watchers_lock);
	ctx->watch_next = watchers;
	watchers = ctx;
	atomic_fetch_add(&nwatchers, 1);
	pthread_mutex_unlock(&watchers_lock);
}

void watch_leave(struct hetmm_ctx *ctx)
{
	pthread_mutex_lock(&watchers_lock);
	for (struct hetmm_ctx **pp = &watchers; *pp; pp = &(*pp)->watch_next) {
		if (*pp == ctx) {
			*pp = ctx->watch_next;
			atomic_fetch_sub(&nwatchers, 1);
			break;
		}
	}
	pthread_mutex_unlock(&watchers_lock);
}

void watch_forget_all(void)
{
	watchers = NULL;
	atomic_store(&nwatchers, 0);
	pthread_mutex_init(&watchers_lock, NULL);
}

static int any_entry(void *arg, uint64_t vpn, _Atomic uint64_t *slot)
{
	(void)arg;
	(void)vpn;
	(void)slot;
	return 1;
}

/* Has other nothing in [start, end): no page of its there, no memory it
 * uses itself? */
static bool holds_nothing(struct hetmm_ctx *other, uintptr_t start,
			  uintptr_t end)
{
	return entry_user_range(other, (void *)start, end - start) == 0 &&
	       !shadow_for_each(&other->shadow, addr_to_vpn(start),
				addr_to_vpn(end), any_entry, NULL);
}

/*
 * [start, end) is registered with another userfaultfd: perhaps another
 * context's, which registered it as part of a mapping it registered
 * whole while it was the only one, the kernel having merged the two
 * contexts' mappings.  If every other context that registered whole
 * mappings holds nothing there, and none registered only what it was
 * asked (that registration is a watch the caller must not take), the
 * range is handed over, so that each keeps its own; otherwise -EBUSY
 * stands.  Each other context's userfaultfd lets go (Linux 6.1 lets any
 * userfaultfd unregister any; later kernels only the one that registered
 * it).  A process with one context keeps -EBUSY: the registration is the
 * program's own.
 */
static int take_over(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	int rc = -EBUSY;
	pthread_mutex_lock(&watchers_lock);
	bool others = false, free = true;
	for (struct hetmm_ctx *o = watchers; o; o = o->watch_next) {
		if (o == ctx)
			continue;
		others = true;
		free = free && atomic_load(&o->watched_whole) &&
		       holds_nothing(o, start, end);
	}
	if (others && free) {
		for (struct hetmm_ctx *o = watchers; o; o = o->watch_next)
			if (o != ctx)
				uffd_unregister(o->uffd.fd, start,
						end - start);
		rc = uffd_register(ctx->uffd.fd, start, end - start,
				   WATCH_MODE, NULL);
	}
	pthread_mutex_unlock(&watchers_lock);
	return rc;
}

int watch_vma(struct hetmm_ctx *ctx, const struct vma *v, uintptr_t start,
	      uintptr_t end)
{
	start = MAX(start, v->start);
	end = MIN(end, v->end);
	uintptr_t lo = v->start, hi = v->end;
	entry_unowned_span(ctx, start, end, &lo, &hi);
	/* Only while the process has one context: the part of a merged
	 * mapping another context would ask for later can't be told from
	 * the part of one it watches. */
	if (!(v->flags & VMA_HEAP_STACK) && atomic_load(&nwatchers) <= 1 &&
	    uffd_register(ctx->uffd.fd, lo, hi - lo, WATCH_MODE, NULL) == 0) {
		atomic_store(&ctx->watched_whole, true);
		return 0;
	}
	/* Part of the mapping is another userfaultfd's, or it changed
	 * since v was read: register what was asked, which fails as the
	 * caller needs to hear if that is gone too. */
	int rc = uffd_register(ctx->uffd.fd, start, end - start, WATCH_MODE,
			       NULL);
	return rc == -EBUSY ? take_over(ctx, start, end) : rc;
}

void watch_range(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	struct vma v;
	for (uintptr_t a = start; a < end; a = v.end) {
		if (vma_find(&ctx->vmaq, a, &v) < 0)
			return;
		if (vma_is_private_anon(&v) && !(v.flags & VMA_SPECIAL))
			watch_vma(ctx, &v, a, end);
	}
}
