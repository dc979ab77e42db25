/* SPDX-License-Identifier: MIT */
/*
 * peer.h - migration between peer devices, device to device.
 */
#ifndef HETMM_PEER_H
#define HETMM_PEER_H

#include "base.h"

struct hetmm_ctx;
struct hetmm_pagemap;

/*
 * The pages of a chunk [start, start + n pages) that a migration to dst
 * found on another device (status HETMM_MIGRATE_SKIP_OTHER_DEVICE): those
 * on a DEVICE_PRIVATE peer of dst move to dst, copied by dst's
 * copy_from_peer from the peer's bus address, and become MOVED; pages
 * dst has no frame for become SKIP_NOMEM.  The rest stay as they are.
 */
void peer_migrate(struct hetmm_ctx *ctx, struct hetmm_pagemap *dst,
		  uintptr_t start, size_t n, uint8_t *status);

#endif /* HETMM_PEER_H */
