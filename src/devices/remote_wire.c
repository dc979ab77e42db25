/* SPDX-License-Identifier: MIT */
/*
 * devices/remote_wire.c - the control protocol's encoding, its I/O and
 * the secret file (see remote_wire.h).
 */
#include "remote_wire.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int rw_secret_load(const char *path, struct rw_secret *s)
{
	struct stat st;
	ssize_t got;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st)) {
		int e = -errno;
		close(fd);
		return e;
	}
	if (!S_ISREG(st.st_mode) || st.st_size < RW_SECRET_MIN ||
	    st.st_size > RW_SECRET_MAX) {
		close(fd);
		return -EINVAL;
	}
	/* A secret others can read is no secret: refuse it, as ssh does
	 * a private key. */
	if ((st.st_mode & 077) || st.st_uid != geteuid()) {
		close(fd);
		return -EACCES;
	}
	got = read(fd, s->key, (size_t)st.st_size);
	close(fd);
	if (got != st.st_size)
		return got < 0 ? -errno : -EIO;
	s->len = (size_t)got;
	return 0;
}

void rw_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

void rw_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

uint32_t rw_get32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

uint64_t rw_get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

void rw_client_mac(const struct rw_secret *s, const uint8_t *nonce_s,
		   const uint8_t *nonce_c, uint64_t page_size, uint64_t pages,
		   uint8_t out[SHA256_LEN])
{
	static const char label[] = "hetmm-remote client 1";
	uint8_t sizes[16];

	rw_put64(sizes, page_size);
	rw_put64(sizes + 8, pages);
	const void *p[] = { label, nonce_s, nonce_c, sizes };
	size_t len[] = { sizeof(label) - 1, RW_NONCE, RW_NONCE, 16 };
	hmac_sha256(s->key, s->len, 4, p, len, out);
}

void rw_server_mac(const struct rw_secret *s, const uint8_t *nonce_c,
		   const uint8_t *nonce_s, const uint8_t *accept_tail,
		   size_t tail_len, uint8_t out[SHA256_LEN])
{
	static const char label[] = "hetmm-remote server 1";
	const void *p[] = { label, nonce_c, nonce_s, accept_tail };
	size_t len[] = { sizeof(label) - 1, RW_NONCE, RW_NONCE, tail_len };
	hmac_sha256(s->key, s->len, 4, p, len, out);
}

int rw_random(void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t n = getrandom(p, len, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

void rw_header(uint8_t hdr[RW_HDR], enum rw_type type, uint32_t len)
{
	rw_put32(hdr, RW_MAGIC);
	hdr[4] = RW_VERSION;
	hdr[5] = 0;
	hdr[6] = (uint8_t)type;
	hdr[7] = 0;
	rw_put32(hdr + 8, len);
}

int rw_parse_header(const uint8_t hdr[RW_HDR], enum rw_type *type,
		    uint32_t *len)
{
	uint32_t l = rw_get32(hdr + 8);
	unsigned t = hdr[6] | (unsigned)hdr[7] << 8;

	if (rw_get32(hdr) != RW_MAGIC || hdr[4] != RW_VERSION || hdr[5] ||
	    t < RW_HELLO || t > RW_ERROR || l > RW_MAX_BODY)
		return -EPROTO;
	*type = (enum rw_type)t;
	*len = l;
	return 0;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int rw_send(int fd, enum rw_type type, const void *body, uint32_t len)
{
	uint8_t hdr[RW_HDR];

	rw_header(hdr, type, len);
	int rc = write_all(fd, hdr, sizeof(hdr));
	return rc ? rc : write_all(fd, body, len);
}

int rw_send_error(int fd, int err, const char *text)
{
	uint8_t body[4 + 200];
	size_t n = strnlen(text, 200);

	rw_put32(body, (uint32_t)err);
	memcpy(body + 4, text, n);
	return rw_send(fd, RW_ERROR, body, (uint32_t)(4 + n));
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int read_all(int fd, uint8_t *p, size_t len, int64_t deadline)
{
	while (len) {
		int64_t left = deadline - now_ms();
		struct pollfd pfd = { .fd = fd, .events = POLLIN };

		if (left <= 0)
			return -ETIMEDOUT;
		int r = poll(&pfd, 1, (int)left);
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r <= 0)
			continue;
		ssize_t n = recv(fd, p, len, MSG_DONTWAIT);
		if (n == 0)
			return -ECONNRESET;
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int rw_recv(int fd, enum rw_type *type, uint8_t *buf, uint32_t cap,
	    uint32_t *len, int deadline_ms)
{
	int64_t deadline = now_ms() + deadline_ms;
	uint8_t hdr[RW_HDR];
	int rc = read_all(fd, hdr, sizeof(hdr), deadline);

	if (!rc)
		rc = rw_parse_header(hdr, type, len);
	if (!rc && *len > cap)
		rc = -EPROTO;
	if (!rc)
		rc = read_all(fd, buf, *len, deadline);
	return rc;
}

int rw_split_addr(const char *addr, char *host, size_t host_cap,
		  char *port, size_t port_cap)
{
	const char *colon, *h = addr, *h_end;

	if (!addr)
		return -EINVAL;
	if (addr[0] == '[') {
		h = addr + 1;
		h_end = strchr(h, ']');
		if (!h_end || h_end[1] != ':')
			return -EINVAL;
		colon = h_end + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon)
			return -EINVAL;
		h_end = colon;
	}
	size_t hl = (size_t)(h_end - h), pl = strlen(colon + 1);
	if (!hl || hl >= host_cap || !pl || pl >= port_cap)
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = 0;
	memcpy(port, colon + 1, pl + 1);
	return 0;
}
