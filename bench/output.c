/* SPDX-License-Identifier: MIT */
/*
 * output.c - the report of `hetmm bench`: the throughput rows, the
 * sections, the fault latency per placement, the summary ratios at the
 * largest size measured and the targets, as text or as exactly one
 * JSON object on stdout; and --plot, throughput against size as SVG.
 */
#include "output.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * The throughput rows and the fault latency
 */

/* One row of the throughput table. */
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

/* ------------------------------------------------------------------------
 * The targets, and the whole report as JSON or as text
 */

/*
 * The targets, as ratios in one run at the largest size, each figure's
 * set here and nowhere else: baselines are batched UFFDIO_COPY (the
 * better of 2 MiB per ioctl and the whole range in one) for the
 * migrate-back and fault-back rows.
 */
struct target {
	const char *name;
	double value;
	const char *target;       /* as text */
	double bound;
	int upper;                /* value must be <= bound, else >= */
};

static int target_ratios(const struct report *rep, struct target out[8])
{
	const struct size_result *sr = &rep->size[rep->nsizes - 1];
	double copy = fmin(sr->raw_copy2m_ns, sr->raw_copyall_ns);
	int n = 0;

	if (isnan(sr->raw_copy2m_ns))
		copy = sr->raw_copyall_ns;
	else if (isnan(sr->raw_copyall_ns))
		copy = sr->raw_copy2m_ns;
	out[n++] = (struct target){ "migrate_to_device_vs_memcpy",
				sr->ratio_to_dev, ">= 0.9", 0.9, 0 };
	out[n++] = (struct target){ "migrate_to_system_vs_copy",
				copy / sr->to_sys_ns, ">= 1.0", 1.0, 0 };
	out[n++] = (struct target){ "fault_seq_vs_copy",
				copy / sr->fault_seq_ns, ">= 0.8", 0.8, 0 };
	out[n++] = (struct target){ "fault_latency_random_vs_raw",
				lat_ratio(&rep->lat[rep->head], LAT_RAW),
				"<= 1.1", 1.1, 1 };
	out[n++] = (struct target){ "pin_fast_ns_per_page", rep->pin.pin_fast_ns,
				"<= 50", 50, 1 };
	out[n++] = (struct target){ "metadata_bytes_per_page", rep->meta, "<= 16",
				16, 1 };
	return n;
}

static int target_met(const struct target *r)
{
	if (isnan(r->value))
		return 0;
	return r->upper ? r->value <= r->bound : r->value >= r->bound;
}

