/* SPDX-License-Identifier: MIT */
/*
 * test_unmapcopy - the process unmaps or moves pages while a migration
 * to a device copies them (issue 18).
 *
 * A migration's copy path reads the process's pages at their own
 * addresses: the driver's copy gets src = process memory.  Another
 * thread may munmap or mremap that range meanwhile; a driver that read
 * it with memcpy took SIGSEGV, and the process died (the private copy
 * path, which every migration takes on a kernel without UFFDIO_MOVE,
 * the coherent path, the remote device's and every asynchronous
 * driver's).  The kernel's copy reads pages it isolated and never meets
 * that.  Now drivers read src with hetmm_copy_from_process(), which
 * fails with -EFAULT, and the migration leaves those pages out
 * (hetmm.h, "Process memory").
 *
 * Each case holds the migration where its copy is about to read the
 * chunk (TEST_HOOK_TO_DEVICE_COPYING) and, on that thread, before the
 * read, takes the pages away: munmap of the whole range, mremap of it
 * elsewhere, or munmap of its second half.  Then: the call returns what
 * the header says (0 with pages moved, or -ENOENT with none; never
 * -EIO, no copy error counted), pages taken away are reported
 * HETMM_MIGRATE_SKIP_BUSY, every byte of the moved range is whole at its
 * new address and in system memory, the pages left mapped keep their
 * bytes, every frame comes back, a fresh range still migrates, and the
 * context is destroyed.  Each case runs in a child (t_run_child): a
 * SIGSEGV is a failed case, not a crashed test.
 *
 * Devices: the emulated private device with pages copied, not moved
 * (test_no_move: as on 6.1), the coherent one (where the kernel gives
 * coherent devices), an asynchronous driver (adrv.h), the file device
 * (io_uring, and pwrite) and, given hetmm-memd's path, the remote
 * device over shared memory and over TCP (whose puts UCX reads with
 * plain loads: staged, put_staged).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

#include "adrv.h"
#include "remote.h"
#include "t.h"
#include "testhook.h"

#define NPAGES 8
#define DEV_PAGES 64
#define SEED 0x5e9f
#define FRESH_SEED 0xf7e5

enum dev_kind {
	DEV_PRIVATE, DEV_COHERENT, DEV_ASYNC, DEV_FILE, DEV_FILE_PREAD,
	DEV_REMOTE
};
enum action { ACT_UNMAP, ACT_REMAP, ACT_HALF };

struct part {
	enum dev_kind dev;
	enum action act;
};

static struct t_server srv;
static bool have_coherent;
static char file_dir[] = "/tmp/hetmm-unmapcopy-XXXXXX";
static struct hetmm_ctx *ctx;
static struct hetmm_pagemap *pg;

/* The child's. */
static char *pages;      /* the range migrated */
static char *moved_to;   /* where ACT_REMAP puts it: reserved */
static enum action act;
static atomic_bool acted;

/* The first page the action takes away, and how many. */
static size_t taken_first(enum action a)
{
	return a == ACT_HALF ? NPAGES / 2 : 0;
}

/* The copy of the chunk holding pages reads it next: take the pages
 * away first, as another thread of the process may. */
static void hook(enum test_hook_point point, uintptr_t addr, size_t len)
{
	uintptr_t at = (uintptr_t)pages;
	if (point != TEST_HOOK_TO_DEVICE_COPYING || at < addr ||
	    at >= addr + len || atomic_exchange(&acted, true))
		return;
	switch (act) {
	case ACT_UNMAP:
		CHECK(munmap(pages, NPAGES * PS) == 0);
		break;
	case ACT_REMAP:
		/* libc's mremap, as an application calls it: UCX's
		 * memory hooks, were the remote device to leave them on,
		 * would make it fail here. */
		CHECK(mremap(pages, NPAGES * PS, NPAGES * PS,
			     MREMAP_MAYMOVE | MREMAP_FIXED, moved_to) ==
		      moved_to);
		break;
	case ACT_HALF:
		CHECK(munmap(pages + NPAGES / 2 * PS, NPAGES / 2 * PS) == 0);
		break;
	}
}

/* Report and statistics: pages taken away are left out, skipped as
 * busy; the others moved or skipped as busy too (they shared the copy
 * that failed); no device error. */
