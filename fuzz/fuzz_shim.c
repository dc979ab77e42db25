/* SPDX-License-Identifier: MIT */
/*
 * fuzz_shim.c - libFuzzer target: the kernel ABI shim's ioctl surface.
 *
 * The shim's sources (src/shim/) are linked into this binary together with
 * the library, so that its open/close/ioctl/mmap are the ones the harness
 * calls, as a program under LD_PRELOAD=libhetmm-dmirror.so calls them.
 * The input drives:
 *
 *   - every dmirror command (READ, WRITE, MIGRATE_TO_DEV/SYS, SNAPSHOT,
 *     EXCLUSIVE, CHECK_EXCLUSIVE, RELEASE) and unknown ones, on each of
 *     /dev/hmm_dmirror0..3 and on gup_test's descriptor, with the command
 *     block and its addr and ptr anywhere: a harness buffer with a canary
 *     after it, a page of the world (any protection, unmapped, misaligned),
 *     NULL, the top of the user half, non-canonical, read-only and
 *     executable file pages; npages small, huge or wrapping;
 *   - every gup_test command with the same kinds of arguments;
 *   - mmap of a dmirror descriptor;
 *   - close and reopen of a descriptor (the driver's release);
 *   - the process's own reads, writes, mprotect, madvise, munmap and mremap
 *     of the world between them.
 *
 * Besides the world's oracle (world.h) it checks the ABI: a command block
 * that can't be read is EFAULT, an unaligned or wrapping range and an
 * unknown command EINVAL, as the kernel's driver answers; a successful
 * command reports cpages as the driver does, READ gives the bytes the CPU
 * wrote, SNAPSHOT gives a valid byte per page (ERROR exactly where nothing
 * readable is mapped), and no call writes past the end of its buffers.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shim.h"
#include "world.h"

#define MAX_OPS 24
#define CANARY 64          /* bytes after each harness buffer */
#define BUF_MAX_PAGES 64   /* larger buffers are not the harness's */

static int dm_fd[SHIM_DMIRROR_UNITS];
static int gup_fd;

static const char *const dm_path[SHIM_DMIRROR_UNITS] = {
	"/dev/hmm_dmirror0", "/dev/hmm_dmirror1",
	"/dev/hmm_dmirror2", "/dev/hmm_dmirror3",
};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Is the page at a on a coherent device?  Asked of the shim itself: a
 * snapshot changes nothing. */
static bool shim_coherent(uintptr_t a)
{
	int fd = dm_fd[2] >= 0 ? dm_fd[2] : dm_fd[0];
	uint8_t prot = 0;
	struct shim_dmirror_cmd c = { .addr = a, .ptr = (uintptr_t)&prot,
				      .npages = 1 };
	if (fd < 0 || ioctl(fd, SHIM_DMIRROR_SNAPSHOT, &c))
		return false;
	return (prot & 0xf0) == HETMM_PROT_DEV_COHERENT_LOCAL ||
	       (prot & 0xf0) == HETMM_PROT_DEV_COHERENT_REMOTE;
}

static void shim_sync(void)
{
	uint8_t prot;
	struct shim_dmirror_cmd c = { .addr = W.base, .ptr = (uintptr_t)&prot,
				      .npages = 1 };
	if (dm_fd[0] >= 0)
		ioctl(dm_fd[0], SHIM_DMIRROR_SNAPSHOT, &c);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* Small devices: a full device is one of the paths to cover. */
	setenv("HETMM_DMIRROR_PAGES", "24", 0);
	world_init("fuzz_shim");
	for (int u = 0; u < SHIM_DMIRROR_UNITS; u++)
		dm_fd[u] = open(dm_path[u], O_RDWR | O_CLOEXEC);
	gup_fd = open("/sys/kernel/debug/gup_test", O_RDWR | O_CLOEXEC);
	world_coherent_hook = shim_coherent;
	world_sync_hook = shim_sync;
	if (dm_fd[0] < 0 || gup_fd < 0)
		fuzz_fail("the shim serves no /dev/hmm_dmirror0 or gup_test: "
			  "%s", strerror(errno));
	return 0;
}

