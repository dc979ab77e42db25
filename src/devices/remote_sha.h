/* SPDX-License-Identifier: MIT */
/*
 * devices/remote_sha.h - SHA-256 (FIPS 180-4) and HMAC-SHA-256 (RFC 2104),
 * for the remote device's challenge and response: written here from the
 * standards because hetmm links no crypto library.  Checked against the
 * standards' test vectors by test_remote_auth.
 */
#ifndef HETMM_REMOTE_SHA_H
#define HETMM_REMOTE_SHA_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN 32
#define SHA256_BLOCK 64

struct sha256 {
	uint32_t h[8];
	uint64_t bytes;                /* message length so far */
	uint8_t buf[SHA256_BLOCK];
	size_t used;                   /* bytes waiting in buf */
};

void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const void *data, size_t len);
void sha256_final(struct sha256 *s, uint8_t out[SHA256_LEN]);

/* HMAC-SHA-256 of the concatenation of n parts (part i: p[i], len[i]). */
void hmac_sha256(const uint8_t *key, size_t key_len, size_t n,
		 const void *const *p, const size_t *len,
		 uint8_t out[SHA256_LEN]);

/* 1 if the two digests are equal, in time that does not depend on
 * where they differ. */
int sha256_equal(const uint8_t a[SHA256_LEN], const uint8_t b[SHA256_LEN]);

#endif
