/* SPDX-License-Identifier: MIT */
/*
 * bench.c - `hetmm bench`.
 *
 * Every hetmm figure is paired with a baseline measured in the same run on
 * the same machine, and every figure is the median of several repetitions
 * (after one untimed warm-up repetition).  The three throughput rows are
 * measured in rounds, hetmm and its baseline back to back in alternating
 * order, and their ratio is the median of the per-round ratios, so that
 * the drift of a VM's memory throughput between rounds cancels out
 * (bench_paired):
 *
 *   migrate_to_device  hetmm_migrate_to_device() of a populated private
 *                      anonymous buffer to an emulated DEVICE_PRIVATE device
 *                      sized to fit, vs memcpy() of the same bytes into
 *                      already-populated memory (best of 4 KiB pages and
 *                      THP-advised buffers).
 *   migrate_to_system  hetmm_migrate_to_system() of the whole buffer, vs the
 *                      best raw kernel primitive: UFFDIO_COPY from a
 *                      populated source into a fresh MISSING-registered
 *                      region (2 MiB per ioctl, and the whole range in one
 *                      ioctl), and UFFDIO_MOVE from a populated 4 KiB-page
 *                      staging region (2 MiB per ioctl and whole range).
 *   fault_seq          one thread reads one byte per 4 KiB page of a
 *                      device-resident buffer, so every page faults back,
 *                      vs the same best raw primitive as migrate_to_system.
 *   fault latency      one touch each of random pages of a device-resident
 *                      buffer, clock_gettime() around each touch, vs a bare
 *                      userfaultfd round trip (own uffd, own handler thread
 *                      doing a blocking read() then a one-page UFFDIO_COPY
 *                      from a prepared source page), timed the same way.
 *                      For information, the same bare handler copying each
 *                      page from the same offset of a populated buffer of
 *                      the region's size, as cold as the device's memory
 *                      (cold: the same bytes moved), and doing so after
 *                      reading the offset from a cold page-indexed table
 *                      (floor: the least any design with per-page state
 *                      does on a fault), so the ratio to it is what
 *                      hetmm's own bookkeeping costs.
 *                      Run three times: handlers unpinned, pinned to the
 *                      toucher's CPU, and pinned to another CPU (the
 *                      placement changes the figure several times over on a
 *                      VM); the headline is the worse ratio of the two
 *                      pinned runs, since unpinned compares whatever
 *                      placement the scheduler happened to pick for each.
 *   metadata           hetmm_page_metadata_size().
 *
 * For information, also: a raw fault-driven sequential read (our handler
 * answering each fault with 2 MiB of UFFDIO_COPY or UFFDIO_MOVE), and
 * memcpy() out of a device-resident buffer (up to 64 MiB).
 *
 * Sections in their own files (sections.h), each against its own baseline
 * in the same run: device mirror read/write vs memcpy and
 * process_vm_readv/writev (mirror.c); fork with device pages vs fork with
 * the same bytes in system RAM (fork.c); 1 vs 2 threads on disjoint halves
 * with ns/page (scale.c); fault-around and UFFDIO_MOVE off vs on
 * (ablate.c).  --plot writes throughput against size as SVG (plot.c).
 * Issue 6's targets are given as "ratios_issue6" in the JSON and as a
 * table at the end of the text.
 *
 * The summary "ratios" are taken at the LARGEST size measured.
 * Throughput is in GB/s with 1 GB = 1e9 bytes.  Buffers are unmapped
 * between repetitions so memory stays bounded (about 3x the largest size);
 * a size the machine's available memory can't hold is skipped with a
 * message.  Default sizes 1 MiB to 1 GiB; 4 GiB (or more) with --sizes.
 * Progress and warnings go to stderr; with --json stdout carries exactly one
 * JSON object.
 */
#include "bench.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "hetmm.h"
#include "compat.h"
#include "common.h"
#include "latency.h"
#include "sections.h"
#include "throughput.h"

/* ------------------------------------------------------------------------
 * Options and results
 */

struct opts {
	int quick;
	int json;
	const char *plot;
	int reps;
	int samples;
	size_t sizes[MAX_SIZES];
	int nsizes;
};

/* The pin fast path and eviction, measured once. */
static struct pin_result g_pin;
static struct evict_result g_evict;

/* The sections in their own files, over the sizes measured. */
struct extra {
	struct mirror_result mirror[MAX_SIZES];
	struct fork_result fork[MAX_SIZES];
	struct scale_result scale[MAX_SIZES];
	struct ablate_result ablate;
};

