/* SPDX-License-Identifier: MIT */
/*
 * t.h - the tests' shared helper.
 *
 * CHECK and CHECK_EQ record a failure (file:line, the expression, both
 * values) and let the test go on, so one run shows every broken assertion;
 * REQUIRE stops the test at once where going on would only crash.  A test's
 * main ends with `return t_done();`, which exits non-zero if anything
 * failed.  All of it is safe to call from several threads.
 *
 * The pattern helpers fill and verify pages with words derived from a seed
 * and the page's index, so a page that lands at the wrong place, a stale
 * page and a torn copy all show up as a mismatch naming page and offset.
 */
#ifndef HETMM_T_H
#define HETMM_T_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hetmm.h"

/* The page size; a test of the shim's ABI alone, not linked with the
 * library, takes the kernel's as the kernel's selftests do. */
#ifndef PS
#define PS ((size_t)HETMM_PAGE_SIZE)
#endif

static int t_failures __attribute__((unused));

static inline void t_fail(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static inline void t_fail(const char *file, int line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s:%d: FAIL: %s\n", file, line, msg);
	__atomic_fetch_add(&t_failures, 1, __ATOMIC_RELAXED);
}

#define CHECK(cond)                                                       \
	do {                                                              \
		if (!(cond))                                              \
			t_fail(__FILE__, __LINE__, "%s", #cond);          \
	} while (0)

#define CHECK_EQ(a, b)                                                    \
	do {                                                              \
		long long t_a_ = (long long)(a), t_b_ = (long long)(b);   \
		if (t_a_ != t_b_)                                         \
			t_fail(__FILE__, __LINE__,                        \
			       "%s == %s: %lld (0x%llx) != %lld (0x%llx)", \
			       #a, #b, t_a_, (unsigned long long)t_a_,    \
			       t_b_, (unsigned long long)t_b_);           \
	} while (0)

/* A call that must succeed; prints the errno name of a negative return. */
#define CHECK_OK(expr)                                                    \
	do {                                                              \
		long long t_r_ = (long long)(expr);                       \
		if (t_r_ != 0)                                            \
			t_fail(__FILE__, __LINE__, "%s: %lld (%s)", #expr, \
			       t_r_, t_r_ < 0 ? strerror((int)-t_r_) : "?"); \
	} while (0)

#define REQUIRE(cond)                                                     \
	do {                                                              \
		if (!(cond)) {                                            \
			t_fail(__FILE__, __LINE__, "required: %s", #cond); \
			exit(1);                                          \
		}                                                         \
	} while (0)

#define REQUIRE_OK(expr)                                                  \
	do {                                                              \
		long long t_r_ = (long long)(expr);                       \
		if (t_r_ != 0) {                                          \
			t_fail(__FILE__, __LINE__, "required: %s: %lld (%s)", \
			       #expr, t_r_,                               \
			       t_r_ < 0 ? strerror((int)-t_r_) : "?");    \
			exit(1);                                          \
		}                                                         \
	} while (0)

static inline int t_done(void)
{
	int n = __atomic_load_n(&t_failures, __ATOMIC_RELAXED);

	if (n)
		fprintf(stderr, "FAILED: %d check(s)\n", n);
	else
		fprintf(stderr, "ok\n");
	return n ? 1 : 0;
}

/* ------------------------------------------------------------------------
 * Patterns: every 8-byte word of page i is a function of (seed, i, word).
 */

static inline uint64_t t_mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static inline uint64_t t_page_seed(uint64_t seed, size_t page)
{
	return t_mix(seed * 0x100000001b3ULL + page);
}

static inline uint64_t t_word(uint64_t page_seed, size_t word)
{
	return t_mix(page_seed ^ (word * 0xff51afd7ed558ccdULL));
}

/* Fill npages pages at p; page i gets the pattern of (seed, first + i). */
static inline void t_fill_from(void *p, size_t npages, uint64_t seed,
			       size_t first)
{
	for (size_t i = 0; i < npages; i++) {
		uint64_t *w = (uint64_t *)((char *)p + i * PS);
		uint64_t s = t_page_seed(seed, first + i);

		for (size_t j = 0; j < PS / 8; j++)
			w[j] = t_word(s, j);
	}
}

static inline void t_fill(void *p, size_t npages, uint64_t seed)
{
	t_fill_from(p, npages, seed, 0);
}

/*
 * Verify the pattern; returns the number of bad pages and reports the
 * first mismatch of each (at most a few) with its page and offset.
 */
static inline size_t t_verify_from_at(const void *p, size_t npages,
				      uint64_t seed, size_t first,
				      const char *file, int line)
{
	size_t bad = 0;

	for (size_t i = 0; i < npages; i++) {
		const uint64_t *w = (const uint64_t *)((const char *)p + i * PS);
		uint64_t s = t_page_seed(seed, first + i);

		for (size_t j = 0; j < PS / 8; j++) {
			uint64_t want = t_word(s, j);

			if (w[j] != want) {
				if (bad < 4)
					t_fail(file, line,
					       "pattern: page %zu offset %zu:"
					       " 0x%016" PRIx64
					       " != 0x%016" PRIx64,
					       i, j * 8, w[j], want);
				bad++;
				break;
			}
		}
	}
	if (bad > 4)
		t_fail(file, line, "pattern: %zu of %zu pages bad", bad,
		       npages);
	return bad;
}

#define t_verify_from(p, n, seed, first)                                  \
	t_verify_from_at((p), (n), (seed), (first), __FILE__, __LINE__)
#define t_verify(p, n, seed) t_verify_from_at((p), (n), (seed), 0, __FILE__, __LINE__)

/* Number of pages in [p, p + npages * PS) that are not all zero bytes. */
static inline size_t t_nonzero_pages(const void *p, size_t npages)
{
	size_t n = 0;

	for (size_t i = 0; i < npages; i++) {
		const uint64_t *w = (const uint64_t *)((const char *)p + i * PS);

		for (size_t j = 0; j < PS / 8; j++) {
			if (w[j]) {
				n++;
				break;
			}
		}
	}
	return n;
}

/* ------------------------------------------------------------------------
 * Process helpers
 */

/* Seconds on the monotonic clock. */
static inline double t_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/*
 * How many times slower than the host the test machine may be: a whole
 * factor >= 1 from HETMM_TEST_TIME_SCALE, 1 without it.  The guests under
 * software emulation set it (tools/kernels/), and a test that gives the
 * library a deadline (a driver's copy timeout, say) scales it by this, so
 * that a deadline meant to pass is not missed on a machine 10 times
 * slower; the behaviour checked stays the same.
 */
static inline unsigned t_time_scale(void)
{
	const char *s = getenv("HETMM_TEST_TIME_SCALE");
	unsigned long v = s ? strtoul(s, NULL, 10) : 1;

	return v >= 1 && v <= 1000 ? (unsigned)v : 1;
}

/* A field of /proc/self/status that the kernel gives in kB ("VmSize",
 * "RssAnon"), in KiB. */
static inline long t_status_kib(const char *field)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	size_t n = strlen(field);
	long kib = -1;

	REQUIRE(f);
	while (kib < 0 && fgets(line, sizeof(line), f))
		if (!strncmp(line, field, n) && line[n] == ':')
			sscanf(line + n + 1, "%ld kB", &kib);
	fclose(f);
	REQUIRE(kib >= 0);
	return kib;
}

/*
 * Run fn(arg) in a child, as case name: the child's exit status is its
 * result (0 if every check passed).  A child that does not finish within
 * limit seconds hangs: it is killed, and that is a failure, as is a child
 * that exits non-zero or dies of a signal.
 */
static inline void t_run_child_at(const char *name, int (*fn)(const void *),
				  const void *arg, unsigned limit,
				  const char *file, int line)
{
	fprintf(stderr, "case %s\n", name);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		t_failures = 0;   /* the case's own, not earlier cases' */
		_exit(fn(arg));
	}
	int status = 0;
	double end = t_now() + limit;
	pid_t got;
	while ((got = waitpid(pid, &status, WNOHANG)) == 0 && t_now() < end)
		usleep(10000);
	if (got == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		t_fail(file, line, "%s: hung (killed after %u s)", name, limit);
		return;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		t_fail(file, line, "%s: child %s %d", name,
		       WIFEXITED(status) ? "exited" : "killed by signal",
		       WIFEXITED(status) ? WEXITSTATUS(status)
					 : WTERMSIG(status));
}

#define t_run_child(name, fn, arg, limit)                                 \
	t_run_child_at((name), (fn), (arg), (limit), __FILE__, __LINE__)

/* Wait up to secs for *flag. */
static inline void t_wait_flag(atomic_bool *flag, double secs)
{
	for (double end = t_now() + secs; !atomic_load(flag) && t_now() < end;)
		usleep(1000);
}

/* /proc/self/task/<tid>/<file> into buf (at most len - 1 bytes, ended by
 * a 0); no allocation, so that the fault handler may call it (in a test
 * hook or notifier). */
static inline void t_task_file(pid_t tid, const char *file, char *buf,
			       size_t len)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d/%s", (int)tid, file);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, len - 1);
	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = 0;
}

/* Is thread tid asleep ('S' in its stat)? */
static inline bool t_thread_sleeps(pid_t tid)
{
	char buf[256];
	t_task_file(tid, "stat", buf, sizeof(buf));
	const char *s = strrchr(buf, ')');
	return s && s[1] == ' ' && s[2] == 'S';
}

/* Is thread tid waiting in a userfault (its wchan)? */
static inline bool t_in_userfault(pid_t tid)
{
	char buf[64];
	t_task_file(tid, "wchan", buf, sizeof(buf));
	return strcmp(buf, "handle_userfault") == 0;
}

/* Remove dir, a test's temporary directory, and the files in it. */
static inline void t_rmdir_files(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	char p[300];
	while ((e = readdir(d)))
		if (e->d_name[0] != '.') {
			snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
			unlink(p);
		}
	closedir(d);
	rmdir(dir);
}

/* A message waits on userfaultfd fd.  A userfaultfd polls only while
 * non-blocking, as the fault handler makes it to read what waits: call
 * it on the handler, which alone reads the file meanwhile. */
static inline bool t_uffd_waits(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return false;
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	bool in = poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN);
	fcntl(fd, F_SETFL, fl);
	return in;
}

