/* SPDX-License-Identifier: MIT */
/*
 * sections.h - the sections of `hetmm bench` kept in their own files:
 * the pin fast path (pin.c), eviction (evict.c), device mirror throughput
 * (mirror.c), THPs to a device and back (thp.c), fork with device
 * pages (fork.c), 1 vs 2 threads (scale.c),
 * optimisations off vs on (ablate.c) and the SVG plot (plot.c).  Each
 * measures hetmm against a baseline in the same run (the pin fast path
 * against a target), median of reps repetitions after one warm-up.
 */
#ifndef HETMM_BENCH_SECTIONS_H
#define HETMM_BENCH_SECTIONS_H

#include "common.h"

/* --- pin fast path (pin.c) ------------------------------------------- */

struct pin_result {             /* ns per page */
	double pin_fast_ns;
	double pin_slow_ns;
	double get_fast_ns;
	double unpin_ns;
};

int bench_pin(struct hetmm_ctx *ctx, int reps, struct pin_result *r);
void pin_print_text(const struct pin_result *r);
void pin_print_json(FILE *f, const struct pin_result *r);

/* --- frames freed by munmap (reuse.c) -------------------------------- */

struct reuse_result {
	size_t size;
	double reused_in_ns;      /* migrate into frames a munmap freed */
	double reused_back_ns;    /* and fault the buffer back */
	double fresh_in_ns;       /* the same on a device that held nothing */
	double fresh_back_ns;
};

int bench_reuse(struct hetmm_ctx *ctx, size_t size, int reps,
		struct reuse_result *r);
void reuse_print_text(const struct reuse_result *r);
void reuse_print_json(FILE *f, const struct reuse_result *r);

/* --- transparent huge pages to a device and back (thp.c) ----------- */

struct thp_result {
	size_t size;
	int err;
	/* ns for the buffer, [moving device, copying device][base, THP] */
	double in_ns[2][2];
	double back_ns[2][2];
	/* per PMD, information: a copy made a THP again two ways */
	int refill_err;
	double fill_ns;           /* THP-backed staging + UFFDIO_MOVE */
	double collapse_ns;       /* UFFDIO_COPY + MADV_COLLAPSE */
};

int bench_thp(struct hetmm_ctx *ctx, size_t size, int reps,
	      struct thp_result *r);
void thp_print_text(const struct thp_result *r);
void thp_print_json(FILE *f, const struct thp_result *r);

/* --- asynchronous copies against synchronous ones (async.c) ----------- */

struct async_row {              /* ns for the buffer */
	double sync_to_ns, async_to_ns;
	double sync_back_ns, async_back_ns;
};

struct async_result {
	size_t size;
	unsigned depth, latency_us;
	struct async_row row[2];  /* contiguous frames, fragmented frames */
};

int bench_async(struct hetmm_ctx *ctx, size_t size, int reps,
		struct async_result *r);
void async_print_text(const struct async_result *r);
void async_print_json(FILE *f, const struct async_result *r);

/* --- eviction (evict.c) ----------------------------------------------- */

struct evict_result {
	size_t size;
	double evict_ns;          /* migrate into a full device, evicting */
	double empty_ns;          /* the same migration into an empty one */
	double memcpy_ns;         /* memcpy of the evicted bytes */
	uint64_t evicted;         /* pages evicted per repetition */
};

int bench_evict(struct hetmm_ctx *ctx, size_t size, int reps,
		struct evict_result *r);
void evict_print_text(const struct evict_result *r);
void evict_print_json(FILE *f, const struct evict_result *r);

/* --- device mirror read/write (mirror.c) ------------------------------ */

struct mirror_result {
	size_t size;
	int err;
	double read_cold_ns;      /* first read: range faults included */
	double read_ns;           /* warm read of system pages */
	double write_ns;          /* warm write of system pages */
	double read_dev_ns;       /* warm read of pages on this device */
	double memcpy_ns;         /* baseline: memcpy of the same bytes */
	double vm_readv_ns;       /* baseline: process_vm_readv, same bytes */
	double vm_writev_ns;      /* baseline: process_vm_writev */
	uint64_t cold_faults;     /* range faults of the first read */
};

