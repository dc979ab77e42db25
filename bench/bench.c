/* SPDX-License-Identifier: MIT */
/*
 * bench.c - `hetmm bench`: its options, and the order in which the
 * measurements run.
 *
 * Every hetmm figure is paired with a baseline measured in the same run on
 * the same machine, and every figure is the median of several repetitions
 * (after one untimed warm-up repetition).  Each measurement is in a file
 * of its own, which says what it times and against what:
 *
 *   throughput.c  at each size, migrate_to_device vs memcpy(), and
 *                 migrate_to_system and fault_seq vs the best raw
 *                 userfaultfd primitive, hetmm and its baseline timed
 *                 back to back round by round; for information, a raw
 *                 fault-driven sequential read and memcpy() out of a
 *                 device-resident buffer.
 *   pin.c         the pin fast path, ns per page.
 *   evict.c       migration into a full device vs memcpy().
 *   async.c       asynchronous vs synchronous copies of a device with latency.
 *   reuse.c       migration into frames a munmap freed vs fresh frames.
 *   thp.c         THP-backed memory to a device and back vs base pages;
 *                 a copied PMD made a THP by a THP-backed fill vs
 *                 MADV_COLLAPSE.
 *   mirror.c      device mirror read/write vs memcpy and
 *                 process_vm_readv/writev.
 *   fork.c        fork with device pages vs fork with the same bytes in
 *                 system RAM.
 *   scale.c       1 vs 2 threads on disjoint halves, with ns/page.
 *   ablate.c      fault-around and UFFDIO_MOVE off vs on.
 *   latency.c     single-page fault latency vs a bare userfaultfd round
 *                 trip (raw_handler.c), at three thread placements.
 *   metadata      hetmm_page_metadata_size().
 *
 * The report is output.c's: a table as text, or with --json exactly one
 * JSON object on stdout; --plot also writes throughput against size as SVG
 * (plot.c).  The targets are given as "targets" in the JSON
 * and as a table at the end of the text.
 *
 * The summary "ratios" are taken at the LARGEST size measured.
 * Throughput is in GB/s with 1 GB = 1e9 bytes.  Buffers are unmapped
 * between repetitions so memory stays bounded (about 3x the largest size);
 * a size the machine's available memory can't hold is skipped with a
 * message.  Default sizes 1 MiB to 1 GiB; 4 GiB (or more) with --sizes.
 * Progress and warnings go to stderr.
 */
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "compat.h"
#include "common.h"
#include "output.h"

/* ------------------------------------------------------------------------
 * Options
 */

struct opts {
	int quick;
	int json;
	int latency_only;         /* --latency: the fault latency alone */
	int storage;              /* --storage: the file device alone */
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
		"usage: hetmm bench [--quick] [--json] [--latency] [--storage]\n"
		"                   [--sizes 1M,16M,256M,1G]\n"
		"                   [--reps N] [--samples N] [--plot FILE.svg]\n"
		"  --quick     sizes 1M,16M,64M and 1000 latency samples (a few seconds)\n"
		"  --json      print one JSON object on stdout (progress on stderr)\n"
		"  --latency   the single-page fault latency alone (tools/probe-cost.sh)\n"
		"  --storage   a file attached to memory against io_uring and mmap\n"
		"              of the same file (bench/storage.c; sizes 64M,256M,1G,\n"
		"              --quick 64M; the file in $TMPDIR or /tmp)\n"
		"  --sizes     list of sizes (K/M/G suffixes), commas or separate args\n"
		"  --reps      repetitions per figure, median reported (default 5)\n"
		"  --samples   fault-latency samples per repetition\n"
		"  --plot      also write throughput against size as an SVG\n"
		"  default sizes 1M,4M,16M,64M,256M,1G; up to 4G via --sizes (a size\n"
		"  is skipped, with a message, when memory is short)\n");
}

#define OPTS_RUN (-1)

