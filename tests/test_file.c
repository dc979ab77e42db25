/* SPDX-License-Identifier: MIT */
/*
 * test_file - the file device (src/devices/file.c): device memory made of
 * a file's blocks.  Files live in a directory made under /tmp (ext4 on
 * the machines this was written on: O_DIRECT and hole punching both
 * work; the test says what the filesystem gave).  Each case runs through
 * io_uring and again with pread/pwrite, asked for by flag and by the
 * HETMM_FILE_IO=pread environment a container without io_uring gets.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>

#ifndef HETMM_TEST_NO_URING
#include <liburing.h>
#endif

#include "t.h"
#include "tbus.h"

static char dir[] = "/tmp/hetmm-test-file-XXXXXX";
static struct hetmm_ctx *ctx;

static void path_of(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", dir, name);
}

/* The file's bytes at page `page`, read with plain pread. */
static void file_read(const char *path, size_t page, void *buf, size_t n)
{
	int fd = open(path, O_RDONLY);
	REQUIRE(fd >= 0);
	REQUIRE(pread(fd, buf, n * PS, (off_t)(page * PS)) ==
		(ssize_t)(n * PS));
	close(fd);
}

static blkcnt_t file_blocks(const char *path)
{
	struct stat st;
	REQUIRE(stat(path, &st) == 0);
	return st.st_blocks;
}

static struct hetmm_file *file_up(const char *name, uint64_t nr,
				  uint32_t flags)
{
	char path[128];
	path_of(path, sizeof(path), name);
	struct hetmm_file_desc d = { .path = path, .nr_pages = nr,
				     .flags = flags };
	struct hetmm_file *f;
	REQUIRE_OK(hetmm_file_create(ctx, &d, &f));
	return f;
}

static struct hetmm_file_info file_info(struct hetmm_file *f)
{
	struct hetmm_file_info fi;
	REQUIRE_OK(hetmm_file_get_info(f, &fi));
	return fi;
}

static struct hetmm_pagemap *pgmap_of(struct hetmm_file *f)
{
	struct hetmm_pagemap *pg;
	REQUIRE_OK(hetmm_file_pagemap(f, &pg));
	return pg;
}

#define NP 1024

/* Pages on the file device f hold their bytes in their frames' blocks
 * of the file at path (read with plain pread): page i of p, seed's
 * pattern, in block hetmm_addr_to_pfn(p + i) - the first frame. */
static void check_blocks(struct hetmm_file *f, const char *path, char *p,
			 size_t n, uint64_t seed)
{
	struct hetmm_pagemap_info pi;
	REQUIRE_OK(hetmm_pagemap_get_info(pgmap_of(f), &pi));
	char *block = t_map(1);
	size_t bad = 0;
	for (size_t i = 0; i < n; i++) {
		hetmm_pfn_t pfn;
		REQUIRE_OK(hetmm_addr_to_pfn(ctx, p + i * PS, &pfn));
		file_read(path, hetmm_pfn_number(pfn) -
				hetmm_pfn_number(pi.first_pfn), block, 1);
		bad += t_verify_from(block, 1, seed, i) != 0;
	}
	CHECK_EQ(bad, 0);
	t_unmap(block, 1);
}

/*
 * Pages to the file and back, every byte checked: the file holds them
 * while they are away, the CPU faults them back at random and in
 * sequence, and frames freed punch their blocks.  A PMD-aligned block
 * lies inside the range, off its start (as 6.1 places mappings), as a
 * transparent huge page where the kernel gives one: it goes to a
 * PMD-aligned run of frames, so frame i is not page i's.
 */
