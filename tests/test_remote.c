/* SPDX-License-Identifier: MIT */
/*
 * test_remote.c - the remote device on real transports: every byte after
 * migration to hetmm-memd servers, fault-back, explicit migration back,
 * eviction, fork, and a device striped over two servers; on UCX's
 * shared-memory transports and on TCP over loopback, each run in a child
 * of its own (UCX reads UCX_TLS when it loads).
 */
#include <pthread.h>

#include "remote.h"

static struct hetmm_ctx *ctx;

/*
 * A device whose copies may take the library's 2 s times the tests' time
 * scale: nothing here is about a copy that hangs (test_remote_fail is),
 * and a loaded guest under software emulation once took longer for a
 * 64-page copy over TCP (one piece left on the system: "moved 4032 of
 * 4096").
 */
static int make(struct t_server *srv, unsigned nsrv, uint64_t pages,
		uint32_t flags, struct hetmm_remote **dev)
{
	return t_remote_make_desc(ctx, srv, nsrv, pages, flags, 0,
				  2000 * t_time_scale(), t_secret, dev);
}

/* Migrate, check the pages left, fault them back one by one (random
 * order) and check every byte; again with an explicit migration back. */
static void bytes(unsigned nsrv)
{
	const size_t n = 1024;
	struct t_server srv[2];
	struct hetmm_remote *dev;
	struct hetmm_remote_stats st;

	for (unsigned i = 0; i < nsrv; i++)
		t_server_start(&srv[i], "64M");
	REQUIRE_OK(make(srv, nsrv, 2048, 0, &dev));
	struct hetmm_pagemap *pg = t_remote_pg(dev);
	char *p = t_map(n);

	t_fill(p, n, 11);
	t_to_device(pg, p, n);
	CHECK_EQ(t_count_on_device(ctx, p, n), n);
	for (size_t k = 0; k < n; k++) {       /* a stride coprime to n */
		size_t i = (k * 389) % n;
		CHECK_EQ(*(volatile uint64_t *)(p + i * PS),
			 t_word(t_page_seed(11, i), 0));
	}
	t_verify(p, n, 11);
	CHECK_EQ(t_count_on_device(ctx, p, n), 0);

	/* A second round, over what the servers hold already. */
	t_fill(p, n, 12);
	t_to_device(pg, p, n);
	struct hetmm_migrate_report rep = { 0 };
	CHECK_OK(hetmm_migrate_to_system(ctx, p, n * PS, &rep));
	CHECK_EQ(rep.moved, n);
	t_verify(p, n, 12);

	REQUIRE_OK(hetmm_remote_get_stats(dev, &st));
	CHECK_EQ(st.nr_servers, nsrv);
	CHECK_EQ(st.servers_alive, nsrv);
	CHECK_EQ(st.pages_put, 2 * n);
	CHECK(st.pages_got >= 2 * n);
	CHECK_EQ(st.copy_errors, 0);
	if (nsrv == 2) {
		/* Both servers held their stripes: each was asked for
		 * its share of the 2048 pages. */
		for (unsigned i = 0; i < nsrv; i++)
			CHECK(t_server_wait_log(&srv[i], "region of 4.0 MiB",
						1000));
	}
	t_unmap(p, n);
	REQUIRE_OK(hetmm_remote_destroy(dev));
	for (unsigned i = 0; i < nsrv; i++) {
		CHECK(t_server_wait_log(&srv[i], "freed",
					5000) || nsrv == 2);
		CHECK_EQ(t_server_stop(&srv[i], SIGTERM), 0);
	}
}

/* A device smaller than the data, evicting: every byte comes back. */
static void eviction(void)
{
	const size_t n = 2048;
	struct t_server srv;
	struct hetmm_remote *dev;

	t_server_start(&srv, "64M");
	REQUIRE_OK(make(&srv, 1, 512, HETMM_PAGEMAP_EVICT, &dev));
	struct hetmm_pagemap *pg = t_remote_pg(dev);
	char *p = t_map(n);
	t_fill(p, n, 21);
	for (size_t off = 0; off < n; off += 512)
		t_to_device(pg, p + off * PS, 512);
	CHECK(t_stats(ctx).evictions >= n - 512);
	CHECK_EQ(t_count_on_device(ctx, p, n), 512);
	t_verify(p, n, 21);
	t_unmap(p, n);
	REQUIRE_OK(hetmm_remote_destroy(dev));
	CHECK_EQ(t_server_stop(&srv, SIGTERM), 0);
}

/* fork with pages on the servers: the child reads every byte and writes
 * its own; the parent keeps its bytes and can migrate again. */
static void fork_(void)
{
	const size_t n = 512;
	struct t_server srv;
	struct hetmm_remote *dev;

	t_server_start(&srv, "64M");
	REQUIRE_OK(make(&srv, 1, n, 0, &dev));
	struct hetmm_pagemap *pg = t_remote_pg(dev);
	char *p = t_map(n);
	t_fill(p, n, 31);
	t_to_device(pg, p, n);
	pid_t c = fork();
	REQUIRE(c >= 0);
	if (c == 0) {
		int bad = (int)t_verify(p, n, 31);
		struct hetmm_pagemap *x;
		/* The child has no device: its handle is the parent's. */
		bad += hetmm_remote_pagemap(dev, &x) != -ECHILD;
		t_fill(p, n, 32);
		_exit(bad ? 1 : 0);
	}
	int status;
	REQUIRE(waitpid(c, &status, 0) == c);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	t_verify(p, n, 31);
	t_to_device(pg, p, n);
	t_verify(p, n, 31);
	t_unmap(p, n);
	REQUIRE_OK(hetmm_remote_destroy(dev));
	CHECK_EQ(t_server_stop(&srv, SIGTERM), 0);
}

/* Threads faulting at once on pages of two servers, with fault-around:
 * many gets in flight. */
struct reader {
	char *p;
	size_t first, n;
	size_t bad;
};

static void *read_part(void *arg)
{
	struct reader *r = arg;
	r->bad = t_verify_from(r->p + r->first * PS, r->n, 41, r->first);
	return NULL;
}

static void threads(void)
{
	const size_t n = 8 * 512, nt = 4;
	struct t_server srv[2];
	struct hetmm_remote *dev;
	pthread_t th[4];
	struct reader r[4];

	t_server_start(&srv[0], "64M");
	t_server_start(&srv[1], "64M");
	REQUIRE_OK(make(srv, 2, n, 0, &dev));
	struct hetmm_pagemap *pg = t_remote_pg(dev);
	char *p = t_map(n);
	t_fill(p, n, 41);
	t_to_device(pg, p, n);
	for (size_t i = 0; i < nt; i++) {
		r[i] = (struct reader){ p, i * (n / nt), n / nt, 0 };
		REQUIRE(pthread_create(&th[i], NULL, read_part, &r[i]) == 0);
	}
	for (size_t i = 0; i < nt; i++) {
		pthread_join(th[i], NULL);
		CHECK_EQ(r[i].bad, 0);
	}
	t_unmap(p, n);
	REQUIRE_OK(hetmm_remote_destroy(dev));
	CHECK_EQ(t_server_stop(&srv[0], SIGTERM), 0);
	CHECK_EQ(t_server_stop(&srv[1], SIGTERM), 0);
}

static int run(const char *tls)
{
	setenv("UCX_TLS", tls, 1);
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	bytes(1);
	bytes(2);
	eviction();
	fork_();
	threads();
	REQUIRE_OK(hetmm_ctx_destroy(ctx));
	return t_done();
}

int main(int argc, char **argv)
{
	return t_remote_main(argc, argv, run);
}
