/* SPDX-License-Identifier: MIT */
/*
 * watch.h - registering the process's memory with the context's
 * userfaultfd, a whole mapping at a time.
 */
#ifndef HETMM_WATCH_H
#define HETMM_WATCH_H

#include <pthread.h>

#include "vma.h"

struct hetmm_ctx;

/* The ranges a context was asked to watch (watch.c): sorted, disjoint,
 * none adjacent to the next. */
struct watch_span {
	uintptr_t start, end;
};
struct watch_asked {
	pthread_mutex_t lock;
	struct watch_span *v;
	size_t n, cap;
};

void watch_init(struct hetmm_ctx *ctx);
void watch_fini(struct hetmm_ctx *ctx);

/* Register v, a private anonymous mapping holding [start, end), whole
 * (less memory hetmm owns), for MISSING and WP faults; the part in
 * [start, end) alone if v changed since it was looked up; if part of it
 * is another context's, the widest span around [start, end) that no
 * other context holds anything in.  0 or -errno (-ENOMEM: no room to
 * record it). */
int watch_vma(struct hetmm_ctx *ctx, const struct vma *v, uintptr_t start,
	      uintptr_t end);
/* The same for every private anonymous mapping [start, end) reaches;
 * other mappings, and gaps, are left alone. */
void watch_range(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end);

/* The process unmapped [start, end) (the handler's UNMAP), or moved
 * [from, from + len) to to (REMAP): what ctx was asked to watch there is
 * forgotten, or moves along. */
void watch_forget(struct hetmm_ctx *ctx, uintptr_t start, uintptr_t end);
void watch_moved(struct hetmm_ctx *ctx, uintptr_t from, uintptr_t to,
		 size_t len);

/* The contexts of the process, which may have to hand memory over to
 * one another: a context joins once created, leaves before it goes. */
void watch_join(struct hetmm_ctx *ctx);
void watch_leave(struct hetmm_ctx *ctx);
/* In a fork child: the parent's contexts are dead. */
void watch_forget_all(void);

#endif /* HETMM_WATCH_H */
