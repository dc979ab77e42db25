/* SPDX-License-Identifier: MIT */
/*
 * common.c - helpers shared by the sections of `hetmm bench`.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "compat.h"

/* ------------------------------------------------------------------------
 * Small helpers
 */

static int g_midline; /* a progress line is open on stderr */

/* Progress on stderr. */
void note(const char *fmt, ...)
{
	char line[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n <= 0)
		return;
	fputs(line, stderr);
	g_midline = line[strlen(line) - 1] != '\n';
}

void warn_(const char *fmt, ...)
{
	va_list ap;

	if (g_midline)
		fputc('\n', stderr);
	g_midline = 0;
	fputs("hetmm bench: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Median of n values (sorts in place); NAN for n == 0. */
double median(double *v, int n)
{
	if (n <= 0)
		return NAN;
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	if (n & 1)
		return v[n / 2];
	return (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Nearest-rank percentile of sorted values. */
double percentile_sorted(const double *v, int n, double pct)
{
	long rank;

	if (n <= 0)
		return NAN;
	rank = (long)ceil(pct / 100.0 * n);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return v[rank - 1];
}

/* bytes per ns == GB/s (1e9 B/s). */
double gbps(size_t bytes, double ns)
{
	if (!(ns > 0))
		return NAN;
	return (double)bytes / ns;
}

double us_per_page(size_t bytes, double ns)
{
	if (!(ns > 0) || bytes < PAGE)
		return NAN;
	return ns / 1000.0 / (double)(bytes / PAGE);
}

/* thp: 0 leave default, 1 MADV_HUGEPAGE, -1 MADV_NOHUGEPAGE. */
void *map_anon(size_t len, int thp)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	if (thp > 0)
		(void)madvise(p, len, MADV_HUGEPAGE);
	else if (thp < 0)
		(void)madvise(p, len, MADV_NOHUGEPAGE);
	return p;
}

/* Populate with real (non-zero) pages. */
void populate(void *p, size_t len, int byte)
{
	(void)madvise(p, len, MADV_POPULATE_WRITE);
	memset(p, byte, len);
}

volatile uint64_t g_sink;

double first_touch_ns(size_t len)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (p == MAP_FAILED)
		return NAN;
	uint64_t sum = 0, t0 = now_ns();
	for (size_t o = 0; o < len; o += PAGE)
		sum += (uint8_t)p[o];
	double ns = (double)(now_ns() - t0);
	g_sink += sum;
	munmap(p, len);
	return ns;
}

const char *fmt_size(size_t sz, char *buf, size_t n)
{
	if (sz >= ((size_t)1 << 30) && !(sz & (((size_t)1 << 30) - 1)))
		snprintf(buf, n, "%zuG", sz >> 30);
	else if (sz >= MIB && !(sz & (MIB - 1)))
		snprintf(buf, n, "%zuM", sz >> 20);
	else if (sz >= 1024 && !(sz & 1023))
		snprintf(buf, n, "%zuK", sz >> 10);
	else
		snprintf(buf, n, "%zu", sz);
	return buf;
}

/* xorshift64* */
uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;   /* pagecheck: a hash */
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1Dull;
}

void shuffle(uint32_t *v, size_t n, uint64_t *seed)
{
	for (size_t i = n; i > 1; i--) {
		size_t j = (size_t)(rng_next(seed) % i);
		uint32_t t = v[i - 1];

		v[i - 1] = v[j];
		v[j] = t;
	}
}

/* ------------------------------------------------------------------------
 * Raw userfaultfd, for the baselines
 */

int uffd_open_raw(int flags)
{
	int fd = (int)syscall(SYS_userfaultfd, flags);

	if (fd >= 0)
		return fd;
	{
		int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);

		if (dev >= 0) {
			fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
			close(dev);
			if (fd >= 0)
				return fd;
		}
	}
	/* Our baselines only fault from user mode. */
	return (int)syscall(SYS_userfaultfd, flags | UFFD_USER_MODE_ONLY);
}

/* Open a uffd with the wanted features the kernel offers; -errno. */
int uffd_open_features(uint64_t want, int nonblock, uint64_t *got)
{
	int flags = O_CLOEXEC | (nonblock ? O_NONBLOCK : 0);
	struct uffdio_api api;
	uint64_t avail;
	int fd;

	fd = uffd_open_raw(flags);
	if (fd < 0)
		return -errno;
	memset(&api, 0, sizeof(api));
	api.api = UFFD_API;
	if (ioctl(fd, UFFDIO_API, &api)) {
		int e = errno;

		close(fd);
		return -e;
	}
	avail = api.features;
	close(fd);

	fd = uffd_open_raw(flags);
	if (fd < 0)
		return -errno;
	memset(&api, 0, sizeof(api));
	api.api = UFFD_API;
	api.features = want & avail;
	if (ioctl(fd, UFFDIO_API, &api)) {
		int e = errno;

		close(fd);
		return -e;
	}
	if (got)
		*got = want & avail;
	return fd;
}

