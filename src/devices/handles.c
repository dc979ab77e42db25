/* SPDX-License-Identifier: MIT */
/*
 * devices/handles.c - a driver's register of live handles (handles.h).  A list
 * under a mutex: devices are few, and their calls are not the hot path.
 */
#include "handles.h"

#include <hetmm.h>

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

static void drv_life(struct hetmm_notifier *n, uintptr_t start,
		     uintptr_t end, enum hetmm_event why, void *arg)
{
	struct drv_handle *h = arg;

	(void)n;
	(void)start;
	(void)end;
	if (why == HETMM_EVENT_RELEASE && drv_handles_take(h->reg, h))
		h->release(h);
}

static const struct hetmm_notifier_ops drv_life_ops = {
	.invalidate = drv_life,
};

int drv_life_insert(struct hetmm_ctx *ctx, void *quiet,
		    struct drv_handles *reg, struct drv_handle *h,
		    void (*release)(struct drv_handle *h),
		    struct hetmm_notifier **lifep)
{
	h->reg = reg;
	h->release = release;
	return hetmm_notifier_insert(ctx, quiet, HETMM_PAGE_SIZE, &drv_life_ops,
				     h, lifep);
}
