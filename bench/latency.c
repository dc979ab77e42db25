/* SPDX-License-Identifier: MIT */
/*
 * latency.c - single-page fault latency.
 *
 * One touch each of random pages of a device-resident buffer,
 * clock_gettime() around each touch, vs a bare userfaultfd round trip (own
 * uffd, own handler thread doing a blocking read() then a one-page
 * UFFDIO_COPY from a prepared source page: raw_handler.c), timed the same
 * way.  For information, the same bare handler copying each page from the
 * same offset of a populated buffer of the region's size, as cold as the
 * device's memory (cold: the same bytes moved), and doing so after
 * reading the offset from a cold page-indexed table (floor: the least any
 * design with per-page state does on a fault), so the ratio to it is what
 * hetmm's own bookkeeping costs.
 *
 * Run three times: handlers unpinned, pinned to the toucher's CPU, and
 * pinned to another CPU (the placement changes the figure several times
 * over on a VM); the headline is the worse ratio of the two pinned runs,
 * since unpinned compares whatever placement the scheduler happened to
 * pick for each.
 */
#include "latency.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common.h"
#include "raw_handler.h"

/* The latency test's buffer, the same at every size measured. */
#define LAT_REGION (64 * MIB)

/* hetmm's median over phase ph's */
double lat_ratio(const struct lat_result *lr, enum lat_phase ph)
{
	return lr->st[LAT_HETMM].med / lr->st[ph].med;
}

/* ------------------------------------------------------------------------
 * Thread placement for the latency test
 *
 * A fault round trip wakes the handler thread and then the faulting one.
 * Whether the two share a CPU changes the figure several times over on a
 * virtual machine (a cross-CPU wake-up is an IPI to a halted vCPU), so the
 * test runs with the same, explicit placement for hetmm and for the raw
 * baseline: both handlers on the toucher's CPU, both on another CPU, and
 * unpinned.  hetmm's threads are the ones that appeared in
 * hetmm_ctx_create().
 */

const char *const place_name[NPLACES] = { "unpinned", "same_cpu",
					  "cross_cpu" };

static int list_tids(int *tids, int max)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	int n = 0;

	if (!d)
		return 0;
	while ((de = readdir(d)) && n < max) {
		int t = atoi(de->d_name);

		if (t > 0)
			tids[n++] = t;
	}
	closedir(d);
	return n;
}

void placement_begin(struct placement *pl)
{
	memset(pl, 0, sizeof(*pl));
	pl->n_tids_before = list_tids(pl->tids_before, MAX_TIDS);
}

void placement_find_hetmm(struct placement *pl)
{
	int now[MAX_TIDS], n = list_tids(now, MAX_TIDS);

	for (int i = 0; i < n; i++) {
		int old = 0;

		for (int j = 0; j < pl->n_tids_before; j++)
			old |= now[i] == pl->tids_before[j];
		if (!old && pl->n_hetmm_tids < MAX_TIDS)
			pl->hetmm_tids[pl->n_hetmm_tids++] = now[i];
	}
	pl->cpu_a = pl->cpu_b = -1;
	if (!sched_getaffinity(0, sizeof(pl->orig), &pl->orig)) {
		for (int c = 0; c < CPU_SETSIZE; c++) {
			if (!CPU_ISSET(c, &pl->orig))
				continue;
			if (pl->cpu_a < 0)
				pl->cpu_a = c;
			else if (pl->cpu_b < 0)
				pl->cpu_b = c;
		}
	}
}

int placement_possible(const struct placement *pl, enum place p)
{
	if (p != PLACE_UNPINNED && pl->cpu_a < 0)
		return 0;
	return !(p == PLACE_CROSS_CPU && pl->cpu_b < 0);
}

static void pin_tid(int tid, int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	(void)sched_setaffinity(tid, sizeof(set), &set);
}

static void placement_apply(struct placement *pl, enum place p, int raw_tid)
{
	int hcpu;

	if (p == PLACE_UNPINNED || pl->cpu_a < 0)
		return;
	hcpu = p == PLACE_SAME_CPU ? pl->cpu_a : pl->cpu_b;
	if (hcpu < 0)
		return;
	pin_tid(0, pl->cpu_a);
	if (raw_tid > 0)
		pin_tid(raw_tid, hcpu);
	for (int i = 0; i < pl->n_hetmm_tids; i++)
		pin_tid(pl->hetmm_tids[i], hcpu);
}

static void placement_restore(struct placement *pl)
{
	(void)sched_setaffinity(0, sizeof(pl->orig), &pl->orig);
	for (int i = 0; i < pl->n_hetmm_tids; i++)
		(void)sched_setaffinity(pl->hetmm_tids[i], sizeof(pl->orig),
					&pl->orig);
}