int uffd_register_missing(int fd, void *p, size_t len, uint64_t *ioctls)
{
	struct uffdio_register r;

	memset(&r, 0, sizeof(r));
	r.range.start = (uintptr_t)p;
	r.range.len = len;
	r.mode = UFFDIO_REGISTER_MODE_MISSING;
	if (ioctl(fd, UFFDIO_REGISTER, &r))
		return -errno;
	if (ioctls)
		*ioctls = r.ioctls;
	return 0;
}

/* UFFDIO_COPY [dst, dst+len) from src, chunk bytes per ioctl. */
int raw_copy(int fd, char *dst, const char *src, size_t len,
		    size_t chunk, uint64_t mode)
{
	size_t off = 0;
	int spins = 0;

	while (off < len) {
		size_t n = len - off < chunk ? len - off : chunk;
		struct uffdio_copy c;

		c.dst = (uintptr_t)(dst + off);
		c.src = (uintptr_t)(src + off);
		c.len = n;
		c.mode = mode;
		c.copy = 0;
		if (ioctl(fd, UFFDIO_COPY, &c) == 0) {
			off += n;
			continue;
		}
		if (errno == EAGAIN) {
			if (c.copy > 0)
				off += (size_t)c.copy;
			else if (++spins > 1000000)
				return -EAGAIN;
			continue;
		}
		return -errno;
	}
	return 0;
}

int raw_move(int fd, char *dst, char *src, size_t len, size_t chunk)
{
	size_t off = 0;
	int spins = 0;

	while (off < len) {
		size_t n = len - off < chunk ? len - off : chunk;
		struct uffdio_move m;

		m.dst = (uintptr_t)(dst + off);
		m.src = (uintptr_t)(src + off);
		m.len = n;
		m.mode = UFFDIO_MOVE_MODE_DONTWAKE;
		m.move = 0;
		if (ioctl(fd, UFFDIO_MOVE, &m) == 0) {
			off += n;
			continue;
		}
		if (errno == EAGAIN) {
			if (m.move > 0)
				off += (size_t)m.move;
			else if (++spins > 1000000)
				return -EAGAIN;
			continue;
		}
		return -errno;
	}
	return 0;
}


/* ------------------------------------------------------------------------
 * JSON output
 */

void json_num(FILE *f, double v, int decimals)
{
	if (isnan(v) || isinf(v))
		fputs("null", f);
	else
		fprintf(f, "%.*f", decimals, v);
}

void json_field(FILE *f, const char *key, double v, int decimals)
{
	fprintf(f, ", \"%s\": ", key);
	json_num(f, v, decimals);
}

void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; s && *s; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', f);
		if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", *s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

/* ------------------------------------------------------------------------
 * Memory and threads
 */

double ns_per_page(size_t bytes, double ns)
{
	if (!(ns > 0) || bytes < PAGE)
		return NAN;
	return ns / (double)(bytes / PAGE);
}

size_t mem_available(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[128];
	unsigned long long kb = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
			break;
	}
	fclose(f);
	return (size_t)kb * 1024;
}

#define PAR_MAX 8

struct par_ctl {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int go;          /* 0 wait, 1 run, -1 give up */
	int done;
	par_fn fn;
	void *arg;
	int rc[PAR_MAX];
};

struct par_arg {
	struct par_ctl *ctl;
	int i;
};

