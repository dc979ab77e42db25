/* SPDX-License-Identifier: MIT */
/*
 * test_range: a driver written on the public header only, with a page
 * table of its own over a buffer, kept by the notifier pattern:
 * hetmm_range_fault() (hmm_range_fault), retried when the sequence moves
 * (a migration from another thread, a munmap between read_begin and the
 * retry); the entries' flags for system, zero, local-device,
 * remote-device, coherent and inaccessible pages; a peer device's private
 * page (hetmm_p2pdma_add_peer) treated as any other owner's; exclusive
 * access
 * (make_device_exclusive) revoked by a CPU write on another thread;
 * hetmm_page_written() for a device write into a zero page;
 * hetmm_ctx_sync(); and bad input refused.
 */
#include <pthread.h>

#include "tdrv.h"

static struct hetmm_ctx *ctx;
static struct td dev;        /* ours: owner &dev */
static struct td other;      /* another device's private memory */

/* The driver: a page table over [base, base + n pages), one notifier. */
struct drv {
	pthread_mutex_t lock;
	uintptr_t base;
	size_t n;
	uint64_t *table;
	struct hetmm_notifier *notifier;
	unsigned events[HETMM_EVENT_COUNT];
	int probe;                   /* call hetmm_ctx_sync() from the callback */
	int probe_rc;
};

static void drv_invalidate(struct hetmm_notifier *n, uintptr_t start,
			   uintptr_t end, enum hetmm_event why, void *arg)
{
	struct drv *d = arg;

	(void)n;
	if (why == HETMM_EVENT_RELEASE)
		return;
	if (__atomic_load_n(&d->probe, __ATOMIC_ACQUIRE))
		__atomic_store_n(&d->probe_rc, hetmm_ctx_sync(ctx),
				 __ATOMIC_RELEASE);
	pthread_mutex_lock(&d->lock);
	for (uintptr_t a = start; a < end; a += PS)
		if (a >= d->base && a < d->base + d->n * PS)
			d->table[(a - d->base) / PS] = 0;
	d->events[why]++;
	pthread_mutex_unlock(&d->lock);
}

/* An entry of the driver's table, read under its lock as the
 * invalidation writes it. */
static uint64_t drv_entry(struct drv *d, size_t i)
{
	pthread_mutex_lock(&d->lock);
	uint64_t e = d->table[i];
	pthread_mutex_unlock(&d->lock);
	return e;
}

static const struct hetmm_notifier_ops drv_ops = {
	.invalidate = drv_invalidate,
};

static void drv_init(struct drv *d, void *base, size_t n)
{
	memset(d, 0, sizeof(*d));
	pthread_mutex_init(&d->lock, NULL);
	d->base = (uintptr_t)base;
	d->n = n;
	d->table = calloc(n, sizeof(uint64_t));
	REQUIRE(d->table != NULL);
	REQUIRE_OK(hetmm_notifier_insert(ctx, base, n * PS, &drv_ops, d,
					 &d->notifier));
}

static void drv_fini(struct drv *d)
{
	CHECK_OK(hetmm_notifier_remove(d->notifier));
	free(d->table);
	pthread_mutex_destroy(&d->lock);
}

static unsigned drv_events(struct drv *d, enum hetmm_event why)
{
	pthread_mutex_lock(&d->lock);
	unsigned v = d->events[why];
	pthread_mutex_unlock(&d->lock);
	return v;
}

static struct hetmm_range drv_range(struct drv *d, size_t first, size_t n,
				    uint64_t *pfns, uint64_t flags)
{
	struct hetmm_range r;

	memset(&r, 0, sizeof(r));
	r.notifier = d->notifier;
	r.start = (void *)(d->base + first * PS);
	r.npages = n;
	r.pfns = pfns;
	r.default_flags = flags;
	r.dev_private_owner = &dev;
	return r;
}

/*
 * Fault pages [first, first + n) into the table, the notifier way; the
 * number of -EBUSY rounds it took, or -errno.
 */