/* A private anonymous read-write mapping of npages, never touched. */
static inline void *t_map(size_t npages)
{
	void *p = mmap(NULL, npages * PS, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	REQUIRE(p != MAP_FAILED);
	return p;
}

static inline void t_unmap(void *p, size_t npages)
{
	REQUIRE(munmap(p, npages * PS) == 0);
}

/* An emulated device of type with npages in ctx, and its pagemap. */
static inline void t_emu_add(struct hetmm_ctx *ctx,
			     enum hetmm_memory_type type, uint64_t npages,
			     struct hetmm_emu **emu, struct hetmm_pagemap **pg)
{
	REQUIRE_OK(hetmm_emu_create(ctx, type, npages, emu));
	REQUIRE_OK(hetmm_emu_pagemap(*emu, pg));
}

/* Does this kernel give coherent devices?  (A context of its own, made
 * and destroyed; any error but -EOPNOTSUPP fails the test.) */
static inline bool t_coherent_here(void)
{
	struct hetmm_ctx *c;
	struct hetmm_emu *emu;
	REQUIRE_OK(hetmm_ctx_create(&c, NULL));
	int rc = hetmm_emu_create(c, HETMM_MEMORY_DEVICE_COHERENT, 64, &emu);
	if (!rc)
		CHECK_OK(hetmm_emu_destroy(emu));
	CHECK_OK(hetmm_ctx_destroy(c));
	if (rc != -EOPNOTSUPP)
		REQUIRE_OK(rc);
	return rc == 0;
}

/* The set-up most tests start from: a context (params may be NULL) with
 * an emulated private device of npages, and the device's pagemap. */
static inline void t_emu_up(struct hetmm_ctx **ctx,
			    const struct hetmm_ctx_params *params,
			    uint64_t npages, struct hetmm_emu **emu,
			    struct hetmm_pagemap **pg)
{
	REQUIRE_OK(hetmm_ctx_create(ctx, params));
	t_emu_add(*ctx, HETMM_MEMORY_DEVICE_PRIVATE, npages, emu, pg);
}

/* A reservation of npages nobody else will map over: PROT_NONE. */
static inline void *t_reserve(size_t npages)
{
	void *p = mmap(NULL, npages * PS, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	REQUIRE(p != MAP_FAILED);
	return p;
}

/*
 * Like t_map, but a mapping of its own between two PROT_NONE guard
 * pages, which no neighbour merges with: for a test that counts faults
 * exactly.  hetmm registers whole mappings, and under ThreadSanitizer
 * the runtime's own memory, merged into a test's mapping, takes faults
 * of its own there (its deadlock detector's graph growing under a lock
 * a migration takes).  Unmapped with t_unmap_alone.
 */
static inline void *t_map_alone(size_t npages)
{
	char *r = t_reserve(npages + 2);
	void *p = mmap(r + PS, npages * PS, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);

	REQUIRE(p == r + PS);
	return p;
}

static inline void t_unmap_alone(void *p, size_t npages)
{
	t_unmap((char *)p - PS, npages + 2);
}

/*
 * A hole for a test's "nothing is mapped here" cases: a reservation,
 * unmapped only while they run.  Unmapped once and left so, a range
 * would not stay a hole: the kernel puts a later mmap in the highest gap
 * it fits, and glibc's malloc mmaps every block of 128 KiB or more (16
 * pages at 16 KiB pages), so on arm64 a test's own buffer filled its
 * hole and the "unmapped" read succeeded.  t_hole_close() reserves it
 * again, and stops the test if anything was mapped there meanwhile.
 */
static inline void t_hole_open(void *reserved, size_t npages)
{
	t_unmap(reserved, npages);
}

static inline void t_hole_close(void *p, size_t npages)
{
	void *r = mmap(p, npages * PS, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE |
			       MAP_FIXED_NOREPLACE, -1, 0);

	REQUIRE(r == p);
}

/* As t_map, placed so that page first starts a chunk boundary (512
 * pages, 2 MiB at 4 KiB pages): where a migration starts a new chunk. */
static inline void *t_map_chunk_at(size_t npages, size_t first)
{
	const uintptr_t chunk = 512 * PS;   /* pagecheck: a chunk, not a PMD */
	char *r = t_map(npages + 2 * chunk / PS);
	char *end = r + npages * PS + 2 * chunk;
	uintptr_t b = ((uintptr_t)r + first * PS + chunk - 1) & ~(chunk - 1);
	char *p = (char *)(b - first * PS);

	if (p > r)
		t_unmap(r, (size_t)(p - r) / PS);
	t_unmap(p + npages * PS, (size_t)(end - (p + npages * PS)) / PS);
	return p;
}

/*
 * The raw /proc/self/pagemap entry of addr (bit 63 present, bit 62
 * swapped); reading it never faults the page in.
 */
static inline uint64_t t_pagemap_entry(const void *addr)
{
	uint64_t e = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	REQUIRE(fd >= 0);
	REQUIRE(pread(fd, &e, sizeof(e),
		      (off_t)((uintptr_t)addr / PS * sizeof(e))) ==
		(ssize_t)sizeof(e));
	close(fd);
	return e;
}

/* 1 if the CPU page tables map addr right now. */
static inline int t_present(const void *addr)
{
	return (int)(t_pagemap_entry(addr) >> 63);
}

/*
 * The /proc/kpageflags word of the frame mapped at addr, asked of the
 * kernel alone: the PFN /proc/self/pagemap gives, then that frame's flags.
 * 1 with *flags set, 0 if nothing is mapped there, -1 where that can't be
 * told: both are root's (CAP_SYS_ADMIN; without it pagemap shows PFN 0).
 */
static inline int t_kpageflags_at(const void *addr, uint64_t *flags)
{
	uint64_t e = t_pagemap_entry(addr);
	uint64_t pfn = e & ((1ULL << 55) - 1);
	ssize_t got;
	int fd;

	if (!(e >> 63))
		return 0;
	if (pfn == 0)
		return -1;
	fd = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	got = pread(fd, flags, sizeof(*flags), (off_t)(pfn * sizeof(*flags)));
	close(fd);
	return got == (ssize_t)sizeof(*flags) ? 1 : -1;
}

/* 1 if the page at addr is the kernel's shared zero page (its frame's
 * KPF_ZERO_PAGE, bit 24), 0 if not (or not mapped), -1 where that can't
 * be told (not root). */
static inline int t_zero_page_at(const void *addr)
{
	uint64_t flags = 0;
	int rc = t_kpageflags_at(addr, &flags);

	return rc <= 0 ? rc : (int)(flags >> 24 & 1);
}

/* 1 if the page at addr is part of a transparent huge page (KPF_THP,
 * bit 22), 0 if not, -1 where that can't be told. */
static inline int t_thp_at(const void *addr)
{
	uint64_t flags = 0;
	int rc = t_kpageflags_at(addr, &flags);

	return rc <= 0 ? rc : (int)(flags >> 22 & 1);
}

/* The smaps field (with its colon, "Rss:") of the mapping holding p,
 * in kB; -1 if not found. */
static inline long t_smaps_kb(const void *p, const char *field)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[256];
	long kb = -1;
	bool in = false;
	size_t n = strlen(field);
	REQUIRE(f != NULL);
	while (fgets(line, sizeof(line), f)) {
		unsigned long a, b;
		char c;
		if (sscanf(line, "%lx-%lx %c", &a, &b, &c) == 3) {
			in = (uintptr_t)p >= a && (uintptr_t)p < b;
			continue;
		}
		if (in && !strncmp(line, field, n) &&
		    sscanf(line + n, "%ld", &kb) == 1)
			break;
	}
	fclose(f);
	return kb;
}

/* AnonHugePages of the mapping holding p, in kB; -1 if not found. */
static inline long t_anon_huge_kb(const void *p)
{
	return t_smaps_kb(p, "AnonHugePages:");
}

/* The first npages of the file fd hold t_fill's pattern for seed. */
static inline void t_write_pattern(int fd, size_t npages, uint64_t seed)
{
	char *buf = t_map(npages);
	t_fill(buf, npages, seed);
	REQUIRE(pwrite(fd, buf, npages * PS, 0) == (ssize_t)(npages * PS));
	t_unmap(buf, npages);
}

/* A file at path, made anew, of npages holding t_fill's pattern for
 * seed. */
static inline void t_pattern_file(const char *path, size_t npages,
				  uint64_t seed)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	REQUIRE(fd >= 0);
	t_write_pattern(fd, npages, seed);
	close(fd);
}

