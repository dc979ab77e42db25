/* SPDX-License-Identifier: MIT */
/*
 * test_mirrorlock - the handler waits for a mirror's lock in the
 * mirror's invalidation (HETMM_EVENT_DISCARD of a munmap, madvise or
 * mremap, a page brought back) while the thread that holds the lock
 * faults on a hole of a mapping hetmm registered whole (issue 18).  Only
 * a reader of the userfaultfd can serve that fault; the handler waits
 * for the lock, and the deputy serves nothing while the handler is in
 * the middle of an event: neither moves, for good.
 *
 * The emulated device's mirror took new nodes of its page table with
 * calloc() under its lock and wrote them there.  Memory a malloc arena
 * hands out can be such a hole: the kernel merges an arena's mapping
 * with a neighbour's, and hetmm registers a mapping whole (watch.c).
 *
 * The window is opened on purpose: this program's own calloc() hands the
 * mirror's 4 KiB page table nodes out of a mapping hetmm registered, in
 * pages never touched, and holds the first such call until the handler
 * is in the invalidation of a discard; a notifier of the test's own,
 * called before the mirror's, holds the handler there until the
 * mirror's thread waits in a userfault.  (Before the fix: the read never
 * returned, the child is killed.)  The allocator replaced, this runs
 * without sanitizers only: their runtimes own calloc() and free().
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

#include "t.h"

/* The allocator is replaced only where no sanitizer's runtime owns it. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#else
#define SANITIZED 0
#endif

#if SANITIZED
int main(void)
{
	fprintf(stderr, "test_mirrorlock: not under a sanitizer (it replaces "
			"calloc and free, which the runtime owns)\n");
	return 77;
}
#else

#define ARENA_PAGES 64
/* The emulated mirror's page table node: 512 entries of 8 bytes. */
#define NODE_SIZE (512 * sizeof(uint64_t))

extern void *__libc_calloc(size_t n, size_t size);
extern void __libc_free(void *p);

static char *arena;                    /* registered; pages 1.. holes */
static atomic_size_t arena_next = 1;   /* the next page to hand out */
static _Thread_local bool armed;       /* the mirror's thread, reading */
static atomic_bool in_calloc, in_invalidate, reader_done;
static _Atomic pid_t reader_tid;
static struct hetmm_ctx *ctx;
static struct hetmm_mirror *mirror;
static char *data;

static bool in_arena(const void *p)
{
	return arena && (const char *)p >= arena &&
	       (const char *)p < arena + ARENA_PAGES * PS;
}

/*
 * The mirror's thread's page table nodes come from the arena, a page
 * each, untouched; the first is held until the handler is in the
 * invalidation.
 */
void *calloc(size_t n, size_t size)
{
	if (!armed || n != 1 || size != NODE_SIZE ||
	    atomic_load(&arena_next) == ARENA_PAGES)
		return __libc_calloc(n, size);
	if (!atomic_exchange(&in_calloc, true))
		t_wait_flag(&in_invalidate, 10.0 * t_time_scale());
	return arena + atomic_fetch_add(&arena_next, 1) * PS;
}

void free(void *p)
{
	if (!in_arena(p))
		__libc_free(p);
}

/* Called before the mirror's (notifiers are called newest first): hold
 * the handler here until the mirror's thread waits in a fault. */
static void hold_invalidate(struct hetmm_notifier *n, uintptr_t start,
			    uintptr_t end, enum hetmm_event why, void *arg)
{
	(void)n, (void)start, (void)end, (void)arg;
	if (why != HETMM_EVENT_DISCARD || !atomic_load(&in_calloc) ||
	    atomic_exchange(&in_invalidate, true))
		return;
	for (double t = t_now() + 10.0 * t_time_scale();
	     !atomic_load(&reader_done) &&
	     !t_in_userfault(atomic_load(&reader_tid)) && t_now() < t;)
		usleep(1000);
}

static const struct hetmm_notifier_ops hold_ops = {
	.invalidate = hold_invalidate,
};

static void *reader_main(void *arg)
{
	char *buf = arg;
	atomic_store(&reader_tid, gettid());
	armed = true;
	CHECK_OK(hetmm_mirror_read(mirror, data, buf, 1, NULL));
	armed = false;
	atomic_store(&reader_done, true);
	return NULL;
}

/* A discard while the mirror's thread stores a range fault's entries. */
static int discard_while_mirror_stores(const void *arg)
{
	(void)arg;
	struct hetmm_emu *emu;
	struct hetmm_pagemap *pg;
	struct hetmm_notifier *hold;
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	t_emu_add(ctx, HETMM_MEMORY_DEVICE_PRIVATE, 16, &emu, &pg);
	REQUIRE_OK(hetmm_mirror_create(emu, &mirror));

	/* The arena: registered whole by the migration of its first page;
	 * the rest never touched. */
	arena = t_map(ARENA_PAGES);
	arena[0] = 1;
	REQUIRE_OK(hetmm_migrate_to_device(pg, arena, PS, NULL));

	data = t_map(2);
	t_fill(data, 2, 7);
	REQUIRE_OK(hetmm_notifier_insert(ctx, data, 2 * PS, &hold_ops, NULL,
					 &hold));
	char *buf = t_alloc_pages(1);
	pthread_t reader;
	REQUIRE(pthread_create(&reader, NULL, reader_main, buf) == 0);

	/* The mirror's thread holds its lock, in calloc: discard. */
	t_wait_flag(&in_calloc, 10.0 * t_time_scale());
	CHECK(atomic_load(&in_calloc));
	CHECK(madvise(data + PS, PS, MADV_DONTNEED) == 0);
	REQUIRE(pthread_join(reader, NULL) == 0);
	CHECK(atomic_load(&in_invalidate));
	CHECK_EQ(t_verify(buf, 1, 7), 0);
	CHECK_EQ(t_nonzero_pages(data + PS, 1), 0);

	free(buf);
	CHECK_OK(hetmm_notifier_remove(hold));
	CHECK_OK(hetmm_mirror_destroy(mirror));
	CHECK_OK(hetmm_emu_destroy(emu));
	CHECK_OK(hetmm_ctx_destroy(ctx));
	fflush(NULL);
	return t_failures != 0;
}

int main(void)
{
	fflush(NULL);
	t_run_child("discard while the mirror stores",
		    discard_while_mirror_stores, NULL, 30 * t_time_scale());
	return t_done();
}
#endif
