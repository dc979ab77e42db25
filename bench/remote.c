/* SPDX-License-Identifier: MIT */
/*
 * remote.c - `hetmm bench-remote`: the remote device against UCX itself,
 * on the same transport, in the same run, with hetmm-memd servers the
 * command starts on loopback and stops after.
 *
 *   fault      a random single-page fault on a device page, median,
 *              against a bare ucp_get of one page (round trip, median)
 *              plus a bare userfaultfd round trip (raw_handler.c, median):
 *              target hetmm <= 1.2 x their sum;
 *   fault-back sequential reads of a device-resident buffer (fault-around
 *              and the asynchronous copies), GB/s, against UCX's own
 *              streaming ucp_get bandwidth at the same message size
 *              (HETMM_COPY_MAX_PAGES pages) and queue depth
 *              (HETMM_COPY_DEPTH_MAX): target >= 0.8 x;
 *   migrate    hetmm_migrate_to_device of the same buffer against
 *              streaming ucp_put (flushed): target >= 0.8 x;
 *   2 servers  fault-back and migration striped over two servers against
 *              one: target >= 1.6 x where the transport is not the limit.
 *
 * Each figure is the median of --reps repetitions (default 5) over a
 * buffer of --mib MiB (default 64); for each transport of --tls (default
 * "shm,tcp"; UCX_TLS for both ends).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "common.h"
#include "raw_handler.h"
#include "hetmm.h"

#ifdef HETMM_HAVE_UCX
#include "devices/remote_ucx.h"
#include "devices/remote_wire.h"

#define MAXREPS 32
#define LAT_SAMPLES 2000

struct server {
	pid_t pid;
	char addr[64];
};

static char secret_path[128];

/* hetmm-memd next to this program, else on PATH. */
static const char *memd_path(void)
{
	static char path[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 16);
	if (n > 0) {
		path[n] = 0;
		char *slash = strrchr(path, '/');
		strcpy(slash + 1, "hetmm-memd");
		if (access(path, X_OK) == 0)
			return path;
	}
	return "hetmm-memd";
}

