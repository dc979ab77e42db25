/* SPDX-License-Identifier: MIT */
/*
 * testhook.c - the test hook's pointer (testhook.h).  Without
 * HETMM_TEST_HOOKS this object is empty.
 */
#include "testhook.h"

#ifdef HETMM_TEST_HOOKS
void (*test_hook)(enum test_hook_point point, uintptr_t addr, size_t len);
_Bool test_no_poison;
_Bool test_no_move;
#else
/* ISO C wants a translation unit to declare something. */
typedef int testhook_unused;
#endif
