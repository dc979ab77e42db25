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

/* The queue for an asynchronous pagemap at hot-add (depth and timeout
 * from its desc, checked by the caller); 0 and nothing for others. */
int copyq_create(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap,
		 uint32_t depth, uint32_t timeout_ms);
/* At hot-remove.  A queue with a copy that timed out is kept, so that
 * its late completion finds valid memory. */
void copyq_destroy(struct hetmm_ctx *ctx, struct hetmm_pagemap *pgmap);
/* A copy of the pagemap timed out: it takes no migration any more. */
bool copyq_dead(const struct hetmm_pagemap *pgmap);

/* The staging memory of its queue (hetmm_pagemap_info.copy_staging):
 * NULL and *len 0 for a synchronous pagemap. */
void *copyq_staging(const struct hetmm_pagemap *pgmap, size_t *len);

/* One copy the pipeline makes: index and mem (source to the device, or
 * destination from it; NULL: the slot's staging) of nr pages; tag is
 * the caller's (the piece's first page, say). */
struct copy_req {
	uint64_t index;
	void *mem;
	size_t nr;
	size_t tag;
};

/*
 * Copy through the pagemap's queue: next() gives the copies to make
 * (false: no more), each cut into pieces of at most HETMM_COPY_MAX_PAGES
 * with as many in flight as the queue has slots; finish() is called for
 * every piece in the order they were given, with 0 or the piece's error
 * (-ETIMEDOUT if it did not complete in time) and, from the device, the
 * staging memory holding its bytes (valid during the call only).
 * Returns the number of pieces that failed.
 */
size_t copy_pipe(struct hetmm_pagemap *pgmap, bool to_device,
		 bool (*next)(void *arg, struct copy_req *r),
		 void (*finish)(void *arg, const struct copy_req *r, int err,
				void *staging),
		 void *arg);

#endif /* HETMM_COPY_H */