static int parse_size(const char *s, size_t *out)
{
	char *end;
	unsigned long long v;
	size_t mul = 1;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': mul = (size_t)1 << 10; end++; break;
	case 'm': case 'M': mul = (size_t)1 << 20; end++; break;
	case 'g': case 'G': mul = (size_t)1 << 30; end++; break;
	default: break;
	}
	if (*end == 'i')
		end++;
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end != '\0' || v == 0 || v > (SIZE_MAX / mul))
		return -EINVAL;
	v *= mul;
	v = (v + PAGE - 1) & ~(unsigned long long)(PAGE - 1);
	*out = (size_t)v;
	return 0;
}

static int add_sizes(struct opts *o, const char *list)
{
	char buf[512];
	char *save = NULL, *tok;

	if (strlen(list) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, list);
	for (tok = strtok_r(buf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		size_t sz;

		if (!*tok)
			continue;
		if (parse_size(tok, &sz) || o->nsizes >= MAX_SIZES)
			return -EINVAL;
		o->sizes[o->nsizes++] = sz;
	}
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: hetmm bench [--quick] [--json] [--sizes 1M,16M,256M,1G]\n"
		"                   [--reps N] [--samples N] [--plot FILE.svg]\n"
		"  --quick     sizes 1M,16M,64M and 1000 latency samples (a few seconds)\n"
		"  --json      print one JSON object on stdout (progress on stderr)\n"
		"  --sizes     list of sizes (K/M/G suffixes), commas or separate args\n"
		"  --reps      repetitions per figure, median reported (default 5)\n"
		"  --samples   fault-latency samples per repetition\n"
		"  --plot      also write throughput against size as an SVG\n"
		"  default sizes 1M,4M,16M,64M,256M,1G; up to 4G via --sizes (a size\n"
		"  is skipped, with a message, when memory is short)\n");
}

/* ------------------------------------------------------------------------
 * Output
 */


struct row {
	const char *name;
	size_t size;
	double hetmm_ns, base_ns;
	double ratio;             /* median of per-round base / hetmm */
	const char *base_kind;
};

static void json_row(FILE *f, const struct row *r, int *first,
		     const struct size_result *sr)
{
	double hg = gbps(r->size, r->hetmm_ns), bg = gbps(r->size, r->base_ns);

	fprintf(f, "%s\n    {\"name\": ", *first ? "" : ",");
	*first = 0;
	json_str(f, r->name);
	fprintf(f, ", \"size\": %zu, \"hetmm_gbps\": ", r->size);
	json_num(f, hg, 4);
	fputs(", \"baseline_gbps\": ", f);
	json_num(f, bg, 4);
	fputs(", \"ratio\": ", f);
	json_num(f, r->ratio, 4);
	fputs(", \"baseline\": ", f);
	json_str(f, r->base_kind ? r->base_kind : "n/a");
	fputs(", \"hetmm_us_per_page\": ", f);
	json_num(f, us_per_page(r->size, r->hetmm_ns), 4);
	fputs(", \"baseline_us_per_page\": ", f);
	json_num(f, us_per_page(r->size, r->base_ns), 4);
	if (!strcmp(r->name, "migrate_to_system")) {
		fputs(", \"raw_copy_2m_gbps\": ", f);
		json_num(f, gbps(r->size, sr->raw_copy2m_ns), 4);
		fputs(", \"raw_copy_whole_gbps\": ", f);
		json_num(f, gbps(r->size, sr->raw_copyall_ns), 4);
		fputs(", \"raw_move_2m_gbps\": ", f);
		json_num(f, gbps(r->size, sr->raw_move2m_ns), 4);
		fputs(", \"raw_move_whole_gbps\": ", f);
		json_num(f, gbps(r->size, sr->raw_moveall_ns), 4);
	}
	if (!strcmp(r->name, "fault_seq")) {
		fputs(", \"hetmm_faults\": ", f);
		json_num(f, sr->faults_per_rep, 1);
		fputs(", \"hetmm_pages_per_fault\": ", f);
		json_num(f, sr->fault_pages_per_rep / sr->faults_per_rep, 2);
		fputs(", \"raw_fault_seq_copy_2m_gbps\": ", f);
		json_num(f, gbps(r->size, sr->raw_fault_seq_ns), 4);
		fputs(", \"raw_fault_seq_move_2m_gbps\": ", f);
		json_num(f, gbps(r->size, sr->raw_fault_seq_move_ns), 4);
		fputs(", \"hetmm_memcpy_out_gbps\": ", f);
		json_num(f, gbps(r->size, sr->memcpy_out_ns), 4);
		fputs(", \"hetmm_memcpy_out_faults\": ", f);
		json_num(f, sr->memcpy_out_faults, 1);
	}
	fputc('}', f);
}

/* The headline rows: medians from the paired rounds, and the median of
 * the per-round ratios (bench_paired). */