static int drv_fault(struct drv *d, size_t first, size_t n, uint64_t flags)
{
	uint64_t *pfns = calloc(n, sizeof(uint64_t));
	struct hetmm_range r = drv_range(d, first, n, pfns, flags);
	int busy = 0;

	REQUIRE(pfns != NULL);
	for (;;) {
		int rc = hetmm_notifier_read_begin(d->notifier,
						   &r.notifier_seq);
		if (!rc)
			rc = hetmm_range_fault(&r);
		if (rc == -EBUSY) {
			REQUIRE(++busy < 1000);
			continue;
		}
		if (rc) {
			free(pfns);
			return rc;
		}
		pthread_mutex_lock(&d->lock);
		if (hetmm_notifier_read_retry(d->notifier, r.notifier_seq)) {
			pthread_mutex_unlock(&d->lock);
			busy++;
			continue;
		}
		memcpy(d->table + first, pfns, n * sizeof(uint64_t));
		pthread_mutex_unlock(&d->lock);
		free(pfns);
		return busy;
	}
}

static uint64_t vpn(const void *p)
{
	return (uint64_t)(uintptr_t)p >> HETMM_PAGE_SHIFT;
}

static uint64_t pfn_at(const void *p)
{
	hetmm_pfn_t pfn = { 0 };

	CHECK_OK(hetmm_addr_to_pfn(ctx, p, &pfn));
	return pfn.val;
}

/*
 * One page of each kind, reported without faulting (REQ_FAULT nowhere):
 *   0 unmapped      ERROR            1 PROT_NONE         ERROR
 *   2 untouched     0                3 read              ZERO if the
 *                                                         kernel maps it
 *   4 written       VALID|WRITE|vpn  5 written, PROT_READ VALID|vpn
 *   6 on our device VALID|DEVICE|LOCAL|WRITE|pfn
 *   7 on another device's private memory: 0 (not ours to see)
 * then page 2 asked for by its entry (pfn_flags_mask), the rest not.
 */
