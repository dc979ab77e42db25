/* SPDX-License-Identifier: MIT */
/*
 * test_remote_auth.c - who may connect to hetmm-memd, and what a client
 * reaches: SHA-256 and HMAC against their standards' vectors; the secret
 * file's mode; a wrong secret refused; a client's region holding none of
 * another client's bytes (read with UCX directly, as a client that
 * bypasses hetmm would); malformed messages answered with an error while
 * the server goes on serving; a dead client's region freed; a client the
 * server has no room for refused; SIGTERM.  On TCP over loopback.
 */
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <ucp/api/ucp.h>

#include "remote.h"
#include "devices/remote_sha.h"
#include "devices/remote_wire.h"

static struct hetmm_ctx *ctx;

static void hex(const uint8_t *d, char *out)
{
	for (int i = 0; i < SHA256_LEN; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

/* FIPS 180-4's examples (via NIST's SHA-256 example values) and RFC
 * 4231's HMAC-SHA-256 test cases 1, 2 and 6. */
static void vectors(void)
{
	static const struct {
		const char *msg, *want;
	} sha[] = {
		{ "abc", "ba7816bf8f01cfea414140de5dae2223"
			 "b00361a396177a9cb410ff61f20015ad" },
		{ "", "e3b0c44298fc1c149afbf4c8996fb924"
		      "27ae41e4649b934ca495991b7852b855" },
		{ "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
		  "248d6a61d20638b8e5c026930c3e6039"
		  "a33ce45964ff2167f6ecedd419db06c1" },
	};
	uint8_t d[SHA256_LEN], key[131];
	char h[2 * SHA256_LEN + 1];

	for (size_t i = 0; i < sizeof(sha) / sizeof(sha[0]); i++) {
		struct sha256 s;
		sha256_init(&s);
		sha256_update(&s, sha[i].msg, strlen(sha[i].msg));
		sha256_final(&s, d);
		hex(d, h);
		CHECK(!strcmp(h, sha[i].want));
	}
	/* A million 'a's, fed unevenly. */
	struct sha256 s;
	char a[1001];
	memset(a, 'a', sizeof(a));
	sha256_init(&s);
	for (int i = 0; i < 1000; i++)
		sha256_update(&s, a, i % 2 ? 999 : 1001);
	sha256_final(&s, d);
	hex(d, h);
	CHECK(!strcmp(h, "cdc76e5c9914fb9281a1c7e284d73e67"
			 "f1809a48a497200e046d39ccc7112cd0"));

	const char *m1 = "Hi There";
	memset(key, 0x0b, 20);
	hmac_sha256(key, 20, 1, (const void *[]){ m1 },
		    (size_t[]){ strlen(m1) }, d);
	hex(d, h);
	CHECK(!strcmp(h, "b0344c61d8db38535ca8afceaf0bf12b"
			 "881dc200c9833da726e9376c2e32cff7"));
	/* The message in two parts: the same as in one. */
	hmac_sha256((const uint8_t *)"Jefe", 4, 2,
		    (const void *[]){ "what do ya want ", "for nothing?" },
		    (size_t[]){ 16, 12 }, d);
	hex(d, h);
	CHECK(!strcmp(h, "5bdcc146bf60754e6a042426089575c7"
			 "5a003f089d2739839dec58b964ec3843"));
	const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key "
			 "First";
	memset(key, 0xaa, sizeof(key));
	hmac_sha256(key, sizeof(key), 1, (const void *[]){ m6 },
		    (size_t[]){ strlen(m6) }, d);
	hex(d, h);
	CHECK(!strcmp(h, "60e431591ee0b67f0d8a26aacbf5b77f"
			 "8e0bc6213728c5140546040f0ee37f54"));
}

/* Migrate n pages there and back, checking every byte. */
static void round_trip(struct hetmm_remote *dev, size_t n, uint64_t seed)
{
	char *p = t_map(n);
	t_fill(p, n, seed);
	t_to_device(t_remote_pg(dev), p, n);
	t_verify(p, n, seed);
	t_unmap(p, n);
}

/* The secret file: readable by others, refused on both ends; wrong,
 * refused by the server; a server that fails to prove it, refused by the
 * client (it can't without the secret: the same as a wrong one). */
static void secrets(void)
{
	struct t_server srv;
	struct hetmm_remote *dev = NULL;
	char open_file[160], wrong[160];

	snprintf(open_file, sizeof(open_file), "%s/open", t_dir);
	snprintf(wrong, sizeof(wrong), "%s/wrong", t_dir);
	t_secret_write(open_file, 32, 0644, 1);
	t_secret_write(wrong, 32, 0600, 2);

	/* The server won't start on a secret others can read. */
	pid_t c = fork();
	REQUIRE(c >= 0);
	if (c == 0) {
		int null = open("/dev/null", O_WRONLY);
		dup2(null, 1);
		dup2(null, 2);
		execl(t_memd, t_memd, "--listen", "127.0.0.1:0",
		      "--capacity", "1M", "--secret", open_file, (char *)NULL);
		_exit(127);
	}
	int st;
	REQUIRE(waitpid(c, &st, 0) == c);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2);

	t_server_start(&srv, "16M");
	CHECK_EQ(t_remote_make(ctx, &srv, 1, 64, 0, open_file, &dev),
		 -EACCES);
	CHECK_EQ(t_remote_make(ctx, &srv, 1, 64, 0, wrong, &dev), -EACCES);
	CHECK(t_server_wait_log(&srv, "wrong proof of the secret", 2000));
	char nowhere[160];
	snprintf(nowhere, sizeof(nowhere), "%s/none", t_dir);
	CHECK_EQ(t_remote_make(ctx, &srv, 1, 64, 0, nowhere, &dev), -ENOENT);
	/* The right one still works after all that. */
	REQUIRE_OK(t_remote_make(ctx, &srv, 1, 64, 0, t_secret, &dev));
	round_trip(dev, 64, 1);
	REQUIRE_OK(hetmm_remote_destroy(dev));
	CHECK_EQ(t_server_stop(&srv, SIGTERM), 0);
	CHECK(strstr(srv.log, "stopped") != NULL);
}

/* A TCP connection to the server, raw. */
static int raw_connect(struct t_server *s)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	const char *colon = strrchr(s->addr, ':');
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	REQUIRE(fd >= 0 && colon);
	sa.sin_port = htons((uint16_t)atoi(colon + 1));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	REQUIRE(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	return fd;
}

/* What the server answers a connection that sent `msg`: its errno from
 * an ERROR message, then the connection closed; 1 if it said anything
 * else or kept it open. */
static int answer_to(struct t_server *s, const void *msg, size_t len)
{
	uint8_t buf[512];
	enum rw_type type;
	uint32_t n;
	int fd = raw_connect(s);
	int rc = rw_recv(fd, &type, buf, sizeof(buf), &n, 2000);

	REQUIRE(rc == 0 && type == RW_HELLO);
	REQUIRE(send(fd, msg, len, MSG_NOSIGNAL) == (ssize_t)len);
	rc = rw_recv(fd, &type, buf, sizeof(buf), &n, 2000);
	int err = rc == 0 && type == RW_ERROR && n >= 4 ?
		  (int)rw_get32(buf) : 1;
	if (err != 1 && rw_recv(fd, &type, buf, sizeof(buf), &n, 2000) !=
	    -ECONNRESET)
		err = 1;
	close(fd);
	return err;
}

/* Malformed messages get an error; the server keeps serving a client
 * that is in the middle of its work, and new ones. */
static void malformed(void)
{
	struct t_server srv;
	struct hetmm_remote *dev;
	uint8_t m[RW_HDR + RW_AUTH_LEN];

	t_server_start(&srv, "16M");
	REQUIRE_OK(t_remote_make(ctx, &srv, 1, 256, 0, t_secret, &dev));
	char *p = t_map(256);
	t_fill(p, 256, 5);
	t_to_device(t_remote_pg(dev), p, 256);

	/* A silent connection holds nobody up. */
	int silent = raw_connect(&srv);

	memset(m, 0x5a, sizeof(m));
	CHECK_EQ(answer_to(&srv, m, sizeof(m)), -EPROTO);     /* garbage */
	rw_header(m, RW_AUTH, RW_MAX_BODY + 1);
	CHECK_EQ(answer_to(&srv, m, RW_HDR), -EPROTO);        /* too long */
	rw_header(m, RW_ACCEPT, 8);
	CHECK_EQ(answer_to(&srv, m, RW_HDR + 8), -EPROTO);    /* wrong type */
	rw_header(m, RW_AUTH, RW_AUTH_LEN);                    /* a bad proof */
	CHECK_EQ(answer_to(&srv, m, sizeof(m)), -EACCES);
	m[4] = RW_VERSION + 1;
	CHECK_EQ(answer_to(&srv, m, sizeof(m)), -EPROTO);     /* version */

	/* The first client's pages are all there; a new one gets in. */
	t_verify(p, 256, 5);
	struct hetmm_remote *dev2;
	REQUIRE_OK(t_remote_make(ctx, &srv, 1, 256, 0, t_secret, &dev2));
	round_trip(dev2, 256, 6);
	REQUIRE_OK(hetmm_remote_destroy(dev2));
	REQUIRE_OK(hetmm_remote_destroy(dev));
	t_unmap(p, 256);
	close(silent);
	CHECK_EQ(t_server_stop(&srv, SIGTERM), 0);
}

/*
 * Client B, UCX directly (as a client that bypasses hetmm would), after
 * A wrote its pages: B's own region reads as zeroes, whether A is there
 * or gone, and it is not A's.
 */
struct raw_client {
	int fd;
	ucp_context_h ucp;
	ucp_worker_h w;
	ucp_ep_h ep;
	ucp_rkey_h rkey;
	uint64_t base, len;
};

static void raw_open(struct raw_client *c, struct t_server *s,
		     uint64_t pages)
{
	static uint8_t buf[RW_MAX_BODY];
	struct rw_secret sec;
	uint8_t auth[RW_AUTH_LEN];
	enum rw_type type;
	uint32_t n;

	REQUIRE_OK(rw_secret_load(t_secret, &sec));
	c->fd = raw_connect(s);
	REQUIRE_OK(rw_recv(c->fd, &type, buf, sizeof(buf), &n, 2000));
	REQUIRE(type == RW_HELLO);
	REQUIRE_OK(rw_random(auth, RW_NONCE));
	rw_client_mac(&sec, buf, auth, PS, pages, auth + RW_NONCE);
	rw_put64(auth + RW_NONCE + SHA256_LEN, PS);
	rw_put64(auth + RW_NONCE + SHA256_LEN + 8, pages);
	REQUIRE_OK(rw_send(c->fd, RW_AUTH, auth, sizeof(auth)));
	REQUIRE_OK(rw_recv(c->fd, &type, buf, sizeof(buf), &n, 5000));
	REQUIRE(type == RW_ACCEPT);
	const uint8_t *t = buf + SHA256_LEN;
	c->base = rw_get64(t);
	c->len = rw_get64(t + 8);
	uint32_t rkey_len = rw_get32(t + 16);

	ucp_config_t *cfg;
	ucp_params_t prm = { .field_mask = UCP_PARAM_FIELD_FEATURES,
			     .features = UCP_FEATURE_RMA };
	ucp_worker_params_t wp = { .field_mask = 0 };
	REQUIRE(ucp_config_read(NULL, NULL, &cfg) == UCS_OK);
	REQUIRE(ucp_init(&prm, cfg, &c->ucp) == UCS_OK);
	ucp_config_release(cfg);
	REQUIRE(ucp_worker_create(c->ucp, &wp, &c->w) == UCS_OK);
	ucp_ep_params_t ep = {
		.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS,
		.address = (const ucp_address_t *)(t + 24 + rkey_len),
	};
	REQUIRE(ucp_ep_create(c->w, &ep, &c->ep) == UCS_OK);
	REQUIRE(ucp_ep_rkey_unpack(c->ep, t + 24, &c->rkey) == UCS_OK);
}

static void raw_get(struct raw_client *c, void *dst, uint64_t off,
		    size_t len)
{
	ucp_request_param_t none = { .op_attr_mask = 0 };
	ucs_status_ptr_t r = ucp_get_nbx(c->ep, dst, len, c->base + off,
					 c->rkey, &none);
	REQUIRE(!UCS_PTR_IS_ERR(r));
	while (r && ucp_request_check_status(r) == UCS_INPROGRESS)
		ucp_worker_progress(c->w);
	if (r) {
		REQUIRE(ucp_request_check_status(r) == UCS_OK);
		ucp_request_free(r);
	}
}

static void raw_close(struct raw_client *c)
{
	ucp_rkey_destroy(c->rkey);
	ucp_request_param_t prm = {
		.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
		.flags = UCP_EP_CLOSE_FLAG_FORCE,
	};
	ucs_status_ptr_t r = ucp_ep_close_nbx(c->ep, &prm);
	while (r && !UCS_PTR_IS_ERR(r) &&
	       ucp_request_check_status(r) == UCS_INPROGRESS)
		ucp_worker_progress(c->w);
	if (r && !UCS_PTR_IS_ERR(r))
		ucp_request_free(r);
	ucp_worker_destroy(c->w);
	ucp_cleanup(c->ucp);
	close(c->fd);
}

static void isolation(void)
{
	const size_t n = 512;
	struct t_server srv;
	struct hetmm_remote *a;
	struct raw_client b;

	t_server_start(&srv, "16M");
	REQUIRE_OK(t_remote_make(ctx, &srv, 1, n, 0, t_secret, &a));
	char *p = t_map(n);
	t_fill(p, n, 7);
	t_to_device(t_remote_pg(a), p, n);

	char *buf = t_alloc_pages(n);
	raw_open(&b, &srv, n);
	CHECK_EQ(b.len, n * PS);
	raw_get(&b, buf, 0, n * PS);
	CHECK_EQ(t_nonzero_pages(buf, n), 0);
	raw_close(&b);

	/* A gone: its region freed, its bytes not in the next one's. */
	t_verify(p, n, 7);
	t_to_device(t_remote_pg(a), p, n);
	REQUIRE_OK(hetmm_remote_destroy(a));    /* brings them home first */
	t_verify(p, n, 7);
	raw_open(&b, &srv, n);
	raw_get(&b, buf, 0, n * PS);
	CHECK_EQ(t_nonzero_pages(buf, n), 0);
	raw_close(&b);
	free(buf);
	t_unmap(p, n);
	CHECK_EQ(t_server_stop(&srv, SIGTERM), 0);
}

/* A client that dies frees its region; one the server has no room for
 * is refused. */
static void leases(void)
{
	struct t_server srv;
	struct hetmm_remote *dev;
	const size_t n = 1024;           /* the server's whole capacity */
	char cap[32];

	snprintf(cap, sizeof(cap), "%zuK", n * PS / 1024);
	t_server_start(&srv, cap);
	pid_t c = fork();
	REQUIRE(c >= 0);
	if (c == 0) {
		struct hetmm_ctx *cc;
		struct hetmm_remote *cd;
		if (hetmm_ctx_create(&cc, NULL) ||
		    t_remote_make(cc, &srv, 1, n, 0, t_secret, &cd))
			_exit(1);
		char *p = t_map(64);
		t_fill(p, 64, 9);
		t_to_device(t_remote_pg(cd), p, 64);
		raise(SIGKILL);
	}
	int st;
	REQUIRE(waitpid(c, &st, 0) == c);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	CHECK(t_server_wait_log(&srv, "disconnected; its region", 5000));
	REQUIRE_OK(t_remote_make(ctx, &srv, 1, n, 0, t_secret, &dev));
	struct hetmm_remote *more;
	CHECK_EQ(t_remote_make(ctx, &srv, 1, 64, 0, t_secret, &more),
		 -ENOSPC);
	round_trip(dev, 64, 10);
	REQUIRE_OK(hetmm_remote_destroy(dev));
	CHECK_EQ(t_server_stop(&srv, SIGTERM), 0);
}

int main(int argc, char **argv)
{
	t_remote_setup(argc, argv);
	setenv("UCX_TLS", "tcp", 1);
	vectors();
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	secrets();
	malformed();
	isolation();
	leases();
	REQUIRE_OK(hetmm_ctx_destroy(ctx));
	t_remote_cleanup();
	return t_done();
}
