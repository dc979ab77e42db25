/* SPDX-License-Identifier: MIT */
/*
 * scale.c - 1 vs 2 threads.
 *
 * The same operation split into disjoint halves, one per thread, timed
 * from the common start to the last thread's end, for hetmm and for its
 * baseline run the same way:
 *
 *   to_device   hetmm_migrate_to_device() of each half, vs memcpy() of
 *               each half between populated buffers;
 *   to_system   hetmm_migrate_to_system() of each half, vs batched
 *               UFFDIO_COPY (2 MiB per ioctl) of each half into a fresh
 *               MISSING-registered region;
 *   fault_seq   each thread reads one byte per page of its half of a
 *               device-resident buffer (one handler serves both), vs the
 *               same batched UFFDIO_COPY.
 *
 * UFFDIO_MOVE (2 MiB per ioctl, from a populated staging region) is
 * measured too, for information.  Cost per page (ns/page) is printed so
 * that growth with size shows.
 */
#include "sections.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>

#include "compat.h"

struct job {
	struct hetmm_ctx *ctx;
	struct hetmm_pagemap *pg;
	int fd;
	int nthreads;
	size_t size;
	char *buf, *src;
	uint64_t sum[2];
};

static void half(const struct job *j, int i, size_t *off, size_t *len)
{
	size_t pages = j->size / PAGE, per = pages / (size_t)j->nthreads;

	*off = (size_t)i * per * PAGE;
	*len = (i == j->nthreads - 1 ? pages - (size_t)i * per : per) * PAGE;
}

static int do_to_dev(void *arg, int i)
{
	struct job *j = arg;
	size_t off, len;
	int rc;

	half(j, i, &off, &len);
	rc = hetmm_migrate_to_device(j->pg, j->buf + off, len, NULL);
	return rc < 0 ? rc : 0;
}

static int do_to_sys(void *arg, int i)
{
	struct job *j = arg;
	size_t off, len;
	int rc;

	half(j, i, &off, &len);
	rc = hetmm_migrate_to_system(j->ctx, j->buf + off, len, NULL);
	return rc < 0 ? rc : 0;
}

static int do_touch(void *arg, int i)
{
	struct job *j = arg;
	size_t off, len;
	uint64_t sum = 0;

	half(j, i, &off, &len);
	for (size_t o = 0; o < len; o += PAGE)
		sum += ((volatile unsigned char *)j->buf)[off + o];
	j->sum[i] = sum;
	return 0;
}

static int do_memcpy(void *arg, int i)
{
	struct job *j = arg;
	size_t off, len;

	half(j, i, &off, &len);
	memcpy(j->buf + off, j->src + off, len);
	return 0;
}

static int do_copy(void *arg, int i)
{
	struct job *j = arg;
	size_t off, len;

	half(j, i, &off, &len);
	return raw_copy(j->fd, j->buf + off, j->src + off, len, CHUNK_2M,
			UFFDIO_COPY_MODE_DONTWAKE);
}

static int do_move(void *arg, int i)
{
	struct job *j = arg;
	size_t off, len;

	half(j, i, &off, &len);
	return raw_move(j->fd, j->buf + off, j->src + off, len, CHUNK_2M);
}

/* hetmm, t threads: the three operations, one repetition. */
static int hetmm_rep(struct job *j, double ns[NSCALE_OPS])
{
	int rc;

	j->buf = map_anon(j->size, 0);
	if (!j->buf)
		return -ENOMEM;
	populate(j->buf, j->size, 0xa5);
	rc = par_run(j->nthreads, do_to_dev, j, &ns[SCALE_TO_DEVICE]);
	if (!rc)
		rc = par_run(j->nthreads, do_to_sys, j, &ns[SCALE_TO_SYSTEM]);
	if (!rc && (j->buf[0] != (char)0xa5 ||
		    j->buf[j->size - 1] != (char)0xa5))
		rc = -EIO;
	if (!rc) {
		rc = hetmm_migrate_to_device(j->pg, j->buf, j->size, NULL);
		if (rc > 0)
			rc = 0;
	}
	if (!rc) {
		j->sum[0] = j->sum[1] = 0;
		rc = par_run(j->nthreads, do_touch, j, &ns[SCALE_FAULT_SEQ]);
		if (!rc && j->sum[0] + j->sum[1] != 0xa5ull * (j->size / PAGE))
			rc = -EIO;
	}
	if (rc == -EIO)
		warn_("scale: DATA MISMATCH with %d threads", j->nthreads);
	munmap(j->buf, j->size);
	return rc;
}