static int make_rows(const struct size_result *sr, struct row rows[3])
{
	rows[0] = (struct row){ "migrate_to_device", sr->size, sr->to_dev_ns,
				sr->pair_memcpy_ns, sr->ratio_to_dev,
				sr->memcpy_kind };
	rows[1] = (struct row){ "migrate_to_system", sr->size, sr->to_sys_ns,
				sr->pair_raw_ns, sr->ratio_to_sys,
				sr->raw_best_kind };
	rows[2] = (struct row){ "fault_seq", sr->size, sr->fault_seq_ns,
				sr->pair_raw_ns, sr->ratio_fault_seq,
				sr->raw_best_kind };
	return 3;
}

/* The latency phases' keys in the JSON: prefixes of their figures,
 * suffixes of hetmm's ratios to them. */
static const char *lat_key[NLAT] = { "", "raw_", "raw_cold_", "raw_floor_" };
static const char *lat_suffix[NLAT] = { "", "", "_cold", "_floor" };

/* hetmm's ratio to each baseline phase, as name + the phase's suffix */
static void json_lat_ratios(FILE *f, const struct lat_result *lr,
			    const char *name)
{
	for (int ph = LAT_RAW; ph < NLAT; ph++) {
		fprintf(f, ", \"%s%s\": ", name, lat_suffix[ph]);
		json_num(f, lat_ratio(lr, (enum lat_phase)ph), 4);
	}
}

static void json_lat(FILE *f, const struct lat_result *lr, int head)
{
	for (int ph = 0; ph < NLAT; ph++) {
		const struct lat_stat *st = &lr->st[ph];

		fprintf(f, "%s\"%smedian\": ", ph ? ", " : "{", lat_key[ph]);
		json_num(f, st->med, 0);
		fprintf(f, ", \"%sp99\": ", lat_key[ph]);
		json_num(f, st->p99, 0);
		fprintf(f, ", \"%smean\": ", lat_key[ph]);
		json_num(f, st->mean, 0);
		fprintf(f, ", \"%ssamples\": %d", lat_key[ph], st->n);
	}
	json_lat_ratios(f, lr, "ratio");
	fputs(", \"placement\": ", f);
	json_str(f, place_name[lr->place]);
	if (head)
		fputs(", \"placement_rule\": \"headline = worse ratio of "
		      "same_cpu and cross_cpu\"", f);
	fprintf(f, ", \"region\": %zu, \"hetmm_faults\": %" PRIu64
		", \"hetmm_fault_pages\": %" PRIu64 "}", lr->region,
		lr->hetmm_faults, lr->hetmm_fault_pages);
}

/*
 * Issue 6's targets, as ratios in one run at the largest size: baselines
 * are batched UFFDIO_COPY (the better of 2 MiB per ioctl and the whole
 * range in one) for the migrate-back and fault-back rows.
 */
struct i6 {
	const char *name;
	double value;
	const char *target;       /* as text */
	double bound;
	int upper;                /* value must be <= bound, else >= */
};

static int issue6_ratios(const struct size_result *sr,
			 const struct lat_result *lat, int head, int meta,
			 struct i6 out[8])
{
	double copy = fmin(sr->raw_copy2m_ns, sr->raw_copyall_ns);
	int n = 0;

	if (isnan(sr->raw_copy2m_ns))
		copy = sr->raw_copyall_ns;
	else if (isnan(sr->raw_copyall_ns))
		copy = sr->raw_copy2m_ns;
	out[n++] = (struct i6){ "migrate_to_device_vs_memcpy",
				sr->ratio_to_dev, ">= 0.9", 0.9, 0 };
	out[n++] = (struct i6){ "migrate_to_system_vs_copy",
				copy / sr->to_sys_ns, ">= 1.0", 1.0, 0 };
	out[n++] = (struct i6){ "fault_seq_vs_copy",
				copy / sr->fault_seq_ns, ">= 0.8", 0.8, 0 };
	out[n++] = (struct i6){ "fault_latency_random_vs_raw",
				lat_ratio(&lat[head], LAT_RAW), "<= 1.1",
				1.1, 1 };
	out[n++] = (struct i6){ "pin_fast_ns_per_page", g_pin.pin_fast_ns,
				"<= 50", 50, 1 };
	out[n++] = (struct i6){ "metadata_bytes_per_page", meta, "<= 16", 16,
				1 };
	return n;
}

static int i6_met(const struct i6 *r)
{
	if (isnan(r->value))
		return 0;
	return r->upper ? r->value <= r->bound : r->value >= r->bound;
}

