/* SPDX-License-Identifier: MIT */
/*
 * throughput.c - the three throughput rows, hetmm and each baseline
 * measured in the same run:
 *
 *   (a) migrate_to_device  hetmm_migrate_to_device() of a populated
 *                      private anonymous buffer to an emulated
 *                      DEVICE_PRIVATE device sized to fit, vs memcpy() of
 *                      the same bytes into already-populated memory (best
 *                      of 4 KiB pages and THP-advised buffers).
 *   (b) migrate_to_system  hetmm_migrate_to_system() of the whole buffer,
 *                      vs the best raw kernel primitive: UFFDIO_COPY from
 *                      a populated source into a fresh MISSING-registered
 *                      region (2 MiB per ioctl, and the whole range in one
 *                      ioctl), and UFFDIO_MOVE from a populated 4 KiB-page
 *                      staging region (2 MiB per ioctl and whole range).
 *   (c) fault_seq      one thread reads one byte per 4 KiB page of a
 *                      device-resident buffer, so every page faults back,
 *                      vs the same best raw primitive as migrate_to_system.
 *
 * The rows are measured in rounds, hetmm and its baseline back to back in
 * alternating order, and their ratio is the median of the per-round
 * ratios, so that the drift of a VM's memory throughput between rounds
 * cancels out (bench_paired).
 *
 * For information, also: a raw fault-driven sequential read (our handler
 * answering each fault with 2 MiB of UFFDIO_COPY or UFFDIO_MOVE), and
 * memcpy() out of a device-resident buffer (up to 64 MiB).
 */
#include "throughput.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "compat.h"
#include "common.h"
#include "raw_handler.h"

/* ------------------------------------------------------------------------
 * (a) baseline: memcpy into populated memory
 */

/* One memcpy() into populated memory: 4 KiB pages, or THP-advised. */
static int memcpy_once(size_t size, int thp, double *ns)
{
	char *src = map_anon(size, thp ? 1 : -1);
	char *dst = map_anon(size, thp ? 1 : -1);
	int rc = -ENOMEM;

	if (src && dst) {
		uint64_t t0;

		populate(src, size, 0x5a);
		populate(dst, size, 0x11);
		t0 = now_ns();
		memcpy(dst, src, size);
		*ns = (double)(now_ns() - t0);
		g_sink += (unsigned char)dst[size / 2];
		rc = 0;
	}
	if (src)
		munmap(src, size);
	if (dst)
		munmap(dst, size);
	return rc;
}

