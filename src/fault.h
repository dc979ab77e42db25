/* SPDX-License-Identifier: MIT */
/*
 * fault.h - the fault engine: one thread per context resolves every
 * userfaultfd fault and event of the context's registered ranges.
 */
#ifndef HETMM_FAULT_H
#define HETMM_FAULT_H

#include <stdbool.h>

struct hetmm_ctx;

/* How long the handler waits, at most, for the kernel to let an install
 * in once it has read the events that held it back (fault.c,
 * handler_refused; test_lone allows a second copy past it). */
#define REFUSED_WAIT_MS 50

/* The engine's state, its buffers and its doorbell page, registered with
 * the context's userfaultfd (which must be open). */
int fault_engine_create(struct hetmm_ctx *ctx);
/* After fault_handler_stop() and after the userfaultfd is closed: the
 * doorbell is a registered page. */
void fault_engine_destroy(struct hetmm_ctx *ctx);
int fault_handler_start(struct hetmm_ctx *ctx);
/* Stops the handler, closing the context's userfaultfd before the
 * handler thread exits. */
void fault_handler_stop(struct hetmm_ctx *ctx);
/* Is the calling thread ctx's fault handler?  It cannot wait for itself:
 * calls that sync with the handler refuse there (pagemap ops and notifier
 * callbacks run on it). */
bool fault_on_handler(const struct hetmm_ctx *ctx);

#endif /* HETMM_FAULT_H */