static void print_json(const struct opts *o, const struct size_result *res,
		       const struct lat_result *lat, int head, int meta,
		       const char *release, const struct extra *x)
{
	struct i6 i6[8];
	int n6;
	const struct lat_result *lr = &lat[head];
	FILE *f = stdout;
	struct row rows[3], last[3];
	int first = 1;

	fputs("{\n  \"sizes\": [", f);
	for (int i = 0; i < o->nsizes; i++)
		fprintf(f, "%s%zu", i ? ", " : "", o->sizes[i]);
	fputs("],\n  \"results\": [", f);
	for (int i = 0; i < o->nsizes; i++) {
		make_rows(&res[i], rows);
		for (int k = 0; k < 3; k++)
			json_row(f, &rows[k], &first, &res[i]);
	}
	fputs("\n  ],\n", f);
	make_rows(&res[o->nsizes - 1], last);
	fputs("  \"ratios_basis\": \"largest size measured; each the median "
	      "of per-round ratios, hetmm and its baseline timed back to back "
	      "in alternating order\",\n", f);
	fprintf(f, "  \"ratios_size\": %zu,\n", res[o->nsizes - 1].size);
	fputs("  \"ratios\": {\"migrate_to_device_vs_memcpy\": ", f);
	json_num(f, last[0].ratio, 4);
	fputs(", \"migrate_to_system_vs_raw\": ", f);
	json_num(f, last[1].ratio, 4);
	fputs(", \"fault_seq_vs_raw\": ", f);
	json_num(f, last[2].ratio, 4);
	json_lat_ratios(f, lr, "fault_latency_vs_raw");
	fputs("},\n  \"fault_latency_ns\": ", f);
	json_lat(f, lr, 1);
	for (int p = 0; p < NPLACES; p++) {
		if (lat[p].st[LAT_HETMM].n == 0 && lat[p].st[LAT_RAW].n == 0)
			continue;
		fprintf(f, ",\n  \"fault_latency_ns_%s\": ", place_name[p]);
		json_lat(f, &lat[p], 0);
	}
	n6 = issue6_ratios(&res[o->nsizes - 1], lat, head, meta, i6);
	fputs(",\n  \"ratios_issue6\": {", f);
	for (int i = 0; i < n6; i++) {
		fprintf(f, "%s\"%s\": ", i ? ", " : "", i6[i].name);
		json_num(f, i6[i].value, 4);
	}
	fputs("},\n  \"ratios_issue6_targets\": {", f);
	for (int i = 0; i < n6; i++)
		fprintf(f, "%s\"%s\": \"%s\"", i ? ", " : "", i6[i].name,
			i6[i].target);
	fputs("},\n  \"ratios_issue6_met\": {", f);
	for (int i = 0; i < n6; i++)
		fprintf(f, "%s\"%s\": %s", i ? ", " : "", i6[i].name,
			i6_met(&i6[i]) ? "true" : "false");
	fputs("},\n  \"ratios_issue6_basis\": \"largest size measured; "
	      "migrate back and fault-back against batched UFFDIO_COPY (the "
	      "better of 2 MiB per ioctl and the whole range per ioctl); "
	      "latency is the headline placement\"", f);
	pin_print_json(f, &g_pin);
	evict_print_json(f, &g_evict);
	mirror_print_json(f, x->mirror, o->nsizes);
	fork_print_json(f, x->fork, o->nsizes);
	scale_print_json(f, x->scale, o->nsizes);
	ablate_print_json(f, &x->ablate);
	fprintf(f, ",\n  \"metadata_bytes_per_page\": %d", meta);
	fprintf(f, ",\n  \"reps\": %d", o->reps);
	fputs(",\n  \"kernel\": ", f);
	json_str(f, release);
	fputs("\n}\n", f);
	fflush(f);
}

