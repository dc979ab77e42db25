/* SPDX-License-Identifier: MIT */
/*
 * devices/handles.h - a driver's register of the handles it gave out and has not
 * freed, so that a stale or foreign handle passed back to one of its calls
 * is refused with -EINVAL instead of being used.  Every device here keeps
 * one; it is a driver-side helper on no hetmm call at all.
 *
 * A device embeds a struct drv_handle and registers it once it is whole;
 * its calls look the handle up before they touch anything; its destroy and
 * its context's release take it out, and only the caller that took it out
 * frees the device (so a destroy racing the context's end frees it once).
 * The context's release reaches every device the same way (drv_life_insert).
 */
#ifndef HETMM_DEVICES_HANDLES_H
#define HETMM_DEVICES_HANDLES_H

#include <pthread.h>
#include <stdbool.h>

struct hetmm_ctx;
struct hetmm_notifier;
struct drv_handles;

struct drv_handle {
	struct drv_handle *next;
	struct drv_handles *reg;                 /* for drv_life_insert */
	void (*release)(struct drv_handle *h);
};

struct drv_handles {
	pthread_mutex_t lock;
	struct drv_handle *head;
};

#define DRV_HANDLES_INIT { PTHREAD_MUTEX_INITIALIZER, NULL }

/* h, not yet registered, joins the register. */
void drv_handles_add(struct drv_handles *reg, struct drv_handle *h);
/* Is h registered?  h is only compared, never read. */
bool drv_handles_has(struct drv_handles *reg, const struct drv_handle *h);
/* Take h out: true if it was registered (the caller now owns its end). */
bool drv_handles_take(struct drv_handles *reg, struct drv_handle *h);

/*
 * The device's end at its context's release: a notifier over quiet, a
 * page of the device's own that no change of the process touches, so
 * that it hears the release only.  Then h is taken out of reg and, if it
 * was still there, release(h) frees the device: its pagemap is gone
 * already, every page home, and the context frees the notifiers itself.
 * (A destroy that took h out first removes the notifier, and frees the
 * device, itself.)  0 or hetmm_notifier_insert's errno.
 */
int drv_life_insert(struct hetmm_ctx *ctx, void *quiet,
		    struct drv_handles *reg, struct drv_handle *h,
		    void (*release)(struct drv_handle *h),
		    struct hetmm_notifier **lifep);

#endif /* HETMM_DEVICES_HANDLES_H */
