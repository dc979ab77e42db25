/* SPDX-License-Identifier: MIT */
/*
 * test_remote_replica.c - each page on two servers (replicas 2).  One
 * server is killed while four threads migrate to the device, fault back
 * and evict (the device holds half their pages): no byte is lost, no
 * copy fails, nothing gets SIGBUS, and each thread's migrations and
 * passes of faults go on within a bound.  Striped over three servers,
 * the one in the middle killed: every byte again.  Pages whose two
 * servers both died give SIGBUS, as without replicas.  Bad replica
 * counts are refused.  On shared memory and TCP over loopback.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "remote.h"
#include "tbus.h"

#define NT 4
#define PER 1024                /* pages each thread owns */
#define DEV_PAGES 2048          /* half of what the threads own */
/* The longest migration or pass of faults of a thread's 1024 pages,
 * across the kill (the death is noticed in milliseconds: see
 * test_remote_fail). */
#define STALL_BOUND_S 5.0
#define STRIPE_PS (HETMM_REMOTE_STRIPE_PAGES * PS)

static struct hetmm_ctx *ctx;
static atomic_bool stop;

/* Wait until the device takes one server for dead; seconds since t0. */
struct worker {
	pthread_t th;
	struct hetmm_pagemap *pg;
	char *p;
	unsigned id;
	atomic_uint rounds;
	size_t bad, error_pages, failed_calls;
	uint64_t moved;
	double worst;
};

/* Rounds of: new bytes, all to the device (evicting other threads'
 * pages), every byte read back (faults, fault-around). */
static void *work(void *arg)
{
	struct worker *w = arg;
	uint8_t status[PER];

	for (unsigned round = 0; !atomic_load(&stop); round++) {
		uint64_t seed = w->id * 1000 + round;
		struct hetmm_migrate_report rep = { .status = status };

		t_fill(w->p, PER, seed);
		memset(status, 0, sizeof(status));
		double t0 = t_now();
		int rc = hetmm_migrate_to_device(w->pg, w->p, PER * PS, &rep);
		double t1 = t_now();
		w->failed_calls += rc != 0;
		w->moved += rep.moved;
		for (size_t i = 0; i < PER; i++)
			w->error_pages += status[i] == HETMM_MIGRATE_SKIP_ERROR;
		w->bad += t_verify(w->p, PER, seed);
		double t2 = t_now();
		w->worst = t1 - t0 > w->worst ? t1 - t0 : w->worst;
		w->worst = t2 - t1 > w->worst ? t2 - t1 : w->worst;
		atomic_fetch_add(&w->rounds, 1);
	}
	return NULL;
}

static unsigned min_rounds(struct worker *w)
{
	unsigned m = ~0u;
	for (int i = 0; i < NT; i++) {
		unsigned r = atomic_load(&w[i].rounds);
		m = r < m ? r : m;
	}
	return m;
}

/* Every thread at `rounds` rounds at least, within 60 s. */
static void wait_rounds(struct worker *w, unsigned rounds)
{
	double t0 = t_now();
	while (min_rounds(w) < rounds && t_now() - t0 < 60 * t_time_scale())
		usleep(1000);
	REQUIRE(min_rounds(w) >= rounds);
}

static void kill_one_of_two(void)
{
	struct t_server srv[2];
	struct hetmm_remote *dev;
	struct hetmm_remote_stats st;
	struct worker w[NT];

	t_server_start(&srv[0], "64M");
	t_server_start(&srv[1], "64M");
	REQUIRE_OK(t_remote_make_replicated(ctx, srv, 2, DEV_PAGES,
					    HETMM_PAGEMAP_EVICT, 2, t_secret,
					    &dev));
	/* Each server holds both copies' share: the whole device. */
	for (int i = 0; i < 2; i++)
		CHECK(t_server_wait_log(&srv[i], "region of 8.0 MiB", 1000));
	struct hetmm_pagemap *pg = t_remote_pg(dev);
	atomic_store(&stop, false);
	for (int i = 0; i < NT; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].pg = pg;
		w[i].id = (unsigned)i;
		w[i].p = t_map(PER);
		REQUIRE(pthread_create(&w[i].th, NULL, work, &w[i]) == 0);
	}
	wait_rounds(w, 2);
	double t0 = t_now();
	t_server_stop(&srv[0], SIGKILL);
	double detect = t_remote_wait_dead(dev, 2, t0);
	wait_rounds(w, min_rounds(w) + 3);
	atomic_store(&stop, true);

	double worst = 0;
	uint64_t moved = 0;
	unsigned rounds = 0;
	for (int i = 0; i < NT; i++) {
		pthread_join(w[i].th, NULL);
		CHECK_EQ(w[i].bad, 0);
		CHECK_EQ(w[i].error_pages, 0);
		CHECK_EQ(w[i].failed_calls, 0);
		worst = w[i].worst > worst ? w[i].worst : worst;
		moved += w[i].moved;
		rounds += atomic_load(&w[i].rounds);
	}
	REQUIRE_OK(hetmm_remote_get_stats(dev, &st));
	fprintf(stderr, "  %u rounds of 4 MiB, %" PRIu64 " pages moved, "
		"%" PRIu64 " evictions; the dead server noticed in %.1f ms; "
		"the longest migration or pass of faults %.0f ms; %" PRIu64
		" pages read from the replica, %" PRIu64 " gets failed "
		"over\n", rounds, moved, t_stats(ctx).evictions, detect * 1e3,
		worst * 1e3, st.replica_reads, st.failovers);
	CHECK_EQ(st.replicas, 2);
	CHECK_EQ(st.servers_alive, 1);
	CHECK_EQ(st.copy_errors, 0);
	CHECK(st.replica_reads > 0);
	CHECK(t_stats(ctx).evictions > 0);
	CHECK(worst < STALL_BOUND_S * t_time_scale());

	/* On one server now: to the device and back, every byte; then that
	 * one dies too, and its pages give SIGBUS. */
	t_fill(w[0].p, PER, 77);
	t_to_device(pg, w[0].p, PER);
	CHECK_EQ(t_count_on_device(ctx, w[0].p, PER), PER);
	t_server_stop(&srv[1], SIGKILL);
	t_remote_wait_dead(dev, 1, t_now());
	CHECK_EQ(t_touch_bus(w[0].p + 5 * PS), 1);
	CHECK_EQ(hetmm_migrate_to_system(ctx, w[0].p, PER * PS, NULL), -EIO);
	for (int i = 0; i < NT; i++)
		t_unmap(w[i].p, PER);
	REQUIRE_OK(hetmm_remote_destroy(dev));
}

