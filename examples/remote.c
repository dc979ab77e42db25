/* SPDX-License-Identifier: MIT */
/*
 * remote.c - an array that lives in another machine's memory: a
 * hetmm-memd server's (see README, "Remote memory").
 *
 *   example_remote HOST:PORT SECRET-FILE [MiB]
 *
 * Fills an array of doubles, sums it, moves it to the server, sums it
 * again (every page faults back from the server as it is read), and
 * checks that the sums agree.
 */
#define _DEFAULT_SOURCE          /* MAP_ANONYMOUS */
#include <hetmm.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

static double sum(const double *a, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += a[i];
	return s;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s HOST:PORT SECRET-FILE [MiB]\n",
			argv[0]);
		return 2;
	}
	size_t len = (argc > 3 ? strtoul(argv[3], NULL, 10) : 64) << 20;
	size_t n = len / sizeof(double);
	const char *servers[] = { argv[1] };
	struct hetmm_remote_desc desc = {
		.servers = servers,
		.nr_servers = 1,
		.nr_pages = len / hetmm_page_size(),
		.secret_file = argv[2],
	};
	struct hetmm_ctx *ctx;
	struct hetmm_remote *dev;
	struct hetmm_pagemap *pg;
	int rc;

	if ((rc = hetmm_ctx_create(&ctx, NULL)) ||
	    (rc = hetmm_remote_create(ctx, &desc, &dev)) ||
	    (rc = hetmm_remote_pagemap(dev, &pg))) {
		fprintf(stderr, "hetmm: %s\n", hetmm_strerror(rc));
		return 1;
	}
	double *a = mmap(NULL, len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED)
		return 1;
	for (size_t i = 0; i < n; i++)
		a[i] = (double)(i % 1000);
	double before = sum(a, n);

	struct hetmm_migrate_report rep = { 0 };
	rc = hetmm_migrate_to_device(pg, a, len, &rep);
	printf("%zu MiB moved to %s: %llu pages\n", len >> 20, argv[1],
	       (unsigned long long)rep.moved);
	double after = sum(a, n);          /* faults them back */
	printf("sum before %.0f, after %.0f\n", before, after);

	munmap(a, len);
	hetmm_remote_destroy(dev);
	hetmm_ctx_destroy(ctx);
	return rc || before != after;
}
