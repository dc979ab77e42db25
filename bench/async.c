/* SPDX-License-Identifier: MIT */
/*
 * async.c - asynchronous copies against synchronous ones, for a device
 * whose every copy takes a latency (a network round trip, an I/O).
 *
 * Two devices of the test driver (tests/adrv.h, public header only),
 * both taking ASYNC_LATENCY_US per copy: one synchronous (the op sleeps),
 * one asynchronous at queue depth ASYNC_DEPTH (its completion thread
 * completes each copy once its latency has passed, copies aging in
 * parallel).  Timed: migrating a buffer to the device and faulting it
 * back by a sequential read, with the device's frames fragmented so that
 * every run is one page (every copy a page: the case a queue is for), and
 * with contiguous frames (a copy per 2 MiB chunk synchronously, pieces of
 * HETMM_COPY_MAX_PAGES asynchronously).  The ratio sync/async is the
 * speed-up, measured in the same run.  Median of reps after one warm-up.
 */
#include "sections.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/mman.h>

#include "adrv.h"

#define ASYNC_LATENCY_US 100
#define ASYNC_DEPTH 16

/* Frames of d fragmented: a buffer as big as the device fills it, every
 * other page of it comes back; the next migration takes the holes. */
static int fragment(struct hetmm_ctx *ctx, struct adrv *d, char *filler,
		    size_t npages)
{
	int rc = hetmm_migrate_to_device(d->pg, filler, npages * PAGE, NULL);
	for (size_t i = 0; !rc && i < npages; i += 2)
		rc = hetmm_migrate_to_system(ctx, filler + i * PAGE, PAGE,
					     NULL);
	return rc;
}

/* One repetition: buf to the device, then read back (faults). */
static int async_rep(struct adrv *d, char *buf, size_t size, double *to_ns,
		     double *back_ns)
{
	uint64_t t0 = now_ns();
	int rc = hetmm_migrate_to_device(d->pg, buf, size, NULL);
	*to_ns = (double)(now_ns() - t0);
	if (rc)
		return rc;
	volatile uint64_t sum = 0;
	t0 = now_ns();
	for (size_t off = 0; off < size; off += PAGE)
		sum += *(volatile uint64_t *)(buf + off);
	*back_ns = (double)(now_ns() - t0);
	(void)sum;
	return 0;
}

static int async_device(struct hetmm_ctx *ctx, bool async, bool frag,
			size_t size, int reps, double *to, double *back)
{
	size_t np = size / PAGE;
	struct adrv d;
	double t[2][16];
	char *buf = mmap(NULL, size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *filler = mmap(NULL, 2 * size, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED || filler == MAP_FAILED)
		return -ENOMEM;
	memset(buf, 7, size);
	memset(filler, 9, 2 * size);
	int rc = adrv_create(ctx, &d, frag ? 2 * np : np, async,
			     ASYNC_LATENCY_US * 1000ull,
			     async ? ASYNC_DEPTH : 0, 0, 0);
	if (!rc && frag)
		rc = fragment(ctx, &d, filler, 2 * np);
	reps = reps > 15 ? 15 : reps;
	for (int r = 0; !rc && r <= reps; r++)
		rc = async_rep(&d, buf, size, &t[0][r], &t[1][r]);
	if (!rc) {
		*to = median(t[0] + 1, reps);
		*back = median(t[1] + 1, reps);
	}
	if (d.pg) {
		int r2 = hetmm_pagemap_remove(d.pg);
		rc = rc ? rc : r2;
	}
	adrv_destroy(&d);
	munmap(buf, size);
	munmap(filler, 2 * size);
	return rc;
}

int bench_async(struct hetmm_ctx *ctx, size_t size, int reps,
		struct async_result *r)
{
	memset(r, 0, sizeof(*r));
	r->size = size;
	r->depth = ASYNC_DEPTH;
	r->latency_us = ASYNC_LATENCY_US;
	for (int frag = 0; frag < 2; frag++) {
		struct async_row *row = &r->row[frag];
		int rc = async_device(ctx, false, frag, size, reps,
				      &row->sync_to_ns, &row->sync_back_ns);
		if (!rc)
			rc = async_device(ctx, true, frag, size, reps,
					  &row->async_to_ns,
					  &row->async_back_ns);
		if (rc)
			return rc;
	}
	return 0;
}

static const char *const row_name[2] = { "contiguous frames",
					 "fragmented frames (1-page runs)" };

void async_print_text(const struct async_result *r)
{
	char sb[32];

	for (int i = 0; i < 2; i++) {
		const struct async_row *w = &r->row[i];
		printf("asynchronous copies (%s, %s, device latency %u us a "
		       "copy, depth %u): to device %.3f vs sync %.3f GB/s, "
		       "ratio %.2f; fault back %.3f vs sync %.3f GB/s, "
		       "ratio %.2f\n",
		       fmt_size(r->size, sb, sizeof(sb)), row_name[i],
		       r->latency_us, r->depth,
		       gbps(r->size, w->async_to_ns),
		       gbps(r->size, w->sync_to_ns),
		       w->sync_to_ns / w->async_to_ns,
		       gbps(r->size, w->async_back_ns),
		       gbps(r->size, w->sync_back_ns),
		       w->sync_back_ns / w->async_back_ns);
	}
}

void async_print_json(FILE *f, const struct async_result *r)
{
	static const char *const key[2] = { "contiguous", "fragmented" };

	fprintf(f, ",\n  \"async_copies\": {\"size\": %zu, \"depth\": %u, "
		"\"latency_us\": %u", r->size, r->depth, r->latency_us);
	for (int i = 0; i < 2; i++) {
		const struct async_row *w = &r->row[i];
		fprintf(f, ", \"%s\": {\"to_device_async_gbps\": ", key[i]);
		json_num(f, gbps(r->size, w->async_to_ns), 4);
		json_field(f, "to_device_sync_gbps",
			   gbps(r->size, w->sync_to_ns), 4);
		json_field(f, "to_device_speedup",
			   w->sync_to_ns / w->async_to_ns, 3);
		json_field(f, "fault_back_async_gbps",
			   gbps(r->size, w->async_back_ns), 4);
		json_field(f, "fault_back_sync_gbps",
			   gbps(r->size, w->sync_back_ns), 4);
		json_field(f, "fault_back_speedup",
			   w->sync_back_ns / w->async_back_ns, 3);
		fputs("}", f);
	}
	fputs("}", f);
}
