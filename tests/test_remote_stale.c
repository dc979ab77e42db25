/* SPDX-License-Identifier: MIT */
/*
 * test_remote_stale.c - clients and servers that outlive each other's
 * state.  A server killed and restarted on the same port while a client
 * (stopped meanwhile) still holds its connection to the old one: the
 * client, resumed, takes the old server for dead and reads every byte
 * from the replica, never touching the new server, which serves a new
 * client meanwhile.  A client stopped in the middle of its traffic,
 * admitted and silent from then on: the server keeps serving the others
 * within a bound, and frees the stopped one's region when it dies.  On
 * shared memory and TCP over loopback.
 */
#include "remote.h"

/* A round trip of 1024 pages (4 MiB) on a server another client holds
 * up: as one on an idle server, give or take the load of this machine. */
#define SERVE_BOUND_S 5.0

static struct hetmm_ctx *ctx;

/* n pages there and back, every byte; seconds it took. */
static double round_trip(struct hetmm_remote *dev, size_t n, uint64_t seed)
{
	char *p = t_map(n);
	double t0 = t_now();

	t_fill(p, n, seed);
	t_to_device(t_remote_pg(dev), p, n);
	CHECK_EQ(t_count_on_device(ctx, p, n), n);
	t_verify(p, n, seed);
	double s = t_now() - t0;
	t_unmap(p, n);
	return s;
}

/* A child's own device on srv[0..nsrv): it sends a byte on `ready` with
 * its pages on the servers, then fn. */
static pid_t client(struct t_server *srv, unsigned nsrv, uint32_t replicas,
		    size_t n, int ready, int (*fn)(struct hetmm_remote *,
						   char *, size_t))
{
	pid_t c = fork();
	REQUIRE(c >= 0);
	if (c)
		return c;
	prctl(PR_SET_PDEATHSIG, SIGKILL);       /* stopped, too */
	struct hetmm_ctx *cc;
	struct hetmm_remote *dev;
	if (hetmm_ctx_create(&cc, NULL) ||
	    t_remote_make_replicated(cc, srv, nsrv, n, 0, replicas, t_secret,
				     &dev))
		_exit(10);
	char *p = t_map(n);
	t_fill(p, n, 81);
	t_to_device(t_remote_pg(dev), p, n);
	if (write(ready, "r", 1) != 1)
		_exit(11);
	_exit(fn(dev, p, n) || t_done());
}

/* Resumed after its server was replaced: every byte (from the replica),
 * and on to the device and back again, on the one server alive.  The
 * reads wait until the device has seen its server's connection close:
 * over shared memory the old server's region stays mapped here (copies
 * are the device's own memcpy), so a read made before would be served
 * from it, rightly, and the replica never asked. */
static int after_restart(struct hetmm_remote *dev, char *p, size_t n)
{
	struct hetmm_remote_stats st;

	raise(SIGSTOP);
	t_remote_wait_dead(dev, 2, t_now());
	t_verify(p, n, 81);
	t_fill(p, n, 82);
	t_to_device(t_remote_pg(dev), p, n);
	t_verify(p, n, 82);
	REQUIRE_OK(hetmm_remote_get_stats(dev, &st));
	CHECK_EQ(st.copy_errors, 0);
	CHECK(st.replica_reads > 0);
	return hetmm_remote_destroy(dev) != 0;
}

static void wait_stopped(pid_t c)
{
	int st;
	REQUIRE(waitpid(c, &st, WUNTRACED) == c);
	REQUIRE(WIFSTOPPED(st));
}

static void restarted(void)
{
	const size_t n = 512;
	struct t_server srv[2], again;
	struct hetmm_remote *dev;
	int pfd[2], st;
	char b;

	t_server_start(&srv[0], "16M");
	t_server_start(&srv[1], "16M");
	REQUIRE(pipe(pfd) == 0);
	pid_t c = client(srv, 2, 2, n, pfd[1], after_restart);
	REQUIRE(read(pfd[0], &b, 1) == 1);
	wait_stopped(c);

	/* Replaced on its port while the client can't see it happen. */
	t_server_stop(&srv[0], SIGKILL);
	t_server_start_in(&again, NULL, srv[0].addr, "16M", t_secret);
	CHECK(!strcmp(again.addr, srv[0].addr));
	REQUIRE_OK(t_remote_make(ctx, &again, 1, n, 0, t_secret, &dev));
	round_trip(dev, n, 83);

	kill(c, SIGCONT);
	REQUIRE(waitpid(c, &st, 0) == c);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* The new server saw one client, the new one, which it still
	 * serves. */
	round_trip(dev, n, 84);
	CHECK_EQ(t_server_count_log(&again, "connected"), 1);
	CHECK_EQ(t_server_count_log(&again, "admitted"), 1);
	REQUIRE_OK(hetmm_remote_destroy(dev));
	CHECK_EQ(t_server_stop(&again, SIGTERM), 0);
	CHECK_EQ(t_server_stop(&srv[1], SIGTERM), 0);
	close(pfd[0]);
	close(pfd[1]);
}

/* Reads its pages back until it is stopped, which the parent does in
 * the middle of it. */
static int read_forever(struct hetmm_remote *dev, char *p, size_t n)
{
	for (;;) {
		t_verify(p, n, 81);
		t_to_device(t_remote_pg(dev), p, n);
	}
	return 0;
}

static void stuck_client(void)
{
	const size_t n = 4 * 1024;
	struct t_server srv;
	struct hetmm_remote *dev;
	int pfd[2], st;
	char b;

	t_server_start(&srv, "64M");
	REQUIRE(pipe(pfd) == 0);
	pid_t c = client(&srv, 1, 1, n, pfd[1], read_forever);
	REQUIRE(read(pfd[0], &b, 1) == 1);
	usleep(30 * 1000);              /* copies in flight, both ways */
	kill(c, SIGSTOP);
	wait_stopped(c);

	/* The server serves another client, new, as if the stopped one
	 * were not there. */
	REQUIRE_OK(t_remote_make(ctx, &srv, 1, 1024, 0, t_secret, &dev));
	double worst = 0;
	for (int i = 0; i < 4; i++) {
		double s = round_trip(dev, 1024, 85 + (uint64_t)i);
		worst = s > worst ? s : worst;
	}
	fprintf(stderr, "  a client stopped mid-traffic: another's 4 MiB "
		"round trip in %.0f ms at worst\n", worst * 1e3);
	CHECK(worst < SERVE_BOUND_S * t_time_scale());

	/* Dead, its region goes; the other client goes on. */
	kill(c, SIGKILL);
	REQUIRE(waitpid(c, &st, 0) == c);
	char freed[64];
	snprintf(freed, sizeof(freed), "disconnected; its region of %.1f MiB",
		 (double)(n * PS) / (1 << 20));
	CHECK(t_server_wait_log(&srv, freed, 5000));
	round_trip(dev, 1024, 90);
	REQUIRE_OK(hetmm_remote_destroy(dev));
	CHECK_EQ(t_server_stop(&srv, SIGTERM), 0);
	close(pfd[0]);
	close(pfd[1]);
}

static int run(const char *tls)
{
	setenv("UCX_TLS", tls, 1);
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	restarted();
	stuck_client();
	REQUIRE_OK(hetmm_ctx_destroy(ctx));
	return t_done();
}

int main(int argc, char **argv)
{
	return t_remote_main(argc, argv, run);
}
