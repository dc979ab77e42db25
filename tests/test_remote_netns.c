/* SPDX-License-Identifier: MIT */
/*
 * test_remote_netns.c - the remote device over a real network path: a
 * hetmm-memd server in a network namespace of its own, joined to this
 * one by a veth pair, both made by the test and removed after (root
 * only: skipped, with the reason printed, where they can't be made).
 * TCP: every byte after migration, fault-back and fork; then the link
 * cut under pages on the server: the device takes the server for dead
 * within the keepalive bound and faults get SIGBUS, nothing hangs.
 */
#include <pthread.h>

#include "remote.h"
#include "tbus.h"

#define SKIP 77
/* The device's TCP keepalive gives up on a silent peer in about 4 s
 * (devices/remote.c); the test allows for a loaded machine. */
#define CUT_BOUND_S 15.0

static char ns[32], veth_a[16], veth_b[16];
static int ns_made, link_made;
static unsigned subnet;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void net_down(void)
{
	if (link_made)
		sh("ip link del %s 2>/dev/null", veth_a);
	if (ns_made)
		sh("ip netns del %s", ns);
	link_made = ns_made = 0;
}

/* The namespace, the pair, addresses 10.233.S.1 here and .2 there; 0,
 * or the reason it can't be done. */
static const char *net_up(void)
{
	unsigned id = (unsigned)getpid();

	if (geteuid() != 0)
		return "not root: network namespaces need CAP_SYS_ADMIN";
	if (sh("command -v ip >/dev/null 2>&1"))
		return "no ip(8) (iproute2)";
	subnet = id % 250 + 1;
	snprintf(ns, sizeof(ns), "hetmm-rt-%u", id);
	snprintf(veth_a, sizeof(veth_a), "hmv%ua", id % 1000000);
	snprintf(veth_b, sizeof(veth_b), "hmv%ub", id % 1000000);
	if (sh("ip netns add %s 2>/dev/null", ns))
		return "ip netns add failed (no CAP_SYS_ADMIN here?)";
	ns_made = 1;
	atexit(net_down);
	if (sh("ip link add %s type veth peer name %s 2>/dev/null", veth_a,
	       veth_b))
		return "ip link add ... type veth failed (no veth module?)";
	link_made = 1;
	if (sh("ip link set %s netns %s", veth_b, ns) ||
	    sh("ip addr add 10.233.%u.1/24 dev %s", subnet, veth_a) ||
	    sh("ip link set %s up", veth_a) ||
	    sh("ip netns exec %s ip addr add 10.233.%u.2/24 dev %s", ns,
	       subnet, veth_b) ||
	    sh("ip netns exec %s ip link set %s up", ns, veth_b) ||
	    sh("ip netns exec %s ip link set lo up", ns))
		return "could not configure the veth pair";
	/* The link passes packets once its carrier is up (the device's
	 * connect, with its timeout, tells the rest). */
	for (int i = 0; i < 300 && sh("ip link show %s | grep -q LOWER_UP",
				      veth_a); i++)
		usleep(10000);
	return NULL;
}

int main(int argc, char **argv)
{
	struct hetmm_ctx *ctx;
	struct t_server srv;
	struct hetmm_remote *dev;
	struct hetmm_remote_stats st;
	const size_t n = 1024;
	char listen[64];

	t_remote_setup(argc, argv);
	const char *why = net_up();
	if (why) {
		fprintf(stderr, "SKIP: %s\n", why);
		net_down();
		t_remote_cleanup();
		return SKIP;
	}
	setenv("UCX_TLS", "tcp", 1);
	t_bus_catch();
	snprintf(listen, sizeof(listen), "10.233.%u.2:0", subnet);
	t_server_start_in(&srv, ns, listen, "64M", t_secret);
	fprintf(stderr, "server in %s at %s\n", ns, srv.addr);

	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	REQUIRE_OK(t_remote_make(ctx, &srv, 1, n, HETMM_PAGEMAP_EVICT,
				 t_secret, &dev));
	struct hetmm_pagemap *pg = t_remote_pg(dev);
	char *p = t_map(n);

	/* Migration, fault-back (random order), migration back. */
	t_fill(p, n, 61);
	t_to_device(pg, p, n);
	for (size_t k = 0; k < n; k++)
		CHECK_EQ(*(volatile uint64_t *)(p + (k * 389 % n) * PS),
			 t_word(t_page_seed(61, k * 389 % n), 0));
	t_verify(p, n, 61);
	t_fill(p, n, 62);
	t_to_device(pg, p, n);
	CHECK_OK(hetmm_migrate_to_system(ctx, p, n * PS, NULL));
	t_verify(p, n, 62);

	/* fork: the child reads every byte the server held. */
	t_to_device(pg, p, n);
	pid_t c = fork();
	REQUIRE(c >= 0);
	if (c == 0)
		_exit(t_verify(p, n, 62) ? 1 : 0);
	int status;
	REQUIRE(waitpid(c, &status, 0) == c);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	t_verify(p, n, 62);

	/* The link cut under pages on the server. */
	t_to_device(pg, p, n);
	double t0 = t_now();
	REQUIRE(sh("ip link set %s down", veth_a) == 0);
	do {
		REQUIRE_OK(hetmm_remote_get_stats(dev, &st));
	} while (st.servers_alive && t_now() - t0 < 30 && !usleep(10000));
	double cut = t_now() - t0;
	fprintf(stderr, "link cut: the server taken for dead in %.2f s\n",
		cut);
	CHECK_EQ(st.servers_alive, 0);
	CHECK(cut < CUT_BOUND_S);
	t0 = t_now();
	CHECK_EQ(t_touch_bus(p), 1);
	fprintf(stderr, "then a fault got SIGBUS in %.1f ms\n",
		(t_now() - t0) * 1e3);
	t_unmap(p, n);
	REQUIRE_OK(hetmm_remote_destroy(dev));
	REQUIRE_OK(hetmm_ctx_destroy(ctx));
	CHECK_EQ(t_server_stop(&srv, SIGTERM), 0);
	net_down();
	t_remote_cleanup();
	return t_done();
}
