/* SPDX-License-Identifier: MIT */
/*
 * procread.h - reads of process memory that fail rather than fault
 * (hetmm_copy_from_process, in hetmm.h).
 */
#ifndef HETMM_PROCREAD_H
#define HETMM_PROCREAD_H

#include <stdbool.h>

/* Does hetmm_copy_from_process() fail rather than fault here?  False
 * where a seccomp filter refuses process_vm_readv(2): it falls back to
 * memcpy. */
bool procread_safe(void);

#endif /* HETMM_PROCREAD_H */
