/* SPDX-License-Identifier: MIT */
/*
 * remote.h - memory servers for the remote device's tests: hetmm-memd
 * (its path is the test's first argument) started and stopped by the
 * test, a secret file made for it, the UCX transport picked for both
 * ends (UCX_TLS, which the server inherits and the device reads when it
 * opens UCX).
 */
#ifndef HETMM_TEST_REMOTE_H
#define HETMM_TEST_REMOTE_H

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "t.h"

struct t_server {
	pid_t pid;
	int logfd;              /* its stdout */
	char addr[96];          /* HOST:PORT it listens on */
	char log[16384];        /* what it said so far */
	size_t log_len;
};

static const char *t_memd;
static char t_dir[64];
static char t_secret[128];

/* A secret file of n bytes with the mode given, in the test's own
 * directory; returns its path (static per name). */
static inline void t_secret_write(const char *path, size_t n, mode_t mode,
				  unsigned char fill)
{
	unsigned char buf[256];
	int fd;

	memset(buf, fill, sizeof(buf));
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (unsigned char)(buf[i] + i * 7);
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	REQUIRE(fd >= 0);
	REQUIRE(write(fd, buf, n) == (ssize_t)n);
	REQUIRE(fchmod(fd, mode) == 0);
	close(fd);
}

static inline void t_remote_setup(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s PATH-TO-hetmm-memd\n", argv[0]);
		exit(2);
	}
	t_memd = argv[1];
	snprintf(t_dir, sizeof(t_dir), "/tmp/hetmm-remote-XXXXXX");
	REQUIRE(mkdtemp(t_dir) != NULL);
	snprintf(t_secret, sizeof(t_secret), "%s/secret", t_dir);
	t_secret_write(t_secret, 32, 0600, 1);
	/* No stray server outlives a test that stops early. */
	signal(SIGPIPE, SIG_IGN);
}

static inline void t_remote_cleanup(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", t_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", t_dir);
}

/*
 * A remote test's main: run(tls) for each transport, shared memory and
 * TCP (argv[2] picks one), each in a child of its own so that UCX's state
 * and a failed transport end with it.  Returns the test's exit status.
 */
static inline int t_remote_main(int argc, char **argv,
				int (*run)(const char *tls))
{
	static const char *const tls[] = { "shm", "tcp" };
	int failed = 0;

	t_remote_setup(argc, argv);
	for (size_t i = 0; i < 2; i++) {
		if (argc > 2 && strcmp(argv[2], tls[i]))
			continue;
		fprintf(stderr, "-- UCX_TLS=%s\n", tls[i]);
		pid_t c = fork();
		REQUIRE(c >= 0);
		if (c == 0)
			_exit(run(tls[i]));
		int st;
		REQUIRE(waitpid(c, &st, 0) == c);
		if (!WIFEXITED(st) || WEXITSTATUS(st)) {
			fprintf(stderr, "UCX_TLS=%s: failed (status 0x%x)\n",
				tls[i], st);
			failed++;
		}
	}
	t_remote_cleanup();
	return failed ? 1 : t_done();
}

/* Read what the server said within ms (times t_time_scale(): under
 * emulation hetmm-memd took over 10 s to start, UCX's set-up); 1 if it
 * said `what`. */
static inline int t_server_wait_log(struct t_server *s, const char *what,
				    int ms)
{
	double end = t_now() + ms / 1000.0 * t_time_scale();

	for (;;) {
		s->log[s->log_len] = 0;
		if (strstr(s->log, what))
			return 1;
		int left = (int)((end - t_now()) * 1000);
		struct pollfd p = { .fd = s->logfd, .events = POLLIN };
		if (poll(&p, 1, left > 0 ? left : 0) <= 0)
			return 0;
		ssize_t n = read(s->logfd, s->log + s->log_len,
				 sizeof(s->log) - 1 - s->log_len);
		if (n <= 0)
			return 0;
		s->log_len += (size_t)n;
	}
}

/* How often the server's log says `what` so far. */
static inline int t_server_count_log(struct t_server *s, const char *what)
{
	int n = 0;
	t_server_wait_log(s, "\x01", 0);     /* read what is there */
	for (const char *p = s->log; (p = strstr(p, what)); p++)
		n++;
	return n;
}

/*
 * Start hetmm-memd listening on `listen` (HOST:0 picks a port) with the
 * capacity and secret given, under `netns` if not NULL (ip netns exec);
 * REQUIREs it to come up within 10 s.  Its address is s->addr.
 */
