/* SPDX-License-Identifier: MIT */
/*
 * fork.h - fork with pages on a device: every context is known to the
 * fork handlers from creation to destruction.
 */
#ifndef HETMM_FORK_H
#define HETMM_FORK_H

struct hetmm_ctx;

int fork_register(struct hetmm_ctx *ctx);
void fork_unregister(struct hetmm_ctx *ctx);

#endif /* HETMM_FORK_H */
