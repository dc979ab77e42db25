#define _DEFAULT_SOURCE          /* MAP_ANONYMOUS */
#include <hetmm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int main(void)
{
	struct hetmm_ctx *ctx;        /* its userfaultfds + its fault handler */
	struct hetmm_emu *emu;        /* an emulated device */
	struct hetmm_pagemap *pg;     /* its hot-added device memory */
	struct hetmm_mirror *mir;     /* its page table over the process */
	size_t len = 64 * HETMM_PAGE_SIZE;

	hetmm_ctx_create(&ctx, NULL);
	hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_PRIVATE, 1024, &emu);
	hetmm_emu_pagemap(emu, &pg);

	char *buf = mmap(NULL, len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(buf, 'x', len);

	/* Collect, copy, commit: the 64 pages move to the device. */
	struct hetmm_migrate_report rep = { 0 };
	hetmm_migrate_to_device(pg, buf, len, &rep);   /* rep.moved == 64 */

	/* A CPU touch faults the page (and its neighbours) back. */
	char c = buf[100];                             /* 'x' */

	/* The device reads process memory through its mirror. */
	char *page = malloc(HETMM_PAGE_SIZE);    /* the kernel's page size */
	uint64_t faults;
	hetmm_mirror_create(emu, &mir);
	hetmm_mirror_read(mir, buf, page, 1, &faults); /* faults == 1 */

	hetmm_mirror_destroy(mir);
	hetmm_emu_destroy(emu);   /* hot-remove: resident pages come home */
	hetmm_ctx_destroy(ctx);
	int ok = c == 'x' && page[0] == 'x';
	free(page);
	return ok ? 0 : 1;
}