/* ------------------------------------------------------------------------
 * Harness buffers, each followed by a canary
 */

struct hbuf {
	uint8_t *p;
	size_t len;
};

static uint8_t canary_byte(size_t i)
{
	return (uint8_t)(0xc5 ^ i * 7);
}

static struct hbuf hbuf_new(size_t len, uint8_t seed)
{
	struct hbuf b = { malloc(len + CANARY), len };
	if (!b.p)
		fuzz_fail("out of memory");
	for (size_t i = 0; i < len; i++)
		b.p[i] = (uint8_t)(seed + i * 13 + (i >> 12));
	for (size_t i = 0; i < CANARY; i++)
		b.p[len + i] = canary_byte(i);
	known_buffer(b.p, len);
	return b;
}

static void hbuf_free(struct hbuf *b, const char *what)
{
	if (!b->p)
		return;
	for (size_t i = 0; i < CANARY; i++)
		if (b->p[b->len + i] != canary_byte(i))
			fuzz_fail("after %s: %zu-byte buffer written past its "
				  "end (+%zu)", what, b->len, i);
	free(b->p);
	b->p = NULL;
}

/* ------------------------------------------------------------------------
 * dmirror commands
 */

static const unsigned dm_cmds[] = {
	SHIM_DMIRROR_READ, SHIM_DMIRROR_WRITE, SHIM_DMIRROR_MIGRATE_TO_DEV,
	SHIM_DMIRROR_MIGRATE_TO_SYS, SHIM_DMIRROR_SNAPSHOT,
	SHIM_DMIRROR_EXCLUSIVE, SHIM_DMIRROR_CHECK_EXCLUSIVE,
	SHIM_DMIRROR_RELEASE,
};
static const char *const dm_names[] = {
	"READ", "WRITE", "MIGRATE_TO_DEV", "MIGRATE_TO_SYS", "SNAPSHOT",
	"EXCLUSIVE", "CHECK_EXCLUSIVE", "RELEASE",
};
#define NR_DM_CMDS (sizeof(dm_cmds) / sizeof(dm_cmds[0]))

static bool valid_prot(uint8_t p)
{
	return p == HETMM_PROT_ERROR || (p & 0xf0) <= 0x50;
}

/* What a snapshot byte must be for the page at a, as far as the harness
 * knows: HETMM_PROT_ERROR exactly where nothing readable is mapped. */
static void check_snapshot_byte(uintptr_t a, uint8_t p, const char *what)
{
	if (!valid_prot(p))
		fuzz_fail("%s: page %#" PRIxPTR ": invalid prot byte %#x", what,
			  a, p);
	if (in_world(a)) {
		const struct wpage *pg = &W.pg[world_index(a)];
		bool err = !pg->mapped || !pg->readable;
		if (err != (p == HETMM_PROT_ERROR))
			fuzz_fail("%s: world page %zu (%s) reported %#x", what,
				  world_index(a),
				  !pg->mapped ? "unmapped" :
				  !pg->readable ? "PROT_NONE" : "readable", p);
		if (!err && (p & HETMM_PROT_WRITE) && !pg->writable)
			fuzz_fail("%s: read-only world page %zu reported "
				  "writable (%#x)", what, world_index(a), p);
	}
}

/* The command block at arg as the shim will read it: false if it can't. */
static bool read_block(uintptr_t arg, struct shim_dmirror_cmd *c)
{
	return known_bytes(arg, sizeof(*c), (uint8_t *)c);
}