static void round_trip(uint32_t flags, enum hetmm_file_io want)
{
	struct hetmm_file *f = file_up("rt", NP, flags);
	struct hetmm_file_info fi = file_info(f);
	CHECK_EQ(fi.io, want);
	fprintf(stderr, "  io %s (uring errno %d), O_DIRECT %d (%d), fixed "
		"buffers %d\n", fi.io == HETMM_FILE_IO_URING ? "io_uring" :
		"pread", fi.uring_errno, fi.direct, fi.direct_errno,
		fi.fixed_buffers);
	char *p = t_map_chunk_at(NP, NP / 4);
	madvise(p, NP * PS, MADV_HUGEPAGE);   /* where THP is "madvise" */
	t_fill(p, NP, 7);
	REQUIRE_OK(hetmm_migrate_to_device(pgmap_of(f), p, NP * PS, NULL));
	CHECK_EQ(file_info(f).pages_written, NP);

	char path[128];
	path_of(path, sizeof(path), "rt");
	check_blocks(f, path, p, NP, 7);
	blkcnt_t full = file_blocks(path);

	/* Random single pages first, then the rest in sequence. */
	uint64_t x = 12345;
	for (int i = 0; i < 64; i++) {
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		size_t pg = (size_t)(x >> 33) % NP;
		CHECK_EQ(t_verify_from(p + pg * PS, 1, 7, pg), 0);
	}
	CHECK_EQ(t_verify(p, NP, 7), 0);
	fi = file_info(f);
	CHECK_EQ(fi.pages_read, NP);
	CHECK_EQ(fi.io_errors, 0);
	/* Punched in batches, the last when the device goes. */
	int punches = fi.holes_punched > 0;
	if (punches)
		CHECK(fi.holes_punched >= NP / 2);
	else
		fprintf(stderr, "  the filesystem punches no holes\n");
	CHECK_OK(hetmm_file_destroy(f));
	if (punches)
		CHECK(file_blocks(path) < full / 8);
	t_unmap(p, NP);
}

static void round_trip_uring(void)
{
#ifdef HETMM_TEST_NO_URING
	round_trip(0, HETMM_FILE_IO_PREAD);
#else
	round_trip(0, HETMM_FILE_IO_URING);
#endif
}

static void round_trip_pread(void)
{
	round_trip(HETMM_FILE_PREAD, HETMM_FILE_IO_PREAD);
}

static void round_trip_buffered(void)
{
	struct hetmm_file *f = file_up("buf", 8, HETMM_FILE_BUFFERED);
	CHECK_EQ(file_info(f).direct, 0);
	CHECK_EQ(file_info(f).direct_errno, 0);
	CHECK_OK(hetmm_file_destroy(f));
	round_trip(HETMM_FILE_BUFFERED | HETMM_FILE_PREAD,
		   HETMM_FILE_IO_PREAD);
}

/* io_uring refused, as a container's seccomp filter refuses it: the
 * environment asks for what such a process gets. */
static void uring_refused(void)
{
	setenv("HETMM_FILE_IO", "pread", 1);
	round_trip(0, HETMM_FILE_IO_PREAD);
	unsetenv("HETMM_FILE_IO");
}

/* Pages hetmm evicts from a full file device, and every byte back. */
static void evict(void)
{
	struct hetmm_file *f = file_up("ev", 128, HETMM_PAGEMAP_EVICT);
	char *p = t_map(512);
	t_fill(p, 512, 3);
	for (size_t off = 0; off < 512; off += 128)
		REQUIRE_OK(hetmm_migrate_to_device(pgmap_of(f), p + off * PS,
						   128 * PS, NULL));
	CHECK(t_stats(ctx).evictions >= 384);
	CHECK_EQ(t_verify(p, 512, 3), 0);
	CHECK_OK(hetmm_file_destroy(f));
	t_unmap(p, 512);
}

/* munmap and MADV_DONTNEED of pages on the file free their frames. */
static void discard(void)
{
	struct hetmm_file *f = file_up("dis", 64, 0);
	char *p = t_map(64);
	t_fill(p, 64, 5);
	REQUIRE_OK(hetmm_migrate_to_device(pgmap_of(f), p, 64 * PS, NULL));
	REQUIRE(madvise(p, 32 * PS, MADV_DONTNEED) == 0);
	REQUIRE(munmap(p + 32 * PS, 32 * PS) == 0);
	REQUIRE_OK(hetmm_ctx_sync(ctx));
	struct hetmm_pagemap_info pi;
	REQUIRE_OK(hetmm_pagemap_get_info(pgmap_of(f), &pi));
	CHECK_EQ(pi.nr_free, 64);
	CHECK_EQ(t_nonzero_pages(p, 32), 0);
	CHECK_OK(hetmm_file_destroy(f));
	t_unmap(p, 32);
}

/* ------------------------------------------------------------------------
 * Errors
 */

/* A read error on the way back: SIGBUS for the toucher, the page stays
 * on the device, and comes back whole once the disk reads again.  A
 * write error on the way out: the page stays in memory, untouched. */