static void check_report(int rc, const struct hetmm_migrate_report *rep,
			 const uint8_t *status, uint64_t copy_errors)
{
	CHECK(rc == 0 || rc == -ENOENT);
	CHECK_EQ(rc == -ENOENT, rep->moved == 0);
	CHECK_EQ(rep->moved + rep->skipped, NPAGES);
	for (size_t i = 0; i < NPAGES; i++) {
		bool taken = i >= taken_first(act);
		CHECK(status[i] == HETMM_MIGRATE_SKIP_BUSY ||
		      (!taken && status[i] == HETMM_MIGRATE_MOVED));
	}
	CHECK_EQ(t_stats(ctx).copy_errors, copy_errors);
}

/* What is left of the range: every byte, where the pages are now; then
 * it goes. */
static void check_left(void)
{
	if (act == ACT_REMAP) {
		CHECK_EQ(t_count_on_device(ctx, moved_to, NPAGES), 0);
		CHECK_EQ(t_verify(moved_to, NPAGES, SEED), 0);
		t_unmap(moved_to, NPAGES);
		return;
	}
	t_unmap(moved_to, NPAGES);   /* unused */
	if (act != ACT_HALF)
		return;
	size_t n = NPAGES / 2;
	CHECK_EQ(t_verify(pages, n, SEED), 0);
	int rc = hetmm_migrate_to_system(ctx, pages, n * PS, NULL);
	CHECK(rc == 0 || rc == -ENOENT);
	CHECK_EQ(t_count_on_device(ctx, pages, n), 0);
	CHECK_EQ(t_verify(pages, n, SEED), 0);
	t_unmap(pages, n);
}

/* A fresh range migrates, whole, after all that. */
static void check_fresh(void)
{
	char *p = t_map(NPAGES);
	t_fill(p, NPAGES, FRESH_SEED);
	struct hetmm_migrate_report rep = { 0, 0, NULL };
	CHECK_OK(hetmm_migrate_to_device(pg, p, NPAGES * PS, &rep));
	CHECK_EQ(rep.moved, NPAGES);
	CHECK_EQ(t_count_on_device(ctx, p, NPAGES), NPAGES);
	CHECK_OK(hetmm_migrate_to_system(ctx, p, NPAGES * PS, NULL));
	CHECK_EQ(t_verify(p, NPAGES, FRESH_SEED), 0);
	t_unmap(p, NPAGES);
}

static void run_case(enum action a)
{
	uint8_t status[NPAGES];
	struct hetmm_migrate_report rep = { 0, 0, status };
	uint64_t free0 = t_nr_free(pg);
	uint64_t errors0 = t_stats(ctx).copy_errors;
	act = a;
	pages = t_map(NPAGES);
	moved_to = t_reserve(NPAGES);
	t_fill(pages, NPAGES, SEED);
	__atomic_store_n(&test_hook, hook, __ATOMIC_RELEASE);
	int rc = hetmm_migrate_to_device(pg, pages, NPAGES * PS, &rep);
	__atomic_store_n(&test_hook, NULL, __ATOMIC_RELEASE);
	REQUIRE(atomic_load(&acted));
	check_report(rc, &rep, status, errors0);
	check_left();
	CHECK_OK(hetmm_ctx_sync(ctx));
	CHECK_EQ(t_settled_free(pg, free0), free0);
	check_fresh();
	CHECK_EQ(t_settled_free(pg, free0), free0);
}

/* The case's device in ctx: pg, and what to destroy it by. */
struct device {
	struct hetmm_emu *emu;
	struct adrv adrv;
	struct hetmm_file *file;
	struct hetmm_remote *remote;
};

static void device_up(enum dev_kind kind, struct device *d)
{
	switch (kind) {
	case DEV_PRIVATE:
	case DEV_COHERENT:
		t_emu_add(ctx, kind == DEV_PRIVATE ?
			  HETMM_MEMORY_DEVICE_PRIVATE :
			  HETMM_MEMORY_DEVICE_COHERENT, DEV_PAGES, &d->emu,
			  &pg);
		break;
	case DEV_ASYNC:
		REQUIRE_OK(adrv_create(ctx, &d->adrv, DEV_PAGES, true, 0, 4,
				       HETMM_COPY_TIMEOUT_DEFAULT_MS *
				       t_time_scale(), 0));
		pg = d->adrv.pg;
		break;
	case DEV_FILE:
	case DEV_FILE_PREAD: {
		char path[96];
		snprintf(path, sizeof(path), "%s/frames", file_dir);
		struct hetmm_file_desc fd = {
			.path = path, .nr_pages = DEV_PAGES,
			.flags = kind == DEV_FILE_PREAD ? HETMM_FILE_PREAD : 0,
		};
		REQUIRE_OK(hetmm_file_create(ctx, &fd, &d->file));
		REQUIRE_OK(hetmm_file_pagemap(d->file, &pg));
		break;
	}
	case DEV_REMOTE:
		REQUIRE_OK(t_remote_make(ctx, &srv, 1, DEV_PAGES, 0, t_secret,
					 &d->remote));
		pg = t_remote_pg(d->remote);
		break;
	}
}