void report_print_json(const struct report *rep)
{
	const struct size_result *largest = &rep->size[rep->nsizes - 1];
	struct target tg[8];
	int ntg;
	const struct lat_result *lr = &rep->lat[rep->head];
	FILE *f = stdout;
	struct row rows[3], last[3];
	int first = 1;

	fputs("{\n  \"sizes\": [", f);
	for (int i = 0; i < rep->nsizes; i++)
		fprintf(f, "%s%zu", i ? ", " : "", rep->size[i].size);
	fputs("],\n  \"results\": [", f);
	for (int i = 0; i < rep->nsizes; i++) {
		make_rows(&rep->size[i], rows);
		for (int k = 0; k < 3; k++)
			json_row(f, &rows[k], &first, &rep->size[i]);
	}
	fputs("\n  ],\n", f);
	make_rows(largest, last);
	fputs("  \"ratios_basis\": \"largest size measured; each the median "
	      "of per-round ratios, hetmm and its baseline timed back to back "
	      "in alternating order\",\n", f);
	fprintf(f, "  \"ratios_size\": %zu,\n", largest->size);
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
		const struct lat_stat *st = rep->lat[p].st;

		if (st[LAT_HETMM].n == 0 && st[LAT_RAW].n == 0)
			continue;
		fprintf(f, ",\n  \"fault_latency_ns_%s\": ", place_name[p]);
		json_lat(f, &rep->lat[p], 0);
	}
	ntg = target_ratios(rep, tg);
	fputs(",\n  \"targets\": {", f);
	for (int i = 0; i < ntg; i++) {
		fprintf(f, "%s\"%s\": ", i ? ", " : "", tg[i].name);
		json_num(f, tg[i].value, 4);
	}
	fputs("},\n  \"targets_goal\": {", f);
	for (int i = 0; i < ntg; i++)
		fprintf(f, "%s\"%s\": \"%s\"", i ? ", " : "", tg[i].name,
			tg[i].target);
	fputs("},\n  \"targets_met\": {", f);
	for (int i = 0; i < ntg; i++)
		fprintf(f, "%s\"%s\": %s", i ? ", " : "", tg[i].name,
			target_met(&tg[i]) ? "true" : "false");
	fputs("},\n  \"targets_basis\": \"largest size measured; "
	      "migrate back and fault-back against batched UFFDIO_COPY (the "
	      "better of 2 MiB per ioctl and the whole range per ioctl); "
	      "latency is the headline placement\"", f);
	pin_print_json(f, &rep->pin);
	evict_print_json(f, &rep->evict);
	async_print_json(f, &rep->async);
	reuse_print_json(f, &rep->reuse);
	thp_print_json(f, &rep->thp);
	mirror_print_json(f, rep->mirror, rep->nsizes);
	fork_print_json(f, rep->fork, rep->nsizes);
	scale_print_json(f, rep->scale, rep->nsizes);
	ablate_print_json(f, &rep->ablate);
	fprintf(f, ",\n  \"metadata_bytes_per_page\": %d", rep->meta);
	fprintf(f, ",\n  \"reps\": %d", rep->reps);
	fputs(",\n  \"kernel\": ", f);
	json_str(f, rep->kernel);
	fputs("\n}\n", f);
	fflush(f);
}

static void print_latency_text(const struct report *rep)
{
	const struct lat_result *lr = &rep->lat[rep->head];
	char sb[32];

	printf("\nsingle-page fault latency (%d random pages of a %s buffer "
	       "per placement, one touch each, clock_gettime around it):\n",
	       lr->st[LAT_HETMM].n, fmt_size(lr->region, sb, sizeof(sb)));
	printf("  %-10s %10s %10s %10s %10s %7s %10s %7s %10s %7s\n",
	       "handler", "hetmm med", "p99", "raw med", "p99", "ratio",
	       "cold med", "ratio", "floor med", "ratio");
	for (int p = 0; p < NPLACES; p++) {
		const struct lat_result *l = &rep->lat[p];
		const struct lat_stat *st = l->st;

		if (st[LAT_HETMM].n == 0 && st[LAT_RAW].n == 0)
			continue;
		printf("  %-10s %8.0fns %8.0fns %8.0fns %8.0fns %7.3f "
		       "%8.0fns %7.3f %8.0fns %7.3f%s\n", place_name[p],
		       st[LAT_HETMM].med, st[LAT_HETMM].p99, st[LAT_RAW].med,
		       st[LAT_RAW].p99, lat_ratio(l, LAT_RAW), st[LAT_COLD].med,
		       lat_ratio(l, LAT_COLD), st[LAT_FLOOR].med,
		       lat_ratio(l, LAT_FLOOR),
		       p == (int)rep->head ? "  <- headline" : "");
	}
	printf("  (ratio = hetmm median / that median, lower is better; raw "
	       "copies one hot page,\n   cold = raw copying the same bytes "
	       "from a buffer as cold as the device's memory,\n   floor = cold "
	       "finding them by a cold entry of a page-indexed table first;\n"
	       "   headline = the worse of same_cpu and cross_cpu; hetmm took "
	       "%" PRIu64 " faults for %" PRIu64 " pages there; means in "
	       "--json)\n", lr->hetmm_faults, lr->hetmm_fault_pages);
}

