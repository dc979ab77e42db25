/* SPDX-License-Identifier: MIT */
/*
 * throughput.h - the throughput rows of `hetmm bench` at one size
 * (throughput.c): migrate_to_device, migrate_to_system and fault_seq,
 * each hetmm against its baseline, and what is measured with them for
 * information.
 */
#ifndef HETMM_BENCH_THROUGHPUT_H
#define HETMM_BENCH_THROUGHPUT_H

#include <stddef.h>

#include "hetmm.h"

struct size_result {
	size_t size;
	int err;
	/* a */
	double memcpy_ns;
	const char *memcpy_kind;
	int memcpy_thp;                /* the faster memcpy variant */
	double to_dev_ns;
	/* b */
	double to_sys_ns;
	double raw_copy2m_ns, raw_copyall_ns, raw_move2m_ns, raw_moveall_ns;
	double raw_best_ns;
	const char *raw_best_kind;
	int raw_best;                  /* enum raw_kind of raw_best_ns */
	/* c */
	double fault_seq_ns;
	double faults_per_rep;
	double fault_pages_per_rep;
	double raw_fault_seq_ns;       /* 2 MiB UFFDIO_COPY per fault */
	double raw_fault_seq_move_ns;  /* 2 MiB UFFDIO_MOVE per fault */
	double memcpy_out_ns;          /* memcpy out of device-resident */
	double memcpy_out_faults;
	/* Paired rounds (bench_paired): the baselines' medians there, and
	 * the medians of the per-round ratios, the figures reported. */
	double pair_memcpy_ns, pair_raw_ns;
	double ratio_to_dev, ratio_to_sys, ratio_fault_seq;
};

/*
 * All of it at one size: the baselines on their own, then hetmm and its
 * baselines round by round on an emulated device of the size, then
 * memcpy() out of the device.  raw_fd is a nonblocking userfaultfd;
 * has_move says whether it has UFFD_FEATURE_MOVE.  Progress on one line
 * of stderr.  0 or the last error, which is also sr->err.
 */
int bench_throughput(struct hetmm_ctx *ctx, int raw_fd, int has_move,
		     size_t size, int reps, struct size_result *sr);

#endif /* HETMM_BENCH_THROUGHPUT_H */
