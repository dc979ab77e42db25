/* SPDX-License-Identifier: MIT */
/*
 * devices/remote_wire.h - the remote device's control protocol, shared by
 * the device (devices/remote.c) and the memory server (tools/memd.c).
 *
 * A TCP connection per client carries the handshake; the pages then move
 * with UCX one-sided puts and gets, and the connection stays open as the
 * client's lease: when it closes the server frees the client's region,
 * and the client takes the server for dead.
 *
 *   server -> HELLO   nonce_s[32]
 *   client -> AUTH    nonce_c[32] mac_c[32] page_size:u64 pages:u64
 *   server -> ACCEPT  mac_s[32] addr:u64 len:u64 rkey_len:u32 waddr_len:u32
 *                     rkey[rkey_len] worker_address[waddr_len]
 *          or ERROR   errno:i32 text
 *
 * mac_c = HMAC-SHA-256(secret, "hetmm-remote client 1" nonce_s nonce_c
 * page_size pages) proves the client holds the secret; mac_s =
 * HMAC(secret, "hetmm-remote server 1" nonce_c nonce_s addr len rkey
 * worker_address) proves the server does and binds what it offers.  The
 * secret never crosses the wire.  Each message is a 12-byte header
 * (magic, version, type, body length; little-endian) and a body of at
 * most RW_MAX_BODY bytes.
 */
#ifndef HETMM_REMOTE_WIRE_H
#define HETMM_REMOTE_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "remote_sha.h"

#define RW_MAGIC 0x4d4d5448u          /* "HTMM" */
#define RW_VERSION 1
#define RW_HDR 12
#define RW_MAX_BODY 65536
#define RW_NONCE 32
#define RW_SECRET_MIN 16
/* The smallest page a client may name: the kernel's smallest. */
#define RW_MIN_PAGE (4 << 10)
#define RW_SECRET_MAX (4 << 10)
#define RW_AUTH_LEN (RW_NONCE + SHA256_LEN + 16)
#define RW_ACCEPT_FIXED (SHA256_LEN + 24)

enum rw_type { RW_HELLO = 1, RW_AUTH, RW_ACCEPT, RW_ERROR };

struct rw_secret {
	uint8_t key[RW_SECRET_MAX];
	size_t len;
};

/* Read the secret at path: a regular file of the caller's own with no
 * access for group or others (mode 0600 or 0400), RW_SECRET_MIN to
 * RW_SECRET_MAX bytes.  0; -EACCES if anyone else may read it or it is
 * not ours; -EINVAL for a bad size or not a regular file; open's errno. */
int rw_secret_load(const char *path, struct rw_secret *s);

/* The client's and the server's proofs (see above). */
void rw_client_mac(const struct rw_secret *s, const uint8_t *nonce_s,
		   const uint8_t *nonce_c, uint64_t page_size, uint64_t pages,
		   uint8_t out[SHA256_LEN]);
void rw_server_mac(const struct rw_secret *s, const uint8_t *nonce_c,
		   const uint8_t *nonce_s, const uint8_t *accept_tail,
		   size_t tail_len, uint8_t out[SHA256_LEN]);

/* Random bytes from the kernel; 0 or -errno. */
int rw_random(void *buf, size_t len);

void rw_put32(uint8_t *p, uint32_t v);
void rw_put64(uint8_t *p, uint64_t v);
uint32_t rw_get32(const uint8_t *p);
uint64_t rw_get64(const uint8_t *p);

/* Encode a header for a body of len bytes. */
void rw_header(uint8_t hdr[RW_HDR], enum rw_type type, uint32_t len);
/* Check a received header: 0 with *type and *len, -EPROTO if it is not
 * one of ours (magic, version, type, length). */
int rw_parse_header(const uint8_t hdr[RW_HDR], enum rw_type *type,
		    uint32_t *len);

/* Send one message on a blocking socket, whole; 0 or -errno. */
int rw_send(int fd, enum rw_type type, const void *body, uint32_t len);
/* Receive one message into buf (cap bytes) by deadline_ms from now: 0
 * with *type and *len; -ETIMEDOUT, -ECONNRESET if the peer closed,
 * -EPROTO for a bad header or a body larger than cap, or -errno. */
int rw_recv(int fd, enum rw_type *type, uint8_t *buf, uint32_t cap,
	    uint32_t *len, int deadline_ms);
/* An ERROR message: err (negative errno) and a short text. */
int rw_send_error(int fd, int err, const char *text);

/* Split "host:port" or "[v6 host]:port" into host and port strings;
 * -EINVAL if it is neither. */
int rw_split_addr(const char *addr, char *host, size_t host_cap,
		  char *port, size_t port_cap);

#endif