static int server_start(struct server *s, const char *capacity)
{
	int pfd[2];
	char buf[512];
	size_t have = 0;

	if (pipe2(pfd, O_CLOEXEC))
		return -errno;
	s->pid = fork();
	if (s->pid < 0)
		return -errno;
	if (s->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(pfd[1], 1);
		const char *m = memd_path();
		execlp(m, m, "--listen", "127.0.0.1:0", "--capacity",
		       capacity, "--secret", secret_path, (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	while (have < sizeof(buf) - 1) {
		ssize_t n = read(pfd[0], buf + have, sizeof(buf) - 1 - have);
		if (n <= 0)
			break;
		have += (size_t)n;
		buf[have] = 0;
		if (strchr(buf, '\n'))
			break;
	}
	close(pfd[0]);   /* its later lines go nowhere: it ignores SIGPIPE */
	buf[have] = 0;
	char *a = strstr(buf, "listening on ");
	if (!a)
		return -EIO;
	a += 13;
	size_t l = strcspn(a, ", \n");
	if (l >= sizeof(s->addr))
		return -EIO;
	memcpy(s->addr, a, l);
	s->addr[l] = 0;
	return 0;
}

static void server_stop(struct server *s)
{
	if (s->pid > 0) {
		kill(s->pid, SIGTERM);
		waitpid(s->pid, NULL, 0);
	}
	s->pid = 0;
}

/* ------------------------------------------------------------------------
 * UCX alone: a client of its own (the handshake, then bare RMA)
 */

struct bare {
	const struct ucx_api *u;
	int fd;
	ucp_context_h ucp;
	ucp_worker_h w;
	ucp_ep_h ep;
	ucp_rkey_h rkey;
	uint64_t base, len;
};

static int bare_open(struct bare *b, struct server *s, uint64_t pages)
{
	static uint8_t buf[RW_MAX_BODY];
	struct rw_secret sec;
	uint8_t auth[RW_AUTH_LEN];
	enum rw_type type;
	uint32_t n;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	int rc = ucx_load(&b->u);

	if (rc || (rc = rw_secret_load(secret_path, &sec)))
		return rc;
	sa.sin_port = htons((uint16_t)atoi(strrchr(s->addr, ':') + 1));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	b->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (b->fd < 0 || connect(b->fd, (struct sockaddr *)&sa, sizeof(sa)))
		return -errno;
	if ((rc = rw_recv(b->fd, &type, buf, sizeof(buf), &n, 5000)))
		return rc;
	rw_random(auth, RW_NONCE);
	rw_client_mac(&sec, buf, auth, PAGE, pages, auth + RW_NONCE);
	rw_put64(auth + RW_NONCE + SHA256_LEN, PAGE);
	rw_put64(auth + RW_NONCE + SHA256_LEN + 8, pages);
	if ((rc = rw_send(b->fd, RW_AUTH, auth, sizeof(auth))) ||
	    (rc = rw_recv(b->fd, &type, buf, sizeof(buf), &n, 5000)))
		return rc;
	if (type != RW_ACCEPT)
		return -EACCES;
	const uint8_t *t = buf + SHA256_LEN;
	b->base = rw_get64(t);
	b->len = rw_get64(t + 8);
	uint32_t rkey_len = rw_get32(t + 16);
	if ((rc = ucx_open(b->u, &b->ucp, &b->w)))
		return rc;
	ucp_ep_params_t ep = {
		.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS |
			      UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE,
		.address = (const ucp_address_t *)(t + 24 + rkey_len),
		.err_mode = UCP_ERR_HANDLING_MODE_PEER,
	};
	if (b->u->ucp_ep_create(b->w, &ep, &b->ep) != UCS_OK ||
	    b->u->ucp_ep_rkey_unpack(b->ep, t + 24, &b->rkey) != UCS_OK)
		return -EPROTO;
	return 0;
}

static void bare_close(struct bare *b)
{
	const struct ucx_api *u = b->u;
	u->ucp_rkey_destroy(b->rkey);
	ucp_request_param_t prm = { .op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
				    .flags = UCP_EP_CLOSE_FLAG_FORCE };
	ucs_status_ptr_t r = u->ucp_ep_close_nbx(b->ep, &prm);
	while (r && !UCS_PTR_IS_ERR(r) &&
	       u->ucp_request_check_status(r) == UCS_INPROGRESS)
		u->ucp_worker_progress(b->w);
	if (r && !UCS_PTR_IS_ERR(r))
		u->ucp_request_free(r);
	u->ucp_worker_destroy(b->w);
	u->ucp_cleanup(b->ucp);
	close(b->fd);
}

/* Wait for r (progressing); 0 or -EIO. */
static int bare_wait(struct bare *b, ucs_status_ptr_t r)
{
	if (UCS_PTR_IS_ERR(r))
		return -EIO;
	if (!r)
		return 0;
	ucs_status_t st;
	while ((st = b->u->ucp_request_check_status(r)) == UCS_INPROGRESS)
		b->u->ucp_worker_progress(b->w);
	b->u->ucp_request_free(r);
	return st == UCS_OK ? 0 : -EIO;
}

/* Median ns of a one-page ucp_get, waited for, at random offsets. */
static double bare_get_latency(struct bare *b, char *page)
{
	static double v[LAT_SAMPLES];
	ucp_request_param_t none = { .op_attr_mask = 0 };
	uint64_t pages = b->len / PAGE, x = 88172645463325252ULL;

	for (int i = 0; i < LAT_SAMPLES; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		uint64_t t0 = now_ns();
		if (bare_wait(b, b->u->ucp_get_nbx(b->ep, page, PAGE,
				b->base + x % pages * PAGE, b->rkey, &none)))
			return NAN;
		v[i] = (double)(now_ns() - t0);
	}
	return median(v, LAT_SAMPLES);
}

/* GB/s of streaming gets (or puts, then a flush) of msg bytes, depth in
 * flight, over the region from/into buf. */
static double bare_stream(struct bare *b, char *buf, size_t msg, int depth,
			  int put)
{
	ucs_status_ptr_t req[HETMM_COPY_DEPTH_MAX] = { 0 };
	ucp_request_param_t none = { .op_attr_mask = 0 };
	size_t n = b->len / msg;
	uint64_t t0 = now_ns();

	for (size_t i = 0; i < n; i++) {
		int k = (int)(i % (size_t)depth);
		if (req[k] && bare_wait(b, req[k]))
			return NAN;
		char *p = buf + i * msg;
		uint64_t ra = b->base + i * msg;
		req[k] = put ? b->u->ucp_put_nbx(b->ep, p, msg, ra, b->rkey,
						 &none) :
			       b->u->ucp_get_nbx(b->ep, p, msg, ra, b->rkey,
						 &none);
		if (UCS_PTR_IS_ERR(req[k]))
			return NAN;
	}
	for (int k = 0; k < depth; k++)
		if (req[k] && bare_wait(b, req[k]))
			return NAN;
	if (put && bare_wait(b, b->u->ucp_ep_flush_nbx(b->ep, &none)))
		return NAN;
	return gbps(n * msg, (double)(now_ns() - t0));
}

/* ------------------------------------------------------------------------
 * The bare userfaultfd round trip (raw_handler.c)
 */

static double uffd_latency(size_t len)
{
	static double v[LAT_SAMPLES];
	struct raw_handler h;
	char *src = map_anon(PAGE, 0);
	char *buf = map_anon(len, 0);
	uint64_t x = 2463534242ULL;
	double m = NAN;

	if (!src || !buf)
		return NAN;
	populate(src, PAGE, 1);
	if (raw_handler_start(&h, src, 1, PAGE, 0) == 0) {
		if (uffd_register_missing(h.fd, buf, len, NULL) == 0) {
			atomic_store(&h.base, (uintptr_t)buf);
			atomic_store(&h.len, len);
			for (int i = 0; i < LAT_SAMPLES; i++) {
				x ^= x << 13, x ^= x >> 17, x ^= x << 5;
				volatile char *p = buf + x % (len / PAGE) * PAGE;
				uint64_t t0 = now_ns();
				(void)*p;
				v[i] = (double)(now_ns() - t0);
			}
			m = median(v, LAT_SAMPLES);
		}
		raw_handler_stop(&h);
	}
	munmap(buf, len);
	munmap(src, PAGE);
	return m;
}

/* ------------------------------------------------------------------------
 * hetmm
 */

struct hres {
	double fault_ns, back_gbps, migrate_gbps;
};

static int hetmm_run(struct server *srv, unsigned nsrv, size_t len,
		     int reps, int latency, struct hres *r)
{
	struct hetmm_ctx *ctx;
	struct hetmm_remote *dev;
	struct hetmm_pagemap *pg;
	const char *addrs[2] = { srv[0].addr, nsrv > 1 ? srv[1].addr : NULL };
	struct hetmm_remote_desc d = {
		.servers = addrs, .nr_servers = nsrv,
		.nr_pages = len / PAGE, .secret_file = secret_path,
	};
	double back[MAXREPS], mig[MAXREPS];
	static double lat[LAT_SAMPLES];
	int rc = hetmm_ctx_create(&ctx, NULL);

	if (rc)
		return rc;
	if ((rc = hetmm_remote_create(ctx, &d, &dev)) ||
	    (rc = hetmm_remote_pagemap(dev, &pg))) {
		hetmm_ctx_destroy(ctx);
		return rc;
	}
	for (int i = 0; i <= reps && !rc; i++) {
		char *buf = map_anon(len, 0);
		if (!buf) {
			rc = -ENOMEM;
			break;
		}
		populate(buf, len, i + 1);
		uint64_t t0 = now_ns();
		rc = hetmm_migrate_to_device(pg, buf, len, NULL);
		uint64_t t1 = now_ns();
		for (size_t o = 0; o < len && !rc; o += PAGE)
			(void)*(volatile char *)(buf + o);
		uint64_t t2 = now_ns();
		if (i) {                       /* the first: a warm-up */
			mig[i - 1] = gbps(len, (double)(t1 - t0));
			back[i - 1] = gbps(len, (double)(t2 - t1));
		}
		munmap(buf, len);
	}
	if (!rc && latency) {
		char *buf = map_anon(len, 0);
		uint64_t x = 88172645463325252ULL;
		populate(buf, len, 7);
		rc = hetmm_migrate_to_device(pg, buf, len, NULL);
		for (int i = 0; i < LAT_SAMPLES && !rc; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			volatile char *p = buf + x % (len / PAGE) * PAGE;
			uint64_t t0 = now_ns();
			(void)*p;
			lat[i] = (double)(now_ns() - t0);
		}
		r->fault_ns = median(lat, LAT_SAMPLES);
		munmap(buf, len);
	}
	if (!rc) {
		r->migrate_gbps = median(mig, reps);
		r->back_gbps = median(back, reps);
	}
	hetmm_remote_destroy(dev);
	hetmm_ctx_destroy(ctx);
	return rc;
}

static void verdict(const char *what, double ratio, double target, int ge)
{
	int met = ge ? ratio >= target : ratio <= target;
	printf("  %-34s %6.2f x   target %s %.1f: %s\n", what, ratio,
	       ge ? ">=" : "<=", target, met ? "met" : "NOT met");
}

static int bench_one(const char *tls, size_t len, int reps)
{
	struct server srv[2] = { 0 };
	struct bare b;
	struct hres h1 = { 0 }, h2 = { 0 };
	char cap[32];
	int rc;

	setenv("UCX_TLS", tls, 1);
	snprintf(cap, sizeof(cap), "%zuM", 2 * len / MIB + 16);
	if ((rc = server_start(&srv[0], cap)) ||
	    (rc = server_start(&srv[1], cap))) {
		fprintf(stderr, "bench-remote: hetmm-memd (%s): %s\n",
			memd_path(), strerror(-rc));
		server_stop(&srv[0]);
		return 1;
	}
	char *buf = map_anon(len, 0);
	populate(buf, len, 3);
	double get_ns = NAN, uffd_ns, get_bw[MAXREPS], put_bw[MAXREPS];
	if ((rc = bare_open(&b, &srv[0], len / PAGE)) == 0) {
		get_ns = bare_get_latency(&b, buf);
		for (int i = 0; i <= reps; i++) {
			double g = bare_stream(&b, buf, HETMM_COPY_MAX_PAGES *
					       PAGE, HETMM_COPY_DEPTH_MAX, 0);
			double p = bare_stream(&b, buf, HETMM_COPY_MAX_PAGES *
					       PAGE, HETMM_COPY_DEPTH_MAX, 1);
			if (i)
				get_bw[i - 1] = g, put_bw[i - 1] = p;
		}
		bare_close(&b);
	}
	munmap(buf, len);
	uffd_ns = uffd_latency(len);
	if (rc || (rc = hetmm_run(srv, 1, len, reps, 1, &h1)) ||
	    (rc = hetmm_run(srv, 2, len, reps, 0, &h2))) {
		fprintf(stderr, "bench-remote: %s\n", hetmm_strerror(rc));
		server_stop(&srv[0]);
		server_stop(&srv[1]);
		return 1;
	}
	server_stop(&srv[0]);
	server_stop(&srv[1]);

	double g = median(get_bw, reps), p = median(put_bw, reps);
	printf("UCX_TLS=%s, %zu MiB, median of %d\n", tls, len / MIB, reps);
	printf("  bare ucp_get of a page           %8.1f us\n", get_ns / 1e3);
	printf("  bare userfaultfd round trip      %8.1f us\n", uffd_ns / 1e3);
	printf("  hetmm random fault, 1 page       %8.1f us\n",
	       h1.fault_ns / 1e3);
	printf("  bare ucp_get stream (%zu KiB)     %8.2f GB/s\n",
	       HETMM_COPY_MAX_PAGES * PAGE / 1024, g);
	printf("  hetmm fault-back, 1 server       %8.2f GB/s\n", h1.back_gbps);
	printf("  hetmm fault-back, 2 servers      %8.2f GB/s\n", h2.back_gbps);
	printf("  bare ucp_put stream + flush      %8.2f GB/s\n", p);
	printf("  hetmm migrate, 1 server          %8.2f GB/s\n",
	       h1.migrate_gbps);
	printf("  hetmm migrate, 2 servers         %8.2f GB/s\n",
	       h2.migrate_gbps);
	verdict("fault / (ucp_get + uffd)", h1.fault_ns / (get_ns + uffd_ns),
		1.2, 0);
	verdict("fault-back / ucp_get stream", h1.back_gbps / g, 0.8, 1);
	verdict("migrate / ucp_put stream", h1.migrate_gbps / p, 0.8, 1);
	verdict("fault-back, 2 servers / 1", h2.back_gbps / h1.back_gbps,
		1.6, 1);
	verdict("migrate, 2 servers / 1", h2.migrate_gbps / h1.migrate_gbps,
		1.6, 1);
	fflush(stdout);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: hetmm bench-remote [--tls shm,tcp] [--mib N] "
		"[--reps N]\n"
		"  the remote device against UCX itself on the same "
		"transport,\n"
		"  with hetmm-memd servers started on loopback (see "
		"bench/remote.c)\n");
}

int hetmm_bench_remote_main(int argc, char **argv)
{
	char tls[64] = "shm,tcp";
	size_t mib = 64;
	int reps = 5, failed = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(argv[i], "--tls") && i + 1 < argc) {
			snprintf(tls, sizeof(tls), "%s", argv[++i]);
		} else if (!strcmp(argv[i], "--mib") && i + 1 < argc) {
			mib = strtoul(argv[++i], NULL, 10);
		} else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
			reps = atoi(argv[++i]);
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (mib < 1 || mib > (4u << 10) || reps < 1 || reps > MAXREPS) {
		usage(stderr);
		return 2;
	}
	snprintf(secret_path, sizeof(secret_path),
		 "/tmp/hetmm-bench-secret-%d", (int)getpid());
	int fd = open(secret_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
		      0600);
	uint8_t key[32];
	if (fd < 0 || rw_random(key, sizeof(key)) ||
	    write(fd, key, sizeof(key)) != (ssize_t)sizeof(key)) {
		fprintf(stderr, "bench-remote: secret file: %s\n",
			strerror(errno));
		return 1;
	}
	close(fd);
	signal(SIGPIPE, SIG_IGN);
	for (char *save = NULL, *t = strtok_r(tls, ",", &save); t;
	     t = strtok_r(NULL, ",", &save))
		failed |= bench_one(t, mib * MIB, reps);
	unlink(secret_path);
	return failed;
}
#else
int hetmm_bench_remote_main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "hetmm bench-remote: built without UCX\n");
	return 1;
}
#endif