/* A fresh registered region filled by fn from j->src. */
static int raw_rep(struct job *j, par_fn fn, double *ns)
{
	int rc;

	j->buf = map_anon(j->size, 0);
	if (!j->buf)
		return -ENOMEM;
	rc = uffd_register_missing(j->fd, j->buf, j->size, NULL);
	if (!rc)
		rc = par_run(j->nthreads, fn, j, ns);
	if (!rc && (j->buf[0] != 0x77 || j->buf[j->size - 1] != 0x77))
		rc = -EIO;
	munmap(j->buf, j->size);
	return rc;
}

static int base_reps(struct job *j, int reps, int has_move,
		     double *memcpy_ns, double *copy_ns, double *move_ns)
{
	double tm[MAX_REPS], tc[MAX_REPS], tv[MAX_REPS];
	char *dst;
	int rc = 0;

	*memcpy_ns = *copy_ns = *move_ns = NAN;
	j->src = map_anon(j->size, 1);
	dst = map_anon(j->size, 1);
	if (!j->src || !dst) {
		rc = -ENOMEM;
		goto out;
	}
	populate(j->src, j->size, 0x77);
	populate(dst, j->size, 0);
	for (int r = -1; r < reps && !rc; r++) {
		double m = NAN, c = NAN;

		j->buf = dst;
		rc = par_run(j->nthreads, do_memcpy, j, &m);
		if (!rc)
			rc = raw_rep(j, do_copy, &c);
		if (r >= 0) {
			tm[r] = m;
			tc[r] = c;
		}
	}
	munmap(j->src, j->size);
	j->src = NULL;
	if (rc)
		goto out;
	*memcpy_ns = median(tm, reps);
	*copy_ns = median(tc, reps);
	for (int r = -1; r < reps && has_move && !rc; r++) {
		double v = NAN;

		/* 4 KiB staging pages, exclusive to us; MOVE eats them. */
		j->src = map_anon(j->size, -1);
		if (!j->src) {
			rc = -ENOMEM;
			break;
		}
		populate(j->src, j->size, 0x77);
		rc = raw_rep(j, do_move, &v);
		munmap(j->src, j->size);
		j->src = NULL;
		if (r >= 0)
			tv[r] = v;
	}
	if (!rc && has_move)
		*move_ns = median(tv, reps);
out:
	if (j->src)
		munmap(j->src, j->size);
	if (dst)
		munmap(dst, j->size);
	return rc;
}

int bench_scale(struct hetmm_ctx *ctx, int raw_fd, int has_move, size_t size,
		int reps, struct scale_result *r)
{
	struct hetmm_emu *emu = NULL;
	struct job j;
	int rc;

	memset(r, 0, sizeof(*r));
	r->size = size;
	for (int o = 0; o < NSCALE_OPS; o++)
		for (int t = 0; t < 2; t++)
			r->hetmm_ns[o][t] = r->base_ns[o][t] = NAN;
	r->move_ns[0] = r->move_ns[1] = NAN;
	r->base_kind[SCALE_TO_DEVICE] = "memcpy";
	r->base_kind[SCALE_TO_SYSTEM] = "UFFDIO_COPY 2 MiB/ioctl";
	r->base_kind[SCALE_FAULT_SEQ] = "UFFDIO_COPY 2 MiB/ioctl";
	memset(&j, 0, sizeof(j));
	j.ctx = ctx;
	j.fd = raw_fd;
	j.size = size;
	rc = hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_PRIVATE, size / PAGE,
			      &emu);
	if (rc) {
		r->err = rc;
		return rc;
	}
	rc = hetmm_emu_pagemap(emu, &j.pg);
	for (int t = 1; t <= 2 && !rc; t++) {
		double ts[NSCALE_OPS][MAX_REPS], m, c, v;

		j.nthreads = t;
		for (int k = -1; k < reps && !rc; k++) {
			double ns[NSCALE_OPS];

			rc = hetmm_rep(&j, ns);
			for (int o = 0; o < NSCALE_OPS && k >= 0; o++)
				ts[o][k] = ns[o];
		}
		if (rc)
			break;
		for (int o = 0; o < NSCALE_OPS; o++)
			r->hetmm_ns[o][t - 1] = median(ts[o], reps);
		rc = base_reps(&j, reps, has_move, &m, &c, &v);
		r->base_ns[SCALE_TO_DEVICE][t - 1] = m;
		r->base_ns[SCALE_TO_SYSTEM][t - 1] = c;
		r->base_ns[SCALE_FAULT_SEQ][t - 1] = c;
		r->move_ns[t - 1] = v;
	}
	{
		int r2 = hetmm_emu_destroy(emu);

		if (!rc)
			rc = r2;
	}
	r->err = rc;
	return rc;
}

