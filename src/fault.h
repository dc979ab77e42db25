/* SPDX-License-Identifier: MIT */
/*
 * fault.h - the fault engine: one thread per context resolves every
 * userfaultfd fault and event of the context's registered ranges.
 */
#ifndef HETMM_FAULT_H
#define HETMM_FAULT_H

struct hetmm_ctx;

/* The engine's state, its buffers and its doorbell page, registered with
 * the context's userfaultfd (which must be open). */
int fault_engine_create(struct hetmm_ctx *ctx);
/* After fault_handler_stop() and after the userfaultfd is closed: the
 * doorbell is a registered page. */
void fault_engine_destroy(struct hetmm_ctx *ctx);
int fault_handler_start(struct hetmm_ctx *ctx);
void fault_handler_stop(struct hetmm_ctx *ctx);

#endif /* HETMM_FAULT_H */
