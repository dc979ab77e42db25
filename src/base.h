/* SPDX-License-Identifier: MIT */
/*
 * base.h - page arithmetic and the limits every module shares.
 */
#ifndef HETMM_BASE_H
#define HETMM_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "hetmm.h"

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/*
 * Built with ThreadSanitizer (gcc says so with __SANITIZE_THREAD__,
 * clang with __has_feature), and NO_TSAN: a function it must not
 * instrument at all, not even its entry and its atomics, because the
 * runtime's own memory is where the function must not go (deputy.c,
 * the rescue).  Such a function calls only NO_TSAN functions and
 * raw system calls (syscall(2)), none of the libc calls the runtime
 * intercepts.
 */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#if !defined(UNDER_TSAN)
#define NO_TSAN
#elif defined(__clang__) && __has_attribute(disable_sanitizer_instrumentation)
#define NO_TSAN __attribute__((disable_sanitizer_instrumentation))
#else
#define NO_TSAN __attribute__((no_sanitize("thread")))
#endif

/* futex(2) on a word, a raw system call that NO_TSAN code may make. */
NO_TSAN static inline long futex_word(_Atomic uint32_t *w, int op,
				      uint32_t val, const struct timespec *ts)
{
	return syscall(SYS_futex, w, op, val, ts, NULL, 0);
}

/*
 * The page size is the kernel's, read at run time (page.c): never a
 * constant, so nothing sized in bytes or pages may be a constant
 * expression of it.  page_shift_now and pmd_order_now are 0 until
 * page_read() ran; it runs once, at first use.
 */
extern unsigned int page_shift_now;
extern unsigned int pmd_order_now;
unsigned int page_read(void);

static inline unsigned int page_shift(void)
{
	unsigned int s = __atomic_load_n(&page_shift_now, __ATOMIC_ACQUIRE);
	return likely(s) ? s : page_read();
}

/* log2 of the pages a PMD (a transparent huge page) maps: 9 at 4 KiB
 * pages, 11 at 16 KiB, 13 at 64 KiB. */
static inline unsigned int pmd_order(void)
{
	page_shift();
	return __atomic_load_n(&pmd_order_now, __ATOMIC_RELAXED);
}

#define PAGE_SHIFT page_shift()
#define PAGE_SIZE ((size_t)1 << PAGE_SHIFT)
#define PAGE_MASK (~(PAGE_SIZE - 1))
#define PMD_PAGES ((size_t)1 << pmd_order())
#define PMD_SIZE (PMD_PAGES << PAGE_SHIFT)

/* Userspace addresses hetmm manages: the 48-bit x86-64/arm64 user half. */
#define USER_VA_END (1ULL << 47)

/*
 * Migrations work in chunks of at most this many pages, aligned to their
 * size: a PMD's worth (2 MiB) at 4 KiB pages, so that huge pages move
 * whole; a fixed count at any page size, so that the per-chunk arrays
 * stay bounded (a chunk is 8 MiB of a 32 MiB PMD at 16 KiB, 32 MiB of a
 * 512 MiB one at 64 KiB: there a huge page moves as a block of chunks,
 * migrate.c's block_to_device).  Never more than PMD_PAGES.
 */
#ifndef CHUNK_PAGES       /* smaller in a test build: the 16 and 64 KiB
			  * paths (a PMD of several chunks) at 4 KiB */
#define CHUNK_PAGES 512
#endif
#define CHUNK_SIZE ((size_t)CHUNK_PAGES << PAGE_SHIFT)
/* A fault brings back at most this many pages, a chunk at a time. */
#define FAULT_AROUND_MAX (16 * CHUNK_PAGES)

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* A range of memory hetmm uses itself (entry.c: entry_own), in a list;
 * the node lives in the struct of the module that owns the memory. */
struct own_range {
	uintptr_t start, end;
	struct own_range *next;
};

static inline uint64_t addr_to_vpn(uintptr_t addr)
{
	return (uint64_t)addr >> PAGE_SHIFT;
}

static inline uintptr_t vpn_to_addr(uint64_t vpn)
{
	return (uintptr_t)(vpn << PAGE_SHIFT);
}

/*
 * Write every page of [p, p + len), memory just allocated for data the
 * fault handler uses: present from now on, it can never take a missing
 * fault, whatever mapping around it is registered later (watch.c).  A
 * fresh allocation may be untouched memory, and the handler faulting on
 * a registered page would wait for itself.
 */
static inline void touch_pages(void *p, size_t len)
{
	for (size_t off = 0; off < len; off += PAGE_SIZE)
		*((volatile char *)p + off) = *((volatile char *)p + off);
	if (len)
		*((volatile char *)p + len - 1) = *((volatile char *)p + len - 1);
}

/* Nanoseconds of CLOCK_MONOTONIC. */
static inline uint64_t monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Milliseconds of CLOCK_MONOTONIC, for bounded waits. */
static inline uint64_t monotonic_ms(void)
{
	return monotonic_ns() / 1000000;
}

#endif /* HETMM_BASE_H */
