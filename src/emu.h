/* SPDX-License-Identifier: MIT */
/*
 * emu.h - the emulated device, as the context's teardown sees it.
 */
#ifndef HETMM_EMU_H
#define HETMM_EMU_H

struct hetmm_ctx;

void emu_destroy_all(struct hetmm_ctx *ctx);

#endif /* HETMM_EMU_H */