/*
 * A PMD-sized block (hetmm_pmd_size(): 2 MiB at 4 KiB pages, 32 MiB at
 * 16 KiB), aligned, of private anonymous memory that the kernel backs
 * with a transparent huge page at the first write (MADV_HUGEPAGE),
 * written, in a mapping of twice that (*map, to unmap) whose other pages
 * the kernel maps small.  NULL if the kernel gave small pages (THP off,
 * or no huge page free).
 */
static inline char *t_thp_block(char **map)
{
	const size_t huge = hetmm_pmd_size();
	char *m = mmap(NULL, 2 * huge, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *h;

	REQUIRE(m != MAP_FAILED);
	*map = m;
	h = (char *)(((uintptr_t)m + huge - 1) & ~(uintptr_t)(huge - 1));
	/* Small pages around it, whatever the system's THP default. */
	if (madvise(m, 2 * huge, MADV_NOHUGEPAGE) ||
	    madvise(h, huge, MADV_HUGEPAGE))
		return NULL;
	h[0] = 1;
	return t_thp_at(h) == 1 && t_thp_at(h + huge - PS) == 1 ? h : NULL;
}

/*
 * Does this kernel map its shared zero page on a read fault of untouched
 * private anonymous memory (Linux 6.1 does; some kernels give the process
 * a fresh page of its own instead)?  Tried on a page of our own that
 * hetmm never saw: 1 or 0, -1 where it can't be told (not root).
 */
static inline int t_read_maps_zero_page(void)
{
	char *p = t_map(1);
	int zp;

	(void)*(volatile char *)p;
	REQUIRE(t_present(p));
	zp = t_zero_page_at(p);
	t_unmap(p, 1);
	return zp;
}

/* 1 if hetmm has the page at addr on a device right now. */
static inline int t_on_device(struct hetmm_ctx *ctx, const void *addr)
{
	hetmm_pfn_t pfn;

	return hetmm_addr_to_pfn(ctx, addr, &pfn) == 0;
}

/* How many of the n pages at p hetmm has on a device right now. */
static inline size_t t_count_on_device(struct hetmm_ctx *ctx, const void *p,
				       size_t n)
{
	size_t c = 0;

	for (size_t i = 0; i < n; i++)
		c += (size_t)t_on_device(ctx, (const char *)p + i * PS);
	return c;
}

/* A page-aligned heap buffer of npages (for free()): memory hetmm does
 * not watch, to read a mirror into or write one from. */
static inline char *t_alloc_pages(size_t npages)
{
	char *p = NULL;

	REQUIRE(posix_memalign((void **)&p, PS, npages * PS) == 0);
	return p;
}

/* Migrate the npages at p to pg's device and check that all moved. */
static inline void t_to_device_at(struct hetmm_pagemap *pg, void *p,
				  size_t npages, const char *file, int line)
{
	struct hetmm_migrate_report rep;
	int rc;

	memset(&rep, 0, sizeof(rep));
	rc = hetmm_migrate_to_device(pg, p, npages * PS, &rep);
	if (rc != 0 || rep.moved != npages)
		t_fail(file, line, "to device: rc %d (%s), moved %" PRIu64
		       " of %zu", rc, rc < 0 ? strerror(-rc) : "-", rep.moved,
		       npages);
}
#define t_to_device(pg, p, n)                                            \
	t_to_device_at((pg), (p), (n), __FILE__, __LINE__)

/* A pagemap's free frames right now. */
static inline uint64_t t_nr_free(struct hetmm_pagemap *pg)
{
	struct hetmm_pagemap_info info;

	REQUIRE_OK(hetmm_pagemap_get_info(pg, &info));
	return info.nr_free;
}

/*
 * Frames of unmapped or migrated-back pages come back once the handler
 * has read the kernel's event: wait a bounded while (10 s) for pg's free
 * frames to reach want and return the last count, for the caller to
 * assert (the end state, not the timing).
 */
static inline uint64_t t_settled_free(struct hetmm_pagemap *pg, uint64_t want)
{
	double end = t_now() + 10.0;
	uint64_t n;

	while ((n = t_nr_free(pg)) != want && t_now() < end)
		usleep(1000);
	return n;
}

/* Count the entries of a /proc directory (fds, tasks). */
static inline int t_count_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	int n = 0;

	REQUIRE(d != NULL);
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] != '.')
			n++;
	}
	closedir(d);
	return n;
}

