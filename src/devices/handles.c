/* SPDX-License-Identifier: MIT */
/*
 * devices/handles.c - a driver's register of live handles (handles.h).  A list
 * under a mutex: devices are few, and their calls are not the hot path.
 */
#include "handles.h"

void drv_handles_add(struct drv_handles *reg, struct drv_handle *h)
{
	pthread_mutex_lock(&reg->lock);
	h->next = reg->head;
	reg->head = h;
	pthread_mutex_unlock(&reg->lock);
}

bool drv_handles_has(struct drv_handles *reg, const struct drv_handle *h)
{
	bool found = false;
	pthread_mutex_lock(&reg->lock);
	for (const struct drv_handle *e = reg->head; e && !found; e = e->next)
		found = e == h;
	pthread_mutex_unlock(&reg->lock);
	return found;
}

bool drv_handles_take(struct drv_handles *reg, struct drv_handle *h)
{
	bool found = false;
	pthread_mutex_lock(&reg->lock);
	for (struct drv_handle **pp = &reg->head; *pp; pp = &(*pp)->next) {
		if (*pp == h) {
			*pp = h->next;
			found = true;
			break;
		}
	}
	pthread_mutex_unlock(&reg->lock);
	return found;
}
