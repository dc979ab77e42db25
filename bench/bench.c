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
#include "output.h"

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
		     const struct opts *o, struct report *x)
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
	struct report *rep = NULL;
	struct placement pl;
	struct utsname kernel;
	struct hetmm_ctx *ctx = NULL;
	uint64_t raw_features = 0;
	int raw_fd = -1, failed = 0, rc;
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

	rep = calloc(1, sizeof(*rep));
	if (!rep)
		return 1;
	rep->kernel = kernel.release;
	rep->reps = o.reps;
	rep->nsizes = o.nsizes;

	placement_begin(&pl);
	rc = hetmm_ctx_create(&ctx, NULL);
	if (rc) {
		warn_("hetmm_ctx_create: %s", strerror(-rc));
		free(rep);
		return 1;
	}
	placement_find_hetmm(&pl);
	raw_fd = uffd_open_features(UFFD_FEATURE_MOVE, 1, &raw_features);
	if (raw_fd < 0) {
		warn_("raw userfaultfd: %s", strerror(-raw_fd));
		hetmm_ctx_destroy(ctx);
		free(rep);
		return 1;
	}

	for (int i = 0; i < o.nsizes; i++) {
		struct size_result *sr = &rep->size[i];

		bench_throughput(ctx, raw_fd, !!(raw_features & UFFD_FEATURE_MOVE),
				 o.sizes[i], o.reps, sr);
		if (sr->err)
			failed = 1;
	}

	{
		uint64_t t0 = now_ns();
		size_t esz = o.quick ? 16 * MIB : 64 * MIB;

		note("bench pin fast path");
		if ((rc = bench_pin(ctx, o.reps, &rep->pin))) {
			warn_("pin: %s", strerror(-rc));
			failed = 1;
		}
		note(", eviction");
		if ((rc = bench_evict(ctx, esz, o.reps, &rep->evict))) {
			warn_("eviction: %s", strerror(-rc));
			failed = 1;
		}
		note(" (%.1f s)\n", (double)(now_ns() - t0) / 1e9);
	}
	if (run_extra(ctx, raw_fd, !!(raw_features & UFFD_FEATURE_MOVE), &o,
		      rep))
		failed = 1;
	for (int p = 0; p < NPLACES; p++) {
		uint64_t t0 = now_ns();

		for (int ph = 0; ph < NLAT; ph++)
			rep->lat[p].st[ph].med = NAN;
		if (!placement_possible(&pl, (enum place)p))
			continue;
		note("bench latency, %s", place_name[p]);
		if (bench_latency(ctx, o.samples, o.reps, &pl, (enum place)p,
				  &rep->lat[p]))
			failed = 1;
		note(" (%.1f s)\n", (double)(now_ns() - t0) / 1e9);
	}
	rep->head = lat_headline(rep->lat);
	rep->meta = hetmm_page_metadata_size();

	close(raw_fd);
	rc = hetmm_ctx_destroy(ctx);
	if (rc) {
		warn_("hetmm_ctx_destroy: %s", strerror(-rc));
		failed = 1;
	}
	note("bench total %.1f s\n", (double)(now_ns() - tstart) / 1e9);

	if (o.json)
		report_print_json(rep);
	else
		report_print_text(rep);
	if (o.plot) {
		rc = report_write_plot(rep, o.plot);
		if (rc) {
			warn_("--plot %s: %s", o.plot, strerror(-rc));
			failed = 1;
		} else {
			note("plot written to %s\n", o.plot);
		}
	}
	free(rep);
	return failed ? 1 : 0;
}