static void report_flags(void)
{
	enum { N = 8 };
	/* A fence page of ours below page 0.  A hole at the bottom of a
	 * mapping is the top of the free space below it, where the kernel
	 * puts the next mmap of any size: under ASan the handler's and the
	 * deputy's first allocations (188 KiB each, as the test's first
	 * events woke them) took it in 15 runs of 100, and page 0 read as
	 * mapped.  Between two mappings only a one-page mmap that finds
	 * no higher gap fits, and t_hole_close() says so if one came. */
	char *fence = t_map(N + 1), *p = fence + PS;
	uint64_t pfns[N];
	struct drv d;
	volatile char sink;
	int zero = t_read_maps_zero_page();

	drv_init(&d, p, N);
	REQUIRE(munmap(p, PS) == 0);
	REQUIRE(mprotect(p + PS, PS, PROT_NONE) == 0);
	sink = p[3 * PS];
	(void)sink;
	p[4 * PS] = 4;
	p[5 * PS] = 5;
	REQUIRE(mprotect(p + 5 * PS, PS, PROT_READ) == 0);
	p[6 * PS] = 6;
	p[7 * PS] = 7;
	REQUIRE(hetmm_migrate_to_device(dev.pg, p + 6 * PS, PS, NULL) == 0);
	REQUIRE(hetmm_migrate_to_device(other.pg, p + 7 * PS, PS, NULL) == 0);

	struct hetmm_range r = drv_range(&d, 0, N, pfns, 0);
	memset(pfns, 0xee, sizeof(pfns));
	REQUIRE_OK(hetmm_notifier_read_begin(d.notifier, &r.notifier_seq));
	CHECK_OK(hetmm_range_fault(&r));
	CHECK_EQ(pfns[0], HETMM_RANGE_ERROR);
	CHECK_EQ(pfns[1], HETMM_RANGE_ERROR);
	CHECK_EQ(pfns[2], 0);
	printf("kernel maps the zero page on read faults: %s\n",
	       zero < 0 ? "can't tell" : zero ? "yes" : "no");
	CHECK(pfns[3] & HETMM_RANGE_VALID);
	CHECK_EQ(pfns[3] & HETMM_RANGE_NUMBER_MASK, vpn(p + 3 * PS));
	if (zero == 1) {
		CHECK(pfns[3] & HETMM_RANGE_ZERO);
		CHECK(!(pfns[3] & HETMM_RANGE_WRITE));
	} else if (zero == 0) {
		CHECK(!(pfns[3] & HETMM_RANGE_ZERO));
	}
	CHECK_EQ(pfns[4], HETMM_RANGE_VALID | HETMM_RANGE_WRITE |
			  vpn(p + 4 * PS));
	CHECK_EQ(pfns[5], HETMM_RANGE_VALID | vpn(p + 5 * PS));
	CHECK_EQ(pfns[6], HETMM_RANGE_VALID | HETMM_RANGE_WRITE |
			  HETMM_RANGE_DEVICE | HETMM_RANGE_LOCAL |
			  (pfn_at(p + 6 * PS) & HETMM_RANGE_NUMBER_MASK));
	CHECK_EQ(hetmm_range_pfn(pfns[6]).val, pfn_at(p + 6 * PS));
	CHECK_EQ(hetmm_range_pfn(pfns[4]).val, 0);
	CHECK_EQ(pfns[7], 0);
	CHECK_EQ(hetmm_range_order(pfns[4]), 0);

	/* Reporting moved and faulted nothing. */
	CHECK(!t_present(p + 2 * PS));
	CHECK_EQ(t_count_on_device(ctx, p + 6 * PS, 2), 2);
	CHECK_EQ(hetmm_notifier_read_retry(d.notifier, r.notifier_seq), 0);

	/* Page 2 asks for a read fault through its entry; the others ask
	 * nothing, so the other device's page stays where it is. */
	for (size_t i = 0; i < N; i++)
		pfns[i] = i == 2 ? HETMM_RANGE_REQ_FAULT : 0;
	r.pfn_flags_mask = HETMM_RANGE_REQ_FAULT | HETMM_RANGE_REQ_WRITE;
	REQUIRE_OK(hetmm_notifier_read_begin(d.notifier, &r.notifier_seq));
	CHECK_OK(hetmm_range_fault(&r));
	CHECK(pfns[2] & HETMM_RANGE_VALID);
	CHECK_EQ(pfns[2] & HETMM_RANGE_NUMBER_MASK, vpn(p + 2 * PS));
	CHECK(t_present(p + 2 * PS));
	CHECK_EQ(pfns[7], 0);
	CHECK_EQ(t_count_on_device(ctx, p + 7 * PS, 1), 1);
	CHECK_EQ(pfns[0], HETMM_RANGE_ERROR);

	CHECK_EQ(p[6 * PS], 6);
	CHECK_EQ(p[7 * PS], 7);
	drv_fini(&d);
	t_hole_close(p, 1);
	t_unmap(fence, N + 1);
}

/* Coherent pages stay where they are and are reported to every device:
 * LOCAL to their own. */
static void report_coherent(void)
{
	enum { N = 2 };
	struct hetmm_emu *coh;
	struct hetmm_pagemap *cpg;
	struct hetmm_pagemap_info info;
	char *p = t_map(N);
	uint64_t pfns[N];
	struct drv d;

	if (hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_COHERENT, 16, &coh)) {
		printf("no coherent device on this kernel: skipped\n");
		t_unmap(p, N);
		return;
	}
	REQUIRE_OK(hetmm_emu_pagemap(coh, &cpg));
	REQUIRE_OK(hetmm_pagemap_get_info(cpg, &info));
	t_fill(p, N, 40);
	REQUIRE_OK(hetmm_migrate_to_device(cpg, p, N * PS, NULL));
	drv_init(&d, p, N);

	struct hetmm_range r = drv_range(&d, 0, N, pfns, HETMM_RANGE_REQ_FAULT);
	REQUIRE_OK(hetmm_notifier_read_begin(d.notifier, &r.notifier_seq));
	CHECK_OK(hetmm_range_fault(&r));
	for (size_t i = 0; i < N; i++) {
		CHECK_EQ(pfns[i], HETMM_RANGE_VALID | HETMM_RANGE_WRITE |
				  HETMM_RANGE_DEVICE | HETMM_RANGE_COHERENT |
				  (pfn_at(p + i * PS) & HETMM_RANGE_NUMBER_MASK));
	}
	r.dev_private_owner = info.owner;
	REQUIRE_OK(hetmm_notifier_read_begin(d.notifier, &r.notifier_seq));
	CHECK_OK(hetmm_range_fault(&r));
	CHECK(pfns[0] & HETMM_RANGE_LOCAL);
	CHECK(pfns[1] & HETMM_RANGE_COHERENT);
	CHECK_EQ(t_count_on_device(ctx, p, N), N);
	CHECK_EQ(t_verify(p, N, 40), 0);

	drv_fini(&d);
	CHECK_OK(hetmm_emu_destroy(coh));
	CHECK_EQ(t_verify(p, N, 40), 0);
	t_unmap(p, N);
}