static void io_error(uint32_t flags)
{
	struct hetmm_file *f = file_up("err", 64, flags);
	char *p = t_map(64);
	t_fill(p, 64, 9);
	REQUIRE_OK(hetmm_file_inject_error(f, 1, 0, 16, -EIO));
	struct hetmm_migrate_report rep = { 0 };
	CHECK_EQ(hetmm_migrate_to_device(pgmap_of(f), p, 16 * PS, &rep), -EIO);
	CHECK_EQ(rep.moved, 0);
	CHECK_EQ(t_verify(p, 16, 9), 0);   /* never left */
	REQUIRE_OK(hetmm_file_inject_error(f, 1, 0, 0, 0));
	REQUIRE_OK(hetmm_migrate_to_device(pgmap_of(f), p, 64 * PS, &rep));
	CHECK_EQ(rep.moved, 64);

	REQUIRE_OK(hetmm_file_inject_error(f, 0, 40, 1, -EIO));
	CHECK_EQ(t_touch_bus(p + 40 * PS + 5), 1);
	CHECK_EQ(t_bus_addr, (uintptr_t)(p + 40 * PS + 5));
	CHECK(file_info(f).io_errors > 0);
	REQUIRE_OK(hetmm_file_inject_error(f, 0, 0, 0, 0));
	/* The disk reads again: the page comes back, every byte. */
	REQUIRE_OK(hetmm_migrate_to_system(ctx, p + 40 * PS, PS, NULL));
	CHECK_EQ(t_verify(p, 64, 9), 0);
	CHECK_OK(hetmm_file_destroy(f));
	t_unmap(p, 64);
}

static void io_error_uring(void) { io_error(0); }
static void io_error_pread(void) { io_error(HETMM_FILE_PREAD); }

#ifndef HETMM_TEST_NO_URING
/*
 * The library's io_uring_submit calls come here (the link's --wrap:
 * tests/CMakeLists.txt).  Armed, the next submit that carries what
 * refuse_what asks for fails with -EAGAIN, as the kernel's does short of
 * memory: the requests stay in the ring, to go with the next submit (a
 * failed submit has put them in the ring the kernel reads; here they are
 * put there by that next one, which sends them just the same).
 */
int __real_io_uring_submit(struct io_uring *ring);
int __wrap_io_uring_submit(struct io_uring *ring);

enum refuse_what {
	REFUSE_READ,    /* its newest request reads more than a page */
	REFUSE_NOP,     /* a no-op among its requests */
};
static atomic_int refuse_armed, refused;
static enum refuse_what refuse_what;

static bool submit_to_refuse(const struct io_uring_sq *sq)
{
	if (sq->sqe_tail == sq->sqe_head)
		return false;
	if (refuse_what == REFUSE_READ) {
		const struct io_uring_sqe *last =
			&sq->sqes[(sq->sqe_tail - 1) & sq->ring_mask];
		return (last->opcode == IORING_OP_READ ||
			last->opcode == IORING_OP_READ_FIXED) &&
		       last->len > PS;
	}
	for (unsigned i = sq->sqe_head; i != sq->sqe_tail; i++)
		if (sq->sqes[i & sq->ring_mask].opcode == IORING_OP_NOP)
			return true;
	return false;
}

int __wrap_io_uring_submit(struct io_uring *ring)
{
	if (atomic_load(&refuse_armed) && submit_to_refuse(&ring->sq) &&
	    atomic_exchange(&refuse_armed, 0)) {
		atomic_fetch_add(&refused, 1);
		return -EAGAIN;
	}
	return __real_io_uring_submit(ring);
}

static void refuse_next(enum refuse_what what)
{
	atomic_store(&refused, 0);
	refuse_what = what;
	atomic_store(&refuse_armed, 1);
}

/*
 * A window's read whose submit fails: the piece is not started, its
 * pages stay on the device, and every byte comes back, each page read
 * at least once.  Where the range gets THPs (the guests' THP "always";
 * here madvise) the window comes back in whole 2 MiB blocks (pmdback.c),
 * and a block one of whose pieces failed is read again whole: 1472
 * pages of 1024 in Debian's 6.12, 1024 + 7 pieces of 64 (MADV_HUGEPAGE
 * on this range gives the same here).  Without THPs the pieces that
 * landed are installed, and each page is read exactly once.  The failed
 * request's entry in the ring goes with the next submit; were it still
 * the read it was, its completion would finish the request that reused
 * its slot, and the device's queue goes wrong from there (a copy done
 * twice: the migration below fails with -EIO).  A round without a
 * refusal then reads each page exactly once.
 */
