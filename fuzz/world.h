/* SPDX-License-Identifier: MIT */
/*
 * world.h - what the fuzz targets share: the memory the calls are given,
 * a byte-exact model of it, and the oracle that checks it after each call.
 *
 * The world is a run of WORLD_PAGES pages at a fixed address far from
 * everything else in the process (so that no mmap of the library, the
 * sanitizer or libFuzzer lands in one of its holes), between two
 * reservations of PROT_NONE pages.  Each input starts by laying it out
 * afresh: a guard page at each end, and WORLD_SLOTS slots of SLOT_PAGES
 * pages whose kind the input picks (read-write, read-only, PROT_NONE,
 * unmapped, shared, file backed, never touched).  Every byte of every
 * mapped page is known to the model.
 *
 * The oracle, after every call:
 *   - every page the call was not asked to write, and that is present
 *     (so reading it faults nothing back from a device), holds exactly the
 *     model's bytes;
 *   - pages it was asked to write hold either their old bytes or the new
 *     ones, page by page, and exactly the new ones when the call succeeded;
 * and at the end of each input every mapped page is read through the CPU
 * (faulting device pages back) and must hold the model's bytes: what a
 * migration took away comes back unchanged.
 *
 * A failed check prints what differs and aborts: libFuzzer records the
 * input as a crash.
 */
#ifndef HETMM_FUZZ_WORLD_H
#define HETMM_FUZZ_WORLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hetmm.h"

#define PS ((size_t)HETMM_PAGE_SIZE)
/* The largest page size hetmm runs at (arm64's 64 KiB): static buffers
 * of a page or more, since the page size is known at run time only. */
#define PS_MAX ((size_t)65536)

#define SLOT_PAGES 4
#define WORLD_SLOTS 12
#define WORLD_PAGES (2 + WORLD_SLOTS * SLOT_PAGES)  /* guards at both ends */
#define WORLD_RESERVE 64        /* PROT_NONE pages on each side */
/* Clear of ASan's allocator (0x600000000000) and shadow. */
#define WORLD_FIXED_ADDR 0x3f0000000000ULL

#define FUZZ_USER_VA_END (1ULL << 47)

/* ------------------------------------------------------------------------
 * The input
 */

struct input {
	const uint8_t *p;
	size_t n;
};

uint8_t in_u8(struct input *in);
uint16_t in_u16(struct input *in);
uint32_t in_u32(struct input *in);
uint64_t in_u64(struct input *in);
bool in_empty(const struct input *in);

/* ------------------------------------------------------------------------
 * The world and its model
 */

enum slot_kind {
	SLOT_RW,          /* private anonymous, written */
	SLOT_RW_UNTOUCHED, /* private anonymous, never touched: zeroes */
	SLOT_RO,          /* private anonymous, written, then read-only */
	SLOT_NONE,        /* private anonymous, written, then PROT_NONE */
	SLOT_UNMAPPED,    /* a hole */
	SLOT_SHARED,      /* shared anonymous, written */
	SLOT_FILE,        /* a memfd mapped private, written (copy-on-write) */
	SLOT_KINDS
};

/* Per page of the world. */
struct wpage {
	bool mapped;
	bool readable;    /* PROT_READ */
	bool writable;    /* PROT_WRITE */
	bool priv_anon;   /* private anonymous (what migrates) */
	bool shared;      /* MAP_SHARED */
	bool file;        /* file backed (memfd) */
	/* Which of the process's own mappings the page belongs to, as the
	 * process made them (mmap, mprotect, mremap; 0 when unmapped): pages
	 * with one id are one mapping, whatever the library did to them. */
	unsigned map_id;
};

struct world {
	uintptr_t base;           /* first page of the world */
	uintptr_t lo, hi;         /* the reservations' outer bounds */
	struct wpage pg[WORLD_PAGES];
	/* Pages the process must not unmap, discard or move: held by get or
	 * pin, or the memory of a pagemap the harness hot-added. */
	uint16_t busy[WORLD_PAGES];
	uint8_t *model;           /* WORLD_PAGES * PS expected bytes */
	uint8_t *scratch;         /* a page for reading pages back */
	int pagemap_fd;
	const char *target;       /* for messages */
	/* A page outside the world that no call may change: a read-only
	 * file page in the low reservation (world.c). */
	uintptr_t ro_page;
	uint64_t gen;             /* input number, varies the patterns */
};

extern struct world W;

/* Once per process. */
void world_init(const char *target);
/* Lay the world out afresh, slot kinds from the input (half a byte
 * each). */