static inline int t_count_fds(void)
{
	return t_count_dir("/proc/self/fd") - 1; /* the opendir itself */
}

static inline int t_count_threads(void)
{
	return t_count_dir("/proc/self/task");
}

static inline struct hetmm_stats t_stats(struct hetmm_ctx *ctx)
{
	struct hetmm_stats s;

	memset(&s, 0, sizeof(s));
	REQUIRE_OK(hetmm_ctx_get_stats(ctx, &s));
	return s;
}

/*
 * Fork; the child runs fn(arg) and exits 0 only if no check of its own
 * failed (its output names them).  Returns the child's pid for t_reap.
 */
static inline pid_t t_spawn(void (*fn)(void *), void *arg)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		int base = __atomic_load_n(&t_failures, __ATOMIC_RELAXED);

		fn(arg);
		fflush(NULL);
		_exit(__atomic_load_n(&t_failures, __ATOMIC_RELAXED) != base);
	}
	return pid;
}

/* Wait for a child; a failure unless it exited 0. */
static inline void t_reap_at(pid_t pid, const char *file, int line)
{
	int st = 0;

	REQUIRE(waitpid(pid, &st, 0) == pid);
	if (WIFSIGNALED(st))
		t_fail(file, line, "child killed by signal %d", WTERMSIG(st));
	else if (WEXITSTATUS(st))
		t_fail(file, line, "child failed (exit %d)", WEXITSTATUS(st));
}
#define t_reap(pid) t_reap_at((pid), __FILE__, __LINE__)