/* ------------------------------------------------------------------------
 * The test: the same random touches, phase by phase
 */

#define LAT_GROUP 4

/* Random pages for the latency test, one of each aligned group of
 * LAT_GROUP at most, in random order: the first npages / LAT_GROUP of
 * perm. */
static void lat_pages(uint32_t *perm, size_t npages, uint64_t *seed)
{
	size_t groups = npages / LAT_GROUP;

	for (size_t g = 0; g < groups; g++)
		perm[g] = (uint32_t)g;
	shuffle(perm, groups, seed);
	for (size_t g = 0; g < groups; g++)
		perm[g] = perm[g] * LAT_GROUP +
			  (uint32_t)(rng_next(seed) % LAT_GROUP);
}

/* Touch pages perm[0 .. warm + samples) of buf once each, each expected
 * to read 0x42; the timed touches after the first warm go to out. */
static int touch_pages(char *buf, const uint32_t *perm, int warm,
		       int samples, double *out, int *nout)
{
	int rc = 0;

	for (int i = 0; i < warm + samples; i++) {
		volatile unsigned char *p =
			(volatile unsigned char *)buf + (size_t)perm[i] * PAGE;
		uint64_t t0, t1;
		unsigned char v;

		t0 = now_ns();
		v = *p;
		t1 = now_ns();
		if (v != 0x42) {
			warn_("DATA MISMATCH in latency fault: 0x%02x", v);
			rc = -EIO;
		}
		if (i >= warm)
			out[(*nout)++] = (double)(t1 - t0);
	}
	return rc;
}

/* One raw phase of the latency test: random pages of a fresh region
 * registered with h, each touched once; the timed ones go to out. */
static int raw_touches(struct raw_handler *h, size_t region,
		       const uint32_t *perm, int warm, int samples,
		       double *out, int *nout)
{
	char *buf = map_anon(region, 0);
	int rc;

	if (!buf)
		return -ENOMEM;
	rc = uffd_register_missing(h->fd, buf, region, NULL);
	if (!rc) {
		atomic_store(&h->base, (uintptr_t)buf);
		atomic_store(&h->len, region);
		rc = touch_pages(buf, perm, warm, samples, out, nout);
	}
	munmap(buf, region);
	return rc;
}

static double mean_of(const double *v, int n)
{
	double sum = 0;

	for (int i = 0; i < n; i++)
		sum += v[i];
	return n ? sum / n : NAN;
}

static struct lat_stat lat_stat_of(double *v, int n)
{
	struct lat_stat st = { .n = n, .mean = mean_of(v, n) };

	st.med = median(v, n);
	st.p99 = percentile_sorted(v, n, 99.0);
	return st;
}

/* The raw handler's source for raw phase ph. */
static void raw_source(struct raw_handler *h, enum lat_phase ph,
		       const char *hot, const char *cold,
		       const uint64_t *entries)
{
	atomic_store(&h->src, (uintptr_t)(ph == LAT_RAW ? hot : cold));
	atomic_store(&h->src_single, ph == LAT_RAW);
	atomic_store(&h->entries, ph == LAT_FLOOR ? (uintptr_t)entries : 0);
}

int bench_latency(struct hetmm_ctx *ctx, int samples, int reps,
		  struct placement *pl, enum place place,
		  struct lat_result *lr)
{
	size_t region = LAT_REGION, npages = region / PAGE;
	int warm = 16;
	double *t[NLAT] = { NULL };
	int n[NLAT] = { 0 };
	uint32_t *perm = NULL;
	uint64_t *entries = NULL;
	struct hetmm_emu *emu = NULL;
	struct hetmm_pagemap *pg;
	struct raw_handler h;
	char *srcpage = NULL, *cold = NULL;
	int rc = 0, hrc = 0, hstarted = 0;
	uint64_t seed = 0x9e3779b97f4a7c15ull;

