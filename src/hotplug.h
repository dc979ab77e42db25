/* SPDX-License-Identifier: MIT */
/*
 * hotplug.h - hot-remove, for the context's destruction.
 */
#ifndef HETMM_HOTPLUG_H
#define HETMM_HOTPLUG_H

struct hetmm_pagemap;

/* Hot-remove pgmap, a live pagemap of a live context, whoever owns it. */
int hotplug_remove(struct hetmm_pagemap *pgmap);

#endif /* HETMM_HOTPLUG_H */
