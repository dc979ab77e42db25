/* SPDX-License-Identifier: MIT */
/*
 * memd.c - hetmm-memd, the memory server of hetmm's remote device
 * (src/devices/remote.c).
 *
 *   hetmm-memd --listen HOST:PORT --capacity SIZE --secret FILE
 *              [--max-clients N]
 *
 * Offers SIZE bytes of its memory to clients that prove they hold the
 * secret in FILE (challenge and response, devices/remote_wire.h), each
 * in a region of its own registered with ucp_mem_map and reached with the
 * region's remote key alone.  The client's TCP connection is its lease:
 * when it closes (the client ended, or died) the region is freed.  One
 * thread: a poll over the listening socket, the clients' connections,
 * the UCX worker's event fd (transports that need the target's progress,
 * TCP's, are served here) and a signalfd; SIGTERM and SIGINT stop it
 * cleanly, freeing every region.  A log line per event, on stdout.
 * PORT 0 picks a free port; the first line says which.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ucp/api/ucp.h>

#include "devices/remote_wire.h"

#define MAX_CLIENTS_LIMIT 1024
#define AUTH_TIMEOUT_MS 5000

enum client_state { C_FREE, C_AUTH, C_ACTIVE };

struct client {
	enum client_state state;
	int fd;
	unsigned id;
	char peer[80];
	uint8_t nonce[RW_NONCE];
	uint8_t rx[RW_HDR + RW_AUTH_LEN];
	size_t have;
	int64_t deadline_ms;
	ucp_mem_h memh;
	uint64_t bytes;
};

static struct {
	struct rw_secret secret;
	uint64_t capacity, used;
	unsigned max_clients, next_id;
	struct client *clients;
	ucp_context_h ucp;
	ucp_worker_h worker;
	ucp_address_t *waddr;
	size_t waddr_len;
} S;

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
	va_list ap;
	time_t t = time(NULL);
	struct tm tm;
	char ts[32];

	gmtime_r(&t, &tm);
	strftime(ts, sizeof(ts), "%H:%M:%S", &tm);
	printf("hetmm-memd %s ", ts);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mib(uint64_t b)
{
	return (double)b / (1 << 20);
}

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	int shift = 0;

	if (errno || end == s)
		return -1;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	}
	if (*end == 'i' && shift)
		end++;
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end || !v || v > (UINT64_MAX >> shift))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

/* ------------------------------------------------------------------------
 * UCX
 */

static int ucx_start(void)
{
	ucp_config_t *cfg;
	ucp_params_t params = {
		.field_mask = UCP_PARAM_FIELD_FEATURES,
		.features = UCP_FEATURE_RMA | UCP_FEATURE_WAKEUP,
	};
	ucp_worker_params_t wp = {
		.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
		.thread_mode = UCS_THREAD_MODE_SINGLE,
	};
	ucs_status_t st = ucp_config_read(NULL, NULL, &cfg);

	if (st != UCS_OK)
		goto fail;
	st = ucp_init(&params, cfg, &S.ucp);
	ucp_config_release(cfg);
	if (st != UCS_OK)
		goto fail;
	st = ucp_worker_create(S.ucp, &wp, &S.worker);
	if (st != UCS_OK)
		goto fail;
	st = ucp_worker_get_address(S.worker, &S.waddr, &S.waddr_len);
	if (st != UCS_OK)
		goto fail;
	return 0;
fail:
	logf_("UCX: %s", ucs_status_string(st));
	return -1;
}

static void ucx_stop(void)
{
	ucp_worker_release_address(S.worker, S.waddr);
	ucp_worker_destroy(S.worker);
	ucp_cleanup(S.ucp);
}

/* Progress until idle, then arm the event fd: true if it is armed (poll
 * may sleep on it).  At most UCX_PROGRESS_ROUNDS rounds before the
 * sockets get their turn: a transport that reports progress on every
 * round (a send to a stopped client retried) must not keep the server
 * from admitting others; false then, and poll does not sleep. */
#define UCX_PROGRESS_ROUNDS 1024

static bool ucx_idle(void)
{
	for (unsigned i = 0; ucp_worker_progress(S.worker); i++)
		if (i == UCX_PROGRESS_ROUNDS)
			return false;
	return ucp_worker_arm(S.worker) != UCS_ERR_BUSY;
}

/* ------------------------------------------------------------------------
 * Clients
 */

