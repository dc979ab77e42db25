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
 *              The first touch of as many pages the kernel populated
 *              (no fault, no copy: common.h) is the ceiling of any pass
 *              over pages newly mapped, shown beside it;
 *   migrate    hetmm_migrate_to_device of the same buffer against
 *              streaming ucp_put (flushed): target >= 0.8 x;
 *   2 servers  fault-back and migration striped over two servers against
 *              one: target >= 1.6 x where the transport is not the limit,
 *              which UCX's own streams to two servers against one, from
 *              one worker, say (the baseline, in the same run);
 *   replica    migration and fault-back striped over two servers with
 *              each page on both (replicas 2) against without: what a
 *              replica costs;
 *   new memory UCX's get stream into a new buffer (its pages faulted in
 *              by the stream, as fault-back must put the bytes in pages
 *              the process did not have), its put stream out of a
 *              buffer then freed (as a migration frees its source), and
 *              fault-back and migration against those (fresh_streams):
 *              evidence of what new memory costs on the machine, beside
 *              the targets, which stay against the streams that reuse
 *              one populated buffer.
 *
 * Each figure is the median of --reps repetitions (default 5) over a
 * buffer of --mib MiB (default 64).  UCX's own streams are measured in
 * each repetition just before hetmm's passes, and every ratio between
 * two streams is the median of the per-repetition ratios: on a machine
 * shared with other work the load moves between seconds apart, and a
 * baseline measured before all of hetmm's passes compared a quiet
 * moment with a busy one (UCX's put stream over shared memory ran at
 * 3.3 to 9.2 GB/s from one run to the next).  For each transport of --tls (default
 * "shm,tcp"; UCX_TLS for both ends).  --thp: the buffer migrated and
 * read back is madvised MADV_HUGEPAGE (transparent huge pages, where
 * the system's setting is "madvise").
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

/* A server's region, as a client of UCX alone sees it. */
struct target {
	int fd;
	ucp_ep_h ep;
	ucp_rkey_h rkey;
	uint64_t base, len;
};

/* One worker, as the device has, with an endpoint on each server. */
struct bare {
	const struct ucx_api *u;
	ucp_context_h ucp;
	ucp_worker_h w;
	unsigned nt;
	struct target t[2];
};

static int bare_connect(struct bare *b, struct server *s, uint64_t pages)
{
	static uint8_t buf[RW_MAX_BODY];
	struct rw_secret sec;
	uint8_t auth[RW_AUTH_LEN];
	enum rw_type type;
	uint32_t n;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct target *t = &b->t[b->nt];
	int rc = rw_secret_load(secret_path, &sec);

	if (rc)
		return rc;
	sa.sin_port = htons((uint16_t)atoi(strrchr(s->addr, ':') + 1));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	t->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (t->fd < 0)
		return -errno;
	b->nt++;                        /* closed by bare_close from now */
	if (connect(t->fd, (struct sockaddr *)&sa, sizeof(sa)))
		return -errno;
	if ((rc = rw_recv(t->fd, &type, buf, sizeof(buf), &n, 5000)))
		return rc;
	rw_random(auth, RW_NONCE);
	rw_client_mac(&sec, buf, auth, PAGE, pages, auth + RW_NONCE);
	rw_put64(auth + RW_NONCE + SHA256_LEN, PAGE);
	rw_put64(auth + RW_NONCE + SHA256_LEN + 8, pages);
	if ((rc = rw_send(t->fd, RW_AUTH, auth, sizeof(auth))) ||
	    (rc = rw_recv(t->fd, &type, buf, sizeof(buf), &n, 5000)))
		return rc;
	if (type != RW_ACCEPT)
		return -EACCES;
	const uint8_t *m = buf + SHA256_LEN;
	t->base = rw_get64(m);
	t->len = rw_get64(m + 8);
	uint32_t rkey_len = rw_get32(m + 16);
	ucp_ep_params_t ep = {
		.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS |
			      UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE,
		.address = (const ucp_address_t *)(m + 24 + rkey_len),
		.err_mode = UCP_ERR_HANDLING_MODE_PEER,
	};
	if (b->u->ucp_ep_create(b->w, &ep, &t->ep) != UCS_OK) {
		t->ep = NULL;
		return -EPROTO;
	}
	if (b->u->ucp_ep_rkey_unpack(t->ep, m + 24, &t->rkey) != UCS_OK) {
		t->rkey = NULL;
		return -EPROTO;
	}
	return 0;
}

/* UCX's own client of nsrv servers, pages each. */
static int bare_open(struct bare *b, struct server *srv, unsigned nsrv,
		     uint64_t pages)
{
	int rc;

	memset(b, 0, sizeof(*b));
	if ((rc = ucx_load(&b->u)) ||
	    (rc = ucx_open(b->u, &b->ucp, &b->w))) {
		b->w = NULL;
		return rc;
	}
	for (unsigned i = 0; i < nsrv && !rc; i++)
		rc = bare_connect(b, &srv[i], pages);
	return rc;
}

static void bare_close(struct bare *b)
{
	const struct ucx_api *u = b->u;

	if (!b->w)
		return;
	for (unsigned i = 0; i < b->nt; i++) {
		struct target *t = &b->t[i];
		if (t->rkey)
			u->ucp_rkey_destroy(t->rkey);
		ucp_request_param_t prm = {
			.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
			.flags = UCP_EP_CLOSE_FLAG_FORCE,
		};
		ucs_status_ptr_t r = t->ep ? u->ucp_ep_close_nbx(t->ep, &prm)
					   : NULL;
		while (r && !UCS_PTR_IS_ERR(r) &&
		       u->ucp_request_check_status(r) == UCS_INPROGRESS)
			u->ucp_worker_progress(b->w);
		if (r && !UCS_PTR_IS_ERR(r))
			u->ucp_request_free(r);
		close(t->fd);
	}
	u->ucp_worker_destroy(b->w);
	u->ucp_cleanup(b->ucp);
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
	struct target *t = &b->t[0];
	uint64_t pages = t->len / PAGE, x = 88172645463325252ULL;

	for (int i = 0; i < LAT_SAMPLES; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		uint64_t t0 = now_ns();
		if (bare_wait(b, b->u->ucp_get_nbx(t->ep, page, PAGE,
				t->base + x % pages * PAGE, t->rkey, &none)))
			return NAN;
		v[i] = (double)(now_ns() - t0);
	}
	return median(v, LAT_SAMPLES);
}

/* GB/s of streaming gets (or puts, then a flush of each server) of len
 * bytes in messages of msg bytes, depth in flight, from/into buf; over
 * the first nt servers, message i to server i % nt, as the device
 * stripes. */
static double bare_stream(struct bare *b, unsigned nt, char *buf,
			  size_t len, size_t msg, int depth, int put)
{
	ucs_status_ptr_t req[HETMM_COPY_DEPTH_MAX] = { 0 };
	ucp_request_param_t none = { .op_attr_mask = 0 };
	size_t n = len / msg;
	uint64_t t0 = now_ns();

	for (size_t i = 0; i < n; i++) {
		int k = (int)(i % (size_t)depth);
		struct target *t = &b->t[i % nt];
		if (req[k] && bare_wait(b, req[k]))
			return NAN;
		char *p = buf + i * msg;
		uint64_t ra = t->base + i / nt * msg;
		req[k] = put ? b->u->ucp_put_nbx(t->ep, p, msg, ra, t->rkey,
						 &none) :
			       b->u->ucp_get_nbx(t->ep, p, msg, ra, t->rkey,
						 &none);
		if (UCS_PTR_IS_ERR(req[k]))
			return NAN;
	}
	for (int k = 0; k < depth; k++)
		if (req[k] && bare_wait(b, req[k]))
			return NAN;
	for (unsigned i = 0; i < nt && put; i++)
		if (bare_wait(b, b->u->ucp_ep_flush_nbx(b->t[i].ep, &none)))
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

/* The devices measured, side by side: one server; striped over two;
 * striped over two with each page on both. */
enum { ONE, TWO, REPL, NCONF };
static const unsigned conf_servers[NCONF] = { 1, 2, 2 };
static const unsigned conf_replicas[NCONF] = { 1, 1, 2 };

struct hres {
	double fault_ns;
	double mig[NCONF][MAXREPS], back[NCONF][MAXREPS];   /* GB/s */
	double touch[MAXREPS];            /* first touch, GB/s */
	/* UCX's own get and put streams to one and to two servers, GB/s,
	 * in the same repetitions. */
	double g1[MAXREPS], p1[MAXREPS], g2[MAXREPS], p2[MAXREPS];
	/* The same get stream into new memory, and put stream out of a
	 * buffer then freed, as hetmm's passes must (fresh_streams). */
	double g1new[MAXREPS], p1free[MAXREPS];
};

/* UCX's own streams of rep i (< 0: a warm-up) from the bare client b,
 * through its buffer buf. */
static void bare_streams(struct bare *b, char *buf, size_t len, int i,
			 struct hres *r)
{
	const size_t msg = HETMM_COPY_MAX_PAGES * PAGE;
	const int depth = HETMM_COPY_DEPTH_MAX;
	double x[4] = {
		bare_stream(b, 1, buf, len, msg, depth, 0),
		bare_stream(b, 1, buf, len, msg, depth, 1),
		bare_stream(b, 2, buf, len, msg, depth, 0),
		bare_stream(b, 2, buf, len, msg, depth, 1),
	};
	if (i >= 0)
		r->g1[i] = x[0], r->p1[i] = x[1], r->g2[i] = x[2],
		r->p2[i] = x[3];
}

/* --thp: the buffer of hetmm_pass in huge pages. */
static int pass_thp;

/*
 * UCX's own one-server streams under what hetmm's passes cannot avoid,
 * GB/s into *g and *p (NAN where a buffer can't be had): the get stream
 * into a new buffer of len bytes, advised as hetmm_pass advises its
 * buffer before reading it back, so that its pages are faulted in (a
 * zeroed THP or base page each) by the stream's own stores; the put
 * stream out of a populated buffer whose pages are then freed
 * (MADV_DONTNEED, timed), as a migration frees its source.  The rows
 * beside them (bare_streams) reuse one populated buffer: no page is
 * allocated or freed there.  Evidence of where new memory, not the
 * device, is the limit; the targets stay against bare_streams'.
 */
static void fresh_streams(struct bare *b, size_t len, double *g, double *p)
{
	const size_t msg = HETMM_COPY_MAX_PAGES * PAGE;
	const int depth = HETMM_COPY_DEPTH_MAX;
	char *buf = map_anon(len, 1);

	*g = *p = NAN;
	if (!buf)
		return;
	*g = bare_stream(b, 1, buf, len, msg, depth, 0);
	munmap(buf, len);
	if (!(buf = map_anon(len, pass_thp)))
		return;
	populate(buf, len, 9);
	uint64_t t0 = now_ns();
	if (!isnan(bare_stream(b, 1, buf, len, msg, depth, 1)) &&
	    !madvise(buf, len, MADV_DONTNEED))
		*p = gbps(len, (double)(now_ns() - t0));
	munmap(buf, len);
}

/* The buffer of len bytes to pg, then read back in sequence: GB/s of
 * each. */
static int hetmm_pass(struct hetmm_pagemap *pg, size_t len, int byte,
		      double *mig, double *back)
{
	char *buf = map_anon(len, pass_thp);
	if (!buf)
		return -ENOMEM;
	populate(buf, len, byte);
	uint64_t t0 = now_ns();
	int rc = hetmm_migrate_to_device(pg, buf, len, NULL);
	*mig = gbps(len, (double)(now_ns() - t0));
	/* Advised once its pages are on the device (as base pages, as
	 * before; and khugepaged can't collapse them meanwhile): they may
	 * come back as THPs, which THP "madvise" mode gives only to a
	 * mapping that asks.  Timed with neither pass. */
	(void)madvise(buf, len, MADV_HUGEPAGE);
	uint64_t t1 = now_ns();
	for (size_t o = 0; o < len && !rc; o += PAGE)
		(void)*(volatile char *)(buf + o);
	*back = gbps(len, (double)(now_ns() - t1));
	munmap(buf, len);
	return rc;
}

/* Median ns of a fault on a random page of len bytes on pg. */
static int hetmm_latency(struct hetmm_pagemap *pg, size_t len, double *ns)
{
	static double lat[LAT_SAMPLES];
	char *buf = map_anon(len, 0);
	uint64_t x = 88172645463325252ULL;

	if (!buf)
		return -ENOMEM;
	populate(buf, len, 7);
	int rc = hetmm_migrate_to_device(pg, buf, len, NULL);
	/* The faults start from threads at rest, as the baselines' fresh
	 * threads do: the scheduler places a thread by its recent load (a
	 * half-life of about 32 ms), and right after the migration it kept
	 * the handler apart from the faulting thread in 3 tries of 6, each
	 * fault then paying two cross-CPU wake-ups; after 300 ms, in none
	 * of 6 (docs/PERFORMANCE.md, "Remote"). */
	usleep(300000);
	for (int i = 0; i < LAT_SAMPLES && !rc; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		volatile char *p = buf + x % (len / PAGE) * PAGE;
		uint64_t t0 = now_ns();
		(void)*p;
		lat[i] = (double)(now_ns() - t0);
	}
	*ns = median(lat, LAT_SAMPLES);
	munmap(buf, len);
	return rc;
}

/* Every device made at once and measured in turn, repetition by
 * repetition, each after UCX's own streams (the bare client b, through
 * buf), so that the ratios between them compare passes seconds apart,
 * not a run before a load and one after. */
static int hetmm_run(struct server *srv, size_t len, int reps,
		     struct bare *b, char *buf, struct hres *r)
{
	struct hetmm_ctx *ctx;
	struct hetmm_remote *dev[NCONF] = { 0 };
	struct hetmm_pagemap *pg[NCONF];
	const char *addrs[2] = { srv[0].addr, srv[1].addr };
	int rc = hetmm_ctx_create(&ctx, NULL);

	if (rc)
		return rc;
	for (int c = 0; c < NCONF && !rc; c++) {
		struct hetmm_remote_desc d = {
			.servers = addrs, .nr_servers = conf_servers[c],
			.nr_pages = len / PAGE, .secret_file = secret_path,
			.replicas = conf_replicas[c],
		};
		if (!(rc = hetmm_remote_create(ctx, &d, &dev[c])))
			rc = hetmm_remote_pagemap(dev[c], &pg[c]);
	}
	for (int i = 0; i <= reps && !rc; i++) {   /* the first: a warm-up */
		bare_streams(b, buf, len, i - 1, r);
		double g = 0, p = 0;
		fresh_streams(b, len, &g, &p);
		if (i)
			r->g1new[i - 1] = g, r->p1free[i - 1] = p;
		for (int c = 0; c < NCONF && !rc; c++) {
			double m = 0, back = 0;
			rc = hetmm_pass(pg[c], len, i + 1, &m, &back);
			if (i)
				r->mig[c][i - 1] = m, r->back[c][i - 1] = back;
		}
		if (i)
			r->touch[i - 1] = gbps(len, first_touch_ns(len));
	}
	if (!rc)
		rc = hetmm_latency(pg[ONE], len, &r->fault_ns);
	for (int c = 0; c < NCONF; c++)
		if (dev[c])
			hetmm_remote_destroy(dev[c]);
	hetmm_ctx_destroy(ctx);
	return rc;
}

/* The median of a[i] / b[i]: each pair measured side by side. */
static double ratio(const double *a, const double *b, int n)
{
	double v[MAXREPS];
	for (int i = 0; i < n; i++)
		v[i] = a[i] / b[i];
	return median(v, n);
}

static void verdict(const char *what, double ratio, double target, int ge)
{
	int met = ge ? ratio >= target : ratio <= target;
	printf("  %-36s %6.2f x   target %s %.1f: %s\n", what, ratio,
	       ge ? ">=" : "<=", target, met ? "met" : "NOT met");
}

static int bench_one(const char *tls, size_t len, int reps)
{
	struct server srv[2] = { 0 };
	struct bare b;
	static struct hres h;
	char cap[32];
	int rc;

	setenv("UCX_TLS", tls, 1);
	/* The first server holds all three devices and the bare client's
	 * region. */
	snprintf(cap, sizeof(cap), "%zuM", 4 * len / MIB + 16);
	if ((rc = server_start(&srv[0], cap)) ||
	    (rc = server_start(&srv[1], cap))) {
		fprintf(stderr, "bench-remote: hetmm-memd (%s): %s\n",
			memd_path(), strerror(-rc));
		server_stop(&srv[0]);
		return 1;
	}
	char *buf = map_anon(len, 0);
	populate(buf, len, 3);
	double get_ns = NAN, uffd_ns = uffd_latency(len);
	if ((rc = bare_open(&b, srv, 2, len / PAGE)) == 0) {
		get_ns = bare_get_latency(&b, buf);
		rc = hetmm_run(srv, len, reps, &b, buf, &h);
	}
	bare_close(&b);
	munmap(buf, len);
	server_stop(&srv[0]);
	server_stop(&srv[1]);
	if (rc) {
		fprintf(stderr, "bench-remote: %s\n", hetmm_strerror(rc));
		return 1;
	}

	double g = median(h.g1, reps), p = median(h.p1, reps);
	double back[NCONF], mig[NCONF];
	for (int c = 0; c < NCONF; c++) {
		back[c] = median(h.back[c], reps);
		mig[c] = median(h.mig[c], reps);
	}
	printf("UCX_TLS=%s, %zu MiB%s, median of %d\n", tls, len / MIB,
	       pass_thp ? " (THP buffer)" : "", reps);
	printf("  bare ucp_get of a page               %8.1f us\n",
	       get_ns / 1e3);
	printf("  bare userfaultfd round trip          %8.1f us\n",
	       uffd_ns / 1e3);
	printf("  hetmm random fault, 1 page           %8.1f us\n",
	       h.fault_ns / 1e3);
	printf("  bare ucp_get stream (%zu KiB)         %8.2f GB/s\n",
	       (size_t)HETMM_COPY_MAX_PAGES * PAGE / 1024, g);
	printf("  bare ucp_get stream, 2 servers       %8.2f GB/s\n",
	       median(h.g2, reps));
	printf("  bare ucp_get stream into new memory  %8.2f GB/s\n",
	       median(h.g1new, reps));
	printf("  hetmm fault-back, 1 server           %8.2f GB/s\n",
	       back[ONE]);
	printf("  hetmm fault-back, 2 servers          %8.2f GB/s\n",
	       back[TWO]);
	printf("  hetmm fault-back, 2 servers, replica %8.2f GB/s\n",
	       back[REPL]);
	printf("  first touch of mapped pages          %8.2f GB/s\n",
	       median(h.touch, reps));
	printf("  bare ucp_put stream + flush          %8.2f GB/s\n", p);
	printf("  bare ucp_put stream, 2 servers       %8.2f GB/s\n",
	       median(h.p2, reps));
	printf("  bare ucp_put stream, source freed    %8.2f GB/s\n",
	       median(h.p1free, reps));
	printf("  hetmm migrate, 1 server              %8.2f GB/s\n",
	       mig[ONE]);
	printf("  hetmm migrate, 2 servers             %8.2f GB/s\n",
	       mig[TWO]);
	printf("  hetmm migrate, 2 servers, replica    %8.2f GB/s\n",
	       mig[REPL]);
	verdict("fault / (ucp_get + uffd)", h.fault_ns / (get_ns + uffd_ns),
		1.2, 0);
	verdict("fault-back / ucp_get stream", ratio(h.back[ONE], h.g1, reps),
		0.8, 1);
	/* What holds fault-back where a fresh mapping is dear: the pass
	 * can't beat its own first touches. */
	printf("  %-36s %6.2f x   (its ceiling here)\n",
	       "fault-back / first touch", ratio(h.back[ONE], h.touch, reps));
	verdict("migrate / ucp_put stream", ratio(h.mig[ONE], h.p1, reps),
		0.8, 1);
	/* The same two against UCX's streams that allocate and free pages
	 * as hetmm's passes do (fresh_streams): not the targets, what the
	 * machine's new memory leaves of them. */
	printf("  %-36s %6.2f x   (UCX's own: %.2f x)\n",
	       "fault-back / ucp_get into new memory",
	       ratio(h.back[ONE], h.g1new, reps), ratio(h.g1new, h.g1, reps));
	printf("  %-36s %6.2f x   (UCX's own: %.2f x)\n",
	       "migrate / ucp_put, source freed",
	       ratio(h.mig[ONE], h.p1free, reps), ratio(h.p1free, h.p1, reps));
	/* Ratios of passes measured side by side, their median. */
	verdict("fault-back, 2 servers / 1",
		ratio(h.back[TWO], h.back[ONE], reps), 1.6, 1);
	verdict("migrate, 2 servers / 1",
		ratio(h.mig[TWO], h.mig[ONE], reps), 1.6, 1);
	/* What the transport gives two servers here, the baseline of the
	 * two rows above: where UCX itself does not scale (client and
	 * servers on the same CPUs), hetmm can't. */
	printf("  %-36s %6.2f x   (UCX's own)\n",
	       "ucp_get stream, 2 servers / 1",
	       ratio(h.g2, h.g1, reps));
	printf("  %-36s %6.2f x   (UCX's own)\n",
	       "ucp_put stream, 2 servers / 1",
	       ratio(h.p2, h.p1, reps));
	/* What a replica costs: every byte put twice. */
	printf("  %-36s %6.2f x\n", "migrate, replica / none (2 servers)",
	       ratio(h.mig[REPL], h.mig[TWO], reps));
	printf("  %-36s %6.2f x\n", "fault-back, replica / none",
	       ratio(h.back[REPL], h.back[TWO], reps));
	fflush(stdout);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: hetmm bench-remote [--tls shm,tcp] [--mib N] "
		"[--reps N] [--thp]\n"
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
		} else if (!strcmp(argv[i], "--thp")) {
			pass_thp = 1;
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
