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
 *
 * With several contexts, the kernel may merge memory one of them was
 * asked for into a mapping another registered whole, and a registration
 * of it then fails with EBUSY.  Each context records the ranges it was
 * asked to watch (followed through munmap and mremap), so the range is
 * handed over when no other context was asked for any of it and none
 * holds a page there, and refused otherwise: with it the widest span of
 * the mapping around it that no other context holds anything in, so
 * that the mapping the process made stays whole.  Memory any context
 * owns is left out of every whole registration, and so is every loaded
 * object's .bss (below).
 */
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "away.h"
#include "compat.h"
#include "entry.h"
#include "shadow.h"
#include "uffd.h"
#include "watch.h"

#define WATCH_MODE (UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP)

static pthread_mutex_t watchers_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hetmm_ctx *watchers;

/* ------------------------------------------------------------------------
 * The ranges a context was asked for
 */

void watch_init(struct hetmm_ctx *ctx)
{
	pthread_mutex_init(&ctx->asked.lock, NULL);
}

void watch_fini(struct hetmm_ctx *ctx)
{
	free(ctx->asked.v);
	pthread_mutex_destroy(&ctx->asked.lock);
}

/* The first span ending after addr (or at it, if adjacent counts). */
static size_t span_after(const struct watch_asked *a, uintptr_t addr,
			 bool adjacent)
{
	size_t lo = 0, hi = a->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (a->v[mid].end < addr ||
		    (!adjacent && a->v[mid].end == addr))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The first span from i starting after addr (or at it, unless adjacent
 * counts). */
static size_t span_from(const struct watch_asked *a, size_t i,
			uintptr_t addr, bool adjacent)
{
	while (i < a->n && (a->v[i].start < addr ||
			    (adjacent && a->v[i].start == addr)))
		i++;
	return i;
}

/* Replace spans [i, j) with the k spans of with; false if out of memory. */
static bool spans_splice(struct watch_asked *a, size_t i, size_t j,
			 const struct watch_span *with, size_t k)
{
	size_t n = a->n - (j - i) + k;
	if (n > a->cap) {
		size_t cap = a->cap ? 2 * a->cap : 16;
		struct watch_span *v = realloc(a->v, cap * sizeof(*v));
		if (!v)
			return false;
		a->v = v;
		a->cap = cap;
	}
	memmove(a->v + i + k, a->v + j, (a->n - j) * sizeof(*a->v));
	memcpy(a->v + i, with, k * sizeof(*with));
	a->n = n;
	return true;
}

static bool asked_add_locked(struct watch_asked *a, uintptr_t start,
			     uintptr_t end)
{
	size_t i = span_after(a, start, true);
	size_t j = span_from(a, i, end, true);
	struct watch_span s = { start, end };
	if (i < j) {
		s.start = MIN(start, a->v[i].start);
		s.end = MAX(end, a->v[j - 1].end);
	}
	return spans_splice(a, i, j, &s, 1);
}

/* Out of memory (false), a span stays whole: asked for more than it
 * was. */
static bool asked_remove_locked(struct watch_asked *a, uintptr_t start,
				uintptr_t end)
{
	size_t i = span_after(a, start, false);
	size_t j = span_from(a, i, end, false);
	struct watch_span keep[2];
	size_t k = 0;
	if (i == j)
		return true;
	if (a->v[i].start < start)
		keep[k++] = (struct watch_span){ a->v[i].start, start };
	if (a->v[j - 1].end > end)
		keep[k++] = (struct watch_span){ end, a->v[j - 1].end };
	return spans_splice(a, i, j, keep, k);
}

void watch_forget(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	away_mutex_lock(&ctx->asked.lock);
	asked_remove_locked(&ctx->asked, start, end);
	pthread_mutex_unlock(&ctx->asked.lock);
}

/* mremap's old and new ranges never overlap: a piece moved is never
 * met again. */
void watch_moved(struct hetmm_ctx *ctx, uintptr_t from, uintptr_t to,
		 size_t len)
{
	struct watch_asked *a = &ctx->asked;
	away_mutex_lock(&a->lock);
	for (;;) {
		size_t i = span_after(a, from, false);
		if (i == a->n || a->v[i].start >= from + len)
			break;
		uintptr_t s = MAX(a->v[i].start, from);
		uintptr_t e = MIN(a->v[i].end, from + len);
		if (!asked_remove_locked(a, s, e))
			break;   /* out of memory: the piece stays asked */
		asked_add_locked(a, to + (s - from), to + (e - from));
	}
	pthread_mutex_unlock(&a->lock);
}

/* ------------------------------------------------------------------------
 * The contexts of the process
 */

void watch_join(struct hetmm_ctx *ctx)
{
	away_mutex_lock(&watchers_lock);
	ctx->watch_next = watchers;
	watchers = ctx;
	pthread_mutex_unlock(&watchers_lock);
}

void watch_leave(struct hetmm_ctx *ctx)
{
	away_mutex_lock(&watchers_lock);
	for (struct hetmm_ctx **pp = &watchers; *pp; pp = &(*pp)->watch_next) {
		if (*pp == ctx) {
			*pp = ctx->watch_next;
			break;
		}
	}
	pthread_mutex_unlock(&watchers_lock);
}

void watch_forget_all(void)
{
	watchers = NULL;
	pthread_mutex_init(&watchers_lock, NULL);
}

/* Entries met walking a range: the first, and one past the last. */
struct entry_bounds {
	uint64_t first, end;
	bool first_only;
};

static int note_entry(void *arg, uint64_t vpn, _Atomic uint64_t *slot)
{
	struct entry_bounds *b = arg;
	(void)slot;
	if (!b->end)
		b->first = vpn;
	b->end = vpn + 1;
	return b->first_only;
}

/*
 * Was other asked for nothing in [start, end), and has it nothing there:
 * no page of its, no memory it uses itself?  If so, narrow [*lo, *hi),
 * which holds [start, end), to the widest span around it where that is
 * true too.
 */
static bool holds_nothing(struct hetmm_ctx *other, uintptr_t start,
			  uintptr_t end, uintptr_t *lo, uintptr_t *hi)
{
	struct watch_asked *a = &other->asked;
	away_mutex_lock(&a->lock);
	size_t i = span_after(a, start, false);
	bool asked = i < a->n && a->v[i].start < end;
	if (i > 0)
		*lo = MAX(*lo, a->v[i - 1].end);
	if (i < a->n)
		*hi = MIN(*hi, a->v[i].start);
	pthread_mutex_unlock(&a->lock);
	if (asked || entry_user_range(other, (void *)start, end - start))
		return false;
	entry_unowned_span(other, start, end, lo, hi);

	struct entry_bounds below = { 0 }, here = { .first_only = true },
			    above = { .first_only = true };
	shadow_for_each(&other->shadow, addr_to_vpn(*lo), addr_to_vpn(start),
			note_entry, &below);
	shadow_for_each(&other->shadow, addr_to_vpn(start), addr_to_vpn(end),
			note_entry, &here);
	shadow_for_each(&other->shadow, addr_to_vpn(end), addr_to_vpn(*hi),
			note_entry, &above);
	if (below.end)
		*lo = vpn_to_addr(below.end);
	if (above.end)
		*hi = vpn_to_addr(above.first);
	return !here.end;
}

/*
 * [start, end) is registered with another userfaultfd: perhaps another
 * context's, which registered it as part of a mapping it registered
 * whole, the kernel having merged the two contexts' memory.  If every
 * other context holds nothing there (holds_nothing), the range is handed
 * over, so that each keeps its own; otherwise -EBUSY stands.  What is
 * handed over is the widest span of [lo, hi) (the mapping, less memory
 * hetmm owns) around the range that no other context holds anything in:
 * the range alone would split the mapping the process made, which it
 * then could not mremap whole (the kernel had merged its mapping with
 * the other context's, which registered both whole).  Each other
 * context's userfaultfd lets go (Linux 6.1 lets any userfaultfd
 * unregister any; later kernels only the one that registered it).  A
 * process with one context keeps -EBUSY: the registration is the
 * program's own.
 */
static int take_over(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end,
		     uintptr_t lo, uintptr_t hi)
{
	int rc = -EBUSY;
	away_mutex_lock(&watchers_lock);
	bool others = false, free = true;
	for (struct hetmm_ctx *o = watchers; o && free; o = o->watch_next) {
		if (o == ctx)
			continue;
		others = true;
		free = holds_nothing(o, start, end, &lo, &hi);
	}
	if (others && free) {
		for (struct hetmm_ctx *o = watchers; o; o = o->watch_next)
			if (o != ctx)
				uffd_unregister(o->uffd.fd, lo, hi - lo);
		rc = uffd_register(ctx->uffd.fd, lo, hi - lo, WATCH_MODE,
				   NULL);
		if (rc)   /* the mapping changed meanwhile */
			rc = uffd_register(ctx->uffd.fd, start, end - start,
					   WATCH_MODE, NULL);
	}
	pthread_mutex_unlock(&watchers_lock);
	return rc;
}

/*
 * A loaded object's .bss (the executable's, a library's: hetmm's own, a
 * sanitizer runtime's) is anonymous memory the loader mapped, and the
 * kernel merges it with an anonymous mapping the process makes right
 * after it.  Registered whole with that mapping, its untouched pages
 * become holes only the handler fills, and the handler's own thread
 * touches them: hetmm's statics, or TSan's stack depot (tens of MiB of
 * libtsan's .bss, written at a thread's first lock of a mutex), which it
 * would wait for itself to fill (TSan runs hung so: test_notifier,
 * test_pin, test_pagemap, test_file); and LeakSanitizer's exit check,
 * which stops every thread, reads them with the handler stopped.  So a
 * whole registration stops at the bounds of every object's .bss: asked
 * for, the .bss itself is registered, never one beside what was asked.
 */
struct cut {
	uintptr_t start, end;
	uintptr_t *lo, *hi;
};

static void cut_at(struct cut *c, uintptr_t at)
{
	if (at <= c->start && at > *c->lo)
		*c->lo = at;
	if (at >= c->end && at < *c->hi)
		*c->hi = at;
}

/* The loader maps a segment's file bytes to the page holding its last
 * one and zero-filled memory from the next page to its memory size. */
static int cut_at_bss(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	for (size_t i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD || ph->p_memsz <= ph->p_filesz)
			continue;
		uintptr_t at = info->dlpi_addr + ph->p_vaddr;
		cut_at(arg, (at + ph->p_filesz + PAGE_SIZE - 1) & PAGE_MASK);
		cut_at(arg, (at + ph->p_memsz + PAGE_SIZE - 1) & PAGE_MASK);
	}
	return 0;
}