static inline void t_server_start_in(struct t_server *s, const char *netns,
				     const char *listen, const char *capacity,
				     const char *secret)
{
	int pfd[2];

	memset(s, 0, sizeof(*s));
	REQUIRE(pipe2(pfd, O_CLOEXEC) == 0);
	s->pid = fork();
	REQUIRE(s->pid >= 0);
	if (s->pid == 0) {
		/* It dies with the test, whatever stops the test. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(pfd[1], 1);
		if (netns)
			execlp("ip", "ip", "netns", "exec", netns, t_memd,
			       "--listen", listen, "--capacity", capacity,
			       "--secret", secret, (char *)NULL);
		else
			execl(t_memd, t_memd, "--listen", listen,
			      "--capacity", capacity, "--secret", secret,
			      (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	s->logfd = pfd[0];
	if (!t_server_wait_log(s, "listening on ", 10000)) {
		fprintf(stderr, "hetmm-memd did not start; it said:\n%s\n",
			s->log);
		kill(s->pid, SIGKILL);
		REQUIRE(0);
	}
	const char *a = strstr(s->log, "listening on ") + 13;
	size_t n = strcspn(a, ", \n");
	REQUIRE(n < sizeof(s->addr));
	memcpy(s->addr, a, n);
	s->addr[n] = 0;
}

static inline void t_server_start(struct t_server *s, const char *capacity)
{
	t_server_start_in(s, NULL, "127.0.0.1:0", capacity, t_secret);
}

/* Stop it with sig; its exit status (as waitpid gives it). */
static inline int t_server_stop(struct t_server *s, int sig)
{
	int st = 0;

	if (s->pid <= 0)
		return -1;
	kill(s->pid, sig);
	REQUIRE(waitpid(s->pid, &st, 0) == s->pid);
	t_server_wait_log(s, "\x01", 0);
	close(s->logfd);
	s->pid = 0;
	return st;
}

/* Wait (10 s at most, scaled) until the device takes one more server
 * for dead than the alive_before it had; seconds since t0.  A death is
 * noticed asynchronously: on shm a dead server's memory stays mapped in
 * the client, so only UCX's peer-failure check tells. */
static inline double t_remote_wait_dead(struct hetmm_remote *dev,
					uint32_t alive_before, double t0)
{
	struct hetmm_remote_stats st;

	do {
		REQUIRE_OK(hetmm_remote_get_stats(dev, &st));
	} while (st.servers_alive == alive_before &&
		 t_now() - t0 < 10.0 * t_time_scale() && !usleep(1000));
	CHECK_EQ(st.servers_alive, alive_before - 1);
	return t_now() - t0;
}

/* A device of n pages on the servers given, each stripe kept on
 * `replicas` of them (0: one), with the desc's timeout_ms (0: the
 * library's). */
static inline int t_remote_make_desc(struct hetmm_ctx *ctx,
				     struct t_server *srv, unsigned nsrv,
				     uint64_t pages, uint32_t flags,
				     uint32_t replicas, uint32_t timeout_ms,
				     const char *secret,
				     struct hetmm_remote **dev)
{
	const char *addrs[HETMM_REMOTE_MAX_SERVERS];
	for (unsigned i = 0; i < nsrv && i < HETMM_REMOTE_MAX_SERVERS; i++)
		addrs[i] = srv[i].addr;
	struct hetmm_remote_desc d = {
		.servers = addrs,
		.nr_servers = nsrv,
		.flags = flags,
		.nr_pages = pages,
		.secret_file = secret,
		.timeout_ms = timeout_ms,
		.replicas = replicas,
	};
	return hetmm_remote_create(ctx, &d, dev);
}

static inline int t_remote_make_replicated(struct hetmm_ctx *ctx,
					   struct t_server *srv, unsigned nsrv,
					   uint64_t pages, uint32_t flags,
					   uint32_t replicas,
					   const char *secret,
					   struct hetmm_remote **dev)
{
	return t_remote_make_desc(ctx, srv, nsrv, pages, flags, replicas, 0,
				  secret, dev);
}

static inline int t_remote_make(struct hetmm_ctx *ctx,
				struct t_server *srv, unsigned nsrv,
				uint64_t pages, uint32_t flags,
				const char *secret, struct hetmm_remote **dev)
{
	return t_remote_make_replicated(ctx, srv, nsrv, pages, flags, 0,
					secret, dev);
}

static inline struct hetmm_pagemap *t_remote_pg(struct hetmm_remote *dev)
{
	struct hetmm_pagemap *pg = NULL;
	REQUIRE_OK(hetmm_remote_pagemap(dev, &pg));
	return pg;
}

#endif