/* In main(argc, argv): run the case name, or with an argument only the
 * case of that name (for debugging). */
#define RUN(name)                                                         \
	do {                                                              \
		if (argc < 2 || !strcmp(argv[1], #name))                  \
			name();                                           \
	} while (0)

/*
 * Snapshot values as the kernel's dmirror gives them: a device-private
 * page of the mirror's own device is LOCAL plus the mapping's permission;
 * another device's private page is not reported at all (hmm_range_fault
 * only hands out pages whose owner matches), so it reads as NONE.
 */
#define LOCAL_RW (HETMM_PROT_DEV_PRIVATE_LOCAL | HETMM_PROT_WRITE)
#define REMOTE_PRIVATE HETMM_PROT_NONE

/* Check that two stats snapshots are equal, field by field. */
#define CHECK_STATS_EQ(a, b)                                              \
	do {                                                              \
		CHECK_EQ((a).faults, (b).faults);                         \
		CHECK_EQ((a).fault_pages, (b).fault_pages);               \
		CHECK_EQ((a).fault_zero, (b).fault_zero);                 \
		CHECK_EQ((a).to_device_pages, (b).to_device_pages);       \
		CHECK_EQ((a).to_system_pages, (b).to_system_pages);       \
		CHECK_EQ((a).skipped_pages, (b).skipped_pages);           \
		CHECK_EQ((a).mirror_faults, (b).mirror_faults);           \
		CHECK_EQ((a).device_resident, (b).device_resident);       \
		CHECK_EQ((a).evictions, (b).evictions);                   \
		CHECK_EQ((a).pins, (b).pins);                             \
	} while (0)

#endif /* HETMM_T_H */