	memset(lr, 0, sizeof(*lr));
	lr->region = region;
	lr->place = place;
	/* One page of each aligned group of four at most, so that no
	 * fault-around (streams, density) finds a neighbour asked for: this
	 * measures single-page faults. */
	if ((size_t)samples + (size_t)warm > npages / LAT_GROUP)
		samples = (int)(npages / LAT_GROUP - (size_t)warm);
	for (int ph = 0; ph < NLAT; ph++)
		if (!(t[ph] = calloc((size_t)samples * (size_t)reps,
				     sizeof(double))))
			rc = -ENOMEM;
	perm = calloc(npages, sizeof(*perm));
	entries = calloc(npages, sizeof(*entries));
	srcpage = map_anon(PAGE, 0);
	cold = map_anon(region, 0);
	if (rc || !perm || !entries || !srcpage || !cold) {
		rc = -ENOMEM;
		goto out;
	}
	populate(srcpage, PAGE, 0x42);
	/* Written once: each repetition writes a fresh region-sized
	 * buffer for hetmm before these are read again, as cold as the
	 * frames hetmm copies from and the entries it finds them by. */
	populate(cold, region, 0x42);
	for (size_t i = 0; i < npages; i++)
		entries[i] = i * PAGE;
	hrc = hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_PRIVATE, npages, &emu);
	if (hrc) {
		warn_("latency: hetmm_emu_create: %s", strerror(-hrc));
		emu = NULL;
	} else {
		hrc = hetmm_emu_pagemap(emu, &pg);
		if (hrc)
			warn_("latency: hetmm_emu_pagemap: %s", strerror(-hrc));
	}
	rc = raw_handler_start(&h, srcpage, 1, PAGE, 0);
	if (rc) {
		warn_("latency: raw uffd handler: %s", strerror(-rc));
		goto out;
	}
	hstarted = 1;
	placement_apply(pl, place, atomic_load(&h.tid));

	for (int r = 0; r < reps; r++) {
		struct hetmm_migrate_report rd;
		struct hetmm_stats s0, s1;
		char *buf;

		lat_pages(perm, npages, &seed);

		/* hetmm: random pages of a device-resident buffer */
		if (!hrc) {
			buf = map_anon(region, 0);
			if (!buf) {
				rc = -ENOMEM;
				goto out;
			}
			populate(buf, region, 0x42);
			memset(&rd, 0, sizeof(rd));
			hrc = hetmm_migrate_to_device(pg, buf, region, &rd);
			if (hrc < 0) {
				warn_("latency: hetmm_migrate_to_device: %s",
				      strerror(-hrc));
				munmap(buf, region);
				goto raw;
			}
			hrc = 0;
			if (rd.moved != npages)
				warn_("latency: only %" PRIu64 " of %zu pages on "
				      "the device", rd.moved, npages);
			hetmm_ctx_get_stats(ctx, &s0);
			hrc = touch_pages(buf, perm, warm, samples,
					  t[LAT_HETMM], &n[LAT_HETMM]);
			hetmm_ctx_get_stats(ctx, &s1);
			lr->hetmm_faults += s1.faults - s0.faults;
			lr->hetmm_fault_pages += s1.fault_pages - s0.fault_pages;
			/* Bring the rest back before unmapping (untimed). */
			memset(&rd, 0, sizeof(rd));
			(void)hetmm_migrate_to_system(ctx, buf, region, &rd);
			munmap(buf, region);
		}
raw:
		/* raw: random pages of a fresh registered region each */
		for (int ph = LAT_RAW; ph < NLAT; ph++) {
			lat_pages(perm, npages, &seed);
			raw_source(&h, (enum lat_phase)ph, srcpage, cold,
				   entries);
			rc = raw_touches(&h, region, perm, warm, samples,
					 t[ph], &n[ph]);
			if (rc)
				goto out;
		}
	}
	for (int ph = 0; ph < NLAT; ph++)
		lr->st[ph] = lat_stat_of(t[ph], n[ph]);
	if ((int64_t)lr->hetmm_faults < (int64_t)n[LAT_HETMM])
		warn_("latency: %" PRIu64 " hetmm faults for %d timed touches"
		      " (+%d warm-up each rep): some touches did not fault",
		      lr->hetmm_faults, n[LAT_HETMM], warm);
out:
	placement_restore(pl);
	if (hstarted) {
		if (atomic_load(&h.error))
			warn_("latency: raw handler error: %s",
			      strerror(atomic_load(&h.error)));
		raw_handler_stop(&h);
	}
	if (emu) {
		int r2 = hetmm_emu_destroy(emu);

		if (r2)
			warn_("latency: hetmm_emu_destroy: %s", strerror(-r2));
	}
	if (srcpage)
		munmap(srcpage, PAGE);
	if (cold)
		munmap(cold, region);
	free(entries);
	free(perm);
	for (int ph = 0; ph < NLAT; ph++)
		free(t[ph]);
	if (!rc && hrc)
		rc = hrc;
	lr->err = rc;
	return rc;
}

enum place lat_headline(const struct lat_result lat[NPLACES])
{
	enum place head = PLACE_UNPINNED;
	double worst = -1;

	for (int p = PLACE_SAME_CPU; p <= PLACE_CROSS_CPU; p++) {
		double r = lat_ratio(&lat[p], LAT_RAW);

		if (!isnan(r) && r > worst) {
			worst = r;
			head = (enum place)p;
		}
	}
	return head;
}
