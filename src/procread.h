/* SPDX-License-Identifier: MIT */
/*
 * procread.h - reads of process memory that fail rather than fault
 * (hetmm_copy_from_process, in hetmm.h).
 */
#ifndef HETMM_PROCREAD_H
#define HETMM_PROCREAD_H

#include <stdbool.h>
#include <stddef.h>

/* Does hetmm_copy_from_process() fail rather than fault here?  False
 * where a seccomp filter refuses process_vm_readv(2): it falls back to
 * memcpy. */
bool procread_safe(void);

/* [addr, addr + len) is hetmm's own and stays mapped until
 * procread_release(addr): hetmm_copy_from_process() reads it with a
 * memcpy.  False if the table is full (reads then take the safe way). */
bool procread_hold(const void *addr, size_t len);
void procread_release(const void *addr);

#endif /* HETMM_PROCREAD_H */