static void device_down(enum dev_kind kind, struct device *d)
{
	switch (kind) {
	case DEV_PRIVATE:
	case DEV_COHERENT:
		CHECK_OK(hetmm_emu_destroy(d->emu));
		CHECK_OK(hetmm_ctx_destroy(ctx));
		break;
	case DEV_ASYNC:
		CHECK_OK(hetmm_ctx_destroy(ctx));
		adrv_destroy(&d->adrv);
		CHECK_EQ(atomic_load(&d->adrv.done_errors), 0);
		break;
	case DEV_FILE:
	case DEV_FILE_PREAD:
		CHECK_OK(hetmm_file_destroy(d->file));
		CHECK_OK(hetmm_ctx_destroy(ctx));
		break;
	case DEV_REMOTE:
		CHECK_OK(hetmm_remote_destroy(d->remote));
		CHECK_OK(hetmm_ctx_destroy(ctx));
		break;
	}
}

/* A case, for t_run_child: its own context and device, in a child,
 * whose exit status is its result.  Pages are copied, not moved, on
 * every device (test_no_move): the path a kernel without UFFDIO_MOVE
 * takes. */
static int part_child(const void *arg)
{
	const struct part *pt = arg;
	static struct device d;
	t_failures = 0;   /* the child's own checks */
	__atomic_store_n(&test_no_move, true, __ATOMIC_RELAXED);
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	device_up(pt->dev, &d);
	run_case(pt->act);
	device_down(pt->dev, &d);
	fflush(NULL);
	return t_failures != 0;
}

static void run_device(const char *dev_name, enum dev_kind kind)
{
	static const char *const act_name[] = {
		[ACT_UNMAP] = "munmap", [ACT_REMAP] = "mremap",
		[ACT_HALF] = "munmap of half",
	};
	unsigned limit = 60 * t_time_scale();
	for (enum action a = ACT_UNMAP; a <= ACT_HALF; a++) {
		char name[96];
		struct part pt = { kind, a };
		snprintf(name, sizeof(name), "%s, %s under the copy", dev_name,
			 act_name[a]);
		fflush(NULL);
		t_run_child(name, part_child, &pt, limit);
	}
}

int main(int argc, char **argv)
{
	struct hetmm_kernel_info ki;
	REQUIRE_OK(hetmm_kernel_probe(&ki));
	if (!ki.has_process_read) {
		/* The hazard is open here, and the cases would die. */
		fprintf(stderr, "test_unmapcopy: process_vm_readv refused\n");
		return 77;
	}
	have_coherent = t_coherent_here();
	run_device("private", DEV_PRIVATE);
	if (have_coherent)
		run_device("coherent", DEV_COHERENT);
	else
		fprintf(stderr, "no coherent devices here: not tried\n");
	run_device("asynchronous", DEV_ASYNC);
	REQUIRE(mkdtemp(file_dir));
	run_device("file (io_uring where given)", DEV_FILE);
	run_device("file (pwrite)", DEV_FILE_PREAD);
	t_rmdir_files(file_dir);
	/* argv[1] is hetmm-memd's path (remote.h), if given. */
	if (argc > 1) {
		t_remote_setup(argc, argv);
		static const char *const tls[] = { "shm", "tcp" };
		for (size_t i = 0; i < 2; i++) {
			char name[32];
			setenv("UCX_TLS", tls[i], 1);
			t_server_start(&srv, "16M");
			snprintf(name, sizeof(name), "remote (%s)", tls[i]);
			run_device(name, DEV_REMOTE);
			CHECK_EQ(t_server_stop(&srv, SIGTERM), 0);
		}
		t_remote_cleanup();
	}
	return t_done();
}
