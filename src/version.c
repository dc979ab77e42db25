/* SPDX-License-Identifier: MIT */
/*
 * version.c - the library's version, as the header it was built from
 * gives it.
 */
#include "hetmm.h"

int hetmm_version(void)
{
	return HETMM_VERSION_NUMBER;
}
