/* SPDX-License-Identifier: MIT */
/*
 * world.c - the memory the fuzz targets hand to calls, its model, and the
 * oracle (see world.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "world.h"

#define MIN_U64(a, b) \
	((uint64_t)(a) < (uint64_t)(b) ? (uint64_t)(a) : (uint64_t)(b))

struct world W;

/* A read-only page and an executable one, each a file's page, in the low
 * reservation (PROT_NONE around them, so that no range from them runs into
 * memory the harness does not own): readable, never writable, known
 * bytes. */
#define RO_PAGE_AT 8      /* pages into the low reservation */
#define EXEC_PAGE_AT 16
static uintptr_t text_page;
static uint8_t *ro_copy, *text_copy;   /* to check they never change */

static int file_fd = -1;   /* the memfd FILE slots map privately */

/* ------------------------------------------------------------------------
 * The input
 */

uint8_t in_u8(struct input *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

uint16_t in_u16(struct input *in)
{
	return (uint16_t)(in_u8(in) | (uint16_t)in_u8(in) << 8);
}

uint32_t in_u32(struct input *in)
{
	return in_u16(in) | (uint32_t)in_u16(in) << 16;
}

uint64_t in_u64(struct input *in)
{
	return in_u32(in) | (uint64_t)in_u32(in) << 32;
}

bool in_empty(const struct input *in)
{
	return in->n == 0;
}

/* ------------------------------------------------------------------------
 * Tracing and known findings
 */

bool fuzz_tracing;

void fuzz_trace(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "  | ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
}

bool fuzz_avoid(const char *name)
{
	static const char *list;
	static bool read;
	if (!read) {
		list = getenv("FUZZ_AVOID");
		read = true;
	}
	if (!list || !*list)
		return false;
	if (!strcmp(list, "all"))
		return true;
	size_t n = strlen(name);
	for (const char *p = list; (p = strstr(p, name)); p += n)
		if ((p == list || p[-1] == ',') && (p[n] == ',' || !p[n]))
			return true;
	return false;
}

/* ------------------------------------------------------------------------
 * Failing
 */

void fuzz_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "\n==fuzz %s== ERROR: ORACLE FAILURE: ",
		W.target ? W.target : "?");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	fflush(stderr);
	abort();
}

/* ------------------------------------------------------------------------
 * Patterns
 */

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* Fill a page with words of its own: a page in the wrong place, a stale
 * page or a torn copy shows as a mismatch. */
static void pattern(uint8_t *dst, uint64_t seed)
{
	uint64_t w = mix(seed);
	for (size_t i = 0; i < PS; i += 8) {
		w = w * 6364136223846793005ULL + 1442695040888963407ULL;
		memcpy(dst + i, &w, 8);
	}
}

/* ------------------------------------------------------------------------
 * Setup
 */