static void print_text(const struct opts *o, const struct size_result *res,
		       const struct lat_result *lat, int head, int meta,
		       const char *release, const struct extra *x)
{
	struct i6 i6[8];
	int n6;
	const struct lat_result *lr = &lat[head];
	struct row rows[3], last[3];
	char sb[32];

	printf("hetmm bench: kernel %s, median of %d repetitions (after one "
	       "warm-up), GB/s = 1e9 bytes/s;\nratio = median over rounds of "
	       "base time / hetmm time, each round timing hetmm and its "
	       "baseline back to back\n\n", release, o->reps);
	printf("%-18s %6s %11s %11s %7s %10s %10s  %s\n", "test", "size",
	       "hetmm GB/s", "base GB/s", "ratio", "hetmm us/p", "base us/p",
	       "baseline");
	for (int i = 0; i < o->nsizes; i++) {
		const struct size_result *sr = &res[i];

		make_rows(sr, rows);
		for (int k = 0; k < 3; k++) {
			const struct row *r = &rows[k];

			printf("%-18s %6s %11.3f %11.3f %7.3f %10.3f %10.3f  %s\n",
			       r->name, fmt_size(r->size, sb, sizeof(sb)),
			       gbps(r->size, r->hetmm_ns),
			       gbps(r->size, r->base_ns), r->ratio,
			       us_per_page(r->size, r->hetmm_ns),
			       us_per_page(r->size, r->base_ns),
			       r->base_kind ? r->base_kind : "n/a");
		}
		printf("  %6s  raw batched GB/s: COPY 2M %.3f, COPY whole %.3f, "
		       "MOVE 2M %.3f, MOVE whole %.3f\n",
		       fmt_size(sr->size, sb, sizeof(sb)),
		       gbps(sr->size, sr->raw_copy2m_ns),
		       gbps(sr->size, sr->raw_copyall_ns),
		       gbps(sr->size, sr->raw_move2m_ns),
		       gbps(sr->size, sr->raw_moveall_ns));
		printf("  %6s  fault-driven seq GB/s: hetmm %.3f (%.0f faults, "
		       "%.1f pages/fault); raw handler, 2 MiB per fault: "
		       "COPY %.3f, MOVE %.3f\n",
		       fmt_size(sr->size, sb, sizeof(sb)),
		       gbps(sr->size, sr->fault_seq_ns), sr->faults_per_rep,
		       sr->fault_pages_per_rep / sr->faults_per_rep,
		       gbps(sr->size, sr->raw_fault_seq_ns),
		       gbps(sr->size, sr->raw_fault_seq_move_ns));
		if (!isnan(sr->memcpy_out_ns))
			printf("  %6s  memcpy() out of a device-resident buffer "
			       "(page-aligned dst): %.3f GB/s, %.0f faults\n",
			       fmt_size(sr->size, sb, sizeof(sb)),
			       gbps(sr->size, sr->memcpy_out_ns),
			       sr->memcpy_out_faults);
	}
	pin_print_text(&g_pin);
	evict_print_text(&g_evict);
	mirror_print_text(x->mirror, o->nsizes);
	fork_print_text(x->fork, o->nsizes);
	scale_print_text(x->scale, o->nsizes);
	ablate_print_text(&x->ablate);
	printf("\nsingle-page fault latency (%d random pages of a %s buffer "
	       "per placement, one touch each, clock_gettime around it):\n",
	       lr->st[LAT_HETMM].n, fmt_size(lr->region, sb, sizeof(sb)));
	printf("  %-10s %10s %10s %10s %10s %7s %10s %7s %10s %7s\n",
	       "handler", "hetmm med", "p99", "raw med", "p99", "ratio",
	       "cold med", "ratio", "floor med", "ratio");
	for (int p = 0; p < NPLACES; p++) {
		const struct lat_result *l = &lat[p];
		const struct lat_stat *st = l->st;

		if (st[LAT_HETMM].n == 0 && st[LAT_RAW].n == 0)
			continue;
		printf("  %-10s %8.0fns %8.0fns %8.0fns %8.0fns %7.3f "
		       "%8.0fns %7.3f %8.0fns %7.3f%s\n", place_name[p],
		       st[LAT_HETMM].med, st[LAT_HETMM].p99, st[LAT_RAW].med,
		       st[LAT_RAW].p99, lat_ratio(l, LAT_RAW), st[LAT_COLD].med,
		       lat_ratio(l, LAT_COLD), st[LAT_FLOOR].med,
		       lat_ratio(l, LAT_FLOOR), p == head ? "  <- headline" : "");
	}
	printf("  (ratio = hetmm median / that median, lower is better; raw "
	       "copies one hot page,\n   cold = raw copying the same bytes "
	       "from a buffer as cold as the device's memory,\n   floor = cold "
	       "finding them by a cold entry of a page-indexed table first;\n"
	       "   headline = the worse of same_cpu and cross_cpu; hetmm took "
	       "%" PRIu64 " faults for %" PRIu64 " pages there; means in "
	       "--json)\n", lr->hetmm_faults, lr->hetmm_fault_pages);
	printf("\nmetadata per device page: %d bytes\n", meta);

	make_rows(&res[o->nsizes - 1], last);
	printf("\nratios at the largest size measured (%s):\n",
	       fmt_size(res[o->nsizes - 1].size, sb, sizeof(sb)));
	printf("  migrate_to_device_vs_memcpy  %.3f\n", last[0].ratio);
	printf("  migrate_to_system_vs_raw     %.3f\n", last[1].ratio);
	printf("  fault_seq_vs_raw             %.3f\n", last[2].ratio);
	printf("  fault_latency_vs_raw         %.3f\n", lat_ratio(lr, LAT_RAW));
	printf("  fault_latency_vs_raw_cold    %.3f\n", lat_ratio(lr, LAT_COLD));
	printf("  fault_latency_vs_raw_floor   %.3f\n", lat_ratio(lr, LAT_FLOOR));
	n6 = issue6_ratios(&res[o->nsizes - 1], lat, head, meta, i6);
	printf("\nissue 6 targets (same run, largest size; migrate back and "
	       "fault-back vs batched UFFDIO_COPY):\n");
	for (int i = 0; i < n6; i++)
		printf("  %-28s %9.3f  target %-7s %s\n", i6[i].name,
		       i6[i].value, i6[i].target,
		       i6_met(&i6[i]) ? "met" : "NOT met");
	fflush(stdout);
}

