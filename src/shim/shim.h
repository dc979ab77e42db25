/* SPDX-License-Identifier: MIT */
/*
 * shim.h - what the parts of libhetmm-dmirror.so share.
 *
 * The preload library gives a program the kernel's HMM test ABI without
 * the kernel's test modules: /dev/hmm_dmirror0..3 (lib/test_hmm.c) and
 * /sys/kernel/debug/gup_test (mm/gup_test.c), served by hetmm's emulated
 * devices through the public API only.
 *
 *   interpose.c  open/close/ioctl/mmap, which file is whose, fork
 *   dmirror.c    the dmirror ioctls and mmap
 *   gup_test.c   the gup_test ioctls
 *   vmas.c       the maps file; madvise(MADV_FREE) over coherent pages
 *   pagemap.c    the program's pagemap: device-private pages swapped
 *   alloc.c      the shim's memory, outside the program's heap
 *
 * Each open is backed by a memfd of its own, so the descriptor the program
 * holds is a real one: close, dup, fork and exec behave as for any file.
 * A memfd's inode names the open file description; the shim keeps its
 * state under that name.
 */
#ifndef HETMM_SHIM_H
#define HETMM_SHIM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/types.h>

#include "hetmm.h"

/* madvise(2)'s populating advice (5.14), for headers that predate it. */
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* The ABI, from the kernel's uapi headers' published values. */
struct shim_dmirror_cmd {
	uint64_t addr;     /* in: process address the device accesses */
	uint64_t ptr;      /* in: buffer the data goes to or comes from */
	uint64_t npages;   /* in */
	uint64_t cpages;   /* out: pages done */
	uint64_t faults;   /* out: device faults taken */
};

#define SHIM_IOC_DIR(dir, nr, size) \
	(((unsigned)(dir) << 30) | ((unsigned)(size) << 16) | ((unsigned)(nr)))
/* _IOWR: the direction bits both set. */
#define SHIM_IOC(nr, size) SHIM_IOC_DIR(3u, nr, size)
#define SHIM_IOC_TYPE(type) ((unsigned)(type) << 8)

/* _IOWR('H', n, struct hmm_dmirror_cmd) */
#define SHIM_DMIRROR(n) \
	(SHIM_IOC((n), sizeof(struct shim_dmirror_cmd)) | SHIM_IOC_TYPE('H'))
#define SHIM_DMIRROR_READ SHIM_DMIRROR(0x00)
#define SHIM_DMIRROR_WRITE SHIM_DMIRROR(0x01)
#define SHIM_DMIRROR_MIGRATE_TO_DEV SHIM_DMIRROR(0x02)
#define SHIM_DMIRROR_MIGRATE_TO_SYS SHIM_DMIRROR(0x03)
#define SHIM_DMIRROR_SNAPSHOT SHIM_DMIRROR(0x04)
#define SHIM_DMIRROR_EXCLUSIVE SHIM_DMIRROR(0x05)
#define SHIM_DMIRROR_CHECK_EXCLUSIVE SHIM_DMIRROR(0x06)
#define SHIM_DMIRROR_RELEASE SHIM_DMIRROR(0x07)
/* Since the zone-device THP work (after 6.12): set the mirror's flags
 * word to cmd.npages. */
#define SHIM_DMIRROR_FLAGS SHIM_DMIRROR(0x08)
#define SHIM_DMIRROR_FLAG_FAIL_ALLOC (1ull << 0)

#define SHIM_GUP_MAX_PAGES_TO_DUMP 8
struct shim_gup_test {
	uint64_t get_delta_usec;
	uint64_t put_delta_usec;
	uint64_t addr;
	uint64_t size;
	uint32_t nr_pages_per_call;
	uint32_t gup_flags;
	uint32_t test_flags;
	uint32_t which_pages[SHIM_GUP_MAX_PAGES_TO_DUMP];
};

/* _IOWR('g', n, struct gup_test) */
#define SHIM_GUP(n) \
	(SHIM_IOC((n), sizeof(struct shim_gup_test)) | SHIM_IOC_TYPE('g'))
#define SHIM_GUP_FAST_BENCHMARK SHIM_GUP(1)
#define SHIM_PIN_FAST_BENCHMARK SHIM_GUP(2)
#define SHIM_PIN_LONGTERM_BENCHMARK SHIM_GUP(3)
#define SHIM_GUP_BASIC_TEST SHIM_GUP(4)
#define SHIM_PIN_BASIC_TEST SHIM_GUP(5)
#define SHIM_DUMP_USER_PAGES_TEST SHIM_GUP(6)

#define SHIM_GUP_FLAG_DUMP_PAGES_USE_PIN 0x1

/* The long-term pin test (6.3 and later): START pins a range long term
 * and keeps it pinned until STOP; READ copies the pinned pages out. */
struct shim_pin_longterm_test {
	uint64_t addr;
	uint64_t size;
	uint32_t flags;
};
#define SHIM_PIN_LONGTERM_FLAG_USE_WRITE 1
#define SHIM_PIN_LONGTERM_FLAG_USE_FAST 2