static void do_dmirror(struct input *in)
{
	uint8_t u = in_u8(in);
	int fd = u % 5 < SHIM_DMIRROR_UNITS ? dm_fd[u % 5] : gup_fd;
	bool on_gup = u % 5 == SHIM_DMIRROR_UNITS;
	if (fd < 0)
		return;
	uint8_t k = in_u8(in);
	unsigned cmd;
	int ci = -1;
	if (k % 12 < NR_DM_CMDS) {
		ci = k % 12;
		cmd = dm_cmds[ci];
	} else if (k % 12 < 10) {
		/* 'H' with another number or size */
		cmd = SHIM_IOC(in_u8(in), in_u16(in) & 0x3fff) |
		      SHIM_IOC_TYPE('H');
	} else if (k % 12 == 10) {
		cmd = SHIM_GUP(in_u8(in) % 8);
	} else {
		cmd = in_u32(in);
	}
	/* A request the VFS answers itself is not the driver's; gup_test's
	 * own commands on its descriptor are do_gup's, with their block. */
	if (cmd == FIOCLEX || cmd == FIONCLEX || cmd == FIONBIO ||
	    cmd == FIOASYNC)
		return;
	for (unsigned n = 1; n <= 6; n++)
		if (on_gup && cmd == SHIM_GUP(n))
			return;
	for (unsigned i = 0; i < NR_DM_CMDS; i++)
		if (cmd == dm_cmds[i])
			ci = (int)i;
	const char *name = ci >= 0 ? dm_names[ci] : "unknown command";

	struct shim_dmirror_cmd c = { 0 };
	c.addr = gen_addr(in);
	c.npages = gen_npages(in);
	/* Seen, not a finding (FINDINGS.md): READ and WRITE allocate their
	 * bounce buffer of npages pages first, as the kernel's driver
	 * vmallocs it, and the shim's allocator commits it at once; a few
	 * GiB of it are libFuzzer's RSS limit, and 256 MiB take 3 s.
	 * EXCLUSIVE on a coherent unit reads the range first, through the
	 * same bounce.  Bounces of up to 64 GiB (beyond, the allocation
	 * fails) are kept to 16 MiB. */
	if ((ci <= 1 || ci == 5) && c.npages > (1ULL << 12) &&
	    c.npages <= (1ULL << 24) && fuzz_avoid("bounce_huge"))
		c.npages = 1ULL << 12;
	c.cpages = in_u8(in);     /* ignored by the driver */
	c.faults = in_u8(in);
	uint64_t size = c.npages << HETMM_PAGE_SHIFT;
	size_t plen = ci == 4 ? (size_t)c.npages : (size_t)size;
	bool fits = c.npages <= BUF_MAX_PAGES;

	struct hbuf pbuf = { NULL, 0 }, abuf = { NULL, 0 };
	uint8_t pmode = in_u8(in);
	if (pmode % 3 == 0 && fits)
		pbuf = hbuf_new(plen ? plen : 1, in_u8(in));
	c.ptr = pbuf.p ? (uintptr_t)pbuf.p : gen_addr(in);

	/* The block itself: a harness buffer, or anywhere. */
	uint8_t amode = in_u8(in);
	uintptr_t arg;
	if (amode % 4 != 0) {
		abuf = hbuf_new(sizeof(c), 0);
		memcpy(abuf.p, &c, sizeof(c));
		arg = (uintptr_t)abuf.p;
	} else {
		arg = gen_addr(in);
		/* Put the block there if the process could. */
		if (in_world(arg) && range_writable(arg, sizeof(c))) {
			struct asked put;
			asked_clear(&put);
			asked_add(&put, arg, sizeof(c), (const uint8_t *)&c);
			memcpy((void *)arg, &c, sizeof(c));
			world_check(&put, true, "placing a command block");
		}
	}
	struct shim_dmirror_cmd eff;
	bool readable = read_block(arg, &eff);
	uint64_t esize = eff.npages << HETMM_PAGE_SHIFT;

	/* What the command may write, and what it should write there. */
	static uint8_t src[(WORLD_PAGES + BUF_MAX_PAGES) * PS_MAX];
	bool small = readable && eff.npages <= WORLD_PAGES + BUF_MAX_PAGES;
	bool src_known = false;
	struct asked asked;
	asked_clear(&asked);
	asked_add(&asked, arg, sizeof(c), NULL);
	if (readable && ci >= 0) {
		switch (ci) {
		case 0: /* READ */
		case 2: /* MIGRATE_TO_DEV: the device reads it back */
		case 5: /* EXCLUSIVE: the same */
			src_known = small && known_bytes(eff.addr, esize, src);
			asked_add(&asked, eff.ptr, esize,
				  src_known ? src : NULL);
			break;
		case 1: /* WRITE */
			src_known = small && known_bytes(eff.ptr, esize, src);
			asked_add(&asked, eff.addr, esize,
				  src_known ? src : NULL);
			break;
		case 4: /* SNAPSHOT */
			asked_add(&asked, eff.ptr, eff.npages, NULL);
			break;
		}
	}

	TRACE("calling %s on %s: block at %#" PRIxPTR " {addr %#" PRIx64
	      ", ptr %#" PRIx64 ", npages %#" PRIx64 "}%s", name,
	      on_gup ? "gup_test" : dm_path[u % 5], arg, eff.addr, eff.ptr,
	      eff.npages, readable ? "" : " (unreadable)");
	errno = 0;
	int rc = ioctl(fd, cmd, (void *)arg);
	int err = rc < 0 ? errno : 0;
	char what[96];
	snprintf(what, sizeof(what), "%s on %s (rc %d errno %d)", name,
		 on_gup ? "gup_test" : dm_path[u % 5], rc, err);

	TRACE("%s: block at %#" PRIxPTR " {addr %#" PRIx64 ", ptr %#" PRIx64
	      ", npages %#" PRIx64 "}%s", what, arg, eff.addr, eff.ptr,
	      eff.npages, readable ? "" : " (unreadable)");
	/* The ABI. */
	FUZZ_ASSERT(rc == 0 || rc == -1, "%s: returned %d", what, rc);
	FUZZ_ASSERT(rc == 0 || err > 0, "%s: failed without an errno", what);
	if (on_gup) {
		FUZZ_ASSERT(rc == -1 && err == EINVAL, "%s: want EINVAL", what);
	} else if (!readable) {
		/* The driver copies the block in before anything else. */
		FUZZ_ASSERT(rc == -1 && err == EFAULT,
			    "%s: unreadable block at %#" PRIxPTR ", want EFAULT",
			    what, arg);
	} else if (eff.addr & (PS - 1)) {
		FUZZ_ASSERT(rc == -1 && err == EINVAL,
			    "%s: unaligned addr %#" PRIx64 ", want EINVAL", what,
			    eff.addr);
	} else if (eff.addr >= eff.addr + esize) {
		FUZZ_ASSERT(rc == -1 && err == EINVAL,
			    "%s: range %#" PRIx64 "+%#" PRIx64 " pages wraps "
			    "or is empty, want EINVAL", what, eff.addr,
			    eff.npages);
	} else if (ci < 0) {
		FUZZ_ASSERT(rc == -1 && err == EINVAL,
			    "%s: want EINVAL", what);
	}

	if (rc == 0 && readable && ci >= 0) {
		/* Success needs memory that allows it. */
		if (ci == 0 || ci == 2 || ci == 5)
			FUZZ_ASSERT(range_readable(eff.addr, esize),
				    "%s: succeeded on %#" PRIx64 "+%#" PRIx64
				    " pages, which is not all readable", what,
				    eff.addr, eff.npages);
		if (ci == 1)
			FUZZ_ASSERT(range_writable(eff.addr, esize) &&
				    range_readable(eff.ptr, esize),
				    "%s: succeeded writing %#" PRIx64 "+%#"
				    PRIx64 " pages from %#" PRIx64, what,
				    eff.addr, eff.npages, eff.ptr);
		if (ci == 2) {
			for (uint64_t i = 0; i < esize / PS; i++) {
				uintptr_t a = eff.addr + i * PS;
				FUZZ_ASSERT(!in_world(a) ||
					    W.pg[world_index(a)].priv_anon,
					    "%s: succeeded, yet world page %zu "
					    "is not private anonymous memory",
					    what, world_index(a));
			}
		}
	}

	world_check(&asked, rc == 0, what);

	/* The block as it is now, for cpages and the snapshot. */
	struct shim_dmirror_cmd out;
	if (rc == 0 && readable && ci >= 0 && read_block(arg, &out)) {
		bool counted = ci == 0 || ci == 1 || ci == 4 || ci == 5;
		/* The pages done: of the range as the driver computes it
		 * (npages shifted, modulo 2^64). */
		if (counted)
			FUZZ_ASSERT(out.cpages == esize >> HETMM_PAGE_SHIFT,
				    "%s: cpages %" PRIu64 ", want %" PRIu64,
				    what, out.cpages, esize >> HETMM_PAGE_SHIFT);
		/* (The block is written after the bytes: where they
		 * overlap, the block's bytes are there.) */
		if (ci == 4 && eff.npages <= WORLD_PAGES + BUF_MAX_PAGES &&
		    !ranges_overlap(arg, sizeof(c), eff.ptr, eff.npages)) {
			uint8_t prot[WORLD_PAGES + BUF_MAX_PAGES];
			if (known_bytes(eff.ptr, eff.npages, prot))
				for (uint64_t i = 0; i < eff.npages; i++)
					check_snapshot_byte(eff.addr + i * PS,
							    prot[i], what);
		}
	}
	hbuf_free(&pbuf, what);
	hbuf_free(&abuf, what);
	known_buffers_clear();
}