static const char *op_name[NSCALE_OPS] = { "to_device", "to_system",
					   "fault_seq" };

void scale_print_text(const struct scale_result *r, int n)
{
	char sb[32];

	printf("\nscaling, 1 vs 2 threads on disjoint halves (cost per page; "
	       "ratio = baseline time / hetmm time, higher is better):\n");
	printf("  %-10s %6s %3s %11s %11s %10s %10s %7s  %s\n", "op", "size",
	       "thr", "hetmm GB/s", "base GB/s", "hetmm ns/p", "base ns/p",
	       "ratio", "baseline");
	for (int o = 0; o < NSCALE_OPS; o++) {
		for (int i = 0; i < n; i++) {
			const struct scale_result *s = &r[i];

			if (s->err) {
				if (o == 0)
					printf("  %-10s %6s  failed: %s\n", "",
					       fmt_size(s->size, sb, sizeof(sb)),
					       strerror(-s->err));
				continue;
			}
			for (int t = 0; t < 2; t++) {
				double h = s->hetmm_ns[o][t],
				       b = s->base_ns[o][t];

				printf("  %-10s %6s %3d %11.3f %11.3f %10.1f "
				       "%10.1f %7.3f  %s\n", op_name[o],
				       fmt_size(s->size, sb, sizeof(sb)), t + 1,
				       gbps(s->size, h), gbps(s->size, b),
				       ns_per_page(s->size, h),
				       ns_per_page(s->size, b), b / h,
				       s->base_kind[o]);
			}
		}
	}
	printf("  (UFFDIO_MOVE 2 MiB/ioctl for information, GB/s 1 thr / 2 "
	       "thr:");
	for (int i = 0; i < n; i++)
		printf(" %s %.2f/%.2f", fmt_size(r[i].size, sb, sizeof(sb)),
		       gbps(r[i].size, r[i].move_ns[0]),
		       gbps(r[i].size, r[i].move_ns[1]));
	printf(")\n");
}

void scale_print_json(FILE *f, const struct scale_result *r, int n)
{
	int first = 1;

	fputs(",\n  \"scaling\": [", f);
	for (int i = 0; i < n; i++) {
		const struct scale_result *s = &r[i];

		for (int o = 0; o < NSCALE_OPS; o++) {
			for (int t = 0; t < 2; t++) {
				double h = s->hetmm_ns[o][t],
				       b = s->base_ns[o][t];

				fprintf(f, "%s\n    {\"op\": \"%s\", \"size\": "
					"%zu, \"threads\": %d, \"hetmm_gbps\": ",
					first ? "" : ",", op_name[o], s->size,
					t + 1);
				first = 0;
				json_num(f, gbps(s->size, h), 4);
				fputs(", \"baseline_gbps\": ", f);
				json_num(f, gbps(s->size, b), 4);
				fputs(", \"hetmm_ns_per_page\": ", f);
				json_num(f, ns_per_page(s->size, h), 1);
				fputs(", \"baseline_ns_per_page\": ", f);
				json_num(f, ns_per_page(s->size, b), 1);
				fputs(", \"ratio\": ", f);
				json_num(f, b / h, 4);
				fputs(", \"baseline\": ", f);
				json_str(f, s->base_kind[o]);
				if (o == SCALE_TO_SYSTEM) {
					fputs(", \"raw_move_2m_gbps\": ", f);
					json_num(f, gbps(s->size,
							 s->move_ns[t]), 4);
				}
				fprintf(f, ", \"error\": %d}", s->err);
			}
		}
	}
	fputs("\n  ]", f);
}
