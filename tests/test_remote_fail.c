/* SPDX-License-Identifier: MIT */
/*
 * test_remote_fail.c - a memory server killed mid-run: the device takes
 * it for dead within a bound, threads faulting on its pages get SIGBUS
 * (hetmm's device-error path), migrations to it fail and keep their
 * pages, migration back says -EIO; pages of a server still alive keep
 * working; nothing hangs.  On shared memory and TCP over loopback.
 */
#include <pthread.h>

#include "remote.h"
#include "tbus.h"

/* The bounds asserted: the device notices a killed server (its TCP
 * connection closes) and a fault on its pages ends in SIGBUS. */
#define DETECT_BOUND_S 5.0
#define SIGBUS_BOUND_S 5.0

static struct hetmm_ctx *ctx;

static unsigned server_of(size_t page, unsigned nsrv)
{
	return (unsigned)(page / HETMM_REMOTE_STRIPE_PAGES % nsrv);
}

static void server_dies(unsigned nsrv)
{
	const size_t n = 512, m = 128;
	struct t_server srv[2];
	struct hetmm_remote *dev;

	for (unsigned i = 0; i < nsrv; i++)
		t_server_start(&srv[i], "16M");
	REQUIRE_OK(t_remote_make(ctx, srv, nsrv, n + m, 0, t_secret, &dev));
	struct hetmm_pagemap *pg = t_remote_pg(dev);
	char *p = t_map(n);
	t_fill(p, n, 51);
	t_to_device(pg, p, n);

	double t0 = t_now();
	t_server_stop(&srv[0], SIGKILL);
	double detect = t_remote_wait_dead(dev, nsrv, t0);
	fprintf(stderr, "  %u server(s): the dead one noticed in %.1f ms\n",
		nsrv, detect * 1e3);
	CHECK(detect < DETECT_BOUND_S);

	/* Its pages: SIGBUS, in bounded time; the other server's: back,
	 * every byte. */
	double worst = 0;
	size_t bus = 0;
	for (size_t i = 0; i < n; i += 16) {
		if (server_of(i, nsrv) == 0) {
			struct t_touch t = { .addr = p + i * PS };
			t_touch(&t);
			bus += (size_t)t.bus;
			worst = t.seconds > worst ? t.seconds : worst;
		}
	}
	fprintf(stderr, "  SIGBUS on %zu pages, the slowest in %.1f ms\n",
		bus, worst * 1e3);
	CHECK_EQ(bus, n / 16 / nsrv);
	CHECK(worst < SIGBUS_BOUND_S);
	for (size_t i = 0; i < n; i += HETMM_REMOTE_STRIPE_PAGES)
		if (server_of(i, nsrv) != 0)
			t_verify_from(p + i * PS, HETMM_REMOTE_STRIPE_PAGES,
				      51, i);

	/* Migration to the device: pages bound for the dead server stay
	 * where they are, with their bytes (with two servers the frames
	 * free first are the live one's: the pages that came back left
	 * them). */
	char *q = t_map(m);
	t_fill(q, m, 52);
	struct hetmm_migrate_report rep = { 0 };
	int rc = hetmm_migrate_to_device(pg, q, m * PS, &rep);
	CHECK(nsrv == 1 ? rc == -EIO : rc == 0 || rc == -EIO);
	CHECK(nsrv == 1 ? rep.skipped == m : rep.moved + rep.skipped == m);
	t_verify(q, m, 52);

	/* Back: -EIO for the pages that can't come. */
	CHECK_EQ(hetmm_migrate_to_system(ctx, p, n * PS, NULL), -EIO);

	/* Discarded, the dead server's pages hold nothing up. */
	t_unmap(p, n);
	t_unmap(q, m);
	REQUIRE_OK(hetmm_remote_destroy(dev));
	for (unsigned i = 1; i < nsrv; i++)
		CHECK_EQ(t_server_stop(&srv[i], SIGTERM), 0);
}

/* A server gone before the device is made: refused, quickly. */
static void server_gone(void)
{
	struct t_server srv;
	struct hetmm_remote *dev;

	t_server_start(&srv, "16M");
	t_server_stop(&srv, SIGKILL);
	double t0 = t_now();
	CHECK_EQ(t_remote_make(ctx, &srv, 1, 64, 0, t_secret, &dev),
		 -ECONNREFUSED);
	CHECK(t_now() - t0 < 3.0);
}

static int run(const char *tls)
{
	setenv("UCX_TLS", tls, 1);
	t_bus_catch();
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	server_dies(1);
	server_dies(2);
	server_gone();
	REQUIRE_OK(hetmm_ctx_destroy(ctx));
	/* UCX did not take SIGBUS from us when it loaded. */
	CHECK(t_bus_caught());
	return t_done();
}

int main(int argc, char **argv)
{
	return t_remote_main(argc, argv, run);
}