/* ------------------------------------------------------------------------
 * Plot
 */

static void series(struct plot_panel *p, const char *name, int hetmm)
{
	struct plot_series *s = &p->s[p->nseries++];

	s->name = name;
	s->hetmm = hetmm;
	s->n = 0;
}

static void point(struct plot_panel *p, int k, size_t size, double ns)
{
	struct plot_series *s = &p->s[k];

	s->x[s->n] = (double)size;
	s->y[s->n] = gbps(size, ns);
	s->n++;
}

static int write_plot(const char *path, const struct opts *o,
		      const struct size_result *res, const struct extra *x,
		      const char *release)
{
	struct plot_panel *p = calloc(6, sizeof(*p));
	char title[160];
	int rc;

	if (!p)
		return -ENOMEM;
	p[0].title = "migrate to device";
	series(&p[0], "hetmm", 1);
	series(&p[0], "memcpy", 0);
	p[1].title = "explicit migrate back";
	series(&p[1], "hetmm", 1);
	series(&p[1], "UFFDIO_COPY 2 MiB/ioctl", 0);
	series(&p[1], "UFFDIO_COPY whole range", 0);
	series(&p[1], "UFFDIO_MOVE 2 MiB/ioctl", 0);
	series(&p[1], "UFFDIO_MOVE whole range", 0);
	p[2].title = "sequential CPU fault-back";
	series(&p[2], "hetmm", 1);
	series(&p[2], "UFFDIO_COPY 2 MiB/ioctl (no faults)", 0);
	series(&p[2], "raw handler, COPY 2 MiB/fault", 0);
	series(&p[2], "raw handler, MOVE 2 MiB/fault", 0);
	p[3].title = "2 threads, disjoint halves";
	series(&p[3], "hetmm to device", 1);
	series(&p[3], "memcpy", 0);
	series(&p[3], "hetmm migrate back", 1);
	series(&p[3], "hetmm fault-back", 1);
	series(&p[3], "UFFDIO_COPY 2 MiB/ioctl", 0);
	p[4].title = "device mirror (hetmm_mirror_read/write)";
	series(&p[4], "hetmm read", 1);
	series(&p[4], "hetmm write", 1);
	series(&p[4], "hetmm read, device-resident", 1);
	series(&p[4], "memcpy", 0);
	series(&p[4], "process_vm_readv", 0);
	series(&p[4], "process_vm_writev", 0);
	p[5].title = "fork + child exit (bytes / time)";
	series(&p[5], "hetmm, pages on the device", 1);
	series(&p[5], "pages in system RAM", 0);
	for (int i = 0; i < o->nsizes; i++) {
		const struct size_result *r = &res[i];
		const struct scale_result *sc = &x->scale[i];
		const struct mirror_result *m = &x->mirror[i];
		size_t z = r->size;

		point(&p[0], 0, z, r->to_dev_ns);
		point(&p[0], 1, z, r->memcpy_ns);
		point(&p[1], 0, z, r->to_sys_ns);
		point(&p[1], 1, z, r->raw_copy2m_ns);
		point(&p[1], 2, z, r->raw_copyall_ns);
		point(&p[1], 3, z, r->raw_move2m_ns);
		point(&p[1], 4, z, r->raw_moveall_ns);
		point(&p[2], 0, z, r->fault_seq_ns);
		point(&p[2], 1, z, r->raw_copy2m_ns);
		point(&p[2], 2, z, r->raw_fault_seq_ns);
		point(&p[2], 3, z, r->raw_fault_seq_move_ns);
		point(&p[3], 0, z, sc->hetmm_ns[SCALE_TO_DEVICE][1]);
		point(&p[3], 1, z, sc->base_ns[SCALE_TO_DEVICE][1]);
		point(&p[3], 2, z, sc->hetmm_ns[SCALE_TO_SYSTEM][1]);
		point(&p[3], 3, z, sc->hetmm_ns[SCALE_FAULT_SEQ][1]);
		point(&p[3], 4, z, sc->base_ns[SCALE_TO_SYSTEM][1]);
		point(&p[4], 0, z, m->read_ns);
		point(&p[4], 1, z, m->write_ns);
		point(&p[4], 2, z, m->read_dev_ns);
		point(&p[4], 3, z, m->memcpy_ns);
		point(&p[4], 4, z, m->vm_readv_ns);
		point(&p[4], 5, z, m->vm_writev_ns);
		point(&p[5], 0, z, x->fork[i].dev_ns);
		point(&p[5], 1, z, x->fork[i].sys_ns);
	}
	snprintf(title, sizeof(title), "hetmm bench: throughput against size "
		 "(GB/s, median of %d), kernel %s", o->reps, release);
	rc = plot_svg(path, title, p, 6);
	free(p);
	return rc;
}