int bench_mirror(struct hetmm_ctx *ctx, size_t size, int reps,
		 struct mirror_result *r);
void mirror_print_text(const struct mirror_result *r, int n);
void mirror_print_json(FILE *f, const struct mirror_result *r, int n);

/* --- fork with device pages (fork.c) ---------------------------------- */

struct fork_result {
	size_t size;
	int err;
	double dev_ns;            /* fork + child _exit + waitpid, on device */
	double sys_ns;            /* the same with the bytes in system RAM */
	double fork_pages;        /* device pages brought home per fork */
};

int bench_fork(struct hetmm_ctx *ctx, size_t size, int reps,
	       struct fork_result *r);
void fork_print_text(const struct fork_result *r, int n);
void fork_print_json(FILE *f, const struct fork_result *r, int n);

/* --- 1 vs 2 threads (scale.c) ----------------------------------------- */

enum scale_op { SCALE_TO_DEVICE, SCALE_TO_SYSTEM, SCALE_FAULT_SEQ,
		NSCALE_OPS };

struct scale_result {
	size_t size;
	int err;
	/* [op][threads - 1] */
	double hetmm_ns[NSCALE_OPS][2];
	double base_ns[NSCALE_OPS][2];
	const char *base_kind[NSCALE_OPS];
	double move_ns[2];        /* UFFDIO_MOVE 2 MiB/ioctl, information */
};

int bench_scale(struct hetmm_ctx *ctx, int raw_fd, int has_move, size_t size,
		int reps, struct scale_result *r);
void scale_print_text(const struct scale_result *r, int n);
void scale_print_json(FILE *f, const struct scale_result *r, int n);

/* --- optimisations off vs on (ablate.c) ------------------------------- */

struct ablate_result {
	size_t size;
	int err;
	/* fault-around: fault_around_max = 1 vs the default, a sequential
	 * read and a read in random order */
	double fa_off_ns, fa_on_ns;
	double fa_off_faults, fa_on_faults;
	double far_off_ns, far_on_ns;
	double far_off_faults, far_on_faults;
	/* migration path: a pagemap without HETMM_PAGEMAP_REMAP (copies)
	 * vs with it (UFFDIO_MOVE) */
	double copy_to_dev_ns, move_to_dev_ns;
	double copy_to_sys_ns, move_to_sys_ns;
	double copy_fault_ns, move_fault_ns;
};

int bench_ablate(struct hetmm_ctx *ctx, size_t size, int reps,
		 struct ablate_result *r);
void ablate_print_text(const struct ablate_result *r);
void ablate_print_json(FILE *f, const struct ablate_result *r);

/* --- SVG plot (plot.c) ------------------------------------------------ */

#define PLOT_MAX_SERIES 8

struct plot_series {
	const char *name;
	int hetmm;                /* drawn solid; baselines dashed */
	int n;
	double x[MAX_SIZES];      /* bytes */
	double y[MAX_SIZES];      /* GB/s */
};

struct plot_panel {
	const char *title;
	int nseries;
	struct plot_series s[PLOT_MAX_SERIES];
};

int plot_svg(const char *path, const char *title,
	     const struct plot_panel *p, int npanels);

/* --- a file attached to memory (storage.c): `hetmm bench --storage` -- */

/* The section alone: sizes (0: 64M, 256M, 1G; --quick 64M), text or
 * JSON on stdout, and with plot an SVG of throughput against the
 * resident bound; 0, or 1 if something failed. */
int bench_storage(int quick, int json, int reps, const size_t *sizes,
		  int nsizes, const char *plot);

#endif /* HETMM_BENCH_SECTIONS_H */
