/* SPDX-License-Identifier: MIT */
/*
 * away.c - the fault handler's leaving for a driver and coming back: see
 * away.h.  The deputy's side is in fault.c.
 *
 * The deputy starts serving with a compare-and-swap that succeeds only
 * while the handler is still out on the same trip; the handler comes
 * back with an atomic and-not that tells it whether the deputy is
 * serving.  Then the deputy is blocked in read(2) or about to be, and
 * the one way to reach it is a message: the handler discards its recall
 * page (MADV_DONTNEED raises a REMOVE event, and madvise returns once it
 * is read), and waits until the deputy has put away what it read.
 */
#include <limits.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "away.h"
#include "base.h"

static _Thread_local struct handler_away *away_self;

void away_attach(struct handler_away *a)
{
	away_self = a;
}

static void futex_wake_all(_Atomic uint32_t *w)
{
	syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

void away_begin(void)
{
	struct handler_away *a = away_self;
	if (!a || a->depth++)
		return;
	uint32_t old = atomic_fetch_add(&a->word, AWAY_TRIP | AWAY_OUT);
	if (unlikely(old & AWAY_PARKED))
		futex_wake_all(&a->word);
}

/* The deputy is serving: make it read its way out, and wait until it
 * is done. */
static void away_recall(struct handler_away *a)
{
	madvise(a->recall, PAGE_SIZE, MADV_DONTNEED);
	uint32_t w;
	while ((w = atomic_load(&a->word)) & AWAY_SERVING)
		syscall(SYS_futex, &a->word, FUTEX_WAIT_PRIVATE, w, NULL,
			NULL, 0);
}

void away_end(void)
{
	struct handler_away *a = away_self;
	if (!a || --a->depth)
		return;
	uint32_t old = atomic_fetch_and(&a->word, ~AWAY_OUT);
	if (unlikely(old & AWAY_SERVING))
		away_recall(a);
}

bool away_events_held(void)
{
	struct handler_away *a = away_self;
	return a && atomic_load_explicit(&a->events_held,
					 memory_order_relaxed);
}