static void client_close(struct client *c, const char *why)
{
	if (c->state == C_ACTIVE) {
		ucp_mem_unmap(S.ucp, c->memh);
		S.used -= c->bytes;
		logf_("client %u (%s): %s; its region of %.1f MiB freed, "
		      "%.1f MiB free", c->id, c->peer, why, mib(c->bytes),
		      mib(S.capacity - S.used));
	} else {
		logf_("client %u (%s): %s", c->id, c->peer, why);
	}
	close(c->fd);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

/* Refuse: an ERROR message and the connection closed. */
static void client_refuse(struct client *c, int err, const char *text)
{
	rw_send_error(c->fd, err, text);
	char why[240];
	snprintf(why, sizeof(why), "refused (%s): %s", strerror(-err), text);
	client_close(c, why);
}

static void client_accept(int lfd)
{
	struct sockaddr_storage sa;
	socklen_t sl = sizeof(sa);
	int fd = accept4(lfd, (struct sockaddr *)&sa, &sl,
			 SOCK_NONBLOCK | SOCK_CLOEXEC);
	char host[64] = "?", port[16] = "?";
	struct client *c = NULL;

	if (fd < 0)
		return;
	getnameinfo((struct sockaddr *)&sa, sl, host, sizeof(host), port,
		    sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV);
	for (unsigned i = 0; i < S.max_clients && !c; i++)
		if (S.clients[i].state == C_FREE)
			c = &S.clients[i];
	if (!c) {
		logf_("connection from %s:%s refused: %u clients already",
		      host, port, S.max_clients);
		rw_send_error(fd, -ENOSPC, "too many clients");
		close(fd);
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->fd = fd;
	c->id = ++S.next_id;
	c->state = C_AUTH;
	c->deadline_ms = now_ms() + AUTH_TIMEOUT_MS;
	snprintf(c->peer, sizeof(c->peer), "%s:%s", host, port);
	logf_("client %u (%s): connected", c->id, c->peer);
	if (rw_random(c->nonce, RW_NONCE) ||
	    rw_send(fd, RW_HELLO, c->nonce, RW_NONCE))
		client_close(c, "lost before the challenge");
}

/* Send ACCEPT on a client's non-blocking socket whole, waiting 2 s at
 * most: the message is small and the socket's buffer empty, but never
 * leave it half sent. */
static int send_blocking(int fd, const uint8_t *body, uint32_t len)
{
	struct timeval tv = { .tv_sec = 2 };
	int fl = fcntl(fd, F_GETFL);

	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	int rc = rw_send(fd, RW_ACCEPT, body, len);
	fcntl(fd, F_SETFL, fl);
	return rc;
}

/* The ACCEPT body: proof, region, remote key, worker address. */
static int client_admit(struct client *c, uint64_t bytes,
			const uint8_t *nonce_c)
{
	ucp_mem_map_params_t mp = {
		.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS |
			      UCP_MEM_MAP_PARAM_FIELD_LENGTH |
			      UCP_MEM_MAP_PARAM_FIELD_FLAGS,
		.address = NULL,
		.length = bytes,
		.flags = UCP_MEM_MAP_ALLOCATE,
	};
	ucp_mem_attr_t attr = {
		.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS,
	};
	void *rkey = NULL;
	size_t rkey_len = 0;

	if (ucp_mem_map(S.ucp, &mp, &c->memh) != UCS_OK)
		return -ENOMEM;
	if (ucp_mem_query(c->memh, &attr) != UCS_OK ||
	    ucp_rkey_pack(S.ucp, c->memh, &rkey, &rkey_len) != UCS_OK) {
		ucp_mem_unmap(S.ucp, c->memh);
		return -ENOMEM;
	}
	/* UCX may hand out memory another client had (its heap method):
	 * a region starts as zeroes, never as someone else's bytes. */
	memset(attr.address, 0, bytes);

	size_t tail = 24 + rkey_len + S.waddr_len;
	uint8_t *body = malloc(SHA256_LEN + tail);
	int rc = -ENOMEM;
	if (body) {
		uint8_t *t = body + SHA256_LEN;
		rw_put64(t, (uintptr_t)attr.address);
		rw_put64(t + 8, bytes);
		rw_put32(t + 16, (uint32_t)rkey_len);
		rw_put32(t + 20, (uint32_t)S.waddr_len);
		memcpy(t + 24, rkey, rkey_len);
		memcpy(t + 24 + rkey_len, S.waddr, S.waddr_len);
		rw_server_mac(&S.secret, nonce_c, c->nonce, t, tail, body);
		rc = send_blocking(c->fd, body, (uint32_t)(SHA256_LEN + tail));
		free(body);
	}
	ucp_rkey_buffer_release(rkey);
	if (rc) {
		ucp_mem_unmap(S.ucp, c->memh);
		return rc;
	}
	c->bytes = bytes;
	S.used += bytes;
	c->state = C_ACTIVE;
	logf_("client %u (%s): admitted, region of %.1f MiB at %p, "
	      "%.1f MiB free", c->id, c->peer, mib(bytes), attr.address,
	      mib(S.capacity - S.used));
	return 0;
}

static void client_auth(struct client *c)
{
	const uint8_t *b = c->rx + RW_HDR;
	uint64_t page_size = rw_get64(b + RW_NONCE + SHA256_LEN);
	uint64_t pages = rw_get64(b + RW_NONCE + SHA256_LEN + 8);
	uint8_t want[SHA256_LEN];

	rw_client_mac(&S.secret, c->nonce, b, page_size, pages, want);
	if (!sha256_equal(want, b + RW_NONCE)) {
		client_refuse(c, -EACCES, "wrong proof of the secret");
		return;
	}
	if (page_size < RW_MIN_PAGE || page_size > (1u << 30) ||
	    (page_size & (page_size - 1)) || !pages ||
	    pages > UINT64_MAX / page_size) {
		client_refuse(c, -EINVAL, "bad page size or page count");
		return;
	}
	uint64_t bytes = pages * page_size;
	if (bytes > S.capacity - S.used) {
		char t[120];
		snprintf(t, sizeof(t), "asked %.1f MiB, %.1f MiB free",
			 mib(bytes), mib(S.capacity - S.used));
		client_refuse(c, -ENOSPC, t);
		return;
	}
	int rc = client_admit(c, bytes, b);
	if (rc)
		client_refuse(c, rc, "could not set its region up");
}

/* Bytes from a client: the AUTH message while authenticating; after,
 * the connection only closes (anything else is a protocol error). */
static void client_input(struct client *c)
{
	uint8_t junk[256];

	if (c->state == C_ACTIVE) {
		ssize_t n = recv(c->fd, junk, sizeof(junk), 0);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			client_close(c, "disconnected");
		else if (n > 0)
			client_refuse(c, -EPROTO, "message after admission");
		return;
	}
	ssize_t n = recv(c->fd, c->rx + c->have, sizeof(c->rx) - c->have, 0);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		client_close(c, "disconnected before admission");
		return;
	}
	if (n < 0)
		return;
	c->have += (size_t)n;
	if (c->have >= RW_HDR) {
		enum rw_type type;
		uint32_t len;
		if (rw_parse_header(c->rx, &type, &len)) {
			client_refuse(c, -EPROTO, "not a hetmm message");
			return;
		}
		if (type != RW_AUTH || len != RW_AUTH_LEN) {
			client_refuse(c, -EPROTO, "expected AUTH");
			return;
		}
	}
	if (c->have == sizeof(c->rx))
		client_auth(c);
}

/* ------------------------------------------------------------------------
 * Main loop
 */

static int listen_on(const char *addr, char *shown, size_t shown_cap)
{
	char host[256], port[32];
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_PASSIVE,
	}, *ai;
	int fd = -1;

	if (rw_split_addr(addr, host, sizeof(host), port, sizeof(port))) {
		logf_("--listen %s: not HOST:PORT", addr);
		return -1;
	}
	int e = getaddrinfo(host, port, &hints, &ai);
	if (e) {
		logf_("--listen %s: %s", addr, gai_strerror(e));
		return -1;
	}
	for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
		int one = 1;
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC |
			    SOCK_NONBLOCK, 0);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, a->ai_addr, a->ai_addrlen) || listen(fd, 64)) {
			e = errno;
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(ai);
	if (fd < 0) {
		logf_("--listen %s: %s", addr, strerror(e ? e : EINVAL));
		return -1;
	}
	struct sockaddr_storage sa;
	socklen_t sl = sizeof(sa);
	char h[64] = "?", p[16] = "?";
	getsockname(fd, (struct sockaddr *)&sa, &sl);
	getnameinfo((struct sockaddr *)&sa, sl, h, sizeof(h), p, sizeof(p),
		    NI_NUMERICHOST | NI_NUMERICSERV);
	snprintf(shown, shown_cap, strchr(h, ':') ? "[%s]:%s" : "%s:%s", h, p);
	return fd;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: hetmm-memd --listen HOST:PORT --capacity SIZE "
		"--secret FILE [--max-clients N]\n"
		"  Serves SIZE bytes (suffix K, M, G, T) of memory to hetmm's "
		"remote device\n"
		"  (hetmm_remote_create) over UCX, to clients holding the "
		"secret in FILE\n"
		"  (mode 0600, 16 bytes to 4 KiB).  PORT 0 picks one; the "
		"first line says which.\n"
		"  Stops on SIGTERM or SIGINT.\n");
}