/*
 * A private page of a peer device (hetmm_p2pdma_add_peer) is another
 * owner's all the same, as hmm_range_fault() has it (a range names no
 * client device to reach it from): not present when nothing is asked,
 * migrated back to system memory first when it is.  Its own owner uses
 * it where it is.
 */
static void report_peer(void)
{
	enum { N = 4 };
	char *p = t_map(N);
	uint64_t pfns[N];
	struct drv d;

	REQUIRE_OK(hetmm_p2pdma_add_peer(dev.pg, other.pg));
	t_fill(p, N, 45);
	REQUIRE_OK(hetmm_migrate_to_device(other.pg, p, N * PS, NULL));
	drv_init(&d, p, N);

	struct hetmm_range r = drv_range(&d, 0, N, pfns, 0);
	r.dev_private_owner = &other;
	REQUIRE_OK(hetmm_notifier_read_begin(d.notifier, &r.notifier_seq));
	CHECK_OK(hetmm_range_fault(&r));
	for (size_t i = 0; i < N; i++)
		CHECK_EQ(pfns[i], HETMM_RANGE_VALID | HETMM_RANGE_WRITE |
				  HETMM_RANGE_DEVICE | HETMM_RANGE_LOCAL |
				  (pfn_at(p + i * PS) & HETMM_RANGE_NUMBER_MASK));
	r.dev_private_owner = &dev;
	REQUIRE_OK(hetmm_notifier_read_begin(d.notifier, &r.notifier_seq));
	CHECK_OK(hetmm_range_fault(&r));
	for (size_t i = 0; i < N; i++)
		CHECK_EQ(pfns[i], 0);
	CHECK_EQ(t_count_on_device(ctx, p, N), N);

	/* Asked for by our device, the peer's pages come home first. */
	CHECK(drv_fault(&d, 0, N, HETMM_RANGE_REQ_FAULT) >= 0);
	for (size_t i = 0; i < N; i++)
		CHECK_EQ(drv_entry(&d, i), HETMM_RANGE_VALID | HETMM_RANGE_WRITE |
					   vpn(p + i * PS));
	CHECK_EQ(t_count_on_device(ctx, p, N), 0);
	CHECK(drv_events(&d, HETMM_EVENT_MIGRATE) >= 1);
	CHECK_EQ(t_verify(p, N, 45), 0);

	drv_fini(&d);
	CHECK_OK(hetmm_p2pdma_remove_peer(dev.pg, other.pg));
	t_unmap(p, N);
}

/* The other thread of a race: migrate the range to our device. */
static void *migrate_thread(void *arg)
{
	return (void *)(intptr_t)hetmm_migrate_to_device(dev.pg, arg, 4 * PS,
							 NULL);
}

/*
 * Faulting: pages of another device come home first, and the migration
 * that brings them tells our notifier, so the first try is -EBUSY and
 * the driver begins again, as with the kernel.  Then a migration on
 * another thread between read_begin and the fault: -EBUSY, and the retry
 * sees the pages on our device.  Then a munmap between the fault and the
 * retry check: the sequence moved, at once (no wait for the handler).
 */