/* ------------------------------------------------------------------------
 * Entry point
 */

/*
 * A size needs about three times its bytes at once (source, destination
 * and staging buffers of the raw baselines; buffer, device and copy for
 * hetmm).  Sizes the machine can't hold now are dropped with a message.
 */
static void drop_sizes_short_of_memory(struct opts *o)
{
	size_t avail = mem_available();
	int n = 0;

	for (int i = 0; i < o->nsizes; i++) {
		size_t need = 3 * o->sizes[i] + 256 * MIB;
		char sb[32], ab[32];

		if (avail && need > avail) {
			warn_("skipping size %s: needs about %s, %s available",
			      fmt_size(o->sizes[i], sb, sizeof(sb)),
			      fmt_size(need & ~(MIB - 1), ab, sizeof(ab)),
			      fmt_size(avail & ~(MIB - 1), ab + 16, 16));
			continue;
		}
		o->sizes[n++] = o->sizes[i];
	}
	o->nsizes = n;
}

static int run_extra(struct hetmm_ctx *ctx, int raw_fd, int has_move,
		     const struct opts *o, struct extra *x)
{
	int failed = 0;
	char sb[32];

	for (int i = 0; i < o->nsizes; i++) {
		size_t size = o->sizes[i];
		uint64_t t0 = now_ns();

		note("bench %s: mirror", fmt_size(size, sb, sizeof(sb)));
		if (bench_mirror(ctx, size, o->reps, &x->mirror[i])) {
			warn_("mirror %s: %s", sb,
			      strerror(-x->mirror[i].err));
			failed = 1;
		}
		note(", fork");
		if (bench_fork(ctx, size, o->reps, &x->fork[i])) {
			warn_("fork %s: %s", sb, strerror(-x->fork[i].err));
			failed = 1;
		}
		note(", 1 vs 2 threads");
		if (bench_scale(ctx, raw_fd, has_move, size, o->reps,
				&x->scale[i])) {
			warn_("scaling %s: %s", sb,
			      strerror(-x->scale[i].err));
			failed = 1;
		}
		note(" (%.1f s)\n", (double)(now_ns() - t0) / 1e9);
	}
	{
		uint64_t t0 = now_ns();
		size_t asz = o->quick ? 16 * MIB : 64 * MIB;

		note("bench optimisations off vs on, %s",
		     fmt_size(asz, sb, sizeof(sb)));
		if (bench_ablate(ctx, asz, o->reps, &x->ablate))
			failed = 1;
		note(" (%.1f s)\n", (double)(now_ns() - t0) / 1e9);
	}
	return failed;
}

