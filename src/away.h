/* SPDX-License-Identifier: MIT */
/*
 * away.h - the fault handler away from its userfaultfd: running a
 * driver's code (a copy op, a submit op) or waiting for a driver's copy.
 *
 * A driver's own thread can fault on a page of a mapping hetmm
 * registered whole (its library's pool, merged there by the kernel)
 * while the handler waits for that thread's copy; neither would move.
 * So the handler says when it leaves (away_begin) and comes back
 * (away_end), and the context's deputy thread (deputy.c), once the
 * handler has been away a while, reads the userfaultfd for it and serves
 * the faults that need no device page; the rest it keeps for the
 * handler, which takes them before it reads again.  Only the handler
 * thread's calls count (away_attach); on any other thread (a migrator
 * waiting for its copies) they do nothing: the handler is free there to
 * serve the driver's faults itself.
 *
 * Leaving and coming back cost one atomic instruction each, and no
 * system call unless the deputy is parked (leaving) or serving (coming
 * back).
 *
 * Whenever it is not blocked in read(2) the handler is away too, in a
 * lesser way: busy (away_read_begin, away_read_end).  Its own thread
 * may then fault on a hole of a mapping registered whole (memory of a
 * malloc arena's or of a sanitizer's runtime the kernel merged there)
 * and wait for itself.  So the deputy, once the handler has been busy
 * with the same batch for a tick and sleeps in a userfault, reads the
 * userfaultfd for it (deputy.c, the rescue): it fills the handler's own
 * fault and keeps everything else apart.  It stops as soon as it has
 * filled it, unless the handler is recalling it already.  While the
 * handler reads what waits by itself in the middle of a batch
 * (away_keep_begin, away_keep_end), no rescue starts.  These four run
 * no instrumented code (NO_TSAN, base.h): the handler must not fault
 * where no rescue can reach it.
 */
#ifndef HETMM_AWAY_H
#define HETMM_AWAY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* struct handler_away.word: the two threads' states in one word, so
 * that each changes its own with one atomic step that sees the other's. */
#define AWAY_OUT 1u               /* the handler is away */
#define AWAY_SERVING 2u           /* the deputy reads the userfaultfd */
#define AWAY_PARKED 4u            /* the deputy sleeps until the next leave */
#define AWAY_BUSY 8u              /* the handler is not in read(2) */
#define AWAY_KEEPING 16u          /* ... but reads what waits itself */
#define AWAY_RECALL 32u           /* the handler is recalling the deputy */
#define AWAY_TRIP 64u             /* added per leave and per read */

struct handler_away {
	/* AWAY_* bits and the trip count; futex word of both threads. */
	_Atomic uint32_t word;
	/* The deputy read an event that the handler has not taken yet: the
	 * kernel no longer refuses the handler's fills, so uffd.c refuses
	 * them as the kernel would have while the event waited. */
	atomic_bool events_held;
	/* The same for the messages a rescue kept (deputy.c). */
	atomic_bool events_rescued;
	/* A page of the handler's, registered: its madvise raises an event
	 * that ends the deputy's reading (away_end). */
	void *recall;
	size_t recall_len;
	unsigned depth;               /* the handler's nesting */
};

/* The calling thread is the handler that owns a. */
void away_attach(struct handler_away *a);
/* The handler leaves for a driver's code or a wait for a driver; calls
 * nest.  Nothing on other threads. */
void away_begin(void);
/* Back: returns once the deputy has stopped reading the userfaultfd and
 * has put away what it read. */
void away_end(void);
/* The handler is about to block in read(2) (returns once the deputy
 * has stopped reading), and is back from it with a batch. */
void away_read_begin(struct handler_away *a);
void away_read_end(struct handler_away *a);
/* The handler reads what waits in the middle of a batch: the deputy is
 * recalled first if it reads, and starts no rescue until keep_end. */
void away_keep_begin(struct handler_away *a);
void away_keep_end(struct handler_away *a);
/* On the handler: did the deputy read an event the handler has not
 * handled yet?  (uffd.c refuses the handler's FILL_ONCE calls then.) */
bool away_events_held(void);

/*
 * Locks an application thread can hold (hetmm's own, taken on the
 * handler and on the process's threads alike).  The holder may wait in
 * a fault on a hole of a mapping registered whole (under a sanitizer,
 * any access can touch a new page of its runtime's; in any build, memory
 * a malloc arena hands out), which only a reader of the userfaultfd
 * fills: the handler waiting for the lock would wait for itself.  So on
 * the handler a lock that is not free at once is waited for away, the
 * deputy serving meanwhile; then tried again, as the handler does not
 * hold it while it recalls the deputy (whose serving may take it).
 * Uncontended, or on any other thread, one trylock more than the lock.
 */
void away_mutex_lock(pthread_mutex_t *m);
void away_rdlock(pthread_rwlock_t *l);
void away_wrlock(pthread_rwlock_t *l);

#endif /* HETMM_AWAY_H */