struct reader {
	char *p;
	size_t n, first;
	uint64_t seed;
	size_t bad;
};

static void *read_pages(void *arg)
{
	struct reader *r = arg;
	r->bad = t_verify_from(r->p, r->n, r->seed, r->first);
	return NULL;
}

/* Three servers, stripe k on k % 3 and k + 1 % 3 (a device of a count of
 * pages no multiple of a stripe): the middle one killed, every byte.  It
 * is stopped first while a thread faults on its stripe: on TCP, where the
 * server's own progress serves a get, the get is in flight when the
 * server dies, and goes to the other copy. */
static void three_servers(void)
{
	const size_t n = 1000;
	struct t_server srv[3];
	struct hetmm_remote *dev;
	struct hetmm_remote_stats st;

	for (int i = 0; i < 3; i++)
		t_server_start(&srv[i], "16M");
	REQUIRE_OK(t_remote_make_replicated(ctx, srv, 3, n, 0, 2, t_secret,
					    &dev));
	struct hetmm_pagemap *pg = t_remote_pg(dev);
	char *p = t_map(n);
	t_fill(p, n, 61);
	t_to_device(pg, p, n);
	kill(srv[1].pid, SIGSTOP);
	struct reader r = { p + STRIPE_PS, HETMM_REMOTE_STRIPE_PAGES,
			    HETMM_REMOTE_STRIPE_PAGES, 61, 0 };
	pthread_t th;
	REQUIRE(pthread_create(&th, NULL, read_pages, &r) == 0);
	usleep(200 * 1000);
	t_server_stop(&srv[1], SIGKILL);
	t_remote_wait_dead(dev, 3, t_now());
	pthread_join(th, NULL);
	CHECK_EQ(r.bad, 0);
	REQUIRE_OK(hetmm_remote_get_stats(dev, &st));
	fprintf(stderr, "  3 servers: %" PRIu64 " gets failed over\n",
		st.failovers);
	CHECK(st.failovers > 0 || !strcmp(getenv("UCX_TLS"), "shm"));
	t_verify(p, n, 61);
	t_fill(p, n, 62);
	t_to_device(pg, p, n);
	struct hetmm_migrate_report rep = { 0 };
	CHECK_OK(hetmm_migrate_to_system(ctx, p, n * PS, &rep));
	CHECK_EQ(rep.moved, n);
	t_verify(p, n, 62);
	REQUIRE_OK(hetmm_remote_get_stats(dev, &st));
	CHECK_EQ(st.copy_errors, 0);
	CHECK(st.replica_reads > 0);
	t_unmap(p, n);
	REQUIRE_OK(hetmm_remote_destroy(dev));
	CHECK_EQ(t_server_stop(&srv[0], SIGTERM), 0);
	CHECK_EQ(t_server_stop(&srv[2], SIGTERM), 0);
}

/* More replicas than servers, or than hetmm keeps: refused before any
 * connection (the server logs none). */
static void bad_counts(void)
{
	struct t_server srv[2];
	struct hetmm_remote *dev = NULL;

	t_server_start(&srv[0], "16M");
	srv[1] = srv[0];
	CHECK_EQ(t_remote_make_replicated(ctx, srv, 1, 64, 0, 2, t_secret,
					  &dev), -EINVAL);
	CHECK_EQ(t_remote_make_replicated(ctx, srv, 2, 64, 0, 3, t_secret,
					  &dev), -EINVAL);
	CHECK(dev == NULL);
	CHECK_EQ(t_server_count_log(&srv[0], "connected"), 0);
	CHECK_EQ(t_server_stop(&srv[0], SIGTERM), 0);
}

static int run(const char *tls)
{
	setenv("UCX_TLS", tls, 1);
	t_bus_catch();
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	bad_counts();
	kill_one_of_two();
	three_servers();
	REQUIRE_OK(hetmm_ctx_destroy(ctx));
	return t_done();
}

int main(int argc, char **argv)
{
	return t_remote_main(argc, argv, run);
}
