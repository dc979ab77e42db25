/* SPDX-License-Identifier: MIT */
/*
 * copy.h - a pagemap's asynchronous copies (the driver's submit ops and
 * hetmm_copy_done): a fixed ring of slots made at hot-add, so that the
 * copy path allocates nothing, and the pipeline that keeps them full.
 */
#ifndef HETMM_COPY_H
#define HETMM_COPY_H

#include "base.h"

struct hetmm_ctx;
struct hetmm_pagemap;
struct copyq;

/* Does pgmap copy asynchronously (submit ops)? */
bool copy_is_async(const struct hetmm_pagemap *pgmap);

/* Is a copy that failed with err the device's failure, counted in
 * copy_errors?  Not one to the device that could not read its source
 * (-EFAULT): the process took it away (hetmm.h, "Process memory"). */
bool copy_error_is_device(bool to_device, int err);

/* The queue for an asynchronous pagemap at hot-add (depth and timeout
 * from its desc, checked by the caller); 0 and nothing for others. */
int copyq_create(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
		 uint32_t depth, uint32_t timeout_ms);
/* At hot-remove.  A queue with a copy that timed out is kept, so that
 * its late completion finds valid memory. */
void copyq_destroy(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap);
/* Was a queue of ctx's kept because a copy of its timed out (and may
 * still read its source)?  Asked once, as ctx goes: the kept queues
 * forget ctx then, so that a context made later at the same address is
 * not taken for it. */
bool copyq_kept_forget(struct hetmm_ctx *ctx);
/* A copy of the pagemap timed out: it takes no migration any more. */
bool copyq_dead(const struct hetmm_pagemap *pgmap);

/* The staging memory of its queue (hetmm_pagemap_info.copy_staging):
 * NULL and *len 0 for a synchronous pagemap. */
void *copyq_staging(const struct hetmm_pagemap *pgmap, size_t *len);

/* One copy the pipeline makes: index and mem (source to the device, or
 * destination from it; NULL: the slot's staging; a caller's own
 * destination must stay outside every registered range) of nr pages; tag and
 * flags are the caller's (the piece's first page, say); keep, if not
 * NULL, nr words the pipeline keeps with each piece and hands back to
 * finish() (the claims of the pages it copies, say), so that the
 * caller's own array may be reused once the copy is started. */
struct copy_req {
	uint64_t index;
	void *mem;
	size_t nr;
	size_t tag;
	unsigned flags;
	const uint64_t *keep;
};

typedef void copy_finish_fn(void *arg, const struct copy_req *r, int err,
			    void *staging);

/*
 * A pipeline of copies through a pagemap's queue, kept full across as
 * many calls of copy_pipe_add() as the caller makes: each request is cut
 * into pieces of at most HETMM_COPY_MAX_PAGES, started at once while a
 * slot is free; with none free, the oldest piece in flight is waited for
 * and finished first.  finish() is called for every piece, in the order
 * the pieces were added, with 0 or the piece's error (-ETIMEDOUT if it did
 * not complete in time) and, from the device, the memory holding its
 * bytes (the slot's staging: valid during the call only).  Lives on the caller's stack or
 * in its state: nothing is allocated.
 *
 * The fault handler's pipelines (handler) may take every slot; others
 * leave a quarter of the queue free for it, since their own finish() may
 * wait for the handler (handler_sync), which then must not wait for them.
 */
struct copy_pipe {
	struct hetmm_pagemap *pgmap;      /* NULL: not open */
	bool to_device;
	unsigned reserve;                 /* free slots left to others */
	copy_finish_fn *finish;
	void *arg;
	struct hetmm_copy *slot[HETMM_COPY_DEPTH_MAX];
	unsigned head, count;             /* pieces in flight, oldest first */
	uint64_t added;                   /* pieces started since opened */
	size_t failed;                    /* pieces that failed */
};

void copy_pipe_open(struct copy_pipe *p, struct hetmm_pagemap *pgmap,
		    bool to_device, bool handler, copy_finish_fn *finish,
		    void *arg);
/* Start the copy r (in pieces), finishing older pieces as slots are
 * needed. */
void copy_pipe_add(struct copy_pipe *p, const struct copy_req *r);
/* Wait for the oldest piece in flight, if any, and finish it. */
void copy_pipe_finish_oldest(struct copy_pipe *p);
/* How many pieces were started so far: read after adding a request, the
 * number its last piece has, for copy_pipe_wait_until(). */
static inline uint64_t copy_pipe_added(const struct copy_pipe *p)
{
	return p->added;
}
/* Wait, finishing none, until the pieces up to the added-th are
 * complete (or one timed out): one sleep for a request of several
 * pieces, where finishing its oldest piece in turn sleeps on each that
 * is not done yet (and its driver wakes each). */
void copy_pipe_wait_until(struct copy_pipe *p, uint64_t added);
/* Finish the oldest pieces that are complete already, waiting for none. */
void copy_pipe_finish_done(struct copy_pipe *p);
/* Wait for and finish every piece in flight; the pipeline is closed.
 * Returns the number of pieces that failed since it was opened. */
size_t copy_pipe_drain(struct copy_pipe *p);

/*
 * One pipeline, not the handler's, for the copies next() gives (false: no
 * more), drained before it returns.  Returns the number of pieces that
 * failed.
 */
size_t copy_pipe(struct hetmm_pagemap *pgmap, bool to_device,
		 bool (*next)(void *arg, struct copy_req *r),
		 copy_finish_fn *finish, void *arg);

/*
 * One copy of nr pages from the device at index, started in a free slot
 * (the fault handler's: it may take every slot) and waited for: 0 with
 * *bytes, the slot's staging, holding them until copy_slot_put(*slotp);
 * or the copy's error (counted in copy_errors), nothing held.  For a
 * page the caller installs itself, as soon as it lands.
 */
int copy_from_device_wait(struct hetmm_pagemap *pgmap, uint64_t index,
			  size_t nr, struct hetmm_copy **slotp, void **bytes);
void copy_slot_put(struct hetmm_copy *slot);

#endif /* HETMM_COPY_H */