/* ------------------------------------------------------------------------
 * gup_test
 */

static void do_gup(struct input *in)
{
	static const unsigned cmds[] = {
		SHIM_GUP_FAST_BENCHMARK, SHIM_PIN_FAST_BENCHMARK,
		SHIM_PIN_LONGTERM_BENCHMARK, SHIM_GUP_BASIC_TEST,
		SHIM_PIN_BASIC_TEST, SHIM_DUMP_USER_PAGES_TEST,
	};
	uint8_t k = in_u8(in);
	unsigned cmd = k % 8 < 6 ? cmds[k % 8] : k % 8 == 6 ?
		       SHIM_GUP(in_u8(in)) : in_u32(in);
	bool known_cmd = false;
	for (int i = 0; i < 6; i++)
		known_cmd |= cmd == cmds[i];
	if (cmd == FIOCLEX || cmd == FIONCLEX || cmd == FIONBIO ||
	    cmd == FIOASYNC)
		return;

	struct shim_gup_test g = { 0 };
	g.addr = gen_addr(in);
	uint8_t sm = in_u8(in);
	g.size = sm % 4 == 0 ? in_u64(in) : gen_npages(in) * PS +
					  (sm & 0x80 ? in_u16(in) % PS : 0);
	uint8_t pm = in_u8(in);
	g.nr_pages_per_call = pm % 4 == 0 ? in_u32(in) : pm % 4 == 1 ? 0 :
			      1u + in_u8(in) % (WORLD_PAGES + 2u);
	uint8_t fm = in_u8(in);
	g.gup_flags = fm % 4 == 0 ? in_u32(in) :
		      (fm & 4 ? SHIM_FOLL_WRITE : 0) |
		      (fm & 8 ? SHIM_FOLL_LONGTERM : 0);
	g.test_flags = in_u8(in) & 3;
	for (int i = 0; i < SHIM_GUP_MAX_PAGES_TO_DUMP; i++)
		g.which_pages[i] = in_u8(in);

	struct hbuf abuf = { NULL, 0 };
	uintptr_t arg;
	if (in_u8(in) % 4 != 0) {
		abuf = hbuf_new(sizeof(g), 0);
		memcpy(abuf.p, &g, sizeof(g));
		arg = (uintptr_t)abuf.p;
	} else {
		arg = gen_addr(in);
		if (in_world(arg) && range_writable(arg, sizeof(g))) {
			struct asked put;
			asked_clear(&put);
			asked_add(&put, arg, sizeof(g), (const uint8_t *)&g);
			memcpy((void *)arg, &g, sizeof(g));
			world_check(&put, true, "placing a gup_test block");
		}
	}
	struct shim_gup_test eff;
	bool readable = known_bytes(arg, sizeof(eff), (uint8_t *)&eff);

	struct asked asked;
	asked_clear(&asked);
	asked_add(&asked, arg, sizeof(g), NULL);
	int fd = in_u8(in) % 8 ? gup_fd : dm_fd[0];
	TRACE("calling gup_test %#x: {addr %#" PRIx64 ", size %#" PRIx64
	      ", per call %u, flags %#x}%s", cmd, eff.addr, eff.size,
	      eff.nr_pages_per_call, eff.gup_flags,
	      readable ? "" : " (unreadable)");
	errno = 0;
	int rc = ioctl(fd, cmd, (void *)arg);
	int err = rc < 0 ? errno : 0;
	char what[96];
	snprintf(what, sizeof(what), "gup_test %#x on %s (rc %d errno %d)",
		 cmd, fd == gup_fd ? "gup_test" : dm_path[0], rc, err);
	TRACE("%s: {addr %#" PRIx64 ", size %#" PRIx64 ", per call %u, flags "
	      "%#x}", what, eff.addr, eff.size, eff.nr_pages_per_call,
	      eff.gup_flags);
	FUZZ_ASSERT(rc == 0 || rc == -1, "%s: returned %d", what, rc);
	if (fd == gup_fd) {
		if (!known_cmd)
			FUZZ_ASSERT(rc == -1 && err == EINVAL,
				    "%s: unknown command, want EINVAL", what);
		else if (!readable && (!in_world(arg) ||
				       !W.pg[world_index(arg)].mapped ||
				       !W.pg[world_index(arg)].readable))
			FUZZ_ASSERT(rc == -1 && err == EFAULT,
				    "%s: unreadable block, want EFAULT", what);
	}
	/* Taking pages changes no byte of them. */
	world_check(&asked, rc == 0, what);
	struct shim_gup_test out;
	if (rc == 0 && fd == gup_fd && readable &&
	    known_bytes(arg, sizeof(out), (uint8_t *)&out)) {
		FUZZ_ASSERT(out.size <= eff.size,
			    "%s: size grew from %#" PRIx64 " to %#" PRIx64,
			    what, eff.size, out.size);
	}
	hbuf_free(&abuf, what);
	known_buffers_clear();
}