void world_init(const char *target)
{
	W.target = target;
	const char *t = getenv("FUZZ_TRACE");
	fuzz_tracing = t && *t && strcmp(t, "0");
	size_t total = (2 * WORLD_RESERVE + WORLD_PAGES) * PS;
	void *p = mmap((void *)(uintptr_t)WORLD_FIXED_ADDR, total, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE |
		       MAP_FIXED_NOREPLACE, -1, 0);
	if (p == MAP_FAILED)
		p = mmap(NULL, total, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		fuzz_fail("world_init: mmap: %s", strerror(errno));
	W.lo = (uintptr_t)p;
	W.hi = W.lo + total;
	W.base = W.lo + WORLD_RESERVE * PS;
	W.model = calloc(WORLD_PAGES, PS);
	W.scratch = malloc(PS);
	ro_copy = malloc(PS);
	text_copy = malloc(PS);
	if (!W.model || !W.scratch || !ro_copy || !text_copy)
		fuzz_fail("world_init: out of memory");
	W.pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (W.pagemap_fd < 0)
		fuzz_fail("world_init: /proc/self/pagemap: %s", strerror(errno));
	file_fd = memfd_create("fuzz-file-slot", MFD_CLOEXEC);
	if (file_fd < 0 || ftruncate(file_fd, SLOT_PAGES * PS))
		fuzz_fail("world_init: memfd: %s", strerror(errno));
	int fd = memfd_create("fuzz-static-pages", MFD_CLOEXEC);
	uint8_t page[HETMM_PAGE_SIZE];
	for (int i = 0; i < 2; i++) {
		pattern(page, 0xabcdef + (uint64_t)i);
		if (fd < 0 || pwrite(fd, page, PS, (off_t)(i * PS)) != (ssize_t)PS)
			fuzz_fail("world_init: static pages: %s",
				  strerror(errno));
	}
	W.ro_page = W.lo + RO_PAGE_AT * PS;
	text_page = W.lo + EXEC_PAGE_AT * PS;
	if (mmap((void *)W.ro_page, PS, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd,
		 0) != (void *)W.ro_page ||
	    mmap((void *)text_page, PS, PROT_READ | PROT_EXEC,
		 MAP_PRIVATE | MAP_FIXED, fd, (off_t)PS) != (void *)text_page)
		fuzz_fail("world_init: static pages: %s", strerror(errno));
	close(fd);
	memcpy(ro_copy, (void *)W.ro_page, PS);
	memcpy(text_copy, (void *)text_page, PS);
}

static unsigned last_map_id;
bool (*world_coherent_hook)(uintptr_t addr);
void (*world_sync_hook)(void);

unsigned world_new_map_id(void)
{
	return ++last_map_id;
}

static void set_flags(size_t first, size_t n, struct wpage f)
{
	for (size_t i = first; i < first + n; i++)
		W.pg[i] = f;
}

static void fill(size_t first, size_t n)
{
	for (size_t i = first; i < first + n; i++) {
		pattern(W.model + i * PS, W.gen * 1000003 + i);
		memcpy((void *)(W.base + i * PS), W.model + i * PS, PS);
	}
}

static void must(int ok, const char *what)
{
	if (!ok)
		fuzz_fail("world_reset: %s: %s", what, strerror(errno));
}

void world_reset(struct input *in)
{
	W.gen++;
	/* Everything read-write private first: this replaces whatever the
	 * last input left (device pages go with their mapping). */
	void *p = mmap((void *)W.base, WORLD_PAGES * PS, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	must(p == (void *)W.base, "mmap");
	memset(W.model, 0, WORLD_PAGES * PS);
	const struct wpage rw = { .mapped = true, .readable = true,
				  .writable = true, .priv_anon = true,
				  .map_id = world_new_map_id() };
	set_flags(0, WORLD_PAGES, rw);
	fill(0, 1);
	fill(WORLD_PAGES - 1, 1);

	for (size_t i = 0; i < WORLD_PAGES; i++)
		if (W.busy[i])
			fuzz_fail("world_reset: page %zu still busy", i);
	uint8_t kinds = 0;
	for (size_t s = 0; s < WORLD_SLOTS; s++) {
		size_t first = 1 + s * SLOT_PAGES;
		void *a = (void *)(W.base + first * PS);
		size_t len = SLOT_PAGES * PS;
		struct wpage f = rw;
		if (s % 2 == 0)
			kinds = in_u8(in);
		unsigned kind = (s % 2 ? kinds >> 4 : kinds & 15) % SLOT_KINDS;
		switch ((enum slot_kind)kind) {
		case SLOT_RW:
		default:
			fill(first, SLOT_PAGES);
			break;
		case SLOT_RW_UNTOUCHED:
			break;
		case SLOT_RO:
			fill(first, SLOT_PAGES);
			must(!mprotect(a, len, PROT_READ), "mprotect");
			f.writable = false;
			f.map_id = world_new_map_id();
			break;
		case SLOT_NONE:
			fill(first, SLOT_PAGES);
			must(!mprotect(a, len, PROT_NONE), "mprotect");
			f.readable = f.writable = false;
			f.map_id = world_new_map_id();
			break;
		case SLOT_UNMAPPED:
			must(!munmap(a, len), "munmap");
			f = (struct wpage){ 0 };
			break;
		case SLOT_SHARED:
			must(mmap(a, len, PROT_READ | PROT_WRITE,
				  MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1,
				  0) == a, "mmap shared");
			f.priv_anon = false;
			f.shared = true;
			f.map_id = world_new_map_id();
			fill(first, SLOT_PAGES);
			break;
		case SLOT_FILE:
			must(mmap(a, len, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_FIXED, file_fd, 0) == a,
			     "mmap file");
			f.priv_anon = false;
			f.file = true;
			f.map_id = world_new_map_id();
			fill(first, SLOT_PAGES);
			break;
		}
		set_flags(first, SLOT_PAGES, f);
		TRACE("slot %zu: pages %zu-%zu at %p: %s", s, first,
		      first + SLOT_PAGES - 1, a,
		      (const char *[]){ "rw", "rw untouched", "read-only",
					"PROT_NONE", "unmapped", "shared",
					"file" }[kind]);
	}
}

/* ------------------------------------------------------------------------
 * Ranges
 */

bool ranges_overlap(uintptr_t a, uint64_t alen, uintptr_t b, uint64_t blen)
{
	if (!alen || !blen)
		return false;
	/* Ends computed without wrapping: a range that wraps reaches the
	 * top of the address space. */
	uint64_t aend = a + alen < a ? UINT64_MAX : a + alen;
	uint64_t bend = b + blen < b ? UINT64_MAX : b + blen;
	return a < bend && b < aend;
}

void asked_clear(struct asked *a)
{
	a->n = 0;
}

void asked_add(struct asked *a, uintptr_t start, uint64_t len,
	       const uint8_t *expect)
{
	if (!len)
		return;
	if (a->n == MAX_RANGES)
		fuzz_fail("asked_add: too many ranges");
	a->r[a->n++] = (struct wrange){ start, len, expect };
}

#define MAX_KNOWN 8
static struct {
	uintptr_t start;
	size_t len;
} known[MAX_KNOWN];
static int nr_known;

void known_buffer(const void *buf, size_t len)
{
	if (nr_known == MAX_KNOWN)
		fuzz_fail("known_buffer: too many");
	known[nr_known].start = (uintptr_t)buf;
	known[nr_known].len = len;
	nr_known++;
}

void known_buffers_clear(void)
{
	nr_known = 0;
}

/* Bytes a from a static page, or a registered buffer: how many from a
 * are known there (0 if a is in none), copied to out if out. */
static size_t known_static(uintptr_t a, uint64_t len, uint8_t *out,
			   bool want_write)
{
	for (int i = 0; i < nr_known; i++) {
		uintptr_t s = known[i].start;
		if (a >= s && a < s + known[i].len) {
			size_t n = (size_t)MIN_U64(len, s + known[i].len - a);
			if (out)
				memcpy(out, (void *)a, n);
			return n;
		}
	}
	if (want_write)
		return 0;
	const uintptr_t pages[2] = { W.ro_page, text_page };
	for (int i = 0; i < 2; i++) {
		if (a >= pages[i] && a < pages[i] + PS) {
			size_t n = (size_t)MIN_U64(len, pages[i] + PS - a);
			if (out)
				memcpy(out, (void *)a, n);
			return n;
		}
	}
	return 0;
}

static bool range_ok(uintptr_t addr, uint64_t len, uint8_t *out, bool write)
{
	if (addr + len < addr)
		return false;
	uint64_t done = 0;
	while (done < len) {
		uintptr_t a = addr + done;
		size_t n;
		if (in_world(a)) {
			size_t i = world_index(a);
			const struct wpage *pg = &W.pg[i];
			if (!pg->mapped || !pg->readable ||
			    (write && !pg->writable))
				return false;
			uintptr_t pend = W.base + (i + 1) * PS;
			n = (size_t)MIN_U64(len - done, pend - a);
			if (out)
				memcpy(out + done, W.model + (a - W.base), n);
		} else {
			n = known_static(a, len - done, out ? out + done : NULL,
					 write);
			if (!n)
				return false;
		}
		done += n;
	}
	return true;
}

bool known_bytes(uintptr_t addr, uint64_t len, uint8_t *out)
{
	return range_ok(addr, len, out, false);
}

bool range_readable(uintptr_t addr, uint64_t len)
{
	return range_ok(addr, len, NULL, false);
}

bool range_writable(uintptr_t addr, uint64_t len)
{
	return range_ok(addr, len, NULL, true);
}

/* ------------------------------------------------------------------------
 * The oracle
 */

static void read_pagemap(uint64_t *ent)
{
	off_t off = (off_t)(W.base / PS * 8);
	ssize_t n = pread(W.pagemap_fd, ent, WORLD_PAGES * 8, off);
	if (n != (ssize_t)(WORLD_PAGES * 8))
		fuzz_fail("pagemap read: %zd (%s)", n, strerror(errno));
}

static size_t first_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (a[i] != b[i])
			return i;
	return n;
}

static void page_mismatch(size_t i, const uint8_t *got, const uint8_t *want,
			  const char *what, const char *why)
{
	size_t off = first_diff(got, want, PS);
	size_t n = 0;
	for (size_t k = 0; k < PS; k++)
		n += got[k] != want[k];
	fuzz_fail("after %s: world page %zu (%#" PRIxPTR ", %s%s%s%s) %s: "
		  "%zu bytes differ, first at +%#zx: %#x, want %#x",
		  what, i, W.base + i * PS,
		  W.pg[i].priv_anon ? "private anon" :
		  W.pg[i].shared ? "shared" : "file",
		  W.pg[i].readable ? " R" : "", W.pg[i].writable ? "W" : "",
		  i == 0 || i == WORLD_PAGES - 1 ? ", guard" : "", why, n, off,
		  got[off], want[off]);
}

/* The statics no call may change. */
static void check_statics(const char *what)
{
	if (memcmp(ro_copy, (void *)W.ro_page, PS))
		fuzz_fail("after %s: the read-only file page changed", what);
	if (memcmp(text_copy, (void *)text_page, PS))
		fuzz_fail("after %s: the executable file page changed", what);
}

/* A hole of the world must stay one: a mapping there is somebody's
 * (the library's) mapping in memory nobody gave it. */
static void check_hole(size_t i, const char *what)
{
	uintptr_t a = W.base + i * PS;
	if (msync((void *)a, PS, MS_ASYNC) == 0)
		fuzz_fail("after %s: world page %zu (%#" PRIxPTR ") was "
			  "unmapped and is mapped now", what, i, a);
}

void world_check(const struct asked *a, bool ok, const char *what)
{
	uint64_t ent[WORLD_PAGES];
	read_pagemap(ent);
	check_statics(what);
	/* A call that says it wrote a range must have been able to. */
	if (ok) {
		for (int r = 0; r < a->n; r++)
			if (a->r[r].expect &&
			    !range_writable(a->r[r].start, a->r[r].len))
				fuzz_fail("after %s: success, yet its output "
					  "range %#" PRIxPTR "+%#" PRIx64
					  " is not writable memory", what,
					  a->r[r].start, a->r[r].len);
	}
	/* What a successful call wrote into the harness's own buffers. */
	for (int r = 0; ok && r < a->n; r++) {
		const struct wrange *w = &a->r[r];
		if (!w->expect)
			continue;
		for (int k = 0; k < nr_known; k++) {
			uintptr_t s = known[k].start, e = s + known[k].len;
			uint64_t wend = w->start + w->len;
			uintptr_t lo = w->start > s ? w->start : s;
			uintptr_t hi = wend < e ? wend : e;
			if (lo >= hi)
				continue;
			size_t off = first_diff((const uint8_t *)lo,
						w->expect + (lo - w->start),
						hi - lo);
			if (off < hi - lo)
				fuzz_fail("after %s: its output at %#" PRIxPTR
					  " (a harness buffer) differs from what "
					  "it should hold at +%#zx: %#x, want %#x",
					  what, lo, off + (lo - w->start),
					  ((const uint8_t *)lo)[off],
					  w->expect[lo - w->start + off]);
		}
	}
	for (size_t i = 0; i < WORLD_PAGES; i++) {
		const struct wpage *pg = &W.pg[i];
		uintptr_t pa = W.base + i * PS;
		if (!pg->mapped) {
			check_hole(i, what);
			continue;
		}
		bool asked = false;
		for (int r = 0; r < a->n; r++)
			asked |= ranges_overlap(pa, PS, a->r[r].start,
						a->r[r].len);
		if (!pg->readable && !asked)
			continue;   /* checked at the end of the input */
		bool present = ent[i] >> 63;
		uint8_t *old = W.model + i * PS;
		if (!asked) {
			if (present && memcmp((void *)pa, old, PS))
				page_mismatch(i, (const uint8_t *)pa, old, what,
					      "changed, not asked to");
			continue;
		}
		/* What the page would hold with the call's bytes in, and
		 * which bytes anything goes for. */
		uint8_t *want = W.scratch;
		static uint8_t any[PS_MAX];
		memcpy(want, old, PS);
		memset(any, 0, PS);
		for (int r = 0; r < a->n; r++) {
			const struct wrange *w = &a->r[r];
			if (!ranges_overlap(pa, PS, w->start, w->len))
				continue;
			uintptr_t s = w->start > pa ? w->start : pa;
			uint64_t wend = w->start + w->len < w->start ?
					UINT64_MAX : w->start + w->len;
			uintptr_t e = wend < pa + PS ? wend : pa + PS;
			if (w->expect)
				memcpy(want + (s - pa), w->expect + (s - w->start),
				       e - s);
			else
				memset(any + (s - pa), 1, e - s);
		}
		/* Read through the CPU: device pages come back for it.  A
		 * page without PROT_READ (write-only, or PROT_NONE) is made
		 * readable for the read. */
		uint8_t got[HETMM_PAGE_SIZE];
		int prot = pg->writable ? PROT_WRITE : PROT_NONE;
		if (!pg->readable &&
		    mprotect((void *)pa, PS, prot | PROT_READ))
			fuzz_fail("mprotect of world page %zu: %s", i,
				  strerror(errno));
		memcpy(got, (void *)pa, PS);
		if (!pg->readable && mprotect((void *)pa, PS, prot))
			fuzz_fail("mprotect of world page %zu: %s", i,
				  strerror(errno));
		for (size_t k = 0; k < PS; k++) {
			if (any[k]) {
				want[k] = got[k];
				old[k] = got[k];
			}
		}
		bool is_new = !memcmp(got, want, PS);
		bool is_old = !memcmp(got, old, PS);
		if (ok && !is_new)
			page_mismatch(i, got, want, what,
				      "lacks what the call wrote");
		if (!is_new && !is_old)
			page_mismatch(i, got, old, what,
				      "holds neither old nor new bytes");
		memcpy(old, got, PS);
	}
}

void world_final_check(void)
{
	check_statics("the input");
	for (size_t i = 0; i < WORLD_PAGES; i++) {
		const struct wpage *pg = &W.pg[i];
		uintptr_t pa = W.base + i * PS;
		if (!pg->mapped) {
			check_hole(i, "the input");
			continue;
		}
		if (!pg->readable &&
		    mprotect((void *)pa, PS, PROT_READ))
			fuzz_fail("final: mprotect page %zu: %s", i,
				  strerror(errno));
		if (memcmp((void *)pa, W.model + i * PS, PS))
			page_mismatch(i, (const uint8_t *)pa, W.model + i * PS,
				      "the input", "read back through the CPU");
	}
}

/* ------------------------------------------------------------------------
 * The process's own operations
 */

/* A run of world pages [first, first + n) picked by the input: a slot or
 * up to four pages anywhere. */
static void pick_pages(struct input *in, size_t *first, size_t *n)
{
	uint8_t b = in_u8(in);
	if (b & 1) {
		*first = 1 + (size_t)(b >> 1) % WORLD_SLOTS * SLOT_PAGES;
		*n = SLOT_PAGES;
	} else {
		*first = (size_t)(b >> 1) % WORLD_PAGES;
		*n = 1 + in_u8(in) % 4;
		if (*first + *n > WORLD_PAGES)
			*n = WORLD_PAGES - *first;
	}
}

static bool all_mapped(size_t first, size_t n)
{
	for (size_t i = first; i < first + n; i++)
		if (!W.pg[i].mapped)
			return false;
	return true;
}

static bool any_busy(size_t first, size_t n)
{
	for (size_t i = first; i < first + n; i++)
		if (W.busy[i])
			return true;
	return false;
}

static void cpu_read(size_t i)
{
	if (!W.pg[i].mapped || !W.pg[i].readable)
		return;
	uint8_t got[HETMM_PAGE_SIZE];
	memcpy(got, (void *)(W.base + i * PS), PS);
	if (memcmp(got, W.model + i * PS, PS))
		page_mismatch(i, got, W.model + i * PS, "a CPU read",
			      "read through the CPU");
}

static void cpu_write(struct input *in, size_t i)
{
	uint16_t off = in_u16(in) % PS;
	uint16_t len = 1 + in_u16(in) % (PS - off);
	uint8_t v = in_u8(in);
	if (!W.pg[i].mapped || !W.pg[i].writable)
		return;
	uint8_t *p = (uint8_t *)(W.base + i * PS + off);
	memset(p, v, len);
	memset(W.model + i * PS + off, v, len);
}

static void discard(size_t first, size_t n)
{
	if (!all_mapped(first, n) || any_busy(first, n))
		return;
	if (madvise((void *)(W.base + first * PS), n * PS, MADV_DONTNEED))
		fuzz_fail("madvise(DONTNEED) of world pages %zu+%zu: %s",
			  first, n, strerror(errno));
	if (world_sync_hook)
		world_sync_hook();
	for (size_t i = first; i < first + n; i++)
		if (!W.pg[i].shared)   /* private: zeroes (the file's) */
			memset(W.model + i * PS, 0, PS);
}

static void protect(struct input *in, size_t first, size_t n)
{
	static const int prots[3] = { PROT_NONE, PROT_READ,
				      PROT_READ | PROT_WRITE };
	int prot = prots[in_u8(in) % 3];
	if (!all_mapped(first, n))
		return;
	if (mprotect((void *)(W.base + first * PS), n * PS, prot))
		fuzz_fail("mprotect of world pages %zu+%zu: %s", first, n,
			  strerror(errno));
	bool split = false;
	for (size_t i = first; i < first + n; i++)
		split |= W.pg[i].readable != !!(prot & PROT_READ) ||
			 W.pg[i].writable != !!(prot & PROT_WRITE);
	unsigned id = split ? world_new_map_id() : 0;
	for (size_t i = first; i < first + n; i++) {
		W.pg[i].readable = prot & PROT_READ;
		W.pg[i].writable = prot & PROT_WRITE;
		if (split)
			W.pg[i].map_id = id;
	}
}

static void unmap(size_t first, size_t n)
{
	if (any_busy(first, n))
		return;
	if (munmap((void *)(W.base + first * PS), n * PS))
		fuzz_fail("munmap of world pages %zu+%zu: %s", first, n,
			  strerror(errno));
	for (size_t i = first; i < first + n; i++)
		W.pg[i] = (struct wpage){ 0 };
	memset(W.model + first * PS, 0, n * PS);
}

/* Move slot src over slot dst (MREMAP_FIXED): the bytes go along. */
static void remap(struct input *in)
{
	size_t src = 1 + in_u8(in) % WORLD_SLOTS * SLOT_PAGES;
	size_t dst = 1 + in_u8(in) % WORLD_SLOTS * SLOT_PAGES;
	if (src == dst || !all_mapped(src, SLOT_PAGES) ||
	    any_busy(src, SLOT_PAGES) || any_busy(dst, SLOT_PAGES))
		return;
	/* One mapping as the process made it must move, as the kernel
	 * moves one; the documented exception is a range with coherent
	 * device pages among others. */
	bool one = true, coherent = false;
	for (size_t i = src; i < src + SLOT_PAGES; i++) {
		one &= W.pg[i].map_id == W.pg[src].map_id;
		coherent |= world_coherent_hook &&
			    world_coherent_hook(W.base + i * PS);
	}
	void *p = mremap((void *)(W.base + src * PS), SLOT_PAGES * PS,
			 SLOT_PAGES * PS, MREMAP_MAYMOVE | MREMAP_FIXED,
			 (void *)(W.base + dst * PS));
	int err = errno;
	if (p == MAP_FAILED && one && !coherent &&
	    !fuzz_avoid("mremap_split"))
		fuzz_fail("mremap of world pages %zu-%zu, one mapping as the "
			  "process made it, to pages %zu-%zu: %s", src,
			  src + SLOT_PAGES - 1, dst, dst + SLOT_PAGES - 1,
			  strerror(err));
	errno = err;
	TRACE("CPU: mremap of slot pages %zu-%zu onto %zu-%zu: %s", src,
	      src + SLOT_PAGES - 1, dst, dst + SLOT_PAGES - 1,
	      p == MAP_FAILED ? strerror(errno) : "moved");
	if (p == MAP_FAILED) {
		/* Linux moves a range of several mappings one mapping at a
		 * time, and one it refuses (registered with a userfaultfd,
		 * say) ends the call with EFAULT: those before it have moved,
		 * and MREMAP_FIXED has unmapped the destination first.  What
		 * is where is read back from the kernel, page by page. */
		for (size_t k = 0; k < SLOT_PAGES; k++) {
			size_t si = src + k, di = dst + k;
			bool s_now = !msync((void *)(W.base + si * PS), PS,
					    MS_ASYNC);
			bool d_now = !msync((void *)(W.base + di * PS), PS,
					    MS_ASYNC);
			if (!s_now && d_now) {
				W.pg[di] = W.pg[si];
				memcpy(W.model + di * PS, W.model + si * PS, PS);
			} else if (!d_now) {
				W.pg[di] = (struct wpage){ 0 };
				memset(W.model + di * PS, 0, PS);
			}
			if (!s_now) {
				W.pg[si] = (struct wpage){ 0 };
				memset(W.model + si * PS, 0, PS);
			}
			TRACE("  page %zu %s, page %zu %s", si,
			      s_now ? "stays" : "gone", di,
			      d_now ? "mapped" : "unmapped");
		}
		return;
	}
	memcpy(W.model + dst * PS, W.model + src * PS, SLOT_PAGES * PS);
	memcpy(&W.pg[dst], &W.pg[src], SLOT_PAGES * sizeof(W.pg[0]));
	memset(W.model + src * PS, 0, SLOT_PAGES * PS);
	for (size_t i = src; i < src + SLOT_PAGES; i++)
		W.pg[i] = (struct wpage){ 0 };
}

/*
 * A process-directed signal whose handler reads a world page that is not
 * present (on a device, say).  The main thread blocks the signal, so the
 * kernel gives it to another thread: whichever runs the handler must have
 * its fault served, as the kernel serves a fault on a device-private page
 * from any thread.  A library thread that takes the signal and then faults
 * on memory only it can bring back stops the process; that is reported
 * after two seconds instead of hanging.  The harness keeps a thread of
 * its own that takes signals (sig_taker), so that one is always there:
 * under libFuzzer its threads take them too, in a replay nobody else.
 */
static volatile uintptr_t sig_page;
static volatile size_t sig_index;
static volatile sig_atomic_t sig_done, sig_bad;

static void sig_handler(int sig)
{
	(void)sig;
	const uint8_t *p = (const uint8_t *)sig_page;
	const uint8_t *want = W.model + sig_index * PS;
	for (size_t k = 0; k < PS; k++)
		if (p[k] != want[k])
			sig_bad = 1;
	sig_done = 1;
}

static void *sig_taker(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

static void signal_read(size_t i)
{
	static bool installed;
	/* (F2, fixed: hetmm's handler threads took this signal.) */
	if (!W.pg[i].mapped || !W.pg[i].readable)
		return;
	uint64_t ent;
	if (pread(W.pagemap_fd, &ent, 8, (off_t)((W.base / PS + i) * 8)) != 8 ||
	    (ent >> 63))
		return;   /* present: nothing to fault */
	if (!installed) {
		pthread_t th;
		if (pthread_create(&th, NULL, sig_taker, NULL))
			fuzz_fail("pthread_create: the signal taker");
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = sig_handler;
		sigemptyset(&sa.sa_mask);
		if (sigaction(SIGUSR2, &sa, NULL))
			fuzz_fail("sigaction: %s", strerror(errno));
		installed = true;
	}
	sigset_t set, old;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	sig_page = W.base + i * PS;
	sig_index = i;
	sig_done = sig_bad = 0;
	kill(getpid(), SIGUSR2);
	struct timespec ts = { 0, 1000000 };
	for (int t = 0; t < 2000 && !sig_done; t++)
		nanosleep(&ts, NULL);
	if (!sig_done)
		fuzz_fail("a SIGUSR2 sent to the process, whose handler reads "
			  "world page %zu (not present), was not handled in 2 "
			  "s: the thread that took it is stuck in the page's "
			  "fault (/proc/self/task/*/stack: handle_userfault)",
			  i);
	if (sig_bad)
		fuzz_fail("a signal handler read world page %zu and did not "
			  "find the model's bytes", i);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void world_cpu_op(struct input *in)
{
	uint8_t op = in_u8(in) % 7;
	size_t first, n;
	if (op == 6) {
		size_t i = in_u8(in) % WORLD_PAGES;
		TRACE("CPU: a signal whose handler reads world page %zu", i);
		signal_read(i);
		return;
	}
	if (op == 5) {
		remap(in);
		return;
	}
	pick_pages(in, &first, &n);
	TRACE("CPU: %s of world pages %zu-%zu",
	      (const char *[]){ "read", "write", "mprotect", "madvise(DONTNEED)",
				"munmap" }[op], first, first + n - 1);
	switch (op) {
	case 0:
		for (size_t i = first; i < first + n; i++)
			cpu_read(i);
		break;
	case 1:
		cpu_write(in, first);
		break;
	case 2:
		protect(in, first, n);
		break;
	case 3:
		discard(first, n);
		break;
	case 4:
		unmap(first, n);
		break;
	}
}

/* ------------------------------------------------------------------------
 * Arguments
 */

uintptr_t gen_addr(struct input *in)
{
	uint8_t sel = in_u8(in);
	switch (sel % 8) {
	case 0:
	case 1:
	case 2:
	case 3: {
		/* A page of the world or of its reservations' edges. */
		long idx = (long)(in_u8(in) % (WORLD_PAGES + 8)) - 4;
		uintptr_t a = W.base + (uintptr_t)(idx * (long)PS);
		if (sel & 0x80)
			a += in_u16(in) % PS;   /* misaligned */
		return a;
	}
	case 4: {
		const uintptr_t special[] = {
			0, 1, 8, PS - 1, PS, 0x10000,
			W.ro_page, W.ro_page + 1, text_page,
			FUZZ_USER_VA_END - PS, FUZZ_USER_VA_END - 1,
			FUZZ_USER_VA_END, FUZZ_USER_VA_END + PS,
			1ULL << 48, 1ULL << 63, (uintptr_t)0 - PS,
			(uintptr_t)0 - 2 * PS, UINTPTR_MAX, W.lo,
			W.hi - PS, W.hi,
		};
		return special[in_u8(in) % (sizeof(special) /
					    sizeof(special[0]))];
	}
	case 5:
		/* Raw, but never an address of the user half the harness
		 * did not hand out: a write there would be the harness's
		 * bug, not the library's. */
		return (uintptr_t)(in_u64(in) | FUZZ_USER_VA_END);
	case 6: {
		/* Deep in a reservation (PROT_NONE). */
		uintptr_t off = (1 + in_u8(in) % WORLD_RESERVE) * PS;
		return sel & 0x80 ? W.base - off : world_end() + off - PS;
	}
	default:
		/* Anywhere in the world, any alignment. */
		return W.base + in_u16(in) % (WORLD_PAGES * PS);
	}
}

uint64_t gen_npages(struct input *in)
{
	uint8_t sel = in_u8(in);
	switch (sel % 8) {
	case 0:
	case 1:
	case 2:
	case 3:
		return in_u8(in) % (WORLD_PAGES + 4);
	case 4:
		return 1ULL << (in_u8(in) % 64);
	case 5: {
		const uint64_t special[] = {
			0, 1, SLOT_PAGES, WORLD_PAGES, 512, 513, 8192,
			1ULL << 32, (1ULL << 32) + 1, UINT32_MAX,
			1ULL << 35, (1ULL << 35) + 1, 1ULL << 36,
			1ULL << 51, 1ULL << 52, (1ULL << 52) + 1,
			UINT64_MAX >> 12, (UINT64_MAX >> 12) + 1,
			UINT64_MAX,
		};
		return special[in_u8(in) % (sizeof(special) /
					    sizeof(special[0]))];
	}
	case 6:
		return in_u64(in);
	default:
		return in_u16(in);
	}
}