static void submit_refused(void)
{
	struct hetmm_file *f = file_up("refused", NP, 0);
	REQUIRE(file_info(f).io == HETMM_FILE_IO_URING);
	char *p = t_map(NP);
	t_fill(p, NP, 11);
	REQUIRE_OK(hetmm_migrate_to_device(pgmap_of(f), p, NP * PS, NULL));
	refuse_next(REFUSE_READ);
	CHECK_EQ(t_verify(p, NP, 11), 0);
	CHECK_EQ(atomic_load(&refused), 1);   /* a read was refused */
	struct hetmm_file_info fi = file_info(f);
	CHECK(fi.pages_read >= NP);
	CHECK_EQ(fi.io_errors, 0);
	/* The device goes on: out and back again, each page read once. */
	REQUIRE_OK(hetmm_migrate_to_device(pgmap_of(f), p, NP * PS, NULL));
	CHECK_EQ(t_verify(p, NP, 11), 0);
	CHECK_EQ(file_info(f).pages_read - fi.pages_read, NP);
	CHECK_EQ(file_info(f).io_errors, 0);
	CHECK_OK(hetmm_file_destroy(f));
	t_unmap(p, NP);
}

/*
 * An attached file's scan reads ahead into the device's segments, and a
 * fault whose pages a segment holds already is a job for the completion
 * thread, woken by a no-op that goes with the submit of the next
 * segments' reads.  Here the first fault's submit of segment reads is
 * refused (they do not begin: the next faults read their pages, and
 * read ahead again), then a submit carrying a no-op.  That job is done
 * all the same, at once: left in the ring, the no-op would wait for the
 * next submit or completion, and with the scanning thread held in its
 * fault (a window of 16 pages, one copy) and the file read ahead whole
 * (1 MiB, given 100 ms) there is none; the copy timed out (5 s), a copy
 * error, and the pagemap took no new migration from then on.  Each page
 * is read once.
 */
static void ahead_submit_refused(void)
{
	enum { N = 256 };
	struct hetmm_ctx_params cp = { .fault_around_max = 16 };
	struct hetmm_ctx *own;
	REQUIRE_OK(hetmm_ctx_create(&own, &cp));
	char path[128];
	path_of(path, sizeof(path), "ahead");
	t_pattern_file(path, N, 17);
	struct hetmm_file_desc d = { .path = path, .nr_pages = N };
	struct hetmm_file *f;
	char *p;
	REQUIRE_OK(hetmm_file_attach(own, &d, &f, (void **)&p));
	REQUIRE(file_info(f).io == HETMM_FILE_IO_URING);
	refuse_next(REFUSE_READ);
	CHECK_EQ(t_verify(p, 2, 17), 0);   /* then the rest read ahead */
	CHECK_EQ(atomic_load(&refused), 1);
	usleep(100000);
	refuse_next(REFUSE_NOP);
	CHECK_EQ(t_verify(p, N, 17), 0);
	CHECK_EQ(atomic_load(&refused), 1);
	atomic_store(&refuse_armed, 0);
	struct hetmm_stats st;
	REQUIRE_OK(hetmm_ctx_get_stats(own, &st));
	CHECK_EQ(st.copy_errors, 0);
	CHECK_EQ(file_info(f).io_errors, 0);
	CHECK_EQ(file_info(f).pages_read, N);
	CHECK_OK(hetmm_file_destroy(f));
	REQUIRE_OK(hetmm_ctx_destroy(own));
}

/*
 * The completion thread's stop is a no-op it reads from the ring; its
 * submit refused (-EAGAIN), nothing else would follow to carry it, and
 * destroy waited for that thread for ever.  Sent again now: destroy
 * returns.  Destroyed on a thread of the test's, so that a hang fails
 * the case instead of the run.
 */
static atomic_bool destroyed;
static _Atomic int destroy_rc;

static void *destroy_main(void *arg)
{
	atomic_store(&destroy_rc, hetmm_file_destroy(arg));
	atomic_store(&destroyed, true);
	return NULL;
}