/* ------------------------------------------------------------------------
 * mmap of the device, and the descriptors' lives
 */

static void do_mmap(struct input *in)
{
	uint8_t u = in_u8(in);
	int fd = dm_fd[u % SHIM_DMIRROR_UNITS];
	if (fd < 0)
		return;
	uint8_t lm = in_u8(in);
	/* Lengths that fail the rounding, or a few pages: the driver gives
	 * every page of a mapping memory of its own at once, so a huge one
	 * is the caller asking for that much memory. */
	const size_t odd_len[] = { 0, 1, PS - 1, PS + 1, SIZE_MAX,
				   SIZE_MAX - PS + 2,
				   SIZE_MAX & ~(size_t)(PS - 1) };
	size_t len = lm % 4 == 0 ?
		     odd_len[in_u8(in) % (sizeof(odd_len) / sizeof(size_t))] :
		     (size_t)(1 + in_u8(in) % 8) * PS -
		     (lm & 0x80 ? in_u16(in) % PS : 0);
	int prot = in_u8(in) & (PROT_READ | PROT_WRITE | PROT_EXEC);
	uint8_t fm = in_u8(in);
	int flags = fm & 1 ? MAP_SHARED : MAP_PRIVATE;
	off_t off = fm & 2 ? (off_t)(in_u8(in) % 4) * (off_t)PS
			   : (fm & 4 ? (off_t)in_u16(in) : 0);
	/* MAP_FIXED only over a whole slot of the world. */
	void *want = NULL;
	size_t slot_first = 0;
	if ((fm & 8) && len && len <= SLOT_PAGES * PS) {
		slot_first = 1 + (size_t)(fm >> 4) % WORLD_SLOTS * SLOT_PAGES;
		want = (void *)(W.base + slot_first * PS);
		flags |= MAP_FIXED;
	}
	void *p = mmap(want, len, prot, flags, fd, off);
	char what[96];
	snprintf(what, sizeof(what), "mmap(%p, %#zx, %d, %#x) of %s", want,
		 len, prot, flags, dm_path[u % SHIM_DMIRROR_UNITS]);
	TRACE("%s = %p (off %#lx)", what, p, (long)off);
	struct asked none;
	asked_clear(&none);
	if (p == MAP_FAILED) {
		/* MAP_FIXED may have unmapped the old pages; say so in
		 * the model by looking at them. */
		if (want)
			for (size_t i = slot_first;
			     i < slot_first + (len + PS - 1) / PS; i++)
				if (msync((void *)(W.base + i * PS), PS,
					  MS_ASYNC)) {
					W.pg[i] = (struct wpage){ 0 };
					memset(W.model + i * PS, 0, PS);
				}
		world_check(&none, false, what);
		return;
	}
	FUZZ_ASSERT(!want || p == want, "%s: placed at %p", what, p);
	size_t npages = (len + PS - 1) / PS;
	if (prot & PROT_READ) {
		for (size_t i = 0; i < len; i++)
			FUZZ_ASSERT(((volatile uint8_t *)p)[i] == 0,
				    "%s: byte %zu of the new mapping is %#x",
				    what, i, ((uint8_t *)p)[i]);
	}
	if (want) {
		for (size_t i = slot_first; i < slot_first + npages; i++) {
			W.pg[i] = (struct wpage){
				.mapped = true,
				.readable = prot & PROT_READ,
				.writable = prot & PROT_WRITE,
				.shared = (flags & MAP_TYPE) == MAP_SHARED,
				.file = (flags & MAP_TYPE) != MAP_SHARED,
			};
			W.pg[i].map_id = i == slot_first ? world_new_map_id()
							 : W.pg[slot_first].map_id;
			memset(W.model + i * PS, 0, PS);
		}
	} else {
		munmap(p, len);
	}
	world_check(&none, false, what);
}