static void fault_and_retry(void)
{
	enum { N = 4 };
	char *p = t_map(N);
	uint64_t pfns[N];
	struct hetmm_stats s0, s1;
	struct drv d;
	pthread_t th;
	void *ret;

	drv_init(&d, p, N);
	t_fill(p, N, 41);
	REQUIRE_OK(hetmm_migrate_to_device(other.pg, p, N * PS, NULL));

	s0 = t_stats(ctx);
	struct hetmm_range r = drv_range(&d, 0, N, pfns,
					 HETMM_RANGE_REQ_FAULT |
					 HETMM_RANGE_REQ_WRITE);
	REQUIRE_OK(hetmm_notifier_read_begin(d.notifier, &r.notifier_seq));
	CHECK_EQ(hetmm_range_fault(&r), -EBUSY);
	CHECK(drv_events(&d, HETMM_EVENT_MIGRATE) >= 1);
	CHECK_EQ(t_count_on_device(ctx, p, N), 0);
	REQUIRE_OK(hetmm_notifier_read_begin(d.notifier, &r.notifier_seq));
	CHECK_OK(hetmm_range_fault(&r));
	for (size_t i = 0; i < N; i++)
		CHECK_EQ(pfns[i], HETMM_RANGE_VALID | HETMM_RANGE_WRITE |
				  vpn(p + i * PS));
	s1 = t_stats(ctx);
	CHECK(s1.mirror_faults - s0.mirror_faults >= 1);
	CHECK_EQ(t_verify(p, N, 41), 0);

	/* A migration on another thread between read_begin and the
	 * fault. */
	REQUIRE_OK(hetmm_notifier_read_begin(d.notifier, &r.notifier_seq));
	REQUIRE(pthread_create(&th, NULL, migrate_thread, p) == 0);
	pthread_join(th, &ret);
	CHECK_EQ((intptr_t)ret, 0);
	CHECK_EQ(hetmm_range_fault(&r), -EBUSY);
	CHECK_EQ(hetmm_notifier_read_retry(d.notifier, r.notifier_seq), 1);
	/* The driver's loop: the pages are on our device now, used in
	 * place, and no fault brings them back. */
	CHECK(drv_fault(&d, 0, N, HETMM_RANGE_REQ_FAULT) >= 0);
	for (size_t i = 0; i < N; i++) {
		uint64_t e = drv_entry(&d, i);
		CHECK((e & HETMM_RANGE_DEVICE) && (e & HETMM_RANGE_LOCAL));
		CHECK_EQ(hetmm_range_pfn(e).val, pfn_at(p + i * PS));
	}
	CHECK_EQ(t_count_on_device(ctx, p, N), N);

	/* A fault, then a munmap, then the retry check. */
	REQUIRE_OK(hetmm_notifier_read_begin(d.notifier, &r.notifier_seq));
	CHECK_OK(hetmm_range_fault(&r));
	REQUIRE(munmap(p + 2 * PS, 2 * PS) == 0);
	/* The fault catches the handler up with the munmap itself. */
	CHECK_EQ(hetmm_range_fault(&r), -EBUSY);
	CHECK_EQ(hetmm_notifier_read_retry(d.notifier, r.notifier_seq), 1);
	CHECK(drv_events(&d, HETMM_EVENT_UNMAP) >= 1);
	CHECK_EQ(drv_entry(&d, 2), 0);
	CHECK_EQ(drv_entry(&d, 3), 0);
	CHECK(drv_entry(&d, 0) & HETMM_RANGE_VALID);
	/* Now faulting the hole: -EFAULT, reporting it: ERROR. */
	CHECK_EQ(drv_fault(&d, 0, N, HETMM_RANGE_REQ_FAULT), -EFAULT);
	CHECK(drv_fault(&d, 0, N, 0) >= 0);
	CHECK_EQ(drv_entry(&d, 2), HETMM_RANGE_ERROR);
	CHECK(drv_entry(&d, 0) & HETMM_RANGE_DEVICE);

	drv_fini(&d);
	CHECK_EQ(t_verify(p, 2, 41), 0);
	t_unmap(p, 2);
}