static void stop_refused(void)
{
	struct hetmm_file *f = file_up("stop", NP, 0);
	REQUIRE(file_info(f).io == HETMM_FILE_IO_URING);
	refuse_next(REFUSE_NOP);
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, destroy_main, f) == 0);
	t_wait_flag(&destroyed, 30.0 * t_time_scale());
	REQUIRE(atomic_load(&destroyed));   /* else hung: no join */
	REQUIRE(pthread_join(t, NULL) == 0);
	CHECK_OK(atomic_load(&destroy_rc));
	CHECK_EQ(atomic_load(&refused), 1);
	atomic_store(&refuse_armed, 0);
}

#endif

static void bad_input(void)
{
	struct hetmm_file *f;
	char path[128];
	path_of(path, sizeof(path), "bad");
	struct hetmm_file_desc d = { .path = path, .nr_pages = 4 };
	CHECK_EQ(hetmm_file_create(NULL, &d, &f), -EINVAL);
	CHECK_EQ(hetmm_file_create(ctx, NULL, &f), -EINVAL);
	CHECK_EQ(hetmm_file_create(ctx, &d, NULL), -EINVAL);
	d.offset = 1;
	CHECK_EQ(hetmm_file_create(ctx, &d, &f), -EINVAL);
	d.offset = 0;
	d.flags = 1u << 30;
	CHECK_EQ(hetmm_file_create(ctx, &d, &f), -EINVAL);
	d.flags = 0;
	d.nr_pages = 0;
	CHECK_EQ(hetmm_file_create(ctx, &d, &f), -EINVAL);
	d.nr_pages = 4;
	d.path = "relative";
	CHECK_EQ(hetmm_file_create(ctx, &d, &f), -EINVAL);
	d.path = dir;
	CHECK_EQ(hetmm_file_create(ctx, &d, &f), -EISDIR);
	d.path = "/proc/self/nonexistent/x";
	CHECK(hetmm_file_create(ctx, &d, &f) < 0);
	d.path = path;
	REQUIRE_OK(hetmm_file_create(ctx, &d, &f));
	CHECK_EQ(hetmm_file_inject_error(f, 0, 3, 2, -EIO), -EINVAL);
	CHECK_EQ(hetmm_file_inject_error(f, 0, 0, 1, 5), -EINVAL);
	CHECK_OK(hetmm_file_destroy(f));
	CHECK_EQ(hetmm_file_destroy(f), -EINVAL);
	struct hetmm_file_info fi;
	CHECK_EQ(hetmm_file_get_info(f, &fi), -EINVAL);
}

/* A device left to the context: hetmm_ctx_destroy() brings its pages
 * home and frees it. */
static void ctx_goes(void)
{
	struct hetmm_ctx *c2;
	REQUIRE_OK(hetmm_ctx_create(&c2, NULL));
	char path[128];
	path_of(path, sizeof(path), "ctx");
	struct hetmm_file_desc d = { .path = path, .nr_pages = 32 };
	struct hetmm_file *f;
	REQUIRE_OK(hetmm_file_create(c2, &d, &f));
	char *p = t_map(32);
	t_fill(p, 32, 4);
	REQUIRE_OK(hetmm_migrate_to_device(pgmap_of(f), p, 32 * PS, NULL));
	REQUIRE_OK(hetmm_ctx_destroy(c2));
	CHECK_EQ(t_verify(p, 32, 4), 0);
	t_unmap(p, 32);
}

static void cleanup(void)
{
	t_rmdir_files(dir);
}

int main(int argc, char **argv)
{
	REQUIRE(mkdtemp(dir));
	atexit(cleanup);
	t_bus_catch();
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	RUN(round_trip_uring);
	RUN(round_trip_pread);
	RUN(round_trip_buffered);
	RUN(uring_refused);
	RUN(evict);
	RUN(discard);
	RUN(io_error_uring);
	RUN(io_error_pread);
#ifndef HETMM_TEST_NO_URING
	RUN(submit_refused);
	RUN(ahead_submit_refused);
	RUN(stop_refused);
#endif
	RUN(bad_input);
	RUN(ctx_goes);
	REQUIRE_OK(hetmm_ctx_destroy(ctx));
	return t_done();
}