/* _IOW('g', 7, struct pin_longterm_test), _IO('g', 8), _IOW('g', 9, __u64) */
#define SHIM_PIN_LONGTERM_TEST_START                                     \
	(SHIM_IOC_DIR(1u, 7, sizeof(struct shim_pin_longterm_test)) |    \
	 SHIM_IOC_TYPE('g'))
#define SHIM_PIN_LONGTERM_TEST_STOP (SHIM_IOC_DIR(0u, 8, 0) | SHIM_IOC_TYPE('g'))
#define SHIM_PIN_LONGTERM_TEST_READ \
	(SHIM_IOC_DIR(1u, 9, sizeof(uint64_t)) | SHIM_IOC_TYPE('g'))

/*
 * The gup flags the tests pass (the kernel's FOLL_* values).  FOLL_LONGTERM
 * moved in 6.2, and the structure did not change, so a caller's bit is
 * read in both encodings.  Each overlaps a flag of the other series:
 * 0x100 is 6.1's FOLL_HWPOISON (which only changes how a hardware-poisoned
 * page is reported; emulated memory has none), 0x10000 is 6.2's internal
 * FOLL_TOUCH (which 6.2's gup refuses from a caller, so no caller built
 * for it passes it).
 */
#define SHIM_FOLL_WRITE 0x01
#define SHIM_FOLL_LONGTERM 0x100        /* 6.2 and later */
#define SHIM_FOLL_LONGTERM_6_1 0x10000  /* up to 6.1 */

/* The files the shim serves. */
#define SHIM_DMIRROR_UNITS 4  /* 0, 1 private; 2, 3 coherent */
#define SHIM_UNIT_GUP SHIM_DMIRROR_UNITS

/* A page range a mirror holds for device atomics (HMM_DMIRROR_EXCLUSIVE). */
struct shim_range {
	uintptr_t start;
	uintptr_t end;
};

/* One open file description. */
struct shim_file {
	struct shim_file *next;      /* the process's list, under its lock */
	dev_t dev;
	ino_t ino;                   /* of the backing memfd */
	pid_t pid;                   /* the process whose mm it mirrors */
	int unit;                    /* 0..3, or SHIM_UNIT_GUP */
	int accmode;                 /* O_RDONLY, O_WRONLY or O_RDWR */
	atomic_int refs;             /* the list's, plus calls in flight */
	struct hetmm_mirror *mirror; /* dmirror units only */
	_Atomic uint64_t flags;      /* HMM_DMIRROR_FLAGS' word */

	/* Exclusive ranges, under the file's own lock. */
	pthread_mutex_t lock;
	struct shim_range *excl;
	size_t nr_excl;
	size_t cap_excl;
};

/* The process's context and devices, created on first use; NULL and a
 * negative errno when they can't be. */
struct hetmm_ctx *shim_ctx(void);
/* The context if one exists in this process, without creating it. */
struct hetmm_ctx *shim_ctx_peek(void);
int shim_emu(int unit, struct hetmm_emu **emup);

/* Copy to and from the caller's memory, which may be bad: -EFAULT then,
 * never a signal (the kernel's copy_to_user/copy_from_user). */
int shim_copy_in(void *dst, uint64_t src, size_t len);
int shim_copy_out(uint64_t dst, const void *src, size_t len);

/* The pass-through calls. */
int shim_real_ioctl(int fd, unsigned long req, void *arg);
int shim_real_madvise(void *addr, size_t len, int advice);
void *shim_real_mmap(void *addr, size_t len, int prot, int flags, int fd,
		     off_t off);
int shim_real_close(int fd);

/* pagemap.c: open, close and pread of the program's own pagemap. */
void shim_pagemap_opened(int fd, const char *path, const void *caller);
void shim_pagemap_closed(int fd);
bool shim_pagemap_tracked(int fd);
void shim_pagemap_fix(void *buf, size_t got, off_t off);

/* alloc.c: the arena, reserved at load time. */
void shim_alloc_init(void);
void shim_alloc_atfork_child(void);

/* dmirror.c */
int dmirror_open(struct shim_file *f);
/* Last close of the description (file_operations.release). */
void dmirror_release(struct shim_file *f);
/* fork is coming (in the parent, the process lock held). */
void dmirror_fork(struct shim_file *f, struct hetmm_ctx *ctx);
long dmirror_ioctl(struct shim_file *f, unsigned int cmd, void *arg);
void *dmirror_mmap(struct shim_file *f, void *addr, size_t len, int prot,
		   int flags, off_t off);

/* vmas.c: each mapping of /proc/self/maps overlapping [start, end), in
 * order, to fn, until fn returns nonzero (returned; a negative errno if
 * the file can't be read). */
struct shim_vma {
	uintptr_t start;
	uintptr_t end;
	char perms[5];           /* "rwxp" or "rwxs" */
	unsigned long ino;       /* 0: anonymous */
	const char *path;        /* "" if none */
};
typedef int (*shim_vma_fn)(const struct shim_vma *v, void *arg);
int shim_vmas_walk(uintptr_t start, uintptr_t end, shim_vma_fn fn, void *arg);
/* madvise(MADV_FREE) where the kernel refused it for coherent pages:
 * 0 or a negative errno. */
int shim_madvise_free(void *addr, size_t len);

/* gup_test.c */
long gup_test_ioctl(unsigned int cmd, void *arg);

#endif /* HETMM_SHIM_H */