/* Faults the CPU couldn't take either, and bad input. */
static void errors(void)
{
	enum { N = 4 };
	char *p = t_map(N);
	uint64_t pfns[N];
	struct drv d;
	struct hetmm_range r;

	drv_init(&d, p, N);
	REQUIRE(mprotect(p, PS, PROT_NONE) == 0);
	REQUIRE(mprotect(p + PS, PS, PROT_READ) == 0);
	CHECK_EQ(drv_fault(&d, 0, 1, HETMM_RANGE_REQ_FAULT), -EFAULT);
	CHECK_EQ(drv_fault(&d, 1, 1, HETMM_RANGE_REQ_FAULT |
				     HETMM_RANGE_REQ_WRITE), -EPERM);
	CHECK(drv_fault(&d, 1, 1, HETMM_RANGE_REQ_FAULT) >= 0);
	CHECK(drv_entry(&d, 1) & HETMM_RANGE_VALID);
	CHECK(!(drv_entry(&d, 1) & HETMM_RANGE_WRITE));
	/* REQ_WRITE without REQ_FAULT asks nothing. */
	CHECK(drv_fault(&d, 1, 1, HETMM_RANGE_REQ_WRITE) >= 0);

	r = drv_range(&d, 0, N, pfns, 0);
	REQUIRE_OK(hetmm_notifier_read_begin(d.notifier, &r.notifier_seq));
	CHECK_EQ(hetmm_range_fault(NULL), -EINVAL);
	r.npages = 0;
	CHECK_EQ(hetmm_range_fault(&r), -EINVAL);
	r.npages = N + 1;                         /* past the notifier */
	CHECK_EQ(hetmm_range_fault(&r), -EINVAL);
	r.npages = N;
	r.start = p + 1;
	CHECK_EQ(hetmm_range_fault(&r), -EINVAL);
	r.start = p - PS;                          /* before it */
	CHECK_EQ(hetmm_range_fault(&r), -EINVAL);
	r.start = p;
	r.pfns = NULL;
	CHECK_EQ(hetmm_range_fault(&r), -EINVAL);
	r.pfns = pfns;
	r.default_flags = HETMM_RANGE_ERROR;
	CHECK_EQ(hetmm_range_fault(&r), -EINVAL);
	r.default_flags = 0;
	r.notifier = NULL;
	CHECK_EQ(hetmm_range_fault(&r), -EINVAL);
	r.notifier = d.notifier;
	CHECK_OK(hetmm_range_fault(&r));

	CHECK_EQ(hetmm_ctx_sync(NULL), -EINVAL);
	CHECK_EQ(hetmm_page_written(NULL), -EINVAL);
	CHECK_EQ(hetmm_page_written((struct hetmm_page *)pfns), -ENXIO);

	hetmm_pfn_t out[N];
	uint64_t seq;
	CHECK_EQ(hetmm_make_device_exclusive(NULL, d.notifier, p + 2 * PS, 1,
					     out, &seq), -EINVAL);
	CHECK_EQ(hetmm_make_device_exclusive(dev.pg, NULL, p + 2 * PS, 1,
					     out, &seq), -EINVAL);
	CHECK_EQ(hetmm_make_device_exclusive(dev.pg, d.notifier, p + 2 * PS,
					     0, out, &seq), -EINVAL);
	CHECK_EQ(hetmm_make_device_exclusive(dev.pg, d.notifier, p + 2 * PS,
					     1, NULL, &seq), -EINVAL);
	CHECK_EQ(hetmm_make_device_exclusive(dev.pg, d.notifier, p + 2 * PS,
					     1, out, NULL), -EINVAL);
	CHECK_EQ(hetmm_make_device_exclusive(dev.pg, d.notifier, p + 2 * PS + 1,
					     1, out, &seq), -EINVAL);
	CHECK_EQ(hetmm_make_device_exclusive(dev.pg, d.notifier, p + 2 * PS,
					     N, out, &seq), -EINVAL);
	CHECK_EQ(hetmm_make_device_exclusive(dev.pg, d.notifier, p, 1, out,
					     &seq), -EFAULT);
	CHECK_EQ(hetmm_make_device_exclusive(dev.pg, d.notifier, p + PS, 1,
					     out, &seq), -EPERM);
	/* Nothing moved. */
	CHECK_EQ(t_count_on_device(ctx, p, N), 0);

	/* A pagemap of another context. */
	struct hetmm_ctx *ctx2;
	struct td dev2;
	REQUIRE_OK(hetmm_ctx_create(&ctx2, NULL));
	REQUIRE_OK(td_add(ctx2, &dev2, 16, TD_REMAP,
			  HETMM_MEMORY_DEVICE_PRIVATE, 0));
	CHECK_EQ(hetmm_make_device_exclusive(dev2.pg, d.notifier, p + 2 * PS,
					     1, out, &seq), -EINVAL);
	CHECK_OK(hetmm_ctx_destroy(ctx2));
	td_free(&dev2);

	drv_fini(&d);
	t_unmap(p, N);
}

