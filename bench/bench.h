/* SPDX-License-Identifier: MIT */
/*
 * bench.h - `hetmm bench`: hetmm's migration and fault paths measured
 * against this machine's own limits (memcpy, raw userfaultfd primitives,
 * a bare userfaultfd round trip), every baseline measured in the same run.
 */
#ifndef HETMM_BENCH_H
#define HETMM_BENCH_H

/*
 * argv[0] is the subcommand name ("bench"); options follow:
 *   --quick          sizes 1M,16M,64M, fewer latency samples (seconds)
 *   --plot FILE.svg  also write throughput against size as SVG
 *   --json           print exactly one JSON object on stdout
 *   --sizes LIST     sizes such as 1M,16M,256M,1G,4G (commas or separate
 *                    args; default 1M,4M,16M,64M,256M,1G)
 *   --reps N         repetitions per figure (median is reported)
 *   --samples N      fault-latency samples per repetition
 * Returns 0 on success, nonzero if any measurement failed.
 */
int hetmm_bench_main(int argc, char **argv);

#endif /* HETMM_BENCH_H */
