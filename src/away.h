/* SPDX-License-Identifier: MIT */
/*
 * away.h - the fault handler away from its userfaultfd: running a
 * driver's code (a copy op, a submit op) or waiting for a driver's copy.
 *
 * A driver's own thread can fault on a page of a mapping hetmm
 * registered whole (its library's pool, merged there by the kernel)
 * while the handler waits for that thread's copy; neither would move.
 * So the handler says when it leaves (away_begin) and comes back
 * (away_end), and the context's deputy thread (fault.c), once the
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
 */
#ifndef HETMM_AWAY_H
#define HETMM_AWAY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* struct handler_away.word: the two threads' states in one word, so
 * that each changes its own with one atomic step that sees the other's. */
#define AWAY_OUT 1u               /* the handler is away */
#define AWAY_SERVING 2u           /* the deputy reads the userfaultfd */
#define AWAY_PARKED 4u            /* the deputy sleeps until the next leave */
#define AWAY_TRIP 8u              /* added per leave: which time away */

struct handler_away {
	/* AWAY_* bits and the trip count; futex word of both threads. */
	_Atomic uint32_t word;
	/* The deputy read an event that the handler has not taken yet: the
	 * kernel no longer refuses the handler's fills, so uffd.c refuses
	 * them as the kernel would have while the event waited. */
	atomic_bool events_held;
	/* A page of the handler's, registered: its madvise raises an event
	 * that ends the deputy's reading (away_end). */
	void *recall;
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
/* On the handler: did the deputy read an event the handler has not
 * handled yet?  (uffd.c refuses the handler's FILL_ONCE calls then.) */
bool away_events_held(void);

#endif /* HETMM_AWAY_H */
