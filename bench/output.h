/* SPDX-License-Identifier: MIT */
/*
 * output.h - the report of one `hetmm bench` run (output.c): everything
 * it measured, printed as text or as one JSON object, and the throughput
 * plotted against size.
 */
#ifndef HETMM_BENCH_OUTPUT_H
#define HETMM_BENCH_OUTPUT_H

#include "common.h"
#include "latency.h"
#include "sections.h"
#include "throughput.h"

struct report {
	const char *kernel;           /* uname's release */
	int reps;
	int nsizes;
	/* per size measured, smallest first */
	struct size_result size[MAX_SIZES];
	struct mirror_result mirror[MAX_SIZES];
	struct fork_result fork[MAX_SIZES];
	struct scale_result scale[MAX_SIZES];
	/* once */
	struct pin_result pin;
	struct evict_result evict;
	struct async_result async;
	struct reuse_result reuse;
	struct thp_result thp;
	struct ablate_result ablate;
	struct lat_result lat[NPLACES];
	enum place head;              /* the headline placement */
	int meta;                     /* hetmm_page_metadata_size() */
};

/* On stdout.  The summary ratios are taken at the largest size. */
void report_print_text(const struct report *rep);
void report_print_json(const struct report *rep);
/* --latency: the fault latency section alone, as text or JSON. */
void report_print_latency(const struct report *rep, int json);
/* --plot: throughput against size as SVG; 0 or a negative errno. */
int report_write_plot(const struct report *rep, const char *path);

#endif /* HETMM_BENCH_OUTPUT_H */
