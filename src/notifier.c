/* SPDX-License-Identifier: MIT */
/*
 * notifier.c - interval notifiers: telling devices that the CPU side of a
 * range they mirror changes (mmu_interval_notifier).
 *
 * Notifiers hang off their context in a list under a reader-writer lock:
 * invalidations, which run on the fault path, only read it.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>

#include "away.h"
#include "ctx.h"
#include "entry.h"
#include "notifier.h"
#include "trace.h"

/*
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

static bool event_is_valid(enum hetmm_event why)
{
	return why >= HETMM_EVENT_MIGRATE && why <= HETMM_EVENT_RELEASE;
}

int hetmm_notifier_insert(struct hetmm_ctx *ctx, const void *addr, size_t len,
			  const struct hetmm_notifier_ops *ops, void *arg,
			  struct hetmm_notifier **np)
{
	int rc = entry_range(ctx, addr, len);
	if (rc)
		return rc;
	if (!ops || !ops->invalidate || !np)
		return -EINVAL;
	struct hetmm_notifier *n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->ctx = ctx;
	n->start = (uintptr_t)addr;
	n->end = n->start + len;
	n->ops = ops;
	n->arg = arg;
	away_wrlock(&ctx->notifiers_lock);
	n->next = ctx->notifiers;
	ctx->notifiers = n;
	pthread_rwlock_unlock(&ctx->notifiers_lock);
	*np = n;
	return 0;
}

/* Unlink n; false if it is not one of its context's notifiers. */
static bool notifier_unlink(struct hetmm_notifier *n)
{
	struct hetmm_ctx *ctx = n->ctx;
	bool found = false;
	away_wrlock(&ctx->notifiers_lock);
	for (struct hetmm_notifier **pp = &ctx->notifiers; *pp;
	     pp = &(*pp)->next) {
		if (*pp == n) {
			*pp = n->next;
			found = true;
			break;
		}
	}
	pthread_rwlock_unlock(&ctx->notifiers_lock);
	return found;
}

int hetmm_notifier_remove(struct hetmm_notifier *n)
{
	if (!n)
		return -EINVAL;
	if (ctx_forked(n->ctx))
		return -ECHILD;
	/* Invalidations hold the lock shared, so none runs past this. */
	if (!notifier_unlink(n))
		return -EINVAL;
	free(n);
	return 0;
}

int hetmm_notifier_read_begin(struct hetmm_notifier *n, uint64_t *seq)
{
	if (!n || !seq)
		return -EINVAL;
	if (ctx_forked(n->ctx))
		return -ECHILD;
	for (;;) {
		uint64_t s = atomic_load(&n->seq);
		if (!atomic_load(&n->active)) {
			*seq = s;
			return 0;
		}
		sched_yield();
	}
}

int hetmm_notifier_read_retry(const struct hetmm_notifier *n, uint64_t seq)
{
	if (!n)
		return -EINVAL;
	if (ctx_forked(n->ctx))
		return -ECHILD;
	return atomic_load(&n->seq) != seq;
}

static void notifier_call(struct hetmm_notifier *n, uintptr_t start,
			  uintptr_t end, enum hetmm_event why)
{
	atomic_fetch_add(&n->active, 1);
	atomic_fetch_add(&n->seq, 1);
	TRACE3(invalidate, MAX(start, n->start), MIN(end, n->end), why);
	/* The driver's callback takes its own locks, which its threads may
	 * hold while they wait in a fault on a hole (away.h): the handler
	 * runs it away, as it runs a driver's copy. */
	away_begin();
	n->ops->invalidate(n, MAX(start, n->start), MIN(end, n->end), why,
			   n->arg);
	away_end();
	atomic_fetch_sub(&n->active, 1);
}

void notifiers_invalidate(struct hetmm_ctx *ctx, uintptr_t start,
			  uintptr_t end, enum hetmm_event why)
{
	if (!event_is_valid(why) || start >= end)
		return;
	away_rdlock(&ctx->notifiers_lock);
	for (struct hetmm_notifier *n = ctx->notifiers; n; n = n->next)
		if (start < n->end && n->start < end)
			notifier_call(n, start, end, why);
	pthread_rwlock_unlock(&ctx->notifiers_lock);
}

void notifiers_release(struct hetmm_ctx *ctx)
{
	away_wrlock(&ctx->notifiers_lock);
	struct hetmm_notifier *n = ctx->notifiers;
	ctx->notifiers = NULL;
	pthread_rwlock_unlock(&ctx->notifiers_lock);
	while (n) {
		struct hetmm_notifier *next = n->next;
		notifier_call(n, n->start, n->end, HETMM_EVENT_RELEASE);
		free(n);
		n = next;
	}
}

struct hetmm_ctx *notifier_ctx(const struct hetmm_notifier *n)
{
	return n->ctx;
}

bool notifier_covers(const struct hetmm_notifier *n, uintptr_t start,
		     uintptr_t end)
{
	return n->start <= start && end <= n->end;
}