static int bench_memcpy(size_t size, int reps, struct size_result *res)
{
	res->memcpy_ns = NAN;
	for (int thp = 0; thp < 2; thp++) {
		double t[MAX_REPS], m;
		int n = 0;

		for (int r = -1; r < reps; r++) {
			int rc = memcpy_once(size, thp, &t[n]);

			if (rc)
				return rc;
			if (r >= 0)
				n++;
		}
		m = median(t, n);
		if (isnan(res->memcpy_ns) || m < res->memcpy_ns) {
			res->memcpy_ns = m;
			res->memcpy_thp = thp;
			res->memcpy_kind = thp ? "memcpy (THP-advised)"
					       : "memcpy (4 KiB pages)";
		}
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * (a), (b), (c): hetmm
 */

static int check_device_empty(struct hetmm_emu *emu, const char *what)
{
	struct hetmm_pagemap *pg;
	struct hetmm_pagemap_info info;
	int rc = hetmm_emu_pagemap(emu, &pg);

	if (!rc)
		rc = hetmm_pagemap_get_info(pg, &info);
	if (rc) {
		warn_("%s: pagemap info: %s", what, strerror(-rc));
		return rc;
	}
	if (info.nr_free != info.nr_pages) {
		warn_("%s: device still holds %" PRIu64 " of %" PRIu64
		      " pages after the buffer went back", what,
		      info.nr_pages - info.nr_free, info.nr_pages);
		return -EBUSY;
	}
	return 0;
}

/*
 * Informational: memcpy() out of a device-resident buffer into a populated
 * page-aligned one, as an application would.  glibc copies large 4 KiB-
 * aliased buffers backwards, so this shows how fault-around copes with a
 * descending stream.  Only up to MEMCPY_OUT_MAX: without fault-around
 * every page is one round trip.
 */
#define MEMCPY_OUT_MAX (64 * MIB)

static int bench_hetmm_memcpy_out(struct hetmm_ctx *ctx, struct hetmm_emu *emu,
				  size_t size, int reps,
				  struct size_result *res)
{
	struct hetmm_pagemap *pg;
	double t[64], faults = 0;
	int rc, n = 0;
	char *dst;

	res->memcpy_out_ns = res->memcpy_out_faults = NAN;
	if (size > MEMCPY_OUT_MAX)
		return 0;
	if (reps > 3)
		reps = 3;
	rc = hetmm_emu_pagemap(emu, &pg);
	if (rc)
		return rc;
	dst = map_anon(size, 0);
	if (!dst)
		return -ENOMEM;
	populate(dst, size, 0);
	for (int r = -1; r < reps; r++) {
		struct hetmm_stats s0, s1;
		char *buf;
		uint64_t t0, t1;

		rc = buffer_to_device(pg, size, 0x6b, &buf, NULL);
		if (rc)
			break;
		hetmm_ctx_get_stats(ctx, &s0);
		t0 = now_ns();
		memcpy(dst, buf, size);
		t1 = now_ns();
		hetmm_ctx_get_stats(ctx, &s1);
		munmap(buf, size);
		if (dst[0] != 0x6b || dst[size / 2] != 0x6b ||
		    dst[size - 1] != 0x6b) {
			warn_("DATA MISMATCH in memcpy out of the device");
			rc = -EIO;
			break;
		}
		if (r >= 0) {
			t[n++] = (double)(t1 - t0);
			faults += (double)(s1.faults - s0.faults);
		}
	}
	munmap(dst, size);
	if (rc)
		return rc;
	res->memcpy_out_ns = median(t, n);
	res->memcpy_out_faults = n ? faults / n : NAN;
	return check_device_empty(emu, "memcpy_out bench");
}

/* ------------------------------------------------------------------------
 * (b) raw primitives
 */

enum raw_kind { RAW_COPY_2M, RAW_COPY_ALL, RAW_MOVE_2M, RAW_MOVE_ALL };

static const char *raw_name[] = {
	"UFFDIO_COPY 2 MiB/ioctl", "UFFDIO_COPY whole range",
	"UFFDIO_MOVE 2 MiB/ioctl", "UFFDIO_MOVE whole range",
};

/*
 * One raw batched fill of a fresh MISSING-registered region: UFFDIO_COPY
 * from src, or UFFDIO_MOVE from a populated staging region of 4 KiB pages
 * exclusive to us (what hetmm installs).
 */
static int raw_once(int fd, enum raw_kind kind, const char *src, size_t size,
		    double *ns)
{
	int move = kind == RAW_MOVE_2M || kind == RAW_MOVE_ALL;
	size_t chunk = (kind == RAW_COPY_2M || kind == RAW_MOVE_2M) ? CHUNK_2M
								     : size;
	char *dst = map_anon(size, 0), *stg = NULL;
	uint64_t ioctls = 0, t0, t1;
	int rc;

	if (!dst)
		return -ENOMEM;
	rc = uffd_register_missing(fd, dst, size, &ioctls);
	if (rc)
		goto out;
	if (move) {
		rc = -EOPNOTSUPP;
		if (!(ioctls & (1ull << _UFFDIO_MOVE)))
			goto out;
		rc = -ENOMEM;
		stg = map_anon(size, -1);
		if (!stg)
			goto out;
		populate(stg, size, 0x77);
	}
	t0 = now_ns();
	if (move)
		rc = raw_move(fd, dst, stg, size, chunk);
	else
		rc = raw_copy(fd, dst, src, size, chunk,
			      UFFDIO_COPY_MODE_DONTWAKE);
	t1 = now_ns();
	if (!rc && (dst[0] != 0x77 || dst[size - 1] != 0x77))
		rc = -EIO;
	if (!rc)
		*ns = (double)(t1 - t0);
out:
	munmap(dst, size);
	if (stg)
		munmap(stg, size);
	return rc;
}

static int bench_raw_one(int fd, enum raw_kind kind, const char *src,
			 size_t size, int reps, double *out)
{
	double t[MAX_REPS];
	int n = 0;

	*out = NAN;
	for (int r = -1; r < reps; r++) {
		int rc = raw_once(fd, kind, src, size, &t[n]);

		if (rc) {
			if (rc != -EOPNOTSUPP)
				warn_("raw %s: %s", raw_name[kind],
				      strerror(-rc));
			return rc;
		}
		if (r >= 0)
			n++;
	}
	*out = median(t, n);
	return 0;
}

static int bench_raw(int fd, int has_move, size_t size, int reps,
		     struct size_result *res)
{
	char *src = map_anon(size, 1);
	double *slot[4] = { &res->raw_copy2m_ns, &res->raw_copyall_ns,
			    &res->raw_move2m_ns, &res->raw_moveall_ns };
	int rc = 0;

	res->raw_best_ns = NAN;
	res->raw_best_kind = NULL;
	if (!src)
		return -ENOMEM;
	populate(src, size, 0x77);
	for (int k = RAW_COPY_2M; k <= RAW_MOVE_ALL; k++) {
		int r;

		*slot[k] = NAN;
		if ((k == RAW_MOVE_2M || k == RAW_MOVE_ALL) && !has_move)
			continue;
		r = bench_raw_one(fd, (enum raw_kind)k, src, size, reps, slot[k]);
		if (r) {
			if (r != -EOPNOTSUPP)
				rc = r;
			continue;
		}
		if (isnan(res->raw_best_ns) || *slot[k] < res->raw_best_ns) {
			res->raw_best_ns = *slot[k];
			res->raw_best_kind = raw_name[k];
			res->raw_best = k;
		}
	}
	munmap(src, size);
	if (isnan(res->raw_best_ns))
		return rc ? rc : -EIO;
	return 0;
}

/*
 * Informational: a raw fault-driven sequential read, our own handler thread
 * answering each fault with 2 MiB at once (UFFDIO_COPY from a populated
 * source, or UFFDIO_MOVE from a populated staging region).
 */
static int bench_raw_fault_seq(size_t size, int reps, int use_move,
			       double *out)
{
	struct raw_handler h;
	char *src = map_anon(size, use_move ? -1 : 1);
	double t[64];
	int n = 0, rc;

	*out = NAN;
	if (!src)
		return -ENOMEM;
	if (!use_move)
		populate(src, size, 0x3c);
	rc = raw_handler_start(&h, src, 0, CHUNK_2M, use_move);
	if (rc) {
		munmap(src, size);
		return rc;
	}
	for (int r = -1; r < reps && !rc; r++) {
		char *buf = map_anon(size, 0);
		uint64_t npages = size / PAGE, sum = 0, t0, t1;

		if (!buf) {
			rc = -ENOMEM;
			break;
		}
		if (use_move)  /* fresh staging pages each time: MOVE eats them */
			populate(src, size, 0x3c);
		rc = uffd_register_missing(h.fd, buf, size, NULL);
		if (rc) {
			munmap(buf, size);
			break;
		}
		atomic_store(&h.base, (uintptr_t)buf);
		atomic_store(&h.len, size);
		t0 = now_ns();
		for (uint64_t i = 0; i < npages; i++)
			sum += ((volatile unsigned char *)buf)[i * PAGE];
		t1 = now_ns();
		if (sum != 0x3cull * npages)
			rc = -EIO;
		munmap(buf, size);
		if (r >= 0)
			t[n++] = (double)(t1 - t0);
	}
	if (atomic_load(&h.error))
		rc = -atomic_load(&h.error);
	raw_handler_stop(&h);
	munmap(src, size);
	if (!rc)
		*out = median(t, n);
	return rc;
}

/* ------------------------------------------------------------------------
 * (a), (b), (c): hetmm against its baselines, round by round
 *
 * The memory throughput of a virtual machine drifts by a third within
 * seconds, so figures measured one after the other compare two different
 * machines.  Each round times hetmm and its baselines back to back, hetmm
 * first in one round and the baselines first in the next, and each row's
 * ratio is the median of the per-round ratios: the drift between rounds
 * cancels, and what is left within a round favours neither side.  The
 * baselines are the variants that won their own medians before (the
 * faster memcpy, the best raw primitive).
 */

struct round {
	double memcpy_ns, raw_ns;
	double to_dev_ns, to_sys_ns, fault_seq_ns;
	double faults, fault_pages;
};

static int baselines_once(const struct size_result *sr, int raw_fd,
			  const char *raw_src, struct round *rd)
{
	int rc = memcpy_once(sr->size, sr->memcpy_thp, &rd->memcpy_ns);

	if (rc)
		return rc;
	return raw_once(raw_fd, (enum raw_kind)sr->raw_best, raw_src, sr->size,
			&rd->raw_ns);
}

static int hetmm_once(struct hetmm_ctx *ctx, struct hetmm_pagemap *pg,
		      size_t size, struct round *rd)
{
	int rc = migrate_round_trip(ctx, pg, size, &rd->to_dev_ns,
				    &rd->to_sys_ns);

	if (rc)
		return rc;
	return fault_read_once(ctx, pg, size, NULL, &rd->fault_seq_ns,
			       &rd->faults, &rd->fault_pages);
}

static double median_of(const struct round *rd, int n, size_t off)
{
	double v[MAX_REPS];

	for (int i = 0; i < n; i++)
		v[i] = *(const double *)((const char *)&rd[i] + off);
	return median(v, n);
}

/* Median over rounds of base / hetmm, both fields of struct round. */
static double median_ratio(const struct round *rd, int n, size_t base,
			   size_t hetmm)
{
	double v[MAX_REPS];

	for (int i = 0; i < n; i++)
		v[i] = *(const double *)((const char *)&rd[i] + base) /
		       *(const double *)((const char *)&rd[i] + hetmm);
	return median(v, n);
}

static void paired_results(struct size_result *sr, const struct round *rd,
			   int n)
{
	sr->pair_memcpy_ns = median_of(rd, n, offsetof(struct round, memcpy_ns));
	sr->pair_raw_ns = median_of(rd, n, offsetof(struct round, raw_ns));
	sr->to_dev_ns = median_of(rd, n, offsetof(struct round, to_dev_ns));
	sr->to_sys_ns = median_of(rd, n, offsetof(struct round, to_sys_ns));
	sr->fault_seq_ns = median_of(rd, n,
				     offsetof(struct round, fault_seq_ns));
	sr->faults_per_rep = median_of(rd, n, offsetof(struct round, faults));
	sr->fault_pages_per_rep = median_of(rd, n,
				offsetof(struct round, fault_pages));
	sr->ratio_to_dev = median_ratio(rd, n,
				offsetof(struct round, memcpy_ns),
				offsetof(struct round, to_dev_ns));
	sr->ratio_to_sys = median_ratio(rd, n, offsetof(struct round, raw_ns),
				offsetof(struct round, to_sys_ns));
	sr->ratio_fault_seq = median_ratio(rd, n,
				offsetof(struct round, raw_ns),
				offsetof(struct round, fault_seq_ns));
}

/* Buffers are mapped per repetition, so a round holds at most three times
 * the size at once, as the phases before it do. */
static int bench_paired(struct hetmm_ctx *ctx, struct hetmm_emu *emu,
			int raw_fd, int reps, struct size_result *sr)
{
	struct round rd[MAX_REPS];
	struct hetmm_pagemap *pg;
	size_t size = sr->size;
	int copy = sr->raw_best == RAW_COPY_2M || sr->raw_best == RAW_COPY_ALL;
	char *raw_src = NULL;
	int rc = hetmm_emu_pagemap(emu, &pg), n = 0;

	if (!rc && isnan(sr->raw_best_ns))
		rc = -EIO;       /* no raw primitive worked: said already */
	if (!rc && copy) {
		raw_src = map_anon(size, 1);
		if (raw_src)
			populate(raw_src, size, 0x77);
		else
			rc = -ENOMEM;
	}
	/* Round -1 warms both sides up and is not counted. */
	for (int r = -1; r < reps && !rc; r++) {
		struct round *cur = &rd[n];

		if (r & 1) {
			rc = baselines_once(sr, raw_fd, raw_src, cur);
			if (!rc)
				rc = hetmm_once(ctx, pg, size, cur);
		} else {
			rc = hetmm_once(ctx, pg, size, cur);
			if (!rc)
				rc = baselines_once(sr, raw_fd, raw_src, cur);
		}
		if (!rc && r >= 0)
			n++;
	}
	if (raw_src)
		munmap(raw_src, size);
	if (rc)
		return rc;
	paired_results(sr, rd, n);
	return check_device_empty(emu, "hetmm rounds");
}

/* ------------------------------------------------------------------------
 * All of it at one size
 */

/* Every figure NAN until measured. */
static void size_result_init(struct size_result *sr, size_t size)
{
	sr->size = size;
	sr->memcpy_ns = sr->to_dev_ns = sr->to_sys_ns = NAN;
	sr->raw_best_ns = sr->fault_seq_ns = sr->raw_fault_seq_ns = NAN;
	sr->raw_fault_seq_move_ns = NAN;
	sr->memcpy_out_ns = sr->memcpy_out_faults = NAN;
	sr->raw_copy2m_ns = sr->raw_copyall_ns = NAN;
	sr->raw_move2m_ns = sr->raw_moveall_ns = NAN;
	sr->faults_per_rep = sr->fault_pages_per_rep = NAN;
	sr->pair_memcpy_ns = sr->pair_raw_ns = NAN;
	sr->ratio_to_dev = sr->ratio_to_sys = sr->ratio_fault_seq = NAN;
}

/* hetmm's part: the paired rounds and memcpy() out, on a device of the
 * size. */
static void bench_hetmm(struct hetmm_ctx *ctx, int raw_fd, size_t size,
			int reps, struct size_result *sr)
{
	struct hetmm_emu *emu = NULL;
	int rc = hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_PRIVATE,
				  size / PAGE, &emu);

	if (rc) {
		warn_("hetmm_emu_create(%zu pages): %s", size / PAGE,
		      strerror(-rc));
		sr->err = rc;
		return;
	}
	if ((rc = bench_paired(ctx, emu, raw_fd, reps, sr)))
		sr->err = rc;
	if (size <= MEMCPY_OUT_MAX)
		note(", hetmm memcpy out");
	if ((rc = bench_hetmm_memcpy_out(ctx, emu, size, reps, sr))) {
		warn_("memcpy out: %s", strerror(-rc));
		sr->err = rc;
	}
	rc = hetmm_emu_destroy(emu);
	if (rc) {
		warn_("hetmm_emu_destroy: %s", strerror(-rc));
		sr->err = rc;
	}
}

int bench_throughput(struct hetmm_ctx *ctx, int raw_fd, int has_move,
		     size_t size, int reps, struct size_result *sr)
{
	char sb[32];
	uint64_t t0 = now_ns();
	int rc;

	size_result_init(sr, size);
	note("bench %s: memcpy", fmt_size(size, sb, sizeof(sb)));
	if ((rc = bench_memcpy(size, reps, sr)))
		sr->err = rc;
	note(", raw uffd");
	if ((rc = bench_raw(raw_fd, has_move, size, reps, sr)))
		sr->err = rc;
	note(", raw fault seq");
	if ((rc = bench_raw_fault_seq(size, reps, 0, &sr->raw_fault_seq_ns))) {
		warn_("raw fault seq (COPY): %s", strerror(-rc));
		sr->err = rc;
	}
	if (has_move && (rc = bench_raw_fault_seq(size, reps, 1,
						  &sr->raw_fault_seq_move_ns))) {
		warn_("raw fault seq (MOVE): %s", strerror(-rc));
		sr->err = rc;
	}
	note(", hetmm against baselines, round by round");
	bench_hetmm(ctx, raw_fd, size, reps, sr);
	note(" (%.1f s)\n", (double)(now_ns() - t0) / 1e9);
	return sr->err;
}
