/* SPDX-License-Identifier: MIT */
/*
 * common.h - what every section of `hetmm bench` shares: timing, medians,
 * buffers, progress lines, raw userfaultfd primitives for the baselines,
 * JSON scalars, and the results of the sections kept in their own files.
 */
#ifndef HETMM_BENCH_COMMON_H
#define HETMM_BENCH_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "hetmm.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define PAGE ((size_t)HETMM_PAGE_SIZE)
#define MIB ((size_t)1 << 20)
#define GIB ((size_t)1 << 30)
#define CHUNK_2M (2 * MIB)
#define MAX_SIZES 32
#define MAX_REPS 64

/* Progress on stderr (a line may be left open); warnings on stderr. */
void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void warn_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

uint64_t now_ns(void);
int cmp_double(const void *a, const void *b);
/* Median of n values (sorts in place); NAN for n == 0. */
double median(double *v, int n);
/* Nearest-rank percentile of sorted values. */
double percentile_sorted(const double *v, int n, double pct);
/* bytes per ns == GB/s (1e9 B/s); NAN if ns is not positive. */
double gbps(size_t bytes, double ns);
double us_per_page(size_t bytes, double ns);
double ns_per_page(size_t bytes, double ns);

/* thp: 0 leave default, 1 MADV_HUGEPAGE, -1 MADV_NOHUGEPAGE. */
void *map_anon(size_t len, int thp);
/* Populate with real (non-zero) pages. */
void populate(void *p, size_t len, int byte);
/*
 * ns to read a byte a page of len bytes of anonymous memory the kernel
 * populated (MAP_POPULATE): the first touch of pages someone else
 * mapped, as a thread finds the pages hetmm installs.  No I/O and no
 * fault: the CPU's cost of a fresh mapping alone, a ceiling for any
 * pass over pages newly mapped (a virtual machine with shadow page
 * tables pays an exit per page here).  NAN if it can't map.
 */
double first_touch_ns(size_t len);
extern volatile uint64_t g_sink;
const char *fmt_size(size_t sz, char *buf, size_t n);
uint64_t rng_next(uint64_t *s);
void shuffle(uint32_t *v, size_t n, uint64_t *seed);
/* MemAvailable from /proc/meminfo in bytes, 0 if unknown. */
size_t mem_available(void);

/* Raw userfaultfd for the baselines. */
int uffd_open_raw(int flags);
int uffd_open_features(uint64_t want, int nonblock, uint64_t *got);
int uffd_register_missing(int fd, void *p, size_t len, uint64_t *ioctls);
int raw_copy(int fd, char *dst, const char *src, size_t len, size_t chunk,
	     uint64_t mode);
int raw_move(int fd, char *dst, char *src, size_t len, size_t chunk);

void json_num(FILE *f, double v, int decimals);
/* The next member of an object: , "key": v (json_num). */
void json_field(FILE *f, const char *key, double v, int decimals);
void json_str(FILE *f, const char *s);

/*
 * hetmm repetitions the sections share; each warns on stderr of what went
 * wrong and returns 0 or a negative errno.
 *
 * buffer_to_device: a fresh buffer of size bytes, populated with byte,
 * migrated to pg (timed into *ns unless ns is NULL); *bufp is the
 * caller's to unmap.  migrate_round_trip: such a buffer to the device and
 * back, each way timed, the data spot-checked.  fault_read_once: such a
 * buffer read one byte a page, in order or in the order of perm, so that
 * every page faults home; the time, the faults, and the pages they
 * brought back (the context's counters), the bytes checked.
 */
int buffer_to_device(struct hetmm_pagemap *pg, size_t size, int byte,
		     char **bufp, double *ns);
int migrate_round_trip(struct hetmm_ctx *ctx, struct hetmm_pagemap *pg,
		       size_t size, double *tdev, double *tsys);
int fault_read_once(struct hetmm_ctx *ctx, struct hetmm_pagemap *pg,
		    size_t size, const uint32_t *perm, double *ns,
		    double *faults, double *fpages);

/*
 * Run fn(arg, i) on nthreads threads at once; returns the wall time from
 * the common start to the last one's end in *ns, and the first nonzero
 * return of fn.  Threads are created before and joined after the timed
 * part.
 */
typedef int (*par_fn)(void *arg, int i);
int par_run(int nthreads, par_fn fn, void *arg, double *ns);

#endif /* HETMM_BENCH_COMMON_H */
