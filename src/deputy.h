/* SPDX-License-Identifier: MIT */
/*
 * deputy.h - the fault handler's deputy: a second thread per context
 * that reads the userfaultfd while the handler is away (away.h), serves
 * the faults that need no device page, and rescues the handler from a
 * fault of its own; and the messages it read but left to the handler
 * (kept), which the handler takes as its next batches.
 *
 * It lies below the fault engine: what serving a fault means, and when
 * the handler's state forbids it, the engine says through the serve
 * callback it gives deputy_create.
 */
#ifndef HETMM_DEPUTY_H
#define HETMM_DEPUTY_H

#include "base.h"
#include "compat.h"

struct hetmm_ctx;
struct handler_away;
struct deputy;

/* Messages read at once, by the handler and by the deputy. */
#define FAULT_READ_BATCH 32

/* The engine's side of a fault the deputy read while the handler is
 * away: serve it now if the handler's state allows, and say whether it
 * did (else the deputy keeps it for the handler).  Called only for a
 * fault on a page none of whose events the deputy keeps. */
typedef bool deputy_serve_fn(struct hetmm_ctx *ctx, const struct uffd_msg *m);

/* The deputy of ctx's handler, whose trips and batches a tells (the
 * engine's, registered recall page and all); NULL if out of memory. */
struct deputy *deputy_create(struct hetmm_ctx *ctx, struct handler_away *a,
			     deputy_serve_fn *serve);
/* After deputy_join (NULL: nothing). */
void deputy_destroy(struct deputy *d);
/* On the handler, before its first batch: the thread the rescue serves. */
void deputy_attach(struct deputy *d);
/* Its thread, its stack owned (entry_own). */
int deputy_start(struct deputy *d);
/* Once the handler reads no more (no instrumented code: fault.c). */
NO_TSAN void deputy_stop(struct deputy *d);
void deputy_join(struct deputy *d);

/* On the handler, before each message of a batch it read: the messages
 * after it, not handled yet.  A trip the deputy serves serves from them
 * too, as a thread may hold the lock the handler waits for away while
 * it waits in one of them (deputy.c), and marks those it served
 * MSG_SERVED, which no userfaultfd event is: the handler skips them. */
#define MSG_SERVED 0
void deputy_batch_rest(struct deputy *d, struct uffd_msg *rest, size_t n);
/* The handler's next batch from what the deputy kept, at most
 * FAULT_READ_BATCH messages, oldest first; 0 if it kept none. */
size_t kept_take(struct deputy *d, struct uffd_msg *msgs);
/* On the handler in the middle of a batch: read what waits, without
 * waiting, and keep it for after the batch. */
NO_TSAN void kept_read_waiting(struct deputy *d);
/* Is there no more room to keep messages in? */
bool kept_full(const struct deputy *d);
/* Does an event kept change the mapping of a page of [start, end)? */
bool kept_event_in(const struct deputy *d, uintptr_t start, uintptr_t end);
/* Did a rescue keep messages the handler has not moved over to kept? */
NO_TSAN bool rescued_pending(const struct deputy *d);
/* Move them over, as many as fit: whether none is left. */
NO_TSAN bool rescued_merge(struct deputy *d);

#endif /* HETMM_DEPUTY_H */