/* The options into *o; OPTS_RUN to go on, else the exit status. */
static int parse_opts(int argc, char **argv, struct opts *o)
{
	memset(o, 0, sizeof(*o));
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--quick")) {
			o->quick = 1;
		} else if (!strcmp(a, "--json")) {
			o->json = 1;
		} else if (!strcmp(a, "--latency")) {
			o->latency_only = 1;
		} else if (!strcmp(a, "--storage")) {
			o->storage = 1;
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
			if (add_sizes(o, list)) {
				warn_("bad size list '%s'", list);
				return 2;
			}
			/* further bare sizes: --sizes 1M 16M */
			while (i + 1 < argc && argv[i + 1][0] != '-') {
				if (add_sizes(o, argv[++i])) {
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
				o->reps = v > 50 ? 50 : v;
			else
				o->samples = v;
		} else if (!strcmp(a, "--plot") || !strncmp(a, "--plot=", 7)) {
			if (a[6] == '=') {
				o->plot = a + 7;
			} else if (i + 1 < argc) {
				o->plot = argv[++i];
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
	return OPTS_RUN;
}

static void set_defaults(struct opts *o)
{
	if (!o->nsizes) {
		if (o->quick)
			add_sizes(o, "1M,16M,64M");
		else
			add_sizes(o, "1M,4M,16M,64M,256M,1G");
	}
	if (!o->reps)
		o->reps = 5;
	if (!o->samples)
		o->samples = o->quick ? 1000 : 2000;
}

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

/* ------------------------------------------------------------------------
 * The run, step by step
 */

/* What the measurements share. */
struct bench_env {
	struct hetmm_ctx *ctx;
	int raw_fd;               /* the baselines' nonblocking userfaultfd */
	int has_move;             /* raw_fd has UFFD_FEATURE_MOVE */
	struct placement pl;      /* where the latency test puts threads */
};

static int env_open(struct bench_env *env)
{
	uint64_t raw_features = 0;
	int rc;

	placement_begin(&env->pl);
	rc = hetmm_ctx_create(&env->ctx, NULL);
	if (rc) {
		warn_("hetmm_ctx_create: %s", strerror(-rc));
		return rc;
	}
	placement_find_hetmm(&env->pl);
	env->raw_fd = uffd_open_features(UFFD_FEATURE_MOVE, 1, &raw_features);
	if (env->raw_fd < 0) {
		warn_("raw userfaultfd: %s", strerror(-env->raw_fd));
		hetmm_ctx_destroy(env->ctx);
		return env->raw_fd;
	}
	env->has_move = !!(raw_features & UFFD_FEATURE_MOVE);
	return 0;
}

/* 1 if hetmm's context failed to go, else 0. */
static int env_close(struct bench_env *env)
{
	int rc;

	close(env->raw_fd);
	rc = hetmm_ctx_destroy(env->ctx);
	if (rc) {
		warn_("hetmm_ctx_destroy: %s", strerror(-rc));
		return 1;
	}
	return 0;
}

static struct report *report_new(const struct opts *o, const char *kernel)
{
	struct report *rep = calloc(1, sizeof(*rep));

	if (rep) {
		rep->kernel = kernel;
		rep->reps = o->reps;
		rep->nsizes = o->nsizes;
	}
	return rep;
}

/* Each measure_ step returns 1 if something failed (said on stderr), else
 * 0, and goes on with the rest regardless. */

static int measure_throughput(const struct bench_env *env,
			      const struct opts *o, struct report *rep)
{
	int failed = 0;

	for (int i = 0; i < o->nsizes; i++)
		if (bench_throughput(env->ctx, env->raw_fd, env->has_move,
				     o->sizes[i], o->reps, &rep->size[i]))
			failed = 1;
	return failed;
}

static int measure_pin_evict(const struct bench_env *env,
			     const struct opts *o, struct report *rep)
{
	uint64_t t0 = now_ns();
	size_t esz = o->quick ? 16 * MIB : 64 * MIB;
	int failed = 0, rc;

	note("bench pin fast path");
	if ((rc = bench_pin(env->ctx, o->reps, &rep->pin))) {
		warn_("pin: %s", strerror(-rc));
		failed = 1;
	}
	note(", eviction");
	if ((rc = bench_evict(env->ctx, esz, o->reps, &rep->evict))) {
		warn_("eviction: %s", strerror(-rc));
		failed = 1;
	}
	note(", asynchronous copies");
	if ((rc = bench_async(env->ctx, o->quick ? 4 * MIB : 8 * MIB, o->reps,
			      &rep->async))) {
		warn_("asynchronous copies: %s", strerror(-rc));
		failed = 1;
	}
	note(", frames freed by munmap");
	if ((rc = bench_reuse(env->ctx, esz, o->reps, &rep->reuse))) {
		warn_("frames freed by munmap: %s", strerror(-rc));
		failed = 1;
	}
	note(", THPs");
	if ((rc = bench_thp(env->ctx, esz, o->reps, &rep->thp))) {
		warn_("THPs: %s", strerror(-rc));
		failed = 1;
	}
	note(" (%.1f s)\n", (double)(now_ns() - t0) / 1e9);
	return failed;
}

/* The sections of sections.h other than pin and eviction: mirror, fork
 * and 1 vs 2 threads at each size, then optimisations off vs on. */
static int measure_sections(const struct bench_env *env,
			    const struct opts *o, struct report *rep)
{
	struct hetmm_ctx *ctx = env->ctx;
	int failed = 0;
	char sb[32];

	for (int i = 0; i < o->nsizes; i++) {
		size_t size = o->sizes[i];
		uint64_t t0 = now_ns();

		note("bench %s: mirror", fmt_size(size, sb, sizeof(sb)));
		if (bench_mirror(ctx, size, o->reps, &rep->mirror[i])) {
			warn_("mirror %s: %s", sb,
			      strerror(-rep->mirror[i].err));
			failed = 1;
		}
		note(", fork");
		if (bench_fork(ctx, size, o->reps, &rep->fork[i])) {
			warn_("fork %s: %s", sb, strerror(-rep->fork[i].err));
			failed = 1;
		}
		note(", 1 vs 2 threads");
		if (bench_scale(ctx, env->raw_fd, env->has_move, size, o->reps,
				&rep->scale[i])) {
			warn_("scaling %s: %s", sb,
			      strerror(-rep->scale[i].err));
			failed = 1;
		}
		note(" (%.1f s)\n", (double)(now_ns() - t0) / 1e9);
	}
	{
		uint64_t t0 = now_ns();
		size_t asz = o->quick ? 16 * MIB : 64 * MIB;

		note("bench optimisations off vs on, %s",
		     fmt_size(asz, sb, sizeof(sb)));
		if (bench_ablate(ctx, asz, o->reps, &rep->ablate))
			failed = 1;
		note(" (%.1f s)\n", (double)(now_ns() - t0) / 1e9);
	}
	return failed;
}

/* At each placement this machine allows, then the headline. */
static int measure_latency(struct bench_env *env, const struct opts *o,
			   struct report *rep)
{
	int failed = 0;

	for (int p = 0; p < NPLACES; p++) {
		uint64_t t0 = now_ns();

		for (int ph = 0; ph < NLAT; ph++)
			rep->lat[p].st[ph].med = NAN;
		if (!placement_possible(&env->pl, (enum place)p))
			continue;
		note("bench latency, %s", place_name[p]);
		if (bench_latency(env->ctx, o->samples, o->reps, &env->pl,
				  (enum place)p, &rep->lat[p]))
			failed = 1;
		note(" (%.1f s)\n", (double)(now_ns() - t0) / 1e9);
	}
	rep->head = lat_headline(rep->lat);
	return failed;
}

/* The report on stdout, and the plot if asked for: 1 if the plot could
 * not be written, else 0. */
static int write_report(const struct opts *o, const struct report *rep)
{
	int rc;

	if (o->latency_only)
		report_print_latency(rep, o->json);
	else if (o->json)
		report_print_json(rep);
	else
		report_print_text(rep);
	if (!o->plot)
		return 0;
	rc = report_write_plot(rep, o->plot);
	if (rc) {
		warn_("--plot %s: %s", o->plot, strerror(-rc));
		return 1;
	}
	note("plot written to %s\n", o->plot);
	return 0;
}

int hetmm_bench_main(int argc, char **argv)
{
	struct opts o;
	struct utsname kernel;
	struct bench_env env;
	struct report *rep;
	int failed = 0, rc;
	uint64_t tstart = now_ns();

	rc = parse_opts(argc, argv, &o);
	if (rc != OPTS_RUN)
		return rc;
	if (o.storage)
		return bench_storage(o.quick, o.json, o.reps ? o.reps : 3,
				     o.sizes, o.nsizes, o.plot);
	set_defaults(&o);
	drop_sizes_short_of_memory(&o);
	if (!o.nsizes) {
		warn_("no size fits in the memory available");
		return 1;
	}
	memset(&kernel, 0, sizeof(kernel));
	if (uname(&kernel))
		strcpy(kernel.release, "?");
	rep = report_new(&o, kernel.release);
	if (!rep)
		return 1;
	if (env_open(&env)) {
		free(rep);
		return 1;
	}

	if (!o.latency_only) {
		failed |= measure_throughput(&env, &o, rep);
		failed |= measure_pin_evict(&env, &o, rep);
		failed |= measure_sections(&env, &o, rep);
	}
	failed |= measure_latency(&env, &o, rep);
	rep->meta = hetmm_page_metadata_size();
	failed |= env_close(&env);
	note("bench total %.1f s\n", (double)(now_ns() - tstart) / 1e9);

	failed |= write_report(&o, rep);
	free(rep);
	return failed ? 1 : 0;
}
