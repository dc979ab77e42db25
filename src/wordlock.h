/* SPDX-License-Identifier: MIT */
/*
 * wordlock.h - a mutex of one futex word, for a lock the handler's
 * deputy takes while it serves a fault.
 *
 * Why not a pthread mutex: under ThreadSanitizer every pthread mutex
 * goes through the runtime's deadlock detector, one global lock.  An
 * application thread can hold that lock while it faults on a fresh
 * page of the runtime's own memory that the kernel merged into a
 * registered mapping; the deputy serving that fault must then not
 * wait on the detector.  TSan sees these atomics as synchronisation,
 * so races are still checked; only lock-order checking is lost, for
 * a lock under which no other is taken.
 *
 * The word: 0 free, 1 held, 2 held with waiters (a waiter sets 2 and
 * sleeps; the unlock that finds 2 wakes one).
 */
#ifndef HETMM_WORDLOCK_H
#define HETMM_WORDLOCK_H

#include <linux/futex.h>
#include <stdatomic.h>

#include "base.h"

struct wordlock {
	_Atomic uint32_t word;
};

static inline void wordlock_lock(struct wordlock *l)
{
	uint32_t w = 0;
	if (likely(atomic_compare_exchange_strong_explicit(
			&l->word, &w, 1, memory_order_acquire,
			memory_order_relaxed)))
		return;
	while (atomic_exchange_explicit(&l->word, 2, memory_order_acquire))
		futex_word(&l->word, FUTEX_WAIT_PRIVATE, 2, NULL);
}

static inline void wordlock_unlock(struct wordlock *l)
{
	if (atomic_exchange_explicit(&l->word, 0, memory_order_release) == 2)
		futex_word(&l->word, FUTEX_WAKE_PRIVATE, 1, NULL);
}

#endif /* HETMM_WORDLOCK_H */