int hetmm_bench_main(int argc, char **argv)
{
	struct opts o;
	struct size_result *res = NULL;
	struct lat_result lat[NPLACES];
	struct placement pl;
	int head = PLACE_UNPINNED;
	struct utsname kernel;
	struct hetmm_ctx *ctx = NULL;
	struct extra *x = NULL;
	uint64_t raw_features = 0;
	int raw_fd = -1, failed = 0, rc, meta;
	uint64_t tstart = now_ns();

	memset(&o, 0, sizeof(o));
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--quick")) {
			o.quick = 1;
		} else if (!strcmp(a, "--json")) {
			o.json = 1;
		} else if (!strcmp(a, "--sizes") ||
			   !strncmp(a, "--sizes=", 8)) {
			const char *list = a[7] == '=' ? a + 8 : NULL;

			if (!list) {
				if (i + 1 >= argc) {
					usage(stderr);
					return 2;
				}
				list = argv[++i];
			}
			if (add_sizes(&o, list)) {
				warn_("bad size list '%s'", list);
				return 2;
			}
			/* further bare sizes: --sizes 1M 16M */
			while (i + 1 < argc && argv[i + 1][0] != '-') {
				if (add_sizes(&o, argv[++i])) {
					warn_("bad size '%s'", argv[i]);
					return 2;
				}
			}
		} else if ((!strcmp(a, "--reps") || !strcmp(a, "--samples")) &&
			   i + 1 < argc) {
			int v = atoi(argv[++i]);

			if (v < 1) {
				warn_("bad value for %s", a);
				return 2;
			}
			if (a[2] == 'r')
				o.reps = v > 50 ? 50 : v;
			else
				o.samples = v;
		} else if (!strcmp(a, "--plot") || !strncmp(a, "--plot=", 7)) {
			if (a[6] == '=') {
				o.plot = a + 7;
			} else if (i + 1 < argc) {
				o.plot = argv[++i];
			} else {
				usage(stderr);
				return 2;
			}
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else {
			warn_("unknown option '%s'", a);
			usage(stderr);
			return 2;
		}
	}
	if (!o.nsizes) {
		if (o.quick)
			add_sizes(&o, "1M,16M,64M");
		else
			add_sizes(&o, "1M,4M,16M,64M,256M,1G");
	}
	if (!o.reps)
		o.reps = 5;
	if (!o.samples)
		o.samples = o.quick ? 1000 : 2000;
	drop_sizes_short_of_memory(&o);
	if (!o.nsizes) {
		warn_("no size fits in the memory available");
		return 1;
	}

	memset(&kernel, 0, sizeof(kernel));
	if (uname(&kernel))
		strcpy(kernel.release, "?");

	res = calloc((size_t)o.nsizes, sizeof(*res));
	if (!res)
		return 1;

	placement_begin(&pl);
	rc = hetmm_ctx_create(&ctx, NULL);
	if (rc) {
		warn_("hetmm_ctx_create: %s", strerror(-rc));
		free(res);
		return 1;
	}
	placement_find_hetmm(&pl);
	raw_fd = uffd_open_features(UFFD_FEATURE_MOVE, 1, &raw_features);
	if (raw_fd < 0) {
		warn_("raw userfaultfd: %s", strerror(-raw_fd));
		hetmm_ctx_destroy(ctx);
		free(res);
		return 1;
	}

	for (int i = 0; i < o.nsizes; i++) {
		struct size_result *sr = &res[i];

		bench_throughput(ctx, raw_fd, !!(raw_features & UFFD_FEATURE_MOVE),
				 o.sizes[i], o.reps, sr);
		if (sr->err)
			failed = 1;
	}

	{
		uint64_t t0 = now_ns();
		size_t esz = o.quick ? 16 * MIB : 64 * MIB;

		note("bench pin fast path");
		if ((rc = bench_pin(ctx, o.reps, &g_pin))) {
			warn_("pin: %s", strerror(-rc));
			failed = 1;
		}
		note(", eviction");
		if ((rc = bench_evict(ctx, esz, o.reps, &g_evict))) {
			warn_("eviction: %s", strerror(-rc));
			failed = 1;
		}
		note(" (%.1f s)\n", (double)(now_ns() - t0) / 1e9);
	}
	x = calloc(1, sizeof(*x));
	if (!x || run_extra(ctx, raw_fd, !!(raw_features & UFFD_FEATURE_MOVE),
			    &o, x))
		failed = 1;
	memset(lat, 0, sizeof(lat));
	for (int p = 0; p < NPLACES; p++) {
		uint64_t t0 = now_ns();

		for (int ph = 0; ph < NLAT; ph++)
			lat[p].st[ph].med = NAN;
		if (!placement_possible(&pl, (enum place)p))
			continue;
		note("bench latency, %s", place_name[p]);
		if (bench_latency(ctx, o.samples, o.reps, &pl, (enum place)p,
				  &lat[p]))
			failed = 1;
		note(" (%.1f s)\n", (double)(now_ns() - t0) / 1e9);
	}
	head = lat_headline(lat);
	meta = hetmm_page_metadata_size();

	close(raw_fd);
	rc = hetmm_ctx_destroy(ctx);
	if (rc) {
		warn_("hetmm_ctx_destroy: %s", strerror(-rc));
		failed = 1;
	}
	note("bench total %.1f s\n", (double)(now_ns() - tstart) / 1e9);

	if (!x) {
		free(res);
		return 1;
	}
	if (o.json)
		print_json(&o, res, lat, head, meta, kernel.release, x);
	else
		print_text(&o, res, lat, head, meta, kernel.release, x);
	if (o.plot) {
		rc = write_plot(o.plot, &o, res, x, kernel.release);
		if (rc) {
			warn_("--plot %s: %s", o.plot, strerror(-rc));
			failed = 1;
		} else {
			note("plot written to %s\n", o.plot);
		}
	}
	free(x);
	free(res);
	return failed ? 1 : 0;
}