static void do_reopen(struct input *in)
{
	uint8_t u = in_u8(in) % SHIM_DMIRROR_UNITS;
	if (dm_fd[u] < 0)
		return;
	int dup_fd = -1;
	if (in_u8(in) & 1)
		dup_fd = dup(dm_fd[u]);   /* the description lives on */
	TRACE("close(%s)%s", dm_path[u], dup_fd >= 0 ? " (a dup stays)" : "");
	FUZZ_ASSERT(close(dm_fd[u]) == 0, "close of %s: %s", dm_path[u],
		    strerror(errno));
	struct asked none;
	asked_clear(&none);
	world_check(&none, false, "close of a dmirror descriptor");
	if (dup_fd >= 0) {
		dm_fd[u] = dup_fd;
		return;
	}
	dm_fd[u] = open(dm_path[u], O_RDWR | O_CLOEXEC);
	FUZZ_ASSERT(dm_fd[u] >= 0, "reopen of %s: %s", dm_path[u],
		    strerror(errno));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	world_reset(&in);
	for (int op = 0; op < MAX_OPS && !in_empty(&in); op++) {
		switch (in_u8(&in) % 12) {
		case 0: case 1: case 2: case 3: case 4: case 5:
			do_dmirror(&in);
			break;
		case 6: case 7:
			do_gup(&in);
			break;
		case 8:
			do_mmap(&in);
			break;
		case 9:
			do_reopen(&in);
			break;
		default: {
			world_cpu_op(&in);
			struct asked none;
			asked_clear(&none);
			world_check(&none, false, "a CPU operation");
			break;
		}
		}
	}
	world_final_check();
	return 0;
}
