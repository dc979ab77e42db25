/* SPDX-License-Identifier: MIT */
/*
 * away.c - the fault handler's leaving for a driver and coming back: see
 * away.h.  The deputy's side is in deputy.c.
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

/*
 * The deputy is serving: make it read its way out, and wait until it
 * is done.  A rescuing deputy may stop by itself meanwhile (a
 * compare-and-swap that fails once AWAY_RECALL is set): then nobody
 * would read the recall's event, and madvise would wait for ever.
 * NO_TSAN, raw system calls: away_read_begin's.  recall_len: the page
 * size, which page_shift() would read in instrumented code.
 */
NO_TSAN static void away_recall(struct handler_away *a)
{
	uint32_t w = atomic_fetch_or(&a->word, AWAY_RECALL);
	if (w & AWAY_SERVING) {
		syscall(SYS_madvise, a->recall, a->recall_len, MADV_DONTNEED);
		while ((w = atomic_load(&a->word)) & AWAY_SERVING)
			futex_word(&a->word, FUTEX_WAIT_PRIVATE, w, NULL);
	}
	atomic_fetch_and(&a->word, ~AWAY_RECALL);
}

/* A trip into a driver while the deputy rescues the handler: the
 * deputy comes back to its ticks, from which it serves a trip. */
void away_begin(void)
{
	struct handler_away *a = away_self;
	if (!a || a->depth++)
		return;
	uint32_t old = atomic_fetch_add(&a->word, AWAY_TRIP | AWAY_OUT);
	if (unlikely(old & AWAY_PARKED))
		futex_word(&a->word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
	if (unlikely(old & AWAY_SERVING))
		away_recall(a);
}

void away_end(void)
{
	struct handler_away *a = away_self;
	if (!a || --a->depth)
		return;
	uint32_t old = atomic_fetch_and(&a->word, ~AWAY_OUT);
	if (unlikely(old & AWAY_SERVING)) {
		away_recall(a);
		/* What the deputy put away happens before what follows, to
		 * ThreadSanitizer too (away_recall's loads are hidden). */
		(void)atomic_load(&a->word);
	}
}

NO_TSAN void away_read_begin(struct handler_away *a)
{
	uint32_t old = atomic_fetch_and(&a->word, ~AWAY_BUSY);
	if (unlikely(old & AWAY_SERVING))
		away_recall(a);
}

/* BUSY is clear here: the add sets it. */
NO_TSAN void away_read_end(struct handler_away *a)
{
	uint32_t old = atomic_fetch_add(&a->word, AWAY_TRIP | AWAY_BUSY);
	if (unlikely(old & AWAY_PARKED))
		futex_word(&a->word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
}

NO_TSAN void away_keep_begin(struct handler_away *a)
{
	uint32_t old = atomic_fetch_or(&a->word, AWAY_KEEPING);
	if (unlikely(old & AWAY_SERVING))
		away_recall(a);
}

NO_TSAN void away_keep_end(struct handler_away *a)
{
	atomic_fetch_and(&a->word, ~AWAY_KEEPING);
}

bool away_events_held(void)
{
	struct handler_away *a = away_self;
	return a && (atomic_load_explicit(&a->events_held,
					  memory_order_relaxed) ||
		     atomic_load_explicit(&a->events_rescued,
					  memory_order_relaxed));
}

/* The handler waits for a lock away (away.h).  Elsewhere: the lock. */
#define AWAY_LOCK(trylock, lock, unlock, l)                              \
	do {                                                              \
		if (!trylock(l))                                          \
			return;                                           \
		if (!away_self) {                                         \
			lock(l);                                          \
			return;                                           \
		}                                                         \
		do {                                                      \
			away_begin();                                     \
			lock(l);                                          \
			unlock(l);                                        \
			away_end();                                       \
		} while (trylock(l));                                     \
	} while (0)

void away_mutex_lock(pthread_mutex_t *m)
{
	AWAY_LOCK(pthread_mutex_trylock, pthread_mutex_lock,
		  pthread_mutex_unlock, m);
}

void away_rdlock(pthread_rwlock_t *l)
{
	AWAY_LOCK(pthread_rwlock_tryrdlock, pthread_rwlock_rdlock,
		  pthread_rwlock_unlock, l);
}

void away_wrlock(pthread_rwlock_t *l)
{
	AWAY_LOCK(pthread_rwlock_trywrlock, pthread_rwlock_wrlock,
		  pthread_rwlock_unlock, l);
}