static int serve(int lfd, int sfd)
{
	struct pollfd *pfd = calloc(S.max_clients + 3, sizeof(*pfd));
	int efd = -1;

	if (!pfd || ucp_worker_get_efd(S.worker, &efd) != UCS_OK) {
		logf_("no memory or no UCX event fd");
		free(pfd);
		return 1;
	}
	for (;;) {
		bool armed = ucx_idle();
		int64_t now = now_ms(), wait = armed ? 1000 : 0;
		nfds_t n = 3;

		pfd[0] = (struct pollfd){ .fd = lfd, .events = POLLIN };
		pfd[1] = (struct pollfd){ .fd = sfd, .events = POLLIN };
		pfd[2] = (struct pollfd){ .fd = efd, .events = POLLIN };
		for (unsigned i = 0; i < S.max_clients; i++) {
			struct client *c = &S.clients[i];
			if (c->state == C_FREE)
				continue;
			if (c->state == C_AUTH && c->deadline_ms <= now) {
				client_refuse(c, -ETIMEDOUT,
					      "no AUTH within 5 s");
				continue;
			}
			if (c->state == C_AUTH && c->deadline_ms - now < wait)
				wait = c->deadline_ms - now;
			pfd[n++] = (struct pollfd){ .fd = c->fd,
						    .events = POLLIN };
		}
		if (poll(pfd, n, (int)wait) < 0 && errno != EINTR) {
			logf_("poll: %s", strerror(errno));
			free(pfd);
			return 1;
		}
		if (pfd[1].revents) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof(si)) == sizeof(si)) {
				logf_("%s: stopping", strsignal((int)si.ssi_signo));
				break;
			}
		}
		if (pfd[0].revents & POLLIN)
			client_accept(lfd);
		for (nfds_t i = 3; i < n; i++) {
			if (!pfd[i].revents)
				continue;
			for (unsigned j = 0; j < S.max_clients; j++)
				if (S.clients[j].state != C_FREE &&
				    S.clients[j].fd == pfd[i].fd) {
					client_input(&S.clients[j]);
					break;
				}
		}
	}
	for (unsigned i = 0; i < S.max_clients; i++)
		if (S.clients[i].state != C_FREE)
			client_close(&S.clients[i], "server stopping");
	free(pfd);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "capacity", required_argument, NULL, 'c' },
		{ "secret", required_argument, NULL, 's' },
		{ "max-clients", required_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *listen_addr = NULL, *secret = NULL;
	uint64_t max = 64;
	int o;

	S.capacity = 0;
	while ((o = getopt_long(argc, argv, "l:c:s:m:h", opts, NULL)) != -1) {
		switch (o) {
		case 'l': listen_addr = optarg; break;
		case 's': secret = optarg; break;
		case 'c':
			if (parse_size(optarg, &S.capacity)) {
				fprintf(stderr, "hetmm-memd: bad --capacity %s\n",
					optarg);
				return 2;
			}
			break;
		case 'm':
			max = strtoull(optarg, NULL, 10);
			if (!max || max > MAX_CLIENTS_LIMIT) {
				fprintf(stderr, "hetmm-memd: --max-clients 1 to "
					"%d\n", MAX_CLIENTS_LIMIT);
				return 2;
			}
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!listen_addr || !secret || !S.capacity || optind != argc) {
		usage(stderr);
		return 2;
	}
	int rc = rw_secret_load(secret, &S.secret);
	if (rc) {
		fprintf(stderr, "hetmm-memd: secret %s: %s%s\n", secret,
			strerror(-rc), rc == -EACCES ?
			" (it must be yours, mode 0600)" : "");
		return 2;
	}
	S.max_clients = (unsigned)max;
	S.clients = calloc(S.max_clients, sizeof(*S.clients));
	if (!S.clients)
		return 1;
	for (unsigned i = 0; i < S.max_clients; i++)
		S.clients[i].fd = -1;

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	int sfd = signalfd(-1, &mask, SFD_CLOEXEC);

	char shown[128];
	int lfd = listen_on(listen_addr, shown, sizeof(shown));
	if (sfd < 0 || lfd < 0 || ucx_start())
		return 1;
	logf_("listening on %s, capacity %.1f MiB, at most %u clients",
	      shown, mib(S.capacity), S.max_clients);
	rc = serve(lfd, sfd);
	close(lfd);
	ucx_stop();
	logf_("stopped");
	free(S.clients);
	return rc;
}