static void *cpu_writer(void *arg)
{
	((volatile char *)arg)[5] = 0x5a;
	return NULL;
}

/*
 * Exclusive access: the pages leave the CPU page tables for our device;
 * the driver maps the frames under its lock if the sequence held, and
 * writes one in place (device atomics); a CPU write on another thread
 * revokes that page, tells the notifier HETMM_EVENT_EXCLUSIVE and finds
 * the device's bytes with its own write on top.
 */
static void exclusive(void)
{
	enum { N = 8 };
	char *p = t_map(N);
	hetmm_pfn_t out[N];
	uint64_t seq;
	struct drv d;
	pthread_t th;
	int mapped = 0;

	drv_init(&d, p, N);
	t_fill(p, N, 42);
	for (int tries = 0; tries < 16 && !mapped; tries++) {
		REQUIRE_OK(hetmm_make_device_exclusive(dev.pg, d.notifier, p, N,
						       out, &seq));
		pthread_mutex_lock(&d.lock);
		if (!hetmm_notifier_read_retry(d.notifier, seq)) {
			for (size_t i = 0; i < N; i++)
				d.table[i] = HETMM_RANGE_VALID |
					     HETMM_RANGE_WRITE |
					     HETMM_RANGE_DEVICE |
					     HETMM_RANGE_LOCAL |
					     (out[i].val &
					      HETMM_RANGE_NUMBER_MASK);
			mapped = 1;
		}
		pthread_mutex_unlock(&d.lock);
	}
	REQUIRE(mapped);
	for (size_t i = 0; i < N; i++) {
		CHECK_EQ(out[i].val, pfn_at(p + i * PS));
		CHECK_EQ(t_present(p + i * PS), 0);
	}

	/* The device writes page 3 in place, under its lock. */
	struct hetmm_page *page;
	struct hetmm_page_info pi;
	struct hetmm_pagemap_info gi;
	REQUIRE_OK(hetmm_pagemap_get_info(dev.pg, &gi));
	REQUIRE_OK(hetmm_pfn_to_page(out[3], &page));
	REQUIRE_OK(hetmm_page_get_info(page, &pi));
	CHECK(pi.flags & HETMM_PAGE_EXCLUSIVE);
	CHECK_EQ(pi.index, hetmm_pfn_number(out[3]) -
			   hetmm_pfn_number(gi.first_pfn));
	pthread_mutex_lock(&d.lock);
	REQUIRE(d.table[3] & HETMM_RANGE_VALID);
	t_fill_from(dev.mem + pi.index * PS, 1, 43, 3);
	CHECK_OK(hetmm_page_written(page));
	pthread_mutex_unlock(&d.lock);

	/* A CPU write on another thread takes page 3 back. */
	unsigned ev = drv_events(&d, HETMM_EVENT_EXCLUSIVE);
	REQUIRE(pthread_create(&th, NULL, cpu_writer, p + 3 * PS) == 0);
	pthread_join(th, NULL);
	CHECK(drv_events(&d, HETMM_EVENT_EXCLUSIVE) > ev);
	CHECK_EQ(hetmm_notifier_read_retry(d.notifier, seq), 1);
	CHECK_EQ(drv_entry(&d, 3), 0);
	CHECK_EQ(t_present(p + 3 * PS), 1);
	char want[PS];
	t_fill_from(want, 1, 43, 3);
	want[5] = 0x5a;
	CHECK(memcmp(p + 3 * PS, want, PS) == 0);

	/* The rest come back intact, the last by a read. */
	CHECK_EQ(t_verify(p, 3, 42), 0);
	CHECK_EQ(t_verify_from(p + 4 * PS, N - 4, 42, 4), 0);
	CHECK_EQ(t_count_on_device(ctx, p, N), 0);

	/* Coherent memory can't hold pages exclusive. */
	struct hetmm_emu *coh;
	struct hetmm_pagemap *cpg;
	if (hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_COHERENT, 16, &coh) == 0) {
		REQUIRE_OK(hetmm_emu_pagemap(coh, &cpg));
		CHECK_EQ(hetmm_make_device_exclusive(cpg, d.notifier, p, 1,
						     out, &seq), -EOPNOTSUPP);
		CHECK_OK(hetmm_emu_destroy(coh));
	}
	drv_fini(&d);
	t_unmap(p, N);
}