static void *par_main(void *p)
{
	struct par_arg *a = p;
	struct par_ctl *c = a->ctl;
	int go;

	pthread_mutex_lock(&c->lock);
	while (!c->go)
		pthread_cond_wait(&c->cond, &c->lock);
	go = c->go;
	pthread_mutex_unlock(&c->lock);
	if (go > 0)
		c->rc[a->i] = c->fn(c->arg, a->i);
	pthread_mutex_lock(&c->lock);
	c->done++;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

int par_run(int nthreads, par_fn fn, void *arg, double *ns)
{
	struct par_ctl c;
	struct par_arg pa[PAR_MAX];
	pthread_t thr[PAR_MAX];
	uint64_t t0 = 0, t1;
	int started = 0, rc = 0;

	*ns = NAN;
	if (nthreads < 1 || nthreads > PAR_MAX)
		return -EINVAL;
	if (nthreads == 1) {
		t0 = now_ns();
		rc = fn(arg, 0);
		*ns = (double)(now_ns() - t0);
		return rc;
	}
	memset(&c, 0, sizeof(c));
	pthread_mutex_init(&c.lock, NULL);
	pthread_cond_init(&c.cond, NULL);
	c.fn = fn;
	c.arg = arg;
	for (int i = 0; i < nthreads; i++) {
		pa[i].ctl = &c;
		pa[i].i = i;
		if (pthread_create(&thr[i], NULL, par_main, &pa[i])) {
			rc = -EAGAIN;
			break;
		}
		started++;
	}
	pthread_mutex_lock(&c.lock);
	c.go = rc ? -1 : 1;
	t0 = now_ns();
	pthread_cond_broadcast(&c.cond);
	while (c.done < started)
		pthread_cond_wait(&c.cond, &c.lock);
	t1 = now_ns();
	pthread_mutex_unlock(&c.lock);
	for (int i = 0; i < started; i++)
		pthread_join(thr[i], NULL);
	pthread_mutex_destroy(&c.lock);
	pthread_cond_destroy(&c.cond);
	if (rc)
		return rc;
	*ns = (double)(t1 - t0);
	for (int i = 0; i < nthreads; i++)
		if (c.rc[i] && !rc)
			rc = c.rc[i];
	return rc;
}

/* ------------------------------------------------------------------------
 * hetmm repetitions the sections share
 */

int buffer_to_device(struct hetmm_pagemap *pg, size_t size, int byte,
		     char **bufp, double *ns)
{
	struct hetmm_migrate_report rep;
	uint64_t npages = size / PAGE, t0;
	char *buf = map_anon(size, 0);
	int rc;

	if (!buf)
		return -ENOMEM;
	populate(buf, size, byte);
	memset(&rep, 0, sizeof(rep));
	t0 = now_ns();
	rc = hetmm_migrate_to_device(pg, buf, size, &rep);
	if (ns)
		*ns = (double)(now_ns() - t0);
	if (rc < 0) {
		warn_("hetmm_migrate_to_device(%zu bytes): %s", size,
		      strerror(-rc));
		munmap(buf, size);
		return rc;
	}
	if (rep.moved != npages)
		warn_("hetmm_migrate_to_device moved %" PRIu64 " of %" PRIu64
		      " pages (skipped %" PRIu64 ")", rep.moved, npages,
		      rep.skipped);
	*bufp = buf;
	return 0;
}

int migrate_round_trip(struct hetmm_ctx *ctx, struct hetmm_pagemap *pg,
		       size_t size, double *tdev, double *tsys)
{
	struct hetmm_migrate_report rep;
	uint64_t npages = size / PAGE, t0;
	char *buf;
	int rc = buffer_to_device(pg, size, 0xa5, &buf, tdev);

	if (rc)
		return rc;
	memset(&rep, 0, sizeof(rep));
	t0 = now_ns();
	rc = hetmm_migrate_to_system(ctx, buf, size, &rep);
	*tsys = (double)(now_ns() - t0);
	if (rc < 0) {
		warn_("hetmm_migrate_to_system(%zu bytes): %s", size,
		      strerror(-rc));
		goto out;
	}
	rc = 0;
	/* Untimed spot check of the data. */
	for (uint64_t i = 0; i < npages; i += (npages + 63) / 64) {
		unsigned char v = ((volatile unsigned char *)buf)
			[i * PAGE + (i * 97) % PAGE];

		if (v != 0xa5) {
			warn_("DATA MISMATCH after migrate back: page %" PRIu64
			      " has 0x%02x, want 0xa5", i, v);
			rc = -EIO;
			break;
		}
	}
out:
	munmap(buf, size);
	return rc;
}

int fault_read_once(struct hetmm_ctx *ctx, struct hetmm_pagemap *pg,
		    size_t size, const uint32_t *perm, double *ns,
		    double *faults, double *fpages)
{
	struct hetmm_stats s0, s1;
	uint64_t npages = size / PAGE, sum = 0, t0, t1;
	char *buf;
	int rc = buffer_to_device(pg, size, 0x3c, &buf, NULL);

	if (rc)
		return rc;
	hetmm_ctx_get_stats(ctx, &s0);
	t0 = now_ns();
	for (uint64_t i = 0; i < npages; i++)
		sum += ((volatile unsigned char *)buf)
			[(perm ? perm[i] : i) * PAGE];
	t1 = now_ns();
	hetmm_ctx_get_stats(ctx, &s1);
	munmap(buf, size);
	g_sink += sum;
	if (sum != 0x3cull * npages) {
		warn_("DATA MISMATCH in fault-back: sum %" PRIu64 ", want %"
		      PRIu64, sum, (uint64_t)0x3c * npages);
		return -EIO;
	}
	*ns = (double)(t1 - t0);
	*faults = (double)(s1.faults - s0.faults);
	*fpages = (double)(s1.fault_pages - s0.fault_pages);
	return 0;
}