void world_reset(struct input *in);
/* The end of an input: every mapped page read through the CPU. */
void world_final_check(void);

/* A fresh mapping id. */
unsigned world_new_map_id(void);

/* Set by a target that can tell: is the page at addr on a
 * DEVICE_COHERENT device now?  (An mremap of a range holding such pages
 * among others is documented to fail.) */
extern bool (*world_coherent_hook)(uintptr_t addr);

/* Set by a target: let the library's handler catch up with the events
 * the process's calls raised (a mirror call does: handler_sync).  After a
 * MADV_DONTNEED, a device-coherent page reads its old bytes until the
 * handler has handled the REMOVE event, a window hetmm.h documents. */
extern void (*world_sync_hook)(void);

static inline uintptr_t world_end(void)
{
	return W.base + WORLD_PAGES * PS;
}

static inline bool in_world(uintptr_t a)
{
	return a >= W.base && a < world_end();
}

static inline size_t world_index(uintptr_t a)
{
	return (a - W.base) / PS;
}

/* ------------------------------------------------------------------------
 * What a call was asked to write, and the oracle
 */

#define MAX_RANGES 4

struct wrange {
	uintptr_t start;
	uint64_t len;
	/* The bytes the range should hold if the call succeeds, or NULL when
	 * any bytes will do (a snapshot's, checked by the caller). */
	const uint8_t *expect;
};

struct asked {
	struct wrange r[MAX_RANGES];
	int n;
};

void asked_clear(struct asked *a);
void asked_add(struct asked *a, uintptr_t start, uint64_t len,
	       const uint8_t *expect);

/*
 * After a call: pages outside what was asked hold the model's bytes
 * (present pages only, so that nothing is faulted back); pages inside hold
 * old or new bytes page by page, the new ones if ok.  The model then
 * follows what the pages hold.  what names the call in a failure.
 */
void world_check(const struct asked *a, bool ok, const char *what);

/*
 * The bytes at [addr, addr + len) as the model and the harness know
 * them, into out; false if some byte is not readable (unmapped, PROT_NONE,
 * outside anything the harness owns).  Harness buffers registered with
 * known_buffer() count as known.
 */
bool known_bytes(uintptr_t addr, uint64_t len, uint8_t *out);
void known_buffer(const void *buf, size_t len);
void known_buffers_clear(void);

/* Is [addr, addr + len) fully mapped with these rights (world, the
 * read-only page, registered buffers)? */
bool range_readable(uintptr_t addr, uint64_t len);
bool range_writable(uintptr_t addr, uint64_t len);

/* Does [a, a + alen) overlap [b, b + blen)?  Lengths may be huge. */
bool ranges_overlap(uintptr_t a, uint64_t alen, uintptr_t b, uint64_t blen);

/* ------------------------------------------------------------------------
 * The process's own operations on the world, between calls
 */

/* One operation picked by the input: a CPU read or write of a page,
 * mprotect, madvise(DONTNEED), munmap, mremap of a slot (the last three
 * never on busy pages). */
void world_cpu_op(struct input *in);

/* ------------------------------------------------------------------------
 * Arguments
 */

/* An address: a page of the world or around it (optionally misaligned),
 * one of a table of special ones (NULL, the top of the user half,
 * non-canonical, read-only and executable file pages...), or a raw value
 * at or above the top of the user half. */
uintptr_t gen_addr(struct input *in);
/* A page count: small, a power of two, a boundary value or raw. */
uint64_t gen_npages(struct input *in);

/* ------------------------------------------------------------------------
 * Tracing and known findings
 */

/* With FUZZ_TRACE=1 in the environment, each call and its result go to
 * stderr: how a reproducer is read. */
extern bool fuzz_tracing;
void fuzz_trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define TRACE(...)                                                        \
	do {                                                              \
		if (fuzz_tracing)                                         \
			fuzz_trace(__VA_ARGS__);                          \
	} while (0)

/*
 * FUZZ_AVOID=name,name... (or "all") makes the targets steer clear of the
 * inputs that trigger a known finding (fuzz/FINDINGS.md), so that a long
 * run looks for new ones.  Never set for the replay of the findings.
 */
bool fuzz_avoid(const char *name);

/* ------------------------------------------------------------------------
 * Failing
 */

void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2),
						     noreturn));

#define FUZZ_ASSERT(cond, ...)                                            \
	do {                                                              \
		if (!(cond))                                              \
			fuzz_fail(__VA_ARGS__);                           \
	} while (0)

#endif /* HETMM_FUZZ_WORLD_H */