/* Narrow [*lo, *hi) around [start, end) to leave out memory any context
 * owns and the loaded objects' .bss. */
static void unowned_span(uintptr_t start, uintptr_t end, uintptr_t *lo,
			 uintptr_t *hi)
{
	away_mutex_lock(&watchers_lock);
	for (struct hetmm_ctx *o = watchers; o; o = o->watch_next)
		entry_unowned_span(o, start, end, lo, hi);
	pthread_mutex_unlock(&watchers_lock);
	struct cut c = { .start = start, .end = end, .lo = lo, .hi = hi };
	dl_iterate_phdr(cut_at_bss, &c);
}

int watch_vma(struct hetmm_ctx *ctx, const struct vma *v, uintptr_t start,
	      uintptr_t end)
{
	start = MAX(start, v->start);
	end = MIN(end, v->end);
	/* Recorded first: a context taking the range over meanwhile sees
	 * it asked for, and leaves it. */
	away_mutex_lock(&ctx->asked.lock);
	bool recorded = asked_add_locked(&ctx->asked, start, end);
	pthread_mutex_unlock(&ctx->asked.lock);
	if (!recorded)
		return -ENOMEM;
	uintptr_t lo = v->start, hi = v->end;
	unowned_span(start, end, &lo, &hi);
	if (v->flags & VMA_HEAP_STACK) {
		lo = start;
		hi = end;
	} else if (uffd_register(ctx->uffd.fd, lo, hi - lo, WATCH_MODE,
				 NULL) == 0) {
		return 0;
	}
	/* Part of the mapping is another userfaultfd's, or it changed
	 * since v was read: register what was asked, which fails as the
	 * caller needs to hear if that is gone too. */
	int rc = uffd_register(ctx->uffd.fd, start, end - start, WATCH_MODE,
			       NULL);
	return rc == -EBUSY ? take_over(ctx, start, end, lo, hi) : rc;
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