void report_print_text(const struct report *rep)
{
	const struct size_result *largest = &rep->size[rep->nsizes - 1];
	struct target tg[8];
	int ntg;
	const struct lat_result *lr = &rep->lat[rep->head];
	struct row rows[3], last[3];
	char sb[32];

	printf("hetmm bench: kernel %s, median of %d repetitions (after one "
	       "warm-up), GB/s = 1e9 bytes/s;\nratio = median over rounds of "
	       "base time / hetmm time, each round timing hetmm and its "
	       "baseline back to back\n\n", rep->kernel, rep->reps);
	printf("%-18s %6s %11s %11s %7s %10s %10s  %s\n", "test", "size",
	       "hetmm GB/s", "base GB/s", "ratio", "hetmm us/p", "base us/p",
	       "baseline");
	for (int i = 0; i < rep->nsizes; i++) {
		const struct size_result *sr = &rep->size[i];

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
	pin_print_text(&rep->pin);
	evict_print_text(&rep->evict);
	async_print_text(&rep->async);
	reuse_print_text(&rep->reuse);
	thp_print_text(&rep->thp);
	mirror_print_text(rep->mirror, rep->nsizes);
	fork_print_text(rep->fork, rep->nsizes);
	scale_print_text(rep->scale, rep->nsizes);
	ablate_print_text(&rep->ablate);
	print_latency_text(rep);
	printf("\nmetadata per device page: %d bytes\n", rep->meta);

	make_rows(largest, last);
	printf("\nratios at the largest size measured (%s):\n",
	       fmt_size(largest->size, sb, sizeof(sb)));
	printf("  migrate_to_device_vs_memcpy  %.3f\n", last[0].ratio);
	printf("  migrate_to_system_vs_raw     %.3f\n", last[1].ratio);
	printf("  fault_seq_vs_raw             %.3f\n", last[2].ratio);
	printf("  fault_latency_vs_raw         %.3f\n", lat_ratio(lr, LAT_RAW));
	printf("  fault_latency_vs_raw_cold    %.3f\n", lat_ratio(lr, LAT_COLD));
	printf("  fault_latency_vs_raw_floor   %.3f\n", lat_ratio(lr, LAT_FLOOR));
	ntg = target_ratios(rep, tg);
	printf("\ntargets (same run, largest size; migrate back and "
	       "fault-back vs batched UFFDIO_COPY):\n");
	for (int i = 0; i < ntg; i++)
		printf("  %-28s %9.3f  target %-7s %s\n", tg[i].name,
		       tg[i].value, tg[i].target,
		       target_met(&tg[i]) ? "met" : "NOT met");
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

int report_write_plot(const struct report *rep, const char *path)
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
	for (int i = 0; i < rep->nsizes; i++) {
		const struct size_result *r = &rep->size[i];
		const struct scale_result *sc = &rep->scale[i];
		const struct mirror_result *m = &rep->mirror[i];
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
		point(&p[5], 0, z, rep->fork[i].dev_ns);
		point(&p[5], 1, z, rep->fork[i].sys_ns);
	}
	snprintf(title, sizeof(title), "hetmm bench: throughput against size "
		 "(GB/s, median of %d), kernel %s", rep->reps, rep->kernel);
	rc = plot_svg(path, title, p, 6);
	free(p);
	return rc;
}

void report_print_latency(const struct report *rep, int json)
{
	if (!json) {
		printf("hetmm bench --latency: kernel %s, median of %d "
		       "repetitions\n", rep->kernel, rep->reps);
		print_latency_text(rep);
		fflush(stdout);
		return;
	}
	fputs("{\n  \"fault_latency_ns\": ", stdout);
	json_lat(stdout, &rep->lat[rep->head], 1);
	for (int p = 0; p < NPLACES; p++) {
		const struct lat_stat *st = rep->lat[p].st;

		if (st[LAT_HETMM].n == 0 && st[LAT_RAW].n == 0)
			continue;
		printf(",\n  \"fault_latency_ns_%s\": ", place_name[p]);
		json_lat(stdout, &rep->lat[p], 0);
	}
	printf(",\n  \"reps\": %d,\n  \"kernel\": ", rep->reps);
	json_str(stdout, rep->kernel);
	fputs("\n}\n", stdout);
	fflush(stdout);
}