/*
 * A device write into a page migrated as a zero page: with
 * hetmm_page_written() the bytes are the page's; without, the page is
 * still a zero page and comes back as zeroes.
 */
static void page_written(void)
{
	char *p = t_map(2);
	struct hetmm_page *page;
	struct hetmm_page_info pi;

	REQUIRE_OK(hetmm_migrate_to_device(dev.pg, p, 2 * PS, NULL));
	for (int i = 0; i < 2; i++) {
		hetmm_pfn_t pfn = { pfn_at(p + i * PS) };

		REQUIRE_OK(hetmm_pfn_to_page(pfn, &page));
		REQUIRE_OK(hetmm_page_get_info(page, &pi));
		REQUIRE(pi.flags & HETMM_PAGE_ZERO);
		t_fill_from(dev.mem + pi.index * PS, 1, 44, (size_t)i);
		if (i == 0) {
			CHECK_OK(hetmm_page_written(page));
			REQUIRE_OK(hetmm_page_get_info(page, &pi));
			CHECK(!(pi.flags & HETMM_PAGE_ZERO));
		}
	}
	CHECK_EQ(t_verify(p, 1, 44), 0);
	CHECK_EQ(t_nonzero_pages(p + PS, 1), 0);
	t_unmap(p, 2);
}

/*
 * hetmm_ctx_sync(): once it returns the notifier has been told of a
 * munmap that returned before it.  From a notifier callback on the
 * handler thread it refuses with -EDEADLK instead of waiting for itself.
 */
static void sync_call(void)
{
	enum { N = 4 };
	char *p = t_map(N);
	struct drv d;

	drv_init(&d, p, N);
	t_fill(p, N, 45);
	REQUIRE_OK(hetmm_migrate_to_device(dev.pg, p, N * PS, NULL));
	unsigned ev = drv_events(&d, HETMM_EVENT_UNMAP);
	__atomic_store_n(&d.probe_rc, 1, __ATOMIC_RELEASE);
	__atomic_store_n(&d.probe, 1, __ATOMIC_RELEASE);
	REQUIRE(munmap(p, N * PS) == 0);
	CHECK_OK(hetmm_ctx_sync(ctx));
	__atomic_store_n(&d.probe, 0, __ATOMIC_RELEASE);
	CHECK(drv_events(&d, HETMM_EVENT_UNMAP) > ev);
	CHECK_EQ(__atomic_load_n(&d.probe_rc, __ATOMIC_ACQUIRE), -EDEADLK);
	drv_fini(&d);
}

int main(void)
{
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	REQUIRE_OK(td_add(ctx, &dev, 64, TD_REMAP, HETMM_MEMORY_DEVICE_PRIVATE,
			  0));
	REQUIRE_OK(td_add(ctx, &other, 64, TD_REMAP,
			  HETMM_MEMORY_DEVICE_PRIVATE, 0));

	report_flags();
	report_coherent();
	report_peer();
	fault_and_retry();
	errors();
	exclusive();
	page_written();
	sync_call();

	CHECK_EQ(t_stats(ctx).device_resident, 0);
	CHECK_OK(hetmm_ctx_destroy(ctx));
	td_free(&dev);
	td_free(&other);
	return t_done();
}
