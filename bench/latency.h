/* SPDX-License-Identifier: MIT */
/*
 * latency.h - single-page fault latency (latency.c): its phases, its
 * results per thread placement, and the placements themselves.
 */
#ifndef HETMM_BENCH_LATENCY_H
#define HETMM_BENCH_LATENCY_H

#include <sched.h>
#include <stddef.h>
#include <stdint.h>

#include "hetmm.h"

/* One phase of the latency test: its timed touches. */
struct lat_stat {
	int n;
	double med, p99, mean;
};

/*
 * The latency test's phases, all the same random touches (see
 * bench_latency): hetmm; the bare round trip (raw, copying one hot page:
 * the target's baseline); raw copying the same bytes from a buffer as
 * cold as the device's memory (cold); and cold with one cold entry read
 * per fault to find them (floor: what any design with per-page state
 * costs at least).
 */
enum lat_phase { LAT_HETMM, LAT_RAW, LAT_COLD, LAT_FLOOR, NLAT };

struct lat_result {
	int err;
	int place;
	uint64_t hetmm_fault_pages;
	size_t region;
	uint64_t hetmm_faults;
	struct lat_stat st[NLAT];
};

/* hetmm's median over phase ph's */
double lat_ratio(const struct lat_result *lr, enum lat_phase ph);

/* Where the handler threads run, hetmm's and the raw one alike. */
enum place { PLACE_UNPINNED, PLACE_SAME_CPU, PLACE_CROSS_CPU, NPLACES };

extern const char *const place_name[NPLACES];

#define MAX_TIDS 64

struct placement {
	int tids_before[MAX_TIDS];  /* the threads before hetmm's */
	int n_tids_before;
	int hetmm_tids[MAX_TIDS];
	int n_hetmm_tids;
	cpu_set_t orig;
	int cpu_a, cpu_b;   /* -1 if not available */
};

/* Before hetmm_ctx_create(): the threads there are so far. */
void placement_begin(struct placement *pl);
/* After it: hetmm's threads, the ones that appeared, and two CPUs this
 * thread may run on. */
void placement_find_hetmm(struct placement *pl);
/* Whether this machine (this thread's CPUs) allows placement p. */
int placement_possible(const struct placement *pl, enum place p);

/*
 * The latency test at one placement: reps repetitions of every phase,
 * each samples timed touches (fewer if the buffer has too few pages) of
 * a 64 MiB buffer.  0 or a negative errno, also in lr->err.
 */
int bench_latency(struct hetmm_ctx *ctx, int samples, int reps,
		  struct placement *pl, enum place place,
		  struct lat_result *lr);
/* The headline placement: the worse ratio to raw of the two pinned
 * ones. */
enum place lat_headline(const struct lat_result lat[NPLACES]);

#endif /* HETMM_BENCH_LATENCY_H */
